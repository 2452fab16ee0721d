//! `status`: what protects each interface of the caller's network namespace, and whether
//! the pinned state can be trusted to do it: "damaged" when the maps a link's program runs
//! with are not the pinned ones (removed, never finished, replaced) or its interface slot
//! is missing. `status --check` turns that into an exit code.

use std::path::PathBuf;

use icmp_guard_common::{interface::link_kind, maps as map_names};
use serde::Serialize;

use super::netns;
use crate::{
    bpf::{
        GuardMaps, dispatcher,
        links::{self, LinkStatus},
        maps::{self as bpf_maps, Completion, Tracked},
        trace::{self as bpf_trace, Tracing},
    },
    error::Result,
    net::{self, link::AttachMode},
    observe::stats,
};

/// How one interface is guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Our program runs there with the pinned maps and its slot.
    Protected,
    /// A link is pinned but the kernel does not run our program there.
    NotRunning,
    /// The link's interface was deleted; its pin protects nothing.
    Gone,
    /// A `run` service waits for the interface to appear.
    Waiting,
    /// The program runs, but with state that cannot be read or changed: see the reason.
    Damaged,
}

impl State {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Protected => "protected",
            Self::NotRunning => "not running",
            Self::Gone => "gone",
            Self::Waiting => "waiting",
            Self::Damaged => "damaged",
        }
    }
}

/// One interface of the caller's namespace that the pin directory has a record of.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceStatus {
    /// Interface name, `None` when the interface is gone.
    pub name: Option<String>,
    pub ifindex: Option<u32>,
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
    /// The mode our program runs in there, `None` when it does not run there.
    pub mode: Option<AttachMode>,
    /// True when the kernel says the link's interface was deleted.
    pub interface_gone: bool,
    /// Where frames start for the program instance: `ethernet` or `raw-ip`.
    pub link_kind: Option<&'static str>,
    /// The instance's slot in the interface table.
    pub slot: Option<u32>,
    pub state: State,
    /// Why it is not protected, when it is not.
    pub reason: Option<String>,
    /// What to run to repair it, when it is damaged.
    pub repair: Option<String>,
    /// Whether sweep detection (`[recon]`) runs there, and why: "on (interface forwards)",
    /// "off (interface does not forward)", "on (policy)" or "off (policy)".
    pub recon: Option<&'static str>,
    /// While `icmp-guard trace` runs the trace build there: until when (HH:MM:SS).
    pub tracing_until: Option<String>,
    /// With `attach --multiprog`: where it runs in the interface's libxdp dispatcher.
    pub multiprog: Option<dispatcher::Member>,
}

/// Whether sweep detection runs on an interface under the live policy's `mode`.
pub fn recon_state(mode: u8, forwards: bool) -> &'static str {
    use icmp_guard_common::recon::mode;
    match mode {
        mode::ON => "on (policy)",
        mode::AUTO if forwards => "on (interface forwards)",
        mode::AUTO => "off (interface does not forward)",
        _ => "off (policy)",
    }
}

/// Links the pin directory holds for other network namespaces.
#[derive(Clone, Debug, Serialize)]
pub struct Elsewhere {
    /// The namespace's inode (`ip netns identify`, `lsns`); `None` for links of an older
    /// version, which did not record it.
    pub netns: Option<u64>,
    pub links: usize,
}

/// How full the allow and deny lists are.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ListUsage {
    pub v4: usize,
    pub v6: usize,
    /// Prefixes one policy may hold per family.
    pub capacity_v4: u32,
    pub capacity_v6: u32,
}

/// What `status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub pin_dir: PathBuf,
    /// The inode of the caller's network namespace, which the interfaces belong to.
    pub netns: u64,
    /// `absent`, `unfinished` (left half-made by an interrupted attach) or `complete`.
    pub maps: &'static str,
    /// `enforce` or `dry-run`, when the maps can be read.
    pub mode: Option<&'static str>,
    /// The revision of the live policy, when the maps can be read.
    pub revision: Option<u32>,
    /// Rate-limit buckets in use, when the maps can be read.
    pub tracked: Option<Tracked>,
    /// Allow and deny prefixes of the live policy, when the maps can be read.
    pub lists: Option<ListUsage>,
    /// Sources serving a block time now, when the maps can be read.
    pub blocked: Option<usize>,
    pub interfaces: Vec<InterfaceStatus>,
    /// What else the pin directory holds: links of other network namespaces.
    pub elsewhere: Vec<Elsewhere>,
    /// Problems of the pin directory as a whole.
    pub problems: Vec<String>,
}

impl Status {
    /// True when at least one interface of this namespace has a link here.
    pub fn attached(&self) -> bool {
        self.interfaces
            .iter()
            .any(|interface| interface.link_id.is_some())
    }
}

