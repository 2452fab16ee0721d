//! The icmp-guard XDP program: classify every inbound ICMPv4/ICMPv6 packet by family, type
//! and code, apply the policy table, and count packets and bytes per (family, type, slot).
//!
//! Verdicts for packets we cannot classify are chosen on purpose:
//! - frames that are not IP, and IP that is not ICMP, pass untouched;
//! - an IP header that breaks the rules is dropped as `invalid` (the stack would drop it
//!   too, and a filter must not trust a header the stack would reject);
//! - a structure we refuse to walk further (over-deep VLAN stacks carrying IP, IPv6
//!   extension chains past the bound or past the packet) is dropped as `malformed`, since
//!   passing it would let an attacker hide ICMP behind it.

#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use icmp_guard_common::{
    Counter, DropReason, FAMILY_V4, FAMILY_V6, ICMP_COUNTER_ENTRIES, POLICY_ENTRIES, apply_mode,
    config, counter_index, global,
    parse::{
        ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, ICMP_HLEN, IPPROTO_FRAGMENT, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPV4_MIN_HLEN, IPV6_HLEN, MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS, VLAN_HLEN,
        VLAN_PEEK_TAGS, check_ipv4, check_ipv6, ipv6_extension_len, ipv6_fragment,
        is_ipv6_extension, is_vlan,
    },
    policy_index, policy_verdict,
};

#[map(name = "ICMP_COUNTERS")]
static ICMP_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(ICMP_COUNTER_ENTRIES, 0);

#[map(name = "GLOBAL_COUNTERS")]
static GLOBAL_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(global::ENTRIES, 0);

#[map(name = "POLICY")]
static POLICY: Array<u32> = Array::with_max_entries(POLICY_ENTRIES, 0);

#[map(name = "CONFIG")]
static CONFIG: Array<u32> = Array::with_max_entries(config::ENTRIES, 0);

/// Offsets beyond this are refused before they are added to a packet pointer, which also
/// gives the verifier the bound it needs for variable offsets.
const MAX_OFFSET: usize = 0x3fff;

