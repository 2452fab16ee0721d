//! Everything that runs frames through the real XDP program, as one test binary: the
//! program loaded into the running kernel with private maps through BPF_PROG_TEST_RUN
//! ([`harness`]), hand-built frames ([`frames`]), a reference model written from the
//! specification ([`model`]), real captures ([`corpus`]), and what the verifier makes of
//! it all ([`verifier`]).
//!
//! `cargo xtask kernels` runs this same binary, built static, on every kernel of its
//! matrix (5.10, 6.1, 6.12 under QEMU, and the host): a test that cannot run on a kernel
//! says why through [`harness::skip`], and the matrix prints those reasons.

/// Returns from the test, after saying why, unless it may load BPF programs here
/// ([`harness::privileged`]: without root it skips, or fails under
/// `ICMP_GUARD_REQUIRE_PRIVILEGED=1`).
macro_rules! root_or_skip {
    ($test:literal) => {
        if !$crate::harness::privileged($test) {
            return;
        }
    };
}

mod contention;
mod corpus;
mod differential;
mod events;
mod fail_closed;
mod frames;
mod harness;
mod limiter_state;
mod limits;
mod live;
mod model;
mod policy_verdict;
mod probation;
mod rate_limit;
mod recon;
mod scrape;
mod smurf;
mod trace;
mod verdict;
mod verifier;
