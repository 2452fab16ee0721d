//! Sweep detection (issue 20) through BPF_PROG_TEST_RUN: one source (or one source prefix)
//! probing many distinct destinations is flagged at its threshold within the sketch's
//! stated accuracy (±15 %), and nothing else is: not one destination pinged many times,
//! not ICMP errors, not an allow-listed monitor, not a host pinging a handful of
//! neighbours. Also the rolling window, the block, action log and mode auto.

use std::{thread, time::Duration};

use icmp_guard::policy::{
    Cidr, Policy,
    recon::{Enabled, Recon, SweepAction},
};
use icmp_guard_common::{
    DropReason, FAMILY_V4, FAMILY_V6, global,
    interface::interface_flags,
    recon::{ReconV6Key, action, estimate, set_v6},
};

use crate::{
    frames::*,
    harness::{Guard, XDP_DROP, pass_all_but},
};

/// The stated accuracy: a source is flagged within ±15 % of its threshold.
const ACCURACY: f64 = 0.15;

const PASS: u32 = 2;
const DROP: u32 = XDP_DROP;

/// Every type passes; sweep detection on with `edit` applied.
fn policy(edit: impl FnOnce(&mut Recon)) -> Policy {
    let mut policy = pass_all_but(&[]);
    policy.recon = Recon {
        enabled: Enabled::On,
        prefix_threshold: 0,
        ..Recon::default()
    };
    edit(&mut policy.recon);
    policy
}

/// The `index`th IPv4 documentation address (192.0.2.0/24, then 198.51.100.0/24, then
/// 203.0.113.0/24).
fn doc_v4(index: usize) -> [u8; 4] {
    let nets = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];
    let net = nets[index / 256];
    [net[0], net[1], net[2], (index % 256) as u8]
}

/// A destination in 2001:db8::/32.
fn doc_v6(index: usize) -> [u8; 16] {
    let mut address = v6("2001:db8:100::");
    address[12..16].copy_from_slice(&(index as u32).to_be_bytes());
    address
}

fn echo_v4(source: [u8; 4], destination: [u8; 4]) -> Vec<u8> {
    icmpv4_between(source, destination, 8, 0)
}

fn echo_v6(source: [u8; 16], destination: [u8; 16]) -> Vec<u8> {
    icmpv6_custom(source, destination, 64, &[], 128, 0, [0, 1, 0, 1])
}

/// Probes from `frame(i)` for i = 0.. until the first one dropped; how many passed before
/// it (`None`: none of `limit` was dropped).
fn passed_before_first_drop(
    guard: &mut Guard,
    limit: usize,
    frame: impl Fn(usize) -> Vec<u8>,
) -> Option<usize> {
    (0..limit).find(|&index| guard.action(&frame(index)) == DROP)
}

fn sweep_drops(guard: &Guard, family: u8, icmp_type: u8) -> u64 {
    guard
        .snapshot()
        .of(family, icmp_type)
        .dropped(DropReason::Sweep)
}

#[test]
fn a_sweep_is_flagged_at_its_threshold_within_the_stated_accuracy() {
    root_or_skip!("a_sweep_is_flagged_at_its_threshold");
    let mut worst: f64 = 0.0;
    let mut report = Vec::new();
    for threshold in [16u32, 32, 64, 128, 256, 512, 1024] {
        for family in [FAMILY_V4, FAMILY_V6] {
            if family == FAMILY_V4 && threshold > 512 {
                // 768 documentation addresses: enough for thresholds up to 512.
                continue;
            }
            let mut guard = Guard::load(&policy(|recon| recon.sweep_threshold = threshold));
            let limit = 2 * threshold as usize;
            let passed = if family == FAMILY_V4 {
                passed_before_first_drop(&mut guard, limit.min(768), |i| {
                    echo_v4([198, 51, 100, 66], doc_v4(i))
                })
            } else {
                passed_before_first_drop(&mut guard, limit, |i| {
                    echo_v6(v6("2001:db8:66::66"), doc_v6(i))
                })
            }
            .unwrap_or_else(|| panic!("family {family}: never flagged at threshold {threshold}"));
            let error = (passed as f64 - f64::from(threshold)) / f64::from(threshold);
            report.push(format!(
                "{}:{threshold}->{passed} ({:+.1} %)",
                if family == FAMILY_V4 { "v4" } else { "v6" },
                error * 100.0
            ));
            worst = worst.max(error.abs());
            assert!(
                error.abs() <= ACCURACY,
                "threshold {threshold}: flagged after {passed} destinations ({:+.1} %)",
                error * 100.0
            );
            // Flagged: the rest of its probes are dropped as sweep, to old destinations too.
            let icmp_type = if family == FAMILY_V4 { 8 } else { 128 };
            let frame = if family == FAMILY_V4 {
                echo_v4([198, 51, 100, 66], doc_v4(0))
            } else {
                echo_v6(v6("2001:db8:66::66"), doc_v6(0))
            };
            assert_eq!(guard.action(&frame), DROP);
            assert_eq!(sweep_drops(&guard, family, icmp_type), 2);
        }
    }
    println!(
        "RECON-ACCURACY worst {:.1} %: {}",
        worst * 100.0,
        report.join(", ")
    );
}

