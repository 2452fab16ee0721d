//! Issue 18's limits through BPF_PROG_TEST_RUN: a rule's `max_size` (`oversize`); block
//! time (`blocked`) — a source over a limit with `block` loses all its ICMP but its PMTUD
//! and ND messages, never its TCP or UDP, until the block ends or `unblock` lifts it; and
//! byte rates, per source and global.

use std::{net::IpAddr, thread, time::Duration};

use icmp_guard::{
    bpf::maps::monotonic_ns,
    policy::{ByteLimit, Limit, Per, Policy, RuleSpec},
};
use icmp_guard_common::{DropReason, FAMILY_V4, FAMILY_V6};

use crate::{
    frames::*,
    harness::{Expect, Guard, XDP_DROP, XDP_PASS, with_rules},
};

/// An ICMPv4 echo request from the peer whose IP packet is `length` bytes long (at most
/// about 3 KB: BPF_PROG_TEST_RUN hands larger frames to XDP in fragments, which the
/// program cannot read to the end and drops as invalid).
fn echo_v4_of_length(length: usize) -> Vec<u8> {
    let rest = vec![0x5a; length - 20 - 4];
    ethernet(&[], ETH_P_IPV4, &ipv4(1, &[], 0, &icmp(8, 0, &rest)))
}

/// An ICMPv6 echo request whose IP packet is `length` bytes long (40 + payload).
fn echo_v6_of_length(length: usize) -> Vec<u8> {
    let rest = vec![0x5a; length - 40 - 4];
    ethernet(&[], ETH_P_IPV6, &ipv6(64, &[], 58, &icmp(128, 0, &rest)))
}

#[test]
fn max_size_passes_at_the_size_and_drops_one_byte_more_as_oversize() {
    root_or_skip!("max_size_passes_at_the_size_and_drops_one_byte_more_as_oversize");
    let limit = RuleSpec::limit(Limit::new(1_000_000, 1_000_000, Per::Source));
    let policy = with_rules(
        Policy::default_profile(),
        &[
            (FAMILY_V4, 8, None, limit.with_max_size(Some(1500))),
            (
                FAMILY_V6,
                128,
                None,
                RuleSpec::PASS.with_max_size(Some(1280)),
            ),
        ],
    );
    let mut guard = Guard::load(&policy);
    let oversize = Expect::Drop(DropReason::Oversize);
    guard.expect(
        "v4 echo of 1500",
        &echo_v4_of_length(1500),
        FAMILY_V4,
        8,
        Expect::Pass,
    );
    guard.expect(
        "v4 echo of 1501",
        &echo_v4_of_length(1501),
        FAMILY_V4,
        8,
        oversize,
    );
    guard.expect(
        "v4 echo of 3000",
        &echo_v4_of_length(3000),
        FAMILY_V4,
        8,
        oversize,
    );
    guard.expect(
        "v4 echo of 84",
        &echo_v4_of_length(84),
        FAMILY_V4,
        8,
        Expect::Pass,
    );
    guard.expect(
        "v6 echo of 1280",
        &echo_v6_of_length(1280),
        FAMILY_V6,
        128,
        Expect::Pass,
    );
    guard.expect(
        "v6 echo of 1281",
        &echo_v6_of_length(1281),
        FAMILY_V6,
        128,
        oversize,
    );
    // The cap is the echo rule's: a TCP segment of any size, and other types, pass.
    let big_tcp = ethernet(
        &[],
        ETH_P_IPV4,
        &ipv4(6, &[], 0, &[tcp_syn(), vec![0; 3000]].concat()),
    );
    guard.assert_passes_unchanged(&big_tcp, "a 3 KB TCP segment");
    let big_unreachable = ipv4(
        1,
        &[],
        0,
        &icmp(3, 1, &[body_v4(3), vec![0; 2000]].concat()),
    );
    guard.expect(
        "a 2 KB destination unreachable",
        &ethernet(&[], ETH_P_IPV4, &big_unreachable),
        FAMILY_V4,
        3,
        Expect::Pass,
    );
    // Without max_size the same echo passes: the cap is the rule's, not a default.
    let mut open = Guard::load(&Policy::default_profile());
    open.expect(
        "v4 echo of 3000, no cap",
        &echo_v4_of_length(3000),
        FAMILY_V4,
        8,
        Expect::Pass,
    );
}

