//! Types and pure logic shared by the icmp-guard XDP program and its userspace.
//!
//! Everything that crosses the kernel/user boundary is defined here once: map names, map
//! sizes, key encodings and the `#[repr(C)]` value types. Decision logic that does not touch
//! the packet lives here too — the precedence of the checks ([`decide`]), the rules
//! ([`policy`]), the limiter's arithmetic ([`limit`]) — so that it can be unit-tested on the
//! host and the XDP program calls the very same functions.

#![no_std]

pub mod baseline;
pub mod block;
pub mod config;
pub mod decide;
pub mod events;
pub mod icmp;
pub mod interface;
pub mod limit;
pub mod parse;
pub mod policy;
pub mod recon;
pub mod trace;

/// Address family of a classified ICMP packet, as used in map keys.
pub const FAMILY_V4: u8 = 0;
/// ICMPv6.
pub const FAMILY_V6: u8 = 1;
/// Number of families in map keys.
pub const NUM_FAMILIES: u32 = 2;

/// Map names, shared so userspace finds exactly what the kernel declares.
pub mod maps {
    /// Per-CPU `Counter` per (family, type, slot); see [`crate::counter_index`].
    pub const ICMP_COUNTERS: &str = "ICMP_COUNTERS";
    /// Per-CPU `Counter` for traffic that never reached an ICMP type; see [`crate::global`].
    pub const GLOBAL_COUNTERS: &str = "GLOBAL_COUNTERS";
    /// `Rule` per (generation, family, type); see [`crate::policy::type_slot`].
    pub const POLICY_TYPES: &str = "POLICY_TYPES";
    /// `Rule` per-code exceptions; see [`crate::policy::code_key`].
    pub const POLICY_CODES: &str = "POLICY_CODES";
    /// IPv4 allow/deny trie; see [`crate::policy::list`].
    pub const LISTS_V4: &str = "LISTS_V4";
    /// IPv6 allow/deny trie.
    pub const LISTS_V6: &str = "LISTS_V6";
    /// [`crate::limit::LimiterConfig`] per (generation, limiter); see
    /// [`crate::limit::limiter_slot`].
    pub const LIMITERS: &str = "LIMITERS";
    /// [`crate::limit::SourceBucket`] per (limiter id, IPv4 source); LRU.
    pub const SOURCES_V4: &str = "SOURCES_V4";
    /// [`crate::limit::SourceBucket`] per (limiter id, IPv6 source); LRU.
    pub const SOURCES_V6: &str = "SOURCES_V6";
    /// [`crate::limit::SourceBucket`] per (limiter id, IPv4 source prefix); LRU.
    pub const PREFIXES_V4: &str = "PREFIXES_V4";
    /// [`crate::limit::SourceBucket`] per (limiter id, IPv6 source prefix); LRU.
    pub const PREFIXES_V6: &str = "PREFIXES_V6";
    /// [`crate::limit::SharedBucket`] per slot: the buckets all sources of a limiter share
    /// (per-global buckets, new-source budgets, ceilings). BTF-described: each value holds
    /// a `bpf_spin_lock`.
    pub const SHARED_BUCKETS: &str = "SHARED_BUCKETS";
    /// Spin locks that serialise per-source and per-prefix bucket updates where the kernel
    /// has no atomic compare-and-exchange; see [`crate::limit::LOCK_STRIPES`].
    pub const BUCKET_LOCKS: &str = "BUCKET_LOCKS";
    /// The one [`crate::config::Config`].
    pub const CONFIG: &str = "CONFIG";
    /// Per-CPU [`crate::CodeCounter`] per (family, type, code bucket); see
    /// [`crate::code_counter_index`].
    pub const CODE_COUNTERS: &str = "CODE_COUNTERS";
    /// Per-CPU [`crate::InterfaceCounter`] per interface slot ([`crate::interface`]): each
    /// attached program instance counts into the slot it was loaded with.
    pub const INTERFACE_COUNTERS: &str = "INTERFACE_COUNTERS";
    /// [`crate::interface::InterfaceConfig`] per interface slot: what userspace tells the
    /// program about the interface (its owner, link kind and directed broadcasts).
    pub const INTERFACES: &str = "INTERFACES";
    /// Ring buffer of sampled [`crate::events::IcmpEvent`]s for `top` and the `run` drop log.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU [`crate::events::EventBudget`]: how many events this CPU's window has left.
    pub const EVENT_BUDGET: &str = "EVENT_BUDGET";
    /// Blocked IPv4 sources: source address → blocked-until; LRU. See [`crate::block`].
    pub const BLOCKED_V4: &str = "BLOCKED_V4";
    /// Blocked IPv6 sources, likewise.
    pub const BLOCKED_V6: &str = "BLOCKED_V6";
    /// [`crate::recon::SlotV4`]s: the sweep sketches of IPv4 sources and source prefixes, an
    /// array of sets placed by a seeded hash ([`crate::recon::set_v4`]).
    pub const RECON_V4: &str = "RECON_V4";
    /// [`crate::recon::SlotV6`]s, likewise for IPv6.
    pub const RECON_V6: &str = "RECON_V6";
    /// [`crate::recon::Flagged`] per flagged source or prefix ([`crate::recon::FlaggedKey`]);
    /// LRU.
    pub const RECON_FLAGGED: &str = "RECON_FLAGGED";
    /// State of the benchmark's baseline limiters ([`crate::baseline`]): one entry unless
    /// the benchmark sizes it. Never pinned.
    pub const BASELINE_SOURCES: &str = "BASELINE_SOURCES";
    /// The new-source budget of the benchmark's baseline limiter. Never pinned.
    pub const BASELINE_BUDGET: &str = "BASELINE_BUDGET";

