//! The front door: one [`Guard`] per pin directory, and every operation on a running guard
//! as one method. Locks, transactions and map handles live behind it; callers (the CLI, the
//! exporter, the service loop) hand it arguments and get data back.
//!
//! Lifecycle rules:
//!
//! - [`Guard::attach`] and [`Guard::detach`] run under the pin directory's exclusive lock
//!   ([`PinDir::lock`]), the same lock that policy edits ([`Guard::edit_policy`]) take, so
//!   concurrent commands run one after the other; the kernel releases it when a process
//!   dies.
//! - An attach either attaches to every interface it was given or to none, and a first
//!   attach puts its policy in the maps before the first packet.
//! - Reads ([`Guard::stats`], [`Guard::status`], [`Guard::policy`]) take no lock: every map
//!   holds whole values and a policy swap is atomic.

mod attach;

use std::net::Ipv4Addr;

pub use attach::{AttachOptions, Attached, resolve_interfaces};

use crate::{
    bpf::{
        self, GuardMaps, PinDir, PinLock,
        links::{self, LinkStatus},
        maps::{self as bpf_maps, Tracked},
    },
    error::{Error, Result},
    host::preflight,
    net,
    observe::{
        events::EventReader,
        stats::{self, CodeReport, StatsReport},
        top::{self, CpuTotals},
    },
    policy::{self, Policy, PolicyError},
};

/// The guard whose state is pinned in one pin directory.
#[derive(Clone, Debug)]
pub struct Guard {
    pins: PinDir,
}

/// Which interfaces [`Guard::detach`] works on.
#[derive(Clone, Debug)]
pub enum Detach {
    /// These, by name.
    Named(Vec<String>),
    /// Every interface with a pinned link.
    All,
}

/// What [`Guard::detach`] did.
#[derive(Clone, Debug, Default)]
pub struct Detached {
    /// False when there was no pin directory at all.
    pub had_pins: bool,
    /// Each interface worked on, by name, in order, and whether it was attached (else
    /// there was nothing to do).
    pub interfaces: Vec<(String, bool)>,
    /// Links of deleted interfaces that were removed, by their last ifindex.
    pub gone_removed: Vec<u32>,
}

/// What [`Guard::status`] reports.
#[derive(Clone, Debug)]
pub struct Status {
    /// Every pinned link, with what the kernel says about it.
    pub links: Vec<LinkStatus>,
    /// `enforce` or `dry-run`, when the maps are pinned.
    pub mode: Option<&'static str>,
    /// Rate-limit buckets in use, when the maps are pinned.
    pub tracked: Option<Tracked>,
}

/// The live policy with the generation it is in.
#[derive(Clone, Debug)]
pub struct LivePolicy {
    pub policy: Policy,
    /// The active generation of the double buffer (0 or 1).
    pub generation: u32,
}

impl Guard {
    /// The guard pinned in `pins`; nothing is read or checked yet.
    pub fn new(pins: PinDir) -> Self {
        Self { pins }
    }

    /// Runs the checks every command that touches BPF state runs first (privileges,
    /// kernel, bpffs), so that a refusal changes nothing, and returns the guard.
    pub fn open(pins: PinDir) -> Result<Self> {
        let guard = Self::new(pins);
        guard.preflight()?;
        Ok(guard)
    }

    /// As [`Self::open`], but mounts bpffs first when the pin directory lies under
    /// `/sys/fs/bpf` and nothing is mounted there (`attach`, `run`). Returns whether it
    /// mounted.
    pub fn open_mounting(pins: PinDir) -> Result<(Self, bool)> {
        preflight::require_privileges()?;
        let mounted = preflight::ensure_bpffs(pins.root())?;
        Ok((Self::open(pins)?, mounted))
    }

    /// Privileges, kernel and bpffs.
    pub fn preflight(&self) -> Result<()> {
        preflight::require_privileges()?;
        preflight::require_kernel()?;
        preflight::require_bpffs(self.pins.root())?;
        Ok(())
    }

    /// The pin directory.
    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    /// True when maps are pinned: the guard has state here.
    pub fn has_maps(&self) -> bool {
        self.pins.has_maps()
    }

    /// True when a link for `ifindex` is pinned here.
    pub fn has_link(&self, ifindex: u32) -> bool {
        self.pins.has_link(ifindex)
    }

