//! Flood throughput: a fixed number of ICMP echo requests sent with trafgen through a veth
//! pair between two namespaces of our own, timed until the receiver has handled all of
//! them, for six receivers: no filter, icmp-guard, the drop-all XDP floor, the minimal
//! per-source limiter with and without a new-source budget (the baselines of the eBPF
//! object, attached by `icmp-guard/examples/baseline_receiver.rs`) and an nftables rule set
//! that does icmp-guard's job. Twice: from one source, and from a source that changes with
//! every packet (spoofed).
//!
//! **What is timed.** On veth the receiver's work runs on the sender's CPU: trafgen's
//! transmit ends in `local_bh_enable`, which runs the receive softirq (XDP on the veth's
//! NAPI ring, or the stack's backlog) before trafgen sends the next packet. So the time
//! from the first packets handled (the clock starts at the 100th, so that a stray ARP probe
//! cannot start it) to the last is the sender's cost plus the receiver's, and a more
//! expensive receiver shows up as a longer flood. A thread on another CPU polls the
//! receiver's counters every millisecond: the veth's rx counter (which counts every frame
//! XDP saw) when an XDP program is attached, the namespace's `Ip InReceives` otherwise
//! (nftables' hook runs right after it), plus every loss on the way (veth ring, backlog),
//! so the count always reaches the number sent.

