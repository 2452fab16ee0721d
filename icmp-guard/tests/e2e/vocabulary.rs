//! What operators type first, from nft, iptables, xdp-loader and `ip -h` (issue 18, points
//! 3, 5 and 6): ICMP code names and rate units, `--mode skb`, `policy apply --diff` and
//! `--dry-run`, `policy check --json`, and `-h/--human` on `stats` and `top` — through the
//! real binary, with real traffic from the peer where a setting has an effect.

use crate::lab::*;

/// `stats --by-code --json`'s row for v4 `icmp_type`/`code`.
fn code_row(lab: &Lab, icmp_type: u64, code: u64) -> serde_json::Value {
    let rows = lab.json(&["stats", "--by-code", "--json"]);
    rows.as_array()
        .expect("an array")
        .iter()
        .find(|row| row["family"] == "v4" && row["type"] == icmp_type && row["code"] == code)
        .unwrap_or_else(|| panic!("no row v4 {icmp_type}/{code} in {rows}"))
        .clone()
}

/// Sends `count` ICMP messages of `icmp_type`/`code` from the peer with hping3.
fn send(lab: &Lab, icmp_type: u8, code: u8, count: u32) {
    let (icmp_type, code) = (icmp_type.to_string(), code.to_string());
    lab.hping_icmp(&["--icmptype", &icmp_type, "--icmpcode", &code], count);
}

#[test]
fn nft_and_iptables_spellings_work_the_first_time() {
    let lab = lab_or_skip!("nft_and_iptables_spellings_work_the_first_time");
    let dir = TempDir::new("vocabulary");
    // xdp-loader's name for generic mode.
    let out = lab.cli_ok(&["attach", &lab.guard_if, "--mode", "skb"]);
    assert!(out.contains("in generic mode"), "{out}");

    // nft's code name: one name, the matching code of each family.
    let out = lab.cli_ok(&[
        "policy",
        "set",
        "destination-unreachable/port-unreachable",
        "drop",
    ]);
    assert!(
        out.contains("v4 3/3 (destination-unreachable/port-unreachable): drop")
            && out.contains("v6 1/4 (destination-unreachable/port-unreachable): drop"),
        "{out}"
    );
    send(&lab, 3, 3, 3);
    send(&lab, 3, 13, 2);
    let port = code_row(&lab, 3, 3);
    assert_eq!(
        (port["packets"].as_u64(), port["dropped"].as_u64()),
        (Some(3), Some(3)),
        "{port}"
    );
    let table = lab.cli_ok(&["stats", "--by-code"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("v4") && l.trim_end().ends_with("port-unreachable")),
        "the per-code table names the code: {table}"
    );
    let admin = code_row(&lab, 3, 13);
    assert_eq!(
        admin["passed"], 2,
        "other codes of the type still pass: {admin}"
    );

    // iptables' name alone means its type and code; PMTUD's stays protected.
    let err = lab.cli_err(&["policy", "set", "fragmentation-needed", "drop"]);
    let err = one_sentence(&err);
    assert!(
        err.contains("v4 3/4 (destination-unreachable/frag-needed)") && err.contains("RFC 1191"),
        "{err}"
    );
    lab.cli_ok(&["policy", "set", "communication-prohibited", "drop"]);
    send(&lab, 3, 13, 2);
    assert_eq!(code_row(&lab, 3, 13)["dropped"], 2);

    // nft's rate units, where they come to whole packets per second.
    let out = lab.cli_ok(&[
        "policy",
        "set",
        "echo-request",
        "limit",
        "--rate",
        "120/minute",
        "--burst",
        "5",
    ]);
    assert!(
        out.contains("v4 8 (echo-request): limit 2/s burst 5"),
        "{out}"
    );
    let before = lab.cli_ok(&["policy", "show"]);
    let err = lab.cli_err(&[
        "policy",
        "set",
        "echo-request",
        "limit",
        "--rate",
        "1/minute",
    ]);
    assert!(
        err.contains("one packet every 60 s") && err.contains("1/second or more"),
        "{err}"
    );
    assert_eq!(
        lab.cli_ok(&["policy", "show"]),
        before,
        "a refusal changes nothing"
    );
    assert!(before.contains("rate = 2\nburst = 5\n"), "{before}");

    // `policy show` writes code names, and reads back as the same policy.
    assert!(
        before.contains("codes = [\"port-unreachable\"]")
            && before.contains("codes = [\"admin-prohibited\"]"),
        "{before}"
    );
    let shown = dir.write("shown.toml", &before);
    let out = lab.cli_ok(&["policy", "apply", &shown, "--dry-run"]);
    assert!(out.starts_with("no changes:"), "{out}");

    // Names and units in a policy file.
    let file = dir.write(
        "names.toml",
        "[[rule]]\n\
         type = \"destination-unreachable\"\n\
         codes = [\"host-prohibited\", \"net-prohibited\"]\n\
         family = \"v4\"\n\
         action = \"drop\"\n\
         \n\
         [[rule]]\n\
         type = \"echo-request\"\n\
         action = \"limit\"\n\
         rate = \"600/minute\"\n\
         burst = 20\n",
    );
    lab.cli_ok(&["policy", "check", &file]);
    lab.cli_ok(&["policy", "apply", &file]);
    let shown = lab.cli_ok(&["policy", "show"]);
    assert!(
        shown.contains("codes = [\"host-prohibited\"]") && shown.contains("rate = 10\n"),
        "{shown}"
    );
    send(&lab, 3, 10, 2);
    assert_eq!(code_row(&lab, 3, 10)["dropped"], 2);
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        2,
        "echo still answered under its limit"
    );
}

