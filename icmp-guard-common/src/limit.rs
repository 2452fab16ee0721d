//! The flood guard's limiter as both sides see it: a limiter's settings, the keys and values
//! of its buckets, and the arithmetic the program runs on them.
//!
//! # Buckets
//!
//! Every bucket is a GCRA "theoretical arrival time" (TAT) in nanoseconds: a packet is
//! admitted when the bucket's TAT is no more than the tolerance, `(burst - 1)` emission
//! intervals, ahead of now, and admitting it moves the TAT one interval on. A limiter has:
//!
//! - its **scope bucket**: one per source (`per = source`), per source prefix (`prefix`),
//!   or one for all (`global`). Per-source and per-prefix buckets live in LRU maps keyed by
//!   the limiter's [`LimiterConfig::id`] and the (masked) address, one map per family and
//!   scope so that IPv4 keys are 8 bytes; a global bucket is a [`SharedBucket`];
//! - unless global, a **new-source budget** (a [`SharedBucket`]) that admits sources which
//!   have no bucket yet, and pays for the packets of sources on **probation**;
//! - optionally a **ceiling** (a [`SharedBucket`]) that every packet the limiter admits is
//!   charged to: the aggregate cap of echo replies, the backstop of fragments.
//!
//! # Fresh state
//!
//! A limiter's buckets belong to its settings. Userspace gives every limiter it writes an
//! [`LimiterConfig::id`] and shared-bucket slots: a limiter whose settings (or rule) did not
//! change keeps both, and its state; a new or changed one gets a new id, so no per-source
//! key of the old one matches, and shared slots no live limiter uses, reset before the
//! generation that uses them goes live. The per-global bucket and the new-source budget are
//! separate slots.
//!
//! # Probation
//!
//! A source admitted by the new-source budget gets a bucket, but on probation: each of its
//! packets is charged to its own bucket *and* to the budget, so buckets handed to a spoofed
//! flood's sources cannot add up to more than the budget. A source leaves probation at a
//! packet that comes at least [`LimiterConfig::probation_ns`] after both its bucket's
//! creation and the budget's last refusal ([`graduates`]): a host that pinged before a
//! flood keeps its own allowance through it, while no source created during a flood
//! graduates until the flood has stopped for the probation period.
//!
//! # Concurrency
//!
//! Bucket updates are exact under contention: the program updates a TAT with an atomic
//! compare-and-exchange (5.12+), or under a `bpf_spin_lock` where the kernel lacks it
//! ([`crate::LOCKED_PROGRAM_NAME`]). Each admission moves the TAT one interval from a
//! value no more than the tolerance ahead of a clock reading that was not in the future,
//! so at most `burst + rate * elapsed` packets pass in any interval, whatever the order in
//! which CPUs win. The clock is [`Clock::Coarse`] (jiffies, inlined by the verifier)
//! where a bucket's tolerance spans two ticks, else the precise `bpf_ktime_get_ns`
//! ([`needs_precise_clock`]).

use crate::FAMILY_V4;

/// Rate limiters per generation.
pub const MAX_LIMITERS: u32 = 64;
/// Generations of the limiter table.
pub const GENERATIONS: u32 = 2;
/// Entries of `LIMITERS`.
pub const LIMITER_ENTRIES: u32 = GENERATIONS * MAX_LIMITERS;

/// Default capacity of each per-source LRU map (one per family).
pub const RATE_SOURCES: u32 = 65_536;
/// Default capacity of each per-prefix LRU map (one per family).
pub const RATE_PREFIXES: u32 = 16_384;
/// Entries of `SHARED_BUCKETS`: three per limiter of two generations, and spare ones so
/// that a changed limiter always finds slots that no live limiter uses.
pub const SHARED_BUCKETS: u32 = 512;
/// The shared-bucket slot that names none (a limiter without a ceiling).
pub const NO_SHARED_BUCKET: u16 = u16::MAX;
/// Spin locks for per-source and per-prefix buckets in the locked program: a bucket is
/// updated under the lock its key hashes to.
pub const LOCK_STRIPES: u32 = 1024;
/// Compare-and-exchange attempts on a contended bucket before the packet is refused: each
/// failed attempt means another CPU's packet won, so refusing after a few errs on the side
/// of the limit.
pub const CAS_ATTEMPTS: usize = 3;

