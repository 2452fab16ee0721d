//! The policy engine through BPF_PROG_TEST_RUN: every row of the safe default profile, the
//! allow/deny lists, smurf destinations, per-code rules, and atomic whole-policy swaps under
//! concurrent classification.

use std::sync::atomic::{AtomicBool, Ordering};

use icmp_guard::policy::{Policy, RuleSpec};
use icmp_guard_common::{DropReason, FAMILY_V4, FAMILY_V6};

use crate::{
    frames::*,
    harness::{self, Expect, Guard, XDP_DROP, XDP_PASS, pass_all_but, with_rules},
};

const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const MULTICAST_MAC_V4: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
const LINK_LOCAL: &str = "fe80::2";

#[test]
fn every_icmpv4_row_of_the_default_profile() {
    root_or_skip!("every_icmpv4_row_of_the_default_profile");
    let mut guard = Guard::load(&Policy::default_profile());
    let unicast = |t, c| icmpv4_frame(t, c);
    let policy = Expect::Drop(DropReason::Policy);
    let smurf = Expect::Drop(DropReason::Smurf);
    let mut rows: Vec<(String, Vec<u8>, u8, Expect)> = Vec::new();
    for code in 0..=15 {
        rows.push((
            format!("3/{code} destination unreachable"),
            unicast(3, code),
            3,
            Expect::Pass,
        ));
    }
    for (t, c) in [(11, 0), (11, 1), (12, 0), (12, 1), (12, 2)] {
        rows.push((
            format!("{t}/{c} (traceroute, RFC 1122)"),
            unicast(t, c),
            t,
            Expect::Pass,
        ));
    }
    rows.push((
        "8 unicast echo request (limit)".into(),
        unicast(8, 0),
        8,
        Expect::Pass,
    ));
    rows.push((
        "0 echo reply (ceiling)".into(),
        unicast(0, 0),
        0,
        Expect::Pass,
    ));
    rows.push((
        "8 to ff:ff:ff:ff:ff:ff with a unicast IP".into(),
        with_dst_mac(unicast(8, 0), BROADCAST_MAC),
        8,
        smurf,
    ));
    rows.push((
        "8 to a multicast MAC".into(),
        with_dst_mac(unicast(8, 0), MULTICAST_MAC_V4),
        8,
        smurf,
    ));
    rows.push((
        "8 to 255.255.255.255".into(),
        icmpv4_between(V4_PEER, [255; 4], 8, 0),
        8,
        smurf,
    ));
    rows.push((
        "8 to 224.0.0.1".into(),
        icmpv4_between(V4_PEER, [224, 0, 0, 1], 8, 0),
        8,
        smurf,
    ));
    rows.push((
        "13 to 255.255.255.255".into(),
        icmpv4_between(V4_PEER, [255; 4], 13, 0),
        13,
        smurf,
    ));
    rows.push((
        "13 to a broadcast MAC".into(),
        with_dst_mac(unicast(13, 0), BROADCAST_MAC),
        13,
        smurf,
    ));
    rows.push((
        "0 echo reply to a broadcast MAC is not an amplifier request".into(),
        with_dst_mac(unicast(0, 0), BROADCAST_MAC),
        0,
        Expect::Pass,
    ));
    for (t, why) in [
        (5, "redirect"),
        (4, "source quench, RFC 6633"),
        (6, "deprecated, RFC 6918"),
        (15, "deprecated"),
        (16, "deprecated"),
        (17, "deprecated"),
        (18, "deprecated"),
        (30, "deprecated"),
        (31, "deprecated"),
        (39, "deprecated"),
        (13, "timestamp request"),
        (14, "timestamp reply"),
        (9, "router advertisement"),
        (10, "router solicitation"),
        (1, "unassigned"),
        (2, "unassigned"),
        (7, "unassigned"),
        (19, "reserved"),
        (44, "unassigned"),
        (200, "unassigned"),
    ] {
        rows.push((format!("{t} {why}"), unicast(t, 0), t, policy));
    }
    expect_rows(&mut guard, FAMILY_V4, rows);
}

