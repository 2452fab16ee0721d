//! Reconnaissance: ping sweeps seen on a gateway (issue 20).
//!
//! A sweep is one source (or one source prefix) sending probes — echo requests (v4 and v6),
//! timestamp and address-mask requests — to many distinct destinations, a few each. Per
//! source and per source prefix the program keeps a [`Sweep`]: a 1024-bit linear-counting
//! bitmap of hashed destinations in a two-epoch rolling window. Each epoch lasts half the
//! policy's window; the bitmap of the current epoch and the one before it together cover
//! between half a window and a whole window of traffic.
//!
//! The program never estimates: it keeps [`Sweep::bits`], the number of bits set in the union
//! of both bitmaps (one more whenever a probe sets a bit that neither had), and compares it
//! with a bit threshold that userspace precomputed from the destination threshold
//! ([`bits_for`]). Userspace turns bits back into destinations ([`estimate`], linear counting:
//! n = -m ln(1 - bits/m)). Each packet reads and writes one word of each bitmap: no loop over
//! the bitmap, nothing the verifier has to walk more than once.
//!
//! The prefix's sketch changes only when one of its sources probes a destination that
//! source has not probed in the current epoch: epochs are the same for every sketch (the
//! clock divided by the epoch length), so a destination already in the source's current
//! bitmap is in its prefix's current bitmap too. A probe that finds its bit set in its
//! source's current bitmap ([`Observed::Seen`]) therefore skips the prefix's sketch, and with
//! it a second lookup: the source's sketch remembers what the prefix's block was when it
//! last visited it ([`Sweep::prefix_until`]), and visits it again at least once a tick of the
//! coarse clock ([`prefix_visit_due`]), so that a prefix flagged by its other sources (or
//! forgotten by `unblock`) blocks (or frees) this one within a tick.
//!
//! Only probes the decision passed are counted (after their limiter admitted them, so state
//! is created only where the new-source budget already admits state): errors never, nor
//! anything from an allow-listed source. The updates are not atomic: two CPUs racing on one
//! word may lose a bit, which undercounts by at most the racing packets.

/// Bits of each bitmap (linear counting's m).
pub const BITMAP_BITS: u32 = 1024;
/// 64-bit words of each bitmap.
pub const BITMAP_WORDS: usize = 16;

/// Slots of each of `RECON_V4` and `RECON_V6` (sources and prefixes together): arrays of
/// sets of [`WAYS`] slots, a key's set chosen by a seeded hash (see the module).
pub const RECON_ENTRIES: u32 = 4_096;
/// Slots per set.
pub const WAYS: u32 = 2;
/// Sets of each map.
pub const SETS: u32 = RECON_ENTRIES / WAYS;
const _: () = assert!(SETS.is_power_of_two());
/// Entries of `RECON_FLAGGED`: the sources and prefixes flagged most recently.
pub const FLAGGED_ENTRIES: u32 = 1024;

/// Values of [`ReconConfig::mode`].
pub mod mode {
    /// Detection off (also the state of fresh maps).
    pub const OFF: u8 = 0;
    /// On, whatever the interface.
    pub const ON: u8 = 1;
    /// On where the interface forwards ([`crate::interface::InterfaceConfig::flags`] has
    /// [`crate::interface::interface_flags::FORWARDING`]).
    pub const AUTO: u8 = 2;
}

/// Values of [`ReconConfig::action`].
pub mod action {
    /// A flagged source's probes are dropped as `sweep` until its block ends.
    pub const DROP: u8 = 0;
    /// A flagged source is only recorded in `RECON_FLAGGED` (for the log, `top`, metrics).
    pub const LOG: u8 = 1;
}

