//! Verdict tests: the real XDP program, loaded into the running kernel with private maps,
//! fed hand-built frames through BPF_PROG_TEST_RUN; verdicts, output bytes and counters are
//! checked.

use icmp_guard::{bpf::Instance, observe::stats};
use icmp_guard_common::{DropReason, FAMILY_V4, FAMILY_V6, config, global};

use crate::{
    frames::*,
    harness::{Guard, XDP_DROP, XDP_PASS, pass_all_but},
};

fn guard_dropping(drops: &[(u8, u8)]) -> Guard {
    Guard::load(&pass_all_but(drops))
}

#[test]
fn echo_request_and_reply_pass_and_are_counted_per_family_and_type() {
    root_or_skip!("echo_request_and_reply_pass");
    let mut guard = guard_dropping(&[]);
    let cases = [
        (icmpv4_frame(8, 0), FAMILY_V4, 8),
        (icmpv4_frame(0, 0), FAMILY_V4, 0),
        (icmpv6_frame(&[], 128, 0), FAMILY_V6, 128),
        (icmpv6_frame(&[], 129, 0), FAMILY_V6, 129),
    ];
    for (frame, _, _) in &cases {
        guard.assert_passes_unchanged(frame, "default-pass ICMP");
    }
    guard.assert_passes_unchanged(&cases[0].0, "a second echo request");
    let snapshot = guard.snapshot();
    for (index, (frame, family, icmp_type)) in cases.iter().enumerate() {
        let counters = snapshot.of(*family, *icmp_type);
        let expected = if index == 0 { 2 } else { 1 };
        assert_eq!(
            counters.passed(),
            expected,
            "family {family} type {icmp_type}"
        );
        assert_eq!(counters.packets(), expected);
        assert_eq!(counters.bytes(), expected * frame.len() as u64);
    }
    assert_eq!(snapshot.icmp.len(), 4, "nothing else was counted");
}

#[test]
fn policy_drop_drops_only_that_type_and_counts_the_reason() {
    root_or_skip!("policy_drop_drops_only_that_type");
    let mut guard = guard_dropping(&[(FAMILY_V4, 8)]);
    assert_eq!(guard.run(&icmpv4_frame(8, 0)).action, XDP_DROP);
    guard.assert_passes_unchanged(&icmpv4_frame(0, 0), "echo reply");
    guard.assert_passes_unchanged(&icmpv6_frame(&[], 128, 0), "ICMPv6 echo request");
    let snapshot = guard.snapshot();
    assert_eq!(snapshot.of(FAMILY_V4, 8).dropped(DropReason::Policy), 1);
    assert_eq!(snapshot.of(FAMILY_V4, 8).passed(), 0);
    // Back to pass on the next packet, without reloading.
    guard.apply(&pass_all_but(&[]));
    guard.assert_passes_unchanged(&icmpv4_frame(8, 0), "echo request after pass");
}

#[test]
fn ipv4_options_move_the_icmp_header() {
    root_or_skip!("ipv4_options_move_the_icmp_header");
    let mut guard = guard_dropping(&[(FAMILY_V4, 8)]);
    // The option bytes sit where a fixed-offset parser would look for the ICMP type: 8
    // (echo request). The real message behind the options is an echo reply.
    for option_words in 1..=10usize {
        let options = vec![8u8; option_words * 4];
        let packet = ipv4(1, &options, 0, &icmp(0, 0, &echo_body()));
        let frame = ethernet(&[], ETH_P_IPV4, &packet);
        guard.assert_passes_unchanged(&frame, "echo reply behind IP options");
        let request = ethernet(
            &[],
            ETH_P_IPV4,
            &ipv4(1, &options, 0, &icmp(8, 0, &echo_body())),
        );
        assert_eq!(
            guard.run(&request).action,
            XDP_DROP,
            "IHL {}",
            5 + option_words
        );
    }
    let snapshot = guard.snapshot();
    assert_eq!(snapshot.of(FAMILY_V4, 0).passed(), 10);
    assert_eq!(snapshot.of(FAMILY_V4, 8).dropped(DropReason::Policy), 10);
}

