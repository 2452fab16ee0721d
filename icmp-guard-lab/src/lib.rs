//! The one network-namespace lab of icmp-guard: its end-to-end tests, `cargo xtask demo`
//! and the benchmark's flood all build their namespaces, veth pairs and pin directories
//! here, run their tools here, and clean up here.
//!
//! - [`Lab`]: namespaces and veth pairs with unique names (the pid and a counter in each),
//!   a pin directory of their own, and a clean-up that removes everything and reports every
//!   step that failed. A [`Pair`] is the common case: two namespaces joined by one veth.
//! - [`process`]: commands in a namespace (`nsenter`, which keeps bpffs visible where
//!   `ip netns exec` would hide it), checked runs, and [`process::Background`] processes
//!   that are killed when dropped.
//! - [`ping`]: `ping`, `hping3` and `trafgen` runners and the parsers of their summaries.
//! - [`netns`]: work on a thread inside a namespace, and its `/proc/net/snmp` counters.
//! - [`stats`]: rows and counters of `icmp-guard stats --json`.
//! - [`gate`]: the privilege gate of root-only tests, and skips that say why.
//!
//! Only std, libc and serde_json: xtask uses this crate before anything else is installed.

mod error;
pub mod gate;
mod lab;
pub mod netns;
pub mod ping;
pub mod process;
pub mod stats;

pub use error::{Error, Result};
pub use lab::{GUARD_V4, GUARD_V6, Host, Lab, PEER_V4, PEER_V6, Pair};
