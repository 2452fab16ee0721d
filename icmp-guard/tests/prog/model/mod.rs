//! The reference model: what icmp-guard must do with a frame, and where it must count it,
//! as a plain function of the frame, the policy and the directed broadcasts.
//!
//! It is written from the specification (PRODUCT.md "Parsing rules"; README "Parsing",
//! "Policy", "Smurf and reflection defence", "Flood guard"), not from the XDP program, and
//! shares no decision code with it: only the counter layout (`counter_index`, slot numbers),
//! which is the interface both sides are compared through. Which rule a (family, type, code)
//! has is the userspace `Policy`'s answer (`rule_for`), since that is what an operator set;
//! that the default profile's rows match the spec's tables is checked by
//! `policy_verdict.rs`. Parsing, the ND, MLD and Packet Too Big conditions, the lists
//! and the smurf and martian checks are the model's own. Headers are read with `etherparse`
//! where its rules are the spec's, and by hand where they differ:
//!
//! - VLAN: etherparse reads at most two tags; the spec looks through two and peeks through
//!   up to eight, to tell an over-deep stack carrying IP (malformed) from one that does not.
//! - IPv4: etherparse checks version, IHL and that the header fits; total length against the
//!   frame and ping of death are the spec's own rules. Its ICMPv4 slice wants timestamp
//!   messages to be exactly 20 bytes, where the spec asks only for the fixed 8-byte header.
//! - IPv6 extension headers: etherparse's chain walk has no bound and refuses AH with a
//!   length field of 0; the spec walks the five kinds up to 8 deep, AH in 4-octet units,
//!   and holds them to RFC 8200 §4.1's order (hop-by-hop only first, destination options
//!   at most twice, the others once). etherparse reads each single header.
//!
//! **Rate limits are modelled as always admitting.** The differential tests give every
//! `limit` rule, the echo-reply ceiling, the error ceiling and the fragment budget a rate
//! and burst of 100,000,000 packets (`huge_limits`), so that no limiter can refuse a packet
//! during a run (GCRA tolerance of one second at a 10 ns interval, against a few million
//! packets): a `limit` verdict is a pass, and which bucket paid for it does not change the
//! verdict or the counters.

pub mod xdp;

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use etherparse::{
    Ethernet2HeaderSlice, Icmpv6Slice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice, SingleVlanHeaderSlice,
};
use icmp_guard::policy::{
    Action, Cidr, ErrorCeiling, FragmentBudget, Limit, Mode, Policy, RuleSpec, model::MAX_RATE,
};
use icmp_guard_common::{
    DropReason, FAMILY_V4, FAMILY_V6, SLOT_PASSED, counter_index, drop_slot, global,
    would_drop_slot,
};

/// The rule that decided a frame's fate: reports print its words, and the known
/// divergences of the differential test are keyed on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    NotIp,
    RuntVlan,
    VlanPastPeek,
    IpUnderDeepVlan,
    Ipv4Header,
    Ipv4TotalLength,
    NotIcmp,
    PingOfDeath,
    NonFirstFragment,
    IcmpShort,
    Ipv6Header,
    Ipv6PayloadPastFrame,
    Ipv6ZeroPayload,
    ExtPastPayload,
    FragmentPastPayload,
    RoutingPastPayload,
    ExtChainTooLong,
    ExtOrder,
    RoutingType0,
    Martian,
    FragmentMartian,
    FragmentDenied,
    FragmentGroup,
    FragmentBudget,
    EchoCode,
    RaSource,
    ErrorNoHeader,
    ErrorToGroup,
    DenyList,
    Smurf,
    SmurfV6,
    TypeDrop,
    NdCondition,
    NdFragment,
    MldCondition,
    PtbCondition,
    Oversize,
    TypePass,
    TypeLimit,
}

