//! The policy model compiled to the kernel's map entries (`icmp_guard_common::policy` and
//! `icmp_guard_common::limit`): a rule per (family, type) and per code exception, the rate
//! limiters with their intervals precomputed and their clock chosen, the list prefixes
//! and the settings of one generation.

use std::collections::BTreeMap;

use icmp_guard_common::{
    FAMILY_V4, FAMILY_V6,
    config::{GenerationConfig, NO_LIMITER, generation_flags},
    limit::{
        LimiterConfig, MAX_LIMITERS, NO_SHARED_BUCKET, byte_cost, byte_limit_ns, interval_ns,
        limiter_flags, needs_precise_clock, owner, per, tolerance_ns,
    },
    policy::{
        self as kernel, GENERATIONS, LIST_ENTRIES, POLICY_CODE_ENTRIES, Rule, intrinsic_condition,
    },
};

use super::model::{
    Action, ErrorCeiling, FragmentBudget, Limit, Per, Policy, PolicyError, RuleSpec, Smurf,
    describe,
};

/// Map entries for one generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// (family, type) → rule.
    pub types: BTreeMap<(u8, u8), Rule>,
    /// (family, type, code) → rule.
    pub codes: BTreeMap<(u8, u8, u8), Rule>,
    /// The limiters, indexed as the rules name them; `owner` set, `id` and the
    /// shared-bucket slots given when they are applied.
    pub limiters: Vec<LimiterConfig>,
    /// (address bytes, prefix, list value) for IPv4 and IPv6.
    pub lists: Vec<(Vec<u8>, u8, u32)>,
    /// The generation's settings besides its tables.
    pub settings: GenerationConfig,
}

fn per_code(per: Per) -> u8 {
    match per {
        Per::Source => per::SOURCE,
        Per::Prefix => per::PREFIX,
        Per::Global => per::GLOBAL,
    }
}

pub(super) fn per_from_code(code: u8) -> Per {
    match code {
        per::PREFIX => Per::Prefix,
        per::GLOBAL => Per::Global,
        _ => Per::Source,
    }
}

/// The kernel's settings for a limit, for a kernel whose coarse clock ticks every
/// `tick_ns`: intervals and tolerances precomputed (the program never divides), and the
/// precise clock where a bucket is too shallow for the coarse one.
pub fn limiter_config(limit: Limit, tick_ns: u64) -> LimiterConfig {
    let interval = interval_ns(limit.rate);
    let mut config = LimiterConfig {
        interval_ns: interval,
        tolerance_ns: tolerance_ns(interval, limit.burst),
        probation_ns: u64::from(limit.probation) * 1_000_000_000,
        block_ns: u64::from(limit.block_ms) * 1_000_000,
        bytes_bucket: NO_SHARED_BUCKET,
        per: per_code(limit.per),
        flags: limiter_flags::ACTIVE,
        prefix_v4: limit.prefix_v4,
        prefix_v6: limit.prefix_v6,
        rate: limit.rate,
        burst: limit.burst,
        bucket: NO_SHARED_BUCKET,
        budget_bucket: NO_SHARED_BUCKET,
        ceiling_bucket: NO_SHARED_BUCKET,
        ..LimiterConfig::default()
    };
    if limit.per != Per::Global {
        let budget = limit.new_source_budget();
        set_budget(&mut config, budget.rate, budget.burst);
    }
    if let Some(bytes) = limit.bytes {
        config.bytes_rate = bytes.rate;
        config.bytes_burst = bytes.burst;
        config.byte_cost = byte_cost(bytes.rate);
        config.byte_limit_ns = byte_limit_ns(bytes.burst, config.byte_cost);
    }
    choose_clock(&mut config, tick_ns);
    config
}

fn set_budget(config: &mut LimiterConfig, rate: u32, burst: u32) {
    let interval = interval_ns(rate);
    config.budget_rate = rate;
    config.budget_burst = burst;
    config.budget_interval_ns = interval;
    config.budget_tolerance_ns = tolerance_ns(interval, burst);
}

