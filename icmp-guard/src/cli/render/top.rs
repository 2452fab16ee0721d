//! `top` as text.

use std::fmt::Write as _;

use icmp_guard::observe::top::TopReport;

use super::human;

/// The report as text: a header that says these are estimates, then a table; `human`
/// numbers as `ip -h` prints them.
pub fn top(report: &TopReport, human: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:.1} s: {} ICMP packets ({}/s); per-source rates are estimates from {} sampled events (budget {} events/s per CPU)",
        report.interval_seconds,
        human::count(report.icmp_packets, human),
        human::rate(report.icmp_packets_per_sec, human),
        human::count(report.sampled_events, human),
        report.events_per_sec_per_cpu,
    );
    if report.events_per_sec_per_cpu == 0 {
        let _ = writeln!(
            out,
            "events are off: `icmp-guard config events-per-sec 1000` turns them on"
        );
    }
    if report.events_lost > 0 {
        let _ = writeln!(
            out,
            "{} events lost: the ring buffer was full (a slow reader, or a budget too high)",
            report.events_lost
        );
    }
    if report.unattributed_packets > 0 {
        let _ = writeln!(
            out,
            "{} packets on CPUs without a sampled event are attributed to no source",
            report.unattributed_packets
        );
    }
    let _ = writeln!(
        out,
        "{:<39} {:>11} {:>7} {:>11}  {:<16} {:>7}  TYPE",
        "SOURCE", "EST PKTS/S", "SHARE", "EST DROPS/S", "DROP REASON", "SAMPLED"
    );
    for source in &report.sources {
        let (drops, reason) = if source.would_drop_per_sec > 0.0 && source.dropped_per_sec == 0.0 {
            (
                source.would_drop_per_sec,
                source
                    .top_drop_reason
                    .map(|reason| format!("{reason} (would)")),
            )
        } else {
            (
                source.dropped_per_sec,
                source.top_drop_reason.map(str::to_owned),
            )
        };
        let type_name = source
            .top_type_name
            .map_or_else(|| source.top_type.to_string(), str::to_owned);
        let sweeping = source
            .sweep_destinations
            .map(|destinations| format!("  SWEEP ≥{destinations} destinations"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<39} {:>11} {:>6.1}% {:>11}  {:<16} {:>7}  {} {type_name}{}{sweeping}",
            source.address.to_string(),
            top_rate(source.packets_per_sec, human),
            source.share * 100.0,
            top_rate(drops, human),
            reason.as_deref().unwrap_or("-"),
            human::count(source.sampled_events, human),
            source.family,
            if source.blocked { "  BLOCKED" } else { "" },
        );
    }
    for flagged in &report.sweeping {
        let state = if flagged.action == "log" {
            format!("flagged {} s more (action log)", flagged.remaining_seconds)
        } else {
            format!("echo requests blocked {} s more", flagged.remaining_seconds)
        };
        let _ = writeln!(
            out,
            "sweeping: {} probed ≥{} destinations; {state}",
            flagged.name(),
            flagged.destinations
        );
    }
    if report.sources.is_empty() {
        let _ = writeln!(out, "(no sampled ICMP in this interval)");
    }
    if report.more_sources > 0 {
        let _ = writeln!(out, "... and {} more sources", report.more_sources);
    }
    out
}

/// An estimated rate: one decimal, or `ip -h`'s form from 1000 when `human`.
fn top_rate(rate: f64, human: bool) -> String {
    if human && rate >= 999.5 {
        human::rate(rate, true)
    } else {
        format!("{rate:.1}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use icmp_guard::observe::top::{CpuTotals, estimate};
    use icmp_guard_common::{
        DropReason, FAMILY_V4,
        events::{ACTION_PASSED, ACTION_WOULD_DROP, IcmpEvent},
    };

    use super::*;

    fn event(last_octet: u8, action: u8) -> IcmpEvent {
        let mut source = [0; 16];
        source[..4].copy_from_slice(&[192, 0, 2, last_octet]);
        IcmpEvent {
            source,
            family: FAMILY_V4,
            icmp_type: 8,
            action,
            reason: if action == ACTION_PASSED {
                0
            } else {
                DropReason::Policy as u8
            },
            ..IcmpEvent::default()
        }
    }

    #[test]
    fn a_would_drop_source_says_so() {
        let events = [event(2, ACTION_PASSED), event(3, ACTION_WOULD_DROP)];
        let delta = CpuTotals {
            icmp_packets: vec![2],
            ..CpuTotals::default()
        };
        let report = estimate(&events, &delta, Duration::from_secs(1), 10, 10);
        assert!(top(&report, false).contains("policy (would)"));
    }

    #[test]
    fn a_sweeping_source_is_marked_with_its_destinations() {
        use icmp_guard::observe::recon::flagged;
        use icmp_guard_common::recon::{Flagged, FlaggedKey, action};
        let events = [event(2, ACTION_PASSED), event(3, ACTION_PASSED)];
        let delta = CpuTotals {
            icmp_packets: vec![2],
            ..CpuTotals::default()
        };
        let mut report = estimate(&events, &delta, Duration::from_secs(1), 10, 10);
        let mut key = FlaggedKey {
            family: FAMILY_V4,
            len: 32,
            ..FlaggedKey::default()
        };
        key.addr[..4].copy_from_slice(&[192, 0, 2, 3]);
        let record = Flagged {
            flagged_at: 1_000_000_000,
            block_ns: 60_000_000_000,
            bits: 40,
            action: action::DROP,
            _padding: [0; 3],
        };
        report.mark_sweeping(&flagged(&[(key, record)], 2_000_000_000));
        let text = top(&report, false);
        let marked: Vec<&str> = text.lines().filter(|line| line.contains("SWEEP")).collect();
        assert_eq!(marked.len(), 1, "{text}");
        assert!(marked[0].starts_with("192.0.2.3 "), "{text}");
        assert!(marked[0].ends_with("SWEEP ≥41 destinations"), "{text}");
        assert!(
            text.contains(
                "sweeping: 192.0.2.3 probed ≥41 destinations; echo requests blocked 59 s more"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_header_says_the_figures_are_estimates() {
        let report = estimate(&[], &CpuTotals::default(), Duration::from_secs(1), 0, 10);
        let text = top(&report, false);
        assert!(text.contains("estimates from 0 sampled events"), "{text}");
        assert!(text.contains("events are off"), "{text}");
    }
}