impl Rule {
    /// The rule in words.
    pub fn words(self) -> &'static str {
        match self {
            Self::NotIp => "not IP: passes untouched",
            Self::RuntVlan => "truncated VLAN tag: malformed",
            Self::VlanPastPeek => "VLAN stack deeper than the 8 tags peeked",
            Self::IpUnderDeepVlan => "IP under more than 2 VLAN tags",
            Self::Ipv4Header => "IPv4 header: truncated, version not 4, or IHL < 5",
            Self::Ipv4TotalLength => "IPv4 total length below the header or past the frame",
            Self::NotIcmp => "IP that is not ICMP: passes untouched",
            Self::PingOfDeath => "fragment reassembling past 65,535 bytes (ping of death)",
            Self::NonFirstFragment => "non-first fragment: carries no ICMP header",
            Self::IcmpShort => "ICMP shorter than its fixed 8-byte header",
            Self::Ipv6Header => "IPv6 header: truncated or version not 6",
            Self::Ipv6PayloadPastFrame => "IPv6 payload length past the frame",
            Self::Ipv6ZeroPayload => "IPv6 payload length 0 (a jumbogram, never on these links)",
            Self::ExtPastPayload => "IPv6 extension header runs past the payload",
            Self::FragmentPastPayload => "IPv6 fragment header runs past the payload",
            Self::RoutingPastPayload => "IPv6 routing header runs past the payload",
            Self::ExtChainTooLong => "more than 8 IPv6 extension headers",
            Self::ExtOrder => {
                "IPv6 extension headers out of RFC 8200 order (hop-by-hop not first, repeated)"
            }
            Self::RoutingType0 => "routing header type 0 with segments left (RFC 5095)",
            Self::Martian => "martian source",
            Self::FragmentMartian => "non-first fragment from a martian source",
            Self::FragmentDenied => "non-first fragment from a source on the deny list",
            Self::FragmentGroup => "non-first fragment to a broadcast or multicast destination",
            Self::FragmentBudget => "non-first fragment: the fragment budget (huge: admitted)",
            Self::EchoCode => "echo request or reply with a code other than 0",
            Self::RaSource => "router advertisement from a source that is not link-local",
            Self::ErrorNoHeader => "ICMP error without a full embedded header plus 8 bytes",
            Self::ErrorToGroup => "ICMP error to a broadcast or multicast destination",
            Self::DenyList => "source on the deny list (longest prefix)",
            Self::Smurf => "echo or timestamp request to a broadcast or multicast destination",
            Self::SmurfV6 => "ICMPv6 echo request to multicast beyond link scope",
            Self::TypeDrop => "type/code rule: drop",
            Self::NdCondition => "ND without hop limit 255",
            Self::NdFragment => "ND carried with a Fragment header (RFC 6980)",
            Self::MldCondition => "MLD without hop limit 1 from link-local or ::",
            Self::PtbCondition => "Packet Too Big with MTU < 1280 (RFC 8201)",
            Self::Oversize => "longer than the rule's max_size: oversize",
            Self::TypePass => "type/code rule: pass",
            Self::TypeLimit => "type/code rule: limit (a huge burst: admitted)",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.words())
    }
}

/// What happens to the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

/// Where a frame is counted: a slot of `GLOBAL_COUNTERS`, or a (family, type, slot) of
/// `ICMP_COUNTERS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Where {
    Global(u32),
    Icmp {
        family: u8,
        icmp_type: u8,
        slot: u32,
    },
}

/// Every packet counter the program has, flattened: `ICMP_COUNTERS` first, then the packet
/// slots of `GLOBAL_COUNTERS`.
pub const COUNTER_SLOTS: usize =
    icmp_guard_common::ICMP_COUNTER_ENTRIES as usize + global::PACKET_SLOTS as usize;

impl Where {
    /// Position in a flattened snapshot of every counter (see [`COUNTER_SLOTS`]).
    pub fn flat_index(self) -> usize {
        match self {
            Self::Icmp {
                family,
                icmp_type,
                slot,
            } => counter_index(family, icmp_type, slot) as usize,
            Self::Global(slot) => icmp_guard_common::ICMP_COUNTER_ENTRIES as usize + slot as usize,
        }
    }

    /// The inverse of [`Where::flat_index`].
    pub fn from_flat_index(index: usize) -> Self {
        let icmp_entries = icmp_guard_common::ICMP_COUNTER_ENTRIES as usize;
        if index >= icmp_entries {
            return Self::Global((index - icmp_entries) as u32);
        }
        let slots = icmp_guard_common::SLOTS_PER_TYPE as usize;
        let (family_type, slot) = (index / slots, index % slots);
        Self::Icmp {
            family: (family_type / 256) as u8,
            icmp_type: (family_type % 256) as u8,
            slot: slot as u32,
        }
    }
}

