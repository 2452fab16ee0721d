//! The Prometheus collector: the counters of [`crate::observe::stats`] and the state of the
//! guard as an exposition in the Prometheus text format (0.0.4) or OpenMetrics 1.0, encoded
//! by `prometheus-client`.
//!
//! Every scrape reads the pinned maps afresh, so the exporter follows a detach and a new
//! attach and never caches a value. When nothing is attached a scrape still succeeds, with
//! `icmp_guard_up 0`, the build and (under `run --policy`) the policy file's reload state,
//! and no other series.

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::service::Reload;
use crate::{
    bpf::maps::Tracked,
    error::Result,
    guard::Guard,
    observe::stats::{self, StatsReport},
};

/// The commit this binary was built from, as `--version` shows it (see build.rs).
const COMMIT: &str = include_str!(concat!(env!("OUT_DIR"), "/commit"));

/// The exposition formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Prometheus text format 0.0.4 (what `promtool check metrics` reads).
    #[default]
    Prometheus,
    /// OpenMetrics 1.0 text, ending in `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// OpenMetrics when the scraper's `Accept` header asks for it (as Prometheus does),
    /// the Prometheus text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }
}

/// Everything one scrape reports.
#[derive(Clone, Debug)]
pub struct Sample {
    pub report: StatsReport,
    pub tracked: Tracked,
    /// Sources serving a block time now.
    pub blocked: u64,
    /// The revision of the live policy, kept in the kernel (`CONFIG`): one more with every
    /// policy written, by any command; what `icmp_guard_policy_revision` reports.
    pub revision: u32,
    /// Interfaces a `run` service waits for (deleted, not created yet).
    pub waiting: Vec<String>,
    /// Sources and source prefixes sweep detection flagged whose block (or, with action
    /// log, flag) lasts: (sources, prefixes).
    pub flagged: (u64, u64),
}

/// Reads a sample from the pinned maps; `None` when the guard is not attached.
pub fn gather(guard: &Guard) -> Result<Option<Sample>> {
    let report = match guard.stats() {
        Ok(report) => report,
        Err(err) if err.is_not_attached() => return Ok(None),
        Err(err) => return Err(err),
    };
    Ok(Some(Sample {
        report,
        tracked: guard.tracked()?,
        blocked: guard.blocked()?.len() as u64,
        revision: guard.revision()?,
        waiting: guard.waiting()?,
        flagged: {
            let flagged = guard.flagged()?;
            let active = |source: bool| {
                flagged
                    .iter()
                    .filter(|entry| entry.active() && entry.is_source() == source)
                    .count() as u64
            };
            (active(true), active(false))
        },
    }))
}

/// A sample (or its absence) as a `prometheus-client` collector, encoded in a fixed order.
#[derive(Debug)]
struct Exposition(Option<Sample>);

/// Encodes one series family from `(labels, value)` pairs; an empty family is left out.
fn family<L, M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: &[(L, M)],
) -> fmt::Result
where
    L: prometheus_client::encoding::EncodeLabelSet,
    M: prometheus_client::encoding::EncodeMetric,
{
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// Encodes one series without labels.
fn single<M: prometheus_client::encoding::EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: &M,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, value.metric_type())?;
    value.encode(metric)
}

