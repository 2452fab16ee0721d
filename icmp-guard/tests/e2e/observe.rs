//! End-to-end tests of what an operator observes and runs for a long time: `stats --watch`
//! and `--by-code`, the kernel's own ICMP view in `status`, the Prometheus exporter
//! (checked with `promtool`), the `run` service mode with its policy file watcher, and the
//! generated completions and manual page. Each test builds its own two-namespace lab; every
//! background process is killed in `Drop` (before the lab, which removes the namespaces
//! and pins), pass or fail.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::lab::*;

/// The port in the "serving metrics on http://IP:PORT/metrics" line.
fn served_port(stdout: &str) -> Option<u16> {
    let rest = stdout.split("serving metrics on http://").nth(1)?;
    let authority = rest.split("/metrics").next()?;
    authority.rsplit(':').next()?.parse().ok()
}

/// GET `path` from 127.0.0.1:`port` inside the network namespace `ns`: a thread joins the
/// namespace and speaks HTTP/1.1 over std's
/// TcpStream. Returns (head, body).
fn http_get_in_ns(ns: &str, port: u16, path: &str, accept: Option<&str>) -> (String, String) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}Connection: close\r\n\r\n",
        accept.map_or_else(String::new, |a| format!("Accept: {a}\r\n"))
    );
    let response = icmp_guard_lab::netns::run_in(ns, || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("receive");
        Ok(response)
    })
    .unwrap_or_else(|err| panic!("{err}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {response:?}"));
    (head.to_owned(), body.to_owned())
}

/// Runs `promtool check metrics` on `exposition`; panics with its findings.
fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by `cargo xtask setup`)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feeding promtool");
    let output = child.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

fn v4_echo(verdict_or_reason: &str) -> String {
    let (key, value) = verdict_or_reason.split_once('=').expect("key=value");
    let metric = if key == "verdict" {
        "icmp_guard_packets_total"
    } else {
        "icmp_guard_drops_total"
    };
    format!("{metric}{{family=\"v4\",type=\"8\",name=\"echo-request\",{key}=\"{value}\"}}")
}

