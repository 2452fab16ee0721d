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
//! Sketches live in arrays of tagged slots (`RECON_V4`, `RECON_V6`): a probe finds its
//! source's sketch by a seeded hash of the source ([`set_v4`]) and a compare of the tag of
//! each of the set's [`WAYS`] slots — an address computation the verifier inlines, where a
//! hash table cost a lookup call. A new sketch takes the slot of its set worth least
//! ([`worth`]): empty or outdated first, then the one with fewer bits; never a flagged one.
//!
//! A probe refused by its rule or limiter still counts into an existing sketch: it is a
//! probe all the same. No sketch is ever made for an allow-listed source, so it is never
//! flagged (one flagged before it was allowed stays blocked until its block ends).

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    maps::Array,
};
use icmp_guard_common::{
    FAMILY_V4,
    config::GenerationConfig,
    global,
    interface::interface_flags,
    recon::{
        Flagged, FlaggedKey, Observed, ReconConfig, ReconV4Key, ReconV6Key, SlotV4, SlotV6, Sweep,
        WAYS, action, blocks, epoch_of, is_probe, mask_v4_word, mask_v6_words, mode, observe,
        position_v4, position_v6, prefix_blocks, prefix_visit_due, set_v4, set_v6, victim, worth,
    },
};

use crate::{
    count,
    decide::interface,
    maps::{NS_PER_JIFFY, RECON_FLAGGED, RECON_V4, RECON_V6},
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
    /// `Config::recon_seed`: where keys are placed in the sketch arrays.
    pub seed: u32,
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
pub fn observe_probe(headers: &mut Headers, settings: &GenerationConfig, seed: u32) {
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
    headers.probe.seed = seed;
    headers.probe.threshold = config.source_bits;
    if headers.family == FAMILY_V4 {
        headers.recon_position = position_v4(headers.destination_v4());
        headers.probe.position = headers.recon_position;
        headers.probe.key_v4 = ReconV4Key {
            len: 32,
            addr: headers.source_word_v4(),
        };
        let sketch = source_v4(headers, config);
        if headers.recon & found::VISIT_PREFIX != 0 {
            prefix_v4(headers, config, sketch);
        }
    } else {
        headers.recon_position = position_v6(&headers.destination);
        headers.probe.position = headers.recon_position;
        headers.probe.key_v6 = ReconV6Key {
            len: 128,
            _padding: 0,
            addr: headers.source_words(),
        };
        let sketch = source_v6(headers, config);
        if headers.recon & found::VISIT_PREFIX != 0 {
            prefix_v6(headers, config, sketch);
        }
    }
}

/// The source's sketch: the probe counted into it. Returns it (null when the source has
/// none) for [`prefix_v4`], which phase one calls next when [`found::VISIT_PREFIX`] says so.
/// Inlined into phase one (finding a slot needs no key on the stack); the prefix's step
/// stays a call of its own, walked once per way into it, whose branches end in one state.
#[inline(always)]
fn source_v4(headers: &mut Headers, config: &ReconConfig) -> *mut Sweep {
    let sketch = find::<SlotV4>(headers.probe.seed, &headers.probe.key_v4);
    count_source(headers, config, sketch)
}

#[inline(always)]
fn source_v6(headers: &mut Headers, config: &ReconConfig) -> *mut Sweep {
    let sketch = find::<SlotV6>(headers.probe.seed, &headers.probe.key_v6);
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
fn prefix_v4(headers: &mut Headers, config: &ReconConfig, source: *mut Sweep) {
    let key = &mut headers.probe.key_v4;
    key.len = u32::from(config.prefix_v4);
    key.addr = mask_v4_word(key.addr, config.prefix_v4);
    let sketch = find::<SlotV4>(headers.probe.seed, &headers.probe.key_v4);
    let until = count_prefix(headers, config, sketch);
    remember_prefix(headers, source, until);
}

#[inline(never)]
fn prefix_v6(headers: &mut Headers, config: &ReconConfig, source: *mut Sweep) {
    let key = &mut headers.probe.key_v6;
    key.len = u32::from(config.prefix_v6);
    key.addr = mask_v6_words(key.addr, config.prefix_v6);
    let sketch = find::<SlotV6>(headers.probe.seed, &headers.probe.key_v6);
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
        probe.flagged.addr[..4].copy_from_slice(&probe.key_v4.addr.to_ne_bytes());
        // Byte by byte and volatile, so that the compiler does not make these a call to
        // `memset`, which the BPF target links as a global function that the verifiers of
        // 5.10 and 6.1 refuse.
        for byte in &mut probe.flagged.addr[4..] {
            // SAFETY: a valid, exclusive reference.
            unsafe { core::ptr::write_volatile(byte, 0) };
        }
    } else {
        probe.flagged.len = probe.key_v6.len as u8;
        probe.flagged.addr[..8].copy_from_slice(&probe.key_v6.addr[0].to_ne_bytes());
        probe.flagged.addr[8..].copy_from_slice(&probe.key_v6.addr[1].to_ne_bytes());
    }
}

/// Phase two, for a probe the policy passed from a source not on the allow list: the
/// sketches phase one did not find are made, holding this probe, each in the slot of its
/// set worth least ([`worth`]; none when both are flagged).
#[inline(always)]
pub fn create(headers: &Headers, config: &ReconConfig, seed: u32) {
    if headers.recon & (found::NEW_SOURCE | found::NEW_PREFIX) == 0 {
        return;
    }
    let now = headers.probe.now;
    // Once per new sketch: the division the counting path avoids.
    let epoch = epoch_of(now, config);
    let position = headers.recon_position;
    let new_source = headers.recon & found::NEW_SOURCE != 0;
    let new_prefix = headers.recon & found::NEW_PREFIX != 0;
    if headers.family == FAMILY_V4 {
        let source = ReconV4Key {
            len: 32,
            addr: headers.source_word_v4(),
        };
        if new_source {
            make::<SlotV4>(seed, &source, now, epoch, position);
        }
        if new_prefix {
            let prefix = ReconV4Key {
                len: u32::from(config.prefix_v4),
                addr: mask_v4_word(source.addr, config.prefix_v4),
            };
            make::<SlotV4>(seed, &prefix, now, epoch, position);
        }
    } else {
        let source = ReconV6Key {
            len: 128,
            _padding: 0,
            addr: headers.source_words(),
        };
        if new_source {
            make::<SlotV6>(seed, &source, now, epoch, position);
        }
        if new_prefix {
            let prefix = ReconV6Key {
                len: u32::from(config.prefix_v6),
                _padding: 0,
                addr: mask_v6_words(source.addr, config.prefix_v6),
            };
            make::<SlotV6>(seed, &prefix, now, epoch, position);
        }
    }
}

/// A family's array of sketch slots, as [`find`] and [`make`] use it.
trait Slot: Sized + 'static {
    type Key;
    /// The family's array.
    fn map() -> &'static Array<Self>;
    /// The set of `key` in it.
    fn set(seed: u32, key: &Self::Key) -> u32;
    /// True when this slot's tag is `key`.
    fn holds(&self, key: &Self::Key) -> bool;
    /// The tag's length and the sketch.
    fn parts(slot: *mut Self) -> (*mut u32, *mut Sweep);
    /// Writes the tag's address (its length is written last, by [`make`]).
    ///
    /// # Safety
    /// `slot` points into the map's value from a successful lookup.
    unsafe fn write_addr(slot: *mut Self, key: &Self::Key);
    /// The tag's length of `key`.
    fn len(key: &Self::Key) -> u32;
}

