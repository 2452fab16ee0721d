//! Loads the XDP program, attaches it to interfaces, pins links and maps, and finds them
//! again in later invocations.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode, links::FdLink, links::PinnedLink},
};
use icmp_guard_common::{
    Counter, PROGRAM_NAME, config, maps,
    policy::{LimiterConfig, RATE_PREFIXES, RATE_SOURCES, RateKey, Rule, V4ListKey, V6ListKey},
};

use crate::{
    error::{Error, Result},
    netlink::{self, AttachMode},
    pins::PinDir,
    policy::{self, Policy},
    system,
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
}

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
}

/// Loads the program. With `pins`, every map is opened from (or created and pinned to) the
/// pin directory; without, the maps are private to the returned object (verdict tests).
pub fn load(pins: Option<&PinDir>) -> Result<Ebpf> {
    load_with(pins, Capacity::default())
}

/// [`load`] with chosen LRU sizes (ignored for maps that are already pinned).
pub fn load_with(pins: Option<&PinDir>, capacity: Capacity) -> Result<Ebpf> {
    if crate::is_stub_build() {
        return Err(Error::StubBuild);
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
        .map_max_entries(maps::RATE_PREFIXES, capacity.prefixes);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(crate::ebpf_object())
        .map_err(|err| Error::bpf("loading the eBPF object", err))?;
    let program = xdp_program(&mut ebpf)?;
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

/// The XDP program inside a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or_else(|| Error::bpf("finding the XDP program", "not in the object"))?
        .try_into()
        .map_err(|err| Error::bpf("finding the XDP program", err))
}

/// Attaches to every interface in `names`, or to none: if one fails, the ones attached by
/// this call are detached again and fresh pins are removed.
pub fn attach(pins: &PinDir, names: &[String], options: &AttachOptions) -> Result<Vec<Attached>> {
    let mut targets: Vec<(String, u32)> = Vec::new();
    for name in names {
        let ifindex = system::ifindex(name)?;
        if targets.iter().any(|(_, index)| *index == ifindex) {
            continue;
        }
        if pins.has_link(ifindex) {
            return Err(Error::AlreadyAttached { name: name.clone() });
        }
        let state = netlink::xdp_state(ifindex)
            .map_err(|err| Error::io(format!("reading the XDP state of {name}"), err))?
            .ok_or_else(|| Error::UnknownInterface { name: name.clone() })?;
        if let Some((_, program_id)) = state.programs.first() {
            return Err(Error::ForeignProgram {
                name: name.clone(),
                program_id: *program_id,
            });
        }
        targets.push((name.clone(), ifindex));
    }

    pins.create()?;
    let outcome = attach_all(pins, &targets, options);
    if outcome.is_err() {
        // Leave nothing behind that this call created.
        for (_, ifindex) in &targets {
            let _ignored = detach(pins, *ifindex);
        }
        let _ignored = pins.remove_if_unused();
    }
    outcome
}

fn attach_all(
    pins: &PinDir,
    targets: &[(String, u32)],
    options: &AttachOptions,
) -> Result<Vec<Attached>> {
    let fresh = !pins.has_maps();
    let dry_run = options.dry_run;
    let mut ebpf = load_with(Some(pins), options.capacity)?;
    {
        let _lock = policy::PolicyLock::acquire(pins)?;
        let mut guard_maps = GuardMaps::open(pins)?;
        let chosen = match &options.policy {
            Some(policy) => Some(policy.clone()),
            None if fresh => Some(Policy::default_profile()),
            None => None,
        };
        if let Some(mut chosen) = chosen {
            if dry_run {
                chosen.mode = policy::Mode::DryRun;
            }
            policy::apply(&mut guard_maps, &chosen)?;
        } else if dry_run {
            guard_maps.set_mode(config::MODE_DRY_RUN)?;
        }
    }
    let program = xdp_program(&mut ebpf)?;
    let mut attached = Vec::new();
    for (name, ifindex) in targets {
        attached.push(attach_one(program, pins, name, *ifindex, options.mode)?);
    }
    Ok(attached)
}

fn attach_one(
    program: &mut Xdp,
    pins: &PinDir,
    name: &str,
    ifindex: u32,
    mode: ModeRequest,
) -> Result<Attached> {
    let failed = |err: ProgramError| Error::AttachFailed {
        name: name.to_owned(),
        reason: describe(&err),
    };
    let (link_id, fallback) = match mode {
        ModeRequest::Generic => (
            program
                .attach_to_if_index(ifindex, XdpMode::Skb)
                .map_err(failed)?,
            None,
        ),
        ModeRequest::Native => (
            program
                .attach_to_if_index(ifindex, XdpMode::Driver)
                .map_err(|err| Error::NativeUnsupported {
                    name: name.to_owned(),
                    reason: describe(&err),
                })?,
            None,
        ),
        ModeRequest::Auto => match program.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(link_id) => (link_id, None),
            Err(native_err) => (
                program
                    .attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(failed)?,
                Some(describe(&native_err)),
            ),
        },
    };
    let link = program
        .take_link(link_id)
        .map_err(|err| Error::bpf("taking the XDP link", err))?;
    let link = FdLink::try_from(link).map_err(|_| Error::AttachFailed {
        name: name.to_owned(),
        reason: "the kernel attached without a bpf_link, which cannot be pinned".to_owned(),
    })?;
    let program_id = link
        .info()
        .map_err(|err| Error::bpf("reading the XDP link", err))?
        .program_id();
    link.pin(pins.link_path(ifindex))
        .map_err(|err| Error::bpf(format!("pinning the link of {name}"), err))?;
    let mode = netlink::xdp_state(ifindex)
        .ok()
        .flatten()
        .and_then(|state| state.mode_of(program_id));
    Ok(Attached {
        name: name.to_owned(),
        ifindex,
        mode,
        fallback,
        program_id,
    })
}

