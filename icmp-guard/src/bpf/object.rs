//! The embedded eBPF object: loading it, with its maps opened from (or created and pinned
//! to) a pin directory, as one instance of the XDP program per interface.

use aya::{
    Ebpf, EbpfLoader,
    programs::{Extension, ProgramError, ProgramFd, Xdp},
};
use icmp_guard_common::{
    LOCKED_PROGRAM_NAME, PROGRAM_NAME,
    interface::{DEFAULT_NS_PER_JIFFY, NO_SLOT, globals, link_kind},
    limit::{RATE_PREFIXES, RATE_SOURCES},
    maps, trace,
};

use super::{Error, Result, maps as guard_maps, pins::PinDir, sys};

/// Sizes of the rate-limit LRU maps, chosen when the maps are first created; each family
/// has its own map of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Per-source buckets per family (about 100 bytes of kernel memory each).
    pub sources: u32,
    /// Per-prefix buckets per family.
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
    /// Which of the two guard programs.
    pub variant: Variant,
}

/// The two builds of the guard, which differ only in how the limiter updates a bucket
/// (see `icmp_guard_common::limit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    /// The one the running kernel supports: [`Variant::Atomics`] where it has atomic
    /// compare-and-exchange, else [`Variant::Locks`].
    #[default]
    Auto,
    /// Compare-and-exchange (Linux 5.12+): `icmp_guard`.
    Atomics,
    /// `bpf_spin_lock`: `icmp_guard_lock`, for 5.10 and 5.11.
    Locks,
}

impl Variant {
    /// The program's name in the object.
    pub fn program_name(self) -> &'static str {
        match self.resolved() {
            Self::Locks => LOCKED_PROGRAM_NAME,
            _ => PROGRAM_NAME,
        }
    }

    /// [`Variant::Auto`] made concrete for this kernel.
    pub fn resolved(self) -> Self {
        match self {
            Self::Auto if sys::supports_atomic_cmpxchg() => Self::Atomics,
            Self::Auto => Self::Locks,
            chosen => chosen,
        }
    }
}

impl Instance {
    /// An instance for no interface, parsing Ethernet frames: what `BPF_PROG_TEST_RUN`
    /// tests load.
    pub const UNATTACHED: Self = Self {
        slot: NO_SLOT,
        link_kind: link_kind::ETHERNET,
        variant: Variant::Auto,
    };

    /// An instance for no interface that parses frames starting at the IP header, as on a
    /// tun device.
    pub const UNATTACHED_RAW_IP: Self = Self {
        slot: NO_SLOT,
        link_kind: link_kind::RAW_IP,
        variant: Variant::Auto,
    };

    /// The same instance, of `variant`.
    pub const fn with_variant(self, variant: Variant) -> Self {
        Self { variant, ..self }
    }
}

/// Nanoseconds per jiffy of the running kernel, the step of the limiter's coarse clock:
/// the resolution of CLOCK_MONOTONIC_COARSE, which advances once a tick.
pub fn ns_per_jiffy() -> u64 {
    static TICK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let mut resolution = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to write to; the clock id is a constant.
        let result =
            unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &raw mut resolution) };
        let ns = resolution.tv_sec as u64 * 1_000_000_000 + resolution.tv_nsec as u64;
        if result == 0 && ns > 0 {
            ns
        } else {
            DEFAULT_NS_PER_JIFFY
        }
    })
}

/// Maps whose `max_entries` the operator chooses (`--max-sources`, `--max-prefixes`), so a
/// pinned size different from the object's is not a layout change.
pub(crate) const SIZED_BY_OPERATOR: [&str; 4] = [
    maps::SOURCES_V4,
    maps::SOURCES_V6,
    maps::PREFIXES_V4,
    maps::PREFIXES_V6,
];

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
    let ebpf = open_object(pins, capacity, instance)?;
    load_program(ebpf, instance.variant.program_name())
}

/// The trace build (`icmp-guard trace`) of `instance`, with the maps of `pins` (so policy
/// and counters stay the running guard's; without, private maps, for the verifier tests),
/// its guard loaded under its own name ([`icmp_guard_common::trace::PROGRAM_NAME`] or the
/// locked one) and its report program loaded into the guard's tail-call slot.
pub fn load_trace_instance(pins: Option<&PinDir>, instance: Instance) -> Result<Ebpf> {
    let mut ebpf = load_trace_guard(pins, instance)?;
    super::trace::install_log(&mut ebpf)?;
    Ok(ebpf)
}

/// [`load_trace_instance`] without its report program: the guard alone (the verifier tests
/// load the two one at a time, to read each one's statistics).
pub fn load_trace_guard(pins: Option<&PinDir>, instance: Instance) -> Result<Ebpf> {
    let ebpf = open_object_from(crate::trace_object(), pins, Capacity::default(), instance)?;
    let name = match instance.variant.resolved() {
        Variant::Locks => trace::LOCKED_PROGRAM_NAME,
        _ => trace::PROGRAM_NAME,
    };
    load_program(ebpf, name)
}

pub(crate) fn load_program(mut ebpf: Ebpf, name: &str) -> Result<Ebpf> {
    let program: &mut Xdp = program_of(&mut ebpf, name, "finding the XDP program")?;
    loaded(program.load(), "loading the XDP program")?;
    Ok(ebpf)
}

