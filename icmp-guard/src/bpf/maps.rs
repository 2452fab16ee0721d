//! The maps of a running guard as typed handles: every read and write of kernel state goes
//! through a method of [`GuardMaps`] that names what it does, in the kernel's encodings
//! (`icmp_guard_common`). The fields are private, so no caller reaches a map around them.
//!
//! Before pinned maps are used, their kernel layout (type, key and value size, entries,
//! flags) and the layout version stamped in `CONFIG` are compared with what this binary's
//! object declares ([`check_layout`]): a binary never reads or runs against maps of another
//! layout.

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, MapError, MapInfo, PerCpuArray, PerCpuValues,
        RingBuf, lpm_trie::Key,
    },
};
use icmp_guard_common::{
    CodeCounter, Counter, InterfaceCounter,
    config::{self, Config, GenerationConfig},
    global,
    interface::{self, InterfaceConfig, NO_SLOT, interface_flags},
    limit::{LimiterConfig, SharedBucket},
    maps,
    policy::{Rule, V4ListKey, V6ListKey},
    recon::{
        Flagged, FlaggedKey, ReconV4Key, ReconV6Key, SETS, SlotV4, SlotV6, Sweep, WAYS, set_v4,
        set_v6,
    },
};

use super::{Error, Result, object, pins::PinDir};

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
        let entries = (!object::SIZED_BY_OPERATOR.contains(&name)).then_some((
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
        let have = MapInfo::from_pin(&path)
            .map_err(|source| Error::broken_map_pin(path.clone(), source))?;
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

/// How far the pinned maps got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// No map is pinned.
    Empty,
    /// Maps are pinned but the attach that made them did not live to stamp them: their
    /// policy may be all zeroes (every type passes, no limits). Never used as they are.
    Unfinished,
    /// Stamped with this binary's layout version, written last by the first attach.
    Complete,
}

/// Whether the pinned maps were finished by the attach that made them (`CONFIG` carries
/// the layout stamp); the error of [`check_layout`] when they are another version's, or
/// some are missing.
pub fn completion(pins: &PinDir) -> Result<Completion> {
    let any_pinned = std::fs::read_dir(pins.maps_dir())
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if !any_pinned {
        return Ok(Completion::Empty);
    }
    check_layout(pins)?;
    // check_layout accepts 0 (unstamped) and this binary's version only.
    if pinned_layout_version(pins)? == config::LAYOUT_VERSION {
        Ok(Completion::Complete)
    } else {
        Ok(Completion::Unfinished)
    }
}

/// The layout version written in pinned maps; 0 when none is: maps made by an attach that
/// died before it finished (their shapes are this binary's, their contents unknown).
fn pinned_layout_version(pins: &PinDir) -> Result<u32> {
    let settings: Array<MapData, Config> = Array::try_from(pinned_map(pins, maps::CONFIG)?)
        .map_err(|err| map_open_error(pins, maps::CONFIG, err))?;
    settings
        .get(&config::INDEX, 0)
        .map(|config| config.layout)
        .map_err(|err| Error::map("reading the layout version", err))
}

/// Opens the pinned map `name`; a pin that is not a usable map is broken pin state.
fn pinned_map(pins: &PinDir, name: &str) -> Result<Map> {
    let path = pins.map_path(name);
    let broken = |source: MapError| Error::broken_map_pin(path.clone(), source);
    let data = MapData::from_pin(&path).map_err(broken)?;
    Map::from_map_data(data).map_err(broken)
}

/// The shape of every map this binary pins, as the kernel creates them from the embedded
/// object (see [`object::probe`]).
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
    let probe = object::probe()?;
    maps::ALL
        .iter()
        .map(|name| {
            let map = probe.map(name).ok_or_else(|| Error::NotInObject {
                what: format!("map {name}"),
            })?;
            let info = map_data(map)
                .info()
                .map_err(|err| Error::map(format!("reading map {name}"), err))?;
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

/// How many sources and prefixes have a rate-limit bucket now, estimated: buckets the
/// program created (it counts them per CPU), capped by the tables' capacity. Buckets leave
/// only by LRU eviction, so the estimate is exact until a table is full and then says
/// "full"; buckets of limiters since replaced count until they are evicted. Reading it
/// costs the same whatever the tables hold, unlike walking them.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Tracked {
    /// Always true: the figures are estimates (see above).
    pub estimated: bool,
    pub sources: u64,
    /// Both families together.
    pub sources_capacity: u32,
    pub prefixes: u64,
    pub prefixes_capacity: u32,
    /// Sweep sketches not made since the maps were made: both slots of their set held
    /// flagged sketches (`icmp_guard_common::global::RECON_UNTRACKED`). Exact, not estimated.
    pub recon_untracked: u64,
}

/// The estimate of [`Tracked`] for the guard pinned in `pins`: four map infos and one
/// per-CPU counter read.
pub fn tracked(pins: &PinDir) -> Result<Tracked> {
    let capacity = |names: [&str; 2]| -> Result<u32> {
        let mut total = 0u32;
        for name in names {
            let pinned = pinned_map(pins, name)?;
            let entries = map_data(&pinned)
                .info()
                .map_err(|err| Error::map(format!("reading map {name}"), err))?
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
        let values = counters
            .get(&slot, 0)
            .map_err(|err| Error::map("reading the bucket counts", err))?;
        Ok(sum_counters(&values).packets)
    };
    Ok(Tracked {
        estimated: true,
        sources: created(global::SOURCE_BUCKETS_CREATED)?.min(u64::from(sources_capacity)),
        sources_capacity,
        prefixes: created(global::PREFIX_BUCKETS_CREATED)?.min(u64::from(prefixes_capacity)),
        prefixes_capacity,
        recon_untracked: created(global::RECON_UNTRACKED)?,
    })
}

/// The id of the pinned map `name`, when it is pinned and readable.
pub fn pinned_map_id(pins: &PinDir, name: &str) -> Option<u32> {
    MapInfo::from_pin(pins.map_path(name))
        .ok()
        .map(|info| info.id())
}

/// The capacity of one policy's allow and deny prefixes per family: both generations share
/// each trie (`icmp_guard_common::policy::LIST_ENTRIES`), so a policy may use half of it and
/// a swap never runs out of room.
pub fn list_capacity(max_entries: u32) -> u32 {
    max_entries / icmp_guard_common::policy::GENERATIONS
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
        None => Error::map(format!("opening map {name}"), err),
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

/// Sums per-CPU counters.
fn sum_counters(values: &PerCpuValues<Counter>) -> Counter {
    values
        .iter()
        .fold(Counter::default(), |total, cpu| Counter {
            packets: total.packets + cpu.packets,
            bytes: total.bytes + cpu.bytes,
        })
}

/// The maps of a running guard, opened from their pins or taken from a loaded object.
pub struct GuardMaps {
    icmp_counters: PerCpuArray<MapData, Counter>,
    global_counters: PerCpuArray<MapData, Counter>,
    code_counters: PerCpuArray<MapData, CodeCounter>,
    interface_counters: PerCpuArray<MapData, InterfaceCounter>,
    policy_types: Array<MapData, Rule>,
    policy_codes: HashMap<MapData, u32, Rule>,
    limiters: Array<MapData, LimiterConfig>,
    shared_buckets: Array<MapData, SharedBucket>,
    lists_v4: LpmTrie<MapData, V4ListKey, u32>,
    lists_v6: LpmTrie<MapData, V6ListKey, u32>,
    config: Array<MapData, Config>,
    interfaces: Array<MapData, InterfaceConfig>,
    blocked_v4: HashMap<MapData, [u8; 4], u64>,
    blocked_v6: HashMap<MapData, [u8; 16], u64>,
    recon_flagged: HashMap<MapData, FlaggedKey, Flagged>,
    recon_v4: Array<MapData, SlotV4>,
    recon_v6: Array<MapData, SlotV6>,
    /// `max_entries` of the two list tries.
    list_entries: (u32, u32),
}

impl GuardMaps {
    /// Opens the pinned maps; [`Error::NotAttached`] when there are none, and
    /// [`Error::LayoutMismatch`] when another icmp-guard version made them.
    ///
    /// Maps an interrupted attach left unfinished are refused with [`Error::Incomplete`]:
    /// their policy may be all zeroes.
    pub fn open(pins: &PinDir) -> Result<Self> {
        let maps = Self::open_unfinished(pins)?;
        if !maps.is_complete()? {
            return Err(gone_or(
                pins,
                Error::Incomplete {
                    path: pins.root().to_path_buf(),
                },
            ));
        }
        Ok(maps)
    }

    /// [`Self::open`] also of maps an interrupted attach left unfinished: for the attach
    /// that completes them.
    pub fn open_unfinished(pins: &PinDir) -> Result<Self> {
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
                ebpf.take_map(name).ok_or_else(|| Error::NotInObject {
                    what: format!("map {name}"),
                })
            },
            |name, err| Error::map(format!("opening map {name}"), err),
        )
    }

    fn from_maps(
        mut get: impl FnMut(&str) -> Result<Map>,
        wrong: impl Fn(&str, MapError) -> Error,
    ) -> Result<Self> {
        let entries = |map: &Map, name: &str| -> Result<u32> {
            Ok(map_data(map)
                .info()
                .map_err(|err| Error::map(format!("reading map {name}"), err))?
                .max_entries())
        };
        let lists_v4 = get(maps::LISTS_V4)?;
        let lists_v6 = get(maps::LISTS_V6)?;
        let list_entries = (
            entries(&lists_v4, maps::LISTS_V4)?,
            entries(&lists_v6, maps::LISTS_V6)?,
        );
        Ok(Self {
            list_entries,
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
            lists_v4: LpmTrie::try_from(lists_v4).map_err(|err| wrong(maps::LISTS_V4, err))?,
            lists_v6: LpmTrie::try_from(lists_v6).map_err(|err| wrong(maps::LISTS_V6, err))?,
            config: Array::try_from(get(maps::CONFIG)?).map_err(|err| wrong(maps::CONFIG, err))?,
            interfaces: Array::try_from(get(maps::INTERFACES)?)
                .map_err(|err| wrong(maps::INTERFACES, err))?,
            blocked_v4: HashMap::try_from(get(maps::BLOCKED_V4)?)
                .map_err(|err| wrong(maps::BLOCKED_V4, err))?,
            blocked_v6: HashMap::try_from(get(maps::BLOCKED_V6)?)
                .map_err(|err| wrong(maps::BLOCKED_V6, err))?,
            recon_flagged: HashMap::try_from(get(maps::RECON_FLAGGED)?)
                .map_err(|err| wrong(maps::RECON_FLAGGED, err))?,
            recon_v4: Array::try_from(get(maps::RECON_V4)?)
                .map_err(|err| wrong(maps::RECON_V4, err))?,
            recon_v6: Array::try_from(get(maps::RECON_V6)?)
                .map_err(|err| wrong(maps::RECON_V6, err))?,
        })
    }
}

/// The block-time entries (`icmp_guard_common::block`).
impl GuardMaps {
    /// Every entry of `BLOCKED_V4` and `BLOCKED_V6`, expired ones too: the source and the
    /// end of its block on the program's clock (CLOCK_MONOTONIC, [`monotonic_ns`]).
    pub fn blocked_entries(&self) -> Result<Vec<(std::net::IpAddr, u64)>> {
        let read = |err| Error::map("reading the blocked sources", err);
        let mut entries = Vec::new();
        for item in self.blocked_v4.iter() {
            let (key, until) = item.map_err(read)?;
            entries.push((std::net::IpAddr::from(key), until));
        }
        for item in self.blocked_v6.iter() {
            let (key, until) = item.map_err(read)?;
            entries.push((std::net::IpAddr::from(key), until));
        }
        Ok(entries)
    }

    /// Blocks `source` until `until` (tests, and what the program does itself).
    pub fn block(&mut self, source: std::net::IpAddr, until: u64) -> Result<()> {
        let write = |err| Error::map("writing the blocked sources", err);
        match source {
            std::net::IpAddr::V4(v4) => self.blocked_v4.insert(v4.octets(), until, 0),
            std::net::IpAddr::V6(v6) => self.blocked_v6.insert(v6.octets(), until, 0),
        }
        .map_err(write)
    }

    /// Lifts the block of `source`; an entry already gone (the LRU recycled it, or the
    /// program has not written it) is not an error.
    pub fn unblock(&mut self, source: std::net::IpAddr) -> Result<()> {
        let result = match source {
            std::net::IpAddr::V4(v4) => self.blocked_v4.remove(&v4.octets()),
            std::net::IpAddr::V6(v6) => self.blocked_v6.remove(&v6.octets()),
        };
        removed(result, "removing a blocked source")
    }
}

/// A map entry's removal where an entry already gone (the LRU recycled it, or the program
/// has not written it) is not an error.
fn removed(result: std::result::Result<(), MapError>, what: &'static str) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(MapError::SyscallError(err)) if err.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        Err(err) => Err(Error::map(what, err)),
    }
}

/// The program's clock for block times: CLOCK_MONOTONIC, as `bpf_ktime_get_ns` reads it.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write to; the clock id is a constant.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Sweep detection's record of flagged sources.
impl GuardMaps {
    /// Every source and prefix in `RECON_FLAGGED` (the most recently flagged; an LRU).
    pub fn flagged(&self) -> Result<Vec<(FlaggedKey, Flagged)>> {
        self.recon_flagged
            .iter()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|err| Error::map("reading the flagged sources", err))
    }

    /// Every sketch of `RECON_V4` and `RECON_V6` that carries a block: the source or prefix
    /// (address and length) and the end of its block on the program's coarse clock. Only
    /// sketches in their own set, where the program finds them: one made under another
    /// seed would not be, but the seed is written before any interface runs the program
    /// and never changes.
    pub fn sweep_blocks(&self) -> Result<Vec<(std::net::IpAddr, u8, u64)>> {
        let seed = self.config()?.recon_seed;
        let read = |err| Error::map("reading the sweep sketches", err);
        let mut blocks = Vec::new();
        for (index, slot) in self.recon_v4.iter().enumerate() {
            let slot = slot.map_err(read)?;
            if slot.key.len != 0
                && slot.sweep.blocked_until != 0
                && in_set(index, set_v4(seed, &slot.key))
            {
                let addr = std::net::Ipv4Addr::from(slot.key.octets()).into();
                blocks.push((addr, slot.key.len as u8, slot.sweep.blocked_until));
            }
        }
        for (index, slot) in self.recon_v6.iter().enumerate() {
            let slot = slot.map_err(read)?;
            if slot.key.len != 0
                && slot.sweep.blocked_until != 0
                && in_set(index, set_v6(seed, &slot.key))
            {
                let addr = std::net::Ipv6Addr::from(slot.key.octets()).into();
                blocks.push((addr, slot.key.len as u8, slot.sweep.blocked_until));
            }
        }
        Ok(blocks)
    }

    /// The sketch of a source or prefix (`len` 32/128 for a source), if it has one.
    pub fn sweep_sketch(&self, addr: std::net::IpAddr, len: u8) -> Result<Option<Sweep>> {
        Ok(self.sweep_slot(addr, len)?.map(|(_, sweep)| sweep))
    }

    /// The index in its map of the slot holding the sketch of `addr/len`, and the sketch.
    fn sweep_slot(&self, addr: std::net::IpAddr, len: u8) -> Result<Option<(u32, Sweep)>> {
        let seed = self.config()?.recon_seed;
        let read = |err| Error::map("reading a sweep sketch", err);
        match addr {
            std::net::IpAddr::V4(v4) => {
                let key = ReconV4Key::new(len, v4.octets());
                for index in set_slots(set_v4(seed, &key)) {
                    let slot = self.recon_v4.get(&index, 0).map_err(read)?;
                    if slot.key == key {
                        return Ok(Some((index, slot.sweep)));
                    }
                }
            }
            std::net::IpAddr::V6(v6) => {
                let key = ReconV6Key::new(len, v6.octets());
                for index in set_slots(set_v6(seed, &key)) {
                    let slot = self.recon_v6.get(&index, 0).map_err(read)?;
                    if slot.key == key {
                        return Ok(Some((index, slot.sweep)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Forgets the sketch of a source or prefix, and its flag: its block ends and its count
    /// starts again from nothing (its slot is emptied). Entries already gone are not an
    /// error.
    pub fn forget_sweep(&mut self, addr: std::net::IpAddr, len: u8) -> Result<()> {
        let gone = |result| removed(result, "removing a sweep sketch");
        let emptied = |err| Error::map("removing a sweep sketch", err);
        if let Some((index, _)) = self.sweep_slot(addr, len)? {
            match addr {
                std::net::IpAddr::V4(_) => self.recon_v4.set(index, SlotV4::default(), 0),
                std::net::IpAddr::V6(_) => self.recon_v6.set(index, SlotV6::default(), 0),
            }
            .map_err(emptied)?;
        }
        let mut flagged = FlaggedKey {
            len,
            ..FlaggedKey::default()
        };
        match addr {
            std::net::IpAddr::V4(v4) => {
                flagged.family = icmp_guard_common::FAMILY_V4;
                flagged.addr[..4].copy_from_slice(&v4.octets());
            }
            std::net::IpAddr::V6(v6) => {
                flagged.family = icmp_guard_common::FAMILY_V6;
                flagged.addr = v6.octets();
            }
        }
        gone(self.recon_flagged.remove(&flagged))
    }
}

/// Four random bytes from the kernel's generator.
fn random_seed() -> Result<u32> {
    use std::io::Read;
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .map_err(|err| Error::io("reading /dev/urandom for the sweep sketches' seed", err))?;
    Ok(u32::from_ne_bytes(bytes))
}

/// The slots of `set` in a sketch array.
fn set_slots(set: u32) -> std::ops::Range<u32> {
    set * WAYS..(set + 1) * WAYS
}

/// True when the slot at `index` belongs to `set`.
fn in_set(index: usize, set: u32) -> bool {
    set < SETS && index / WAYS as usize == set as usize
}

/// Settings in `CONFIG`.
impl GuardMaps {
    /// The guard's settings, whole.
    pub fn config(&self) -> Result<Config> {
        self.config
            .get(&config::INDEX, 0)
            .map_err(|err| Error::map("reading the settings", err))
    }

    /// Changes the settings with `change` and writes them back whole. The caller holds the
    /// pin-directory lock, so no other writer interleaves; a packet reading the settings
    /// meanwhile sees every field `change` left alone as it was.
    pub fn update_config(&mut self, what: &str, change: impl FnOnce(&mut Config)) -> Result<()> {
        let mut config = self.config()?;
        change(&mut config);
        self.config
            .set(config::INDEX, config, 0)
            .map_err(|err| Error::map(format!("writing {what}"), err))
    }

    /// True once the attach that made the maps stamped them ([`Self::stamp_complete`]).
    pub fn is_complete(&self) -> Result<bool> {
        Ok(self.config()?.layout == config::LAYOUT_VERSION)
    }

    /// Stamps the maps with this binary's layout version: the last write of a first
    /// attach, after the policy and every setting, so that maps without it are known to be
    /// unfinished.
    /// With the first stamp the maps get their random `recon_seed`, which places sweep
    /// sketches (`icmp_guard_common::recon::set_v4`); before it, no interface runs them.
    pub fn stamp_complete(&mut self) -> Result<()> {
        let fresh = !self.is_complete()?;
        let seed = if fresh { Some(random_seed()?) } else { None };
        self.update_config("the layout stamp", |config| {
            config.layout = config::LAYOUT_VERSION;
            if let Some(seed) = seed {
                config.recon_seed = seed;
            }
        })
    }

    /// The guard's mode (`config::MODE_*`).
    pub fn mode(&self) -> Result<u32> {
        Ok(self.config()?.mode)
    }

    /// Sets the guard's mode; takes effect on the next packet.
    pub fn set_mode(&mut self, mode: u32) -> Result<()> {
        self.update_config("the mode", |config| config.mode = mode)
    }

    /// Sampled events each CPU may emit per second; 0 when events are off.
    pub fn events_per_sec(&self) -> Result<u32> {
        Ok(self.config()?.events_per_sec)
    }

    /// Sets the event budget; takes effect on the next packet.
    pub fn set_events_per_sec(&mut self, per_sec: u32) -> Result<()> {
        self.update_config("the event budget", |config| {
            config.events_per_sec = per_sec;
        })
    }

    /// The policy revision ([`Config::policy_revision`]): the control plane's; the
    /// program does not read it.
    pub fn policy_revision(&self) -> Result<u32> {
        Ok(self.config()?.policy_revision)
    }

    /// Sets the policy revision.
    pub fn set_policy_revision(&mut self, revision: u32) -> Result<()> {
        self.update_config("the policy revision", |config| {
            config.policy_revision = revision;
        })
    }

    /// The policy generation the kernel classifies against now (0 or 1).
    pub fn active_generation(&self) -> Result<u32> {
        Ok(self.config()?.active_generation & 1)
    }

    /// Makes `generation` the live one, in one store.
    pub fn set_active_generation(&mut self, generation: u32) -> Result<()> {
        self.update_config("the active policy generation", |config| {
            config.active_generation = generation & 1;
        })
    }

    /// The settings of `generation` besides its tables (checks switched off, which lists
    /// hold entries, the error and fragment limiters).
    pub fn generation_settings(&self, generation: u32) -> Result<GenerationConfig> {
        Ok(*self.config()?.generation(generation))
    }

    pub fn set_generation_settings(
        &mut self,
        generation: u32,
        settings: GenerationConfig,
    ) -> Result<()> {
        self.update_config("the policy settings", |config| {
            config.generations[(generation & 1) as usize] = settings;
        })
    }
}

/// The two generations of policy tables (see `icmp_guard_common::policy`).
impl GuardMaps {
    /// The rule at `slot` of `POLICY_TYPES` ([`icmp_guard_common::policy::type_slot`]).
    pub fn type_rule(&self, slot: u32) -> Result<Rule> {
        self.policy_types
            .get(&slot, 0)
            .map_err(|err| Error::map("reading the type rules", err))
    }

    pub fn set_type_rule(&mut self, slot: u32, rule: Rule) -> Result<()> {
        self.policy_types
            .set(slot, rule, 0)
            .map_err(|err| Error::map("writing the type rules", err))
    }

    /// Every key of `POLICY_CODES` ([`icmp_guard_common::policy::code_key`]), both
    /// generations.
    pub fn code_rule_keys(&self) -> Result<Vec<u32>> {
        self.policy_codes
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(|err| Error::map("reading the code rules", err))
    }

    pub fn code_rule(&self, key: u32) -> Result<Rule> {
        self.policy_codes
            .get(&key, 0)
            .map_err(|err| Error::map("reading the code rules", err))
    }

    pub fn set_code_rule(&mut self, key: u32, rule: Rule) -> Result<()> {
        self.policy_codes
            .insert(key, rule, 0)
            .map_err(|err| Error::map("writing the code rules", err))
    }

    pub fn remove_code_rule(&mut self, key: u32) -> Result<()> {
        self.policy_codes
            .remove(&key)
            .map_err(|err| Error::map("writing the code rules", err))
    }

    /// The limiter at `slot` of `LIMITERS` ([`icmp_guard_common::limit::limiter_slot`]).
    pub fn limiter(&self, slot: u32) -> Result<LimiterConfig> {
        self.limiters
            .get(&slot, 0)
            .map_err(|err| Error::map("reading the rate limits", err))
    }

    pub fn set_limiter(&mut self, slot: u32, limiter: LimiterConfig) -> Result<()> {
        self.limiters
            .set(slot, limiter, 0)
            .map_err(|err| Error::map("writing the rate limits", err))
    }

    /// Resets the shared bucket in `slot` to a full bucket that never refused anything: a
    /// new limiter's fresh state. Only for slots no live limiter uses.
    pub fn reset_shared_bucket(&mut self, slot: u16) -> Result<()> {
        self.shared_buckets
            .set(u32::from(slot), SharedBucket::default(), 0)
            .map_err(|err| Error::map("resetting rate-limit state", err))
    }

    /// Prefixes one policy may hold per family (IPv4, IPv6): see [`list_capacity`].
    pub fn list_capacities(&self) -> Result<(u32, u32)> {
        Ok((
            list_capacity(self.list_entries.0),
            list_capacity(self.list_entries.1),
        ))
    }

    /// Every entry of the IPv4 list trie (both generations): key and list value.
    pub fn list_v4_entries(&self) -> Result<Vec<(Key<V4ListKey>, u32)>> {
        let read = |err| Error::map("reading the IPv4 lists", err);
        let mut entries = Vec::new();
        for key in self.lists_v4.keys() {
            let key = key.map_err(read)?;
            let value = self.lists_v4.get(&key, 0).map_err(read)?;
            entries.push((key, value));
        }
        Ok(entries)
    }

    pub fn insert_list_v4(&mut self, key: &Key<V4ListKey>, value: u32) -> Result<()> {
        self.lists_v4
            .insert(key, value, 0)
            .map_err(|err| Error::map("writing the IPv4 lists", err))
    }

    pub fn remove_list_v4(&mut self, key: &Key<V4ListKey>) -> Result<()> {
        self.lists_v4
            .remove(key)
            .map_err(|err| Error::map("writing the IPv4 lists", err))
    }

    /// Every entry of the IPv6 list trie (both generations): key and list value.
    pub fn list_v6_entries(&self) -> Result<Vec<(Key<V6ListKey>, u32)>> {
        let read = |err| Error::map("reading the IPv6 lists", err);
        let mut entries = Vec::new();
        for key in self.lists_v6.keys() {
            let key = key.map_err(read)?;
            let value = self.lists_v6.get(&key, 0).map_err(read)?;
            entries.push((key, value));
        }
        Ok(entries)
    }

    pub fn insert_list_v6(&mut self, key: &Key<V6ListKey>, value: u32) -> Result<()> {
        self.lists_v6
            .insert(key, value, 0)
            .map_err(|err| Error::map("writing the IPv6 lists", err))
    }

    pub fn remove_list_v6(&mut self, key: &Key<V6ListKey>) -> Result<()> {
        self.lists_v6
            .remove(key)
            .map_err(|err| Error::map("writing the IPv6 lists", err))
    }
}

/// Counters, per CPU as the kernel keeps them or summed.
impl GuardMaps {
    /// `ICMP_COUNTERS[index]` ([`icmp_guard_common::counter_index`]) of every CPU.
    pub fn icmp_counter_per_cpu(&self, index: u32) -> Result<PerCpuValues<Counter>> {
        self.icmp_counters
            .get(&index, 0)
            .map_err(|err| Error::map("reading counters", err))
    }

    /// `ICMP_COUNTERS[index]` summed over CPUs.
    pub fn icmp_counter(&self, index: u32) -> Result<Counter> {
        Ok(sum_counters(&self.icmp_counter_per_cpu(index)?))
    }

    /// `GLOBAL_COUNTERS[slot]` ([`icmp_guard_common::global`]) of every CPU.
    pub fn global_counter_per_cpu(&self, slot: u32) -> Result<PerCpuValues<Counter>> {
        self.global_counters
            .get(&slot, 0)
            .map_err(|err| Error::map("reading counters", err))
    }

    /// `GLOBAL_COUNTERS[slot]` summed over CPUs.
    pub fn global_counter(&self, slot: u32) -> Result<Counter> {
        Ok(sum_counters(&self.global_counter_per_cpu(slot)?))
    }

    /// `CODE_COUNTERS[index]` ([`icmp_guard_common::code_counter_index`]) summed over CPUs.
    pub fn code_counter(&self, index: u32) -> Result<CodeCounter> {
        let values = self
            .code_counters
            .get(&index, 0)
            .map_err(|err| Error::map("reading the per-code counters", err))?;
        Ok(values
            .iter()
            .fold(CodeCounter::default(), |total, cpu| CodeCounter {
                packets: total.packets + cpu.packets,
                bytes: total.bytes + cpu.bytes,
                dropped: total.dropped + cpu.dropped,
                would_drop: total.would_drop + cpu.would_drop,
            }))
    }
}

/// The interface slots (`INTERFACES`, `INTERFACE_COUNTERS`).
impl GuardMaps {
    /// Every slot in use, with what it holds.
    pub fn slots(&self) -> Result<Vec<(u32, InterfaceConfig)>> {
        let mut used = Vec::new();
        for slot in 1..interface::SLOTS {
            let config = self
                .interfaces
                .get(&slot, 0)
                .map_err(|err| Error::map("reading the interface slots", err))?;
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
    /// [`Self::set_broadcasts`].
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
            .map_err(|err| Error::map("writing the interface slot", err))
    }

    /// Frees the slot of (`netns`, `ifindex`) if it has one.
    pub fn release_slot(&mut self, netns: u64, ifindex: u32) -> Result<()> {
        if let Some(slot) = self.slot_of(netns, ifindex)? {
            self.interfaces
                .set(slot, InterfaceConfig::default(), 0)
                .map_err(|err| Error::map("freeing the interface slot", err))?;
            self.reset_interface_counters(slot, 0)?;
        }
        Ok(())
    }

    /// Frees the slots of `netns` that no pinned link (or dispatcher component record) uses:
    /// an attach killed between claiming a slot and pinning its link leaves one. The caller
    /// holds the pin lock.
    pub fn release_stale_slots(&mut self, pins: &PinDir, netns: u64) -> Result<()> {
        for (_, config) in self.slots()? {
            if config.netns == netns
                && !pins.has_link(netns, config.ifindex)
                && !pins.has_member(netns, config.ifindex)
            {
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
                .map_err(|err| Error::map("writing the directed broadcasts", err))?;
        }
        Ok(())
    }

    /// Sets the forwarding flag ([`interface_flags::FORWARDING`]) of the slots of `netns`
    /// whose ifindex is listed; others keep theirs.
    pub fn set_forwarding(&mut self, netns: u64, forwarding: &[(u32, bool)]) -> Result<()> {
        for (slot, mut config) in self.slots()? {
            if config.netns != netns {
                continue;
            }
            let Some(&(_, forwards)) = forwarding
                .iter()
                .find(|(ifindex, _)| *ifindex == config.ifindex)
            else {
                continue;
            };
            let flags = if forwards {
                config.flags | interface_flags::FORWARDING
            } else {
                config.flags & !interface_flags::FORWARDING
            };
            if flags != config.flags {
                config.flags = flags;
                self.interfaces
                    .set(slot, config, 0)
                    .map_err(|err| Error::map("writing the interface's forwarding flag", err))?;
            }
        }
        Ok(())
    }

    /// The flags of the instances that run for no interface ([`NO_SLOT`]): what
    /// `BPF_PROG_TEST_RUN` tests use to play a forwarding interface.
    pub fn set_unattached_flags(&mut self, flags: u8) -> Result<()> {
        let mut config = self
            .interfaces
            .get(&NO_SLOT, 0)
            .map_err(|err| Error::map("reading the unattached slot", err))?;
        config.flags = flags;
        self.interfaces
            .set(NO_SLOT, config, 0)
            .map_err(|err| Error::map("writing the unattached slot", err))
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
            .map_err(|err| Error::map("writing the directed broadcasts", err))
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
            .map_err(|err| Error::map("writing the interface counters", err))
    }

    /// The packets counted for each of `ifindexes` of network namespace `netns` that has a
    /// slot, summed over CPUs.
    pub fn interface_counters(
        &self,
        netns: u64,
        ifindexes: &[u32],
    ) -> Result<Vec<(u32, InterfaceCounter)>> {
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
                .map_err(|err| Error::map("reading the interface counters", err))?;
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
}
