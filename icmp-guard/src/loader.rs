//! Loads the XDP program, attaches it to interfaces, pins links and maps, and finds them
//! again in later invocations.
//!
//! Lifecycle rules:
//!
//! - `attach` and `detach` run under an exclusive `flock` on the pin directory
//!   ([`PinDir::lock`]), the same lock that policy edits take, so concurrent CLI calls run one
//!   after the other; the kernel releases it when a process dies.
//! - Before pinned maps are reused, their kernel layout (type, key and value size, entries,
//!   flags) is compared with what this binary's object declares ([`check_layout`]): a binary
//!   never reads or runs against maps of another layout.
//! - XDP links are created with `BPF_LINK_CREATE` directly (never the legacy netlink path,
//!   which cannot be pinned), and an upgrade swaps the program inside the existing pinned link
//!   with `BPF_LINK_UPDATE`, so the interface is never without a program.

use std::{
    io,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::Path,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, MapError, MapInfo, PerCpuArray, PerCpuValues,
        RingBuf,
    },
    programs::{ProgramError, Xdp},
};
use icmp_guard_common::{
    CodeCounter, Counter, InterfaceCounter, LOCKED_PROGRAM_NAME, PROGRAM_NAME,
    config::{self, Config},
    global,
    interface::{self, DEFAULT_NS_PER_JIFFY, InterfaceConfig, NO_SLOT, globals, link_kind},
    limit::{LimiterConfig, RATE_PREFIXES, RATE_SOURCES, SharedBucket},
    maps,
    policy::{Rule, V4ListKey, V6ListKey},
};

use crate::{
    error::{Error, Result},
    netlink::{self, AttachMode},
    pins::PinDir,
    policy::{self, Policy},
    sys, system,
};

/// The attach mode an operator asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeRequest {
    /// Native (driver) mode, falling back to generic where the driver lacks XDP.
    #[default]
    Auto,
    /// Native (driver) mode or fail.
    Native,
    /// Generic (skb) mode, slower but supported everywhere.
    Generic,
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

/// A pinned link and what the kernel says about it now.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LinkStatus {
    /// Interface name, `None` when the interface is gone.
    pub name: Option<String>,
    pub ifindex: u32,
    pub link_id: u32,
    pub program_id: u32,
    /// The mode our program runs in on that interface, `None` when it no longer runs there.
    pub mode: Option<AttachMode>,
    /// True when the kernel says the link's interface was deleted: the pin protects nothing
    /// and the next `detach` removes it.
    pub interface_gone: bool,
}

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

/// Where frames start on an interface of `link_type` (`ARPHRD_*`) and driver `kind`, or why
/// icmp-guard refuses it. Only kinds whose frame start is proven by a test are accepted:
/// parsing a layer-3 interface as Ethernet would read an address as the EtherType and pass
/// every packet.
pub fn link_kind_of(name: &str, link_type: u16, kind: Option<&str>) -> Result<u8> {
    match (link_type, kind) {
        (libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK, _) => Ok(link_kind::ETHERNET),
        // tun hands XDP the IP header itself (tun_get_user resets the MAC header to it).
        (libc::ARPHRD_NONE, Some("tun")) => Ok(link_kind::RAW_IP),
        (link_type, kind) => Err(Error::UnsupportedLinkType {
            name: name.to_owned(),
            link_type,
            what: match kind {
                Some(kind) => format!("a {kind} interface"),
                None => "an interface of this type".to_owned(),
            },
        }),
    }
}

/// Maps whose `max_entries` the operator chooses (`--max-sources`, `--max-prefixes`), so a
/// pinned size different from the object's is not a layout change.
const SIZED_BY_OPERATOR: [&str; 4] = [
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
/// pinned). Pinned maps are reused only when [`check_layout`] accepts them.
pub fn load_instance(
    pins: Option<&PinDir>,
    capacity: Capacity,
    instance: Instance,
) -> Result<Ebpf> {
    let mut ebpf = open_object(pins, capacity, instance)?;
    let name = instance.variant.program_name();
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| {
            Error::bpf(
                "finding the XDP program",
                format!("{name} is not in the object"),
            )
        })?
        .try_into()
        .map_err(|err| Error::bpf("finding the XDP program", err))?;
    match program.load() {
        Ok(()) => Ok(ebpf),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => Err(Error::VerifierRejected {
            reason: io_error.to_string(),
            log: verifier_log.to_string(),
        }),
        Err(err) => Err(Error::bpf("loading the XDP program", err)),
    }
}

/// Creates (or opens) the object's maps, pinned under `pins`, without loading a program.
fn open_object(pins: Option<&PinDir>, capacity: Capacity, instance: Instance) -> Result<Ebpf> {
    if crate::is_stub_build() {
        return Err(Error::StubBuild);
    }
    if let Some(pins) = pins {
        // aya's map_pin_path reuses whatever is pinned without looking at it.
        check_layout(pins)?;
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
    let tick = ns_per_jiffy();
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
    let mut ebpf = loader
        .load(crate::ebpf_object())
        .map_err(|err| Error::bpf("loading the eBPF object", err))?;
    stamp_layout(&mut ebpf)?;
    Ok(ebpf)
}

/// What the kernel says about one map: enough to tell two layouts apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MapShape {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
}

impl MapShape {
    fn of(info: &MapInfo) -> Self {
        Self {
            map_type: map_type_number(info),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        }
    }

