//! End-to-end tests, as one test binary: namespaces joined by veth pairs
//! ([`icmp_guard_lab`], seen through [`lab`]), the real `icmp-guard` binary run as an
//! operator would (via nsenter, so that the host's bpffs stays visible), and real `ping`,
//! `hping3` and friends for traffic. Every namespace, link and pin is removed when a test
//! ends, and a clean-up that fails fails the test.

mod basics;
mod flood;
mod lab;
mod lifecycle;
mod observe;
mod policy;
mod smurf;
mod top;
