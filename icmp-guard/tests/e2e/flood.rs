//! Floods in namespaces: a real hping3 flood, bounded in time, against the flood guard,
//! with a legitimate host pinging beside it. Every flood is bounded by `timeout`.

use std::time::{Duration, Instant};

use crate::lab::*;

const LEGIT_V4: &str = "192.0.2.3";

/// Floods the guard from the peer for `seconds` with hping3 and returns how long it ran.
fn flood(lab: &Lab, seconds: u32, extra: &[&str]) -> Duration {
    let _one = one_flood_at_a_time();
    let started = Instant::now();
    let mut args = vec!["--flood", "--icmp", "-q"];
    args.extend_from_slice(extra);
    args.push(GUARD_V4);
    let output = output(&mut ping::hping3(&lab.peer_ns, seconds, &args));
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("flood mode") || stderr.contains("HPING"),
        "hping3 did not run: {stderr}"
    );
    elapsed
}

fn echo_counts(lab: &Lab) -> (u64, u64) {
    let stats = lab.json(&["stats", "--json"]);
    icmp_row(&stats, "v4", 8).map_or((0, 0), |row| {
        (
            row["passed"].as_u64().expect("passed"),
            row["dropped"]["rate_limit"].as_u64().expect("rate_limit"),
        )
    })
}

/// Pings the guard once a second from the peer's second address, in the background.
fn legit_pinger(lab: &Lab, count: u32) -> Background {
    let count = count.to_string();
    let args = [
        "-I", LEGIT_V4, "-c", &count, "-i", "1", "-W", "2", "-q", GUARD_V4,
    ];
    lab.peer_background("ping", "ping", &args)
}

fn replies(pinger: Background) -> u32 {
    ping_replies(&pinger.finish(Duration::from_secs(30)))
}

/// A guard with echo requests limited to `rate`/`burst` per source, and a legitimate host
/// beside the flooding peer.
fn attached_with_a_legitimate_host(lab: &Lab, rate: &str, burst: &str) {
    lab.add_peer_address(LEGIT_V4);
    lab.cli_ok(&["attach", &lab.guard_if]);
    lab.limit_echo(rate, burst, &[]);
}

#[test]
fn a_flood_from_one_source_is_held_to_rate_times_time_plus_burst() {
    let lab = lab_or_skip!("a_flood_from_one_source");
    attached_with_a_legitimate_host(&lab, "100/s", "200");

    let legit = legit_pinger(&lab, 4);
    // PMTUD messages (3/4) from the flooding host itself, during the flood: never charged
    // to a budget, so every one must pass.
    let pmtud = lab.peer_background(
        "pmtud",
        "timeout",
        &[
            "10",
            "hping3",
            "-q",
            "--icmp",
            "--icmptype",
            "3",
            "--icmpcode",
            "4",
            "-c",
            "20",
            "-i",
            "u100000",
            GUARD_V4,
        ],
    );
    let elapsed = flood(&lab, 3, &[]);
    let (passed, limited) = echo_counts(&lab);
    pmtud.finish(Duration::from_secs(15));
    let stats = lab.json(&["stats", "--json"]);
    let frag_needed = icmp_row(&stats, "v4", 3).expect("PMTUD messages counted");
    assert_eq!(
        frag_needed["passed"], 20,
        "every PMTUD message passed: {frag_needed}"
    );
    assert_eq!(frag_needed["packets"], 20);
    assert_eq!(
        replies(legit),
        4,
        "the legitimate host lost pings during the flood"
    );

    let expected = 200.0 + 100.0 * elapsed.as_secs_f64();
    // The legitimate host's 4 pings are in `passed` too.
    let flood_admitted = passed as f64 - 4.0;
    let error = (flood_admitted - expected) / expected;
    eprintln!(
        "flood: {limited} limited, {flood_admitted} admitted in {:.2} s, expected {expected:.0} ({:+.1}%)",
        elapsed.as_secs_f64(),
        error * 100.0
    );
    assert!(
        limited > 1000,
        "the flood was too weak to test anything: {limited}"
    );
    assert!(
        error.abs() <= 0.10,
        "admitted {flood_admitted}, expected {expected:.0}"
    );
}

#[test]
fn a_spoofed_random_source_flood_is_capped_and_established_hosts_get_through() {
    let lab = lab_or_skip!("a_spoofed_random_source_flood");
    // 10/s per source, burst 20: the new-source budget is 100/s with a burst of 200. A
    // source the budget admits is on probation for a second.
    attached_with_a_legitimate_host(&lab, "10", "20");
    lab.limit_echo("10", "20", &["--probation", "1"]);
    // The legitimate host is established before the flood starts: its second ping, a
    // second after its first with the budget calm, ends its probation.
    assert_eq!(lab.ping(GUARD_V4, 1), 1);
    let before = echo_counts(&lab).0;
    let legit = legit_pinger(&lab, 6);
    std::thread::sleep(Duration::from_millis(1500));
    let elapsed = flood(&lab, 3, &["--rand-source"]);
    let (passed, limited) = echo_counts(&lab);
    let legit_replies = replies(legit);

    let admitted = (passed - before) as f64 - f64::from(legit_replies);
    let cap = 200.0 + 100.0 * elapsed.as_secs_f64();
    eprintln!(
        "spoofed flood: {limited} limited, {admitted} admitted in {:.2} s, new-source cap {cap:.0}",
        elapsed.as_secs_f64()
    );
    assert!(
        limited > 1000,
        "the flood was too weak to test anything: {limited}"
    );
    // The pings before the flood were charged to the budget too (probation).
    assert!(
        admitted <= cap * 1.02 + 2.0,
        "admitted {admitted}, cap {cap:.0}"
    );
    assert_eq!(legit_replies, 6, "the established host lost pings");

    let status = lab.json(&["status", "--json"]);
    let sources = status["tracked"]["sources"]
        .as_u64()
        .expect("tracked sources");
    let capacity = status["tracked"]["sources_capacity"]
        .as_u64()
        .expect("capacity");
    assert!(sources <= capacity, "{sources} > {capacity}");
    assert!(
        sources as f64 <= cap * 1.02 + 10.0,
        "only admitted sources get a bucket: {sources}"
    );
}
