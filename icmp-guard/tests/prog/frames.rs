//! Frame builders for verdict tests. Every length and checksum is computed, so a test
//! states only what it varies.

pub const GUARD_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const V4_GUARD: [u8; 4] = [192, 0, 2, 1];
pub const V4_PEER: [u8; 4] = [192, 0, 2, 2];
pub const V6_GUARD: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const V6_PEER: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// An Ethernet frame with optional VLAN tags (outermost first).
pub fn ethernet(tags: &[(u16, u16)], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&GUARD_MAC);
    frame.extend_from_slice(&PEER_MAC);
    for (tpid, vid) in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&vid.to_be_bytes());
    }
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet; `options` must be a multiple of 4 bytes.
pub fn ipv4(protocol: u8, options: &[u8], flags_fragment: u16, payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "IPv4 options pad to 32 bits");
    let header_len = 20 + options.len();
    let total = header_len + payload.len();
    let mut packet = vec![
        0x40 | (header_len / 4) as u8,
        0,
        (total >> 8) as u8,
        total as u8,
        0x12,
        0x34,
        (flags_fragment >> 8) as u8,
        flags_fragment as u8,
        64,
        protocol,
        0,
        0,
    ];
    packet.extend_from_slice(&V4_PEER);
    packet.extend_from_slice(&V4_GUARD);
    packet.extend_from_slice(options);
    let sum = checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// An ICMP message: type, code, checksum, then `rest` (the 4 type-specific bytes and data).
pub fn icmp(icmp_type: u8, code: u8, rest: &[u8]) -> Vec<u8> {
    let mut message = vec![icmp_type, code, 0, 0];
    message.extend_from_slice(rest);
    let sum = checksum(&message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    message
}

/// An echo body: identifier, sequence and a few bytes of data.
pub fn echo_body() -> Vec<u8> {
    let mut body = vec![0x12, 0x34, 0x00, 0x01];
    body.extend_from_slice(b"icmp-guard test data");
    body
}

/// The data of an ICMPv4 message: an error (RFC 792) carries 4 unused bytes and the IP
/// header of the datagram it reports on plus its first 8 bytes; every other type an echo
/// body.
pub fn body_v4(icmp_type: u8) -> Vec<u8> {
    if !icmp_guard_common::policy::is_error(icmp_guard_common::FAMILY_V4, icmp_type) {
        return echo_body();
    }
    let mut body = vec![0, 0, 0, 0];
    body.extend_from_slice(&ipv4(17, &[], 0, &udp())[..28]);
    body
}

/// The same for ICMPv6 (RFC 4443 §2.4): an error carries the invoking IPv6 packet's header
/// and 8 bytes after it, after the 4 bytes of `word`.
pub fn body_v6(icmp_type: u8, word: [u8; 4]) -> Vec<u8> {
    let mut body = word.to_vec();
    if icmp_type < 128 {
        body.extend_from_slice(&ipv6(64, &[], 17, &udp())[..48]);
    } else {
        body.extend_from_slice(b"payload-bytes");
    }
    body
}

/// The data of an ICMPv6 message of `icmp_type` after a zero word: an error's embedded
/// header, or an echo body.
pub fn icmpv6_body(icmp_type: u8) -> Vec<u8> {
    if icmp_type < 128 {
        body_v6(icmp_type, [0; 4])
    } else {
        echo_body()
    }
}

/// A complete ICMPv4 frame to the guard.
pub fn icmpv4_frame(icmp_type: u8, code: u8) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IPV4,
        &ipv4(1, &[], 0, &icmp(icmp_type, code, &body_v4(icmp_type))),
    )
}

/// One IPv6 extension header with `next` and a body padded to the header's unit.
pub struct Ext {
    pub kind: u8,
    pub body: Vec<u8>,
}

impl Ext {
    /// Hop-by-hop or destination options carrying PadN, `units` × 8 bytes long.
    pub fn options(kind: u8, units: usize) -> Self {
        let mut body = vec![0u8; units * 8 - 2];
        body[0] = 1; // PadN
        body[1] = (body.len() - 2) as u8;
        Self { kind, body }
    }