#[xdp]
pub fn icmp_guard(ctx: XdpContext) -> u32 {
    let packet = Packet {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let mode = CONFIG
        .get(config::MODE)
        .copied()
        .unwrap_or(config::MODE_ENFORCE);
    let len = packet.len() as u64;
    match classify(&packet) {
        Classified::NotIcmp => {
            count(&GLOBAL_COUNTERS, global::NON_ICMP_PASSED, len);
            xdp_action::XDP_PASS
        }
        Classified::IcmpFragment => {
            count(&GLOBAL_COUNTERS, global::ICMP_FRAGMENT_PASSED, len);
            xdp_action::XDP_PASS
        }
        Classified::Unclassified(reason) => {
            let dry_run = mode == config::MODE_DRY_RUN;
            let slot = match (reason, dry_run) {
                (DropReason::Malformed, false) => global::MALFORMED_DROPPED,
                (DropReason::Malformed, true) => global::MALFORMED_WOULD_DROP,
                (_, false) => global::INVALID_DROPPED,
                (_, true) => global::INVALID_WOULD_DROP,
            };
            count(&GLOBAL_COUNTERS, slot, len);
            if dry_run {
                xdp_action::XDP_PASS
            } else {
                xdp_action::XDP_DROP
            }
        }
        Classified::Icmp(icmp) => {
            let verdict = policy_verdict(
                POLICY
                    .get(policy_index(icmp.family, icmp.icmp_type))
                    .copied()
                    .unwrap_or(icmp_guard_common::action::DROP),
            );
            let outcome = apply_mode(verdict, mode);
            count(
                &ICMP_COUNTERS,
                counter_index(icmp.family, icmp.icmp_type, outcome.slot),
                len,
            );
            if outcome.drop {
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            }
        }
    }
}

/// What the parser found.
enum Classified {
    /// Not ICMP at all: passed untouched.
    NotIcmp,
    /// A non-first ICMP fragment: no header to classify.
    IcmpFragment,
    /// Dropped before an ICMP type could be read.
    Unclassified(DropReason),
    /// An ICMP message with its type read from the real ICMP header.
    Icmp(Icmp),
}

struct Icmp {
    family: u8,
    icmp_type: u8,
    /// Read for the policy engine; the simple table is per type.
    #[expect(dead_code, reason = "per-code rules arrive with the policy engine")]
    code: u8,
}

struct Packet {
    start: usize,
    end: usize,
}

impl Packet {
    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }

    /// The only way this program reads the packet: a pointer to `N` bytes at `offset`, or
    /// `None` when they are not all inside the packet.
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<&[u8; N]> {
        if offset > MAX_OFFSET {
            return None;
        }
        let at = self.start + offset;
        if at + N > self.end {
            return None;
        }
        // SAFETY: the N bytes at `at` lie inside [start, end), checked just above.
        Some(unsafe { &*(at as *const [u8; N]) })
    }
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

#[inline(always)]
fn classify(packet: &Packet) -> Classified {
    let Some(eth) = packet.bytes::<ETH_HLEN>(0) else {
        // A runt frame carries no IP; the stack discards it.
        return Classified::NotIcmp;
    };
    let mut ether_type = be16([eth[12], eth[13]]);
    let mut offset = ETH_HLEN;
    let mut tags = 0;
    for _ in 0..VLAN_PEEK_TAGS {
        if !is_vlan(ether_type) {
            break;
        }
        let Some(tag) = packet.bytes::<VLAN_HLEN>(offset) else {
            // A truncated tag cannot carry IP.
            return Classified::NotIcmp;
        };
        ether_type = be16([tag[2], tag[3]]);
        offset += VLAN_HLEN;
        tags += 1;
    }
    if is_vlan(ether_type) {
        // Deeper than we peek: we cannot tell what it carries, so it does not get through.
        return Classified::Unclassified(DropReason::Malformed);
    }
    if ether_type != ETH_P_IPV4 && ether_type != ETH_P_IPV6 {
        return Classified::NotIcmp;
    }
    if tags > MAX_VLAN_TAGS {
        return Classified::Unclassified(DropReason::Malformed);
    }
    if ether_type == ETH_P_IPV4 {
        classify_ipv4(packet, offset)
    } else {
        classify_ipv6(packet, offset)
    }
}

#[inline(always)]
fn classify_ipv4(packet: &Packet, offset: usize) -> Classified {
    let Some(ip) = packet.bytes::<IPV4_MIN_HLEN>(offset) else {
        return Classified::Unclassified(DropReason::Invalid);
    };
    let Some(shape) = check_ipv4(
        ip[0],
        be16([ip[2], ip[3]]),
        be16([ip[6], ip[7]]),
        packet.len() - offset,
    ) else {
        return Classified::Unclassified(DropReason::Invalid);
    };
    if ip[9] != IPPROTO_ICMP {
        return Classified::NotIcmp;
    }
    if shape.overflows_datagram() {
        return Classified::Unclassified(DropReason::Invalid);
    }
    if shape.is_non_first_fragment() {
        return Classified::IcmpFragment;
    }
    // The ICMP header starts where IHL says, never at a fixed 20 bytes.
    let icmp_offset = offset + shape.header_len;
    read_icmp(packet, FAMILY_V4, icmp_offset, shape.payload_len)
}

#[inline(always)]
fn classify_ipv6(packet: &Packet, offset: usize) -> Classified {
    let Some(ip) = packet.bytes::<IPV6_HLEN>(offset) else {
        return Classified::Unclassified(DropReason::Invalid);
    };
    let payload_len = be16([ip[4], ip[5]]) as usize;
    if !check_ipv6(ip[0], payload_len as u16, packet.len() - offset) {
        return Classified::Unclassified(DropReason::Invalid);
    }
    let packet_end = offset + IPV6_HLEN + payload_len;
    let mut next_header = ip[6];
    let mut cursor = offset + IPV6_HLEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_extension(next_header) {
            break;
        }
        let Some(ext) = packet.bytes::<8>(cursor) else {
            return Classified::Unclassified(DropReason::Malformed);
        };
        if next_header == IPPROTO_FRAGMENT {
            let (fragment_offset, _more) = ipv6_fragment(be16([ext[2], ext[3]]));
            if fragment_offset != 0 {
                return if ext[0] == IPPROTO_ICMPV6 {
                    Classified::IcmpFragment
                } else {
                    Classified::NotIcmp
                };
            }
            // A first fragment, or an atomic fragment (RFC 6946): classify what follows.
        }
        cursor += ipv6_extension_len(next_header, ext[1]);
        next_header = ext[0];
        if cursor > packet_end {
            return Classified::Unclassified(DropReason::Malformed);
        }
    }
    if is_ipv6_extension(next_header) {
        return Classified::Unclassified(DropReason::Malformed);
    }
    if next_header != IPPROTO_ICMPV6 {
        return Classified::NotIcmp;
    }
    read_icmp(packet, FAMILY_V6, cursor, packet_end - cursor)
}

#[inline(always)]
fn read_icmp(packet: &Packet, family: u8, offset: usize, payload_len: usize) -> Classified {
    // Anything shorter than the fixed header is invalid, and its first byte is not trusted
    // as a type: past the IP payload it is Ethernet padding.
    if payload_len < ICMP_HLEN {
        return Classified::Unclassified(DropReason::Invalid);
    }
    let Some(header) = packet.bytes::<ICMP_HLEN>(offset) else {
        return Classified::Unclassified(DropReason::Invalid);
    };
    Classified::Icmp(Icmp {
        family,
        icmp_type: header[0],
        code: header[1],
    })
}

#[inline(always)]
fn count(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and the pointer comes from a
        // successful lookup.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic at run time.
    unsafe { core::hint::unreachable_unchecked() }
}
