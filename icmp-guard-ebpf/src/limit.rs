//! The limiter and its state: a limiter's scope bucket (per source, per prefix, or global),
//! the new-source budget with its probation, and the ceiling; see
//! [`icmp_guard_common::limit`] for what they mean and why they are exact.
//!
//! Two ways to update a bucket, one per program ([`Sync`]): [`Atomics`] with an atomic
//! compare-and-exchange (kernels 5.12+, commit 5ffa25502b5a "bpf: Add instructions for
//! atomic_[cmp]xchg"), [`Locks`] under a `bpf_spin_lock` for older kernels, whose verifier
//! rejects the instruction even in code it would never run.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_jiffies64, bpf_ktime_get_ns, bpf_spin_lock, bpf_spin_unlock},
    maps::LruHashMap,
};
use icmp_guard_common::{
    DropReason, FAMILY_V4, global,
    limit::{
        CAS_ATTEMPTS, LimiterConfig, NO_SHARED_BUCKET, SourceBucket, V4Key, V6Key, byte_increment,
        byte_step, fold_v6, gcra, graduates, limiter_flags, limiter_slot, lock_stripe, mask_v4,
        mask_v6, per, prefix_len,
    },
};

use crate::{
    count,
    maps::{
        BLOCKED_V4, BLOCKED_V6, BUCKET_LOCKS, LIMITERS, LockedBucket, NS_PER_JIFFY, PREFIXES_V4,
        PREFIXES_V6, SHARED_BUCKETS, SOURCES_V4, SOURCES_V6,
    },
    parse::Headers,
};

/// The clocks, each read at most once per packet (a helper call is a real cost at flood
/// rates): the coarse one is jiffies, which the verifier inlines into one load.
#[derive(Default)]
pub struct Clock {
    coarse: u64,
    precise: u64,
}

impl Clock {
    /// Nanoseconds, advancing once a tick.
    #[inline(always)]
    pub fn coarse(&mut self) -> u64 {
        if self.coarse == 0 {
            // SAFETY: a helper without arguments.
            self.coarse = unsafe { bpf_jiffies64() }.wrapping_mul(NS_PER_JIFFY.load());
        }
        self.coarse
    }

    /// `bpf_ktime_get_ns`: CLOCK_MONOTONIC.
    #[inline(always)]
    pub fn precise(&mut self) -> u64 {
        if self.precise == 0 {
            // SAFETY: a helper without arguments.
            self.precise = unsafe { bpf_ktime_get_ns() };
        }
        self.precise
    }
}

/// How a program updates a bucket.
pub trait Sync {
    /// Admits a packet at `now` against the TAT at `tat`, which shares its lock (where
    /// there is one) with the key that hashes to `stripe`.
    fn take(tat: *mut u64, lock: Lock, now: u64, interval: u64, tolerance: u64) -> bool;
}

/// The lock that guards a bucket in the locked program.
#[derive(Clone, Copy)]
pub enum Lock {
    /// The lock inside a shared bucket.
    Shared(*mut LockedBucket),
    /// The lock stripe of a per-source or per-prefix key.
    Stripe(u32),
}

/// Compare-and-exchange: the program for kernels 5.12 and later.
pub struct Atomics;

impl Sync for Atomics {
    #[inline(always)]
    fn take(tat: *mut u64, _lock: Lock, now: u64, interval: u64, tolerance: u64) -> bool {
        // SAFETY: `tat` points into a map value from a successful lookup, valid for this
        // program run; other CPUs change it only through the same compare-and-exchange.
        let mut current = unsafe { core::ptr::read_volatile(tat) };
        for _ in 0..CAS_ATTEMPTS {
            let Some(next) = gcra(current, now, interval, tolerance) else {
                return false;
            };
            // SAFETY: as above. (The BPF target's `atomic_cas` is off in rustc, since the
            // first BPF ISA lacked it, so `AtomicU64::compare_exchange` is not there; the
            // intrinsic is LLVM's cmpxchg, which the BPF backend emits as BPF_CMPXCHG.)
            let (seen, swapped) = unsafe {
                core::intrinsics::atomic_cxchg::<
                    u64,
                    { core::intrinsics::AtomicOrdering::SeqCst },
                    { core::intrinsics::AtomicOrdering::SeqCst },
                >(tat, current, next)
            };
            if swapped {
                return true;
            }
            current = seen;
        }
        // Every attempt lost to another CPU's packet: refusing keeps the limit.
        false
    }
}

/// `bpf_spin_lock`: the program for kernels without compare-and-exchange.
pub struct Locks;