#[test]
fn policy_apply_previews_with_diff_and_dry_run() {
    let lab = lab_or_skip!("policy_apply_previews_with_diff_and_dry_run");
    let dir = TempDir::new("diff");
    lab.cli_ok(&["attach", &lab.guard_if]);
    lab.cli_ok(&["deny", "add", "203.0.113.0/24"]);
    let before = lab.cli_ok(&["policy", "show"]);
    let file = dir.write(
        "new.toml",
        "mode = \"enforce\"\n\
         [[rule]]\n\
         type = \"timestamp-request\"\n\
         family = \"v4\"\n\
         action = \"pass\"\n\
         \n\
         [[rule]]\n\
         type = \"echo-request\"\n\
         action = \"limit\"\n\
         rate = 50\n\
         burst = 100\n\
         \n\
         [[rule]]\n\
         type = \"destination-unreachable\"\n\
         family = \"v4\"\n\
         codes = [\"source-route-failed\"]\n\
         action = \"drop\"\n\
         \n\
         [lists]\n\
         allow = [\"192.0.2.10/32\"]\n",
    );
    let expected = [
        "~ rule v4 8 (echo-request): limit 100/s burst 200 per source -> limit 50/s burst 100 per source",
        "~ rule v4 13 (timestamp-request): drop -> pass",
        "~ rule v6 128 (echo-request): limit 100/s burst 200 per source -> limit 50/s burst 100 per source",
        "+ code-rule v4 3/5 (destination-unreachable/source-route-failed): drop",
        "+ allow 192.0.2.10/32",
        "- deny 203.0.113.0/24",
        "6 changes from the live policy",
    ];

    let out = lab.cli_ok(&["policy", "apply", &file, "--dry-run"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..expected.len()], expected, "{out}");
    assert_eq!(
        lines[expected.len()..],
        ["dry run: nothing applied"],
        "{out}"
    );
    assert_eq!(
        lab.cli_ok(&["policy", "show"]),
        before,
        "a dry run applies nothing"
    );
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 2);
    assert_eq!(replies, 0, "timestamps still dropped after the dry run");

    let json = lab.json(&["policy", "apply", &file, "--dry-run", "--json"]);
    assert_eq!(json["dry_run"], true, "{json}");
    let changes = json["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 6, "{json}");
    assert_eq!(changes[3]["kind"], "added", "{json}");
    assert_eq!(changes[3]["section"], "code-rule", "{json}");
    assert_eq!(changes[5]["kind"], "removed", "{json}");
    assert_eq!(changes[5]["subject"], "203.0.113.0/24", "{json}");

    // --diff prints the same, then applies.
    let out = lab.cli_ok(&["policy", "apply", &file, "--diff"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..expected.len()], expected, "{out}");
    assert!(lines[expected.len()].starts_with("applied "), "{out}");
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 2);
    assert_eq!(replies, 2, "the applied policy passes timestamps");
    let out = lab.cli_ok(&["policy", "apply", &file, "--dry-run"]);
    assert!(out.starts_with("no changes: "), "{out}");

    // A file apply would refuse is refused by the preview too, and changes nothing.
    let after = lab.cli_ok(&["policy", "show"]);
    let bad = dir.write(
        "bad.toml",
        "[[rule]]\ntype = \"packet-too-big\"\naction = \"drop\"\n",
    );
    let err = lab.cli_err(&["policy", "apply", &bad, "--dry-run"]);
    assert!(
        err.contains("line 3, column 10") && err.contains("RFC 8201"),
        "{err}"
    );
    assert_eq!(lab.cli_ok(&["policy", "show"]), after);
}

