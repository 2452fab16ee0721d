//! Issue 18's limits against real traffic: block time after a bounded flood, visible in
//! `status`, `stats`, metrics and `top`, lifted by `unblock`; the source's TCP/UDP-free
//! reachability of PMTUD messages; bad input to `unblock`, `--block`, `--bytes` and
//! `--max-size` refused with one sentence and nothing changed. The labs are named "limits".

use std::time::Duration;

use crate::lab::*;

fn limits_lab() -> Lab {
    Lab::of_kind("limits")
}

/// The peer floods the guard with echo requests for `seconds` (hping3, bounded).
fn flood(lab: &Lab, seconds: u32) {
    let _one = one_flood_at_a_time();
    let output = output(&mut ping::hping3(
        &lab.peer_ns,
        seconds,
        &["--flood", "--icmp", "-q", GUARD_V4],
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("flood mode") || stderr.contains("HPING"),
        "hping3 did not run: {stderr}"
    );
}

/// The first line of an error: clap adds "For more information, try '--help'." below.
fn first_line(err: &str) -> &str {
    err.lines().next().unwrap_or_default()
}

fn dropped(stats: &serde_json::Value, icmp_type: u64, reason: &str) -> u64 {
    icmp_row(stats, "v4", icmp_type).map_or(0, |row| {
        row["dropped"][reason].as_u64().expect("a reason counter")
    })
}

#[test]
fn a_flooding_source_is_blocked_visibly_and_unblock_restores_its_pings() {
    let lab = lab_or_skip!("a_flooding_source_is_blocked", limits_lab());
    lab.cli_ok(&["attach", &lab.guard_if]);
    let set = lab.cli_ok(&[
        "policy",
        "set",
        "echo-request",
        "limit",
        "--rate",
        "5",
        "--burst",
        "10",
        "--block",
        "30s",
    ]);
    assert!(
        set.contains("v4 8 (echo-request): limit 5/s burst 10 per source block 30s"),
        "{set}"
    );
    // Timestamps pass without a limit: only the block can drop them.
    lab.cli_ok(&[
        "policy",
        "set",
        "--family",
        "v4",
        "timestamp-request",
        "pass",
    ]);
    let shown = lab.cli_ok(&["policy", "show"]);
    assert!(shown.contains("block = \"30s\""), "{shown}");
    assert_eq!(lab.ping(GUARD_V4, 2), 2, "pings answered before the flood");

    flood(&lab, 1);

    // Blocked: pings and timestamps go unanswered, counted as blocked.
    assert_eq!(lab.ping(GUARD_V4, 2), 0, "a blocked source gets no replies");
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 2);
    assert_eq!(replies, 0, "its timestamp requests are blocked too");
    // Its PMTUD message passes (it reaches the stack: counted as passed).
    let before = icmp_row(&lab.json(&["stats", "--json"]), "v4", 3)
        .map_or(0, |row| row["passed"].as_u64().expect("passed"));
    lab.hping_icmp(&["--icmptype", "3", "--icmpcode", "4"], 2);
    let stats = lab.json(&["stats", "--json"]);
    let after = icmp_row(&stats, "v4", 3).map_or(0, |row| row["passed"].as_u64().expect("passed"));
    assert_eq!(
        after,
        before + 2,
        "frag-needed from a blocked source passes"
    );
    assert!(dropped(&stats, 8, "blocked") >= 2, "{stats}");
    assert_eq!(dropped(&stats, 13, "blocked"), 2, "{stats}");
    assert!(dropped(&stats, 8, "rate_limit") >= 1, "{stats}");

    // Visible: status (text and JSON), metrics.
    let status = lab.json(&["status", "--json"]);
    assert_eq!(status["blocked_sources"], 1, "{status}");
    let text = lab.cli_ok(&["status"]);
    assert!(text.contains("blocked sources (block time): 1"), "{text}");
    let metrics = lab.cli_ok(&["metrics", "--once"]);
    assert!(
        metrics.contains("icmp_guard_blocked_sources 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("reason=\"blocked\""),
        "the drops are labelled blocked: {metrics}"
    );

    // top marks the source while it keeps pinging.
    let pinger = lab.peer_background(
        "ping",
        "ping",
        &["-c", "8", "-i", "0.2", "-W", "1", "-q", GUARD_V4],
    );
    let top: serde_json::Value = serde_json::from_str(
        lab.cli_ok(&["top", "--json", "--interval", "1", "--count", "1"])
            .trim(),
    )
    .expect("top --json");
    pinger.finish(Duration::from_secs(10));
    let source = top["sources"]
        .as_array()
        .and_then(|sources| sources.iter().find(|source| source["address"] == PEER_V4))
        .unwrap_or_else(|| panic!("the peer in top: {top}"));
    assert_eq!(source["blocked"], true, "{top}");
    assert_eq!(source["top_drop_reason"], "blocked", "{top}");

    // Unblock something else: nothing to do, exit 0, still blocked.
    let other = lab.cli_ok(&["unblock", "198.51.100.0/24"]);
    assert!(other.contains("nothing to do"), "{other}");
    assert_eq!(lab.json(&["status", "--json"])["blocked_sources"], 1);
    // Bad input: one sentence, exit non-zero, nothing changed.
    for (bad, needle) in [
        (vec!["unblock", "192.0.2.2/33"], "out of range"),
        (vec!["unblock", "192.0.2.2/24"], "host bits"),
        (vec!["unblock", "bogus"], "not an IPv4 or IPv6"),
        (vec!["unblock"], "required"),
        (vec!["unblock", "--all", "192.0.2.2"], "cannot be used with"),
    ] {
        let err = lab.cli_refuses(&bad, needle);
        assert!(
            first_line(&err).contains(needle),
            "said in its first line: {err}"
        );
    }
    assert_eq!(lab.json(&["status", "--json"])["blocked_sources"], 1);

    let lifted = lab.cli_ok(&["unblock", PEER_V4]);
    assert!(lifted.contains(&format!("unblocked {PEER_V4}")), "{lifted}");
    assert_eq!(lab.json(&["status", "--json"])["blocked_sources"], 0);
    // The flood emptied the bucket; a second later it has tokens again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.ping(GUARD_V4, 2), 2, "pings answered after unblock");
    let again = lab.cli_ok(&["unblock", "--all"]);
    assert!(
        again.contains("no source is blocked; nothing to do"),
        "{again}"
    );
}

