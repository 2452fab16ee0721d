//! Everything icmp-guard keeps in the kernel: the program object and its instances
//! ([`object`]), the maps as typed handles ([`maps`]), the XDP links ([`links`]), the
//! libxdp dispatchers it joins instead with `--multiprog` ([`dispatcher`]), the pins
//! that make both outlive the process and the locks that serialise changes ([`pins`]), the
//! few bpf(2) commands aya lacks ([`sys`]) and RCU grace periods ([`rcu`]).
//!
//! This layer knows kernel encodings (`icmp_guard_common`), never the policy model: the
//! policy compiles itself into these maps from above (`crate::policy::store`).

pub mod dispatcher;
pub mod links;
pub mod maps;
pub mod object;
pub mod pins;
pub mod rcu;
pub mod sys;
pub mod trace;

use std::{io, path::PathBuf};

pub use maps::GuardMaps;
pub use object::{
    Capacity, Instance, Variant, is_guard_program_name, is_trace_program_name, load, load_instance,
    load_trace_guard, load_trace_instance, ns_per_jiffy, xdp_program,
};
pub use pins::{PinDir, PinLock};

/// What can go wrong with the kernel objects; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("icmp-guard is not attached: run `icmp-guard attach <IFACE>` first")]
    NotAttached,

    #[error(
        "this binary was built without its XDP program (ICMP_GUARD_STUB_EBPF=1): rebuild it without that variable"
    )]
    StubBuild,

    #[error(
        "the kernel's verifier rejected the XDP program ({source}): rerun with -v to see its log"
    )]
    VerifierRejected {
        #[source]
        source: io::Error,
        log: String,
    },

    #[error("{action} failed: {source}")]
    Object {
        action: &'static str,
        #[source]
        source: Box<aya::EbpfError>,
    },

    #[error("{action} failed: {source}")]
    Program {
        action: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },

    #[error("{action} failed: {source}")]
    Map {
        action: String,
        #[source]
        source: Box<aya::maps::MapError>,
    },

    #[error("{what} is not in the eBPF object: the binary and its program do not match")]
    NotInObject { what: String },

    #[error(
        "the pinned state in {} is incomplete or foreign ({source}): run `icmp-guard detach --all` and attach again", path.display()
    )]
    BrokenMapPin {
        path: PathBuf,
        #[source]
        source: Box<aya::maps::MapError>,
    },

    #[error(
        "the pinned state in {} is incomplete or foreign ({source}): run `icmp-guard detach --all` and attach again", path.display()
    )]
    BrokenLinkPin {
        path: PathBuf,
        #[source]
        source: sys::SyscallError,
    },

    #[error(
        "the pinned state in {} is incomplete or foreign (a bpf_link of type {link_type} where an XDP link belongs): run `icmp-guard detach --all` and attach again", path.display()
    )]
    NotAnXdpLink { path: PathBuf, link_type: u32 },

    #[error(
        "refusing the pin path {}: it is {why} (owner uid {owner}, mode {mode:o}), so another user could remove the guard's pins: use a directory only root can write (--pin-dir or ICMP_GUARD_PIN_DIR)", path.display()
    )]
    UntrustedPinPath {
        path: PathBuf,
        owner: u32,
        mode: u32,
        why: &'static str,
    },

    #[error(
        "{} is locked by {holder}, which did not let go within {seconds} s: wait for it to finish or stop it (ICMP_GUARD_LOCK_TIMEOUT sets the wait in seconds)", path.display()
    )]
    LockTimeout {
        path: PathBuf,
        seconds: f64,
        holder: String,
    },

    #[error(
        "the pinned state in {} was left half-made by an interrupted attach: run `icmp-guard attach <IFACE>` to complete it, or `icmp-guard detach --all` to remove it", path.display()
    )]
    Incomplete { path: PathBuf },

    #[error(
        "the pinned maps in {} were made by another icmp-guard version ({detail}): run `icmp-guard detach --all` first", path.display()
    )]
    LayoutMismatch { path: PathBuf, detail: String },

    #[error(
        "every one of the {slots} interface slots of {} is in use: detach an interface first", path.display()
    )]
    NoFreeSlot { path: PathBuf, slots: u32 },

    #[error(
        "the attached interfaces of this network namespace have {count} IPv4 directed-broadcast addresses, more than the {max} icmp-guard tracks per interface: detach some or remove addresses"
    )]
    TooManyBroadcasts { count: usize, max: usize },

    #[error(
        "icmp-guard cannot guard {name}: {what} (link type {link_type}) is not a kind it knows where frames start on, and filtering it as Ethernet would filter nothing"
    )]
    UnsupportedLinkType {
        name: String,
        link_type: u16,
        what: String,
    },

    #[error("{name} does not support native XDP ({source}): use --mode auto or --mode generic")]
    NativeUnsupported {
        name: String,
        #[source]
        source: sys::SyscallError,
    },

    #[error(
        "MTU {mtu} is too large for single-buffer native XDP on {name}: lower the MTU or use --mode generic"
    )]
    MtuTooLarge { name: String, mtu: u32 },

    #[error("could not attach to {name} ({source}): check dmesg and the interface's MTU")]
    AttachFailed {
        name: String,
        #[source]
        source: sys::SyscallError,
    },

    #[error(
        "could not swap the new program into the link of {name} ({source}): the old program keeps running there"
    )]
    UpgradeFailed {
        name: String,
        #[source]
        source: sys::SyscallError,
    },

    #[error("pinning the link of {name} failed: {source}")]
    PinLink {
        name: String,
        #[source]
        source: sys::SyscallError,
    },

    #[error("pinning map {name} at {} failed: {source}", path.display())]
    PinMap {
        name: String,
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },

    #[error("{action} failed: {source}")]
    Syscall {
        action: &'static str,
        #[source]
        source: sys::SyscallError,
    },

    #[error(transparent)]
    Dispatcher(#[from] dispatcher::DispatcherError),

    #[error("{action} failed: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what we were doing.
    pub fn io(action: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }

    /// Wraps an aya program error with what we were doing.
    pub fn program(action: &'static str, source: aya::programs::ProgramError) -> Self {
        Self::Program {
            action,
            source: Box::new(source),
        }
    }

    /// Wraps an aya object error with what we were doing.
    pub fn object(action: &'static str, source: aya::EbpfError) -> Self {
        Self::Object {
            action,
            source: Box::new(source),
        }
    }

    /// A pinned map that cannot be opened.
    pub fn broken_map_pin(path: PathBuf, source: aya::maps::MapError) -> Self {
        Self::BrokenMapPin {
            path,
            source: Box::new(source),
        }
    }

    /// Wraps a map error with what we were doing.
    pub fn map(action: impl Into<String>, source: aya::maps::MapError) -> Self {
        Self::Map {
            action: action.into(),
            source: Box::new(source),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