#[test]
fn vlan_and_qinq_are_looked_through_and_deeper_stacks_are_dropped() {
    root_or_skip!("vlan_and_qinq");
    let mut guard = guard_dropping(&[(FAMILY_V4, 8)]);
    let echo = ipv4(1, &[], 0, &icmp(8, 0, &echo_body()));
    let one = ethernet(&[(ETH_P_8021Q, 10)], ETH_P_IPV4, &echo);
    let two = ethernet(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10)], ETH_P_IPV4, &echo);
    let three = ethernet(
        &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10), (ETH_P_8021Q, 11)],
        ETH_P_IPV4,
        &echo,
    );
    assert_eq!(
        guard.run(&one).action,
        XDP_DROP,
        "echo under one tag is classified"
    );
    assert_eq!(
        guard.run(&two).action,
        XDP_DROP,
        "echo under QinQ is classified"
    );
    assert_eq!(
        guard.run(&three).action,
        XDP_DROP,
        "IP under three tags is refused"
    );
    let reply = ipv4(1, &[], 0, &icmp(0, 0, &echo_body()));
    guard.assert_passes_unchanged(
        &ethernet(
            &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10)],
            ETH_P_IPV4,
            &reply,
        ),
        "echo reply under QinQ",
    );
    let deep_arp = ethernet(
        &[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)],
        ETH_P_ARP,
        &arp()[14..],
    );
    guard.assert_passes_unchanged(&deep_arp, "non-IP under three tags");
    let snapshot = guard.snapshot();
    assert_eq!(snapshot.of(FAMILY_V4, 8).dropped(DropReason::Policy), 2);
    assert_eq!(snapshot.of(FAMILY_V4, 0).passed(), 1);
    assert_eq!(snapshot.global(global::MALFORMED_DROPPED).packets, 1);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    root_or_skip!("ipv6_extension_headers_are_walked");
    let mut guard = guard_dropping(&[(FAMILY_V6, 128)]);
    let chains: Vec<Vec<Ext>> = vec![
        vec![Ext::options(0, 1)],
        vec![Ext::options(0, 1), Ext::options(60, 2)],
        vec![Ext::options(0, 1), Ext::ah(3), Ext::options(60, 1)],
        vec![Ext::fragment(0, false)], // atomic fragment (RFC 6946): classified
        vec![Ext::options(60, 4), Ext::fragment(0, true)], // first fragment: classified
    ];
    for chain in &chains {
        assert_eq!(
            guard.run(&icmpv6_frame(chain, 128, 0)).action,
            XDP_DROP,
            "echo request behind {} extension headers",
            chain.len()
        );
        guard.assert_passes_unchanged(&icmpv6_frame(chain, 129, 0), "echo reply behind headers");
    }
    let snapshot = guard.snapshot();
    assert_eq!(
        snapshot.of(FAMILY_V6, 128).dropped(DropReason::Policy),
        chains.len() as u64
    );
    assert_eq!(snapshot.of(FAMILY_V6, 129).passed(), chains.len() as u64);
}

#[test]
fn ipv6_chains_past_the_bound_or_the_packet_are_malformed() {
    root_or_skip!("ipv6_chains_past_the_bound");
    let mut guard = guard_dropping(&[]);
    let long: Vec<Ext> = (0..9).map(|_| Ext::options(60, 1)).collect();
    assert_eq!(
        guard.run(&icmpv6_frame(&long, 129, 0)).action,
        XDP_DROP,
        "9 headers"
    );
    // The longest chain RFC 8200 §4.1 allows: every kind once, destination options twice.
    let routing = Ext {
        kind: 43,
        body: vec![2, 0, 0, 0, 0, 0],
    };
    let longest = [
        Ext::options(0, 1),
        Ext::options(60, 1),
        routing,
        Ext::fragment(0, false),
        Ext::ah(1),
        Ext::options(60, 1),
    ];
    guard.assert_passes_unchanged(&icmpv6_frame(&longest, 129, 0), "6 headers in order");

    // A destination-options header whose length runs past the payload.
    let mut frame = icmpv6_frame(&[Ext::options(60, 1)], 129, 0);
    frame[14 + 40 + 1] = 200;
    assert_eq!(guard.run(&frame).action, XDP_DROP, "header past the packet");

    let snapshot = guard.snapshot();
    assert_eq!(snapshot.global(global::MALFORMED_DROPPED).packets, 2);
    assert_eq!(snapshot.of(FAMILY_V6, 129).passed(), 1);
}