/// The sweep settings of one policy generation, precomputed by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconConfig {
    /// One of [`mode`].
    pub mode: u8,
    /// One of [`action`].
    pub action: u8,
    /// Prefix length of IPv4 source prefixes.
    pub prefix_v4: u8,
    /// Prefix length of IPv6 source prefixes.
    pub prefix_v6: u8,
    /// A source is flagged once this many bits are set ([`bits_for`] of the threshold).
    pub source_bits: u16,
    /// A prefix is flagged once this many bits are set; 0: prefixes are not tracked.
    pub prefix_bits: u16,
    /// The policy's thresholds in destinations, kept for `policy show` (the program reads
    /// only the bits).
    pub sweep_threshold: u16,
    pub prefix_threshold: u16,
    pub _padding: u32,
    /// Length of an epoch (half the window) in nanoseconds; never 0 when `mode` is not off.
    pub epoch_ns: u64,
    /// How long a flagged source stays blocked.
    pub block_ns: u64,
}

/// One source's (or prefix's) sketch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// The epoch (clock / epoch length) of the current bitmap, `words[epoch & 1]`.
    pub epoch: u64,
    /// Until when (coarse clock, ns) the source is flagged; 0 if never.
    pub blocked_until: u64,
    /// Bits set in the union of both bitmaps.
    pub bits: u32,
    /// Bits set in the current bitmap.
    pub current_bits: u32,
    /// A source's sketch only: the coarse clock when a probe of the source last visited its
    /// prefix's sketch (0: never).
    pub prefix_visited: u64,
    /// A source's sketch only: the prefix's `blocked_until` as that visit found it (0: not
    /// blocked, or no prefix sketch).
    pub prefix_until: u64,
    /// The two bitmaps, by epoch parity.
    pub words: [[u64; BITMAP_WORDS]; 2],
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers only, no padding, every bit pattern valid.
unsafe impl aya::Pod for Sweep {}

impl Sweep {
    /// Starts the sketch afresh in `epoch` holding one probe, to the destination at bit
    /// `position`. Every store volatile, in this order: no `memset` (see [`clear`]), and
    /// none moved past the store that follows (the program writes the slot's tag after it).
    #[inline(always)]
    pub fn start(&mut self, epoch: u64, position: u32) {
        let (word, mask) = word_and_mask(position);
        // SAFETY: valid, exclusive references.
        unsafe {
            core::ptr::write_volatile(&mut self.epoch, epoch);
            core::ptr::write_volatile(&mut self.blocked_until, 0);
            core::ptr::write_volatile(&mut self.bits, 1);
            core::ptr::write_volatile(&mut self.current_bits, 1);
            core::ptr::write_volatile(&mut self.prefix_visited, 0);
            core::ptr::write_volatile(&mut self.prefix_until, 0);
        }
        clear(&mut self.words[0]);
        clear(&mut self.words[1]);
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(&mut self.words[(epoch & 1) as usize][word], mask) };
    }
}

#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for ReconConfig {}

/// Key of a sketch in `RECON_V4`: a source (`len` 32) or a source prefix (`len` the prefix
/// length, at least 8), and the address as it lies in the packet, read as one word (network
/// byte order in memory). `len` 0 is an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReconV4Key {
    pub len: u32,
    pub addr: u32,
}

impl ReconV4Key {
    /// The key of `octets/len`.
    pub const fn new(len: u8, octets: [u8; 4]) -> Self {
        Self {
            len: len as u32,
            addr: u32::from_ne_bytes(octets),
        }
    }

    /// The address.
    pub const fn octets(&self) -> [u8; 4] {
        self.addr.to_ne_bytes()
    }
}

/// Key of a sketch in `RECON_V6`: a source (`len` 128) or a source prefix, the address as
/// two words read from the packet (as [`ReconV4Key`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReconV6Key {
    pub len: u32,
    pub _padding: u32,
    pub addr: [u64; 2],
}

impl ReconV6Key {
    /// The key of `octets/len`.
    pub fn new(len: u8, octets: [u8; 16]) -> Self {
        let mut high = [0u8; 8];
        high.copy_from_slice(&octets[..8]);
        let mut low = [0u8; 8];
        low.copy_from_slice(&octets[8..]);
        Self {
            len: u32::from(len),
            _padding: 0,
            addr: [u64::from_ne_bytes(high), u64::from_ne_bytes(low)],
        }
    }