#[test]
fn policy_check_json_gives_file_line_column_and_message() {
    // Needs no privileges: checking a file touches no BPF state.
    let dir = TempDir::new("check-json");
    let bad = dir.write(
        "bad.toml",
        "mode = \"enforce\"\n[[rule]]\ntype = \"echo-request\"\naction = \"limit\"\nrate = \"1/minute\"\n",
    );
    let output = run(BIN, &["policy", "check", &bad, "--json"]);
    assert!(!output.status.success(), "an invalid file exits non-zero");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["valid"], false, "{json}");
    let error = &json["errors"][0];
    assert_eq!(error["file"], bad.as_str(), "{json}");
    assert_eq!(
        (error["line"].as_u64(), error["column"].as_u64()),
        (Some(5), Some(8)),
        "{json}"
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("one packet every 60 s")),
        "{json}"
    );

    let good = dir.write(
        "good.toml",
        "[[rule]]\ntype = \"timestamp-request\"\nfamily = \"v4\"\naction = \"pass\"\n",
    );
    let output = run(BIN, &["policy", "check", &good, "--json"]);
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        (
            json["valid"].as_bool(),
            json["errors"].as_array().map(Vec::len)
        ),
        (Some(true), Some(0)),
        "{json}"
    );

    let missing = dir.path("missing.toml");
    let output = run(
        BIN,
        &[
            "policy",
            "check",
            missing.to_str().expect("UTF-8"),
            "--json",
        ],
    );
    assert!(!output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["errors"][0]["line"], serde_json::Value::Null, "{json}");
}

#[test]
fn help_stays_help_where_h_means_human() {
    for verb in ["stats", "top"] {
        let output = run(BIN, &[verb, "--help"]);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{verb} --help");
        assert!(
            text.contains(&format!("Usage: icmp-guard {verb}")) && text.contains("-h, --human"),
            "{text}"
        );
    }
    let output = run(BIN, &["-h"]);
    assert!(
        output.status.success(),
        "-h before a verb is still the help"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: icmp-guard"));
}

/// `ip -h`'s form of `value` for 1000 <= value < 9995: "1.50k".
fn kilo(value: u64) -> String {
    format!("{:.2}k", value as f64 / 1000.0)
}

#[test]
fn stats_and_top_print_human_numbers() {
    let lab = lab_or_skip!("stats_and_top_print_human_numbers");
    let _flood = one_flood_at_a_time();
    lab.cli_ok(&["attach", &lab.guard_if]);
    lab.cli_ok(&["config", "events-per-sec", "1000"]);
    // A bounded flood: 1500 echo requests as fast as ping sends them (it exits 1 when the
    // limit drops some, as it does).
    output(
        lab.command(&lab.peer_ns, "ping")
            .args(["-f", "-q", "-c", "1500", "-w", "10", GUARD_V4]),
    );
    let stats = lab.json(&["stats", "--json"]);
    let packets = counter(&stats, "v4", 8, &["packets"]);
    assert!((1_500..9_995).contains(&packets), "{stats}");

    let plain = lab.cli_ok(&["stats"]);
    let human = lab.cli_ok(&["stats", "-h"]);
    let echo = |table: &str| -> Vec<String> {
        table
            .lines()
            .find(|line| line.starts_with("v4") && line.contains("echo-request"))
            .unwrap_or_else(|| panic!("no echo row in {table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(echo(&plain)[3], packets.to_string(), "{plain}");
    assert_eq!(echo(&human)[3], kilo(packets), "{human}");
    let watched = lab.cli_ok(&["stats", "--human", "--watch", "0.2", "--count", "2"]);
    assert!(watched.contains(&kilo(packets)), "{watched}");
    let top = lab.cli_ok(&["top", "-h", "--interval", "0.5", "--count", "1"]);
    assert!(top.contains("ICMP packets"), "{top}");
}