/// One line of `status --check`.
#[derive(Clone, Debug, Serialize)]
pub struct CheckLine {
    pub interface: String,
    pub state: State,
    pub reason: Option<String>,
}

/// The verdict of `status --check`: exit 0 when every interface asked about is protected,
/// 1 when one is not, 2 when one is damaged.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub lines: Vec<CheckLine>,
    pub code: u8,
}

const REPAIR: &str = "icmp-guard repair";

fn link_kind_name(kind: u8) -> &'static str {
    if kind == link_kind::RAW_IP {
        "raw-ip"
    } else {
        "ethernet"
    }
}

impl super::Guard {
    /// Where the guard is attached in the caller's network namespace, whether each
    /// interface is protected, and the state of the pinned maps.
    pub fn status(&self) -> Result<Status> {
        let pins = self.pins();
        let netns = netns()?;
        // Maps of another version are an error, as for every command that reads them.
        let completion = bpf_maps::completion(pins)?;
        let records = pins.link_records()?;
        let maps = match completion {
            Completion::Complete => GuardMaps::open(pins).map_err(|err| err.to_string()),
            Completion::Unfinished => Err("the pinned maps were never finished by the attach \
                                           that made them (it was interrupted)"
                .to_owned()),
            Completion::Empty => Err(format!(
                "its maps are no longer pinned in {}: the program keeps the policy it had, \
                 but nothing can read or change it",
                pins.maps_dir().display()
            )),
        };
        let pinned_config = bpf_maps::pinned_map_id(pins, map_names::CONFIG);
        let slots = maps
            .as_ref()
            .ok()
            .and_then(|maps| maps.slots().ok())
            .unwrap_or_default();
        let recon_mode = maps
            .as_ref()
            .ok()
            .and_then(|maps| maps.config().ok())
            .map(|config| config.generation(config.active_generation).recon.mode);
        let mut interfaces = Vec::new();
        for link in links::list(pins, netns)? {
            let slot = slots
                .iter()
                .find(|(_, config)| config.netns == netns && config.ifindex == link.ifindex);
            let (mut state, mut reason) =
                link_health(&link, maps.as_ref().err(), pinned_config, slot);
            let tracing = if link.mode.is_some() {
                bpf_trace::tracing(link.program_id)
            } else {
                None
            };
            if tracing == Some(Tracing::Stale) && state == State::Protected {
                // `open` swaps it back; this one could not (another command held the lock).
                state = State::Damaged;
                reason = Some(
                    "it runs the trace build left by an `icmp-guard trace` that was killed \
                     (it guards, but reports nothing)"
                        .to_owned(),
                );
            }
            interfaces.push(InterfaceStatus {
                tracing_until: match tracing {
                    Some(Tracing::Until { remaining_ns }) => Some(super::clock_time_in(
                        std::time::Duration::from_nanos(remaining_ns),
                    )),
                    _ => None,
                },
                ..interface_status(&link, slot, recon_mode, state, reason)
            });
        }
        for ifindex in pins.member_ifindexes(netns)? {
            let slot = slots
                .iter()
                .find(|(_, config)| config.netns == netns && config.ifindex == ifindex);
            interfaces.push(member_status(
                pins,
                netns,
                ifindex,
                maps.as_ref().err(),
                pinned_config,
                slot,
                recon_mode,
            ));
        }
        let attached: Vec<String> = interfaces
            .iter()
            .filter_map(|interface| interface.name.clone())
            .collect();
        for record in waiting(pins, netns, &attached)? {
            {
                interfaces.push(InterfaceStatus {
                    name: Some(record.interface.clone()),
                    ifindex: net::interface::ifindex(&record.interface).ok(),
                    link_id: None,
                    program_id: None,
                    mode: None,
                    interface_gone: false,
                    link_kind: None,
                    slot: None,
                    recon: None,
                    state: State::Waiting,
                    reason: Some(format!(
                        "`icmp-guard run` (pid {}) waits for it to appear and attaches then",
                        record.pid
                    )),
                    repair: None,
                    tracing_until: None,
                    multiprog: None,
                });
            }
        }
        let mut elsewhere: Vec<Elsewhere> = Vec::new();
        for record in records.iter().filter(|record| record.netns != Some(netns)) {
            match elsewhere
                .iter_mut()
                .find(|other| other.netns == record.netns)
            {
                Some(other) => other.links += 1,
                None => elsewhere.push(Elsewhere {
                    netns: record.netns,
                    links: 1,
                }),
            }
        }
        let mut problems = Vec::new();
        if completion == Completion::Unfinished && records.is_empty() {
            problems.push(
                "the pinned maps were left half-made by an interrupted attach (nothing runs \
                 with them): the next attach rebuilds them"
                    .to_owned(),
            );
        } else if let Err(reason) = &maps
            && !records.is_empty()
        {
            problems.push(format!("damaged: {reason}; repair it with `{REPAIR}`"));
        }
        let (mode, revision, tracked, lists, blocked) = match &maps {
            Ok(maps) => (
                Some(stats::mode_name(maps.mode()?)),
                Some(maps.policy_revision()?),
                Some(bpf_maps::tracked(pins)?),
                Some(list_usage(maps)?),
                Some(super::blocked_now(maps)?.len()),
            ),
            Err(_) => (None, None, None, None, None),
        };
        Ok(Status {
            pin_dir: pins.root().to_path_buf(),
            netns,
            maps: match completion {
                Completion::Empty => "absent",
                Completion::Unfinished => "unfinished",
                Completion::Complete => "complete",
            },
            mode,
            revision,
            tracked,
            lists,
            blocked,
            interfaces,
            elsewhere,
            problems,
        })
    }

