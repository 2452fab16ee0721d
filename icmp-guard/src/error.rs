//! The errors of the front door ([`crate::guard`]): the sentences about attaching and
//! detaching that only the whole guard can say, and the errors of each layer below, kept
//! whole with their cause. Each message is one sentence that says what happened and what to
//! do.

use std::path::PathBuf;

use crate::{bpf, host, net, policy};

/// Everything that can go wrong in icmp-guard's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "icmp-guard is already attached to {name}: `icmp-guard attach --upgrade {name}` swaps this binary's program in without a gap"
    )]
    AlreadyAttached { name: String },

    #[error(
        "icmp-guard already runs on {name} as one program of a libxdp dispatcher (`attach --multiprog`): `run --multiprog` adopts it as it is; to attach it another way, `icmp-guard detach {name}` first"
    )]
    AlreadyMember { name: String },

    #[error(
        "the libxdp dispatcher on {name} no longer runs icmp-guard's program, which its record there says it should: `icmp-guard detach {name}` removes the record, then attach again"
    )]
    MemberNotRunning { name: String },

    #[error(
        "icmp-guard already runs on {name} with a link of its own: without --multiprog, `run` adopts it; to run it in a libxdp dispatcher instead, `icmp-guard detach {name}` first"
    )]
    AlreadyLinked { name: String },

    #[error(
        "{name} already runs another XDP program (id {program_id}): remove it first, pass --replace to have icmp-guard take its place, or --multiprog to run beside it when it is a libxdp dispatcher (xdp-filter, xdp-loader)"
    )]
    ForeignProgram { name: String, program_id: u32 },

    #[error(
        "{name}'s XDP program (id {program_id}) could not be removed ({source}): a bpf_link holds it, which only its owner can release (`bpftool link` lists it)"
    )]
    ForeignLinked {
        name: String,
        program_id: u32,
        #[source]
        source: std::io::Error,
    },

    #[error("removing the XDP program of {name} failed: {source}")]
    RemoveForeign {
        name: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "could not attach to {name} ({source}; the program it replaced (id {program_id}) was removed and is not restored): check dmesg and the interface's MTU"
    )]
    ReplacedThenFailed {
        name: String,
        program_id: u32,
        #[source]
        source: Box<bpf::Error>,
    },

    #[error(
        "{name} already runs icmp-guard (program id {program_id}) from another pin directory: detach it with that --pin-dir (or ICMP_GUARD_PIN_DIR) first"
    )]
    ForeignIcmpGuard { name: String, program_id: u32 },

    #[error(
        "the link pinned in {} for {name}'s ifindex belongs to an interface in another network namespace: use one --pin-dir per namespace", path.display()
    )]
    LinkElsewhere { name: String, path: PathBuf },

    #[error(
        "interface {name} does not exist: check the name with `ip link`, or run `icmp-guard detach --all` to remove the pins of deleted interfaces"
    )]
    DetachUnknownInterface { name: String },

    #[error(
        "{holder} is reading the sampled events, which have one reader at a time: stop it first"
    )]
    EventsBusy { holder: String },

    #[error(
        "the guard pinned in {} is damaged: {reason}; repair it with `icmp-guard repair` (no gap: the running program's maps are pinned again)", path.display()
    )]
    Damaged { path: PathBuf, reason: String },

    #[error(
        "the running program (id {program_id}) cannot be looked at without CAP_SYS_ADMIN, which finding its maps needs: run `icmp-guard repair` with CAP_SYS_ADMIN"
    )]
    CannotSeeProgram { program_id: u32 },

    #[error(
        "icmp-guard is not attached to {name}: `icmp-guard attach {name}` first, then trace it"
    )]
    TraceNotAttached { name: String },

    #[error(
        "{name} runs icmp-guard as one program of a libxdp dispatcher (`attach --multiprog`), whose programs trace cannot swap; nothing was changed"
    )]
    TraceMultiprog { name: String },

    #[error(
        "{name} is being traced until {until} by another `icmp-guard trace`: wait for it to end, or stop it"
    )]
    TraceBusy { name: String, until: String },

    #[error(
        "reading the trace program's log failed ({source}): the binary's trace build does not match aya-log"
    )]
    TraceLogger {
        #[source]
        source: aya_log::Error,
    },

    #[error("reading the XDP state of {name} failed: {source}")]
    XdpState {
        name: String,
        #[source]
        source: std::io::Error,
    },

    #[error("listening on {address} failed: {source}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Host(#[from] host::Error),

    #[error(transparent)]
    Net(#[from] net::Error),

    #[error(transparent)]
    Bpf(#[from] bpf::Error),

    #[error(transparent)]
    Policy(#[from] policy::Error),
}

impl From<policy::PolicyError> for Error {
    fn from(refused: policy::PolicyError) -> Self {
        Self::Policy(refused.into())
    }
}

impl Error {
    /// True when the guard is not attached (no pinned maps).
    pub fn is_not_attached(&self) -> bool {
        matches!(
            self,
            Self::Bpf(bpf::Error::NotAttached)
                | Self::Policy(policy::Error::Maps(bpf::Error::NotAttached))
        )
    }

    /// The verifier's log, when the kernel refused the program.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            Self::Bpf(bpf::Error::VerifierRejected { log, .. })
            | Self::Policy(policy::Error::Maps(bpf::Error::VerifierRejected { log, .. })) => {
                Some(log)
            }
            _ => None,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
