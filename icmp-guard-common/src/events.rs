//! Sampled per-packet events: what the XDP program tells `top` and the `run` drop log about
//! individual ICMP packets, under a kernel-side budget so that a flood never becomes a
//! flood of events.
//!
//! Every classified ICMP packet (passed, dropped or would-drop) may become one
//! [`IcmpEvent`] in the `EVENTS` ring buffer, but only while its CPU's budget allows:
//! each CPU gets [`events_per_window`] events per [`WINDOW_NS`] window, that is about
//! `config::EVENTS_PER_SEC` events per second per CPU. The budget is checked before the
//! ring buffer is touched, so a packet over budget costs one per-CPU map lookup.

use crate::{SLOT_PASSED, SLOT_WOULD_DROP_BASE, SLOTS_PER_TYPE};

/// Size of the `EVENTS` ring buffer: a power of two and a multiple of the page size.
pub const RING_BYTES: u32 = 256 * 1024;

/// Length of one budget window.
pub const WINDOW_NS: u64 = 100_000_000;
/// Windows per second.
pub const WINDOWS_PER_SEC: u32 = 10;

/// [`IcmpEvent::action`]: the packet passed.
pub const ACTION_PASSED: u8 = 0;
/// The packet was dropped; [`IcmpEvent::reason`] says why.
pub const ACTION_DROPPED: u8 = 1;
/// Dry-run mode: the packet passed but would have been dropped for [`IcmpEvent::reason`].
pub const ACTION_WOULD_DROP: u8 = 2;

/// One sampled ICMP packet, as the XDP program writes it into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, comparable with userspace's.
    pub timestamp_ns: u64,
    /// Source address; IPv4 in the first 4 bytes, the rest zero.
    pub source: [u8; 16],
    /// Interface the packet arrived on.
    pub ifindex: u32,
    /// Frame length in bytes.
    pub packet_len: u32,
    /// CPU that classified the packet: budgets are per CPU, and so are the estimates.
    pub cpu: u32,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    pub icmp_type: u8,
    pub code: u8,
    /// [`ACTION_PASSED`], [`ACTION_DROPPED`] or [`ACTION_WOULD_DROP`].
    pub action: u8,
    /// A [`crate::DropReason`] discriminant; 0 when the packet passed.
    pub reason: u8,
    pub _padding: [u8; 7],
}

/// Bytes of one event.
pub const EVENT_BYTES: usize = size_of::<IcmpEvent>();

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integer fields and byte arrays with explicit padding, every bit
// pattern valid.
unsafe impl aya::Pod for IcmpEvent {}

impl IcmpEvent {
    /// Reads an event from ring-buffer bytes; `None` when they are not one event long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != EVENT_BYTES {
            return None;
        }
        // SAFETY: exactly EVENT_BYTES bytes, and every bit pattern is a valid IcmpEvent;
        // read_unaligned because ring-buffer records are only 8-byte aligned by contract.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// Per-CPU state of the event budget.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    /// When the current window began (`bpf_ktime_get_ns`).
    pub window_start_ns: u64,
    /// Events emitted in the current window.
    pub used: u32,
    pub _padding: u32,
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers only, explicit padding.
unsafe impl aya::Pod for EventBudget {}

/// Events one CPU may emit per window for a per-second setting: a tenth, rounded up, so
/// that any setting above zero allows at least one event per window.
#[inline(always)]
pub const fn events_per_window(per_sec: u32) -> u32 {
    per_sec.div_ceil(WINDOWS_PER_SEC)
}

/// The most events one CPU can emit in `elapsed_ns`: every window the interval touches,
/// full.
pub const fn max_events(per_sec: u32, elapsed_ns: u64) -> u64 {
    let windows = elapsed_ns / WINDOW_NS + 2;
    windows * events_per_window(per_sec) as u64
}

