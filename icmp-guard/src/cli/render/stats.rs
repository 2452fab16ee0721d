//! `stats` as text: the table, the per-code table, the `--watch` frame and its JSON line,
//! and the one-line drop summary of `run`.

use icmp_guard::{
    observe::stats::{CodeReport, FragmentReasons, Rates, Reasons, StatsReport},
    policy::names,
};
use serde::Serialize;

use super::human;

/// The per-code rows as a plain-text table; `human` numbers as `ip -h` prints them.
pub fn code_table(rows: &[CodeReport], human: bool) -> String {
    use std::fmt::Write as _;
    let num = |value: u64| human::count(value, human);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:>4} {:>5}  {:<26} {:>10} {:>12} {:>10} {:>10} {:>10}  CODE NAME",
        "FAMILY", "TYPE", "CODE", "NAME", "PACKETS", "BYTES", "PASSED", "DROPPED", "WOULD-DROP"
    );
    for row in rows {
        let code = if row.and_higher {
            format!("{}+", row.code)
        } else {
            row.code.to_string()
        };
        let family = if row.family == "v6" {
            icmp_guard_common::FAMILY_V6
        } else {
            icmp_guard_common::FAMILY_V4
        };
        let code_name = names::code_name(family, row.icmp_type, row.code)
            .filter(|_| !row.and_higher)
            .unwrap_or("-");
        let _ = writeln!(
            out,
            "{:<6} {:>4} {:>5}  {:<26} {:>10} {:>12} {:>10} {:>10} {:>10}  {code_name}",
            row.family,
            row.icmp_type,
            code,
            row.name.unwrap_or("(unassigned)"),
            num(row.packets),
            num(row.bytes),
            num(row.passed),
            num(row.dropped),
            num(row.would_drop)
        );
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no ICMP seen yet)");
    }
    out
}