fn set_ceiling(config: &mut LimiterConfig, rate: u32, burst: u32) {
    let interval = interval_ns(rate);
    config.ceiling_rate = rate;
    config.ceiling_burst = burst;
    config.ceiling_interval_ns = interval;
    config.ceiling_tolerance_ns = tolerance_ns(interval, burst);
}

/// The precise clock when any of the limiter's buckets needs it.
fn choose_clock(config: &mut LimiterConfig, tick_ns: u64) {
    let mut buckets = vec![(config.interval_ns, config.tolerance_ns)];
    if config.per != per::GLOBAL {
        buckets.push((config.budget_interval_ns, config.budget_tolerance_ns));
    }
    if config.ceiling_rate != 0 {
        buckets.push((config.ceiling_interval_ns, config.ceiling_tolerance_ns));
    }
    if config.byte_cost != 0 {
        buckets.push((config.byte_limit_ns, 0));
    }
    config.flags &= !limiter_flags::PRECISE_CLOCK;
    if buckets
        .iter()
        .any(|&(interval, tolerance)| needs_precise_clock(interval, tolerance, tick_ns))
    {
        config.flags |= limiter_flags::PRECISE_CLOCK;
    }
}

/// True for echo replies, whose limits protect a reflection victim.
const fn is_echo_reply(family: u8, icmp_type: u8) -> bool {
    (family == FAMILY_V4 && icmp_type == 0) || (family == FAMILY_V6 && icmp_type == 129)
}

/// The kernel's settings for a limit on echo replies: over-limit replies count as `smurf`;
/// every reply is charged to the reply ceiling, the aggregate cap of a reflection flood
/// from many sources, real or spoofed; and sources without a bucket (or on probation) share
/// half of it as their budget, so that a spoofed storm can spend at most half the ceiling
/// and established sources — the replies to the host's own pings — keep the other half.
pub fn reply_limiter_config(limit: Limit, smurf: &Smurf, tick_ns: u64) -> LimiterConfig {
    let mut config = limiter_config(limit, tick_ns);
    config.flags |= limiter_flags::REASON_SMURF;
    if limit.per != Per::Global {
        let half = |value: u32| (value / 2).max(1);
        set_budget(
            &mut config,
            half(smurf.reply_ceiling),
            half(smurf.reply_ceiling_burst),
        );
        set_ceiling(&mut config, smurf.reply_ceiling, smurf.reply_ceiling_burst);
    }
    choose_clock(&mut config, tick_ns);
    config
}

/// What one policy may hold: each policy table holds the live policy and the one being
/// swapped in, so a policy gets half of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    /// Allow and deny prefixes per family.
    pub list_prefixes: u32,
    /// Per-code rules (both families).
    pub code_rules: u32,
    /// Distinct rate limits.
    pub rate_limits: u32,
}

/// The capacity of this build's maps.
pub const CAPACITY: Capacity = Capacity {
    list_prefixes: LIST_ENTRIES / GENERATIONS,
    code_rules: POLICY_CODE_ENTRIES / GENERATIONS,
    rate_limits: MAX_LIMITERS,
};

/// How much of [`CAPACITY`] a compiled policy uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub list_prefixes_v4: usize,
    pub list_prefixes_v6: usize,
    pub code_rules: usize,
    pub rate_limits: usize,
}

impl Compiled {
    /// How much of [`CAPACITY`] this policy uses.
    pub fn usage(&self) -> Usage {
        let v4 = self
            .lists
            .iter()
            .filter(|(octets, _, _)| octets.len() == 4)
            .count();
        Usage {
            list_prefixes_v4: v4,
            list_prefixes_v6: self.lists.len() - v4,
            code_rules: self.codes.len(),
            rate_limits: self.limiters.len(),
        }
    }
}

