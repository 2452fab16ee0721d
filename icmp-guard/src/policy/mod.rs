//! The policy engine in userspace: the model, the policy file, compiling to map entries,
//! reading the live policy back, and swapping a whole policy atomically.
//!
//! See `icmp_guard_common::policy` for why a swap is atomic: the new policy is written into
//! the idle generation, the generation flips, and an RCU grace period passes before the old
//! generation may be reused.

pub mod file;
pub mod model;

use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::lpm_trie::Key;
use icmp_guard_common::{
    FAMILY_V4, FAMILY_V6, config,
    policy::{
        self as kernel, LimiterConfig, MAX_LIMITERS, Rule, code_key, intrinsic_condition,
        limiter_slot, type_slot,
    },
};
pub use model::{
    Action, Cidr, DEFAULT_LIMIT, DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6, Limit, Mode,
    NEW_SOURCE_FACTOR, NewSources, Per, Policy, PolicyError, RuleSpec, Smurf, describe,
};

use crate::{
    error::{Error, Result},
    loader::GuardMaps,
    rcu,
};

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

fn per_from_code(code: u8) -> Per {
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

/// Turns a policy into map entries.
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
                return Err(PolicyError::BadLimit {
                    what: "the policy".to_owned(),
                    reason: format!("at most {MAX_LIMITERS} distinct rate limits are supported"),
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

/// The generation the kernel classifies against now.
pub fn active_generation(maps: &GuardMaps) -> Result<u32> {
    maps.config
        .get(&config::ACTIVE_GEN, 0)
        .map(|generation| generation & 1)
        .map_err(|err| Error::bpf("reading the active policy generation", err))
}

/// Writes `policy` into the idle generation, makes it live in one store, and waits until
/// no packet can still be using the old one. On error before the flip the live policy is
/// untouched.
pub fn apply(maps: &mut GuardMaps, policy: &Policy) -> Result<()> {
    let compiled = compile(policy).map_err(|err| Error::Policy(err.to_string()))?;
    // A writer that died between its flip and its grace period leaves readers on the old
    // generation; wait for them before overwriting it.
    rcu::synchronize().map_err(|err| Error::io("waiting for an RCU grace period", err))?;
    let live = active_generation(maps)?;
    let next = live ^ 1;
    write_generation(maps, next, &compiled)?;
    maps.config
        .set(config::ACTIVE_GEN, next, 0)
        .map_err(|err| Error::bpf("switching the policy generation", err))?;
    let mode = match policy.mode {
        Mode::Enforce => config::MODE_ENFORCE,
        Mode::DryRun => config::MODE_DRY_RUN,
    };
    maps.set_mode(mode)?;
    rcu::synchronize().map_err(|err| Error::io("waiting for an RCU grace period", err))?;
    Ok(())
}

fn write_generation(maps: &mut GuardMaps, generation: u32, compiled: &Compiled) -> Result<()> {
    let write = |what: &str| {
        let what = what.to_owned();
        move |err: aya::maps::MapError| Error::bpf(format!("writing {what}"), err)
    };
    maps.config
        .set(config::SMURF_OFF + generation, compiled.smurf_off, 0)
        .map_err(write("the smurf settings"))?;
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
    Ok(())
}

/// Reads the live policy back from the maps.
pub fn read_live(maps: &GuardMaps) -> Result<Policy> {
    let generation = active_generation(maps)?;
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
            kernel::action::LIMIT => {
                let config = limits
                    .get(rule.limiter as usize)
                    .copied()
                    .unwrap_or_default();
                let mut limit = Limit::new(config.rate, config.burst, per_from_code(config.per));
                if limit.per == Per::Prefix {
                    limit.prefix_v4 = config.prefix_v4;
                    limit.prefix_v6 = config.prefix_v6;
                }
                // Echo-reply limiters carry the smurf ceiling as their budget instead.
                let budget = NewSources {
                    rate: config.global_rate,
                    burst: config.global_burst,
                };
                if limit.per != Per::Global
                    && config.flags & kernel::limiter_flags::REASON_SMURF == 0
                    && budget != limit.new_source_budget()
                {
                    limit.new_sources = Some(budget);
                }
                RuleSpec::limit(limit)
            }
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
    let off = maps
        .config
        .get(&(config::SMURF_OFF + generation), 0)
        .map_err(read)?;
    policy.smurf.broadcast_echo = off & kernel::smurf_off::BROADCAST_ECHO == 0;
    policy.smurf.multicast_echo_v6 = off & kernel::smurf_off::MULTICAST_ECHO_V6 == 0;
    policy.smurf.martian_sources = off & kernel::smurf_off::MARTIAN_SOURCES == 0;
    // The ceiling lives in the echo-reply limiters; a policy without one keeps the default.
    if let Some(config) = [(FAMILY_V4, 0u8), (FAMILY_V6, 129u8)]
        .iter()
        .filter_map(|&(family, icmp_type)| {
            let rule = maps
                .policy_types
                .get(&type_slot(generation, family, icmp_type), 0)
                .ok()?;
            let config = limits.get(rule.limiter as usize)?;
            (rule.action == kernel::action::LIMIT && config.per != kernel::per::GLOBAL)
                .then_some(*config)
        })
        .next()
    {
        policy.smurf.reply_ceiling = config.global_rate;
        policy.smurf.reply_ceiling_burst = config.global_burst;
    }
    policy.mode = if maps.mode()? == config::MODE_DRY_RUN {
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
