//! The parser: a cursor over the frame that walks Ethernet and VLAN tags (or starts at the
//! IP header on a layer-3 link), IPv4 with its IHL, the IPv6 extension chain and the ICMP
//! header, checking every length before it reads, and returns what it found. It looks
//! nothing up and decides nothing; the header rules it applies are
//! [`icmp_guard_common::parse`]'s.
//!
//! Verdicts for what cannot be classified are chosen on purpose:
//! - frames that are not IP, and IP that is not ICMP, are [`Parsed::NotIcmp`]: they pass
//!   untouched;
//! - an IP header that breaks the rules is [`DropReason::Invalid`] (the stack would drop it
//!   too, and a filter must not trust a header the stack would reject);
//! - a structure we refuse to walk further (over-deep or truncated VLAN stacks carrying IP,
//!   IPv6 extension chains past the bound, past the packet or out of RFC 8200's order) is
//!   [`DropReason::Malformed`], since passing it would let an attacker hide ICMP behind it.

use aya_ebpf::programs::XdpContext;
use icmp_guard_common::{
    DropReason, FAMILY_V4, FAMILY_V6,
    interface::link_kind,
    parse::{
        ETH_P_IPV4, ETH_P_IPV6, ExtensionOrder, ICMP_HLEN, IPPROTO_FRAGMENT, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPPROTO_ROUTING, IPV4_MIN_HLEN, IPV6_HLEN, MAX_IPV6_EXT_HEADERS,
        MAX_VLAN_TAGS, VLAN_PEEK_TAGS, check_ipv4, check_ipv6, embeds_header, ipv6_extension_len,
        ipv6_fragment, is_ipv6_extension, is_vlan,
    },
    policy::{is_error, mac_group},
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    vlan::VlanHdr,
};

/// Offsets beyond this are refused before they are added to a packet pointer, which also
/// gives the verifier the bound it needs for variable offsets.
const MAX_OFFSET: usize = 0x3fff;

/// The frame XDP handed us.
pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// The only way the program reads the packet: a pointer to a `T` at `offset`, or
    /// `None` when its bytes are not all inside the frame.
    #[inline(always)]
    pub fn header<T>(&self, offset: usize) -> Option<*const T> {
        if offset > MAX_OFFSET {
            return None;
        }
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return None;
        }
        Some(at as *const T)
    }

    /// `N` bytes at `offset`.
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // SAFETY: `header` checked that the N bytes lie inside the frame; u8 arrays have
        // no alignment to respect.
        self.header::<[u8; N]>(offset)
            .map(|bytes| unsafe { *bytes })
    }
}

/// What the parser found.
pub enum Parsed {
    /// Not ICMP at all: passed untouched.
    NotIcmp,
    /// Dropped before an ICMP type could be read.
    Unclassified(DropReason),
    /// An ICMP message (its header read where IHL or the extension chain put it), or a
    /// non-first ICMP fragment ([`header_flags::NON_FIRST_FRAGMENT`]), which has none:
    /// written into the [`Headers`] the caller's sink gave.
    Icmp,
}

/// Bits of [`Headers::flags`].
pub mod header_flags {
    /// A non-first ICMP fragment: no ICMP header, `icmp_type` and `code` are 0.
    pub const NON_FIRST_FRAGMENT: u8 = 1;
    /// An IPv4 first fragment with more to come, or IPv6 with any Fragment header.
    pub const FRAGMENTED: u8 = 2;
    /// For an error type: the message embeds a full IP header of its family plus 8 bytes.
    pub const EMBEDS_HEADER: u8 = 4;
    /// The Ethernet destination is a broadcast or multicast address (never on a layer-3
    /// link).
    pub const MAC_GROUP: u8 = 8;
}