#[test]
fn bad_block_bytes_and_max_size_are_refused_with_one_sentence_and_change_nothing() {
    let lab = lab_or_skip!("bad_block_bytes_and_max_size_are_refused", limits_lab());
    lab.cli_ok(&["attach", &lab.guard_if]);
    let before = lab.cli_ok(&["policy", "show"]);
    let limit = ["policy", "set", "echo-request", "limit"];
    for (extra, needle) in [
        (vec!["--bytes", "1M/s"], "ambiguous"),
        (vec!["--bytes", "fast"], "not a size"),
        (vec!["--bytes", "1MiB/fortnight"], "unknown unit"),
        (
            vec!["--bytes", "1MiB/s", "--bytes-burst", "100"],
            "one full-size packet",
        ),
        (vec!["--bytes-burst", "2MiB"], "--bytes"),
        (vec!["--block", "soon"], "not a duration"),
        (vec!["--block", "2d"], "1 day"),
        (
            vec!["--per", "global", "--block", "1m"],
            "no source to block",
        ),
        (vec!["--max-size", "20"], "28 to 65535"),
        (vec!["--max-size", "70000"], "28 to 65535"),
    ] {
        let args = [&limit[..], &extra[..]].concat();
        let err = lab.cli_refuses(&args, needle);
        assert!(
            first_line(&err).contains(needle) || needle == "--bytes",
            "said in its first line: {err}"
        );
    }
    lab.cli_refuses(
        &[
            "policy",
            "set",
            "timestamp-request",
            "drop",
            "--max-size",
            "100",
        ],
        "drop rule drops every size",
    );
    lab.cli_refuses(
        &[
            "policy",
            "set",
            "timestamp-request",
            "pass",
            "--block",
            "1m",
        ],
        "only go with the limit action",
    );
    assert_eq!(lab.cli_ok(&["policy", "show"]), before, "nothing changed");

    // And good input takes: a byte rate and a size cap, read back by policy show.
    lab.cli_ok(&[
        "policy",
        "set",
        "echo-request",
        "limit",
        "--bytes",
        "1MiB/s",
        "--bytes-burst",
        "2MiB",
        "--max-size",
        "1000",
    ]);
    let shown = lab.cli_ok(&["policy", "show"]);
    assert!(shown.contains("bytes = \"1MiB/s\""), "{shown}");
    assert!(shown.contains("bytes_burst = \"2MiB\""), "{shown}");
    assert!(shown.contains("max_size = 1000"), "{shown}");
    // A ping of 1000 bytes is answered, one of 1001 is dropped as oversize (both under the
    // link's MTU: a fragmented ping is judged by its first fragment's size).
    let reply = lab.run_in(
        &lab.peer_ns,
        "ping",
        &[
            "-c", "1", "-W", "2", "-s", "972", "-M", "do", "-q", GUARD_V4,
        ],
    );
    assert_eq!(ping_replies(&reply), 1, "{reply}");
    let big = output(lab.command(&lab.peer_ns, "ping").args([
        "-c", "1", "-W", "1", "-s", "973", "-M", "do", "-q", GUARD_V4,
    ]));
    let big = String::from_utf8_lossy(&big.stdout);
    assert!(big.contains("1 packets transmitted"), "{big}");
    assert_eq!(ping_replies(&big), 0, "{big}");
    let stats = lab.json(&["stats", "--json"]);
    assert_eq!(dropped(&stats, 8, "oversize"), 1, "{stats}");
}
