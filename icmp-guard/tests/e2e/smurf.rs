//! Smurf and reflection defence end to end: broadcast pings from a peer, a second subnet
//! added while the guard runs, and a bounded echo-reply flood from random sources while the
//! guarded host pings its peer.

use std::time::Duration;

use serde_json::Value;

use crate::lab::*;

fn counts(lab: &Lab, icmp_type: u64) -> Value {
    let stats = lab.json(&["stats", "--json"]);
    icmp_row(&stats, "v4", icmp_type)
        .cloned()
        .unwrap_or(Value::Null)
}

/// `field` of the echo-request row, read before and after `action`: how far it moved.
fn moved_by(lab: &Lab, field: &[&str], action: impl FnOnce()) -> u64 {
    let read = || {
        let row = counts(lab, 8);
        field
            .iter()
            .fold(&row, |value, key| &value[*key])
            .as_u64()
            .unwrap_or_else(|| panic!("no {field:?} in {row}"))
    };
    let before = read();
    action();
    read() - before
}

#[test]
fn broadcast_pings_are_smurf_and_new_subnets_are_covered() {
    let lab = lab_or_skip!("broadcast_pings_are_smurf");
    lab.cli_ok(&["attach", &lab.guard_if]);

    // `ping -b` sends to the broadcast MAC and the subnet's broadcast address.
    let args = ["-b", "-c", "3", "-i", "0.2", "-W", "1", "-q", "192.0.2.255"];
    output(&mut ping::ping(&lab.peer_ns, &args));
    assert_eq!(counts(&lab, 8)["dropped"]["smurf"], 3);
    assert_eq!(lab.ping(GUARD_V4, 2), 2, "unicast ping still works");

    // A second subnet on the guarded interface, reached from the peer through the guard
    // (unicast MAC, so only the directed-broadcast map can catch it).
    lab.ip(
        &lab.guard_ns,
        &["addr", "add", "198.51.100.1/24", "dev", &lab.guard_if],
    );
    lab.ip(
        &lab.peer_ns,
        &["route", "add", "198.51.100.0/24", "via", GUARD_V4],
    );
    // Any icmp-guard invocation refreshes the map; this one also reads the counters.
    let smurf = moved_by(&lab, &["dropped", "smurf"], || {
        lab.hping(&["-q", "--icmp", "-c", "3", "-i", "u100000", "198.51.100.255"]);
    });
    assert_eq!(smurf, 3, "echo to the new subnet's directed broadcast");
    // A host address of that subnet is no broadcast.
    let passed = moved_by(&lab, &["passed"], || {
        lab.hping(&["-q", "--icmp", "-c", "2", "-i", "u100000", "198.51.100.1"]);
    });
    assert_eq!(passed, 2);
}

#[test]
fn an_echo_reply_flood_is_capped_while_the_guarded_host_gets_its_replies() {
    let lab = lab_or_skip!("an_echo_reply_flood_is_capped");
    let dir = TempDir::new("smurf");
    let policy = dir.write(
        "policy.toml",
        "[smurf]\nreply_ceiling = 100\nreply_ceiling_burst = 200\n",
    );
    lab.cli_ok(&["attach", &lab.guard_if, "--policy", &policy]);

    let ping_peer = |count: &str| {
        let args = ["-c", count, "-i", "0.5", "-W", "2", "-q", PEER_V4];
        Background::spawn("ping", ping::ping(&lab.guard_ns, &args)).expect("start ping")
    };
    let replies = |pinger: Background| ping_replies(&pinger.finish(Duration::from_secs(30)));
    // The peer's replies get a bucket of their own before the storm, and leave probation
    // (5 s with the budget calm): then the storm, held to half the ceiling by the budget of
    // sources without a bucket, leaves them the other half.
    assert_eq!(replies(ping_peer("1")), 1);
    std::thread::sleep(Duration::from_millis(5500));
    assert_eq!(replies(ping_peer("1")), 1);
    let genuine = ping_peer("4");
    std::thread::sleep(Duration::from_millis(200));
    let storm = [
        "--flood",
        "-q",
        "--icmp",
        "--icmptype",
        "0",
        "--rand-source",
        GUARD_V4,
    ];
    output(&mut ping::hping3(&lab.peer_ns, 2, &storm));
    assert_eq!(
        replies(genuine),
        4,
        "the guarded host lost replies during the storm"
    );
    let row = counts(&lab, 0);
    let smurf = row["dropped"]["smurf"].as_u64().expect("smurf");
    let passed = row["passed"].as_u64().expect("passed");
    eprintln!("reply storm: {smurf} dropped as smurf, {passed} passed");
    assert!(
        smurf > 1000,
        "the storm was too weak to test anything: {row}"
    );
    // 2 s at 100/s plus a burst of 200, the genuine replies among them, and some slack for
    // the start and end of the flood.
    assert!(passed <= 200 + 100 * 3 + 6, "ceiling exceeded: {row}");
}
