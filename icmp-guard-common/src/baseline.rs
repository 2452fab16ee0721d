//! The benchmark's baselines: the cheapest per-source limiters there are, in the same object
//! as the guard, so that `cargo xtask bench` measures the guard against them in one run.
//!
//! [`MINIMAL_LIMITER`] does what every per-source ICMP limiter must: Ethernet and IPv4 with
//! IHL honoured, an echo request recognised, one LRU hash lookup keyed by the source
//! address, `bpf_ktime_get_ns`, a GCRA update (unsynchronised). Anything else passes.
//! [`MINIMAL_LIMITER_WITH_BUDGET`] adds the new-source budget: a source without a bucket is
//! charged to one shared bucket first, and gets a bucket only when admitted. Their limits
//! are load-time globals ([`globals`]), constants to the verifier, set by the benchmark.

/// Name of the minimal per-source limiter.
pub const MINIMAL_LIMITER: &str = "xdp_minimal_per_source_limiter";
/// Name of the minimal per-source limiter with a new-source budget.
pub const MINIMAL_LIMITER_WITH_BUDGET: &str = "xdp_minimal_per_source_limiter_with_budget";

/// The read-only globals of the baselines, `u64` nanoseconds.
pub mod globals {
    /// Emission interval of each source's bucket.
    pub const INTERVAL_NS: &str = "BASELINE_INTERVAL_NS";
    /// Tolerance of each source's bucket (`(burst - 1)` intervals).
    pub const TOLERANCE_NS: &str = "BASELINE_TOLERANCE_NS";
    /// Emission interval of the new-source budget.
    pub const BUDGET_INTERVAL_NS: &str = "BASELINE_BUDGET_INTERVAL_NS";
    /// Tolerance of the new-source budget.
    pub const BUDGET_TOLERANCE_NS: &str = "BASELINE_BUDGET_TOLERANCE_NS";
    /// `u8`, non-zero: read the coarse clock (jiffies, as the guard does) instead of
    /// `bpf_ktime_get_ns`. Not the baseline; an informational row that shows what
    /// the clock alone is worth.
    pub const COARSE_CLOCK: &str = "BASELINE_COARSE_CLOCK";
}