/// An ICMP packet as the parser found it: what every later stage reads.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Headers {
    /// The source. IPv4 in the first 4 bytes, and the other 12 mean nothing: the parser
    /// writes only what the family has.
    pub source: [u8; 16],
    /// The destination, likewise.
    pub destination: [u8; 16],
    /// Bytes 4..8 of the ICMP header (the MTU of a Packet Too Big).
    pub word: [u8; 4],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    pub icmp_type: u8,
    pub code: u8,
    /// IPv6 hop limit; the IPv4 TTL.
    pub hop_limit: u8,
    /// Bits of [`header_flags`].
    pub flags: u8,
    /// What sweep detection found before the decision (`crate::recon::found`): written for
    /// every ICMP packet by the stage itself, never by the parser.
    pub recon: u8,
    /// The parser's own state while it walks IPv6 extension headers
    /// ([`ExtensionOrder::bits`]); meaningless afterwards.
    pub scratch: u16,
    /// The IP packet's length: the IPv4 total length, or 40 plus the IPv6 payload length
    /// (what a rule's `max_size` is compared with).
    pub length: u32,
    /// The destination's bit in a sweep bitmap (word × 64 + bit), for sweep detection.
    pub recon_position: u32,
    /// Sweep detection's working state (kept here, in map memory, so that its calls need
    /// almost no stack).
    pub probe: crate::recon::Probe,
}

const _: () = assert!(core::mem::offset_of!(Headers, source) == 0);
const _: () = assert!(align_of::<Headers>() >= 8);

impl Headers {
    /// True for a non-first fragment.
    #[inline(always)]
    pub const fn is_fragment(&self) -> bool {
        self.flags & header_flags::NON_FIRST_FRAGMENT != 0
    }

    /// The IPv4 source.
    #[inline(always)]
    pub const fn source_v4(&self) -> [u8; 4] {
        [
            self.source[0],
            self.source[1],
            self.source[2],
            self.source[3],
        ]
    }

    /// The IPv4 source as one word, as it lies in memory (network byte order): one load.
    #[inline(always)]
    pub const fn source_word_v4(&self) -> u32 {
        // SAFETY: `source` starts the struct, which is 8-byte aligned (asserted below), and
        // holds at least 4 bytes; every bit pattern is a `u32`.
        unsafe { (&raw const self.source).cast::<u32>().read() }
    }

    /// The IPv6 source as two words, as they lie in memory: two loads.
    #[inline(always)]
    pub const fn source_words(&self) -> [u64; 2] {
        // SAFETY: as above, 16 bytes.
        unsafe { (&raw const self.source).cast::<[u64; 2]>().read() }
    }

    /// The IPv4 destination.
    #[inline(always)]
    pub const fn destination_v4(&self) -> [u8; 4] {
        [
            self.destination[0],
            self.destination[1],
            self.destination[2],
            self.destination[3],
        ]
    }
}

/// Where the parser writes an ICMP packet's [`Headers`]: asked only once the packet is known
/// to be ICMP, or has IPv6 extension headers to walk (whose order state the parser keeps
/// there), so that other traffic costs nothing more. `None` fails closed.
pub trait Sink<'a>: FnOnce() -> Option<&'a mut Headers> {}

impl<'a, F: FnOnce() -> Option<&'a mut Headers>> Sink<'a> for F {}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

/// Parses a frame whose link layer is `kind` ([`link_kind`]); an ICMP packet's headers go
/// where `sink` says.
#[inline(always)]
pub fn parse<'a>(frame: &Frame, kind: u8, sink: impl Sink<'a>) -> Parsed {
    if kind == link_kind::RAW_IP {
        // No link-layer header: the IP version says which IP. Anything else, or anything
        // shorter than the smallest IP header, is not IP, and the stack drops it. (The
        // version is read with the whole minimal header: a one-byte read compiles to a
        // bounds check older verifiers cannot follow.)
        return match frame.bytes::<IPV4_MIN_HLEN>(0).map(|first| first[0] >> 4) {
            Some(4) => parse_ipv4(frame, 0, false, sink),
            Some(6) => parse_ipv6(frame, 0, false, sink),
            _ => Parsed::NotIcmp,
        };
    }
    let Some(eth) = frame.header::<EthHdr>(0) else {
        // A runt frame carries no IP; the stack discards it.
        return Parsed::NotIcmp;
    };
    // SAFETY: `header` checked the bounds; fields are read unaligned.
    let (mut ether_type, mac) = unsafe {
        (
            u16::from_be((&raw const (*eth).ether_type).read_unaligned()),
            (*eth).dst_addr,
        )
    };
    let mut offset = EthHdr::LEN;
    let mut tags = 0;
    for _ in 0..VLAN_PEEK_TAGS {
        if !is_vlan(ether_type) {
            break;
        }
        let Some(tag) = frame.header::<VlanHdr>(offset) else {
            // A tag cut short: we cannot tell what it carries, so it does not get through.
            return Parsed::Unclassified(DropReason::Malformed);
        };
        // SAFETY: as above.
        ether_type = u16::from_be(unsafe { (&raw const (*tag).ether_type).read_unaligned() });
        offset += VlanHdr::LEN;
        tags += 1;
    }
    if is_vlan(ether_type) {
        // Deeper than we peek: we cannot tell what it carries, so it does not get through.
        return Parsed::Unclassified(DropReason::Malformed);
    }
    if ether_type != ETH_P_IPV4 && ether_type != ETH_P_IPV6 {
        return Parsed::NotIcmp;
    }
    if tags > MAX_VLAN_TAGS {
        return Parsed::Unclassified(DropReason::Malformed);
    }
    let group = mac_group(mac);
    if ether_type == ETH_P_IPV4 {
        parse_ipv4(frame, offset, group, sink)
    } else {
        parse_ipv6(frame, offset, group, sink)
    }
}