    /// The address.
    pub fn octets(&self) -> [u8; 16] {
        let mut octets = [0u8; 16];
        octets[..8].copy_from_slice(&self.addr[0].to_ne_bytes());
        octets[8..].copy_from_slice(&self.addr[1].to_ne_bytes());
        octets
    }
}

/// A slot of `RECON_V4`: the key it holds (its tag) and that key's sketch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotV4 {
    pub key: ReconV4Key,
    pub sweep: Sweep,
}

/// A slot of `RECON_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotV6 {
    pub key: ReconV6Key,
    pub sweep: Sweep,
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers only, no padding, every bit pattern valid.
unsafe impl aya::Pod for ReconV4Key {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for ReconV6Key {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for SlotV4 {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for SlotV6 {}

/// Odd constant of Fibonacci hashing, to fold a key's length into its set.
const GOLDEN: u32 = 0x9e37_79b9;

/// The set of `key` in `RECON_V4` under `seed` (`Config::recon_seed`): its slots are
/// `set * WAYS` and the next [`WAYS`]` - 1`.
#[inline(always)]
pub const fn set_v4(seed: u32, key: &ReconV4Key) -> u32 {
    mix(key.addr ^ seed ^ key.len.wrapping_mul(GOLDEN)) & (SETS - 1)
}

/// The set of `key` in `RECON_V6`.
#[inline(always)]
pub const fn set_v6(seed: u32, key: &ReconV6Key) -> u32 {
    let [high, low] = key.addr;
    let h = mix(high as u32 ^ seed);
    let h = mix(h ^ (high >> 32) as u32);
    let h = mix(h ^ low as u32);
    mix(h ^ (low >> 32) as u32 ^ key.len.wrapping_mul(GOLDEN)) & (SETS - 1)
}

/// What keeping the sketch in a slot is worth when a new sketch needs a slot of its set
/// (the one worth least gives way; see the module): nothing for an empty slot (`key_len` 0)
/// or one whose both bitmaps are older than the previous epoch of `epoch`; everything
/// ([`u32::MAX`], never given up) while it is flagged (`now` before its block's end, which
/// with action log marks it flagged); else one more than its bits, so that a sender of a
/// few probes gives way before a sweeper.
#[inline(always)]
pub const fn worth(key_len: u32, sweep: &Sweep, now: u64, epoch: u64) -> u32 {
    if key_len == 0 {
        0
    } else if now < sweep.blocked_until {
        u32::MAX
    } else if sweep.epoch.wrapping_add(1) < epoch {
        0
    } else {
        sweep.bits.saturating_add(1)
    }
}

/// The way (of a set of two) a new sketch takes, from what keeping each is worth: the one
/// worth less (the first on a tie); `None` when both are flagged.
#[inline(always)]
pub const fn victim(first: u32, second: u32) -> Option<u32> {
    if first == u32::MAX && second == u32::MAX {
        None
    } else if second < first {
        Some(1)
    } else {
        Some(0)
    }
}

/// `addr` (as [`ReconV4Key::addr`]) masked to its first `len` bits.
#[inline(always)]
pub const fn mask_v4_word(addr: u32, len: u8) -> u32 {
    let keep = if len == 0 {
        0
    } else if len >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - len)
    };
    addr & keep.to_be()
}

/// `addr` (as [`ReconV6Key::addr`]) masked to its first `len` bits.
#[inline(always)]
pub const fn mask_v6_words(addr: [u64; 2], len: u8) -> [u64; 2] {
    const fn keep(bits: u32) -> u64 {
        if bits == 0 {
            0
        } else if bits >= 64 {
            u64::MAX
        } else {
            u64::MAX << (64 - bits)
        }
    }
    let len = if len > 128 { 128 } else { len as u32 };
    let (high, low) = if len >= 64 { (64, len - 64) } else { (len, 0) };
    [addr[0] & keep(high).to_be(), addr[1] & keep(low).to_be()]
}

/// Key of `RECON_FLAGGED`: family, prefix length and the (masked) address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlaggedKey {
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    /// 32/128 for a source, else the prefix length.
    pub len: u8,
    pub _padding: [u8; 2],
    /// The address; IPv4 in the first four bytes.
    pub addr: [u8; 16],
}

