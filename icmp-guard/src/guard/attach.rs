//! `attach`: decides, under the pin directory's lock and before anything changes, what
//! happens on each interface, then attaches to all of them or to none, with the first
//! policy in the maps before the first packet.

use std::os::fd::{AsFd as _, OwnedFd};

use icmp_guard_common::config;

use super::detach::{adopt_legacy_links, detach_one};
use crate::{
    bpf::{
        self, Capacity, GuardMaps, Instance, Variant, dispatcher,
        links::{self, ModeRequest},
        maps::{self as bpf_maps, Completion},
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
    /// Applied before the first packet; `None` keeps a live policy, or installs
    /// `first_policy` (else the safe default profile) on a first attach.
    pub policy: Option<Policy>,
    /// The policy of a first attach (or of one that completes maps an interrupted attach
    /// left unfinished) when `policy` is `None`: `/etc/icmp-guard/policy.toml` for the CLI.
    pub first_policy: Option<Policy>,
    /// Idempotent: an interface this pin directory already guards is left as it is and
    /// reported with [`Attached::already`], instead of refused with "already attached".
    pub ensure: bool,
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
    /// Join the interface's libxdp dispatcher at this priority (lower runs first) instead
    /// of attaching with a link of our own; where the interface runs no XDP program, a
    /// dispatcher holding just icmp-guard is made, which other libxdp programs can join.
    pub multiprog: Option<u32>,
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
    /// With `ensure`: the interface was already guarded and left as it was.
    pub already: bool,
    /// With `multiprog`: where in which libxdp dispatcher it runs.
    pub multiprog: Option<dispatcher::Joined>,
}

/// What an attach found in the pin directory and did about it before attaching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Maps an interrupted first attach left unfinished, with no link using them, were
    /// removed and made afresh.
    Rebuilt,
    /// Maps an interrupted attach left unfinished while a link used them were given the
    /// first policy and finished.
    Completed,
}

/// What an attach did.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub interfaces: Vec<Attached>,
    pub recovered: Option<Recovery>,
    /// The policy the maps got, when they got one (a first attach, `--policy`).
    pub policy_applied: bool,
}

/// What `attach` does on one interface.
enum Plan {
    /// Create a link and pin it.
    Fresh,
    /// Remove someone else's program (attached through netlink), then as `Fresh`.
    Replace { program_id: u32, mode: AttachMode },
    /// Join (or make) the interface's libxdp dispatcher at `priority`.
    Multiprog { priority: u32 },
    /// Swap the new program into our pinned link.
    Upgrade {
        link: OwnedFd,
        link_id: u32,
        old_program: u32,
    },
}

