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
mod detach;
mod health;
mod repair;
mod trace;

use std::net::Ipv4Addr;

/// What `Status::tracked` holds, for those behind the front door that build or read one.
pub use crate::bpf::maps::Tracked;
pub use attach::{AttachOptions, Attached, Attachment, Recovery, resolve_interfaces};
pub use detach::{Detach, Detached};
pub use health::{Check, CheckLine, Elsewhere, InterfaceStatus, ListUsage, State, Status};
pub use repair::Repaired;
pub use trace::{TraceSession, clock_time_in};

use crate::{
    bpf::{
        self, GuardMaps, PinDir, PinLock,
        links::{self, LinkStatus},
        maps as bpf_maps,
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

/// The live policy with the generation it is in and its revision.
#[derive(Clone, Debug)]
pub struct LivePolicy {
    pub policy: Policy,
    /// The active generation of the double buffer (0 or 1).
    pub generation: u32,
    /// Counts every policy written since the maps were made: 1 after the first attach.
    pub revision: u32,
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
        // A trace build left by a killed `trace` goes first: it guards as production does,
        // but it is not the program the operator installed.
        if let Err(err) = guard.restore_stale_traces() {
            log::warn!("swapping the production program back after a stale trace failed: {err}");
        }
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

    /// Privileges, kernel, bpffs, and a pin path no other user can change.
    pub fn preflight(&self) -> Result<()> {
        preflight::require_privileges()?;
        preflight::require_kernel()?;
        preflight::require_bpffs(self.pins.root())?;
        self.pins.check_trust()?;
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

    /// True when a link for `ifindex` of the caller's network namespace is pinned here.
    pub fn has_link(&self, ifindex: u32) -> bool {
        netns().is_ok_and(|netns| self.pins.has_link(netns, ifindex))
    }

    /// True when the next attach is a first one: no maps, or maps an interrupted attach
    /// left unfinished. It installs the first policy.
    pub fn is_first_attach(&self) -> bool {
        !matches!(
            bpf_maps::completion(&self.pins),
            Ok(bpf_maps::Completion::Complete)
        )
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
    pub fn attach(&self, names: &[String], options: &AttachOptions) -> Result<Attachment> {
        attach::attach(&self.pins, names, options)
    }

    /// The links of the caller's network namespace with what the kernel says about them.
    pub fn links(&self) -> Result<Vec<LinkStatus>> {
        Ok(links::list(&self.pins, netns()?)?)
    }

    /// The interfaces of this network namespace where icmp-guard is recorded as one program
    /// of a libxdp dispatcher (`attach --multiprog`), as links without a link id: `mode` is
    /// the dispatcher's while it runs icmp-guard's program, `None` when it no longer does.
    pub fn member_links(&self) -> Result<Vec<LinkStatus>> {
        let netns = netns()?;
        Ok(self
            .pins
            .member_ifindexes(netns)?
            .into_iter()
            .map(|ifindex| health::member_link(&self.pins, netns, ifindex).0)
            .collect())
    }

    /// Every interface of this network namespace that icmp-guard guards or should: its own
    /// links ([`Guard::links`]), then its places in libxdp dispatchers
    /// ([`Guard::member_links`]).
    pub fn guarded(&self) -> Result<Vec<LinkStatus>> {
        let mut all = self.links()?;
        all.extend(self.member_links()?);
        Ok(all)
    }

    /// True when this pin directory records icmp-guard on `ifindex`, by a link or in a
    /// dispatcher.
    pub fn guards(&self, ifindex: u32) -> bool {
        netns().is_ok_and(|netns| {
            self.pins.has_link(netns, ifindex) || self.pins.has_member(netns, ifindex)
        })
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
        refresh_namespace(&mut maps, netns()?).map(Some)
    }
}

/// Reading state.
impl Guard {
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
        let netns = netns()?;
        let links = self.links()?;
        let members = self.member_links()?;
        let ifindexes: Vec<u32> = links
            .iter()
            .chain(&members)
            .map(|link| link.ifindex)
            .collect();
        snapshot.interfaces = maps.interface_counters(netns, &ifindexes)?;
        Ok(stats::report(&snapshot, &links, &members))
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
            revision: maps.policy_revision()?,
        })
    }

    /// The active policy generation.
    pub fn generation(&self) -> Result<u32> {
        Ok(policy::active_generation(&self.maps()?)?)
    }

    /// The revision of the live policy (see [`LivePolicy::revision`]).
    pub fn revision(&self) -> Result<u32> {
        Ok(self.maps()?.policy_revision()?)
    }

    /// Sampled events each CPU may emit per second.
    pub fn events_per_sec(&self) -> Result<u32> {
        self.check_layout()?;
        Ok(self.maps()?.events_per_sec()?)
    }

    /// The sources serving a block time now, with the nanoseconds left of each, sorted.
    pub fn blocked(&self) -> Result<Vec<Blocked>> {
        blocked_now(&self.maps()?)
    }

    /// The sources and prefixes sweep detection flagged (the most recent first; those whose
    /// block ended too, until the table's LRU lets them go).
    pub fn flagged(&self) -> Result<Vec<crate::observe::recon::FlaggedSource>> {
        let entries = self.maps()?.flagged()?;
        Ok(crate::observe::recon::flagged(
            &entries,
            bpf_maps::monotonic_ns(),
        ))
    }
}

/// What `unblock` lifted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unblocked {
    /// Sources that served a block time.
    pub sources: Vec<std::net::IpAddr>,
    /// Sources (as /32 or /128) and prefixes that sweep detection had blocked.
    pub sweeps: Vec<policy::Cidr>,
}