#[test]
fn fragments_are_never_read_as_icmp_headers() {
    root_or_skip!("fragments_are_never_read_as_icmp");
    let mut guard = guard_dropping(&[(FAMILY_V4, 8), (FAMILY_V6, 128)]);
    // Payload of a later fragment that happens to start with 8 (echo request).
    let data = icmp(8, 0, &echo_body());
    let later_v4 = ethernet(&[], ETH_P_IPV4, &ipv4(1, &[], 185, &data));
    guard.assert_passes_unchanged(&later_v4, "non-first IPv4 fragment");
    let later_v6 = ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6(64, &[Ext::fragment(1480, false)], 58, &data),
    );
    guard.assert_passes_unchanged(&later_v6, "non-first IPv6 fragment");
    // Ping of death: the last possible offset plus a payload past 65535.
    let pod = ethernet(&[], ETH_P_IPV4, &ipv4(1, &[], 0x1fff, &data));
    assert_eq!(guard.run(&pod).action, XDP_DROP, "ping of death");
    // A first fragment is classified.
    let first = ethernet(&[], ETH_P_IPV4, &ipv4(1, &[], 0x2000, &data));
    assert_eq!(
        guard.run(&first).action,
        XDP_DROP,
        "first fragment of an echo request"
    );
    let snapshot = guard.snapshot();
    assert_eq!(snapshot.global(global::ICMP_FRAGMENT_PASSED).packets, 2);
    assert_eq!(snapshot.global(global::INVALID_DROPPED).packets, 1);
    assert_eq!(snapshot.of(FAMILY_V4, 8).dropped(DropReason::Policy), 1);
}

#[test]
fn broken_ip_headers_are_invalid() {
    root_or_skip!("broken_ip_headers_are_invalid");
    let mut guard = guard_dropping(&[]);
    let good = ipv4(1, &[], 0, &icmp(8, 0, &echo_body()));
    let mut ihl_four = good.clone();
    ihl_four[0] = 0x44;
    let mut version_six = good.clone();
    version_six[0] = 0x65;
    let mut too_long = good.clone();
    too_long[2..4].copy_from_slice(&((good.len() + 1) as u16).to_be_bytes());
    let mut shorter_than_header = good.clone();
    shorter_than_header[2..4].copy_from_slice(&19u16.to_be_bytes());
    let short_icmp = ipv4(1, &[], 0, &[8, 0, 0, 0]);
    let mut v6_wrong_version = icmpv6_frame(&[], 128, 0);
    v6_wrong_version[14] = 0x40;
    let mut v6_too_long = icmpv6_frame(&[], 128, 0);
    v6_too_long[14 + 5] += 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("IHL 4", ethernet(&[], ETH_P_IPV4, &ihl_four)),
        (
            "version 6 under the IPv4 EtherType",
            ethernet(&[], ETH_P_IPV4, &version_six),
        ),
        (
            "total length past the frame",
            ethernet(&[], ETH_P_IPV4, &too_long),
        ),
        (
            "total length below the header",
            ethernet(&[], ETH_P_IPV4, &shorter_than_header),
        ),
        (
            "ICMP shorter than 8 bytes",
            ethernet(&[], ETH_P_IPV4, &short_icmp),
        ),
        ("truncated IPv4 header", icmpv4_frame(8, 0)[..30].to_vec()),
        ("IPv6 version 4", v6_wrong_version),
        ("IPv6 payload length past the frame", v6_too_long),
        (
            "truncated IPv6 header",
            icmpv6_frame(&[], 128, 0)[..50].to_vec(),
        ),
    ];
    for (what, frame) in &cases {
        assert_eq!(guard.run(frame).action, XDP_DROP, "{what}");
    }
    let snapshot = guard.snapshot();
    assert_eq!(
        snapshot.global(global::INVALID_DROPPED).packets,
        cases.len() as u64
    );
    assert!(
        snapshot.icmp.is_empty(),
        "no type was trusted: {:?}",
        snapshot.icmp
    );

    // Ethernet padding after a short datagram is normal and must not count as invalid.
    let mut padded = icmpv4_frame(8, 0);
    padded.extend_from_slice(&[0; 18]);
    guard.assert_passes_unchanged(&padded, "padded frame");
}

