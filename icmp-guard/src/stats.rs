//! Reads the per-CPU counters, sums them, and renders them as JSON or a table.

use icmp_guard_common::{
    CODE_BUCKETS, CodeCounter, Counter, DropReason, FAMILY_V4, FAMILY_V6, InterfaceCounter,
    SLOT_PASSED, SLOTS_PER_TYPE, code_counter_index, config, counter_index, drop_slot, global,
    icmp, would_drop_slot,
};
use serde::Serialize;

use crate::{
    error::{Error, Result},
    loader::{self, GuardMaps, LinkStatus},
    netlink::AttachMode,
    pins::PinDir,
};

/// Counters of one (family, type), summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeCounters {
    pub family: u8,
    pub icmp_type: u8,
    pub slots: [Counter; SLOTS_PER_TYPE as usize],
}

impl TypeCounters {
    pub fn packets(&self) -> u64 {
        self.slots.iter().map(|c| c.packets).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.slots.iter().map(|c| c.bytes).sum()
    }

    pub fn passed(&self) -> u64 {
        self.slots[SLOT_PASSED as usize].packets
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.slots[drop_slot(reason) as usize].packets
    }

    pub fn would_drop(&self, reason: DropReason) -> u64 {
        self.slots[would_drop_slot(reason) as usize].packets
    }
}

/// Every counter at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub mode: u32,
    /// Types with at least one packet, v4 first, by type.
    pub icmp: Vec<TypeCounters>,
    pub global: Vec<Counter>,
    /// Per attached interface (by ifindex), summed over CPUs; filled by [`report_of`],
    /// which knows the attached interfaces.
    pub interfaces: Vec<(u32, InterfaceCounter)>,
}

impl Snapshot {
    /// The counters of one (family, type); zero when nothing was seen.
    pub fn of(&self, family: u8, icmp_type: u8) -> TypeCounters {
        self.icmp
            .iter()
            .find(|c| c.family == family && c.icmp_type == icmp_type)
            .cloned()
            .unwrap_or(TypeCounters {
                family,
                icmp_type,
                ..Default::default()
            })
    }

    pub fn global(&self, slot: u32) -> Counter {
        self.global.get(slot as usize).copied().unwrap_or_default()
    }
}

/// Reads and sums every counter.
pub fn read(maps: &GuardMaps) -> Result<Snapshot> {
    let sum = |map: &aya::maps::PerCpuArray<aya::maps::MapData, Counter>, index: u32| {
        map.get(&index, 0)
            .map(|values| {
                values
                    .iter()
                    .fold(Counter::default(), |total, cpu| Counter {
                        packets: total.packets + cpu.packets,
                        bytes: total.bytes + cpu.bytes,
                    })
            })
            .map_err(|err| Error::bpf("reading counters", err))
    };
    let mut snapshot = Snapshot {
        mode: maps.mode()?,
        ..Default::default()
    };
    for family in [FAMILY_V4, FAMILY_V6] {
        for icmp_type in 0..=255u8 {
            let mut counters = TypeCounters {
                family,
                icmp_type,
                ..Default::default()
            };
            for slot in 0..SLOTS_PER_TYPE {
                counters.slots[slot as usize] =
                    sum(&maps.icmp_counters, counter_index(family, icmp_type, slot))?;
            }
            if counters.packets() > 0 {
                snapshot.icmp.push(counters);
            }
        }
    }
    for slot in 0..global::ENTRIES {
        snapshot.global.push(sum(&maps.global_counters, slot)?);
    }
    Ok(snapshot)
}

/// The report of the running guard whose maps are `maps`: every counter, and those of
/// each attached interface.
pub fn report_of(maps: &GuardMaps, pins: &PinDir) -> Result<StatsReport> {
    let mut snapshot = read(maps)?;
    let links = loader::links(pins)?;
    let ifindexes: Vec<u32> = links.iter().map(|link| link.ifindex).collect();
    snapshot.interfaces = maps.interface_counters(&ifindexes)?;
    Ok(report(&snapshot, &links))
}

