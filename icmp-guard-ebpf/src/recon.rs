//! Sweep detection ([`icmp_guard_common::recon`]), in two phases so that the verifier walks
//! its branches once:
//!
//! - [`observe_probe`] runs right after the parser's hand-over: a probe whose source (and
//!   source prefix) already has a sketch is counted into it, and a flagged one is marked
//!   blocked. The prefix's sketch is skipped when the source's sketch answers for it (a
//!   destination the source probed this epoch, its prefix visited this tick:
//!   `icmp_guard_common::recon`), so that a repeated probe costs one lookup. It is a
//!   BPF-to-BPF call that returns nothing and keeps its working state in the hand-over map
//!   value ([`Probe`]), not on the stack: every way through it leaves the caller's verifier
//!   state as it was, so the rest of the program is walked once, not once per branch taken
//!   here. What it found is [`Headers::recon`].
//! - [`create`] runs once the decision and the limiter passed the probe, and only for
//!   sources not on the allow list: the sketches phase one did not find are made — so state
//!   is created only where the new-source budget already admitted the source.
//!
//! A probe refused by its rule or limiter still counts into an existing sketch: it is a
//! probe all the same. No sketch is ever made for an allow-listed source, so it is never
//! flagged (one flagged before it was allowed stays blocked until its block ends).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    maps::LruHashMap,
};
use icmp_guard_common::{
    FAMILY_V4,
    config::GenerationConfig,
    interface::interface_flags,
    limit::{mask_v4, mask_v6},
    recon::{
        Flagged, FlaggedKey, Observed, ReconConfig, ReconV4Key, ReconV6Key, Sweep, action, blocks,
        epoch_of, is_probe, mask_v6_in_place, mode, observe, position_v4, position_v6,
        prefix_blocks, prefix_visit_due, word_and_mask,
    },
};

use crate::{
    decide::interface,
    maps::{NS_PER_JIFFY, RECON_FLAGGED, RECON_SCRATCH, RECON_V4, RECON_V6},
    parse::Headers,
};

/// Bits of [`Headers::recon`].
pub mod found {
    /// The source or its prefix is flagged and blocked: drop the probe as `sweep`.
    pub const BLOCKED: u8 = 1;
    /// A tracked probe whose source has no sketch yet.
    pub const NEW_SOURCE: u8 = 2;
    /// A tracked probe whose source prefix has no sketch yet.
    pub const NEW_PREFIX: u8 = 4;
    /// Within phase one: the source's sketch does not answer for the prefix's, which is to
    /// be visited.
    pub const VISIT_PREFIX: u8 = 8;
}

/// One probe as the sketch it counts into sees it; part of the hand-over.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Probe {
    pub now: u64,
    pub position: u32,
    /// The sketch's threshold in bits.
    pub threshold: u16,
    pub _padding: [u8; 2],
    /// The sketch's key in `RECON_FLAGGED`.
    pub flagged: FlaggedKey,
    pub key_v4: ReconV4Key,
    pub key_v6: ReconV6Key,
    /// The record written to `RECON_FLAGGED` (built here, not on the stack).
    pub record: Flagged,
}

/// Phase one (see the module): counts a probe into the sketches that exist and records what
/// it found in [`Headers::recon`].
#[inline(never)]
pub fn observe_probe(headers: &mut Headers, settings: &GenerationConfig) {
    headers.recon = 0;
    let config = &settings.recon;
    if !is_probe(headers.family, headers.icmp_type) || config.mode == mode::OFF {
        return;
    }
    if config.mode == mode::AUTO
        && !interface().is_some_and(|ours| ours.flags & interface_flags::FORWARDING != 0)
    {
        return;
    }
    // SAFETY: a helper without arguments (the verifier inlines it into one load).
    let now = unsafe { bpf_jiffies64() }.wrapping_mul(NS_PER_JIFFY.load());
    if config.epoch_ns == 0 {
        return;
    }
    headers.probe.now = now;
    headers.probe.threshold = config.source_bits;
    if headers.family == FAMILY_V4 {
        let source = headers.source_v4();
        headers.recon_position = position_v4(headers.destination_v4());
        headers.probe.position = headers.recon_position;
        headers.probe.key_v4 = ReconV4Key {
            len: 32,
            addr: source,
        };
        let sketch = source_v4(headers, config);
        if headers.recon & found::VISIT_PREFIX != 0 {
            prefix_v4(headers, config, sketch);
        }
    } else {
        headers.recon_position = position_v6(&headers.destination);
        headers.probe.position = headers.recon_position;
        headers.probe.key_v6.len = 128;
        headers.probe.key_v6.addr = headers.source;
        let sketch = source_v6(headers, config);
        if headers.recon & found::VISIT_PREFIX != 0 {
            prefix_v6(headers, config, sketch);
        }
    }
}