    /// The interfaces a `run` service of this namespace waits for: recorded as guarded, not
    /// attached now (deleted, not created yet).
    pub fn waiting(&self) -> Result<Vec<String>> {
        let netns = netns()?;
        let attached: Vec<String> = links::list(self.pins(), netns)?
            .into_iter()
            .filter(|link| !link.interface_gone)
            .filter_map(|link| link.name)
            .collect();
        Ok(waiting(self.pins(), netns, &attached)?
            .into_iter()
            .map(|record| record.interface)
            .collect())
    }

    /// `status --check`: every interface in `names` (or, without names, every one this
    /// namespace has a link for) must be protected.
    pub fn check(&self, names: &[String]) -> Result<Check> {
        let status = self.status()?;
        let mut lines = Vec::new();
        if names.is_empty() {
            for interface in &status.interfaces {
                lines.push(CheckLine {
                    interface: interface.name.clone().unwrap_or_else(|| {
                        format!("ifindex {}", interface.ifindex.unwrap_or_default())
                    }),
                    state: interface.state,
                    reason: interface.reason.clone(),
                });
            }
            if lines.is_empty() {
                lines.push(CheckLine {
                    interface: "(none)".to_owned(),
                    state: State::NotRunning,
                    reason: Some(format!(
                        "icmp-guard is not attached to any interface of this network namespace \
                         (pin dir {})",
                        status.pin_dir.display()
                    )),
                });
            }
        }
        for name in names {
            let found = status
                .interfaces
                .iter()
                .find(|interface| interface.name.as_deref() == Some(name.as_str()));
            lines.push(match found {
                Some(interface) => CheckLine {
                    interface: name.clone(),
                    state: interface.state,
                    reason: interface.reason.clone(),
                },
                None => CheckLine {
                    interface: name.clone(),
                    state: State::NotRunning,
                    reason: Some(match net::interface::ifindex(name) {
                        Ok(_) => "icmp-guard is not attached to it".to_owned(),
                        Err(err) => err.to_string(),
                    }),
                },
            });
        }
        let damaged = lines.iter().any(|line| line.state == State::Damaged)
            || (!status.problems.is_empty() && status.attached());
        let code = if damaged {
            2
        } else if lines.iter().all(|line| line.state == State::Protected) {
            0
        } else {
            1
        };
        Ok(Check { lines, code })
    }
}

/// The service records of `netns` whose service is alive and whose interface is not among
/// `attached`.
fn waiting(
    pins: &crate::bpf::PinDir,
    netns: u64,
    attached: &[String],
) -> crate::bpf::Result<Vec<crate::bpf::pins::ServiceRecord>> {
    Ok(pins
        .service_records(netns)?
        .into_iter()
        .filter(|record| std::path::Path::new(&format!("/proc/{}", record.pid)).exists())
        .filter(|record| !attached.contains(&record.interface))
        .collect())
}

/// The interface `ifindex` of `netns` where icmp-guard is recorded as a component of the
/// libxdp dispatcher, as a link: no link id, the recorded program's id (0 when the record
/// is unreadable), and the dispatcher's mode while the dispatcher there still runs that
/// program (`None` when it does not: not running). Also the recorded id and the member.
pub(super) fn member_link(
    pins: &crate::bpf::PinDir,
    netns: u64,
    ifindex: u32,
) -> (LinkStatus, Option<u32>, Option<dispatcher::Member>) {
    let (program_id, member) =
        dispatcher::recorded_member(&pins.member_path(netns, ifindex), ifindex);
    let name = net::interface::ifname(ifindex);
    let mode = member.as_ref().and_then(|member| {
        net::link::xdp_state(ifindex)
            .ok()
            .flatten()
            .and_then(|state| state.mode_of(member.dispatcher_id))
    });
    let link = LinkStatus {
        name: name.clone(),
        ifindex,
        link_id: 0,
        program_id: program_id.unwrap_or_default(),
        mode,
        interface_gone: name.is_none(),
    };
    (link, program_id, member)
}