fn slot_name(slot: u32) -> String {
    if slot == SLOT_PASSED {
        return "passed".to_owned();
    }
    for reason in DropReason::ALL {
        if slot == drop_slot(reason) {
            return format!("dropped:{}", reason.name());
        }
        if slot == would_drop_slot(reason) {
            return format!("would_drop:{}", reason.name());
        }
    }
    format!("slot {slot}")
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Global(slot) => {
                let name = match slot {
                    global::NON_ICMP_PASSED => "non_icmp_passed",
                    global::ICMP_FRAGMENT_PASSED => "icmp_fragments_passed",
                    global::INVALID_DROPPED => "unclassified dropped:invalid",
                    global::MALFORMED_DROPPED => "unclassified dropped:malformed",
                    global::INVALID_WOULD_DROP => "unclassified would_drop:invalid",
                    global::MALFORMED_WOULD_DROP => "unclassified would_drop:malformed",
                    slot if (global::FRAGMENT_DROPPED..global::FRAGMENT_WOULD_DROP)
                        .contains(&slot) =>
                    {
                        return write!(
                            f,
                            "fragments dropped:{}",
                            slot_name(slot - global::FRAGMENT_DROPPED)
                                .trim_start_matches("dropped:")
                        );
                    }
                    slot if (global::FRAGMENT_WOULD_DROP..global::PACKET_SLOTS).contains(&slot) => {
                        return write!(
                            f,
                            "fragments would_drop:{}",
                            slot_name(slot - global::FRAGMENT_WOULD_DROP)
                                .trim_start_matches("dropped:")
                        );
                    }
                    _ => "unknown global slot",
                };
                write!(f, "{name}")
            }
            Self::Icmp {
                family,
                icmp_type,
                slot,
            } => {
                let family = if family == FAMILY_V4 { "v4" } else { "v6" };
                write!(f, "{family} type {icmp_type} {}", slot_name(slot))
            }
        }
    }
}

/// The model's answer for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Why it is dropped, or would be in dry-run mode.
    pub reason: Option<DropReason>,
    /// (family, type, code) when an ICMP header was read.
    pub classified: Option<(u8, u8, u8)>,
    pub counted: Where,
    /// The rule that decided, in words (see [`rule`]).
    pub rule: Rule,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Pass => "PASS",
            Verdict::Drop => "DROP",
        };
        write!(f, "{verdict}, counted as {}", self.counted)?;
        if let Some((family, icmp_type, code)) = self.classified {
            let family = if family == FAMILY_V4 { "v4" } else { "v6" };
            write!(f, ", classified {family} {icmp_type}/{code}")?;
        }
        write!(f, " ({})", self.rule)
    }
}

/// What the parser found, before the policy is consulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not ICMP: passes untouched.
    NotIcmp(Rule),
    /// A non-first ICMP fragment: no type, judged by its addresses.
    IcmpFragment(Addresses),
    /// Dropped before a type could be read.
    Unclassified(DropReason, Rule),
    /// An ICMP message with its header read.
    Icmp(Message),
}

/// Where a non-first fragment comes from and goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses {
    pub source: IpAddr,
    pub destination: IpAddr,
    pub destination_mac: [u8; 6],
}

/// The facts of an ICMP or ICMPv6 message that the policy decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub family: u8,
    pub icmp_type: u8,
    pub code: u8,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub destination_mac: [u8; 6],
    /// IPv6 hop limit (the IPv4 TTL is never a condition).
    pub hop_limit: u8,
    /// The IPv6 packet has a Fragment header (first or atomic fragment).
    pub fragment_header: bool,
    /// Bytes 4..8 of the ICMP header: the MTU of a Packet Too Big.
    pub word: u32,
    /// The bytes after the fixed 8-byte header, within the IP payload: what an error
    /// embeds.
    pub data: Vec<u8>,
    /// The IP packet's length: the IPv4 total length, 40 plus the IPv6 payload length.
    pub ip_length: usize,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
/// Tags looked through.
const VLAN_TAGS: usize = 2;
/// Tags peeked through to learn what an over-deep stack carries.
const VLAN_PEEK: usize = 8;
/// IPv6 extension headers walked.
const EXTENSION_BOUND: usize = 8;

