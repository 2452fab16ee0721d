//! The policy engine in userspace: the model operators think in ([`model`]), the policy file
//! ([`file`]), `<TYPE>[/<CODE>]` as typed on the command line ([`target`]), compiling to the
//! kernel's map entries ([`compile`]), and swapping a whole policy into the maps atomically
//! or reading the live one back ([`store`]).

pub mod compile;
pub mod diff;
pub mod document;
pub mod file;
pub mod model;
pub mod names;
pub mod rate;
pub mod recon;
pub mod store;
pub mod target;
pub mod units;

use std::path::PathBuf;

pub use compile::{
    Compiled, compile, compile_for, error_limiter_config, fragment_limiter_config, limiter_config,
    reply_limiter_config,
};
pub use file::FileError;
pub use model::{
    Action, ByteLimit, Cidr, DEFAULT_LIMIT, DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6,
    DEFAULT_PROBATION, ErrorCeiling, FragmentBudget, Limit, List, Mode, NEW_SOURCE_FACTOR,
    NewSources, Per, Policy, PolicyError, RuleSpec, Smurf, describe,
};
pub use store::{LimiterState, active_generation, apply, apply_with, read_live};

use crate::bpf;

/// A policy that cannot be used or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused by the rules of the model; the message names the rule.
    #[error(transparent)]
    Refused(#[from] PolicyError),

    /// A policy file that cannot be read or parsed, with its path.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: FileError,
    },

    /// The maps could not be read or written.
    #[error(transparent)]
    Maps(#[from] bpf::Error),

    #[error(
        "{} is {kind}, not a regular file: icmp-guard reads a policy only from a regular file", path.display()
    )]
    NotRegularFile { path: PathBuf, kind: &'static str },

    #[error(
        "{} is larger than the {max} bytes a policy file may have: is it the right file?", path.display()
    )]
    TooLarge { path: PathBuf, max: u64 },

    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: the file is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
