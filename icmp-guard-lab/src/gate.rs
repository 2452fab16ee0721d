//! Which tests may run here, and how a test says it did not.
//!
//! Root-only tests skip themselves on a developer's machine, but CI sets
//! `ICMP_GUARD_REQUIRE_PRIVILEGED=1`, and then a skip would hide a failure: it panics
//! instead. A test that cannot run for another reason (an old kernel without a feature)
//! calls [`skip`] with that reason.

use std::io::Write as _;

/// Set to `1` to make root-only tests fail instead of skipping.
pub const REQUIRE_PRIVILEGED: &str = "ICMP_GUARD_REQUIRE_PRIVILEGED";

/// What [`skip`] prints before the test's name; the kernel matrix collects these lines.
pub const SKIP_MARKER: &str = "SKIPPED ";

/// True when the test may touch BPF and network namespaces. Without root it skips, unless
/// [`REQUIRE_PRIVILEGED`] is `1`, which turns the skip into a failure.
pub fn privileged(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os(REQUIRE_PRIVILEGED).is_none_or(|value| value != "1"),
        "{test} needs root, and {REQUIRE_PRIVILEGED}=1 forbids skipping it"
    );
    skip(test, "needs root (CAP_BPF, CAP_NET_ADMIN)");
    false
}

/// Says that `test` did not run and why, as one line `SKIPPED test: reason` on stderr.
///
/// Written to the stderr handle rather than through `eprintln!`, which libtest captures:
/// the line shows in every run, and the kernel matrix reads it from a guest's console.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{SKIP_MARKER}{test}: {reason}");
}

/// Whether this process runs with root's effective uid.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
