use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use icmp_guard::{
    events::{DropLog, EventReader, LogDecision, drop_line, drop_reason},
    loader::{self, AttachOptions, Capacity, GuardMaps, ModeRequest},
    metrics,
    pins::PinDir,
    policy::{self, Policy},
    stats, system,
};
use tokio::signal::unix::{SignalKind, signal};

use super::{
    Context,
    metrics::{runtime, stop_signal},
    stats::clock,
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
    system::require_privileges()?;
    if system::ensure_bpffs(context.pins.root())? {
        println!("mounted bpffs at {}", system::BPFFS_ROOT);
    }
    // A policy file that cannot be used does not stop the service: a host left without
    // any protection (after a reboot, bpffs is empty) is worse than one with the live
    // policy or the safe default profile. The error is reported, and the file is watched
    // and applied as soon as it is fixed.
    let initial = match &args.policy {
        Some(path) => Some(match std::fs::read(path) {
            Ok(text) => match parse(path, &text, args.dry_run) {
                Ok(parsed) => Initial::Good(text, parsed),
                Err(err) => Initial::Refused(Seen::Text(text), err.to_string()),
            },
            Err(err) => {
                let message = format!("cannot read {}: {err}", path.display());
                Initial::Refused(Seen::Unreadable(message.clone()), message)
            }
        }),
        None => None,
    };
    context.preflight()?;
    let targets = loader::resolve_interfaces(&args.interfaces)?;
    runtime()?.block_on(service(args, context, targets, initial))
}

/// The policy file at start-up.
enum Initial {
    Good(Vec<u8>, Policy),
    /// What the watcher saw, and the error to report.
    Refused(Seen, String),
}

/// Parses a policy file's bytes; `--dry-run` overrides its mode.
fn parse(path: &Path, text: &[u8], dry_run: bool) -> anyhow::Result<Policy> {
    let text = std::str::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("{}: the file is not UTF-8 text", path.display()))?;
    let mut parsed =
        policy::file::parse(text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    if dry_run {
        parsed.mode = policy::Mode::DryRun;
    }
    Ok(parsed)
}

/// Writes `policy` under the policy lock; returns the generation now active.
fn apply(pins: &PinDir, chosen: &Policy) -> anyhow::Result<u32> {
    let _lock = pins.lock_attached()?;
    let mut maps = GuardMaps::open(pins)?;
    policy::apply(&mut maps, chosen)?;
    Ok(policy::active_generation(&maps)?)
}

fn generation(pins: &PinDir) -> String {
    GuardMaps::open(pins)
        .ok()
        .and_then(|maps| policy::active_generation(&maps).ok())
        .map_or_else(|| "unknown".to_owned(), |g| g.to_string())
}