#[test]
fn one_destination_many_times_is_not_a_sweep() {
    root_or_skip!("one_destination_many_times_is_not_a_sweep");
    let mut guard = Guard::load(&policy(|_| {}));
    let (action, _) = guard.repeat(&echo_v4([198, 51, 100, 7], [192, 0, 2, 1]), 5000);
    assert_eq!(action, PASS);
    let (action, _) = guard.repeat(&echo_v6(v6("2001:db8:7::7"), v6("2001:db8:1::1")), 5000);
    assert_eq!(action, PASS);
    assert_eq!(sweep_drops(&guard, FAMILY_V4, 8), 0);
    assert_eq!(sweep_drops(&guard, FAMILY_V6, 128), 0);
    assert!(guard.maps.flagged().expect("flagged").is_empty());
}

#[test]
fn a_host_pinging_a_handful_of_neighbours_is_never_flagged() {
    root_or_skip!("a_host_pinging_a_handful_of_neighbours");
    let mut guard = Guard::load(&policy(|_| {}));
    for _round in 0..50 {
        for neighbour in 1..=10u8 {
            assert_eq!(
                guard.action(&echo_v4([192, 0, 2, 10], [192, 0, 2, neighbour])),
                PASS
            );
        }
    }
    assert_eq!(sweep_drops(&guard, FAMILY_V4, 8), 0);
}

#[test]
fn errors_replies_and_traceroute_are_not_counted_as_probes() {
    root_or_skip!("errors_replies_and_traceroute_are_not_counted");
    let mut guard = Guard::load(&policy(|_| {}));
    let source = [203, 0, 113, 9];
    // Time exceeded (traceroute's answers), unreachables (PMTUD's and UDP traceroute's),
    // parameter problems and echo replies to 600 destinations.
    for index in 0..600 {
        for icmp_type in [11, 3, 12, 0] {
            let frame = icmpv4_between(source, doc_v4(index), icmp_type, 0);
            assert_eq!(guard.action(&frame), PASS, "type {icmp_type} to #{index}");
        }
        let error = icmpv6_custom(v6("2001:db8:9::9"), doc_v6(index), 64, &[], 3, 0, [0; 4]);
        assert_eq!(guard.action(&error), PASS);
    }
    // None of them counted: echo requests to 24 more destinations still pass.
    for index in 0..24 {
        assert_eq!(guard.action(&echo_v4(source, doc_v4(index))), PASS);
    }
    assert!(guard.maps.flagged().expect("flagged").is_empty());
}

#[test]
fn timestamp_and_address_mask_requests_are_probes() {
    root_or_skip!("timestamp_and_address_mask_requests_are_probes");
    let mut guard = Guard::load(&policy(|_| {}));
    let source = [198, 51, 100, 13];
    let passed = passed_before_first_drop(&mut guard, 200, |i| {
        icmpv4_between(source, doc_v4(i), if i % 2 == 0 { 13 } else { 17 }, 0)
    })
    .expect("a timestamp/address-mask sweep is flagged");
    assert!((27..=37).contains(&passed), "{passed}");
    // Its echo requests are blocked too.
    assert_eq!(guard.action(&echo_v4(source, doc_v4(300))), DROP);
}