/// [`report_of`] the guard pinned in `pins`, with its maps opened afresh (a detach and a
/// new attach in between are followed).
pub fn read_report(pins: &PinDir) -> Result<StatsReport> {
    report_of(&GuardMaps::open(pins)?, pins)
}

/// Counters of one (family, type, code bucket), summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodeCounters {
    pub family: u8,
    pub icmp_type: u8,
    /// The code, or with `and_higher` the first of the codes that share the last bucket.
    pub code: u8,
    pub and_higher: bool,
    pub counter: CodeCounter,
}

/// Reads the per-code counters of every (family, type) in `types`: the buckets that saw a
/// packet, in order.
pub fn read_codes(maps: &GuardMaps, types: &[TypeCounters]) -> Result<Vec<CodeCounters>> {
    let mut rows = Vec::new();
    for t in types {
        for bucket in 0..CODE_BUCKETS as u8 {
            let index = code_counter_index(t.family, t.icmp_type, bucket);
            let values = maps
                .code_counters
                .get(&index, 0)
                .map_err(|err| Error::bpf("reading the per-code counters", err))?;
            let counter = values
                .iter()
                .fold(CodeCounter::default(), |total, cpu| CodeCounter {
                    packets: total.packets + cpu.packets,
                    bytes: total.bytes + cpu.bytes,
                    dropped: total.dropped + cpu.dropped,
                    would_drop: total.would_drop + cpu.would_drop,
                });
            if counter.packets > 0 {
                rows.push(CodeCounters {
                    family: t.family,
                    icmp_type: t.icmp_type,
                    code: bucket,
                    and_higher: u32::from(bucket) == CODE_BUCKETS - 1,
                    counter,
                });
            }
        }
    }
    Ok(rows)
}

/// One row of `stats --by-code --json`.
#[derive(Clone, Debug, Serialize)]
pub struct CodeReport {
    pub family: &'static str,
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub name: Option<&'static str>,
    pub code: u8,
    /// True for the last bucket, which counts this code and every higher one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub and_higher: bool,
    pub packets: u64,
    pub bytes: u64,
    pub passed: u64,
    pub dropped: u64,
    pub would_drop: u64,
}

/// The per-code rows of `stats --by-code`.
pub fn code_report(rows: &[CodeCounters]) -> Vec<CodeReport> {
    rows.iter()
        .map(|row| CodeReport {
            family: icmp::family_label(row.family),
            icmp_type: row.icmp_type,
            name: icmp::type_name(row.family, row.icmp_type),
            code: row.code,
            and_higher: row.and_higher,
            packets: row.counter.packets,
            bytes: row.counter.bytes,
            passed: row.counter.packets - row.counter.dropped - row.counter.would_drop,
            dropped: row.counter.dropped,
            would_drop: row.counter.would_drop,
        })
        .collect()
}

/// The per-code rows as a plain-text table.
pub fn render_code_table(rows: &[CodeReport]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:>4} {:>5}  {:<26} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "FAMILY", "TYPE", "CODE", "NAME", "PACKETS", "BYTES", "PASSED", "DROPPED", "WOULD-DROP"
    );
    for row in rows {
        let code = if row.and_higher {
            format!("{}+", row.code)
        } else {
            row.code.to_string()
        };
        let _ = writeln!(
            out,
            "{:<6} {:>4} {:>5}  {:<26} {:>10} {:>12} {:>10} {:>10} {:>10}",
            row.family,
            row.icmp_type,
            code,
            row.name.unwrap_or("(unassigned)"),
            row.packets,
            row.bytes,
            row.passed,
            row.dropped,
            row.would_drop
        );
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no ICMP seen yet)");
    }
    out
}

