//! icmp-guard userspace: load and attach the XDP program, pin its state, change policy and
//! read counters. The `icmp-guard` binary is a thin command-line layer over this library.

pub mod addresses;
pub mod error;
pub mod events;
pub mod kernel_view;
pub mod loader;
pub mod metrics;
pub mod netlink;
pub mod notify;
pub mod pins;
pub mod policy;
pub mod rcu;
pub mod stats;
mod sys;
pub mod system;
pub mod target;
pub mod top;

/// The compiled XDP object, embedded at build time by `build.rs`.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/icmp-guard"))
}

/// True when this binary was built with `ICMP_GUARD_STUB_EBPF=1` and carries no program.
pub fn is_stub_build() -> bool {
    ebpf_object().is_empty()
}
