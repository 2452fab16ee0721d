//! `run`: the service loop.

mod drop_log;
mod notify;
mod policy_file;

mod interfaces;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use drop_log::DropLogger;
use icmp_guard::{
    bpf::{Capacity, links::ModeRequest},
    exporter::{self, Service},
    guard::{AttachOptions, Guard},
    host::preflight,
    net::select::Rule,
    policy::Policy,
};
use interfaces::Selection;
use policy_file::{Initial, Seen, Tracker};
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
/// With --interfaces the interfaces are chosen by rule and the rule is evaluated again every
/// second: interfaces that come to match are attached, those that disappear are let go.
///
/// With --metrics, GET /readyz answers 200 only when every interface chosen runs the guard
/// and the policy file as it is on disk is in force, 503 with the reason otherwise;
/// GET /healthz answers 200 while the service loop runs.
///
/// Example: icmp-guard run eth0 --policy /etc/icmp-guard/policy.toml --metrics 127.0.0.1:9469
///
/// Example: icmp-guard run --interfaces auto --policy /etc/icmp-guard/policy.toml --keep
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interfaces to protect, by name.
    #[arg(value_name = "IFACE", required_unless_present = "rules")]
    interfaces: Vec<String>,

    /// Interfaces by rule: `auto` (those carrying an IPv4 or IPv6 default route) or shell
    /// globs ('en*' 'bond*'), evaluated again every second as links and routes change.
    #[arg(long = "interfaces", id = "rules", value_name = "auto|GLOB", num_args = 1..,
          conflicts_with = "interfaces", value_parser = Rule::parse)]
    rules: Vec<Rule>,

    /// Policy file to apply and watch (default: keep the live policy, or the safe default
    /// profile on a first attach).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Serve Prometheus metrics on GET /metrics, and readiness and liveness on GET /readyz
    /// and GET /healthz, at this IP:PORT.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// Leave the guard attached when stopping; the next `run` adopts it.
    #[arg(long)]
    keep: bool,

    /// XDP mode: native (driver), generic (skb), or auto (native, else generic); drv and
    /// skb are accepted as xdp-loader spells them.
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
    let (guard, mounted) = Guard::open_mounting(context.pins.clone())?;
    if mounted {
        println!("mounted bpffs at {}", preflight::BPFFS_ROOT);
        if !preflight::in_host_mount_namespace() {
            eprintln!(
                "warning: the pins are NOT on the host's bpffs: icmp-guard mounted a bpffs of its own at {} inside a mount namespace that is not the host's (a container, or a service with private mounts), so the pinned program will die with this namespace and --keep will protect nothing; mount the host's /sys/fs/bpf into the container (a hostPath volume with mountPropagation: HostToContainer, as deploy/kubernetes/daemonset.yaml does)",
                preflight::BPFFS_ROOT
            );
        }
    }
    // A policy file that cannot be used does not stop the service: a host left without
    // any protection (after a reboot, bpffs is empty) is worse than one with the live
    // policy or the safe default profile. The error is reported, and the file is watched
    // and applied as soon as it is fixed.
    let initial = args
        .policy
        .as_deref()
        .map(|path| Initial::read(path, args.dry_run));
    let selection = Selection::new(&args.interfaces, &args.rules);
    let targets = selection.resolve_at_start()?;
    runtime()?.block_on(service(args, guard, selection, targets, initial))
}

/// Attaches to the interfaces that are not attached yet and adopts the others, swapping
/// this binary's program into their pinned links (`BPF_LINK_UPDATE`): a restarted or
/// upgraded service picks up where a `run --keep` (or an `attach`) left off, runs its own
/// program, and never leaves an interface without one.
/// The attach options of `run`'s arguments, with `policy` applied before the first packet.
fn attach_options(args: &Args, policy: Option<&Policy>) -> AttachOptions {
    AttachOptions {
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
    }
}