const PROTO_ICMP: u8 = 1;
const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_AH: u8 = 51;
const NEXT_ICMPV6: u8 = 58;
const NEXT_DESTINATION: u8 = 60;

/// Parses a frame as the spec's parsing rules read it.
pub fn parse(frame: &[u8]) -> Parsed {
    let Ok(ethernet) = Ethernet2HeaderSlice::from_slice(frame) else {
        // A runt: the stack drops it.
        return Parsed::NotIcmp(Rule::NotIp);
    };
    let destination_mac = ethernet.destination();
    let mut ether_type = ethernet.ether_type().0;
    let mut rest = &frame[ethernet.slice().len()..];
    let mut tags = 0;
    while is_vlan(ether_type) && tags < VLAN_PEEK {
        let Ok(tag) = SingleVlanHeaderSlice::from_slice(rest) else {
            return Parsed::Unclassified(DropReason::Malformed, Rule::RuntVlan);
        };
        ether_type = tag.ether_type().0;
        rest = &rest[tag.slice().len()..];
        tags += 1;
    }
    if is_vlan(ether_type) {
        return Parsed::Unclassified(DropReason::Malformed, Rule::VlanPastPeek);
    }
    if ether_type != ETHERTYPE_IPV4 && ether_type != ETHERTYPE_IPV6 {
        return Parsed::NotIcmp(Rule::NotIp);
    }
    if tags > VLAN_TAGS {
        return Parsed::Unclassified(DropReason::Malformed, Rule::IpUnderDeepVlan);
    }
    if ether_type == ETHERTYPE_IPV4 {
        parse_ipv4(rest, destination_mac)
    } else {
        parse_ipv6(rest, destination_mac)
    }
}

fn is_vlan(ether_type: u16) -> bool {
    ether_type == TPID_8021Q || ether_type == TPID_8021AD
}

fn parse_ipv4(packet: &[u8], destination_mac: [u8; 6]) -> Parsed {
    let Ok(header) = Ipv4HeaderSlice::from_slice(packet) else {
        return Parsed::Unclassified(DropReason::Invalid, Rule::Ipv4Header);
    };
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    // Ethernet padding after the datagram is normal; a datagram longer than the frame, or
    // shorter than its own header, is not.
    if total_len < header_len || total_len > packet.len() {
        return Parsed::Unclassified(DropReason::Invalid, Rule::Ipv4TotalLength);
    }
    if header.protocol().0 != PROTO_ICMP {
        return Parsed::NotIcmp(Rule::NotIcmp);
    }
    let fragment_offset = usize::from(header.fragments_offset().value()) * 8;
    if fragment_offset + total_len > 65_535 {
        return Parsed::Unclassified(DropReason::Invalid, Rule::PingOfDeath);
    }
    if fragment_offset != 0 {
        return Parsed::IcmpFragment(Addresses {
            source: header.source_addr().into(),
            destination: header.destination_addr().into(),
            destination_mac,
        });
    }
    // By hand: etherparse's Icmpv4Slice also wants timestamp messages (13/0, 14/0) to be
    // exactly 20 bytes, where the spec only asks for the fixed 8-byte header.
    let message = &packet[header_len..total_len];
    let Some(icmp) = message.first_chunk::<8>() else {
        return Parsed::Unclassified(DropReason::Invalid, Rule::IcmpShort);
    };
    Parsed::Icmp(Message {
        family: FAMILY_V4,
        icmp_type: icmp[0],
        code: icmp[1],
        source: header.source_addr().into(),
        destination: header.destination_addr().into(),
        destination_mac,
        hop_limit: header.ttl(),
        fragment_header: false,
        word: u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
        data: message[8..].to_vec(),
        ip_length: total_len,
    })
}

