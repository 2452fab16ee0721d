//! The policy as the kernel sees it: map encodings, the safe default profile, and the pure
//! function that turns a rule and the facts of a packet into a verdict.
//!
//! # Atomic swaps
//!
//! Every policy table exists twice, once per generation (0 and 1), and `CONFIG[ACTIVE_GEN]`
//! names the live one. The XDP program reads the generation once per packet and makes every
//! lookup in that generation. Userspace writes a whole new policy into the idle generation,
//! flips `ACTIVE_GEN`, then waits for an RCU grace period (a map-in-map update makes the
//! kernel call `synchronize_rcu()`) before the old generation may be written again. XDP
//! runs inside an RCU read-side section, so no packet ever sees a half-written policy.

use crate::{DropReason, FAMILY_V4, FAMILY_V6};

/// Actions of a [`Rule`].
pub mod action {
    /// Let the packet through.
    pub const PASS: u8 = 0;
    /// Drop it, counted as `policy`.
    pub const DROP: u8 = 1;
    /// Let it through while its rate limiter has tokens.
    pub const LIMIT: u8 = 2;
}

/// Conditions a packet must meet before a pass or limit rule applies; failing one drops the
/// packet as `invalid`.
pub mod condition {
    /// No condition.
    pub const NONE: u8 = 0;
    /// Neighbour discovery (RFC 4861 §6.1, §7.1; RFC 6980): hop limit 255, not fragmented.
    pub const ND: u8 = 1;
    /// MLD (RFC 2710 §3, RFC 3810 §5): hop limit 1, link-local or unspecified source.
    pub const MLD: u8 = 2;
    /// Packet Too Big (RFC 8201 §4): an MTU below 1280 is never acted upon, so drop it.
    pub const PTB_MTU: u8 = 3;
    /// Largest valid value.
    pub const MAX: u8 = PTB_MTU;
}

/// Flags of a [`Rule`].
pub mod flags {
    /// Per-code rules exist for this type in `POLICY_CODES`.
    pub const HAS_CODE_RULES: u8 = 1;
}

/// One rule: what to do with a (family, type) or a (family, type, code).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub action: u8,
    pub condition: u8,
    pub flags: u8,
    /// Index of the rate limiter for `limit` rules.
    pub limiter: u8,
}

#[cfg(feature = "user")]
// SAFETY: four u8 fields, `#[repr(C)]`, no padding, every bit pattern valid.
unsafe impl aya::Pod for Rule {}

impl Rule {
    pub const fn new(action: u8, condition: u8) -> Self {
        Self {
            action,
            condition,
            flags: 0,
            limiter: 0,
        }
    }

    pub const PASS: Self = Self::new(action::PASS, condition::NONE);
    pub const DROP: Self = Self::new(action::DROP, condition::NONE);
    pub const LIMIT: Self = Self::new(action::LIMIT, condition::NONE);
}

/// Rate limiters per generation.
pub const MAX_LIMITERS: u32 = 64;

/// Which sources share a limiter's bucket.
pub mod per {
    pub const SOURCE: u8 = 0;
    pub const PREFIX: u8 = 1;
    pub const GLOBAL: u8 = 2;
}

