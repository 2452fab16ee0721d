//! `cargo xtask bench`: how much icmp-guard costs, measured two ways (BENCHMARKS.md).
//!
//! 1. Per-packet cost through BPF_PROG_TEST_RUN, as a ratio to baselines measured in the
//!    same run: an empty XDP program and the minimal per-source limiter with and without a
//!    new-source budget (icmp-guard/benches/per_packet.rs).
//! 2. Flood throughput through a veth pair between two namespaces, as a ratio to an XDP
//!    program that drops everything, beside the minimal limiters, nftables doing the same
//!    job and no filter at all (`bench/flood.rs`).
//!
//! A benchmark, not a test: it fails only when it cannot measure, never because a number
//! missed its target. It prints the machine, both tables, and writes everything to
//! `target/bench/bench.json`.

mod drop_all;
mod flood;

use std::{fs, path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::util::{cargo, interrupt, process, setup};

/// Runs of the per-packet benchmark.
const PER_PACKET_RUNS: &str = "5";

pub fn run() -> Result<()> {
    if !process::is_root() {
        bail!("run with sudo: the benchmark loads XDP programs and creates network namespaces");
    }
    setup::run()?;
    process::run(process::command("cargo").args([
        "build",
        "--release",
        "--package",
        "icmp-guard",
        "--bins",
        "--example",
        "baseline_receiver",
    ]))?;
    let target = cargo::target_dir()?;
    let binary = target.join("release").join("icmp-guard");
    if !binary.is_file() {
        bail!(
            "`cargo build` succeeded but {} is missing",
            binary.display()
        );
    }
    let baseline_receiver = target
        .join("release")
        .join("examples")
        .join("baseline_receiver");
    let out_dir = target.join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    interrupt::catch()?;
    let started = Instant::now();
    let machine = Machine::read();
    println!("\n{}", machine.describe());

    println!("\n== per-packet cost (BPF_PROG_TEST_RUN) ==");
    let cpu_before = CpuUse::now();
    let per_packet_json = out_dir.join("per-packet.json");
    let _ = fs::remove_file(&per_packet_json);
    let status = process::status(
        process::command("cargo")
            .args([
                "bench",
                "--package",
                "icmp-guard",
                "--bench",
                "per_packet",
                "--",
            ])
            .args(["--runs", PER_PACKET_RUNS, "--json"])
            .arg(&per_packet_json),
    )?;
    interrupt::check()?;
    if !status.success() {
        bail!("the per-packet benchmark failed ({status})");
    }
    let per_packet: Value = serde_json::from_str(
        &fs::read_to_string(&per_packet_json)
            .with_context(|| format!("reading {}", per_packet_json.display()))?,
    )
    .context("parsing the per-packet results")?;

    let per_packet_cpu = cpu_before.others_since();

    println!("\n== flood throughput (veth, trafgen) ==");
    let cpu_before = CpuUse::now();
    let flood = flood::run(&binary, &baseline_receiver, &out_dir)?;
    let flood_cpu = cpu_before.others_since();

    let load_after = Machine::load_average();
    println!("\n== results ==\n{}", machine.describe());
    println!("load average before {} / after {load_after}", machine.load);
    println!(
        "other work on the machine while measuring (CPU time not used by this benchmark): \
         {} during the per-packet runs, {} during the floods",
        per_packet_cpu.describe(),
        flood_cpu.describe()
    );
    println!(
        "\nper-packet cost through BPF_PROG_TEST_RUN, as a ratio to baselines measured in the same run:"
    );
    print!("{}", per_packet["table"].as_str().unwrap_or("(no table)\n"));
    println!("\nflood throughput through veth, as a ratio to a drop-all XDP program:");
    print!("{}", flood.table);

    let report = json!({
        "machine": machine.json(),
        "load_average_after": load_after,
        "other_cpu_during_per_packet": per_packet_cpu.json(),
        "other_cpu_during_floods": flood_cpu.json(),
        "per_packet": per_packet,
        "flood": flood.json,
        "seconds_taken": started.elapsed().as_secs_f64(),
    });
    let path = out_dir.join("bench.json");
    write_json(&path, &report)?;
    println!(
        "\nbenchmark took {:.0} s; results written to {}",
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("rendering JSON")? + "\n";
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// What the numbers were measured on.
struct Machine {
    cpu: String,
    cpus: usize,
    kernel: String,
    load: String,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let cpus = cpuinfo
            .lines()
            .filter(|line| line.starts_with("processor"))
            .count();
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Self {
            cpu,
            cpus,
            kernel,
            load: Self::load_average(),
        }
    }

    /// The 1-, 5- and 15-minute load averages: other work on the machine skews timings.
    fn load_average() -> String {
        fs::read_to_string("/proc/loadavg")
            .map(|text| {
                text.split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "machine: {} x {} CPUs, Linux {}, load average {}",
            self.cpu, self.cpus, self.kernel, self.load
        )
    }

    fn json(&self) -> Value {
        json!({
            "cpu": self.cpu,
            "cpus": self.cpus,
            "kernel": self.kernel,
            "load_average_before": self.load,
        })
    }
}

/// CPU time used by the whole machine and by this process with its finished children, to
/// tell how much other work ran beside the benchmark.
struct CpuUse {
    at: Instant,
    machine_busy: f64,
    steal: f64,
    ours: f64,
}

/// CPU time others used over a stretch of the benchmark.
struct OtherWork {
    wall: f64,
    others: f64,
    steal: f64,
}

impl CpuUse {
    fn now() -> Self {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|field| field.parse().ok())
            .collect();
        let field = |index: usize| fields.get(index).copied().unwrap_or(0.0) / ticks;
        // user nice system idle iowait irq softirq steal
        let machine_busy = field(0) + field(1) + field(2) + field(5) + field(6);
        Self {
            at: Instant::now(),
            machine_busy,
            steal: field(7),
            ours: own_cpu(libc::RUSAGE_SELF) + own_cpu(libc::RUSAGE_CHILDREN),
        }
    }

    fn others_since(&self) -> OtherWork {
        let now = Self::now();
        OtherWork {
            wall: (now.at - self.at).as_secs_f64(),
            others: ((now.machine_busy - self.machine_busy) - (now.ours - self.ours)).max(0.0),
            steal: now.steal - self.steal,
        }
    }
}

impl OtherWork {
    fn describe(&self) -> String {
        format!(
            "{:.1} CPU-s in {:.0} s ({:.0}% of one CPU; steal {:.1} s)",
            self.others,
            self.wall,
            100.0 * self.others / self.wall.max(1e-9),
            self.steal
        )
    }

    fn json(&self) -> Value {
        json!({
            "wall_seconds": self.wall,
            "other_cpu_seconds": self.others,
            "steal_seconds": self.steal,
        })
    }
}

/// User plus system time of this process or of its waited-for children, in seconds.
fn own_cpu(who: libc::c_int) -> f64 {
    // SAFETY: a zeroed rusage is valid to write to.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid pointer for the call.
    if unsafe { libc::getrusage(who, &raw mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