/// The program `name` of `ebpf` as the program type `T` it is (to be) loaded as; `doing`
/// names the step in the error when it is not a `T`.
pub(crate) fn program_of<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &str,
    doing: &'static str,
) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| Error::NotInObject {
            what: format!("the XDP program {name}"),
        })?
        .try_into()
        .map_err(|source| Error::program(doing, source))
}

/// Of the two variants `names` of a program, the one `ebpf` loaded: the first for which
/// `loaded` (is it that program type, with a file descriptor?) holds.
pub(crate) fn loaded_variant<'n>(
    ebpf: &Ebpf,
    names: [&'n str; 2],
    loaded: impl Fn(&aya::programs::Program) -> bool,
) -> Option<&'n str> {
    names
        .into_iter()
        .find(|name| ebpf.program(name).is_some_and(&loaded))
}

/// A load's result, a verifier's refusal told apart (with its log) from the other errors of
/// `doing`.
pub(crate) fn loaded(
    result: std::result::Result<(), ProgramError>,
    doing: &'static str,
) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => Err(Error::VerifierRejected {
            source: io_error,
            log: verifier_log.to_string(),
        }),
        Err(source) => Err(Error::program(doing, source)),
    }
}

/// [`load_instance`] as a program extension (`BPF_PROG_TYPE_EXT`) of `function` in program
/// `target`: a component of a libxdp dispatcher (`super::dispatcher`). The same object and
/// the same program as the XDP attach loads; only the type it is loaded as differs.
pub fn load_extension(
    pins: Option<&PinDir>,
    capacity: Capacity,
    instance: Instance,
    target: ProgramFd,
    function: &str,
) -> Result<Ebpf> {
    let name = instance.variant.program_name();
    let mut ebpf = open_object_as(crate::ebpf_object(), pins, capacity, instance, Some(name))?;
    let program: &mut Extension = program_of(&mut ebpf, name, "finding the XDP program")?;
    loaded(
        program.load(target, function),
        "loading the XDP program as a program extension",
    )?;
    Ok(ebpf)
}

/// The guard program [`load_extension`] loaded in an object (either variant).
pub fn extension_program(ebpf: &mut Ebpf) -> Result<&mut Extension> {
    let name = loaded_variant(ebpf, [PROGRAM_NAME, LOCKED_PROGRAM_NAME], |program| {
        <&Extension>::try_from(program).is_ok_and(|program| program.fd().is_ok())
    })
    .unwrap_or(PROGRAM_NAME);
    program_of(ebpf, name, "finding the program extension")
}

/// Creates (or opens) the object's maps, pinned under `pins`, without loading a program.
pub(crate) fn open_object(
    pins: Option<&PinDir>,
    capacity: Capacity,
    instance: Instance,
) -> Result<Ebpf> {
    open_object_from(crate::ebpf_object(), pins, capacity, instance)
}

/// [`open_object`] of one of the two builds (`object`).
fn open_object_from(
    object: &[u8],
    pins: Option<&PinDir>,
    capacity: Capacity,
    instance: Instance,
) -> Result<Ebpf> {
    open_object_as(object, pins, capacity, instance, None)
}

/// [`open_object_from`], with program `extension` (when given) to be loaded as a program
/// extension instead of as XDP.
fn open_object_as(
    object: &[u8],
    pins: Option<&PinDir>,
    capacity: Capacity,
    instance: Instance,
    extension: Option<&str>,
) -> Result<Ebpf> {
    if crate::is_stub_build() || object.is_empty() {
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
    let tick = ns_per_jiffy();
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(maps::SOURCES_V4, capacity.sources)
        .map_max_entries(maps::SOURCES_V6, capacity.sources)
        .map_max_entries(maps::PREFIXES_V4, capacity.prefixes)
        .map_max_entries(maps::PREFIXES_V6, capacity.prefixes)
        .override_global(globals::LINK_KIND, &instance.link_kind, true)
        .override_global(globals::INTERFACE_SLOT, &instance.slot, true)
        .override_global(globals::NS_PER_JIFFY, &tick, true);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    if let Some(name) = extension {
        loader.extension(name);
    }
    loader
        .load(object)
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

/// The guard program [`load_instance`] loaded in an object (either variant).
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let name = loaded_variant(ebpf, [PROGRAM_NAME, LOCKED_PROGRAM_NAME], loaded_xdp)
        .unwrap_or(PROGRAM_NAME);
    program_of(ebpf, name, "finding the XDP program")
}

/// True for an XDP program that is loaded (has a file descriptor).
pub(crate) fn loaded_xdp(program: &aya::programs::Program) -> bool {
    <&Xdp>::try_from(program).is_ok_and(|program| program.fd().is_ok())
}

/// True when `name` is the name the kernel shows for a guard program (either variant, the
/// production build or the trace build).
pub fn is_guard_program_name(name: Option<&str>) -> bool {
    name.is_some_and(|name| {
        name == PROGRAM_NAME || name == LOCKED_PROGRAM_NAME || is_trace_program_name(Some(name))
    })
}

/// True when `name` is the name the kernel shows for the trace build (either variant).
pub fn is_trace_program_name(name: Option<&str>) -> bool {
    name.is_some_and(|name| name == trace::PROGRAM_NAME || name == trace::LOCKED_PROGRAM_NAME)
}
