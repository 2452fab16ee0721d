//! The machine icmp-guard runs on: what this process may do there ([`preflight`]:
//! capabilities, kernel, bpffs) and what the kernel's own ICMP stack is set to
//! ([`kernel_view`]).

pub mod kernel_view;
pub mod preflight;

use std::path::PathBuf;

/// Why this machine or process cannot run the guard; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("run with sudo: needs CAP_BPF and CAP_NET_ADMIN")]
    NotPrivileged,

    #[error(
        "this process lacks {missing} in its effective capabilities (a container, `setpriv` or a service manager dropped it): grant CAP_BPF and CAP_NET_ADMIN"
    )]
    MissingCapabilities { missing: String },

    #[error(
        "kernel {release} is too old: icmp-guard needs Linux 5.9 or later for pinned XDP links"
    )]
    KernelTooOld { release: String },

    #[error(
        "bpffs is not mounted at {}: mount it with `mount -t bpf bpf /sys/fs/bpf`", path.display()
    )]
    BpffsMissing { path: PathBuf },

    #[error(
        "bpffs is not mounted at {} and mounting it failed ({source}): mount it with `mount -t bpf bpf /sys/fs/bpf`", path.display()
    )]
    BpffsMountFailed {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{action} failed: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
