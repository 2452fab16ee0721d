//! `cargo xtask demo`: a short tour of icmp-guard in a throwaway two-namespace lab.
//!
//! The guarded side (namespace `a`) and a peer (namespace `b`) share a veth pair, so nothing
//! on the host's own interfaces is touched. Every name carries our pid, so two demos, or a
//! demo and the tests, never collide.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{interrupt, process, setup};

const GUARDED_V4: &str = "192.0.2.1";
const PEER_V4: &str = "192.0.2.2";
const GUARDED_V6: &str = "2001:db8::1";
const PEER_V6: &str = "2001:db8::2";

pub fn run() -> Result<()> {
    if !process::is_root() {
        bail!("run with sudo: the demo creates network namespaces and loads an XDP program");
    }
    setup::run()?;
    process::run(process::command("cargo").args(["build", "--package", "icmp-guard"]))?;
    let binary = target_dir()?.join("debug").join("icmp-guard");
    if !binary.is_file() {
        bail!(
            "`cargo build` succeeded but {} is missing",
            binary.display()
        );
    }

    interrupt::catch()?;
    // Created before anything exists, so its Drop cleans up after a failure at any step.
    let mut lab = Lab::new(binary);
    lab.build()?;
    lab.tour()
}

/// The cargo target directory, which `CARGO_TARGET_DIR` or a config file may have moved.
fn target_dir() -> Result<PathBuf> {
    let json = process::stdout_of(process::command("cargo").args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let metadata: serde_json::Value =
        serde_json::from_str(&json).context("parsing `cargo metadata` output")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` reported no target_directory")
}

/// The lab's resources. Fields record what exists, so `Drop` removes exactly what we made.
struct Lab {
    binary: PathBuf,
    ns_guarded: String,
    ns_peer: String,
    veth_guarded: String,
    veth_peer: String,
    pin_dir: PathBuf,
    guarded_created: bool,
    peer_created: bool,
    /// Set before `attach` runs, since a failed attach may still have pinned something.
    attached: bool,
}

impl Lab {
    fn new(binary: PathBuf) -> Self {
        let pid = std::process::id();
        Self {
            binary,
            ns_guarded: format!("igdemo-{pid}-a"),
            ns_peer: format!("igdemo-{pid}-b"),
            // Interface names are limited to 15 bytes; a pid has at most 7 digits.
            veth_guarded: format!("igd{pid}a"),
            veth_peer: format!("igd{pid}b"),
            // Our own pin dir keeps the demo away from the pins of a real deployment.
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/icmp-guard-demo-{pid}")),
            guarded_created: false,
            peer_created: false,
            attached: false,
        }
    }

    fn build(&mut self) -> Result<()> {
        println!(
            "\nbuilding the lab: {} ({GUARDED_V4}, {GUARDED_V6} on {}, guarded) <-> {} \
             ({PEER_V4}, {PEER_V6} on {}, peer)",
            self.ns_guarded, self.veth_guarded, self.ns_peer, self.veth_peer
        );
        ip(&["netns", "add", &self.ns_guarded])?;
        self.guarded_created = true;
        ip(&["netns", "add", &self.ns_peer])?;
        self.peer_created = true;
        // Both ends are created straight inside their namespaces, so the host never sees
        // them, even briefly, and cannot have a clashing name.
        ip(&[
            "link",
            "add",
            &self.veth_guarded,
            "netns",
            &self.ns_guarded,
            "type",
            "veth",
            "peer",
            "name",
            &self.veth_peer,
            "netns",
            &self.ns_peer,
        ])?;
        for (ns, veth, v4, v6) in [
            (&self.ns_guarded, &self.veth_guarded, GUARDED_V4, GUARDED_V6),
            (&self.ns_peer, &self.veth_peer, PEER_V4, PEER_V6),
        ] {
            ip(&["-n", ns, "address", "add", &format!("{v4}/24"), "dev", veth])?;
            // Without nodad the address stays tentative for a second or two and early
            // ICMPv6 would fail.
            ip(&[
                "-n",
                ns,
                "address",
                "add",
                &format!("{v6}/64"),
                "dev",
                veth,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", veth, "up"])?;
        }
        interrupt::check()
    }

    fn tour(&mut self) -> Result<()> {
        println!(
            "\nicmp-guard below runs inside {} as `ICMP_GUARD_PIN_DIR={} nsenter --net={} {} ...`",
            self.ns_guarded,
            self.pin_dir.display(),
            netns_path(&self.ns_guarded).display(),
            self.binary.display()
        );

        self.attached = true;
        self.guard(&["attach", &self.veth_guarded])?;

        println!(
            "\n# the safe default profile limits echo requests (100/s per source, burst 200): \
             ordinary pings get their replies"
        );
        self.ping(5)?;

        println!(
            "\n# a bounded ping flood (3 seconds): beyond the burst, only about 100/s get through"
        );
        self.flood()?;
        self.guard(&["stats"])?;

        println!("\n# drop echo requests: the peer's pings now go unanswered");
        self.guard(&["policy", "set", "echo-request", "drop"])?;
        match self.ping(3) {
            Err(PingFailure::Exit(Some(1))) => {} // ping's "no reply", the expected outcome
            Ok(()) => bail!("echo requests were answered although the policy drops them"),
            Err(failure) => return Err(failure.into()),
        }
        interrupt::check()?;

        println!("\n# pass them again, then look at the counters and the attachment");
        self.guard(&["policy", "set", "echo-request", "pass"])?;
        self.guard(&["stats"])?;
        self.guard(&["status"])?;
        self.guard(&["detach", "--all"])?;
        self.attached = false;
        println!("\ndemo finished");
        Ok(())
    }

    /// Runs the icmp-guard CLI in the guarded namespace.
    ///
    /// nsenter joins only the network namespace. `ip netns exec` would also remount /sys
    /// for the namespace, hiding the host's bpffs and with it our pins.
    fn guard_command(&self, args: &[&str]) -> Command {
        let mut nsenter = process::command("nsenter");
        nsenter
            .arg(format!("--net={}", netns_path(&self.ns_guarded).display()))
            .arg(&self.binary)
            .args(args)
            .env("ICMP_GUARD_PIN_DIR", &self.pin_dir);
        nsenter
    }

    fn guard(&self, args: &[&str]) -> Result<()> {
        let shown = format!("icmp-guard {}", args.join(" "));
        let status = process::status_shown_as(&mut self.guard_command(args), &shown)?;
        if !status.success() {
            bail!("`{shown}` failed ({status})");
        }
        interrupt::check()
    }

    /// Floods the guarded side from the peer for three seconds, at most 20,000 packets.
    fn flood(&self) -> Result<()> {
        let mut ping = process::command("ip");
        ping.args([
            "netns",
            "exec",
            &self.ns_peer,
            "ping",
            "-f",
            "-q",
            "-c",
            "20000",
        ])
        .args(["-w", "3", GUARDED_V4]);
        // Exit code 1 means some echo requests went unanswered: what a limit does.
        process::status(&mut ping)?;
        interrupt::check()
    }

    /// Pings the guarded side from the peer.
    fn ping(&self, count: u32) -> Result<(), PingFailure> {
        let mut ping = process::command("ip");
        ping.args(["netns", "exec", &self.ns_peer, "ping", "-c"])
            .arg(count.to_string())
            .args(["-i", "0.2", "-W", "1", GUARDED_V4]);
        let status = process::status(&mut ping).map_err(PingFailure::Spawn)?;
        interrupt::check().map_err(PingFailure::Spawn)?;
        if status.success() {
            Ok(())
        } else {
            Err(PingFailure::Exit(status.code()))
        }
    }
}

enum PingFailure {
    Spawn(anyhow::Error),
    /// ping's exit code: 1 when no reply came back, 2 for other errors; `None` if killed.
    Exit(Option<i32>),
}

impl From<PingFailure> for anyhow::Error {
    fn from(failure: PingFailure) -> Self {
        match failure {
            PingFailure::Spawn(err) => err,
            PingFailure::Exit(Some(code)) => anyhow::anyhow!("ping failed with exit code {code}"),
            PingFailure::Exit(None) => anyhow::anyhow!("ping was killed by a signal"),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !(self.attached || self.guarded_created || self.peer_created || self.pin_dir.exists()) {
            return;
        }
        println!("\ncleaning up the lab");
        // Best effort throughout: report what is left behind, but try every step.
        if self.attached {
            let shown = "icmp-guard detach --all";
            match process::status_shown_as(&mut self.guard_command(&["detach", "--all"]), shown) {
                Ok(status) if status.success() => {}
                Ok(status) => eprintln!("warning: `{shown}` failed ({status})"),
                Err(err) => eprintln!("warning: {err:#}"),
            }
        }
        // Deleting a namespace also deletes its veth end, and with it the pair.
        for (created, ns) in [
            (self.guarded_created, &self.ns_guarded),
            (self.peer_created, &self.ns_peer),
        ] {
            if created && let Err(err) = ip(&["netns", "del", ns]) {
                eprintln!("warning: {err:#}");
            }
        }
        if self.pin_dir.exists() {
            println!("$ rm -rf {}", self.pin_dir.display());
            if let Err(err) = fs::remove_dir_all(&self.pin_dir) {
                eprintln!("warning: removing {}: {err}", self.pin_dir.display());
            }
        }
    }
}

/// Where `ip netns add` leaves the namespace's handle, for nsenter.
fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

fn ip(args: &[&str]) -> Result<()> {
    process::run(process::command("ip").args(args))
}
