//! The policy as the kernel sees it: map encodings, the safe default profile, and the pure
//! function that turns a rule and the facts of a packet into a verdict.
//!
//! # Atomic swaps
//!
//! Every policy table exists twice, once per generation (0 and 1), and
//! [`Config::active_generation`](crate::config::Config::active_generation) names the live
//! one. The XDP program reads the generation once per packet and makes every
//! lookup in that generation. Userspace writes a whole new policy into the idle generation,
//! flips the generation, then waits for an RCU grace period (a map-in-map update makes the
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

/// Conditions a packet must meet before a pass or limit rule applies, as bits: failing
/// any drops the packet as `invalid`. They come with the type ([`intrinsic_condition`]),
/// whatever action the operator picks.
pub mod condition {
    /// No condition.
    pub const NONE: u8 = 0;
    /// Neighbour discovery (RFC 4861 §6.1, §7.1; RFC 6980): hop limit 255, no Fragment
    /// header.
    pub const ND: u8 = 1;
    /// MLD (RFC 2710 §3, RFC 3810 §5): hop limit 1, link-local or unspecified source.
    pub const MLD: u8 = 2;
    /// Packet Too Big (RFC 8201 §4): an MTU below 1280 is never acted upon.
    pub const PTB_MTU: u8 = 4;
    /// Echo request and reply carry code 0 only (RFC 792, RFC 4443 §4).
    pub const ECHO_CODE: u8 = 8;
    /// The source is link-local (fe80::/10): router advertisements (RFC 4861 §6.1.2).
    pub const LINK_LOCAL_SOURCE: u8 = 16;
    /// An ICMP error: it embeds at least a full IP header of its family plus 8 bytes
    /// (RFC 792, RFC 1122 §3.2.2, RFC 4443 §2.4) and is not sent to a broadcast or
    /// multicast destination. Errors that their rule passes are charged to the error
    /// limiter ([`crate::config::GenerationConfig::error_limiter`]).
    pub const ERROR: u8 = 32;
    /// Every condition this program knows; any other bit fails closed.
    pub const KNOWN: u8 = ND | MLD | PTB_MTU | ECHO_CODE | LINK_LOCAL_SOURCE | ERROR;
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
    /// Bits of [`condition`].
    pub condition: u8,
    pub flags: u8,
    /// Index of the rate limiter for `limit` rules.
    pub limiter: u8,
    /// Largest IP packet (bytes, [`Facts::length`]) a pass or limit rule admits; larger
    /// ones are dropped as `oversize`. 0: no cap.
    pub max_size: u16,
    pub _padding: u16,
}

#[cfg(feature = "user")]
// SAFETY: four u8 and two u16 fields, `#[repr(C)]`, no implicit padding, every bit pattern
// valid.
unsafe impl aya::Pod for Rule {}

impl Rule {
    pub const fn new(action: u8, condition: u8) -> Self {
        Self {
            action,
            condition,
            flags: 0,
            limiter: 0,
            max_size: 0,
            _padding: 0,
        }
    }

    pub const PASS: Self = Self::new(action::PASS, condition::NONE);
    pub const DROP: Self = Self::new(action::DROP, condition::NONE);
    pub const LIMIT: Self = Self::new(action::LIMIT, condition::NONE);
}

