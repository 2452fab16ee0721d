//! `run` cannot fail open (issue 15, points 6-8): it detaches only what it attached, waits
//! for a deleted interface and guards it again, removes the links of gone interfaces,
//! remounts an unmounted bpffs, never logs old events as news, never stalls on a policy
//! "file" that blocks or never ends, and follows address changes at once. Lab of
//! `lab.rs` (namespaces removed in `Drop`); every flood is bounded.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::fd::AsRawFd as _,
    process::Command,
    time::{Duration, Instant},
};

use crate::lab::*;

/// A second veth pair inside the guard namespace (both ends there): an interface the test
/// may delete and create again.
fn spare_pair(lab: &Lab) -> (String, String) {
    let spare = format!("{}s", lab.guard_if);
    let peer = format!("{}t", lab.guard_if);
    create_pair(lab, &spare, &peer);
    (spare, peer)
}

fn create_pair(lab: &Lab, spare: &str, peer: &str) {
    run_ok(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "link",
            "add",
            spare,
            "type",
            "veth",
            "peer",
            "name",
            peer,
        ],
    );
    for dev in [spare, peer] {
        run_ok("ip", &["-n", &lab.guard_ns, "link", "set", dev, "up"]);
    }
}

/// The port in the "serving metrics on http://IP:PORT/metrics" line.
fn served_port(stdout: &str) -> Option<u16> {
    let rest = stdout.split("serving metrics on http://").nth(1)?;
    let authority = rest.split("/metrics").next()?;
    authority.rsplit(':').next()?.parse().ok()
}

/// GET /metrics from 127.0.0.1:`port` inside network namespace `ns`; the body.
fn metrics_in_ns(ns: &str, port: u16) -> String {
    let ns_path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&ns_path).expect("netns file");
        // SAFETY: a valid namespace fd; affects only this thread, which ends after.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("receive");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    })
    .join()
    .expect("scrape thread")
}

fn started(service: &mut Background) {
    service.wait_for("start-up", Duration::from_secs(15), |out, _| {
        out.contains("protecting")
    });
}

/// Point 6: without --keep, `run` detaches on SIGTERM only what it attached; a guard that
/// was there before it started (adopted) is left as it was found. Before, it detached
/// both.
#[test]
fn run_detaches_what_it_attached_and_leaves_what_it_adopted() {
    let lab = lab_or_skip!("run_detaches_what_it_attached");
    let (spare, _) = spare_pair(&lab);
    lab.cli_ok(&["attach", &lab.guard_if]);
    let mut service = lab.background(&["run", &lab.guard_if, &spare]);
    started(&mut service);
    assert!(xdp_on(&lab.guard_ns, &spare));
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
    let out = service.stdout();
    assert!(
        out.contains(&format!("left {} attached as found", lab.guard_if)),
        "{out}"
    );
    assert!(out.contains(&format!("detached from {spare}")), "{out}");
    assert!(lab.xdp_on_interface(), "the adopted guard stays");
    assert!(!xdp_on(&lab.guard_ns, &spare), "its own is removed");
}