// Calls too, each walked once per way into it, whose branches end in the same state. The
// keys are read in place from the hand-over's map memory: by value they would be copied to
// the stack these calls must not grow.

/// The source's sketch: the probe counted into it. Returns it (null when the source has
/// none) for [`prefix_v4`], which phase one calls next when [`found::VISIT_PREFIX`] says so:
/// the two calls side by side rather than one inside the other, whose frames together would
/// not fit beside the guard's in the 512 bytes of stack.
#[inline(never)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the key is read in place from the hand-over's map memory (see above)"
)]
fn source_v4(headers: &mut Headers, config: &ReconConfig) -> *mut Sweep {
    let sketch = RECON_V4.get_ptr_mut(&headers.probe.key_v4);
    count_source(headers, config, sketch)
}

#[inline(never)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the key is read in place from the hand-over's map memory (see above)"
)]
fn source_v6(headers: &mut Headers, config: &ReconConfig) -> *mut Sweep {
    let sketch = RECON_V6.get_ptr_mut(&headers.probe.key_v6);
    count_source(headers, config, sketch)
}

/// Counts the probe into the source's `sketch` (or records that it has none), and records
/// [`found::VISIT_PREFIX`] when the prefix's sketch is to be visited: not when the source is
/// blocked, prefixes are off, or the source's sketch answers for its prefix this tick.
/// Returns the sketch, null when there is none.
#[inline(always)]
fn count_source(
    headers: &mut Headers,
    config: &ReconConfig,
    sketch: Option<*mut Sweep>,
) -> *mut Sweep {
    let prefixes = config.prefix_bits != 0;
    let Some(sketch) = sketch else {
        headers.recon |= found::NEW_SOURCE;
        if prefixes {
            headers.recon |= found::VISIT_PREFIX;
        }
        return core::ptr::null_mut();
    };
    // SAFETY: a pointer into a map value from a successful lookup, valid for this run;
    // other CPUs may race on it, which at worst loses a bit (`icmp_guard_common::recon`).
    let sweep = unsafe { &mut *sketch };
    let Some(observed) = track(headers, config, sweep) else {
        return sketch;
    };
    if !prefixes {
        return sketch;
    }
    let now = headers.probe.now;
    if prefix_visit_due(observed, sweep, now) {
        headers.recon |= found::VISIT_PREFIX;
    } else if prefix_blocks(sweep, now, config) {
        // A destination this source probed this epoch: counted in the prefix already.
        headers.recon |= found::BLOCKED;
    }
    sketch
}

/// The prefix's sketch: the probe counted into it, or [`found::NEW_PREFIX`] recorded; what
/// the visit found is written into the source's sketch, `source` (null when the source has
/// none). The pointer is passed on rather than kept across the call, which would cost
/// phase one stack that the guard's frame leaves little of.
#[inline(never)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the key is read in place from the hand-over's map memory (see above)"
)]
fn prefix_v4(headers: &mut Headers, config: &ReconConfig, source: *mut Sweep) {
    let prefix = mask_v4(headers.source_v4(), config.prefix_v4);
    headers.probe.key_v4 = ReconV4Key {
        len: u32::from(config.prefix_v4),
        addr: prefix,
    };
    let sketch = RECON_V4.get_ptr_mut(&headers.probe.key_v4);
    let until = count_prefix(headers, config, sketch);
    remember_prefix(headers, source, until);
}

#[inline(never)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the key is read in place from the hand-over's map memory (see above)"
)]
fn prefix_v6(headers: &mut Headers, config: &ReconConfig, source: *mut Sweep) {
    mask_v6_in_place(&mut headers.probe.key_v6.addr, config.prefix_v6);
    headers.probe.key_v6.len = u32::from(config.prefix_v6);
    let sketch = RECON_V6.get_ptr_mut(&headers.probe.key_v6);
    let until = count_prefix(headers, config, sketch);
    remember_prefix(headers, source, until);
}

/// Writes what the visit of the prefix found (its block's end, `until`) into the source's
/// sketch, if it has one.
#[inline(always)]
fn remember_prefix(headers: &Headers, source: *mut Sweep, until: u64) {
    if source.is_null() {
        return;
    }
    // SAFETY: a pointer into a map value from the source's lookup in this run (see
    // `count_source`).
    let sweep = unsafe { &mut *source };
    sweep.prefix_visited = headers.probe.now;
    sweep.prefix_until = until;
}

#[inline(always)]
fn count_prefix(headers: &mut Headers, config: &ReconConfig, sketch: Option<*mut Sweep>) -> u64 {
    headers.probe.threshold = config.prefix_bits;
    let Some(sketch) = sketch else {
        headers.recon |= found::NEW_PREFIX;
        return 0;
    };
    // SAFETY: as in `count_source`.
    let sweep = unsafe { &mut *sketch };
    let _ = track(headers, config, sweep);
    sweep.blocked_until
}

