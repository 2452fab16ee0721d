//! icmp-guard userspace: load and attach the XDP program, pin its state, change policy and
//! read counters. The `icmp-guard` binary is a thin command-line layer over this library.
//!
//! The modules follow the data, and every import points down this list:
//!
//! - [`guard`]: the front door, one [`guard::Guard`] per pin directory ([`error`] holds its
//!   errors);
//! - [`exporter`]: the Prometheus collector and its HTTP server, over a `Guard`;
//! - [`observe`]: counters, sampled events and top sources, as data;
//! - [`policy`]: the model, the policy file, compiling it and storing it in the maps;
//! - [`bpf`]: the object, the maps as typed handles, the links, the pins and locks;
//! - [`net`]: interfaces, their XDP state and addresses (rtnetlink);
//! - [`host`]: privileges, kernel and bpffs, and the kernel's own ICMP view.

pub mod bpf;
pub mod error;
pub mod exporter;
pub mod guard;
pub mod host;
pub mod net;
pub mod observe;
pub mod policy;

#[cfg(test)]
mod layering;

/// The compiled XDP object, embedded at build time by `build.rs`.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/icmp-guard"))
}

/// The trace build of the XDP object (`icmp-guard trace`): the same guard, which also logs
/// why each packet that matches a filter got its verdict.
pub fn trace_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/icmp-guard-trace"))
}

/// True when this binary was built with `ICMP_GUARD_STUB_EBPF=1` and carries no program.
pub fn is_stub_build() -> bool {
    ebpf_object().is_empty()
}
