//! `attach`: decides, under the pin directory's lock and before anything changes, what
//! happens on each interface, then attaches to all of them or to none, with the first
//! policy in the maps before the first packet.

use std::os::fd::{AsFd as _, OwnedFd};

use icmp_guard_common::{PROGRAM_NAME, config};

use crate::{
    bpf::{
        self, Capacity, GuardMaps, Instance,
        links::{self, ModeRequest},
        object,
        pins::PinDir,
    },
    error::{Error, Result},
    net::{
        self,
        link::{self as netlink, AttachMode},
    },
    policy::{self, Policy},
};

/// Everything `attach` needs besides the interfaces.
#[derive(Clone, Debug, Default)]
pub struct AttachOptions {
    pub mode: ModeRequest,
    pub dry_run: bool,
    /// Applied before the first packet; `None` keeps a live policy, or installs the safe
    /// default profile on a first attach.
    pub policy: Option<Policy>,
    /// Used only when the maps do not exist yet.
    pub capacity: Capacity,
    /// Where this pin directory already has a link on an interface, load this binary's
    /// program with the same pinned maps and swap it into that link atomically
    /// (`BPF_LINK_UPDATE`) instead of refusing with "already attached". The link keeps its
    /// mode; interfaces without a link are attached as usual.
    pub upgrade: bool,
    /// Take the place of another (non-icmp-guard) XDP program attached through netlink:
    /// it is removed, then ours attached. Between the two the interface runs no XDP program
    /// for the microseconds the link creation takes; if our attach then fails, the other
    /// program stays removed.
    pub replace: bool,
    /// Sampled events per second per CPU (`config::EVENTS_PER_SEC`); `None` keeps the live
    /// setting, or writes the default on a first attach.
    pub events_per_sec: Option<u32>,
}

/// One interface the program was attached to.
#[derive(Clone, Debug)]
pub struct Attached {
    pub name: String,
    pub ifindex: u32,
    /// The mode the kernel reports, read back over netlink.
    pub mode: Option<AttachMode>,
    /// Why native mode was not used, when `auto` fell back to generic.
    pub fallback: Option<String>,
    pub program_id: u32,
    /// The pinned bpf_link; an upgrade keeps it.
    pub link_id: u32,
    /// With `upgrade`: the program that ran in the link before the swap.
    pub upgraded_from: Option<u32>,
    /// The other program this attach took the place of (`--replace`).
    pub replaced: Option<u32>,
}

/// What `attach` does on one interface.
enum Plan {
    /// Create a link and pin it.
    Fresh,
    /// Remove someone else's program (attached through netlink), then as `Fresh`.
    Replace { program_id: u32, mode: AttachMode },
    /// Swap the new program into our pinned link.
    Upgrade {
        link: OwnedFd,
        link_id: u32,
        old_program: u32,
    },
}

/// One interface `attach` works on, decided before anything changes.
struct Target {
    name: String,
    ifindex: u32,
    /// Where its frames start (`icmp_guard_common::interface::link_kind`).
    link_kind: u8,
    plan: Plan,
}

/// The interfaces by name with their ifindexes now, one entry per interface (two names of
/// one interface count once); an unknown name is an error.
pub fn resolve_interfaces(names: &[String]) -> Result<Vec<(String, u32)>> {
    let mut targets: Vec<(String, u32)> = Vec::new();
    for name in names {
        let ifindex = net::interface::ifindex(name)?;
        if !targets.iter().any(|(_, index)| *index == ifindex) {
            targets.push((name.clone(), ifindex));
        }
    }
    Ok(targets)
}