/// Echo requests of both families limited to `burst` per source, 1/s, with `block_ms`.
fn blocking(burst: u32, block_ms: u32) -> Policy {
    let mut limit = Limit::new(1, burst, Per::Source);
    limit.block_ms = block_ms;
    let spec = RuleSpec::limit(limit);
    with_rules(
        Policy::default_profile(),
        &[
            (FAMILY_V4, 8, None, spec),
            (FAMILY_V6, 128, None, spec),
            // Timestamps pass without a limit: only the block can drop them.
            (FAMILY_V4, 13, None, RuleSpec::PASS),
        ],
    )
}

fn v4_from(source: [u8; 4], icmp_type: u8, code: u8) -> Vec<u8> {
    icmpv4_between(source, V4_GUARD, icmp_type, code)
}

fn v4_transport_from(source: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = ipv4(protocol, &[], 0, payload);
    packet[12..16].copy_from_slice(&source);
    packet[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    ethernet(&[], ETH_P_IPV4, &packet)
}

/// Runs `echo` ten times at once under [`blocking`]`(2, ...)`: two pass (three if a token
/// refilled), one is over the limit and blocks its source, the rest are blocked.
fn flood_and_check(guard: &mut Guard, echo: &[u8], family: u8, icmp_type: u8) {
    guard.repeat(echo, 10);
    let counters = guard.snapshot().of(family, icmp_type);
    let (passed, limited, blocked) = (
        counters.passed(),
        counters.dropped(DropReason::RateLimit),
        counters.dropped(DropReason::Blocked),
    );
    assert!(
        (2..=3).contains(&passed) && limited == 1 && passed + limited + blocked == 10,
        "passed {passed}, rate_limit {limited}, blocked {blocked} of 10"
    );
}

const FLOODER: [u8; 4] = [198, 51, 100, 7];
const BYSTANDER: [u8; 4] = [198, 51, 100, 8];

#[test]
fn a_source_over_its_limit_loses_its_icmp_but_not_tcp_udp_pmtud_or_nd_while_blocked() {
    root_or_skip!("a_source_over_its_limit_loses_its_icmp");
    let mut guard = Guard::load(&blocking(2, 60_000));
    let echo = v4_from(FLOODER, 8, 0);
    // One run of ten, no counter reads in between (an emulated kernel reads counters for
    // seconds, and a 1/s bucket would refill meanwhile): the burst of 2 passes, the third is
    // over the limit and blocks the source, the rest are blocked.
    flood_and_check(&mut guard, &echo, FAMILY_V4, 8);
    let blocked = Expect::Drop(DropReason::Blocked);
    guard.expect("echo 4, blocked", &echo, FAMILY_V4, 8, blocked);
    guard.expect(
        "a timestamp request, blocked",
        &v4_from(FLOODER, 13, 0),
        FAMILY_V4,
        13,
        blocked,
    );
    guard.expect(
        "frag-needed passes",
        &v4_from(FLOODER, 3, 4),
        FAMILY_V4,
        3,
        Expect::Pass,
    );
    guard.expect(
        "port unreachable is ICMP: blocked",
        &v4_from(FLOODER, 3, 3),
        FAMILY_V4,
        3,
        blocked,
    );
    guard.assert_passes_unchanged(&v4_transport_from(FLOODER, 6, &tcp_syn()), "its TCP");
    guard.assert_passes_unchanged(&v4_transport_from(FLOODER, 17, &udp()), "its UDP");
    guard.expect(
        "another source",
        &v4_from(BYSTANDER, 8, 0),
        FAMILY_V4,
        8,
        Expect::Pass,
    );
    let entries = guard
        .maps
        .blocked_entries()
        .expect("read the blocked sources");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].0, IpAddr::from(FLOODER));
    let left = entries[0].1.saturating_sub(monotonic_ns());
    assert!(
        left > 0 && left <= 60_000_000_000,
        "the block ends within its 60 s, on the clock userspace reads: {left} ns left"
    );

    // IPv6: echo blocked; packet too big and neighbour solicitation from it pass.
    let source = v6("2001:db8::7");
    let echo6 = icmpv6_custom(source, V6_GUARD, 64, &[], 128, 0, [0; 4]);
    flood_and_check(&mut guard, &echo6, FAMILY_V6, 128);
    guard.expect("v6 echo after the flood", &echo6, FAMILY_V6, 128, blocked);
    let too_big = icmpv6_custom(source, V6_GUARD, 64, &[], 2, 0, 1400u32.to_be_bytes());
    guard.expect(
        "packet too big passes",
        &too_big,
        FAMILY_V6,
        2,
        Expect::Pass,
    );
    let solicitation = icmpv6_custom(source, V6_GUARD, 255, &[], 135, 0, [0; 4]);
    guard.expect(
        "neighbour solicitation passes",
        &solicitation,
        FAMILY_V6,
        135,
        Expect::Pass,
    );
}