type Labels = Vec<(&'static str, String)>;

fn type_labels(row: &stats::TypeReport) -> Labels {
    vec![
        ("family", row.family.to_owned()),
        ("type", row.icmp_type.to_string()),
        ("name", row.name.unwrap_or("unassigned").to_owned()),
    ]
}

fn with(mut labels: Labels, key: &'static str, value: &str) -> Labels {
    labels.push((key, value.to_owned()));
    labels
}

fn reasons(reasons: &stats::Reasons) -> [(&'static str, u64); 9] {
    reasons.by_reason()
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let up = i64::from(self.0.is_some());
        single(
            &mut encoder,
            "icmp_guard_up",
            "1 when the guard's pinned maps were read, 0 when it is not attached",
            &ConstGauge::new(up),
        )?;
        let Some(sample) = &self.0 else {
            return Ok(());
        };
        let report = &sample.report;
        let counter = MetricType::Counter;
        let gauge = MetricType::Gauge;

        let mut packets = Vec::new();
        let mut drops = Vec::new();
        let mut would_drops = Vec::new();
        let mut bytes = Vec::new();
        for row in &report.icmp {
            let labels = type_labels(row);
            for (verdict, value) in [
                ("passed", row.passed),
                ("dropped", row.dropped.total()),
                ("would_drop", row.would_drop.total()),
            ] {
                packets.push((
                    with(labels.clone(), "verdict", verdict),
                    ConstCounter::new(value),
                ));
            }
            for (reason, value) in reasons(&row.dropped) {
                drops.push((
                    with(labels.clone(), "reason", reason),
                    ConstCounter::new(value),
                ));
            }
            for (reason, value) in reasons(&row.would_drop) {
                would_drops.push((
                    with(labels.clone(), "reason", reason),
                    ConstCounter::new(value),
                ));
            }
            bytes.push((labels, ConstCounter::new(row.bytes)));
        }
        family(
            &mut encoder,
            "icmp_guard_packets",
            "ICMP packets by family, type and verdict (passed, dropped, would_drop in dry-run)",
            counter,
            &packets,
        )?;
        family(
            &mut encoder,
            "icmp_guard_drops",
            "ICMP packets dropped, by family, type and reason",
            counter,
            &drops,
        )?;
        family(
            &mut encoder,
            "icmp_guard_would_drops",
            "ICMP packets that dry-run mode let through but would have dropped, by reason",
            counter,
            &would_drops,
        )?;
        family(
            &mut encoder,
            "icmp_guard_bytes",
            "Frame bytes of ICMP packets as XDP sees them, by family and type",
            counter,
            &bytes,
        )?;
        let unclassified = &report.unclassified;
        family(
            &mut encoder,
            "icmp_guard_unclassified_drops",
            "Packets dropped before an ICMP type could be read, by reason",
            counter,
            &[
                (
                    vec![("reason", "invalid")],
                    ConstCounter::new(unclassified.dropped.invalid),
                ),
                (
                    vec![("reason", "malformed")],
                    ConstCounter::new(unclassified.dropped.malformed),
                ),
            ],
        )?;
        family(
            &mut encoder,
            "icmp_guard_unclassified_would_drops",
            "Packets dry-run mode let through that would have been dropped before an ICMP type could be read",
            counter,
            &[
                (
                    vec![("reason", "invalid")],
                    ConstCounter::new(unclassified.would_drop.invalid),
                ),
                (
                    vec![("reason", "malformed")],
                    ConstCounter::new(unclassified.would_drop.malformed),
                ),
            ],
        )?;
        single(
            &mut encoder,
            "icmp_guard_non_icmp_passed",
            "Packets that are not ICMP, passed untouched",
            &ConstCounter::new(report.totals.non_icmp_passed),
        )?;
        single(
            &mut encoder,
            "icmp_guard_icmp_fragments_passed",
            "Non-first ICMP fragments that passed every check and their budget",
            &ConstCounter::new(report.totals.icmp_fragments_passed),
        )?;
        for (name, help, reasons) in [
            (
                "icmp_guard_icmp_fragments_dropped",
                "Non-first ICMP fragments dropped, by reason",
                &report.fragments.dropped,
            ),
            (
                "icmp_guard_icmp_fragments_would_drop",
                "Non-first ICMP fragments dry-run mode let through that would have been dropped, by reason",
                &report.fragments.would_drop,
            ),
        ] {
            let series: Vec<_> = reasons
                .by_reason()
                .into_iter()
                .map(|(reason, count)| (vec![("reason", reason)], ConstCounter::new(count)))
                .collect();
            family(&mut encoder, name, help, counter, &series)?;
        }
        single(
            &mut encoder,
            "icmp_guard_events_emitted",
            "Sampled ICMP events written to the ring buffer for top and the drop log",
            &ConstCounter::new(report.events.emitted),
        )?;
        single(
            &mut encoder,
            "icmp_guard_events_lost",
            "Sampled events the budget allowed but the full ring buffer lost (no reader, or a slow one)",
            &ConstCounter::new(report.events.lost),
        )?;
        let tracked = &sample.tracked;
        single(
            &mut encoder,
            "icmp_guard_recon_untracked",
            "New sources or prefixes sweep detection could not track: both slots of their set held flagged sketches",
            &ConstCounter::new(tracked.recon_untracked),
        )?;
        for (name, help, value) in [
            (
                "icmp_guard_tracked_sources",
                "Sources with a rate-limit bucket now, estimated: buckets created, capped by the capacity",
                tracked.sources,
            ),
            (
                "icmp_guard_tracked_sources_capacity",
                "Rate-limit buckets for sources (LRU sizes of both families)",
                u64::from(tracked.sources_capacity),
            ),
            (
                "icmp_guard_tracked_prefixes",
                "Source prefixes with a rate-limit bucket now, estimated: buckets created, capped by the capacity",
                tracked.prefixes,
            ),
            (
                "icmp_guard_tracked_prefixes_capacity",
                "Rate-limit buckets for source prefixes (LRU sizes of both families)",
                u64::from(tracked.prefixes_capacity),
            ),
            (
                "icmp_guard_blocked_sources",
                "Sources serving a block time now: all their ICMP but PMTUD and ND dropped as blocked",
                sample.blocked,
            ),
            (
                "icmp_guard_recon_flagged_sources",
                "Sources flagged as sweeping many destinations whose block (or, with action log, flag) lasts",
                sample.flagged.0,
            ),
            (
                "icmp_guard_recon_flagged_prefixes",
                "Source prefixes flagged as sweeping many destinations whose block (or flag) lasts",
                sample.flagged.1,
            ),
        ] {
            single(&mut encoder, name, help, &ConstGauge::new(value))?;
        }
        let interfaces: Vec<(Labels, ConstGauge)> = report
            .interfaces
            .iter()
            .map(|interface| {
                let name = interface
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("ifindex {}", interface.ifindex));
                let labels = vec![
                    ("interface", name),
                    ("mode", interface.mode.unwrap_or("none").to_owned()),
                ];
                (labels, ConstGauge::new(i64::from(interface.mode.is_some())))
            })
            .collect();
        let mut judged: Vec<(Labels, ConstCounter)> = Vec::new();
        for interface in &report.interfaces {
            let name = interface
                .name
                .clone()
                .unwrap_or_else(|| format!("ifindex {}", interface.ifindex));
            let counters = &interface.counters;
            for (verdict, value) in [
                ("passed", counters.passed),
                ("dropped", counters.dropped),
                ("would_drop", counters.would_drop),
            ] {
                let labels = vec![("interface", name.clone()), ("verdict", verdict.to_owned())];
                judged.push((labels, ConstCounter::new(value)));
            }
        }
        family(
            &mut encoder,
            "icmp_guard_interface_packets",
            "Packets the guard judged on each interface (ICMP, and packets dropped before a type could be read), by verdict",
            counter,
            &judged,
        )?;
        family(
            &mut encoder,
            "icmp_guard_interface_attached",
            "1 for each interface the guard is attached to and runs on (0: link pinned, program not running there)",
            gauge,
            &interfaces,
        )?;
        let waiting: Vec<(Labels, ConstGauge)> = sample
            .waiting
            .iter()
            .map(|name| (vec![("interface", name.clone())], ConstGauge::new(1)))
            .collect();
        family(
            &mut encoder,
            "icmp_guard_interface_waiting",
            "1 for each interface a `run` service guards that does not exist now: it is attached again when it returns",
            gauge,
            &waiting,
        )?;
        single(
            &mut encoder,
            "icmp_guard_policy_revision",
            "The revision of the live policy: one more with every policy written",
            &ConstGauge::new(i64::from(sample.revision)),
        )?;
        single(
            &mut encoder,
            "icmp_guard_dry_run",
            "1 in dry-run mode (verdicts counted as would_drop, nothing dropped), 0 when enforcing",
            &ConstGauge::new(i64::from(report.mode == "dry-run")),
        )
    }
}