/// The flags every ICMP packet starts with.
#[inline(always)]
const fn link_flags(mac_group: bool) -> u8 {
    if mac_group {
        header_flags::MAC_GROUP
    } else {
        0
    }
}

#[inline(always)]
fn parse_ipv4<'a>(frame: &Frame, offset: usize, mac_group: bool, sink: impl Sink<'a>) -> Parsed {
    let Some(ip) = frame.header::<Ipv4Hdr>(offset) else {
        return Parsed::Unclassified(DropReason::Invalid);
    };
    // SAFETY: `header` checked the bounds; Ipv4Hdr is all bytes.
    let ip = unsafe { &*ip };
    let Some(shape) = check_ipv4(
        ip.vihl,
        be16(ip.tot_len),
        be16(ip.frags),
        frame.len() - offset,
    ) else {
        return Parsed::Unclassified(DropReason::Invalid);
    };
    if ip.proto != IPPROTO_ICMP {
        return Parsed::NotIcmp;
    }
    if shape.overflows_datagram() {
        return Parsed::Unclassified(DropReason::Invalid);
    }
    let mut flags = link_flags(mac_group);
    if shape.is_non_first_fragment() {
        let Some(out) = sink() else {
            return Parsed::Unclassified(DropReason::Invalid);
        };
        write_v4(out, ip, flags | header_flags::NON_FIRST_FRAGMENT, [0; 8]);
        return Parsed::Icmp;
    }
    // The ICMP header starts where IHL says, never at a fixed 20 bytes.
    let icmp_offset = offset + shape.header_len;
    // Anything shorter than the fixed header is invalid, and its first byte is not trusted
    // as a type: past the IP payload it is Ethernet padding.
    if shape.payload_len < ICMP_HLEN {
        return Parsed::Unclassified(DropReason::Invalid);
    }
    let Some(icmp) = frame.bytes::<ICMP_HLEN>(icmp_offset) else {
        return Parsed::Unclassified(DropReason::Invalid);
    };
    if is_error(FAMILY_V4, icmp[0])
        && embedded_header(frame, FAMILY_V4, icmp_offset, shape.payload_len)
    {
        flags |= header_flags::EMBEDS_HEADER;
    }
    if shape.more_fragments {
        flags |= header_flags::FRAGMENTED;
    }
    let Some(out) = sink() else {
        return Parsed::Unclassified(DropReason::Invalid);
    };
    write_v4(out, ip, flags, icmp);
    Parsed::Icmp
}

/// Writes an IPv4 packet's headers: only the bytes IPv4 has.
#[inline(always)]
fn write_v4(out: &mut Headers, ip: &Ipv4Hdr, flags: u8, icmp: [u8; ICMP_HLEN]) {
    put_words::<1>(&mut out.source, &ip.src_addr);
    put_words::<1>(&mut out.destination, &ip.dst_addr);
    put_fields(out, FAMILY_V4, ip.ttl, flags, icmp);
    // SAFETY: a plain field of `out`.
    unsafe { (&raw mut out.length).write_volatile(u32::from(be16(ip.tot_len))) };
}

