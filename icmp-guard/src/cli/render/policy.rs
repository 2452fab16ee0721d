//! `policy show --json`, the capacity line of `policy check`, and the errors of `policy
//! check --json`.

use icmp_guard::{
    guard::LivePolicy,
    policy::{
        self,
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

/// One error of `policy check --json`: file, line and column (null when the error has no
/// place in the file: unreadable, or the policy as a whole refused), message. The fields
/// CI annotations need.
pub fn error_json(path: &std::path::Path, error: &policy::Error) -> serde_json::Value {
    let position = |value: usize| (value > 0).then_some(value);
    let (line, column, message) = match error {
        policy::Error::File { source, .. } => (
            position(source.line),
            position(source.column),
            source.message.clone(),
        ),
        other => (None, None, other.to_string()),
    };
    serde_json::json!({
        "file": path.display().to_string(),
        "line": line,
        "column": column,
        "message": message,
    })
}
