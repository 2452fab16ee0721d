//! End-to-end tests of the policy engine: `policy set/show/apply/check/reset`, the allow
//! and deny lists and dry-run, driven through the real `icmp-guard` binary in a
//! two-namespace lab, with real `ping` and `hping3` traffic from the peer. Rate limiting is
//! not tested here. Every namespace, pin and temp file is removed when a test ends.

use std::process::Stdio;

use crate::lab::*;

const EXAMPLE_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy.toml");

/// Sends `count` ICMP timestamp requests from the peer to the guard and returns how many
/// replies came back.
fn hping_timestamps(lab: &Lab, count: u32) -> u32 {
    let (text, received) = lab.hping_icmp(&["--icmp-ts"], count);
    let reply_lines = text
        .lines()
        .filter(|line| line.starts_with("ICMP timestamp:"))
        .count();
    assert_eq!(
        reply_lines, received as usize,
        "one timestamp line per reply: {text}"
    );
    received
}

/// Passes timestamp requests and drops 3/5: a policy that differs from the default in a
/// type rule and a per-code rule, so that a reset, or a half-applied change, shows.
fn differ_from_the_default(lab: &Lab) {
    lab.cli_ok(&["policy", "set", "timestamp-request", "pass"]);
    let per_code = ["--family", "v4", "destination-unreachable/5", "drop"];
    lab.cli_ok(&[&["policy", "set"][..], &per_code].concat());
}

fn list(lab: &Lab, which: &str) -> Vec<String> {
    serde_json::from_value(lab.json(&[which, "list", "--json"])).expect("a list of prefixes")
}

fn attached_lab() -> Lab {
    let lab = Lab::new();
    lab.cli_ok(&["attach", &lab.guard_if]);
    lab
}

#[test]
fn timestamp_requests_follow_policy_set_while_ping_keeps_working() {
    let lab = lab_or_skip!(
        "timestamp_requests_follow_policy_set_while_ping_keeps_working",
        attached_lab()
    );
    assert_eq!(lab.ping(GUARD_V4, 2), 2);
    assert_eq!(
        hping_timestamps(&lab, 3),
        0,
        "the default profile drops timestamp requests"
    );

    let out = lab.cli_ok(&["policy", "set", "timestamp-request", "pass"]);
    assert!(out.contains("v4 13 (timestamp-request): pass"), "{out}");
    assert_eq!(
        hping_timestamps(&lab, 3),
        3,
        "the guard's kernel answers timestamp requests once they pass"
    );
    assert_eq!(lab.ping(GUARD_V4, 2), 2);

    lab.cli_ok(&["policy", "set", "timestamp-request", "drop"]);
    assert_eq!(hping_timestamps(&lab, 3), 0, "dropped again");
    assert_eq!(lab.ping(GUARD_V4, 2), 2, "echo is untouched throughout");

    lab.assert_counts(&[
        ("v4", 13, "packets", 9),
        ("v4", 13, "passed", 3),
        ("v4", 13, "dropped.policy", 6),
        ("v4", 8, "passed", 6),
        ("v4", 8, "dropped.policy", 0),
    ]);
}

