//! `detach`, and the housekeeping of link records: those of deleted interfaces, and those
//! an older version pinned without their network namespace.

use super::netns;
use crate::{
    bpf::{GuardMaps, PinDir, dispatcher, links, pins::LinkRecord},
    error::{Error, Result},
    net::{self, link as netlink},
};

/// Which interfaces [`super::Guard::detach`] works on.
#[derive(Clone, Debug)]
pub enum Detach {
    /// These, by name.
    Named(Vec<String>),
    /// Every interface of the caller's network namespace with a pinned link.
    All,
}

/// What [`super::Guard::detach`] did.
#[derive(Clone, Debug, Default)]
pub struct Detached {
    /// False when there was no pin directory at all.
    pub had_pins: bool,
    /// Each interface worked on, by name, in order, and whether it was attached (else
    /// there was nothing to do).
    pub interfaces: Vec<(String, bool)>,
    /// Links of deleted interfaces that were removed, by their last ifindex.
    pub gone_removed: Vec<u32>,
    /// Links of other network namespaces the pin directory still holds (left alone).
    pub elsewhere: usize,
}

impl super::Guard {
    /// Detaches from the interfaces `which` names in the caller's network namespace; the
    /// last detach of the pin directory removes the pinned maps too. Links of deleted
    /// interfaces of this namespace are removed by every detach; links of other namespaces
    /// are left alone (and counted). Detaching what is not attached is not an error: it is
    /// reported in [`Detached::interfaces`].
    pub fn detach(&self, which: &Detach) -> Result<Detached> {
        // Resolve every name before touching anything.
        let named: Vec<(String, u32)> = match which {
            Detach::Named(names) => names
                .iter()
                .map(|name| match net::interface::ifindex(name) {
                    Ok(ifindex) => Ok((name.clone(), ifindex)),
                    Err(net::Error::UnknownInterface { .. }) => {
                        Err(Error::DetachUnknownInterface { name: name.clone() })
                    }
                    Err(err) => Err(err.into()),
                })
                .collect::<Result<_>>()?,
            Detach::All => Vec::new(),
        };
        let netns = netns()?;
        let pins = self.pins();
        // Serialised with attach, other detaches and policy edits.
        let Some(_lock) = pins.lock()? else {
            return Ok(Detached {
                had_pins: false,
                interfaces: named.into_iter().map(|(name, _)| (name, false)).collect(),
                ..Detached::default()
            });
        };
        adopt_legacy_links(pins, netns)?;
        // A broken pin must not block the way out: without statuses every pin is a target.
        let statuses = links::list(pins, netns).unwrap_or_default();
        let gone: Vec<u32> = statuses
            .iter()
            .filter(|link| link.interface_gone)
            .map(|link| link.ifindex)
            .collect();
        let targets: Vec<(String, u32)> = match which {
            Detach::All => pins
                .linked_ifindexes(netns)?
                .into_iter()
                .chain(pins.member_ifindexes(netns)?)
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
        report.elsewhere = pins
            .link_records()?
            .iter()
            .filter(|record| record.netns != Some(netns))
            .count();
        pins.remove_if_unused()?;
        Ok(report)
    }

    /// Detaches from (`name`, `ifindex`) pairs of the caller's namespace that a caller
    /// attached itself (`run` on its way out); returns the names detached. Nothing to do
    /// when there is no pin directory.
    pub fn detach_interfaces(&self, targets: &[(String, u32)]) -> Result<Vec<String>> {
        let pins = self.pins();
        let Some(_lock) = pins.lock()? else {
            return Ok(Vec::new());
        };
        let netns = netns()?;
        let mut detached = Vec::new();
        for (name, ifindex) in targets {
            if detach_one(pins, netns, *ifindex)? {
                detached.push(name.clone());
            }
        }
        pins.remove_if_unused()?;
        Ok(detached)
    }

    /// Removes the links of this namespace whose interface was deleted (they protect
    /// nothing) and gives their slots back; returns their last ifindexes.
    pub fn remove_gone_links(&self) -> Result<Vec<u32>> {
        let pins = self.pins();
        let Some(_lock) = pins.lock()? else {
            return Ok(Vec::new());
        };
        let netns = netns()?;
        let mut removed = Vec::new();
        for LinkRecord { ifindex, path, .. } in pins
            .link_records()?
            .into_iter()
            .filter(|record| record.netns == Some(netns))
        {
            if links::inspect(&path)?.is_some_and(|info| info.ifindex == 0)
                && detach_one(pins, netns, ifindex)?
            {
                removed.push(ifindex);
            }
        }
        Ok(removed)
    }
}

/// Removes the pinned link of (`netns`, `ifindex`), which detaches the program, and gives
/// its slot back, also without a pin (a failed attach gives back the slot it claimed). The
/// caller holds the pin lock. `Ok(false)` when nothing was attached there.
pub(super) fn detach_one(pins: &PinDir, netns: u64, ifindex: u32) -> Result<bool> {
    let removed = if pins.has_member(netns, ifindex) {
        leave_dispatcher(pins, netns, ifindex)?
    } else {
        links::detach(pins, netns, ifindex)?
    };
    // Unfinished or missing maps are fine: there is no slot to give back.
    if let Ok(mut maps) = GuardMaps::open_unfinished(pins) {
        let _ = maps.release_slot(netns, ifindex);
    }
    Ok(removed)
}

/// Takes icmp-guard out of the libxdp dispatcher of (`netns`, `ifindex`), leaving the other
/// programs running there, and removes its record. If that fails the program keeps running
/// and its record stays. The caller holds the pin lock.
fn leave_dispatcher(pins: &PinDir, netns: u64, ifindex: u32) -> Result<bool> {
    if let Some(program_id) = dispatcher::recorded_program_id(&pins.member_path(netns, ifindex)) {
        let _xdp_lock = dispatcher::lock()?;
        let name = net::interface::ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"));
        dispatcher::leave(&name, ifindex, program_id)?;
    }
    pins.remove_member(netns, ifindex)?;
    Ok(true)
}

/// Files the link records an older version pinned without their namespace under `netns`
/// when their link runs on that interface of `netns` (the caller's). The caller holds the
/// lock.
pub(super) fn adopt_legacy_links(pins: &PinDir, netns: u64) -> Result<()> {
    for record in pins.link_records()? {
        if record.netns.is_some() {
            continue;
        }
        let Some(info) = links::inspect(&record.path)? else {
            continue;
        };
        let runs_here = info.ifindex == record.ifindex
            && netlink::xdp_state(record.ifindex)
                .ok()
                .flatten()
                .is_some_and(|state| state.mode_of(info.program_id).is_some());
        if runs_here {
            pins.adopt_legacy_link(netns, record.ifindex)?;
        }
    }
    Ok(())
}