impl Slot for SlotV4 {
    type Key = ReconV4Key;
    #[inline(always)]
    fn map() -> &'static Array<Self> {
        &RECON_V4
    }
    #[inline(always)]
    fn set(seed: u32, key: &ReconV4Key) -> u32 {
        set_v4(seed, key)
    }
    #[inline(always)]
    fn holds(&self, key: &ReconV4Key) -> bool {
        self.key.addr == key.addr && self.key.len == key.len
    }
    #[inline(always)]
    fn parts(slot: *mut Self) -> (*mut u32, *mut Sweep) {
        // SAFETY: field addresses only, nothing read.
        unsafe { (&raw mut (*slot).key.len, &raw mut (*slot).sweep) }
    }
    #[inline(always)]
    unsafe fn write_addr(slot: *mut Self, key: &ReconV4Key) {
        // SAFETY: the caller's.
        unsafe { core::ptr::write_volatile(&raw mut (*slot).key.addr, key.addr) };
    }
    #[inline(always)]
    fn len(key: &ReconV4Key) -> u32 {
        key.len
    }
}

impl Slot for SlotV6 {
    type Key = ReconV6Key;
    #[inline(always)]
    fn map() -> &'static Array<Self> {
        &RECON_V6
    }
    #[inline(always)]
    fn set(seed: u32, key: &ReconV6Key) -> u32 {
        set_v6(seed, key)
    }
    #[inline(always)]
    fn holds(&self, key: &ReconV6Key) -> bool {
        self.key.addr[0] == key.addr[0]
            && self.key.addr[1] == key.addr[1]
            && self.key.len == key.len
    }
    #[inline(always)]
    fn parts(slot: *mut Self) -> (*mut u32, *mut Sweep) {
        // SAFETY: field addresses only, nothing read.
        unsafe { (&raw mut (*slot).key.len, &raw mut (*slot).sweep) }
    }
    #[inline(always)]
    unsafe fn write_addr(slot: *mut Self, key: &ReconV6Key) {
        // SAFETY: the caller's.
        unsafe {
            core::ptr::write_volatile(&raw mut (*slot).key.addr[0], key.addr[0]);
            core::ptr::write_volatile(&raw mut (*slot).key.addr[1], key.addr[1]);
        }
    }
    #[inline(always)]
    fn len(key: &ReconV6Key) -> u32 {
        key.len
    }
}