/// Stores `N` 32-bit words of `bytes` at the start of `field`, one store each. (Volatile
/// here and in [`put_fields`]: the optimiser would merge them into calls to memcpy and
/// memset, BPF-to-BPF calls that loop byte by byte.)
#[inline(always)]
fn put_words<const N: usize>(field: &mut [u8; 16], bytes: &[u8]) {
    let words = (&raw mut *field).cast::<u32>();
    let mut index = 0;
    while index < N {
        let at = index * 4;
        let word = u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        // SAFETY: `field` is 16 bytes at the start of an 8-byte aligned `Headers`, and
        // `N` is at most 4.
        unsafe { words.add(index).write_volatile(word) };
        index += 1;
    }
}

/// Stores the fields every family has.
#[inline(always)]
fn put_fields(out: &mut Headers, family: u8, hop_limit: u8, flags: u8, icmp: [u8; ICMP_HLEN]) {
    // SAFETY: plain fields of `out`.
    unsafe {
        (&raw mut out.word).write_volatile([icmp[4], icmp[5], icmp[6], icmp[7]]);
        (&raw mut out.family).write_volatile(family);
        (&raw mut out.icmp_type).write_volatile(icmp[0]);
        (&raw mut out.code).write_volatile(icmp[1]);
        (&raw mut out.hop_limit).write_volatile(hop_limit);
        (&raw mut out.flags).write_volatile(flags);
    }
}

/// Whether the ICMP message at `icmp_offset`, `message_len` bytes long (inside the IP
/// payload), embeds a full IP header of `family` plus 8 bytes.
#[inline(always)]
fn embedded_header(frame: &Frame, family: u8, icmp_offset: usize, message_len: usize) -> bool {
    let data_len = message_len - ICMP_HLEN;
    let least = if family == FAMILY_V4 {
        IPV4_MIN_HLEN + 8
    } else {
        IPV6_HLEN + 8
    };
    if data_len < least {
        return false;
    }
    // Eight bytes, not one: see `parse` on one-byte reads.
    frame
        .bytes::<8>(icmp_offset + ICMP_HLEN)
        .is_some_and(|embedded| embeds_header(family, embedded[0], data_len))
}

