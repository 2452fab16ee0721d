//! What `cargo xtask demo --plot` records while the demo runs.
//!
//! A thread of its own reads, every [`PERIOD`]:
//!
//! - the guard's counters, from `icmp-guard stats --json` on the protected host: ICMP
//!   passed, and dropped by reason (summed over every type, plus the drops before a type
//!   could be read);
//! - the offered load: the RX packet counter of the protected host's `eth0` in its
//!   `/proc/net/dev`. The veth driver counts a frame there before the XDP program sees it,
//!   so it holds what the guard dropped too: everything the LAN delivered to the host;
//! - the bystander's pings: its own stack's `Icmp OutEchos` (echo requests sent) and
//!   `InEchoReps` (replies received) in its `/proc/net/snmp`.
//!
//! The two `/proc` files are opened once inside their namespaces and re-read, so a sample
//! costs one `icmp-guard stats` run: about 90 ms and 85 ms of CPU with the debug build (it
//! reads the per-CPU counters key by key), a third of a core at four samples a second.
//! The thread runs at nice 10 (which the `stats` processes inherit), so on a busy machine
//! the floods come first; nice 19 starved it through whole floods on a shared 2-core
//! machine. A `stats` run that is preempted between reading the guard's maps and exiting
//! would set its counters against a later eth0 count, so a sample whose run took more
//! than twice the fastest one is left out: the rate over the longer interval around it
//! is still exact.
//!
//! Each step of the demo takes one more sample when it starts, on the demo's thread, so
//! what a step did is counted exactly from one step's sample to the next.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    process::Command,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use icmp_guard_lab::netns;
use serde_json::Value;

/// How often the counters are read.
pub const PERIOD: Duration = Duration::from_millis(250);

/// One reading of every counter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the recording started.
    pub at: f64,
    /// Packets received by the protected host's `eth0`, before XDP.
    pub offered: u64,
    /// ICMP packets the guard passed.
    pub passed: u64,
    /// ICMP packets the guard dropped, by reason (`rate_limit`, `smurf`, ...).
    pub dropped: BTreeMap<String, u64>,
    /// Echo requests the bystander sent.
    pub pings_sent: u64,
    /// Echo replies the bystander received.
    pub pings_answered: u64,
}

/// The start of a step of the demo.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    pub at: f64,
    pub label: String,
}

/// Everything recorded: the samples in time order and the steps.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub samples: Vec<Sample>,
    pub marks: Vec<Mark>,
    /// Samples left out because their `stats` run was slow.
    pub left_out: usize,
}

/// Where the counters are: the protected host (its namespace and interface, and the
/// `icmp-guard stats --json` command that runs there) and the bystander's namespace.
pub struct Sources {
    pub host_ns: String,
    pub host_if: String,
    pub bystander_ns: String,
    pub stats: StatsCommand,
}

/// Makes the `icmp-guard stats --json` command of the protected host.
pub type StatsCommand = Arc<dyn Fn() -> Command + Send + Sync>;

/// The `/proc` counters, opened, and the samples taken so far: shared by the sampling
/// thread and the demo's steps, so the samples stay in time order.
struct Meter {
    host_if: String,
    dev: File,
    snmp: File,
    started: Instant,
    samples: Vec<Sample>,
    left_out: usize,
}

fn lock(meter: &Mutex<Meter>) -> MutexGuard<'_, Meter> {
    meter.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sampling thread, and the steps marked so far.
