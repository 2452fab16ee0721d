//! ICMP code names, as nft and iptables spell them (type names are in
//! [`icmp_guard_common::icmp`], which the kernel side shares).
//!
//! The canonical name of a code is nft's where nft has one (`frag-needed`,
//! `admin-prohibited`, `addr-unreachable`, `policy-fail`), else iptables' (`source-route-failed`,
//! `ttl-zero-during-transit`, `bad-header`); the other spellings are aliases. nft's `icmpx`
//! names, which mean the matching code in each family, are aliases too: `no-route` is v4
//! `net-unreachable` and v6 `no-route`, `host-unreachable` is v4 `host-unreachable` and v6
//! `addr-unreachable`. So `destination-unreachable/admin-prohibited` means 3/13 in v4 and
//! 1/1 in v6, as it does in nft.
//!
//! Names compare as type names do: case-insensitive, `_` accepted for `-`.

use icmp_guard_common::{FAMILY_V4, FAMILY_V6, icmp::same_name};

/// One named code: (family, type, code, canonical name, aliases).
type CodeEntry = (u8, u8, u8, &'static str, &'static [&'static str]);

const CODES: &[CodeEntry] = &[
    // ICMPv4 destination unreachable (RFC 792, RFC 1812, RFC 1191).
    (
        FAMILY_V4,
        3,
        0,
        "net-unreachable",
        &["network-unreachable", "no-route"],
    ),
    (FAMILY_V4, 3, 1, "host-unreachable", &[]),
    (
        FAMILY_V4,
        3,
        2,
        "prot-unreachable",
        &["protocol-unreachable"],
    ),
    (FAMILY_V4, 3, 3, "port-unreachable", &[]),
    (FAMILY_V4, 3, 4, "frag-needed", &["fragmentation-needed"]),
    (FAMILY_V4, 3, 5, "source-route-failed", &[]),
    (FAMILY_V4, 3, 6, "network-unknown", &["net-unknown"]),
    (FAMILY_V4, 3, 7, "host-unknown", &[]),
    (FAMILY_V4, 3, 8, "host-isolated", &[]),
    (FAMILY_V4, 3, 9, "net-prohibited", &["network-prohibited"]),
    (FAMILY_V4, 3, 10, "host-prohibited", &[]),
    (
        FAMILY_V4,
        3,
        11,
        "tos-network-unreachable",
        &["tos-net-unreachable"],
    ),
    (FAMILY_V4, 3, 12, "tos-host-unreachable", &[]),
    (
        FAMILY_V4,
        3,
        13,
        "admin-prohibited",
        &["communication-prohibited"],
    ),
    (FAMILY_V4, 3, 14, "host-precedence-violation", &[]),
    (FAMILY_V4, 3, 15, "precedence-cutoff", &[]),
    // ICMPv4 redirect.
    (FAMILY_V4, 5, 0, "network-redirect", &["net-redirect"]),
    (FAMILY_V4, 5, 1, "host-redirect", &[]),
    (
        FAMILY_V4,
        5,
        2,
        "tos-network-redirect",
        &["tos-net-redirect"],
    ),
    (FAMILY_V4, 5, 3, "tos-host-redirect", &[]),
    // ICMPv4 time exceeded.
    (
        FAMILY_V4,
        11,
        0,
        "ttl-zero-during-transit",
        &["ttl-exceeded-in-transit"],
    ),
    (
        FAMILY_V4,
        11,
        1,
        "ttl-zero-during-reassembly",
        &["reassembly-time-exceeded"],
    ),
    // ICMPv4 parameter problem.
    (
        FAMILY_V4,
        12,
        0,
        "ip-header-bad",
        &["pointer-indicates-error"],
    ),
    (FAMILY_V4, 12, 1, "required-option-missing", &[]),
    (FAMILY_V4, 12, 2, "bad-length", &[]),
    // ICMPv6 destination unreachable (RFC 4443).
    (FAMILY_V6, 1, 0, "no-route", &["net-unreachable"]),
    (
        FAMILY_V6,
        1,
        1,
        "admin-prohibited",
        &["communication-prohibited"],
    ),
    (FAMILY_V6, 1, 2, "beyond-scope", &[]),
    (
        FAMILY_V6,
        1,
        3,
        "addr-unreachable",
        &["address-unreachable", "host-unreachable"],
    ),
    (FAMILY_V6, 1, 4, "port-unreachable", &[]),
    (FAMILY_V6, 1, 5, "policy-fail", &["failed-policy"]),
    (FAMILY_V6, 1, 6, "reject-route", &[]),
    // ICMPv6 time exceeded.
    (
        FAMILY_V6,
        3,
        0,
        "ttl-zero-during-transit",
        &["hop-limit-exceeded"],
    ),
    (
        FAMILY_V6,
        3,
        1,
        "ttl-zero-during-reassembly",
        &["reassembly-time-exceeded"],
    ),
    // ICMPv6 parameter problem.
    (FAMILY_V6, 4, 0, "bad-header", &["erroneous-header"]),
    (
        FAMILY_V6,
        4,
        1,
        "unknown-header-type",
        &["unknown-next-header"],
    ),
    (FAMILY_V6, 4, 2, "unknown-option", &[]),
];

fn matches(entry: &CodeEntry, name: &str) -> bool {
    same_name(entry.3, name) || entry.4.iter().any(|alias| same_name(alias, name))
}

/// The canonical name of (family, type, code), or `None` for a code without one.
pub fn code_name(family: u8, icmp_type: u8, code: u8) -> Option<&'static str> {
    CODES
        .iter()
        .find(|entry| (entry.0, entry.1, entry.2) == (family, icmp_type, code))
        .map(|entry| entry.3)
}

/// The code a name stands for in (family, type).
pub fn code_by_name(family: u8, icmp_type: u8, name: &str) -> Option<u8> {
    CODES
        .iter()
        .find(|entry| (entry.0, entry.1) == (family, icmp_type) && matches(entry, name))
        .map(|entry| entry.2)
}

/// The (type, code) a code name stands for in `family` on its own, as iptables' `--icmp-type
/// port-unreachable` means 3/3: every code name is unique within its family.
pub fn type_and_code_by_name(family: u8, name: &str) -> Option<(u8, u8)> {
    CODES
        .iter()
        .find(|entry| entry.0 == family && matches(entry, name))
        .map(|entry| (entry.1, entry.2))
}

/// The named codes of (family, type): (code, canonical name), by code.
pub fn codes_of(family: u8, icmp_type: u8) -> impl Iterator<Item = (u8, &'static str)> {
    CODES
        .iter()
        .filter(move |entry| (entry.0, entry.1) == (family, icmp_type))
        .map(|entry| (entry.2, entry.3))
}

/// Every named code: (family, type, code, canonical name).
pub fn known_codes() -> impl Iterator<Item = (u8, u8, u8, &'static str)> {
    CODES
        .iter()
        .map(|entry| (entry.0, entry.1, entry.2, entry.3))
}

/// Every spelling of every named code, canonical names and aliases: (family, type, code,
/// spelling).
pub fn known_spellings() -> impl Iterator<Item = (u8, u8, u8, &'static str)> {
    CODES.iter().flat_map(|entry| {
        std::iter::once(entry.3)
            .chain(entry.4.iter().copied())
            .map(|spelling| (entry.0, entry.1, entry.2, spelling))
    })
}

/// "a, b or c": the canonical names of (family, type)'s codes, for messages.
pub fn code_list(family: u8, icmp_type: u8) -> String {
    let names: Vec<&str> = codes_of(family, icmp_type).map(|(_, name)| name).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use icmp_guard_common::icmp;

    use super::*;

    #[test]
    fn nft_and_iptables_spellings_mean_the_same_code() {
        for (family, icmp_type, spellings, code) in [
            (
                FAMILY_V4,
                3,
                &["frag-needed", "fragmentation-needed"][..],
                4,
            ),
            (FAMILY_V4, 3, &["port-unreachable"], 3),
            (
                FAMILY_V4,
                3,
                &["admin-prohibited", "communication-prohibited"],
                13,
            ),
            (FAMILY_V4, 3, &["net-unreachable", "network-unreachable"], 0),
            (
                FAMILY_V4,
                3,
                &["prot-unreachable", "protocol-unreachable"],
                2,
            ),
            (FAMILY_V4, 3, &["TOS-network-unreachable"], 11),
            (FAMILY_V4, 5, &["host-redirect"], 1),
            (FAMILY_V4, 11, &["ttl-zero-during-transit"], 0),
            (FAMILY_V4, 12, &["required-option-missing"], 1),
            (FAMILY_V6, 1, &["no-route"], 0),
            (
                FAMILY_V6,
                1,
                &["admin-prohibited", "communication-prohibited"],
                1,
            ),
            (
                FAMILY_V6,
                1,
                &["addr-unreachable", "address-unreachable"],
                3,
            ),
            (FAMILY_V6, 1, &["policy-fail", "failed-policy"], 5),
            (FAMILY_V6, 1, &["reject-route"], 6),
            (FAMILY_V6, 3, &["ttl-zero-during-reassembly"], 1),
            (FAMILY_V6, 4, &["unknown-option"], 2),
        ] {
            for spelling in spellings {
                assert_eq!(
                    code_by_name(family, icmp_type, spelling),
                    Some(code),
                    "{spelling}"
                );
            }
        }
        assert_eq!(code_by_name(FAMILY_V4, 3, "Frag_Needed"), Some(4));
        assert_eq!(code_by_name(FAMILY_V6, 1, "frag-needed"), None);
        assert_eq!(code_by_name(FAMILY_V4, 11, "frag-needed"), None);
    }

    #[test]
    fn icmpx_names_mean_the_matching_code_in_each_family() {
        for (name, v4, v6) in [
            ("no-route", 0, 0),
            ("port-unreachable", 3, 4),
            ("host-unreachable", 1, 3),
            ("admin-prohibited", 13, 1),
        ] {
            assert_eq!(code_by_name(FAMILY_V4, 3, name), Some(v4), "{name}");
            assert_eq!(code_by_name(FAMILY_V6, 1, name), Some(v6), "{name}");
        }
    }

    #[test]
    fn names_round_trip_and_are_unique_per_family() {
        for (family, icmp_type, code, name) in known_codes() {
            assert_eq!(code_name(family, icmp_type, code), Some(name));
            assert_eq!(code_by_name(family, icmp_type, name), Some(code), "{name}");
            assert!(
                icmp::type_name(family, icmp_type).is_some(),
                "{name} belongs to a named type"
            );
        }
        // Every spelling names one (type, code) in its family, and none is a type name
        // there: that is what lets a code name stand on its own, as in iptables.
        for family in [FAMILY_V4, FAMILY_V6] {
            let mut seen: Vec<&str> = Vec::new();
            for entry in CODES.iter().filter(|entry| entry.0 == family) {
                for spelling in std::iter::once(&entry.3).chain(entry.4.iter()) {
                    assert!(!seen.contains(spelling), "{spelling} twice");
                    assert_eq!(
                        icmp::type_by_name(family, spelling),
                        None,
                        "{spelling} is a type name too"
                    );
                    seen.push(spelling);
                }
            }
        }
        assert_eq!(
            type_and_code_by_name(FAMILY_V4, "fragmentation-needed"),
            Some((3, 4))
        );
        assert_eq!(
            type_and_code_by_name(FAMILY_V6, "port-unreachable"),
            Some((1, 4))
        );
        assert_eq!(type_and_code_by_name(FAMILY_V6, "frag-needed"), None);
    }

    #[test]
    fn the_list_for_messages_reads_as_a_sentence() {
        assert_eq!(
            code_list(FAMILY_V6, 4),
            "bad-header, unknown-header-type or unknown-option"
        );
        assert_eq!(code_list(FAMILY_V4, 8), "");
    }
}
