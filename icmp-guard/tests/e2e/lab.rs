//! The end-to-end tests' view of the lab: an [`icmp_guard_lab::Pair`] (`guard` and `peer`
//! namespaces joined by a veth pair, removed when the test ends, every clean-up failure a
//! test failure) with the `icmp-guard` binary under test run in the guard namespace with
//! the lab's own pin directory, and the helpers the tests share.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

pub use icmp_guard_lab::{
    GUARD_V4, GUARD_V6, PEER_V4,
    gate::privileged,
    ping,
    process::Background,
    stats::{counter, icmp_row},
};
use icmp_guard_lab::{Pair, process};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_icmp-guard");

/// Two namespaces and a veth pair, with icmp-guard at hand in the guard namespace.
pub struct Lab {
    pub guard_ns: String,
    pub peer_ns: String,
    pub guard_if: String,
    pub peer_if: String,
    pub pin_dir: PathBuf,
    pair: Pair,
}

impl Lab {
    pub fn new() -> Self {
        Self::of_kind("test")
    }

    /// A lab whose namespaces, interfaces and pin directory carry `kind` in their names.
    pub fn of_kind(kind: &str) -> Self {
        let mut pair = Pair::new(kind, true).expect("build the lab");
        // Clean-up detaches with the binary under test before removing the namespaces.
        drop(pair.lab.guard(&pair.guard.ns, Path::new(BIN)));
        Self {
            guard_ns: pair.guard.ns.clone(),
            peer_ns: pair.peer.ns.clone(),
            guard_if: pair.guard.ifname.clone(),
            peer_if: pair.peer.ifname.clone(),
            pin_dir: pair.lab.pin_dir().to_owned(),
            pair,
        }
    }

    /// Another namespace of this lab (removed with it); returns its name.
    pub fn add_namespace(&mut self, role: &str) -> String {
        self.pair
            .lab
            .add_namespace(role)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// A veth pair between two namespaces of this lab; returns the two interface names.
    pub fn add_veth(
        &self,
        (ns_a, role_a): (&str, &str),
        (ns_b, role_b): (&str, &str),
    ) -> (String, String) {
        let (if_a, if_b) = (self.pair.lab.if_name(role_a), self.pair.lab.if_name(role_b));
        self.pair
            .lab
            .add_veth((ns_a, &if_a), (ns_b, &if_b))
            .unwrap_or_else(|err| panic!("{err}"));
        (if_a, if_b)
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        self.pair
            .lab
            .ip(ns, args)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// `program` in the namespace `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        self.pair.lab.command(ns, program)
    }

    /// `program ARGS` in the namespace `ns`, which must succeed; returns its stdout.
    pub fn run_in(&self, ns: &str, program: &str, args: &[&str]) -> String {
        process::run(self.command(ns, program).args(args)).unwrap_or_else(|err| panic!("{err}"))
    }

    /// The CLI in the guard namespace with `pin_dir`, not yet started.
    pub fn cli_command_in(&self, pin_dir: &Path, args: &[&str]) -> Command {
        let mut command = process::nsenter(&self.guard_ns, BIN);
        command.args(args).env("ICMP_GUARD_PIN_DIR", pin_dir);
        command
    }

    /// The CLI in the guard namespace with the lab's pin directory, not yet started.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        self.cli_command_in(&self.pin_dir, args)
    }

    /// Runs the CLI in the guard namespace with this lab's pin dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        output(&mut self.cli_command(args))
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "icmp-guard {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Runs the CLI expecting failure; returns stderr.
    pub fn cli_err(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            !output.status.success(),
            "icmp-guard {args:?} should have failed"
        );
        String::from_utf8(output.stderr).expect("UTF-8 output")
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.cli_ok(args)).expect("valid JSON")
    }

    /// `icmp-guard ARGS` in the background (a service, a watch), killed when dropped.
    pub fn background(&self, args: &[&str]) -> Background {
        let mut command = self.cli_command(args);
        command.env_remove("NO_COLOR");
        Background::spawn("icmp-guard", command).expect("start icmp-guard")
    }

    /// `program ARGS` in the peer namespace, in the background.
    pub fn peer_background(&self, what: &str, program: &str, args: &[&str]) -> Background {
        let mut command = self.command(&self.peer_ns, program);
        command.args(args);
        Background::spawn(what, command).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Pings the guard from the peer; returns how many replies came back.
    pub fn ping(&self, target: &str, count: u32) -> u32 {
        let received =
            ping::replies(&self.peer_ns, target, count).unwrap_or_else(|err| panic!("{err}"));
        u32::try_from(received).expect("a few replies")
    }

    /// Runs hping3 in the peer namespace, bounded to 10 s, and returns everything it
    /// printed, whatever its exit status.
    pub fn hping(&self, args: &[&str]) -> String {
        process::text(&output(&mut ping::hping3(&self.peer_ns, 10, args)))
    }

    /// Sends `count` ICMP messages from the peer to the guard with hping3 (100 ms apart);
    /// `icmp` picks them (`["--icmp-ts"]`, `["--icmptype", "3", "--icmpcode", "4"]`).
    /// Returns what hping3 printed and how many replies its summary counts.
    pub fn hping_icmp(&self, icmp: &[&str], count: u32) -> (String, u32) {
        let count_text = count.to_string();
        let mut args = vec!["--icmp"];
        args.extend_from_slice(icmp);
        args.extend_from_slice(&["-c", &count_text, "-i", "u100000", GUARD_V4]);
        let (text, (sent, received)) =
            ping::hping3_summary(&self.peer_ns, 10, &args).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(sent, u64::from(count), "{text}");
        (text, u32::try_from(received).expect("a few replies"))
    }

    /// Reads `stats --json` and asserts its counters as [`assert_counts`] does.
    pub fn assert_counts(&self, expected: &[(&str, u64, &str, u64)]) {
        assert_counts(&self.json(&["stats", "--json"]), expected);
    }

    /// Runs the CLI expecting a refusal that mentions `needle`; returns it.
    pub fn cli_refuses(&self, args: &[&str], needle: &str) -> String {
        let err = self.cli_err(args);
        assert!(err.contains(needle), "icmp-guard {args:?}: {err}");
        err
    }

    /// `policy set echo-request limit --rate RATE --burst BURST EXTRA...`.
    pub fn limit_echo(&self, rate: &str, burst: &str, extra: &[&str]) {
        let limit = ["policy", "set", "echo-request", "limit"];
        let args = [&limit[..], &["--rate", rate, "--burst", burst], extra].concat();
        self.cli_ok(&args);
    }

    /// Adds a second address to the peer's end, for a second source.
    pub fn add_peer_address(&self, v4: &str) {
        let cidr = format!("{v4}/24");
        self.ip(&self.peer_ns, &["addr", "add", &cidr, "dev", &self.peer_if]);
    }

    /// After detach: nothing pinned, no XDP program on the interface, and `count` pings
    /// answered.
    pub fn assert_unprotected(&self, count: u32) {
        assert!(!self.pin_dir.exists(), "nothing left pinned");
        assert!(!self.xdp_on_interface(), "no XDP program left");
        assert_eq!(self.ping(GUARD_V4, count), count, "pings answered again");
    }

    pub fn xdp_on_interface(&self) -> bool {
        xdp_on(&self.guard_ns, &self.guard_if)
    }
}