fn describe(err: &ProgramError) -> String {
    match err {
        ProgramError::SyscallError(syscall) => syscall.io_error.to_string(),
        other => other.to_string(),
    }
}

/// Removes the pinned link of `ifindex`, which detaches the program from it. `Ok(false)`
/// when nothing was attached there.
pub fn detach(pins: &PinDir, ifindex: u32) -> Result<bool> {
    let path = pins.link_path(ifindex);
    if !path.exists() {
        return Ok(false);
    }
    let link = PinnedLink::from_pin(&path)
        .map_err(|err| Error::bpf(format!("opening {}", path.display()), err))?;
    // Dropping the last reference (the pin, then this fd) releases the link and with it the
    // attachment.
    let link: FdLink = link
        .unpin()
        .map_err(|err| Error::io(format!("removing {}", path.display()), err))?;
    drop(link);
    Ok(true)
}

/// Every pinned link with what the kernel says about it.
pub fn links(pins: &PinDir) -> Result<Vec<LinkStatus>> {
    let mut statuses = Vec::new();
    for ifindex in pins.linked_ifindexes()? {
        let path = pins.link_path(ifindex);
        let link: FdLink = PinnedLink::from_pin(&path)
            .map_err(|err| Error::BrokenPinState {
                path: path.clone(),
                reason: err.to_string(),
            })?
            .into();
        let info = link
            .info()
            .map_err(|err| Error::bpf("reading a pinned link", err))?;
        let state = netlink::xdp_state(ifindex).ok().flatten();
        statuses.push(LinkStatus {
            name: state.as_ref().map(|state| state.name.clone()),
            ifindex,
            link_id: info.id(),
            program_id: info.program_id(),
            mode: state.and_then(|state| state.mode_of(info.program_id())),
        });
    }
    Ok(statuses)
}

/// How many sources and prefixes have a rate-limit bucket now.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Tracked {
    pub sources: u64,
    pub sources_capacity: u32,
    pub prefixes: u64,
    pub prefixes_capacity: u32,
}

