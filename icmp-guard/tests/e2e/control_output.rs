//! What icmp-guard says is true and said plainly (issue 15, points 9 and 13): a closed
//! stdout ends a command quietly, `metrics --once` with nothing attached reports
//! `icmp_guard_up 0`, root without CAP_BPF is told which capability is missing, a name
//! over 15 bytes is "too long", and `status` shows where each interface's frames start
//! (its link kind). Lab of `lab.rs` (namespaces removed in `Drop`).

use std::{
    io::Read as _,
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
};

use crate::lab::*;

fn cli_command(lab: &Lab, args: &[&str]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", lab.guard_ns))
        .arg(env!("CARGO_BIN_EXE_icmp-guard"))
        .args(args)
        .env("ICMP_GUARD_PIN_DIR", &lab.pin_dir);
    command
}

/// Point 13: `status | head -1` and a reader that goes away end the command quietly (by
/// SIGPIPE, like other Unix tools), never with a panic. Before, Rust's ignored SIGPIPE
/// turned the closed pipe into a panic.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let lab = lab_or_skip!("a_closed_stdout_ends_a_command_quietly");
    lab.cli_ok(&["attach", &lab.guard_if]);
    let mut child = cli_command(&lab, &["status"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The reader goes away before the first line.
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    let status = child.wait().expect("wait");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "quiet: {err}");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status}");

    let script = format!(
        "nsenter --net=/run/netns/{} {} status | head -1",
        lab.guard_ns,
        env!("CARGO_BIN_EXE_icmp-guard")
    );
    let output = Command::new("sh")
        .args(["-c", &script])
        .env("ICMP_GUARD_PIN_DIR", &lab.pin_dir)
        .output()
        .expect("sh");
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 1);
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Point 13: with nothing attached, `metrics --once` prints `icmp_guard_up 0` and exits
/// 0, as the server does. Before, it failed with "not attached".
#[test]
fn metrics_once_with_nothing_attached_is_up_zero() {
    let lab = lab_or_skip!("metrics_once_with_nothing_attached");
    let out = lab.cli_ok(&["metrics", "--once"]);
    let samples: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("icmp_guard_build_info"))
        .collect();
    assert_eq!(samples, ["icmp_guard_up 0"], "{out}");
}

/// Point 13: root whose capability sets lack CAP_BPF (and CAP_SYS_ADMIN) or CAP_NET_ADMIN
/// is told which one is missing, not to "run with sudo". Before, it was told to use sudo.
#[test]
fn root_without_a_capability_is_told_which() {
    let lab = lab_or_skip!("root_without_a_capability_is_told_which");
    for (dropped, named) in [
        ("-bpf,-sys_admin", "CAP_BPF (or CAP_SYS_ADMIN)"),
        ("-net_admin", "CAP_NET_ADMIN"),
    ] {
        // Into the namespace first: joining one needs CAP_SYS_ADMIN.
        let output = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.guard_ns))
            .args(["setpriv", "--bounding-set", dropped, "--"])
            .arg(env!("CARGO_BIN_EXE_icmp-guard"))
            .args(["attach", &lab.guard_if])
            .env("ICMP_GUARD_PIN_DIR", &lab.pin_dir)
            .output()
            .expect("setpriv");
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("lacks {named}")) && !err.contains("run with sudo"),
            "{dropped}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert!(!lab.xdp_on_interface());
}

/// Point 13: an interface name over 15 bytes is "too long", not "does not exist".
#[test]
fn a_name_over_15_bytes_is_too_long() {
    let lab = lab_or_skip!("a_name_over_15_bytes_is_too_long");
    for args in [
        &["attach", "a-name-longer-than-15"][..],
        &["detach", "a-name-longer-than-15"][..],
        &["status", "--check", "a-name-longer-than-15"][..],
    ] {
        let output = lab.cli(args);
        assert!(!output.status.success(), "{args:?}");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            said.contains("is 21 bytes long, more than the 15 Linux allows")
                && !said.contains("does not exist"),
            "{args:?}: {said}"
        );
    }
}

/// Point 9: `status` shows each interface's link kind (where its frames start): a veth is
/// `ethernet`, a tun device `raw-ip`; an L3 kind that cannot be parsed is refused with a
/// sentence. Before, status did not say which parser guarded an interface.
#[test]
fn status_shows_each_interfaces_link_kind() {
    let lab = lab_or_skip!("status_shows_each_interfaces_link_kind");
    let tun = format!("{}u", lab.guard_if);
    run_ok(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "tuntap",
            "add",
            "dev",
            &tun,
            "mode",
            "tun",
        ],
    );
    run_ok("ip", &["-n", &lab.guard_ns, "link", "set", &tun, "up"]);
    lab.cli_ok(&["attach", &lab.guard_if, &tun]);
    let status = lab.json(&["status", "--json"]);
    let kind = |name: &str| {
        status["interfaces"]
            .as_array()
            .expect("interfaces")
            .iter()
            .find(|interface| interface["name"] == name)
            .map(|interface| interface["link_kind"].clone())
            .unwrap_or_else(|| panic!("{name}: {status}"))
    };
    assert_eq!(kind(&lab.guard_if), "ethernet", "{status}");
    assert_eq!(kind(&tun), "raw-ip", "{status}");
    let text = lab.cli_ok(&["status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with(tun.as_str()) && l.contains("raw-ip")),
        "{text}"
    );
    // Other layer-3 kinds this kernel can create are refused by name (here: none may be
    // available; ipip is tried).
    let ipip = format!("{}i", lab.guard_if);
    let made = run(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "link",
            "add",
            &ipip,
            "type",
            "ipip",
            "local",
            GUARD_V4,
            "remote",
            PEER_V4,
        ],
    );
    if made.status.success() {
        let err = lab.cli_err(&["attach", &ipip]);
        assert!(
            err.contains(&format!("icmp-guard cannot guard {ipip}: a ipip interface")),
            "{err}"
        );
    } else {
        eprintln!("this kernel cannot create an ipip interface: only tun was tried");
    }
    lab.cli_ok(&["detach", "--all"]);
    let _ = run(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "tuntap",
            "del",
            "dev",
            &tun,
            "mode",
            "tun",
        ],
    );
}
