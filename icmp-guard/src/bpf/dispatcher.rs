//! `attach --multiprog`: icmp-guard as one program of a libxdp multi-program dispatcher,
//! sharing the interface with xdp-filter, xdp-loader and every other libxdp user. This is
//! libxdp's protocol as xdp-tools 1.3 speaks it (`lib/libxdp/libxdp.c`):
//!
//! ```text
//! /sys/fs/bpf/xdp/                            libxdp's state; flock(2) on it serialises changes
//! /sys/fs/bpf/xdp/dispatch-<ifindex>-<id>/    dispatcher program <id>, running on <ifindex>
//!     prog<N>-prog, prog<N>-link              component N in run order: program, freplace link
//! ```
//!
//! A dispatcher's configuration (`struct xdp_dispatcher_config`, its frozen `.rodata`) says
//! how many components run, in which order (by priority) and on which verdicts the chain goes
//! on. It cannot change, so adding or removing a component builds a new dispatcher: libxdp's
//! own `xdp-dispatcher.o` (from the system, so that the version matches the libxdp that will
//! read it) is loaded with the new configuration, every component is linked into it as a
//! program extension (`BPF_PROG_TYPE_EXT`; the others from their pins, icmp-guard freshly
//! loaded as an extension of it) and pinned in its directory, and only then is the
//! interface's program swapped, atomically, by netlink with `XDP_FLAGS_REPLACE` and the old
//! dispatcher as the expected program; the old directory goes last. Until the swap nothing on
//! the interface has changed, so a failure on the way leaves the old dispatcher running.
//!
//! icmp-guard keeps its own record as the component program pinned in its pin directory
//! ([`super::PinDir::member_path`]): libxdp rebuilds dispatchers (and their links) whenever a
//! program joins or leaves, but the program stays the same.

use std::{
    fs::File,
    io,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{Array, Map, MapData},
    programs::{Extension, ProgramError, ProgramFd, ProgramInfo, Xdp, links::FdLink},
};

use super::{Capacity, Error, Instance, Result, object, pins::PinDir, sys};
use crate::net::link::{self as netlink, AttachMode};

/// libxdp's state directory on bpffs.
pub const STATE_DIR: &str = "/sys/fs/bpf/xdp";
/// The priority libxdp gives a program that does not choose one (`XDP_DEFAULT_RUN_PRIO`).
pub const DEFAULT_PRIORITY: u32 = 50;
/// Components one dispatcher holds (`MAX_DISPATCHER_ACTIONS`).
pub const MAX_PROGRAMS: usize = 10;
/// The directory libxdp looks in first for its BPF objects.
pub const OBJECT_PATH_ENV: &str = "LIBXDP_OBJECT_PATH";

const OBJECT_NAME: &str = "xdp-dispatcher.o";
const DISPATCHER_PROGRAM: &str = "xdp_dispatcher";
const MAGIC: u8 = 236;
const VERSION: u8 = 2;
/// What an empty slot returns; its bit in `chain_call_actions` keeps the chain going.
const RETVAL: u32 = 31;
const XDP_PASS: u32 = 2;
const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;

/// `struct xdp_dispatcher_config` of dispatcher version 2.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub magic: u8,
    pub dispatcher_version: u8,
    pub num_progs_enabled: u8,
    pub is_xdp_frags: u8,
    pub chain_call_actions: [u32; MAX_PROGRAMS],
    pub run_prios: [u32; MAX_PROGRAMS],
    pub program_flags: [u32; MAX_PROGRAMS],
}

// SAFETY: integers only, and no padding (4 bytes, then three arrays of u32).
unsafe impl aya::Pod for Config {}