/// Index into `LIMITERS`.
#[inline(always)]
pub const fn limiter_slot(generation: u32, limiter: u8) -> u32 {
    (generation & 1) * MAX_LIMITERS + (limiter as u32 % MAX_LIMITERS)
}

/// Which sources share a limiter's scope bucket.
pub mod per {
    pub const SOURCE: u8 = 0;
    pub const PREFIX: u8 = 1;
    pub const GLOBAL: u8 = 2;
}

/// Values of [`LimiterConfig::owner`].
pub mod owner {
    /// An unused entry.
    pub const NONE: u32 = 0;
    /// The error ceiling ([`crate::config::GenerationConfig::error_limiter`]).
    pub const ERRORS: u32 = 1;
    /// The fragment budget ([`crate::config::GenerationConfig::fragment_limiter`]).
    pub const FRAGMENTS: u32 = 2;

    /// The limit rule of a (family, type), or of one code of it.
    pub const fn rule(family: u8, icmp_type: u8, code: Option<u8>) -> u32 {
        let code = match code {
            Some(code) => (1 << 17) | code as u32,
            None => 0,
        };
        (1 << 31) | ((family as u32 & 1) << 16) | ((icmp_type as u32) << 8) | code
    }
}

/// Bits of [`LimiterConfig::flags`].
pub mod limiter_flags {
    /// The limiter is configured; an entry without it refuses every packet (fail closed).
    pub const ACTIVE: u8 = 1;
    /// Packets over this limit are counted as `smurf`: the echo-reply limits that protect
    /// a reflection victim.
    pub const REASON_SMURF: u8 = 2;
    /// The buckets use the precise clock: one of them is too shallow for the coarse one.
    pub const PRECISE_CLOCK: u8 = 4;
}

/// A rate limiter's settings, one per (generation, limiter index), precomputed by
/// userspace so that the program never divides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Emission interval of the scope bucket, ns.
    pub interval_ns: u64,
    /// Its tolerance: `(burst - 1) * interval_ns`.
    pub tolerance_ns: u64,
    /// The new-source budget's interval and tolerance (per source or prefix).
    pub budget_interval_ns: u64,
    pub budget_tolerance_ns: u64,
    /// The ceiling's interval and tolerance; unused without a ceiling bucket.
    pub ceiling_interval_ns: u64,
    pub ceiling_tolerance_ns: u64,
    /// How long a source admitted by the budget stays on probation ([`graduates`]).
    pub probation_ns: u64,
    /// Identity of these settings: part of every per-source and per-prefix key.
    pub id: u32,
    /// What the limiter belongs to ([`owner`]): userspace keeps the state of a limiter whose
    /// owner and settings did not change.
    pub owner: u32,
    /// Shared-bucket slot of the scope bucket of a global limiter.
    pub bucket: u16,
    /// Shared-bucket slot of the new-source budget.
    pub budget_bucket: u16,
    /// Shared-bucket slot of the ceiling, or [`NO_SHARED_BUCKET`].
    pub ceiling_bucket: u16,
    /// One of [`per`].
    pub per: u8,
    /// Bits of [`limiter_flags`].
    pub flags: u8,
    /// Prefix length that groups IPv4 sources for `per = prefix`.
    pub prefix_v4: u8,
    /// Prefix length that groups IPv6 sources for `per = prefix`.
    pub prefix_v6: u8,
    /// Shared-bucket slot of the byte bucket of a global limiter with a byte rate, or
    /// [`NO_SHARED_BUCKET`] (per-source and per-prefix byte buckets live in
    /// [`SourceBucket::bytes_tat`]).
    pub bytes_bucket: u16,
    pub _padding: [u8; 4],
    /// The settings as the operator gave them, for userspace to read back.
    pub rate: u32,
    pub burst: u32,
    pub budget_rate: u32,
    pub budget_burst: u32,
    pub ceiling_rate: u32,
    pub ceiling_burst: u32,
    /// How long a source (per source) or source of a prefix (per prefix) that the scope
    /// bucket refuses is blocked, ns of the precise clock; 0: never. See
    /// [`crate::block`].
    pub block_ns: u64,
    /// The byte bucket: nanoseconds per byte of the IP packet, times 1024
    /// ([`BYTE_COST_SHIFT`]); 0 when the limiter has no byte rate.
    pub byte_cost: u64,
    /// How far ahead of now the byte bucket may run after taking a packet: the burst's
    /// worth of nanoseconds ([`byte_increment`] of the burst).
    pub byte_limit_ns: u64,
    /// The byte rate (bytes per second) and burst (bytes) as the operator gave them.
    pub bytes_rate: u64,
    pub bytes_burst: u64,
}