#[test]
fn completions_and_man_page_are_generated_from_the_command_line() {
    let run_ok = |args: &[&str]| {
        let output = Command::new(BIN).args(args).output().expect("icmp-guard");
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    // The scripts call this binary back (ICMP_GUARD_COMPLETE=<shell>), which answers from
    // its own command line: bash, as on TAB, gets the commands and options.
    let bash = run_ok(&["completions", "bash"]);
    assert!(
        bash.contains(BIN) && bash.contains("ICMP_GUARD_COMPLETE=\"bash\""),
        "{bash}"
    );
    let dir = TempDir::new("completions");
    let script = dir.write("icmp-guard.bash", &bash);
    let syntax = run("bash", &["-n", &script]);
    assert!(syntax.status.success(), "bash -n: {syntax:?}");
    let complete = |words: &str| {
        let current = words.rsplit(' ').next().unwrap_or_default();
        let asked = run(
            "bash",
            &[
                "-c",
                &format!(
                    "source {script}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                     _clap_complete_icmp_guard icmp-guard '{current}' x; printf '%s\\n' \"${{COMPREPLY[@]}}\""
                ),
            ],
        );
        String::from_utf8_lossy(&asked.stdout).into_owned()
    };
    let offered = complete("icmp-guard st");
    assert!(offered.lines().any(|w| w.trim() == "stats"), "{offered}");
    assert!(offered.lines().any(|w| w.trim() == "status"), "{offered}");
    let offered = complete("icmp-guard run --k");
    assert!(offered.lines().any(|w| w.trim() == "--keep"), "{offered}");
    assert!(run_ok(&["completions", "zsh"]).starts_with("#compdef icmp-guard"));
    assert!(run_ok(&["completions", "fish"]).contains("--command icmp-guard"));

    let page = run_ok(&["man"]);
    assert!(page.contains(".TH ICMP-GUARD 8"), "{page}");
    let roff = dir.write("icmp-guard.8", &page);
    let rendered = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", &roff])
        .output();
    if let Ok(rendered) = rendered {
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(rendered.status.success(), "groff: {rendered:?}");
        assert!(text.contains("icmp-guard-run(8)"), "{text}");
        assert!(
            rendered.stderr.is_empty(),
            "groff warnings: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
    }
    let pages = dir.path("pages");
    run_ok(&["man", "--out-dir", pages.to_str().expect("UTF-8")]);
    for page in [
        "man8/icmp-guard.8",
        "man8/icmp-guard-run.8",
        "man8/icmp-guard-metrics.8",
        "man5/icmp-guard.toml.5",
    ] {
        assert!(pages.join(page).exists(), "{page} written");
    }
}

/// Sends `count` ICMP messages of `icmp_type`/`code` from the peer with hping3.
fn hping_icmp(lab: &Lab, icmp_type: u8, code: u8, count: u32) {
    let (icmp_type, code) = (icmp_type.to_string(), code.to_string());
    lab.hping_icmp(&["--icmptype", &icmp_type, "--icmpcode", &code], count);
}

#[test]
fn stats_by_code_and_per_interface_counters_match_what_was_sent() {
    let lab = lab_or_skip!("stats_by_code");
    lab.cli_ok(&["attach", &lab.guard_if]);
    // Destination unreachable in three codes (PMTUD's 4 among them), one above the buckets.
    hping_icmp(&lab, 3, 4, 3);
    hping_icmp(&lab, 3, 13, 2);
    hping_icmp(&lab, 3, 200, 1);
    // Redirects: dropped by the default profile.
    hping_icmp(&lab, 5, 1, 2);

    let rows = lab.json(&["stats", "--by-code", "--json"]);
    let row = |icmp_type: u64, code: u64| {
        rows.as_array()
            .expect("an array")
            .iter()
            .find(|r| r["family"] == "v4" && r["type"] == icmp_type && r["code"] == code)
            .unwrap_or_else(|| panic!("no row v4 {icmp_type}/{code} in {rows}"))
            .clone()
    };
    let pmtud = row(3, 4);
    assert_eq!(
        (pmtud["packets"].as_u64(), pmtud["passed"].as_u64()),
        (Some(3), Some(3)),
        "{rows}"
    );
    assert_eq!(pmtud.get("and_higher"), None, "{rows}");
    let admin = row(3, 13);
    assert_eq!(
        (admin["packets"].as_u64(), admin["passed"].as_u64()),
        (Some(2), Some(2)),
        "{rows}"
    );
    let high = row(3, 15);
    assert_eq!(high["packets"], 1, "{rows}");
    assert_eq!(high["and_higher"], true, "{rows}");
    let redirect = row(5, 1);
    assert_eq!(
        (redirect["packets"].as_u64(), redirect["dropped"].as_u64()),
        (Some(2), Some(2)),
        "{rows}"
    );
    // The per-code rows add up to the per-type row.
    let stats = lab.json(&["stats", "--json"]);
    let unreachable = icmp_row(&stats, "v4", 3).expect("type 3 counted");
    assert_eq!(unreachable["packets"], 6, "{stats}");
    let table = lab.cli_ok(&["stats", "--by-code"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..4]
                == ["v4", "3", "15+", "destination-unreachable"]),
        "{table}"
    );

    // Per interface: everything the guard judged on it, and its drops are every drop.
    let interfaces = stats["interfaces"].as_array().expect("interfaces");
    assert_eq!(interfaces.len(), 1, "{stats}");
    let counters = &interfaces[0]["counters"];
    assert_eq!(counters["dropped"], stats["totals"]["dropped"], "{stats}");
    assert!(counters["packets"].as_u64() >= Some(8), "{stats}");
    assert!(counters["passed"].as_u64() >= Some(6), "{stats}");

    // Watching and --by-code do not mix; the refusal changes nothing.
    lab.cli_refuses(&["stats", "--by-code", "--watch", "1"], "--watch");
}

#[test]
fn stats_watch_prints_json_lines_plain_blocks_and_redraws_a_terminal() {
    let lab = lab_or_skip!("stats_watch");
    lab.cli_ok(&["attach", &lab.guard_if]);
    assert_eq!(lab.ping(GUARD_V4, 2), 2);

    // JSON lines with rates: pings run while the watch samples.
    let mut watch = lab.background(&["stats", "--watch", "1", "--count", "2", "--json"]);
    watch.wait_for("the first line", Duration::from_secs(5), |out, _| {
        out.lines().count() >= 1
    });
    assert_eq!(lab.ping(GUARD_V4, 3), 3);
    assert!(watch.wait_exit(Duration::from_secs(10)).success());
    let lines: Vec<Value> = watch
        .stdout()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
        .collect();
    assert_eq!(lines.len(), 2, "--count 2 gives two lines");
    let plain = lab.json(&["stats", "--json"]);
    for line in &lines {
        for key in ["mode", "interfaces", "totals", "icmp", "unclassified"] {
            assert!(line.get(key).is_some(), "{key} in {line}");
        }
        assert!(line["unix_time"].as_f64().is_some_and(|t| t > 1.6e9));
    }
    assert_eq!(
        icmp_row(&lines[1], "v4", 8),
        icmp_row(&plain, "v4", 8),
        "no echo requests since the last line"
    );
    assert!(
        lines[0]["rates"].is_null(),
        "nothing to compare the first line with"
    );
    let rates = &lines[1]["rates"];
    let interval = rates["interval_seconds"].as_f64().expect("interval");
    assert!((0.9..1.5).contains(&interval), "{rates}");
    let packets = |line: &Value| {
        icmp_row(line, "v4", 8).map_or(0, |row| row["packets"].as_u64().expect("packets"))
    };
    let delta = packets(&lines[1]) - packets(&lines[0]);
    assert!(delta >= 1, "some of the 3 pings fell between the two lines");
    let rate = rates["icmp"]
        .as_array()
        .expect("rates per type")
        .iter()
        .find(|row| row["family"] == "v4" && row["type"] == 8)
        .expect("v4 echo-request rate")["packets_per_second"]
        .as_f64()
        .expect("rate");
    assert!(
        (rate * interval - delta as f64).abs() < 0.1,
        "{rate}/s over {interval}s is {delta} packets"
    );

    // Not a terminal: plain blocks separated by a blank line, no escape sequences.
    let text = lab.cli_ok(&["stats", "--watch", "0.2", "--count", "2"]);
    assert!(!text.contains('\x1b'), "{text:?}");
    let blocks: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(blocks.len(), 2, "{text}");
    for block in blocks {
        assert!(
            block.contains("PKT/S") && block.contains("echo-request"),
            "{block}"
        );
    }

    // A terminal (script(1) gives it a pty): redrawn in place, bold header unless NO_COLOR.
    let in_pty = |no_color: bool| {
        let command = format!(
            "nsenter --net=/run/netns/{} {BIN} stats --watch 0.2 --count 2",
            lab.guard_ns
        );
        let mut script = Command::new("script");
        script
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .env("ICMP_GUARD_PIN_DIR", &lab.pin_dir)
            .env("TERM", "xterm")
            .stdin(Stdio::null());
        if no_color {
            script.env("NO_COLOR", "1");
        } else {
            script.env_remove("NO_COLOR");
        }
        let output = script.output().expect("script");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let screen = in_pty(false);
    assert_eq!(
        screen.matches("\x1b[H").count(),
        2,
        "cursor home per frame: {screen:?}"
    );
    assert!(screen.contains("\x1b[J"), "clear to the end: {screen:?}");
    assert!(screen.contains("\x1b[1mFAMILY"), "bold header: {screen:?}");
    assert!(
        !screen.contains("\x1b[2J"),
        "never a full clear (flicker): {screen:?}"
    );
    let screen = in_pty(true);
    assert!(screen.contains("\x1b[H"), "{screen:?}");
    assert!(!screen.contains("\x1b[1m"), "NO_COLOR: {screen:?}");
}

#[test]
fn status_shows_the_kernel_icmp_view_of_the_guard_namespace() {
    let lab = lab_or_skip!("status_kernel_view");
    // A value the host does not have (a multiple of every HZ's jiffy, which the kernel rounds to) proves the namespace's own /proc/sys is read.
    let sysctl = ["-qw", "net.ipv4.icmp_ratelimit=1500"];
    lab.run_in(&lab.guard_ns, "sysctl", &sysctl);
    let before = lab.json(&["status", "--json"]);
    assert_eq!(before["attached"], false);
    let kernel = &before["kernel"];
    assert_eq!(
        kernel["sysctl"]["net.ipv4.icmp_ratelimit"], 1500,
        "{kernel}"
    );
    for name in [
        "net.ipv4.icmp_echo_ignore_broadcasts",
        "net.ipv4.icmp_ratemask",
        "net.ipv4.icmp_msgs_per_sec",
        "net.ipv4.icmp_msgs_burst",
        "net.ipv6.icmp.echo_ignore_multicast",
        "net.ipv6.icmp.ratelimit",
    ] {
        assert!(kernel["sysctl"][name].is_i64(), "{name}: {kernel}");
    }
    let in_msgs = |status: &Value| status["kernel"]["snmp"]["InMsgs"].as_u64().expect("InMsgs");
    let start = in_msgs(&before);

    lab.cli_ok(&["attach", &lab.guard_if]);
    assert_eq!(lab.ping(GUARD_V4, 3), 3);
    let after = lab.json(&["status", "--json"]);
    assert!(in_msgs(&after) >= start + 3, "{}", after["kernel"]);
    assert!(
        after["kernel"]["snmp"]["OutMsgs"].as_u64() >= Some(3),
        "replies"
    );
    assert!(
        after["kernel"]["snmp6"]["Icmp6InMsgs"].is_u64(),
        "{}",
        after["kernel"]
    );
    assert!(
        after["kernel"]["snmp6"]
            .get("Icmp6OutRateLimitHost")
            .is_some()
    );

    let text = lab.cli_ok(&["status"]);
    assert!(text.contains("kernel ICMP settings"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("net.ipv4.icmp_ratelimit") && l.contains("1500")),
        "{text}"
    );
    assert!(text.contains("InMsgs"), "{text}");
}

#[test]
fn metrics_pass_promtool_and_agree_with_stats_json_and_table() {
    let lab = lab_or_skip!("metrics");
    // Nothing attached is a value to report, not an error (issue 15, point 13).
    let idle = lab.cli_ok(&["metrics", "--once"]);
    assert!(idle.lines().any(|l| l == "icmp_guard_up 0"), "{idle}");
    lab.cli_ok(&["attach", &lab.guard_if]);
    assert_eq!(lab.ping(GUARD_V4, 4), 4);
    lab.cli_ok(&["policy", "set", "echo-request", "drop"]);
    assert_eq!(lab.ping(GUARD_V4, 2), 0);

    let stats = lab.json(&["stats", "--json"]);
    let echo = icmp_row(&stats, "v4", 8).expect("v4 echo counted").clone();
    assert_eq!(echo["packets"], 6, "{stats}");
    assert_eq!(echo["passed"], 4);
    assert_eq!(echo["dropped"]["policy"], 2);

    let table = lab.cli_ok(&["stats"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("v4") && l.contains("echo-request"))
        .expect("table row")
        .split_whitespace()
        .collect();
    // FAMILY TYPE NAME PACKETS BYTES PASSED DROPPED REASONS
    assert_eq!(row[..4], ["v4", "8", "echo-request", "6"], "{table}");
    assert_eq!(row[4], echo["bytes"].to_string(), "{table}");
    assert_eq!(row[5..8], ["4", "2", "policy=2"], "{table}");

    let check = |exposition: &str| {
        promtool_check(exposition);
        assert_eq!(sample(exposition, &v4_echo("verdict=passed")), Some(4.0));
        assert_eq!(sample(exposition, &v4_echo("verdict=dropped")), Some(2.0));
        assert_eq!(
            sample(exposition, &v4_echo("verdict=would_drop")),
            Some(0.0)
        );
        assert_eq!(sample(exposition, &v4_echo("reason=policy")), Some(2.0));
        assert_eq!(
            sample(
                exposition,
                "icmp_guard_bytes_total{family=\"v4\",type=\"8\",name=\"echo-request\"}"
            ),
            echo["bytes"].as_f64()
        );
        assert_eq!(sample(exposition, "icmp_guard_up"), Some(1.0));
        assert_eq!(sample(exposition, "icmp_guard_dry_run"), Some(0.0));
        let attached = format!(
            "icmp_guard_interface_attached{{interface=\"{}\",mode=\"native\"}}",
            lab.guard_if
        );
        assert_eq!(sample(exposition, &attached), Some(1.0), "{exposition}");
        assert!(sample(exposition, "icmp_guard_tracked_sources").is_some_and(|n| n >= 1.0));
        assert!(sample(exposition, "icmp_guard_tracked_prefixes").is_some());
        assert!(sample(exposition, "icmp_guard_policy_revision").is_some_and(|r| r >= 2.0));
        assert!(sample(exposition, "icmp_guard_non_icmp_passed_total").is_some());
        // At least what stats saw before: neighbour discovery keeps being sampled.
        let emitted = sample(exposition, "icmp_guard_events_emitted_total").expect("emitted");
        assert!(
            emitted >= stats["events"]["emitted"].as_f64().expect("stats events") && emitted >= 6.0,
            "{emitted} events, stats said {}",
            stats["events"]
        );
        assert!(sample(exposition, "icmp_guard_events_lost_total").is_some());
        assert_eq!(
            sample(
                exposition,
                "icmp_guard_unclassified_drops_total{reason=\"invalid\"}"
            ),
            Some(0.0)
        );
    };
    check(&lab.cli_ok(&["metrics", "--once"]));
    let openmetrics = lab.cli_ok(&["metrics", "--once", "--format", "open-metrics"]);
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");

    // A real scrape over HTTP, on the loopback of the guard's namespace.
    let mut server = lab.background(&["metrics", "--listen", "127.0.0.1:0"]);
    server.wait_for("the listening line", Duration::from_secs(5), |out, _| {
        served_port(out).is_some()
    });
    let port = served_port(&server.stdout()).expect("port");
    let (head, body) = http_get_in_ns(&lab.guard_ns, port, "/metrics", None);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    check(&body);
    let (head, body) = http_get_in_ns(
        &lab.guard_ns,
        port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let (head, _) = http_get_in_ns(&lab.guard_ns, port, "/elsewhere", None);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(5)).success());
    assert!(server.stdout().contains("SIGTERM: stopped serving metrics"));
}

const PASS_ECHO: &str = "[[rule]]\ntype = \"echo-request\"\naction = \"pass\"\n";
const DROP_ECHO: &str = "[[rule]]\ntype = \"echo-request\"\naction = \"drop\"\n";

#[test]
fn run_applies_watches_and_reloads_its_policy_and_detaches_on_sigterm() {
    let lab = lab_or_skip!("run");
    let dir = TempDir::new("run");
    let policy = dir.write("policy.toml", PASS_ECHO);
    let mut service = lab.background(&[
        "run",
        &lab.guard_if,
        "--policy",
        &policy,
        "--metrics",
        "127.0.0.1:0",
        "--summary-interval",
        "1",
    ]);
    service.wait_for("start-up", Duration::from_secs(10), |out, _| {
        out.contains("protecting")
    });
    let out = service.stdout();
    assert!(
        out.contains(&format!("attaching to {}...", lab.guard_if)),
        "{out}"
    );
    assert!(
        out.contains(&format!("applied policy {policy} (revision")),
        "{out}"
    );
    assert!(lab.xdp_on_interface());
    assert_eq!(lab.ping(GUARD_V4, 2), 2, "the file passes echo requests");
    let port = served_port(&out).expect("metrics port");
    let (head, body) = http_get_in_ns(&lab.guard_ns, port, "/metrics", None);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        sample(&body, &v4_echo("verdict=passed")),
        Some(2.0),
        "{body}"
    );

    // An edit is live within a second.
    let applied = |out: &str| out.matches("applied policy").count();
    let written = Instant::now();
    dir.write("policy.toml", DROP_ECHO);
    service.wait_for(
        "the edit to be applied",
        Duration::from_secs(3),
        |out, _| applied(out) == 2,
    );
    let latency = written.elapsed();
    assert!(
        latency < Duration::from_millis(1500),
        "applied after {latency:?}"
    );
    assert_eq!(lab.ping(GUARD_V4, 2), 0, "the edit drops echo requests");
    // One summary line per interval, from counter deltas.
    service.wait_for("a drop summary", Duration::from_secs(4), |out, _| {
        out.lines()
            .any(|l| l.contains("last 1s: dropped") && l.contains("top: v4 echo-request"))
    });

    // A broken file: reported on stderr, the last good policy stays.
    dir.write(
        "policy.toml",
        "[[rule]]\ntype = \"echo-request\"\naction = \"explode\"\n",
    );
    service.wait_for("the error report", Duration::from_secs(3), |_, err| {
        err.contains("keeping the last good policy")
    });
    let err = service.stderr();
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains(&policy), "{err}");
    assert_eq!(lab.ping(GUARD_V4, 2), 0, "still dropping");
    assert_eq!(applied(&service.stdout()), 2, "nothing applied");

    // Back to a good file, then a live change that SIGHUP undoes.
    dir.write("policy.toml", DROP_ECHO);
    service.wait_for("the fixed file", Duration::from_secs(3), |out, _| {
        applied(out) == 3
    });
    lab.cli_ok(&["policy", "set", "echo-request", "pass"]);
    assert_eq!(lab.ping(GUARD_V4, 1), 1);
    service.signal(libc::SIGHUP);
    service.wait_for("the SIGHUP reload", Duration::from_secs(3), |out, _| {
        out.contains("SIGHUP: reloading") && applied(out) == 4
    });
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        0,
        "SIGHUP restored the file's policy"
    );

    service.signal(libc::SIGTERM);
    let status = service.wait_exit(Duration::from_secs(10));
    let out = service.stdout();
    assert!(status.success(), "{status}\n{out}\n{}", service.stderr());
    assert!(out.contains("SIGTERM: stopping"), "{out}");
    assert!(
        out.contains(&format!("detached from {}", lab.guard_if)),
        "{out}"
    );
    lab.assert_unprotected(1);
}

