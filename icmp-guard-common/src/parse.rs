//! Header rules that do not need the packet itself: constants, length arithmetic and the
//! checks that decide whether an IP header is acceptable. The XDP program's parser reads
//! the bytes and asks these functions what they mean.

/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q (customer) VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (service, QinQ outer) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88a8;

/// Length of an Ethernet header without tags.
pub const ETH_HLEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_HLEN: usize = 4;
/// VLAN tags we look through. A frame that carries IP under more tags is dropped as
/// malformed: no switch of ours produces it, and a filter that stops looking is a bypass.
pub const MAX_VLAN_TAGS: usize = 2;
/// Tags we peek through to learn whether an over-deep stack carries IP. A stack deeper
/// than this is dropped whatever it carries.
pub const VLAN_PEEK_TAGS: usize = 8;

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IPv6 next-header value of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 hop-by-hop options.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// IPv6 routing header.
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 fragment header.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// Authentication header (length in 4-octet units, RFC 4302).
pub const IPPROTO_AH: u8 = 51;
/// IPv6 "no next header".
pub const IPPROTO_NONE: u8 = 59;
/// IPv6 destination options.
pub const IPPROTO_DSTOPTS: u8 = 60;

/// Length of an IPv4 header without options.
pub const IPV4_MIN_HLEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;
/// The fixed part of every ICMP and ICMPv6 message: type, code, checksum and 4 bytes whose
/// meaning depends on the type (echo id/seq, MTU, pointer, unused).
pub const ICMP_HLEN: usize = 8;

/// Extension headers walked before giving up. Real traffic carries one or two; RFC 7045
/// and RFC 8504 let a host cap the chain, and we drop longer chains as malformed.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Largest IPv4 datagram; a fragment that would reassemble past it is a ping of death.
pub const IPV4_MAX_DATAGRAM: u32 = 65_535;

/// True for the EtherTypes of VLAN tags we walk through.
#[inline(always)]
pub const fn is_vlan(ether_type: u16) -> bool {
    ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD
}

/// Shape of an IPv4 header that passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Shape {
    /// Header length in bytes, from IHL (20..=60).
    pub header_len: usize,
    /// Payload length in bytes (total length minus header length).
    pub payload_len: usize,
    /// Fragment offset in bytes.
    pub fragment_offset: u32,
    /// More-fragments flag.
    pub more_fragments: bool,
}

impl Ipv4Shape {
    /// True when this fragment does not start the datagram and so carries no ICMP header.
    pub const fn is_non_first_fragment(&self) -> bool {
        self.fragment_offset != 0
    }

    /// True when the fragment would reassemble past 65,535 bytes (ping of death).
    pub const fn overflows_datagram(&self) -> bool {
        self.fragment_offset + self.payload_len as u32 + self.header_len as u32 > IPV4_MAX_DATAGRAM
    }
}

/// Checks an IPv4 header from its first byte (version/IHL), total length and flags/offset
/// field against the bytes the frame holds from the start of the IP header.
///
/// Rejected: version other than 4, IHL below 5, total length shorter than the header or
/// longer than the frame. Ethernet padding after the datagram is allowed.
#[inline(always)]
pub const fn check_ipv4(
    version_ihl: u8,
    total_len: u16,
    flags_fragment: u16,
    available: usize,
) -> Option<Ipv4Shape> {
    if version_ihl >> 4 != 4 {
        return None;
    }
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if header_len < IPV4_MIN_HLEN {
        return None;
    }
    let total_len = total_len as usize;
    if total_len < header_len || total_len > available {
        return None;
    }
    Some(Ipv4Shape {
        header_len,
        payload_len: total_len - header_len,
        fragment_offset: ((flags_fragment & 0x1fff) as u32) * 8,
        more_fragments: flags_fragment & 0x2000 != 0,
    })
}

/// Checks the fixed IPv6 header: version 6, payload length within the frame. A payload
/// length of zero (jumbogram) has no place on the links XDP sees and is rejected.
#[inline(always)]
pub const fn check_ipv6(version_byte: u8, payload_len: u16, available: usize) -> bool {
    version_byte >> 4 == 6
        && payload_len != 0
        && available >= IPV6_HLEN
        && (payload_len as usize) <= available - IPV6_HLEN
}

/// True for the extension headers we walk (hop-by-hop, routing, fragment, destination
/// options, AH).
#[inline(always)]
pub const fn is_ipv6_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DSTOPTS | IPPROTO_AH
    )
}

