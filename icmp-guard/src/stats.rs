//! Reads the per-CPU counters, sums them, and renders them as JSON or a table.

use icmp_guard_common::{
    Counter, DropReason, FAMILY_V4, FAMILY_V6, SLOT_PASSED, SLOTS_PER_TYPE, config, counter_index,
    drop_slot, global, icmp, would_drop_slot,
};
use serde::Serialize;

use crate::{
    error::{Error, Result},
    loader::{GuardMaps, LinkStatus},
    netlink::AttachMode,
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

    fn total(&self) -> u64 {
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

/// The `stats --json` document.
#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    pub mode: &'static str,
    pub interfaces: Vec<InterfaceReport>,
    pub totals: Totals,
    pub icmp: Vec<TypeReport>,
    pub unclassified: Unclassified,
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
    let fragments = snapshot.global(global::ICMP_FRAGMENT_PASSED).packets;
    let totals = Totals {
        icmp_packets: icmp.iter().map(|t| t.packets).sum(),
        passed: icmp.iter().map(|t| t.passed).sum::<u64>() + fragments,
        dropped: icmp.iter().map(|t| t.dropped.total()).sum::<u64>()
            + unclassified.dropped.invalid
            + unclassified.dropped.malformed,
        would_drop: icmp.iter().map(|t| t.would_drop.total()).sum::<u64>()
            + unclassified.would_drop.invalid
            + unclassified.would_drop.malformed,
        non_icmp_passed: snapshot.global(global::NON_ICMP_PASSED).packets,
        icmp_fragments_passed: fragments,
    };
    StatsReport {
        mode: mode_name(snapshot.mode),
        interfaces: links
            .iter()
            .map(|link| InterfaceReport {
                name: link.name.clone(),
                ifindex: link.ifindex,
                mode: link.mode.map(AttachMode::as_str),
            })
            .collect(),
        totals,
        icmp,
        unclassified,
    }
}

/// The report as a plain-text table.
pub fn render_table(report: &StatsReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let interfaces: Vec<String> = report
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
    let _ = writeln!(
        out,
        "mode: {}    interfaces: {}",
        report.mode,
        if interfaces.is_empty() {
            "none".to_owned()
        } else {
            interfaces.join(", ")
        }
    );
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
    out
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
    fn table_names_reasons() {
        let snapshot = snapshot_with(FAMILY_V4, 8, drop_slot(DropReason::Policy), 5);
        let table = render_table(&report(&snapshot, &[]));
        assert!(table.contains("echo-request"), "{table}");
        assert!(table.contains("policy=5"), "{table}");
    }
}