/// An interface already guarded by this pin directory, left as it is (`ensure`).
struct Kept {
    name: String,
    ifindex: u32,
    link_id: u32,
    program_id: u32,
    /// Where it runs, for a component of the interface's libxdp dispatcher (no link).
    member: Option<dispatcher::Member>,
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
///
/// Maps an interrupted first attach left unfinished are never used as they are: without a
/// link they are rebuilt, with one they get the first policy and are finished. Links whose
/// maps are gone (removed under them) are damaged, and refused.
pub(super) fn attach(
    pins: &PinDir,
    names: &[String],
    options: &AttachOptions,
) -> Result<Attachment> {
    // Names first: an unknown interface changes nothing, not even the pin directory.
    let targets = resolve_interfaces(names)?;
    let netns = net::interface::netns_id()?;

    let _lock = pins.lock_creating()?;
    adopt_legacy_links(pins, netns)?;
    let live_links = live_link_count(pins)?;
    let recovered = match bpf_maps::completion(pins) {
        // Nothing runs with them: whatever they hold (unfinished, half pinned, another
        // version's), they are made afresh.
        Ok(Completion::Unfinished) | Err(_) if live_links == 0 => {
            pins.remove_maps()?;
            Some(Recovery::Rebuilt)
        }
        Ok(Completion::Unfinished) => Some(Recovery::Completed),
        Ok(Completion::Empty) if live_links > 0 => {
            return Err(Error::Damaged {
                path: pins.root().to_path_buf(),
                reason: format!(
                    "its maps are gone while {live_links} pinned links still run the guard's program with them"
                ),
            });
        }
        Ok(Completion::Empty | Completion::Complete) => None,
        Err(err) => return Err(err.into()),
    };
    // Under the lock: a concurrent last detach may remove the maps until we hold it.
    let had_maps = pins.has_maps();
    let mut created = Vec::new();
    let outcome = plan(pins, netns, &targets, options).and_then(|(plans, kept)| {
        let (mut interfaces, policy_applied) =
            attach_planned(pins, netns, plans, options, &mut created)?;
        interfaces.extend(kept.into_iter().map(|kept| {
            // A component runs in the dispatcher, whose mode is the interface's.
            let running = kept
                .member
                .as_ref()
                .map_or(kept.program_id, |member| member.dispatcher_id);
            let mode = links::running_mode(kept.ifindex, running);
            Attached {
                multiprog: kept
                    .member
                    .zip(mode)
                    .map(|(member, mode)| dispatcher::Joined {
                        program_id: kept.program_id,
                        dispatcher_id: member.dispatcher_id,
                        mode,
                        position: member.position,
                        programs: member.programs.len(),
                        replaced: None,
                    }),
                mode,
                name: kept.name,
                ifindex: kept.ifindex,
                fallback: None,
                program_id: kept.program_id,
                link_id: kept.link_id,
                upgraded_from: None,
                replaced: None,
                already: true,
            }
        }));
        Ok((interfaces, policy_applied))
    });
    match outcome {
        Ok((interfaces, policy_applied)) => Ok(Attachment {
            interfaces,
            recovered,
            policy_applied,
        }),
        Err(err) => {
            // Leave nothing behind that this call created.
            for ifindex in &created {
                let _ignored = detach_one(pins, netns, *ifindex);
            }
            if !had_maps {
                let _ignored = pins.remove_if_unused();
            }
            Err(err)
        }
    }
}

/// How many pinned links (of any namespace) still hold an interface, dispatcher components
/// counted.
fn live_link_count(pins: &PinDir) -> Result<usize> {
    let mut live = pins.member_records()?.len();
    for record in pins.link_records()? {
        if links::inspect(&record.path)?.is_some_and(|info| info.ifindex != 0) {
            live += 1;
        }
    }
    Ok(live)
}

/// Decides, under the lock and before anything changes, what happens on each interface.
fn plan(
    pins: &PinDir,
    netns: u64,
    targets: &[(String, u32)],
    options: &AttachOptions,
) -> Result<(Vec<Target>, Vec<Kept>)> {
    let mut plans = Vec::new();
    let mut kept = Vec::new();
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
        if pins.has_member(netns, ifindex) {
            // Adopted as it runs (`run --multiprog`): a component is not swapped in place,
            // and rebuilding the dispatcher to change it would be a change nobody asked for.
            if options.multiprog.is_none() || !(options.upgrade || options.ensure) {
                return Err(Error::AlreadyMember { name });
            }
            let (Some(program_id), Some(member)) =
                dispatcher::recorded_member(&pins.member_path(netns, ifindex), ifindex)
            else {
                return Err(Error::MemberNotRunning { name });
            };
            runs_with_pinned_maps(pins, &name, program_id)?;
            kept.push(Kept {
                name,
                ifindex,
                link_id: 0,
                program_id,
                member: Some(member),
            });
            continue;
        }
        if let Some(priority) = options.multiprog {
            if pins.has_link(netns, ifindex) {
                return Err(Error::AlreadyLinked { name });
            }
            // What runs there now is looked at under libxdp's lock, when joining.
            push(name, Plan::Multiprog { priority });
            continue;
        }
        if pins.has_link(netns, ifindex) {
            let path = pins.link_path(netns, ifindex);
            let (link, info) = links::open(&path)?;
            if info.ifindex == 0 {
                // A link whose interface was deleted; this ifindex now names another one.
                links::remove_pin(&path)?;
            } else if state.mode_of(info.program_id).is_none() {
                return Err(Error::LinkElsewhere {
                    name,
                    path: pins.root().to_path_buf(),
                });
            } else if options.upgrade || options.ensure {
                // The program must run with the pinned maps, or a swap would change what
                // enforces the policy behind the operator's back.
                runs_with_pinned_maps(pins, &name, info.program_id)?;
                if options.upgrade {
                    push(
                        name,
                        Plan::Upgrade {
                            link,
                            link_id: info.id,
                            old_program: info.program_id,
                        },
                    );
                } else {
                    kept.push(Kept {
                        name,
                        ifindex,
                        link_id: info.id,
                        program_id: info.program_id,
                        member: None,
                    });
                }
                continue;
            } else {
                return Err(Error::AlreadyAttached { name });
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
    Ok((plans, kept))
}

/// Refuses a link whose program runs with maps that are not the pinned ones: someone
/// removed (or replaced) the maps under it.
pub(super) fn runs_with_pinned_maps(pins: &PinDir, name: &str, program_id: u32) -> Result<()> {
    let pinned = bpf_maps::pinned_map_id(pins, icmp_guard_common::maps::CONFIG);
    match (pinned, links::program_map_ids(program_id)) {
        (Some(config), Some(uses)) if uses.contains(&config) => Ok(()),
        // Without CAP_SYS_ADMIN the program's maps cannot be listed: what can be checked
        // (the maps are pinned, finished and of this layout) was.
        (Some(_), None) => Ok(()),
        _ => Err(Error::Damaged {
            path: pins.root().to_path_buf(),
            reason: format!(
                "the program on {name} runs with maps that are no longer the pinned ones"
            ),
        }),
    }
}

/// True when program `id` is an icmp-guard program (pinned in another pin directory).
fn is_icmp_guard_program(id: u32) -> bool {
    aya::programs::loaded_programs()
        .filter_map(std::result::Result::ok)
        .any(|info| info.id() == id && bpf::is_guard_program_name(info.name_as_str()))
}

fn attach_planned(
    pins: &PinDir,
    netns: u64,
    plans: Vec<Target>,
    options: &AttachOptions,
    created: &mut Vec<u32>,
) -> Result<(Vec<Attached>, bool)> {
    pins.create()?;
    // No maps, or maps an interrupted attach left unfinished: they get everything a first
    // attach writes, and the stamp last.
    let fresh = !matches!(bpf_maps::completion(pins), Ok(Completion::Complete));
    let dry_run = options.dry_run;
    // Creates and pins the maps on a first attach; the program instances come per interface.
    drop(object::open_object(
        Some(pins),
        options.capacity,
        Instance::UNATTACHED,
    )?);
    // The pin-directory lock taken by `attach` is the lock policy edits take
    // (`PinDir::lock_attached`): taking it again here would wait for ourselves.
    let mut guard_maps = GuardMaps::open_unfinished(pins)?;
    // Slots of this namespace whose link is not pinned were left by an attach that died
    // between claiming them and pinning its link: under the lock, nobody else is attaching.
    guard_maps.release_stale_slots(pins, netns)?;
    let chosen = match (&options.policy, &options.first_policy) {
        (Some(policy), _) => Some(policy.clone()),
        (None, Some(first)) if fresh => Some(first.clone()),
        (None, None) if fresh => Some(Policy::default_profile()),
        (None, _) => None,
    };
    let policy_applied = chosen.is_some();
    if let Some(chosen) = &chosen {
        // The checks a policy applied later gets: deny entries that cover the on-link
        // prefixes of these interfaces (or of those attached already) need force.
        let mut ifindexes: Vec<u32> = plans.iter().map(|target| target.ifindex).collect();
        ifindexes.extend(pins.linked_ifindexes(netns)?);
        let on_link: Vec<policy::Cidr> = net::addresses::on_link_prefixes(&ifindexes)?
            .into_iter()
            .map(|(addr, prefix)| policy::Cidr { addr, prefix })
            .collect();
        let before = if fresh {
            None
        } else {
            Some(policy::read_live(&guard_maps)?)
        };
        chosen.check_added_entries(before.as_ref(), &on_link)?;
    }
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
        // Last: from here the maps are known to hold a policy.
        guard_maps.stamp_complete()?;
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
        let instance = Instance {
            slot,
            link_kind,
            variant: Variant::Auto,
        };
        if let Plan::Multiprog { priority } = plan {
            attached.push(join(
                pins, netns, name, ifindex, instance, priority, options,
            )?);
            continue;
        }
        let mut ebpf = object::load_instance(Some(pins), options.capacity, instance)?;
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
            already: false,
            multiprog: None,
        };
        attached.push(match plan {
            Plan::Fresh => {
                let new = links::create(program_fd, pins, netns, &name, ifindex, options.mode)?;
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
                let new = links::create(program_fd, pins, netns, &name, ifindex, options.mode)
                    .map_err(|source| Error::ReplacedThenFailed {
                        name: name.clone(),
                        program_id,
                        source: Box::new(source),
                    })?;
                let mut result = attached_one(new, name);
                result.replaced = Some(program_id);
                result
            }
            Plan::Multiprog { .. } => unreachable!("joined above"),
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
                    already: false,
                    multiprog: None,
                }
            }
        });
    }
    if !fresh {
        configure(&mut guard_maps)?;
    }
    Ok((attached, policy_applied))
}