/// Drop counts by reason, as in the JSON contract.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Reasons {
    pub policy: u64,
    pub rate_limit: u64,
    pub smurf: u64,
    pub deny_list: u64,
    pub malformed: u64,
    pub invalid: u64,
}

impl Reasons {
    fn from_fn(mut count: impl FnMut(DropReason) -> u64) -> Self {
        Self {
            policy: count(DropReason::Policy),
            rate_limit: count(DropReason::RateLimit),
            smurf: count(DropReason::Smurf),
            deny_list: count(DropReason::DenyList),
            malformed: count(DropReason::Malformed),
            invalid: count(DropReason::Invalid),
        }
    }

    /// Every reason added up.
    pub fn total(&self) -> u64 {
        self.policy + self.rate_limit + self.smurf + self.deny_list + self.malformed + self.invalid
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct InterfaceReport {
    /// `null` when the interface is gone.
    pub name: Option<String>,
    pub ifindex: u32,
    /// `native`, `generic`, or `null` when our program no longer runs there.
    pub mode: Option<&'static str>,
    /// What the guard judged on this interface since it was attached: classified ICMP and
    /// packets dropped before a type could be read (traffic that is not ICMP is not
    /// counted per interface).
    pub counters: InterfaceTotals,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct InterfaceTotals {
    pub packets: u64,
    pub bytes: u64,
    pub passed: u64,
    pub dropped: u64,
    pub would_drop: u64,
}

impl From<InterfaceCounter> for InterfaceTotals {
    fn from(c: InterfaceCounter) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
            passed: c.passed,
            dropped: c.dropped,
            would_drop: c.would_drop,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub icmp_packets: u64,
    pub passed: u64,
    pub dropped: u64,
    pub would_drop: u64,
    pub non_icmp_passed: u64,
    /// Non-first ICMP fragments, passed without classification (counted in `passed`).
    pub icmp_fragments_passed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TypeReport {
    pub family: &'static str,
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub name: Option<&'static str>,
    pub packets: u64,
    pub bytes: u64,
    pub passed: u64,
    pub dropped: Reasons,
    pub would_drop: Reasons,
}

/// Packets dropped before an ICMP type could be read.
#[derive(Clone, Debug, Serialize)]
pub struct Unclassified {
    pub dropped: UnclassifiedReasons,
    pub would_drop: UnclassifiedReasons,
}

#[derive(Clone, Debug, Serialize)]
pub struct UnclassifiedReasons {
    pub invalid: u64,
    pub malformed: u64,
}

/// Non-first ICMP fragments, which carry no type: counted apart from the types. Passed ones
/// are `totals.icmp_fragments_passed`.
#[derive(Clone, Debug, Serialize)]
pub struct Fragments {
    pub dropped: FragmentReasons,
    pub would_drop: FragmentReasons,
}

/// Why non-first ICMP fragments were dropped: a martian source (`invalid`), the deny list,
/// a broadcast or multicast destination (`smurf`), the fragment budget (`rate_limit`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FragmentReasons {
    pub invalid: u64,
    pub deny_list: u64,
    pub smurf: u64,
    pub rate_limit: u64,
}

impl FragmentReasons {
    fn read(snapshot: &Snapshot, dry_run: bool) -> Self {
        let count = |reason| {
            snapshot
                .global(global::fragment_slot(reason, dry_run))
                .packets
        };
        Self {
            invalid: count(DropReason::Invalid),
            deny_list: count(DropReason::DenyList),
            smurf: count(DropReason::Smurf),
            rate_limit: count(DropReason::RateLimit),
        }
    }

    /// Every reason added up.
    pub fn total(&self) -> u64 {
        self.invalid + self.deny_list + self.smurf + self.rate_limit
    }

    /// (reason, count) pairs, as metrics label them.
    pub fn by_reason(&self) -> [(&'static str, u64); 4] {
        [
            ("invalid", self.invalid),
            ("deny_list", self.deny_list),
            ("smurf", self.smurf),
            ("rate_limit", self.rate_limit),
        ]
    }
}

/// The `stats --json` document.
#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    pub mode: &'static str,
    pub interfaces: Vec<InterfaceReport>,
    pub totals: Totals,
    pub icmp: Vec<TypeReport>,
    pub unclassified: Unclassified,
    /// Non-first ICMP fragments dropped, by reason.
    pub fragments: Fragments,
    /// Sampled events for `top` and the `run` drop log.
    pub events: EventTotals,
}

/// Sampled events since the maps were created.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct EventTotals {
    /// Written to the ring buffer.
    pub emitted: u64,
    /// Allowed by the budget but lost: the ring buffer was full (no reader, or a slow one).
    pub lost: u64,
}

/// `enforce` or `dry-run`.
pub const fn mode_name(mode: u32) -> &'static str {
    if mode == config::MODE_DRY_RUN {
        "dry-run"
    } else {
        "enforce"
    }
}

/// Builds the report from a snapshot and the attached interfaces.
pub fn report(snapshot: &Snapshot, links: &[LinkStatus]) -> StatsReport {
    let icmp: Vec<TypeReport> = snapshot
        .icmp
        .iter()
        .map(|c| TypeReport {
            family: icmp::family_label(c.family),
            icmp_type: c.icmp_type,
            name: icmp::type_name(c.family, c.icmp_type),
            packets: c.packets(),
            bytes: c.bytes(),
            passed: c.passed(),
            dropped: Reasons::from_fn(|reason| c.dropped(reason)),
            would_drop: Reasons::from_fn(|reason| c.would_drop(reason)),
        })
        .collect();
    let unclassified = Unclassified {
        dropped: UnclassifiedReasons {
            invalid: snapshot.global(global::INVALID_DROPPED).packets,
            malformed: snapshot.global(global::MALFORMED_DROPPED).packets,
        },
        would_drop: UnclassifiedReasons {
            invalid: snapshot.global(global::INVALID_WOULD_DROP).packets,
            malformed: snapshot.global(global::MALFORMED_WOULD_DROP).packets,
        },
    };
    let fragments_passed = snapshot.global(global::ICMP_FRAGMENT_PASSED).packets;
    let fragments = Fragments {
        dropped: FragmentReasons::read(snapshot, false),
        would_drop: FragmentReasons::read(snapshot, true),
    };
    let totals = Totals {
        icmp_packets: icmp.iter().map(|t| t.packets).sum(),
        passed: icmp.iter().map(|t| t.passed).sum::<u64>() + fragments_passed,
        dropped: icmp.iter().map(|t| t.dropped.total()).sum::<u64>()
            + unclassified.dropped.invalid
            + unclassified.dropped.malformed
            + fragments.dropped.total(),
        would_drop: icmp.iter().map(|t| t.would_drop.total()).sum::<u64>()
            + unclassified.would_drop.invalid
            + unclassified.would_drop.malformed
            + fragments.would_drop.total(),
        non_icmp_passed: snapshot.global(global::NON_ICMP_PASSED).packets,
        icmp_fragments_passed: fragments_passed,
    };
    StatsReport {
        mode: mode_name(snapshot.mode),
        interfaces: links
            .iter()
            .map(|link| InterfaceReport {
                name: link.name.clone(),
                ifindex: link.ifindex,
                mode: link.mode.map(AttachMode::as_str),
                counters: snapshot
                    .interfaces
                    .iter()
                    .find(|(ifindex, _)| *ifindex == link.ifindex)
                    .map(|(_, counter)| InterfaceTotals::from(*counter))
                    .unwrap_or_default(),
            })
            .collect(),
        totals,
        icmp,
        unclassified,
        fragments,
        events: EventTotals {
            emitted: snapshot.global(global::EVENTS_EMITTED).packets,
            lost: snapshot.global(global::EVENTS_LOST).packets,
        },
    }
}

/// "eth0 (native), eth1 (generic)", or "none".
fn interface_list(report: &StatsReport) -> String {
    let names: Vec<String> = report
        .interfaces
        .iter()
        .map(|i| {
            format!(
                "{} ({})",
                i.name.as_deref().unwrap_or("<gone>"),
                i.mode.unwrap_or("not running")
            )
        })
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// The report as a plain-text table.
pub fn render_table(report: &StatsReport) -> String {
    use std::fmt::Write as _;
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
                c.packets,
                c.passed,
                c.dropped,
                c.would_drop
            );
        }
    }
    let _ = writeln!(
        out,
        "{:<6} {:>4}  {:<26} {:>10} {:>12} {:>10} {:>10}  DROP REASONS",
        "FAMILY", "TYPE", "NAME", "PACKETS", "BYTES", "PASSED", "DROPPED"
    );
    for row in &report.icmp {
        let reasons = reason_list(&row.dropped, "");
        let would = reason_list(&row.would_drop, "would-");
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
            row.packets,
            row.bytes,
            row.passed,
            row.dropped.total(),
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
        t.icmp_packets,
        t.passed,
        t.dropped,
        t.would_drop,
        t.non_icmp_passed,
        t.icmp_fragments_passed,
        report.unclassified.dropped.invalid,
        report.unclassified.dropped.malformed,
    );
    let fragments = &report.fragments;
    if fragments.dropped.total() + fragments.would_drop.total() > 0 {
        let list = |reasons: &FragmentReasons, prefix: &str| {
            reasons
                .by_reason()
                .iter()
                .filter(|(_, count)| *count > 0)
                .map(|(reason, count)| format!("{prefix}{reason} {count}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "ICMP fragments dropped: {} {}",
            list(&fragments.dropped, ""),
            list(&fragments.would_drop, "would-")
        );
    }
    out
}

/// Per-second rates between two reports, for `stats --watch` and the `run` summary.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Rates {
    /// Seconds between the two snapshots.
    pub interval_seconds: f64,
    /// ICMP packets per second, whatever their verdict.
    pub packets_per_second: f64,
    pub drops_per_second: f64,
    pub would_drops_per_second: f64,
    pub non_icmp_passed_per_second: f64,
    /// One entry per row of the newer report, in the same order.
    pub icmp: Vec<TypeRates>,
}