#[inline(always)]
fn parse_ipv6<'a>(frame: &Frame, offset: usize, mac_group: bool, sink: impl Sink<'a>) -> Parsed {
    let Some(ip) = frame.header::<Ipv6Hdr>(offset) else {
        return Parsed::Unclassified(DropReason::Invalid);
    };
    // SAFETY: `header` checked the bounds; Ipv6Hdr is all bytes.
    let ip = unsafe { &*ip };
    let payload_len = be16(ip.payload_len) as usize;
    if !check_ipv6(ip.vcf[0], payload_len as u16, frame.len() - offset) {
        return Parsed::Unclassified(DropReason::Invalid);
    }
    // Opaque to the optimiser: it knows `payload_end` lies inside the frame (check_ipv6) and
    // would otherwise drop the frame-end check of the extension header reads below as
    // redundant with the payload-end check, which only the verifier cannot see.
    let payload_end = core::hint::black_box(offset + IPV6_HLEN + payload_len);
    let mut flags = link_flags(mac_group);
    let mut next_header = ip.next_hdr;
    let mut cursor = offset + IPV6_HLEN;
    // The headers' storage, taken early when there is a chain to walk: the chain's order
    // state (RFC 8200 §4.1) lives in it rather than in a register. The verifier does not
    // follow values through map memory, so the walk's states do not multiply by the orders
    // seen so far (in a register they did: 401k instructions on 5.10 and 6.1 against 196k
    // without the check).
    let mut sink = Some(sink);
    let mut storage: Option<&'a mut Headers> = None;
    if is_ipv6_extension(next_header) {
        storage = sink.take().and_then(|sink| sink());
        let Some(scratch) = storage.as_deref_mut() else {
            return Parsed::Unclassified(DropReason::Invalid);
        };
        set_order(scratch, ExtensionOrder::START);
    }
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_extension(next_header) {
            break;
        }
        // Every extension header field is read from inside the IPv6 payload, never from
        // Ethernet padding or trailing bytes past it.
        if cursor + 8 > payload_end {
            return Parsed::Unclassified(DropReason::Malformed);
        }
        let Some(ext) = frame.bytes::<8>(cursor) else {
            return Parsed::Unclassified(DropReason::Malformed);
        };
        // The whole header inside the payload before any of its fields is acted on.
        let length = ipv6_extension_len(next_header, ext[1]);
        if cursor + length > payload_end {
            return Parsed::Unclassified(DropReason::Malformed);
        }
        let Some(scratch) = storage.as_deref_mut() else {
            return Parsed::Unclassified(DropReason::Invalid);
        };
        let Some(next_order) = order_of(scratch).after(next_header) else {
            // RFC 8200 §4.1: a header out of place or repeated.
            return Parsed::Unclassified(DropReason::Malformed);
        };
        set_order(scratch, next_order);
        if next_header == IPPROTO_ROUTING && ext[2] == 0 && ext[3] != 0 {
            // Routing header type 0 with segments left (RFC 5095): deprecated, an
            // amplification vector, never processed.
            return Parsed::Unclassified(DropReason::Invalid);
        }
        if next_header == IPPROTO_FRAGMENT {
            let (fragment_offset, _more) = ipv6_fragment(be16([ext[2], ext[3]]));
            // RFC 6980 §5: ND messages must not carry a Fragment header at all, atomic
            // fragments (RFC 6946) included; the ND condition reads this fact.
            flags |= header_flags::FRAGMENTED;
            if fragment_offset != 0 {
                if ext[0] != IPPROTO_ICMPV6 {
                    return Parsed::NotIcmp;
                }
                write_v6(
                    scratch,
                    ip,
                    flags | header_flags::NON_FIRST_FRAGMENT,
                    [0; 8],
                );
                return Parsed::Icmp;
            }
            // A first fragment, or an atomic fragment (RFC 6946): classify what follows.
        }
        cursor += length;
        next_header = ext[0];
    }
    if is_ipv6_extension(next_header) {
        return Parsed::Unclassified(DropReason::Malformed);
    }
    if next_header != IPPROTO_ICMPV6 {
        return Parsed::NotIcmp;
    }
    let message_len = payload_end - cursor;
    if message_len < ICMP_HLEN {
        return Parsed::Unclassified(DropReason::Invalid);
    }
    let Some(header) = frame.bytes::<ICMP_HLEN>(cursor) else {
        return Parsed::Unclassified(DropReason::Invalid);
    };
    if is_error(FAMILY_V6, header[0]) && embedded_header(frame, FAMILY_V6, cursor, message_len) {
        flags |= header_flags::EMBEDS_HEADER;
    }
    let out = match storage {
        Some(out) => out,
        None => match sink.take().and_then(|sink| sink()) {
            Some(out) => out,
            None => return Parsed::Unclassified(DropReason::Invalid),
        },
    };
    write_v6(out, ip, flags, header);
    Parsed::Icmp
}

/// The extension-header order kept in `scratch` (volatile: through memory, where the
/// verifier does not follow it).
#[inline(always)]
fn order_of(scratch: &Headers) -> ExtensionOrder {
    // SAFETY: a plain field of a live `Headers`.
    ExtensionOrder::from_bits(unsafe { (&raw const scratch.scratch).read_volatile() })
}

#[inline(always)]
fn set_order(scratch: &mut Headers, order: ExtensionOrder) {
    // SAFETY: as above.
    unsafe { (&raw mut scratch.scratch).write_volatile(order.bits()) };
}

/// Writes an IPv6 packet's headers.
#[inline(always)]
fn write_v6(out: &mut Headers, ip: &Ipv6Hdr, flags: u8, icmp: [u8; ICMP_HLEN]) {
    put_words::<4>(&mut out.source, &ip.src_addr);
    put_words::<4>(&mut out.destination, &ip.dst_addr);
    put_fields(out, FAMILY_V6, ip.hop_limit, flags, icmp);
    // SAFETY: a plain field of `out`.
    unsafe {
        (&raw mut out.length).write_volatile(IPV6_HLEN as u32 + u32::from(be16(ip.payload_len)))
    };
}
