//! Reconnaissance on a gateway (issue 20): a router namespace, forwarding on, with
//! icmp-guard on its uplink veth in front of a /24 (64 addresses alive on one inner
//! namespace); an attacker outside sweeps it with `fping -g`. The sweep is flagged after
//! its threshold and the rest of its probes are dropped, so it finds at most the threshold
//! (plus the sketch's accuracy) of the alive hosts; a bystander beside the attacker pinging
//! two inner hosts once a second keeps every reply; tracepath through the router works.

use std::time::Duration;

use icmp_guard_lab::process::{Background, run};

use crate::lab::counter;

/// Addresses alive behind the router: more than the threshold, so the sweep's tally
/// tells whether it was stopped.
const ALIVE: u32 = 64;
const THRESHOLD: u32 = 32;
/// The sketch's stated accuracy (`tests/prog/recon.rs`): ±15 %.
const WITH_ACCURACY: u32 = THRESHOLD + THRESHOLD * 15 / 100;

#[test]
fn a_ping_sweep_through_a_guarded_router_is_stopped_at_its_threshold() {
    let mut lab = lab_or_skip!("a_ping_sweep_through_a_guarded_router_is_stopped");
    let router = lab.guard_ns.clone();
    let attacker = lab.peer_ns.clone();
    let inner = lab.add_namespace("inner");
    let (router_in, inner_if) = lab.add_veth((&router, "routerin"), (&inner, "net"));
    lab.ip(
        &router,
        &["addr", "add", "198.51.100.1/24", "dev", &router_in],
    );
    lab.ip(&router, &["link", "set", &router_in, "up"]);
    lab.ip(
        &inner,
        &["addr", "add", "198.51.100.2/24", "dev", &inner_if],
    );
    for host in 3..2 + ALIVE {
        let address = format!("198.51.100.{host}/24");
        lab.ip(&inner, &["addr", "add", &address, "dev", &inner_if]);
    }
    lab.ip(&inner, &["link", "set", &inner_if, "up"]);
    lab.ip(&inner, &["route", "add", "default", "via", "198.51.100.1"]);
    lab.ip(
        &attacker,
        &[
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            crate::lab::GUARD_V4,
        ],
    );
    // The bystander: another host of the attacker's /24, in the same namespace.
    lab.ip(
        &attacker,
        &["addr", "add", "192.0.2.3/24", "dev", &lab.peer_if],
    );
    run(lab
        .command(&router, "sysctl")
        .args(["-qw", "net.ipv4.conf.all.forwarding=1"]))
    .unwrap_or_else(|err| panic!("{err}"));

    // Unguarded, the sweep finds every alive host: the lab works, and the count below
    // means something.
    let sweep = |lab: &crate::lab::Lab| -> u32 {
        let output = lab
            .command(&attacker, "fping")
            .args(["-a", "-q", "-r", "0", "-t", "300", "-g", "198.51.100.0/24"])
            .output()
            .expect("run fping");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .count() as u32
    };
    // (The router's own 198.51.100.1 answers too.)
    assert_eq!(sweep(&lab), ALIVE + 1, "the unguarded sweep");

    // The service, whose log names the sweeper.
    let mut service = lab.background(&["run", &lab.guard_if]);
    service.wait_for("start-up", Duration::from_secs(10), |out, _| {
        out.contains("protecting")
    });
    let status = lab.cli_ok(&["status"]);
    assert!(
        status.contains("recon: on (interface forwards)"),
        "{status}"
    );
    let bystanders: Vec<Background> = ["198.51.100.10", "198.51.100.40"]
        .iter()
        .map(|target| {
            lab.peer_background(
                "bystander ping",
                "ping",
                &["-n", "-i", "1", "-c", "6", "-I", "192.0.2.3", target],
            )
        })
        .collect();

    // fping's own list of alive hosts; -r 0: one probe per address.
    let alive = sweep(&lab);
    assert!(
        alive <= WITH_ACCURACY,
        "the sweep found {alive} of {ALIVE} alive hosts, more than {WITH_ACCURACY}"
    );
    assert!(alive > 0, "the first probes of a sweep are not stopped");
    println!("RECON-E2E the guarded sweep found {alive} of {ALIVE} alive hosts");
    let stats = lab.json(&["stats", "--json"]);
    let swept = counter(&stats, "v4", 8, &["dropped", "sweep"]);
    assert!(
        swept >= u64::from(254 - WITH_ACCURACY),
        "{swept} probes dropped as sweep of 254: {stats}"
    );

    for bystander in bystanders {
        let text = bystander.finish(Duration::from_secs(15));
        let (sent, received) =
            icmp_guard_lab::ping::summary(&text).unwrap_or_else(|| panic!("no summary: {text}"));
        assert_eq!(
            (sent, received),
            (6, 6),
            "the bystander lost replies: {text}"
        );
    }

    // The guard says who swept: metrics, then top's list of sweeping sources.
    let metrics = lab.cli_ok(&["metrics", "--once"]);
    assert!(
        metrics.contains("icmp_guard_recon_flagged_sources 1"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"sweep\""), "{metrics}");
    let top = lab.json(&["top", "--json", "--count", "1", "--interval", "1"]);
    let sweeping = top["sweeping"]
        .as_array()
        .expect("top lists sweeping sources");
    assert!(
        sweeping
            .iter()
            .any(|entry| entry["address"] == crate::lab::PEER_V4
                && entry["destinations"].as_u64().is_some_and(|n| n >= 27)),
        "{top}"
    );

    let line = "192.0.2.2 swept ≥ ";
    service.wait_for("the sweep line", Duration::from_secs(5), |out, _| {
        out.contains(line)
    });
    let log = service.stdout();
    assert!(
        log.contains("addresses in 10 s; its echo requests are blocked for 60 s"),
        "{log}"
    );
    assert!(
        !log.contains("192.0.2.3 swept"),
        "the bystander was flagged: {log}"
    );

    // Errors are not probes: tracepath through the router, both ways, while the attacker
    // is blocked (its UDP probes and the ICMP errors they draw pass).
    let out = lab.run_in(&attacker, "tracepath", &["-n", "-m", "5", "198.51.100.50"]);
    assert!(out.contains("reached"), "{out}");
    let back = lab.run_in(&inner, "tracepath", &["-n", "-m", "5", crate::lab::PEER_V4]);
    assert!(back.contains("reached"), "{back}");

    // An operator lifts the sweeper's block with `unblock`, as a block time's: its pings
    // are answered again at once (its count starts from nothing).
    let pings = |count: &str| {
        let output = lab
            .command(&attacker, "ping")
            .args(["-n", "-c", count, "-i", "0.2", "-W", "1", "198.51.100.50"])
            .output()
            .expect("ping");
        crate::lab::ping_replies(&String::from_utf8_lossy(&output.stdout))
    };
    assert_eq!(pings("2"), 0, "the sweeper is still blocked");
    let lifted = lab.cli_ok(&["unblock", crate::lab::PEER_V4]);
    assert!(
        lifted.contains("unblocked 192.0.2.2/32 (flagged as sweeping"),
        "{lifted}"
    );
    assert_eq!(
        pings("3"),
        3,
        "unblocked, the former sweeper's pings are answered"
    );
    let again = lab.cli_ok(&["unblock", "--all"]);
    assert!(again.contains("nothing to do"), "{again}");
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
}
