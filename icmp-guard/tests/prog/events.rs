//! Sampled events under the kernel budget: the real XDP program with private maps, fed
//! floods through BPF_PROG_TEST_RUN (`repeat`), with the `EVENTS` ring buffer read back.
//! A flood must yield at most the budget's allowance of events, and budget 0 none.

use icmp_guard::observe::events::{EventReader, source_address};
use icmp_guard_common::{
    DropReason, FAMILY_V4, FAMILY_V6,
    events::{ACTION_DROPPED, ACTION_PASSED, IcmpEvent, events_per_window, max_events},
    global,
};

use crate::{
    frames::*,
    harness::{Guard, XDP_DROP, XDP_PASS, pass_all_but, pin_to_cpu},
};

/// The CPU the tests pin themselves to, so the per-CPU budget is one budget.
const CPU: usize = 0;

/// The program and its event ring.
struct Sampled {
    guard: Guard,
    events: EventReader,
}

impl Sampled {
    /// Echo requests dropped by policy, everything else passed, and `per_sec` events per
    /// second per CPU.
    fn load(per_sec: u32) -> Self {
        pin_to_cpu(CPU);
        let mut guard = Guard::load(&pass_all_but(&[(FAMILY_V4, 8)]));
        guard
            .maps
            .set_events_per_sec(per_sec)
            .expect("set the budget");
        let events = guard.take_events();
        Self { guard, events }
    }

    /// Runs `frame` `repeat` times in one BPF_PROG_TEST_RUN; returns the verdict and the
    /// wall-clock nanoseconds the run took.
    fn flood(&mut self, frame: &[u8], repeat: u32) -> (u32, u64) {
        let (verdict, elapsed) = self.guard.repeat(frame, repeat);
        (
            verdict,
            u64::try_from(elapsed.as_nanos()).expect("a short run"),
        )
    }

    fn received(&mut self) -> Vec<IcmpEvent> {
        let mut events = Vec::new();
        self.events.drain(|event| events.push(event));
        events
    }

    fn global(&self, slot: u32) -> u64 {
        self.guard.snapshot().global(slot).packets
    }
}

#[test]
fn a_flood_yields_at_most_the_budget_of_events() {
    root_or_skip!("a_flood_yields_at_most_the_budget_of_events");
    const BUDGET: u32 = 1000;
    const PACKETS: u32 = 100_000;
    let mut sampled = Sampled::load(BUDGET);
    let frame = icmpv4_between([198, 51, 100, 7], [192, 0, 2, 1], 8, 0);
    let (verdict, elapsed_ns) = sampled.flood(&frame, PACKETS);
    assert_eq!(
        verdict, XDP_DROP,
        "echo requests are dropped by this policy"
    );

    let events = sampled.received();
    // Every 100 ms window the run touched, at its full allowance, on the one CPU.
    let bound = max_events(BUDGET, elapsed_ns);
    assert!(
        !events.is_empty(),
        "a flood of {PACKETS} packets must yield at least one event"
    );
    assert!(
        events.len() as u64 <= bound,
        "{} events from {PACKETS} packets in {} ms: the budget allows at most {bound} \
         ({} per 100 ms window)",
        events.len(),
        elapsed_ns / 1_000_000,
        events_per_window(BUDGET)
    );
    assert_eq!(
        sampled.global(global::EVENTS_EMITTED),
        events.len() as u64,
        "every emitted event arrived"
    );
    assert_eq!(sampled.global(global::EVENTS_LOST), 0, "the ring had room");
    let counted = sampled.guard.snapshot();
    assert_eq!(
        counted.of(FAMILY_V4, 8).dropped(DropReason::Policy),
        u64::from(PACKETS),
        "the counters still see every packet"
    );
    for event in &events {
        assert_eq!(source_address(event).to_string(), "198.51.100.7");
        assert_eq!(event.family, FAMILY_V4);
        assert_eq!((event.icmp_type, event.code), (8, 0));
        assert_eq!(event.action, ACTION_DROPPED);
        assert_eq!(event.reason, DropReason::Policy as u8);
        assert_eq!(event.packet_len as usize, frame.len());
        assert_eq!(event.cpu as usize, CPU);
    }
    let mut times: Vec<u64> = events.iter().map(|e| e.timestamp_ns).collect();
    times.dedup();
    assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "in order");
}

#[test]
fn budget_zero_emits_nothing() {
    root_or_skip!("budget_zero_emits_nothing");
    let mut sampled = Sampled::load(0);
    let (verdict, _) = sampled.flood(&icmpv4_frame(8, 0), 10_000);
    assert_eq!(verdict, XDP_DROP);
    let (verdict, _) = sampled.flood(&icmpv6_frame(&[], 128, 0), 10_000);
    assert_eq!(verdict, XDP_PASS);
    assert!(sampled.received().is_empty(), "events are off");
    assert_eq!(sampled.global(global::EVENTS_EMITTED), 0);
    assert_eq!(sampled.global(global::EVENTS_LOST), 0);
}

#[test]
fn passed_packets_are_sampled_too_and_a_new_budget_applies_at_once() {
    root_or_skip!("passed_packets_are_sampled_too");
    let mut sampled = Sampled::load(0);
    let frame = icmpv6_custom_echo();
    sampled.flood(&frame, 100);
    assert!(sampled.received().is_empty());
    sampled
        .guard
        .maps
        .set_events_per_sec(50)
        .expect("set the budget");
    assert_eq!(sampled.guard.maps.events_per_sec().expect("read"), 50);
    let (verdict, elapsed_ns) = sampled.flood(&frame, 1000);
    assert_eq!(verdict, XDP_PASS);
    let events = sampled.received();
    assert!(!events.is_empty());
    assert!(events.len() as u64 <= max_events(50, elapsed_ns));
    for event in &events {
        assert_eq!(event.family, FAMILY_V6);
        assert_eq!(event.icmp_type, 128);
        assert_eq!(event.action, ACTION_PASSED);
        assert_eq!(event.reason, 0);
        assert_eq!(source_address(event).to_string(), "2001:db8::2");
    }
}

/// An ICMPv6 echo request from 2001:db8::2 to 2001:db8::1.
fn icmpv6_custom_echo() -> Vec<u8> {
    icmpv6_custom(
        v6("2001:db8::2"),
        v6("2001:db8::1"),
        64,
        &[],
        128,
        0,
        [0, 1, 0, 1],
    )
}
