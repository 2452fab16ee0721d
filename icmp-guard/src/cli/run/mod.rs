//! `run`: the service loop.

mod drop_log;
mod interfaces;
mod notify;
mod policy_file;
mod sweep_log;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use drop_log::DropLogger;
use icmp_guard::{
    bpf::{Capacity, dispatcher, links::ModeRequest},
    exporter::{self, Service},
    guard::{AttachOptions, Guard},
    host::preflight,
    net::{self, addresses::AddressEvents, select::Rule},
    policy::Policy,
};
use interfaces::{Interfaces, Selection};
use policy_file::PolicyFile;
use sweep_log::SweepLogger;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use super::{
    Context,
    metrics::{runtime, stop_signal},
    render::{self, clock},
};

/// Run in the foreground as a service: attach, apply and watch a policy file, serve
/// metrics, print a summary when packets were dropped and a sampled, rate-limited log of
/// individual drops; on SIGTERM or SIGINT detach what it attached.
///
/// The policy file is read every 250 ms (on a thread of its own) and on SIGHUP; a change is
/// applied atomically once two reads agree (so a half-written file never is), and a file
/// that does not parse or validate is reported on stderr while the last good policy stays
/// in force. An interface that is already attached (by `attach`, or by a `run --keep`
/// before) is adopted: this binary's program is swapped into its link without a gap, and
/// it is left attached when the service stops. Every second the service checks that its
/// interfaces still run the guard and attaches again where they do not (a detach behind
/// its back, a re-created interface, bpffs unmounted); a named interface that is deleted
/// is waited for (`status` says "waiting") and attached again when it returns. Address
/// changes are followed at once: the directed broadcasts of a new address are covered
/// within a second.
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

    /// Leave the guard attached when stopping (also on the interfaces it attached); the
    /// next `run` adopts it.
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

    /// Run as one program of each interface's libxdp dispatcher, as `attach --multiprog`
    /// does (beside xdp-filter and other libxdp programs), instead of with links of its own;
    /// an interface where icmp-guard already runs in a dispatcher is adopted as it runs.
    #[arg(long)]
    multiprog: bool,

    /// With --multiprog: the run priority in the dispatcher, lower runs first (xdp-filter
    /// runs at 10).
    #[arg(long, value_name = "N", requires = "multiprog",
          default_value_t = dispatcher::DEFAULT_PRIORITY)]
    priority: u32,

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

/// How long start-up waits for the first read of the policy file.
const FIRST_READ: Duration = Duration::from_secs(5);

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
    let selection = Selection::new(&args.interfaces, &args.rules);
    // At start-up every interface named must exist (a typo fails at once); one that goes
    // away later is waited for. Rules may match nothing yet.
    selection.resolve()?;
    runtime()?.block_on(service(args, guard, selection))
}

impl Args {
    fn options(&self, policy: Option<Policy>) -> AttachOptions {
        AttachOptions {
            mode: self.mode,
            dry_run: self.dry_run,
            policy,
            first_policy: None,
            ensure: false,
            multiprog: self.multiprog.then_some(self.priority),
            capacity: Capacity {
                sources: self.max_sources,
                prefixes: self.max_prefixes,
            },
            upgrade: true,
            replace: false,
            events_per_sec: self.events_per_sec,
        }
    }
}

