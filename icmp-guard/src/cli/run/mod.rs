//! `run`: the service loop.

mod drop_log;
mod policy_file;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use drop_log::DropLogger;
use icmp_guard::{
    bpf::{Capacity, links::ModeRequest},
    exporter,
    guard::{self, AttachOptions, Guard},
    net,
    policy::Policy,
};
use policy_file::{Initial, Seen};
use tokio::signal::unix::{SignalKind, signal};

use super::{
    Context,
    metrics::{runtime, stop_signal},
    render::{self, clock},
};

/// Run in the foreground as a service: attach, apply and watch a policy file, serve
/// metrics, print a summary when packets were dropped and a sampled, rate-limited log of
/// individual drops; detach on SIGTERM or SIGINT.
///
/// The policy file is checked every 250 ms and on SIGHUP; a change is applied atomically
/// once two polls read the same bytes (so a half-written file never is), and a file that
/// does not parse or validate is reported on stderr while the last good policy stays in
/// force. An interface that is already attached (by `attach`, or by a `run --keep` before)
/// is adopted: this binary's program is swapped into its link without a gap. Every second
/// the service checks that its interfaces still run the guard and attaches again where
/// they do not (a detach behind its back, a re-created interface).
///
/// Example: icmp-guard run eth0 --policy /etc/icmp-guard/policy.toml --metrics 127.0.0.1:9469
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interfaces to protect.
    #[arg(required = true, value_name = "IFACE")]
    interfaces: Vec<String>,

    /// Policy file to apply and watch (default: keep the live policy, or the safe default
    /// profile on a first attach).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Serve Prometheus metrics on GET /metrics at this IP:PORT.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Leave the guard attached when stopping; the next `run` adopts it.
    #[arg(long)]
    keep: bool,

    /// XDP mode: native (driver), generic (skb), or auto (native, else generic).
    #[arg(long, value_enum, default_value_t = ModeRequest::Auto)]
    mode: ModeRequest,

    /// Count every verdict as would_drop and let every packet pass (overrides the file's
    /// mode).
    #[arg(long)]
    dry_run: bool,

    /// Seconds between drop summaries; a summary is printed only when something was
    /// dropped.
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    summary_interval: u64,

    /// Sampled events per second per CPU, which feed the drop log and `top` (0: off);
    /// default: keep the live setting, or 1000 on a first attach.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    events_per_sec: Option<u32>,

    /// Drop log: print at most N sampled drops per second, then one line with how many
    /// more were not shown (0: no drop log). Pauses while `icmp-guard top` runs.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    drop_log: u32,

    /// Rate-limit buckets for sources (about 96 bytes each); first attach only.
    #[arg(long, value_name = "N", default_value_t = Capacity::default().sources,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    max_sources: u32,

    /// Rate-limit buckets for source prefixes; first attach only.
    #[arg(long, value_name = "N", default_value_t = Capacity::default().prefixes,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    max_prefixes: u32,
}

/// How often the policy file is read. A change applies when two reads in a row agree, so
/// an edit is in force 250-500 ms after it is written, well within the second the service
/// promises.
const POLL: Duration = Duration::from_millis(250);
/// How often `run` checks that every interface it protects still runs the guard.
const WATCHDOG: Duration = Duration::from_secs(1);

/// How often the drop log drains the sampled events.
const DRAIN: Duration = Duration::from_millis(200);

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    // A policy file that cannot be used does not stop the service: a host left without
    // any protection (after a reboot, bpffs is empty) is worse than one with the live
    // policy or the safe default profile. The error is reported, and the file is watched
    // and applied as soon as it is fixed.
    let guard = context.open_mounting()?;
    let initial = args
        .policy
        .as_deref()
        .map(|path| Initial::read(path, args.dry_run));
    let targets = guard::resolve_interfaces(&args.interfaces)?;
    runtime()?.block_on(service(args, guard, targets, initial))
}