    /// Every map a running guard pins, in the order userspace pins them.
    pub const ALL: [&str; 24] = [
        INTERFACES,
        SOURCES_V4,
        SOURCES_V6,
        PREFIXES_V4,
        PREFIXES_V6,
        SHARED_BUCKETS,
        BUCKET_LOCKS,
        LIMITERS,
        ICMP_COUNTERS,
        GLOBAL_COUNTERS,
        POLICY_TYPES,
        POLICY_CODES,
        LISTS_V4,
        LISTS_V6,
        CONFIG,
        CODE_COUNTERS,
        INTERFACE_COUNTERS,
        EVENTS,
        EVENT_BUDGET,
        BLOCKED_V4,
        BLOCKED_V6,
        RECON_V4,
        RECON_V6,
        RECON_FLAGGED,
    ];
}

/// Name of the XDP program in the object file: the guard for kernels with atomic
/// compare-and-exchange (5.12 and later), which its limiter uses.
pub const PROGRAM_NAME: &str = "icmp_guard";
/// The same guard for kernels without atomic compare-and-exchange (5.10, 5.11): its limiter
/// serialises bucket updates with `bpf_spin_lock` instead, as exact and slower (a lock is
/// two helper calls).
pub const LOCKED_PROGRAM_NAME: &str = "icmp_guard_lock";
/// An XDP program that only passes, in the same object: the benchmarks' baseline.
pub const BASELINE_PROGRAM_NAME: &str = "xdp_pass_baseline";

/// Packet and byte counter, summed over CPUs by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: two u64 fields, `#[repr(C)]`, no padding, every bit pattern valid.
unsafe impl aya::Pod for Counter {}