/// What goes wrong while joining or leaving a dispatcher; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error(
        "the XDP program on {name} ({program}, id {program_id}) runs without a libxdp dispatcher, so nothing can join it: load it with xdp-loader or xdp-filter on a kernel where libxdp uses its dispatcher, or attach (or run) without --multiprog (--replace takes its place); nothing was changed"
    )]
    NotADispatcher {
        name: String,
        program: String,
        program_id: u32,
    },

    #[error(
        "the libxdp dispatcher on {name} is version {version}, which icmp-guard does not speak (it speaks {VERSION}): nothing was changed"
    )]
    UnknownVersion { name: String, version: u8 },

    #[error(
        "the libxdp dispatcher on {name} already runs {MAX_PROGRAMS} programs, all it can hold: unload one first; nothing was changed"
    )]
    Full { name: String },

    #[error(
        "libxdp's {OBJECT_NAME} was not found (looked in {looked}): install libxdp (Debian: libxdp1, with xdp-tools) or set {OBJECT_PATH_ENV}; nothing was changed"
    )]
    NoObject { looked: String },

    #[error(
        "this kernel refuses program extensions (BPF_PROG_TYPE_EXT: {source}), which every program of a libxdp dispatcher is (libxdp itself falls back to a single program here): attach (or run) without --multiprog; nothing was changed on {name}"
    )]
    ExtensionsRefused {
        name: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "joining the libxdp dispatcher on {name} failed while {step} ({source}): the interface runs what it ran before; nothing was changed"
    )]
    Build {
        name: String,
        step: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error(
        "swapping the new libxdp dispatcher onto {name} failed ({source}): the interface runs what it ran before; nothing was changed"
    )]
    Swap {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// One component of a dispatcher.
#[derive(Debug)]
pub struct Component {
    pub program: OwnedFd,
    pub program_id: u32,
    pub name: String,
    pub priority: u32,
    /// Verdicts on which the chain goes on to the next component (bit N: action N).
    pub chain_call_actions: u32,
    /// `BPF_F_XDP_HAS_FRAGS` when it handles multi-buffer frames.
    pub flags: u32,
}

/// A dispatcher running on an interface, read back as libxdp reads it.
#[derive(Debug)]
pub struct Running {
    pub program: OwnedFd,
    pub program_id: u32,
    pub mode: AttachMode,
    pub config: Config,
    /// In run order.
    pub components: Vec<Component>,
}

/// What runs on an interface, as far as joining is concerned.
#[derive(Debug)]
pub enum Found {
    Nothing,
    Dispatcher(Running),
    /// A program that is not a libxdp dispatcher.
    Other {
        program_id: u32,
        name: String,
    },
}

/// One component as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub dispatcher_id: u32,
    /// Run order, 0 first.
    pub position: usize,
    pub priority: u32,
    /// Every component of the dispatcher, in run order: (program name, priority).
    pub programs: Vec<(String, u32)>,
}

/// The pin directory of dispatcher `dispatcher_id` on `ifindex`.
pub fn dispatcher_dir(ifindex: u32, dispatcher_id: u32) -> PathBuf {
    Path::new(STATE_DIR).join(format!("dispatch-{ifindex}-{dispatcher_id}"))
}

/// libxdp's lock: held while the dispatcher of any interface changes.
pub struct XdpLock {
    _dir: File,
}

/// Takes libxdp's lock (creating its state directory, 0700, as libxdp does).
pub fn lock() -> Result<XdpLock> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(STATE_DIR)
        .map_err(|err| Error::io(format!("creating {STATE_DIR}"), err))?;
    let dir =
        File::open(STATE_DIR).map_err(|err| Error::io(format!("opening {STATE_DIR}"), err))?;
    dir.lock()
        .map_err(|err| Error::io(format!("locking {STATE_DIR}"), err))?;
    Ok(XdpLock { _dir: dir })
}

fn program_info(id: u32) -> Option<ProgramInfo> {
    aya::programs::loaded_programs()
        .filter_map(std::result::Result::ok)
        .find(|info| info.id() == id)
}

