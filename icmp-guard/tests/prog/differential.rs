//! Differential verification: random frames, valid and broken, run through the real XDP
//! program (BPF_PROG_TEST_RUN, private maps) and through the reference model in
//! `tests/model`; the verdict and the counter each frame moved must agree, frame by frame,
//! and every frame the program passes must come back byte for byte.
//!
//! Generation uses a seeded SplitMix64 rather than proptest: every frame is checked under
//! five policies at once and the counters are audited across frames, which a per-case
//! property closure does not fit, and a printed seed reproduces a run exactly whatever the
//! dependency versions. A difference prints the frame in hex, how it was built, and both
//! outcomes.
//!
//! - `ICMP_GUARD_FUZZ_CASES` (default 5,000): frames to generate.
//! - `ICMP_GUARD_FUZZ_SEED` (decimal or 0x-hex; default fixed): the generator's seed.
//!
//! `cargo xtask fuzz --count N` runs this test in release mode with N frames.
//!
//! The policies give every limit a rate and burst of 100,000,000 (`model::policies`), so no
//! limiter refuses a packet during a run and the model may treat `limit` as pass.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr, time::Instant};

use icmp_guard::policy::{Limit, Mode, Per, Policy, RuleSpec};
use icmp_guard_common::{DropReason, FAMILY_V4, FAMILY_V6, SLOT_PASSED, drop_slot, global};

use crate::{
    frames::{self, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, Ext},
    harness::{XDP_DROP, XDP_PASS, with_rules},
    model::{
        self, Outcome, Where,
        policies::{self, HUGE, cidr},
        xdp::{Observed, Tracked, action_of},
    },
};

/// Directed broadcasts of the (imaginary) attached interfaces: 192.0.2.0/24,
/// 198.51.100.0/23 (so 198.51.100.255 is a host) and 203.0.113.0/25.
const BROADCASTS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(192, 0, 2, 255),
    Ipv4Addr::new(198, 51, 101, 255),
    Ipv4Addr::new(203, 0, 113, 127),
];

const DEFAULT_CASES: u64 = 5_000;
const DEFAULT_SEED: u64 = 0x1c3f_9a4d_2b70_e655;
/// Frames between two full counter audits.
const AUDIT_EVERY: u64 = 2_000;
/// Differences printed in full; the rest are only counted.
const PRINTED: usize = 12;

// ---------------------------------------------------------------------------------------
// Former divergences
// ---------------------------------------------------------------------------------------

/// Frames on which the program once disagreed with the model (found by `cargo xtask fuzz`,
/// fixed in the program since): each now has to agree, counters included.
#[allow(clippy::type_complexity)]
const FORMER_DIVERGENCES: &[(&str, &str, fn() -> Vec<u8>)] = &[
    (
        "mld-query-from-unspecified",
        "an MLD query (130) from :: passed; RFC 3810 §5.1.14 discards queries not from \
         link-local, only reports and dones may come from ::",
        || {
            frames::icmpv6_custom(
                frames::v6("::"),
                frames::v6("ff02::1"),
                1,
                &[],
                130,
                0,
                [0; 4],
            )
        },
    ),
    (
        "nd-in-atomic-fragment",
        "ND with hop limit 255 in an atomic fragment (offset 0, M = 0) passed; RFC 6980 §5 covers every Fragment header",
        || {
            let atomic = [Ext::fragment(0, false)];
            let (source, group) = (frames::v6("fe80::2"), frames::v6("ff02::1:ff00:1"));
            frames::icmpv6_custom(source, group, 255, &atomic, 135, 0, [0; 4])
        },
    ),
    (
        "ipv6-zero-payload-length",
        "IPv6 with payload length 0 (jumbogram) was accepted; check_ipv6 now rejects it",
        || {
            let mut packet = frames::ipv6(64, &[], 17, &frames::udp());
            packet[4..6].copy_from_slice(&[0, 0]);
            frames::ethernet(&[], ETH_P_IPV6, &packet)
        },
    ),
    (
        "non-first-fragment-header-past-payload",
        "a non-first Fragment header past the payload length passed as a fragment",
        || {
            let mut packet = frames::ipv6(64, &[Ext::fragment(1480, false)], 58, &[]);
            packet[4..6].copy_from_slice(&4u16.to_be_bytes());
            frames::ethernet(&[], ETH_P_IPV6, &packet)
        },
    ),
    (
        "routing-type-0-past-payload",
        "a routing header past the payload was counted invalid (type 0) before malformed",
        || {
            let message = frames::icmp(129, 0, &frames::echo_body());
            let mut packet = frames::ipv6(64, &[routing(0, 1)], 58, &message);
            packet[4..6].copy_from_slice(&4u16.to_be_bytes());
            frames::ethernet(&[], ETH_P_IPV6, &packet)
        },
    ),
];

// ---------------------------------------------------------------------------------------
// Random frames
// ---------------------------------------------------------------------------------------

/// SplitMix64: small, fast, and stable forever, so a printed seed reproduces a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is far below anything a test could notice).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    /// 0, 1, 2 or 3, each while a roll of 0 to 99 is at most its entry of `up_to`; past
    /// the last, 4 to 10.
    fn small_count(&mut self, up_to: [usize; 4]) -> usize {
        let roll = self.below(100);
        match up_to.iter().position(|&last| roll <= last) {
            Some(count) => count,
            None => self.range(4, 10),
        }
    }

    fn percent(&mut self, chance: usize) -> bool {
        self.below(100) < chance
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// One of `items`, or (as often as any one of them) a value from `other`.
    fn pick_or<T: Copy>(&mut self, items: &[T], other: impl FnOnce(&mut Self) -> T) -> T {
        let index = self.below(items.len() + 1);
        items.get(index).copied().unwrap_or_else(|| other(self))
    }
}

/// A generated frame and how it was built.
struct Case {
    frame: Vec<u8>,
    recipe: String,
}