/// Fixed-point shift of [`LimiterConfig::byte_cost`]: 1/1024 ns per byte, so that rates up
/// to hundreds of GB/s keep three significant digits and the program only shifts.
pub const BYTE_COST_SHIFT: u32 = 10;

/// [`LimiterConfig::byte_cost`] of `rate` bytes per second (at least 1).
pub const fn byte_cost(rate: u64) -> u64 {
    match (1_000_000_000u64 << BYTE_COST_SHIFT).checked_div(rate) {
        None => 0,
        Some(0) => 1,
        Some(cost) => cost,
    }
}

/// The nanoseconds a packet of `bytes` bytes (an IP length, below 2^17) takes from a byte
/// bucket of `cost` (at most 2^40 for 1 byte per second): the product fits 64 bits. (No
/// saturating multiply: on BPF it needs a 128-bit helper the target lacks.)
#[inline(always)]
pub const fn byte_increment(bytes: u64, cost: u64) -> u64 {
    bytes.wrapping_mul(cost) >> BYTE_COST_SHIFT
}

/// [`LimiterConfig::byte_limit_ns`] of a burst of `burst` bytes (userspace: any size).
pub const fn byte_limit_ns(burst: u64, cost: u64) -> u64 {
    let ns = (burst as u128 * cost as u128) >> BYTE_COST_SHIFT;
    if ns > u64::MAX as u128 {
        u64::MAX
    } else {
        ns as u64
    }
}