#[test]
fn a_block_ends_on_time() {
    root_or_skip!("a_block_ends_on_time");
    let mut guard = Guard::load(&blocking(2, 1_000));
    let echo = v4_from(FLOODER, 8, 0);
    let timestamp = v4_from(FLOODER, 13, 0);
    guard.repeat(&echo, 3);
    let entries = guard
        .maps
        .blocked_entries()
        .expect("read the blocked sources");
    let until = entries
        .iter()
        .find(|(source, _)| *source == IpAddr::from(FLOODER))
        .map(|(_, until)| *until)
        .expect("the flooder is blocked");
    // Only runs, no counter reads in between: an emulated kernel reads counters slowly.
    let action = guard.action(&timestamp);
    if monotonic_ns() < until {
        assert_eq!(action, XDP_DROP, "a timestamp while the block holds");
    }
    let left = until.saturating_sub(monotonic_ns());
    thread::sleep(Duration::from_nanos(left) + Duration::from_millis(100));
    assert_eq!(
        guard.action(&timestamp),
        XDP_PASS,
        "a timestamp after the block"
    );
    // After 1 s the bucket refilled a token: the echo passes too.
    guard.expect("echo after the block", &echo, FAMILY_V4, 8, Expect::Pass);
}

#[test]
fn unblock_through_the_maps_lifts_a_block_at_once_and_without_block_nothing_is_blocked() {
    root_or_skip!("unblock_through_the_maps_lifts_a_block_at_once");
    let mut guard = Guard::load(&blocking(1, 60_000));
    let echo = v4_from(FLOODER, 8, 0);
    let timestamp = v4_from(FLOODER, 13, 0);
    guard.repeat(&echo, 3);
    guard.expect(
        "timestamp while blocked",
        &timestamp,
        FAMILY_V4,
        13,
        Expect::Drop(DropReason::Blocked),
    );
    guard.maps.unblock(IpAddr::from(FLOODER)).expect("unblock");
    assert!(guard.maps.blocked_entries().expect("read").is_empty());
    guard.expect(
        "timestamp after unblock",
        &timestamp,
        FAMILY_V4,
        13,
        Expect::Pass,
    );
    // Unblocking what is not blocked is no error.
    guard
        .maps
        .unblock(IpAddr::from(BYSTANDER))
        .expect("unblock of nothing");

    // A limit without block: the flood is limited, its other ICMP untouched.
    let mut plain = Guard::load(&blocking(1, 0));
    plain.repeat(&echo, 10);
    assert!(plain.maps.blocked_entries().expect("read").is_empty());
    plain.expect(
        "timestamp of a limited source",
        &timestamp,
        FAMILY_V4,
        13,
        Expect::Pass,
    );
    // Even a hand-written entry blocks nothing while no limit of the policy has a block:
    // the program does not look.
    plain
        .maps
        .block(IpAddr::from(FLOODER), monotonic_ns() + 60_000_000_000)
        .expect("write an entry");
    assert_eq!(plain.action(&timestamp), XDP_PASS);
    // ... and one blocks as soon as the policy has a block.
    plain.apply(&blocking(1, 1_000));
    plain.expect(
        "hand-written block",
        &timestamp,
        FAMILY_V4,
        13,
        Expect::Drop(DropReason::Blocked),
    );
}

/// An echo request from `source` whose IP packet is `length` bytes long.
fn echo_from_of_length(source: [u8; 4], length: usize) -> Vec<u8> {
    let rest = vec![0x5a; length - 20 - 4];
    v4_transport_from(source, 1, &icmp(8, 0, &rest))
}

/// Echo requests of both families under a packet limit too generous to matter, with a
/// byte rate of `rate` bytes per second and `burst` bytes, per `per`.
fn byte_limited(rate: u64, burst: u64, per: Per) -> Policy {
    let mut limit = Limit::new(1_000_000, 1_000_000, per);
    limit.bytes = Some(ByteLimit { rate, burst });
    let spec = RuleSpec::limit(limit);
    with_rules(
        Policy::default_profile(),
        &[(FAMILY_V4, 8, None, spec), (FAMILY_V6, 128, None, spec)],
    )
}