/// Attaches to the interfaces that are not attached yet and adopts the others, swapping
/// this binary's program into their pinned links (`BPF_LINK_UPDATE`): a restarted or
/// upgraded service picks up where a `run --keep` (or an `attach`) left off, runs its own
/// program, and never leaves an interface without one.
fn attach_or_adopt(
    args: &Args,
    guard: &Guard,
    targets: &[(String, u32)],
    policy: Option<&Policy>,
) -> anyhow::Result<()> {
    let options = AttachOptions {
        mode: args.mode,
        dry_run: args.dry_run,
        policy: policy.cloned(),
        capacity: Capacity {
            sources: args.max_sources,
            prefixes: args.max_prefixes,
        },
        upgrade: true,
        replace: false,
        events_per_sec: args.events_per_sec,
    };
    let fresh: Vec<&str> = targets
        .iter()
        .filter(|(_, ifindex)| !guard.has_link(*ifindex))
        .map(|(name, _)| name.as_str())
        .collect();
    if !fresh.is_empty() {
        println!("attaching to {}...", fresh.join(", "));
    }
    let names: Vec<String> = targets.iter().map(|(name, _)| name.clone()).collect();
    for interface in guard.attach(&names, &options)? {
        let mode = interface.mode.map_or("unknown", |mode| mode.as_str());
        match (interface.upgraded_from, interface.fallback) {
            (Some(old), _) => println!(
                "{}: already attached, adopting the running guard (program {old} replaced by {} in its link, no gap; {mode} mode)",
                interface.name, interface.program_id
            ),
            (None, Some(reason)) => println!(
                "attached to {} (ifindex {}) in {mode} mode: native XDP was refused ({reason})",
                interface.name, interface.ifindex
            ),
            (None, None) => println!(
                "attached to {} (ifindex {}) in {mode} mode",
                interface.name, interface.ifindex
            ),
        }
    }
    Ok(())
}

/// Why an interface `run` protects is no longer protected, if it is not.
fn unprotected(guard: &Guard, name: &str, ifindex: u32) -> Option<String> {
    match net::interface::ifindex(name) {
        Err(_) => return Some("the interface is gone".to_owned()),
        Ok(now) if now != ifindex => {
            return Some(format!(
                "the interface was re-created (ifindex {ifindex} is now {now})"
            ));
        }
        Ok(_) => {}
    }
    let links = match guard.links() {
        Ok(links) => links,
        Err(err) => return Some(format!("its pinned link cannot be read: {err}")),
    };
    match links.iter().find(|link| link.ifindex == ifindex) {
        None => Some("its link was removed (by a detach?)".to_owned()),
        Some(link) if link.interface_gone => Some("the interface is gone".to_owned()),
        Some(link) if link.mode.is_none() => {
            Some("the kernel no longer runs the guard there".to_owned())
        }
        Some(_) => None,
    }
}

