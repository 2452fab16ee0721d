use std::{
    net::IpAddr,
    os::fd::{AsRawFd, RawFd},
};

use anyhow::bail;
use icmp_guard::{
    guard::{TraceSession, clock_time_in},
    observe::trace::TraceLine,
    policy::Cidr,
};
use icmp_guard_common::{
    FAMILY_V4, FAMILY_V6, icmp,
    trace::{ANY, TYPE_V4, TYPE_V6, TraceConfig},
};
use tokio::io::unix::AsyncFd;

use super::{Context, metrics};

/// The longest trace: the trace build stays in the link this long at most if `trace` is
/// killed, until the next command swaps the production program back.
const MAX_SECONDS: u64 = 3600;

/// Show why each matching packet got its verdict: one line per packet naming the check
/// that decided (allow/deny list, smurf rule, type/code rule and its condition, limiter
/// and its bucket) and the verdict.
///
/// For the trace, the interface's link runs the trace build of the program (the same
/// guard, with the same policy and counters, which also reports), swapped in and back
/// with BPF_LINK_UPDATE: the interface is never unguarded. The trace build stops reporting
/// by itself at the deadline, and if `trace` is killed the next icmp-guard command (or
/// `run`'s watchdog) swaps the production program back.
///
/// Example: icmp-guard trace eth0 --source 198.51.100.0/24 --type echo-request --count 10
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The attached interface to trace.
    interface: String,

    /// Only packets from this source address or prefix.
    #[arg(long, value_name = "CIDR")]
    source: Option<String>,

    /// Only packets of this ICMP type (a number, or a name such as echo-request, for both
    /// families where the name exists in both).
    #[arg(long = "type", value_name = "TYPE")]
    icmp_type: Option<String>,

    /// Stop after this many packets.
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    /// Stop after this many seconds (at most 3600).
    #[arg(long, value_name = "S", default_value_t = 60)]
    seconds: u64,

    /// Print one JSON document per packet.
    #[arg(long)]
    json: bool,
}

/// The filter of `args`, or why it is refused.
fn filter(args: &Args) -> anyhow::Result<TraceConfig> {
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    if args.seconds == 0 || args.seconds > MAX_SECONDS {
        bail!(
            "--seconds must be from 1 to {MAX_SECONDS}, not {}",
            args.seconds
        );
    }
    let mut config = TraceConfig {
        family: ANY,
        ..TraceConfig::default()
    };
    if let Some(text) = &args.source {
        let cidr: Cidr = text
            .parse()
            .map_err(|err: String| anyhow::anyhow!("--source: {err}"))?;
        match cidr.addr {
            IpAddr::V4(addr) => {
                config.family = FAMILY_V4;
                config.source[..4].copy_from_slice(&addr.octets());
            }
            IpAddr::V6(addr) => {
                config.family = FAMILY_V6;
                config.source = addr.octets();
            }
        }
        config.prefix_len = cidr.prefix;
    }
    if let Some(text) = &args.icmp_type {
        if let Ok(number) = text.parse::<u8>() {
            (config.type_v4, config.type_v6) = (number, number);
            config.types = TYPE_V4 | TYPE_V6;
        } else {
            if let Some(number) = icmp::type_by_name(FAMILY_V4, text) {
                config.type_v4 = number;
                config.types |= TYPE_V4;
            }
            if let Some(number) = icmp::type_by_name(FAMILY_V6, text) {
                config.type_v6 = number;
                config.types |= TYPE_V6;
            }
            if config.types == 0 {
                bail!(
                    "--type: unknown ICMP type '{text}': give a number from 0 to 255 or a name such as echo-request, timestamp-request or packet-too-big"
                );
            }
        }
    }
    Ok(config)
}

/// The session's log descriptor, for the runtime to wait on.
struct Readable(RawFd);

impl AsRawFd for Readable {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    // Bad input first: it changes nothing.
    let filter = filter(&args)?;
    let guard = context.open()?;
    metrics::runtime()?.block_on(async {
        // Handlers before the swap: Ctrl-C from here on swaps the production program back.
        let stop = metrics::stop_signal()?;
        tokio::pin!(stop);
        let mut session = guard.start_trace(&args.interface, filter, args.seconds)?;
        if !args.json {
            println!(
                "tracing {} until {} (Ctrl-C stops)",
                session.interface(),
                clock_time_in(session.remaining())
            );
        }
        let outcome = follow(&mut session, &args, &mut stop).await;
        session.finish()?;
        outcome
    })
}

/// Prints the session's lines until the count, the deadline or a signal.
async fn follow(
    session: &mut TraceSession,
    args: &Args,
    stop: &mut std::pin::Pin<&mut impl Future<Output = &'static str>>,
) -> anyhow::Result<()> {
    // SAFETY: the descriptor is the session's ring buffer, open until the session is
    // finished, which happens after this function (and its `AsyncFd`) returns.
    let readable = unsafe {
        AsyncFd::register_with_interest(
            Readable(session.fd().as_raw_fd()),
            tokio::io::Interest::READABLE,
        )
    }
    .map_err(|err| anyhow::anyhow!("waiting for the trace program's reports: {err}"))?;
    let mut seen = 0u64;
    loop {
        let remaining = session.remaining();
        if remaining.is_zero() {
            if !args.json {
                println!("trace ended: {} seconds passed", args.seconds);
            }
            return Ok(());
        }
        tokio::select! {
            ready = readable.readable() => {
                let mut ready = ready?;
                ready.clear_ready();
            }
            () = tokio::time::sleep(remaining) => {}
            signal = stop.as_mut() => {
                if !args.json {
                    println!("{signal}: trace stopped");
                }
                return Ok(());
            }
        }
        for line in session.read() {
            print_line(&line, args.json);
            seen += 1;
            if args.count.is_some_and(|count| seen >= count) {
                return Ok(());
            }
        }
    }
}

fn print_line(line: &TraceLine, json: bool) {
    if json {
        if let Ok(text) = serde_json::to_string(line) {
            say!("{text}");
        }
    } else {
        say!("{} {line}", super::render::clock());
    }
}