/// Attaches to every interface in `names`, or to none: if one fails, the ones attached by
/// this call are detached again and fresh pins are removed. Runs under the pin directory's
/// lock. With `options.upgrade`, interfaces that already have our link get the new program
/// swapped into it; those swaps are not undone if a later interface fails (the old and new
/// programs share the maps, so either is a working guard).
pub(super) fn attach(
    pins: &PinDir,
    names: &[String],
    options: &AttachOptions,
) -> Result<Vec<Attached>> {
    // Names first: an unknown interface changes nothing, not even the pin directory.
    let targets = resolve_interfaces(names)?;

    let _lock = pins.lock_creating()?;
    // Under the lock: a concurrent last detach may remove the maps until we hold it.
    let had_maps = pins.has_maps();
    let netns = net::interface::netns_id()?;
    let mut created = Vec::new();
    let outcome = plan(pins, &targets, options)
        .and_then(|plans| attach_planned(pins, netns, plans, options, &mut created));
    if outcome.is_err() {
        // Leave nothing behind that this call created.
        for ifindex in &created {
            let _ignored = super::detach_one(pins, netns, *ifindex);
        }
        if !had_maps {
            let _ignored = pins.remove_if_unused();
        }
    }
    outcome
}

/// Decides, under the lock and before anything changes, what happens on each interface.
fn plan(pins: &PinDir, targets: &[(String, u32)], options: &AttachOptions) -> Result<Vec<Target>> {
    let mut plans = Vec::new();
    for (name, ifindex) in targets {
        let (name, ifindex) = (name.clone(), *ifindex);
        let state = netlink::xdp_state(ifindex)
            .map_err(|source| Error::XdpState {
                name: name.clone(),
                source,
            })?
            .ok_or_else(|| net::Error::UnknownInterface { name: name.clone() })?;
        let link_kind = links::link_kind_of(&name, state.link_type, state.kind.as_deref())?;
        let mut push = |name: String, plan: Plan| {
            plans.push(Target {
                name,
                ifindex,
                link_kind,
                plan,
            });
        };
        if pins.has_link(ifindex) {
            let path = pins.link_path(ifindex);
            let (link, info) = links::open(&path)?;
            if info.ifindex == 0 {
                // A link whose interface was deleted; this ifindex now names another one.
                links::remove_pin(&path)?;
            } else if state.mode_of(info.program_id).is_none() {
                return Err(Error::LinkElsewhere {
                    name,
                    path: pins.root().to_path_buf(),
                });
            } else if !options.upgrade {
                return Err(Error::AlreadyAttached { name });
            } else {
                push(
                    name,
                    Plan::Upgrade {
                        link,
                        link_id: info.id,
                        old_program: info.program_id,
                    },
                );
                continue;
            }
        }
        if let Some((mode, program_id)) = state.programs.first() {
            let (mode, program_id) = (*mode, *program_id);
            if is_icmp_guard_program(program_id) {
                return Err(Error::ForeignIcmpGuard { name, program_id });
            }
            if !options.replace {
                return Err(Error::ForeignProgram { name, program_id });
            }
            push(name, Plan::Replace { program_id, mode });
            continue;
        }
        push(name, Plan::Fresh);
    }
    Ok(plans)
}

/// True when program `id` is an icmp-guard program (pinned in another pin directory).
fn is_icmp_guard_program(id: u32) -> bool {
    aya::programs::loaded_programs()
        .filter_map(std::result::Result::ok)
        .any(|info| info.id() == id && info.name_as_str() == Some(PROGRAM_NAME))
}

