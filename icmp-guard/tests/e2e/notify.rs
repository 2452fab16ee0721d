//! `run` under a service manager: the test plays systemd's side of sd_notify(3), a unix
//! datagram socket named by `$NOTIFY_SOCKET`, and checks what `Type=notify` and
//! `WatchdogSec=` rely on: READY=1 only once the guard is attached and the policy file
//! applied, WATCHDOG=1 every second while every interface is protected, STOPPING=1 on the
//! way out, and no READY=1 from a `run` that could not protect its interface.

use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::lab::{Background, GUARD_V4, Lab};

const DROP_ECHO_V4: &str =
    "[[rule]]\ntype = \"echo-request\"\nfamily = \"v4\"\naction = \"drop\"\n";

/// The manager's end: a datagram socket bound to a path (abstract sockets belong to a
/// network namespace, and `run` runs in the lab's), removed on drop.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("icmp-guard-notify-{test}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        Self { socket, path }
    }

    /// The next message, or `None` after `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        let mut buffer = [0; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(length) => Some(String::from_utf8_lossy(&buffer[..length]).into_owned()),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(err) => panic!("reading the notify socket: {err}"),
        }
    }

    /// Every message that arrives within `window`.
    fn collect(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut messages = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left.max(Duration::from_millis(1))) {
                Some(message) => messages.push(message),
                None => break,
            }
        }
        messages
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `icmp-guard ARGS` in the lab's guard namespace, as systemd would start it.
fn service(
    lab: &Lab,
    notify: &NotifySocket,
    watchdog: Option<Duration>,
    args: &[&str],
) -> Background {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", lab.guard_ns))
        .arg(env!("CARGO_BIN_EXE_icmp-guard"))
        .args(args)
        .env("ICMP_GUARD_PIN_DIR", &lab.pin_dir)
        .env("NOTIFY_SOCKET", &notify.path)
        .env_remove("WATCHDOG_PID");
    match watchdog {
        Some(timeout) => command.env("WATCHDOG_USEC", timeout.as_micros().to_string()),
        None => command.env_remove("WATCHDOG_USEC"),
    };
    Background::spawn("icmp-guard-notify", command).expect("start it")
}

fn echo_v4_action(lab: &Lab) -> String {
    let live = lab.json(&["policy", "show", "--json"]);
    live["types"]
        .as_array()
        .expect("types")
        .iter()
        .find(|rule| rule["family"] == "v4" && rule["type"] == 8)
        .map(|rule| rule["action"].as_str().unwrap_or_default().to_owned())
        .expect("a v4 echo rule")
}

#[test]
fn run_is_ready_only_once_protected_and_feeds_the_watchdog() {
    if !crate::lab::privileged("run_notify") {
        return;
    }
    let lab = Lab::new();
    let dir = std::env::temp_dir().join(format!("icmp-guard-notify-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("policy dir");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, DROP_ECHO_V4).expect("policy file");
    let notify = NotifySocket::bind("ready");
    let mut run = service(
        &lab,
        &notify,
        Some(Duration::from_secs(3)),
        &[
            "run",
            &lab.guard_if,
            "--policy",
            policy.to_str().expect("UTF-8"),
        ],
    );

    // The first message is READY=1, and when it arrives the guard is in place with the
    // file's policy: the interface runs XDP, the live policy drops v4 echo, pings die.
    let first = notify
        .next(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no READY=1 within 20 s\n{}\n{}", run.stdout(), run.stderr()));
    assert!(
        first.starts_with("READY=1\n")
            && first.contains(&format!("STATUS=protecting {}", lab.guard_if)),
        "the first notification is {first:?}"
    );
    assert!(
        lab.xdp_on_interface(),
        "READY=1 before the guard was attached"
    );
    assert_eq!(
        echo_v4_action(&lab),
        "drop",
        "READY=1 before the policy file was applied"
    );
    assert!(
        run.stdout().contains("applied policy"),
        "READY=1 before `run` said it applied the policy:\n{}",
        run.stdout()
    );
    assert_eq!(lab.ping(GUARD_V4, 2), 0, "the file's policy drops echo");

    // WATCHDOG=1 about once a second (run's check runs every second), counted from now:
    // what queued while the checks above ran (slow on a loaded machine) is not this window's.
    while notify.next(Duration::from_millis(1)).is_some() {}
    let messages = notify.collect(Duration::from_millis(3500));
    let pings = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        (3..=5).contains(&pings),
        "{pings} WATCHDOG=1 in 3.5 s: {messages:?}"
    );
    assert!(
        messages.iter().all(|m| m == "WATCHDOG=1"),
        "unexpected notifications: {messages:?}"
    );

    // Someone detaches the guard: run puts it back and the watchdog keeps being fed.
    lab.cli_ok(&["detach", "--all"]);
    run.wait_for("the re-attach", Duration::from_secs(5), |_, err| {
        err.contains("is no longer protected")
    });
    let after = notify.collect(Duration::from_millis(2500));
    assert!(
        after.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "the watchdog stopped after a re-attach: {after:?}"
    );
    assert!(lab.xdp_on_interface(), "attached again");

    run.signal(libc::SIGTERM);
    assert!(run.wait_exit(Duration::from_secs(10)).success());
    let last = notify.collect(Duration::from_millis(300));
    assert!(
        last.iter().any(|m| m == "STOPPING=1"),
        "no STOPPING=1 on SIGTERM: {last:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_without_a_watchdog_sends_only_ready_and_a_failed_start_never_ready() {
    if !crate::lab::privileged("run_notify_plain") {
        return;
    }
    let lab = Lab::new();
    let notify = NotifySocket::bind("plain");

    // No WATCHDOG_USEC: the manager asked for no watchdog, so none is sent.
    let mut run = service(&lab, &notify, None, &["run", &lab.guard_if]);
    let first = notify.next(Duration::from_secs(20)).expect("READY=1");
    assert!(first.starts_with("READY=1\n"), "{first:?}");
    assert!(lab.xdp_on_interface());
    let messages = notify.collect(Duration::from_millis(2500));
    assert!(messages.is_empty(), "without WATCHDOG_USEC: {messages:?}");
    run.signal(libc::SIGTERM);
    assert!(run.wait_exit(Duration::from_secs(10)).success());
    let _ = notify.collect(Duration::from_millis(300));

    // An interface that does not exist: run fails, and never says READY=1, so systemd
    // sees a failed start instead of a service that protects nothing.
    let mut failed = service(
        &lab,
        &notify,
        Some(Duration::from_secs(3)),
        &["run", "igt-none0"],
    );
    let status = failed.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", failed.stderr());
    let messages = notify.collect(Duration::from_millis(300));
    assert!(
        !messages.iter().any(|m| m.contains("READY=1")),
        "READY=1 from a run that protects nothing: {messages:?}"
    );
}