#[test]
fn every_icmpv6_row_of_the_default_profile() {
    root_or_skip!("every_icmpv6_row_of_the_default_profile");
    let mut guard = Guard::load(&Policy::default_profile());
    let peer = V6_PEER;
    let me = V6_GUARD;
    let frame = |t, c| icmpv6_custom(peer, me, 64, &[], t, c, [0; 4]);
    let invalid = Expect::Drop(DropReason::Invalid);
    let policy = Expect::Drop(DropReason::Policy);
    let mut rows: Vec<(String, Vec<u8>, u8, Expect)> = Vec::new();
    for code in 0..=7 {
        rows.push((format!("1/{code}"), frame(1, code), 1, Expect::Pass));
    }
    rows.push((
        "2 MTU 1280".into(),
        icmpv6_custom(peer, me, 64, &[], 2, 0, 1280u32.to_be_bytes()),
        2,
        Expect::Pass,
    ));
    rows.push((
        "2 MTU 1500".into(),
        icmpv6_custom(peer, me, 64, &[], 2, 0, 1500u32.to_be_bytes()),
        2,
        Expect::Pass,
    ));
    rows.push((
        "2 MTU 1279 (RFC 8201)".into(),
        icmpv6_custom(peer, me, 64, &[], 2, 0, 1279u32.to_be_bytes()),
        2,
        invalid,
    ));
    for (t, c) in [(3, 0), (3, 1), (4, 0), (4, 1), (4, 2)] {
        rows.push((format!("{t}/{c}"), frame(t, c), t, Expect::Pass));
    }
    rows.push((
        "50, another error type".into(),
        frame(50, 0),
        50,
        Expect::Pass,
    ));
    rows.push((
        "128 unicast (limit)".into(),
        frame(128, 0),
        128,
        Expect::Pass,
    ));
    rows.push((
        "128 to ff02::1 (link scope: limited, not dropped)".into(),
        icmpv6_custom(peer, v6("ff02::1"), 64, &[], 128, 0, [0; 4]),
        128,
        Expect::Pass,
    ));
    for group in ["ff05::1", "ff0e::1", "ff08::2"] {
        rows.push((
            format!("128 to {group}"),
            icmpv6_custom(peer, v6(group), 64, &[], 128, 0, [0; 4]),
            128,
            Expect::Drop(DropReason::Smurf),
        ));
    }
    rows.push(("129 echo reply".into(), frame(129, 0), 129, Expect::Pass));
    for t in [133, 134, 135, 136, 141, 142] {
        rows.push((
            format!("{t} ND with hop limit 255"),
            icmpv6_custom(v6(LINK_LOCAL), me, 255, &[], t, 0, [0; 4]),
            t,
            Expect::Pass,
        ));
        rows.push((
            format!("{t} ND with hop limit 254 (forwarded, RFC 4861)"),
            icmpv6_custom(v6(LINK_LOCAL), me, 254, &[], t, 0, [0; 4]),
            t,
            invalid,
        ));
        rows.push((
            format!("{t} ND fragmented (RFC 6980)"),
            icmpv6_custom(
                v6(LINK_LOCAL),
                me,
                255,
                &[Ext::fragment(0, true)],
                t,
                0,
                [0; 4],
            ),
            t,
            invalid,
        ));
    }
    rows.push((
        // RFC 6980 §5 covers any Fragment header, atomic ones (RFC 6946) included; Linux
        // marks atomic fragments IP6SKB_FRAGMENTED and drops such ND too.
        "135 ND in an atomic fragment (RFC 6980 §5)".into(),
        icmpv6_custom(
            v6(LINK_LOCAL),
            me,
            255,
            &[Ext::fragment(0, false)],
            135,
            0,
            [0; 4],
        ),
        135,
        invalid,
    ));
    for t in [130, 131, 132, 143] {
        rows.push((
            format!("{t} MLD from link-local, hop limit 1"),
            icmpv6_custom(v6(LINK_LOCAL), v6("ff02::16"), 1, &[], t, 0, [0; 4]),
            t,
            Expect::Pass,
        ));
        // Reports and dones may come from `::` before a host has an address (RFC 3810
        // §5.2.13); a query never may (§5.1.14: discard a query not from link-local).
        rows.push((
            format!("{t} MLD from ::, hop limit 1"),
            icmpv6_custom(v6("::"), v6("ff02::16"), 1, &[], t, 0, [0; 4]),
            t,
            if t == 130 { invalid } else { Expect::Pass },
        ));
        rows.push((
            format!("{t} MLD from a global address"),
            icmpv6_custom(peer, v6("ff02::16"), 1, &[], t, 0, [0; 4]),
            t,
            invalid,
        ));
        rows.push((
            format!("{t} MLD with hop limit 2"),
            icmpv6_custom(v6(LINK_LOCAL), v6("ff02::16"), 2, &[], t, 0, [0; 4]),
            t,
            invalid,
        ));
    }
    for t in [137, 138, 139, 140, 100, 101, 200, 201, 127, 255, 150, 160] {
        rows.push((format!("{t}"), frame(t, 0), t, policy));
    }
    expect_rows(&mut guard, FAMILY_V6, rows);
}

/// Runs each row, (what, frame, type, expectation), as [`Guard::expect`] does.
fn expect_rows(guard: &mut Guard, family: u8, rows: Vec<(String, Vec<u8>, u8, Expect)>) {
    for (what, frame, icmp_type, expect) in rows {
        guard.expect(&what, &frame, family, icmp_type, expect);
    }
}