/// The byte bucket as a GCRA step of its own (interval, tolerance) for a packet whose
/// bytes take `increment` ns: admitted while the TAT after it is no more than `limit` ahead
/// of now; `None` for a packet larger than the whole burst, which never passes.
#[inline(always)]
pub const fn byte_step(increment: u64, limit: u64) -> Option<(u64, u64)> {
    if increment > limit {
        None
    } else {
        Some((increment, limit - increment))
    }
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` with explicit padding, integers only, every bit pattern valid.
unsafe impl aya::Pod for LimiterConfig {}

/// Key of a per-source or per-prefix bucket of an IPv4 source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct V4Key {
    /// [`LimiterConfig::id`].
    pub id: u32,
    /// The source, masked to the prefix for per-prefix buckets.
    pub addr: [u8; 4],
}

/// Key of a per-source or per-prefix bucket of an IPv6 source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct V6Key {
    pub id: u32,
    pub addr: [u8; 16],
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers and byte arrays, no padding.
unsafe impl aya::Pod for V4Key {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for V6Key {}

/// The state of one per-source or per-prefix bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceBucket {
    /// The bucket's TAT.
    pub tat: u64,
    /// When the budget admitted the source (its clock), while it is on probation; 0 once
    /// it graduated.
    pub probation_since: u64,
    /// The TAT of the source's byte bucket, when its limiter has a byte rate.
    pub bytes_tat: u64,
}

#[cfg(feature = "user")]
// SAFETY: three u64 fields, no padding.
unsafe impl aya::Pod for SourceBucket {}

/// A bucket every source of a limiter shares.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedBucket {
    /// A `struct bpf_spin_lock` in the program's view of this value; the kernel keeps
    /// userspace's writes away from it.
    pub lock: u32,
    pub _padding: u32,
    /// The bucket's TAT.
    pub tat: u64,
    /// When the bucket last refused a packet (its clock); 0 when it never did. Probation
    /// ends only after the new-source budget has been calm ([`graduates`]).
    pub last_refused: u64,
}

#[cfg(feature = "user")]
// SAFETY: integers only, explicit padding.
unsafe impl aya::Pod for SharedBucket {}

/// One spin lock of `BUCKET_LOCKS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketLock {
    /// A `struct bpf_spin_lock` in the program's view.
    pub lock: u32,
}

#[cfg(feature = "user")]
// SAFETY: one integer.
unsafe impl aya::Pod for BucketLock {}

/// Nanoseconds between two admitted packets at `rate` per second (at least 1).
pub const fn interval_ns(rate: u32) -> u64 {
    if rate == 0 {
        u64::MAX
    } else {
        let interval = 1_000_000_000 / rate as u64;
        if interval == 0 { 1 } else { interval }
    }
}

/// How far ahead of now a bucket of `burst` may run: `(burst - 1)` intervals.
pub const fn tolerance_ns(interval: u64, burst: u32) -> u64 {
    interval.saturating_mul(if burst == 0 { 0 } else { burst as u64 - 1 })
}

/// GCRA: admits a packet at `now` against a bucket whose TAT is `tat`, and returns the new
/// TAT. A bucket idle for days has `tat` far in the past; `max(tat, now)` restarts it full,
/// never fuller, and nothing overflows (u64 nanoseconds last 584 years).
#[inline(always)]
pub const fn gcra(tat: u64, now: u64, interval: u64, tolerance: u64) -> Option<u64> {
    let start = if tat > now { tat } else { now };
    if start - now > tolerance {
        None
    } else {
        Some(start.saturating_add(interval))
    }
}

/// True when a source on probation since `since` leaves it at `now`: the probation
/// period has passed since its bucket was made and since the budget last refused anything.
#[inline(always)]
pub const fn graduates(since: u64, budget_last_refused: u64, now: u64, probation: u64) -> bool {
    now.saturating_sub(since) >= probation && now.saturating_sub(budget_last_refused) >= probation
}

/// The clocks a limiter may run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// jiffies times the tick length: one load, inlined by the verifier, advancing once a
    /// tick (1-10 ms).
    Coarse,
    /// `bpf_ktime_get_ns`.
    Precise,
}

/// True when a bucket of `interval` and `tolerance` would under-admit on a clock that
/// advances in steps of `tick_ns`: within one tick it can pass at most `burst` packets,
/// so it needs `burst` intervals to span two ticks to keep up its rate.
pub const fn needs_precise_clock(interval: u64, tolerance: u64, tick_ns: u64) -> bool {
    tolerance.saturating_add(interval) < tick_ns.saturating_mul(2)
}

/// An IPv4 address masked to `prefix_len` bits.
#[inline(always)]
pub const fn mask_v4(addr: [u8; 4], prefix_len: u8) -> [u8; 4] {
    let bits = if prefix_len > 32 {
        32
    } else {
        prefix_len as u32
    };
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    (u32::from_be_bytes(addr) & mask).to_be_bytes()
}

/// An IPv6 address masked to `prefix_len` bits. (Byte by byte: BPF has no 128-bit
/// arithmetic.)
#[inline(always)]
pub const fn mask_v6(addr: [u8; 16], prefix_len: u8) -> [u8; 16] {
    let bits = if prefix_len > 128 {
        128
    } else {
        prefix_len as usize
    };
    let mut masked = addr;
    let mut index = 0;
    while index < 16 {
        let start = index * 8;
        let keep = if bits <= start {
            0
        } else if bits - start >= 8 {
            8
        } else {
            bits - start
        };
        let mask: u8 = if keep == 0 { 0 } else { 0xff << (8 - keep) };
        masked[index] &= mask;
        index += 1;
    }
    masked
}

/// The four words of an IPv6 address folded into one, for [`lock_stripe`].
#[inline(always)]
pub const fn fold_v6(addr: &[u8; 16]) -> u32 {
    let mut folded = 0;
    let mut at = 0;
    while at < 16 {
        folded ^= u32::from_ne_bytes([addr[at], addr[at + 1], addr[at + 2], addr[at + 3]]);
        at += 4;
    }
    folded
}