pub struct Recorder {
    stats: StatsCommand,
    meter: Arc<Mutex<Meter>>,
    marks: Vec<Mark>,
    /// The first failure of a sample taken for a mark.
    failure: Option<anyhow::Error>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Recorder {
    /// Opens the counters and starts sampling; the first sample is taken at once.
    pub fn start(sources: Sources) -> Result<Self> {
        let meter = Arc::new(Mutex::new(Meter {
            dev: netns::open_proc_net(&sources.host_ns, "dev")?,
            snmp: netns::open_proc_net(&sources.bystander_ns, "snmp")?,
            host_if: sources.host_if,
            started: Instant::now(),
            samples: Vec::new(),
            left_out: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (Arc::clone(&meter), Arc::clone(&stop));
        let stats = Arc::clone(&sources.stats);
        let thread = std::thread::spawn(move || {
            // SAFETY: no pointers; on Linux, `who` 0 is the calling thread alone. A failure
            // only leaves the priority as it was.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            }
            let mut next = Instant::now();
            let mut fastest = Duration::MAX;
            loop {
                // The last sample is taken after the stop was asked for, so the recording
                // reaches the moment it ended.
                let last = stopped.load(Ordering::SeqCst);
                let longest = if last {
                    Duration::MAX
                } else {
                    fastest.saturating_mul(2)
                };
                let (took, _) = take_sample(&*stats, &shared, longest)?;
                fastest = fastest.min(took);
                if last {
                    return Ok(());
                }
                next += PERIOD;
                let now = Instant::now();
                // Behind (a slow `stats`): go on at once instead of catching up in a burst.
                next = next.max(now);
                std::thread::sleep(next - now);
            }
        });
        Ok(Self {
            stats: sources.stats,
            meter,
            marks: Vec::new(),
            failure: None,
            stop,
            thread: Some(thread),
        })
    }

    /// Marks the start of a step with a sample of its own, taken now on this thread: a
    /// phase's counts never depend on when the sampling thread last ran. A failure is
    /// reported by [`Recorder::finish`].
    pub fn mark(&mut self, label: &str) {
        match take_sample(&*self.stats, &self.meter, Duration::MAX) {
            Ok((_, at)) => self.marks.push(Mark {
                at,
                label: label.to_owned(),
            }),
            Err(err) => {
                self.failure.get_or_insert(err);
            }
        }
    }

    /// Stops sampling and returns what was recorded, or the sampling's first failure.
    pub fn finish(mut self) -> Result<Recording> {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().context("the recorder already stopped")?;
        let sampled = thread
            .join()
            .map_err(|_| anyhow!("the sampling thread panicked"))?;
        if let Some(err) = self.failure.take() {
            return Err(err.context("sampling the counters at the start of a step"));
        }
        sampled.context("sampling the counters for the plot")?;
        let mut meter = lock(&self.meter);
        Ok(Recording {
            samples: std::mem::take(&mut meter.samples),
            marks: std::mem::take(&mut self.marks),
            left_out: meter.left_out,
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Only reached without `finish`, after a failure: stop the thread before the lab goes.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `stats`, then reads the `/proc` counters right after it and stores the sample,
/// unless it took longer than `longest`; returns how long it took and the sample's time.
/// `stats` reads the
/// guard's maps late in its run (measured: at about 80% of it), so the counters of a
/// sample agree to within a few milliseconds, and the sample is dated when the last of
/// them was read.
fn take_sample(
    stats: &(dyn Fn() -> Command + Send + Sync),
    meter: &Mutex<Meter>,
    longest: Duration,
) -> Result<(Duration, f64)> {
    let started = Instant::now();
    let output = stats()
        .output()
        .context("running `icmp-guard stats --json`")?;
    let mut meter = lock(meter);
    let took = started.elapsed();
    let dev = reread(&mut meter.dev)?;
    let snmp = reread(&mut meter.snmp)?;
    let at = meter.started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "`icmp-guard stats --json` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stats: Value =
        serde_json::from_slice(&output.stdout).context("parsing `icmp-guard stats --json`")?;
    let (passed, dropped) = guard_counters(&stats);
    let icmp = |field| {
        netns::snmp_counter(&snmp, "Icmp", field)
            .with_context(|| format!("no Icmp {field} in /proc/net/snmp"))
    };
    let sample = Sample {
        at,
        offered: rx_packets(&dev, &meter.host_if)
            .with_context(|| format!("no {} in /proc/net/dev", meter.host_if))?,
        passed,
        dropped,
        pings_sent: icmp("OutEchos")?,
        pings_answered: icmp("InEchoReps")?,
    };
    if took <= longest {
        meter.samples.push(sample);
    } else {
        meter.left_out += 1;
    }
    Ok((took, at))
}

/// A `/proc` file read again from its start.
fn reread(file: &mut File) -> Result<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
        .context("re-reading a /proc/net file")?;
    Ok(text)
}

/// The RX packets of `ifname` in `/proc/net/dev` text.
pub fn rx_packets(dev: &str, ifname: &str) -> Option<u64> {
    dev.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        // bytes, packets, errs, drop, ... for RX, then the same for TX.
        counters.split_whitespace().nth(1)?.parse().ok()
    })
}

/// ICMP passed, and dropped by reason, from `icmp-guard stats --json`: every type's row
/// plus the packets dropped before a type could be read.
pub fn guard_counters(stats: &Value) -> (u64, BTreeMap<String, u64>) {
    let passed = stats["totals"]["passed"].as_u64().unwrap_or(0);
    let mut dropped = BTreeMap::new();
    let rows = stats["icmp"].as_array().into_iter().flatten();
    let reasons = rows
        .map(|row| &row["dropped"])
        .chain([&stats["unclassified"]["dropped"]])
        .filter_map(Value::as_object)
        .flatten();
    for (reason, count) in reasons {
        *dropped.entry(reason.clone()).or_default() += count.as_u64().unwrap_or(0);
    }
    (passed, dropped)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{guard_counters, rx_packets};

    #[test]
    fn rx_packets_of_one_interface() {
        let dev = "Inter-|   Receive                            |  Transmit\n \
                   face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n    \
                   lo:     560       8    0    0    0     0          0         0      560       8\n  \
                   eth0: 17853416  424156    0    0    0     0          0         3     9000      90\n";
        assert_eq!(rx_packets(dev, "eth0"), Some(424_156));
        assert_eq!(rx_packets(dev, "lo"), Some(8));
        assert_eq!(rx_packets(dev, "eth1"), None);
    }

    #[test]
    fn drops_are_summed_by_reason_over_types_and_unclassified() {
        let stats = json!({
            "totals": {"passed": 5508},
            "icmp": [
                {"type": 8, "dropped": {"rate_limit": 357_144, "smurf": 3, "invalid": 61_517}},
                {"type": 13, "dropped": {"policy": 3, "rate_limit": 0}},
            ],
            "unclassified": {"dropped": {"invalid": 2, "malformed": 1}},
        });
        let (passed, dropped) = guard_counters(&stats);
        assert_eq!(passed, 5508);
        let expected = [
            ("invalid", 61_519),
            ("malformed", 1),
            ("policy", 3),
            ("rate_limit", 357_144),
            ("smurf", 3),
        ];
        assert_eq!(
            dropped
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect::<Vec<_>>(),
            expected
        );
    }
}
