//! The kernel side of `icmp-guard trace`: the trace build's program in an object, its
//! `TRACE` map (the filter and the deadline), and the clock that deadline is on.

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, MapInfo, ProgramArray},
    programs::Xdp,
};
use icmp_guard_common::trace::{self, TraceConfig};

use super::{Error, Result, object};

/// The loaded trace program of an object from [`object::load_trace_instance`].
pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let name = object::loaded_variant(
        ebpf,
        [trace::PROGRAM_NAME, trace::LOCKED_PROGRAM_NAME],
        object::loaded_xdp,
    )
    .ok_or_else(|| Error::NotInObject {
        what: "the loaded trace program".to_owned(),
    })?;
    object::program_of(ebpf, name, "finding the trace program")
}

/// The trace build's report program, which its guard tail-calls.
pub const LOG_PROGRAM_NAME: &str = "icmp_trace_log";
/// The guard's tail-call slot for it.
const LOG_SLOT_MAP: &str = "TRACE_LOG";

/// Loads the report program of a trace object and puts it in the guard's tail-call slot.
pub fn install_log(ebpf: &mut Ebpf) -> Result<()> {
    let program: &mut Xdp =
        object::program_of(ebpf, LOG_PROGRAM_NAME, "finding the trace report program")?;
    object::loaded(program.load(), "loading the trace report program")?;
    let fd = program
        .fd()
        .map_err(|source| Error::program("finding the trace report program", source))?
        .try_clone()
        .map_err(|source| Error::Syscall {
            action: "duplicating the trace report program's descriptor",
            source: super::sys::SyscallError {
                call: "dup",
                source,
            },
        })?;
    let map = ebpf
        .map_mut(LOG_SLOT_MAP)
        .ok_or_else(|| Error::NotInObject {
            what: format!("the map {LOG_SLOT_MAP}"),
        })?;
    let mut slots: ProgramArray<&mut MapData> = ProgramArray::try_from(map)
        .map_err(|source| Error::map(format!("opening {LOG_SLOT_MAP}"), source))?;
    slots
        .set(0, &fd, 0)
        .map_err(|source| Error::map(format!("writing {LOG_SLOT_MAP}"), source))?;
    Ok(())
}

/// Writes the filter and deadline of the trace program of `ebpf`.
pub fn configure(ebpf: &mut Ebpf, config: &TraceConfig) -> Result<()> {
    let map = ebpf.map_mut(trace::MAP).ok_or_else(|| Error::NotInObject {
        what: format!("the map {}", trace::MAP),
    })?;
    let mut array: Array<&mut MapData, TraceConfig> = Array::try_from(map)
        .map_err(|source| Error::map(format!("opening {}", trace::MAP), source))?;
    array
        .set(0, config, 0)
        .map_err(|source| Error::map(format!("writing {}", trace::MAP), source))
}

/// The trace settings of the running program `program_id`, when it is a trace build (its
/// name says so, and its `TRACE` map can be read); `None` for any other program.
pub fn running(program_id: u32) -> Option<TraceConfig> {
    let info = aya::programs::loaded_programs()
        .filter_map(std::result::Result::ok)
        .find(|info| info.id() == program_id)?;
    if !object::is_trace_program_name(info.name_as_str()) {
        return None;
    }
    let id =
        info.map_ids().ok().flatten()?.into_iter().find(|id| {
            MapInfo::from_id(*id).is_ok_and(|map| map.name_as_str() == Some(trace::MAP))
        })?;
    let data = MapData::from_id(id).ok()?;
    let array: Array<MapData, TraceConfig> = Array::try_from(Map::Array(data)).ok()?;
    // A trace program whose map cannot be read is reported with a deadline long past, so
    // that it is swapped out.
    Some(array.get(&0, 0).unwrap_or_default())
}

/// The running program `program_id` is the trace build: whether it still traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracing {
    /// Until this many seconds from now.
    Until { remaining_ns: u64 },
    /// Its deadline passed: a trace whose `icmp-guard trace` was killed.
    Stale,
}

/// Whether program `program_id` is the trace build, and until when it traces.
pub fn tracing(program_id: u32) -> Option<Tracing> {
    let config = running(program_id)?;
    let now = monotonic_ns();
    Some(if config.deadline_ns > now {
        Tracing::Until {
            remaining_ns: config.deadline_ns - now,
        }
    } else {
        Tracing::Stale
    })
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, which the trace
/// program compares its deadline with (the one reader of it, in `maps`).
pub use super::maps::monotonic_ns;