    /// A fragment header with `offset` in bytes (multiple of 8).
    pub fn fragment(offset: u16, more: bool) -> Self {
        let field = (offset / 8) << 3 | u16::from(more);
        let mut body = field.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 1]);
        Self { kind: 44, body }
    }

    /// An authentication header with `words` 32-bit words of ICV after the fixed part.
    pub fn ah(words: usize) -> Self {
        Self {
            kind: 51,
            body: vec![0u8; 10 + words * 4],
        }
    }
}

/// An IPv6 packet with extension headers and an upper-layer payload.
pub fn ipv6(hop_limit: u8, exts: &[Ext], upper: u8, payload: &[u8]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (index, ext) in exts.iter().enumerate() {
        let next = exts.get(index + 1).map_or(upper, |e| e.kind);
        let total = ext.body.len() + 2;
        let len_field = if ext.kind == 51 {
            total / 4 - 2
        } else if ext.kind == 44 {
            0
        } else {
            total / 8 - 1
        };
        chain.push(next);
        chain.push(len_field as u8);
        chain.extend_from_slice(&ext.body);
    }
    let first = exts.first().map_or(upper, |e| e.kind);
    let payload_len = chain.len() + payload.len();
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&(payload_len as u16).to_be_bytes());
    packet.push(first);
    packet.push(hop_limit);
    packet.extend_from_slice(&V6_PEER);
    packet.extend_from_slice(&V6_GUARD);
    packet.extend_from_slice(&chain);
    packet.extend_from_slice(payload);
    packet
}

/// A complete ICMPv6 frame to the guard (checksum left zero: XDP does not verify it).
pub fn icmpv6_frame(exts: &[Ext], icmp_type: u8, code: u8) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6(
            64,
            exts,
            58,
            &icmp(icmp_type, code, &icmpv6_body(icmp_type)),
        ),
    )
}

/// A TCP SYN segment (20-byte header).
pub fn tcp_syn() -> Vec<u8> {
    let mut segment = vec![0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02];
    segment.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
    segment
}

/// A UDP datagram with a small payload.
pub fn udp() -> Vec<u8> {
    let data = b"hello";
    let length = (8 + data.len()) as u16;
    let mut datagram = vec![0x30, 0x39, 0x00, 0x35];
    datagram.extend_from_slice(&length.to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(data);
    datagram
}

/// An ARP request.
pub fn arp() -> Vec<u8> {
    let mut body = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    body.extend_from_slice(&PEER_MAC);
    body.extend_from_slice(&V4_PEER);
    body.extend_from_slice(&[0; 6]);
    body.extend_from_slice(&V4_GUARD);
    ethernet(&[], ETH_P_ARP, &body)
}

/// Replaces the destination MAC of a frame.
pub fn with_dst_mac(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[..6].copy_from_slice(&mac);
    frame
}

/// An IPv4 ICMP frame from `source` to `destination`.
pub fn icmpv4_between(source: [u8; 4], destination: [u8; 4], icmp_type: u8, code: u8) -> Vec<u8> {
    let mut packet = ipv4(1, &[], 0, &icmp(icmp_type, code, &body_v4(icmp_type)));
    packet[12..16].copy_from_slice(&source);
    packet[16..20].copy_from_slice(&destination);
    packet[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    ethernet(&[], ETH_P_IPV4, &packet)
}

/// An ICMPv6 frame with full control of the addresses, hop limit and the 4 bytes after the
/// checksum (the MTU of a Packet Too Big).
pub fn icmpv6_custom(
    source: [u8; 16],
    destination: [u8; 16],
    hop_limit: u8,
    exts: &[Ext],
    icmp_type: u8,
    code: u8,
    word: [u8; 4],
) -> Vec<u8> {
    let rest = body_v6(icmp_type, word);
    let mut packet = ipv6(hop_limit, exts, 58, &icmp(icmp_type, code, &rest));
    packet[8..24].copy_from_slice(&source);
    packet[24..40].copy_from_slice(&destination);
    ethernet(&[], ETH_P_IPV6, &packet)
}

/// Parses a textual IPv6 address, for readable tests.
pub fn v6(text: &str) -> [u8; 16] {
    text.parse::<std::net::Ipv6Addr>()
        .expect("valid IPv6 literal")
        .octets()
}