async fn service(
    args: Args,
    guard: Guard,
    targets: Vec<(String, u32)>,
    initial: Option<Initial>,
) -> anyhow::Result<()> {
    // Signal handlers before any change: a SIGTERM during the attach is honoured after it.
    let mut stop = std::pin::pin!(stop_signal()?);
    let mut hangup = signal(SignalKind::hangup())?;
    let listener = match args.metrics {
        Some(address) => Some(exporter::bind(address).await?),
        None => None,
    };

    let good = match &initial {
        Some(Initial::Good(_, policy)) => Some(policy),
        _ => None,
    };
    attach_or_adopt(&args, &guard, &targets, good)?;
    let mut broadcasts_error = None;
    refresh_broadcasts(&guard, &mut broadcasts_error);
    let mut seen = None;
    match (&args.policy, initial) {
        (Some(path), Some(initial)) => {
            match initial {
                Initial::Good(text, _) => {
                    println!(
                        "applied policy {} (generation {})",
                        path.display(),
                        policy_file::generation(&guard)
                    );
                    seen = Some(Seen::Text(text));
                }
                Initial::Refused(first, error) => {
                    eprintln!(
                        "error: {error}; running with the live policy (generation {}): the safe default profile unless one was in force",
                        policy_file::generation(&guard)
                    );
                    seen = Some(first);
                }
            }
            println!(
                "watching {} for changes (every {} ms; SIGHUP reloads it at once)",
                path.display(),
                POLL.as_millis()
            );
        }
        _ => println!("no --policy file: the live policy stays as it is"),
    }

    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = listener.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            println!("serving metrics on http://{address}/metrics");
        }
        tokio::spawn(exporter::serve(listener, guard.clone(), async {
            let _ = server_stopped.await;
        }))
    });

    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let summary_every = Duration::from_secs(args.summary_interval);
    let mut summary =
        tokio::time::interval_at(tokio::time::Instant::now() + summary_every, summary_every);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut watchdog = tokio::time::interval(WATCHDOG);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut targets = targets;
    let mut baseline = guard.stats().ok();
    let mut last_error: Option<String> = None;
    let mut drain = tokio::time::interval(DRAIN);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut drop_log = DropLogger::new(&guard, args.drop_log);
    println!(
        "protecting {}; SIGTERM or Ctrl-C {}",
        targets
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if args.keep {
            "stops and leaves the guard attached (--keep)"
        } else {
            "stops and detaches"
        }
    );

    let signal_name = loop {
        tokio::select! {
            name = &mut stop => break name,
            _ = hangup.recv() => match &args.policy {
                Some(path) => {
                    println!("SIGHUP: reloading {}", path.display());
                    policy_file::reload(&guard, path, args.dry_run, &mut seen, true);
                }
                None => println!("SIGHUP: there is no --policy file to reload"),
            },
            _ = drain.tick(), if args.drop_log > 0 => drop_log.drain(),
            _ = poll.tick(), if args.policy.is_some() => {
                if let Some(path) = &args.policy {
                    policy_file::reload(&guard, path, args.dry_run, &mut seen, false);
                }
            }
            _ = watchdog.tick() => {
                // A detach by someone else, a deleted or re-created interface: protect it
                // again, or stop with an error so that the service manager restarts us.
                let lost: Vec<(String, String)> = targets
                    .iter()
                    .filter_map(|(name, ifindex)| {
                        unprotected(&guard, name, *ifindex).map(|why| (name.clone(), why))
                    })
                    .collect();
                if !lost.is_empty() {
                    for (name, why) in &lost {
                        eprintln!("error: {name} is no longer protected: {why}; attaching again");
                    }
                    targets = guard::resolve_interfaces(&args.interfaces)?;
                    let again: Vec<(String, u32)> = targets
                        .iter()
                        .filter(|(name, _)| lost.iter().any(|(lost, _)| lost == name))
                        .cloned()
                        .collect();
                    // The policy file as it is now, when it is valid; else the live policy.
                    let current = args
                        .policy
                        .as_deref()
                        .and_then(|path| policy_file::current(path, args.dry_run));
                    attach_or_adopt(&args, &guard, &again, current.as_ref())?;
                    refresh_broadcasts(&guard, &mut broadcasts_error);
                }
            }
            _ = summary.tick() => {
                // Addresses change under a long-running service (DHCP, operators).
                refresh_broadcasts(&guard, &mut broadcasts_error);
                match guard.stats() {
                    Ok(report) => {
                        if let Some(previous) = &baseline
                            && let Some(line) = render::stats::drop_summary(previous, &report)
                        {
                            println!("{} last {}s: {line}", clock(), args.summary_interval);
                        }
                        baseline = Some(report);
                        last_error = None;
                    }
                    Err(err) => {
                        let message = err.to_string();
                        if last_error.as_ref() != Some(&message) {
                            eprintln!("error: reading the counters: {message}");
                            last_error = Some(message);
                        }
                    }
                }
            }
        }
    };

    println!("{signal_name}: stopping");
    let _ = stop_server.send(());
    if let Some(server) = server {
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    if args.keep {
        println!("left the guard attached (--keep): `icmp-guard detach` removes it");
        return Ok(());
    }
    for name in guard.detach_interfaces(&targets)? {
        println!("detached from {name}");
    }
    Ok(())
}

/// Keeps the kernel's directed-broadcast map in step with the interfaces' addresses, as
/// every other command does once per invocation. A failure is reported once, not per tick.
fn refresh_broadcasts(guard: &Guard, last_error: &mut Option<String>) {
    match guard.refresh_broadcasts() {
        Ok(addresses) => {
            log::debug!("directed broadcasts: {addresses:?}");
            *last_error = None;
        }
        Err(err) => {
            let message = err.to_string();
            if last_error.as_ref() != Some(&message) {
                eprintln!("warning: could not refresh the directed-broadcast addresses: {message}");
                *last_error = Some(message);
            }
        }
    }
}