/// A rate limiter's settings, one per (generation, limiter index).
///
/// `rate`/`burst` apply at the `per` scope. Unless `per` is global, a second bucket
/// (`global_rate`/`global_burst`) admits packets from sources (or prefixes) that have no
/// bucket yet: a spoofed random-source flood creates a new source with every packet, so it
/// is capped by that budget, while established sources keep their own buckets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Packets per second at the `per` scope.
    pub rate: u32,
    /// Bucket depth in packets.
    pub burst: u32,
    /// One of [`per`].
    pub per: u8,
    /// Prefix length that groups IPv4 sources for `per = prefix`.
    pub prefix_v4: u8,
    /// Prefix length that groups IPv6 sources for `per = prefix`.
    pub prefix_v6: u8,
    /// Bits of [`limiter_flags`].
    pub flags: u8,
    /// Packets per second admitted from sources without a bucket (0: none admitted).
    pub global_rate: u32,
    /// Burst of that budget.
    pub global_burst: u32,
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]` with explicit padding, every bit pattern valid.
unsafe impl aya::Pod for LimiterConfig {}

/// Flags of a [`LimiterConfig`].
pub mod limiter_flags {
    /// Packets over this limit are counted as `smurf`: the echo-reply ceiling that protects
    /// a reflection victim.
    pub const REASON_SMURF: u8 = 1;
}

/// Bits of `CONFIG[SMURF_OFF + generation]`: checks the operator switched off.
pub mod smurf_off {
    /// Echo and timestamp requests to broadcast or multicast destinations (v4).
    pub const BROADCAST_ECHO: u32 = 1;
    /// ICMPv6 echo requests to multicast beyond link-local scope.
    pub const MULTICAST_ECHO_V6: u32 = 2;
    /// ICMP from martian sources.
    pub const MARTIAN_SOURCES: u32 = 4;
}

/// True for IPv4 sources no packet may carry (RFC 1122 §3.2.1.3, RFC 5735): "this network"
/// 0.0.0.0/8, loopback 127.0.0.0/8, multicast 224.0.0.0/4, reserved 240.0.0.0/4 (which
/// holds the limited broadcast 255.255.255.255).
#[inline(always)]
pub const fn ipv4_martian_source(source: [u8; 4]) -> bool {
    source[0] == 0 || source[0] == 127 || source[0] >= 224
}

/// True for IPv6 sources no ICMPv6 packet of `icmp_type` may carry: multicast, loopback,
/// and the unspecified address except where RFC 4861 and RFC 3810 allow it (router and
/// DAD neighbour solicitations, MLD reports and dones).
#[inline(always)]
pub const fn ipv6_martian_source(source: [u8; 16], icmp_type: u8) -> bool {
    if source[0] == 0xff {
        return true;
    }
    let mut index = 0;
    while index < 15 {
        if source[index] != 0 {
            return false;
        }
        index += 1;
    }
    match source[15] {
        0 => !matches!(icmp_type, 131..=133 | 135 | 143),
        1 => true,
        _ => false,
    }
}

/// Index into `LIMITERS`.
#[inline(always)]
pub const fn limiter_slot(generation: u32, limiter: u8) -> u32 {
    (generation & 1) * MAX_LIMITERS + (limiter as u32 % MAX_LIMITERS)
}

/// Capacity of the per-source rate-limit LRU map (see README for the memory cost).
pub const RATE_SOURCES: u32 = 65_536;
/// Capacity of the per-prefix rate-limit LRU map.
pub const RATE_PREFIXES: u32 = 16_384;

/// Key of a rate-limit bucket: the limiter and the (masked) source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub limiter: u8,
    pub family: u8,
    pub prefix_len: u8,
    pub _pad: u8,
    pub addr: [u8; 16],
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, u8 fields and a byte array, no implicit padding.
unsafe impl aya::Pod for RateKey {}

impl RateKey {
    /// The key of `source` (IPv4 in the first 4 bytes) masked to `prefix_len` bits.
    #[inline(always)]
    pub fn new(limiter: u8, family: u8, source: &[u8; 16], prefix_len: u8) -> Self {
        let mut key = Self {
            limiter,
            family,
            prefix_len,
            _pad: 0,
            addr: *source,
        };
        let max = if family == FAMILY_V4 { 32 } else { 128 };
        let bits = if prefix_len > max { max } else { prefix_len } as usize;
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
            let mask: u8 = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            key.addr[index] &= mask;
            index += 1;
        }
        key
    }
}

/// Nanoseconds between two admitted packets at `rate` per second (at least 1).
#[inline(always)]
pub const fn emission_interval_ns(rate: u32) -> u64 {
    if rate == 0 {
        u64::MAX
    } else {
        let interval = 1_000_000_000 / rate as u64;
        if interval == 0 { 1 } else { interval }
    }
}

/// GCRA, the token bucket written as one "theoretical arrival time" (TAT): admits when the
/// packet is no more than `burst - 1` intervals early, and returns the new TAT. A bucket
/// idle for days has `tat` far in the past; `max(tat, now)` restarts it full, never fuller,
/// and nothing overflows (u64 nanoseconds last 584 years of uptime).
#[inline(always)]
pub const fn gcra(tat: u64, now: u64, interval: u64, burst: u32) -> Option<u64> {
    if burst == 0 || interval == u64::MAX {
        return None;
    }
    let start = if tat > now { tat } else { now };
    let tolerance = interval.saturating_mul(burst as u64 - 1);
    if start - now > tolerance {
        None
    } else {
        Some(start.saturating_add(interval))
    }
}

/// Generations of every policy table.
pub const GENERATIONS: u32 = 2;
/// Entries of `POLICY_TYPES`: one per (generation, family, type).
pub const POLICY_TYPE_ENTRIES: u32 = GENERATIONS * 2 * 256;
/// Capacity of `POLICY_CODES` (per-code exceptions, both generations).
pub const POLICY_CODE_ENTRIES: u32 = 4096;
/// Capacity of each allow/deny trie (both generations).
pub const LIST_ENTRIES: u32 = 16_384;

/// Index into `POLICY_TYPES`.
#[inline(always)]
pub const fn type_slot(generation: u32, family: u8, icmp_type: u8) -> u32 {
    let family = if family == FAMILY_V4 { 0 } else { 1 };
    ((generation & 1) * 2 + family) * 256 + icmp_type as u32
}

/// Key of `POLICY_CODES`.
#[inline(always)]
pub const fn code_key(generation: u32, family: u8, icmp_type: u8, code: u8) -> u32 {
    ((generation & 1) << 24) | ((family as u32 & 1) << 16) | ((icmp_type as u32) << 8) | code as u32
}

/// Values of the allow/deny tries.
pub mod list {
    /// The source bypasses the deny list and the rate limits.
    pub const ALLOW: u32 = 1;
    /// Every ICMP packet from the source is dropped as `deny_list`.
    pub const DENY: u32 = 2;
}

/// Trie key data for IPv4: generation byte, then the address.
pub type V4ListKey = [u8; 5];
/// Trie key data for IPv6: generation byte, then the address.
pub type V6ListKey = [u8; 17];

/// What the XDP program learned about a classified ICMP packet, beyond family/type/code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// IPv6 hop limit (0 for IPv4).
    pub hop_limit: u8,
    /// The packet is a fragment: an IPv4 first fragment with more to come, or IPv6 with a
    /// Fragment header (atomic fragments included, RFC 6980 §5).
    pub fragmented: bool,
    /// IPv6 source is link-local (fe80::/10) or unspecified (::).
    pub source_link_local: bool,
    /// MTU field of an ICMPv6 Packet Too Big.
    pub mtu: u32,
}

/// Smallest IPv6 MTU (RFC 8200 §5).
pub const IPV6_MIN_MTU: u32 = 1280;

/// What a rule decides for a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleVerdict {
    Pass,
    Drop(DropReason),
    /// Pass if the limiter with this index has a token.
    Limit(u8),
}

/// Applies a rule's condition and action to a packet's facts.
#[inline(always)]
pub const fn evaluate(rule: Rule, facts: &Facts) -> RuleVerdict {
    if rule.action == action::DROP {
        return RuleVerdict::Drop(DropReason::Policy);
    }
    let condition_met = match rule.condition {
        condition::NONE => true,
        condition::ND => facts.hop_limit == 255 && !facts.fragmented,
        condition::MLD => facts.hop_limit == 1 && facts.source_link_local,
        condition::PTB_MTU => facts.mtu >= IPV6_MIN_MTU,
        // An unknown condition cannot be checked: fail closed.
        _ => false,
    };
    if !condition_met {
        return RuleVerdict::Drop(DropReason::Invalid);
    }
    match rule.action {
        action::PASS => RuleVerdict::Pass,
        action::LIMIT => RuleVerdict::Limit(rule.limiter),
        _ => RuleVerdict::Drop(DropReason::Policy),
    }
}

/// The safe default profile's rule for a whole type (PRODUCT.md, "Safe default profile").
/// It has no per-code exceptions: every listed code is passed type-wide.
pub const fn default_rule(family: u8, icmp_type: u8) -> Rule {
    if family == FAMILY_V4 {
        match icmp_type {
            // Destination unreachable (PMTUD: 3/4, RFC 1191), time exceeded (traceroute),
            // parameter problem (RFC 1122).
            3 | 11 | 12 => Rule::PASS,
            // Hosts must answer echo (RFC 1122 §3.2.2.6): limit, never block.
            8 => Rule::LIMIT,
            // Echo reply: a generous ceiling protects a reflection victim.
            0 => Rule::new(action::LIMIT, condition::NONE).with_limiter(1),
            // Redirect, source quench (RFC 6633), deprecated types (RFC 6918),
            // timestamp and router discovery (reconnaissance), unassigned: drop.
            _ => Rule::DROP,
        }
    } else {
        match icmp_type {
            // RFC 4890 §4.4.1: never drop these errors; PTB with MTU < 1280 is bogus.
            2 => Rule::new(action::PASS, condition::PTB_MTU),
            // Private experimentation and expansion (RFC 4890 §4.4.5).
            100 | 101 | 127 => Rule::DROP,
            // Other errors (RFC 4443 §2.4).
            0..=127 => Rule::PASS,
            128 => Rule::LIMIT,
            129 => Rule::new(action::LIMIT, condition::NONE).with_limiter(1),
            // Neighbour discovery and inverse ND.
            133..=136 | 141 | 142 => Rule::new(action::PASS, condition::ND),
            // MLD.
            130..=132 | 143 => Rule::new(action::PASS, condition::MLD),
            // Redirect (local policy), renumbering, node information, experimentation and
            // every other informational type.
            _ => Rule::DROP,
        }
    }
}

/// The condition a type carries whatever its action: ND, MLD and Packet Too Big are only
/// trusted when they look like what the RFCs allow.
pub const fn intrinsic_condition(family: u8, icmp_type: u8) -> u8 {
    default_rule(family, icmp_type).condition
}

impl Rule {
    /// The same rule with another limiter.
    pub const fn with_limiter(mut self, limiter: u8) -> Self {
        self.limiter = limiter;
        self
    }
}

/// Messages whose loss breaks the network, and the RFC that says so. Setting them to drop
/// needs `--force`.
pub const fn protected(family: u8, icmp_type: u8, code: Option<u8>) -> Option<&'static str> {
    if family == FAMILY_V4 {
        if icmp_type == 3 && (code.is_none() || matches!(code, Some(4))) {
            return Some(
                "v4 3/4 (fragmentation needed) carries Path MTU Discovery (RFC 1191); dropping it black-holes large packets",
            );
        }
        None
    } else if family == FAMILY_V6 {
        match icmp_type {
            2 => Some(
                "v6 type 2 (packet too big) is the only Path MTU signal in IPv6 (RFC 8201, RFC 4890 §4.4.1); dropping it black-holes large packets",
            ),
            133..=136 => Some(
                "v6 133-136 are neighbour discovery (RFC 4861, RFC 4890 §4.4.1); dropping them cuts the host off its link",
            ),
            _ => None,
        }
    } else {
        None
    }
}

/// True when an IPv4 destination is the limited broadcast or multicast (RFC 1122
/// §3.2.2.6: echo to these must not be answered by default, the smurf amplifier).
#[inline(always)]
pub const fn ipv4_broadcast_or_multicast(destination: [u8; 4]) -> bool {
    (destination[0] & 0xf0) == 0xe0 || u32::from_be_bytes(destination) == u32::MAX
}

/// True when a destination MAC is broadcast or multicast (group bit set).
#[inline(always)]
pub const fn mac_group(destination: [u8; 6]) -> bool {
    destination[0] & 1 != 0
}

/// Scope of an IPv6 multicast destination (RFC 4291 §2.7), or 0 when it is not multicast.
#[inline(always)]
pub const fn ipv6_multicast_scope(destination: [u8; 16]) -> u8 {
    if destination[0] == 0xff {
        destination[1] & 0x0f
    } else {
        0
    }
}

/// Link-local multicast scope.
pub const SCOPE_LINK_LOCAL: u8 = 2;

/// True for fe80::/10 and ::.
#[inline(always)]
pub const fn ipv6_link_local_or_unspecified(source: [u8; 16]) -> bool {
    if source[0] == 0xfe && (source[1] & 0xc0) == 0x80 {
        return true;
    }
    let mut index = 0;
    while index < 16 {
        if source[index] != 0 {
            return false;
        }
        index += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const ND_OK: Facts = Facts {
        hop_limit: 255,
        fragmented: false,
        source_link_local: true,
        mtu: 0,
    };

    #[test]
    fn slots_and_keys_separate_generations_and_families() {
        assert_eq!(type_slot(0, FAMILY_V4, 8), 8);
        assert_eq!(type_slot(0, FAMILY_V6, 128), 256 + 128);
        assert_eq!(type_slot(1, FAMILY_V4, 8), 512 + 8);
        assert_eq!(type_slot(1, FAMILY_V6, 255), POLICY_TYPE_ENTRIES - 1);
        assert_ne!(code_key(0, FAMILY_V4, 3, 4), code_key(1, FAMILY_V4, 3, 4));
        assert_ne!(code_key(0, FAMILY_V4, 3, 4), code_key(0, FAMILY_V6, 3, 4));
    }

    #[test]
    fn conditions_guard_nd_mld_and_ptb() {
        let nd = Rule::new(action::PASS, condition::ND);
        assert_eq!(evaluate(nd, &ND_OK), RuleVerdict::Pass);
        let forwarded = Facts {
            hop_limit: 254,
            ..ND_OK
        };
        assert_eq!(
            evaluate(nd, &forwarded),
            RuleVerdict::Drop(DropReason::Invalid)
        );
        let fragmented = Facts {
            fragmented: true,
            ..ND_OK
        };
        assert_eq!(
            evaluate(nd, &fragmented),
            RuleVerdict::Drop(DropReason::Invalid)
        );

        let mld = Rule::new(action::PASS, condition::MLD);
        let report = Facts {
            hop_limit: 1,
            ..ND_OK
        };
        assert_eq!(evaluate(mld, &report), RuleVerdict::Pass);
        let global_source = Facts {
            source_link_local: false,
            ..report
        };
        assert_eq!(
            evaluate(mld, &global_source),
            RuleVerdict::Drop(DropReason::Invalid)
        );

        let ptb = Rule::new(action::PASS, condition::PTB_MTU);
        let small = Facts { mtu: 1279, ..ND_OK };
        let fine = Facts { mtu: 1280, ..ND_OK };
        assert_eq!(
            evaluate(ptb, &small),
            RuleVerdict::Drop(DropReason::Invalid)
        );
        assert_eq!(evaluate(ptb, &fine), RuleVerdict::Pass);
    }

    #[test]
    fn drop_wins_over_conditions_and_unknowns_fail_closed() {
        assert_eq!(
            evaluate(Rule::DROP, &ND_OK),
            RuleVerdict::Drop(DropReason::Policy)
        );
        assert_eq!(
            evaluate(Rule::new(9, condition::NONE), &ND_OK),
            RuleVerdict::Drop(DropReason::Policy)
        );
        assert_eq!(
            evaluate(Rule::new(action::PASS, 77), &ND_OK),
            RuleVerdict::Drop(DropReason::Invalid)
        );
        assert_eq!(
            evaluate(Rule::LIMIT.with_limiter(3), &ND_OK),
            RuleVerdict::Limit(3)
        );
    }

    #[test]
    fn default_profile_matches_the_spec() {
        let v4 = |t| default_rule(FAMILY_V4, t).action;
        let v6 = |t| default_rule(FAMILY_V6, t);
        for t in [3, 11, 12] {
            assert_eq!(v4(t), action::PASS, "v4 {t}");
        }
        assert_eq!(v4(8), action::LIMIT);
        assert_eq!(v4(0), action::LIMIT);
        for t in [
            1, 2, 4, 5, 6, 7, 9, 10, 13, 14, 15, 16, 17, 18, 30, 39, 42, 200, 255,
        ] {
            assert_eq!(v4(t), action::DROP, "v4 {t}");
        }
        assert_eq!(v6(1), Rule::PASS);
        assert_eq!(v6(2), Rule::new(action::PASS, condition::PTB_MTU));
        assert_eq!(v6(3), Rule::PASS);
        assert_eq!(v6(4), Rule::PASS);
        assert_eq!(v6(50), Rule::PASS, "other errors pass");
        for t in [100, 101, 127, 137, 138, 139, 140, 200, 201, 255, 150, 160] {
            assert_eq!(v6(t).action, action::DROP, "v6 {t}");
        }
        for t in [133, 134, 135, 136, 141, 142] {
            assert_eq!(v6(t), Rule::new(action::PASS, condition::ND), "v6 {t}");
        }
        for t in [130, 131, 132, 143] {
            assert_eq!(v6(t), Rule::new(action::PASS, condition::MLD), "v6 {t}");
        }
        assert_eq!(v6(128).action, action::LIMIT);
        assert_eq!(v6(129).action, action::LIMIT);
    }

    #[test]
    fn gcra_admits_exactly_burst_when_no_time_passes() {
        let interval = emission_interval_ns(100);
        let mut tat = 0;
        let mut admitted = 0;
        for _ in 0..1000 {
            if let Some(next) = gcra(tat, 5_000_000_000, interval, 200) {
                tat = next;
                admitted += 1;
            }
        }
        assert_eq!(admitted, 200);
    }

    #[test]
    fn gcra_refills_at_rate_and_never_beyond_burst() {
        let interval = emission_interval_ns(100); // 10 ms
        let mut tat = 0;
        let mut now = 1_000_000_000u64;
        let mut admitted = 0;
        // One second of a flood every millisecond: burst + rate × 1 s.
        for _ in 0..1000 {
            if let Some(next) = gcra(tat, now, interval, 200) {
                tat = next;
                admitted += 1;
            }
            now += 1_000_000;
        }
        assert!((299..=301).contains(&admitted), "{admitted}");
        // Idle for a week: the bucket is full again, not fuller.
        now += 7 * 24 * 3600 * 1_000_000_000;
        let mut burst = 0;
        while let Some(next) = gcra(tat, now, interval, 200) {
            tat = next;
            burst += 1;
        }
        assert_eq!(burst, 200);
    }

    #[test]
    fn gcra_refuses_empty_limits() {
        assert_eq!(gcra(0, 0, emission_interval_ns(0), 10), None);
        assert_eq!(gcra(0, 0, emission_interval_ns(10), 0), None);
        assert_eq!(emission_interval_ns(2_000_000_000), 1);
    }

    #[test]
    fn rate_keys_mask_to_the_prefix() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[192, 0, 2, 77]);
        let key = RateKey::new(3, FAMILY_V4, &v4, 24);
        assert_eq!(&key.addr[..4], &[192, 0, 2, 0]);
        let host = RateKey::new(3, FAMILY_V4, &v4, 32);
        assert_eq!(&host.addr[..4], &[192, 0, 2, 77]);
        let mut v6 = [0xffu8; 16];
        v6[0] = 0x20;
        let key = RateKey::new(1, FAMILY_V6, &v6, 64);
        assert_eq!(&key.addr[8..], &[0; 8]);
        assert_eq!(key.addr[7], 0xff);
        let odd = RateKey::new(1, FAMILY_V6, &v6, 60);
        assert_eq!(odd.addr[7], 0xf0);
    }

    #[test]
    fn martian_sources() {
        for martian in [
            [0, 1, 2, 3],
            [127, 0, 0, 1],
            [224, 0, 0, 5],
            [240, 0, 0, 1],
            [255; 4],
        ] {
            assert!(ipv4_martian_source(martian), "{martian:?}");
        }
        for fine in [[192, 0, 2, 2], [198, 51, 100, 255], [223, 255, 255, 255]] {
            assert!(!ipv4_martian_source(fine), "{fine:?}");
        }
        let unspecified = [0u8; 16];
        let mut loopback = [0u8; 16];
        loopback[15] = 1;
        let mut multicast = [0u8; 16];
        multicast[0] = 0xff;
        multicast[1] = 0x02;
        let mut doc = [0u8; 16];
        doc[0] = 0x20;
        doc[1] = 0x01;
        doc[15] = 1;
        assert!(ipv6_martian_source(multicast, 129));
        assert!(ipv6_martian_source(loopback, 128));
        assert!(ipv6_martian_source(unspecified, 128));
        for allowed in [131, 132, 133, 135, 143] {
            assert!(!ipv6_martian_source(unspecified, allowed), "{allowed}");
        }
        assert!(!ipv6_martian_source(doc, 128));
    }

    #[test]
    fn protected_messages() {
        assert!(protected(FAMILY_V4, 3, None).is_some());
        assert!(protected(FAMILY_V4, 3, Some(4)).is_some());
        assert!(protected(FAMILY_V4, 3, Some(1)).is_none());
        assert!(protected(FAMILY_V6, 2, None).is_some());
        for t in 133..=136 {
            assert!(protected(FAMILY_V6, t, None).is_some());
        }
        assert!(protected(FAMILY_V6, 137, None).is_none());
        assert!(protected(FAMILY_V4, 8, None).is_none());
    }

    #[test]
    fn destinations() {
        assert!(ipv4_broadcast_or_multicast([255, 255, 255, 255]));
        assert!(ipv4_broadcast_or_multicast([224, 0, 0, 1]));
        assert!(ipv4_broadcast_or_multicast([239, 1, 2, 3]));
        assert!(!ipv4_broadcast_or_multicast([192, 0, 2, 255]));
        assert!(mac_group([0xff; 6]));
        assert!(mac_group([0x01, 0x00, 0x5e, 0, 0, 1]));
        assert!(!mac_group([0x02, 0, 0, 0, 0, 1]));
        let mut ff05 = [0u8; 16];
        ff05[0] = 0xff;
        ff05[1] = 0x05;
        assert_eq!(ipv6_multicast_scope(ff05), 5);
        let mut fe80 = [0u8; 16];
        fe80[0] = 0xfe;
        fe80[1] = 0x80;
        assert!(ipv6_link_local_or_unspecified(fe80));
        assert!(ipv6_link_local_or_unspecified([0; 16]));
        let mut doc = [0u8; 16];
        doc[0] = 0x20;
        doc[1] = 0x01;
        assert!(!ipv6_link_local_or_unspecified(doc));
        assert_eq!(ipv6_multicast_scope(doc), 0);
    }
}
