//! One `trace` line: the trace program's report of one packet (see
//! `icmp_guard_common::trace`), parsed from the aya-log record and put into words.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

use icmp_guard_common::{
    DropReason, FAMILY_V4, icmp,
    limit::{interval_ns, per, tolerance_ns},
    policy::{action, condition},
    trace::{Line, TAG, check, tokens_left},
};
use serde::Serialize;

/// What the trace program said about one packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceLine {
    pub source: IpAddr,
    /// `v4` or `v6`.
    pub family: &'static str,
    /// The ICMP type's name (or number); `fragment` for a non-first fragment.
    pub icmp_type: String,
    pub code: u8,
    /// `passed`, `dropped` or `would drop` (dry run).
    pub verdict: &'static str,
    /// The drop reason as `stats` counts it; `None` when passed.
    pub reason: Option<&'static str>,
    /// The check that decided: `type/code rule`, `limiter`, `smurf rule`, ...
    pub check: &'static str,
    /// What about that check decided, in words.
    pub detail: String,
    #[serde(skip)]
    line: Line,
}

impl TraceLine {
    /// The line of a trace record, `None` for any other log record.
    pub fn parse(record: &str) -> Option<Self> {
        let mut words = record.split_whitespace();
        if words.next()? != TAG {
            return None;
        }
        let decision: u64 = words.next()?.parse().ok()?;
        let limiter: u64 = words.next()?.parse().ok()?;
        let source: Ipv6Addr = words.next()?.parse().ok()?;
        let ahead: u64 = words.next()?.parse().ok()?;
        let line = Line::unpack(decision, limiter);
        let v4 = line.family == FAMILY_V4;
        let source = match source.to_ipv4_mapped() {
            Some(v4_source) if v4 => IpAddr::V4(v4_source),
            _ => IpAddr::V6(source),
        };
        let fragment = line.check == check::FRAGMENT;
        let icmp_type = if fragment {
            "fragment".to_owned()
        } else {
            icmp::type_name(line.family, line.icmp_type)
                .map_or_else(|| line.icmp_type.to_string(), str::to_owned)
        };
        let reason = DropReason::ALL
            .into_iter()
            .find(|reason| *reason as u8 == line.reason && line.verdict != 0)
            .map(DropReason::name);
        Some(Self {
            source,
            family: icmp::family_label(line.family),
            icmp_type,
            code: line.code,
            verdict: match line.verdict {
                0 => "passed",
                1 => "dropped",
                _ => "would drop",
            },
            reason,
            check: check::name(line.check),
            detail: detail(&line, ahead),
            line,
        })
    }
}

/// What about the deciding check decided.
fn detail(line: &Line, ahead: u64) -> String {
    match line.check {
        check::MARTIAN => "no packet may come from this source".to_owned(),
        check::DENY_LIST => "the source is on the deny list".to_owned(),
        check::SMURF => "a request to a broadcast or multicast destination".to_owned(),
        check::ALLOW_LIST => "the source is on the allow list, which skips the limiters".to_owned(),
        check::FRAGMENT => "a non-first fragment, and no fragment limiter".to_owned(),
        check::RULE => rule(line),
        check::LIMITER => limiter(line, ahead),
        _ => String::new(),
    }
}

fn rule(line: &Line) -> String {
    if line.verdict != 0 && line.reason == DropReason::Invalid as u8 {
        return format!("its condition failed ({})", conditions(line.condition));
    }
    match line.action {
        action::PASS => "pass".to_owned(),
        action::DROP => "drop".to_owned(),
        action::LIMIT => "limit".to_owned(),
        other => format!("action {other}"),
    }
}

fn conditions(bits: u8) -> String {
    let names = [
        (condition::ND, "hop limit 255, not fragmented"),
        (condition::MLD, "hop limit 1, link-local source"),
        (condition::PTB_MTU, "MTU at least 1280"),
        (condition::ECHO_CODE, "code 0"),
        (condition::LINK_LOCAL_SOURCE, "link-local source"),
        (
            condition::ERROR,
            "embeds the header it reports on, not to a group",
        ),
    ];
    let held: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if held.is_empty() {
        "a header rule".to_owned()
    } else {
        held.join("; ")
    }
}