fn parse_ipv6(packet: &[u8], destination_mac: [u8; 6]) -> Parsed {
    let Ok(header) = Ipv6HeaderSlice::from_slice(packet) else {
        return Parsed::Unclassified(DropReason::Invalid, Rule::Ipv6Header);
    };
    let payload_len = usize::from(header.payload_length());
    let Some(payload) = packet[header.slice().len()..].get(..payload_len) else {
        return Parsed::Unclassified(DropReason::Invalid, Rule::Ipv6PayloadPastFrame);
    };
    if payload_len == 0 {
        return Parsed::Unclassified(DropReason::Invalid, Rule::Ipv6ZeroPayload);
    }
    let mut next = header.next_header().0;
    let mut cursor = 0;
    let mut fragment_header = false;
    let mut walked = 0;
    let mut seen: Vec<u8> = Vec::new();
    // RFC 8200 §4.1, checked once a header is known to lie inside the payload.
    let out_of_order = |seen: &[u8], next: u8| {
        let times = seen.iter().filter(|kind| **kind == next).count();
        match next {
            NEXT_HOP_BY_HOP => !seen.is_empty(),
            NEXT_DESTINATION => times >= 2,
            _ => times >= 1,
        }
    };
    while is_extension(next) {
        if walked == EXTENSION_BOUND {
            return Parsed::Unclassified(DropReason::Malformed, Rule::ExtChainTooLong);
        }
        walked += 1;
        // Every header must lie inside the payload before any of its fields is trusted.
        let rest = &payload[cursor..];
        match next {
            NEXT_FRAGMENT => {
                let Ok(fragment) = Ipv6FragmentHeaderSlice::from_slice(rest) else {
                    return Parsed::Unclassified(DropReason::Malformed, Rule::FragmentPastPayload);
                };
                if out_of_order(&seen, next) {
                    return Parsed::Unclassified(DropReason::Malformed, Rule::ExtOrder);
                }
                seen.push(next);
                if fragment.fragment_offset().value() != 0 {
                    return if fragment.next_header().0 == NEXT_ICMPV6 {
                        Parsed::IcmpFragment(Addresses {
                            source: header.source_addr().into(),
                            destination: header.destination_addr().into(),
                            destination_mac,
                        })
                    } else {
                        Parsed::NotIcmp(Rule::NonFirstFragment)
                    };
                }
                // A first fragment, or an atomic one (RFC 6946): what follows is classified.
                fragment_header = true;
                next = fragment.next_header().0;
                cursor += fragment.slice().len();
            }
            NEXT_AH => {
                // RFC 4302 §2.2: the length counts 32-bit words, minus 2.
                let Some(&units) = rest.get(1) else {
                    return Parsed::Unclassified(DropReason::Malformed, Rule::ExtPastPayload);
                };
                let len = (usize::from(units) + 2) * 4;
                if rest.len() < len {
                    return Parsed::Unclassified(DropReason::Malformed, Rule::ExtPastPayload);
                }
                if out_of_order(&seen, next) {
                    return Parsed::Unclassified(DropReason::Malformed, Rule::ExtOrder);
                }
                seen.push(next);
                next = rest[0];
                cursor += len;
            }
            _ => {
                let Ok(extension) = Ipv6RawExtHeaderSlice::from_slice(rest) else {
                    let why = if next == NEXT_ROUTING {
                        Rule::RoutingPastPayload
                    } else {
                        Rule::ExtPastPayload
                    };
                    return Parsed::Unclassified(DropReason::Malformed, why);
                };
                let body = extension.slice();
                if out_of_order(&seen, next) {
                    return Parsed::Unclassified(DropReason::Malformed, Rule::ExtOrder);
                }
                seen.push(next);
                if next == NEXT_ROUTING && body[2] == 0 && body[3] != 0 {
                    return Parsed::Unclassified(DropReason::Invalid, Rule::RoutingType0);
                }
                next = extension.next_header().0;
                cursor += body.len();
            }
        }
    }
    if next != NEXT_ICMPV6 {
        return Parsed::NotIcmp(Rule::NotIcmp);
    }
    let Ok(icmp) = Icmpv6Slice::from_slice(&payload[cursor..]) else {
        return Parsed::Unclassified(DropReason::Invalid, Rule::IcmpShort);
    };
    Parsed::Icmp(Message {
        family: FAMILY_V6,
        icmp_type: icmp.type_u8(),
        code: icmp.code_u8(),
        source: header.source_addr().into(),
        destination: header.destination_addr().into(),
        destination_mac,
        hop_limit: header.hop_limit(),
        fragment_header,
        word: u32::from_be_bytes(icmp.bytes5to8()),
        data: payload[cursor + 8..].to_vec(),
        ip_length: 40 + payload_len,
    })
}

