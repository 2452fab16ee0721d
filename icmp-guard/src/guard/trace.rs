//! `trace`: the trace build of the program swapped into an interface's link for a while,
//! with an aya-log reader for its reports, and the production program swapped back after.
//!
//! The swaps are `BPF_LINK_UPDATE`s under the pin directory's lock, so the interface is
//! never without a guard, and both builds run with the pinned maps, so policy and counters
//! stay live. A `trace` that dies without swapping back (SIGKILL) leaves the trace build
//! in place, which stops reporting by itself at its deadline (the kernel side checks it);
//! the next command that opens the guard ([`super::Guard::open`]), `run`'s watchdog, or
//! `repair` then swaps the production program back ([`super::Guard::restore_stale_traces`]).

use std::{
    os::fd::{AsFd as _, BorrowedFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::Ebpf;
use aya_log::EbpfLogger;
use icmp_guard_common::trace::TraceConfig;

use super::{
    AttachOptions,
    attach::{self, runs_with_pinned_maps},
    netns,
};
use crate::{
    bpf::{
        self, GuardMaps, Instance, PinDir, Variant, links,
        trace::{self as bpf_trace, Tracing},
    },
    error::{Error, Result},
    net,
    observe::trace::TraceLine,
};

/// The log records of the trace program, as aya-log formats them, until the session reads
/// them.
#[derive(Clone, Default)]
struct Collector {
    records: Arc<Mutex<Vec<String>>>,
}

impl log::Log for Collector {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut records) = self.records.lock() {
            records.push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// A trace in progress on one interface: the trace build runs in its link until
/// [`TraceSession::finish`] (or the session is dropped) swaps the production program back.
pub struct TraceSession {
    pins: PinDir,
    name: String,
    logger: EbpfLogger<Collector>,
    records: Arc<Mutex<Vec<String>>>,
    deadline_ns: u64,
    trace_program_id: u32,
    restored: bool,
    // The trace object (its program and the ring buffer aya-log reads); the link holds the
    // program too.
    _ebpf: Ebpf,
}

impl super::Guard {
    /// Swaps the trace build into `name`'s link, reporting the packets that match `filter`
    /// for `seconds` (the kernel side stops at that deadline even if this process dies).
    pub fn start_trace(
        &self,
        name: &str,
        filter: TraceConfig,
        seconds: u64,
    ) -> Result<TraceSession> {
        let pins = self.pins();
        let ifindex = net::interface::ifindex(name)?;
        let netns = netns()?;
        if !pins.has_link(netns, ifindex) {
            let name = name.to_owned();
            return Err(if pins.has_member(netns, ifindex) {
                Error::TraceMultiprog { name }
            } else {
                Error::TraceNotAttached { name }
            });
        }
        let _lock = pins.lock_attached()?;
        let (link, info) = links::open(&pins.link_path(netns, ifindex))?;
        if info.ifindex == 0 {
            return Err(Error::TraceNotAttached {
                name: name.to_owned(),
            });
        }
        if let Some(Tracing::Until { remaining_ns }) = bpf_trace::tracing(info.program_id) {
            return Err(Error::TraceBusy {
                name: name.to_owned(),
                until: clock_time_in(Duration::from_nanos(remaining_ns)),
            });
        }
        runs_with_pinned_maps(pins, name, info.program_id)?;
        let (slot, config) = GuardMaps::open(pins)?
            .slots()?
            .into_iter()
            .find(|(_, config)| config.netns == netns && config.ifindex == ifindex)
            .ok_or_else(|| Error::Damaged {
                path: pins.root().to_path_buf(),
                reason: format!("the interface slot of {name} is missing from the pinned maps"),
            })?;
        let mut ebpf = bpf::load_trace_instance(
            Some(pins),
            Instance {
                slot,
                link_kind: config.link_kind,
                variant: Variant::Auto,
            },
        )?;
        let deadline_ns = bpf_trace::monotonic_ns() + seconds * 1_000_000_000;
        bpf_trace::configure(
            &mut ebpf,
            &TraceConfig {
                deadline_ns,
                ..filter
            },
        )?;
        let collector = Collector::default();
        let records = Arc::clone(&collector.records);
        let logger = EbpfLogger::init_with_logger(&mut ebpf, collector)
            .map_err(|source| Error::TraceLogger { source })?;
        let program = bpf_trace::program(&mut ebpf)?;
        let trace_program_id = program
            .info()
            .map_err(|source| bpf::Error::program("reading the trace program", source))?
            .id();
        let program_fd = program
            .fd()
            .map_err(|source| bpf::Error::program("finding the trace program", source))?
            .as_fd();
        links::upgrade(name, link.as_fd(), program_fd)?;
        Ok(TraceSession {
            pins: pins.clone(),
            name: name.to_owned(),
            logger,
            records,
            deadline_ns,
            trace_program_id,
            restored: false,
            _ebpf: ebpf,
        })
    }

    /// Swaps the production program back into every link of this namespace that runs a
    /// trace build whose deadline has passed (left by a killed `trace`); returns their
    /// interfaces. A live trace is left alone.
    pub fn restore_stale_traces(&self) -> Result<Vec<String>> {
        let pins = self.pins();
        if !pins.root().exists() {
            return Ok(Vec::new());
        }
        let stale: Vec<String> = links::list(pins, netns()?)?
            .into_iter()
            .filter(|link| !link.interface_gone && link.mode.is_some())
            .filter(|link| bpf_trace::tracing(link.program_id) == Some(Tracing::Stale))
            .filter_map(|link| link.name)
            .collect();
        if !stale.is_empty() {
            restore(pins, &stale)?;
        }
        Ok(stale)
    }
}

/// Swaps this binary's production program into the links of `names` (an upgrade in
/// place: same link, same slot, same maps).
fn restore(pins: &PinDir, names: &[String]) -> Result<()> {
    let options = AttachOptions {
        upgrade: true,
        ..AttachOptions::default()
    };
    attach::attach(pins, names, &options).map(|_| ())
}

impl TraceSession {
    /// The descriptor that becomes readable when the trace program has reported.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.logger.as_fd()
    }

    /// The reports that arrived since the last call.
    pub fn read(&mut self) -> Vec<TraceLine> {
        self.logger.flush();
        let records = match self.records.lock() {
            Ok(mut records) => std::mem::take(&mut *records),
            Err(_) => Vec::new(),
        };
        records
            .iter()
            .filter_map(|record| TraceLine::parse(record))
            .collect()
    }

    /// How long until the deadline.
    pub fn remaining(&self) -> Duration {
        Duration::from_nanos(self.deadline_ns.saturating_sub(bpf_trace::monotonic_ns()))
    }

    /// The interface traced.
    pub fn interface(&self) -> &str {
        &self.name
    }

    /// The id of the trace program.
    pub fn program_id(&self) -> u32 {
        self.trace_program_id
    }

    /// Swaps the production program back into the link.
    pub fn finish(mut self) -> Result<()> {
        self.restored = true;
        self.restore()
    }

    fn restore(&self) -> Result<()> {
        // Only if the link still runs this session's program: a later `attach --upgrade`
        // has put the production program there already.
        let netns = netns()?;
        let ifindex = net::interface::ifindex(&self.name)?;
        let path = self.pins.link_path(netns, ifindex);
        match links::inspect(&path)? {
            Some(info) if info.program_id == self.trace_program_id => {
                restore(&self.pins, std::slice::from_ref(&self.name))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for TraceSession {
    fn drop(&mut self) {
        if !self.restored {
            let _ignored = self.restore();
        }
    }
}

/// The wall-clock time `after` from now, as HH:MM:SS local time.
pub fn clock_time_in(after: Duration) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let then = (now + after).as_secs() as libc::time_t;
    // SAFETY: an all-zero `tm` is valid to write to.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a time and a `tm` of this frame.
    let converted = unsafe { libc::localtime_r(&raw const then, &raw mut tm) };
    if converted.is_null() {
        let seconds = then % 86_400;
        return format!(
            "{:02}:{:02}:{:02} UTC",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        );
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}