/// Bits of [`GenerationConfig::checks_off`](crate::config::GenerationConfig::checks_off):
/// checks the operator switched off.
pub mod checks_off {
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

/// What the program learned about a classified ICMP packet that its rule's conditions
/// look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The ICMP code.
    pub code: u8,
    /// IPv6 hop limit (the IPv4 TTL is never a condition).
    pub hop_limit: u8,
    /// The packet is a fragment: an IPv4 first fragment with more to come, or IPv6 with a
    /// Fragment header (atomic fragments included, RFC 6980 §5).
    pub fragmented: bool,
    /// The IPv6 source is link-local unicast (fe80::/10).
    pub source_link_local: bool,
    /// The IPv6 source is the unspecified address (::).
    pub source_unspecified: bool,
    /// The ICMP payload embeds a full IP header of the packet's family plus 8 bytes: what
    /// an error must carry.
    pub embeds_header: bool,
    /// The destination is a broadcast or multicast address (L2 or L3, or a directed
    /// broadcast of ours).
    pub group_destination: bool,
    /// MTU field of an ICMPv6 Packet Too Big.
    pub mtu: u32,
    /// The IP packet's length: IPv4 total length, or 40 plus the IPv6 payload length.
    pub length: u32,
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

/// True when `facts` meet every condition in `conditions`.
#[inline(always)]
pub const fn conditions_met(conditions: u8, facts: &Facts) -> bool {
    if conditions & !condition::KNOWN != 0 {
        // A condition this program cannot check: fail closed.
        return false;
    }
    if conditions & condition::ND != 0 && (facts.hop_limit != 255 || facts.fragmented) {
        return false;
    }
    if conditions & condition::MLD != 0
        && (facts.hop_limit != 1 || !(facts.source_link_local || facts.source_unspecified))
    {
        return false;
    }
    if conditions & condition::PTB_MTU != 0 && facts.mtu < IPV6_MIN_MTU {
        return false;
    }
    if conditions & condition::ECHO_CODE != 0 && facts.code != 0 {
        return false;
    }
    if conditions & condition::LINK_LOCAL_SOURCE != 0 && !facts.source_link_local {
        return false;
    }
    if conditions & condition::ERROR != 0 && (!facts.embeds_header || facts.group_destination) {
        return false;
    }
    true
}

/// Applies a rule's condition and action to a packet's facts.
#[inline(always)]
pub const fn evaluate(rule: Rule, facts: &Facts) -> RuleVerdict {
    if rule.action == action::DROP {
        return RuleVerdict::Drop(DropReason::Policy);
    }
    if !conditions_met(rule.condition, facts) {
        return RuleVerdict::Drop(DropReason::Invalid);
    }
    if rule.max_size != 0 && facts.length > rule.max_size as u32 {
        return RuleVerdict::Drop(DropReason::Oversize);
    }
    match rule.action {
        action::PASS => RuleVerdict::Pass,
        action::LIMIT => RuleVerdict::Limit(rule.limiter),
        _ => RuleVerdict::Drop(DropReason::Policy),
    }
}

/// True for the ICMP error types, which carry the header of the packet they report on:
/// v4 destination unreachable, source quench, redirect, time exceeded and parameter
/// problem (RFC 792); every ICMPv6 type below 128 (RFC 4443 §2.1).
pub const fn is_error(family: u8, icmp_type: u8) -> bool {
    if family == FAMILY_V4 {
        matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
    } else {
        icmp_type < 128
    }
}

/// The conditions a type carries whatever its action (see [`condition`]).
pub const fn intrinsic_condition(family: u8, icmp_type: u8) -> u8 {
    let error = if is_error(family, icmp_type) {
        condition::ERROR
    } else {
        condition::NONE
    };
    if family == FAMILY_V4 {
        match icmp_type {
            0 | 8 => condition::ECHO_CODE,
            _ => error,
        }
    } else {
        match icmp_type {
            2 => condition::PTB_MTU | error,
            128 | 129 => condition::ECHO_CODE,
            134 => condition::ND | condition::LINK_LOCAL_SOURCE,
            133 | 135 | 136 | 141 | 142 => condition::ND,
            130..=132 | 143 => condition::MLD,
            _ => error,
        }
    }
}

/// The safe default profile's action for a whole type (PRODUCT.md, "Safe default
/// profile"), with the type's [`intrinsic_condition`]. It has no per-code exceptions:
/// every listed code is passed type-wide. Echo replies use limiter 1, echo requests 0.
pub const fn default_rule(family: u8, icmp_type: u8) -> Rule {
    let action = if family == FAMILY_V4 {
        match icmp_type {
            // Destination unreachable (PMTUD: 3/4, RFC 1191), time exceeded (traceroute),
            // parameter problem (RFC 1122).
            3 | 11 | 12 => action::PASS,
            // Hosts must answer echo (RFC 1122 §3.2.2.6): limit, never block. Echo replies:
            // a generous limit protects a reflection victim.
            0 | 8 => action::LIMIT,
            // Redirect, source quench (RFC 6633), deprecated types (RFC 6918),
            // timestamp and router discovery (reconnaissance), unassigned: drop.
            _ => action::DROP,
        }
    } else {
        match icmp_type {
            // Private experimentation and expansion (RFC 4890 §4.4.5).
            100 | 101 | 127 => action::DROP,
            // Errors, Packet Too Big among them (RFC 4890 §4.4.1, RFC 4443 §2.4).
            0..=127 => action::PASS,
            128 | 129 => action::LIMIT,
            // Neighbour discovery, inverse ND, MLD.
            130..=136 | 141..=143 => action::PASS,
            // Redirect (local policy), renumbering, node information, experimentation and
            // every other informational type.
            _ => action::DROP,
        }
    };
    let reply =
        (family == FAMILY_V4 && icmp_type == 0) || (family == FAMILY_V6 && icmp_type == 129);
    Rule::new(action, intrinsic_condition(family, icmp_type)).with_limiter(if reply {
        1
    } else {
        0
    })
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

/// True for link-local unicast sources, fe80::/10.
#[inline(always)]
pub const fn ipv6_link_local(source: [u8; 16]) -> bool {
    source[0] == 0xfe && (source[1] & 0xc0) == 0x80
}

/// True for the unspecified address, ::.
#[inline(always)]
pub const fn ipv6_unspecified(source: [u8; 16]) -> bool {
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
        code: 0,
        hop_limit: 255,
        fragmented: false,
        source_link_local: true,
        source_unspecified: false,
        embeds_header: false,
        group_destination: false,
        mtu: 0,
        length: 0,
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
        let invalid = RuleVerdict::Drop(DropReason::Invalid);
        let nd = Rule::new(action::PASS, condition::ND);
        assert_eq!(evaluate(nd, &ND_OK), RuleVerdict::Pass);
        let forwarded = Facts {
            hop_limit: 254,
            ..ND_OK
        };
        assert_eq!(evaluate(nd, &forwarded), invalid);
        let fragmented = Facts {
            fragmented: true,
            ..ND_OK
        };
        assert_eq!(evaluate(nd, &fragmented), invalid);

        let mld = Rule::new(action::PASS, condition::MLD);
        let report = Facts {
            hop_limit: 1,
            ..ND_OK
        };
        assert_eq!(evaluate(mld, &report), RuleVerdict::Pass);
        let unspecified = Facts {
            source_link_local: false,
            source_unspecified: true,
            ..report
        };
        assert_eq!(evaluate(mld, &unspecified), RuleVerdict::Pass);
        let global_source = Facts {
            source_link_local: false,
            ..report
        };
        assert_eq!(evaluate(mld, &global_source), invalid);

        let ptb = Rule::new(action::PASS, condition::PTB_MTU);
        assert_eq!(evaluate(ptb, &Facts { mtu: 1279, ..ND_OK }), invalid);
        assert_eq!(
            evaluate(ptb, &Facts { mtu: 1280, ..ND_OK }),
            RuleVerdict::Pass
        );
    }

    #[test]
    fn echo_codes_router_advertisement_sources_and_errors() {
        let invalid = RuleVerdict::Drop(DropReason::Invalid);
        let echo = default_rule(FAMILY_V4, 8);
        assert_eq!(evaluate(echo, &ND_OK), RuleVerdict::Limit(0));
        assert_eq!(evaluate(echo, &Facts { code: 1, ..ND_OK }), invalid);
        let reply6 = default_rule(FAMILY_V6, 129);
        assert_eq!(evaluate(reply6, &Facts { code: 9, ..ND_OK }), invalid);

        let advertisement = default_rule(FAMILY_V6, 134);
        assert_eq!(evaluate(advertisement, &ND_OK), RuleVerdict::Pass);
        let from_global = Facts {
            source_link_local: false,
            ..ND_OK
        };
        assert_eq!(evaluate(advertisement, &from_global), invalid);
        // A solicitation may come from anywhere on the link, :: included.
        assert_eq!(
            evaluate(default_rule(FAMILY_V6, 133), &from_global),
            RuleVerdict::Pass
        );

        let unreachable = default_rule(FAMILY_V4, 3);
        let error = Facts {
            embeds_header: true,
            ..Facts::default()
        };
        assert_eq!(evaluate(unreachable, &error), RuleVerdict::Pass);
        assert_eq!(evaluate(unreachable, &Facts::default()), invalid);
        let to_broadcast = Facts {
            group_destination: true,
            ..error
        };
        assert_eq!(evaluate(unreachable, &to_broadcast), invalid);
        let too_big = default_rule(FAMILY_V6, 2);
        assert_eq!(
            evaluate(too_big, &Facts { mtu: 1500, ..error }),
            RuleVerdict::Pass
        );
        assert_eq!(
            evaluate(
                too_big,
                &Facts {
                    mtu: 1500,
                    ..Facts::default()
                }
            ),
            invalid
        );
    }

    #[test]
    fn max_size_drops_longer_packets_as_oversize_after_the_conditions() {
        let mut echo = default_rule(FAMILY_V4, 8);
        echo.max_size = 1500;
        let at = |length| Facts { length, ..ND_OK };
        assert_eq!(evaluate(echo, &at(1500)), RuleVerdict::Limit(0));
        assert_eq!(
            evaluate(echo, &at(1501)),
            RuleVerdict::Drop(DropReason::Oversize)
        );
        // An echo with a code is invalid whatever its size; a drop rule stays `policy`.
        assert_eq!(
            evaluate(
                echo,
                &Facts {
                    code: 1,
                    ..at(9000)
                }
            ),
            RuleVerdict::Drop(DropReason::Invalid)
        );
        let mut dropped = Rule::DROP;
        dropped.max_size = 100;
        assert_eq!(
            evaluate(dropped, &at(9000)),
            RuleVerdict::Drop(DropReason::Policy)
        );
        let mut pass = Rule::PASS;
        pass.max_size = 100;
        assert_eq!(evaluate(pass, &at(100)), RuleVerdict::Pass);
        assert_eq!(
            evaluate(pass, &at(101)),
            RuleVerdict::Drop(DropReason::Oversize)
        );
        assert_eq!(evaluate(Rule::PASS, &at(65_535)), RuleVerdict::Pass);
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
            evaluate(Rule::new(action::PASS, 64), &ND_OK),
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
            assert_eq!(default_rule(FAMILY_V4, t).condition, condition::ERROR);
        }
        assert_eq!(v4(8), action::LIMIT);
        assert_eq!(v4(0), action::LIMIT);
        assert_eq!(default_rule(FAMILY_V4, 0).limiter, 1);
        for t in [
            1, 2, 4, 5, 6, 7, 9, 10, 13, 14, 15, 16, 17, 18, 30, 39, 42, 200, 255,
        ] {
            assert_eq!(v4(t), action::DROP, "v4 {t}");
        }
        assert_eq!(v6(1), Rule::new(action::PASS, condition::ERROR));
        assert_eq!(
            v6(2),
            Rule::new(action::PASS, condition::PTB_MTU | condition::ERROR)
        );
        assert_eq!(v6(3).action, action::PASS);
        assert_eq!(v6(4).action, action::PASS);
        assert_eq!(v6(50).action, action::PASS, "other errors pass");
        for t in [100, 101, 127, 137, 138, 139, 140, 200, 201, 255, 150, 160] {
            assert_eq!(v6(t).action, action::DROP, "v6 {t}");
        }
        for t in [133, 135, 136, 141, 142] {
            assert_eq!(v6(t), Rule::new(action::PASS, condition::ND), "v6 {t}");
        }
        assert_eq!(
            v6(134),
            Rule::new(action::PASS, condition::ND | condition::LINK_LOCAL_SOURCE)
        );
        for t in [130, 131, 132, 143] {
            assert_eq!(v6(t), Rule::new(action::PASS, condition::MLD), "v6 {t}");
        }
        assert_eq!(v6(128).action, action::LIMIT);
        assert_eq!(v6(129).action, action::LIMIT);
    }

    #[test]
    fn error_types() {
        for t in [3, 4, 5, 11, 12] {
            assert!(is_error(FAMILY_V4, t), "v4 {t}");
        }
        for t in [0, 8, 13, 14, 30, 42] {
            assert!(!is_error(FAMILY_V4, t), "v4 {t}");
        }
        assert!(is_error(FAMILY_V6, 1) && is_error(FAMILY_V6, 127));
        assert!(!is_error(FAMILY_V6, 128));
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
        assert!(ipv6_link_local(fe80));
        assert!(!ipv6_link_local([0; 16]));
        assert!(ipv6_unspecified([0; 16]));
        let mut doc = [0u8; 16];
        doc[0] = 0x20;
        doc[1] = 0x01;
        assert!(!ipv6_link_local(doc) && !ipv6_unspecified(doc));
        assert_eq!(ipv6_multicast_scope(doc), 0);
    }
}