#[test]
fn run_keep_leaves_the_guard_attached_and_the_next_run_adopts_it() {
    let lab = lab_or_skip!("run_keep");
    let mut first = lab.background(&["run", &lab.guard_if, "--keep"]);
    first.wait_for("start-up", Duration::from_secs(10), |out, _| {
        out.contains("protecting")
    });
    first.signal(libc::SIGINT);
    assert!(first.wait_exit(Duration::from_secs(10)).success());
    assert!(
        first.stdout().contains("left the guard attached"),
        "{}",
        first.stdout()
    );
    assert!(lab.xdp_on_interface(), "--keep leaves protection in place");
    assert!(lab.pin_dir.exists());

    let dir = TempDir::new("adopt");
    let policy = dir.write("policy.toml", DROP_ECHO);
    let mut second = lab.background(&["run", &lab.guard_if, "--policy", &policy]);
    second.wait_for("start-up", Duration::from_secs(10), |out, _| {
        out.contains("protecting")
    });
    let out = second.stdout();
    assert!(out.contains("already attached, adopting"), "{out}");
    assert!(
        out.contains("replaced by") && out.contains("no gap"),
        "a restarted service runs its own program, swapped in without a gap: {out}"
    );
    assert!(!out.contains("attaching to"), "{out}");
    assert!(
        out.contains("applied policy"),
        "the file is applied on adoption: {out}"
    );
    assert_eq!(lab.ping(GUARD_V4, 2), 0);
    second.signal(libc::SIGTERM);
    assert!(second.wait_exit(Duration::from_secs(10)).success());
    // It adopted the guard the first one left: it leaves it as it found it.
    assert!(
        second.stdout().contains("attached as found"),
        "{}",
        second.stdout()
    );
    assert!(lab.xdp_on_interface());
    lab.cli_ok(&["detach", "--all"]);
    assert!(!lab.pin_dir.exists());
    assert!(!lab.xdp_on_interface());
}