fn attach_planned(
    pins: &PinDir,
    netns: u64,
    plans: Vec<Target>,
    options: &AttachOptions,
    created: &mut Vec<u32>,
) -> Result<Vec<Attached>> {
    pins.create()?;
    let fresh = !pins.has_maps();
    let dry_run = options.dry_run;
    // Creates and pins the maps on a first attach; the program instances come per interface.
    drop(object::open_object(
        Some(pins),
        options.capacity,
        Instance::UNATTACHED,
    )?);
    // The pin-directory lock taken by `attach` is the lock policy edits take
    // (`PinDir::lock_attached`): taking it again here would wait for ourselves.
    let mut guard_maps = GuardMaps::open(pins)?;
    // Slots of this namespace whose link is not pinned were left by an attach that died
    // between claiming them and pinning its link: under the lock, nobody else is attaching.
    guard_maps.release_stale_slots(pins, netns)?;
    let chosen = match &options.policy {
        Some(policy) => Some(policy.clone()),
        None if fresh => Some(Policy::default_profile()),
        None => None,
    };
    let events_per_sec = match options.events_per_sec {
        Some(rate) => Some(rate),
        None if fresh => Some(config::EVENTS_PER_SEC_DEFAULT),
        None => None,
    };
    let configure = |guard_maps: &mut GuardMaps| -> Result<()> {
        if let Some(rate) = events_per_sec {
            guard_maps.set_events_per_sec(rate)?;
        }
        if let Some(mut chosen) = chosen.clone() {
            if dry_run {
                chosen.mode = policy::Mode::DryRun;
            }
            Ok(policy::apply(guard_maps, &chosen)?)
        } else if dry_run {
            Ok(guard_maps.set_mode(config::MODE_DRY_RUN)?)
        } else {
            Ok(())
        }
    };
    // New maps get their policy before the first packet (and go away if the attach fails);
    // maps in use get it only once every interface is attached, so a refused attach leaves
    // the live policy untouched.
    if fresh {
        configure(&mut guard_maps)?;
    }
    let mut attached = Vec::new();
    for target in plans {
        let Target {
            name,
            ifindex,
            link_kind,
            plan,
        } = target;
        let upgrade = matches!(plan, Plan::Upgrade { .. });
        // An upgrade keeps the slot (and the counters) its link already has.
        let slot = guard_maps.claim_slot(pins, netns, ifindex, link_kind, upgrade)?;
        if !upgrade {
            // From here a failure must give the slot back: `detach` does, via `created`.
            created.push(ifindex);
        }
        // The directed broadcasts are in the slot before its first packet.
        super::refresh_namespace(&mut guard_maps, netns)?;
        let mut ebpf =
            object::load_instance(Some(pins), options.capacity, Instance { slot, link_kind })?;
        let program = object::xdp_program(&mut ebpf)?;
        let program_fd = program
            .fd()
            .map_err(|source| bpf::Error::program("finding the loaded XDP program", source))?
            .as_fd();
        let program_id = program
            .info()
            .map_err(|source| bpf::Error::program("reading the loaded XDP program", source))?
            .id();
        let attached_one = |new: links::NewLink, name: String| Attached {
            name,
            ifindex,
            mode: new.mode,
            fallback: new.fallback,
            program_id: new.program_id,
            link_id: new.link_id,
            upgraded_from: None,
            replaced: None,
        };
        attached.push(match plan {
            Plan::Fresh => {
                let new = links::create(program_fd, pins, &name, ifindex, options.mode)?;
                attached_one(new, name)
            }
            Plan::Replace { program_id, mode } => {
                netlink::remove_xdp(ifindex, mode).map_err(|source| {
                    if source.raw_os_error() == Some(libc::EBUSY) {
                        Error::ForeignLinked {
                            name: name.clone(),
                            program_id,
                            source,
                        }
                    } else {
                        Error::RemoveForeign {
                            name: name.clone(),
                            source,
                        }
                    }
                })?;
                let new = links::create(program_fd, pins, &name, ifindex, options.mode).map_err(
                    |source| Error::ReplacedThenFailed {
                        name: name.clone(),
                        program_id,
                        source: Box::new(source),
                    },
                )?;
                let mut result = attached_one(new, name);
                result.replaced = Some(program_id);
                result
            }
            Plan::Upgrade {
                link,
                link_id,
                old_program,
            } => {
                links::upgrade(&name, link.as_fd(), program_fd)?;
                Attached {
                    mode: links::running_mode(ifindex, program_id),
                    name,
                    ifindex,
                    fallback: None,
                    program_id,
                    link_id,
                    upgraded_from: Some(old_program),
                    replaced: None,
                }
            }
        });
    }
    if !fresh {
        configure(&mut guard_maps)?;
    }
    Ok(attached)
}