/// "eth0 (native), eth1 (generic)", or "none".
fn interface_list(report: &StatsReport) -> String {
    let names: Vec<String> = report
        .interfaces
        .iter()
        .map(|i| {
            format!(
                "{} ({}{})",
                i.name.as_deref().unwrap_or("<gone>"),
                i.mode.unwrap_or("not running"),
                if i.multiprog { ", multiprog" } else { "" }
            )
        })
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// The report as a plain-text table; `human` numbers as `ip -h` prints them.
pub fn table(report: &StatsReport, human: bool) -> String {
    use std::fmt::Write as _;
    let num = |value: u64| human::count(value, human);
    let mut out = String::new();
    let interfaces = interface_list(report);
    let _ = writeln!(out, "mode: {}    interfaces: {interfaces}", report.mode);
    if report.interfaces.len() > 1 {
        for i in &report.interfaces {
            let c = &i.counters;
            let _ = writeln!(
                out,
                "  {}: icmp {} passed {} dropped {} would-drop {}",
                i.name.as_deref().unwrap_or("<gone>"),
                num(c.packets),
                num(c.passed),
                num(c.dropped),
                num(c.would_drop)
            );
        }
    }
    let _ = writeln!(
        out,
        "{:<6} {:>4}  {:<26} {:>10} {:>12} {:>10} {:>10}  DROP REASONS",
        "FAMILY", "TYPE", "NAME", "PACKETS", "BYTES", "PASSED", "DROPPED"
    );
    for row in &report.icmp {
        let reasons = reason_list(&row.dropped, "", human);
        let would = reason_list(&row.would_drop, "would-", human);
        let detail = [reasons, would]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "{:<6} {:>4}  {:<26} {:>10} {:>12} {:>10} {:>10}  {}",
            row.family,
            row.icmp_type,
            row.name.unwrap_or("(unassigned)"),
            num(row.packets),
            num(row.bytes),
            num(row.passed),
            num(row.dropped.total()),
            detail
        );
    }
    if report.icmp.is_empty() {
        let _ = writeln!(out, "(no ICMP seen yet)");
    }
    let t = &report.totals;
    let _ = writeln!(
        out,
        "totals: icmp {} passed {} dropped {} would-drop {} | non-ICMP passed {} | ICMP fragments passed {} | unclassified dropped: invalid {} malformed {}",
        num(t.icmp_packets),
        num(t.passed),
        num(t.dropped),
        num(t.would_drop),
        num(t.non_icmp_passed),
        num(t.icmp_fragments_passed),
        num(report.unclassified.dropped.invalid),
        num(report.unclassified.dropped.malformed),
    );
    if let Some(line) = fragment_drops(report) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// "ICMP fragments dropped: deny_list 3 rate_limit 12", when any were.
fn fragment_drops(report: &StatsReport) -> Option<String> {
    let fragments = &report.fragments;
    if fragments.dropped.total() + fragments.would_drop.total() == 0 {
        return None;
    }
    let list = |reasons: &FragmentReasons, prefix: &str| {
        reasons
            .by_reason()
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(reason, count)| format!("{prefix}{reason} {count}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let parts = [
        list(&fragments.dropped, ""),
        list(&fragments.would_drop, "would-"),
    ];
    let parts: Vec<&String> = parts.iter().filter(|part| !part.is_empty()).collect();
    Some(format!(
        "ICMP fragments dropped: {}",
        parts
            .iter()
            .map(|part| part.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

/// How a `stats --watch` frame is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchStyle {
    /// Redraw in place: cursor home before the frame, clear to the end of every line and
    /// of the screen after it. Only for a terminal.
    pub in_place: bool,
    /// Bold column header. Only for a terminal without `NO_COLOR`.
    pub color: bool,
    /// Terminal height: rows beyond it are summarised in one line so the frame never
    /// scrolls.
    pub max_lines: Option<usize>,
    /// Terminal width: longer lines are cut so that none wraps onto a second row.
    pub max_columns: Option<usize>,
    /// Numbers as `ip -h` prints them (1.23M, 340k/s).
    pub human: bool,
}

const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";
/// Cursor to the top-left corner.
pub const CURSOR_HOME: &str = "\x1b[H";
/// Clear from the cursor to the end of the line.
pub const CLEAR_LINE: &str = "\x1b[K";
/// Clear from the cursor to the end of the screen.
pub const CLEAR_BELOW: &str = "\x1b[J";

fn format_rate(rate: Option<f64>, human: bool) -> String {
    rate.map_or_else(|| "-".to_owned(), |rate| human::rate(rate, human))
}

/// One `stats --watch` frame: the table of [`table`] with packets/s and drops/s per
/// row. `rates` is `None` for the first frame, which has nothing to compare with.
pub fn watch_frame(
    report: &StatsReport,
    rates: Option<&Rates>,
    heading: &str,
    style: WatchStyle,
) -> String {
    use std::fmt::Write as _;
    let human = style.human;
    let num = |value: u64| human::count(value, human);
    let mut lines: Vec<String> = Vec::new();
    let interfaces = interface_list(report);
    lines.push(format!(
        "{heading}    mode: {}    interfaces: {interfaces}",
        report.mode,
    ));
    let header = format!(
        "{:<6} {:>4}  {:<26} {:>10} {:>9} {:>10} {:>10} {:>9}  DROP REASONS",
        "FAMILY", "TYPE", "NAME", "PACKETS", "PKT/S", "PASSED", "DROPPED", "DROP/S"
    );
    lines.push(header);
    let mut rows: Vec<String> = report
        .icmp
        .iter()
        .enumerate()
        .map(|(index, row)| {
            let rate = rates.and_then(|r| r.icmp.get(index));
            let detail = [
                reason_list(&row.dropped, "", human),
                reason_list(&row.would_drop, "would-", human),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
            format!(
                "{:<6} {:>4}  {:<26} {:>10} {:>9} {:>10} {:>10} {:>9}  {}",
                row.family,
                row.icmp_type,
                row.name.unwrap_or("(unassigned)"),
                num(row.packets),
                format_rate(rate.map(|r| r.packets_per_second), human),
                num(row.passed),
                num(row.dropped.total()),
                format_rate(rate.map(|r| r.drops_per_second), human),
                detail
            )
        })
        .collect();
    if rows.is_empty() {
        rows.push("(no ICMP seen yet)".to_owned());
    }
    let t = &report.totals;
    let totals = [
        format!(
            "totals: icmp {} ({}/s) passed {} dropped {} ({}/s) would-drop {} ({}/s)",
            num(t.icmp_packets),
            format_rate(rates.map(|r| r.packets_per_second), human),
            num(t.passed),
            num(t.dropped),
            format_rate(rates.map(|r| r.drops_per_second), human),
            num(t.would_drop),
            format_rate(rates.map(|r| r.would_drops_per_second), human),
        ),
        format!(
            "non-ICMP passed {} | ICMP fragments passed {} | unclassified dropped: invalid {} malformed {}",
            num(t.non_icmp_passed),
            num(t.icmp_fragments_passed),
            num(report.unclassified.dropped.invalid),
            num(report.unclassified.dropped.malformed),
        ),
    ];
    let totals: Vec<String> = totals.into_iter().chain(fragment_drops(report)).collect();
    // Heading, header and totals always show; rows give way to a "more" line, and the
    // frame stays one line short of the terminal so that its last newline never scrolls.
    if let Some(max) = style.max_lines {
        let room = max
            .saturating_sub(1)
            .saturating_sub(lines.len() + totals.len());
        if rows.len() > room {
            let keep = room.saturating_sub(1);
            let hidden = rows.len() - keep;
            rows.truncate(keep);
            rows.push(format!(
                "... {hidden} more rows: enlarge the terminal, or use --json"
            ));
        }
    }
    lines.extend(rows);
    lines.extend(totals);
    let mut out = String::new();
    if style.in_place {
        out.push_str(CURSOR_HOME);
    }
    for (index, line) in lines.iter().enumerate() {
        let mut line = line.trim_end();
        if let Some(columns) = style.max_columns
            && let Some((cut, _)) = line.char_indices().nth(columns)
        {
            line = &line[..cut];
        }
        if index == 1 && style.color {
            let _ = write!(out, "{BOLD}{line}{RESET}");
        } else {
            out.push_str(line);
        }
        if style.in_place {
            out.push_str(CLEAR_LINE);
        }
        out.push('\n');
    }
    if style.in_place {
        out.push_str(CLEAR_BELOW);
    }
    out
}

/// One line of `stats --watch --json`: the `stats --json` document, plus when it was taken
/// and the rates since the previous line (`null` on the first).
#[derive(Clone, Debug, Serialize)]
pub struct WatchLine<'a> {
    /// Seconds since the Unix epoch.
    pub unix_time: f64,
    #[serde(flatten)]
    pub report: &'a StatsReport,
    pub rates: Option<&'a Rates>,
}

/// One line on what was dropped between two reports, for `run`'s periodic summary: the
/// total, by reason, then the (family, type) pairs with most drops. `None` when nothing was
/// dropped (or would have been, in dry-run) in between.
pub fn drop_summary(previous: &StatsReport, current: &StatsReport) -> Option<String> {
    let delta = |now: &Reasons, before: Option<&Reasons>| {
        let before = before.cloned().unwrap_or_default();
        Reasons {
            policy: now.policy.saturating_sub(before.policy),
            rate_limit: now.rate_limit.saturating_sub(before.rate_limit),
            smurf: now.smurf.saturating_sub(before.smurf),
            deny_list: now.deny_list.saturating_sub(before.deny_list),
            malformed: now.malformed.saturating_sub(before.malformed),
            invalid: now.invalid.saturating_sub(before.invalid),
            oversize: now.oversize.saturating_sub(before.oversize),
            blocked: now.blocked.saturating_sub(before.blocked),
            sweep: now.sweep.saturating_sub(before.sweep),
        }
    };
    let add = |a: &mut Reasons, b: &Reasons| {
        a.policy += b.policy;
        a.rate_limit += b.rate_limit;
        a.smurf += b.smurf;
        a.deny_list += b.deny_list;
        a.malformed += b.malformed;
        a.invalid += b.invalid;
        a.oversize += b.oversize;
        a.blocked += b.blocked;
        a.sweep += b.sweep;
    };
    let mut dropped = Reasons::default();
    let mut would = Reasons::default();
    let mut by_type: Vec<(u64, String)> = Vec::new();
    for row in &current.icmp {
        let old = previous
            .icmp
            .iter()
            .find(|old| old.family == row.family && old.icmp_type == row.icmp_type);
        let d = delta(&row.dropped, old.map(|o| &o.dropped));
        let w = delta(&row.would_drop, old.map(|o| &o.would_drop));
        let total = d.total() + w.total();
        if total > 0 {
            by_type.push((
                total,
                format!(
                    "{} {} {total}",
                    row.family,
                    row.name
                        .map_or_else(|| row.icmp_type.to_string(), str::to_owned)
                ),
            ));
        }
        add(&mut dropped, &d);
        add(&mut would, &w);
    }
    let (u_now, u_before) = (&current.unclassified, &previous.unclassified);
    dropped.invalid += u_now
        .dropped
        .invalid
        .saturating_sub(u_before.dropped.invalid);
    dropped.malformed += u_now
        .dropped
        .malformed
        .saturating_sub(u_before.dropped.malformed);
    would.invalid += u_now
        .would_drop
        .invalid
        .saturating_sub(u_before.would_drop.invalid);
    would.malformed += u_now
        .would_drop
        .malformed
        .saturating_sub(u_before.would_drop.malformed);
    if dropped.total() + would.total() == 0 {
        return None;
    }
    let by_reason = |reasons: &Reasons| reason_list(reasons, "", false).replace('=', " ");
    let mut parts = Vec::new();
    if dropped.total() > 0 {
        parts.push(format!(
            "dropped {} ({})",
            dropped.total(),
            by_reason(&dropped)
        ));
    }
    if would.total() > 0 {
        parts.push(format!(
            "would drop {} ({})",
            would.total(),
            by_reason(&would)
        ));
    }
    by_type.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let top: Vec<String> = by_type.into_iter().take(3).map(|(_, text)| text).collect();
    if !top.is_empty() {
        parts.push(format!("top: {}", top.join(", ")));
    }
    Some(parts.join("; "))
}

fn reason_list(reasons: &Reasons, prefix: &str, human: bool) -> String {
    reasons
        .by_reason()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{prefix}{name}={}", human::count(*n, human)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use icmp_guard::observe::stats::{Snapshot, TypeCounters, report};
    use icmp_guard_common::{
        Counter, DropReason, FAMILY_V4, SLOT_PASSED, config, drop_slot, global,
    };

    use super::*;

    fn snapshot_with(family: u8, icmp_type: u8, slot: u32, packets: u64) -> Snapshot {
        let mut counters = TypeCounters {
            family,
            icmp_type,
            ..Default::default()
        };
        counters.slots[slot as usize] = Counter {
            packets,
            bytes: packets * 98,
        };
        Snapshot {
            mode: config::MODE_ENFORCE,
            icmp: vec![counters],
            global: vec![Counter::default(); global::ENTRIES as usize],
            interfaces: Vec::new(),
        }
    }

    #[test]
    fn a_watch_frame_redraws_in_place_only_on_a_terminal() {
        let report = report(&snapshot_with(FAMILY_V4, 8, SLOT_PASSED, 3), &[], &[]);
        let plain = watch_frame(&report, None, "every 1s", WatchStyle::default());
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(plain.contains("PKT/S"), "{plain}");
        assert!(
            plain.lines().nth(2).is_some_and(|l| l.contains(" - ")),
            "{plain}"
        );
        let style = WatchStyle {
            in_place: true,
            color: false,
            max_lines: None,
            max_columns: None,
            human: false,
        };
        let frame = watch_frame(&report, None, "every 1s", style);
        assert!(frame.starts_with(CURSOR_HOME), "{frame:?}");
        assert!(frame.ends_with(CLEAR_BELOW), "{frame:?}");
        assert!(frame.contains(&format!("{CLEAR_LINE}\n")), "{frame:?}");
        assert!(
            !frame.contains("\x1b[1m"),
            "no colour unless asked: {frame:?}"
        );
        let colored = watch_frame(
            &report,
            None,
            "x",
            WatchStyle {
                color: true,
                ..style
            },
        );
        assert!(colored.contains("\x1b[1mFAMILY"), "{colored:?}");
    }

    #[test]
    fn a_watch_frame_never_outgrows_the_terminal() {
        let mut snapshot = snapshot_with(FAMILY_V4, 8, SLOT_PASSED, 3);
        for icmp_type in 20..60 {
            let mut row = snapshot.icmp[0].clone();
            row.icmp_type = icmp_type;
            snapshot.icmp.push(row);
        }
        let report = report(&snapshot, &[], &[]);
        let style = WatchStyle {
            in_place: true,
            color: false,
            max_lines: Some(12),
            max_columns: Some(40),
            human: false,
        };
        let frame = watch_frame(&report, None, "x", style);
        assert_eq!(frame.matches('\n').count(), 11, "{frame}");
        assert!(frame.contains("more rows"), "{frame}");
        for line in frame.lines() {
            let visible = line
                .trim_start_matches(CURSOR_HOME)
                .trim_end_matches(CLEAR_LINE);
            assert!(visible.chars().count() <= 40, "{visible:?}");
        }
    }

    #[test]
    fn the_drop_summary_counts_only_what_changed() {
        let before = report(
            &snapshot_with(FAMILY_V4, 8, drop_slot(DropReason::Policy), 5),
            &[],
            &[],
        );
        assert_eq!(drop_summary(&before, &before), None);
        let mut later = snapshot_with(FAMILY_V4, 8, drop_slot(DropReason::Policy), 12);
        later.icmp[0].slots[drop_slot(DropReason::RateLimit) as usize].packets = 3;
        later.global[global::MALFORMED_DROPPED as usize].packets = 1;
        let after = report(&later, &[], &[]);
        let line = drop_summary(&before, &after).expect("something dropped");
        assert_eq!(
            line,
            "dropped 11 (policy 7 rate_limit 3 malformed 1); top: v4 echo-request 10"
        );
    }

    #[test]
    fn table_names_reasons() {
        let snapshot = snapshot_with(FAMILY_V4, 8, drop_slot(DropReason::Policy), 5);
        let table = table(&report(&snapshot, &[], &[]), false);
        assert!(table.contains("echo-request"), "{table}");
        assert!(table.contains("policy=5"), "{table}");
    }

    #[test]
    fn human_numbers_where_people_read_them() {
        let mut snapshot = snapshot_with(FAMILY_V4, 8, drop_slot(DropReason::RateLimit), 1_234_567);
        snapshot.icmp[0].slots[SLOT_PASSED as usize].packets = 340_000;
        let empty = report(&snapshot_with(FAMILY_V4, 8, SLOT_PASSED, 0), &[], &[]);
        let report = report(&snapshot, &[], &[]);
        let plain = table(&report, false);
        assert!(plain.contains("rate_limit=1234567"), "{plain}");
        let human = table(&report, true);
        assert!(human.contains("rate_limit=1.23M"), "{human}");
        assert!(human.contains(" 340k "), "{human}");
        assert!(
            human.contains("totals: icmp 1.57M passed 340k dropped 1.23M"),
            "{human}"
        );
        let rates =
            icmp_guard::observe::stats::rates(&empty, &report, std::time::Duration::from_secs(1));
        let style = WatchStyle {
            human: true,
            ..WatchStyle::default()
        };
        let frame = watch_frame(&report, Some(&rates), "x", style);
        assert!(frame.contains("totals: icmp 1.57M (1.57M/s)"), "{frame}");
        assert!(frame.contains("dropped 1.23M (1.23M/s)"), "{frame}");
    }
}