/// What runs on `ifindex` now; the caller holds [`lock`].
pub fn found_on(ifindex: u32, name: &str) -> Result<Found> {
    let state = netlink::xdp_state(ifindex)
        .map_err(|err| Error::io(format!("reading the XDP state of {name}"), err))?;
    let Some((mode, program_id)) = state.and_then(|state| state.programs.first().copied()) else {
        return Ok(Found::Nothing);
    };
    let info = program_info(program_id).ok_or_else(|| {
        Error::io(
            format!("reading XDP program {program_id} of {name}"),
            io::Error::from_raw_os_error(libc::ENOENT),
        )
    })?;
    let program_name = info.name_as_str().unwrap_or_default().to_owned();
    let map_ids = info.map_ids().ok().flatten().unwrap_or_default();
    if program_name != DISPATCHER_PROGRAM || map_ids.len() != 1 {
        return Ok(Found::Other {
            program_id,
            name: program_name,
        });
    }
    let config = read_config(map_ids[0]).map_err(|step| DispatcherError::Build {
        name: name.to_owned(),
        step: "reading the running dispatcher's configuration".to_owned(),
        source: step.into(),
    })?;
    if config.magic != MAGIC {
        return Ok(Found::Other {
            program_id,
            name: program_name,
        });
    }
    if config.dispatcher_version != VERSION {
        return Err(DispatcherError::UnknownVersion {
            name: name.to_owned(),
            version: config.dispatcher_version,
        }
        .into());
    }
    let program = info
        .fd()
        .map_err(|source| Error::program("opening the running dispatcher", source))?;
    let dir = dispatcher_dir(ifindex, program_id);
    let mut components = Vec::new();
    for slot in 0..usize::from(config.num_progs_enabled).min(MAX_PROGRAMS) {
        let path = dir.join(format!("prog{slot}-prog"));
        let fd = sys::obj_get(&path).map_err(|source| DispatcherError::Build {
            name: name.to_owned(),
            step: format!("opening {}", path.display()),
            source: source.into(),
        })?;
        let component = ProgramInfo::from_pin(&path)
            .map_err(|source| Error::program("reading a dispatcher component", source))?;
        components.push(Component {
            program: fd,
            program_id: component.id(),
            name: component.name_as_str().unwrap_or_default().to_owned(),
            priority: config.run_prios[slot],
            chain_call_actions: config.chain_call_actions[slot] & !(1 << RETVAL),
            flags: config.program_flags[slot],
        });
    }
    Ok(Found::Dispatcher(Running {
        program: program_fd(program)?,
        program_id,
        mode,
        config,
        components,
    }))
}

fn program_fd(program: ProgramFd) -> Result<OwnedFd> {
    program
        .as_fd()
        .try_clone_to_owned()
        .map_err(|err| Error::io("duplicating a program descriptor", err))
}

fn read_config(map_id: u32) -> std::result::Result<Config, aya::maps::MapError> {
    let map = Map::Array(MapData::from_id(map_id)?);
    let array: Array<MapData, Config> = Array::try_from(map)?;
    array.get(&0, 0)
}