    fn maps(&self) -> Result<GuardMaps> {
        Ok(GuardMaps::open(&self.pins)?)
    }

    /// Refuses pinned maps of another layout.
    pub fn check_layout(&self) -> Result<()> {
        Ok(bpf_maps::check_layout(&self.pins)?)
    }
}

/// Attaching and detaching.
impl Guard {
    /// Attaches to every interface in `names`, or to none (see [`AttachOptions`]).
    pub fn attach(&self, names: &[String], options: &AttachOptions) -> Result<Vec<Attached>> {
        attach::attach(&self.pins, names, options)
    }

    /// Detaches from the interfaces `which` names; the last detach removes the pinned maps
    /// too. Links of deleted interfaces are removed by every detach. Detaching what is not
    /// attached is not an error: it is reported in [`Detached::not_attached`].
    pub fn detach(&self, which: &Detach) -> Result<Detached> {
        // Resolve every name before touching anything.
        let named: Vec<(String, u32)> = match which {
            Detach::Named(names) => names
                .iter()
                .map(|name| {
                    net::interface::ifindex(name)
                        .map(|ifindex| (name.clone(), ifindex))
                        .map_err(|_| Error::DetachUnknownInterface { name: name.clone() })
                })
                .collect::<Result<_>>()?,
            Detach::All => Vec::new(),
        };
        let netns = net::interface::netns_id()?;
        let pins = &self.pins;
        // Serialised with attach, other detaches and policy edits.
        let Some(_lock) = pins.lock()? else {
            return Ok(Detached {
                had_pins: false,
                interfaces: named.into_iter().map(|(name, _)| (name, false)).collect(),
                ..Detached::default()
            });
        };
        // A broken pin must not block the way out: without statuses every pin is a target.
        let statuses = links::list(pins).unwrap_or_default();
        let gone: Vec<u32> = statuses
            .iter()
            .filter(|link| link.interface_gone)
            .map(|link| link.ifindex)
            .collect();
        let targets: Vec<(String, u32)> = match which {
            Detach::All => pins
                .linked_ifindexes()?
                .into_iter()
                .filter(|ifindex| !gone.contains(ifindex))
                .map(|ifindex| {
                    let name = statuses
                        .iter()
                        .find(|link| link.ifindex == ifindex)
                        .and_then(|link| link.name.clone())
                        .or_else(|| net::interface::ifname(ifindex))
                        .unwrap_or_else(|| format!("ifindex {ifindex}"));
                    (name, ifindex)
                })
                .collect(),
            Detach::Named(_) => named,
        };
        let mut report = Detached {
            had_pins: true,
            ..Detached::default()
        };
        for (name, ifindex) in targets {
            let detached = detach_one(pins, netns, ifindex)?;
            report.interfaces.push((name, detached));
        }
        // A link whose interface was deleted protects nothing: its pin goes with any detach.
        for ifindex in gone {
            if detach_one(pins, netns, ifindex)? {
                report.gone_removed.push(ifindex);
            }
        }
        pins.remove_if_unused()?;
        Ok(report)
    }

    /// Detaches from (`name`, `ifindex`) pairs a caller attached itself (`run` on its way
    /// out); returns the names detached. Nothing to do when there is no pin directory.
    pub fn detach_interfaces(&self, targets: &[(String, u32)]) -> Result<Vec<String>> {
        let Some(_lock) = self.pins.lock()? else {
            return Ok(Vec::new());
        };
        let netns = net::interface::netns_id()?;
        let mut detached = Vec::new();
        for (name, ifindex) in targets {
            if detach_one(&self.pins, netns, *ifindex)? {
                detached.push(name.clone());
            }
        }
        self.pins.remove_if_unused()?;
        Ok(detached)
    }

    /// Every pinned link with what the kernel says about it.
    pub fn links(&self) -> Result<Vec<LinkStatus>> {
        Ok(links::list(&self.pins)?)
    }

