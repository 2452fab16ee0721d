//! Issue 14 end to end, with real traffic in network namespaces of our own (removed in
//! `Drop`, every flood bounded by `timeout` and a packet count or rate):
//!
//! - point 4: non-first fragments from a denied source never reach reassembly, while a
//!   `ping -s 8972` over a 1500-byte MTU (seven fragments a ping) still works;
//! - point 5: `tracepath` finds the path MTU through a router while another source floods
//!   the guarded host with errors, which meet their per-source ceiling;
//! - point 7: a spoofed flood cycling a /16 for 30 seconds gets the new-source budget and no
//!   more, while a bystander pinging once a second loses nothing.
//!
//! Against main before issue 14 the fragment and error floods passed whole and the spoofed
//! /16 flood got many times the budget.

mod support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::lab::*;

/// Floods share two CPUs with everything else: one at a time keeps them honest.
static ONE_FLOOD_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_flood() -> std::sync::MutexGuard<'static, ()> {
    ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A counter of `/proc/net/snmp` inside `ns`.
fn snmp(ns: &str, protocol: &str, field: &str) -> u64 {
    let output = run("ip", &["netns", "exec", ns, "cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let prefix = format!("{protocol}:");
    let mut lines = text.lines().filter(|line| line.starts_with(&prefix));
    let (header, values) = (lines.next().expect("header"), lines.next().expect("values"));
    let index = header
        .split_whitespace()
        .position(|name| name == field)
        .unwrap_or_else(|| panic!("{protocol} {field} missing"));
    values
        .split_whitespace()
        .nth(index)
        .and_then(|value| value.parse().ok())
        .expect("a number")
}

fn fragments_dropped(stats: &Value, reason: &str) -> u64 {
    stats["fragments"]["dropped"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("fragments.dropped.{reason} in {stats}"))
}

#[test]
fn fragments_from_a_denied_source_never_reach_reassembly_and_large_pings_work() {
    if !support::privileged("fragments_from_a_denied_source") {
        return;
    }
    let lab = Lab::new();
    lab.cli_ok(&["attach", &lab.guard_if]);
    // A legitimate large ping: 8,972 bytes of data over a 1500-byte MTU, 7 fragments.
    let output = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.peer_ns,
            "ping",
            "-c",
            "3",
            "-i",
            "0.3",
            "-W",
            "2",
            "-s",
            "8972",
            "-q",
            GUARD_V4,
        ],
    );
    assert_eq!(ping_replies(&output.stdout), 3, "ping -s 8972");
    let stats = lab.json(&["stats", "--json"]);
    assert!(
        stats["totals"]["icmp_fragments_passed"].as_u64() >= Some(18),
        "the non-first fragments passed: {}",
        stats["totals"]
    );

    // The issue's attack: `hping3 --icmp --flood -g 1480` from a denied source.
    lab.cli_ok(&["deny", "add", PEER_V4]);
    let reassembly = snmp(&lab.guard_ns, "Ip", "ReasmReqds");
    {
        let _one = one_flood();
        run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.peer_ns,
                "timeout",
                "-s",
                "INT",
                "3",
                "hping3",
                "--icmp",
                "--flood",
                "-q",
                "-g",
                "1480",
                GUARD_V4,
            ],
        );
    }
    let stats = lab.json(&["stats", "--json"]);
    let denied = fragments_dropped(&stats, "deny_list");
    let reassembled = snmp(&lab.guard_ns, "Ip", "ReasmReqds") - reassembly;
    eprintln!(
        "fragment flood from a denied source: {denied} dropped, {reassembled} reached reassembly"
    );
    assert!(
        denied > 10_000,
        "the flood was too weak to test anything: {denied}"
    );
    assert_eq!(
        reassembled, 0,
        "fragments of a denied source reached reassembly"
    );

    // From an allowed-to-speak source the flood meets the fragment budget instead: per
    // source 20/s with a burst of 60 (the defaults, under a backstop of 40/s, burst 100).
    lab.cli_ok(&["deny", "del", PEER_V4]);
    let reassembly = snmp(&lab.guard_ns, "Ip", "ReasmReqds");
    let started = Instant::now();
    {
        let _one = one_flood();
        run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.peer_ns,
                "timeout",
                "-s",
                "INT",
                "3",
                "hping3",
                "--icmp",
                "--flood",
                "-q",
                "-g",
                "1480",
                GUARD_V4,
            ],
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = lab.json(&["stats", "--json"]);
    let limited = fragments_dropped(&stats, "rate_limit");
    let reassembled = snmp(&lab.guard_ns, "Ip", "ReasmReqds") - reassembly;
    let budget = 60.0 + 20.0 * seconds;
    eprintln!(
        "fragment flood: {limited} over the budget, {reassembled} reached reassembly in {seconds:.1} s (budget {budget:.0})"
    );
    assert!(
        limited > 10_000,
        "the flood was too weak to test anything: {limited}"
    );
    assert!(
        reassembled as f64 <= budget * 1.02,
        "{reassembled} fragments reached reassembly, the budget is {budget:.0}"
    );
    // Large pings still work afterwards: the orphans the budget let through hold little
    // reassembly memory, and a second refills the source's bucket for two pings.
    std::thread::sleep(Duration::from_secs(1));
    let output = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.peer_ns,
            "ping",
            "-c",
            "2",
            "-i",
            "0.3",
            "-W",
            "2",
            "-s",
            "8972",
            "-q",
            GUARD_V4,
        ],
    );
    assert_eq!(
        ping_replies(&output.stdout),
        2,
        "ping -s 8972 after the flood"
    );
}