/// Why a packet was dropped (or would have been, in dry-run mode).
///
/// The discriminant is the counter slot; it never appears inside a map value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DropReason {
    /// The type/code policy says drop.
    Policy = 1,
    /// A rate limiter ran out of tokens.
    RateLimit = 2,
    /// A broadcast/multicast echo (smurf amplifier) or an echo-reply storm.
    Smurf = 3,
    /// The source is on the deny list.
    DenyList = 4,
    /// The packet's structure cannot be walked to a transport header we trust: a VLAN
    /// stack deeper than 2 tags over IP or cut short, an IPv6 extension-header chain longer
    /// than the bound, running past the packet, or breaking RFC 8200 §4.1's order.
    Malformed = 5,
    /// A header breaks the rules: IP version or IHL wrong, lengths inconsistent with the
    /// frame, an oversized reassembly (ping of death), an ICMP message shorter than its
    /// fixed 8-byte header, a martian source, or a message its RFC rules out (echo with a
    /// code, an error without the header it reports on or sent to a group, ND/MLD/PTB
    /// failing their conditions).
    Invalid = 6,
    /// The message is longer than its rule's maximum size (`max_size`): large-payload
    /// floods. The size is the IP packet's (IPv4 total length, IPv6 40 + payload length).
    Oversize = 7,
    /// The source is serving a block time: it went over a limit that has `block`, and all
    /// its ICMP is dropped until the block ends (never its PMTUD and ND messages).
    Blocked = 8,
    /// A probe (echo, timestamp or address-mask request) from a source flagged as sweeping
    /// many destinations ([`crate::recon`]), during its block.
    Sweep = 9,
}

impl DropReason {
    /// Every reason, in slot order.
    pub const ALL: [Self; 9] = [
        Self::Policy,
        Self::RateLimit,
        Self::Smurf,
        Self::DenyList,
        Self::Malformed,
        Self::Invalid,
        Self::Oversize,
        Self::Blocked,
        Self::Sweep,
    ];

    /// The name used in JSON and tables.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::RateLimit => "rate_limit",
            Self::Smurf => "smurf",
            Self::DenyList => "deny_list",
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::Oversize => "oversize",
            Self::Blocked => "blocked",
            Self::Sweep => "sweep",
        }
    }
}

/// Counter slots per (family, type): 0 is "passed", 1..=15 "dropped" by [`DropReason`],
/// 17..=31 "would have been dropped" (dry-run) by the same reasons.
pub const SLOTS_PER_TYPE: u32 = 32;
/// Slot of packets that passed.
pub const SLOT_PASSED: u32 = 0;
/// Offset added to a reason's slot when the packet passed only because of dry-run mode.
pub const SLOT_WOULD_DROP_BASE: u32 = 16;

/// Number of entries in `ICMP_COUNTERS`.
pub const ICMP_COUNTER_ENTRIES: u32 = NUM_FAMILIES * 256 * SLOTS_PER_TYPE;

/// Counter slot for a dropped packet.
pub const fn drop_slot(reason: DropReason) -> u32 {
    reason as u32
}

/// Counter slot for a packet that passed only because the guard runs in dry-run mode.
pub const fn would_drop_slot(reason: DropReason) -> u32 {
    SLOT_WOULD_DROP_BASE + reason as u32
}

/// Index into `ICMP_COUNTERS`. Always in range for any `family < 2`; a larger family is
/// folded into v6 rather than indexing out of bounds.
#[inline(always)]
pub const fn counter_index(family: u8, icmp_type: u8, slot: u32) -> u32 {
    let family = if family == FAMILY_V4 { 0 } else { 1 };
    ((family * 256) + icmp_type as u32) * SLOTS_PER_TYPE + (slot & (SLOTS_PER_TYPE - 1))
}

/// Codes counted one by one in `CODE_COUNTERS`; higher codes share the last bucket. Every
/// code assigned to a type that has codes today is below 16 except ICMPv6 router
/// renumbering's 255 (sequence number reset), so the last bucket reads "15 and above".
pub const CODE_BUCKETS: u32 = 16;
/// Entries of `CODE_COUNTERS`: (family, type, code bucket).
pub const CODE_COUNTER_ENTRIES: u32 = 2 * 256 * CODE_BUCKETS;

/// Index into `CODE_COUNTERS`; always in range, like [`counter_index`].
#[inline(always)]
pub const fn code_counter_index(family: u8, icmp_type: u8, code: u8) -> u32 {
    let family = if family == FAMILY_V4 { 0 } else { 1 };
    let bucket = if (code as u32) < CODE_BUCKETS - 1 {
        code as u32
    } else {
        CODE_BUCKETS - 1
    };
    ((family * 256) + icmp_type as u32) * CODE_BUCKETS + bucket
}