/// Refuses a policy that does not fit the maps, before anything is written.
fn check_capacity(usage: &Usage) -> Result<(), PolicyError> {
    let lists = "merge neighbouring prefixes or remove some";
    for (count, what) in [
        (usage.list_prefixes_v4, "IPv4 allow and deny prefixes"),
        (usage.list_prefixes_v6, "IPv6 allow and deny prefixes"),
    ] {
        if count > CAPACITY.list_prefixes as usize {
            return Err(PolicyError::TooMany {
                what,
                count,
                max: CAPACITY.list_prefixes,
                advice: lists,
            });
        }
    }
    if usage.code_rules > CAPACITY.code_rules as usize {
        return Err(PolicyError::TooMany {
            what: "per-code rules",
            count: usage.code_rules,
            max: CAPACITY.code_rules,
            advice: "set whole types instead of single codes where you can",
        });
    }
    Ok(())
}

/// The error ceiling's limiter: per source, the default new-source budget.
pub fn error_limiter_config(errors: &ErrorCeiling, tick_ns: u64) -> LimiterConfig {
    let mut config = limiter_config(Limit::new(errors.rate, errors.burst, Per::Source), tick_ns);
    config.owner = owner::ERRORS;
    config
}

/// The fragment budget's limiter: per source, under the backstop for all sources.
pub fn fragment_limiter_config(fragments: &FragmentBudget, tick_ns: u64) -> LimiterConfig {
    let limit = Limit::new(fragments.rate, fragments.burst, Per::Source);
    let mut config = limiter_config(limit, tick_ns);
    set_ceiling(&mut config, fragments.total_rate, fragments.total_burst);
    config.owner = owner::FRAGMENTS;
    choose_clock(&mut config, tick_ns);
    config
}

/// The tick of the coarse clock that [`compile`] assumes: Debian's HZ = 250. `apply`
/// compiles for the running kernel's.
pub const ASSUMED_TICK_NS: u64 = 4_000_000;

/// Turns a policy into map entries (for a kernel ticking every [`ASSUMED_TICK_NS`]);
/// refuses one that does not fit ([`CAPACITY`]).
pub fn compile(policy: &Policy) -> Result<Compiled, PolicyError> {
    compile_for(policy, ASSUMED_TICK_NS)
}