#[test]
fn an_allow_listed_monitor_is_never_flagged() {
    root_or_skip!("an_allow_listed_monitor_is_never_flagged");
    let mut policy = policy(|_| {});
    policy.allow = vec![
        "198.51.100.200/32".parse::<Cidr>().expect("cidr"),
        "2001:db8:200::/48".parse::<Cidr>().expect("cidr"),
    ];
    let mut guard = Guard::load(&policy);
    for index in 0..768 {
        assert_eq!(
            guard.action(&echo_v4([198, 51, 100, 200], doc_v4(index))),
            PASS
        );
        assert_eq!(
            guard.action(&echo_v6(v6("2001:db8:200::1"), doc_v6(index))),
            PASS
        );
    }
    assert!(guard.maps.flagged().expect("flagged").is_empty());
    // A source beside it is not allowed, and is flagged.
    assert!(
        passed_before_first_drop(&mut guard, 100, |i| echo_v4([198, 51, 100, 201], doc_v4(i)))
            .is_some()
    );
}

#[test]
fn a_sweep_spread_over_a_slash_24_of_senders_is_flagged_by_prefix() {
    root_or_skip!("a_sweep_spread_over_a_slash_24");
    let mut guard = Guard::load(&policy(|recon| {
        recon.prefix_threshold = 128;
        recon.prefix_v4 = 24;
    }));
    // 256 senders of 198.51.100.0/24, each probing 2 destinations: no sender is near its
    // threshold of 32; the prefix crosses 128.
    let frame = |i: usize| echo_v4([198, 51, 100, (i / 2) as u8], doc_v4(i % 512 + 256));
    let passed = passed_before_first_drop(&mut guard, 512, frame).expect("the prefix is flagged");
    let error = (passed as f64 - 128.0) / 128.0;
    assert!(error.abs() <= ACCURACY, "flagged after {passed}");
    // Every sender of the prefix is blocked now, a sender outside it is not.
    assert_eq!(
        guard.action(&echo_v4([198, 51, 100, 250], [192, 0, 2, 1])),
        DROP
    );
    assert_eq!(
        guard.action(&echo_v4([203, 0, 113, 1], [192, 0, 2, 1])),
        PASS
    );
    let flagged = guard.maps.flagged().expect("flagged");
    assert!(
        flagged
            .iter()
            .any(|(key, _)| key.len == 24 && key.addr[..4] == [198, 51, 100, 0]),
        "{flagged:?}"
    );
}

#[test]
fn the_window_forgets_and_the_block_ends() {
    root_or_skip!("the_window_forgets_and_the_block_ends");
    let mut guard = Guard::load(&policy(|recon| {
        recon.window = Duration::from_secs(1);
        recon.block = Duration::from_secs(1);
    }));
    let source = [192, 0, 2, 77];
    // 24 destinations, a silence longer than the window, 24 more: never 32 in one window.
    for index in 0..24 {
        assert_eq!(guard.action(&echo_v4(source, doc_v4(index + 256))), PASS);
    }
    thread::sleep(Duration::from_millis(1100));
    for index in 24..48 {
        assert_eq!(guard.action(&echo_v4(source, doc_v4(index + 256))), PASS);
    }
    // Without a pause it is flagged...
    let passed = passed_before_first_drop(&mut guard, 200, |i| echo_v4(source, doc_v4(i + 400)))
        .expect("flagged");
    assert!(passed < 32, "{passed} more after 24 in this window");
    // ...and blocked until its block ends.
    assert_eq!(guard.action(&echo_v4(source, [192, 0, 2, 1])), DROP);
    thread::sleep(Duration::from_millis(2200));
    for index in 0..10 {
        assert_eq!(
            guard.action(&echo_v4(source, doc_v4(index + 600))),
            PASS,
            "after the block and the window"
        );
    }
}

