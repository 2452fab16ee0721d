//! The policy engine in userspace: the model, the policy file, compiling to map entries,
//! reading the live policy back, and swapping a whole policy atomically.
//!
//! See `icmp_guard_common::policy` for why a swap is atomic: the new policy is written into
//! the idle generation, the generation flips, and an RCU grace period passes before the old
//! generation may be reused.

pub mod file;
pub mod model;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use aya::maps::lpm_trie::Key;
use icmp_guard_common::{
    FAMILY_V4, FAMILY_V6,
    config::{self, GenerationConfig, NO_LIMITER, generation_flags},
    limit::{
        LimiterConfig, MAX_LIMITERS, NO_SHARED_BUCKET, SHARED_BUCKETS, SharedBucket, interval_ns,
        limiter_flags, limiter_slot, needs_precise_clock, owner, per, tolerance_ns,
    },
    policy::{self as kernel, Rule, code_key, intrinsic_condition, type_slot},
};
pub use model::{
    Action, Cidr, DEFAULT_LIMIT, DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6, DEFAULT_PROBATION,
    ErrorCeiling, FragmentBudget, Limit, Mode, NEW_SOURCE_FACTOR, NewSources, Per, Policy,
    PolicyError, RuleSpec, Smurf, describe,
};

use crate::{
    error::{Error, Result},
    loader::{self, GuardMaps},
    rcu,
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

fn per_from_code(code: u8) -> Per {
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

/// The kernel's settings for a limit on echo replies: over-limit replies count as `smurf`,
/// sources without a bucket share the reply ceiling as their budget, and every reply is
/// charged to the ceiling, which caps a reflection flood from many real sources too.
pub fn reply_limiter_config(limit: Limit, smurf: &Smurf, tick_ns: u64) -> LimiterConfig {
    let mut config = limiter_config(limit, tick_ns);
    config.flags |= limiter_flags::REASON_SMURF;
    if limit.per != Per::Global {
        set_budget(&mut config, smurf.reply_ceiling, smurf.reply_ceiling_burst);
        set_ceiling(&mut config, smurf.reply_ceiling, smurf.reply_ceiling_burst);
    }
    choose_clock(&mut config, tick_ns);
    config
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

/// The tick of the coarse clock that [`compile`] assumes: Debian's HZ = 250. [`apply`]
/// compiles for the running kernel's.
pub const ASSUMED_TICK_NS: u64 = 4_000_000;

/// Turns a policy into map entries (for a kernel ticking every [`ASSUMED_TICK_NS`]).
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
            ..GenerationConfig::default()
        },
        ..Compiled::default()
    };
    // One limiter, and so one set of buckets, per rule: two rules with equal numbers do not
    // share a budget.
    let limiter_index =
        |config: LimiterConfig, compiled: &mut Compiled| -> Result<u8, PolicyError> {
            if compiled.limiters.len() >= MAX_LIMITERS as usize {
                return Err(PolicyError::BadLimit {
                    what: "the policy".to_owned(),
                    reason: format!(
                        "at most {} distinct rate limits are supported",
                        MAX_LIMITERS - 2
                    ),
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

/// The generation the kernel classifies against now.
pub fn active_generation(maps: &GuardMaps) -> Result<u32> {
    Ok(maps.config()?.active_generation & 1)
}

/// What happens to the state of limiters when a policy is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimiterState {
    /// A limiter whose rule and settings did not change keeps its buckets; every other
    /// starts from fresh state on the next packet.
    KeepUnchanged,
    /// Every limiter starts from fresh state (`policy reset`).
    Fresh,
}

/// Writes `policy` into the idle generation, makes it live in one store, and waits until
/// no packet can still be using the old one. On error before the flip the live policy is
/// untouched. Limiters that did not change keep their state; new or changed ones start
/// fresh.
pub fn apply(maps: &mut GuardMaps, policy: &Policy) -> Result<()> {
    apply_with(maps, policy, LimiterState::KeepUnchanged)
}

/// [`apply`], choosing what happens to the limiters' state.
pub fn apply_with(maps: &mut GuardMaps, policy: &Policy, state: LimiterState) -> Result<()> {
    let mut compiled = compile_for(policy, loader::ns_per_jiffy())
        .map_err(|err| Error::Policy(err.to_string()))?;
    // A writer that died between its flip and its grace period leaves readers on the old
    // generation; wait for them before overwriting it.
    rcu::synchronize().map_err(|err| Error::io("waiting for an RCU grace period", err))?;
    let live = active_generation(maps)?;
    let next = live ^ 1;
    assign_state(maps, live, &mut compiled, state)?;
    write_generation(maps, next, &compiled)?;
    maps.update_config(|config| config.active_generation = next)?;
    let mode = match policy.mode {
        Mode::Enforce => config::MODE_ENFORCE,
        Mode::DryRun => config::MODE_DRY_RUN,
    };
    maps.set_mode(mode)?;
    rcu::synchronize().map_err(|err| Error::io("waiting for an RCU grace period", err))?;
    Ok(())
}

/// The limiter settings that decide whether two limiters are the same: everything but
/// their identity and state slots.
fn settings_of(config: &LimiterConfig) -> LimiterConfig {
    LimiterConfig {
        id: 0,
        bucket: 0,
        budget_bucket: 0,
        ceiling_bucket: 0,
        ..*config
    }
}

/// The shared-bucket slots a limiter uses.
fn slots_of(config: &LimiterConfig) -> impl Iterator<Item = u16> {
    [config.bucket, config.budget_bucket, config.ceiling_bucket]
        .into_iter()
        .filter(|slot| *slot != NO_SHARED_BUCKET)
}

/// Gives each compiled limiter its identity and shared-bucket slots: those of the live
/// limiter with the same owner and settings (its state carries over), or a new id and
/// slots no live limiter uses, reset to a full bucket. The idle generation is not in use
/// (the caller waited for a grace period), so its slots are free.
fn assign_state(
    maps: &mut GuardMaps,
    live: u32,
    compiled: &mut Compiled,
    state: LimiterState,
) -> Result<()> {
    let read = |err: aya::maps::MapError| Error::bpf("reading the rate limits", err);
    let mut live_limiters = Vec::new();
    let mut next_id = 1;
    for generation in [0, 1] {
        for index in 0..MAX_LIMITERS {
            let config = maps
                .limiters
                .get(&limiter_slot(generation, index as u8), 0)
                .map_err(read)?;
            next_id = next_id.max(config.id.saturating_add(1));
            if generation == live && config.flags & limiter_flags::ACTIVE != 0 {
                live_limiters.push(config);
            }
        }
    }
    let mut taken: BTreeSet<u16> = live_limiters.iter().flat_map(slots_of).collect();
    let mut fresh_slots = Vec::new();
    for config in &mut compiled.limiters {
        let same = live_limiters.iter().find(|live| {
            state == LimiterState::KeepUnchanged
                && live.owner == config.owner
                && settings_of(live) == settings_of(config)
        });
        if let Some(same) = same {
            config.id = same.id;
            config.bucket = same.bucket;
            config.budget_bucket = same.budget_bucket;
            config.ceiling_bucket = same.ceiling_bucket;
            continue;
        }
        config.id = next_id;
        next_id += 1;
        let mut allocate = || -> Result<u16> {
            let slot = (0..SHARED_BUCKETS as u16)
                .find(|slot| !taken.contains(slot))
                .ok_or_else(|| Error::bpf("assigning rate-limit state", "no free shared bucket"))?;
            taken.insert(slot);
            fresh_slots.push(slot);
            Ok(slot)
        };
        if config.per == per::GLOBAL {
            config.bucket = allocate()?;
        } else {
            config.budget_bucket = allocate()?;
        }
        if config.ceiling_rate != 0 {
            config.ceiling_bucket = allocate()?;
        }
    }
    for slot in fresh_slots {
        maps.shared_buckets
            .set(u32::from(slot), SharedBucket::default(), 0)
            .map_err(|err| Error::bpf("resetting rate-limit state", err))?;
    }
    Ok(())
}

fn write_generation(maps: &mut GuardMaps, generation: u32, compiled: &Compiled) -> Result<()> {
    let write = |what: &str| {
        let what = what.to_owned();
        move |err: aya::maps::MapError| Error::bpf(format!("writing {what}"), err)
    };
    for (&(family, icmp_type), rule) in &compiled.types {
        maps.policy_types
            .set(type_slot(generation, family, icmp_type), rule, 0)
            .map_err(write("the type rules"))?;
    }
    let stale: Vec<u32> = maps
        .policy_codes
        .keys()
        .filter_map(Result::ok)
        .filter(|key| (key >> 24) & 1 == generation)
        .collect();
    for key in stale {
        maps.policy_codes
            .remove(&key)
            .map_err(write("the code rules"))?;
    }
    for (&(family, icmp_type, code), rule) in &compiled.codes {
        maps.policy_codes
            .insert(code_key(generation, family, icmp_type, code), rule, 0)
            .map_err(write("the code rules"))?;
    }
    for index in 0..MAX_LIMITERS {
        let config = compiled
            .limiters
            .get(index as usize)
            .copied()
            .unwrap_or_default();
        maps.limiters
            .set(limiter_slot(generation, index as u8), config, 0)
            .map_err(write("the rate limits"))?;
    }
    let stale_v4: Vec<Key<[u8; 5]>> = maps
        .lists_v4
        .keys()
        .filter_map(Result::ok)
        .filter(|key| u32::from(key.data()[0]) == generation)
        .collect();
    for key in stale_v4 {
        maps.lists_v4
            .remove(&key)
            .map_err(write("the IPv4 lists"))?;
    }
    let stale_v6: Vec<Key<[u8; 17]>> = maps
        .lists_v6
        .keys()
        .filter_map(Result::ok)
        .filter(|key| u32::from(key.data()[0]) == generation)
        .collect();
    for key in stale_v6 {
        maps.lists_v6
            .remove(&key)
            .map_err(write("the IPv6 lists"))?;
    }
    for (octets, prefix, value) in &compiled.lists {
        let prefix_len = 8 + u32::from(*prefix);
        if let Ok(address) = <[u8; 4]>::try_from(octets.as_slice()) {
            let mut data = [0u8; 5];
            data[0] = generation as u8;
            data[1..].copy_from_slice(&address);
            maps.lists_v4
                .insert(&Key::new(prefix_len, data), value, 0)
                .map_err(write("the IPv4 lists"))?;
        } else if let Ok(address) = <[u8; 16]>::try_from(octets.as_slice()) {
            let mut data = [0u8; 17];
            data[0] = generation as u8;
            data[1..].copy_from_slice(&address);
            maps.lists_v6
                .insert(&Key::new(prefix_len, data), value, 0)
                .map_err(write("the IPv6 lists"))?;
        }
    }
    maps.update_config(|config| config.generations[generation as usize] = compiled.settings)
}

/// A limit as the operator wrote it, read back from the kernel's settings.
fn limit_of(config: &LimiterConfig) -> Limit {
    let mut limit = Limit::new(config.rate, config.burst, per_from_code(config.per));
    if limit.per == Per::Prefix {
        limit.prefix_v4 = config.prefix_v4;
        limit.prefix_v6 = config.prefix_v6;
    }
    if limit.per != Per::Global {
        limit.probation = (config.probation_ns / 1_000_000_000) as u32;
        // Echo-reply limiters carry the smurf ceiling as their budget instead.
        let budget = NewSources {
            rate: config.budget_rate,
            burst: config.budget_burst,
        };
        if config.flags & limiter_flags::REASON_SMURF == 0 && budget != limit.new_source_budget() {
            limit.new_sources = Some(budget);
        }
    }
    limit
}

/// Reads the live policy back from the maps.
pub fn read_live(maps: &GuardMaps) -> Result<Policy> {
    let config = maps.config()?;
    let generation = config.active_generation & 1;
    let settings = config.generations[generation as usize];
    let read = |err: aya::maps::MapError| Error::bpf("reading the policy", err);
    let mut limits = Vec::new();
    for index in 0..MAX_LIMITERS {
        limits.push(
            maps.limiters
                .get(&limiter_slot(generation, index as u8), 0)
                .map_err(read)?,
        );
    }
    let spec_of = |rule: Rule| -> RuleSpec {
        match rule.action {
            kernel::action::PASS => RuleSpec::PASS,
            kernel::action::LIMIT => RuleSpec::limit(limit_of(
                &limits
                    .get(rule.limiter as usize)
                    .copied()
                    .unwrap_or_default(),
            )),
            _ => RuleSpec::DROP,
        }
    };
    let mut policy = Policy::default_profile();
    for family in [FAMILY_V4, FAMILY_V6] {
        for icmp_type in 0..=255u8 {
            let rule = maps
                .policy_types
                .get(&type_slot(generation, family, icmp_type), 0)
                .map_err(read)?;
            policy.types.insert((family, icmp_type), spec_of(rule));
        }
    }
    for key in maps.policy_codes.keys() {
        let key = key.map_err(read)?;
        if (key >> 24) & 1 != generation {
            continue;
        }
        let rule = maps.policy_codes.get(&key, 0).map_err(read)?;
        let family = ((key >> 16) & 1) as u8;
        policy
            .codes
            .insert((family, (key >> 8) as u8, key as u8), spec_of(rule));
    }
    let mut listed = Vec::new();
    for key in maps.lists_v4.keys() {
        let key = key.map_err(read)?;
        let data = key.data();
        if u32::from(data[0]) == generation {
            let value = maps.lists_v4.get(&key, 0).map_err(read)?;
            let address = IpAddr::from([data[1], data[2], data[3], data[4]]);
            listed.push((address, key.prefix_len() - 8, value));
        }
    }
    for key in maps.lists_v6.keys() {
        let key = key.map_err(read)?;
        let data = key.data();
        if u32::from(data[0]) == generation {
            let value = maps.lists_v6.get(&key, 0).map_err(read)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&data[1..]);
            listed.push((IpAddr::from(octets), key.prefix_len() - 8, value));
        }
    }
    listed.sort();
    for (addr, prefix, value) in listed {
        let cidr = Cidr {
            addr,
            prefix: prefix as u8,
        };
        if value == kernel::list::ALLOW {
            policy.allow.push(cidr);
        } else {
            policy.deny.push(cidr);
        }
    }
    let off = settings.checks_off;
    policy.smurf.broadcast_echo = off & kernel::checks_off::BROADCAST_ECHO == 0;
    policy.smurf.multicast_echo_v6 = off & kernel::checks_off::MULTICAST_ECHO_V6 == 0;
    policy.smurf.martian_sources = off & kernel::checks_off::MARTIAN_SOURCES == 0;
    // The ceiling lives in the echo-reply limiters; a policy without one keeps the default.
    if let Some(config) = [(FAMILY_V4, 0u8), (FAMILY_V6, 129u8)]
        .iter()
        .filter_map(|&(family, icmp_type)| {
            let rule = maps
                .policy_types
                .get(&type_slot(generation, family, icmp_type), 0)
                .ok()?;
            let config = limits.get(rule.limiter as usize)?;
            (rule.action == kernel::action::LIMIT && config.ceiling_rate != 0).then_some(*config)
        })
        .next()
    {
        policy.smurf.reply_ceiling = config.ceiling_rate;
        policy.smurf.reply_ceiling_burst = config.ceiling_burst;
    }
    if let Some(errors) = limits.get(usize::from(settings.error_limiter)) {
        policy.errors = ErrorCeiling {
            rate: errors.rate,
            burst: errors.burst,
        };
    }
    if let Some(fragments) = limits.get(usize::from(settings.fragment_limiter)) {
        policy.fragments = FragmentBudget {
            rate: fragments.rate,
            burst: fragments.burst,
            total_rate: fragments.ceiling_rate,
            total_burst: fragments.ceiling_burst,
        };
    }
    policy.mode = if config.mode == config::MODE_DRY_RUN {
        Mode::DryRun
    } else {
        Mode::Enforce
    };
    Ok(policy)
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
        assert_eq!(reply.budget_rate, Smurf::default().reply_ceiling);
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
            (1_000, 10_000, owner::FRAGMENTS)
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