#[test]
fn everything_that_is_not_icmp_passes_byte_identical() {
    root_or_skip!("everything_that_is_not_icmp_passes");
    // Drop every ICMP type, so that any misclassification shows up as a drop.
    let every_type: Vec<(u8, u8)> = (0..=255u8)
        .flat_map(|icmp_type| [(FAMILY_V4, icmp_type), (FAMILY_V6, icmp_type)])
        .collect();
    let mut guard = guard_dropping(&every_type);
    let frames: Vec<(&str, Vec<u8>)> = vec![
        (
            "TCP over IPv4",
            ethernet(&[], ETH_P_IPV4, &ipv4(6, &[], 0, &tcp_syn())),
        ),
        (
            "UDP over IPv4",
            ethernet(&[], ETH_P_IPV4, &ipv4(17, &[], 0, &udp())),
        ),
        (
            "TCP over IPv6",
            ethernet(&[], ETH_P_IPV6, &ipv6(64, &[], 6, &tcp_syn())),
        ),
        (
            "UDP over IPv6 behind hop-by-hop",
            ethernet(
                &[],
                ETH_P_IPV6,
                &ipv6(64, &[Ext::options(0, 1)], 17, &udp()),
            ),
        ),
        (
            "UDP over IPv4 in QinQ",
            ethernet(
                &[(ETH_P_8021AD, 5), (ETH_P_8021Q, 6)],
                ETH_P_IPV4,
                &ipv4(17, &[], 0, &udp()),
            ),
        ),
        ("ARP", arp()),
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, so the
        // shortest frame we can feed is a bare header.
        (
            "an empty-payload Ethernet frame",
            ethernet(&[], 0x88b5, &[]),
        ),
    ];
    for (what, frame) in &frames {
        guard.assert_passes_unchanged(frame, what);
    }
    let snapshot = guard.snapshot();
    assert_eq!(
        snapshot.global(global::NON_ICMP_PASSED).packets,
        frames.len() as u64
    );
    assert!(snapshot.icmp.is_empty());
}

#[test]
fn dry_run_counts_would_drop_and_passes() {
    root_or_skip!("dry_run_counts_would_drop");
    let mut guard = guard_dropping(&[(FAMILY_V4, 8)]);
    guard.maps.set_mode(config::MODE_DRY_RUN).expect("set mode");
    guard.assert_passes_unchanged(&icmpv4_frame(8, 0), "dry-run echo request");
    let mut broken = icmpv4_frame(8, 0);
    broken[14] = 0x44;
    guard.assert_passes_unchanged(&broken, "dry-run invalid header");
    let snapshot = guard.snapshot();
    assert_eq!(snapshot.of(FAMILY_V4, 8).would_drop(DropReason::Policy), 1);
    assert_eq!(snapshot.of(FAMILY_V4, 8).dropped(DropReason::Policy), 0);
    assert_eq!(snapshot.global(global::INVALID_WOULD_DROP).packets, 1);
    let report = stats::report(&snapshot, &[], &[]);
    assert_eq!(report.totals.would_drop, 2);
    assert_eq!(report.totals.dropped, 0);
    assert_eq!(report.mode, "dry-run");

    guard.maps.set_mode(config::MODE_ENFORCE).expect("set mode");
    assert_eq!(
        guard.run(&icmpv4_frame(8, 0)).action,
        XDP_DROP,
        "enforce again"
    );
}

