//! `top`: the heaviest ICMP sources, estimated from the kernel's sampled events.
//!
//! The kernel counts every packet but reports individual packets only as sampled events
//! under a per-CPU budget ([`icmp_guard_common::events`]). Over an interval, each CPU's
//! classified ICMP packets (from the per-CPU counters) are shared out among the sources of
//! that CPU's sampled events in proportion: a source with 30 of a CPU's 100 events is
//! credited with 30% of that CPU's packets. Budgets are per CPU, so scaling per CPU keeps a
//! flood steered to one CPU (by RSS) from being under-counted against traffic on another.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use icmp_guard_common::{
    Counter, DropReason, SLOTS_PER_TYPE, counter_index,
    events::{ACTION_DROPPED, ACTION_WOULD_DROP, IcmpEvent},
    global, icmp,
};
use serde::Serialize;

use super::events::{drop_reason, source_address};
use crate::bpf::{GuardMaps, Result};

/// Per-CPU totals at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuTotals {
    /// Classified ICMP packets per CPU (the population events are sampled from).
    pub icmp_packets: Vec<u64>,
    pub events_emitted: u64,
    pub events_lost: u64,
}

impl CpuTotals {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            icmp_packets: self
                .icmp_packets
                .iter()
                .enumerate()
                .map(|(cpu, now)| {
                    now.saturating_sub(earlier.icmp_packets.get(cpu).copied().unwrap_or(0))
                })
                .collect(),
            events_emitted: self.events_emitted.saturating_sub(earlier.events_emitted),
            events_lost: self.events_lost.saturating_sub(earlier.events_lost),
        }
    }
}

/// Reads the per-CPU packet totals and the event counters.
pub fn read_cpu_totals(maps: &GuardMaps) -> Result<CpuTotals> {
    let mut totals = CpuTotals::default();
    for family in 0..icmp_guard_common::NUM_FAMILIES as u8 {
        for icmp_type in 0..=255u8 {
            for slot in 0..SLOTS_PER_TYPE {
                let per_cpu = maps.icmp_counter_per_cpu(counter_index(family, icmp_type, slot))?;
                if totals.icmp_packets.len() < per_cpu.len() {
                    totals.icmp_packets.resize(per_cpu.len(), 0);
                }
                for (cpu, counter) in per_cpu.iter().enumerate() {
                    totals.icmp_packets[cpu] += counter.packets;
                }
            }
        }
    }
    let sum = |slot: u32| -> Result<u64> {
        let per_cpu = maps.global_counter_per_cpu(slot)?;
        Ok(per_cpu
            .iter()
            .map(|counter: &Counter| counter.packets)
            .sum())
    };
    totals.events_emitted = sum(global::EVENTS_EMITTED)?;
    totals.events_lost = sum(global::EVENTS_LOST)?;
    Ok(totals)
}

/// One source in the `top --json` document.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SourceReport {
    pub address: IpAddr,
    pub family: &'static str,
    /// Events of this source in the interval.
    pub sampled_events: u64,
    /// Estimated ICMP packets per second from this source.
    pub packets_per_sec: f64,
    /// Share of the interval's classified ICMP packets, 0 to 1.
    pub share: f64,
    /// Estimated packets per second dropped.
    pub dropped_per_sec: f64,
    /// Estimated packets per second that dry-run mode let through but would have dropped.
    pub would_drop_per_sec: f64,
    /// The reason of most of its sampled drops (and would-drops), `null` without any.
    pub top_drop_reason: Option<&'static str>,
    /// The ICMP type of most of its sampled events.
    pub top_type: u8,
    /// Its name, `null` when unassigned.
    pub top_type_name: Option<&'static str>,
    /// The source serves a block time now (`policy set ... --block`); set by the caller,
    /// which reads the blocked sources.
    pub blocked: bool,
    /// When sweep detection flagged it (or its prefix) and the flag lasts: the estimated
    /// distinct destinations it had probed then; `null` otherwise.
    pub sweep_destinations: Option<u32>,
}

/// The `top --json` document.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TopReport {
    /// Always true: per-source figures are estimates from sampled events.
    pub estimated: bool,
    pub interval_seconds: f64,
    /// Classified ICMP packets in the interval, from the counters (exact).
    pub icmp_packets: u64,
    pub icmp_packets_per_sec: f64,
    /// Events received in the interval, the sample the estimates rest on.
    pub sampled_events: u64,
    /// Events the ring buffer had no room for in the interval.
    pub events_lost: u64,
    /// The kernel budget: events per second per CPU, 0 when events are off.
    pub events_per_sec_per_cpu: u32,
    /// Packets on CPUs that sent no event in the interval, attributed to no source.
    pub unattributed_packets: u64,
    /// Sources, heaviest first, at most `--limit`.
    pub sources: Vec<SourceReport>,
    /// Sources seen but left out by `--limit`.
    pub more_sources: usize,
    /// Sources and prefixes sweep detection flagged whose flag lasts, the most recent
    /// first.
    pub sweeping: Vec<super::recon::FlaggedSource>,
}