/// (passed, dropped as rate_limit) of v4 echo requests.
fn echo_counts(guard: &Guard) -> (u64, u64) {
    let counters = guard.snapshot().of(FAMILY_V4, 8);
    (counters.passed(), counters.dropped(DropReason::RateLimit))
}

/// Packets of `size` bytes admitted by a byte bucket of `rate` and `burst` over `elapsed`:
/// the burst's worth, plus what refilled (and one for the tick the coarse clock may lag).
fn assert_bytes_admitted(passed: u64, size: u64, rate: u64, burst: u64, elapsed: Duration) {
    let tick = Duration::from_nanos(icmp_guard::bpf::object::ns_per_jiffy());
    let least = burst / size;
    let refill = ((elapsed + tick).as_secs_f64() * rate as f64 / size as f64).ceil() as u64 + 1;
    assert!(
        (least..=least + refill).contains(&passed),
        "{passed} packets of {size} bytes passed: expected {least} (+{refill} refilled in {elapsed:?})"
    );
}

#[test]
fn a_byte_rate_admits_its_burst_and_its_rate_per_source_and_globally() {
    root_or_skip!("a_byte_rate_admits_its_burst_and_its_rate");
    // 100 kB/s, 10 kB burst: ten 1000-byte echoes at once, then one every 10 ms.
    let (rate, burst) = (100_000, 10_000);
    let mut guard = Guard::load(&byte_limited(rate, burst, Per::Source));
    let big = echo_from_of_length(FLOODER, 1000);
    let started = std::time::Instant::now();
    guard.repeat(&big, 200);
    let elapsed = started.elapsed();
    // The bucket is empty from here on: what passes later is what refilled since.
    let emptied = std::time::Instant::now();
    let (passed, dropped) = echo_counts(&guard);
    assert_bytes_admitted(passed, 1000, rate, burst, elapsed);
    assert_eq!(passed + dropped, 200);
    // Small packets fit where big ones did not: the bucket counts bytes, not packets.
    let small = echo_from_of_length(FLOODER, 100);
    thread::sleep(Duration::from_millis(50));
    let before = echo_counts(&guard).0;
    guard.repeat(&small, 200);
    let since_empty = emptied.elapsed();
    let small_passed = echo_counts(&guard).0 - before;
    // (Plus a tick the coarse clock may be behind.)
    let tick = Duration::from_nanos(icmp_guard::bpf::object::ns_per_jiffy());
    let refilled = ((since_empty + tick).as_secs_f64() * rate as f64 / 100.0).ceil() as u64;
    assert!(
        (20..=refilled + 2).contains(&small_passed),
        "{small_passed} 100-byte echoes after 50 ms: about 50 expected (at most {refilled} refilled in {since_empty:?})"
    );
    // Another source has its own byte bucket.
    let other = echo_from_of_length(BYSTANDER, 1000);
    let before = echo_counts(&guard).0;
    let started = std::time::Instant::now();
    guard.repeat(&other, 50);
    assert_bytes_admitted(
        echo_counts(&guard).0 - before,
        1000,
        rate,
        burst,
        started.elapsed(),
    );
    // A new source starts with a full byte bucket; a packet larger than the whole burst
    // never passes.
    guard.expect(
        "a new source's 1400-byte echo",
        &echo_from_of_length([198, 51, 100, 9], 1400),
        FAMILY_V4,
        8,
        Expect::Pass,
    );
    let mut tight = Guard::load(&byte_limited(rate, 1500, Per::Source));
    tight.expect(
        "1500 bytes fit a 1500-byte burst",
        &echo_from_of_length(FLOODER, 1500),
        FAMILY_V4,
        8,
        Expect::Pass,
    );
    tight.expect(
        "a 1501-byte echo never fits",
        &echo_from_of_length(BYSTANDER, 1501),
        FAMILY_V4,
        8,
        Expect::Drop(DropReason::RateLimit),
    );

    // Global: one byte bucket for every source.
    let mut global = Guard::load(&byte_limited(rate, burst, Per::Global));
    let started = std::time::Instant::now();
    for last in 1..=20u8 {
        global.repeat(&echo_from_of_length([198, 51, 100, last], 1000), 10);
    }
    let elapsed = started.elapsed();
    let (passed, dropped) = echo_counts(&global);
    assert_bytes_admitted(passed, 1000, rate, burst, elapsed);
    assert_eq!(passed + dropped, 200);
}