/// Three namespaces: `host` (192.0.2.1, guarded) — `router` (192.0.2.254 | 198.51.100.1) —
/// `far` (198.51.100.2), the router–far link at MTU 1400. Removed in `Drop`.
struct Path {
    host: String,
    router: String,
    far: String,
    host_if: String,
    pin_dir: std::path::PathBuf,
}

impl Path {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let path = Self {
            host: format!("igdp-{id}-h"),
            router: format!("igdp-{id}-r"),
            far: format!("igdp-{id}-f"),
            host_if: format!("igd{id}h"),
            pin_dir: std::path::PathBuf::from(format!("/sys/fs/bpf/icmp-guard-dp-{id}")),
        };
        for ns in [&path.host, &path.router, &path.far] {
            run_ok("ip", &["netns", "add", ns]);
            run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        let router_host_if = format!("igd{id}rh");
        let router_far_if = format!("igd{id}rf");
        let far_if = format!("igd{id}f");
        run_ok(
            "ip",
            &[
                "link",
                "add",
                &path.host_if,
                "netns",
                &path.host,
                "type",
                "veth",
                "peer",
                "name",
                &router_host_if,
                "netns",
                &path.router,
            ],
        );
        run_ok(
            "ip",
            &[
                "link",
                "add",
                &router_far_if,
                "netns",
                &path.router,
                "mtu",
                "1400",
                "type",
                "veth",
                "peer",
                "name",
                &far_if,
                "netns",
                &path.far,
                "mtu",
                "1400",
            ],
        );
        for (ns, dev, address) in [
            (&path.host, &path.host_if, "192.0.2.1/24"),
            (&path.router, &router_host_if, "192.0.2.254/24"),
            (&path.router, &router_far_if, "198.51.100.1/24"),
            (&path.far, &far_if, "198.51.100.2/24"),
        ] {
            run_ok("ip", &["-n", ns, "addr", "add", address, "dev", dev]);
            run_ok("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        run_ok(
            "ip",
            &[
                "-n",
                &path.host,
                "route",
                "add",
                "default",
                "via",
                "192.0.2.254",
            ],
        );
        run_ok(
            "ip",
            &[
                "-n",
                &path.far,
                "route",
                "add",
                "default",
                "via",
                "198.51.100.1",
            ],
        );
        run_ok(
            "ip",
            &[
                "netns",
                "exec",
                &path.router,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        );
        path
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg(env!("CARGO_BIN_EXE_icmp-guard"))
            .args(args)
            .env("ICMP_GUARD_PIN_DIR", &self.pin_dir)
            .output()
            .expect("running icmp-guard")
    }
}

impl Drop for Path {
    fn drop(&mut self) {
        let _ = self.cli(&["detach", "--all"]);
        for ns in [&self.host, &self.router, &self.far] {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

#[test]
fn tracepath_finds_the_path_mtu_while_another_source_floods_errors() {
    if !support::privileged("tracepath_finds_the_path_mtu") {
        return;
    }
    let path = Path::new();
    let attached = path.cli(&["attach", &path.host_if]);
    assert!(
        attached.status.success(),
        "attach: {}",
        String::from_utf8_lossy(&attached.stderr)
    );
    let _one = one_flood();
    // Another source (spoofed by the router, so that the guarded host's reverse path
    // holds) floods destination unreachables at 10,000/s for 8 s: each carries the IP
    // header it claims to report on, so only the per-source ceiling (1,000/s) stops it.
    let flood: Child = Command::new("ip")
        .args(["netns", "exec", &path.router, "timeout", "-s", "INT", "8"])
        .args([
            "hping3",
            "--icmp",
            "-C",
            "3",
            "-K",
            "3",
            "-a",
            "203.0.113.50",
        ])
        .args(["-i", "u100", "-q", "192.0.2.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hping3");
    std::thread::sleep(Duration::from_secs(1));
    let output = run(
        "ip",
        &[
            "netns",
            "exec",
            &path.host,
            "timeout",
            "20",
            "tracepath",
            "-n",
            "198.51.100.2",
        ],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let _ = flood.wait_with_output();
    let stats: Value =
        serde_json::from_slice(&path.cli(&["stats", "--json"]).stdout).expect("stats --json");
    let unreachable = stats["icmp"]
        .as_array()
        .expect("icmp rows")
        .iter()
        .find(|row| row["family"] == "v4" && row["type"] == 3)
        .cloned()
        .expect("destination unreachable counted");
    eprintln!("tracepath:\n{text}\nv4 type 3: {unreachable}");
    assert!(
        text.contains("pmtu 1400"),
        "tracepath found no PMTU:\n{text}"
    );
    assert!(
        text.contains("reached"),
        "tracepath did not reach the far end:\n{text}"
    );
    let limited = unreachable["dropped"]["rate_limit"]
        .as_u64()
        .expect("rate_limit");
    assert!(
        limited > 20_000,
        "the error flood met no ceiling: {unreachable}"
    );
}

#[test]
fn a_spoofed_flood_over_a_slash_16_for_30_seconds_gets_the_budget_and_a_bystander_loses_nothing() {
    if !support::privileged("a_spoofed_flood_over_a_slash_16_for_30_seconds") {
        return;
    }
    const BYSTANDER: &str = "192.0.2.3";
    const SECONDS: u64 = 30;
    const RATE_PPS: u64 = 150_000;
    let lab = Lab::new();
    run_ok(
        "ip",
        &[
            "-n",
            &lab.peer_ns,
            "addr",
            "add",
            &format!("{BYSTANDER}/24"),
            "dev",
            &lab.peer_if,
        ],
    );
    // The guarded host answers spoofed sources through its default route, as a real one.
    run_ok(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "route",
            "add",
            "default",
            "via",
            PEER_V4,
        ],
    );
    // The safe default profile: 100/s per source, the new-source budget 1,000/s with a
    // burst of 2,000, probation 5 s.
    lab.cli_ok(&["attach", &lab.guard_if]);
    // The bystander pings once a second from before the flood (past its probation) to
    // after it.
    let pings = SECONDS + 10;
    let bystander = Command::new("ip")
        .args(["netns", "exec", &lab.peer_ns, "ping", "-I", BYSTANDER, "-c"])
        .arg(pings.to_string())
        .args(["-i", "1", "-W", "2", "-q", GUARD_V4])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ping");
    std::thread::sleep(Duration::from_secs(7));
    let echo_passed = |lab: &Lab| {
        icmp_row(&lab.json(&["stats", "--json"]), "v4", 8)
            .map_or(0, |row| row["passed"].as_u64().expect("passed"))
    };
    let before = echo_passed(&lab);

    let mac = |ns: &str, dev: &str| -> String {
        let output = run("ip", &["-n", ns, "-j", "link", "show", "dev", dev]);
        let links: Value = serde_json::from_slice(&output.stdout).expect("ip -j link");
        links[0]["address"].as_str().expect("a MAC").to_owned()
    };
    let config = std::env::temp_dir().join(format!("igdp-{}.cfg", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "{{\n  eth(da={}, sa={}),\n  ipv4(sa=198.18.0.0, da={GUARD_V4}, ttl=64, sa[2]=drnd(), sa[3]=drnd()),\n  icmpv4(echorequest, id=0x4947, seq=1),\n  fill(0xab, 56)\n}}\n",
            mac(&lab.guard_ns, &lab.guard_if),
            mac(&lab.peer_ns, &lab.peer_if),
        ),
    )
    .expect("write the trafgen configuration");
    let started = Instant::now();
    {
        let _one = one_flood();
        let output = Command::new("ip")
            .args(["netns", "exec", &lab.peer_ns, "timeout", "-s", "INT"])
            .arg((SECONDS + 10).to_string())
            .args(["trafgen", "--dev", &lab.peer_if, "--conf"])
            .arg(&config)
            .args(["--num", &(SECONDS * RATE_PPS).to_string()])
            .args(["--rate", &format!("{RATE_PPS}pps"), "--cpus", "1"])
            .args(["--no-sock-mem", "--notouch-irq", "--no-cpu-stats", "-q"])
            .output()
            .expect("run trafgen");
        assert!(
            output.status.success(),
            "trafgen: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let admitted = echo_passed(&lab) - before;
    let _ = std::fs::remove_file(&config);
    let output = bystander.wait_with_output().expect("ping finished");
    let replies = ping_replies(&output.stdout);
    // The bystander's pings during the flood are in `admitted` too.
    let spoofed = admitted.saturating_sub(seconds.ceil() as u64);
    let budget = 2000.0 + 1000.0 * seconds;
    eprintln!(
        "{} spoofed echoes from 198.18.0.0/16 in {seconds:.1} s: {spoofed} admitted, the budget {budget:.0}; the bystander got {replies} of {pings} replies",
        SECONDS * RATE_PPS
    );
    assert_eq!(u64::from(replies), pings, "the bystander lost pings");
    assert!(
        spoofed as f64 <= budget * 1.1,
        "{spoofed} spoofed echoes admitted, the budget is {budget:.0} (+10 %)"
    );
    let limited = icmp_row(&lab.json(&["stats", "--json"]), "v4", 8).map_or(0, |row| {
        row["dropped"]["rate_limit"].as_u64().expect("rate_limit")
    });
    assert!(
        limited > 1_000_000,
        "the flood was too weak to test anything: {limited}"
    );
}
