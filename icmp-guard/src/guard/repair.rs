//! `repair`: puts back what a damaged guard lost, without a gap. When the pinned maps were
//! removed (or replaced) while links still run the guard's program, the program still has
//! its maps: they are pinned again from it, with their policy and counters. A link whose
//! interface slot is missing gets this binary's program swapped in with a slot claimed
//! (an upgrade in place).

use icmp_guard_common::maps as map_names;

use super::{
    AttachOptions,
    attach::{self, Attachment},
    netns,
};
use crate::{
    bpf::{self, GuardMaps, links, maps as bpf_maps},
    error::{Error, Result},
};

/// What [`super::Guard::repair`] did.
#[derive(Clone, Debug, Default)]
pub struct Repaired {
    /// The program whose maps were pinned again, and how many.
    pub maps_from: Option<(u32, usize)>,
    /// Interfaces whose program was swapped to claim a slot.
    pub reslotted: Vec<String>,
    /// Interfaces where a killed `trace` left the trace build, swapped back to production.
    pub untraced: Vec<String>,
}

impl super::Guard {
    /// Repairs the guard of this pin directory (see the module); nothing to do when it is
    /// not damaged.
    pub fn repair(&self) -> Result<Repaired> {
        let pins = self.pins();
        let netns = netns()?;
        let mut repaired = Repaired::default();
        {
            let _lock = pins.lock_attached()?;
            let pinned_config = bpf_maps::pinned_map_id(pins, map_names::CONFIG);
            // The program of a live link of any namespace: they all share the maps.
            let mut program = None;
            for record in pins.link_records()? {
                if let Some(info) = links::inspect(&record.path)?
                    && info.ifindex != 0
                {
                    program = Some(info.program_id);
                    break;
                }
            }
            if let Some(program) = program {
                let ids = links::program_map_ids(program).ok_or(Error::CannotSeeProgram {
                    program_id: program,
                })?;
                let healthy = pinned_config.is_some_and(|config| ids.contains(&config))
                    && matches!(
                        bpf_maps::completion(pins),
                        Ok(bpf_maps::Completion::Complete)
                    );
                if !healthy {
                    let pinned = pin_program_maps(pins, &ids)? + pin_fresh_lock_maps(pins)?;
                    repaired.maps_from = Some((program, pinned));
                }
            }
        }
        // Slots: an upgrade in place claims one for each link that lacks it.
        let maps = GuardMaps::open(pins)?;
        let mut lacking = Vec::new();
        for link in links::list(pins, netns)? {
            if link.interface_gone || link.mode.is_none() {
                continue;
            }
            if maps.slot_of(netns, link.ifindex)?.is_none()
                && let Some(name) = link.name
            {
                lacking.push(name);
            }
        }
        drop(maps);
        repaired.untraced = self.restore_stale_traces()?;
        if !lacking.is_empty() {
            let options = AttachOptions {
                upgrade: true,
                ..AttachOptions::default()
            };
            let Attachment { interfaces, .. } = attach::attach(pins, &lacking, &options)?;
            repaired.reslotted = interfaces.into_iter().map(|a| a.name).collect();
        }
        Ok(repaired)
    }
}

/// Pins the maps of a running program (ids `ids`) under their names, replacing whatever
/// is pinned there; returns how many were pinned.
fn pin_program_maps(pins: &bpf::PinDir, ids: &[u32]) -> Result<usize> {
    pins.create()?;
    let mut pinned = 0;
    for &id in ids {
        let info = aya::maps::MapInfo::from_id(id)
            .map_err(|err| bpf::Error::map("reading a map of the running program", err))?;
        let Some(name) = info.name_as_str().and_then(full_name) else {
            // The program's own data sections (.rodata) are not pinned.
            continue;
        };
        let path = pins.map_path(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            std::fs::remove_file(&path)
                .map_err(|err| bpf::Error::io(format!("removing {}", path.display()), err))?;
        }
        let map = aya::maps::MapData::from_id(id).map_err(|err| {
            bpf::Error::map(format!("opening map {name} of the running program"), err)
        })?;
        map.pin(&path).map_err(|source| bpf::Error::PinMap {
            name: name.to_owned(),
            path: path.clone(),
            source: Box::new(source),
        })?;
        pinned += 1;
    }
    Ok(pinned)
}

/// Maps that hold no state and that one of the two program variants does not use: the
/// kernel lists only the maps a program uses, so they cannot be pinned again from it.
const STATELESS_MAPS: [&str; 1] = [map_names::BUCKET_LOCKS];

/// Pins a fresh copy of every [`STATELESS_MAPS`] map that [`pin_program_maps`] could not
/// pin from the running program: the compare-and-exchange variant never takes the stripe
/// locks, so a fresh (unlocked) map is exactly what it ran with. Returns how many.
fn pin_fresh_lock_maps(pins: &bpf::PinDir) -> Result<usize> {
    let missing: Vec<&str> = STATELESS_MAPS
        .into_iter()
        .filter(|name| std::fs::symlink_metadata(pins.map_path(name)).is_err())
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let mut object = bpf::object::probe()?;
    for name in &missing {
        let map = object
            .take_map(name)
            .ok_or_else(|| bpf::Error::NotInObject {
                what: format!("the map {name}"),
            })?;
        let path = pins.map_path(name);
        map.pin(&path).map_err(|source| bpf::Error::PinMap {
            name: (*name).to_owned(),
            path: path.clone(),
            source: Box::new(source),
        })?;
    }
    Ok(missing.len())
}

/// The name this binary pins a map under, from the kernel's name of it (cut to 15 bytes).
fn full_name(kernel_name: &str) -> Option<&'static str> {
    map_names::ALL
        .iter()
        .copied()
        .find(|name| *name == kernel_name)
        .or_else(|| {
            let mut longer = map_names::ALL
                .iter()
                .copied()
                .filter(|name| name.len() > 15 && name.starts_with(kernel_name));
            match (longer.next(), longer.next()) {
                (Some(name), None) if kernel_name.len() == 15 => Some(name),
                _ => None,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_map_names_cut_to_15_bytes_are_found() {
        assert_eq!(full_name("CONFIG"), Some("CONFIG"));
        assert_eq!(full_name("INTERFACE_COUNT"), Some("INTERFACE_COUNTERS"));
        assert_eq!(full_name("INTERFACES"), Some("INTERFACES"));
        assert_eq!(full_name(".rodata"), None);
        assert_eq!(full_name("INTERFACE"), None, "not a cut name");
    }
}