    /// The first difference that makes `pinned` unusable where `expected` is declared, as
    /// "map NAME has value size 8, this binary expects 4".
    fn difference(name: &str, pinned: Self, expected: Self) -> Option<String> {
        let fields = [
            ("type", pinned.map_type, expected.map_type),
            ("key size", pinned.key_size, expected.key_size),
            ("value size", pinned.value_size, expected.value_size),
            ("flags", pinned.flags, expected.flags),
        ];
        let entries = (!SIZED_BY_OPERATOR.contains(&name)).then_some((
            "max_entries",
            pinned.max_entries,
            expected.max_entries,
        ));
        fields
            .into_iter()
            .chain(entries)
            .find(|(_, have, want)| have != want)
            .map(|(what, have, want)| {
                format!("map {name} has {what} {have}, this binary expects {want}")
            })
    }
}

fn map_type_number(info: &MapInfo) -> u32 {
    // MapInfo keeps bpf_map_info private; MapType is a fieldless enum with the kernel's
    // numbering, so its discriminant is the kernel's number.
    info.map_type().map_or(u32::MAX, |map_type| map_type as u32)
}

/// Refuses pinned maps that another icmp-guard version made: every map this binary pins
/// must be there with the type, key and value size, flags and (except the operator-sized
/// LRU maps) number of entries that this binary's object declares. Passes when nothing is
/// pinned yet. Pinned maps this binary does not know are ignored (and removed with the
/// pin directory).
pub fn check_layout(pins: &PinDir) -> Result<()> {
    let pinned: Vec<&str> = maps::ALL
        .iter()
        .copied()
        .filter(|name| pins.map_path(name).exists())
        .collect();
    if pinned.is_empty() {
        return Ok(());
    }
    let expected = expected_shapes()?;
    let mismatch = |detail: String| Error::LayoutMismatch {
        path: pins.maps_dir(),
        detail,
    };
    for (name, want) in expected {
        let path = pins.map_path(name);
        if !pinned.contains(&name) {
            return Err(mismatch(format!(
                "map {name} is missing, this binary needs it"
            )));
        }
        let have = MapInfo::from_pin(&path).map_err(|err| Error::BrokenPinState {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        if let Some(detail) = MapShape::difference(name, MapShape::of(&have), want) {
            return Err(mismatch(detail));
        }
    }
    // Same shapes, and the same meaning of what is in them.
    match pinned_layout_version(pins)? {
        0 => Ok(()),
        version if version == config::LAYOUT_VERSION => Ok(()),
        version => Err(mismatch(format!(
            "layout version {version}, this binary uses {}",
            config::LAYOUT_VERSION
        ))),
    }
}

/// Writes this binary's layout version into maps that were just created (their `layout`
/// is 0); pinned maps that passed [`check_layout`] already carry it.
fn stamp_layout(ebpf: &mut Ebpf) -> Result<()> {
    let map = ebpf
        .map_mut(maps::CONFIG)
        .ok_or_else(|| Error::bpf("finding map CONFIG", "not in the object"))?;
    let mut settings: Array<&mut MapData, Config> =
        Array::try_from(map).map_err(|err| Error::bpf("opening map CONFIG", err))?;
    let mut written = settings
        .get(&config::INDEX, 0)
        .map_err(|err| Error::bpf("reading the layout version", err))?;
    if written.layout == 0 {
        written.layout = config::LAYOUT_VERSION;
        settings
            .set(config::INDEX, written, 0)
            .map_err(|err| Error::bpf("writing the layout version", err))?;
    }
    Ok(())
}

/// The layout version written in pinned maps; 0 when none is (maps made by a crashed
/// first attach before it wrote one: their shapes are this binary's, so they are too).
fn pinned_layout_version(pins: &PinDir) -> Result<u32> {
    let settings: Array<MapData, Config> = Array::try_from(pinned_map(pins, maps::CONFIG)?)
        .map_err(|err| map_open_error(pins, maps::CONFIG, err))?;
    settings
        .get(&config::INDEX, 0)
        .map(|config| config.layout)
        .map_err(|err| Error::bpf("reading the layout version", err))
}

/// Opens the pinned map `name`; a pin that is not a usable map is broken pin state.
pub(crate) fn pinned_map(pins: &PinDir, name: &str) -> Result<Map> {
    let path = pins.map_path(name);
    let broken = |reason: String| Error::BrokenPinState {
        path: path.clone(),
        reason,
    };
    let data = MapData::from_pin(&path).map_err(|err| broken(err.to_string()))?;
    Map::from_map_data(data).map_err(|err| broken(err.to_string()))
}

/// The shape of every map this binary pins, as the kernel creates them from the embedded
/// object: the object is loaded once with private maps (the LRU maps at one entry, since
/// their size is the operator's) and its programs are not loaded.
fn expected_shapes() -> Result<Vec<(&'static str, MapShape)>> {
    // One probe per process: `stats --watch` and the metrics server open the maps often.
    static SHAPES: std::sync::OnceLock<Vec<(&'static str, MapShape)>> = std::sync::OnceLock::new();
    if let Some(shapes) = SHAPES.get() {
        return Ok(shapes.clone());
    }
    let shapes = probe_shapes()?;
    Ok(SHAPES.get_or_init(|| shapes).clone())
}

fn probe_shapes() -> Result<Vec<(&'static str, MapShape)>> {
    let mut loader = EbpfLoader::new();
    for name in SIZED_BY_OPERATOR {
        loader.map_max_entries(name, 1);
    }
    let probe = loader
        .load(crate::ebpf_object())
        .map_err(|err| Error::bpf("reading the map layout of the eBPF object", err))?;
    maps::ALL
        .iter()
        .map(|name| {
            let map = probe.map(name).ok_or_else(|| {
                Error::bpf(
                    "reading the map layout of the eBPF object",
                    format!("map {name} is not in the object"),
                )
            })?;
            let info = map_data(map)
                .info()
                .map_err(|err| Error::bpf(format!("reading map {name}"), err))?;
            Ok((*name, MapShape::of(&info)))
        })
        .collect()
}

fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(data)
        | Map::ArrayOfMaps(data)
        | Map::BloomFilter(data)
        | Map::CgroupArray(data)
        | Map::CgroupStorage(data)
        | Map::CgrpStorage(data)
        | Map::CpuMap(data)
        | Map::DevMap(data)
        | Map::DevMapHash(data)
        | Map::HashMap(data)
        | Map::HashOfMaps(data)
        | Map::InodeStorage(data)
        | Map::LpmTrie(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::PerCpuCgroupStorage(data)
        | Map::PerCpuHashMap(data)
        | Map::PerCpuLruHashMap(data)
        | Map::PerfEventArray(data)
        | Map::ProgramArray(data)
        | Map::Queue(data)
        | Map::ReusePortSockArray(data)
        | Map::RingBuf(data)
        | Map::SockHash(data)
        | Map::SockMap(data)
        | Map::SkStorage(data)
        | Map::Stack(data)
        | Map::StackTraceMap(data)
        | Map::Unsupported(data)
        | Map::XskMap(data) => data,
    }
}

/// The guard program [`load_instance`] loaded in an object (either variant).
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let loaded = [PROGRAM_NAME, LOCKED_PROGRAM_NAME]
        .into_iter()
        .find(|name| {
            ebpf.program(name)
                .and_then(|program| <&Xdp>::try_from(program).ok())
                .is_some_and(|program| program.fd().is_ok())
        });
    let name = loaded.unwrap_or(PROGRAM_NAME);
    ebpf.program_mut(name)
        .ok_or_else(|| Error::bpf("finding the XDP program", "not in the object"))?
        .try_into()
        .map_err(|err| Error::bpf("finding the XDP program", err))
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

/// Attaches to every interface in `names`, or to none: if one fails, the ones attached by
/// this call are detached again and fresh pins are removed. Runs under the pin directory's
/// lock. With `options.upgrade`, interfaces that already have our link get the new program
/// swapped into it; those swaps are not undone if a later interface fails (the old and new
/// programs share the maps, so either is a working guard).
pub fn attach(pins: &PinDir, names: &[String], options: &AttachOptions) -> Result<Vec<Attached>> {
    // Names first: an unknown interface changes nothing, not even the pin directory.
    let targets = resolve_interfaces(names)?;

    let _lock = pins.lock_creating()?;
    // Under the lock: a concurrent last detach may remove the maps until we hold it.
    let had_maps = pins.has_maps();
    let mut created = Vec::new();
    let outcome = plan(pins, &targets, options)
        .and_then(|plans| attach_planned(pins, plans, options, &mut created));
    if outcome.is_err() {
        // Leave nothing behind that this call created.
        for ifindex in &created {
            let _ignored = detach(pins, *ifindex);
        }
        if !had_maps {
            let _ignored = pins.remove_if_unused();
        }
    }
    outcome
}

/// The interfaces by name with their ifindexes now, one entry per interface (two names of
/// one interface count once); an unknown name is an error.
pub fn resolve_interfaces(names: &[String]) -> Result<Vec<(String, u32)>> {
    let mut targets: Vec<(String, u32)> = Vec::new();
    for name in names {
        let ifindex = system::ifindex(name)?;
        if !targets.iter().any(|(_, index)| *index == ifindex) {
            targets.push((name.clone(), ifindex));
        }
    }
    Ok(targets)
}

/// One interface `attach` works on, decided before anything changes.
struct Target {
    name: String,
    ifindex: u32,
    /// Where its frames start ([`link_kind`]).
    link_kind: u8,
    plan: Plan,
}

/// Decides, under the lock and before anything changes, what happens on each interface.
fn plan(pins: &PinDir, targets: &[(String, u32)], options: &AttachOptions) -> Result<Vec<Target>> {
    let mut plans = Vec::new();
    for (name, ifindex) in targets {
        let (name, ifindex) = (name.clone(), *ifindex);
        let state = netlink::xdp_state(ifindex)
            .map_err(|err| Error::io(format!("reading the XDP state of {name}"), err))?
            .ok_or_else(|| Error::UnknownInterface { name: name.clone() })?;
        let link_kind = link_kind_of(&name, state.link_type, state.kind.as_deref())?;
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
            let (link, info) = open_link(&path)?;
            if info.ifindex == 0 {
                // A link whose interface was deleted; this ifindex now names another one.
                remove_pin(&path)?;
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
        .any(|info| {
            info.id() == id
                && [PROGRAM_NAME, LOCKED_PROGRAM_NAME]
                    .iter()
                    .any(|name| info.name_as_str() == Some(name))
        })
}

fn attach_planned(
    pins: &PinDir,
    plans: Vec<Target>,
    options: &AttachOptions,
    created: &mut Vec<u32>,
) -> Result<Vec<Attached>> {
    pins.create()?;
    let fresh = !pins.has_maps();
    let dry_run = options.dry_run;
    // Creates and pins the maps on a first attach; the program instances come per interface.
    drop(open_object(
        Some(pins),
        options.capacity,
        Instance::UNATTACHED,
    )?);
    // The pin-directory lock taken by `attach` is the lock policy edits take
    // (`PinDir::lock_attached`): taking it again here would wait for ourselves.
    let mut guard_maps = GuardMaps::open(pins)?;
    let netns = system::netns_id()?;
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
            policy::apply(guard_maps, &chosen)
        } else if dry_run {
            guard_maps.set_mode(config::MODE_DRY_RUN)
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
        crate::addresses::refresh_namespace(&mut guard_maps, netns)?;
        let instance = Instance {
            slot,
            link_kind,
            variant: Variant::Auto,
        };
        let mut ebpf = load_instance(Some(pins), options.capacity, instance)?;
        let program = xdp_program(&mut ebpf)?;
        let program_fd = program
            .fd()
            .map_err(|err| Error::bpf("finding the loaded XDP program", err))?
            .as_fd();
        let program_id = program
            .info()
            .map_err(|err| Error::bpf("reading the loaded XDP program", err))?
            .id();
        attached.push(match plan {
            Plan::Fresh => attach_one(program_fd, pins, &name, ifindex, options.mode)?,
            Plan::Replace { program_id, mode } => {
                netlink::remove_xdp(ifindex, mode).map_err(|err| {
                    if err.raw_os_error() == Some(libc::EBUSY) {
                        Error::ForeignLinked {
                            name: name.clone(),
                            program_id,
                            reason: err.to_string(),
                        }
                    } else {
                        Error::io(format!("removing the XDP program of {name}"), err)
                    }
                })?;
                let mut result = attach_one(program_fd, pins, &name, ifindex, options.mode)
                    .map_err(|err| Error::AttachFailed {
                        name: name.clone(),
                        reason: format!(
                            "{err}; the program it replaced (id {program_id}) was removed and is not restored"
                        ),
                    })?;
                result.replaced = Some(program_id);
                result
            }
            Plan::Upgrade {
                link,
                link_id,
                old_program,
            } => {
                sys::link_update(link.as_fd(), program_fd).map_err(|err| Error::UpgradeFailed {
                    name: name.clone(),
                    reason: err.to_string(),
                })?;
                Attached {
                    mode: running_mode(ifindex, program_id),
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

fn running_mode(ifindex: u32, program_id: u32) -> Option<AttachMode> {
    netlink::xdp_state(ifindex)
        .ok()
        .flatten()
        .and_then(|state| state.mode_of(program_id))
}

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

fn attach_one(
    program: BorrowedFd<'_>,
    pins: &PinDir,
    name: &str,
    ifindex: u32,
    mode: ModeRequest,
) -> Result<Attached> {
    let failed = |err: io::Error| Error::AttachFailed {
        name: name.to_owned(),
        reason: err.to_string(),
    };
    let (link, fallback) = match mode {
        ModeRequest::Generic => (
            sys::link_create_xdp(program, ifindex, XDP_FLAGS_SKB_MODE).map_err(failed)?,
            None,
        ),
        ModeRequest::Native => (
            sys::link_create_xdp(program, ifindex, XDP_FLAGS_DRV_MODE)
                .map_err(|err| native_refused(name, ifindex, err))?,
            None,
        ),
        ModeRequest::Auto => match sys::link_create_xdp(program, ifindex, XDP_FLAGS_DRV_MODE) {
            Ok(link) => (link, None),
            Err(native_err) => {
                let reason = native_refusal_reason(ifindex, &native_err);
                (
                    sys::link_create_xdp(program, ifindex, XDP_FLAGS_SKB_MODE).map_err(failed)?,
                    Some(reason),
                )
            }
        },
    };
    let info =
        sys::link_info(link.as_fd()).map_err(|err| Error::io("reading the XDP link", err))?;
    // Until the pin exists this fd is the only reference: an error drops it, which detaches.
    sys::obj_pin(link.as_fd(), &pins.link_path(ifindex))
        .map_err(|err| Error::io(format!("pinning the link of {name}"), err))?;
    Ok(Attached {
        name: name.to_owned(),
        ifindex,
        mode: running_mode(ifindex, info.program_id),
        fallback,
        program_id: info.program_id,
        link_id: info.id,
        upgraded_from: None,
        replaced: None,
    })
}

/// True when a native attach failed because the MTU is too large for single-buffer XDP:
/// veth says ERANGE ("Peer MTU is too large to set XDP"), most other drivers EINVAL.
fn mtu_too_large(err: &io::Error, mtu: Option<u32>) -> bool {
    match err.raw_os_error() {
        Some(libc::ERANGE) => true,
        Some(libc::EINVAL) => mtu.is_some_and(|mtu| mtu > 1500),
        _ => false,
    }
}

fn interface_mtu(ifindex: u32) -> Option<u32> {
    netlink::xdp_state(ifindex).ok().flatten()?.mtu
}

fn native_refused(name: &str, ifindex: u32, err: io::Error) -> Error {
    let mtu = interface_mtu(ifindex);
    match (mtu_too_large(&err, mtu), mtu) {
        (true, Some(mtu)) => Error::MtuTooLarge {
            name: name.to_owned(),
            mtu,
        },
        _ => Error::NativeUnsupported {
            name: name.to_owned(),
            reason: err.to_string(),
        },
    }
}

fn native_refusal_reason(ifindex: u32, err: &io::Error) -> String {
    let mtu = interface_mtu(ifindex);
    match (mtu_too_large(err, mtu), mtu) {
        (true, Some(mtu)) => format!("MTU {mtu} is too large for single-buffer native XDP"),
        _ => err.to_string(),
    }
}

/// Opens a pinned link and checks that it is an XDP link.
fn open_link(path: &Path) -> Result<(OwnedFd, sys::LinkInfo)> {
    let broken = |reason: String| Error::BrokenPinState {
        path: path.to_path_buf(),
        reason,
    };
    let link = sys::obj_get(path).map_err(|err| broken(err.to_string()))?;
    let info = sys::link_info(link.as_fd()).map_err(|err| broken(err.to_string()))?;
    if info.link_type != sys::BPF_LINK_TYPE_XDP {
        return Err(broken(format!(
            "a bpf_link of type {} where an XDP link belongs",
            info.link_type
        )));
    }
    Ok((link, info))
}

fn remove_pin(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|err| Error::io(format!("removing {}", path.display()), err))
}

/// Removes the pinned link of `ifindex`, which detaches the program from it. `Ok(false)`
/// when nothing was attached there. The caller holds the pin directory's lock.
pub fn detach(pins: &PinDir, ifindex: u32) -> Result<bool> {
    let path = pins.link_path(ifindex);
    // Detach first, so that the interface is free when we return even if another process
    // holds the link open; removing the pin alone would wait for the last descriptor.
    if let Ok(link) = sys::obj_get(&path) {
        let _ = sys::link_detach(link.as_fd());
    }
    let removed = match std::fs::remove_file(&path) {
        // The pin was the last reference to the link: the kernel releases it, and with it the
        // attachment, once no process has it open.
        Ok(()) => true,
        Err(err) if err.kind() == io::ErrorKind::NotFound => false,
        Err(err) => return Err(Error::io(format!("removing {}", path.display()), err)),
    };
    // Also without a pin: a failed attach gives back the slot it claimed.
    release_interface(pins, ifindex);
    Ok(removed)
}

/// Every pinned link with what the kernel says about it.
pub fn links(pins: &PinDir) -> Result<Vec<LinkStatus>> {
    let mut statuses = Vec::new();
    for ifindex in pins.linked_ifindexes()? {
        let path = pins.link_path(ifindex);
        let (_link, info) = match open_link(&path) {
            Ok(opened) => opened,
            // Unpinned by a concurrent detach between the listing and the open.
            Err(_) if !path.exists() => continue,
            Err(err) => return Err(err),
        };
        // The kernel sets a link's ifindex to 0 when its interface is deleted; an ifindex that
        // now names another interface is never reported as protected.
        let interface_gone = info.ifindex == 0;
        let state = if interface_gone {
            None
        } else {
            netlink::xdp_state(ifindex).ok().flatten()
        };
        statuses.push(LinkStatus {
            name: state.as_ref().map(|state| state.name.clone()),
            ifindex,
            link_id: info.id,
            program_id: info.program_id,
            mode: state.and_then(|state| state.mode_of(info.program_id)),
            interface_gone,
        });
    }
    Ok(statuses)
}

/// How many sources and prefixes have a rate-limit bucket now, estimated: buckets the
/// program created (it counts them per CPU), capped by the tables' capacity. Buckets leave
/// only by LRU eviction, so the estimate is exact until the tables are full and then says
/// "full"; buckets of limiters since replaced are included until evicted. Reading it costs
/// the same whatever the tables hold, unlike walking them.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Tracked {
    /// Always true: the figures are estimates (see above).
    pub estimated: bool,
    pub sources: u64,
    /// Both families together.
    pub sources_capacity: u32,
    pub prefixes: u64,
    pub prefixes_capacity: u32,
}

/// The estimate of [`Tracked`] for the guard pinned in `pins`.
pub fn tracked(pins: &PinDir) -> Result<Tracked> {
    let capacity = |names: [&str; 2]| -> Result<u32> {
        let mut total = 0u32;
        for name in names {
            let pinned = pinned_map(pins, name)?;
            let entries = map_data(&pinned)
                .info()
                .map_err(|err| Error::bpf(format!("reading map {name}"), err))?
                .max_entries();
            total = total.saturating_add(entries);
        }
        Ok(total)
    };
    let sources_capacity = capacity([maps::SOURCES_V4, maps::SOURCES_V6])?;
    let prefixes_capacity = capacity([maps::PREFIXES_V4, maps::PREFIXES_V6])?;
    let counters: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(pinned_map(pins, maps::GLOBAL_COUNTERS)?)
            .map_err(|err| map_open_error(pins, maps::GLOBAL_COUNTERS, err))?;
    let created = |slot: u32| -> Result<u64> {
        Ok(counters
            .get(&slot, 0)
            .map_err(|err| Error::bpf("reading the bucket counts", err))?
            .iter()
            .map(|cpu| cpu.packets)
            .sum())
    };
    Ok(Tracked {
        estimated: true,
        sources: created(global::SOURCE_BUCKETS_CREATED)?.min(u64::from(sources_capacity)),
        sources_capacity,
        prefixes: created(global::PREFIX_BUCKETS_CREATED)?.min(u64::from(prefixes_capacity)),
        prefixes_capacity,
    })
}

/// A typed open of a pinned map failed: a size or type mismatch means another layout.
fn map_open_error(pins: &PinDir, name: &str, err: MapError) -> Error {
    let detail = match &err {
        // aya's `size` is the Rust type's, `expected` the map's.
        MapError::InvalidKeySize { size, expected } => Some(format!(
            "map {name} has key size {expected}, this binary expects {size}"
        )),
        MapError::InvalidValueSize { size, expected } => Some(format!(
            "map {name} has value size {expected}, this binary expects {size}"
        )),
        MapError::InvalidMapType { map_type } => Some(format!(
            "map {name} has type {map_type}, not the one this binary expects"
        )),
        _ => None,
    };
    match detail {
        Some(detail) => Error::LayoutMismatch {
            path: pins.maps_dir(),
            detail,
        },
        None => Error::bpf(format!("opening map {name}"), err),
    }
}

/// A map that vanished while it was being opened was removed by a concurrent last
/// `detach`: the guard is not attached, the pin state is not broken.
fn gone_or(pins: &PinDir, err: Error) -> Error {
    if pins.has_maps() {
        err
    } else {
        Error::NotAttached
    }
}

/// The maps of a running guard, opened from their pins or taken from a loaded object.
pub struct GuardMaps {
    pub icmp_counters: PerCpuArray<MapData, Counter>,
    pub global_counters: PerCpuArray<MapData, Counter>,
    pub code_counters: PerCpuArray<MapData, CodeCounter>,
    pub interface_counters: PerCpuArray<MapData, InterfaceCounter>,
    pub policy_types: Array<MapData, Rule>,
    pub policy_codes: HashMap<MapData, u32, Rule>,
    pub limiters: Array<MapData, LimiterConfig>,
    pub shared_buckets: Array<MapData, SharedBucket>,
    pub lists_v4: LpmTrie<MapData, V4ListKey, u32>,
    pub lists_v6: LpmTrie<MapData, V6ListKey, u32>,
    pub config: Array<MapData, Config>,
    pub interfaces: Array<MapData, InterfaceConfig>,
}

impl GuardMaps {
    /// Opens the pinned maps; [`Error::NotAttached`] when there are none, and
    /// [`Error::LayoutMismatch`] when another icmp-guard version made them.
    pub fn open(pins: &PinDir) -> Result<Self> {
        if !pins.has_maps() {
            return Err(Error::NotAttached);
        }
        // Every command that reads or writes a running guard, not only `attach`: a binary
        // never works on maps of another layout.
        check_layout(pins).map_err(|err| gone_or(pins, err))?;
        Self::from_maps(
            |name| pinned_map(pins, name),
            |name, err| map_open_error(pins, name, err),
        )
        .map_err(|err| gone_or(pins, err))
    }

    /// Takes the maps out of a loaded object (verdict tests, with private maps).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Self::from_maps(
            |name| {
                ebpf.take_map(name)
                    .ok_or_else(|| Error::bpf(format!("finding map {name}"), "not in the object"))
            },
            |name, err| Error::bpf(format!("opening map {name}"), err),
        )
    }

    fn from_maps(
        mut get: impl FnMut(&str) -> Result<Map>,
        wrong: impl Fn(&str, MapError) -> Error,
    ) -> Result<Self> {
        Ok(Self {
            icmp_counters: PerCpuArray::try_from(get(maps::ICMP_COUNTERS)?)
                .map_err(|err| wrong(maps::ICMP_COUNTERS, err))?,
            global_counters: PerCpuArray::try_from(get(maps::GLOBAL_COUNTERS)?)
                .map_err(|err| wrong(maps::GLOBAL_COUNTERS, err))?,
            code_counters: PerCpuArray::try_from(get(maps::CODE_COUNTERS)?)
                .map_err(|err| wrong(maps::CODE_COUNTERS, err))?,
            interface_counters: PerCpuArray::try_from(get(maps::INTERFACE_COUNTERS)?)
                .map_err(|err| wrong(maps::INTERFACE_COUNTERS, err))?,
            policy_types: Array::try_from(get(maps::POLICY_TYPES)?)
                .map_err(|err| wrong(maps::POLICY_TYPES, err))?,
            policy_codes: HashMap::try_from(get(maps::POLICY_CODES)?)
                .map_err(|err| wrong(maps::POLICY_CODES, err))?,
            limiters: Array::try_from(get(maps::LIMITERS)?)
                .map_err(|err| wrong(maps::LIMITERS, err))?,
            shared_buckets: Array::try_from(get(maps::SHARED_BUCKETS)?)
                .map_err(|err| wrong(maps::SHARED_BUCKETS, err))?,
            lists_v4: LpmTrie::try_from(get(maps::LISTS_V4)?)
                .map_err(|err| wrong(maps::LISTS_V4, err))?,
            lists_v6: LpmTrie::try_from(get(maps::LISTS_V6)?)
                .map_err(|err| wrong(maps::LISTS_V6, err))?,
            config: Array::try_from(get(maps::CONFIG)?).map_err(|err| wrong(maps::CONFIG, err))?,
            interfaces: Array::try_from(get(maps::INTERFACES)?)
                .map_err(|err| wrong(maps::INTERFACES, err))?,
        })
    }

    /// The guard's settings.
    pub fn config(&self) -> Result<Config> {
        self.config
            .get(&config::INDEX, 0)
            .map_err(|err| Error::bpf("reading the settings", err))
    }

    /// Changes the settings with `change` and writes them back whole; the caller holds the
    /// pin-directory lock, so no other writer interleaves. A packet reading the settings
    /// meanwhile sees every field `change` left alone as it was.
    pub fn update_config(&mut self, change: impl FnOnce(&mut Config)) -> Result<()> {
        let mut config = self.config()?;
        change(&mut config);
        self.config
            .set(config::INDEX, config, 0)
            .map_err(|err| Error::bpf("writing the settings", err))
    }

    /// The guard's mode (`config::MODE_*`).
    pub fn mode(&self) -> Result<u32> {
        Ok(self.config()?.mode)
    }

    /// Sets the guard's mode; takes effect on the next packet.
    pub fn set_mode(&mut self, mode: u32) -> Result<()> {
        self.update_config(|config| config.mode = mode)
    }

    /// The policy revision ([`Config::policy_revision`]): the control plane's, the
    /// program does not read it.
    pub fn policy_revision(&self) -> Result<u32> {
        Ok(self.config()?.policy_revision)
    }

    /// Sets the policy revision.
    pub fn set_policy_revision(&mut self, revision: u32) -> Result<()> {
        self.update_config(|config| config.policy_revision = revision)
    }

    /// Every slot in use, with what it holds.
    pub fn slots(&self) -> Result<Vec<(u32, InterfaceConfig)>> {
        let mut used = Vec::new();
        for slot in 1..interface::SLOTS {
            let config = self
                .interfaces
                .get(&slot, 0)
                .map_err(|err| Error::bpf("reading the interface slots", err))?;
            if config.ifindex != 0 {
                used.push((slot, config));
            }
        }
        Ok(used)
    }

    /// The slot of (`netns`, `ifindex`), if it has one.
    pub fn slot_of(&self, netns: u64, ifindex: u32) -> Result<Option<u32>> {
        Ok(self
            .slots()?
            .into_iter()
            .find(|(_, config)| config.netns == netns && config.ifindex == ifindex)
            .map(|(slot, _)| slot))
    }

    /// Claims a slot for (`netns`, `ifindex`) and starts its counters from zero (a fresh
    /// attach: whatever an earlier interface left is not this one's), or, with `keep`, keeps
    /// the slot and counters it already has (an upgrade). Directed broadcasts are written by
    /// [`crate::addresses::refresh_namespace`].
    pub fn claim_slot(
        &mut self,
        pins: &PinDir,
        netns: u64,
        ifindex: u32,
        link_kind: u8,
        keep: bool,
    ) -> Result<u32> {
        let used = self.slots()?;
        if let Some((slot, config)) = used
            .iter()
            .find(|(_, config)| config.netns == netns && config.ifindex == ifindex)
        {
            if keep && config.link_kind == link_kind {
                return Ok(*slot);
            }
            self.write_slot(*slot, netns, ifindex, link_kind)?;
            return Ok(*slot);
        }
        let slot = (1..interface::SLOTS)
            .find(|slot| !used.iter().any(|(taken, _)| taken == slot))
            .ok_or_else(|| Error::NoFreeSlot {
                path: pins.root().to_path_buf(),
                slots: interface::SLOTS - 1,
            })?;
        self.write_slot(slot, netns, ifindex, link_kind)?;
        Ok(slot)
    }

    fn write_slot(&mut self, slot: u32, netns: u64, ifindex: u32, link_kind: u8) -> Result<()> {
        // Counters first: the slot's new owner never sees the last one's packets.
        self.reset_interface_counters(slot, ifindex)?;
        let config = InterfaceConfig {
            netns,
            ifindex,
            link_kind,
            ..InterfaceConfig::default()
        };
        self.interfaces
            .set(slot, config, 0)
            .map_err(|err| Error::bpf("writing the interface slot", err))
    }

    /// Frees the slot of (`netns`, `ifindex`) if it has one.
    pub fn release_slot(&mut self, netns: u64, ifindex: u32) -> Result<()> {
        if let Some(slot) = self.slot_of(netns, ifindex)? {
            self.interfaces
                .set(slot, InterfaceConfig::default(), 0)
                .map_err(|err| Error::bpf("freeing the interface slot", err))?;
            self.reset_interface_counters(slot, 0)?;
        }
        Ok(())
    }

    /// Frees the slots of `netns` that no pinned link uses: an attach killed between
    /// claiming a slot and pinning its link leaves one. The caller holds the pin lock.
    pub fn release_stale_slots(&mut self, pins: &PinDir, netns: u64) -> Result<()> {
        for (_, config) in self.slots()? {
            if config.netns == netns && !pins.has_link(config.ifindex) {
                self.release_slot(netns, config.ifindex)?;
            }
        }
        Ok(())
    }

    /// Sets the directed broadcasts of every slot of `netns`.
    pub fn set_broadcasts(&mut self, netns: u64, broadcasts: &[[u8; 4]]) -> Result<()> {
        if broadcasts.len() > interface::MAX_BROADCASTS {
            return Err(Error::TooManyBroadcasts {
                count: broadcasts.len(),
                max: interface::MAX_BROADCASTS,
            });
        }
        for (slot, mut config) in self.slots()? {
            if config.netns != netns {
                continue;
            }
            config.broadcasts = [[0; 4]; interface::MAX_BROADCASTS];
            config.broadcasts[..broadcasts.len()].copy_from_slice(broadcasts);
            config.broadcast_count = broadcasts.len() as u8;
            self.interfaces
                .set(slot, config, 0)
                .map_err(|err| Error::bpf("writing the directed broadcasts", err))?;
        }
        Ok(())
    }

    /// Sets the directed broadcasts of the instances that run for no interface
    /// ([`NO_SLOT`]): what `BPF_PROG_TEST_RUN` tests use.
    pub fn set_unattached_broadcasts(&mut self, broadcasts: &[std::net::Ipv4Addr]) -> Result<()> {
        if broadcasts.len() > interface::MAX_BROADCASTS {
            return Err(Error::TooManyBroadcasts {
                count: broadcasts.len(),
                max: interface::MAX_BROADCASTS,
            });
        }
        let mut config = InterfaceConfig {
            broadcast_count: broadcasts.len() as u8,
            ..InterfaceConfig::default()
        };
        for (entry, address) in config.broadcasts.iter_mut().zip(broadcasts) {
            *entry = address.octets();
        }
        self.interfaces
            .set(NO_SLOT, config, 0)
            .map_err(|err| Error::bpf("writing the directed broadcasts", err))
    }

    fn reset_interface_counters(&mut self, slot: u32, owner: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, err)| Error::io("counting the possible CPUs", err))?;
        let fresh = InterfaceCounter {
            ifindex: owner,
            ..InterfaceCounter::default()
        };
        let values = PerCpuValues::try_from(vec![fresh; cpus])
            .map_err(|err| Error::io("building per-CPU counters", err))?;
        self.interface_counters
            .set(slot, values, 0)
            .map_err(|err| Error::bpf("writing the interface counters", err))
    }

    /// The packets counted for each of `ifindexes` of this network namespace that has a
    /// slot, summed over CPUs.
    pub fn interface_counters(&self, ifindexes: &[u32]) -> Result<Vec<(u32, InterfaceCounter)>> {
        let netns = system::netns_id()?;
        let slots = self.slots()?;
        let mut counters = Vec::new();
        for &ifindex in ifindexes {
            let Some((slot, _)) = slots
                .iter()
                .find(|(_, config)| config.netns == netns && config.ifindex == ifindex)
            else {
                continue;
            };
            let values = self
                .interface_counters
                .get(slot, 0)
                .map_err(|err| Error::bpf("reading the interface counters", err))?;
            let total = values.iter().fold(
                InterfaceCounter {
                    ifindex,
                    ..InterfaceCounter::default()
                },
                |t, cpu| InterfaceCounter {
                    ifindex,
                    _padding: 0,
                    packets: t.packets + cpu.packets,
                    bytes: t.bytes + cpu.bytes,
                    passed: t.passed + cpu.passed,
                    dropped: t.dropped + cpu.dropped,
                    would_drop: t.would_drop + cpu.would_drop,
                },
            );
            counters.push((ifindex, total));
        }
        Ok(counters)
    }

    /// Sampled events each CPU may emit per second; 0 when events are off.
    pub fn events_per_sec(&self) -> Result<u32> {
        Ok(self.config()?.events_per_sec)
    }

    /// Sets the event budget; takes effect on the next packet.
    pub fn set_events_per_sec(&mut self, per_sec: u32) -> Result<()> {
        self.update_config(|config| config.events_per_sec = per_sec)
    }
}

/// Frees the slot of `ifindex` in this network namespace (its link is gone); missing maps
/// are fine.
fn release_interface(pins: &PinDir, ifindex: u32) {
    if let (Ok(mut maps), Ok(netns)) = (GuardMaps::open(pins), system::netns_id()) {
        let _ = maps.release_slot(netns, ifindex);
    }
}

/// Opens the pinned `EVENTS` ring buffer. Readers take [`PinDir::lock_events`] first: the
/// ring buffer has one consumer position, so two readers would tear each other's events.
pub fn open_events(pins: &PinDir) -> Result<RingBuf<MapData>> {
    if !pins.has_maps() {
        return Err(Error::NotAttached);
    }
    RingBuf::try_from(pinned_map(pins, maps::EVENTS)?)
        .map_err(|err| map_open_error(pins, maps::EVENTS, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(value_size: u32, max_entries: u32) -> MapShape {
        MapShape {
            map_type: 2,
            key_size: 4,
            value_size,
            max_entries,
            flags: 0,
        }
    }

    #[test]
    fn a_different_value_size_is_another_layout() {
        assert_eq!(
            MapShape::difference(maps::POLICY_TYPES, shape(8, 512), shape(4, 512)).as_deref(),
            Some("map POLICY_TYPES has value size 8, this binary expects 4")
        );
        assert_eq!(
            MapShape::difference(maps::POLICY_TYPES, shape(4, 512), shape(4, 512)),
            None
        );
        assert_eq!(
            MapShape::difference(maps::CONFIG, shape(4, 8), shape(4, 4)).as_deref(),
            Some("map CONFIG has max_entries 8, this binary expects 4")
        );
    }

    #[test]
    fn operator_sized_maps_may_differ_in_entries_only() {
        assert_eq!(
            MapShape::difference(maps::SOURCES_V4, shape(8, 1000), shape(8, 1)),
            None
        );
        assert!(MapShape::difference(maps::SOURCES_V4, shape(16, 1000), shape(8, 1)).is_some());
    }

    #[test]
    fn a_typed_open_of_another_layout_says_which_size_is_which() {
        let pins = PinDir::new("/sys/fs/bpf/x");
        // aya reports the Rust type's size as `size` and the map's as `expected`.
        let err = map_open_error(
            &pins,
            maps::POLICY_TYPES,
            MapError::InvalidValueSize {
                size: 4,
                expected: 8,
            },
        );
        assert_eq!(
            err.to_string(),
            "the pinned maps in /sys/fs/bpf/x/maps were made by another icmp-guard version \
             (map POLICY_TYPES has value size 8, this binary expects 4): run `icmp-guard \
             detach --all` first"
        );
    }

    #[test]
    fn only_link_kinds_whose_frame_start_is_known_are_accepted() {
        assert_eq!(
            link_kind_of("eth0", libc::ARPHRD_ETHER, Some("veth")).ok(),
            Some(link_kind::ETHERNET)
        );
        assert_eq!(
            link_kind_of("lo", libc::ARPHRD_LOOPBACK, None).ok(),
            Some(link_kind::ETHERNET)
        );
        assert_eq!(
            link_kind_of("tun0", libc::ARPHRD_NONE, Some("tun")).ok(),
            Some(link_kind::RAW_IP)
        );
        for (link_type, kind) in [
            (libc::ARPHRD_NONE, Some("wireguard")),
            (libc::ARPHRD_TUNNEL, Some("ipip")),
            (libc::ARPHRD_IPGRE, Some("gre")),
            (libc::ARPHRD_INFINIBAND, None),
        ] {
            let err = link_kind_of("x0", link_type, kind).expect_err("not known");
            assert!(
                err.to_string().starts_with("icmp-guard cannot guard x0: "),
                "{err}"
            );
        }
    }

    #[test]
    fn a_native_refusal_names_the_mtu_when_it_is_the_cause() {
        let erange = io::Error::from_raw_os_error(libc::ERANGE);
        let einval = io::Error::from_raw_os_error(libc::EINVAL);
        let unsupported = io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        assert!(mtu_too_large(&erange, Some(1500)));
        assert!(mtu_too_large(&einval, Some(9000)));
        assert!(!mtu_too_large(&einval, Some(1500)));
        assert!(!mtu_too_large(&unsupported, Some(9000)));
    }
}
