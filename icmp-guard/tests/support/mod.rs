//! Shared by the integration tests: the privilege gate and hand-built frames.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

pub mod background;
pub mod datapath;
pub mod frames;
pub mod lab;

/// True when the test may touch BPF and network namespaces. Without root it skips, unless
/// `ICMP_GUARD_REQUIRE_PRIVILEGED=1` (set by CI) turns the skip into a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("ICMP_GUARD_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("{test} needs root, and ICMP_GUARD_REQUIRE_PRIVILEGED=1 forbids skipping it");
    }
    eprintln!("skipping {test}: needs root (CAP_BPF, CAP_NET_ADMIN)");
    false
}
