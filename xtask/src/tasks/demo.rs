//! `cargo xtask demo`: icmp-guard against an attacker on a throwaway LAN, with a bystander
//! pinging beside it.
//!
//! Four namespaces of our own: a switch (a bridge) and three hosts plugged into it by veth
//! pairs — the protected host (icmp-guard attached to its `eth0`), a bystander, and an
//! attacker. Nothing on the machine's own interfaces is touched. The attacker runs, in
//! turn, a ping flood, a spoofed-source flood, a smurf broadcast ping, a timestamp probe and
//! a PMTUD "fragmentation needed" message, each bounded in packets or time, with the
//! guard's counters after each; `icmp-guard trace` of two of its packets; and a ping sweep
//! of 48 addresses routed through the protected host, with sweep detection switched on. The
//! bystander pings the protected host once a second throughout. The summary says what was
//! sent, what was dropped and why, and checks that every bystander ping and every PMTUD
//! message got through and the sweeper was flagged: the demo fails if not.
//!
//! The namespaces are an [`icmp_guard_lab::Lab`], the lab of the tests: every name
//! carries our pid, so two demos, or a demo and the tests, never collide, and everything is
//! removed at the end, also after a failure or Ctrl-C, with every clean-up failure
//! reported.
//!
//! With `--plot`, the demo also records the counters while it runs and draws them as an
//! SVG (`docs/demo.svg` by default, the README's picture): see [`record`] and [`plot`].

mod plot;
mod record;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use icmp_guard_lab::{
    Lab, netns,
    ping::{self, Pinger},
    stats::counter,
};
use serde_json::Value;

use self::record::{Recorder, Recording, Sources};
use crate::util::{cargo, interrupt, numbers::thousands, process, setup};

const HOST_V4: &str = "192.0.2.1";
const BYSTANDER_V4: &str = "192.0.2.2";
const ATTACKER_V4: &str = "192.0.2.66";
const BROADCAST_V4: &str = "192.0.2.255";
const PREFIX: u8 = 24;
/// Seconds each flood runs.
const FLOOD_SECONDS: u32 = 3;
/// Messages sent by each of the smurf, timestamp and PMTUD steps.
const PROBES: u64 = 3;
/// The safe default profile's echo-request limit (packets a second, burst), per source,
/// and the budget that sources without a bucket share (ten times both).
const PER_SOURCE: (u32, u32) = (100, 200);
const NEW_SOURCES: (u32, u32) = (1_000, 2_000);
/// The default profile's probation (`icmp_guard::policy::model::DEFAULT_PROBATION`): a new
/// source is also charged to the new-source budget until a packet of its comes this many
/// seconds after its first and after the budget's last refusal.
const PROBATION_SECONDS: usize = 5;

/// The subnet the attacker sweeps, routed through the protected host (which does not
/// forward: nobody answers, but every probe reaches its XDP hook), and the sweep's range.
const SWEPT_SUBNET: &str = "198.51.100.0/24";
const SWEEP_FIRST: &str = "198.51.100.1";
const SWEEP_LAST: &str = "198.51.100.48";
const SWEEP_PROBES: u64 = 48;
/// The demo's `[recon]` threshold: distinct destinations in the window that flag a source.
const SWEEP_THRESHOLD: u64 = 16;
/// The sketch's stated accuracy (README, `tests/prog/recon.rs`): ±15 %.
const SWEEP_ACCURACY_PERCENT: u64 = 15;
/// The policy file of the sweep step: the default profile with sweep detection on (the protected
/// host does not forward, where `auto` means off) and a low threshold.
fn recon_policy() -> String {
    format!("[recon]\nenabled = \"on\"\nsweep_threshold = {SWEEP_THRESHOLD}\n")
}

/// Where `--plot` writes without a path, from the workspace root.
const PLOT_PATH: &str = "docs/demo.svg";

#[derive(clap::Args)]
pub struct Args {
    /// Also sample the counters while the demo runs and draw them as an SVG at PATH
    /// [default: docs/demo.svg in the workspace]
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    plot: Option<Option<PathBuf>>,
}

impl Args {
    /// The SVG to write, if any: a PATH as given, or the default in the workspace.
    fn plot_path(&self) -> Option<PathBuf> {
        self.plot.as_ref().map(|path| {
            path.clone()
                .unwrap_or_else(|| cargo::workspace_root().join(PLOT_PATH))
        })
    }
}

