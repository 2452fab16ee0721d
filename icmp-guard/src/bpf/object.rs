//! The embedded eBPF object: loading it, with its maps opened from (or created and pinned
//! to) a pin directory, as one instance of the XDP program per interface.

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, Xdp},
};
use icmp_guard_common::{
    PROGRAM_NAME,
    interface::{NO_SLOT, globals, link_kind},
    maps,
    policy::{RATE_PREFIXES, RATE_SOURCES},
};

use super::{Error, Result, maps as guard_maps, pins::PinDir};

/// Sizes of the rate-limit LRU maps, chosen when the maps are first created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Per-source buckets (about 96 bytes of kernel memory each).
    pub sources: u32,
    /// Per-prefix buckets.
    pub prefixes: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            sources: RATE_SOURCES,
            prefixes: RATE_PREFIXES,
        }
    }
}

/// Which instance of the program to load: every attachment runs its own, loaded with the
/// interface's slot and link kind as read-only globals (see [`icmp_guard_common::interface`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The slot in `INTERFACES` and `INTERFACE_COUNTERS`.
    pub slot: u32,
    /// One of [`link_kind`].
    pub link_kind: u8,
}

impl Instance {
    /// An instance for no interface, parsing Ethernet frames: what `BPF_PROG_TEST_RUN`
    /// tests load.
    pub const UNATTACHED: Self = Self {
        slot: NO_SLOT,
        link_kind: link_kind::ETHERNET,
    };

    /// An instance for no interface that parses frames starting at the IP header, as on a
    /// tun device.
    pub const UNATTACHED_RAW_IP: Self = Self {
        slot: NO_SLOT,
        link_kind: link_kind::RAW_IP,
    };
}

/// Maps whose `max_entries` the operator chooses (`--max-sources`, `--max-prefixes`), so a
/// pinned size different from the object's is not a layout change.
pub(crate) const SIZED_BY_OPERATOR: [&str; 2] = [maps::RATE_SOURCES, maps::RATE_PREFIXES];

/// Loads the program for no interface ([`Instance::UNATTACHED`]). With `pins`, every map
/// is opened from (or created and pinned to) the pin directory; without, the maps are
/// private to the returned object (verdict tests).
pub fn load(pins: Option<&PinDir>) -> Result<Ebpf> {
    load_instance(pins, Capacity::default(), Instance::UNATTACHED)
}

/// [`load`] of a chosen instance, with chosen LRU sizes (ignored for maps that are already
/// pinned). Pinned maps are reused only when [`guard_maps::check_layout`] accepts them.
pub fn load_instance(
    pins: Option<&PinDir>,
    capacity: Capacity,
    instance: Instance,
) -> Result<Ebpf> {
    let mut ebpf = open_object(pins, capacity, instance)?;
    let program = xdp_program(&mut ebpf)?;
    match program.load() {
        Ok(()) => Ok(ebpf),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => Err(Error::VerifierRejected {
            source: io_error,
            log: verifier_log.to_string(),
        }),
        Err(source) => Err(Error::program("loading the XDP program", source)),
    }
}

/// Creates (or opens) the object's maps, pinned under `pins`, without loading a program.
pub(crate) fn open_object(
    pins: Option<&PinDir>,
    capacity: Capacity,
    instance: Instance,
) -> Result<Ebpf> {
    if crate::is_stub_build() {
        return Err(Error::StubBuild);
    }
    if let Some(pins) = pins {
        // aya's map_pin_path reuses whatever is pinned without looking at it.
        guard_maps::check_layout(pins)?;
    }
    let paths: Vec<(&str, std::path::PathBuf)> = pins
        .map(|pins| {
            maps::ALL
                .iter()
                .map(|name| (*name, pins.map_path(name)))
                .collect()
        })
        .unwrap_or_default();
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(maps::RATE_SOURCES, capacity.sources)
        .map_max_entries(maps::RATE_PREFIXES, capacity.prefixes)
        .override_global(globals::LINK_KIND, &instance.link_kind, true)
        .override_global(globals::INTERFACE_SLOT, &instance.slot, true);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    loader
        .load(crate::ebpf_object())
        .map_err(|source| Error::object("loading the eBPF object", source))
}

/// The object loaded once with private maps (the LRU maps at one entry, since their size is
/// the operator's) and no program loaded: what the kernel makes of its map declarations.
pub(crate) fn probe() -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for name in SIZED_BY_OPERATOR {
        loader.map_max_entries(name, 1);
    }
    loader
        .load(crate::ebpf_object())
        .map_err(|source| Error::object("reading the map layout of the eBPF object", source))
}

/// The XDP program inside a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or_else(|| Error::NotInObject {
            what: format!("the XDP program {PROGRAM_NAME}"),
        })?
        .try_into()
        .map_err(|source| Error::program("finding the XDP program", source))
}