impl Sync for Locks {
    #[inline(always)]
    fn take(tat: *mut u64, lock: Lock, now: u64, interval: u64, tolerance: u64) -> bool {
        let lock = match lock {
            // SAFETY: a pointer into a map value from a successful lookup.
            Lock::Shared(bucket) => unsafe { &raw mut (*bucket).lock },
            Lock::Stripe(stripe) => match BUCKET_LOCKS.get_ptr_mut(stripe) {
                // SAFETY: as above.
                Some(stripe) => unsafe { &raw mut (*stripe).lock },
                None => return false,
            },
        };
        // SAFETY: `lock` is the `bpf_spin_lock` field of a BTF-described map value; between
        // lock and unlock the program makes no call and only touches `tat`.
        unsafe {
            bpf_spin_lock(lock);
            let admitted = match gcra(*tat, now, interval, tolerance) {
                Some(next) => {
                    *tat = next;
                    true
                }
                None => false,
            };
            bpf_spin_unlock(lock);
            admitted
        }
    }
}

/// A shared bucket by slot.
#[inline(always)]
fn shared(slot: u16) -> Option<*mut LockedBucket> {
    SHARED_BUCKETS.get_ptr_mut(u32::from(slot))
}

/// Takes a token from the shared bucket in `slot`; a refusal is remembered (to the
/// millisecond) for probation.
#[inline(always)]
fn take_shared<S: Sync>(slot: u16, now: u64, interval: u64, tolerance: u64) -> bool {
    let Some(bucket) = shared(slot) else {
        return false;
    };
    // SAFETY: a pointer into a map value from a successful lookup.
    let tat = unsafe { &raw mut (*bucket).tat };
    if S::take(tat, Lock::Shared(bucket), now, interval, tolerance) {
        return true;
    }
    // SAFETY: as above; a racy store of a time stamp, whichever CPU's lands is fine.
    unsafe {
        let last = &raw mut (*bucket).last_refused;
        if now.wrapping_sub(*last) >= 1_000_000 {
            *last = now;
        }
    }
    false
}

/// Takes a token for the packet of `headers` from the limiter `index` of `generation`; returns
/// why the packet is refused, or `None` when it may pass.
#[inline(always)]
pub fn admit<S: Sync>(
    index: u8,
    generation: u32,
    headers: &Headers,
    clock: &mut Clock,
) -> Option<DropReason> {
    let Some(config) = LIMITERS.get(limiter_slot(generation, index)) else {
        return Some(DropReason::RateLimit);
    };
    let refused = if config.flags & limiter_flags::REASON_SMURF != 0 {
        DropReason::Smurf
    } else {
        DropReason::RateLimit
    };
    if config.flags & limiter_flags::ACTIVE == 0 {
        // A rule pointing at a limiter userspace never wrote: fail closed.
        return Some(refused);
    }
    let now = if config.flags & limiter_flags::PRECISE_CLOCK != 0 {
        clock.precise()
    } else {
        clock.coarse()
    };
    let admitted = if config.per == per::GLOBAL {
        take_shared::<S>(config.bucket, now, config.interval_ns, config.tolerance_ns)
            && (config.byte_cost == 0
                || match bytes_step(config, headers) {
                    Some((interval, tolerance)) => {
                        take_shared::<S>(config.bytes_bucket, now, interval, tolerance)
                    }
                    None => false,
                })
    } else {
        match scoped::<S>(config, headers, now) {
            Scoped::Admitted => true,
            Scoped::OwnBucket => {
                if config.block_ns != 0 {
                    block(headers, clock.precise().saturating_add(config.block_ns));
                }
                false
            }
            Scoped::Budget => false,
        }
    };
    if !admitted {
        return Some(refused);
    }
    if config.ceiling_bucket != NO_SHARED_BUCKET
        && !take_shared::<S>(
            config.ceiling_bucket,
            now,
            config.ceiling_interval_ns,
            config.ceiling_tolerance_ns,
        )
    {
        return Some(refused);
    }
    None
}

/// The byte bucket's GCRA step for this packet's IP length, or `None` when the packet is
/// larger than the whole byte burst.
#[inline(always)]
fn bytes_step(config: &LimiterConfig, headers: &Headers) -> Option<(u64, u64)> {
    byte_step(
        byte_increment(u64::from(headers.length), config.byte_cost),
        config.byte_limit_ns,
    )
}

/// Blocks the packet's source until `until` ([`icmp_guard_common::block`]). A failed
/// insert (no memory) leaves the source unblocked; its packets still meet the limit.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "keys by reference keep the verifier's instruction count down (see decide.rs)"
)]
fn block(headers: &Headers, until: u64) {
    if headers.family == FAMILY_V4 {
        let _ = BLOCKED_V4.insert(&headers.source_v4(), &until, 0);
    } else {
        let _ = BLOCKED_V6.insert(&headers.source, &until, 0);
    }
}

/// What a per-source or per-prefix bucket said.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scoped {
    Admitted,
    /// The source's (or prefix's) own bucket refused: it went over its limit.
    OwnBucket,
    /// The new-source budget refused (a new source, or one on probation): spoofed sources
    /// end here, and are not blocked, so that they cannot churn the blocked sources out.
    Budget,
}