pub fn run(args: &Args) -> Result<()> {
    if !process::is_root() {
        bail!("run with sudo: the demo creates network namespaces and loads an XDP program");
    }
    setup::run()?;
    process::run(process::command("cargo").args(["build", "--package", "icmp-guard"]))?;
    let binary = cargo::target_dir()?.join("debug").join("icmp-guard");
    if !binary.is_file() {
        bail!(
            "`cargo build` succeeded but {} is missing",
            binary.display()
        );
    }

    interrupt::catch()?;
    let started = Instant::now();
    let plot = args.plot_path();
    let mut demo = Demo::new(binary, plot.is_some());
    let shown = demo.build().and_then(|()| demo.tour());
    // Whatever happened, the lab goes; both failures are reported.
    demo.recorder = None;
    demo.pinger = None;
    let picture = demo.picture.take();
    println!("\ncleaning up the lab");
    let cleaned = demo.lab.clean_up();
    match (shown, cleaned) {
        (Ok(()), Ok(())) => {}
        (Ok(()), Err(cleanup)) => bail!(cleanup),
        (Err(err), Ok(())) => return Err(err),
        (Err(err), Err(cleanup)) => return Err(err.context(format!("and then {cleanup}"))),
    }
    println!(
        "\ndemo finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if let (Some(path), Some(svg)) = (plot, picture) {
        write_plot(&path, &svg)?;
    }
    Ok(())
}

/// Writes the SVG, owned by the user who ran `sudo cargo xtask demo --plot`.
fn write_plot(path: &Path, svg: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    let id = |name| std::env::var(name).ok().and_then(|id| id.parse().ok());
    if let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to uid {uid}", path.display()))?;
    }
    println!("plot written to {}", path.display());
    Ok(())
}

/// A host on the LAN: its namespace, its role in the story and its address.
#[derive(Clone)]
struct Host {
    role: &'static str,
    ns: String,
    v4: &'static str,
}

/// The lab and the story's state.
struct Demo {
    lab: Lab,
    binary: PathBuf,
    switch_ns: String,
    protected: Host,
    bystander: Host,
    attacker: Host,
    pinger: Option<Pinger>,
    /// Whether to record the counters for a plot (`--plot`).
    plot: bool,
    /// Sampling the counters, while the tour runs with `--plot`.
    recorder: Option<Recorder>,
    /// The SVG drawn at the end of a tour whose checks all passed.
    picture: Option<String>,
}

impl Demo {
    fn new(binary: PathBuf, plot: bool) -> Self {
        let lab = Lab::new("demo");
        let host = |role, suffix: &str, v4| Host {
            role,
            ns: lab.ns_name(suffix),
            v4,
        };
        let (protected, bystander, attacker) = (
            host("protected host", "host", HOST_V4),
            host("bystander", "bystander", BYSTANDER_V4),
            host("attacker", "attacker", ATTACKER_V4),
        );
        Self {
            switch_ns: lab.ns_name("switch"),
            lab,
            binary,
            protected,
            bystander,
            attacker,
            pinger: None,
            plot,
            recorder: None,
            picture: None,
        }
    }

    fn hosts(&self) -> [Host; 3] {
        [
            self.protected.clone(),
            self.bystander.clone(),
            self.attacker.clone(),
        ]
    }