/// Whether an XDP program is attached to `dev` in `ns`.
pub fn xdp_on(ns: &str, dev: &str) -> bool {
    xdp_program_id(ns, dev).is_some()
}

/// The id of the XDP program attached to `dev` in `ns`.
pub fn xdp_program_id(ns: &str, dev: &str) -> Option<u64> {
    xdp_program(ns, dev).map(|(_, id)| id)
}

/// The name and id of the XDP program attached to `dev` in `ns`, as `ip` shows them.
pub fn xdp_program(ns: &str, dev: &str) -> Option<(String, u64)> {
    let shown = run("ip", &["-n", ns, "-j", "-d", "link", "show", "dev", dev]);
    let links: Value = serde_json::from_slice(&shown.stdout).ok()?;
    let prog = &links[0]["xdp"]["prog"];
    Some((prog["name"].as_str()?.to_owned(), prog["id"].as_u64()?))
}

/// Runs a command, whatever its exit status.
pub fn output(command: &mut Command) -> Output {
    process::output(command).unwrap_or_else(|err| panic!("{err}"))
}

pub fn run(program: &str, args: &[&str]) -> Output {
    output(Command::new(program).args(args))
}

pub fn run_ok(program: &str, args: &[&str]) {
    process::run(Command::new(program).args(args)).unwrap_or_else(|err| panic!("{err}"));
}

/// The number of replies in ping's summary line.
pub fn ping_replies(stdout: &str) -> u32 {
    let (_, received) = ping::summary_in("ping", stdout).unwrap_or_else(|err| panic!("{err}"));
    u32::try_from(received).expect("a few replies")
}

/// The rule `policy show --json` reports for a whole type.
pub fn rule_of<'a>(policy: &'a Value, family: &str, icmp_type: u64) -> &'a Value {
    policy["types"]
        .as_array()
        .expect("types array")
        .iter()
        .find(|rule| rule["family"] == family && rule["type"] == icmp_type)
        .unwrap_or_else(|| panic!("no rule for {family} {icmp_type} in {policy}"))
}

/// The action `policy show --json` reports for a whole type.
pub fn action_of(policy: &Value, family: &str, icmp_type: u64) -> String {
    let rule = rule_of(policy, family, icmp_type);
    rule["action"].as_str().expect("an action").to_owned()
}

/// Asserts counters of a `stats --json`: (family, type, path, value) each, the path's keys
/// joined by dots (`"dropped.policy"`).
pub fn assert_counts(stats: &Value, expected: &[(&str, u64, &str, u64)]) {
    for &(family, icmp_type, path, value) in expected {
        let keys: Vec<&str> = path.split('.').collect();
        let actual = counter(stats, family, icmp_type, &keys);
        assert_eq!(actual, value, "{family} {icmp_type} {path}: {stats}");
    }
}

pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Floods share two CPUs with everything else: one at a time keeps the timing honest.
pub fn one_flood_at_a_time() -> MutexGuard<'static, ()> {
    static ONE_FLOOD_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Asserts that a refusal is one line and returns it.
pub fn one_sentence(err: &str) -> &str {
    let err = err.trim();
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    err
}

/// A per-test directory under the system temp dir, removed in `Drop`.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(test: &str) -> Self {
        static NEXT_DIR: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "icmp-guard-e2e-{test}-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|err| panic!("creating {}: {err}", path.display()));
        Self(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `name` in the directory and returns its path as a string for the CLI.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
        path.to_str().expect("UTF-8 temp path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0)
            && err.kind() != std::io::ErrorKind::NotFound
            && !std::thread::panicking()
        {
            panic!("removing {}: {err}", self.0.display());
        }
    }
}