/// Length in bytes of an extension header from its second byte. AH counts 4-octet units
/// minus 2 (RFC 4302 §2.2); the others count 8-octet units beyond the first 8 (RFC 8200);
/// the fragment header is always 8 bytes.
#[inline(always)]
pub const fn ipv6_extension_len(next_header: u8, len_field: u8) -> usize {
    match next_header {
        IPPROTO_FRAGMENT => 8,
        IPPROTO_AH => (len_field as usize + 2) * 4,
        _ => (len_field as usize + 1) * 8,
    }
}

/// What the IPv6 extension headers walked so far allow next (RFC 8200 §4.1): the
/// Hop-by-Hop Options header only right after the IPv6 header, Destination Options at most
/// twice, every other kind at most once. Starts at [`ExtensionOrder::START`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionOrder(u16);

impl ExtensionOrder {
    /// Before the first extension header.
    pub const START: Self = Self(0);

    /// The state as a number, to keep where the verifier does not follow it (the XDP
    /// parser keeps it in map memory: tracked in a register, its every value would be a
    /// state of its own in the walk).
    #[inline(always)]
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The state [`ExtensionOrder::bits`] gave. Any number is a state: unknown bits only
    /// make headers refused, never allowed.
    #[inline(always)]
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits)
    }

    const HOP_BY_HOP: u16 = 1;
    const ROUTING: u16 = 2;
    const FRAGMENT: u16 = 4;
    const AH: u16 = 8;
    /// Any header walked: hop-by-hop is no longer allowed.
    const WALKED: u16 = 16;
    /// Destination Options headers seen, counted from this bit.
    const DESTINATION_ONE: u16 = 256;

    /// The order after an extension header of kind `next_header`, or `None` when the
    /// header breaks RFC 8200's order.
    #[inline(always)]
    pub const fn after(self, next_header: u8) -> Option<Self> {
        let state = self.0;
        let bit = match next_header {
            IPPROTO_HOPOPTS => {
                if state & Self::WALKED != 0 {
                    return None;
                }
                Self::HOP_BY_HOP
            }
            IPPROTO_DSTOPTS => {
                if state >= 2 * Self::DESTINATION_ONE {
                    return None;
                }
                return Some(Self((state + Self::DESTINATION_ONE) | Self::WALKED));
            }
            IPPROTO_ROUTING => Self::ROUTING,
            IPPROTO_FRAGMENT => Self::FRAGMENT,
            _ => Self::AH,
        };
        if state & bit != 0 {
            None
        } else {
            Some(Self(state | bit | Self::WALKED))
        }
    }
}

/// True when an ICMP message whose data (the bytes after its fixed 8-byte header) is
/// `data_len` bytes long and starts with `first_byte` embeds a full IP header of `family`
/// plus 8 bytes of what followed it: what every ICMP error must carry (RFC 792, RFC 1122
/// §3.2.2, RFC 4443 §2.4).
#[inline(always)]
pub const fn embeds_header(family: u8, first_byte: u8, data_len: usize) -> bool {
    if family == crate::FAMILY_V4 {
        let header_len = ((first_byte & 0x0f) as usize) * 4;
        first_byte >> 4 == 4 && header_len >= IPV4_MIN_HLEN && data_len >= header_len + 8
    } else {
        first_byte >> 4 == 6 && data_len >= IPV6_HLEN + 8
    }
}