/// The status of an interface where icmp-guard is a component of the libxdp dispatcher.
fn member_status(
    pins: &crate::bpf::PinDir,
    netns: u64,
    ifindex: u32,
    maps_problem: Option<&String>,
    pinned_config: Option<u32>,
    slot: Option<&(u32, icmp_guard_common::interface::InterfaceConfig)>,
    recon_mode: Option<u8>,
) -> InterfaceStatus {
    let (link, program_id, member) = member_link(pins, netns, ifindex);
    let (state, mut reason) = link_health(&link, maps_problem, pinned_config, slot);
    if state == State::NotRunning {
        reason = Some(
            "the libxdp dispatcher there no longer runs icmp-guard's program (`icmp-guard \
             detach` removes the record)"
                .to_owned(),
        );
    }
    InterfaceStatus {
        link_id: None,
        program_id,
        multiprog: member,
        ..interface_status(&link, slot, recon_mode, state, reason)
    }
}

/// What `status` says of the interface of `link` in `state`; its link's ids, no trace and
/// no dispatcher.
fn interface_status(
    link: &LinkStatus,
    slot: Option<&(u32, icmp_guard_common::interface::InterfaceConfig)>,
    recon_mode: Option<u8>,
    state: State,
    reason: Option<String>,
) -> InterfaceStatus {
    InterfaceStatus {
        name: link.name.clone(),
        ifindex: Some(link.ifindex),
        link_id: Some(link.link_id),
        program_id: Some(link.program_id),
        mode: link.mode,
        interface_gone: link.interface_gone,
        link_kind: slot.map(|(_, config)| link_kind_name(config.link_kind)),
        slot: slot.map(|(slot, _)| *slot),
        recon: slot.zip(recon_mode).map(|((_, config), mode)| {
            recon_state(
                mode,
                config.flags & icmp_guard_common::interface::interface_flags::FORWARDING != 0,
            )
        }),
        repair: (state == State::Damaged).then(|| REPAIR.to_owned()),
        state,
        reason,
        tracing_until: None,
        multiprog: None,
    }
}

/// The state of one link of this namespace, given the maps (or why they cannot be used),
/// the id of the pinned `CONFIG` map and the interface's slot.
fn link_health(
    link: &LinkStatus,
    maps_problem: Option<&String>,
    pinned_config: Option<u32>,
    slot: Option<&(u32, icmp_guard_common::interface::InterfaceConfig)>,
) -> (State, Option<String>) {
    if link.interface_gone {
        return (
            State::Gone,
            Some("the interface was deleted; the next detach removes its pin".to_owned()),
        );
    }
    if link.mode.is_none() {
        return (
            State::NotRunning,
            Some(
                "the kernel no longer runs the guard there (another program took its place?)"
                    .to_owned(),
            ),
        );
    }
    if let Some(problem) = maps_problem {
        return (State::Damaged, Some(problem.clone()));
    }
    let runs_with_pinned = match (links::program_map_ids(link.program_id), pinned_config) {
        (Some(ids), Some(config)) => ids.contains(&config),
        // Without CAP_SYS_ADMIN the program's maps cannot be listed: not evidence of damage.
        (None, Some(_)) => true,
        (_, None) => false,
    };
    if !runs_with_pinned {
        return (
            State::Damaged,
            Some(
                "its program runs with maps that are no longer the pinned ones (they were \
                 removed or replaced): what `stats` and `policy` show is not what it enforces"
                    .to_owned(),
            ),
        );
    }
    if slot.is_none() {
        return (
            State::Damaged,
            Some(
                "its interface slot is missing from the pinned maps: its counters and \
                 directed broadcasts are not kept"
                    .to_owned(),
            ),
        );
    }
    (State::Protected, None)
}

fn list_usage(maps: &GuardMaps) -> Result<ListUsage> {
    let live = crate::policy::read_live(maps)?;
    let (v4, v6) = live
        .allow
        .iter()
        .chain(&live.deny)
        .fold((0, 0), |(v4, v6), cidr| {
            if cidr.addr.is_ipv4() {
                (v4 + 1, v6)
            } else {
                (v4, v6 + 1)
            }
        });
    let (capacity_v4, capacity_v6) = maps.list_capacities()?;
    Ok(ListUsage {
        v4,
        v6,
        capacity_v4,
        capacity_v6,
    })
}