use std::{
    fmt::Write as _,
    fs::{self, File},
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use icmp_guard_lab::{Pair, netns, ping};

use super::drop_all;
use crate::util::{interrupt, numbers, process};

/// Echo requests per flood.
pub const PACKETS: u64 = 1_000_000;
/// Floods per (sources, receiver).
pub const RUNS: usize = 3;
/// The clock starts once this many packets are handled.
const START_AFTER: u64 = 100;

const SENDER_V4: &str = "192.0.2.2";
const RECEIVER_V4: &str = "192.0.2.1";
/// Spoofed sources: 10.0.0.0/8 with three random bytes per packet, so practically every
/// packet comes from a source not seen before. They never leave our two namespaces.
const SPOOFED_RANGE: &str = "10.0.0.0/8";
const NFT_TABLE: &str = "icmpguard_bench";

/// Issue 14's targets for icmp-guard, as a ratio to the drop-all floor.
const fn target_over_floor(sources: Sources) -> f64 {
    match sources {
        Sources::One => 1.10,
        Sources::Spoofed => 1.15,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sources {
    One,
    Spoofed,
}

impl Sources {
    const ALL: [Self; 2] = [Self::One, Self::Spoofed];

    fn label(self) -> &'static str {
        match self {
            Self::One => "one source",
            Self::Spoofed => "spoofed",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Self::One => "one_source",
            Self::Spoofed => "spoofed_sources",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Receiver {
    Floor,
    Guard,
    /// The minimal per-source limiter with a new-source budget.
    MinimalBudget,
    /// The minimal per-source limiter.
    Minimal,
    Nftables,
    NoFilter,
}

impl Receiver {
    const ALL: [Self; 6] = [
        Self::Floor,
        Self::Guard,
        Self::MinimalBudget,
        Self::Minimal,
        Self::Nftables,
        Self::NoFilter,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Floor => "drop-all XDP (floor)",
            Self::Guard => "icmp-guard",
            Self::MinimalBudget => "minimal + budget",
            Self::Minimal => "minimal limiter",
            Self::Nftables => "nftables",
            Self::NoFilter => "no filter",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Self::Floor => "drop_all_floor",
            Self::Guard => "icmp_guard",
            Self::MinimalBudget => "minimal_limiter_with_budget",
            Self::Minimal => "minimal_limiter",
            Self::Nftables => "nftables",
            Self::NoFilter => "no_filter",
        }
    }

    /// Whether an XDP program sees every frame (and the veth counts it as received).
    fn xdp(self) -> bool {
        matches!(
            self,
            Self::Floor | Self::Guard | Self::MinimalBudget | Self::Minimal
        )
    }
}

/// One flood.
#[derive(Clone, Debug)]
pub struct Measurement {
    seconds: f64,
    handled: u64,
    lost: u64,
    /// Echo replies the receiver sent.
    answered: u64,
    complete: bool,
}

impl Measurement {
    fn json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "handled": self.handled,
            "lost": self.lost,
            "answered": self.answered,
            "complete": self.complete,
        })
    }
}

/// Counters read at one moment; see the module docs for which count as handled.
#[derive(Clone, Copy, Default)]
struct Snapshot {
    rx_packets: u64,
    rx_dropped: u64,
    ip_in_receives: u64,
    out_echo_replies: u64,
    sender_tx_dropped: u64,
    backlog_dropped: u64,
}

impl Snapshot {
    fn lost(&self) -> u64 {
        self.rx_dropped + self.sender_tx_dropped + self.backlog_dropped
    }

    fn handled(&self, receiver: Receiver) -> u64 {
        let seen = if receiver.xdp() {
            self.rx_packets
        } else {
            self.ip_in_receives
        };
        seen + self.lost()
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            rx_packets: self.rx_packets.saturating_sub(before.rx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(before.rx_dropped),
            ip_in_receives: self.ip_in_receives.saturating_sub(before.ip_in_receives),
            out_echo_replies: self
                .out_echo_replies
                .saturating_sub(before.out_echo_replies),
            sender_tx_dropped: self
                .sender_tx_dropped
                .saturating_sub(before.sender_tx_dropped),
            backlog_dropped: self.backlog_dropped.saturating_sub(before.backlog_dropped),
        }
    }
}

/// The proc files the poller reads, opened once in the right namespaces.
struct Counters {
    receiver_if: String,
    sender_if: String,
    receiver_dev: File,
    receiver_snmp: File,
    sender_dev: File,
    softnet: File,
    buffer: String,
}

impl Counters {
    fn open(lab: &Lab) -> Result<Self> {
        Ok(Self {
            receiver_if: lab.pair.guard.ifname.clone(),
            sender_if: lab.pair.peer.ifname.clone(),
            receiver_dev: netns::open_proc_net(&lab.pair.guard.ns, "dev")?,
            receiver_snmp: netns::open_proc_net(&lab.pair.guard.ns, "snmp")?,
            sender_dev: netns::open_proc_net(&lab.pair.peer.ns, "dev")?,
            softnet: File::open("/proc/net/softnet_stat").context("opening softnet_stat")?,
            buffer: String::with_capacity(8192),
        })
    }

    fn read(&mut self) -> Result<Snapshot> {
        let (rx_packets, rx_dropped) = {
            let text = reread(&mut self.receiver_dev, &mut self.buffer)?;
            let fields = dev_fields(text, &self.receiver_if)?;
            (fields[1], fields[3])
        };
        let (ip_in_receives, out_echo_replies) = {
            let text = reread(&mut self.receiver_snmp, &mut self.buffer)?;
            (
                snmp_field(text, "Ip", "InReceives")?,
                snmp_field(text, "Icmp", "OutEchoReps")?,
            )
        };
        let sender_tx_dropped = {
            let text = reread(&mut self.sender_dev, &mut self.buffer)?;
            dev_fields(text, &self.sender_if)?[11]
        };
        let backlog_dropped = {
            let text = reread(&mut self.softnet, &mut self.buffer)?;
            text.lines()
                .filter_map(|line| line.split_whitespace().nth(1))
                .filter_map(|hex| u64::from_str_radix(hex, 16).ok())
                .sum()
        };
        Ok(Snapshot {
            rx_packets,
            rx_dropped,
            ip_in_receives,
            out_echo_replies,
            sender_tx_dropped,
            backlog_dropped,
        })
    }
}

/// Reads a proc file again from the start (a seq file regenerates on every read).
fn reread<'a>(file: &mut File, buffer: &'a mut String) -> Result<&'a str> {
    buffer.clear();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_string(buffer)?;
    Ok(buffer)
}

/// The numbers of `ifname`'s line in /proc/net/dev: rx bytes, packets, errs, drop, ...,
/// then tx bytes (8), packets, errs, drop (11), ...
fn dev_fields(text: &str, ifname: &str) -> Result<Vec<u64>> {
    text.lines()
        .find_map(|line| {
            let (name, rest) = line.split_once(':')?;
            (name.trim() == ifname).then(|| {
                rest.split_whitespace()
                    .filter_map(|field| field.parse().ok())
                    .collect::<Vec<u64>>()
            })
        })
        .filter(|fields| fields.len() >= 12)
        .with_context(|| format!("{ifname} missing from /proc/net/dev"))
}

