//! Sources flagged by sweep detection (`RECON_FLAGGED`): data for `top`, the metrics and
//! the `run` log.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use icmp_guard_common::{
    FAMILY_V4,
    recon::{Flagged, FlaggedKey, action, estimate},
};
use serde::Serialize;

/// One flagged source or source prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlaggedSource {
    /// The source, or the prefix's first address.
    pub address: IpAddr,
    /// 32 or 128 for a source, else the prefix length.
    pub prefix_len: u8,
    /// The estimated distinct destinations it had probed when it was flagged.
    pub destinations: u32,
    /// `drop` (its probes are blocked) or `log`.
    pub action: &'static str,
    /// When it was flagged, CLOCK_MONOTONIC ns.
    #[serde(skip)]
    pub flagged_at_ns: u64,
    /// How long its block (or, with `log`, its flag) lasts.
    #[serde(skip)]
    pub block: Duration,
    /// Seconds of its block left; 0 once it ended.
    pub remaining_seconds: u64,
}

impl FlaggedSource {
    /// True while its block (or flag) lasts.
    pub fn active(&self) -> bool {
        self.remaining_seconds > 0
    }

    /// True for a single source rather than a prefix.
    pub fn is_source(&self) -> bool {
        self.prefix_len == if self.address.is_ipv4() { 32 } else { 128 }
    }

    /// `198.51.100.66` or `198.51.100.0/24`.
    pub fn name(&self) -> String {
        if self.is_source() {
            self.address.to_string()
        } else {
            format!("{}/{}", self.address, self.prefix_len)
        }
    }
}

/// The entries of `RECON_FLAGGED` at `now_ns` (CLOCK_MONOTONIC), the most recent first.
pub fn flagged(entries: &[(FlaggedKey, Flagged)], now_ns: u64) -> Vec<FlaggedSource> {
    let mut sources: Vec<FlaggedSource> = entries
        .iter()
        .map(|(key, record)| {
            let address = if key.family == FAMILY_V4 {
                IpAddr::V4(Ipv4Addr::new(
                    key.addr[0],
                    key.addr[1],
                    key.addr[2],
                    key.addr[3],
                ))
            } else {
                IpAddr::V6(Ipv6Addr::from(key.addr))
            };
            let ends = record.flagged_at.saturating_add(record.block_ns);
            FlaggedSource {
                address,
                prefix_len: key.len,
                destinations: estimate(record.bits),
                action: if record.action == action::LOG {
                    "log"
                } else {
                    "drop"
                },
                flagged_at_ns: record.flagged_at,
                block: Duration::from_nanos(record.block_ns),
                remaining_seconds: ends.saturating_sub(now_ns).div_ceil(1_000_000_000),
            }
        })
        .collect();
    sources.sort_by_key(|source| std::cmp::Reverse(source.flagged_at_ns));
    sources
}

/// The `run` log line of a newly flagged source, with the policy's window.
pub fn log_line(source: &FlaggedSource, window: Duration) -> String {
    let what = if source.is_source() {
        source.name()
    } else {
        format!("sources in {}", source.name())
    };
    let window = window.as_secs();
    let block = source.block.as_secs();
    match source.action {
        "log" => format!(
            "{what} swept ≥ {} addresses in {window} s (recon action log: not blocked)",
            source.destinations
        ),
        _ => format!(
            "{what} swept ≥ {} addresses in {window} s; its echo requests are blocked for {block} s",
            source.destinations
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(addr: [u8; 4], len: u8, bits: u32, at: u64, log: bool) -> (FlaggedKey, Flagged) {
        let mut key = FlaggedKey {
            family: FAMILY_V4,
            len,
            ..FlaggedKey::default()
        };
        key.addr[..4].copy_from_slice(&addr);
        (
            key,
            Flagged {
                flagged_at: at,
                block_ns: 60_000_000_000,
                bits,
                action: if log { action::LOG } else { action::DROP },
                _padding: [0; 3],
            },
        )
    }

    #[test]
    fn the_log_line_names_the_source_its_estimate_and_its_block() {
        let entries = [
            entry([198, 51, 100, 66], 32, 40, 1_000_000_000, false),
            entry([203, 0, 113, 0], 24, 120, 2_000_000_000, true),
        ];
        let sources = flagged(&entries, 31_000_000_000);
        assert_eq!(sources[0].name(), "203.0.113.0/24");
        assert!(sources[0].active());
        let source = &sources[1];
        assert_eq!(source.destinations, 41);
        assert_eq!(source.remaining_seconds, 30);
        assert_eq!(
            log_line(source, Duration::from_secs(10)),
            "198.51.100.66 swept ≥ 41 addresses in 10 s; its echo requests are blocked for 60 s"
        );
        assert!(log_line(&sources[0], Duration::from_secs(10)).contains("not blocked"));
        let later = flagged(&entries, 120_000_000_000);
        assert!(later.iter().all(|source| !source.active()));
    }
}