fn is_extension(next: u8) -> bool {
    matches!(
        next,
        NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_FRAGMENT | NEXT_AH | NEXT_DESTINATION
    )
}

/// The verdict and counter of `frame` under `policy`, with `broadcasts` the directed
/// broadcasts of the attached interfaces.
pub fn verdict(frame: &[u8], policy: &Policy, broadcasts: &[Ipv4Addr]) -> Outcome {
    let dry_run = policy.mode == Mode::DryRun;
    let passed = |counted, rule| Outcome {
        verdict: Verdict::Pass,
        reason: None,
        classified: None,
        counted,
        rule,
    };
    match parse(frame) {
        Parsed::NotIcmp(why) => passed(Where::Global(global::NON_ICMP_PASSED), why),
        Parsed::IcmpFragment(addresses) => match decide_fragment(&addresses, policy, broadcasts) {
            (None, why) => passed(Where::Global(global::ICMP_FRAGMENT_PASSED), why),
            (Some(reason), why) => Outcome {
                verdict: if dry_run {
                    Verdict::Pass
                } else {
                    Verdict::Drop
                },
                reason: Some(reason),
                classified: None,
                counted: Where::Global(global::fragment_slot(reason, dry_run)),
                rule: why,
            },
        },
        Parsed::Unclassified(reason, why) => {
            let slot = match (reason, dry_run) {
                (DropReason::Malformed, false) => global::MALFORMED_DROPPED,
                (DropReason::Malformed, true) => global::MALFORMED_WOULD_DROP,
                (_, false) => global::INVALID_DROPPED,
                (_, true) => global::INVALID_WOULD_DROP,
            };
            Outcome {
                verdict: if dry_run {
                    Verdict::Pass
                } else {
                    Verdict::Drop
                },
                reason: Some(reason),
                classified: None,
                counted: Where::Global(slot),
                rule: why,
            }
        }
        Parsed::Icmp(message) => {
            let (reason, why) = decide(&message, policy, broadcasts);
            let slot = match (reason, dry_run) {
                (None, _) => SLOT_PASSED,
                (Some(reason), false) => drop_slot(reason),
                (Some(reason), true) => would_drop_slot(reason),
            };
            Outcome {
                verdict: if reason.is_some() && !dry_run {
                    Verdict::Drop
                } else {
                    Verdict::Pass
                },
                reason,
                classified: Some((message.family, message.icmp_type, message.code)),
                counted: Where::Icmp {
                    family: message.family,
                    icmp_type: message.icmp_type,
                    slot,
                },
                rule: why,
            }
        }
    }
}

/// Precedence for a non-first fragment, which has no type: martian source (invalid) → deny
/// list → broadcast or multicast destination (smurf) → the fragment budget (admitting).
fn decide_fragment(
    addresses: &Addresses,
    policy: &Policy,
    broadcasts: &[Ipv4Addr],
) -> (Option<DropReason>, Rule) {
    let smurf = &policy.smurf;
    let martian = match addresses.source {
        IpAddr::V4(source) => martian_v4(source, broadcasts),
        // No ND or MLD message is ever fragmented: `::` has no exception here.
        IpAddr::V6(source) => {
            source.is_multicast() || source.is_loopback() || source.is_unspecified()
        }
    };
    if smurf.martian_sources && martian {
        return (Some(DropReason::Invalid), Rule::FragmentMartian);
    }
    if listed(&addresses.source, policy) == Some(Listed::Deny) {
        return (Some(DropReason::DenyList), Rule::FragmentDenied);
    }
    let group = match addresses.destination {
        IpAddr::V4(destination) => {
            smurf.broadcast_echo && group_v4(destination, addresses.destination_mac, broadcasts)
        }
        IpAddr::V6(destination) => {
            smurf.multicast_echo_v6
                && destination.is_multicast()
                && destination.octets()[1] & 0x0f > 2
        }
    };
    if group {
        return (Some(DropReason::Smurf), Rule::FragmentGroup);
    }
    (None, Rule::FragmentBudget)
}

