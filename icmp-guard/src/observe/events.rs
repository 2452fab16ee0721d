//! Reads the sampled events of the XDP program from the pinned `EVENTS` ring buffer, and
//! decides which dropped ones the rate-limited drop log of `run` shows.
//!
//! The ring buffer has a single consumer position, so one process reads it at a time:
//! readers hold [`PinDir::lock_events`](crate::bpf::pins::PinDir::lock_events) while they
//! drain (`Guard::events` takes it). `run` takes it for each drain only and skips a drain
//! when `top` holds it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use icmp_guard_common::{
    DropReason, FAMILY_V4,
    events::{ACTION_DROPPED, ACTION_WOULD_DROP, IcmpEvent},
};

use crate::bpf::{Error, PinDir, Result, maps};

/// The pinned ring buffer of sampled events.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    /// Opens the pinned ring buffer. The caller holds the events lock while it reads.
    pub fn open(pins: &PinDir) -> Result<Self> {
        Ok(Self {
            ring: maps::open_events(pins)?,
        })
    }

    /// Wraps a ring buffer taken from a loaded object (tests, with private maps).
    pub fn from_ring(ring: RingBuf<MapData>) -> Self {
        Self { ring }
    }

    /// Hands every event in the buffer now to `each`; returns how many records were read
    /// (records that are not one event long are skipped, and counted).
    pub fn drain(&mut self, mut each: impl FnMut(IcmpEvent)) -> usize {
        let mut records = 0;
        while let Some(item) = self.ring.next() {
            records += 1;
            if let Some(event) = IcmpEvent::from_bytes(&item) {
                each(event);
            }
        }
        records
    }

    /// Waits up to `timeout` for the kernel to signal new events (poll(2) on the ring
    /// buffer's fd). Returns early on a signal; a spurious wake-up only costs a drain.
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        let mut fd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one pollfd we own, for the duration of the call.
        if unsafe { libc::poll(&mut fd, 1, millis) } < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io("waiting for events", err));
            }
        }
        Ok(())
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `IcmpEvent::timestamp_ns` (and of block
/// times and sweep flags).
pub use crate::bpf::maps::monotonic_ns;

/// The source address of an event.
pub fn source_address(event: &IcmpEvent) -> IpAddr {
    if event.family == FAMILY_V4 {
        let [a, b, c, d, ..] = event.source;
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    } else {
        IpAddr::V6(Ipv6Addr::from(event.source))
    }
}

/// The drop reason of an event, `None` when it passed.
pub fn drop_reason(event: &IcmpEvent) -> Option<DropReason> {
    if event.action != ACTION_DROPPED && event.action != ACTION_WOULD_DROP {
        return None;
    }
    DropReason::ALL
        .into_iter()
        .find(|reason| *reason as u8 == event.reason)
}

/// What the drop log does with one more dropped event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogDecision {
    Print,
    Suppress,
}

/// Rate limit of the `run` drop log: at most `lines_per_sec` lines per second; the rest
/// are counted and summed up once the second is over.
#[derive(Debug)]
pub struct DropLog {
    lines_per_sec: u32,
    window_start: Option<Instant>,
    printed: u32,
    suppressed: u64,
}

impl DropLog {
    pub fn new(lines_per_sec: u32) -> Self {
        Self {
            lines_per_sec,
            window_start: None,
            printed: 0,
            suppressed: 0,
        }
    }

    /// Ends the current second when it is over: returns how many events it suppressed,
    /// when any.
    pub fn roll(&mut self, now: Instant) -> Option<u64> {
        let start = self.window_start?;
        if now.duration_since(start) < Duration::from_secs(1) {
            return None;
        }
        self.window_start = None;
        self.printed = 0;
        let suppressed = std::mem::take(&mut self.suppressed);
        (suppressed > 0).then_some(suppressed)
    }

    /// Decides about one dropped event at `now`; call [`Self::roll`] first.
    pub fn offer(&mut self, now: Instant) -> LogDecision {
        self.window_start.get_or_insert(now);
        if self.printed < self.lines_per_sec {
            self.printed += 1;
            LogDecision::Print
        } else {
            self.suppressed += 1;
            LogDecision::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use icmp_guard_common::{FAMILY_V6, events::ACTION_PASSED};

    use super::*;

    fn event(family: u8, source: [u8; 16], action: u8, reason: u8) -> IcmpEvent {
        IcmpEvent {
            source,
            family,
            icmp_type: 8,
            action,
            reason,
            packet_len: 98,
            ifindex: 7,
            ..IcmpEvent::default()
        }
    }

    #[test]
    fn addresses_and_reasons_are_decoded() {
        let mut v4 = [0; 16];
        v4[..4].copy_from_slice(&[192, 0, 2, 9]);
        let dropped = event(FAMILY_V4, v4, ACTION_DROPPED, DropReason::RateLimit as u8);
        assert_eq!(source_address(&dropped).to_string(), "192.0.2.9");
        assert_eq!(drop_reason(&dropped), Some(DropReason::RateLimit));
        let v6: [u8; 16] = "2001:db8::2".parse::<Ipv6Addr>().expect("v6").octets();
        let passed = event(FAMILY_V6, v6, ACTION_PASSED, 0);
        assert_eq!(source_address(&passed).to_string(), "2001:db8::2");
        assert_eq!(drop_reason(&passed), None);
    }

    #[test]
    fn the_drop_log_prints_a_few_lines_a_second_and_counts_the_rest() {
        let mut log = DropLog::new(3);
        let start = Instant::now();
        let decisions: Vec<LogDecision> = (0..10).map(|_| log.offer(start)).collect();
        assert_eq!(
            decisions
                .iter()
                .filter(|d| **d == LogDecision::Print)
                .count(),
            3
        );
        assert_eq!(log.roll(start + Duration::from_millis(500)), None);
        assert_eq!(log.roll(start + Duration::from_secs(1)), Some(7));
        // A new second prints again, and a quiet one has nothing to say.
        assert_eq!(
            log.offer(start + Duration::from_secs(2)),
            LogDecision::Print
        );
        assert_eq!(log.roll(start + Duration::from_secs(4)), None);
    }

    #[test]
    fn a_zero_line_log_suppresses_everything() {
        let mut log = DropLog::new(0);
        let now = Instant::now();
        assert_eq!(log.offer(now), LogDecision::Suppress);
        assert_eq!(log.roll(now + Duration::from_secs(1)), Some(1));
    }
}