/// The per-source or per-prefix bucket of the packet's source: each (family, scope) has its
/// own map, named at its own call site so that the verifier inlines the lookup.
#[inline(always)]
fn scoped<S: Sync>(config: &LimiterConfig, headers: &Headers, now: u64) -> Scoped {
    let family = headers.family;
    let prefix = prefix_len(config, family);
    let by_prefix = config.per == per::PREFIX;
    if family == FAMILY_V4 {
        let source = headers.source_v4();
        let addr = if by_prefix {
            mask_v4(source, prefix)
        } else {
            source
        };
        let key = V4Key {
            id: config.id,
            addr,
        };
        let stripe = lock_stripe(config.id, u32::from_ne_bytes(addr));
        if by_prefix {
            keyed::<S, V4Key>(&PREFIXES_V4, &key, stripe, config, headers, now, true)
        } else {
            keyed::<S, V4Key>(&SOURCES_V4, &key, stripe, config, headers, now, false)
        }
    } else {
        let addr = if by_prefix {
            mask_v6(headers.source, prefix)
        } else {
            headers.source
        };
        let key = V6Key {
            id: config.id,
            addr,
        };
        let stripe = lock_stripe(config.id, fold_v6(&addr));
        if by_prefix {
            keyed::<S, V6Key>(&PREFIXES_V6, &key, stripe, config, headers, now, true)
        } else {
            keyed::<S, V6Key>(&SOURCES_V6, &key, stripe, config, headers, now, false)
        }
    }
}

/// The new-source budget of `config`.
#[inline(always)]
fn take_budget<S: Sync>(config: &LimiterConfig, now: u64) -> bool {
    take_shared::<S>(
        config.budget_bucket,
        now,
        config.budget_interval_ns,
        config.budget_tolerance_ns,
    )
}

/// One source's (or prefix's) bucket in `map`: an established source pays with its own
/// bucket; one on probation also with the budget; a new one with the budget, and then gets
/// a bucket on probation.
#[inline(always)]
fn keyed<S: Sync, K>(
    map: &'static LruHashMap<K, SourceBucket>,
    key: &K,
    stripe: u32,
    config: &LimiterConfig,
    headers: &Headers,
    now: u64,
    prefixes: bool,
) -> Scoped {
    match map.get_ptr_mut(key) {
        Some(bucket) => {
            // SAFETY: a pointer into a map value from a successful lookup, valid for this
            // run (an LRU may recycle the entry later; a stale write then lands in a
            // bucket that no key finds).
            let since = unsafe { (*bucket).probation_since };
            let mut on_probation = false;
            if since != 0 {
                let calm_since = match shared(config.budget_bucket) {
                    // SAFETY: as above.
                    Some(budget) => unsafe { (*budget).last_refused },
                    None => now,
                };
                if graduates(since, calm_since, now, config.probation_ns) {
                    // SAFETY: as above; every CPU that races here writes the same 0.
                    unsafe { (*bucket).probation_since = 0 };
                } else {
                    on_probation = true;
                }
            }
            // SAFETY: as above.
            let tat = unsafe { &raw mut (*bucket).tat };
            if !S::take(
                tat,
                Lock::Stripe(stripe),
                now,
                config.interval_ns,
                config.tolerance_ns,
            ) {
                return Scoped::OwnBucket;
            }
            if config.byte_cost != 0 {
                // The packet's token is spent even when its bytes are refused: the byte
                // rate only ever takes away.
                let Some((interval, tolerance)) = bytes_step(config, headers) else {
                    return Scoped::OwnBucket;
                };
                // SAFETY: as above.
                let bytes_tat = unsafe { &raw mut (*bucket).bytes_tat };
                if !S::take(bytes_tat, Lock::Stripe(stripe), now, interval, tolerance) {
                    return Scoped::OwnBucket;
                }
            }
            if !on_probation || take_budget::<S>(config, now) {
                Scoped::Admitted
            } else {
                Scoped::Budget
            }
        }
        None => {
            // A new source is charged to the budget first, so that random spoofed sources,
            // each new, are capped by it; its bucket is made only when admitted, so refused
            // spoofed packets do not churn the LRU.
            let mut bytes_tat = 0;
            if config.byte_cost != 0 {
                let Some((increment, _)) = bytes_step(config, headers) else {
                    return Scoped::Budget;
                };
                bytes_tat = now.saturating_add(increment);
            }
            if !take_budget::<S>(config, now) {
                return Scoped::Budget;
            }
            let fresh = SourceBucket {
                // This packet's token taken from a full bucket.
                tat: now.saturating_add(config.interval_ns),
                // Never 0, which would mean "graduated".
                probation_since: now | 1,
                // And its bytes from a full byte bucket.
                bytes_tat,
            };
            // Losing an insert race to another CPU is fine: that packet was charged to the
            // budget too.
            if map.insert(key, fresh, u64::from(BPF_NOEXIST)).is_ok() {
                count::event(if prefixes {
                    global::PREFIX_BUCKETS_CREATED
                } else {
                    global::SOURCE_BUCKETS_CREATED
                });
            }
            Scoped::Admitted
        }
    }
}