/// A source serving a block time.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Blocked {
    pub source: std::net::IpAddr,
    /// Milliseconds of the block left.
    pub remaining_ms: u64,
}

pub(crate) fn blocked_now(maps: &GuardMaps) -> Result<Vec<Blocked>> {
    let now = bpf_maps::monotonic_ns();
    let mut blocked: Vec<Blocked> = maps
        .blocked_entries()?
        .into_iter()
        .filter(|(_, until)| icmp_guard_common::block::holds(*until, now))
        .map(|(source, until)| Blocked {
            source,
            remaining_ms: (until - now).div_ceil(1_000_000),
        })
        .collect();
    blocked.sort_by_key(|entry| entry.source);
    Ok(blocked)
}

/// Changing a running guard.
impl Guard {
    fn lock_attached(&self) -> Result<PinLock> {
        Ok(self.pins.lock_attached()?)
    }

    /// Reads the live policy under the lock, lets `change` edit it, and applies the result
    /// atomically; when `change` refuses, or the result does not pass the checks a policy
    /// file gets (deny entries it adds that cover protected messages need
    /// [`Policy::force_lists`], with the on-link prefixes of the attached interfaces), nothing
    /// is written. Returns what `change` returned.
    pub fn edit_policy<T>(
        &self,
        change: impl FnOnce(&mut Policy) -> Result<T, PolicyError>,
    ) -> Result<T> {
        self.edit_policy_with(policy::LimiterState::KeepUnchanged, change)
    }

    /// [`Guard::edit_policy`], choosing what happens to the limiters' state (`policy reset`
    /// starts every limiter fresh).
    pub fn edit_policy_with<T>(
        &self,
        state: policy::LimiterState,
        change: impl FnOnce(&mut Policy) -> Result<T, PolicyError>,
    ) -> Result<T> {
        // The lock first, then the maps: a detach between the two cannot leave us editing
        // maps that are no longer pinned.
        let _lock = self.lock_attached()?;
        let mut maps = self.maps()?;
        let before = policy::read_live(&maps)?;
        let mut live = before.clone();
        let value = change(&mut live)?;
        live.check_added_entries(Some(&before), &self.on_link_prefixes()?)?;
        policy::apply_with(&mut maps, &live, state)?;
        Ok(value)
    }

    /// Replaces the whole policy atomically, under the checks of [`Self::edit_policy`];
    /// returns its revision.
    pub fn apply_policy(&self, new: &Policy) -> Result<u32> {
        let _lock = self.lock_attached()?;
        let mut maps = self.maps()?;
        let before = policy::read_live(&maps)?;
        new.check_added_entries(Some(&before), &self.on_link_prefixes()?)?;
        policy::apply(&mut maps, new)?;
        Ok(maps.policy_revision()?)
    }

    /// The prefixes on the links of the interfaces this namespace has attached: deny
    /// entries that cover one cut neighbour discovery or PMTUD there.
    pub fn on_link_prefixes(&self) -> Result<Vec<policy::Cidr>> {
        let netns = netns()?;
        let ifindexes = self.pins.linked_ifindexes(netns)?;
        Ok(net::addresses::on_link_prefixes(&ifindexes)?
            .into_iter()
            .map(|(addr, prefix)| policy::Cidr { addr, prefix })
            .collect())
    }

    /// Lifts the block of every blocked source inside one of `cidrs` (every one with
    /// `None`), block time and sweep detection's alike; returns what it unblocked (expired
    /// entries are removed too but not returned).
    pub fn unblock(&self, cidrs: Option<&[policy::Cidr]>) -> Result<Unblocked> {
        self.check_layout()?;
        let _lock = self.lock_attached()?;
        let mut maps = self.maps()?;
        let now = bpf_maps::monotonic_ns();
        let mut lifted = Vec::new();
        for (source, until) in maps.blocked_entries()? {
            let host = policy::Cidr::network_of(source, 128);
            if cidrs.is_some_and(|cidrs| !cidrs.iter().any(|cidr| cidr.contains(&host))) {
                continue;
            }
            maps.unblock(source)?;
            if icmp_guard_common::block::holds(until, now) {
                lifted.push(source);
            }
        }
        lifted.sort();
        // A sweeper's block lives in its sketch (or its prefix's). A prefix is lifted when
        // it holds an address asked for, or lies inside a prefix asked for: the operator
        // asked for those addresses' probes to pass.
        let mut sweeps = Vec::new();
        for (addr, len, until) in maps.sweep_blocks()? {
            let network = policy::Cidr::network_of(addr, len);
            if cidrs.is_some_and(|cidrs| {
                !cidrs
                    .iter()
                    .any(|cidr| cidr.contains(&network) || network.contains(cidr))
            }) {
                continue;
            }
            maps.forget_sweep(addr, len)?;
            if until > now {
                sweeps.push(network);
            }
        }
        sweeps.sort_by_key(|network| (network.addr, network.prefix));
        Ok(Unblocked {
            sources: lifted,
            sweeps,
        })
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
            if let Some(lock) = self.pins.lock_events()? {
                break lock;
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::EventsBusy {
                    holder: self
                        .pins
                        .events_holder()
                        .unwrap_or_else(|| "a process /proc/locks does not show".to_owned()),
                });
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
        let Some(_lock) = self.pins.lock_events()? else {
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

/// The identity of the caller's network namespace.
fn netns() -> Result<u64> {
    Ok(net::interface::netns_id()?)
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
    // Whether each interface forwards decides `[recon] enabled = "auto"`.
    let forwarding: Vec<(u32, bool)> = ifindexes
        .iter()
        .map(|&ifindex| (ifindex, net::interface::forwards(ifindex)))
        .collect();
    maps.set_forwarding(netns, &forwarding)?;
    Ok(wanted)
}