/// Rates of one (family, type).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TypeRates {
    pub family: &'static str,
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub packets_per_second: f64,
    pub drops_per_second: f64,
    pub would_drops_per_second: f64,
}

/// Counts of one (family, type) that rates are computed from.
fn row_counts(row: &TypeReport) -> [u64; 3] {
    [row.packets, row.dropped.total(), row.would_drop.total()]
}

/// The rates between `previous` and `current`, `elapsed` apart. A counter that went down
/// (the guard was detached and attached again in between) counts as zero, not negative.
pub fn rates(previous: &StatsReport, current: &StatsReport, elapsed: std::time::Duration) -> Rates {
    let seconds = elapsed.as_secs_f64();
    let per_second = |now: u64, before: u64| {
        if seconds <= 0.0 {
            0.0
        } else {
            round2(now.saturating_sub(before) as f64 / seconds)
        }
    };
    let icmp = current
        .icmp
        .iter()
        .map(|row| {
            let before = previous
                .icmp
                .iter()
                .find(|old| old.family == row.family && old.icmp_type == row.icmp_type)
                .map_or([0; 3], row_counts);
            let now = row_counts(row);
            TypeRates {
                family: row.family,
                icmp_type: row.icmp_type,
                packets_per_second: per_second(now[0], before[0]),
                drops_per_second: per_second(now[1], before[1]),
                would_drops_per_second: per_second(now[2], before[2]),
            }
        })
        .collect();
    let (t, p) = (&current.totals, &previous.totals);
    Rates {
        interval_seconds: round2(seconds),
        packets_per_second: per_second(t.icmp_packets, p.icmp_packets),
        drops_per_second: per_second(t.dropped, p.dropped),
        would_drops_per_second: per_second(t.would_drop, p.would_drop),
        non_icmp_passed_per_second: per_second(t.non_icmp_passed, p.non_icmp_passed),
        icmp,
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
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
}

const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";
/// Cursor to the top-left corner.
pub const CURSOR_HOME: &str = "\x1b[H";
/// Clear from the cursor to the end of the line.
pub const CLEAR_LINE: &str = "\x1b[K";
/// Clear from the cursor to the end of the screen.
pub const CLEAR_BELOW: &str = "\x1b[J";

fn format_rate(rate: Option<f64>) -> String {
    match rate {
        None => "-".to_owned(),
        Some(rate) if rate >= 100.0 => format!("{rate:.0}"),
        Some(rate) => format!("{rate:.1}"),
    }
}

/// One `stats --watch` frame: the table of [`render_table`] with packets/s and drops/s per
/// row. `rates` is `None` for the first frame, which has nothing to compare with.
pub fn render_watch(
    report: &StatsReport,
    rates: Option<&Rates>,
    heading: &str,
    style: WatchStyle,
) -> String {
    use std::fmt::Write as _;
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
                reason_list(&row.dropped, ""),
                reason_list(&row.would_drop, "would-"),
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
                row.packets,
                format_rate(rate.map(|r| r.packets_per_second)),
                row.passed,
                row.dropped.total(),
                format_rate(rate.map(|r| r.drops_per_second)),
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
            t.icmp_packets,
            format_rate(rates.map(|r| r.packets_per_second)),
            t.passed,
            t.dropped,
            format_rate(rates.map(|r| r.drops_per_second)),
            t.would_drop,
            format_rate(rates.map(|r| r.would_drops_per_second)),
        ),
        format!(
            "non-ICMP passed {} | ICMP fragments passed {} | unclassified dropped: invalid {} malformed {}",
            t.non_icmp_passed,
            t.icmp_fragments_passed,
            report.unclassified.dropped.invalid,
            report.unclassified.dropped.malformed,
        ),
    ];
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
        }
    };
    let add = |a: &mut Reasons, b: &Reasons| {
        a.policy += b.policy;
        a.rate_limit += b.rate_limit;
        a.smurf += b.smurf;
        a.deny_list += b.deny_list;
        a.malformed += b.malformed;
        a.invalid += b.invalid;
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
    let by_reason = |reasons: &Reasons| reason_list(reasons, "").replace('=', " ");
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

fn reason_list(reasons: &Reasons, prefix: &str) -> String {
    [
        ("policy", reasons.policy),
        ("rate_limit", reasons.rate_limit),
        ("smurf", reasons.smurf),
        ("deny_list", reasons.deny_list),
        ("malformed", reasons.malformed),
        ("invalid", reasons.invalid),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| format!("{prefix}{name}={n}"))
    .collect::<Vec<_>>()
    .join(" ")
}

#[cfg(test)]
mod tests {
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
    fn totals_add_up() {
        let mut snapshot = snapshot_with(FAMILY_V4, 8, drop_slot(DropReason::Policy), 5);
        snapshot.global[global::INVALID_DROPPED as usize].packets = 2;
        snapshot.global[global::NON_ICMP_PASSED as usize].packets = 7;
        let report = report(&snapshot, &[]);
        assert_eq!(
            report.totals,
            Totals {
                icmp_packets: 5,
                passed: 0,
                dropped: 7,
                would_drop: 0,
                non_icmp_passed: 7,
                icmp_fragments_passed: 0,
            }
        );
        assert_eq!(report.icmp[0].name, Some("echo-request"));
        assert_eq!(report.icmp[0].dropped.policy, 5);
    }

    #[test]
    fn json_has_the_contract_fields() {
        let snapshot = snapshot_with(FAMILY_V6, 128, SLOT_PASSED, 3);
        let json = serde_json::to_value(report(&snapshot, &[])).expect("serializes");
        for field in [
            "icmp_packets",
            "passed",
            "dropped",
            "would_drop",
            "non_icmp_passed",
        ] {
            assert!(json["totals"][field].is_u64(), "totals.{field}");
        }
        let row = &json["icmp"][0];
        assert_eq!(row["family"], "v6");
        assert_eq!(row["type"], 128);
        assert_eq!(row["name"], "echo-request");
        assert_eq!(row["passed"], 3);
        for reason in DropReason::ALL {
            assert!(row["dropped"][reason.name()].is_u64(), "{}", reason.name());
        }
        assert_eq!(json["mode"], "enforce");
    }

    #[test]
    fn rates_are_per_second_deltas_and_never_negative() {
        let before = report(&snapshot_with(FAMILY_V4, 8, SLOT_PASSED, 10), &[]);
        let mut later = snapshot_with(FAMILY_V4, 8, SLOT_PASSED, 30);
        later.icmp[0].slots[drop_slot(DropReason::RateLimit) as usize].packets = 20;
        let after = report(&later, &[]);
        let rates = rates(&before, &after, std::time::Duration::from_secs(2));
        assert_eq!(rates.interval_seconds, 2.0);
        assert_eq!(rates.packets_per_second, 20.0, "40 new packets in 2 s");
        assert_eq!(rates.drops_per_second, 10.0);
        assert_eq!(rates.icmp[0].packets_per_second, 20.0);
        assert_eq!(rates.icmp[0].drops_per_second, 10.0);
        // Counters that went back to zero (detach, attach) give zero, not a huge number.
        let reset = super::rates(&after, &before, std::time::Duration::from_secs(1));
        assert_eq!(reset.packets_per_second, 0.0);
        assert_eq!(reset.icmp[0].drops_per_second, 0.0);
    }

    #[test]
    fn a_watch_frame_redraws_in_place_only_on_a_terminal() {
        let report = report(&snapshot_with(FAMILY_V4, 8, SLOT_PASSED, 3), &[]);
        let plain = render_watch(&report, None, "every 1s", WatchStyle::default());
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
        };
        let frame = render_watch(&report, None, "every 1s", style);
        assert!(frame.starts_with(CURSOR_HOME), "{frame:?}");
        assert!(frame.ends_with(CLEAR_BELOW), "{frame:?}");
        assert!(frame.contains(&format!("{CLEAR_LINE}\n")), "{frame:?}");
        assert!(
            !frame.contains("\x1b[1m"),
            "no colour unless asked: {frame:?}"
        );
        let colored = render_watch(
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
        let report = report(&snapshot, &[]);
        let style = WatchStyle {
            in_place: true,
            color: false,
            max_lines: Some(12),
            max_columns: Some(40),
        };
        let frame = render_watch(&report, None, "x", style);
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
        );
        assert_eq!(drop_summary(&before, &before), None);
        let mut later = snapshot_with(FAMILY_V4, 8, drop_slot(DropReason::Policy), 12);
        later.icmp[0].slots[drop_slot(DropReason::RateLimit) as usize].packets = 3;
        later.global[global::MALFORMED_DROPPED as usize].packets = 1;
        let after = report(&later, &[]);
        let line = drop_summary(&before, &after).expect("something dropped");
        assert_eq!(
            line,
            "dropped 11 (policy 7 rate_limit 3 malformed 1); top: v4 echo-request 10"
        );
    }

    #[test]
    fn table_names_reasons() {
        let snapshot = snapshot_with(FAMILY_V4, 8, drop_slot(DropReason::Policy), 5);
        let table = render_table(&report(&snapshot, &[]));
        assert!(table.contains("echo-request"), "{table}");
        assert!(table.contains("policy=5"), "{table}");
    }
}