impl TopReport {
    /// Marks the sources of `flagged` (active entries; a source, or a prefix holding it)
    /// and lists the flagged entries.
    pub fn mark_sweeping(&mut self, flagged: &[super::recon::FlaggedSource]) {
        let active: Vec<&super::recon::FlaggedSource> =
            flagged.iter().filter(|entry| entry.active()).collect();
        for source in &mut self.sources {
            source.sweep_destinations = active
                .iter()
                .filter(|entry| covers(entry, source.address))
                .map(|entry| entry.destinations)
                .max();
        }
        self.sweeping = active.into_iter().cloned().collect();
    }
}

/// True when `entry`'s prefix holds `address`.
fn covers(entry: &super::recon::FlaggedSource, address: IpAddr) -> bool {
    let len = u32::from(entry.prefix_len);
    match (entry.address, address) {
        (IpAddr::V4(net), IpAddr::V4(host)) => {
            let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
            u32::from(net) & mask == u32::from(host) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(host)) => {
            let mask = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
            u128::from(net) & mask == u128::from(host) & mask
        }
        _ => false,
    }
}

#[derive(Default)]
struct Tally {
    family: u8,
    events: u64,
    packets: f64,
    dropped: f64,
    would_drop: f64,
    reasons: [f64; 16],
    types: HashMap<u8, f64>,
}

