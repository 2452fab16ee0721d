//! The live policy in the kernel's maps: swapping a whole policy in atomically, and reading
//! it back.
//!
//! See `icmp_guard_common::policy` for why a swap is atomic: the new policy is written into
//! the idle generation, the generation flips, and an RCU grace period passes before the old
//! generation may be reused.

use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use icmp_guard_common::{
    FAMILY_V4, FAMILY_V6, config,
    policy::{self as kernel, MAX_LIMITERS, Rule, code_key, limiter_slot, type_slot},
};

use super::{
    Error, Result,
    compile::{Compiled, compile, per_from_code},
    model::{Cidr, Limit, Mode, NewSources, Per, Policy, RuleSpec},
};
use crate::bpf::{self, GuardMaps, rcu};

/// The generation the kernel classifies against now.
pub fn active_generation(maps: &GuardMaps) -> Result<u32> {
    Ok(maps.active_generation()?)
}

fn synchronize() -> Result<()> {
    rcu::synchronize().map_err(|source| {
        Error::Maps(bpf::Error::Syscall {
            action: "waiting for an RCU grace period",
            source,
        })
    })
}

/// Writes `policy` into the idle generation, makes it live in one store, counts one more
/// policy revision, and waits until no packet can still be using the old one. On error
/// before the flip the live policy is untouched.
pub fn apply(maps: &mut GuardMaps, policy: &Policy) -> Result<()> {
    let compiled = compile(policy)?;
    // A writer that died between its flip and its grace period leaves readers on the old
    // generation; wait for them before overwriting it.
    synchronize()?;
    let live = maps.active_generation()?;
    let next = live ^ 1;
    write_generation(maps, next, &compiled)?;
    maps.set_active_generation(next)?;
    let mode = match policy.mode {
        Mode::Enforce => config::MODE_ENFORCE,
        Mode::DryRun => config::MODE_DRY_RUN,
    };
    maps.set_mode(mode)?;
    // One more with every policy written, never back: `status`, the log and the metric
    // tell one policy from the next by it.
    let revision = maps.policy_revision()?.wrapping_add(1);
    maps.set_policy_revision(revision)?;
    synchronize()?;
    Ok(())
}

fn write_generation(maps: &mut GuardMaps, generation: u32, compiled: &Compiled) -> Result<()> {
    maps.set_smurf_off(generation, compiled.smurf_off)?;
    for (&(family, icmp_type), rule) in &compiled.types {
        maps.set_type_rule(type_slot(generation, family, icmp_type), *rule)?;
    }
    for key in maps.code_rule_keys()? {
        if (key >> 24) & 1 == generation {
            maps.remove_code_rule(key)?;
        }
    }
    for (&(family, icmp_type, code), rule) in &compiled.codes {
        maps.set_code_rule(code_key(generation, family, icmp_type, code), *rule)?;
    }
    for index in 0..MAX_LIMITERS {
        let config = compiled
            .limiters
            .get(index as usize)
            .copied()
            .unwrap_or_default();
        maps.set_limiter(limiter_slot(generation, index as u8), config)?;
    }
    for (key, _) in maps.list_v4_entries()? {
        if u32::from(key.data()[0]) == generation {
            maps.remove_list_v4(&key)?;
        }
    }
    for (key, _) in maps.list_v6_entries()? {
        if u32::from(key.data()[0]) == generation {
            maps.remove_list_v6(&key)?;
        }
    }
    for (octets, prefix, value) in &compiled.lists {
        let prefix_len = 8 + u32::from(*prefix);
        if let Ok(address) = <[u8; 4]>::try_from(octets.as_slice()) {
            let mut data = [0u8; 5];
            data[0] = generation as u8;
            data[1..].copy_from_slice(&address);
            maps.insert_list_v4(&Key::new(prefix_len, data), *value)?;
        } else if let Ok(address) = <[u8; 16]>::try_from(octets.as_slice()) {
            let mut data = [0u8; 17];
            data[0] = generation as u8;
            data[1..].copy_from_slice(&address);
            maps.insert_list_v6(&Key::new(prefix_len, data), *value)?;
        }
    }
    Ok(())
}

/// Reads the live policy back from the maps.
pub fn read_live(maps: &GuardMaps) -> Result<Policy> {
    let generation = maps.active_generation()?;
    let mut limits = Vec::new();
    for index in 0..MAX_LIMITERS {
        limits.push(maps.limiter(limiter_slot(generation, index as u8))?);
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
            let rule = maps.type_rule(type_slot(generation, family, icmp_type))?;
            policy.types.insert((family, icmp_type), spec_of(rule));
        }
    }
    for key in maps.code_rule_keys()? {
        if (key >> 24) & 1 != generation {
            continue;
        }
        let rule = maps.code_rule(key)?;
        let family = ((key >> 16) & 1) as u8;
        policy
            .codes
            .insert((family, (key >> 8) as u8, key as u8), spec_of(rule));
    }
    let mut listed = Vec::new();
    for (key, value) in maps.list_v4_entries()? {
        let data = key.data();
        if u32::from(data[0]) == generation {
            let address = IpAddr::from([data[1], data[2], data[3], data[4]]);
            listed.push((address, key.prefix_len() - 8, value));
        }
    }
    for (key, value) in maps.list_v6_entries()? {
        let data = key.data();
        if u32::from(data[0]) == generation {
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
    let off = maps.smurf_off(generation)?;
    policy.smurf.broadcast_echo = off & kernel::smurf_off::BROADCAST_ECHO == 0;
    policy.smurf.multicast_echo_v6 = off & kernel::smurf_off::MULTICAST_ECHO_V6 == 0;
    policy.smurf.martian_sources = off & kernel::smurf_off::MARTIAN_SOURCES == 0;
    // The ceiling lives in the echo-reply limiters; a policy without one keeps the default.
    if let Some(config) = [(FAMILY_V4, 0u8), (FAMILY_V6, 129u8)]
        .iter()
        .filter_map(|&(family, icmp_type)| {
            let rule = maps
                .type_rule(type_slot(generation, family, icmp_type))
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
