//! The live policy in the kernel's maps: swapping a whole policy in atomically, and reading
//! it back.
//!
//! See `icmp_guard_common::policy` for why a swap is atomic: the new policy is written into
//! the idle generation, the generation flips, and an RCU grace period passes before the old
//! generation may be reused. See `icmp_guard_common::limit` for what happens to the
//! limiters' state: a limiter whose rule and settings did not change keeps its buckets, a
//! new or changed one starts fresh.

use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::lpm_trie::Key;
use icmp_guard_common::{
    FAMILY_V4, FAMILY_V6, config,
    limit::{
        LimiterConfig, MAX_LIMITERS, NO_SHARED_BUCKET, SHARED_BUCKETS, limiter_flags, limiter_slot,
        per,
    },
    policy::{self as kernel, Rule, code_key, type_slot},
};

use super::{
    Error, Result,
    compile::{Compiled, compile_for, per_from_code},
    model::{
        ByteLimit, Cidr, ErrorCeiling, FragmentBudget, Limit, Mode, NewSources, Per, Policy,
        RuleSpec,
    },
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

/// What happens to the state of limiters when a policy is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimiterState {
    /// A limiter whose rule and settings did not change keeps its buckets; every other
    /// starts from fresh state on the next packet.
    KeepUnchanged,
    /// Every limiter starts from fresh state (`policy reset`).
    Fresh,
}

/// Writes `policy` into the idle generation, makes it live in one store, counts one more
/// policy revision, and waits until no packet can still be using the old one. On error
/// before the flip the live policy is untouched. Limiters that did not change keep their state; new or changed ones start
/// fresh.
pub fn apply(maps: &mut GuardMaps, policy: &Policy) -> Result<()> {
    apply_with(maps, policy, LimiterState::KeepUnchanged)
}

/// [`apply`], choosing what happens to the limiters' state.
pub fn apply_with(maps: &mut GuardMaps, policy: &Policy, state: LimiterState) -> Result<()> {
    let mut compiled = compile_for(policy, bpf::ns_per_jiffy())?;
    // A writer that died between its flip and its grace period leaves readers on the old
    // generation; wait for them before overwriting it.
    synchronize()?;
    let live = maps.active_generation()?;
    let next = live ^ 1;
    assign_state(maps, live, &mut compiled, state)?;
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

/// The limiter settings that decide whether two limiters are the same: everything but
/// their identity and state slots.
fn settings_of(config: &LimiterConfig) -> LimiterConfig {
    LimiterConfig {
        id: 0,
        bucket: 0,
        budget_bucket: 0,
        ceiling_bucket: 0,
        bytes_bucket: 0,
        ..*config
    }
}

/// The shared-bucket slots a limiter uses.
fn slots_of(config: &LimiterConfig) -> impl Iterator<Item = u16> {
    [
        config.bucket,
        config.budget_bucket,
        config.ceiling_bucket,
        config.bytes_bucket,
    ]
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
    let mut live_limiters = Vec::new();
    let mut next_id = 1;
    for generation in [0, 1] {
        for index in 0..MAX_LIMITERS {
            let config = maps.limiter(limiter_slot(generation, index as u8))?;
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
            config.bytes_bucket = same.bytes_bucket;
            continue;
        }
        config.id = next_id;
        next_id += 1;
        let mut allocate = || -> u16 {
            // Three slots per limiter of two generations fit with room to spare
            // (`SHARED_BUCKETS`), so a free one is always there.
            let slot = (0..SHARED_BUCKETS as u16)
                .find(|slot| !taken.contains(slot))
                .unwrap_or(NO_SHARED_BUCKET);
            taken.insert(slot);
            fresh_slots.push(slot);
            slot
        };
        if config.per == per::GLOBAL {
            config.bucket = allocate();
        } else {
            config.budget_bucket = allocate();
        }
        if config.ceiling_rate != 0 {
            config.ceiling_bucket = allocate();
        }
        // A global limiter's byte bucket; per-source ones live in the source's bucket.
        // At most three slots per limiter still: a global one has no budget.
        if config.byte_cost != 0 && config.per == per::GLOBAL {
            config.bytes_bucket = allocate();
        }
    }
    for slot in fresh_slots {
        maps.reset_shared_bucket(slot)?;
    }
    Ok(())
}

fn write_generation(maps: &mut GuardMaps, generation: u32, compiled: &Compiled) -> Result<()> {
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
    maps.set_generation_settings(generation, compiled.settings)?;
    Ok(())
}

/// A limit as the operator wrote it, read back from the kernel's settings.
fn limit_of(config: &LimiterConfig) -> Limit {
    let mut limit = Limit::new(config.rate, config.burst, per_from_code(config.per));
    if limit.per == Per::Prefix {
        limit.prefix_v4 = config.prefix_v4;
        limit.prefix_v6 = config.prefix_v6;
    }
    if config.byte_cost != 0 {
        limit.bytes = Some(ByteLimit {
            rate: config.bytes_rate,
            burst: config.bytes_burst,
        });
    }
    if limit.per != Per::Global {
        limit.block_ms = (config.block_ns / 1_000_000) as u32;
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
    let settings = *config.generation(generation);
    let mut limits = Vec::new();
    for index in 0..MAX_LIMITERS {
        limits.push(maps.limiter(limiter_slot(generation, index as u8))?);
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
        .with_max_size(
            if rule.action == kernel::action::DROP || rule.max_size == 0 {
                None
            } else {
                Some(rule.max_size)
            },
        )
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
    let off = settings.checks_off;
    policy.smurf.broadcast_echo = off & kernel::checks_off::BROADCAST_ECHO == 0;
    policy.smurf.multicast_echo_v6 = off & kernel::checks_off::MULTICAST_ECHO_V6 == 0;
    policy.smurf.martian_sources = off & kernel::checks_off::MARTIAN_SOURCES == 0;
    // The ceiling lives in the echo-reply limiters; a policy without one keeps the default.
    if let Some(config) = [(FAMILY_V4, 0u8), (FAMILY_V6, 129u8)]
        .iter()
        .filter_map(|&(family, icmp_type)| {
            let rule = maps
                .type_rule(type_slot(generation, family, icmp_type))
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
    if let Some(recon) = super::recon::Recon::from_kernel(&settings.recon) {
        policy.recon = recon;
    }
    policy.mode = if config.mode == config::MODE_DRY_RUN {
        Mode::DryRun
    } else {
        Mode::Enforce
    };
    Ok(policy)
}