/// Counts the probe into `sweep`: what it did, or `None` (and [`found::BLOCKED`] recorded)
/// when that sketch is, or is now, blocked.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "the flagged key and record are read in place from the hand-over's map memory (see above)"
)]
fn track(headers: &mut Headers, config: &ReconConfig, sweep: &mut Sweep) -> Option<Observed> {
    let probe = &headers.probe;
    if blocks(sweep, probe.now, config) {
        headers.recon |= found::BLOCKED;
        return None;
    }
    let observed = observe(sweep, probe.position, probe.now, config, probe.threshold);
    if observed == Observed::Flagged {
        flagged_key(headers);
        let record = &mut headers.probe.record;
        // SAFETY: a helper without arguments; once per flagging, not per packet.
        record.flagged_at = unsafe { bpf_ktime_get_ns() };
        record.block_ns = config.block_ns;
        record.bits = sweep.bits;
        record.action = config.action;
        let probe = &headers.probe;
        let _ = RECON_FLAGGED.insert(&probe.flagged, &probe.record, 0);
        if config.action == action::DROP {
            headers.recon |= found::BLOCKED;
            return None;
        }
    }
    Some(observed)
}

/// Fills [`Probe::flagged`] from the key of the sketch just flagged: once per flagging,
/// not per probe.
#[inline(always)]
fn flagged_key(headers: &mut Headers) {
    let probe = &mut headers.probe;
    probe.flagged.family = headers.family;
    probe.flagged._padding = [0; 2];
    if headers.family == FAMILY_V4 {
        probe.flagged.len = probe.key_v4.len as u8;
        probe.flagged.addr[..4].copy_from_slice(&probe.key_v4.addr);
        // Byte by byte and volatile, so that the compiler does not make these a call to
        // `memset`, which the BPF target links as a global function that the verifiers of
        // 5.10 and 6.1 refuse.
        for byte in &mut probe.flagged.addr[4..] {
            // SAFETY: a valid, exclusive reference.
            unsafe { core::ptr::write_volatile(byte, 0) };
        }
    } else {
        probe.flagged.len = probe.key_v6.len as u8;
        probe.flagged.addr = probe.key_v6.addr;
    }
}

/// Phase two, for a probe the policy passed from a source not on the allow list: the
/// sketches phase one did not find are made, holding this probe.
#[inline(always)]
pub fn create(headers: &Headers, config: &ReconConfig) {
    if headers.recon & (found::NEW_SOURCE | found::NEW_PREFIX) == 0 {
        return;
    }
    let Some(scratch) = RECON_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value, from a successful lookup; all zero but for the fields set
    // here, and the one bit is cleared again before the function returns.
    let scratch = unsafe { &mut *scratch };
    // Once per new sketch: the division the counting path avoids.
    let epoch = epoch_of(headers.probe.now, config);
    let parity = (epoch & 1) as usize;
    let (word, mask) = word_and_mask(headers.recon_position);
    scratch.epoch = epoch;
    scratch.blocked_until = 0;
    scratch.bits = 1;
    scratch.current_bits = 1;
    scratch.words[parity][word] = mask;
    // Both inserts are tried (one that exists is left alone, `BPF_NOEXIST`), which keeps
    // this path short for the verifier; losing a race to another CPU is fine too.
    let prefixes = config.prefix_bits != 0;
    if headers.family == FAMILY_V4 {
        let source = headers.source_v4();
        let key = ReconV4Key {
            len: 32,
            addr: source,
        };
        insert(&RECON_V4, &key, scratch);
        if prefixes {
            let key = ReconV4Key {
                len: u32::from(config.prefix_v4),
                addr: mask_v4(source, config.prefix_v4),
            };
            insert(&RECON_V4, &key, scratch);
        }
    } else {
        let key = ReconV6Key {
            len: 128,
            addr: headers.source,
        };
        insert(&RECON_V6, &key, scratch);
        if prefixes {
            let key = ReconV6Key {
                len: u32::from(config.prefix_v6),
                addr: mask_v6(headers.source, config.prefix_v6),
            };
            insert(&RECON_V6, &key, scratch);
        }
    }
    scratch.words[parity][word] = 0;
}

#[inline(always)]
fn insert<K>(map: &'static LruHashMap<K, Sweep>, key: &K, value: &Sweep) {
    let _ = map.insert(key, value, u64::from(BPF_NOEXIST));
}

/// True when phase one found the probe's source blocked.
#[inline(always)]
pub fn blocked(headers: &Headers) -> bool {
    headers.recon & found::BLOCKED != 0
}