/// Value of `RECON_FLAGGED`, written when a source crosses its threshold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flagged {
    /// When it was flagged: CLOCK_MONOTONIC in ns (`bpf_ktime_get_ns`), which userspace
    /// can read too.
    pub flagged_at: u64,
    /// How long it is blocked (with action log: counted as flagged) from then.
    pub block_ns: u64,
    /// Bits set when it was flagged.
    pub bits: u32,
    /// The [`action`] in force when it was flagged.
    pub action: u8,
    pub _padding: [u8; 3],
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers and bytes, no padding.
unsafe impl aya::Pod for FlaggedKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for Flagged {}

/// True for the probes a sweep is made of: echo, timestamp and address-mask requests
/// (ICMPv4 8, 13, 17) and ICMPv6 echo requests (128).
#[inline(always)]
pub const fn is_probe(family: u8, icmp_type: u8) -> bool {
    if family == crate::FAMILY_V4 {
        icmp_type == 8 || icmp_type == 13 || icmp_type == 17
    } else {
        icmp_type == 128
    }
}

/// murmur3's 32-bit finaliser: every input bit moves every output bit, so consecutive
/// addresses (a sweep of a /24) land on unrelated bits.
#[inline(always)]
pub const fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The bit (0..[`BITMAP_BITS`]) of an IPv4 destination.
#[inline(always)]
pub const fn position_v4(destination: [u8; 4]) -> u32 {
    mix(u32::from_be_bytes(destination)) & (BITMAP_BITS - 1)
}

/// The bit of an IPv6 destination.
#[inline(always)]
pub fn position_v6(destination: &[u8; 16]) -> u32 {
    let word = |i: usize| {
        u32::from_be_bytes([
            destination[i],
            destination[i + 1],
            destination[i + 2],
            destination[i + 3],
        ])
    };
    let (a, b, c, d) = (word(0), word(4), word(8), word(12));
    mix(a ^ mix(b ^ mix(c ^ mix(d)))) & (BITMAP_BITS - 1)
}

/// The word and mask of bit `position` in a bitmap.
#[inline(always)]
pub const fn word_and_mask(position: u32) -> (usize, u64) {
    (
        ((position >> 6) as usize) & (BITMAP_WORDS - 1),
        1u64 << (position & 63),
    )
}

/// What a probe did to a sketch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Its destination's bit was set in the current bitmap already: nothing changed.
    Seen,
    /// Under the threshold (or already flagged and recorded).
    Counted,
    /// This probe crossed the threshold: record the flag until `blocked_until`.
    Flagged,
}

/// The epoch of `now`: the clock divided by the epoch length (0 when `config` has none,
/// which detection that is on never has).
#[inline(always)]
pub const fn epoch_of(now: u64, config: &ReconConfig) -> u64 {
    match now.checked_div(config.epoch_ns) {
        Some(epoch) => epoch,
        None => 0,
    }
}

/// [`epoch_of`] `now`, without the division (a real cost per packet) while `now` is still
/// in `sweep`'s current epoch, which is the common case. (`sweep.epoch` came from the same
/// division, so the product does not wrap, unless the policy has since made the epoch
/// longer; then a wrapped start that happens to fall within an epoch of `now` keeps the
/// sketch's epoch for at most one epoch.)
#[inline(always)]
pub const fn epoch_at(sweep: &Sweep, now: u64, config: &ReconConfig) -> u64 {
    let start = sweep.epoch.wrapping_mul(config.epoch_ns);
    if now >= start && now - start < config.epoch_ns {
        sweep.epoch
    } else {
        epoch_of(now, config)
    }
}

