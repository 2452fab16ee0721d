//! `policy show --json` and the capacity line of `policy check`.

use icmp_guard::{
    guard::LivePolicy,
    policy::{
        compile::{CAPACITY, Usage},
        document::{self, Document},
    },
};

/// The live policy as the `policy show --json` document, which `policy apply` accepts back.
pub fn json(live: &LivePolicy) -> String {
    document::render(&Document::of(
        &live.policy,
        Some(live.generation),
        Some(live.revision),
    ))
}

/// "lists: 3 of 8192 IPv4 and 0 of 8192 IPv6 prefixes, ...".
pub fn usage(usage: &Usage) -> String {
    format!(
        "lists: {} of {} IPv4 and {} of {} IPv6 prefixes; per-code rules: {} of {}; rate limits: {} of {}",
        usage.list_prefixes_v4,
        CAPACITY.list_prefixes,
        usage.list_prefixes_v6,
        CAPACITY.list_prefixes,
        usage.code_rules,
        CAPACITY.code_rules,
        usage.rate_limits,
        CAPACITY.rate_limits,
    )
}
