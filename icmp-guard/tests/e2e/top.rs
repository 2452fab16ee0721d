//! `top` and the `run` drop log end to end: a bounded hping3 flood from one source and
//! light pings from another, in a two-namespace lab. `top --json` must put the flooding
//! source first; `run` must log sampled drops at its line rate and sum up the rest. Every
//! flood is bounded in packets and seconds; every background process is killed in `Drop`,
//! before the lab removes the namespaces and pins.

use std::time::Duration;

use serde_json::Value;

use crate::lab::*;

/// The light pinger's address, beside the flooding peer's 192.0.2.2.
const LIGHT_V4: &str = "192.0.2.3";

/// A lab whose peer also owns 192.0.2.3, with the guard attached and echo requests limited
/// to 100/s per source.
fn lab_with_two_sources(extra_attach: &[&str]) -> Lab {
    let lab = Lab::new();
    lab.add_peer_address(LIGHT_V4);
    let mut attach = vec!["attach", lab.guard_if.as_str()];
    attach.extend_from_slice(extra_attach);
    lab.cli_ok(&attach);
    lab.limit_echo("100/s", "100", &[]);
    lab
}

/// A bounded flood from the peer's 192.0.2.2: `packets` echo requests at about 10,000/s,
/// cut off after `seconds` whatever happens.
fn flood(lab: &Lab, packets: u32, seconds: u32) -> Background {
    let (count, limit) = (packets.to_string(), seconds.to_string());
    let args = [
        "-s", "INT", &limit, "hping3", "--icmp", "-q", "-i", "u100", "-c", &count, GUARD_V4,
    ];
    lab.peer_background("flood", "timeout", &args)
}

/// Light pings from 192.0.2.3: five a second, `count` of them.
fn light_pings(lab: &Lab, count: u32) -> Background {
    let count = count.to_string();
    let args = [
        "-I", LIGHT_V4, "-c", &count, "-i", "0.2", "-W", "1", "-q", GUARD_V4,
    ];
    lab.peer_background("ping", "ping", &args)
}

fn source<'a>(report: &'a Value, address: &str) -> Option<&'a Value> {
    report["sources"]
        .as_array()
        .expect("sources array")
        .iter()
        .find(|source| source["address"] == address)
}

#[test]
fn top_json_puts_the_flooding_source_first() {
    if !privileged("top_json_puts_the_flooding_source_first") {
        return;
    }
    let _one = one_flood_at_a_time();
    let lab = lab_with_two_sources(&["--events-per-sec", "200"]);
    let config = lab.json(&["config", "events-per-sec", "--json"]);
    assert_eq!(config["events_per_sec"], 200, "attach set the budget");

    let pings = light_pings(&lab, 60);
    let mut flood = flood(&lab, 30_000, 8);
    // Let both start before the interval begins.
    std::thread::sleep(Duration::from_millis(500));
    let text = lab.cli_ok(&[
        "top",
        "--json",
        "--interval",
        "2",
        "--count",
        "1",
        "--limit",
        "5",
    ]);
    let report: Value = serde_json::from_str(text.trim()).expect("one JSON document");
    flood.wait_exit(Duration::from_secs(15));
    // With the flood over, the pings are what is left, and top follows.
    let after: Value = serde_json::from_str(
        lab.cli_ok(&["top", "--json", "--interval", "1", "--count", "1"])
            .trim(),
    )
    .expect("one JSON document");
    assert_eq!(
        after["sources"][0]["address"], LIGHT_V4,
        "the pinger leads once the flood stopped: {after}"
    );
    assert!(source(&after, PEER_V4).is_none(), "{after}");
    drop(pings);

    assert_eq!(report["estimated"], true, "{report}");
    assert_eq!(report["events_per_sec_per_cpu"], 200, "{report}");
    let sampled = report["sampled_events"].as_u64().expect("sampled_events");
    let interval = report["interval_seconds"].as_f64().expect("interval");
    assert!(sampled > 0, "{report}");
    // Two CPUs, every 100 ms window touched at its full allowance of 20.
    let windows = (interval * 10.0).floor() as u64 + 2;
    assert!(
        sampled <= 2 * windows * 20,
        "{sampled} events in {interval} s break the budget: {report}"
    );
    let sources = report["sources"].as_array().expect("sources");
    assert_eq!(
        sources[0]["address"], PEER_V4,
        "the flooding source comes first: {report}"
    );
    let flooder = &sources[0];
    let flood_rate = flooder["packets_per_sec"].as_f64().expect("rate");
    assert!(
        flood_rate > 1000.0,
        "hping3 sends thousands a second: {report}"
    );
    assert_eq!(flooder["top_drop_reason"], "rate_limit", "{report}");
    assert_eq!(flooder["top_type_name"], "echo-request", "{report}");
    assert!(
        flooder["dropped_per_sec"].as_f64().expect("drops") > 500.0,
        "{report}"
    );
    // The pings are sampled at the rate of everything on their CPU: on the flood's CPU
    // a handful of pings may go unsampled, and that is the estimate working, not failing.
    // When they were sampled, they rank far below the flood and have no drops.
    if let Some(light) = source(&report, LIGHT_V4) {
        let light_rate = light["packets_per_sec"].as_f64().expect("rate");
        assert!(
            flood_rate > 10.0 * light_rate,
            "the flood ({flood_rate}/s) dwarfs the pings ({light_rate}/s): {report}"
        );
        assert_eq!(light["top_drop_reason"], Value::Null, "{report}");
        assert_eq!(light["dropped_per_sec"], 0.0, "{report}");
    }
    let total = report["icmp_packets_per_sec"].as_f64().expect("total");
    assert!(
        flood_rate <= total * 1.01,
        "an estimate never exceeds the measured total: {report}"
    );
}