#[test]
fn deny_and_allow_lists_most_specific_prefix_wins() {
    let lab = lab_or_skip!(
        "deny_and_allow_lists_most_specific_prefix_wins",
        attached_lab()
    );
    let peer = format!("{PEER_V4}/32");
    assert_eq!(lab.ping(GUARD_V4, 2), 2);

    let out = lab.cli_ok(&["deny", "add", &peer]);
    assert!(out.contains("deny list: added 192.0.2.2/32"), "{out}");
    assert_eq!(lab.ping(GUARD_V4, 3), 0, "a denied source gets no reply");
    lab.assert_counts(&[
        ("v4", 8, "dropped.deny_list", 3),
        ("v4", 8, "dropped.policy", 0),
    ]);
    assert_eq!(lab.ping(GUARD_V6, 2), 2, "a v4 deny does not touch v6");

    // The same prefix in both lists is refused, and changes nothing.
    lab.cli_refuses(&["allow", "add", &peer], "already in the deny list");
    assert_eq!(list(&lab, "deny"), [peer.as_str()]);
    assert!(list(&lab, "allow").is_empty());

    lab.cli_ok(&["deny", "del", &peer]);
    assert!(list(&lab, "deny").is_empty());
    assert_eq!(lab.ping(GUARD_V4, 2), 2, "deny del restores ping");

    lab.cli_ok(&["deny", "add", "192.0.2.0/24"]);
    assert_eq!(lab.ping(GUARD_V4, 2), 0, "the /24 covers the peer");
    let out = lab.cli_ok(&["allow", "add", &peer]);
    assert!(out.contains("allow list: added 192.0.2.2/32"), "{out}");
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        2,
        "the allowed /32 is more specific than the denied /24"
    );
    assert_eq!(list(&lab, "allow"), [peer.as_str()]);
    assert_eq!(list(&lab, "deny"), ["192.0.2.0/24"]);

    lab.assert_counts(&[
        ("v4", 8, "dropped.deny_list", 5),
        ("v4", 8, "passed", 6),
        ("v6", 128, "passed", 2),
    ]);
}

/// The message of a refused command: exactly one `error: ...` line containing `needle`
/// (clap's "For more information, try '--help'." hint after a usage error is tolerated).
fn assert_one_line_error(args: &[&str], stderr: &str, needle: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let (first, rest) = lines
        .split_first()
        .unwrap_or_else(|| panic!("{args:?}: no message on stderr"));
    assert!(
        first.starts_with("error: ") && first.contains(needle),
        "{args:?}: expected one line with {needle:?}, got: {stderr}"
    );
    assert!(
        rest.iter()
            .all(|line| *line == "For more information, try '--help'."),
        "{args:?}: the message should be one line: {stderr}"
    );
}

#[test]
fn bad_input_is_refused_with_one_line_and_leaves_the_live_policy_untouched() {
    if !privileged("bad_input_is_refused_with_one_line_and_leaves_the_live_policy_untouched") {
        return;
    }
    let dir = TempDir::new("bad-input");
    let lab = attached_lab();
    differ_from_the_default(&lab);
    lab.cli_ok(&["deny", "add", "203.0.113.0/24", "2001:db8:bad::/48"]);
    lab.cli_ok(&["allow", "add", "198.51.100.7"]);
    let before = lab.cli_ok(&["policy", "show"]);
    let before_json = lab.json(&["policy", "show", "--json"]);

    let syntax_error = dir.write(
        "syntax.toml",
        "mode = \"enforce\"\nbase = \"default\"\n[[rule]\ntype = \"echo-request\"\naction = \"pass\"\n",
    );
    let third_rule_ptb = dir.write(
        "third-rule-ptb.toml",
        "base = \"default\"\n\
         \n\
         [[rule]]\n\
         type = \"timestamp-request\"\n\
         action = \"pass\"\n\
         \n\
         [[rule]]\n\
         type = \"echo-request\"\n\
         action = \"pass\"\n\
         \n\
         [[rule]]\n\
         type = \"packet-too-big\"\n\
         action = \"drop\"\n",
    );

    let cases: &[(&[&str], &str)] = &[
        (
            &["policy", "set", "256", "drop", "--family", "v4"],
            "type 256 is out of range",
        ),
        (
            &["policy", "set", "destination-unreachable/300", "drop"],
            "code 300 is out of range",
        ),
        (&["deny", "add", "10.0.0.0/33"], "out of range 0-32"),
        (&["deny", "add", "::/129"], "out of range 0-128"),
        (&["allow", "add", "bogus"], "'bogus' is not an IPv4 or IPv6"),
        (
            &["policy", "set", "no-such-name", "drop"],
            "unknown ICMP type 'no-such-name'",
        ),
        (&["policy", "set", "packet-too-big", "drop"], "RFC 8201"),
        (
            &[
                "policy",
                "set",
                "--family",
                "v4",
                "destination-unreachable",
                "drop",
            ],
            "RFC 1191",
        ),
        (&["policy", "apply", &syntax_error], "line 3"),
        // The third rule's action is on line 13.
        (&["policy", "apply", &third_rule_ptb], "line 13"),
        (&["policy", "apply", &third_rule_ptb], "RFC 8201"),
        (
            &["policy", "set", "echo-request", "limit", "--rate=-1"],
            "rate '-1' is not a whole number",
        ),
        (
            &[
                "policy",
                "set",
                "echo-request",
                "limit",
                "--rate",
                "0/s",
                "--burst",
                "0",
            ],
            "must be at least 1",
        ),
        (
            &["policy", "set", "echo-request", "limit", "--rate", "1e99"],
            "rate '1e99' is not a whole number",
        ),
        (
            &["policy", "set", "echo-request", "limit", "--rate", "abc"],
            "rate 'abc' is not a whole number",
        ),
        (
            &["policy", "set", "echo-request", "drop", "--rate", "5"],
            "only go with the limit action",
        ),
    ];
    for (args, needle) in cases {
        let err = lab.cli_err(args);
        assert_one_line_error(args, &err, needle);
        assert_eq!(
            lab.cli_ok(&["policy", "show"]),
            before,
            "{args:?} changed the live policy"
        );
    }
    // Not one write happened: the generation did not flip either.
    assert_eq!(lab.json(&["policy", "show", "--json"]), before_json);
    assert_eq!(lab.ping(GUARD_V4, 1), 1, "the guard still works");
}