/// Attaches to the interfaces that are not attached yet and adopts the others, swapping
/// this binary's program into their pinned links (`BPF_LINK_UPDATE`): a restarted or
/// upgraded service picks up where a `run --keep` (or an `attach`) left off, runs its own
/// program, and never leaves an interface without one.
fn attach_or_adopt(
    args: &Args,
    pins: &PinDir,
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
        .filter(|(_, ifindex)| !pins.has_link(*ifindex))
        .map(|(name, _)| name.as_str())
        .collect();
    if !fresh.is_empty() {
        println!("attaching to {}...", fresh.join(", "));
    }
    let names: Vec<String> = targets.iter().map(|(name, _)| name.clone()).collect();
    for interface in loader::attach(pins, &names, &options)? {
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
fn unprotected(pins: &PinDir, name: &str, ifindex: u32) -> Option<String> {
    match system::ifindex(name) {
        Err(_) => return Some("the interface is gone".to_owned()),
        Ok(now) if now != ifindex => {
            return Some(format!(
                "the interface was re-created (ifindex {ifindex} is now {now})"
            ));
        }
        Ok(_) => {}
    }
    let links = match loader::links(pins) {
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

/// What the policy file watcher last saw.
enum Seen {
    /// Applied (or refused as invalid): nothing to do until the bytes change.
    Text(Vec<u8>),
    /// New bytes seen once: applied when the next poll reads the same, so that a file an
    /// editor is still writing (truncated, half written) is never applied.
    Settling(Vec<u8>),
    Unreadable(String),
}

async fn service(
    args: Args,
    context: &Context,
    targets: Vec<(String, u32)>,
    initial: Option<Initial>,
) -> anyhow::Result<()> {
    let pins = &context.pins;
    let notifier = icmp_guard::notify::Notifier::from_env();
    // Signal handlers before any change: a SIGTERM during the attach is honoured after it.
    let mut stop = std::pin::pin!(stop_signal()?);
    let mut hangup = signal(SignalKind::hangup())?;
    let listener = match args.metrics {
        Some(address) => Some(metrics::bind(address).await?),
        None => None,
    };

    let good = match &initial {
        Some(Initial::Good(_, policy)) => Some(policy),
        _ => None,
    };
    attach_or_adopt(&args, pins, &targets, good)?;
    let mut broadcasts_error = None;
    refresh_broadcasts(pins, &mut broadcasts_error);
    let mut seen = None;
    match (&args.policy, initial) {
        (Some(path), Some(initial)) => {
            match initial {
                Initial::Good(text, _) => {
                    println!(
                        "applied policy {} (generation {})",
                        path.display(),
                        generation(pins)
                    );
                    seen = Some(Seen::Text(text));
                }
                Initial::Refused(first, error) => {
                    eprintln!(
                        "error: {error}; running with the live policy (generation {}): the safe default profile unless one was in force",
                        generation(pins)
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
        tokio::spawn(metrics::serve(listener, pins.clone(), async {
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
    let mut baseline = stats::read_report(pins).ok();
    let mut last_error: Option<String> = None;
    let mut drain = tokio::time::interval(DRAIN);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut drop_log = DropLogger::new(args.drop_log);
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

    // For systemd (Type=notify): every interface runs the guard, the policy is applied.
    notifier.ready(&format!("protecting {}", args.interfaces.join(", ")));
    let signal_name = loop {
        tokio::select! {
            name = &mut stop => break name,
            _ = hangup.recv() => match &args.policy {
                Some(path) => {
                    println!("SIGHUP: reloading {}", path.display());
                    reload(&args, pins, path, &mut seen, true);
                }
                None => println!("SIGHUP: there is no --policy file to reload"),
            },
            _ = drain.tick(), if args.drop_log > 0 => drop_log.drain(pins),
            _ = poll.tick(), if args.policy.is_some() => {
                if let Some(path) = &args.policy {
                    reload(&args, pins, path, &mut seen, false);
                }
            }
            _ = watchdog.tick() => {
                // A detach by someone else, a deleted or re-created interface: protect it
                // again, or stop with an error so that the service manager restarts us.
                let lost: Vec<(String, String)> = targets
                    .iter()
                    .filter_map(|(name, ifindex)| {
                        unprotected(pins, name, *ifindex).map(|why| (name.clone(), why))
                    })
                    .collect();
                if !lost.is_empty() {
                    for (name, why) in &lost {
                        eprintln!("error: {name} is no longer protected: {why}; attaching again");
                    }
                    targets = loader::resolve_interfaces(&args.interfaces)?;
                    let again: Vec<(String, u32)> = targets
                        .iter()
                        .filter(|(name, _)| lost.iter().any(|(lost, _)| lost == name))
                        .cloned()
                        .collect();
                    // The policy file as it is now, when it is valid; else the live policy.
                    let current = match &args.policy {
                        Some(path) => std::fs::read(path)
                            .ok()
                            .and_then(|text| parse(path, &text, args.dry_run).ok()),
                        None => None,
                    };
                    attach_or_adopt(&args, pins, &again, current.as_ref())?;
                    refresh_broadcasts(pins, &mut broadcasts_error);
                }
                // Only now is every interface known to be protected.
                notifier.watchdog();
            }
            _ = summary.tick() => {
                // Addresses change under a long-running service (DHCP, operators).
                refresh_broadcasts(pins, &mut broadcasts_error);
                match stats::read_report(pins) {
                    Ok(report) => {
                        if let Some(previous) = &baseline
                            && let Some(line) = stats::drop_summary(previous, &report)
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
    notifier.stopping();
    let _ = stop_server.send(());
    if let Some(server) = server {
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    if args.keep {
        println!("left the guard attached (--keep): `icmp-guard detach` removes it");
        return Ok(());
    }
    // Serialised with attach, detach and policy edits, as `detach` is.
    let Some(_lock) = pins.lock()? else {
        return Ok(());
    };
    for (name, ifindex) in &targets {
        if loader::detach(pins, *ifindex)? {
            println!("detached from {name}");
        }
    }
    pins.remove_if_unused()?;
    Ok(())
}

/// The drop log: drains the sampled events under the events lock, prints a few dropped ones
/// a second and sums up the rest. Skips a drain while `top` holds the lock.
struct DropLogger {
    log: DropLog,
    reader: Option<EventReader>,
    paused: bool,
    last_error: Option<String>,
    /// Interface names by ifindex, looked up once.
    names: HashMap<u32, Option<String>>,
}

impl DropLogger {
    fn new(lines_per_sec: u32) -> Self {
        Self {
            log: DropLog::new(lines_per_sec),
            reader: None,
            paused: false,
            last_error: None,
            names: HashMap::new(),
        }
    }

    fn drain(&mut self, pins: &PinDir) {
        if let Err(err) = self.try_drain(pins) {
            let message = err.to_string();
            if self.last_error.as_ref() != Some(&message) {
                eprintln!("error: drop log: {message}");
                self.last_error = Some(message);
            }
            self.reader = None;
        }
    }

    fn try_drain(&mut self, pins: &PinDir) -> icmp_guard::error::Result<()> {
        let now = Instant::now();
        if let Some(suppressed) = self.log.roll(now) {
            println!(
                "{} {suppressed} more sampled drops in the last second not shown",
                clock()
            );
        }
        let Some(_lock) = pins.lock_events(false)? else {
            if !self.paused {
                println!(
                    "{} drop log paused: `icmp-guard top` is reading the events",
                    clock()
                );
                self.paused = true;
            }
            return Ok(());
        };
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => self.reader.insert(EventReader::open(pins)?),
        };
        if self.paused {
            // What top left behind is old news.
            reader.drain(|_| {});
            println!("{} drop log resumed", clock());
            self.paused = false;
        }
        let mut dropped = Vec::new();
        reader.drain(|event| {
            if drop_reason(&event).is_some() {
                dropped.push(event);
            }
        });
        for event in dropped {
            if self.log.offer(now) == LogDecision::Print {
                let name = self
                    .names
                    .entry(event.ifindex)
                    .or_insert_with(|| system::ifname(event.ifindex));
                println!("{} {}", clock(), drop_line(&event, name.as_deref()));
            }
        }
        self.last_error = None;
        Ok(())
    }
}

/// Keeps the kernel's directed-broadcast map in step with the interfaces' addresses, as
/// every other command does once per invocation. A failure is reported once, not per tick.
fn refresh_broadcasts(pins: &PinDir, last_error: &mut Option<String>) {
    match icmp_guard::addresses::refresh_pinned(pins) {
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

/// Checks the policy file and applies it when its bytes changed, or always when `force`
/// (SIGHUP). A file that cannot be read, parsed or applied leaves the live policy alone and
/// is reported once on stderr.
fn reload(args: &Args, pins: &PinDir, path: &Path, seen: &mut Option<Seen>, force: bool) {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(err) => {
            let message = err.to_string();
            if force || !matches!(seen, Some(Seen::Unreadable(m)) if *m == message) {
                eprintln!(
                    "error: cannot read {}: {message}; keeping the last good policy (generation {})",
                    path.display(),
                    generation(pins)
                );
            }
            *seen = Some(Seen::Unreadable(message));
            return;
        }
    };
    if !force {
        match seen {
            Some(Seen::Text(old)) if *old == text => return,
            Some(Seen::Settling(old)) if *old == text => {}
            _ => {
                *seen = Some(Seen::Settling(text));
                return;
            }
        }
    }
    let parsed = match parse(path, &text, args.dry_run) {
        Ok(parsed) => parsed,
        Err(err) => {
            // Reported once: the file stays refused until its bytes change.
            *seen = Some(Seen::Text(text));
            eprintln!(
                "error: {err}; keeping the last good policy (generation {})",
                generation(pins)
            );
            return;
        }
    };
    match apply(pins, &parsed) {
        Ok(generation) => {
            *seen = Some(Seen::Text(text));
            println!(
                "applied policy {} (generation {generation})",
                path.display()
            );
        }
        // A valid file that could not be written (a passing error) is tried again on the
        // next poll: `seen` stays as it was. Reported once per distinct error.
        Err(err) => {
            let message = format!("applying {}: {err}", path.display());
            if force || !matches!(seen, Some(Seen::Unreadable(m)) if *m == message) {
                eprintln!(
                    "error: {message}; keeping the last good policy (generation {}) and retrying",
                    generation(pins)
                );
            }
            *seen = Some(Seen::Unreadable(message));
        }
    }
}