    /// Keeps the directed broadcasts of this network namespace's attached interfaces in
    /// step with their addresses; returns them, or `None` when nothing is attached (or the
    /// maps are another version's, which the command itself reports).
    pub fn refresh_broadcasts(&self) -> Result<Option<Vec<Ipv4Addr>>> {
        if !self.pins.has_maps() {
            return Ok(None);
        }
        let mut maps = match GuardMaps::open(&self.pins) {
            Ok(maps) => maps,
            Err(bpf::Error::NotAttached | bpf::Error::LayoutMismatch { .. }) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let netns = net::interface::netns_id()?;
        refresh_namespace(&mut maps, netns).map(Some)
    }
}

/// Reading state.
impl Guard {
    /// Where the guard is attached, its mode and the rate-limit buckets in use.
    pub fn status(&self) -> Result<Status> {
        let links = self.links()?;
        let (mode, tracked) = if self.pins.has_maps() {
            let mode = stats::mode_name(self.maps()?.mode()?);
            (Some(mode), Some(bpf_maps::tracked(&self.pins)?))
        } else {
            (None, None)
        };
        Ok(Status {
            links,
            mode,
            tracked,
        })
    }

    /// Rate-limit buckets in use.
    pub fn tracked(&self) -> Result<Tracked> {
        Ok(bpf_maps::tracked(&self.pins)?)
    }

    /// Every counter, and those of each attached interface, read afresh (a detach and a new
    /// attach in between are followed).
    pub fn stats(&self) -> Result<StatsReport> {
        let maps = self.maps()?;
        self.stats_of(&maps)
    }

    fn stats_of(&self, maps: &GuardMaps) -> Result<StatsReport> {
        let mut snapshot = stats::read(maps)?;
        let links = self.links()?;
        let ifindexes: Vec<u32> = links.iter().map(|link| link.ifindex).collect();
        let netns = net::interface::netns_id()?;
        snapshot.interfaces = maps.interface_counters(netns, &ifindexes)?;
        Ok(stats::report(&snapshot, &links))
    }

    /// The per-code rows of `stats --by-code`.
    pub fn code_stats(&self) -> Result<Vec<CodeReport>> {
        let maps = self.maps()?;
        let snapshot = stats::read(&maps)?;
        Ok(stats::code_report(&stats::read_codes(
            &maps,
            &snapshot.icmp,
        )?))
    }

    /// The live policy, read back from the maps.
    pub fn policy(&self) -> Result<LivePolicy> {
        let maps = self.maps()?;
        Ok(LivePolicy {
            policy: policy::read_live(&maps)?,
            generation: policy::active_generation(&maps)?,
        })
    }

    /// The active policy generation.
    pub fn generation(&self) -> Result<u32> {
        Ok(policy::active_generation(&self.maps()?)?)
    }

    /// Sampled events each CPU may emit per second.
    pub fn events_per_sec(&self) -> Result<u32> {
        self.check_layout()?;
        Ok(self.maps()?.events_per_sec()?)
    }
}

/// Changing a running guard.
impl Guard {
    fn lock_attached(&self) -> Result<PinLock> {
        Ok(self.pins.lock_attached()?)
    }

    /// Reads the live policy under the lock, lets `change` edit it, and applies the result
    /// atomically; when `change` refuses, nothing is written. Returns what `change` returned.
    pub fn edit_policy<T>(
        &self,
        change: impl FnOnce(&mut Policy) -> Result<T, PolicyError>,
    ) -> Result<T> {
        // The lock first, then the maps: a detach between the two cannot leave us editing
        // maps that are no longer pinned.
        let _lock = self.lock_attached()?;
        let mut maps = self.maps()?;
        let mut live = policy::read_live(&maps)?;
        let value = change(&mut live)?;
        policy::apply(&mut maps, &live)?;
        Ok(value)
    }

    /// Replaces the whole policy atomically; returns the generation now active.
    pub fn apply_policy(&self, new: &Policy) -> Result<u32> {
        let _lock = self.lock_attached()?;
        let mut maps = self.maps()?;
        policy::apply(&mut maps, new)?;
        Ok(policy::active_generation(&maps)?)
    }

