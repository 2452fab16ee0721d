//! `icmp-guard trace`: the trace build swapped into the link for the trace and back after,
//! one line per matching packet naming the check and the verdict, a killed trace undone by
//! the next command, and bad input refused without a change.

use std::time::Duration;

use serde_json::Value;

use crate::lab::{GUARD_V4, Lab, PEER_V4, one_sentence, wait_until};

/// The name and id of the XDP program on the lab's guard interface, as `ip` shows it
/// (empty and 0 when there is none).
fn xdp_program(lab: &Lab) -> (String, u64) {
    crate::lab::xdp_program(&lab.guard_ns, &lab.guard_if).unwrap_or_default()
}

/// Attaches with timestamp requests dropped; returns the production program's id.
fn attach_dropping_timestamps(lab: &Lab) -> u64 {
    lab.cli_ok(&["attach", &lab.guard_if]);
    lab.cli_ok(&["policy", "set", "timestamp-request", "drop"]);
    let (name, id) = xdp_program(lab);
    assert_eq!(name, "icmp_guard");
    id
}

#[test]
fn trace_names_the_check_and_the_verdict_and_swaps_production_back() {
    let lab = lab_or_skip!(
        "trace_names_the_check_and_the_verdict_and_swaps_production_back",
        Lab::of_kind("trace")
    );
    let production = attach_dropping_timestamps(&lab);
    let source = format!("{PEER_V4}/32");
    let mut trace = lab.background(&[
        "trace",
        &lab.guard_if,
        "--source",
        &source,
        "--count",
        "2",
        "--seconds",
        "30",
    ]);
    trace.wait_for("the trace to start", Duration::from_secs(10), |out, _| {
        out.contains("tracing ")
    });
    let (name, traced) = xdp_program(&lab);
    assert_eq!(name, "icmp_trace", "the trace build runs in the link");
    assert_ne!(traced, production);
    let status = lab.cli_ok(&["status"]);
    assert!(status.contains("tracing until "), "{status}");
    let refused = lab.cli_refuses(&["trace", &lab.guard_if], "is being traced until");
    one_sentence(&refused);
    assert_eq!(
        xdp_program(&lab).1,
        traced,
        "a refused second trace changes nothing"
    );
    assert_eq!(lab.ping(GUARD_V4, 1), 1, "the echo passes while traced");
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 1);
    assert_eq!(replies, 0, "the timestamp request is dropped while traced");
    let out = trace.finish(Duration::from_secs(10));
    let lines: Vec<&str> = out.lines().filter(|line| line.contains(PEER_V4)).collect();
    assert_eq!(lines.len(), 2, "one line per packet:\n{out}");
    assert!(
        lines[0].contains("echo-request/0 passed by "),
        "the echo, passed, and what passed it:\n{out}"
    );
    assert!(
        lines[1].contains("timestamp-request/0 dropped (policy) by type/code rule: drop"),
        "the timestamp request, dropped by its rule:\n{out}"
    );
    let (name, after) = xdp_program(&lab);
    assert_eq!(name, "icmp_guard", "production is back:\n{out}");
    assert_ne!(after, traced);
    let status = lab.cli_ok(&["status"]);
    assert!(!status.contains("tracing"), "{status}");
    // The counters kept counting through the trace: the trace build shares the maps.
    lab.assert_counts(&[("v4", 13, "dropped.policy", 1)]);
}

#[test]
fn a_killed_trace_is_undone_by_the_next_command_and_traffic_stays_filtered() {
    let lab = lab_or_skip!(
        "a_killed_trace_is_undone_by_the_next_command_and_traffic_stays_filtered",
        Lab::of_kind("trace")
    );
    attach_dropping_timestamps(&lab);
    let mut trace = lab.background(&["trace", &lab.guard_if, "--seconds", "3"]);
    trace.wait_for("the trace to start", Duration::from_secs(10), |out, _| {
        out.contains("tracing ")
    });
    trace.signal(libc::SIGKILL);
    trace.wait_exit(Duration::from_secs(5));
    let (name, _) = xdp_program(&lab);
    assert_eq!(
        name, "icmp_trace",
        "SIGKILL left the trace build in the link"
    );
    // Before its deadline it is a live trace: commands leave it; it still guards.
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 1);
    assert_eq!(replies, 0, "filtered while the trace build runs");
    assert_eq!(lab.ping(GUARD_V4, 1), 1);
    std::thread::sleep(Duration::from_secs(3));
    let (name, _) = xdp_program(&lab);
    assert_eq!(name, "icmp_trace", "nothing swapped it back yet");
    let status = lab.cli_ok(&["status", "--check"]);
    assert!(!status.contains("tracing"), "{status}");
    wait_until("production is back", || xdp_program(&lab).0 == "icmp_guard");
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 1);
    assert_eq!(replies, 0, "filtered after the swap back");
    lab.assert_counts(&[("v4", 13, "dropped.policy", 2)]);
}