/// Takes one event from this CPU's budget at `now`; false when the window's allowance is
/// spent or events are off (`per_sec == 0`). A window starts with the first packet after
/// the previous one ended.
#[inline(always)]
pub fn take_event(budget: &mut EventBudget, now: u64, per_sec: u32) -> bool {
    if per_sec == 0 {
        return false;
    }
    if now.wrapping_sub(budget.window_start_ns) >= WINDOW_NS {
        budget.window_start_ns = now;
        budget.used = 0;
    }
    if budget.used >= events_per_window(per_sec) {
        return false;
    }
    budget.used += 1;
    true
}

/// The event action and reason of a counter slot (see [`crate::apply_mode`]).
#[inline(always)]
pub const fn action_of_slot(slot: u32) -> (u8, u8) {
    let slot = slot & (SLOTS_PER_TYPE - 1);
    if slot == SLOT_PASSED {
        (ACTION_PASSED, 0)
    } else if slot >= SLOT_WOULD_DROP_BASE {
        (ACTION_WOULD_DROP, (slot - SLOT_WOULD_DROP_BASE) as u8)
    } else {
        (ACTION_DROPPED, slot as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DropReason, Verdict, apply_mode, config};

    #[test]
    fn the_event_has_no_implicit_padding() {
        assert_eq!(EVENT_BYTES, 48);
        assert_eq!(EVENT_BYTES % 8, 0);
        assert_eq!(size_of::<EventBudget>(), 16);
    }

    #[test]
    fn a_window_allows_a_tenth_and_then_refuses() {
        let mut budget = EventBudget::default();
        let start = 5 * WINDOW_NS;
        let allowed = (0..1000)
            .filter(|i| take_event(&mut budget, start + i, 1000))
            .count();
        assert_eq!(allowed, 100);
        // The next window starts afresh.
        assert!(take_event(&mut budget, start + WINDOW_NS, 1000));
        assert_eq!(budget.used, 1);
    }

    #[test]
    fn zero_disables_and_small_settings_still_sample() {
        let mut budget = EventBudget::default();
        assert!(!take_event(&mut budget, WINDOW_NS, 0));
        assert_eq!(events_per_window(1), 1);
        assert_eq!(events_per_window(15), 2);
        assert!(take_event(&mut budget, WINDOW_NS, 1));
        assert!(!take_event(&mut budget, WINDOW_NS + 1, 1));
    }

    #[test]
    fn a_clock_that_went_backwards_starts_a_new_window() {
        let mut budget = EventBudget {
            window_start_ns: u64::MAX - 5,
            used: 100,
            _padding: 0,
        };
        assert!(take_event(&mut budget, 10 * WINDOW_NS, 1000));
    }

    #[test]
    fn max_events_covers_every_window_touched() {
        // 250 ms can touch 4 windows when it starts late in one.
        assert_eq!(max_events(1000, 250_000_000), 400);
        assert_eq!(max_events(0, 250_000_000), 0);
    }

    #[test]
    fn slots_map_to_actions_and_reasons() {
        for reason in DropReason::ALL {
            let verdict = Verdict::Drop(reason);
            let dropped = apply_mode(verdict, config::MODE_ENFORCE).slot;
            let would = apply_mode(verdict, config::MODE_DRY_RUN).slot;
            assert_eq!(action_of_slot(dropped), (ACTION_DROPPED, reason as u8));
            assert_eq!(action_of_slot(would), (ACTION_WOULD_DROP, reason as u8));
        }
        assert_eq!(action_of_slot(SLOT_PASSED), (ACTION_PASSED, 0));
    }

    #[test]
    fn events_round_trip_through_bytes() {
        let event = IcmpEvent {
            timestamp_ns: 7,
            source: [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ifindex: 3,
            packet_len: 98,
            cpu: 1,
            family: 0,
            icmp_type: 8,
            code: 0,
            action: ACTION_DROPPED,
            reason: 2,
            _padding: [0; 7],
        };
        // SAFETY: reading the bytes of a plain-data value we own.
        let bytes =
            unsafe { core::slice::from_raw_parts((&raw const event).cast::<u8>(), EVENT_BYTES) };
        assert_eq!(IcmpEvent::from_bytes(bytes), Some(event));
        assert_eq!(IcmpEvent::from_bytes(&bytes[1..]), None);
    }
}