#[test]
fn action_log_records_the_source_and_drops_nothing() {
    root_or_skip!("action_log_records_the_source_and_drops_nothing");
    let mut guard = Guard::load(&policy(|recon| recon.action = SweepAction::Log));
    let source = [198, 51, 100, 66];
    for index in 0..200 {
        assert_eq!(guard.action(&echo_v4(source, doc_v4(index))), PASS);
    }
    assert_eq!(sweep_drops(&guard, FAMILY_V4, 8), 0);
    let flagged = guard.maps.flagged().expect("flagged");
    let (key, record) = flagged
        .iter()
        .find(|(key, _)| key.len == 32 && key.addr[..4] == source)
        .expect("the sweeper is recorded");
    assert_eq!(key.family, FAMILY_V4);
    assert_eq!(record.action, action::LOG);
    let estimated = estimate(record.bits);
    assert!((27..=37).contains(&estimated), "{estimated}");
}

#[test]
fn mode_auto_follows_the_forwarding_flag_and_off_is_off() {
    root_or_skip!("mode_auto_follows_the_forwarding_flag");
    let mut guard = Guard::load(&policy(|recon| recon.enabled = Enabled::Auto));
    let sweep = |guard: &mut Guard, host: u8| {
        passed_before_first_drop(guard, 100, |i| echo_v4([198, 51, 100, host], doc_v4(i)))
    };
    assert_eq!(sweep(&mut guard, 1), None, "a host: auto is off");
    guard
        .maps
        .set_unattached_flags(interface_flags::FORWARDING)
        .expect("flags");
    assert!(sweep(&mut guard, 2).is_some(), "a router: auto is on");
    guard.apply(&policy(|recon| recon.enabled = Enabled::Off));
    assert_eq!(sweep(&mut guard, 3), None, "off");
}

/// `unblock`'s map half: a flagged source's sketch carries its block, and forgetting the
/// sketch lifts it at once (and its flag); its count starts again from nothing.
#[test]
fn forgetting_a_sweepers_sketch_lifts_its_block() {
    root_or_skip!("forgetting_a_sweepers_sketch_lifts_its_block");
    let mut guard = Guard::load(&policy(|_| {}));
    let source = [192, 0, 2, 88];
    passed_before_first_drop(&mut guard, 200, |i| echo_v4(source, doc_v4(i + 256)))
        .expect("flagged");
    assert_eq!(guard.action(&echo_v4(source, [192, 0, 2, 1])), DROP);
    let blocks = guard.maps.sweep_blocks().expect("sweep blocks");
    assert!(
        blocks
            .iter()
            .any(|(addr, len, _)| *addr == std::net::IpAddr::from(source) && *len == 32),
        "{blocks:?}"
    );
    guard
        .maps
        .forget_sweep(std::net::IpAddr::from(source), 32)
        .expect("forget");
    assert_eq!(guard.action(&echo_v4(source, [192, 0, 2, 1])), PASS);
    assert!(guard.maps.flagged().expect("flagged").is_empty());
    // Forgetting what is gone already is not an error.
    guard
        .maps
        .forget_sweep(std::net::IpAddr::from(source), 32)
        .expect("forget again");
}