#[test]
fn bad_trace_input_is_refused_in_one_sentence_and_changes_nothing() {
    let lab = lab_or_skip!(
        "bad_trace_input_is_refused_in_one_sentence_and_changes_nothing",
        Lab::of_kind("trace")
    );
    let refused = lab.cli_refuses(&["trace", &lab.guard_if], "not attached to");
    one_sentence(&refused);
    assert!(
        !lab.xdp_on_interface(),
        "nothing attached by a refused trace"
    );
    let production = attach_dropping_timestamps(&lab);
    for (args, needle) in [
        (vec!["--count", "0"], "--count must be at least 1"),
        (vec!["--seconds", "0"], "--seconds must be from 1 to 3600"),
        (vec!["--source", "198.51.100.1/33"], "out of range"),
        (vec!["--source", "not-an-address"], "is not an IPv4 or IPv6"),
        (
            vec!["--type", "bogus-request"],
            "unknown ICMP type 'bogus-request'",
        ),
    ] {
        let mut full = vec!["trace", lab.guard_if.as_str()];
        full.extend(args);
        let refused = lab.cli_refuses(&full, needle);
        one_sentence(&refused);
        assert_eq!(xdp_program(&lab), ("icmp_guard".to_owned(), production));
    }
    let refused = lab.cli_refuses(&["trace", "nosuchif0"], "nosuchif0");
    one_sentence(&refused);
    assert_eq!(xdp_program(&lab), ("icmp_guard".to_owned(), production));
}

#[test]
fn trace_filters_by_type_in_the_kernel_prints_json_and_stops_at_ctrl_c() {
    let lab = lab_or_skip!(
        "trace_filters_by_type_in_the_kernel_prints_json_and_stops_at_ctrl_c",
        Lab::of_kind("trace")
    );
    attach_dropping_timestamps(&lab);
    let trace = lab.background(&[
        "trace",
        &lab.guard_if,
        "--type",
        "timestamp-request",
        "--count",
        "1",
        "--json",
    ]);
    wait_until("the trace build runs", || {
        xdp_program(&lab).0 == "icmp_trace"
    });
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        2,
        "echoes pass, and are not reported"
    );
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 1);
    assert_eq!(replies, 0);
    let out = trace.finish(Duration::from_secs(10));
    let documents: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {out}")))
        .collect();
    assert_eq!(documents.len(), 1, "only the timestamp request:\n{out}");
    let line = &documents[0];
    assert_eq!(line["source"], PEER_V4, "{line}");
    assert_eq!(line["icmp_type"], "timestamp-request", "{line}");
    assert_eq!(line["verdict"], "dropped", "{line}");
    assert_eq!(line["reason"], "policy", "{line}");
    assert_eq!(line["check"], "type/code rule", "{line}");
    assert_eq!(xdp_program(&lab).0, "icmp_guard");
    // Ctrl-C: production back, exit 0.
    let mut trace = lab.background(&["trace", &lab.guard_if, "--seconds", "30"]);
    trace.wait_for("the trace to start", Duration::from_secs(10), |out, _| {
        out.contains("tracing ")
    });
    trace.signal(libc::SIGINT);
    let status = trace.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}: {}", trace.stderr());
    assert!(
        trace.stdout().contains("SIGINT: trace stopped"),
        "{}",
        trace.stdout()
    );
    assert_eq!(
        xdp_program(&lab).0,
        "icmp_guard",
        "production is back after Ctrl-C"
    );
}

#[test]
fn runs_watchdog_swaps_production_back_after_a_killed_trace() {
    let lab = lab_or_skip!(
        "runs_watchdog_swaps_production_back_after_a_killed_trace",
        Lab::of_kind("trace")
    );
    let mut service = lab.background(&["run", &lab.guard_if]);
    service.wait_for("start-up", Duration::from_secs(15), |out, _| {
        out.contains("protecting")
    });
    let mut trace = lab.background(&["trace", &lab.guard_if, "--seconds", "2"]);
    trace.wait_for("the trace to start", Duration::from_secs(10), |out, _| {
        out.contains("tracing ")
    });
    trace.signal(libc::SIGKILL);
    trace.wait_exit(Duration::from_secs(5));
    assert_eq!(
        xdp_program(&lab).0,
        "icmp_trace",
        "SIGKILL left the trace build"
    );
    std::thread::sleep(Duration::from_secs(2));
    // No icmp-guard command runs meanwhile: only the service's watchdog can swap it back.
    wait_until("the watchdog swaps production back", || {
        xdp_program(&lab).0 == "icmp_guard"
    });
    service.wait_for("the watchdog's line", Duration::from_secs(5), |out, _| {
        out.contains("in place of a stale trace build")
    });
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
}