#[test]
fn deny_and_allow_lists_most_specific_prefix_wins() {
    root_or_skip!("deny_and_allow_lists");
    let mut policy = Policy::default_profile();
    policy.deny.push("192.0.2.0/24".parse().expect("cidr"));
    policy.allow.push("192.0.2.10/32".parse().expect("cidr"));
    policy.deny.push("2001:db8::/64".parse().expect("cidr"));
    let mut guard = Guard::load(&policy);
    let denied = Expect::Drop(DropReason::DenyList);
    guard.expect("denied /24", &icmpv4_frame(0, 0), FAMILY_V4, 0, denied);
    guard.expect(
        "PMTUD from a denied source is dropped too: the operator asked",
        &icmpv4_frame(3, 4),
        FAMILY_V4,
        3,
        denied,
    );
    guard.expect(
        "allowed /32 inside the denied /24",
        &icmpv4_between([192, 0, 2, 10], V4_GUARD, 0, 0),
        FAMILY_V4,
        0,
        Expect::Pass,
    );
    guard.expect(
        "allowed sources still obey type rules",
        &icmpv4_between([192, 0, 2, 10], V4_GUARD, 5, 0),
        FAMILY_V4,
        5,
        Expect::Drop(DropReason::Policy),
    );
    guard.expect(
        "outside every list",
        &icmpv4_between([198, 51, 100, 1], V4_GUARD, 0, 0),
        FAMILY_V4,
        0,
        Expect::Pass,
    );
    guard.expect(
        "denied IPv6 /64",
        &icmpv6_frame(&[], 129, 0),
        FAMILY_V6,
        129,
        denied,
    );
    // Non-ICMP from a denied source is untouched.
    let udp_frame = ethernet(&[], ETH_P_IPV4, &ipv4(17, &[], 0, &udp()));
    assert_eq!(guard.run(&udp_frame).action, XDP_PASS);
    // Invalid packets are invalid whoever sends them.
    let mut broken = icmpv4_between([192, 0, 2, 10], V4_GUARD, 0, 0);
    broken[14] = 0x44;
    assert_eq!(guard.run(&broken).action, XDP_DROP);
}

#[test]
fn per_code_rules_override_their_type() {
    root_or_skip!("per_code_rules_override_their_type");
    let mut policy = Policy::default_profile();
    policy
        .set(FAMILY_V4, 3, Some(1), RuleSpec::DROP, false)
        .expect("3/1 is not protected");
    let policy = with_rules(policy, &[(FAMILY_V4, 13, Some(0), RuleSpec::PASS)]);
    let mut guard = Guard::load(&policy);
    let dropped = Expect::Drop(DropReason::Policy);
    // (type, code, what decides it, expectation)
    let cases = [
        (3, 1, "3/1 code rule", dropped),
        (3, 4, "3/4 keeps the type rule", Expect::Pass),
        (13, 0, "13/0 code rule", Expect::Pass),
        (13, 1, "13/1 keeps the type rule", dropped),
    ];
    for (icmp_type, code, what, expect) in cases {
        let frame = icmpv4_frame(icmp_type, code);
        guard.expect(what, &frame, FAMILY_V4, icmp_type, expect);
    }
}

/// Two policies whose every mix gives a verdict neither gives alone: A denies the peer and
/// passes everything else; B lists nobody and drops echo requests by policy. A packet that
/// saw A's lists but B's... any mix of (lists of B, types of A) passes, which no whole
/// policy does.
#[test]
fn whole_policy_swaps_are_atomic_under_concurrent_classification() {
    root_or_skip!("whole_policy_swaps_are_atomic");
    let mut a = Policy::pass_all();
    a.deny.push("192.0.2.2/32".parse().expect("cidr"));
    let b = pass_all_but(&[(FAMILY_V4, 8)]);
    let frame = icmpv4_frame(8, 0);

    let mut guard = Guard::load(&a);
    let (program, maps) = guard.program_and_maps();
    let done = AtomicBool::new(false);
    let flips = 400;
    let total_runs: u64 = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut runs = 0u64;
                    while !done.load(Ordering::Relaxed) {
                        harness::repeat(program, &frame, 64);
                        runs += 64;
                    }
                    runs
                })
            })
            .collect();
        for flip in 0..flips {
            let next = if flip % 2 == 0 { &b } else { &a };
            icmp_guard::policy::apply(maps, next).expect("swap");
        }
        done.store(true, Ordering::Relaxed);
        readers
            .into_iter()
            .map(|reader| reader.join().expect("reader"))
            .sum()
    });
    assert!(total_runs > 0);
    // Every classification was counted under exactly one of the two drop reasons.
    let snapshot = guard.snapshot().of(FAMILY_V4, 8);
    assert_eq!(
        snapshot.dropped(DropReason::DenyList) + snapshot.dropped(DropReason::Policy),
        total_runs,
        "{snapshot:?}"
    );
    assert_eq!(snapshot.passed(), 0);
    eprintln!("{flips} swaps while {total_runs} packets were classified");
}