#[test]
fn a_sweeper_keeps_its_count_through_a_flood_of_new_sources() {
    root_or_skip!("a_sweeper_keeps_its_count_through_a_flood_of_new_sources");
    let threshold = 64u32;
    // The longest window: under emulation the flood below takes longer than the default
    // window, which would forget the sweep by design.
    let mut guard = Guard::load(&policy(|recon| {
        recon.sweep_threshold = threshold;
        recon.window = Duration::from_secs(3600);
    }));
    // As `attach` does for new maps: the seed that places sketches is random.
    guard.maps.stamp_complete().expect("stamp the maps");
    let mut other = Guard::load(&policy(|_| {}));
    other.maps.stamp_complete().expect("stamp the other maps");
    let seed = |guard: &Guard| guard.maps.config().expect("settings").recon_seed;
    assert_ne!(seed(&guard), seed(&other), "two fresh maps, two seeds");
    drop(other);

    let sweeper = v6("2001:db8:66::66");
    let first = threshold as usize / 2;
    for index in 0..first {
        assert_eq!(guard.action(&echo_v6(sweeper, doc_v6(index))), PASS);
    }
    // Five new sources for every slot of the sketch array, each sending one probe: a
    // spoofed flood (here without a limiter; in a real policy the new-source budget paces
    // it). The sweeper's sketch, worth more than a one-probe sender's, keeps its place.
    let slots = icmp_guard_common::recon::RECON_ENTRIES as usize;
    for index in 0..5 * slots {
        let mut spoofed = v6("2001:db8:f000::");
        spoofed[8..16].copy_from_slice(&(index as u64).to_be_bytes());
        assert_eq!(guard.action(&echo_v6(spoofed, doc_v6(0))), PASS);
    }
    let more = passed_before_first_drop(&mut guard, 2 * threshold as usize, |i| {
        echo_v6(sweeper, doc_v6(first + i))
    })
    .expect("the sweeper is flagged");
    let passed = first + more;
    let error = (passed as f64 - f64::from(threshold)) / f64::from(threshold);
    assert!(
        error.abs() <= ACCURACY,
        "flagged after {passed} destinations ({:+.1} %): its count did not survive the flood",
        error * 100.0
    );
    // The flood's sources were tracked too: one of them sweeping is flagged.
    let mut late = v6("2001:db8:f000::");
    late[8..16].copy_from_slice(&(3u64).to_be_bytes());
    assert!(
        passed_before_first_drop(&mut guard, 2 * threshold as usize, |i| echo_v6(
            late,
            doc_v6(1000 + i)
        ))
        .is_some(),
        "a source of the flood that sweeps is flagged"
    );
}

#[test]
fn flagged_sketches_keep_their_set_and_a_third_source_there_is_counted_untracked() {
    root_or_skip!("flagged_sketches_keep_their_set_and_a_third_source_there_is_counted_untracked");
    let threshold = 16u32;
    // Blocks that outlast the test however slow the machine (a block that ends frees its
    // slot, by design).
    let mut guard = Guard::load(&policy(|recon| {
        recon.sweep_threshold = threshold;
        recon.window = Duration::from_secs(3600);
        recon.block = Duration::from_secs(3600);
    }));
    guard.maps.stamp_complete().expect("stamp the maps");
    let seed = guard.maps.config().expect("settings").recon_seed;
    // Three sources of 2001:db8:c0::/48 whose sketches share one set, found with the maps'
    // seed (which a remote sender does not know).
    let source = |i: u64| {
        let mut address = v6("2001:db8:c0::");
        address[8..16].copy_from_slice(&i.to_be_bytes());
        address
    };
    let set = |i: u64| set_v6(seed, &ReconV6Key::new(128, source(i)));
    let same: Vec<u64> = std::iter::once(0)
        .chain((1..).filter(|&i| set(i) == set(0)).take(2))
        .collect();
    let (a, b, c) = (source(same[0]), source(same[1]), source(same[2]));
    for (n, sweeper) in [a, b].into_iter().enumerate() {
        passed_before_first_drop(&mut guard, 4 * threshold as usize, |i| {
            echo_v6(sweeper, doc_v6(1000 * n + i))
        })
        .expect("flagged");
    }
    let untracked = |guard: &Guard| {
        guard
            .maps
            .global_counter(global::RECON_UNTRACKED)
            .expect("the untracked count")
            .packets
    };
    assert_eq!(untracked(&guard), 0);
    // The third sweeps past its threshold: its set has no slot to give, so it is not
    // flagged, and each of its probes is counted as untracked.
    let probes = 3 * threshold as usize;
    for i in 0..probes {
        assert_eq!(guard.action(&echo_v6(c, doc_v6(5000 + i))), PASS);
    }
    assert_eq!(untracked(&guard), probes as u64);
    assert!(
        guard
            .maps
            .sweep_sketch(std::net::IpAddr::from(c), 128)
            .expect("read the sketch")
            .is_none()
    );
    // Neither flagged source lost its sketch, nor its block.
    for sweeper in [a, b] {
        assert_eq!(guard.action(&echo_v6(sweeper, doc_v6(9000))), DROP);
    }
}
