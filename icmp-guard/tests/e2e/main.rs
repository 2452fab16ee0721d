//! End-to-end tests, as one test binary: namespaces joined by veth pairs
//! ([`icmp_guard_lab`], seen through [`lab`]), the real `icmp-guard` binary run as an
//! operator would (via nsenter, so that the host's bpffs stays visible), and real `ping`,
//! `hping3` and friends for traffic. Every namespace, link and pin is removed when a test
//! ends, and a clean-up that fails fails the test.

/// A fresh [`lab::Lab`] for the test (or what `$make` builds), or a return from the test,
/// after saying why, when it may not run here ([`lab::privileged`]: without root it skips,
/// or fails under `ICMP_GUARD_REQUIRE_PRIVILEGED=1`).
macro_rules! lab_or_skip {
    ($test:literal) => {
        lab_or_skip!($test, $crate::lab::Lab::new())
    };
    ($test:literal, $make:expr) => {
        if $crate::lab::privileged($test) {
            $make
        } else {
            return;
        }
    };
}

mod basics;
mod control_exporter;
mod control_output;
mod control_pins;
mod control_policy;
mod control_run;
mod fail_closed;
mod fleet_interfaces;
mod fleet_rehearsal;
mod flood;
mod lab;
mod lifecycle;
mod limits;
mod multiprog;
mod notify;
mod observe;
mod policy;
mod recon;
mod smurf;
mod top;
mod trace;
mod tun;
mod vocabulary;