#[test]
fn run_logs_sampled_drops_at_a_few_lines_a_second_and_pauses_for_top() {
    if !privileged("run_logs_sampled_drops") {
        return;
    }
    let _one = one_flood_at_a_time();
    let lab = lab_with_two_sources(&[]);
    let config = lab.json(&["config", "events-per-sec", "--json"]);
    assert_eq!(
        config["events_per_sec"], 1000,
        "a first attach writes the default"
    );
    let mut service = lab.background(&["run", &lab.guard_if, "--drop-log", "3"]);
    service.wait_for("the service to start", Duration::from_secs(15), |out, _| {
        out.contains("protecting")
    });

    let mut flood = flood(&lab, 30_000, 8);
    service.wait_for(
        "a suppression summary",
        Duration::from_secs(15),
        |out, _| out.contains("more sampled drops in the last second not shown"),
    );
    // `top` takes the events over; the drop log says it pauses, and resumes after.
    let report: Value = serde_json::from_str(
        lab.cli_ok(&["top", "--json", "--interval", "1", "--count", "1"])
            .trim(),
    )
    .expect("JSON");
    assert_eq!(report["sources"][0]["address"], PEER_V4, "{report}");
    flood.wait_exit(Duration::from_secs(15));
    service.wait_for(
        "the drop log to resume",
        Duration::from_secs(15),
        |out, _| out.contains("drop log resumed"),
    );

    let out = service.stdout();
    assert!(out.contains("drop log paused"), "{out}");
    let drops: Vec<&str> = out
        .lines()
        .filter(|line| line.contains(" dropped echo-request (8/0) from 192.0.2.2 on "))
        .collect();
    assert!(!drops.is_empty(), "{out}");
    assert!(
        drops.iter().all(|line| line.contains(": rate_limit, ")),
        "{out}"
    );
    // At most 3 lines in any second of the wall clock (lines start with HH:MM:SS); a
    // window can straddle two clock seconds, so allow two windows' worth per second.
    let mut per_second = std::collections::HashMap::new();
    for line in &drops {
        *per_second.entry(&line[..8]).or_insert(0) += 1;
    }
    assert!(
        per_second.values().all(|count| *count <= 6),
        "more than the drop log's rate: {per_second:?}\n{out}"
    );
    assert!(
        drops.len() < 60,
        "{} drop lines for an 8 s flood: {out}",
        drops.len()
    );
    // The service stops on SIGTERM; it adopted the guard `attach` put there, and leaves
    // it as it found it.
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
    assert!(
        service.stdout().contains("left ") && lab.xdp_on_interface(),
        "an adopted guard stays attached: {}",
        service.stdout()
    );
}