/// The sketch of `key`: the slot of its set whose tag is `key`.
#[inline(always)]
fn find<S: Slot>(seed: u32, key: &S::Key) -> Option<*mut Sweep> {
    let first = S::set(seed, key) * WAYS;
    for way in 0..WAYS {
        if let Some(slot) = S::map().get_ptr_mut(first + way) {
            // SAFETY: a pointer into a map value from a successful lookup, valid for this
            // run; another CPU that makes a sketch in this slot writes its tag last.
            if unsafe { &*slot }.holds(key) {
                return Some(S::parts(slot).1);
            }
        }
    }
    None
}

/// Makes the sketch of `key` unless its set holds it already (another CPU's packet may have
/// made it since phase one), in the slot worth less; none, counted, when both are flagged.
#[inline(always)]
fn make<S: Slot>(seed: u32, key: &S::Key, now: u64, epoch: u64, position: u32) {
    if find::<S>(seed, key).is_some() {
        return;
    }
    let first = S::set(seed, key) * WAYS;
    let (Some(a), Some(b)) = (S::map().get_ptr_mut(first), S::map().get_ptr_mut(first + 1)) else {
        return;
    };
    let ((len_a, sweep_a), (len_b, sweep_b)) = (S::parts(a), S::parts(b));
    // SAFETY: pointers into map values from successful lookups, valid for this run.
    let (worth_a, worth_b) = unsafe {
        (
            worth(*len_a, &*sweep_a, now, epoch),
            worth(*len_b, &*sweep_b, now, epoch),
        )
    };
    let slot = match victim(worth_a, worth_b) {
        Some(0) => a,
        Some(_) => b,
        None => {
            count::event(global::RECON_UNTRACKED);
            return;
        }
    };
    let (len, sweep) = S::parts(slot);
    // SAFETY: as above. The tag is cleared first and written last, every store volatile so
    // that the compiler keeps this order: another CPU's probe finds neither key in a
    // half-written sketch (on x86, whose stores are seen in order; elsewhere at worst a few
    // bits of the old sketch, never its block: a flagged slot is never taken). Two CPUs
    // making sketches in one slot at worst leave one of them, mixed.
    unsafe {
        core::ptr::write_volatile(len, 0);
        (*sweep).start(epoch, position);
        S::write_addr(slot, key);
        core::ptr::write_volatile(len, S::len(key));
    }
}

/// True when phase one found the probe's source blocked.
#[inline(always)]
pub fn blocked(headers: &Headers) -> bool {
    headers.recon & found::BLOCKED != 0
}