/// Counts a probe to the destination at bit `position` at `now` into `sweep`; `threshold`
/// in bits. Straight-line: one word of each bitmap is read, the rotation clears one
/// bitmap (or both after a silence of more than an epoch).
#[inline(always)]
pub fn observe(
    sweep: &mut Sweep,
    position: u32,
    now: u64,
    config: &ReconConfig,
    threshold: u16,
) -> Observed {
    let (word, mask) = word_and_mask(position);
    let epoch = epoch_at(sweep, now, config);
    if epoch != sweep.epoch {
        let current = (epoch & 1) as usize;
        if epoch == sweep.epoch.wrapping_add(1) {
            // The current bitmap becomes the previous one; the one before is forgotten.
            clear(&mut sweep.words[current]);
            sweep.bits = sweep.current_bits;
        } else {
            clear(&mut sweep.words[0]);
            clear(&mut sweep.words[1]);
            sweep.bits = 0;
        }
        sweep.current_bits = 0;
        sweep.epoch = epoch;
    }
    let parity = (epoch & 1) as usize;
    let current = sweep.words[parity][word];
    if current & mask != 0 {
        return Observed::Seen;
    }
    sweep.words[parity][word] = current | mask;
    sweep.current_bits += 1;
    if sweep.words[parity ^ 1][word] & mask != 0 {
        return Observed::Counted;
    }
    sweep.bits += 1;
    if sweep.bits >= u32::from(threshold) && now >= sweep.blocked_until {
        sweep.blocked_until = now.saturating_add(config.block_ns);
        return Observed::Flagged;
    }
    Observed::Counted
}

/// Zeroes a bitmap word by word: volatile stores, so that the compiler does not make them
/// a call to `memset`, which the BPF target links as a global function that older
/// verifiers (5.10, 6.1) refuse.
#[inline(always)]
fn clear(words: &mut [u64; BITMAP_WORDS]) {
    for word in words.iter_mut() {
        // SAFETY: a valid, exclusive reference.
        unsafe { core::ptr::write_volatile(word, 0) };
    }
}

/// True when `sweep` blocks the probes of its source at `now`.
#[inline(always)]
pub fn blocks(sweep: &Sweep, now: u64, config: &ReconConfig) -> bool {
    config.action == action::DROP && now < sweep.blocked_until
}

/// True when a probe that did `observed` to its source's `sketch` at `now` (the coarse
/// clock) must visit the prefix's sketch: it set a bit there, or the source has not
/// visited the prefix this tick (see the module).
#[inline(always)]
pub fn prefix_visit_due(observed: Observed, sketch: &Sweep, now: u64) -> bool {
    observed != Observed::Seen || sketch.prefix_visited != now
}

/// True when the prefix's block, as the source's `sketch` last saw it, blocks its probes
/// at `now`.
#[inline(always)]
pub fn prefix_blocks(sketch: &Sweep, now: u64, config: &ReconConfig) -> bool {
    config.action == action::DROP && now < sketch.prefix_until
}

/// The bits a linear-counting bitmap of [`BITMAP_BITS`] is expected to have set after
/// `destinations` distinct ones: m(1 - e^(-n/m)), rounded to the nearest bit, at least 1.
#[cfg(feature = "user")]
pub fn bits_for(destinations: u32) -> u16 {
    let m = f64::from(BITMAP_BITS);
    let bits = m * (1.0 - (-f64::from(destinations) / m).exp());
    (bits.round() as u16).clamp(1, BITMAP_BITS as u16 - 1)
}

/// The distinct destinations `bits` set bits stand for: -m ln(1 - bits/m).
#[cfg(feature = "user")]
pub fn estimate(bits: u32) -> u32 {
    let m = f64::from(BITMAP_BITS);
    let bits = f64::from(bits.min(BITMAP_BITS - 1));
    (-m * (1.0 - bits / m).ln()).round() as u32
}