/// Where libxdp's dispatcher object is: `$LIBXDP_OBJECT_PATH`, else the directories Debian,
/// Fedora and source builds install it to.
pub fn object_path() -> std::result::Result<PathBuf, DispatcherError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os(OBJECT_PATH_ENV) {
        dirs.push(dir.into());
    } else {
        let multiarch = format!("/usr/lib/{}-linux-gnu/bpf", std::env::consts::ARCH);
        dirs.extend(
            [
                multiarch.as_str(),
                "/usr/lib/bpf",
                "/usr/lib64/bpf",
                "/usr/local/lib/bpf",
            ]
            .map(PathBuf::from),
        );
    }
    dirs.iter()
        .map(|dir| dir.join(OBJECT_NAME))
        .find(|path| path.is_file())
        .ok_or_else(|| DispatcherError::NoObject {
            looked: dirs
                .iter()
                .map(|dir| dir.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The configuration of a dispatcher running `components` in this order.
fn config_of(components: &[Pending<'_>]) -> Config {
    let mut config = Config {
        magic: MAGIC,
        dispatcher_version: VERSION,
        num_progs_enabled: components.len() as u8,
        // Only when every component handles multi-buffer frames; icmp-guard does not.
        is_xdp_frags: 0,
        ..Config::default()
    };
    for (slot, component) in components.iter().enumerate() {
        config.chain_call_actions[slot] = component.chain_call_actions | (1 << RETVAL);
        config.run_prios[slot] = component.priority;
        config.program_flags[slot] = component.flags & BPF_F_XDP_HAS_FRAGS;
    }
    config
}

/// A component of the dispatcher being built.
struct Pending<'a> {
    name: String,
    priority: u32,
    chain_call_actions: u32,
    flags: u32,
    /// An existing component's program; `None` for icmp-guard, loaded against the new
    /// dispatcher.
    program: Option<BorrowedFd<'a>>,
}

/// A dispatcher built, linked and pinned, not yet on the interface.
struct Built {
    dispatcher: aya::Ebpf,
    program_id: u32,
    dir: PathBuf,
    /// icmp-guard's program in it, when it is one of its components.
    ours: Option<(OwnedFd, u32, usize)>,
}

impl Built {
    fn program_fd(&self) -> Result<BorrowedFd<'_>> {
        let program: &Xdp = self
            .dispatcher
            .program(DISPATCHER_PROGRAM)
            .ok_or_else(|| Error::NotInObject {
                what: format!("{DISPATCHER_PROGRAM} in {OBJECT_NAME}"),
            })?
            .try_into()
            .map_err(|source| Error::program("finding the dispatcher", source))?;
        Ok(program
            .fd()
            .map_err(|source| Error::program("finding the dispatcher", source))?
            .as_fd())
    }
}

/// What [`join`] did.
#[derive(Clone, Debug)]
pub struct Joined {
    pub program_id: u32,
    pub dispatcher_id: u32,
    pub mode: AttachMode,
    pub position: usize,
    pub programs: usize,
    /// The dispatcher it replaced, `None` when the interface had none.
    pub replaced: Option<u32>,
}

/// How icmp-guard's own program is loaded into a new dispatcher.
pub struct Ours<'a> {
    pub pins: &'a PinDir,
    pub capacity: Capacity,
    pub instance: Instance,
    pub priority: u32,
    /// Where its record goes ([`PinDir::member_path`]).
    pub record: PathBuf,
}

/// Adds icmp-guard (`ours`) to the dispatcher on `ifindex` (named `name`), or creates one
/// holding just icmp-guard when the interface runs no XDP program, in `mode` then. The caller
/// holds [`lock`] and its pin directory's lock. On error the interface runs what it ran
/// before and nothing new is pinned.
pub fn join(name: &str, ifindex: u32, mode: AttachMode, ours: &Ours<'_>) -> Result<Joined> {
    let (running, mode) = match found_on(ifindex, name)? {
        Found::Nothing => (None, mode),
        Found::Dispatcher(running) => {
            let mode = running.mode;
            (Some(running), mode)
        }
        Found::Other {
            program_id,
            name: program,
        } => {
            return Err(DispatcherError::NotADispatcher {
                name: name.to_owned(),
                program,
                program_id,
            }
            .into());
        }
    };
    let existing = running
        .as_ref()
        .map_or(&[][..], |running| &running.components);
    if existing.len() >= MAX_PROGRAMS {
        return Err(DispatcherError::Full {
            name: name.to_owned(),
        }
        .into());
    }
    let mut components: Vec<Pending<'_>> = existing.iter().map(pending).collect();
    components.push(Pending {
        name: object::Variant::Auto.program_name().to_owned(),
        priority: ours.priority,
        chain_call_actions: 1 << XDP_PASS,
        flags: 0,
        program: None,
    });
    sort(&mut components);
    let built = build(name, ifindex, &components, Some(ours))?;
    let Some((program, program_id, position)) = built
        .ours
        .as_ref()
        .map(|(program, id, slot)| (program.as_fd(), *id, *slot))
    else {
        unpin_dir(&built.dir);
        return Err(Error::NotInObject {
            what: "icmp-guard's component in the new dispatcher".to_owned(),
        });
    };
    // The record first: from the swap on, a detach (the rollback of a failed attach too)
    // must find it.
    if let Err(source) = sys::obj_pin(program, &ours.record) {
        unpin_dir(&built.dir);
        return Err(Error::Syscall {
            action: "pinning icmp-guard's record of its dispatcher component",
            source,
        });
    }
    if let Err(err) = swap(name, ifindex, mode, running.as_ref(), &built) {
        let _ = std::fs::remove_file(&ours.record);
        unpin_dir(&built.dir);
        return Err(err);
    }
    // The new dispatcher runs: the old one's directory goes (best effort, as libxdp does).
    if let Some(running) = &running {
        unpin_dir(&dispatcher_dir(ifindex, running.program_id));
    }
    Ok(Joined {
        program_id,
        dispatcher_id: built.program_id,
        mode,
        position,
        programs: components.len(),
        replaced: running.map(|running| running.program_id),
    })
}

/// Takes program `program_id` out of the dispatcher on `ifindex`: a new dispatcher runs the
/// others, or, when it was the last, the interface is left without XDP program. `Ok(false)`
/// when the dispatcher does not run it (any more). The caller holds [`lock`].
pub fn leave(name: &str, ifindex: u32, program_id: u32) -> Result<bool> {
    let Found::Dispatcher(running) = found_on(ifindex, name)? else {
        return Ok(false);
    };
    if !running
        .components
        .iter()
        .any(|component| component.program_id == program_id)
    {
        return Ok(false);
    }
    let others: Vec<Pending<'_>> = running
        .components
        .iter()
        .filter(|component| component.program_id != program_id)
        .map(pending)
        .collect();
    if others.is_empty() {
        netlink::set_xdp(ifindex, None, running.mode, Some(running.program.as_fd())).map_err(
            |source| DispatcherError::Swap {
                name: name.to_owned(),
                source,
            },
        )?;
    } else {
        let built = build(name, ifindex, &others, None)?;
        if let Err(err) = swap(name, ifindex, running.mode, Some(&running), &built) {
            unpin_dir(&built.dir);
            return Err(err);
        }
    }
    unpin_dir(&dispatcher_dir(ifindex, running.program_id));
    Ok(true)
}

/// The id of the program pinned at `record` (icmp-guard's record of its component).
pub fn recorded_program_id(record: &Path) -> Option<u32> {
    ProgramInfo::from_pin(record).ok().map(|info| info.id())
}

/// icmp-guard's component recorded at `record` for `ifindex`: the recorded program's id
/// (`None` when the record is unreadable) and where that program runs in the interface's
/// dispatcher (`None` when it does not, or no dispatcher runs there).
pub fn recorded_member(record: &Path, ifindex: u32) -> (Option<u32>, Option<Member>) {
    let program_id = recorded_program_id(record);
    (program_id, program_id.and_then(|id| member(ifindex, id)))
}

/// Where program `program_id` runs in the dispatcher on `ifindex`, if it does.
fn member(ifindex: u32, program_id: u32) -> Option<Member> {
    let Ok(Found::Dispatcher(running)) = found_on(ifindex, "") else {
        return None;
    };
    let position = running
        .components
        .iter()
        .position(|component| component.program_id == program_id)?;
    Some(Member {
        dispatcher_id: running.program_id,
        position,
        priority: running.components[position].priority,
        programs: running
            .components
            .iter()
            .map(|component| (component.name.clone(), component.priority))
            .collect(),
    })
}

fn pending(component: &Component) -> Pending<'_> {
    Pending {
        name: component.name.clone(),
        priority: component.priority,
        chain_call_actions: component.chain_call_actions,
        flags: component.flags,
        program: Some(component.program.as_fd()),
    }
}