/// A field of /proc/net/snmp.
fn snmp_field(text: &str, protocol: &str, field: &str) -> Result<u64> {
    netns::snmp_counter(text, protocol, field)
        .with_context(|| format!("{protocol} {field} missing from /proc/net/snmp"))
}

/// The flood lab: a [`Pair`] (sender = the pair's peer, 192.0.2.2; receiver = its
/// guard end, 192.0.2.1) without IPv6, whose router solicitations and MLD reports would be
/// noise in the counters, and the receiver in place.
struct Lab {
    pair: Pair,
    binary: PathBuf,
    /// `icmp-guard/examples/baseline_receiver.rs`, built.
    baseline_receiver: PathBuf,
    floor: Option<drop_all::DropAll>,
    /// The running baseline receiver: its XDP link lives as long as it does.
    baseline: Option<Child>,
}

impl Lab {
    fn new(binary: &Path, baseline_receiver: &Path) -> Result<Self> {
        let pair = Pair::new("bench", false)?;
        println!(
            "\nflood lab: {} ({SENDER_V4}, trafgen on {}) -> {} ({RECEIVER_V4} on {}, the receiver)",
            pair.peer.ns, pair.peer.ifname, pair.guard.ns, pair.guard.ifname
        );
        // Like a real host, the receiver answers spoofed sources through its default route.
        pair.lab.ip(
            &pair.guard.ns,
            &["route", "add", "default", "via", SENDER_V4],
        )?;
        interrupt::check()?;
        Ok(Self {
            pair,
            binary: binary.to_owned(),
            baseline_receiver: baseline_receiver.to_owned(),
            floor: None,
            baseline: None,
        })
    }

    fn sender(&self) -> (&str, &str) {
        (&self.pair.peer.ns, &self.pair.peer.ifname)
    }

    fn receiver(&self) -> (&str, &str) {
        (&self.pair.guard.ns, &self.pair.guard.ifname)
    }

    /// Removes everything, the XDP programs of our own first.
    fn clean_up(mut self) -> Result<()> {
        println!("\ncleaning up the flood lab");
        self.floor = None;
        self.stop_baseline()?;
        Ok(self.pair.lab.clean_up()?)
    }

