//! Smurf and reflection defence end to end: broadcast pings from a peer, a second subnet
//! added while the guard runs, and a bounded echo-reply flood from random sources while the
//! guarded host pings its peer.

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::lab::*;

fn counts(lab: &Lab, icmp_type: u64) -> Value {
    let stats = lab.json(&["stats", "--json"]);
    icmp_row(&stats, "v4", icmp_type)
        .cloned()
        .unwrap_or(Value::Null)
}

fn hping(lab: &Lab, args: &[&str]) {
    let mut full = vec![
        "netns",
        "exec",
        &lab.peer_ns,
        "timeout",
        "10",
        "hping3",
        "-q",
    ];
    full.extend_from_slice(args);
    let _ = run("ip", &full);
}

#[test]
fn broadcast_pings_are_smurf_and_new_subnets_are_covered() {
    if !support::privileged("broadcast_pings_are_smurf") {
        return;
    }
    let lab = Lab::new();
    lab.cli_ok(&["attach", &lab.guard_if]);

    // `ping -b` sends to the broadcast MAC and the subnet's broadcast address.
    let _ = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.peer_ns,
            "ping",
            "-b",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-q",
            "192.0.2.255",
        ],
    );
    assert_eq!(counts(&lab, 8)["dropped"]["smurf"], 3);
    assert_eq!(lab.ping(GUARD_V4, 2), 2, "unicast ping still works");

    // A second subnet on the guarded interface, reached from the peer through the guard
    // (unicast MAC, so only the directed-broadcast map can catch it).
    run_ok(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            &lab.guard_if,
        ],
    );
    run_ok(
        "ip",
        &[
            "-n",
            &lab.peer_ns,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            GUARD_V4,
        ],
    );
    // Any icmp-guard invocation refreshes the map; this one also reads the counters.
    let before = counts(&lab, 8);
    hping(
        &lab,
        &["--icmp", "-c", "3", "-i", "u100000", "198.51.100.255"],
    );
    let after = counts(&lab, 8);
    assert_eq!(
        after["dropped"]["smurf"].as_u64().expect("smurf")
            - before["dropped"]["smurf"].as_u64().expect("smurf"),
        3,
        "echo to the new subnet's directed broadcast: {after}"
    );
    // A host address of that subnet is no broadcast.
    let before = counts(&lab, 8);
    hping(
        &lab,
        &["--icmp", "-c", "2", "-i", "u100000", "198.51.100.1"],
    );
    let after = counts(&lab, 8);
    assert_eq!(
        after["passed"].as_u64().expect("passed") - before["passed"].as_u64().expect("passed"),
        2
    );
}

#[test]
fn an_echo_reply_flood_is_capped_while_the_guarded_host_gets_its_replies() {
    if !support::privileged("an_echo_reply_flood_is_capped") {
        return;
    }
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("icmp-guard-smurf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[smurf]\nreply_ceiling = 100\nreply_ceiling_burst = 200\n",
    )
    .expect("write policy");
    lab.cli_ok(&[
        "attach",
        &lab.guard_if,
        "--policy",
        policy.to_str().expect("path"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);

    let ping_peer = |count: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.guard_ns,
                "ping",
                "-c",
                count,
                "-i",
                "0.5",
                "-W",
                "2",
                "-q",
            ])
            .arg(PEER_V4)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ping")
    };
    let replies = |child: std::process::Child| -> u32 {
        let output = child.wait_with_output().expect("ping");
        ping_replies(&output.stdout)
    };
    // The peer's replies get a bucket of their own before the storm, and leave probation
    // (5 s with the budget calm): then the storm, held to half the ceiling by the budget of
    // sources without a bucket, leaves them the other half.
    assert_eq!(replies(ping_peer("1")), 1);
    std::thread::sleep(Duration::from_millis(5500));
    assert_eq!(replies(ping_peer("1")), 1);
    let genuine = ping_peer("4");
    std::thread::sleep(Duration::from_millis(200));
    let _ = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.peer_ns,
            "timeout",
            "-s",
            "INT",
            "2",
            "hping3",
            "--flood",
            "-q",
            "--icmp",
            "--icmptype",
            "0",
            "--rand-source",
            GUARD_V4,
        ],
    );
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