    fn build(&mut self) -> Result<()> {
        println!("\n== building the lab: one LAN, {BROADCAST_V4} is its broadcast address ==");
        for host in self.hosts() {
            println!("  {:<15} {:<16} in {}", host.role, host.v4, host.ns);
        }
        println!("  all three plugged into bridge br0 in {}", self.switch_ns);
        let switch = self.lab.add_namespace("switch")?;
        self.lab
            .ip(&switch, &["link", "add", "br0", "type", "bridge"])?;
        self.lab.ip(&switch, &["link", "set", "br0", "up"])?;
        for host in self.hosts() {
            let suffix = host.ns.rsplit('-').next().unwrap_or("host");
            self.lab.add_namespace(suffix)?;
            // The port is named after the host; both ends are created straight inside
            // their namespaces, so the host's own interfaces are never involved.
            let port = host.role.split(' ').next_back().unwrap_or("port");
            self.lab.add_veth((&host.ns, "eth0"), (&switch, port))?;
            self.lab
                .ip(&switch, &["link", "set", port, "master", "br0"])?;
            self.lab.ip(&switch, &["link", "set", port, "up"])?;
            let address = format!("{}/{PREFIX}", host.v4);
            self.lab.ip(
                &host.ns,
                &[
                    "address",
                    "add",
                    &address,
                    "broadcast",
                    BROADCAST_V4,
                    "dev",
                    "eth0",
                ],
            )?;
            self.lab.ip(&host.ns, &["link", "set", "eth0", "up"])?;
        }
        // Linux ignores broadcast pings by default; old stacks and many devices answer
        // them, which is what makes a smurf amplifier. Switch the default off on the
        // protected host and the bystander so that only icmp-guard makes a difference.
        for host in [self.protected.clone(), self.bystander.clone()] {
            println!(
                "{}$ sysctl -w net.ipv4.icmp_echo_ignore_broadcasts=0",
                host.role
            );
            let output = self.in_ns(
                &host,
                &["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_broadcasts=0"],
            )?;
            if !output.status.success() {
                bail!(
                    "sysctl failed on the {}: {}",
                    host.role,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
        }
        // Clean-up detaches with this binary whenever something was pinned.
        drop(self.lab.guard(&self.protected.ns, &self.binary));
        interrupt::check()
    }

    fn tour(&mut self) -> Result<()> {
        println!(
            "\nicmp-guard runs on the protected host as `ICMP_GUARD_PIN_DIR={} nsenter --net={} {} ...`",
            self.lab.pin_dir().display(),
            icmp_guard_lab::process::netns_path(&self.protected.ns).display(),
            self.binary.display()
        );

        self.step(
            1,
            "attached",
            "attach icmp-guard to the protected host's eth0",
            &format!(
                "the safe default profile: echo requests limited to {}/s per source (burst \
                 {}), sources without a bucket share a budget of {}/s; smurf echoes, \
                 timestamps and other recon types dropped; PMTUD never limited",
                PER_SOURCE.0,
                PER_SOURCE.1,
                thousands(NEW_SOURCES.0.into())
            ),
        );
        self.guard(&["attach", "eth0"])?;
        if self.plot {
            self.start_recording()?;
        }
        self.guard(&["status"])?;
        let (pinger, command) = Pinger::start(&self.bystander.ns, HOST_V4)?;
        println!(
            "{}$ {command} &   (runs in the background until the end)",
            self.bystander.role
        );
        self.pinger = Some(pinger);
        // Two answered pings first: the bystander is an established source before the
        // floods start.
        if !self.pinger()?.wait_for_replies(2, Duration::from_secs(5)) {
            bail!("the bystander's pings are not answered");
        }
        self.progress()?;

        self.step(
            2,
            "ping flood",
            "ping flood",
            &format!(
                "ping -f from the attacker for {FLOOD_SECONDS} s: after the burst of {}, \
                 about {} replies a second (expect about {}); ping -f sends as fast as \
                 replies come back, and every 10 ms while they do not",
                PER_SOURCE.1,
                PER_SOURCE.0,
                allowed(PER_SOURCE)
            ),
        );
        let flood = self.attack_watched(&[
            "ping",
            "-f",
            "-q",
            "-c",
            "100000",
            "-w",
            &FLOOD_SECONDS.to_string(),
            HOST_V4,
        ])?;
        let (flood_sent, flood_answered) = transmitted_received(&flood).unwrap_or((0, 0));
        self.after_step()?;
        // The bystander keeps its own allowance through the spoofed flood only once it has
        // left probation: at a ping at least PROBATION after its first (the ping flood is
        // within the new-source budget, which never refused). Otherwise its pings are
        // charged to the budget, which the spoofed flood exhausts, and dropped.
        let graduated = PROBATION_SECONDS + 2;
        if !self
            .pinger()?
            .wait_for_replies(graduated, Duration::from_secs(graduated as u64))
        {
            bail!("the bystander's pings are not answered");
        }

        self.step(
            3,
            "spoofed flood",
            "spoofed-source flood",
            &format!(
                "hping3 --rand-source for {FLOOD_SECONDS} s: every packet from a new random \
                 address; the new-source budget caps what gets through, martian sources \
                 (0/8, 127/8, 224/4, 240/4) are dropped as invalid"
            ),
        );
        let spoofed = self.attack(&[
            "timeout",
            "-s",
            "INT",
            &FLOOD_SECONDS.to_string(),
            "hping3",
            "--icmp",
            "--flood",
            "--rand-source",
            "-q",
            HOST_V4,
        ])?;
        let spoofed_sent = transmitted_received(&spoofed).map_or(0, |(sent, _)| sent);
        self.after_step()?;

        self.step(
            4,
            "smurf",
            "smurf: a broadcast ping",
            &format!(
                "ping -b {BROADCAST_V4} with the attacker's (spoofable) address: every host \
                 that answers amplifies. The bystander, unprotected, answers; the protected \
                 host must not"
            ),
        );
        let before = self.stats_json()?;
        let smurf = self.attack(&[
            "ping",
            "-b",
            "-c",
            &PROBES.to_string(),
            "-i",
            "0.3",
            "-W",
            "1",
            BROADCAST_V4,
        ])?;
        let smurf_text = String::from_utf8_lossy(&smurf.stdout).into_owned();
        let host_answered_smurf = smurf_text.contains(&format!("from {HOST_V4}:"));
        let bystander_answered_smurf = smurf_text.contains(&format!("from {BYSTANDER_V4}:"));
        let smurf_dropped = counter(&self.stats_json()?, "v4", 8, &["dropped", "smurf"])
            - counter(&before, "v4", 8, &["dropped", "smurf"]);
        self.after_step()?;

        self.step(
            5,
            "timestamp",
            "timestamp probe",
            "hping3 --icmp-ts: timestamp requests reveal the host's clock; the default \
             profile drops them",
        );
        let before = self.stats_json()?;
        let probe = self.attack(&[
            "timeout",
            "10",
            "hping3",
            "--icmp",
            "--icmp-ts",
            "-c",
            &PROBES.to_string(),
            HOST_V4,
        ])?;
        let timestamps_answered = transmitted_received(&probe).map_or(u64::MAX, |(_, got)| got);
        let timestamps_dropped = counter(&self.stats_json()?, "v4", 13, &["dropped", "policy"])
            - counter(&before, "v4", 13, &["dropped", "policy"]);
        self.after_step()?;

        self.step(
            6,
            "PMTUD",
            "PMTUD: fragmentation needed (ICMP 3/4)",
            "sent by the very host that flooded: PMTUD messages are never charged to a budget, \
             so they must all pass and reach the host's stack (RFC 1191)",
        );
        let before = self.stats_json()?;
        let unreachables_before = self.host_dest_unreachables()?;
        let count = PROBES.to_string();
        self.attack(
            &[
                &["timeout", "10", "hping3"][..],
                &ping::FRAG_NEEDED,
                &["-c", &count, "-i", "u200000", HOST_V4],
            ]
            .concat(),
        )?;
        let pmtud_passed = counter(&self.stats_json()?, "v4", 3, &["passed"])
            - counter(&before, "v4", 3, &["passed"]);
        let pmtud_received = self
            .host_dest_unreachables()?
            .saturating_sub(unreachables_before);
        println!(
            "{}: icmp-guard passed {pmtud_passed} of {PROBES}; the host's stack counted \
             {pmtud_received} (Icmp InDestUnreachs)",
            self.protected.role
        );
        self.after_step()?;

        self.step(
            7,
            "trace",
            "trace: why one ping passed and one probe was dropped",
            "icmp-guard trace swaps the trace build of the program into the interface's link \
             (BPF_LINK_UPDATE: no gap, the same policy and counters), which reports through \
             aya-log the check that decided each of the attacker's packets; production is \
             swapped back after",
        );
        let traced = self.trace_two_packets()?;
        let trace_named_both = traced
            .lines()
            .any(|line| line.contains("echo-request/0 passed by "))
            && traced.lines().any(|line| {
                line.contains("timestamp-request/0 dropped (policy) by type/code rule")
            });
        self.after_step()?;

        self.step(
            8,
            "sweep",
            "reconnaissance: a ping sweep",
            &format!(
                "fping over {SWEEP_PROBES} addresses of {SWEPT_SUBNET}, routed through the \
                 protected host (nobody answers; every probe reaches its XDP hook): one \
                 source, many destinations, one probe each, which no rate limit sees. \
                 Sweep detection, on with a threshold of {SWEEP_THRESHOLD} destinations, \
                 flags the attacker and drops the rest of its probes as `sweep`"
            ),
        );
        let sweep = self.sweep()?;
        self.after_step()?;

        println!("\n== stopping the bystander's pings ==");
        let pinger = self.pinger.take().context("the bystander is not pinging")?;
        let bystander = pinger.stop()?;
        // After the bystander's last reply, so the plot counts every one of its pings.
        let recording = self.recorder.take().map(Recorder::finish).transpose()?;
        println!(
            "{}: {} pings sent, {} answered{}",
            self.bystander.role,
            bystander.transmitted,
            bystander.received,
            if bystander.missing.is_empty() {
                String::new()
            } else {
                format!(", unanswered icmp_seq {:?}", bystander.missing)
            }
        );

        let stats = self.stats_json()?;
        println!("\n== summary ==");
        println!("sent by the attacker ({ATTACKER_V4}):");
        println!(
            "  ping flood          {flood_sent} echo requests in {FLOOD_SECONDS} s, {flood_answered} answered"
        );
        println!(
            "  spoofed flood       {spoofed_sent} echo requests from random sources in {FLOOD_SECONDS} s"
        );
        println!(
            "  smurf               {PROBES} echo requests to {BROADCAST_V4} (protected host \
             answered: {}; bystander answered: {})",
            yes_no(host_answered_smurf),
            yes_no(bystander_answered_smurf)
        );
        println!(
            "  timestamp probe     {PROBES} timestamp requests, {} answered",
            if timestamps_answered == u64::MAX {
                "?".to_owned()
            } else {
                timestamps_answered.to_string()
            }
        );
        println!("  PMTUD               {PROBES} fragmentation-needed messages (3/4)");
        println!(
            "  sweep               {SWEEP_PROBES} echo requests to {SWEEP_FIRST}-{SWEEP_LAST}, \
             one each ({} dropped as sweep; top: {})",
            sweep.dropped,
            sweep.destinations.map_or_else(
                || "not flagged".to_owned(),
                |n| format!("SWEEP ≥{n} destinations")
            )
        );
        println!(
            "sent by the bystander ({BYSTANDER_V4}): {} pings, one a second",
            bystander.transmitted
        );
        println!("\nwhat icmp-guard on the protected host did (icmp-guard stats --json):");
        print!("{}", describe_stats(&stats));

        let checks = [
            (
                bystander.transmitted >= 5
                    && bystander.received == bystander.transmitted
                    && bystander.missing.is_empty(),
                format!(
                    "every bystander ping was answered during the attacks ({} of {})",
                    bystander.received, bystander.transmitted
                ),
            ),
            (
                pmtud_passed == PROBES && pmtud_received == PROBES,
                format!(
                    "every PMTUD message got through: {pmtud_passed} of {PROBES} passed, \
                     {pmtud_received} reached the host's stack"
                ),
            ),
            (
                !host_answered_smurf && smurf_dropped == PROBES,
                format!(
                    "the protected host did not answer the broadcast ping ({smurf_dropped} of \
                     {PROBES} dropped as smurf)"
                ),
            ),
            (
                timestamps_answered == 0 && timestamps_dropped == PROBES,
                format!(
                    "no timestamp request was answered ({timestamps_dropped} of {PROBES} \
                     dropped by policy)"
                ),
            ),
            (
                trace_named_both,
                "trace named the check and verdict of a passed ping and a dropped timestamp \
                 request"
                    .to_owned(),
            ),
            (
                sweep.flagged_in_time(),
                format!(
                    "the sweeper was flagged near the threshold of {SWEEP_THRESHOLD} ({}) and \
                     {} of its {SWEEP_PROBES} probes were dropped as sweep",
                    sweep.destinations.map_or_else(
                        || "not flagged".to_owned(),
                        |n| format!("top: ≥{n} destinations")
                    ),
                    sweep.dropped
                ),
            ),
            (
                flood_sent > 0 && flood_answered < flood_sent,
                format!("the ping flood was limited ({flood_answered} of {flood_sent} answered)"),
            ),
        ];
        println!("\nchecks:");
        let mut failed = 0;
        for (ok, what) in &checks {
            println!("  [{}] {what}", if *ok { "ok" } else { "FAILED" });
            failed += usize::from(!ok);
        }

        println!();
        self.guard(&["detach", "--all"])?;
        if failed > 0 {
            bail!("{failed} of {} demo checks failed", checks.len());
        }
        if let Some(recording) = recording {
            let facts = Facts {
                smurf_dropped,
                timestamps_dropped,
                pmtud_passed,
                bystander: (bystander.transmitted, bystander.received),
            };
            self.picture = Some(picture(&recording, &facts)?);
        }
        Ok(())
    }

    /// Starts sampling the counters for the plot; the first phase starts now.
    fn start_recording(&mut self) -> Result<()> {
        let (ns, binary) = (self.protected.ns.clone(), self.binary.clone());
        let pin_dir = self.lab.pin_dir().to_owned();
        let stats = move || {
            let mut command = icmp_guard_lab::process::nsenter(&ns, &binary);
            command
                .env("ICMP_GUARD_PIN_DIR", &pin_dir)
                .args(["stats", "--json"])
                .stdin(Stdio::null());
            command
        };
        let mut recorder = Recorder::start(Sources {
            host_ns: self.protected.ns.clone(),
            host_if: "eth0".to_owned(),
            bystander_ns: self.bystander.ns.clone(),
            stats: Arc::new(stats),
        })?;
        recorder.mark("attached");
        println!(
            "(recording for the plot: icmp-guard stats --json, eth0's RX counter and the \
             bystander's ICMP counters, every {} ms)",
            record::PERIOD.as_millis()
        );
        self.recorder = Some(recorder);
        Ok(())
    }

    /// Shows a step's title and what it does; marks where it starts on the plot.
    fn step(&mut self, number: u32, label: &str, title: &str, what: &str) {
        if let Some(recorder) = &mut self.recorder {
            recorder.mark(label);
        }
        println!("\n== {number}/8 {title} ==\n# {what}");
    }

    fn pinger(&self) -> Result<&Pinger> {
        self.pinger.as_ref().context("the bystander is not pinging")
    }

    /// The counters after each step, and how the bystander is doing.
    fn after_step(&self) -> Result<()> {
        self.guard(&["stats"])?;
        self.progress()
    }

    fn progress(&self) -> Result<()> {
        let pinger = self.pinger()?;
        let missing = pinger.missing();
        println!(
            "{} ({}, pinging {HOST_V4} once a second): {} answered so far, {}",
            self.bystander.role,
            self.bystander.v4,
            pinger.replies(),
            if missing.is_empty() {
                "none lost".to_owned()
            } else {
                format!("unanswered icmp_seq {missing:?}")
            }
        );
        interrupt::check()
    }

    /// Runs the icmp-guard CLI on the protected host, with the lab's pin directory.
    fn guard_command(&self, args: &[&str]) -> Command {
        let mut command = self.lab.guard_command(&self.protected.ns, &self.binary);
        command.args(args);
        command
    }

    fn guard(&self, args: &[&str]) -> Result<()> {
        let shown = format!("{}$ icmp-guard {}", self.protected.role, args.join(" "));
        println!("{shown}");
        let status = self
            .guard_command(args)
            .status()
            .with_context(|| format!("running `{shown}`"))?;
        // A Ctrl-C also stops the command; say "interrupted" rather than blame it.
        interrupt::check()?;
        if !status.success() {
            bail!("`{shown}` failed ({status})");
        }
        Ok(())
    }

    fn stats_json(&self) -> Result<Value> {
        let json = process::stdout_of(&mut self.guard_command(&["stats", "--json"]))?;
        serde_json::from_str(&json).context("parsing `icmp-guard stats --json`")
    }

    /// Runs a command on `host` quietly and returns its output, whatever its status.
    fn in_ns(&self, host: &Host, args: &[&str]) -> Result<Output> {
        let mut command = self.lab.command(&host.ns, args[0]);
        command.args(&args[1..]);
        process::output(&mut command)
    }

    /// Runs an attack from the attacker, showing the command and what it printed. Its exit
    /// status is not checked: tools report unanswered requests as failure.
    fn attack(&self, args: &[&str]) -> Result<Output> {
        println!("{}$ {}", self.attacker.role, args.join(" "));
        let output = self.in_ns(&self.attacker, args)?;
        print_output(&output);
        interrupt::check()?;
        Ok(output)
    }

    /// [`Self::attack`], with `icmp-guard top` on the protected host while it runs: the
    /// heaviest sources as the guard sees them, from its sampled events.
    fn attack_watched(&self, args: &[&str]) -> Result<Output> {
        println!("{}$ {}", self.attacker.role, args.join(" "));
        let mut command = self.lab.command(&self.attacker.ns, args[0]);
        command
            .args(&args[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let attack = command
            .spawn()
            .with_context(|| format!("starting `{}`", args.join(" ")))?;
        std::thread::sleep(Duration::from_millis(500));
        let watched = self.guard(&["top", "--count", "1", "--interval", "2", "--limit", "3"]);
        let output = attack
            .wait_with_output()
            .with_context(|| format!("waiting for `{}`", args.join(" ")))?;
        print_output(&output);
        watched?;
        interrupt::check()?;
        Ok(output)
    }

    /// `icmp-guard trace` of the attacker's packets while it sends one ping and one
    /// timestamp request; returns what the trace printed.
    fn trace_two_packets(&self) -> Result<String> {
        let source = format!("{ATTACKER_V4}/32");
        let args = [
            "trace",
            "eth0",
            "--source",
            &source,
            "--count",
            "2",
            "--seconds",
            "20",
        ];
        println!("{}$ icmp-guard {}", self.protected.role, args.join(" "));
        let trace = self
            .guard_command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting `icmp-guard trace`")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = process::stdout_of(&mut self.guard_command(&["status"]))?;
            if status.contains("tracing until") {
                break;
            }
            if Instant::now() > deadline {
                bail!("`icmp-guard trace` did not start within 10 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.attack(&["ping", "-c", "1", "-W", "1", HOST_V4])?;
        self.attack(&[
            "timeout",
            "10",
            "hping3",
            "--icmp",
            "--icmp-ts",
            "-c",
            "1",
            HOST_V4,
        ])?;
        let output = trace
            .wait_with_output()
            .context("waiting for `icmp-guard trace`")?;
        print_output(&output);
        interrupt::check()?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Step 8: sweep detection on through `policy apply`, a route for [`SWEPT_SUBNET`]
    /// through the protected host on the attacker, and `fping` over [`SWEEP_PROBES`] of its
    /// addresses, watched by `top`; then what the guard made of it.
    fn sweep(&self) -> Result<Sweep> {
        let file = std::env::temp_dir().join(format!("{}-recon.toml", self.lab.ns_name("policy")));
        let policy = recon_policy();
        std::fs::write(&file, &policy).with_context(|| format!("writing {}", file.display()))?;
        println!(
            "{}$ cat {}\n{}",
            self.protected.role,
            file.display(),
            policy.trim_end()
        );
        let file_name = file.display().to_string();
        let applied = self.guard(&["policy", "apply", "--diff", &file_name]);
        let removed = std::fs::remove_file(&file);
        applied?;
        removed.with_context(|| format!("removing {}", file.display()))?;
        self.guard(&["status"])?;
        let route = ["route", "add", SWEPT_SUBNET, "via", HOST_V4];
        println!("{}$ ip {}", self.attacker.role, route.join(" "));
        self.lab.ip(&self.attacker.ns, &route)?;
        let before = self.stats_json()?;
        // -r 0: one probe per address; -i 60: a probe every 60 ms, so that the sweep lasts
        // the three seconds `top` watches.
        self.attack_watched(&[
            "fping",
            "-q",
            "-s",
            "-r",
            "0",
            "-t",
            "200",
            "-i",
            "60",
            "-g",
            SWEEP_FIRST,
            SWEEP_LAST,
        ])?;
        let dropped = counter(&self.stats_json()?, "v4", 8, &["dropped", "sweep"])
            - counter(&before, "v4", 8, &["dropped", "sweep"]);
        let top = process::stdout_of(&mut self.guard_command(&[
            "top",
            "--json",
            "--count",
            "1",
            "--interval",
            "1",
        ]))?;
        let top: Value = serde_json::from_str(&top).context("parsing `icmp-guard top --json`")?;
        let destinations = top["sweeping"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["address"] == ATTACKER_V4)
            .and_then(|entry| entry["destinations"].as_u64());
        Ok(Sweep {
            dropped,
            destinations,
        })
    }

    /// `Icmp InDestUnreachs` of the protected host's stack.
    fn host_dest_unreachables(&self) -> Result<u64> {
        Ok(netns::snmp(&self.protected.ns, "Icmp", "InDestUnreachs")?)
    }
}

/// What the guard made of the sweep of step 8.
struct Sweep {
    /// Echo requests dropped as `sweep` during it.
    dropped: u64,
    /// The destinations `top --json` estimated for the attacker, if it lists it as sweeping.
    destinations: Option<u64>,
}

impl Sweep {
    /// Flagged within the sketch's accuracy of the threshold, and every later probe dropped.
    fn flagged_in_time(&self) -> bool {
        let low = SWEEP_THRESHOLD * (100 - SWEEP_ACCURACY_PERCENT) / 100;
        let high = (SWEEP_THRESHOLD * (100 + SWEEP_ACCURACY_PERCENT)).div_ceil(100);
        self.destinations.is_some_and(|n| (low..=high).contains(&n))
            && self.dropped >= SWEEP_PROBES - high
            && self.dropped <= SWEEP_PROBES - low
    }
}

/// What the demo's own tools counted, for the plot's caption.
struct Facts {
    smurf_dropped: u64,
    timestamps_dropped: u64,
    pmtud_passed: u64,
    /// The bystander's pings (sent, answered), from its ping.
    bystander: (u64, u64),
}

/// The plot of `recording`, with a caption of what does not depend on the machine: what
/// got through each flood against what its limit allows, what was dropped or passed whole,
/// and the bystander's pings. Prints the phases' numbers as well.
fn picture(recording: &Recording, facts: &Facts) -> Result<String> {
    let phases = plot::phases(recording);
    println!(
        "\nrecorded for the plot: {} samples ({} more left out: their `stats` run was slow)",
        recording.samples.len(),
        recording.left_out
    );
    println!(
        "  {:<14} {:>6} {:>10} {:>8}  dropped by reason",
        "step", "sec", "offered", "passed"
    );
    for phase in &phases {
        let dropped: Vec<String> = phase
            .dropped
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(reason, count)| format!("{reason}={}", thousands(*count)))
            .collect();
        println!(
            "  {:<14} {:>6.1} {:>10} {:>8}  {}",
            phase.label,
            phase.to - phase.from,
            thousands(phase.offered),
            thousands(phase.passed),
            dropped.join(" ")
        );
    }
    let phase = |label: &str| phases.iter().find(|phase| phase.label == label);
    let passed = |label: &str| {
        phase(label).map_or_else(
            || "?".to_owned(),
            |phase| {
                format!(
                    "{} of {} packets passed ({})",
                    thousands(phase.passed),
                    thousands(phase.offered),
                    percent(phase.passed, phase.offered)
                )
            },
        )
    };
    let (pings_sent, pings_answered) = facts.bystander;
    let caption = [
        format!(
            "Ping flood, one source: {}; the per-source limit allows {} in {FLOOD_SECONDS} s \
             ({} at once, then {}/s).",
            passed("ping flood"),
            allowed(PER_SOURCE),
            PER_SOURCE.1,
            PER_SOURCE.0,
        ),
        format!(
            "Spoofed flood, random sources: {}; the new-source budget allows {} in \
             {FLOOD_SECONDS} s ({} at once, then {}/s).",
            passed("spoofed flood"),
            thousands(allowed(NEW_SOURCES)),
            thousands(NEW_SOURCES.1.into()),
            thousands(NEW_SOURCES.0.into()),
        ),
        format!(
            "Dropped whole: smurf {}/{PROBES}, timestamp {}/{PROBES}. Passed whole: PMTUD \
             {}/{PROBES}. The bystander's pings: {pings_answered} of {pings_sent} answered.",
            facts.smurf_dropped, facts.timestamps_dropped, facts.pmtud_passed,
        ),
        format!(
            "Offered: packets reaching the protected host's eth0 (its RX counter, before \
             XDP). Passed, dropped: icmp-guard stats --json, {} times a second.",
            1000 / record::PERIOD.as_millis().max(1)
        ),
        "The policy sets what passes, the attacker's machine what is offered: on another \
         machine the grey area moves, the green line and the bystander's pings do not."
            .to_owned(),
    ];
    plot::draw(
        recording,
        "icmp-guard under attack: floods cut to the limits, the bystander untouched",
        &caption,
    )
}

/// Packets a limit lets through in a flood of [`FLOOD_SECONDS`]: the burst, then the rate.
fn allowed((rate, burst): (u32, u32)) -> u64 {
    u64::from(burst) + u64::from(rate) * u64::from(FLOOD_SECONDS)
}

/// `part` of `whole` as a percentage, with a useful number of digits.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "packet counts stay far below 2^52"
    )]
    let share = 100.0 * part as f64 / whole as f64;
    if share >= 10.0 {
        format!("{share:.0}%")
    } else {
        format!("{share:.1}%")
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// An attack's output, indented, blank lines left out.
fn print_output(output: &Output) {
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            println!("  {line}");
        }
    }
}

/// "N packets transmitted, M (packets) received" from ping or hping3.
fn transmitted_received(output: &Output) -> Option<(u64, u64)> {
    ping::summary(&icmp_guard_lab::process::text(output))
}

/// Why each drop reason fires, for the summary.
fn reason_text(reason: &str) -> &'static str {
    match reason {
        "rate_limit" => "over its source's limit, or over the new-source budget",
        "smurf" => "sent to a broadcast or multicast destination",
        "policy" => "a type the profile drops",
        "deny_list" => "from a denied source",
        "invalid" => "a header no packet may carry (here: martian spoofed sources)",
        "malformed" => "a structure the parser refuses to walk",
        "oversize" => "longer than its rule's max_size",
        "blocked" => "from a source serving a block time after going over its limit",
        "sweep" => "a probe from a source flagged for sweeping many destinations",
        _ => "",
    }
}

/// One line per (family, type) seen, with its drops by reason.
fn describe_stats(stats: &Value) -> String {
    let mut text = String::new();
    for row in stats["icmp"].as_array().into_iter().flatten() {
        let packets = row["packets"].as_u64().unwrap_or(0);
        if packets == 0 {
            continue;
        }
        text += &format!(
            "  {} {} {}: {} received, {} passed\n",
            row["family"].as_str().unwrap_or("?"),
            row["type"],
            row["name"].as_str().unwrap_or("?"),
            packets,
            row["passed"].as_u64().unwrap_or(0)
        );
        for (reason, count) in row["dropped"].as_object().into_iter().flatten() {
            if let Some(count) = count.as_u64().filter(|count| *count > 0) {
                text += &format!(
                    "      dropped {count} as {reason}: {}\n",
                    reason_text(reason)
                );
            }
        }
    }
    let unclassified: Vec<String> = stats["unclassified"]["dropped"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(reason, count)| {
            let count = count.as_u64().filter(|count| *count > 0)?;
            Some(format!("{count} as {reason} ({})", reason_text(reason)))
        })
        .collect();
    if !unclassified.is_empty() {
        text += &format!(
            "  dropped before a type could be read: {}\n",
            unclassified.join(", ")
        );
    }
    let totals = &stats["totals"];
    text += &format!(
        "  totals: {} ICMP packets, {} passed, {} dropped; {} non-ICMP packets passed untouched\n",
        totals["icmp_packets"], totals["passed"], totals["dropped"], totals["non_icmp_passed"]
    );
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::{Args, NEW_SOURCES, PER_SOURCE, allowed, percent};
    use crate::util::cargo::workspace_root;

    #[derive(Parser)]
    struct Demo {
        #[command(flatten)]
        args: Args,
    }

    fn plot_path(argv: &[&str]) -> Option<PathBuf> {
        let demo = Demo::try_parse_from(["demo"].iter().chain(argv)).expect("parses");
        demo.args.plot_path()
    }

    #[test]
    fn plot_goes_to_the_workspace_docs_unless_a_path_is_given() {
        assert_eq!(plot_path(&[]), None);
        assert_eq!(
            plot_path(&["--plot"]),
            Some(workspace_root().join("docs/demo.svg"))
        );
        assert_eq!(
            plot_path(&["--plot", "/tmp/x.svg"]),
            Some(PathBuf::from("/tmp/x.svg"))
        );
    }

    #[test]
    fn what_the_limits_allow_in_a_flood_and_shares_of_it() {
        // The burst at once, then the rate for each of the flood's 3 seconds.
        assert_eq!(allowed(PER_SOURCE), 500);
        assert_eq!(allowed(NEW_SOURCES), 5_000);
        assert_eq!(percent(505, 681), "74%");
        assert_eq!(percent(5_001, 242_322), "2.1%");
        assert_eq!(percent(1, 0), "-");
    }
}
