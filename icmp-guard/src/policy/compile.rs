//! The policy model compiled to the kernel's map entries (`icmp_guard_common::policy`): a
//! rule per (family, type) and per code exception, the rate limiters, the list prefixes
//! and the smurf switches of one generation.

use std::collections::BTreeMap;

use icmp_guard_common::{
    FAMILY_V4, FAMILY_V6,
    policy::{
        self as kernel, GENERATIONS, LIST_ENTRIES, LimiterConfig, MAX_LIMITERS,
        POLICY_CODE_ENTRIES, Rule, intrinsic_condition,
    },
};

use super::model::{Action, Limit, Per, Policy, PolicyError, RuleSpec, Smurf, describe};

/// Map entries for one generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    /// (family, type) → rule.
    pub types: BTreeMap<(u8, u8), Rule>,
    /// (family, type, code) → rule.
    pub codes: BTreeMap<(u8, u8, u8), Rule>,
    pub limiters: Vec<LimiterConfig>,
    /// (address bytes, prefix, list value) for IPv4 and IPv6.
    pub lists: Vec<(Vec<u8>, u8, u32)>,
    /// Bits of `smurf_off`: the checks switched off.
    pub smurf_off: u32,
}

fn per_code(per: Per) -> u8 {
    match per {
        Per::Source => kernel::per::SOURCE,
        Per::Prefix => kernel::per::PREFIX,
        Per::Global => kernel::per::GLOBAL,
    }
}

pub(super) fn per_from_code(code: u8) -> Per {
    match code {
        kernel::per::PREFIX => Per::Prefix,
        kernel::per::GLOBAL => Per::Global,
        _ => Per::Source,
    }
}

/// The kernel's settings for a limit.
pub fn limiter_config(limit: Limit) -> LimiterConfig {
    let budget = limit.new_source_budget();
    LimiterConfig {
        rate: limit.rate,
        burst: limit.burst,
        per: per_code(limit.per),
        prefix_v4: limit.prefix_v4,
        prefix_v6: limit.prefix_v6,
        flags: 0,
        global_rate: budget.rate,
        global_burst: budget.burst,
    }
}

/// True for echo replies, whose limits protect a reflection victim.
const fn is_echo_reply(family: u8, icmp_type: u8) -> bool {
    (family == FAMILY_V4 && icmp_type == 0) || (family == FAMILY_V6 && icmp_type == 129)
}

/// The kernel's settings for a limit on echo replies: over-limit replies count as `smurf`,
/// and sources without a bucket share the reply ceiling.
pub fn reply_limiter_config(limit: Limit, smurf: &Smurf) -> LimiterConfig {
    let mut config = limiter_config(limit);
    config.flags |= kernel::limiter_flags::REASON_SMURF;
    if limit.per != Per::Global {
        config.global_rate = smurf.reply_ceiling;
        config.global_burst = smurf.reply_ceiling_burst;
    }
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

/// Turns a policy into map entries; refuses one that does not fit ([`CAPACITY`]).
pub fn compile(policy: &Policy) -> Result<Compiled, PolicyError> {
    policy.validate()?;
    let mut compiled = Compiled {
        smurf_off: smurf_off_bits(&policy.smurf),
        ..Compiled::default()
    };
    // One limiter, and so one set of buckets, per rule: two rules with equal numbers do not
    // share a budget.
    let limiter_index =
        |config: LimiterConfig, compiled: &mut Compiled| -> Result<u8, PolicyError> {
            if compiled.limiters.len() >= MAX_LIMITERS as usize {
                return Err(PolicyError::TooMany {
                    what: "distinct rate limits",
                    count: compiled.limiters.len() + 1,
                    max: MAX_LIMITERS,
                    advice: "give rules the same limit where you can",
                });
            }
            compiled.limiters.push(config);
            Ok((compiled.limiters.len() - 1) as u8)
        };
    let rule_of = |family: u8,
                   icmp_type: u8,
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
                let config = if is_echo_reply(family, icmp_type) {
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
                    reply_limiter_config(limit, &policy.smurf)
                } else {
                    limiter_config(limit)
                };
                limiter_index(config, compiled)?
            }
            _ => 0,
        };
        Ok(Rule {
            action,
            condition: intrinsic_condition(family, icmp_type),
            flags: 0,
            limiter,
        })
    };
    for (&(family, icmp_type), spec) in &policy.types {
        let mut rule = rule_of(family, icmp_type, spec, &mut compiled)?;
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
        let rule = rule_of(family, icmp_type, spec, &mut compiled)?;
        compiled.codes.insert((family, icmp_type, code), rule);
    }
    for (cidrs, value) in [
        (&policy.allow, kernel::list::ALLOW),
        (&policy.deny, kernel::list::DENY),
    ] {
        for cidr in cidrs {
            compiled.lists.push((cidr.octets(), cidr.prefix, value));
        }
    }
    check_capacity(&compiled.usage())?;
    Ok(compiled)
}

fn smurf_off_bits(smurf: &Smurf) -> u32 {
    let mut off = 0;
    if !smurf.broadcast_echo {
        off |= kernel::smurf_off::BROADCAST_ECHO;
    }
    if !smurf.multicast_echo_v6 {
        off |= kernel::smurf_off::MULTICAST_ECHO_V6;
    }
    if !smurf.martian_sources {
        off |= kernel::smurf_off::MARTIAN_SOURCES;
    }
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_with_conditions_and_four_limiters() {
        let compiled = compile(&Policy::default_profile()).expect("compiles");
        assert_eq!(compiled.types.len(), 512);
        assert!(compiled.codes.is_empty());
        assert_eq!(compiled.smurf_off, 0, "every smurf check on");
        assert_eq!(
            compiled.limiters.len(),
            4,
            "echo requests and replies, v4 and v6"
        );
        let reply = compiled.limiters[compiled.types[&(FAMILY_V4, 0)].limiter as usize];
        assert_eq!(reply.flags, kernel::limiter_flags::REASON_SMURF);
        assert_eq!(reply.global_rate, Smurf::default().reply_ceiling);
        let request = compiled.limiters[compiled.types[&(FAMILY_V4, 8)].limiter as usize];
        assert_eq!(request.flags, 0);
        let nd = compiled.types[&(FAMILY_V6, 135)];
        assert_eq!(nd.condition, kernel::condition::ND);
        assert_eq!(nd.action, kernel::action::PASS);
        assert_eq!(compiled.types[&(FAMILY_V4, 5)].action, kernel::action::DROP);
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
