//! A two-namespace lab for end-to-end tests, removed in `Drop`.

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const GUARD_V4: &str = "192.0.2.1";
pub const PEER_V4: &str = "192.0.2.2";
pub const GUARD_V6: &str = "2001:db8::1";
pub const PEER_V6: &str = "2001:db8::2";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program} {args:?}: {err}"))
}

pub fn run_ok(program: &str, args: &[&str]) {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two namespaces and a veth pair: `guard` (192.0.2.1, 2001:db8::1) where icmp-guard
/// runs, and `peer` (192.0.2.2, 2001:db8::2) that sends the traffic.
pub struct Lab {
    pub guard_ns: String,
    pub peer_ns: String,
    pub guard_if: String,
    pub peer_if: String,
    pub pin_dir: PathBuf,
}

impl Lab {
    pub fn new() -> Self {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Self {
            guard_ns: format!("igtest-{id}-g"),
            peer_ns: format!("igtest-{id}-p"),
            guard_if: format!("igt{id}g"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/icmp-guard-test-{id}")),
            peer_if: String::new(),
        };
        let peer_if = format!("igt{id}p");
        lab.peer_if.clone_from(&peer_if);
        run_ok("ip", &["netns", "add", &lab.guard_ns]);
        run_ok("ip", &["netns", "add", &lab.peer_ns]);
        run_ok(
            "ip",
            &[
                "link",
                "add",
                &lab.guard_if,
                "netns",
                &lab.guard_ns,
                "type",
                "veth",
                "peer",
                "name",
                &peer_if,
                "netns",
                &lab.peer_ns,
            ],
        );
        for (ns, dev, v4, v6) in [
            (&lab.guard_ns, &lab.guard_if, GUARD_V4, GUARD_V6),
            (&lab.peer_ns, &peer_if, PEER_V4, PEER_V6),
        ] {
            run_ok(
                "ip",
                &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev],
            );
            run_ok(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            );
            run_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
            run_ok("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    /// Runs the CLI in the guard namespace with this lab's pin dir.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.guard_ns))
            .arg(env!("CARGO_BIN_EXE_icmp-guard"))
            .args(args)
            .env("ICMP_GUARD_PIN_DIR", &self.pin_dir)
            .output()
            .expect("running icmp-guard")
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

    /// Pings the guard from the peer; returns how many replies came back.
    pub fn ping(&self, target: &str, count: u32) -> u32 {
        let output = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.peer_ns,
                "ping",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                "-q",
                target,
            ],
        );
        ping_replies(&output.stdout)
    }

    /// Sends `count` ICMP messages from the peer to the guard with hping3 (bounded: 100 ms
    /// apart, killed after 10 s); `icmp` picks them (`["--icmp-ts"]`, `["--icmptype",
    /// "3", "--icmpcode", "4"]`). Returns hping3's stdout and stderr together, and how many
    /// replies its summary counts.
    pub fn hping_icmp(&self, icmp: &[&str], count: u32) -> (String, u32) {
        let count_text = count.to_string();
        let mut args = vec![
            "netns",
            "exec",
            &self.peer_ns,
            "timeout",
            "10",
            "hping3",
            "--icmp",
        ];
        args.extend_from_slice(icmp);
        args.extend_from_slice(&["-c", &count_text, "-i", "u100000", GUARD_V4]);
        let output = run("ip", &args);
        // hping3 prints replies on stdout and the summary on stderr; read both.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let received = text
            .lines()
            .find_map(|line| {
                let (sent, rest) = line.split_once(" packets transmitted, ")?;
                assert_eq!(sent.trim().parse::<u32>().ok(), Some(count), "{text}");
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no hping3 summary in: {text}"));
        (text, received)
    }

    pub fn xdp_on_interface(&self) -> bool {
        let output = run(
            "ip",
            &[
                "-n",
                &self.guard_ns,
                "-d",
                "link",
                "show",
                "dev",
                &self.guard_if,
            ],
        );
        String::from_utf8_lossy(&output.stdout).contains("prog/xdp")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Best effort, in order: unpin links and maps, then remove the namespaces (which
        // deletes the veth pair), then whatever is left of the pin dir.
        let _ = self.cli(&["detach", "--all"]);
        let _ = run("ip", &["netns", "del", &self.guard_ns]);
        let _ = run("ip", &["netns", "del", &self.peer_ns]);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// The number of replies in ping's summary line ("N packets transmitted, M received").
pub fn ping_replies(stdout: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .find_map(|line| {
            let (_, rest) = line.split_once("transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no ping summary in: {text}"))
}

pub fn icmp_row<'a>(stats: &'a Value, family: &str, icmp_type: u64) -> Option<&'a Value> {
    stats["icmp"]
        .as_array()
        .expect("icmp array")
        .iter()
        .find(|row| row["family"] == family && row["type"] == icmp_type)
}

pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