#[test]
fn routing_header_type_0_with_segments_left_is_invalid() {
    root_or_skip!("routing_header_type_0");
    let mut guard = guard_dropping(&[]);
    let routing = |routing_type: u8, segments_left: u8| Ext {
        kind: 43,
        body: vec![routing_type, segments_left, 0, 0, 0, 0],
    };
    assert_eq!(
        guard.run(&icmpv6_frame(&[routing(0, 1)], 129, 0)).action,
        XDP_DROP,
        "RH0 with segments left (RFC 5095)"
    );
    guard.assert_passes_unchanged(&icmpv6_frame(&[routing(0, 0)], 129, 0), "RH0, none left");
    guard.assert_passes_unchanged(&icmpv6_frame(&[routing(2, 1)], 129, 0), "type 2 routing");
    let snapshot = guard.snapshot();
    assert_eq!(snapshot.global(global::INVALID_DROPPED).packets, 1);
    assert_eq!(snapshot.of(FAMILY_V6, 129).passed(), 2);
}

#[test]
fn layer_3_instances_parse_from_the_ip_header() {
    root_or_skip!("layer_3_instances_parse_from_the_ip_header");
    // What a tun interface hands XDP: the IP header first, no Ethernet.
    let timestamp_v4 = ipv4(1, &[], 0, &icmp(13, 0, &[0; 16]));
    let with_options = ipv4(1, &[1, 1, 1, 0], 0, &icmp(13, 0, &[0; 16]));
    let echo_v6 = ipv6(64, &[], 58, &icmp(128, 0, &echo_body()));
    let echo_v6_fragment = ipv6(
        64,
        &[Ext::fragment(0, true)],
        58,
        &icmp(128, 0, &echo_body()),
    );
    let tcp = ipv4(6, &[], 0, &tcp_syn());
    let policy = pass_all_but(&[(FAMILY_V4, 13), (FAMILY_V6, 128)]);

    let mut raw = Guard::instance(&policy, &[], Instance::UNATTACHED_RAW_IP);
    for (packet, what) in [
        (&timestamp_v4, "an ICMPv4 timestamp request"),
        (
            &with_options,
            "an ICMPv4 timestamp request behind IP options",
        ),
        (&echo_v6, "an ICMPv6 echo request"),
        (
            &echo_v6_fragment,
            "an ICMPv6 echo request in a first fragment",
        ),
    ] {
        assert_eq!(raw.run(packet).action, XDP_DROP, "{what} on a layer-3 link");
    }
    raw.assert_passes_unchanged(&tcp, "TCP on a layer-3 link");
    raw.assert_passes_unchanged(&[0x00; 40], "a packet that is no IP");
    let snapshot = raw.snapshot();
    assert_eq!(
        snapshot.of(FAMILY_V4, 13).dropped(DropReason::Policy),
        2,
        "both timestamp requests are counted as ICMPv4 type 13"
    );
    assert_eq!(snapshot.of(FAMILY_V6, 128).dropped(DropReason::Policy), 2);

    // The same packets through an Ethernet instance are not even seen as IP: the reason a
    // layer-3 interface must never run the Ethernet parser.
    let mut ethernet = Guard::load(&policy);
    for packet in [&timestamp_v4, &echo_v6] {
        assert_eq!(ethernet.run(packet).action, XDP_PASS);
    }
    assert_eq!(
        ethernet
            .snapshot()
            .of(FAMILY_V4, 13)
            .dropped(DropReason::Policy),
        0
    );
}