/// What happened to the packets of one (family, type, code bucket), summed over CPUs by
/// userspace; passed = packets - dropped - would_drop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeCounter {
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub would_drop: u64,
}

#[cfg(feature = "user")]
// SAFETY: four u64 fields, `#[repr(C)]`, no padding, every bit pattern valid.
unsafe impl aya::Pod for CodeCounter {}

/// The packets the guard judged on one interface: classified ICMP, and packets dropped
/// (or that would be) before an ICMP type could be read. Traffic that is not ICMP is not
/// counted per interface, which keeps its path as short as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounter {
    /// The ifindex that owns the slot, written by userspace on every CPU when it claims the
    /// slot (the program does not read it: each program instance knows its slot).
    pub ifindex: u32,
    pub _padding: u32,
    pub packets: u64,
    pub bytes: u64,
    pub passed: u64,
    pub dropped: u64,
    pub would_drop: u64,
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers only, explicit padding, every bit pattern valid.
unsafe impl aya::Pod for InterfaceCounter {}

/// Slots of `GLOBAL_COUNTERS`: traffic accounted before (or instead of) an ICMP type, and
/// the buckets the limiter created.
pub mod global {
    use crate::DropReason;

    /// Frames that are not ICMP (non-IP, or IP carrying another protocol), passed untouched.
    pub const NON_ICMP_PASSED: u32 = 0;
    /// Non-first ICMP fragments that passed every check and their budget: they carry no
    /// ICMP header to classify (their first fragment was classified).
    pub const ICMP_FRAGMENT_PASSED: u32 = 1;
    /// IP headers that break the rules, dropped before a type could be read.
    pub const INVALID_DROPPED: u32 = 2;
    /// Unwalkable structure (VLAN stack too deep or truncated, IPv6 extension chain too
    /// long, truncated, or out of RFC 8200's order).
    pub const MALFORMED_DROPPED: u32 = 3;
    /// Invalid packets that dry-run mode let through.
    pub const INVALID_WOULD_DROP: u32 = 4;
    /// Malformed packets that dry-run mode let through.
    pub const MALFORMED_WOULD_DROP: u32 = 5;
    /// Sampled events written to the `EVENTS` ring buffer (bytes: event bytes).
    pub const EVENTS_EMITTED: u32 = 6;
    /// Events the kernel budget allowed but the ring buffer had no room for: nobody reads
    /// it, or the reader is too slow.
    pub const EVENTS_LOST: u32 = 7;
    /// Non-first ICMP fragments dropped, by reason: `FRAGMENT_DROPPED + reason` (a martian
    /// source: invalid; the deny list; a broadcast or multicast destination: smurf; over
    /// the fragment budget: rate_limit).
    pub const FRAGMENT_DROPPED: u32 = 8;
    /// Non-first ICMP fragments that dry-run mode let through, by reason:
    /// `FRAGMENT_WOULD_DROP + reason`.
    pub const FRAGMENT_WOULD_DROP: u32 = 16;
    /// Slots below this count packets; the ones from here on count other things.
    pub const PACKET_SLOTS: u32 = 24;
    /// Per-source buckets created (in `packets`; both families). Buckets go only when the
    /// LRU evicts them, so a table holds about min(this, its capacity) entries.
    pub const SOURCE_BUCKETS_CREATED: u32 = 24;
    /// Per-prefix buckets created, likewise.
    pub const PREFIX_BUCKETS_CREATED: u32 = 25;
    /// Sweep sketches not made because both slots of their set held flagged sketches
    /// ([`crate::recon::victim`]): probes of a source (or prefix) sweep detection could not
    /// track, until one of those blocks ends.
    pub const RECON_UNTRACKED: u32 = 26;
    /// Number of entries.
    pub const ENTRIES: u32 = 32;

