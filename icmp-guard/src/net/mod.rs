//! The network as the kernel's rtnetlink shows it: interfaces and their namespace
//! ([`interface`]), the XDP state of a link ([`link`]), IPv4 addresses ([`addresses`]) and
//! interfaces chosen by rule ([`select`]).
//! Nothing here knows about BPF maps or the policy.

pub mod addresses;
pub mod interface;
pub mod link;
mod netlink;
pub mod select;

/// An interface that cannot be used, or a query the kernel did not answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("interface {name} does not exist: check the name with `ip link`")]
    UnknownInterface { name: String },

    #[error(
        "interface name {name} is {bytes} bytes long, more than the 15 Linux allows: check the name with `ip link`"
    )]
    NameTooLong { name: String, bytes: usize },

    #[error("{action} failed: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
