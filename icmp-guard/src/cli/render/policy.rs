//! `policy show --json`, and the errors of `policy check --json`.

use icmp_guard::{
    guard::LivePolicy,
    policy::{FileError, RuleSpec},
};
use icmp_guard_common::icmp;

/// The live policy as the `policy show --json` document.
pub fn json(live: &LivePolicy) -> serde_json::Result<String> {
    let rule_json = |family: u8, icmp_type: u8, code: Option<u8>, spec: &RuleSpec| {
        serde_json::json!({
            "family": icmp::family_label(family),
            "type": icmp_type,
            "code": code,
            "name": icmp::type_name(family, icmp_type),
            "action": spec.action,
            "limit": spec.limit,
        })
    };
    let policy = &live.policy;
    let document = serde_json::json!({
        "mode": policy.mode,
        "generation": live.generation,
        "types": policy.types.iter().map(|((f, t), spec)| rule_json(*f, *t, None, spec)).collect::<Vec<_>>(),
        "codes": policy.codes.iter().map(|((f, t, c), spec)| rule_json(*f, *t, Some(*c), spec)).collect::<Vec<_>>(),
        "allow": policy.allow,
        "deny": policy.deny,
    });
    serde_json::to_string_pretty(&document)
}

/// One error of `policy check --json`: file, line and column (null when the file could not
/// be read at all), message. The fields CI annotations need.
pub fn file_error_json(path: &std::path::Path, error: &FileError) -> serde_json::Value {
    let position = |value: usize| (value > 0).then_some(value);
    serde_json::json!({
        "file": path.display().to_string(),
        "line": position(error.line),
        "column": position(error.column),
        "message": error.message,
    })
}
