//! End-to-end tests: two network namespaces joined by a veth pair, the real `icmp-guard`
//! binary run as an operator would (via nsenter, so that the host's bpffs stays visible),
//! and real `ping` traffic. Every namespace, link and pin is removed in `Drop`.

use std::process::Command;

use crate::lab::*;
use serde_json::Value;

#[test]
fn attach_count_drop_and_detach_with_real_ping() {
    let lab = lab_or_skip!("attach_count_drop_and_detach_with_real_ping");
    assert_eq!(lab.ping(GUARD_V4, 1), 1, "the lab works before the guard");

    let attached = lab.cli_ok(&["attach", &lab.guard_if]);
    assert!(attached.contains("native mode"), "{attached}");
    assert!(lab.xdp_on_interface());

    // Every CLI call is a new process: protection and counters live in the pins.
    assert_eq!(lab.ping(GUARD_V4, 5), 5);
    let stats = lab.json(&["stats", "--json"]);
    let echo = icmp_row(&stats, "v4", 8).expect("echo requests counted");
    assert_eq!(echo["packets"], 5, "{stats}");
    assert_eq!(echo["passed"], 5);
    assert_eq!(echo["name"], "echo-request");
    assert_eq!(stats["mode"], "enforce");
    assert_eq!(stats["interfaces"][0]["name"], lab.guard_if.as_str());
    assert_eq!(stats["interfaces"][0]["mode"], "native");

    lab.cli_ok(&["policy", "set", "echo-request", "drop"]);
    assert_eq!(
        lab.ping(GUARD_V4, 3),
        0,
        "dropped echo requests get no reply"
    );
    let stats = lab.json(&["stats", "--json"]);
    let echo = icmp_row(&stats, "v4", 8).expect("echo requests counted");
    assert_eq!(echo["packets"], 8, "{stats}");
    assert_eq!(echo["dropped"]["policy"], 3);
    assert!(stats["totals"]["dropped"].as_u64() >= Some(3));

    let policy = lab.json(&["policy", "show", "--json"]);
    assert_eq!(action_of(&policy, "v4", 8), "drop");
    assert_eq!(action_of(&policy, "v6", 128), "drop");
    assert_eq!(action_of(&policy, "v4", 3), "pass");

    let status = lab.json(&["status", "--json"]);
    let program_id = status["interfaces"][0]["program_id"]
        .as_u64()
        .expect("program id");
    assert_eq!(status["interfaces"][0]["mode"], "native");

    lab.cli_ok(&["detach", &lab.guard_if]);
    assert!(
        !lab.xdp_on_interface(),
        "no XDP program left on the interface"
    );
    assert!(!lab.pin_dir.exists(), "detach removes every pin");
    assert_eq!(lab.ping(GUARD_V4, 2), 2, "ping works again after detach");
    wait_until("the program is unloaded", || {
        !run("bpftool", &["prog", "show", "id", &program_id.to_string()])
            .status
            .success()
    });
    let second = lab.cli_ok(&["detach", &lab.guard_if]);
    assert!(second.contains("nothing to do"), "{second}");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let lab = lab_or_skip!("bad_input_is_refused_and_changes_nothing");
    let err = lab.cli_refuses(&["attach", "igt-no-such0"], "does not exist");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert!(!lab.pin_dir.exists(), "a refused attach pins nothing");

    lab.cli_refuses(&["policy", "set", "echo-request", "drop"], "not attached");

    lab.cli_ok(&["attach", &lab.guard_if]);
    // `kernel` holds the namespace's own ICMP counters, which neighbour discovery moves at
    // any time; the guard's state is the rest.
    let guard_state = |mut status: Value| {
        status.as_object_mut().expect("object").remove("kernel");
        status
    };
    let before = guard_state(lab.json(&["status", "--json"]));
    let policy_before = lab.cli_ok(&["policy", "show"]);

    lab.cli_refuses(&["attach", &lab.guard_if], "already attached");
    // All or nothing: lo is fine, the second name is not, so lo stays unprotected.
    lab.cli_refuses(&["attach", "lo", "igt-no-such0"], "does not exist");
    lab.cli_refuses(
        &["policy", "set", "256", "drop", "--family", "v4"],
        "out of range",
    );
    lab.cli_refuses(&["policy", "set", "8", "drop"], "--family");
    lab.cli_refuses(
        &["policy", "set", "no-such-type", "drop"],
        "unknown ICMP type",
    );

    // Without privileges: a clear sentence, and nothing changes.
    let output = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.guard_ns))
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_icmp-guard"))
        .args(["detach", "--all"])
        .env("ICMP_GUARD_PIN_DIR", &lab.pin_dir)
        .output()
        .expect("running setpriv");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("run with sudo"), "{err}");

    assert_eq!(
        guard_state(lab.json(&["status", "--json"])),
        before,
        "state unchanged"
    );
    let lo = run(
        "ip",
        &["-n", &lab.guard_ns, "-d", "link", "show", "dev", "lo"],
    );
    assert!(!String::from_utf8_lossy(&lo.stdout).contains("prog/xdp"));
    assert_eq!(
        lab.cli_ok(&["policy", "show"]),
        policy_before,
        "policy unchanged"
    );
    assert_eq!(lab.ping(GUARD_V4, 2), 2);
}

#[test]
fn generic_mode_is_reported_and_ipv6_neighbour_discovery_works() {
    let lab = lab_or_skip!("generic_mode_and_ipv6");
    let attached = lab.cli_ok(&["attach", &lab.guard_if, "--mode", "generic"]);
    assert!(attached.contains("generic mode"), "{attached}");
    assert_eq!(
        lab.json(&["status", "--json"])["interfaces"][0]["mode"],
        "generic"
    );
    assert_eq!(lab.ping(GUARD_V6, 3), 3, "ping6 through the guard");
    let stats = lab.json(&["stats", "--json"]);
    let echo6 = icmp_row(&stats, "v6", 128).expect("ICMPv6 echo requests counted");
    assert_eq!(echo6["passed"], 3, "{stats}");
    lab.cli_ok(&["policy", "set", "--family", "v6", "echo-request", "drop"]);
    assert_eq!(lab.ping(GUARD_V6, 2), 0);
    assert_eq!(lab.ping(GUARD_V4, 2), 2, "v4 unaffected by a v6 rule");
}
