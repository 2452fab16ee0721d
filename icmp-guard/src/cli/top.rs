use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use icmp_guard::observe::{
    events::monotonic_ns,
    top::{self, CpuTotals},
};
use icmp_guard_common::events::IcmpEvent;

use super::{
    Context,
    render::{self, clock},
};

/// Show the heaviest ICMP sources right now, estimated from the kernel's sampled events.
///
/// Per-source rates are estimates: the kernel samples at most `config events-per-sec`
/// packets per second on each CPU, and each CPU's exact packet count is shared out among
/// its sampled sources. While `top` runs, the drop log of `icmp-guard run` pauses (the
/// events have one reader at a time).
///
/// -h is --human here, as in `ip -h`; --help is the help.
///
/// Example: icmp-guard top --interval 2 --count 1 --json
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Numbers as `ip -s -h` prints them: 1.23M, 340k/s.
    #[arg(short, long)]
    human: bool,

    /// Print help (-h is --human here, as in `ip -h`).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,

    /// Print JSON, one document per line and interval.
    #[arg(long)]
    json: bool,

    /// Seconds each frame covers (fractions like 0.5 allowed).
    #[arg(long, value_name = "SECONDS", default_value = "2",
          value_parser = super::stats::parse_interval)]
    interval: Duration,

    /// Stop after N frames (default: run until interrupted).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Show at most K sources.
    #[arg(long, value_name = "K", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    limit: u64,
}

/// How long `top` waits for another reader of the events to let go.
const LOCK_PATIENCE: Duration = Duration::from_secs(3);

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    let guard = context.open()?;
    let mut reader = guard.events(LOCK_PATIENCE)?;
    // Whatever waited in the buffer is from before this interval.
    reader.drain(|_| {});
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut frame = 0;
    let mut start_ns = monotonic_ns();
    let mut started = Instant::now();
    let mut baseline = reader.cpu_totals()?;
    // Events drained after a frame ended belong to the next one.
    let mut carried: Vec<IcmpEvent> = Vec::new();
    loop {
        let mut events = std::mem::take(&mut carried);
        let deadline = started + args.interval;
        loop {
            reader.drain(|event| events.push(event));
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            reader.wait(left.min(Duration::from_millis(100)))?;
        }
        let end_ns = monotonic_ns();
        let totals = reader.cpu_totals()?;
        let elapsed = started.elapsed();
        reader.drain(|event| events.push(event));
        carried = events
            .extract_if(.., |event| event.timestamp_ns > end_ns)
            .collect();
        events.retain(|event| event.timestamp_ns >= start_ns);
        let per_sec = reader.events_per_sec()?;
        let delta: CpuTotals = totals.since(&baseline);
        let mut report = top::estimate(&events, &delta, elapsed, per_sec, limit);
        let blocked = guard.blocked()?;
        for source in &mut report.sources {
            source.blocked = blocked.iter().any(|entry| entry.source == source.address);
        }
        report.mark_sweeping(&guard.flagged()?);
        let mut out = std::io::stdout().lock();
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&report)?)?;
        } else {
            if frame > 0 {
                writeln!(out)?;
            }
            write!(out, "{} {}", clock(), render::top::top(&report, args.human))?;
        }
        out.flush()?;
        frame += 1;
        if args.count.is_some_and(|count| frame >= count) {
            return Ok(());
        }
        baseline = totals;
        start_ns = end_ns;
        started = Instant::now();
    }
}