#[test]
fn run_puts_protection_back_when_someone_detaches_it() {
    let lab = lab_or_skip!("run_watchdog");
    let dir = TempDir::new("watchdog");
    let policy = dir.write("policy.toml", DROP_ECHO);
    let mut service = lab.background(&["run", &lab.guard_if, "--policy", &policy]);
    service.wait_for("start-up", Duration::from_secs(10), |out, _| {
        out.contains("protecting")
    });
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        0,
        "echo dropped by the file's policy"
    );
    // Someone removes the guard behind the service's back.
    lab.cli_ok(&["detach", "--all"]);
    service.wait_for("the watchdog", Duration::from_secs(5), |out, err| {
        err.contains("is no longer protected") && out.matches("attached to").count() >= 2
    });
    assert!(lab.xdp_on_interface(), "attached again");
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        0,
        "with the file's policy again, not the default profile"
    );
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
    assert!(!lab.xdp_on_interface());
}

#[test]
fn run_with_a_broken_policy_file_protects_with_the_default_and_applies_the_fix() {
    let lab = lab_or_skip!("run_broken");
    let dir = TempDir::new("broken");
    let policy = dir.write("policy.toml", "mode = \"sideways\"\n");
    let mut service = lab.background(&["run", &lab.guard_if, "--policy", &policy]);
    service.wait_for("start-up", Duration::from_secs(10), |out, _| {
        out.contains("protecting")
    });
    let err = service.stderr();
    assert!(err.contains("line 1"), "{err}");
    assert!(err.contains("running with the live policy"), "{err}");
    assert!(lab.xdp_on_interface(), "protected all the same");
    let live = lab.json(&["policy", "show", "--json"]);
    let echo = rule_of(&live, "v4", 8);
    assert_eq!(echo["action"], "limit", "the safe default profile: {echo}");
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        2,
        "echo limited, not dropped, by default"
    );
    // The fix is picked up like any edit.
    dir.write("policy.toml", DROP_ECHO);
    service.wait_for("the fixed file", Duration::from_secs(5), |out, _| {
        out.contains("applied policy")
    });
    assert_eq!(lab.ping(GUARD_V4, 2), 0);
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
    assert!(!lab.xdp_on_interface());
}