/// [`compile`] for a kernel whose coarse clock ticks every `tick_ns`.
pub fn compile_for(policy: &Policy, tick_ns: u64) -> Result<Compiled, PolicyError> {
    policy.validate()?;
    let mut compiled = Compiled {
        settings: GenerationConfig {
            checks_off: checks_off_bits(&policy.smurf),
            error_limiter: NO_LIMITER,
            fragment_limiter: NO_LIMITER,
            recon: policy.recon.compile(),
            ..GenerationConfig::default()
        },
        ..Compiled::default()
    };
    // One limiter, and so one set of buckets, per rule: two rules with equal numbers do not
    // share a budget.
    let limiter_index = |config: LimiterConfig,
                         compiled: &mut Compiled|
     -> Result<u8, PolicyError> {
        if compiled.limiters.len() >= MAX_LIMITERS as usize {
            return Err(PolicyError::TooMany {
                what: "distinct rate limits",
                count: compiled.limiters.len() + 1,
                max: MAX_LIMITERS,
                advice: "give rules the same limit where you can (two are the error ceiling and the fragment budget)",
            });
        }
        compiled.limiters.push(config);
        Ok((compiled.limiters.len() - 1) as u8)
    };
    let rule_of = |family: u8,
                   icmp_type: u8,
                   code: Option<u8>,
                   spec: &RuleSpec,
                   compiled: &mut Compiled|
     -> Result<Rule, PolicyError> {
        let action = match spec.action {
            Action::Pass => kernel::action::PASS,
            Action::Drop => kernel::action::DROP,
            Action::Limit => kernel::action::LIMIT,
        };
        let limiter = match spec.limit {
            Some(limit) if spec.action == Action::Limit => {
                let mut config = if is_echo_reply(family, icmp_type) {
                    if limit.new_sources.is_some() && limit.per != Per::Global {
                        return Err(PolicyError::BadLimit {
                            what: describe(family, icmp_type, None),
                            reason: "echo replies from sources without a bucket share the \
                                     [smurf] reply_ceiling: set reply_ceiling and \
                                     reply_ceiling_burst instead of new_source_rate and \
                                     new_source_burst"
                                .to_owned(),
                        });
                    }
                    reply_limiter_config(limit, &policy.smurf, tick_ns)
                } else {
                    limiter_config(limit, tick_ns)
                };
                config.owner = owner::rule(family, icmp_type, code);
                limiter_index(config, compiled)?
            }
            _ => 0,
        };
        Ok(Rule {
            action,
            condition: intrinsic_condition(family, icmp_type),
            flags: 0,
            limiter,
            max_size: spec.max_size.unwrap_or(0),
            _padding: 0,
        })
    };
    for (&(family, icmp_type), spec) in &policy.types {
        let mut rule = rule_of(family, icmp_type, None, spec, &mut compiled)?;
        if policy
            .codes
            .keys()
            .any(|(f, t, _)| *f == family && *t == icmp_type)
        {
            rule.flags |= kernel::flags::HAS_CODE_RULES;
        }
        compiled.types.insert((family, icmp_type), rule);
    }
    for (&(family, icmp_type, code), spec) in &policy.codes {
        let rule = rule_of(family, icmp_type, Some(code), spec, &mut compiled)?;
        compiled.codes.insert((family, icmp_type, code), rule);
    }
    compiled.settings.error_limiter =
        limiter_index(error_limiter_config(&policy.errors, tick_ns), &mut compiled)?;
    compiled.settings.fragment_limiter = limiter_index(
        fragment_limiter_config(&policy.fragments, tick_ns),
        &mut compiled,
    )?;
    for (cidrs, value) in [
        (&policy.allow, kernel::list::ALLOW),
        (&policy.deny, kernel::list::DENY),
    ] {
        for cidr in cidrs {
            compiled.lists.push((cidr.octets(), cidr.prefix, value));
            compiled.settings.flags |= if cidr.family() == FAMILY_V4 {
                generation_flags::LISTS_V4
            } else {
                generation_flags::LISTS_V6
            };
        }
    }
    if compiled
        .limiters
        .iter()
        .any(|limiter| limiter.block_ns != 0)
    {
        compiled.settings.flags |= generation_flags::BLOCKS;
    }
    check_capacity(&compiled.usage())?;
    Ok(compiled)
}