/// Point 6: a deleted interface does not make `run` exit: status and the metrics say it
/// is waiting, the link of the gone interface is removed, and it is guarded again when it
/// returns. Before, `run` exited with "does not exist" a second after the deletion.
#[test]
fn run_waits_for_a_deleted_interface_and_guards_it_again() {
    let lab = lab_or_skip!("run_waits_for_a_deleted_interface");
    let (spare, spare_peer) = spare_pair(&lab);
    let mut service = lab.background(&["run", &spare, &lab.guard_if, "--metrics", "127.0.0.1:0"]);
    started(&mut service);
    let port = served_port(&service.stdout()).expect("metrics port");
    run_ok("ip", &["-n", &lab.guard_ns, "link", "del", &spare]);
    service.wait_for("the deletion noticed", Duration::from_secs(5), |_, err| {
        err.contains(&format!(
            "{spare} is no longer protected: the interface is gone; waiting for it to come back"
        ))
    });
    std::thread::sleep(Duration::from_secs(2));
    let status = lab.json(&["status", "--json"]);
    let interfaces = status["interfaces"].as_array().expect("interfaces");
    let waiting = interfaces
        .iter()
        .find(|interface| interface["name"] == spare.as_str())
        .unwrap_or_else(|| panic!("{spare} listed: {status}"));
    assert_eq!(waiting["state"], "waiting", "{status}");
    assert!(
        !interfaces
            .iter()
            .any(|interface| interface["interface_gone"] == true),
        "the gone interface's link is removed: {status}"
    );
    let text_status = lab.cli_ok(&["status"]);
    assert!(text_status.contains("waiting"), "{text_status}");
    let check = lab.cli(&["status", "--check", &spare]);
    assert_eq!(check.status.code(), Some(1));
    let body = metrics_in_ns(&lab.guard_ns, port);
    assert!(
        body.lines()
            .any(|l| l == format!("icmp_guard_interface_waiting{{interface=\"{spare}\"}} 1")),
        "{body}"
    );
    assert!(lab.xdp_on_interface(), "the other interface stays guarded");

    create_pair(&lab, &spare, &spare_peer);
    service.wait_for("the return", Duration::from_secs(5), |out, _| {
        out.matches(&format!("attached to {spare} ")).count() >= 2
    });
    assert!(xdp_on(&lab.guard_ns, &spare));
    let status = lab.json(&["status", "--json"]);
    assert!(
        status["interfaces"]
            .as_array()
            .expect("interfaces")
            .iter()
            .all(|interface| interface["state"] == "protected"),
        "{status}"
    );
    let body = metrics_in_ns(&lab.guard_ns, port);
    assert!(!body.contains("icmp_guard_interface_waiting{"), "{body}");
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
    assert!(!xdp_on(&lab.guard_ns, &spare) && !lab.xdp_on_interface());
}

/// Point 6: bpffs unmounted under `run` (every pin, and the links they held, gone) is
/// diagnosed as such; `run` mounts it again and attaches again. The test runs the
/// service in a mount namespace of its own with a bpffs of its own, so the host's is never
/// touched. Before, `run` could not attach again and exited.
#[test]
fn run_mounts_bpffs_again_when_someone_unmounts_it() {
    let lab = lab_or_skip!("run_mounts_bpffs_again");
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!(
            "umount /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf && exec nsenter --net=/run/netns/{} {} run {}",
            lab.guard_ns,
            env!("CARGO_BIN_EXE_icmp-guard"),
            lab.guard_if
        ))
        .env("ICMP_GUARD_PIN_DIR", &lab.pin_dir);
    let mut service = Background::spawn("run-in-mount-ns", command).expect("start run");
    started(&mut service);
    assert!(lab.xdp_on_interface());
    let pid = lab_pid(&service);
    let mount_ns = format!("--mount=/proc/{pid}/ns/mnt");
    run_ok("nsenter", &[&mount_ns, "umount", "/sys/fs/bpf"]);
    service.wait_for("the remount", Duration::from_secs(5), |out, err| {
        err.contains("bpffs is no longer mounted at /sys/fs/bpf")
            && out.contains("mounted bpffs at /sys/fs/bpf")
            && out.matches("attached to").count() >= 2
    });
    assert!(lab.xdp_on_interface(), "guarded again");
    let check = Command::new("nsenter")
        .arg(&mount_ns)
        .arg(format!("--net=/run/netns/{}", lab.guard_ns))
        .arg(env!("CARGO_BIN_EXE_icmp-guard"))
        .args(["status", "--check"])
        .env("ICMP_GUARD_PIN_DIR", &lab.pin_dir)
        .output()
        .expect("status");
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
    assert!(!lab.xdp_on_interface());
}

/// The pid of the service (the shell execs nsenter, which execs icmp-guard).
fn lab_pid(service: &Background) -> u32 {
    service.pid()
}

/// Point 6: the drop log shows only drops from after the service started: events that
/// waited in the ring buffer are not news. Before, they were printed as if they were.
#[test]
fn the_drop_log_prints_no_drop_from_before_its_start() {
    let lab = lab_or_skip!("the_drop_log_prints_no_drop_from_before_its_start");
    lab.cli_ok(&["attach", &lab.guard_if]);
    lab.cli_ok(&["policy", "set", "echo-request", "drop"]);
    assert_eq!(lab.ping(GUARD_V4, 5), 0, "five drops sampled into the ring");
    let mut service = lab.background(&["run", &lab.guard_if, "--drop-log", "10"]);
    started(&mut service);
    std::thread::sleep(Duration::from_millis(1500));
    let out = service.stdout();
    assert!(
        !out.contains("dropped echo-request"),
        "old drops logged: {out}"
    );
    assert_eq!(lab.ping(GUARD_V4, 2), 0);
    service.wait_for("the new drops", Duration::from_secs(5), |out, _| {
        out.matches("dropped echo-request").count() == 2
    });
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
}