    /// Sets the event budget; takes effect on the next packet.
    pub fn set_events_per_sec(&self, per_sec: u32) -> Result<()> {
        // Pins of an older version have no slot for this setting: say so plainly.
        self.check_layout()?;
        // Serialised with attach and policy edits, which write the same map.
        let _lock = self.lock_attached()?;
        Ok(self.maps()?.set_events_per_sec(per_sec)?)
    }
}

/// The sampled events: one reader at a time.
impl Guard {
    /// Opens the events for a reader that keeps them (`top`), waiting up to `patience` for
    /// another reader (a `run` drain) to let go; [`Error::EventsBusy`] after that.
    pub fn events(&self, patience: std::time::Duration) -> Result<Events> {
        self.check_layout()?;
        let maps = self.maps()?;
        let deadline = std::time::Instant::now() + patience;
        let lock = loop {
            if let Some(lock) = self.pins.lock_events(false)? {
                break lock;
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::EventsBusy);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let reader = EventReader::open(&self.pins)?;
        Ok(Events {
            _lock: lock,
            reader,
            maps,
        })
    }

    /// A reader that shares the events with others: each [`EventTap::drain`] holds the
    /// events only while it drains (`run`'s drop log), and skips when another reader
    /// (`top`) has them.
    pub fn event_tap(&self) -> EventTap {
        EventTap {
            pins: self.pins.clone(),
            reader: None,
            paused: false,
        }
    }
}

/// The sampled events of a guard, read by one reader while this lives.
pub struct Events {
    _lock: PinLock,
    reader: EventReader,
    maps: GuardMaps,
}

impl Events {
    /// Hands every event in the buffer now to `each`.
    pub fn drain(&mut self, each: impl FnMut(icmp_guard_common::events::IcmpEvent)) -> usize {
        self.reader.drain(each)
    }

    /// Waits up to `timeout` for new events.
    pub fn wait(&self, timeout: std::time::Duration) -> Result<()> {
        Ok(self.reader.wait(timeout)?)
    }

    /// The per-CPU packet totals the events are sampled from.
    pub fn cpu_totals(&self) -> Result<CpuTotals> {
        Ok(top::read_cpu_totals(&self.maps)?)
    }

    /// The event budget now.
    pub fn events_per_sec(&self) -> Result<u32> {
        Ok(self.maps.events_per_sec()?)
    }
}

/// What one [`EventTap::drain`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tapped {
    /// Another reader has the events; nothing was read.
    Busy,
    /// The events were drained; `resumed` when the last drain was [`Tapped::Busy`] (what
    /// that reader left behind was discarded as old news).
    Drained { resumed: bool },
}

/// A reader of the sampled events that holds them only while it drains.
pub struct EventTap {
    pins: PinDir,
    reader: Option<EventReader>,
    paused: bool,
}

impl EventTap {
    /// Hands every event in the buffer now to `each`, unless another reader has them.
    pub fn drain(
        &mut self,
        mut each: impl FnMut(icmp_guard_common::events::IcmpEvent),
    ) -> Result<Tapped> {
        let Some(_lock) = self.pins.lock_events(false)? else {
            self.paused = true;
            return Ok(Tapped::Busy);
        };
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => match EventReader::open(&self.pins) {
                Ok(reader) => self.reader.insert(reader),
                Err(err) => return Err(err.into()),
            },
        };
        let resumed = std::mem::take(&mut self.paused);
        if resumed {
            reader.drain(|_| {});
        }
        reader.drain(&mut each);
        Ok(Tapped::Drained { resumed })
    }

    /// Forgets the ring buffer (after an error: the next drain opens it afresh).
    pub fn reset(&mut self) {
        self.reader = None;
    }
}

/// Removes the pinned link of `ifindex` (which detaches the program) and gives its slot
/// back, also without a pin (a failed attach gives back the slot it claimed). The caller
/// holds the pin lock. `Ok(false)` when nothing was attached there.
fn detach_one(pins: &PinDir, netns: u64, ifindex: u32) -> Result<bool> {
    let removed = links::detach(pins, ifindex)?;
    // Missing maps are fine: there is no slot to give back.
    if let Ok(mut maps) = GuardMaps::open(pins) {
        let _ = maps.release_slot(netns, ifindex);
    }
    Ok(removed)
}

/// Recomputes the directed broadcasts of the interfaces of `netns` (the caller's network
/// namespace) that have a slot, and writes them into each of those slots. Returns them.
fn refresh_namespace(maps: &mut GuardMaps, netns: u64) -> Result<Vec<Ipv4Addr>> {
    let ifindexes: Vec<u32> = maps
        .slots()?
        .into_iter()
        .filter(|(_, config)| config.netns == netns)
        .map(|(_, config)| config.ifindex)
        .collect();
    let wanted = net::addresses::directed_broadcasts(&ifindexes)?;
    let octets: Vec<[u8; 4]> = wanted.iter().map(Ipv4Addr::octets).collect();
    maps.set_broadcasts(netns, &octets)?;
    Ok(wanted)
}
