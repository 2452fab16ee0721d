//! ICMP and ICMPv6 type names, as operators spell them in `ping`, `nft` and `tcpdump`.

use crate::{FAMILY_V4, FAMILY_V6};

/// (type, canonical name, aliases) for ICMPv4, from the IANA registry.
const V4_TYPES: &[(u8, &str, &[&str])] = &[
    (0, "echo-reply", &["echoreply", "pong"]),
    (
        3,
        "destination-unreachable",
        &["dest-unreachable", "unreachable", "unreach"],
    ),
    (4, "source-quench", &["sourcequench"]),
    (5, "redirect", &[]),
    (6, "alternate-host-address", &[]),
    (8, "echo-request", &["echo", "ping"]),
    (9, "router-advertisement", &["routeradvert"]),
    (10, "router-solicitation", &["routersolicit"]),
    (11, "time-exceeded", &["ttl-exceeded", "timxceed"]),
    (12, "parameter-problem", &["paramprob"]),
    (13, "timestamp-request", &["timestamp", "tstamp"]),
    (14, "timestamp-reply", &["tstampreply"]),
    (15, "info-request", &["ireq"]),
    (16, "info-reply", &["ireqreply"]),
    (17, "address-mask-request", &["mask-request", "maskreq"]),
    (18, "address-mask-reply", &["mask-reply", "maskreply"]),
    (30, "traceroute", &[]),
    (42, "extended-echo-request", &[]),
    (43, "extended-echo-reply", &[]),
];

/// (type, canonical name, aliases) for ICMPv6, from the IANA registry.
const V6_TYPES: &[(u8, &str, &[&str])] = &[
    (
        1,
        "destination-unreachable",
        &["dest-unreachable", "unreachable"],
    ),
    (2, "packet-too-big", &["too-big", "ptb"]),
    (3, "time-exceeded", &["ttl-exceeded"]),
    (4, "parameter-problem", &[]),
    (100, "private-experimentation-100", &[]),
    (101, "private-experimentation-101", &[]),
    (127, "reserved-error-expansion", &[]),
    (128, "echo-request", &["echo", "ping"]),
    (129, "echo-reply", &["echoreply", "pong"]),
    (130, "mld-listener-query", &["multicast-listener-query"]),
    (131, "mld-listener-report", &["multicast-listener-report"]),
    (
        132,
        "mld-listener-done",
        &["mld-listener-reduction", "multicast-listener-done"],
    ),
    (133, "router-solicitation", &["nd-router-solicit"]),
    (134, "router-advertisement", &["nd-router-advert"]),
    (
        135,
        "neighbor-solicitation",
        &["nd-neighbor-solicit", "neighbour-solicitation"],
    ),
    (
        136,
        "neighbor-advertisement",
        &["nd-neighbor-advert", "neighbour-advertisement"],
    ),
    (137, "redirect", &["nd-redirect"]),
    (138, "router-renumbering", &[]),
    (139, "node-information-query", &["ni-query"]),
    (140, "node-information-response", &["ni-response"]),
    (141, "inverse-nd-solicitation", &["ind-neighbor-solicit"]),
    (142, "inverse-nd-advertisement", &["ind-neighbor-advert"]),
    (143, "mld2-listener-report", &["mldv2-listener-report"]),
    (144, "home-agent-discovery-request", &[]),
    (145, "home-agent-discovery-reply", &[]),
    (146, "mobile-prefix-solicitation", &[]),
    (147, "mobile-prefix-advertisement", &[]),
    (148, "certification-path-solicitation", &[]),
    (149, "certification-path-advertisement", &[]),
    (151, "multicast-router-advertisement", &[]),
    (152, "multicast-router-solicitation", &[]),
    (153, "multicast-router-termination", &[]),
    (155, "rpl-control", &[]),
    (160, "extended-echo-request", &[]),
    (161, "extended-echo-reply", &[]),
    (200, "private-experimentation-200", &[]),
    (201, "private-experimentation-201", &[]),
    (255, "reserved-info-expansion", &[]),
];

const fn table(family: u8) -> &'static [(u8, &'static str, &'static [&'static str])] {
    if family == FAMILY_V4 {
        V4_TYPES
    } else {
        V6_TYPES
    }
}

/// Canonical name of a type, or `None` for unassigned types.
pub fn type_name(family: u8, icmp_type: u8) -> Option<&'static str> {
    table(family)
        .iter()
        .find(|(number, _, _)| *number == icmp_type)
        .map(|(_, name, _)| *name)
}

/// The type a name (canonical or alias, case-insensitive, `_` accepted for `-`) stands for
/// in a family.
pub fn type_by_name(family: u8, name: &str) -> Option<u8> {
    table(family)
        .iter()
        .find(|(_, canonical, aliases)| {
            same_name(canonical, name) || aliases.iter().any(|alias| same_name(alias, name))
        })
        .map(|(number, _, _)| *number)
}

/// Every (family, type, canonical name) we know, v4 first.
pub fn known_types() -> impl Iterator<Item = (u8, u8, &'static str)> {
    V4_TYPES
        .iter()
        .map(|(number, name, _)| (FAMILY_V4, *number, *name))
        .chain(
            V6_TYPES
                .iter()
                .map(|(number, name, _)| (FAMILY_V6, *number, *name)),
        )
}

/// Whether `given` spells the name `known` (lower case, words joined by `-`) as users may
/// type it: in any case, with `_` for `-`.
pub fn same_name(known: &str, given: &str) -> bool {
    known.len() == given.len()
        && known
            .bytes()
            .zip(given.bytes())
            .all(|(k, g)| k == g.to_ascii_lowercase() || (k == b'-' && g == b'_'))
}

/// Short family label used in JSON and tables.
pub const fn family_label(family: u8) -> &'static str {
    if family == FAMILY_V4 { "v4" } else { "v6" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (family, number, name) in known_types() {
            assert_eq!(type_by_name(family, name), Some(number), "{name}");
            assert_eq!(type_name(family, number), Some(name));
        }
    }

    #[test]
    fn aliases_and_spelling() {
        assert_eq!(type_by_name(FAMILY_V4, "dest-unreachable"), Some(3));
        assert_eq!(type_by_name(FAMILY_V4, "Echo_Request"), Some(8));
        assert_eq!(type_by_name(FAMILY_V6, "echo-request"), Some(128));
        assert_eq!(type_by_name(FAMILY_V6, "nd-neighbor-solicit"), Some(135));
        assert_eq!(type_by_name(FAMILY_V6, "packet-too-big"), Some(2));
        assert_eq!(type_by_name(FAMILY_V4, "packet-too-big"), None);
        assert_eq!(type_by_name(FAMILY_V4, "timestamp-request"), Some(13));
        assert_eq!(type_by_name(FAMILY_V4, "echo-requestx"), None);
    }

    #[test]
    fn unassigned_types_have_no_name() {
        assert_eq!(type_name(FAMILY_V4, 1), None);
        assert_eq!(type_name(FAMILY_V6, 5), None);
    }

    #[test]
    fn names_are_unique_per_family() {
        for family in [FAMILY_V4, FAMILY_V6] {
            let mut names: [&str; 64] = [""; 64];
            let mut count = 0;
            for (_, name, aliases) in table(family) {
                for candidate in core::iter::once(name).chain(aliases.iter()) {
                    assert!(!names[..count].contains(candidate), "{candidate} twice");
                    names[count] = candidate;
                    count += 1;
                }
            }
        }
    }
}