/// Point 7: a policy "file" that is a FIFO or a device, or too large, is refused at once
/// by `policy check` and `policy apply`, and never stalls `run`: it starts, serves
/// metrics and stops on SIGTERM. Before, `policy check` on a FIFO waited forever, and
/// `run` froze with its watchdog and signal handling.
#[test]
fn a_fifo_a_device_or_a_huge_file_stalls_nothing() {
    let lab = lab_or_skip!("a_fifo_a_device_or_a_huge_file_stalls_nothing");
    let dir = TempDir::new("fifo");
    let fifo = dir.path("policy.toml").to_str().expect("UTF-8").to_owned();
    run_ok("mkfifo", &[&fifo]);
    let huge = dir.path("huge.toml").to_str().expect("UTF-8").to_owned();
    std::fs::write(&huge, " ".repeat(5 * 1024 * 1024)).expect("write");
    for (file, kind) in [
        (fifo.as_str(), "is a FIFO, not a regular file"),
        ("/dev/zero", "is a character device, not a regular file"),
        (
            huge.as_str(),
            "larger than the 4194304 bytes a policy file may have",
        ),
    ] {
        let started = Instant::now();
        let output = run(
            "timeout",
            &[
                "10",
                env!("CARGO_BIN_EXE_icmp-guard"),
                "policy",
                "check",
                file,
            ],
        );
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{file}: {err}");
        assert!(err.contains(kind), "{file}: {err}");
        assert!(started.elapsed() < Duration::from_secs(2), "{file}");
    }
    lab.cli_ok(&["attach", &lab.guard_if]);
    let err = lab.cli_err(&["policy", "apply", &fifo]);
    assert!(err.contains("a FIFO"), "{err}");

    let mut service = lab.background(&[
        "run",
        &lab.guard_if,
        "--policy",
        &fifo,
        "--metrics",
        "127.0.0.1:0",
    ]);
    started(&mut service);
    assert!(
        service.stderr().contains("a FIFO, not a regular file"),
        "{}",
        service.stderr()
    );
    let port = served_port(&service.stdout()).expect("metrics port");
    std::thread::sleep(Duration::from_secs(1));
    let body = metrics_in_ns(&lab.guard_ns, port);
    assert!(body.contains("icmp_guard_up 1"), "{body}");
    let stopping = Instant::now();
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(5)).success());
    assert!(stopping.elapsed() < Duration::from_secs(3));
}

/// Point 8: under `run`, an address added to a guarded interface is covered within a
/// second (echo to its directed broadcast is a smurf), and one removed stops being
/// covered, with no other icmp-guard command in between. Before, only the summary tick
/// (every 10 s) or another command refreshed the map.
#[test]
fn run_follows_address_changes_within_a_second() {
    let lab = lab_or_skip!("run_follows_address_changes_within_a_second");
    let mut service = lab.background(&["run", &lab.guard_if]);
    started(&mut service);
    run_ok(
        "ip",
        &[
            "-n",
            &lab.peer_ns,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            GUARD_V4,
        ],
    );
    let smurfs = |lab: &Lab| -> u64 {
        let stats = lab.json(&["stats", "--json"]);
        icmp_row(&stats, "v4", 8)
            .and_then(|row| row["dropped"]["smurf"].as_u64())
            .unwrap_or(0)
    };
    let echo_to_broadcast = |lab: &Lab| {
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                &lab.peer_ns,
                "timeout",
                "10",
                "hping3",
                "-q",
                "--icmp",
                "-c",
                "3",
                "-i",
                "u100000",
                "198.51.100.255",
            ],
        );
    };
    let before = smurfs(&lab);
    run_ok(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            &lab.guard_if,
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    echo_to_broadcast(&lab);
    assert_eq!(smurfs(&lab) - before, 3, "covered within a second");
    assert!(service.stdout().contains("following address changes"));

    run_ok(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "addr",
            "del",
            "198.51.100.1/24",
            "dev",
            &lab.guard_if,
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    let before = smurfs(&lab);
    echo_to_broadcast(&lab);
    assert_eq!(smurfs(&lab), before, "no longer an address of ours");
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
}