fn limiter(line: &Line, ahead: u64) -> String {
    let scope = match line.scope {
        per::SOURCE => "per source",
        per::PREFIX => "per prefix",
        per::GLOBAL => "global",
        _ => "?",
    };
    let mut text = format!(
        "{}/s, burst {}, {scope} (limiter {})",
        line.rate, line.burst, line.limiter
    );
    if ahead == u64::MAX {
        text.push_str(": a new source, charged to the new-source budget");
    } else {
        let interval = interval_ns(line.rate);
        let left = tokens_left(
            ahead,
            interval,
            tolerance_ns(interval, line.burst),
            line.burst,
        );
        text.push_str(&format!(": {left} of {} tokens left", line.burst));
    }
    text
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}/{} {}",
            self.source, self.family, self.icmp_type, self.code, self.verdict
        )?;
        if let Some(reason) = self.reason {
            write!(f, " ({reason})")?;
        }
        write!(f, " by {}", self.check)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(line: &Line, source: &str, ahead: u64) -> String {
        format!(
            "{TAG} {} {} {source} {ahead}",
            line.decision_word(),
            line.limiter_word()
        )
    }

    #[test]
    fn a_dropped_timestamp_request_names_its_rule() {
        let line = Line {
            family: FAMILY_V4,
            icmp_type: 13,
            verdict: 1,
            reason: DropReason::Policy as u8,
            check: check::RULE,
            action: action::DROP,
            limiter: Line::NO_LIMITER,
            ..Line::default()
        };
        let parsed = TraceLine::parse(&record(&line, "::ffff:198.51.100.2", u64::MAX))
            .expect("a trace record");
        assert_eq!(
            parsed.to_string(),
            "198.51.100.2 v4 timestamp-request/0 dropped (policy) by type/code rule: drop"
        );
    }

    #[test]
    fn a_limited_echo_says_what_its_bucket_holds() {
        let line = Line {
            family: icmp_guard_common::FAMILY_V6,
            icmp_type: 128,
            check: check::LIMITER,
            action: action::LIMIT,
            limiter: 0,
            scope: per::SOURCE,
            rate: 10,
            burst: 5,
            ..Line::default()
        };
        // One token taken from a full bucket: its TAT is one interval ahead.
        let parsed = TraceLine::parse(&record(&line, "2001:db8::2", interval_ns(10)))
            .expect("a trace record");
        assert_eq!(
            parsed.to_string(),
            "2001:db8::2 v6 echo-request/0 passed by limiter: 10/s, burst 5, per source (limiter 0): 4 of 5 tokens left"
        );
    }

    #[test]
    fn a_dry_run_drop_is_a_would_drop_and_a_martian_says_so() {
        let line = Line {
            family: FAMILY_V4,
            icmp_type: 8,
            verdict: 2,
            reason: DropReason::Invalid as u8,
            check: check::MARTIAN,
            limiter: Line::NO_LIMITER,
            ..Line::default()
        };
        let parsed =
            TraceLine::parse(&record(&line, "::ffff:0.0.0.1", u64::MAX)).expect("a trace record");
        assert_eq!(
            parsed.to_string(),
            "0.0.0.1 v4 echo-request/0 would drop (invalid) by martian source: no packet may come from this source"
        );
        let json = serde_json::to_value(&parsed).expect("JSON");
        assert_eq!(json["verdict"], "would drop");
        assert_eq!(json["reason"], "invalid");
        assert_eq!(json["check"], "martian source");
    }

    #[test]
    fn other_log_records_are_not_trace_lines() {
        assert_eq!(TraceLine::parse("something else 1 2 3"), None);
        assert_eq!(TraceLine::parse(TAG), None);
    }
}