#[test]
fn the_systemd_unit_is_valid_and_its_command_line_parses() {
    let unit_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/icmp-guard.service"
    );
    let unit = std::fs::read_to_string(unit_path).expect("packaging/icmp-guard.service");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    // ExecStart with the unit's default environment, pointed at this build and a real
    // policy file, must get past argument parsing (clap exits 2 on a usage error).
    let mut environment: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (name, value) in &mut environment {
        match name.as_str() {
            "INTERFACES" => *value = "igt-none0".to_owned(),
            "POLICY" => {
                *value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy.toml").to_owned();
            }
            _ => {}
        }
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words: Vec<String> = Vec::new();
    for word in exec.split_whitespace() {
        let name = word.trim_start_matches('$').trim_matches(['{', '}']);
        match environment.iter().find(|(k, _)| k == name) {
            Some((_, value)) if word.starts_with('$') => {
                words.extend(value.split_whitespace().map(str::to_owned));
            }
            _ => words.push(word.to_owned()),
        }
    }
    assert_eq!(words[0], "/usr/sbin/icmp-guard");
    // A pin directory of this run's own: the machine may run other test suites at once.
    let pin_dir = format!(
        "/sys/fs/bpf/icmp-guard-unit-test-none-{}",
        std::process::id()
    );
    let output = Command::new(BIN)
        .args(&words[1..])
        .env("ICMP_GUARD_PIN_DIR", &pin_dir)
        .output()
        .expect("icmp-guard");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{words:?}: {err}");
    assert!(
        err.contains("igt-none0 does not exist") || err.contains("run with sudo"),
        "{err}"
    );
    assert!(
        !Path::new(&pin_dir).exists(),
        "a refused start pins nothing"
    );

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let dir = TempDir::new("unit");
        let local = unit.replace("/usr/sbin/icmp-guard", BIN);
        let path = dir.write("icmp-guard.service", &local);
        let verify = run("systemd-analyze", &["verify", "--man=no", &path]);
        let findings = String::from_utf8_lossy(&verify.stderr);
        // Findings about other units on the machine are not this unit's business.
        assert!(
            verify.status.success() && !findings.contains("icmp-guard.service"),
            "systemd-analyze verify: {findings}"
        );
    }
}
