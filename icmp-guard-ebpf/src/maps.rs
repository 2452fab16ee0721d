//! Every map and read-only global of the program; what their entries mean is
//! [`icmp_guard_common`]'s.

use crate::parse::Headers;
use aya_ebpf::{
    Global,
    bindings::bpf_spin_lock,
    btf_maps,
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use icmp_guard_common::{
    CODE_COUNTER_ENTRIES, CodeCounter, Counter, ICMP_COUNTER_ENTRIES, InterfaceCounter, block,
    config::{self, Config},
    events::{EventBudget, RING_BYTES},
    global,
    interface::{self, DEFAULT_NS_PER_JIFFY, InterfaceConfig, NO_SLOT, link_kind},
    limit::{
        LIMITER_ENTRIES, LOCK_STRIPES, LimiterConfig, RATE_PREFIXES, RATE_SOURCES,
        SHARED_BUCKETS as SHARED_BUCKET_ENTRIES, SharedBucket, SourceBucket, V4Key, V6Key,
    },
    policy::{LIST_ENTRIES, POLICY_CODE_ENTRIES, POLICY_TYPE_ENTRIES, Rule, V4ListKey, V6ListKey},
    recon::{FLAGGED_ENTRIES, Flagged, FlaggedKey, RECON_ENTRIES, SlotV4, SlotV6},
};

// ---- read-only globals: load-time facts, constants to the verifier ----

/// Where frames start on this instance's interface (`interface::link_kind`); set by the
/// loader, a constant to the verifier, which drops the other parser.
#[unsafe(no_mangle)]
pub static LINK_KIND: Global<u8> = Global::new(link_kind::ETHERNET);

/// This instance's slot in `INTERFACES` and `INTERFACE_COUNTERS`; set by the loader.
#[unsafe(no_mangle)]
pub static INTERFACE_SLOT: Global<u32> = Global::new(NO_SLOT);

/// The kernel's tick in nanoseconds: jiffies times this is the coarse clock.
#[unsafe(no_mangle)]
pub static NS_PER_JIFFY: Global<u64> = Global::new(DEFAULT_NS_PER_JIFFY);

// ---- settings and policy ----

#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(config::ENTRIES, 0);

/// What userspace tells each instance about its interface, by slot.
#[map(name = "INTERFACES")]
pub static INTERFACES: Array<InterfaceConfig> = Array::with_max_entries(interface::SLOTS, 0);

#[map(name = "POLICY_TYPES")]
pub static POLICY_TYPES: Array<Rule> = Array::with_max_entries(POLICY_TYPE_ENTRIES, 0);

#[map(name = "POLICY_CODES")]
pub static POLICY_CODES: HashMap<u32, Rule> = HashMap::with_max_entries(POLICY_CODE_ENTRIES, 0);

#[map(name = "LISTS_V4")]
pub static LISTS_V4: LpmTrie<V4ListKey, u32> = LpmTrie::with_max_entries(LIST_ENTRIES, 0);

#[map(name = "LISTS_V6")]
pub static LISTS_V6: LpmTrie<V6ListKey, u32> = LpmTrie::with_max_entries(LIST_ENTRIES, 0);

#[map(name = "LIMITERS")]
pub static LIMITERS: Array<LimiterConfig> = Array::with_max_entries(LIMITER_ENTRIES, 0);

// ---- limiter state ----

/// Per-source buckets of IPv4 sources, keyed by (limiter id, address).
#[map(name = "SOURCES_V4")]
pub static SOURCES_V4: LruHashMap<V4Key, SourceBucket> =
    LruHashMap::with_max_entries(RATE_SOURCES, 0);

#[map(name = "SOURCES_V6")]
pub static SOURCES_V6: LruHashMap<V6Key, SourceBucket> =
    LruHashMap::with_max_entries(RATE_SOURCES, 0);

/// Per-prefix buckets, keyed by (limiter id, masked address).
#[map(name = "PREFIXES_V4")]
pub static PREFIXES_V4: LruHashMap<V4Key, SourceBucket> =
    LruHashMap::with_max_entries(RATE_PREFIXES, 0);

#[map(name = "PREFIXES_V6")]
pub static PREFIXES_V6: LruHashMap<V6Key, SourceBucket> =
    LruHashMap::with_max_entries(RATE_PREFIXES, 0);

/// [`SharedBucket`] as the program sees it: the lock is a real `bpf_spin_lock`, which the
/// kernel finds through the map's BTF.
#[repr(C)]
pub struct LockedBucket {
    pub lock: bpf_spin_lock,
    pub _padding: u32,
    pub tat: u64,
    pub last_refused: u64,
}

const _: () = assert!(size_of::<LockedBucket>() == size_of::<SharedBucket>());

/// A spin lock alone, for per-source and per-prefix buckets.
#[repr(C)]
pub struct StripeLock {
    pub lock: bpf_spin_lock,
}

#[btf_map]
pub static SHARED_BUCKETS: btf_maps::Array<LockedBucket, { SHARED_BUCKET_ENTRIES as usize }> =
    btf_maps::Array::new();

#[btf_map]
pub static BUCKET_LOCKS: btf_maps::Array<StripeLock, { LOCK_STRIPES as usize }> =
    btf_maps::Array::new();

/// Blocked IPv4 sources: address → end of the block ([`icmp_guard_common::block`]).
#[map(name = "BLOCKED_V4")]
pub static BLOCKED_V4: LruHashMap<[u8; 4], u64> = LruHashMap::with_max_entries(block::ENTRIES, 0);

/// Blocked IPv6 sources, likewise.
#[map(name = "BLOCKED_V6")]
pub static BLOCKED_V6: LruHashMap<[u8; 16], u64> = LruHashMap::with_max_entries(block::ENTRIES, 0);
// ---- sweep detection ----

/// Sketches of IPv4 sources and source prefixes: sets of slots, each tagged with its key
/// ([`icmp_guard_common::recon`]). An array, so that a probe finds its sketch by an address
/// computation the verifier inlines, not a hash-table lookup.
#[map(name = "RECON_V4")]
pub static RECON_V4: Array<SlotV4> = Array::with_max_entries(RECON_ENTRIES, 0);

#[map(name = "RECON_V6")]
pub static RECON_V6: Array<SlotV6> = Array::with_max_entries(RECON_ENTRIES, 0);

/// The sources and prefixes flagged, for the log, `top` and the metrics.
#[map(name = "RECON_FLAGGED")]
pub static RECON_FLAGGED: LruHashMap<FlaggedKey, Flagged> =
    LruHashMap::with_max_entries(FLAGGED_ENTRIES, 0);

// ---- the hand-over between stages ----

/// The packet being judged, as the parser left it: the later stages read it from here.
/// Per CPU and per program instance, never pinned. See `guard` in main.rs for why.
#[map(name = "PACKET")]
pub static PACKET: PerCpuArray<Headers> = PerCpuArray::with_max_entries(1, 0);

// ---- counters and events ----

#[map(name = "ICMP_COUNTERS")]
pub static ICMP_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(ICMP_COUNTER_ENTRIES, 0);

#[map(name = "CODE_COUNTERS")]
pub static CODE_COUNTERS: PerCpuArray<CodeCounter> =
    PerCpuArray::with_max_entries(CODE_COUNTER_ENTRIES, 0);

/// Per interface slot ([`INTERFACE_SLOT`]); userspace claims and frees the slots.
#[map(name = "INTERFACE_COUNTERS")]
pub static INTERFACE_COUNTERS: PerCpuArray<InterfaceCounter> =
    PerCpuArray::with_max_entries(interface::SLOTS, 0);

#[map(name = "GLOBAL_COUNTERS")]
pub static GLOBAL_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(global::ENTRIES, 0);

/// Sampled events for `top` and the `run` drop log; see [`icmp_guard_common::events`].
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

#[map(name = "EVENT_BUDGET")]
pub static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

// ---- the benchmark's baselines (`icmp_guard_common::baseline`) ----

/// Emission interval of a baseline source's bucket; set by the benchmark.
#[unsafe(no_mangle)]
pub static BASELINE_INTERVAL_NS: Global<u64> = Global::new(10_000_000);

/// Tolerance of a baseline source's bucket.
#[unsafe(no_mangle)]
pub static BASELINE_TOLERANCE_NS: Global<u64> = Global::new(1_990_000_000);

/// Emission interval of the baseline's new-source budget.
#[unsafe(no_mangle)]
pub static BASELINE_BUDGET_INTERVAL_NS: Global<u64> = Global::new(1_000_000);

/// Tolerance of the baseline's new-source budget.
#[unsafe(no_mangle)]
pub static BASELINE_BUDGET_TOLERANCE_NS: Global<u64> = Global::new(1_999_000_000);

/// Non-zero: the baselines read the coarse clock (jiffies × `NS_PER_JIFFY`, as the guard
/// does) instead of `bpf_ktime_get_ns`; set by the benchmark for an informational row.
#[unsafe(no_mangle)]
pub static BASELINE_COARSE_CLOCK: Global<u8> = Global::new(0);

/// A baseline source's TAT, keyed by its IPv4 address; one entry unless the benchmark
/// sizes it (the object is loaded by every `icmp-guard` command).
#[map(name = "BASELINE_SOURCES")]
pub static BASELINE_SOURCES: LruHashMap<[u8; 4], u64> = LruHashMap::with_max_entries(1, 0);

/// The TAT of the baseline's new-source budget.
#[map(name = "BASELINE_BUDGET")]
pub static BASELINE_BUDGET: Array<u64> = Array::with_max_entries(1, 0);