/// The prefix length of `per` for `family`: the whole address per source.
#[inline(always)]
pub const fn prefix_len(config: &LimiterConfig, family: u8) -> u8 {
    if config.per != per::PREFIX {
        if family == FAMILY_V4 { 32 } else { 128 }
    } else if family == FAMILY_V4 {
        config.prefix_v4
    } else {
        config.prefix_v6
    }
}

/// A lock stripe for a per-source or per-prefix key (the locked program).
#[inline(always)]
pub const fn lock_stripe(id: u32, addr_word: u32) -> u32 {
    let mixed = (addr_word ^ id.rotate_left(16)).wrapping_mul(0x9e37_79b1);
    (mixed >> 16) % LOCK_STRIPES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(interval: u64, tolerance: u64, packets: u32, start: u64, step: u64) -> u32 {
        let mut tat = 0;
        let mut now = start;
        let mut admitted = 0;
        for _ in 0..packets {
            if let Some(next) = gcra(tat, now, interval, tolerance) {
                tat = next;
                admitted += 1;
            }
            now += step;
        }
        admitted
    }

    #[test]
    fn gcra_admits_exactly_burst_when_no_time_passes() {
        let interval = interval_ns(100);
        assert_eq!(
            run(
                interval,
                tolerance_ns(interval, 200),
                1000,
                5_000_000_000,
                0
            ),
            200
        );
    }

    #[test]
    fn gcra_refills_at_rate_and_never_beyond_burst() {
        let interval = interval_ns(100); // 10 ms
        let tolerance = tolerance_ns(interval, 200);
        // One second of a flood every millisecond: burst + rate × 1 s.
        let admitted = run(interval, tolerance, 1000, 1_000_000_000, 1_000_000);
        assert!((299..=301).contains(&admitted), "{admitted}");
        // Idle for a week, the bucket is full again, not fuller.
        let week = 7 * 24 * 3600 * 1_000_000_000u64;
        let mut tat = 1_000_000_000 + 3 * 1_000_000_000;
        let now = 1_000_000_000 + week;
        let mut burst = 0;
        while let Some(next) = gcra(tat, now, interval, tolerance) {
            tat = next;
            burst += 1;
        }
        assert_eq!(burst, 200);
    }

    #[test]
    fn a_zero_rate_admits_nothing_and_tiny_intervals_stay_positive() {
        assert_eq!(interval_ns(0), u64::MAX);
        assert_eq!(interval_ns(2_000_000_000), 1);
        assert_eq!(tolerance_ns(10, 0), 0);
        assert_eq!(tolerance_ns(u64::MAX, 3), u64::MAX);
    }

    #[test]
    fn probation_ends_only_after_a_calm_period() {
        let second = 1_000_000_000;
        // Made at 10 s, the budget last refused at 12 s, probation 5 s.
        assert!(!graduates(
            10 * second,
            12 * second,
            15 * second,
            5 * second
        ));
        assert!(!graduates(
            10 * second,
            12 * second,
            16 * second,
            5 * second
        ));
        assert!(graduates(10 * second, 12 * second, 17 * second, 5 * second));
        // A budget that never refused: five seconds after creation.
        assert!(graduates(10 * second, 0, 15 * second, 5 * second));
        assert!(!graduates(10 * second, 0, 14 * second, 5 * second));
    }

    #[test]
    fn shallow_buckets_need_the_precise_clock() {
        let tick = 4_000_000;
        // 100/s, burst 200: two seconds of tolerance.
        let interval = interval_ns(100);
        assert!(!needs_precise_clock(
            interval,
            tolerance_ns(interval, 200),
            tick
        ));
        // 100,000/s, burst 10: 100 µs.
        let interval = interval_ns(100_000);
        assert!(needs_precise_clock(
            interval,
            tolerance_ns(interval, 10),
            tick
        ));
        // Exactly two ticks of burst is enough.
        assert!(!needs_precise_clock(1_000_000, 7_000_000, tick));
        assert!(needs_precise_clock(1_000_000, 6_999_999, tick));
    }

    #[test]
    fn a_coarse_clock_keeps_the_rate_when_the_burst_spans_two_ticks() {
        // 1000/s, burst 8 (8 ms) on a 4 ms clock, flooded every 10 µs for 10 s.
        let interval = interval_ns(1000);
        let tolerance = tolerance_ns(interval, 8);
        let tick = 4_000_000;
        let mut tat = 0;
        let mut admitted = 0u64;
        let mut real = 1_000_000_000u64;
        for _ in 0..1_000_000 {
            let coarse = real / tick * tick;
            if let Some(next) = gcra(tat, coarse, interval, tolerance) {
                tat = next;
                admitted += 1;
            }
            real += 10_000;
        }
        // At most burst + rate * 10 s, and no less than the rate minus one tick's worth.
        assert!(admitted <= 8 + 10_000, "{admitted}");
        assert!(admitted >= 10_000 - 4, "{admitted}");
    }

    #[test]
    fn keys_mask_to_the_prefix() {
        assert_eq!(mask_v4([192, 0, 2, 77], 24), [192, 0, 2, 0]);
        assert_eq!(mask_v4([192, 0, 2, 77], 32), [192, 0, 2, 77]);
        assert_eq!(mask_v4([192, 0, 2, 77], 0), [0; 4]);
        assert_eq!(mask_v4([255; 4], 9), [255, 128, 0, 0]);
        let mut v6 = [0xffu8; 16];
        v6[0] = 0x20;
        let masked = mask_v6(v6, 64);
        assert_eq!(&masked[8..], &[0; 8]);
        assert_eq!(masked[7], 0xff);
        assert_eq!(mask_v6(v6, 60)[7], 0xf0);
        assert_eq!(mask_v6(v6, 128), v6);
    }

    #[test]
    fn lock_stripes_stay_in_range_and_spread() {
        let mut seen = [false; LOCK_STRIPES as usize];
        for address in 0..100_000u32 {
            let stripe = lock_stripe(7, address);
            assert!(stripe < LOCK_STRIPES);
            seen[stripe as usize] = true;
        }
        assert!(seen.iter().filter(|used| **used).count() > LOCK_STRIPES as usize * 9 / 10);
    }

    #[test]
    fn a_byte_bucket_admits_its_burst_then_its_rate() {
        // 1 MiB/s, burst 2 MiB, 1000-byte packets: 2097 at once, then 1048 a second.
        let cost = byte_cost(1 << 20);
        let limit = byte_limit_ns(2 << 20, cost);
        let step = |tat, now| {
            let (interval, tolerance) = byte_step(byte_increment(1000, cost), limit)?;
            gcra(tat, now, interval, tolerance)
        };
        let (mut tat, mut admitted) = (0, 0);
        while let Some(next) = step(tat, 1) {
            tat = next;
            admitted += 1;
        }
        assert_eq!(admitted, (2 << 20) / 1000);
        let (mut later, second) = (0, 1_000_000_001);
        while let Some(next) = step(tat, second) {
            tat = next;
            later += 1;
        }
        assert!((1048..=1049).contains(&later), "{later}");
        // A packet larger than the whole burst never passes.
        assert_eq!(byte_step(byte_increment(3 << 20, cost), limit), None);
        assert_eq!(byte_limit_ns(u64::MAX, byte_cost(1)), u64::MAX);
        assert_eq!(byte_cost(0), 0);
        assert_eq!(byte_cost(u64::MAX), 1);
    }

    #[test]
    fn value_layouts_have_no_implicit_padding() {
        assert_eq!(
            size_of::<LimiterConfig>(),
            7 * 8 + 2 * 4 + 3 * 2 + 4 + 2 + 4 + 6 * 4 + 5 * 8
        );
        assert_eq!(size_of::<V4Key>(), 8);
        assert_eq!(size_of::<V6Key>(), 20);
        assert_eq!(size_of::<SourceBucket>(), 24);
        assert_eq!(size_of::<SharedBucket>(), 24);
    }
}
