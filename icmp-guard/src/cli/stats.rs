use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant, SystemTime},
};

use icmp_guard::{
    guard::Guard,
    observe::stats::{self, StatsReport},
};

use super::{
    Context,
    render::{
        self, clock,
        stats::{WatchLine, WatchStyle},
    },
};

/// Show ICMP counters per family and type, with drops by reason.
///
/// -h is --human here, as in `ip -h`; --help is the help.
///
/// Example: icmp-guard stats -h --watch 2
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Numbers as `ip -s -h` prints them: 1.23M, 340k/s.
    #[arg(short, long)]
    human: bool,

    /// Print help (-h is --human here, as in `ip -h`).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,

    /// Print JSON instead of a table (with --watch: one JSON document per line).
    #[arg(long)]
    json: bool,

    /// Redraw every SECONDS with packets/s and drops/s (fractions like 0.5 allowed).
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    watch: Option<Duration>,

    /// With --watch: stop after N frames.
    #[arg(long, value_name = "N", requires = "watch",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// One row per (family, type, code) instead of per type; codes 15 and above share the
    /// last row ("15+").
    #[arg(long, conflicts_with = "watch")]
    by_code: bool,
}

/// The shortest and longest `--watch` intervals.
const MIN_INTERVAL: f64 = 0.1;
const MAX_INTERVAL: f64 = 86_400.0;

pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if (MIN_INTERVAL..=MAX_INTERVAL).contains(&seconds) => {
            Ok(Duration::from_secs_f64(seconds))
        }
        _ => Err(format!(
            "'{text}' is not a number of seconds between {MIN_INTERVAL} and {MAX_INTERVAL}"
        )),
    }
}

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    let guard = context.open()?;
    if args.by_code {
        let rows = guard.code_stats()?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!("{}", render::stats::code_table(&rows, args.human));
        }
        return Ok(());
    }
    match args.watch {
        None => {
            let report = guard.stats()?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render::stats::table(&report, args.human));
            }
            Ok(())
        }
        Some(interval) => watch(&guard, interval, args.count, args.json, args.human),
    }
}

/// True when colour is allowed: <https://no-color.org> (set and not empty disables it).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty())
}

/// Rows and columns of the terminal on stdout, when it is one and says.
fn terminal_size() -> Option<(usize, usize)> {
    // SAFETY: TIOCGWINSZ fills a winsize we own; a failure leaves it zeroed.
    let (status, size) = unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        let status = libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size);
        (status, size)
    };
    (status == 0 && size.ws_row > 0 && size.ws_col > 0)
        .then_some((usize::from(size.ws_row), usize::from(size.ws_col)))
}

fn watch(
    guard: &Guard,
    interval: Duration,
    count: Option<u64>,
    json: bool,
    human: bool,
) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut previous: Option<(StatsReport, Instant)> = None;
    let mut frame: u64 = 0;
    loop {
        let report = guard.stats()?;
        let now = Instant::now();
        let rates = previous
            .as_ref()
            .map(|(old, at)| stats::rates(old, &report, now.duration_since(*at)));
        let mut out = std::io::stdout().lock();
        if json {
            let line = WatchLine {
                unix_time: unix_time(),
                report: &report,
                rates: rates.as_ref(),
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        } else {
            let size = if terminal { terminal_size() } else { None };
            let style = WatchStyle {
                in_place: terminal,
                color: terminal && !no_color(),
                max_lines: size.map(|(rows, _)| rows),
                max_columns: size.map(|(_, columns)| columns),
                human,
            };
            let heading = format!("every {}s, {}", interval.as_secs_f64(), clock());
            let text = render::stats::watch_frame(&report, rates.as_ref(), &heading, style);
            // One write per frame: the terminal never shows half of one.
            if frame > 0 && !terminal {
                writeln!(out)?;
            }
            out.write_all(text.as_bytes())?;
        }
        out.flush()?;
        drop(out);
        frame += 1;
        if count.is_some_and(|count| frame >= count) {
            return Ok(());
        }
        previous = Some((report, now));
        // Sleep to the next tick of a fixed grid, so frames do not drift.
        let next = start + interval.mul_f64(frame as f64);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn unix_time() -> f64 {
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_bounded_seconds() {
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "abc", "NaN", "inf", "0.01", ""] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