/// Precedence: martian source (invalid) → allow/deny list → smurf → type/code rule and its
/// condition → the rule's max_size (oversize) → rate limit (always admitting here; allowed sources skip it anyway).
fn decide(
    message: &Message,
    policy: &Policy,
    broadcasts: &[Ipv4Addr],
) -> (Option<DropReason>, Rule) {
    let smurf = &policy.smurf;
    if smurf.martian_sources && martian(message, broadcasts) {
        return (Some(DropReason::Invalid), Rule::Martian);
    }
    if listed(&message.source, policy) == Some(Listed::Deny) {
        return (Some(DropReason::DenyList), Rule::DenyList);
    }
    if message.family == FAMILY_V4
        && smurf.broadcast_echo
        && matches!(message.icmp_type, 8 | 13)
        && group_destination_v4(message, broadcasts)
    {
        return (Some(DropReason::Smurf), Rule::Smurf);
    }
    if let IpAddr::V6(destination) = message.destination
        && smurf.multicast_echo_v6
        && message.icmp_type == 128
        && destination.is_multicast()
        && destination.octets()[1] & 0x0f > 2
    {
        return (Some(DropReason::Smurf), Rule::SmurfV6);
    }
    let spec = policy.rule_for(message.family, message.icmp_type, message.code);
    if spec.action == Action::Drop {
        return (Some(DropReason::Policy), Rule::TypeDrop);
    }
    if let Some(failed) = failed_condition(message, broadcasts) {
        return (Some(DropReason::Invalid), failed);
    }
    if spec
        .max_size
        .is_some_and(|max| message.ip_length > usize::from(max))
    {
        return (Some(DropReason::Oversize), Rule::Oversize);
    }
    match spec.action {
        Action::Limit => (None, Rule::TypeLimit),
        _ => (None, Rule::TypePass),
    }
}

/// ICMP from a source no packet may carry (README "Martian sources").
fn martian(message: &Message, broadcasts: &[Ipv4Addr]) -> bool {
    match message.source {
        IpAddr::V4(source) => martian_v4(source, broadcasts),
        IpAddr::V6(source) => {
            // `::` is the source of router solicitations, DAD neighbour solicitations and
            // MLD reports (and dones) from a host without an address yet.
            source.is_multicast()
                || source.is_loopback()
                || (source.is_unspecified()
                    && !matches!(message.icmp_type, 131 | 132 | 133 | 135 | 143))
        }
    }
}

fn martian_v4(source: Ipv4Addr, broadcasts: &[Ipv4Addr]) -> bool {
    let first = source.octets()[0];
    first == 0
        || source.is_loopback()
        || source.is_multicast()
        || first >= 240
        || broadcasts.contains(&source)
}

/// An L2 group address, the limited broadcast, IPv4 multicast, or a directed broadcast.
fn group_destination_v4(message: &Message, broadcasts: &[Ipv4Addr]) -> bool {
    let IpAddr::V4(destination) = message.destination else {
        return false;
    };
    group_v4(destination, message.destination_mac, broadcasts)
}

fn group_v4(destination: Ipv4Addr, mac: [u8; 6], broadcasts: &[Ipv4Addr]) -> bool {
    mac[0] & 1 != 0
        || destination.is_broadcast()
        || destination.is_multicast()
        || broadcasts.contains(&destination)
}

/// The conditions the spec ties to a type whatever the rule's action — echo codes, ND,
/// router advertisement sources, MLD, Packet Too Big, and what an error must carry — and
/// the one that fails, if one does.
fn failed_condition(message: &Message, broadcasts: &[Ipv4Addr]) -> Option<Rule> {
    let (family, icmp_type) = (message.family, message.icmp_type);
    let echo = if family == FAMILY_V4 {
        matches!(icmp_type, 0 | 8)
    } else {
        matches!(icmp_type, 128 | 129)
    };
    if echo && message.code != 0 {
        return Some(Rule::EchoCode);
    }
    let error = if family == FAMILY_V4 {
        matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
    } else {
        icmp_type < 128
    };
    if error {
        if !embeds_header(message) {
            return Some(Rule::ErrorNoHeader);
        }
        let to_group = match message.destination {
            IpAddr::V4(_) => group_destination_v4(message, broadcasts),
            IpAddr::V6(destination) => destination.is_multicast(),
        };
        if to_group {
            return Some(Rule::ErrorToGroup);
        }
    }
    if family != FAMILY_V6 {
        return None;
    }
    match icmp_type {
        2 if message.word < 1280 => Some(Rule::PtbCondition),
        133..=136 | 141 | 142 if message.hop_limit != 255 => Some(Rule::NdCondition),
        // RFC 6980 §5 forbids the Fragment header in ND messages, atomic fragments included.
        133..=136 | 141 | 142 if message.fragment_header => Some(Rule::NdFragment),
        // RFC 4861 §6.1.2: a router advertisement comes from a link-local address.
        134 if !matches!(message.source, IpAddr::V6(source) if source.is_unicast_link_local()) => {
            Some(Rule::RaSource)
        }
        130..=132 | 143 if message.hop_limit != 1 || !link_local_or_unspecified(message) => {
            Some(Rule::MldCondition)
        }
        _ => None,
    }
}