async fn service(args: Args, guard: Guard, selection: Selection) -> anyhow::Result<()> {
    let notifier = notify::Notifier::from_env();
    // Signal handlers before any change: a SIGTERM during the attach is honoured after it.
    let mut stop = std::pin::pin!(stop_signal()?);
    let mut hangup = signal(SignalKind::hangup())?;
    let listener = match args.metrics {
        Some(address) => Some(exporter::bind(address).await?),
        None => None,
    };
    let mut addresses = match AddressEvents::subscribe().and_then(|events| {
        // SAFETY: AddressEvents owns its socket and lends the same descriptor for as long
        // as it lives, which is as long as the AsyncFd.
        unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }.map_err(|err| {
            net::Error::Io {
                action: "watching address changes",
                source: err.into_parts().1,
            }
        })
    }) {
        Ok(events) => Some(events),
        Err(err) => {
            complain!(
                "warning: {err}: directed broadcasts are refreshed every {} s instead of at once",
                args.summary_interval
            );
            None
        }
    };

    // The policy file is read on a thread of its own (see policy_file); what is in force is
    // tracked for readiness and the fleet metrics.
    let mut file = args
        .policy
        .clone()
        .map(|path| PolicyFile::watch(path, args.dry_run));
    let tracker = file.as_ref().map(PolicyFile::tracker);

    // Readiness is asked of the interfaces and the policy file as they are when a probe
    // comes, never of a state remembered from before.
    let service = {
        let guard = guard.clone();
        let selection = selection.clone();
        let ready_tracker = tracker.clone();
        let reload_tracker = tracker.clone();
        Arc::new(Service::new(
            move || {
                selection.ready(&guard)?;
                ready_tracker
                    .as_ref()
                    .map_or(Ok(()), policy_file::Tracker::ready)
            },
            move || reload_tracker.as_ref().map(policy_file::Tracker::reload),
        ))
    };

    // Serving first: while the guard attaches, /healthz says the service runs and /readyz
    // says why it is not ready yet.
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = listener.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            say!(
                "serving metrics on http://{address}/metrics, readiness on /readyz, liveness on /healthz"
            );
            if !address.ip().is_loopback() {
                complain!("warning: {}", exporter::server::exposure_warning(address));
            }
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
    // Let the server task bind its accept loop before the attach.
    tokio::task::yield_now().await;

    // A policy file that cannot be used does not stop the service: a host left without
    // any protection (after a reboot, bpffs is empty) is worse than one with the live
    // policy or the safe default profile. The error is reported, and the file is watched
    // and applied as soon as it is fixed.
    let initial = match &mut file {
        Some(file) => Some(file.initial(FIRST_READ).await),
        None => None,
    };
    let good = initial
        .as_ref()
        .and_then(|initial| initial.as_ref().ok())
        .cloned();

    let first: Vec<String> = selection
        .resolve()?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    // On a blocking thread, so that the server answers probes during a slow attach.
    let (mut interfaces, outcome) = {
        let (guard, options) = (guard.clone(), args.options(good));
        let mut interfaces = Interfaces::new(selection.clone());
        // By name a failure ends the service (reported once, by the caller); by rule the
        // interface is tried again every second.
        let retrying = selection.by_rule();
        tokio::task::spawn_blocking(move || {
            let outcome = interfaces.attach(&guard, &first, &options, retrying);
            (interfaces, outcome)
        })
        .await?
    };
    match outcome {
        Ok(()) => {}
        // By rule, an interface that cannot be attached now is tried again every second,
        // and /readyz says why it is not protected.
        Err(_) if selection.by_rule() => {}
        Err(message) => return Err(anyhow::anyhow!(message)),
    }
    let netns = net::interface::netns_id()?;
    let record = |interfaces: &Interfaces| {
        if let Err(err) =
            guard
                .pins()
                .record_service(netns, std::process::id(), &interfaces.names())
        {
            complain!("warning: `status` will not show what this service waits for: {err}");
        }
    };
    if !interfaces.guarded().is_empty() {
        record(&interfaces);
    }
    let mut broadcasts_error = None;
    refresh_broadcasts(&guard, &mut broadcasts_error);
    match (&mut file, initial) {
        (Some(file), Some(initial)) => {
            match initial {
                Ok(_) if interfaces.guarded().is_empty() => {
                    file.defer_initial();
                    say!(
                        "policy {} is valid; it is applied with the first interface",
                        file.path().display()
                    );
                }
                Ok(_) => {
                    file.initial_applied();
                    say!(
                        "applied policy {} (revision {})",
                        file.path().display(),
                        policy_file::revision(&guard)
                    );
                }
                Err(error) => complain!(
                    "error: {error}; running with the live policy (revision {}): the safe default profile unless one was in force",
                    policy_file::revision(&guard)
                ),
            }
            say!(
                "watching {} for changes (every {} ms; SIGHUP reloads it at once)",
                file.path().display(),
                POLL.as_millis()
            );
        }
        _ => say!("no --policy file: the live policy stays as it is"),
    }
    if addresses.is_some() {
        say!("following address changes: directed broadcasts are refreshed as they happen");
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
    let mut sweep_log = SweepLogger::default();
    sweep_log.check(&guard);
    let ending = if args.keep {
        "stops and leaves the guard attached (--keep)"
    } else {
        "stops and detaches what this service attached"
    };
    let guarded: Vec<String> = interfaces
        .guarded()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    if guarded.is_empty() {
        say!(
            "no interface matches {} yet: looking again every second; SIGTERM or Ctrl-C {ending}",
            selection.describe()
        );
    } else {
        say!(
            "protecting {}; SIGTERM or Ctrl-C {ending}",
            guarded.join(", ")
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
            _ = hangup.recv() => match &mut file {
                Some(file) => {
                    say!("SIGHUP: reloading {}", file.path().display());
                    file.request(true);
                }
                None => say!("SIGHUP: there is no --policy file to reload"),
            },
            Some(read) = next_read(&mut file) => {
                if let Some(file) = &mut file {
                    file.handle(&guard, read);
                }
            }
            ready = address_change(&mut addresses) => {
                if let Some(mut ready) = ready {
                    ready.clear_ready();
                    if ready.get_inner().drain() {
                        refresh_broadcasts(&guard, &mut broadcasts_error);
                    }
                }
            }
            _ = drain.tick(), if args.drop_log > 0 && guard.has_maps() => drop_log.drain(),
            // Before the first attach there are no maps to write a policy to.
            _ = poll.tick(), if file.is_some() && guard.has_maps() => {
                if let Some(file) = &mut file {
                    file.request(false);
                }
            }
            _ = watchdog.tick() => {
                let last_good = file.as_ref().and_then(|file| file.last_good.clone());
                let before = interfaces.names();
                // Only when every interface is protected (or waited for: a deleted one is
                // not a reason to restart) is the systemd watchdog fed; an attach that keeps
                // failing lets the service manager restart us.
                if interfaces.watch(&guard, &args.options(None), last_good.as_ref()) {
                    notifier.watchdog();
                }
                if interfaces.names() != before {
                    record(&interfaces);
                }
                sweep_log.check(&guard);
            }
            _ = summary.tick() => {
                // Addresses also change where no event says so (a missed notification).
                refresh_broadcasts(&guard, &mut broadcasts_error);
                match guard.stats() {
                    Ok(report) => {
                        if let Some(previous) = &baseline
                            && let Some(line) = render::stats::drop_summary(previous, &report)
                        {
                            say!("{} last {}s: {line}", clock(), args.summary_interval);
                        }
                        baseline = Some(report);
                        last_error = None;
                    }
                    Err(err) => {
                        let message = err.to_string();
                        if last_error.as_ref() != Some(&message) {
                            complain!("error: reading the counters: {message}");
                            last_error = Some(message);
                        }
                    }
                }
            }
        }
    };

    say!("{signal_name}: stopping");
    notifier.stopping();
    let _ = stop_server.send(());
    if let Some(server) = server {
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    let _ = guard.pins().forget_service(netns, std::process::id());
    if args.keep {
        say!("left the guard attached (--keep): `icmp-guard detach` removes it");
        return Ok(());
    }
    for name in interfaces.adopted() {
        say!("left {name} attached as found: the guard was there before this service started");
    }
    for name in guard.detach_interfaces(&interfaces.owned())? {
        say!("detached from {name}");
    }
    Ok(())
}

/// The next read of the policy file; never, without one.
async fn next_read(file: &mut Option<PolicyFile>) -> Option<policy_file::Read> {
    match file {
        Some(file) => file.next_read().await,
        None => std::future::pending().await,
    }
}

/// Readiness of the address subscription; never, without one.
async fn address_change(
    events: &mut Option<AsyncFd<AddressEvents>>,
) -> Option<tokio::io::unix::AsyncFdReadyGuard<'_, AddressEvents>> {
    match events {
        Some(events) => events.readable().await.ok(),
        None => std::future::pending().await,
    }
}

/// Keeps the kernel's directed-broadcast map in step with the interfaces' addresses. A
/// failure is reported once, not per tick.
fn refresh_broadcasts(guard: &Guard, last_error: &mut Option<String>) {
    match guard.refresh_broadcasts() {
        Ok(addresses) => {
            log::debug!("directed broadcasts: {addresses:?}");
            *last_error = None;
        }
        Err(err) => {
            let message = err.to_string();
            if last_error.as_ref() != Some(&message) {
                complain!("warning: could not refresh the directed-broadcast addresses: {message}");
                *last_error = Some(message);
            }
        }
    }
}
