use std::net::SocketAddr;

use icmp_guard::exporter::{self, Format};
use tokio::signal::unix::{SignalKind, signal};

use super::Context;

/// Serve Prometheus metrics on GET /metrics until SIGINT or SIGTERM, or print them once.
///
/// The server answers in OpenMetrics when the scraper asks for it (Prometheus does) and in
/// the Prometheus text format otherwise.
///
/// Example: icmp-guard metrics --listen 127.0.0.1:9469
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["listen", "once"])))]
pub struct Args {
    /// Address to serve on, as IP:PORT ([::1]:9469 for IPv6; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Print the metrics to stdout once and exit (for cron jobs, textfile collectors, tests).
    #[arg(long)]
    once: bool,

    /// With --once: prometheus (text format 0.0.4) or open-metrics (OpenMetrics 1.0).
    #[arg(long, value_enum, default_value_t = Format::Prometheus, requires = "once")]
    format: Format,
}

impl Args {
    /// True when it serves (`--listen`) rather than printing once.
    pub fn serves(&self) -> bool {
        self.listen.is_some()
    }
}

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    let guard = context.open()?;
    if args.once {
        // Nothing attached is a fact to report (`icmp_guard_up 0`), not an error.
        print!(
            "{}",
            exporter::encode(exporter::gather(&guard)?, None, args.format)
        );
        return Ok(());
    }
    let Some(address) = args.listen else {
        unreachable!("clap requires --listen or --once");
    };
    runtime()?.block_on(async {
        // Handlers first: a signal that arrives right after the "serving" line still stops
        // the server cleanly.
        let stop = stop_signal()?;
        let listener = exporter::bind(address).await?;
        let local = listener.local_addr()?;
        println!("serving metrics on http://{local}/metrics (Ctrl-C or SIGTERM stops)");
        if !local.ip().is_loopback() {
            eprintln!("warning: {}", exporter::server::exposure_warning(local));
        }
        exporter::serve(listener, guard, None, async {
            let signal = stop.await;
            println!("{signal}: stopped serving metrics");
        })
        .await;
        Ok(())
    })
}

/// The runtime of the long-running commands: one thread, plus the blocking pool for map
/// reads.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Resolves with the name of the first SIGINT or SIGTERM received. Call it before anything
/// a signal should not interrupt half-way: the handlers are installed when it returns.
pub fn stop_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}