/// An error's data holds a full IP header of its own family (IPv4: version 4, IHL at least
/// 5, the IHL's bytes; IPv6: version 6 and 40 bytes) and 8 bytes after it.
fn embeds_header(message: &Message) -> bool {
    let Some(&first) = message.data.first() else {
        return false;
    };
    if message.family == FAMILY_V4 {
        let header_len = usize::from(first & 0x0f) * 4;
        first >> 4 == 4 && header_len >= 20 && message.data.len() >= header_len + 8
    } else {
        first >> 4 == 6 && message.data.len() >= 48
    }
}

fn link_local_or_unspecified(message: &Message) -> bool {
    match message.source {
        IpAddr::V6(source) => source.is_unicast_link_local() || source.is_unspecified(),
        IpAddr::V4(_) => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listed {
    Allow,
    Deny,
}

/// The list whose most specific prefix holds `source`, if any.
fn listed(source: &IpAddr, policy: &Policy) -> Option<Listed> {
    let allowed = policy.allow.iter().map(|cidr| (cidr, Listed::Allow));
    let denied = policy.deny.iter().map(|cidr| (cidr, Listed::Deny));
    allowed
        .chain(denied)
        .filter(|(cidr, _)| contains(cidr, source))
        .max_by_key(|(cidr, _)| cidr.prefix)
        .map(|(_, list)| list)
}

fn contains(cidr: &Cidr, address: &IpAddr) -> bool {
    let (network, address) = match (cidr.addr, address) {
        (IpAddr::V4(network), IpAddr::V4(address)) => (
            u128::from(network.to_bits()) << 96,
            u128::from(address.to_bits()) << 96,
        ),
        (IpAddr::V6(network), IpAddr::V6(address)) => (network.to_bits(), address.to_bits()),
        _ => return false,
    };
    let mask = u128::MAX
        .checked_shl(128 - u32::from(cidr.prefix))
        .unwrap_or(0);
    network & mask == address & mask
}

/// Policies as the differential tests use them.
pub mod policies {
    use super::*;

    /// A limit no run can exhaust; see the module documentation.
    pub const HUGE: u32 = MAX_RATE;

    /// `policy` with every limit, the echo-reply ceiling, the error ceiling and the fragment
    /// budget raised to [`HUGE`], so that no limiter ever refuses during a run and the
    /// model's "limit admits" holds. Every policy of the differential tests goes through it:
    /// even pass-all has the error ceiling and the fragment budget.
    pub fn huge_limits(mut policy: Policy) -> Policy {
        let raise = |spec: &mut RuleSpec| {
            if let Some(limit) = spec.limit.as_mut() {
                *limit = Limit::new(HUGE, HUGE, limit.per);
            }
        };
        policy.types.values_mut().for_each(raise);
        policy.codes.values_mut().for_each(raise);
        policy.smurf.reply_ceiling = HUGE;
        policy.smurf.reply_ceiling_burst = HUGE;
        policy.errors = ErrorCeiling {
            rate: HUGE,
            burst: HUGE,
        };
        policy.fragments = FragmentBudget {
            rate: HUGE,
            burst: HUGE,
            total_rate: HUGE,
            total_burst: HUGE,
        };
        policy
    }

    /// The safe default profile with huge limits.
    pub fn default_profile() -> Policy {
        huge_limits(Policy::default_profile())
    }

    pub fn cidr(text: &str) -> Cidr {
        text.parse().expect("a valid prefix")
    }
}