/// Counts the entries of the pinned rate-limit LRU maps.
pub fn tracked(pins: &PinDir) -> Result<Tracked> {
    let count = |name: &str| -> Result<u64> {
        let path = pins.map_path(name);
        let data = MapData::from_pin(&path).map_err(|err| Error::BrokenPinState {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        let map: HashMap<MapData, RateKey, u64> = Map::from_map_data(data)
            .and_then(HashMap::try_from)
            .map_err(|err| Error::bpf(format!("opening map {name}"), err))?;
        Ok(map.keys().filter(std::result::Result::is_ok).count() as u64)
    };
    Ok(Tracked {
        sources: count(maps::RATE_SOURCES)?,
        sources_capacity: RATE_SOURCES,
        prefixes: count(maps::RATE_PREFIXES)?,
        prefixes_capacity: RATE_PREFIXES,
    })
}

/// The maps of a running guard, opened from their pins or taken from a loaded object.
pub struct GuardMaps {
    pub icmp_counters: PerCpuArray<MapData, Counter>,
    pub global_counters: PerCpuArray<MapData, Counter>,
    pub policy_types: Array<MapData, Rule>,
    pub policy_codes: HashMap<MapData, u32, Rule>,
    pub limiters: Array<MapData, LimiterConfig>,
    pub lists_v4: LpmTrie<MapData, V4ListKey, u32>,
    pub lists_v6: LpmTrie<MapData, V6ListKey, u32>,
    pub config: Array<MapData, u32>,
}

impl GuardMaps {
    /// Opens the pinned maps; [`Error::NotAttached`] when there are none.
    pub fn open(pins: &PinDir) -> Result<Self> {
        if !pins.has_maps() {
            return Err(Error::NotAttached);
        }
        let open = |name: &str| -> Result<Map> {
            let path = pins.map_path(name);
            let broken = |reason: String| Error::BrokenPinState {
                path: path.clone(),
                reason,
            };
            let data = MapData::from_pin(&path).map_err(|err| broken(err.to_string()))?;
            Map::from_map_data(data).map_err(|err| broken(err.to_string()))
        };
        Self::from_maps(open)
    }

    /// Takes the maps out of a loaded object (verdict tests, with private maps).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Self::from_maps(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| Error::bpf(format!("finding map {name}"), "not in the object"))
        })
    }

    fn from_maps(mut get: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        let wrong =
            |name: &str, err: aya::maps::MapError| Error::bpf(format!("opening map {name}"), err);
        Ok(Self {
            icmp_counters: PerCpuArray::try_from(get(maps::ICMP_COUNTERS)?)
                .map_err(|err| wrong(maps::ICMP_COUNTERS, err))?,
            global_counters: PerCpuArray::try_from(get(maps::GLOBAL_COUNTERS)?)
                .map_err(|err| wrong(maps::GLOBAL_COUNTERS, err))?,
            policy_types: Array::try_from(get(maps::POLICY_TYPES)?)
                .map_err(|err| wrong(maps::POLICY_TYPES, err))?,
            policy_codes: HashMap::try_from(get(maps::POLICY_CODES)?)
                .map_err(|err| wrong(maps::POLICY_CODES, err))?,
            limiters: Array::try_from(get(maps::LIMITERS)?)
                .map_err(|err| wrong(maps::LIMITERS, err))?,
            lists_v4: LpmTrie::try_from(get(maps::LISTS_V4)?)
                .map_err(|err| wrong(maps::LISTS_V4, err))?,
            lists_v6: LpmTrie::try_from(get(maps::LISTS_V6)?)
                .map_err(|err| wrong(maps::LISTS_V6, err))?,
            config: Array::try_from(get(maps::CONFIG)?).map_err(|err| wrong(maps::CONFIG, err))?,
        })
    }

    /// The guard's mode (`config::MODE_*`).
    pub fn mode(&self) -> Result<u32> {
        self.config
            .get(&config::MODE, 0)
            .map_err(|err| Error::bpf("reading the mode", err))
    }

    /// Sets the guard's mode; takes effect on the next packet.
    pub fn set_mode(&mut self, mode: u32) -> Result<()> {
        self.config
            .set(config::MODE, mode, 0)
            .map_err(|err| Error::bpf("setting the mode", err))
    }
}