/// Destination thresholds `bits_for` can express: above this the bitmap saturates.
pub const MAX_THRESHOLD: u32 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::vec::Vec;

    #[test]
    fn the_layout_has_no_implicit_padding() {
        assert_eq!(size_of::<ReconConfig>(), 16 + 16);
        assert_eq!(size_of::<Sweep>(), 8 + 8 + 8 + 8 + 8 + 2 * 16 * 8);
        assert_eq!(size_of::<FlaggedKey>(), 20);
        assert_eq!(size_of::<Flagged>(), 24);
        assert_eq!(size_of::<ReconV4Key>(), 8);
        assert_eq!(size_of::<ReconV6Key>(), 24);
        assert_eq!(size_of::<SlotV4>(), 8 + size_of::<Sweep>());
        assert_eq!(size_of::<SlotV6>(), 24 + size_of::<Sweep>());
    }

    fn config() -> ReconConfig {
        ReconConfig {
            mode: mode::ON,
            action: action::DROP,
            prefix_v4: 24,
            prefix_v6: 48,
            source_bits: 1000,
            prefix_bits: 0,
            sweep_threshold: 1000,
            prefix_threshold: 0,
            _padding: 0,
            epoch_ns: 5_000_000_000,
            block_ns: 60_000_000_000,
        }
    }

    #[test]
    fn a_sweep_of_a_slash_24_is_counted_within_its_accuracy() {
        let config = config();
        let mut sweep = Sweep::default();
        for host in 0..=255u8 {
            observe(
                &mut sweep,
                position_v4([198, 51, 100, host]),
                1,
                &config,
                1000,
            );
        }
        let estimate = estimate(sweep.bits);
        assert!((240..=272).contains(&estimate), "{estimate}");
    }

    #[test]
    fn the_window_rolls_one_epoch_and_forgets_after_two() {
        let config = config();
        let mut sweep = Sweep::default();
        let e = config.epoch_ns;
        for host in 0..20u8 {
            observe(&mut sweep, position_v4([192, 0, 2, host]), e, &config, 1000);
        }
        let first = sweep.bits;
        // The same destinations in the next epoch add nothing to the union.
        for host in 0..20u8 {
            observe(
                &mut sweep,
                position_v4([192, 0, 2, host]),
                2 * e,
                &config,
                1000,
            );
        }
        assert_eq!(sweep.bits, first);
        // Two epochs later only the one before is remembered; after a silence, nothing.
        let other = position_v4([203, 0, 113, 1]);
        observe(&mut sweep, other, 3 * e, &config, 1000);
        assert_eq!(sweep.bits, first + 1);
        observe(&mut sweep, other, 9 * e, &config, 1000);
        assert_eq!(sweep.bits, 1);
    }

    #[test]
    fn crossing_the_threshold_flags_once_per_block() {
        let config = config();
        let mut sweep = Sweep::default();
        let mut flagged = Vec::new();
        for host in 0..100u8 {
            if observe(&mut sweep, position_v4([192, 0, 2, host]), 10, &config, 10)
                == Observed::Flagged
            {
                flagged.push(host);
            }
        }
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert!(blocks(&sweep, 11, &config));
        assert!(!blocks(&sweep, 10 + config.block_ns, &config));
        let log = ReconConfig {
            action: action::LOG,
            ..config
        };
        assert!(!blocks(&sweep, 11, &log));
    }

    #[test]
    fn a_destination_seen_this_epoch_changes_nothing_and_skips_the_prefix_within_a_tick() {
        let config = config();
        let mut sweep = Sweep::default();
        let e = config.epoch_ns;
        let position = position_v4([192, 0, 2, 1]);
        let first = observe(&mut sweep, position, e, &config, 1000);
        assert_eq!(first, Observed::Counted);
        // A new bit: the prefix is visited whatever the tick.
        assert!(prefix_visit_due(first, &sweep, e));
        sweep.prefix_visited = e;
        let before = sweep;
        let again = observe(&mut sweep, position, e + 1, &config, 1000);
        assert_eq!(again, Observed::Seen);
        assert_eq!(sweep, before);
        assert!(!prefix_visit_due(again, &sweep, e), "same tick: skipped");
        assert!(prefix_visit_due(again, &sweep, e + 1), "next tick: visited");
        // In the next epoch the bit is new to the current bitmap (the union is unchanged):
        // counted, and the prefix is visited to count it there too.
        let next = observe(&mut sweep, position, 2 * e, &config, 1000);
        assert_eq!(next, Observed::Counted);
        assert_eq!(sweep.bits, 1);
        assert!(prefix_visit_due(next, &sweep, e));
    }

    #[test]
    fn the_prefix_block_as_last_seen_blocks_until_its_end_and_only_with_action_drop() {
        let config = config();
        let sketch = Sweep {
            prefix_until: 100,
            ..Sweep::default()
        };
        assert!(prefix_blocks(&sketch, 99, &config));
        assert!(!prefix_blocks(&sketch, 100, &config));
        let log = ReconConfig {
            action: action::LOG,
            ..config
        };
        assert!(!prefix_blocks(&sketch, 99, &log));
        assert!(!prefix_blocks(&Sweep::default(), 1, &config));
    }

    #[test]
    fn the_epoch_without_a_division_is_the_epoch_with_one() {
        let config = config();
        let e = config.epoch_ns;
        let sweep = Sweep {
            epoch: 7,
            ..Sweep::default()
        };
        for now in [
            0,
            1,
            7 * e - 1,
            7 * e,
            7 * e + 1,
            8 * e - 1,
            8 * e,
            9 * e + 3,
            u64::MAX,
        ] {
            assert_eq!(epoch_at(&sweep, now, &config), now / e, "{now}");
        }
        let none = ReconConfig {
            epoch_ns: 0,
            ..config
        };
        assert_eq!(epoch_at(&sweep, 5, &none), 0);
    }

    #[test]
    fn bits_and_estimates_invert_each_other() {
        for n in [16, 32, 40, 64, 128, 256, 512, 1024] {
            let back = estimate(u32::from(bits_for(n)));
            assert!(back.abs_diff(n) <= n / 50 + 1, "{n} -> {back}");
        }
        assert_eq!(bits_for(32), 32);
    }

    #[test]
    fn word_masking_agrees_with_the_limiters() {
        let v6: [u8; 16] = core::array::from_fn(|i| 0xa5 ^ (i as u8).wrapping_mul(37));
        for len in 0..=130u8 {
            let key = ReconV6Key::new(len, v6);
            let masked = ReconV6Key {
                addr: mask_v6_words(key.addr, len),
                ..key
            };
            assert_eq!(masked.octets(), crate::limit::mask_v6(v6, len), "/{len}");
        }
        let v4 = [198, 51, 100, 0xa7];
        for len in 0..=32u8 {
            let key = ReconV4Key::new(len, v4);
            let masked = ReconV4Key::new(len, mask_v4_word(key.addr, len).to_ne_bytes());
            assert_eq!(masked.octets(), crate::limit::mask_v4(v4, len), "/{len}");
        }
    }

    #[test]
    fn keys_carry_their_address_both_ways() {
        let v6: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
        assert_eq!(ReconV6Key::new(128, v6).octets(), v6);
        assert_eq!(ReconV4Key::new(32, [192, 0, 2, 9]).octets(), [192, 0, 2, 9]);
    }

    #[test]
    fn sets_spread_a_slash_16_evenly_and_depend_on_the_seed() {
        // 65,536 sources over 2,048 sets: 32 a set on average; a good hash keeps every set
        // within a few times that, where a weak one piles consecutive addresses up.
        for seed in [0, 1, 0xdead_beef] {
            let mut load = std::vec![0u32; SETS as usize];
            for host in 0..=u16::MAX {
                let [c, d] = host.to_be_bytes();
                load[set_v4(seed, &ReconV4Key::new(32, [198, 51, c, d])) as usize] += 1;
            }
            let max = *load.iter().max().unwrap();
            let min = *load.iter().min().unwrap();
            assert!(max <= 64 && min >= 8, "seed {seed}: {min}..{max}");
        }
        let key = ReconV4Key::new(32, [203, 0, 113, 7]);
        let sets: Vec<u32> = (0..16).map(|seed| set_v4(seed * 7919, &key)).collect();
        assert!(sets.iter().any(|&set| set != sets[0]), "{sets:?}");
        // A source and its prefix of the same address are different keys.
        assert_ne!(
            set_v4(5, &ReconV4Key::new(32, [203, 0, 113, 0])),
            set_v4(5, &ReconV4Key::new(24, [203, 0, 113, 0]))
        );
        let v6 = ReconV6Key::new(
            128,
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        );
        let mut other = v6;
        other.addr[1] ^= 1u64 << 63;
        assert_ne!(set_v6(3, &v6), set_v6(3, &other));
    }

    #[test]
    fn a_new_sketch_displaces_the_slot_worth_least_and_never_a_flagged_one() {
        let config = config();
        let e = config.epoch_ns;
        let mut sweeper = Sweep::default();
        let mut few = Sweep::default();
        for host in 0..40u8 {
            observe(
                &mut sweeper,
                position_v4([192, 0, 2, host]),
                3 * e,
                &config,
                1000,
            );
        }
        observe(&mut few, position_v4([192, 0, 2, 1]), 3 * e, &config, 1000);
        let now = 3 * e + 1;
        let (w_sweeper, w_few) = (worth(32, &sweeper, now, 3), worth(32, &few, now, 3));
        assert!(w_few < w_sweeper);
        assert_eq!(
            victim(w_sweeper, w_few),
            Some(1),
            "the sender of one probe gives way"
        );
        assert_eq!(victim(w_few, w_sweeper), Some(0));
        assert_eq!(worth(0, &sweeper, now, 3), 0, "an empty slot");
        assert_eq!(worth(32, &sweeper, 5 * e, 5), 0, "both bitmaps outdated");
        assert!(
            worth(32, &sweeper, 4 * e, 4) > 0,
            "the previous epoch still counts"
        );
        let flagged = Sweep {
            blocked_until: now + 1,
            ..few
        };
        assert_eq!(worth(32, &flagged, now, 3), u32::MAX);
        assert_eq!(victim(u32::MAX, w_sweeper), Some(1));
        assert_eq!(victim(u32::MAX, u32::MAX), None, "two flagged: no place");
        assert!(
            worth(32, &flagged, now + 1, 3) < u32::MAX,
            "after its block"
        );
    }

    #[test]
    fn a_started_sketch_is_a_sketch_of_its_one_probe() {
        let config = config();
        let e = config.epoch_ns;
        let position = position_v4([192, 0, 2, 77]);
        let mut expected = Sweep::default();
        observe(&mut expected, position, 7 * e, &config, 1000);
        let mut old = Sweep::default();
        for host in 0..200u8 {
            observe(&mut old, position_v4([198, 51, 100, host]), e, &config, 5);
        }
        old.prefix_visited = 9;
        old.prefix_until = 9;
        old.start(7, position);
        assert_eq!(old, expected);
    }

    #[test]
    fn errors_and_replies_are_not_probes() {
        assert!(is_probe(crate::FAMILY_V4, 8));
        assert!(is_probe(crate::FAMILY_V4, 13));
        assert!(is_probe(crate::FAMILY_V4, 17));
        assert!(is_probe(crate::FAMILY_V6, 128));
        for t in [0, 3, 11, 12, 14, 5] {
            assert!(!is_probe(crate::FAMILY_V4, t));
        }
        for t in [1, 2, 3, 4, 129, 135] {
            assert!(!is_probe(crate::FAMILY_V6, t));
        }
    }
}