const DESTINATION_MACS: [[u8; 6]; 5] = [
    frames::GUARD_MAC,
    [0xff; 6],
    [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
    [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
    [0x03, 0x00, 0x00, 0x00, 0x00, 0x07],
];

/// Sources and destinations worth drawing: documentation ranges (some on the lists of the
/// policies below), martians, broadcasts (limited, directed, and a /23 host ending in
/// .255), multicast, link-local.
const V4_ADDRESSES: [[u8; 4]; 24] = [
    [192, 0, 2, 1],
    [192, 0, 2, 2],
    [192, 0, 2, 10],
    [192, 0, 2, 66],
    [192, 0, 2, 255],
    [198, 51, 100, 7],
    [198, 51, 100, 66],
    [198, 51, 100, 255],
    [198, 51, 101, 255],
    [203, 0, 113, 10],
    [203, 0, 113, 99],
    [203, 0, 113, 127],
    [0, 0, 0, 0],
    [0, 1, 2, 3],
    [127, 0, 0, 1],
    [224, 0, 0, 1],
    [239, 255, 255, 250],
    [240, 0, 0, 1],
    [255, 255, 255, 255],
    [169, 254, 1, 1],
    [10, 0, 0, 1],
    [223, 255, 255, 255],
    [100, 64, 0, 1],
    [8, 8, 8, 8],
];

const V6_ADDRESSES: [&str; 24] = [
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8::10",
    "2001:db8::66",
    "2001:db8:bad::1",
    "2001:db8:bad::10",
    "2001:db8:1::1",
    "fe80::1",
    "febf::1",
    "fec0::1",
    "::",
    "::1",
    "::2",
    "ff02::1",
    "ff02::1:ff00:1",
    "ff01::1",
    "ff05::1",
    "ff0e::1",
    "ff00::1",
    "ff12::1",
    "ff15::1",
    "::ffff:192.0.2.1",
    "64:ff9b::c000:201",
    "2606:4700::1111",
];

const V4_TYPES: [u8; 24] = [
    0, 0, 3, 3, 4, 5, 8, 8, 8, 9, 10, 11, 11, 12, 13, 13, 14, 15, 17, 18, 30, 40, 42, 255,
];

const V6_TYPES: [u8; 32] = [
    1, 1, 2, 2, 3, 4, 100, 101, 127, 128, 128, 128, 129, 129, 130, 131, 132, 133, 134, 135, 135,
    136, 137, 138, 139, 140, 141, 142, 143, 148, 200, 255,
];

fn v4_address(rng: &mut Rng) -> [u8; 4] {
    if rng.percent(10) {
        [rng.byte(), rng.byte(), rng.byte(), rng.byte()]
    } else {
        rng.pick(&V4_ADDRESSES)
    }
}

fn v6_address(rng: &mut Rng) -> [u8; 16] {
    if rng.percent(10) {
        let mut address = [0u8; 16];
        address.iter_mut().for_each(|byte| *byte = rng.byte());
        address
    } else {
        frames::v6(rng.pick(&V6_ADDRESSES))
    }
}

fn code(rng: &mut Rng) -> u8 {
    match rng.below(10) {
        0..=4 => 0,
        5..=7 => rng.range(1, 5) as u8,
        _ => rng.byte(),
    }
}

fn hop_limit(rng: &mut Rng) -> u8 {
    rng.pick_or(&[255, 255, 1, 1, 64, 254, 0, 2, 128], Rng::byte)
}

/// An ICMP message: the 4 type-specific bytes (the MTU of a Packet Too Big) and some data;
/// now and then shorter than the fixed 8-byte header.
fn icmp_message(
    rng: &mut Rng,
    family: u8,
    icmp_type: u8,
    code: u8,
    recipe: &mut String,
) -> Vec<u8> {
    let word = if icmp_type == 2 && rng.percent(80) {
        let mtu: u32 = rng.pick_or(&[0, 1279, 1280, 1281, 1500, 9000, 65535], |rng| {
            rng.next() as u32
        });
        mtu.to_be_bytes()
    } else {
        [rng.byte(), rng.byte(), rng.byte(), rng.byte()]
    };
    let mut rest = word.to_vec();
    let error = if family == FAMILY_V4 {
        matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
    } else {
        icmp_type < 128
    };
    if error && rng.percent(70) {
        rest.extend(embedded_header(rng, family, recipe));
    } else {
        let data_len = rng.below(49);
        rest.extend(rng.bytes(data_len));
    }
    let mut message = frames::icmp(icmp_type, code, &rest);
    let _ = write!(recipe, " icmp {icmp_type}/{code} word {word:02x?}");
    if rng.percent(4) {
        let len = rng.below(8);
        message.truncate(len);
        let _ = write!(recipe, " cut to {len} bytes");
    }
    message
}

/// What an ICMP error embeds: an IP header of its family (now and then of the other, or
/// with IHL below 5 or options) and a few bytes after it, sometimes one byte short.
fn embedded_header(rng: &mut Rng, family: u8, recipe: &mut String) -> Vec<u8> {
    let v4 = if rng.percent(90) {
        family == FAMILY_V4
    } else {
        family != FAMILY_V4
    };
    let mut header = if v4 {
        let ihl = rng.pick_or(&[5, 5, 5, 6, 15, 4], |rng| rng.range(0, 15) as u8);
        let mut header = vec![0u8; usize::from(ihl.max(1)) * 4];
        header[0] = 0x40 | ihl;
        header
    } else {
        let mut header = vec![0u8; 40];
        header[0] = 0x60;
        header
    };
    let after = rng.pick_or(&[8, 8, 7, 0, 20], |rng| rng.below(30));
    header.extend(rng.bytes(after));
    let _ = write!(
        recipe,
        " embeds {} header {:#04x} + {after}",
        if v4 { "v4" } else { "v6" },
        header[0]
    );
    header
}

/// IPv4 options padded to 32 bits: IHL 5 half the time, else 6 to 15.
fn ipv4_options(rng: &mut Rng) -> Vec<u8> {
    if rng.percent(50) {
        return Vec::new();
    }
    let words = rng.range(1, 10);
    match rng.below(3) {
        0 => vec![1; words * 4],
        // Bytes that look like ICMP types where a fixed-offset parser would read one.
        1 => vec![rng.pick(&[0u8, 5, 8, 13]); words * 4],
        _ => rng.bytes(words * 4),
    }
}

/// Flags and fragment offset: whole datagrams, first, non-first and near-overflow
/// fragments.
fn ipv4_fragment_field(rng: &mut Rng) -> u16 {
    match rng.below(100) {
        0..=69 => rng.pick(&[0, 0x4000]),
        70..=79 => 0x2000,
        80..=91 => (rng.u16() & 0x1fff).max(1) | rng.pick(&[0, 0x2000]),
        _ => (0x1ff0 + rng.below(16) as u16) | rng.pick(&[0, 0x2000]),
    }
}

fn ipv4_packet(rng: &mut Rng, protocol: u8, payload: &[u8], recipe: &mut String) -> Vec<u8> {
    let options = ipv4_options(rng);
    let fragment = ipv4_fragment_field(rng);
    let mut packet = frames::ipv4(protocol, &options, fragment, payload);
    let (source, destination) = (v4_address(rng), v4_address(rng));
    packet[8] = hop_limit(rng);
    packet[12..16].copy_from_slice(&source);
    packet[16..20].copy_from_slice(&destination);
    let header_len = 20 + options.len();
    packet[10..12].copy_from_slice(&[0, 0]);
    let sum = frames::checksum(&packet[..header_len]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    let _ = write!(
        recipe,
        " ipv4 proto {protocol} ihl {} frag {fragment:#06x} ttl {} {:?} > {:?}",
        header_len / 4,
        packet[8],
        Ipv4Addr::from(source),
        Ipv4Addr::from(destination)
    );
    packet
}

/// A chain of 0 to 10 extension headers of every kind we walk: hop-by-hop and destination
/// options, routing (type 0 with and without segments left, others), fragment (first,
/// non-first, atomic) and AH (including the 8-byte one a zero length field describes).
fn extension_chain(rng: &mut Rng, recipe: &mut String) -> Vec<Ext> {
    if rng.percent(30) {
        return ordered_chain(rng, recipe);
    }
    let count = rng.small_count([44, 64, 76, 84]);
    let mut chain = Vec::new();
    for _ in 0..count {
        let ext = match rng.below(6) {
            0 => Ext::options(0, rng.range(1, 3)),
            1 => Ext::options(60, rng.range(1, 3)),
            2 => {
                let routing_type = rng.pick_or(&[0, 0, 2, 3, 4], Rng::byte);
                let segments_left = rng.pick_or(&[0, 1], Rng::byte);
                let mut body = vec![routing_type, segments_left, 0, 0, 0, 0];
                body.extend(vec![0; 8 * rng.below(3)]);
                Ext { kind: 43, body }
            }
            3 => match rng.below(3) {
                0 => Ext::fragment(0, true),
                1 => Ext::fragment(0, false),
                _ => Ext::fragment((rng.u16() & !7).max(8), rng.percent(50)),
            },
            4 if rng.percent(15) => Ext {
                kind: 51,
                body: vec![0; 6],
            },
            4 => Ext::ah(rng.range(0, 6)),
            _ => Ext::options(rng.pick(&[0, 60]), 1),
        };
        let _ = write!(recipe, " ext {}", ext.kind);
        if ext.kind == 43 || ext.kind == 44 {
            let _ = write!(recipe, "{:02x?}", &ext.body[..2]);
        }
        chain.push(ext);
    }
    chain
}

/// A chain in RFC 8200 §4.1's order, each kind present or not: hop-by-hop, destination
/// options, routing, fragment, AH, destination options.
fn ordered_chain(rng: &mut Rng, recipe: &mut String) -> Vec<Ext> {
    let mut chain = Vec::new();
    if rng.percent(40) {
        chain.push(Ext::options(0, rng.range(1, 2)));
    }
    if rng.percent(30) {
        chain.push(Ext::options(60, 1));
    }
    if rng.percent(30) {
        chain.push(routing(rng.pick(&[0, 2]), rng.pick(&[0, 0, 1])));
    }
    if rng.percent(40) {
        chain.push(match rng.below(3) {
            0 => Ext::fragment(0, true),
            1 => Ext::fragment(0, false),
            _ => Ext::fragment((rng.u16() & !7).max(8), rng.percent(50)),
        });
    }
    if rng.percent(25) {
        chain.push(Ext::ah(rng.range(0, 4)));
    }
    if rng.percent(30) {
        chain.push(Ext::options(60, rng.range(1, 2)));
    }
    recipe.push_str(" ordered");
    for ext in &chain {
        let _ = write!(recipe, " ext {}", ext.kind);
    }
    chain
}

fn ipv6_packet(rng: &mut Rng, upper: u8, payload: &[u8], recipe: &mut String) -> Vec<u8> {
    let chain = extension_chain(rng, recipe);
    let hop_limit = hop_limit(rng);
    let mut packet = frames::ipv6(hop_limit, &chain, upper, payload);
    let (source, destination) = (v6_address(rng), v6_address(rng));
    packet[8..24].copy_from_slice(&source);
    packet[24..40].copy_from_slice(&destination);
    let _ = write!(
        recipe,
        " ipv6 next {upper} hop {hop_limit} {} > {}",
        std::net::Ipv6Addr::from(source),
        std::net::Ipv6Addr::from(destination)
    );
    packet
}

fn transport_payload(rng: &mut Rng) -> Vec<u8> {
    match rng.below(3) {
        0 => frames::tcp_syn(),
        1 => frames::udp(),
        _ => {
            let len = rng.below(40);
            rng.bytes(len)
        }
    }
}

/// An ICMP message of one of `types` (one time in five, any type at all).
fn random_icmp(rng: &mut Rng, family: u8, types: &[u8], recipe: &mut String) -> Vec<u8> {
    let icmp_type = if rng.percent(20) {
        rng.byte()
    } else {
        rng.pick(types)
    };
    let code = code(rng);
    icmp_message(rng, family, icmp_type, code, recipe)
}

/// The EtherType and the bytes after the tags.
fn network_layer(rng: &mut Rng, recipe: &mut String) -> (u16, Vec<u8>) {
    match rng.below(100) {
        0..=37 => {
            let message = random_icmp(rng, FAMILY_V4, &V4_TYPES, recipe);
            (ETH_P_IPV4, ipv4_packet(rng, 1, &message, recipe))
        }
        38..=75 => {
            let message = random_icmp(rng, FAMILY_V6, &V6_TYPES, recipe);
            (ETH_P_IPV6, ipv6_packet(rng, 58, &message, recipe))
        }
        76..=83 => {
            let protocol = rng.pick_or(&[6, 17, 2, 47, 50, 51, 58, 132, 0, 255], Rng::byte);
            let payload = transport_payload(rng);
            (ETH_P_IPV4, ipv4_packet(rng, protocol, &payload, recipe))
        }
        84..=91 => {
            let next = rng.pick_or(&[6, 17, 59, 1, 47, 50, 132], Rng::byte);
            let payload = transport_payload(rng);
            (ETH_P_IPV6, ipv6_packet(rng, next, &payload, recipe))
        }
        92..=94 => {
            recipe.push_str(" arp");
            (ETH_P_ARP, frames::arp()[14..].to_vec())
        }
        95..=97 => {
            let ether_type = rng.pick_or(&[0x88b5, 0x88cc, 0x8847, 0x86dc, 0x0801], Rng::u16);
            let len = rng.below(60);
            let _ = write!(recipe, " ethertype {ether_type:#06x}");
            (ether_type, rng.bytes(len))
        }
        _ => {
            // One family's packet under the other's EtherType.
            let message = icmp_message(rng, FAMILY_V4, 8, 0, recipe);
            if rng.percent(50) {
                recipe.push_str(" (under the IPv4 EtherType)");
                (ETH_P_IPV4, ipv6_packet(rng, 58, &message, recipe))
            } else {
                recipe.push_str(" (under the IPv6 EtherType)");
                (ETH_P_IPV6, ipv4_packet(rng, 1, &message, recipe))
            }
        }
    }
}

fn vlan_stack(rng: &mut Rng, recipe: &mut String) -> Vec<(u16, u16)> {
    let depth = rng.small_count([54, 69, 84, 92]);
    let tags: Vec<(u16, u16)> = (0..depth)
        .map(|_| (rng.pick(&[ETH_P_8021Q, ETH_P_8021AD]), rng.u16()))
        .collect();
    if !tags.is_empty() {
        let tpids: Vec<String> = tags.iter().map(|(tpid, _)| format!("{tpid:x}")).collect();
        let _ = write!(recipe, " vlan [{}]", tpids.join(","));
    }
    tags
}

/// Damage done to a built frame: truncation, flipped bytes, lying length fields, trailing
/// bytes (Ethernet padding or junk), a rewritten version/IHL byte or extension length.
fn mutate(rng: &mut Rng, frame: &mut Vec<u8>, ip: usize, ether_type: u16, recipe: &mut String) {
    for _ in 0..rng.range(1, 3) {
        match rng.below(7) {
            0 => {
                let low = if rng.percent(60) && ip < frame.len() {
                    ip
                } else {
                    14
                };
                let len = rng.range(low.max(14), frame.len());
                frame.truncate(len);
                let _ = write!(recipe, " | cut to {len}");
            }
            1 => {
                for _ in 0..rng.range(1, 3) {
                    let span = if rng.percent(70) {
                        frame.len().min(ip + 80)
                    } else {
                        frame.len()
                    };
                    let at = rng.below(span);
                    let flip = rng.byte().max(1);
                    frame[at] ^= flip;
                    let _ = write!(recipe, " | byte {at} ^= {flip:#04x}");
                }
            }
            2 if ether_type == ETH_P_IPV4 && frame.len() >= ip + 4 => {
                let actual = (frame.len() - ip) as u16;
                let value = rng.pick_or(
                    &[
                        0,
                        19,
                        20,
                        actual.wrapping_sub(1),
                        actual.wrapping_add(1),
                        actual,
                        u16::MAX,
                    ],
                    Rng::u16,
                );
                frame[ip + 2..ip + 4].copy_from_slice(&value.to_be_bytes());
                let _ = write!(recipe, " | total length {value}");
            }
            2 if ether_type == ETH_P_IPV6 && frame.len() >= ip + 6 => {
                let actual = frame.len().saturating_sub(ip + 40) as u16;
                let value = rng.pick_or(
                    &[
                        0,
                        actual.wrapping_sub(1),
                        actual.wrapping_add(1),
                        actual.wrapping_sub(4),
                        actual.wrapping_sub(8),
                        u16::MAX,
                    ],
                    Rng::u16,
                );
                frame[ip + 4..ip + 6].copy_from_slice(&value.to_be_bytes());
                let _ = write!(recipe, " | payload length {value}");
            }
            3 => {
                let len = rng.range(1, 40);
                let junk = if rng.percent(50) {
                    vec![0; len]
                } else {
                    rng.bytes(len)
                };
                frame.extend(junk);
                let _ = write!(recipe, " | {len} trailing bytes");
            }
            4 if frame.len() > ip => {
                let value = if rng.percent(50) {
                    (frame[ip] & 0xf0) | rng.below(16) as u8
                } else {
                    rng.byte()
                };
                frame[ip] = value;
                let _ = write!(recipe, " | version/ihl {value:#04x}");
            }
            5 if ether_type == ETH_P_IPV6 && frame.len() > ip + 41 => {
                let value = rng.pick_or(&[0, 1, 2, 255], Rng::byte);
                frame[ip + 41] = value;
                let _ = write!(recipe, " | first extension length {value}");
            }
            _ => {}
        }
    }
}

fn generate(rng: &mut Rng) -> Case {
    let mut recipe = String::new();
    let destination_mac = if rng.percent(10) {
        let mut mac = [0u8; 6];
        mac.iter_mut().for_each(|byte| *byte = rng.byte());
        mac
    } else {
        rng.pick(&DESTINATION_MACS)
    };
    let _ = write!(recipe, "to {destination_mac:02x?}");
    let tags = vlan_stack(rng, &mut recipe);
    let (ether_type, packet) = network_layer(rng, &mut recipe);
    let mut frame = frames::ethernet(&tags, ether_type, &packet);
    frame[..6].copy_from_slice(&destination_mac);
    if rng.percent(30) {
        mutate(
            rng,
            &mut frame,
            14 + 4 * tags.len(),
            ether_type,
            &mut recipe,
        );
    }
    Case { frame, recipe }
}

// ---------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------

fn limit(per: Per) -> RuleSpec {
    RuleSpec::limit(Limit::new(HUGE, HUGE, per))
}

/// Per-code exceptions on both families, type rules changed from the default (some with a
/// max_size near the generated frames' sizes, so that both sides of it are met), and
/// allow/deny lists whose most specific prefix must win.
fn rules_and_lists() -> Policy {
    let mut policy = Policy::default_profile();
    let drop = RuleSpec::DROP;
    let pass = RuleSpec::PASS;
    let rules: [(u8, u8, Option<u8>, RuleSpec); 16] = [
        (FAMILY_V4, 3, Some(1), drop),
        (FAMILY_V4, 3, Some(13), drop),
        (FAMILY_V4, 11, Some(1), drop),
        (FAMILY_V4, 13, None, pass.with_max_size(Some(60))),
        (FAMILY_V4, 13, Some(1), drop),
        (
            FAMILY_V4,
            8,
            None,
            limit(Per::Prefix).with_max_size(Some(64)),
        ),
        (FAMILY_V4, 8, Some(7), drop),
        (FAMILY_V4, 0, None, limit(Per::Global)),
        (FAMILY_V4, 5, Some(1), pass.with_max_size(Some(70))),
        (FAMILY_V6, 1, Some(4), drop),
        (FAMILY_V6, 128, Some(1), drop),
        (
            FAMILY_V6,
            135,
            None,
            limit(Per::Source).with_max_size(Some(90)),
        ),
        (FAMILY_V6, 136, Some(0), drop),
        (FAMILY_V6, 143, None, drop),
        (FAMILY_V6, 2, Some(0), limit(Per::Global)),
        (FAMILY_V6, 137, None, pass.with_max_size(Some(80))),
    ];
    policy = with_rules(policy, &rules);
    policy.allow = [
        "192.0.2.10/32",
        "198.51.100.0/24",
        "203.0.113.10/32",
        "2001:db8::10/128",
        "2001:db8:bad::10/128",
        "fe80::/10",
    ]
    .map(cidr)
    .to_vec();
    policy.deny = [
        "198.51.100.66/32",
        "203.0.113.0/24",
        "10.0.0.0/8",
        "2001:db8:bad::/48",
        "ff00::/8",
    ]
    .map(cidr)
    .to_vec();
    policies::huge_limits(policy)
}

/// Every type passes, every smurf and martian check is off, and the lists deny all but the
/// documentation ranges (/0 prefixes), with single hosts carved back out.
fn open_lists_checks_off() -> Policy {
    let mut policy = Policy::pass_all();
    policy.smurf.broadcast_echo = false;
    policy.smurf.multicast_echo_v6 = false;
    policy.smurf.martian_sources = false;
    policy.allow = ["192.0.2.0/24", "2001:db8::/32", "fe80::/10", "::/128"]
        .map(cidr)
        .to_vec();
    policy.deny = ["0.0.0.0/0", "192.0.2.66/32", "::/0", "2001:db8::66/128"]
        .map(cidr)
        .to_vec();
    policies::huge_limits(policy)
}

fn dry_run() -> Policy {
    let mut policy = policies::default_profile();
    policy.mode = Mode::DryRun;
    policy.allow = vec![cidr("203.0.113.10/32")];
    policy.deny = vec![cidr("203.0.113.0/24"), cidr("2001:db8:bad::/48")];
    policy
}

fn all_policies() -> Vec<(&'static str, Policy)> {
    vec![
        ("default", policies::default_profile()),
        ("pass-all", policies::huge_limits(Policy::pass_all())),
        ("rules-and-lists", rules_and_lists()),
        ("open-lists-checks-off", open_lists_checks_off()),
        ("dry-run", dry_run()),
    ]
}

// ---------------------------------------------------------------------------------------
// Comparing
// ---------------------------------------------------------------------------------------

/// One policy, loaded into its own copy of the program.
struct Lane {
    name: &'static str,
    policy: Policy,
    guard: Tracked,
}

#[derive(Default)]
struct Report {
    frames: u64,
    comparisons: u64,
    differences: u64,
    printed: Vec<String>,
    /// Comparisons whose model verdict was `oversize`: the caps must be met.
    oversize: u64,
}

fn describe(lane: &str, case: &Case, model: &Outcome, kernel: &Observed) -> String {
    format!(
        "policy {lane}: frame {}\n  built as: {}\n  model:  {model}\n  kernel: {kernel}",
        hex(&case.frame),
        case.recipe
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Lane {
    fn check(&mut self, case: &Case, report: &mut Report) {
        let model = model::verdict(&case.frame, &self.policy, &BROADCASTS);
        let kernel = self.guard.run(&case.frame, model.counted);
        report.comparisons += 1;
        if model.reason == Some(DropReason::Oversize) {
            report.oversize += 1;
        }
        if kernel.action == action_of(model.verdict)
            && kernel.counted == [model.counted]
            && !kernel.modified
        {
            return;
        }
        let text = describe(self.name, case, &model, &kernel);
        report.differences += 1;
        if report.printed.len() < PRINTED {
            report.printed.push(text);
        }
    }

    fn audit(&mut self, report: &mut Report) {
        for (at, kernel, shadow) in self.guard.audit() {
            report.differences += 1;
            if report.printed.len() < PRINTED {
                report.printed.push(format!(
                    "policy {}: counter {at} is {kernel:?} where the frames so far add up to \
                     {shadow:?} (a frame counted twice?)",
                    self.name
                ));
            }
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("{name}={text} is not a number"))
}

#[test]
fn xdp_program_agrees_with_the_model_on_random_frames() {
    root_or_skip!("xdp_program_agrees_with_the_model_on_random_frames");
    let cases = env_number("ICMP_GUARD_FUZZ_CASES", DEFAULT_CASES);
    let seed = env_number("ICMP_GUARD_FUZZ_SEED", DEFAULT_SEED);
    let started = Instant::now();
    // One load after another: each runs the verifier and fills preallocated LRU maps, and
    // five at once ran the 512 MB guests of the kernel matrix out of memory.
    let mut lanes: Vec<Lane> = all_policies()
        .into_iter()
        .map(|(name, policy)| Lane {
            name,
            guard: Tracked::load(&policy, &BROADCASTS),
            policy,
        })
        .collect();
    let loaded = started.elapsed();
    let mut rng = Rng(seed);
    let mut report = Report::default();
    for index in 0..cases {
        let case = generate(&mut rng);
        for lane in &mut lanes {
            lane.check(&case, &mut report);
        }
        report.frames += 1;
        if (index + 1) % AUDIT_EVERY == 0 {
            lanes.iter_mut().for_each(|lane| lane.audit(&mut report));
        }
    }
    lanes.iter_mut().for_each(|lane| lane.audit(&mut report));

    println!(
        "differential: {} frames compared under {} policies ({} comparisons), {} differences; \
         seed {seed:#x}; {:.1} s ({:.1} s loading); {} oversize",
        report.frames,
        lanes.len(),
        report.comparisons,
        report.differences,
        started.elapsed().as_secs_f64(),
        loaded.as_secs_f64(),
        report.oversize,
    );
    assert!(
        report.differences == 0,
        "{} differences between the XDP program and the model (seed {seed:#x}); the first:\n{}",
        report.differences,
        report.printed.join("\n")
    );
    assert!(
        cases < 1000 || report.oversize > 0,
        "no frame met a max_size of the rules-and-lists policy: the generator no longer reaches it"
    );
}

// ---------------------------------------------------------------------------------------
// Every parsing rule, both ways
// ---------------------------------------------------------------------------------------

/// What the spec says must happen to a frame.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Pass(Where),
    Drop(DropReason, Where),
}

fn passed(family: u8, icmp_type: u8) -> Where {
    Where::Icmp {
        family,
        icmp_type,
        slot: SLOT_PASSED,
    }
}

fn policy_drop(family: u8, icmp_type: u8) -> Expect {
    Expect::Drop(
        DropReason::Policy,
        Where::Icmp {
            family,
            icmp_type,
            slot: drop_slot(DropReason::Policy),
        },
    )
}

const NON_ICMP: Expect = Expect::Pass(Where::Global(global::NON_ICMP_PASSED));
const FRAGMENT: Expect = Expect::Pass(Where::Global(global::ICMP_FRAGMENT_PASSED));
const INVALID: Expect = Expect::Drop(DropReason::Invalid, Where::Global(global::INVALID_DROPPED));
const MALFORMED: Expect = Expect::Drop(
    DropReason::Malformed,
    Where::Global(global::MALFORMED_DROPPED),
);

/// An IPv4 ICMP frame from a documentation host, with options and fragment field.
fn v4(options: &[u8], fragment: u16, icmp_type: u8) -> Vec<u8> {
    let message = frames::icmp(icmp_type, 0, &frames::echo_body());
    frames::ethernet(
        &[],
        ETH_P_IPV4,
        &frames::ipv4(1, options, fragment, &message),
    )
}

/// An ICMPv6 frame behind `chain`, hop limit 64.
fn v6(chain: &[Ext], icmp_type: u8) -> Vec<u8> {
    frames::icmpv6_frame(chain, icmp_type, 0)
}

fn tagged(tags: &[(u16, u16)], frame: &[u8]) -> Vec<u8> {
    let ether_type = u16::from_be_bytes([frame[12], frame[13]]);
    frames::ethernet(tags, ether_type, &frame[14..])
}

fn edit(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

fn routing(routing_type: u8, segments_left: u8) -> Ext {
    Ext {
        kind: 43,
        body: vec![routing_type, segments_left, 0, 0, 0, 0],
    }
}

/// The rows of the table: (parsing rule, frame, what must happen). Under the default
/// profile, echo replies (0, 129) pass and redirects (5, 137) are dropped by policy, so a
/// redirect that is dropped proves its header was found where the rule says, and an echo
/// reply that passes proves nothing in front of it was mistaken for a type.
#[rustfmt::skip]
fn parsing_rule_rows() -> Vec<(&'static str, &'static str, Vec<u8>, Expect)> {
    // What each row is about, in the words of the specification's parsing rules.
    let vlan = "up to 2 VLAN tags (802.1Q, 802.1ad); deeper stacks carrying IP are dropped";
    let ihl = "IPv4: honour IHL (options)";
    let header = "IPv4: IHL < 5, version mismatch, total length inconsistent with the frame → invalid";
    let non_first = "IPv4: non-first fragments are never read as ICMP";
    let q = (ETH_P_8021Q, 10);
    let death = "IPv4: ping of death (offset·8 + length > 65535) → drop";
    let walk = "IPv6: extension headers walked (hop-by-hop, routing, destination, fragment, AH)";
    let bound = "IPv6: a chain longer than the bound, or a header past the packet → dropped";
    let non_first6 = "IPv6: non-first fragments are not classified as ICMPv6";
    let ad = (ETH_P_8021AD, 100);
    let not_icmp = "everything that is not ICMP passes untouched, byte for byte";
    let short = "ICMP shorter than its fixed 8-byte header → invalid";
    let rh0 = "IPv6: routing header type 0 with segments left → invalid (RFC 5095)";
    let ipv6_header = "IPv6: version mismatch, payload length past the frame → invalid";
    let reply = v4(&[], 0, 0);
    let redirect = v4(&[], 0, 5);
    let reply6 = v6(&[], 129);
    let arp = frames::arp();
    let eight = || (0..8).map(|_| Ext::options(60, 1)).collect::<Vec<_>>();
    let nine = || (0..9).map(|_| Ext::options(60, 1)).collect::<Vec<_>>();
    let longest = || {
        vec![
            Ext::options(0, 1),
            Ext::options(60, 1),
            routing(2, 0),
            Ext::fragment(0, false),
            Ext::ah(1),
            Ext::options(60, 1),
        ]
    };
    let order = "IPv6: extension headers in RFC 8200 §4.1's order (hop-by-hop first, destination options at most twice, others once)";
    let udp4 = |fragment| {
        frames::ethernet(
            &[],
            ETH_P_IPV4,
            &frames::ipv4(17, &[], fragment, &frames::udp()),
        )
    };
    let len = reply.len() - 14;
    vec![
        (vlan, "echo reply under one 802.1Q tag", tagged(&[q], &reply), Expect::Pass(passed(FAMILY_V4, 0))),
        (vlan, "echo reply under one 802.1ad tag", tagged(&[ad], &reply), Expect::Pass(passed(FAMILY_V4, 0))),
        (vlan, "ICMPv6 echo reply under QinQ", tagged(&[ad, q], &reply6), Expect::Pass(passed(FAMILY_V6, 129))),
        (vlan, "redirect under 802.1Q in 802.1Q: looked through", tagged(&[q, q], &redirect), policy_drop(FAMILY_V4, 5)),
        (vlan, "echo reply under three tags", tagged(&[ad, q, q], &reply), MALFORMED),
        (vlan, "ICMPv6 echo reply under three 802.1ad tags", tagged(&[ad, ad, ad], &reply6), MALFORMED),
        (vlan, "UDP under three tags (IP, though not ICMP)", tagged(&[ad, q, q], &udp4(0)), MALFORMED),
        (vlan, "ARP under three tags", tagged(&[ad, q, q], &arp), NON_ICMP),
        (vlan, "ARP under eight tags", tagged(&[q; 8], &arp), NON_ICMP),
        (vlan, "ARP under nine tags: deeper than the peek", tagged(&[q; 9], &arp), MALFORMED),
        (vlan, "a truncated tag", frames::ethernet(&[], ETH_P_8021Q, &[0, 10]), MALFORMED),
        (ihl, "echo reply behind IHL 15, options full of 5s", v4(&[5; 40], 0, 0), Expect::Pass(passed(FAMILY_V4, 0))),
        (ihl, "echo reply behind IHL 6, options of 8s", v4(&[8; 4], 0, 0), Expect::Pass(passed(FAMILY_V4, 0))),
        (ihl, "redirect behind IHL 6, options of 0s", v4(&[0; 4], 0, 5), policy_drop(FAMILY_V4, 5)),
        (ihl, "redirect behind IHL 15", v4(&[1; 40], 0, 5), policy_drop(FAMILY_V4, 5)),
        (header, "IHL 4", edit(reply.clone(), 14, &[0x44]), INVALID),
        (header, "IHL 0", edit(reply.clone(), 14, &[0x40]), INVALID),
        (header, "version 6 under the IPv4 EtherType", edit(reply.clone(), 14, &[0x65]), INVALID),
        (header, "version 0", edit(reply.clone(), 14, &[0x05]), INVALID),
        (header, "total length one past the frame", edit(reply.clone(), 16, &(len as u16 + 1).to_be_bytes()), INVALID),
        (header, "total length 19, below any header", edit(reply.clone(), 16, &19u16.to_be_bytes()), INVALID),
        (header, "total length 20 under IHL 6", edit(v4(&[1; 4], 0, 0), 16, &20u16.to_be_bytes()), INVALID),
        (header, "IHL 15 in a frame that ends before the options do", v4(&[1; 40], 0, 0)[..60].to_vec(), INVALID),
        (header, "an IPv4 header cut at 16 bytes", reply[..30].to_vec(), INVALID),
        (header, "UDP with IHL 4: the header rules hold for all IP", edit(udp4(0), 14, &[0x44]), INVALID),
        (header, "total length shorter than the frame (Ethernet padding)", [reply.clone(), vec![0; 18]].concat(), Expect::Pass(passed(FAMILY_V4, 0))),
        (header, "total length exactly the frame", reply.clone(), Expect::Pass(passed(FAMILY_V4, 0))),
        (non_first, "non-first fragment whose data starts with 5", v4(&[], 185, 5), FRAGMENT),
        (non_first, "non-first fragment with more to come", v4(&[], 0x2000 | 1, 5), FRAGMENT),
        (non_first, "non-first UDP fragment", udp4(185), NON_ICMP),
        (non_first, "first fragment of a redirect: classified", v4(&[], 0x2000, 5), policy_drop(FAMILY_V4, 5)),
        (non_first, "first fragment of an echo reply", v4(&[], 0x2000, 0), Expect::Pass(passed(FAMILY_V4, 0))),
        (death, "offset 65528 with 36 bytes", v4(&[], 0x1fff, 0), INVALID),
        (death, "offset 65512 + total length 24 = 65536", frames::ethernet(&[], ETH_P_IPV4, &frames::ipv4(1, &[], 0x1ffd, &[0; 4])), INVALID),
        (death, "offset 65512 + total length 23 = 65535", frames::ethernet(&[], ETH_P_IPV4, &frames::ipv4(1, &[], 0x1ffd, &[0; 3])), FRAGMENT),
        (walk, "echo reply behind hop-by-hop", v6(&[Ext::options(0, 1)], 129), Expect::Pass(passed(FAMILY_V6, 129))),
        (walk, "redirect behind hop-by-hop", v6(&[Ext::options(0, 2)], 137), policy_drop(FAMILY_V6, 137)),
        (walk, "redirect behind destination options", v6(&[Ext::options(60, 3)], 137), policy_drop(FAMILY_V6, 137)),
        (walk, "redirect behind routing type 2", v6(&[routing(2, 1)], 137), policy_drop(FAMILY_V6, 137)),
        (walk, "echo reply behind routing type 0, no segments left", v6(&[routing(0, 0)], 129), Expect::Pass(passed(FAMILY_V6, 129))),
        (walk, "redirect behind AH (4-octet units)", v6(&[Ext::ah(3)], 137), policy_drop(FAMILY_V6, 137)),
        (walk, "echo reply behind AH of 5 words", v6(&[Ext::ah(5)], 129), Expect::Pass(passed(FAMILY_V6, 129))),
        (walk, "redirect behind an atomic fragment (RFC 6946)", v6(&[Ext::fragment(0, false)], 137), policy_drop(FAMILY_V6, 137)),
        (walk, "redirect in a first fragment", v6(&[Ext::options(0, 1), Ext::fragment(0, true)], 137), policy_drop(FAMILY_V6, 137)),
        (walk, "echo reply behind all five kinds", v6(&[Ext::options(0, 1), routing(2, 0), Ext::options(60, 1), Ext::ah(1), Ext::fragment(0, false)], 129), Expect::Pass(passed(FAMILY_V6, 129))),
        (bound, "echo reply behind the 6 headers RFC 8200 allows", v6(&longest(), 129), Expect::Pass(passed(FAMILY_V6, 129))),
        (bound, "redirect behind the 6 headers", v6(&longest(), 137), policy_drop(FAMILY_V6, 137)),
        (bound, "echo reply behind 8 destination options headers", v6(&eight(), 129), MALFORMED),
        (bound, "echo reply behind 9 headers", v6(&nine(), 129), MALFORMED),
        (order, "destination options three times", v6(&[Ext::options(60, 1), Ext::options(60, 1), Ext::options(60, 1)], 129), MALFORMED),
        (order, "destination options twice", v6(&[Ext::options(60, 1), Ext::options(60, 1)], 129), Expect::Pass(passed(FAMILY_V6, 129))),
        (order, "hop-by-hop after destination options", v6(&[Ext::options(60, 1), Ext::options(0, 1)], 129), MALFORMED),
        (order, "hop-by-hop twice", v6(&[Ext::options(0, 1), Ext::options(0, 1)], 129), MALFORMED),
        (order, "two routing headers", v6(&[routing(2, 0), routing(2, 0)], 129), MALFORMED),
        (order, "two fragment headers", v6(&[Ext::fragment(0, false), Ext::fragment(0, false)], 129), MALFORMED),
        (order, "two authentication headers", v6(&[Ext::ah(1), Ext::ah(1)], 129), MALFORMED),
        (bound, "UDP behind 9 headers", frames::ethernet(&[], ETH_P_IPV6, &frames::ipv6(64, &nine(), 17, &frames::udp())), MALFORMED),
        (bound, "destination options running past the payload", edit(v6(&[Ext::options(60, 1)], 129), 55, &[200]), MALFORMED),
        (bound, "AH running past the payload", edit(v6(&[Ext::ah(1)], 129), 55, &[40]), MALFORMED),
        (non_first6, "non-first fragment of ICMPv6 whose data starts with 137", v6(&[Ext::fragment(1480, false)], 137), FRAGMENT),
        (non_first6, "non-first fragment with more to come", v6(&[Ext::fragment(8, true)], 137), FRAGMENT),
        (non_first6, "non-first fragment of UDP", frames::ethernet(&[], ETH_P_IPV6, &frames::ipv6(64, &[Ext::fragment(8, false)], 17, &frames::udp())), NON_ICMP),
        (non_first6, "first fragment of a redirect: classified", v6(&[Ext::fragment(0, true)], 137), policy_drop(FAMILY_V6, 137)),
        (not_icmp, "TCP over IPv4", frames::ethernet(&[], ETH_P_IPV4, &frames::ipv4(6, &[], 0, &frames::tcp_syn())), NON_ICMP),
        (not_icmp, "UDP over IPv6 behind hop-by-hop", frames::ethernet(&[], ETH_P_IPV6, &frames::ipv6(64, &[Ext::options(0, 1)], 17, &frames::udp())), NON_ICMP),
        (not_icmp, "IPv4 carrying protocol 58 (ICMPv6 is not ICMP over IPv4)", frames::ethernet(&[], ETH_P_IPV4, &frames::ipv4(58, &[], 0, &frames::icmp(5, 0, &frames::echo_body()))), NON_ICMP),
        (not_icmp, "IPv6 carrying next header 1 (ICMP is not ICMPv6)", frames::ethernet(&[], ETH_P_IPV6, &frames::ipv6(64, &[], 1, &frames::icmp(137, 0, &frames::echo_body()))), NON_ICMP),
        (not_icmp, "IPv6 with no next header (59)", frames::ethernet(&[], ETH_P_IPV6, &frames::ipv6(64, &[], 59, &[0; 8])), NON_ICMP),
        (not_icmp, "ARP", arp.clone(), NON_ICMP),
        (not_icmp, "a bare Ethernet header", frames::ethernet(&[], 0x88b5, &[]), NON_ICMP),
        (not_icmp, "the same shape carrying ICMP is classified", redirect.clone(), policy_drop(FAMILY_V4, 5)),
        (short, "ICMP of 4 bytes", frames::ethernet(&[], ETH_P_IPV4, &frames::ipv4(1, &[], 0, &[0, 0, 0, 0])), INVALID),
        (short, "ICMP of 7 bytes, padded by Ethernet", [frames::ethernet(&[], ETH_P_IPV4, &frames::ipv4(1, &[], 0, &[0; 7])), vec![0; 20]].concat(), INVALID),
        (short, "ICMPv6 of 7 bytes", frames::ethernet(&[], ETH_P_IPV6, &frames::ipv6(64, &[], 58, &[129, 0, 0, 0, 0, 0, 0])), INVALID),
        (short, "ICMP of exactly 8 bytes", frames::ethernet(&[], ETH_P_IPV4, &frames::ipv4(1, &[], 0, &[0; 8])), Expect::Pass(passed(FAMILY_V4, 0))),
        (rh0, "routing type 0, one segment left", v6(&[routing(0, 1)], 129), INVALID),
        (rh0, "routing type 0 carrying UDP", frames::ethernet(&[], ETH_P_IPV6, &frames::ipv6(64, &[routing(0, 3)], 17, &frames::udp())), INVALID),
        (rh0, "routing type 0, no segment left", v6(&[routing(0, 0)], 129), Expect::Pass(passed(FAMILY_V6, 129))),
        (rh0, "routing type 2, one segment left", v6(&[routing(2, 1)], 129), Expect::Pass(passed(FAMILY_V6, 129))),
        (ipv6_header, "version 4 under the IPv6 EtherType", edit(reply6.clone(), 14, &[0x40]), INVALID),
        (ipv6_header, "payload length one past the frame", edit(reply6.clone(), 18, &((reply6.len() - 54 + 1) as u16).to_be_bytes()), INVALID),
        (ipv6_header, "a header cut at 36 bytes", reply6[..50].to_vec(), INVALID),
        (ipv6_header, "a frame that ends inside a hop-by-hop header", v6(&[Ext::options(0, 2)], 129)[..60].to_vec(), INVALID),
        (ipv6_header, "payload shorter than the frame (padding)", [reply6.clone(), vec![0; 10]].concat(), Expect::Pass(passed(FAMILY_V6, 129))),
    ]
}

#[test]
fn every_parsing_rule_has_a_frame_that_passes_and_one_that_does_not() {
    root_or_skip!("every_parsing_rule_has_a_frame_that_passes_and_one_that_does_not");
    let policy = policies::default_profile();
    let mut guard = Tracked::load(&policy, &BROADCASTS);
    let rows = parsing_rule_rows();
    let mut failures = Vec::new();
    let mut both_ways: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for (rule, what, frame, expect) in &rows {
        let (action, counted) = match *expect {
            Expect::Pass(at) => (XDP_PASS, at),
            Expect::Drop(_, at) => (XDP_DROP, at),
        };
        let seen = both_ways.entry(rule).or_default();
        if action == XDP_PASS {
            seen.0 = true;
        } else {
            seen.1 = true;
        }
        let model = model::verdict(frame, &policy, &BROADCASTS);
        let model_reason_ok = match *expect {
            Expect::Pass(_) => model.reason.is_none(),
            Expect::Drop(reason, _) => model.reason == Some(reason),
        };
        if action_of(model.verdict) != action || model.counted != counted || !model_reason_ok {
            failures.push(format!(
                "{rule} / {what}: the model says {model}, the spec {expect:?}\n  frame {}",
                hex(frame)
            ));
        }
        let kernel = guard.run(frame, counted);
        if kernel.action != action || kernel.counted != [counted] || kernel.modified {
            failures.push(format!(
                "{rule} / {what}: the program says {kernel}, the spec {expect:?}\n  frame {}",
                hex(frame)
            ));
        }
    }
    for (at, kernel, shadow) in guard.audit() {
        failures.push(format!("counter {at} is {kernel:?}, expected {shadow:?}"));
    }
    for (rule, (passes, drops)) in &both_ways {
        if !(*passes && *drops) {
            failures.push(format!(
                "{rule}: needs a frame that passes and one that does not"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows disagree:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn former_divergences_agree_with_the_model() {
    root_or_skip!("former_divergences_agree_with_the_model");
    let policy = policies::default_profile();
    let mut guard = Tracked::load(&policy, &BROADCASTS);
    for (name, what, example) in FORMER_DIVERGENCES {
        let frame = example();
        let model = model::verdict(&frame, &policy, &BROADCASTS);
        let kernel = guard.run(&frame, model.counted);
        assert!(
            kernel.action == action_of(model.verdict)
                && kernel.counted == [model.counted]
                && !kernel.modified,
            "{name} ({what}) is back: frame {}\n  model:  {model}\n  kernel: {kernel}",
            hex(&frame)
        );
    }
    if let Some((at, kernel, shadow)) = guard.audit().into_iter().next() {
        panic!("counter {at} is {kernel:?}, the frames add up to {shadow:?}");
    }
}