/// What a fleet compares across hosts: the build, and the policy file `run` keeps in force.
#[derive(Debug)]
struct Fleet(Option<Reload>);

impl Collector for Fleet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        family(
            &mut encoder,
            "icmp_guard_build_info",
            "Always 1; the labels say which build of icmp-guard serves these metrics",
            MetricType::Gauge,
            &[(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                    ("commit", COMMIT.trim().to_owned()),
                ],
                ConstGauge::new(1),
            )],
        )?;
        let Some(reload) = &self.0 else {
            return Ok(());
        };
        single(
            &mut encoder,
            "icmp_guard_policy_reload_success",
            "1 when the policy file as last read is in force, 0 when it was refused or could not be read (the last good policy stays in force)",
            &ConstGauge::new(i64::from(reload.success)),
        )?;
        if let Some(seconds) = reload.last_success {
            single(
                &mut encoder,
                "icmp_guard_policy_last_reload_timestamp_seconds",
                "When a version of the policy file was last applied, in seconds since the epoch",
                &ConstGauge::new(seconds),
            )?;
        }
        if let Some(sha256) = &reload.sha256 {
            family(
                &mut encoder,
                "icmp_guard_policy_info",
                "Always 1; sha256 is the SHA-256 of the policy file's bytes in force, the same on every host that runs the same file",
                MetricType::Gauge,
                &[(vec![("sha256", sha256.clone())], ConstGauge::new(1))],
            )?;
        }
        Ok(())
    }
}