fn checks_off_bits(smurf: &Smurf) -> u32 {
    let mut off = 0;
    if !smurf.broadcast_echo {
        off |= kernel::checks_off::BROADCAST_ECHO;
    }
    if !smurf.multicast_echo_v6 {
        off |= kernel::checks_off::MULTICAST_ECHO_V6;
    }
    if !smurf.martian_sources {
        off |= kernel::checks_off::MARTIAN_SOURCES;
    }
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_with_conditions_and_six_limiters() {
        let compiled = compile(&Policy::default_profile()).expect("compiles");
        assert_eq!(compiled.types.len(), 512);
        assert!(compiled.codes.is_empty());
        assert_eq!(compiled.settings.checks_off, 0, "every smurf check on");
        assert_eq!(
            compiled.limiters.len(),
            6,
            "echo requests and replies, v4 and v6; errors; fragments"
        );
        let reply = compiled.limiters[compiled.types[&(FAMILY_V4, 0)].limiter as usize];
        assert_eq!(
            reply.flags,
            limiter_flags::ACTIVE | limiter_flags::REASON_SMURF
        );
        assert_eq!(reply.budget_rate, Smurf::default().reply_ceiling / 2);
        assert_eq!(reply.ceiling_rate, Smurf::default().reply_ceiling);
        assert_eq!(reply.owner, owner::rule(FAMILY_V4, 0, None));
        let request = compiled.limiters[compiled.types[&(FAMILY_V4, 8)].limiter as usize];
        assert_eq!(request.flags, limiter_flags::ACTIVE, "the coarse clock");
        assert_eq!(request.interval_ns, 10_000_000);
        assert_eq!(request.tolerance_ns, 199 * 10_000_000);
        assert_eq!(request.ceiling_rate, 0, "no ceiling on requests");
        let errors = compiled.limiters[compiled.settings.error_limiter as usize];
        assert_eq!((errors.rate, errors.owner), (1_000, owner::ERRORS));
        let fragments = compiled.limiters[compiled.settings.fragment_limiter as usize];
        assert_eq!(
            (fragments.rate, fragments.ceiling_rate, fragments.owner),
            (20, 40, owner::FRAGMENTS)
        );
        assert_eq!(compiled.settings.flags, 0, "no lists, no trie lookups");
        let nd = compiled.types[&(FAMILY_V6, 135)];
        assert_eq!(nd.condition, kernel::condition::ND);
        assert_eq!(nd.action, kernel::action::PASS);
        assert_eq!(compiled.types[&(FAMILY_V4, 5)].action, kernel::action::DROP);
    }

    #[test]
    fn shallow_limits_run_on_the_precise_clock() {
        let mut policy = Policy::default_profile();
        policy
            .set(
                FAMILY_V4,
                8,
                None,
                RuleSpec::limit(Limit::new(100_000, 10, Per::Global)),
                false,
            )
            .expect("valid");
        policy.allow.push("192.0.2.10/32".parse().expect("cidr"));
        let compiled = compile(&policy).expect("compiles");
        let shallow = compiled.limiters[compiled.types[&(FAMILY_V4, 8)].limiter as usize];
        assert_ne!(shallow.flags & limiter_flags::PRECISE_CLOCK, 0);
        assert_eq!(compiled.settings.flags, generation_flags::LISTS_V4);
        // The same limit on a kernel ticking every 10 µs can use the coarse clock.
        let fast = compile_for(&policy, 10_000).expect("compiles");
        let limiter = fast.limiters[fast.types[&(FAMILY_V4, 8)].limiter as usize];
        assert_eq!(limiter.flags & limiter_flags::PRECISE_CLOCK, 0);
    }

    #[test]
    fn code_rules_flag_their_type() {
        let mut policy = Policy::default_profile();
        policy
            .set(FAMILY_V4, 3, Some(1), RuleSpec::DROP, false)
            .expect("valid");
        let compiled = compile(&policy).expect("compiles");
        assert_ne!(
            compiled.types[&(FAMILY_V4, 3)].flags & kernel::flags::HAS_CODE_RULES,
            0
        );
        assert_eq!(
            compiled.codes[&(FAMILY_V4, 3, 1)].action,
            kernel::action::DROP
        );
    }
}

#[cfg(test)]
mod capacity_tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::policy::Cidr;

    #[test]
    fn a_policy_beyond_the_lists_capacity_is_refused_by_name() {
        let mut policy = Policy::default_profile();
        let max = CAPACITY.list_prefixes;
        policy.deny = (0..=max)
            .map(|n| Cidr {
                addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)),
                prefix: 32,
            })
            .collect();
        let err = compile(&policy).expect_err("one too many");
        assert_eq!(
            err.to_string(),
            format!(
                "the policy has {} IPv4 allow and deny prefixes, more than the {max} one policy \
                 may hold: merge neighbouring prefixes or remove some",
                max + 1
            )
        );
        policy.deny.pop();
        let usage = compile(&policy).expect("fits exactly").usage();
        assert_eq!(usage.list_prefixes_v4, max as usize);
        assert_eq!(max, 8192, "the capacity the README states");
    }
}