/// Fragment offset in bytes and more-fragments flag from an IPv6 fragment header's
/// offset field (bytes 2..4, network order).
#[inline(always)]
pub const fn ipv6_fragment(offset_field: u16) -> (u32, bool) {
    (((offset_field >> 3) as u32) * 8, offset_field & 1 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_honours_ihl() {
        let shape = check_ipv4(0x46, 40, 0, 40).expect("IHL 6 is valid");
        assert_eq!(shape.header_len, 24);
        assert_eq!(shape.payload_len, 16);
        assert_eq!(check_ipv4(0x4f, 60, 0, 60).map(|s| s.header_len), Some(60));
    }

    #[test]
    fn ipv4_rejects_bad_headers() {
        assert_eq!(check_ipv4(0x44, 40, 0, 40), None, "IHL 4");
        assert_eq!(
            check_ipv4(0x65, 40, 0, 40),
            None,
            "version 6 in an IPv4 frame"
        );
        assert_eq!(
            check_ipv4(0x45, 19, 0, 40),
            None,
            "total length below header"
        );
        assert_eq!(
            check_ipv4(0x45, 41, 0, 40),
            None,
            "total length past the frame"
        );
        assert!(
            check_ipv4(0x45, 28, 0, 46).is_some(),
            "Ethernet padding is fine"
        );
    }

    #[test]
    fn ipv4_fragments() {
        let first = check_ipv4(0x45, 1500, 0x2000, 1500).expect("valid");
        assert!(first.more_fragments && !first.is_non_first_fragment());
        let later = check_ipv4(0x45, 1500, 185, 1500).expect("valid");
        assert!(later.is_non_first_fragment());
        assert_eq!(later.fragment_offset, 1480);
        assert!(!later.overflows_datagram());
    }

    #[test]
    fn ping_of_death_is_detected() {
        // Largest offset (8191 * 8 = 65528) plus 20 bytes of payload overflows.
        let pod = check_ipv4(0x45, 40, 0x1fff, 40).expect("header itself is valid");
        assert!(pod.overflows_datagram());
        // The last legal fragment ends exactly at 65535: offset 65512, header 20, data 3.
        let last = check_ipv4(0x45, 20 + 3, 0x1ffd, 23).expect("valid");
        assert!(!last.overflows_datagram());
    }

    #[test]
    fn ipv6_header_checks() {
        assert!(check_ipv6(0x60, 8, 48));
        assert!(!check_ipv6(0x40, 8, 48), "version 4 in an IPv6 frame");
        assert!(!check_ipv6(0x60, 9, 48), "payload past the frame");
        assert!(!check_ipv6(0x60, 0, 39), "shorter than the fixed header");
        assert!(!check_ipv6(0x60, 0, 48), "payload length 0 (jumbogram)");
    }

    #[test]
    fn extension_lengths() {
        assert_eq!(ipv6_extension_len(IPPROTO_HOPOPTS, 0), 8);
        assert_eq!(ipv6_extension_len(IPPROTO_DSTOPTS, 1), 16);
        assert_eq!(ipv6_extension_len(IPPROTO_ROUTING, 2), 24);
        assert_eq!(ipv6_extension_len(IPPROTO_FRAGMENT, 200), 8);
        assert_eq!(
            ipv6_extension_len(IPPROTO_AH, 4),
            24,
            "AH counts 32-bit words"
        );
        assert!(is_ipv6_extension(IPPROTO_AH));
        assert!(!is_ipv6_extension(IPPROTO_ICMPV6));
        assert!(!is_ipv6_extension(IPPROTO_NONE));
    }

    #[test]
    fn extension_headers_keep_rfc_8200_order() {
        let walk = |kinds: &[u8]| {
            let mut order = ExtensionOrder::START;
            for kind in kinds {
                order = order.after(*kind)?;
            }
            Some(order)
        };
        assert!(
            walk(&[
                IPPROTO_HOPOPTS,
                IPPROTO_DSTOPTS,
                IPPROTO_ROUTING,
                IPPROTO_FRAGMENT,
                IPPROTO_AH,
                IPPROTO_DSTOPTS
            ])
            .is_some()
        );
        assert!(
            walk(&[IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS]).is_none(),
            "destination options three times"
        );
        assert!(
            walk(&[IPPROTO_DSTOPTS, IPPROTO_HOPOPTS]).is_none(),
            "hop-by-hop not first"
        );
        assert!(
            walk(&[IPPROTO_HOPOPTS, IPPROTO_HOPOPTS]).is_none(),
            "hop-by-hop twice"
        );
        for kind in [IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_AH] {
            assert!(walk(&[kind]).is_some());
            assert!(walk(&[kind, kind]).is_none(), "{kind} twice");
        }
    }

    #[test]
    fn errors_must_embed_a_header_and_eight_bytes() {
        use crate::{FAMILY_V4, FAMILY_V6};
        assert!(embeds_header(FAMILY_V4, 0x45, 28));
        assert!(
            !embeds_header(FAMILY_V4, 0x45, 27),
            "only 7 bytes after the header"
        );
        assert!(embeds_header(FAMILY_V4, 0x46, 32));
        assert!(!embeds_header(FAMILY_V4, 0x46, 31), "IHL 6 needs 24 + 8");
        assert!(!embeds_header(FAMILY_V4, 0x44, 28), "IHL 4");
        assert!(
            !embeds_header(FAMILY_V4, 0x65, 60),
            "an IPv6 header in an ICMPv4 error"
        );
        assert!(embeds_header(FAMILY_V6, 0x60, 48));
        assert!(!embeds_header(FAMILY_V6, 0x60, 47));
        assert!(
            !embeds_header(FAMILY_V6, 0x45, 60),
            "an IPv4 header in an ICMPv6 error"
        );
    }

    #[test]
    fn ipv6_fragment_field() {
        assert_eq!(ipv6_fragment(0x0001), (0, true));
        assert_eq!(ipv6_fragment(185 << 3), (1480, false));
    }

    #[test]
    fn vlan_ethertypes() {
        assert!(is_vlan(ETH_P_8021Q) && is_vlan(ETH_P_8021AD));
        assert!(!is_vlan(ETH_P_IPV4));
    }
}