fn attach_or_adopt(
    guard: &Guard,
    targets: &[(String, u32)],
    options: &AttachOptions,
) -> anyhow::Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let fresh: Vec<&str> = targets
        .iter()
        .filter(|(_, ifindex)| !guard.has_link(*ifindex))
        .map(|(name, _)| name.as_str())
        .collect();
    if !fresh.is_empty() {
        println!("attaching to {}...", fresh.join(", "));
    }
    let names: Vec<String> = targets.iter().map(|(name, _)| name.clone()).collect();
    for interface in guard.attach(&names, options)? {
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

async fn service(
    args: Args,
    guard: Guard,
    selection: Selection,
    targets: Vec<(String, u32)>,
    initial: Option<Initial>,
) -> anyhow::Result<()> {
    let notifier = notify::Notifier::from_env();
    // Signal handlers before any change: a SIGTERM during the attach is honoured after it.
    let mut stop = std::pin::pin!(stop_signal()?);
    let mut hangup = signal(SignalKind::hangup())?;
    let listener = match args.metrics {
        Some(address) => Some(exporter::bind(address).await?),
        None => None,
    };

    // Readiness is asked of the interfaces and the policy file as they are when a probe
    // comes, never of a state remembered from before.
    let tracker = args.policy.clone().map(Tracker::new);
    let service = {
        let guard = guard.clone();
        let selection = selection.clone();
        let ready_tracker = tracker.clone();
        let reload_tracker = tracker.clone();
        Arc::new(Service::new(
            move || {
                selection.ready(&guard)?;
                ready_tracker.as_ref().map_or(Ok(()), Tracker::ready)
            },
            move || reload_tracker.as_ref().map(Tracker::reload),
        ))
    };

    // Serving first: while the guard attaches, /healthz says the service runs and /readyz
    // says why it is not ready yet.
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = listener.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            println!(
                "serving metrics on http://{address}/metrics, readiness on /readyz, liveness on /healthz"
            );
        }
        tokio::spawn(exporter::serve(
            listener,
            guard.clone(),
            Some(service.clone()),
            async {
                let _ = server_stopped.await;
            },
        ))
    });
    // Let the server task bind its accept loop before the attach blocks this thread.
    tokio::task::yield_now().await;

    let good = match &initial {
        Some(Initial::Good(_, policy)) => Some(policy),
        _ => None,
    };
    let mut targets = targets;
    let mut attach_error: Option<String> = None;
    // On a blocking thread, so that the server answers probes during a slow attach.
    let attached = {
        let (guard, targets, options) =
            (guard.clone(), targets.clone(), attach_options(&args, good));
        tokio::task::spawn_blocking(move || attach_or_adopt(&guard, &targets, &options)).await?
    };
    match attached {
        Ok(()) => {}
        // By rule, an interface that cannot be attached now is tried again every second,
        // and /readyz says why it is not protected.
        Err(err) if selection.by_rule() => {
            eprintln!("error: {err:#}; trying again every second");
            attach_error = Some(format!("{err:#}"));
            targets.retain(|(_, ifindex)| guard.has_link(*ifindex));
        }
        Err(err) => return Err(err),
    }
    let mut broadcasts_error = None;
    refresh_broadcasts(&guard, &mut broadcasts_error);
    let mut seen = None;
    match (&args.policy, initial, &tracker) {
        (Some(path), Some(initial), Some(tracker)) => {
            match initial {
                Initial::Good(text, _) => {
                    if targets.is_empty() {
                        println!(
                            "policy {} is valid; it is applied with the first interface",
                            path.display()
                        );
                    } else {
                        println!(
                            "applied policy {} (generation {})",
                            path.display(),
                            policy_file::generation(&guard)
                        );
                        tracker.applied(&text);
                        seen = Some(Seen::Text(text));
                    }
                }
                Initial::Refused(first, error) => {
                    eprintln!(
                        "error: {error}; running with the live policy (generation {}): the safe default profile unless one was in force",
                        policy_file::generation(&guard)
                    );
                    tracker.refused(error);
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

    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let summary_every = Duration::from_secs(args.summary_interval);
    let mut summary =
        tokio::time::interval_at(tokio::time::Instant::now() + summary_every, summary_every);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut watchdog = tokio::time::interval(WATCHDOG);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut baseline = guard.stats().ok();
    let mut last_error: Option<String> = None;
    let mut drain = tokio::time::interval(DRAIN);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut drop_log = DropLogger::new(&guard, args.drop_log);
    let ending = if args.keep {
        "stops and leaves the guard attached (--keep)"
    } else {
        "stops and detaches"
    };
    if targets.is_empty() {
        println!(
            "no interface matches {} yet: looking again every second; SIGTERM or Ctrl-C {ending}",
            selection.describe()
        );
    } else {
        println!(
            "protecting {}; SIGTERM or Ctrl-C {ending}",
            targets
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    // For systemd (Type=notify): every interface runs the guard, the policy is applied. By
    // rule, the selection is being followed (it may match nothing yet: /readyz says so).
    notifier.ready(&if selection.by_rule() {
        format!("following {}", selection.describe())
    } else {
        format!("protecting {}", selection.describe())
    });
    let signal_name = loop {
        service.beat();
        tokio::select! {
            name = &mut stop => break name,
            _ = hangup.recv() => match (&args.policy, &tracker) {
                (Some(path), Some(tracker)) => {
                    println!("SIGHUP: reloading {}", path.display());
                    tracker.record(policy_file::reload(&guard, path, args.dry_run, &mut seen, true));
                }
                _ => println!("SIGHUP: there is no --policy file to reload"),
            },
            _ = drain.tick(), if args.drop_log > 0 => drop_log.drain(),
            _ = poll.tick(), if args.policy.is_some() => {
                // Before the first attach there are no maps to write a policy to.
                if let (Some(path), Some(tracker)) = (&args.policy, &tracker)
                    && !targets.is_empty()
                {
                    tracker.record(policy_file::reload(&guard, path, args.dry_run, &mut seen, false));
                }
            }
            _ = watchdog.tick() => {
                if selection.by_rule() {
                    follow_rules(
                        &args,
                        &guard,
                        &selection,
                        &mut targets,
                        tracker.as_ref(),
                        &mut seen,
                        &mut attach_error,
                    );
                    refresh_broadcasts(&guard, &mut broadcasts_error);
                    // Every interface that matches is protected (none matching counts too):
                    // the systemd watchdog is fed only then.
                    if attach_error.is_none()
                        && targets
                            .iter()
                            .all(|(name, ifindex)| interfaces::unprotected(&guard, name, *ifindex).is_none())
                    {
                        notifier.watchdog();
                    }
                    continue;
                }
                // A detach by someone else, a deleted or re-created interface: protect it
                // again, or stop with an error so that the service manager restarts us.
                let lost: Vec<(String, String)> = targets
                    .iter()
                    .filter_map(|(name, ifindex)| {
                        interfaces::unprotected(&guard, name, *ifindex).map(|why| (name.clone(), why))
                    })
                    .collect();
                if !lost.is_empty() {
                    for (name, why) in &lost {
                        eprintln!("error: {name} is no longer protected: {why}; attaching again");
                    }
                    targets = selection.resolve()?;
                    let again: Vec<(String, u32)> = targets
                        .iter()
                        .filter(|(name, _)| lost.iter().any(|(lost, _)| lost == name))
                        .cloned()
                        .collect();
                    attach_current(&args, &guard, &again, tracker.as_ref(), &mut seen)?;
                    refresh_broadcasts(&guard, &mut broadcasts_error);
                }
                // Only now is every interface known to be protected.
                notifier.watchdog();
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
    notifier.stopping();
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

/// Attaches to (or adopts) `targets` with the policy file as it is now when it is valid,
/// else with the live policy, and records what is then in force.
fn attach_current(
    args: &Args,
    guard: &Guard,
    targets: &[(String, u32)],
    tracker: Option<&Tracker>,
    seen: &mut Option<Seen>,
) -> anyhow::Result<()> {
    let current = args
        .policy
        .as_deref()
        .and_then(|path| policy_file::current(path, args.dry_run));
    let options = attach_options(args, current.as_ref().map(|(_, policy)| policy));
    attach_or_adopt(guard, targets, &options)?;
    if let (Some(tracker), Some((text, _))) = (tracker, current)
        && !targets.is_empty()
    {
        tracker.applied(&text);
        *seen = Some(Seen::Text(text));
    }
    Ok(())
}

/// One watchdog tick under `--interfaces`: the rules evaluated again. Interfaces that came
/// to match are attached, those that disappeared are let go (their links go with them),
/// and those that lost their guard behind our back get it again. Nothing here stops the
/// service: what cannot be done now is reported once and tried again next tick, and
/// /readyz says what is missing meanwhile.
fn follow_rules(
    args: &Args,
    guard: &Guard,
    selection: &Selection,
    targets: &mut Vec<(String, u32)>,
    tracker: Option<&Tracker>,
    seen: &mut Option<Seen>,
    attach_error: &mut Option<String>,
) {
    let matching = match selection.resolve() {
        Ok(matching) => matching,
        Err(err) => {
            report_once(
                attach_error,
                format!("evaluating {}: {err}", selection.describe()),
            );
            return;
        }
    };
    targets.retain(|(name, ifindex)| {
        let gone = interfaces::gone(name, *ifindex);
        if gone {
            println!("{name} is gone (deleted, or renamed): no longer following it");
        }
        !gone
    });
    let wanted: Vec<(String, u32)> = matching
        .into_iter()
        .filter(|(name, ifindex)| {
            !targets.iter().any(|(_, known)| known == ifindex)
                || interfaces::unprotected(guard, name, *ifindex).is_some()
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    for (name, ifindex) in &wanted {
        if targets.iter().any(|(_, known)| known == ifindex) {
            eprintln!("error: {name} is no longer protected; attaching again");
        } else {
            println!("{name} matches {}", selection.describe());
        }
    }
    match attach_current(args, guard, &wanted, tracker, seen) {
        Ok(()) => {
            for (name, ifindex) in wanted {
                if !targets.iter().any(|(_, known)| *known == ifindex) {
                    targets.push((name, ifindex));
                }
            }
            *attach_error = None;
        }
        Err(err) => report_once(attach_error, format!("{err:#}; trying again every second")),
    }
}

/// Prints `message` as an error unless it is the one printed last.
fn report_once(last: &mut Option<String>, message: String) {
    if last.as_ref() != Some(&message) {
        eprintln!("error: {message}");
        *last = Some(message);
    }
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
