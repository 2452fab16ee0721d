//! The counters: read from the per-CPU maps and summed ([`read`], [`read_codes`]), turned
//! into the `stats --json` document ([`report`]) and rates between two reports ([`rates`]).
//! Data only: the tables and watch views are the CLI's.

use icmp_guard_common::{
    CODE_BUCKETS, CodeCounter, Counter, DropReason, FAMILY_V4, FAMILY_V6, InterfaceCounter,
    SLOT_PASSED, SLOTS_PER_TYPE, code_counter_index, config, counter_index, drop_slot, global,
    icmp, would_drop_slot,
};
use serde::Serialize;

use crate::{
    bpf::{GuardMaps, Result, links::LinkStatus},
    net::link::AttachMode,
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
    /// Per attached interface (by ifindex), summed over CPUs; filled by whoever knows the
    /// attached interfaces (`Guard::stats`).
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
            for slot in used_slots() {
                counters.slots[slot as usize] =
                    maps.icmp_counter(counter_index(family, icmp_type, slot))?;
            }
            if counters.packets() > 0 {
                snapshot.icmp.push(counters);
            }
        }
    }
    for slot in 0..global::ENTRIES {
        snapshot.global.push(maps.global_counter(slot)?);
    }
    Ok(snapshot)
}

/// The counter slots the program writes: passed, and each reason's dropped and would-drop
/// slot. Only these are read (one syscall each, 512 types): of the 32 slots a type has, the
/// others stay zero, and reading them would double a snapshot's cost.
fn used_slots() -> impl Iterator<Item = u32> {
    std::iter::once(SLOT_PASSED).chain(
        DropReason::ALL
            .into_iter()
            .flat_map(|reason| [drop_slot(reason), would_drop_slot(reason)]),
    )
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
            let counter = maps.code_counter(code_counter_index(t.family, t.icmp_type, bucket))?;
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

/// Drop counts by reason, as in the JSON contract.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Reasons {
    pub policy: u64,
    pub rate_limit: u64,
    pub smurf: u64,
    pub deny_list: u64,
    pub malformed: u64,
    pub invalid: u64,
    pub oversize: u64,
    pub blocked: u64,
    /// Probes of a source flagged as sweeping many destinations (`[recon]`).
    pub sweep: u64,
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
            oversize: count(DropReason::Oversize),
            blocked: count(DropReason::Blocked),
            sweep: count(DropReason::Sweep),
        }
    }

    /// Every reason added up.
    pub fn total(&self) -> u64 {
        self.policy
            + self.rate_limit
            + self.smurf
            + self.deny_list
            + self.malformed
            + self.invalid
            + self.oversize
            + self.blocked
    }

    /// (reason, count) pairs in slot order, as tables and metrics label them.
    pub fn by_reason(&self) -> [(&'static str, u64); 9] {
        [
            ("policy", self.policy),
            ("rate_limit", self.rate_limit),
            ("smurf", self.smurf),
            ("deny_list", self.deny_list),
            ("malformed", self.malformed),
            ("invalid", self.invalid),
            ("oversize", self.oversize),
            ("blocked", self.blocked),
            ("sweep", self.sweep),
        ]
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct InterfaceReport {
    /// `null` when the interface is gone.
    pub name: Option<String>,
    pub ifindex: u32,
    /// `native`, `generic`, or `null` when our program no longer runs there.
    pub mode: Option<&'static str>,
    /// True where icmp-guard runs as one program of a libxdp dispatcher (`attach
    /// --multiprog`); `mode` is then the dispatcher's.
    pub multiprog: bool,
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
    /// Non-first ICMP fragments that passed every check and their budget (counted in
    /// `passed`).
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

/// Builds the report from a snapshot and the attached interfaces: those with links of
/// their own, then those where icmp-guard runs in a libxdp dispatcher (`members`).
pub fn report(snapshot: &Snapshot, links: &[LinkStatus], members: &[LinkStatus]) -> StatsReport {
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
            .map(|link| (link, false))
            .chain(members.iter().map(|link| (link, true)))
            .map(|(link, multiprog)| InterfaceReport {
                name: link.name.clone(),
                ifindex: link.ifindex,
                mode: link.mode.map(AttachMode::as_str),
                multiprog,
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
        let report = report(&snapshot, &[], &[]);
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
        let json = serde_json::to_value(report(&snapshot, &[], &[])).expect("serializes");
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
    fn interfaces_in_a_dispatcher_get_rows_of_their_own_marked_multiprog() {
        let mut snapshot = snapshot_with(FAMILY_V4, 8, SLOT_PASSED, 5);
        let counter = |ifindex, packets| InterfaceCounter {
            ifindex,
            packets,
            passed: packets,
            ..InterfaceCounter::default()
        };
        snapshot.interfaces = vec![(2, counter(2, 3)), (7, counter(7, 2))];
        let link = |name: &str, ifindex, mode| LinkStatus {
            name: Some(name.to_owned()),
            ifindex,
            link_id: if ifindex == 2 { 11 } else { 0 },
            program_id: 40,
            mode,
            interface_gone: false,
        };
        let report = report(
            &snapshot,
            &[link("eth0", 2, Some(AttachMode::Native))],
            &[
                link("eth1", 7, Some(AttachMode::Generic)),
                // A dispatcher that no longer runs icmp-guard: a row, not running.
                link("eth2", 9, None),
            ],
        );
        let rows: Vec<_> = report
            .interfaces
            .iter()
            .map(|row| {
                (
                    row.name.as_deref(),
                    row.mode,
                    row.multiprog,
                    row.counters.packets,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (Some("eth0"), Some("native"), false, 3),
                (Some("eth1"), Some("generic"), true, 2),
                (Some("eth2"), None, true, 0),
            ]
        );
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["interfaces"][1]["multiprog"], true);
        assert_eq!(json["interfaces"][0]["multiprog"], false);
    }

    #[test]
    fn rates_are_per_second_deltas_and_never_negative() {
        let before = report(&snapshot_with(FAMILY_V4, 8, SLOT_PASSED, 10), &[], &[]);
        let mut later = snapshot_with(FAMILY_V4, 8, SLOT_PASSED, 30);
        later.icmp[0].slots[drop_slot(DropReason::RateLimit) as usize].packets = 20;
        let after = report(&later, &[], &[]);
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
}