#[test]
fn policy_check_apply_and_show_round_trip() {
    if !privileged("policy_check_apply_and_show_round_trip") {
        return;
    }
    let dir = TempDir::new("round-trip");
    let lab = Lab::new();

    let out = lab.cli_ok(&["policy", "check", EXAMPLE_POLICY]);
    assert!(out.contains("is a valid policy"), "{out}");
    let broken = dir.write(
        "broken.toml",
        "mode = \"enforce\"\n\n[[rule]]\ntype = \"echo-request\"\naction = \"maybe\"\n",
    );
    let output = lab.cli(&["policy", "check", &broken]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_one_line_error(&["policy", "check", &broken], &err, "line 5");

    lab.cli_ok(&["attach", &lab.guard_if]);
    let out = lab.cli_ok(&["policy", "apply", EXAMPLE_POLICY]);
    assert!(out.contains("applied"), "{out}");
    let shown = lab.cli_ok(&["policy", "show"]);
    let policy = lab.json(&["policy", "show", "--json"]);
    assert_eq!(action_of(&policy, "v4", 13), "pass", "{shown}");
    assert_eq!(action_of(&policy, "v6", 139), "drop", "{shown}");
    assert_eq!(list(&lab, "deny"), ["203.0.113.0/24"]);
    assert_eq!(list(&lab, "allow"), ["192.0.2.10/32", "2001:db8::10/128"]);

    // What `policy show` prints is a policy file that gives the same policy back, also
    // when applied on top of a different one.
    let saved = dir.write("shown.toml", &shown);
    let out = lab.cli_ok(&["policy", "check", &saved]);
    assert!(out.contains("is a valid policy"), "{out}");
    lab.cli_ok(&["policy", "apply", &saved]);
    assert_eq!(lab.cli_ok(&["policy", "show"]), shown);
    lab.cli_ok(&["policy", "reset"]);
    lab.cli_ok(&["deny", "del", "203.0.113.0/24"]);
    assert_ne!(lab.cli_ok(&["policy", "show"]), shown);
    lab.cli_ok(&["policy", "apply", &saved]);
    assert_eq!(lab.cli_ok(&["policy", "show"]), shown);
    assert_eq!(list(&lab, "deny"), ["203.0.113.0/24"]);

    // The example passes timestamp requests, and echo requests stay answered.
    assert_eq!(hping_timestamps(&lab, 2), 2);
    assert_eq!(lab.ping(GUARD_V4, 2), 2);
    lab.assert_counts(&[("v4", 13, "passed", 2), ("v4", 13, "dropped.policy", 0)]);
}

#[test]
fn policy_reset_restores_the_default_profile() {
    let lab = lab_or_skip!("policy_reset_restores_the_default_profile", attached_lab());
    let initial = lab.cli_ok(&["policy", "show"]);
    let initial_json = lab.json(&["policy", "show", "--json"]);

    differ_from_the_default(&lab);
    lab.limit_echo("5/s", "10", &["--per", "global"]);
    let changed = lab.cli_ok(&["policy", "show"]);
    assert_ne!(changed, initial);
    assert!(changed.contains("timestamp-request"), "{changed}");

    let out = lab.cli_ok(&["policy", "reset"]);
    assert!(out.contains("default profile"), "{out}");
    assert_eq!(lab.cli_ok(&["policy", "show"]), initial);
    assert_eq!(hping_timestamps(&lab, 2), 0, "timestamps dropped again");

    // Reset puts the rules back and keeps the lists.
    lab.cli_ok(&["deny", "add", "203.0.113.0/24"]);
    lab.cli_ok(&["policy", "set", "timestamp-request", "pass"]);
    lab.cli_ok(&["policy", "reset"]);
    let after = lab.json(&["policy", "show", "--json"]);
    assert_eq!(after["types"], initial_json["types"]);
    assert_eq!(after["codes"], initial_json["codes"]);
    assert_eq!(list(&lab, "deny"), ["203.0.113.0/24"]);
}

#[test]
fn concurrent_policy_sets_both_take_effect() {
    let lab = lab_or_skip!("concurrent_policy_sets_both_take_effect", attached_lab());
    for (timestamp, mask) in [
        ("pass", "pass"),
        ("drop", "drop"),
        ("pass", "drop"),
        ("drop", "pass"),
        ("pass", "pass"),
    ] {
        let start = |args: &[&str]| {
            let mut command = lab.cli_command(args);
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
            command.spawn().expect("starting icmp-guard")
        };
        let first = start(&["policy", "set", "timestamp-request", timestamp]);
        let second = start(&["policy", "set", "address-mask-request", mask]);
        for child in [first, second] {
            let output = child.wait_with_output().expect("waiting for icmp-guard");
            assert!(
                output.status.success(),
                "concurrent policy set failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let policy = lab.json(&["policy", "show", "--json"]);
        assert_eq!(
            (
                action_of(&policy, "v4", 13).as_str(),
                action_of(&policy, "v4", 17).as_str()
            ),
            (timestamp, mask),
            "both concurrent changes are live"
        );
    }
}

#[test]
fn dry_run_counts_would_drop_and_passes_everything() {
    let lab = lab_or_skip!("dry_run_counts_would_drop_and_passes_everything");
    let out = lab.cli_ok(&["attach", &lab.guard_if, "--dry-run"]);
    assert!(out.contains("dry-run"), "{out}");
    assert_eq!(lab.json(&["status", "--json"])["mode"], "dry-run");

    lab.cli_ok(&["policy", "set", "echo-request", "drop"]);
    assert_eq!(
        lab.json(&["policy", "show", "--json"])["mode"],
        "dry-run",
        "policy set keeps the mode"
    );
    assert_eq!(lab.ping(GUARD_V4, 4), 4, "dry-run passes every packet");
    assert_eq!(
        hping_timestamps(&lab, 2),
        2,
        "dropped by default, but dry-run lets it through"
    );
    lab.cli_ok(&["deny", "add", &format!("{PEER_V4}/32")]);
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        2,
        "dry-run passes denied sources too"
    );

    let stats = lab.json(&["stats", "--json"]);
    assert_eq!(stats["mode"], "dry-run", "{stats}");
    let would_drop_policy = counter(&stats, "v4", 8, &["would_drop", "policy"]);
    assert_eq!(would_drop_policy, 4, "{stats}");
    assert_counts(
        &stats,
        &[
            ("v4", 8, "would_drop.deny_list", 2),
            ("v4", 13, "would_drop.policy", 2),
            ("v4", 8, "dropped.policy", 0),
        ],
    );
    assert!(
        stats["totals"]["would_drop"].as_u64() >= Some(would_drop_policy + 4),
        "{stats}"
    );
    assert_eq!(
        stats["totals"]["dropped"], 0,
        "nothing dropped in dry-run: {stats}"
    );
}
