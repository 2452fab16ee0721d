//! Errors an operator can act on. Each message is one sentence that says what happened and
//! what to do.

use std::path::PathBuf;

/// Everything that can go wrong in icmp-guard's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("run with sudo: needs CAP_BPF and CAP_NET_ADMIN")]
    NotPrivileged,

    #[error("interface {name} does not exist: check the name with `ip link`")]
    UnknownInterface { name: String },

    #[error(
        "icmp-guard is already attached to {name}: `icmp-guard attach --upgrade {name}` swaps this binary's program in without a gap"
    )]
    AlreadyAttached { name: String },

    #[error(
        "{name} already runs another XDP program (id {program_id}): remove it first, or pass --replace to have icmp-guard take its place"
    )]
    ForeignProgram { name: String, program_id: u32 },
    #[error(
        "{name}'s XDP program (id {program_id}) could not be removed ({reason}): a bpf_link holds it, which only its owner can release (`bpftool link` lists it)"
    )]
    ForeignLinked {
        name: String,
        program_id: u32,
        reason: String,
    },

    #[error("icmp-guard is not attached: run `icmp-guard attach <IFACE>` first")]
    NotAttached,

    #[error(
        "another `icmp-guard top` is reading the sampled events: stop it first (the events have one reader at a time)"
    )]
    EventsBusy,

    #[error(
        "bpffs is not mounted at {}: mount it with `mount -t bpf bpf /sys/fs/bpf`", path.display()
    )]
    BpffsMissing { path: PathBuf },

    #[error(
        "kernel {release} is too old: icmp-guard needs Linux 5.9 or later for pinned XDP links"
    )]
    KernelTooOld { release: String },

    #[error(
        "the kernel's verifier rejected the XDP program ({reason}): rerun with -v to see its log"
    )]
    VerifierRejected { reason: String, log: String },

    #[error("{name} does not support native XDP ({reason}): use --mode auto or --mode generic")]
    NativeUnsupported { name: String, reason: String },

    #[error("could not attach to {name} ({reason}): check dmesg and the interface's MTU")]
    AttachFailed { name: String, reason: String },

    #[error(
        "this binary was built without its XDP program (ICMP_GUARD_STUB_EBPF=1): rebuild it without that variable"
    )]
    StubBuild,

    #[error(
        "the pinned state in {} is incomplete or foreign ({reason}): run `icmp-guard detach --all` and attach again", path.display()
    )]
    BrokenPinState { path: PathBuf, reason: String },

    #[error(
        "{name} already runs icmp-guard (program id {program_id}) from another pin directory: detach it with that --pin-dir (or ICMP_GUARD_PIN_DIR) first"
    )]
    ForeignIcmpGuard { name: String, program_id: u32 },

    #[error(
        "the pinned maps in {} were made by another icmp-guard version ({detail}): run `icmp-guard detach --all` first", path.display()
    )]
    LayoutMismatch { path: PathBuf, detail: String },

    #[error(
        "MTU {mtu} is too large for single-buffer native XDP on {name}: lower the MTU or use --mode generic"
    )]
    MtuTooLarge { name: String, mtu: u32 },

    #[error(
        "could not swap the new program into the link of {name} ({reason}): the old program keeps running there"
    )]
    UpgradeFailed { name: String, reason: String },

    #[error(
        "the link pinned in {} for {name}'s ifindex belongs to an interface in another network namespace: use one --pin-dir per namespace", path.display()
    )]
    LinkElsewhere { name: String, path: PathBuf },

    #[error(
        "interface {name} does not exist: check the name with `ip link`, or run `icmp-guard detach --all` to remove the pins of deleted interfaces"
    )]
    DetachUnknownInterface { name: String },

    #[error(
        "icmp-guard cannot guard {name}: {what} (link type {link_type}) is not a kind it knows where frames start on, and filtering it as Ethernet would filter nothing"
    )]
    UnsupportedLinkType {
        name: String,
        link_type: u16,
        what: String,
    },

    #[error(
        "every one of the {slots} interface slots of {} is in use: detach an interface first", path.display()
    )]
    NoFreeSlot { path: PathBuf, slots: u32 },

    #[error(
        "the attached interfaces of this network namespace have {count} IPv4 directed-broadcast addresses, more than the {max} icmp-guard tracks per interface: detach some or remove addresses"
    )]
    TooManyBroadcasts { count: usize, max: usize },

    /// A policy that cannot be applied; the message names the rule.
    #[error("{0}")]
    Policy(String),

    #[error("{action} failed: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{action} failed: {reason}")]
    Bpf { action: String, reason: String },
}

impl Error {
    /// Wraps an I/O error with what we were doing.
    pub fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }

    /// Wraps an aya error with what we were doing.
    pub fn bpf(action: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::Bpf {
            action: action.into(),
            reason: error.to_string(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