    /// Attaches a minimal limiter (`--budget`: with a new-source budget) to the receiving
    /// interface: the baseline receiver runs in the receiver's namespace and says
    /// `attached` once its program is on the interface.
    fn start_baseline(&mut self, budget: bool) -> Result<()> {
        let (ns, ifname) = (self.pair.guard.ns.clone(), self.pair.guard.ifname.clone());
        let mut command = self.pair.lab.command(&ns, &self.baseline_receiver);
        command.arg(&ifname);
        if budget {
            command.arg("--budget");
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting `{}`", process::display(&command)))?;
        let mut line = String::new();
        let stdout = child
            .stdout
            .take()
            .context("the baseline receiver's stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        if !line.starts_with("attached") {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            bail!(
                "`{}` did not attach: {}",
                process::display(&command),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        self.baseline = Some(child);
        Ok(())
    }

    /// Stops the baseline receiver (our own child, by its handle); its link closes with it.
    fn stop_baseline(&mut self) -> Result<()> {
        if let Some(mut child) = self.baseline.take() {
            child.kill()?;
            child.wait()?;
            // The link goes with the last reference to it: wait until the interface is free.
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.xdp_program_id().is_ok() {
                if Instant::now() > deadline {
                    bail!("the baseline's XDP program is still attached after it exited");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    fn mac(&self, ns: &str, dev: &str) -> Result<String> {
        let json = process::stdout_of(
            process::command("ip").args(["-n", ns, "-j", "link", "show", "dev", dev]),
        )?;
        let links: Value = serde_json::from_str(&json).context("parsing `ip -j link`")?;
        links[0]["address"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no MAC address for {dev}"))
    }

    /// The id of the XDP program attached to the receiving interface.
    fn xdp_program_id(&self) -> Result<u64> {
        let json = process::stdout_of(process::command("ip").args([
            "-n",
            &self.pair.guard.ns,
            "-j",
            "-d",
            "link",
            "show",
            "dev",
            &self.pair.guard.ifname,
        ]))?;
        let links: Value = serde_json::from_str(&json).context("parsing `ip -j -d link`")?;
        links[0]["xdp"]["prog"]["id"]
            .as_u64()
            .with_context(|| format!("no XDP program on {}", self.pair.guard.ifname))
    }

    fn guard(&mut self, args: &[&str]) -> Result<String> {
        let ns = self.pair.guard.ns.clone();
        let mut command = self.pair.lab.guard(&ns, &self.binary);
        process::stdout_of(command.args(args))
    }

    /// `nft ARGS` on the receiver.
    fn nft(&self, args: &[&str]) -> Result<String> {
        let mut command = self.pair.lab.command(&self.pair.guard.ns, "nft");
        process::stdout_of(command.args(args))
    }

    /// Puts `receiver` in place on the receiving interface.
    fn install(&mut self, receiver: Receiver, nft_file: &Path) -> Result<()> {
        match receiver {
            Receiver::NoFilter => {}
            Receiver::Floor => {
                let (ns, ifname) = self.receiver();
                self.floor = Some(drop_all::attach(ns, ifname)?);
            }
            Receiver::Guard => {
                let ifname = self.pair.guard.ifname.clone();
                self.guard(&["attach", &ifname, "--mode", "native"])?;
            }
            Receiver::MinimalBudget => self.start_baseline(true)?,
            Receiver::Minimal => self.start_baseline(false)?,
            Receiver::Nftables => {
                let file = nft_file.to_str().context("a UTF-8 path for nft")?;
                self.nft(&["-f", file])?;
            }
        }
        Ok(())
    }

    /// Takes `receiver` away again; returns icmp-guard's totals when it was attached.
    fn remove(&mut self, receiver: Receiver) -> Result<Option<Value>> {
        match receiver {
            Receiver::NoFilter => Ok(None),
            Receiver::Floor => {
                self.floor = None;
                Ok(None)
            }
            Receiver::MinimalBudget | Receiver::Minimal => {
                self.stop_baseline()?;
                Ok(None)
            }
            Receiver::Guard => {
                let stats: Value = serde_json::from_str(&self.guard(&["stats", "--json"])?)
                    .context("parsing `icmp-guard stats --json`")?;
                self.guard(&["detach", "--all"])?;
                Ok(Some(stats["totals"].clone()))
            }
            Receiver::Nftables => {
                self.nft(&["delete", "table", "inet", NFT_TABLE])?;
                Ok(None)
            }
        }
    }

    fn trafgen(&self, config: &Path) -> Command {
        let (ns, dev) = self.sender();
        ping::trafgen(ns, dev, config, PACKETS)
    }

    /// Sends one flood and times it on the receiver.
    fn measure(
        &self,
        counters: &mut Counters,
        config: &Path,
        receiver: Receiver,
    ) -> Result<Measurement> {
        let before = counters.read()?;
        let mut trafgen = self.trafgen(config);
        trafgen
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = trafgen
            .spawn()
            .with_context(|| format!("starting `{}`", process::display(&trafgen)))?;
        let polled = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    pin_to_last_cpu();
                    poll(counters, &before, receiver, &mut child)
                })
                .join()
                .unwrap_or_else(|_| bail!("the poller panicked"))
        });
        if polled.is_err() {
            let _ = child.kill();
        }
        let output = child.wait_with_output()?;
        let (seconds, complete) = polled?;
        if !output.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                process::display(&trafgen),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // Replies to the last requests leave within microseconds; give them a moment.
        std::thread::sleep(Duration::from_millis(100));
        let delta = counters.read()?.since(&before);
        Ok(Measurement {
            seconds,
            handled: delta.handled(receiver),
            lost: delta.lost(),
            answered: delta.out_echo_replies,
            complete,
        })
    }
}

/// Polls until every packet is handled: returns the seconds from the first packet handled
/// to the last, and whether all were.
fn poll(
    counters: &mut Counters,
    before: &Snapshot,
    receiver: Receiver,
    child: &mut Child,
) -> Result<(f64, bool)> {
    let started = Instant::now();
    let mut first = None;
    let mut last_change = started;
    let mut last_handled = 0;
    let mut exited = false;
    loop {
        interrupt::check()?;
        let handled = counters.read()?.since(before).handled(receiver);
        let now = Instant::now();
        // A stray frame (an ARP probe) before trafgen starts must not start the clock.
        if handled >= START_AFTER && first.is_none() {
            first = Some(now);
        }
        if handled != last_handled {
            last_handled = handled;
            last_change = now;
        }
        if handled >= PACKETS {
            let first = first.unwrap_or(started);
            return Ok(((now - first).as_secs_f64(), true));
        }
        if !exited {
            exited = child.try_wait()?.is_some();
        }
        if exited && now - last_change > Duration::from_secs(2) {
            // trafgen is done and nothing moves: report what was handled, as incomplete.
            let first = first.unwrap_or(started);
            return Ok(((last_change - first).as_secs_f64(), false));
        }
        if now - started > Duration::from_secs(90) {
            bail!("a flood of {PACKETS} packets took more than 90 s; giving up");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Keeps the poller off CPU 0, where trafgen (and with it the receiver's softirq) runs.
fn pin_to_last_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get
    // valid pointers to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1, &mut set);
        let _ = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
    }
}

/// The trafgen configuration: one echo request like `ping`'s (56-byte payload), from one
/// source or from a random source in 10.0.0.0/8 per packet. trafgen recomputes the IPv4
/// header checksum of each packet it changes; the ICMP checksum does not cover the source.
fn trafgen_config(sources: Sources, receiver_mac: &str, sender_mac: &str) -> String {
    let (comment, ipv4) = match sources {
        Sources::One => (
            format!("from one source, {SENDER_V4}"),
            format!("ipv4(sa={SENDER_V4}, da={RECEIVER_V4}, ttl=64)"),
        ),
        Sources::Spoofed => (
            format!("from a random source in {SPOOFED_RANGE} per packet"),
            format!(
                "ipv4(sa=10.0.0.0, da={RECEIVER_V4}, ttl=64, sa[1]=drnd(), sa[2]=drnd(), sa[3]=drnd())"
            ),
        ),
    };
    format!(
        "# cargo xtask bench: ICMP echo requests to {RECEIVER_V4} {comment}.\n\
         {{\n  eth(da={receiver_mac}, sa={sender_mac}),\n  {ipv4},\n  \
         icmpv4(echorequest, id=0x4947, seq=1),\n  fill(0xab, 56)\n}}\n"
    )
}

/// nftables doing icmp-guard's job with its default numbers, as early as nftables can
/// without an XDP program: prerouting at raw priority, before conntrack and routing.
fn nft_ruleset() -> String {
    format!(
        r#"# cargo xtask bench: nftables doing what icmp-guard's default profile does.
table inet {NFT_TABLE} {{
    # One echo-request bucket per source, as many as icmp-guard tracks (65,536).
    set echo4 {{ type ipv4_addr; size 65536; flags dynamic, timeout; timeout 1m; }}
    set echo6 {{ type ipv6_addr; size 65536; flags dynamic, timeout; timeout 1m; }}

    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        meta l4proto icmp jump icmp4
        meta l4proto ipv6-icmp jump icmp6
    }}

    chain icmp4 {{
        # smurf: echo and timestamp requests sent to a link-layer broadcast or multicast
        icmp type {{ echo-request, timestamp-request }} pkttype {{ broadcast, multicast }} drop
        # the new-source budget: sources without a bucket share 10 x the rate and burst
        icmp type echo-request ip saddr != @echo4 limit rate over 1000/second burst 2000 packets drop
        # 100/s per source, burst 200
        icmp type echo-request update @echo4 {{ ip saddr limit rate over 100/second burst 200 packets }} drop
        icmp type {{ echo-request, echo-reply, destination-unreachable, time-exceeded, parameter-problem }} accept
        # everything else the default profile drops: redirect, source quench, timestamps,
        # router advertisement and solicitation, deprecated and unassigned types
        drop
    }}

    chain icmp6 {{
        icmpv6 type echo-request ip6 saddr != @echo6 limit rate over 1000/second burst 2000 packets drop
        icmpv6 type echo-request update @echo6 {{ ip6 saddr limit rate over 100/second burst 200 packets }} drop
        icmpv6 type {{ echo-request, echo-reply }} accept
        icmpv6 type {{ nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, ind-neighbor-solicit, ind-neighbor-advert }} ip6 hoplimit 255 accept
        icmpv6 type {{ mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report }} ip6 hoplimit 1 accept
        icmpv6 type {{ 100, 101, 127 }} drop
        icmpv6 type 0-127 accept
        drop
    }}
}}
"#
    )
}

/// Everything the flood benchmark found.
pub struct Report {
    pub table: String,
    pub json: Value,
}

/// Runs every flood; `out_dir` receives the trafgen and nftables files.
pub fn run(binary: &Path, baseline_receiver: &Path, out_dir: &Path) -> Result<Report> {
    let started = Instant::now();
    let mut lab = Lab::new(binary, baseline_receiver)?;
    let measured = measure_all(&mut lab, out_dir, started);
    // Whatever happened, the lab goes; both failures are reported.
    match (measured, lab.clean_up()) {
        (Ok(report), Ok(())) => Ok(report),
        (Ok(_), Err(cleanup)) => Err(cleanup),
        (Err(err), Ok(())) => Err(err),
        (Err(err), Err(cleanup)) => Err(err.context(format!("and then {cleanup:#}"))),
    }
}

fn measure_all(lab: &mut Lab, out_dir: &Path, started: Instant) -> Result<Report> {
    let (receiver_ns, receiver_if) = lab.receiver();
    let receiver_mac = lab.mac(receiver_ns, receiver_if)?;
    let (sender_ns, sender_if) = lab.sender();
    let sender_mac = lab.mac(sender_ns, sender_if)?;
    let mut configs = Vec::new();
    for sources in Sources::ALL {
        let path = out_dir.join(format!("trafgen-{}.cfg", sources.id().replace('_', "-")));
        fs::write(&path, trafgen_config(sources, &receiver_mac, &sender_mac))
            .with_context(|| format!("writing {}", path.display()))?;
        configs.push((sources, path));
    }
    let nft_file = out_dir.join("nftables-equivalent.nft");
    fs::write(&nft_file, nft_ruleset())
        .with_context(|| format!("writing {}", nft_file.display()))?;
    let mut counters = Counters::open(lab)?;

    println!(
        "each flood: $ {}   (config: {})",
        process::display(&lab.trafgen(&configs[0].1)),
        out_dir.display()
    );
    println!(
        "receivers: no filter; `icmp-guard attach {} --mode native` (default profile); \
         the drop-all XDP program (native); the minimal limiter with and without a new-source \
         budget (`{} {} [--budget]`, native, the default profile's numbers); `nft -f {}`",
        lab.pair.guard.ifname,
        lab.baseline_receiver.display(),
        lab.pair.guard.ifname,
        nft_file.display()
    );

    let mut results: Vec<(Sources, Receiver, Vec<Measurement>, Vec<Value>)> = Vec::new();
    for sources in Sources::ALL {
        for receiver in Receiver::ALL {
            results.push((sources, receiver, Vec::new(), Vec::new()));
        }
    }
    for run in 1..=RUNS {
        for (sources, config) in &configs {
            for receiver in Receiver::ALL {
                interrupt::check()?;
                lab.install(receiver, &nft_file)?;
                std::thread::sleep(Duration::from_millis(200));
                let measured = lab.measure(&mut counters, config, receiver);
                let totals = lab.remove(receiver)?;
                let measured = measured?;
                println!(
                    "  run {run}/{RUNS} {:<10} {:<21} {:>9} handled in {:.3} s ({:.0} kpps), {} answered, {} lost{}",
                    sources.label(),
                    receiver.label(),
                    measured.handled,
                    measured.seconds,
                    measured.handled as f64 / measured.seconds / 1e3,
                    measured.answered,
                    measured.lost,
                    if measured.complete {
                        ""
                    } else {
                        " (INCOMPLETE)"
                    }
                );
                let entry = results
                    .iter_mut()
                    .find(|(s, r, _, _)| s == sources && *r == receiver)
                    .expect("every pair has an entry");
                entry.2.push(measured);
                if let Some(totals) = totals {
                    entry.3.push(totals);
                }
            }
        }
    }
    let diagnosis = program_costs(lab, &mut counters, &configs, &nft_file)?;
    drop(counters);
    let (mut table, json) = summarise(&results);
    for (sources, floor, guard, minimal) in &diagnosis {
        let _ = writeln!(
            table,
            "{:<11} the XDP program alone, per packet in this flood (kernel BPF run-time stats, one \
             extra flood each): drop-all {floor:.0} ns, icmp-guard {guard:.0} ns, minimal + budget {minimal:.0} ns",
            sources.label()
        );
    }
    println!(
        "flood benchmark took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Report {
        table,
        json: json!({
            "packets_per_flood": PACKETS,
            "runs": RUNS,
            "spoofed_range": SPOOFED_RANGE,
            "results": json,
            "xdp_program_ns_per_packet_in_flood": diagnosis.iter().map(|(sources, floor, guard, minimal)| json!({
                "sources": sources.id(),
                "drop_all_floor": floor,
                "icmp_guard": guard,
                "minimal_limiter_with_budget": minimal,
            })).collect::<Vec<_>>(),
            "trafgen_configs": configs.iter().map(|(_, path)| path.display().to_string()).collect::<Vec<_>>(),
            "nftables_ruleset": nft_file.display().to_string(),
            "seconds_taken": started.elapsed().as_secs_f64(),
        }),
    })
}

/// One more flood for the floor, icmp-guard and the minimal limiter with a budget, with the kernel's BPF run-time
/// statistics on: how long the XDP program itself ran per packet in the real receive path
/// (not timed for the table, since the statistics cost two clock reads per packet).
fn program_costs(
    lab: &mut Lab,
    counters: &mut Counters,
    configs: &[(Sources, PathBuf)],
    nft_file: &Path,
) -> Result<Vec<(Sources, f64, f64, f64)>> {
    println!("XDP program time per packet during a flood (kernel BPF run-time statistics on):");
    let mut costs = Vec::new();
    for (sources, config) in configs {
        let mut per_packet = Vec::new();
        for receiver in [Receiver::Floor, Receiver::Guard, Receiver::MinimalBudget] {
            interrupt::check()?;
            lab.install(receiver, nft_file)?;
            std::thread::sleep(Duration::from_millis(200));
            let cost = (|| {
                let program = lab.xdp_program_id()?;
                let stats = drop_all::enable_run_time_stats()?;
                let before = program_run_time(program)?;
                lab.measure(counters, config, receiver)?;
                let after = program_run_time(program)?;
                drop(stats);
                let runs = after.1.saturating_sub(before.1).max(1);
                Ok::<f64, anyhow::Error>(after.0.saturating_sub(before.0) as f64 / runs as f64)
            })();
            lab.remove(receiver)?;
            let cost = cost?;
            println!(
                "  {:<10} {:<21} {cost:.0} ns per packet",
                sources.label(),
                receiver.label()
            );
            per_packet.push(cost);
        }
        costs.push((*sources, per_packet[0], per_packet[1], per_packet[2]));
    }
    Ok(costs)
}

/// (run_time_ns, run_cnt) of a BPF program.
fn program_run_time(id: u64) -> Result<(u64, u64)> {
    let json = process::stdout_of(process::command("bpftool").args([
        "prog",
        "show",
        "id",
        &id.to_string(),
        "--json",
    ]))?;
    let info: Value = serde_json::from_str(&json).context("parsing `bpftool prog show`")?;
    Ok((
        info["run_time_ns"].as_u64().unwrap_or(0),
        info["run_cnt"].as_u64().unwrap_or(0),
    ))
}

fn summarise(results: &[(Sources, Receiver, Vec<Measurement>, Vec<Value>)]) -> (String, Value) {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<11} {:<21} {:>8} {:>13} {:>6} {:>7} {:>11} {:>9} {:>5}",
        "sources", "receiver", "time s", "spread", "Mpps", "x floor", "spread", "answered", "lost"
    );
    let mut json_rows = Vec::new();
    let mut verdicts = Vec::new();
    for sources in Sources::ALL {
        let seconds_of = |receiver: Receiver| -> Vec<f64> {
            results
                .iter()
                .find(|(s, r, _, _)| *s == sources && *r == receiver)
                .map(|(_, _, measured, _)| measured.iter().map(|m| m.seconds).collect())
                .unwrap_or_default()
        };
        let floor = seconds_of(Receiver::Floor);
        let mut medians = Vec::new();
        for (index, receiver) in Receiver::ALL.into_iter().enumerate() {
            let (_, _, measured, totals) = results
                .iter()
                .find(|(s, r, _, _)| *s == sources && *r == receiver)
                .expect("every pair has an entry");
            let seconds: Vec<f64> = measured.iter().map(|m| m.seconds).collect();
            let ratios: Vec<f64> = seconds.iter().zip(&floor).map(|(s, f)| s / f).collect();
            let time = numbers::median(&seconds);
            let (lo, hi) = numbers::min_max(&seconds);
            let ratio = numbers::median(&ratios);
            let (rlo, rhi) = numbers::min_max(&ratios);
            let answered = numbers::median_u64(measured.iter().map(|m| m.answered));
            let lost = measured.iter().map(|m| m.lost).max().unwrap_or(0);
            let incomplete = measured.iter().filter(|m| !m.complete).count();
            medians.push((receiver, ratio, time));
            let _ = writeln!(
                table,
                "{:<11} {:<21} {:>8.3} {:>13} {:>6.2} {:>7.2} {:>11} {:>9} {:>5}{}",
                if index == 0 { sources.label() } else { "" },
                receiver.label(),
                time,
                format!("{lo:.3}-{hi:.3}"),
                PACKETS as f64 / time / 1e6,
                ratio,
                format!("{rlo:.2}-{rhi:.2}"),
                answered,
                lost,
                if incomplete > 0 {
                    format!("  ({incomplete} incomplete)")
                } else {
                    String::new()
                }
            );
            json_rows.push(json!({
                "sources": sources.id(),
                "receiver": receiver.id(),
                "runs": measured.iter().map(Measurement::json).collect::<Vec<_>>(),
                "median_seconds": time,
                "min_seconds": lo,
                "max_seconds": hi,
                "median_mpps": PACKETS as f64 / time / 1e6,
                "ratio_to_floor": ratios,
                "median_ratio_to_floor": ratio,
                "min_ratio_to_floor": rlo,
                "max_ratio_to_floor": rhi,
                "median_answered": answered,
                "icmp_guard_totals": totals,
            }));
        }
        let find = |receiver: Receiver| {
            medians
                .iter()
                .find(|(r, _, _)| *r == receiver)
                .map(|&(_, ratio, time)| (ratio, time))
                .unwrap_or((f64::NAN, f64::NAN))
        };
        let (guard_ratio, guard_time) = find(Receiver::Guard);
        let (minimal_ratio, minimal_time) = find(Receiver::MinimalBudget);
        let (_, nft_time) = find(Receiver::Nftables);
        let target = target_over_floor(sources);
        verdicts.push(json!({
            "sources": sources.id(),
            "guard_over_floor": guard_ratio,
            "target_over_floor": target,
            "over_floor_met": guard_ratio <= target,
            "minimal_with_budget_over_floor": minimal_ratio,
            "guard_over_minimal_with_budget": guard_time / minimal_time,
            "guard_over_nftables": guard_time / nft_time,
            "below_nftables_met": guard_time < nft_time,
        }));
        let _ = writeln!(
            table,
            "{:<11} targets: icmp-guard {guard_ratio:.2}x floor (<= {target}: {}; the minimal limiter with a budget: {minimal_ratio:.2}x), {:.2}x nftables (< 1: {})",
            "",
            if guard_ratio <= target {
                "met"
            } else {
                "MISSED"
            },
            guard_time / nft_time,
            if guard_time < nft_time {
                "met"
            } else {
                "MISSED"
            },
        );
    }
    let _ = writeln!(
        table,
        "({} echo requests per flood over veth, sent by one trafgen process; time from the first (100th) to the \
         last packet handled by the receiver; median of {RUNS} runs, spread = lowest-highest; x floor per run)",
        numbers::thousands(PACKETS)
    );
    (table, json!({ "rows": json_rows, "targets": verdicts }))
}