/// libxdp's run order: by priority, then by name (a stable sort keeps equal ones in order).
fn sort(components: &mut [Pending<'_>]) {
    components.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
}

/// Loads a dispatcher for `components` (in run order), links each into it and pins it all
/// under its directory. Nothing runs it yet. On error nothing of it stays pinned.
fn build(
    name: &str,
    ifindex: u32,
    components: &[Pending<'_>],
    ours: Option<&Ours<'_>>,
) -> Result<Built> {
    let failed = |step: String| {
        let name = name.to_owned();
        move |source: Box<dyn std::error::Error + Send + Sync>| {
            Error::from(DispatcherError::Build { name, step, source })
        }
    };
    let path = object_path()?;
    let bytes = std::fs::read(&path)
        .map_err(|err| failed(format!("reading {}", path.display()))(err.into()))?;
    let config = config_of(components);
    let mut dispatcher = EbpfLoader::new()
        .override_global("conf", &config, true)
        .load(&bytes)
        .map_err(|err| failed(format!("loading {}", path.display()))(err.into()))?;
    let program: &mut Xdp = dispatcher
        .program_mut(DISPATCHER_PROGRAM)
        .ok_or_else(|| Error::NotInObject {
            what: format!("{DISPATCHER_PROGRAM} in {}", path.display()),
        })?
        .try_into()
        .map_err(|source| Error::program("finding the dispatcher", source))?;
    program
        .load()
        .map_err(|err| failed("loading the dispatcher program".to_owned())(err.into()))?;
    let target = program
        .fd()
        .map_err(|source| Error::program("finding the dispatcher", source))?
        .try_clone()
        .map_err(|err| Error::io("duplicating the dispatcher's descriptor", err))?;
    let dispatcher_id = program
        .info()
        .map_err(|source| Error::program("reading the new dispatcher", source))?
        .id();
    let dir = dispatcher_dir(ifindex, dispatcher_id);
    let mut built = Built {
        dispatcher,
        program_id: dispatcher_id,
        dir: dir.clone(),
        ours: None,
    };
    let result = link_all(name, &dir, components, ours, &target, &mut built);
    if let Err(err) = result {
        unpin_dir(&dir);
        return Err(err);
    }
    Ok(built)
}

fn link_all(
    name: &str,
    dir: &Path,
    components: &[Pending<'_>],
    ours: Option<&Ours<'_>>,
    target: &ProgramFd,
    built: &mut Built,
) -> Result<()> {
    std::fs::create_dir(dir)
        .map_err(|err| build_failed(name, format!("creating {}", dir.display()), err.into()))?;
    for (slot, component) in components.iter().enumerate() {
        // With one component libxdp replaces the dispatcher's main function itself.
        let function = if components.len() == 1 {
            DISPATCHER_PROGRAM.to_owned()
        } else {
            format!("prog{slot}")
        };
        match (component.program, ours) {
            (Some(program), _) => {
                link_existing(name, dir, slot, &function, component, program, target)?;
            }
            (None, Some(ours)) => {
                built.ours = Some(link_ours(name, dir, slot, &function, ours, target)?);
            }
            (None, None) => {
                return Err(Error::NotInObject {
                    what: format!("the program of component {}", component.name),
                });
            }
        }
    }
    Ok(())
}

fn build_failed(
    name: &str,
    step: String,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> Error {
    Error::from(DispatcherError::Build {
        name: name.to_owned(),
        step,
        source,
    })
}

/// Links an existing component (`program`) into `function` of the new dispatcher and pins
/// both in slot `slot` of `dir`.
fn link_existing(
    name: &str,
    dir: &Path,
    slot: usize,
    function: &str,
    component: &Pending<'_>,
    program: BorrowedFd<'_>,
    target: &ProgramFd,
) -> Result<()> {
    let path = pin_path(dir, slot, "prog");
    sys::obj_pin(program, &path).map_err(|source| {
        build_failed(name, format!("pinning {}", path.display()), source.into())
    })?;
    let mut extension = Extension::from_pin(&path).map_err(|source| {
        build_failed(name, format!("opening {}", path.display()), source.into())
    })?;
    let link = extension
        .attach_to_program(target, function)
        .map_err(|source| {
            build_failed(
                name,
                format!("linking {} into {function}", component.name),
                source.into(),
            )
        })?;
    pin_link(name, dir, slot, extension.take_link(link).map(FdLink::from))
}

fn pin_link(
    name: &str,
    dir: &Path,
    slot: usize,
    link: std::result::Result<FdLink, ProgramError>,
) -> Result<()> {
    let link =
        link.map_err(|source| build_failed(name, "keeping a link".to_owned(), source.into()))?;
    let path = pin_path(dir, slot, "link");
    link.pin(&path).map_err(|source| {
        build_failed(name, format!("pinning {}", path.display()), source.into())
    })?;
    Ok(())
}

/// Loads icmp-guard as an extension of `function` of the new dispatcher, links it and pins
/// both in slot `slot` of `dir`; returns its program, id and slot.
fn link_ours(
    name: &str,
    dir: &Path,
    slot: usize,
    function: &str,
    ours: &Ours<'_>,
    target: &ProgramFd,
) -> Result<(OwnedFd, u32, usize)> {
    let target = target
        .try_clone()
        .map_err(|err| Error::io("duplicating the dispatcher's descriptor", err))?;
    let mut ebpf = object::load_extension(
        Some(ours.pins),
        ours.capacity,
        ours.instance,
        target,
        function,
    )
    .map_err(|err| match err {
        Error::VerifierRejected { source, .. } if source.raw_os_error() == Some(libc::EPERM) => {
            Error::from(DispatcherError::ExtensionsRefused {
                name: name.to_owned(),
                source,
            })
        }
        other => other,
    })?;
    let program = object::extension_program(&mut ebpf)?;
    let link = program.attach().map_err(|source| {
        build_failed(
            name,
            format!("linking icmp-guard into {function}"),
            source.into(),
        )
    })?;
    pin_link(name, dir, slot, program.take_link(link).map(FdLink::from))?;
    let fd = program
        .fd()
        .map_err(|source| Error::program("finding icmp-guard's program", source))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|err| Error::io("duplicating a descriptor", err))?;
    let path = pin_path(dir, slot, "prog");
    sys::obj_pin(fd.as_fd(), &path).map_err(|source| {
        build_failed(name, format!("pinning {}", path.display()), source.into())
    })?;
    let id = ProgramInfo::from_pin(&path)
        .map_err(|source| Error::program("reading icmp-guard's component", source))?
        .id();
    Ok((fd, id, slot))
}

fn pin_path(dir: &Path, slot: usize, what: &str) -> PathBuf {
    dir.join(format!("prog{slot}-{what}"))
}

/// Puts the built dispatcher on `ifindex` in place of `running` (or where nothing ran).
fn swap(
    name: &str,
    ifindex: u32,
    mode: AttachMode,
    running: Option<&Running>,
    built: &Built,
) -> Result<()> {
    netlink::set_xdp(
        ifindex,
        Some(built.program_fd()?),
        mode,
        running.map(|running| running.program.as_fd()),
    )
    .map_err(|source| {
        DispatcherError::Swap {
            name: name.to_owned(),
            source,
        }
        .into()
    })
}

/// Removes a dispatcher's pin directory (its links first, which lets the dispatcher go once
/// nothing runs it). Best effort: what cannot be removed stays for `xdp-loader clean`.
fn unpin_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<PathBuf> = entries
            .filter_map(std::result::Result::ok)
            .map(|entry| entry.path())
            .collect();
        // Links before programs.
        paths.sort_by_key(|path| !path.to_string_lossy().ends_with("-link"));
        for path in paths {
            let _ = std::fs::remove_file(path);
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_has_libxdps_layout() {
        assert_eq!(size_of::<Config>(), 4 + 3 * 4 * MAX_PROGRAMS);
        assert_eq!(std::mem::offset_of!(Config, chain_call_actions), 4);
        assert_eq!(std::mem::offset_of!(Config, run_prios), 44);
        assert_eq!(std::mem::offset_of!(Config, program_flags), 84);
    }

    #[test]
    fn components_run_by_priority_then_name_and_the_chain_goes_on_after_pass() {
        let component = |name: &str, priority| Pending {
            name: name.to_owned(),
            priority,
            chain_call_actions: 1 << XDP_PASS,
            flags: 0,
            program: None,
        };
        let mut components = vec![
            component("icmp_guard", 50),
            component("xdpfilt_dny_all", 10),
            component("b", 50),
        ];
        sort(&mut components);
        let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["xdpfilt_dny_all", "b", "icmp_guard"]);
        let config = config_of(&components);
        assert_eq!(config.num_progs_enabled, 3);
        assert_eq!(config.run_prios[..3], [10, 50, 50]);
        assert_eq!(
            config.chain_call_actions[0],
            (1 << XDP_PASS) | (1 << RETVAL)
        );
        assert_eq!(config.chain_call_actions[3], 0);
    }
}