/// Estimates per-source rates from the interval's `events` and the per-CPU packet counts
/// of the same interval (`delta`); `limit` caps the sources listed.
pub fn estimate(
    events: &[IcmpEvent],
    delta: &CpuTotals,
    elapsed: Duration,
    events_per_sec: u32,
    limit: usize,
) -> TopReport {
    let cpus = delta.icmp_packets.len();
    let mut per_cpu_events = vec![0u64; cpus];
    for event in events {
        if let Some(count) = per_cpu_events.get_mut(event.cpu as usize) {
            *count += 1;
        }
    }
    // Each event stands for this many packets of its CPU.
    let weight: Vec<f64> = (0..cpus)
        .map(|cpu| match per_cpu_events[cpu] {
            0 => 0.0,
            sampled => delta.icmp_packets[cpu] as f64 / sampled as f64,
        })
        .collect();
    let unattributed = (0..cpus)
        .filter(|cpu| per_cpu_events[*cpu] == 0)
        .map(|cpu| delta.icmp_packets[cpu])
        .sum();
    let mut tallies: HashMap<IpAddr, Tally> = HashMap::new();
    for event in events {
        let Some(weight) = weight.get(event.cpu as usize).copied() else {
            continue;
        };
        let tally = tallies.entry(source_address(event)).or_default();
        tally.family = event.family;
        tally.events += 1;
        tally.packets += weight;
        *tally.types.entry(event.icmp_type).or_default() += weight;
        if let Some(reason) = drop_reason(event) {
            tally.reasons[reason as usize] += weight;
            if event.action == ACTION_DROPPED {
                tally.dropped += weight;
            } else if event.action == ACTION_WOULD_DROP {
                tally.would_drop += weight;
            }
        }
    }
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let icmp_packets: u64 = delta.icmp_packets.iter().sum();
    let mut sources: Vec<SourceReport> = tallies
        .into_iter()
        .map(|(address, tally)| {
            let top_drop_reason = DropReason::ALL
                .into_iter()
                .filter(|reason| tally.reasons[*reason as usize] > 0.0)
                .max_by(|a, b| tally.reasons[*a as usize].total_cmp(&tally.reasons[*b as usize]))
                .map(DropReason::name);
            let top_type = tally
                .types
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
                .map_or(0, |(icmp_type, _)| *icmp_type);
            SourceReport {
                address,
                family: icmp::family_label(tally.family),
                sampled_events: tally.events,
                packets_per_sec: round(tally.packets / seconds),
                share: if icmp_packets == 0 {
                    0.0
                } else {
                    round_share(tally.packets / icmp_packets as f64)
                },
                dropped_per_sec: round(tally.dropped / seconds),
                would_drop_per_sec: round(tally.would_drop / seconds),
                top_drop_reason,
                top_type,
                top_type_name: icmp::type_name(tally.family, top_type),
                blocked: false,
                sweep_destinations: None,
            }
        })
        .collect();
    sources.sort_by(|a, b| {
        b.packets_per_sec
            .total_cmp(&a.packets_per_sec)
            .then(b.sampled_events.cmp(&a.sampled_events))
            .then(a.address.cmp(&b.address))
    });
    let more_sources = sources.len().saturating_sub(limit);
    sources.truncate(limit);
    TopReport {
        estimated: true,
        interval_seconds: round(elapsed.as_secs_f64()),
        icmp_packets,
        icmp_packets_per_sec: round(icmp_packets as f64 / seconds),
        sampled_events: events.len() as u64,
        events_lost: delta.events_lost,
        events_per_sec_per_cpu: events_per_sec,
        unattributed_packets: unattributed,
        sources,
        more_sources,
        sweeping: Vec::new(),
    }
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn round_share(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use icmp_guard_common::{FAMILY_V4, events::ACTION_PASSED};

    use super::*;

    fn event(last_octet: u8, cpu: u32, action: u8, reason: DropReason) -> IcmpEvent {
        let mut source = [0; 16];
        source[..4].copy_from_slice(&[192, 0, 2, last_octet]);
        IcmpEvent {
            source,
            cpu,
            family: FAMILY_V4,
            icmp_type: 8,
            action,
            reason: if action == ACTION_PASSED {
                0
            } else {
                reason as u8
            },
            ..IcmpEvent::default()
        }
    }

    #[test]
    fn each_cpu_shares_its_own_packets_out() {
        // CPU 0: a flood, budget-limited to 100 events for 10,000 packets, 90 of them
        // rate-limited. CPU 1: a light pinger, every packet sampled.
        let mut events = Vec::new();
        for i in 0..100 {
            let action = if i < 90 {
                ACTION_DROPPED
            } else {
                ACTION_PASSED
            };
            events.push(event(2, 0, action, DropReason::RateLimit));
        }
        for _ in 0..4 {
            events.push(event(3, 1, ACTION_PASSED, DropReason::RateLimit));
        }
        let delta = CpuTotals {
            icmp_packets: vec![10_000, 4],
            events_emitted: 104,
            events_lost: 0,
        };
        let report = estimate(&events, &delta, Duration::from_secs(2), 1000, 10);
        assert_eq!(report.icmp_packets, 10_004);
        assert_eq!(report.sampled_events, 104);
        let flood = &report.sources[0];
        assert_eq!(flood.address.to_string(), "192.0.2.2");
        assert_eq!(flood.packets_per_sec, 5000.0);
        assert_eq!(flood.dropped_per_sec, 4500.0);
        assert_eq!(flood.top_drop_reason, Some("rate_limit"));
        assert_eq!(flood.top_type_name, Some("echo-request"));
        let pinger = &report.sources[1];
        assert_eq!(pinger.address.to_string(), "192.0.2.3");
        assert_eq!(pinger.packets_per_sec, 2.0);
        assert_eq!(pinger.top_drop_reason, None);
    }

    #[test]
    fn cpus_without_events_are_left_unattributed_and_limit_cuts_the_list() {
        let events = [
            event(2, 0, ACTION_PASSED, DropReason::Policy),
            event(3, 0, ACTION_WOULD_DROP, DropReason::Policy),
            event(4, 0, ACTION_PASSED, DropReason::Policy),
        ];
        let delta = CpuTotals {
            icmp_packets: vec![3, 50],
            ..CpuTotals::default()
        };
        let report = estimate(&events, &delta, Duration::from_secs(1), 10, 2);
        assert_eq!(report.unattributed_packets, 50);
        assert_eq!(report.sources.len(), 2);
        assert_eq!(report.more_sources, 1);
        let would = report
            .sources
            .iter()
            .find(|s| s.address.to_string() == "192.0.2.3")
            .expect("the would-drop source ties and sorts by address");
        assert_eq!(would.would_drop_per_sec, 1.0);
        assert_eq!(would.dropped_per_sec, 0.0);
    }

    #[test]
    fn the_header_says_the_figures_are_estimates() {
        let report = estimate(&[], &CpuTotals::default(), Duration::from_secs(1), 0, 10);
        let json = serde_json::to_value(&report).expect("JSON");
        assert_eq!(json["estimated"], true);
        assert!(json["sources"].as_array().expect("array").is_empty());
    }
}