/// Joins (or makes) the libxdp dispatcher of `ifindex` with `instance` at `priority`, under
/// libxdp's lock, and records it in the pin directory.
fn join(
    pins: &PinDir,
    netns: u64,
    name: String,
    ifindex: u32,
    instance: Instance,
    priority: u32,
    options: &AttachOptions,
) -> Result<Attached> {
    let _xdp_lock = dispatcher::lock()?;
    pins.create_members_dir(netns)?;
    let ours = dispatcher::Ours {
        pins,
        capacity: options.capacity,
        instance,
        priority,
        record: pins.member_path(netns, ifindex),
    };
    // The mode matters only for a new dispatcher (one that runs keeps its own): `auto`
    // tries native, then generic where the driver refuses, as a plain attach does.
    let joined = match options.mode {
        ModeRequest::Generic => dispatcher::join(&name, ifindex, AttachMode::Generic, &ours)?,
        ModeRequest::Native => dispatcher::join(&name, ifindex, AttachMode::Native, &ours)?,
        ModeRequest::Auto => match dispatcher::join(&name, ifindex, AttachMode::Native, &ours) {
            Err(bpf::Error::Dispatcher(dispatcher::DispatcherError::Swap { source, .. }))
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ERANGE)
                ) =>
            {
                dispatcher::join(&name, ifindex, AttachMode::Generic, &ours)?
            }
            other => other?,
        },
    };
    Ok(Attached {
        name,
        ifindex,
        mode: Some(joined.mode),
        fallback: None,
        program_id: joined.program_id,
        link_id: 0,
        upgraded_from: None,
        replaced: None,
        already: false,
        multiprog: Some(joined),
    })
}