/// The exposition of `sample` (and of `reload`, the policy file's state under `run`) in
/// `format`.
pub fn encode(sample: Option<Sample>, reload: Option<Reload>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(sample)));
    registry.register_collector(Box::new(Fleet(reload)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    out
}

/// Reads the pinned maps and encodes them, with `reload`.
pub fn exposition(guard: &Guard, reload: Option<Reload>, format: Format) -> Result<String> {
    Ok(encode(gather(guard)?, reload, format))
}

#[cfg(test)]
mod tests {
    use icmp_guard_common::{
        Counter, DropReason, FAMILY_V4, FAMILY_V6, SLOT_PASSED, config, drop_slot, global,
        would_drop_slot,
    };

    use super::*;
    use crate::observe::stats::{Snapshot, TypeCounters};

    fn sample() -> Sample {
        let mut echo = TypeCounters {
            family: FAMILY_V4,
            icmp_type: 8,
            ..Default::default()
        };
        echo.slots[SLOT_PASSED as usize] = Counter {
            packets: 5,
            bytes: 490,
        };
        echo.slots[drop_slot(DropReason::RateLimit) as usize] = Counter {
            packets: 3,
            bytes: 294,
        };
        let mut unassigned = TypeCounters {
            family: FAMILY_V6,
            icmp_type: 250,
            ..Default::default()
        };
        unassigned.slots[would_drop_slot(DropReason::Policy) as usize] = Counter {
            packets: 2,
            bytes: 100,
        };
        let mut snapshot = Snapshot {
            mode: config::MODE_ENFORCE,
            icmp: vec![echo, unassigned],
            global: vec![Counter::default(); global::ENTRIES as usize],
            interfaces: Vec::new(),
        };
        snapshot.global[global::NON_ICMP_PASSED as usize].packets = 11;
        snapshot.global[global::MALFORMED_DROPPED as usize].packets = 1;
        let mut report = stats::report(&snapshot, &[], &[]);
        // Built by hand: LinkStatus belongs to the loader and grows fields.
        report.interfaces.push(stats::InterfaceReport {
            name: Some("eth0".to_owned()),
            ifindex: 2,
            mode: Some("native"),
            multiprog: false,
            counters: stats::InterfaceTotals::default(),
        });
        Sample {
            report,
            tracked: Tracked {
                estimated: true,
                sources: 4,
                sources_capacity: 65_536,
                prefixes: 1,
                prefixes_capacity: 16_384,
                recon_untracked: 2,
            },
            blocked: 3,
            revision: 7,
            waiting: vec!["eth1".to_owned()],
            flagged: (1, 0),
        }
    }

    #[test]
    fn prometheus_text_has_every_series_with_matching_counts() {
        let text = encode(Some(sample()), None, Format::Prometheus);
        for line in [
            "# TYPE icmp_guard_packets_total counter",
            "icmp_guard_packets_total{family=\"v4\",type=\"8\",name=\"echo-request\",verdict=\"passed\"} 5",
            "icmp_guard_packets_total{family=\"v4\",type=\"8\",name=\"echo-request\",verdict=\"dropped\"} 3",
            "icmp_guard_packets_total{family=\"v4\",type=\"8\",name=\"echo-request\",verdict=\"would_drop\"} 0",
            "icmp_guard_drops_total{family=\"v4\",type=\"8\",name=\"echo-request\",reason=\"rate_limit\"} 3",
            "icmp_guard_would_drops_total{family=\"v6\",type=\"250\",name=\"unassigned\",reason=\"policy\"} 2",
            "icmp_guard_bytes_total{family=\"v4\",type=\"8\",name=\"echo-request\"} 784",
            "icmp_guard_unclassified_drops_total{reason=\"malformed\"} 1",
            "icmp_guard_non_icmp_passed_total 11",
            "icmp_guard_tracked_sources 4",
            "icmp_guard_tracked_prefixes 1",
            "icmp_guard_recon_untracked_total 2",
            "icmp_guard_blocked_sources 3",
            "icmp_guard_interface_attached{interface=\"eth0\",mode=\"native\"} 1",
            "icmp_guard_policy_revision 7",
            "icmp_guard_interface_waiting{interface=\"eth1\"} 1",
            "icmp_guard_dry_run 0",
            "icmp_guard_up 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn openmetrics_ends_with_eof_and_names_families_without_total() {
        let text = encode(Some(sample()), None, Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE icmp_guard_packets counter\n"),
            "{text}"
        );
        assert!(text.contains("icmp_guard_packets_total{"), "{text}");
    }

    #[test]
    fn output_order_is_stable() {
        assert_eq!(
            encode(Some(sample()), None, Format::Prometheus),
            encode(Some(sample()), None, Format::Prometheus)
        );
    }

    #[test]
    fn not_attached_is_up_zero_and_the_build() {
        let text = encode(None, None, Format::Prometheus);
        assert_eq!(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            [
                "icmp_guard_up 0".to_owned(),
                format!(
                    "icmp_guard_build_info{{version=\"{}\",commit=\"{}\"}} 1",
                    env!("CARGO_PKG_VERSION"),
                    COMMIT.trim()
                )
            ]
        );
    }

    #[test]
    fn the_reload_state_is_exposed_for_the_fleet() {
        let reload = Reload {
            success: false,
            last_success: Some(1_796_000_000.5),
            sha256: Some("ab".repeat(32)),
        };
        let text = encode(Some(sample()), Some(reload), Format::Prometheus);
        for line in [
            "# TYPE icmp_guard_policy_reload_success gauge".to_owned(),
            "icmp_guard_policy_reload_success 0".to_owned(),
            "icmp_guard_policy_last_reload_timestamp_seconds 1796000000.5".to_owned(),
            // The revision comes from the kernel (the sample), not from the file's reloads.
            "icmp_guard_policy_revision 7".to_owned(),
            format!("icmp_guard_policy_info{{sha256=\"{}\"}} 1", "ab".repeat(32)),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        // Before the first successful reload there is no timestamp and no policy in force.
        let text = encode(None, Some(Reload::default()), Format::OpenMetrics);
        assert!(
            text.contains("icmp_guard_policy_reload_success 0\n"),
            "{text}"
        );
        assert!(
            !text.contains("icmp_guard_policy_revision"),
            "not attached: {text}"
        );
        assert!(!text.contains("timestamp_seconds"), "{text}");
        assert!(!text.contains("icmp_guard_policy_info"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// The series names in `text`, counters with their `_total`, as the exposition has them.
    fn served_names(text: &str) -> Vec<String> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Every `icmp_guard_...` name in `text`.
    fn names_used(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("icmp_guard_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.push(name);
        }
        names
    }

    #[test]
    fn the_dashboard_and_alerts_use_only_series_the_exporter_serves() {
        let reload = Reload {
            success: true,
            last_success: Some(1.0),
            sha256: Some("00".repeat(32)),
        };
        let served = served_names(&encode(Some(sample()), Some(reload), Format::Prometheus));
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let mut checked = 0;
        for file in [
            "monitoring/alerts.yaml",
            "monitoring/grafana-dashboard.json",
            "monitoring/tests/alerts_test.yaml",
        ] {
            let text = std::fs::read_to_string(deploy.join(file)).expect(file);
            for name in names_used(&text) {
                assert!(
                    served.contains(&name),
                    "deploy/{file} uses {name}, which the exporter does not serve: {served:?}"
                );
                checked += 1;
            }
        }
        assert!(
            checked > 50,
            "only {checked} names found: is the scan broken?"
        );
        // And the scan itself can fail: a name the exporter never had.
        assert!(
            !served.contains(&"icmp_guard_drops".to_owned()),
            "counters end in _total"
        );
    }
}