    /// The reasons a non-first fragment can be dropped for.
    pub const FRAGMENT_REASONS: [DropReason; 4] = [
        DropReason::Invalid,
        DropReason::DenyList,
        DropReason::Smurf,
        DropReason::RateLimit,
    ];

    /// The slot of a non-first fragment dropped (or, in dry-run, let through) for `reason`.
    #[inline(always)]
    pub const fn fragment_slot(reason: DropReason, dry_run: bool) -> u32 {
        let base = if dry_run {
            FRAGMENT_WOULD_DROP
        } else {
            FRAGMENT_DROPPED
        };
        base + (reason as u32 & 7)
    }
}

/// What the XDP program does with a packet, and where it is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop(DropReason),
}

/// The final decision after the mode is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// True when the packet must be dropped.
    pub drop: bool,
    /// Counter slot.
    pub slot: u32,
}

/// Applies the mode to a verdict: dry-run counts the would-be drop and passes the packet.
#[inline(always)]
pub const fn apply_mode(verdict: Verdict, mode: u32) -> Outcome {
    match verdict {
        Verdict::Pass => Outcome {
            drop: false,
            slot: SLOT_PASSED,
        },
        Verdict::Drop(reason) => {
            if mode == config::MODE_DRY_RUN {
                Outcome {
                    drop: false,
                    slot: would_drop_slot(reason),
                }
            } else {
                Outcome {
                    drop: true,
                    slot: drop_slot(reason),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_counter_indexes_are_distinct_in_range_and_fold_high_codes() {
        let mut seen = [false; CODE_COUNTER_ENTRIES as usize];
        for family in [FAMILY_V4, FAMILY_V6] {
            for icmp_type in 0..=255u8 {
                for code in 0..CODE_BUCKETS as u8 {
                    let index = code_counter_index(family, icmp_type, code);
                    assert!(
                        !seen[index as usize],
                        "{family}/{icmp_type}/{code} collides"
                    );
                    seen[index as usize] = true;
                }
                assert_eq!(
                    code_counter_index(family, icmp_type, 255),
                    code_counter_index(family, icmp_type, 15)
                );
            }
        }
        assert!(seen.iter().all(|used| *used));
        assert_eq!(code_counter_index(7, 255, 255), CODE_COUNTER_ENTRIES - 1);
    }

    #[test]
    fn counter_indices_are_unique_and_in_range() {
        let mut seen = [false; ICMP_COUNTER_ENTRIES as usize];
        for family in [FAMILY_V4, FAMILY_V6] {
            for icmp_type in 0..=255u8 {
                for slot in 0..SLOTS_PER_TYPE {
                    let index = counter_index(family, icmp_type, slot) as usize;
                    assert!(index < seen.len(), "index {index} out of range");
                    assert!(!seen[index], "index {index} used twice");
                    seen[index] = true;
                }
            }
        }
        assert!(seen.iter().all(|used| *used));
    }

    #[test]
    fn counter_index_never_leaves_the_map() {
        assert!(counter_index(7, 255, 99) < ICMP_COUNTER_ENTRIES);
    }

    #[test]
    fn dry_run_counts_but_passes() {
        let verdict = Verdict::Drop(DropReason::Invalid);
        assert_eq!(
            apply_mode(verdict, config::MODE_ENFORCE),
            Outcome {
                drop: true,
                slot: 6
            }
        );
        assert_eq!(
            apply_mode(verdict, config::MODE_DRY_RUN),
            Outcome {
                drop: false,
                slot: 22
            }
        );
        assert_eq!(
            apply_mode(Verdict::Pass, config::MODE_DRY_RUN),
            Outcome {
                drop: false,
                slot: SLOT_PASSED
            }
        );
    }

    #[test]
    fn drop_slots_do_not_collide_with_pass_or_each_other() {
        for reason in DropReason::ALL {
            assert_ne!(drop_slot(reason), SLOT_PASSED);
            assert!(would_drop_slot(reason) < SLOTS_PER_TYPE);
            for other in DropReason::ALL {
                assert_ne!(drop_slot(reason), would_drop_slot(other));
            }
        }
    }
}
