//! Sampled events under the kernel budget: the real XDP program with private maps, fed
//! floods through BPF_PROG_TEST_RUN (`repeat`), with the `EVENTS` ring buffer read back.
//! A flood must yield at most the budget's allowance of events, and budget 0 none.

mod support;

use std::time::Instant;

use aya::{
    Ebpf,
    maps::RingBuf,
    programs::{TestRun as _, TestRunOptions},
};
use icmp_guard::{
    bpf::{self, GuardMaps},
    observe::events::{EventReader, source_address},
    observe::stats,
    policy::{self, Action, Policy, RuleSpec},
};
use icmp_guard_common::{
    DropReason, FAMILY_V4, FAMILY_V6,
    events::{ACTION_DROPPED, ACTION_PASSED, IcmpEvent, events_per_window, max_events},
    global, maps,
};
use support::frames::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// The CPU the tests pin themselves to, so the per-CPU budget is one budget.
const CPU: usize = 0;

struct Guard {
    ebpf: Ebpf,
    maps: GuardMaps,
    events: EventReader,
}

impl Guard {
    /// The program with private maps, echo requests dropped by policy, everything else
    /// passed, and `per_sec` events per second per CPU.
    fn load(per_sec: u32) -> Self {
        pin_to_cpu(CPU);
        let mut ebpf = bpf::load(None).expect("the XDP program loads and passes the verifier");
        let mut maps = GuardMaps::take(&mut ebpf).expect("the object declares every map");
        let mut policy = Policy::pass_all();
        let drop = RuleSpec {
            action: Action::Drop,
            limit: None,
        };
        policy
            .set(FAMILY_V4, 8, None, drop, true)
            .expect("valid rule");
        policy::apply(&mut maps, &policy).expect("apply the policy");
        maps.set_events_per_sec(per_sec).expect("set the budget");
        let ring = ebpf
            .take_map(maps::EVENTS)
            .map(RingBuf::try_from)
            .expect("the object declares EVENTS")
            .expect("EVENTS is a ring buffer");
        Self {
            ebpf,
            maps,
            events: EventReader::from_ring(ring),
        }
    }

    /// Runs `frame` `repeat` times in one BPF_PROG_TEST_RUN; returns the verdict and the
    /// wall-clock nanoseconds the run took.
    fn flood(&mut self, frame: &[u8], repeat: u32) -> (u32, u64) {
        let program = bpf::xdp_program(&mut self.ebpf).expect("program present");
        let started = Instant::now();
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        let elapsed = u64::try_from(started.elapsed().as_nanos()).expect("a short run");
        (result.return_value, elapsed)
    }

    fn received(&mut self) -> Vec<IcmpEvent> {
        let mut events = Vec::new();
        self.events.drain(|event| events.push(event));
        events
    }

    fn global(&self, slot: u32) -> u64 {
        stats::read(&self.maps)
            .expect("read counters")
            .global(slot)
            .packets
    }
}

/// Pins the calling thread to `cpu`: BPF_PROG_TEST_RUN runs the program on the caller's
/// CPU, so every packet of the flood is charged to that CPU's budget.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity write only it and
    // the calling thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn a_flood_yields_at_most_the_budget_of_events() {
    if !support::privileged("a_flood_yields_at_most_the_budget_of_events") {
        return;
    }
    const BUDGET: u32 = 1000;
    const PACKETS: u32 = 100_000;
    let mut guard = Guard::load(BUDGET);
    let frame = icmpv4_between([198, 51, 100, 7], [192, 0, 2, 1], 8, 0);
    let (verdict, elapsed_ns) = guard.flood(&frame, PACKETS);
    assert_eq!(
        verdict, XDP_DROP,
        "echo requests are dropped by this policy"
    );

    let events = guard.received();
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
        guard.global(global::EVENTS_EMITTED),
        events.len() as u64,
        "every emitted event arrived"
    );
    assert_eq!(guard.global(global::EVENTS_LOST), 0, "the ring had room");
    let counted = stats::read(&guard.maps).expect("read counters");
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
    if !support::privileged("budget_zero_emits_nothing") {
        return;
    }
    let mut guard = Guard::load(0);
    let (verdict, _) = guard.flood(&icmpv4_frame(8, 0), 10_000);
    assert_eq!(verdict, XDP_DROP);
    let (verdict, _) = guard.flood(&icmpv6_frame(&[], 128, 0), 10_000);
    assert_eq!(verdict, XDP_PASS);
    assert!(guard.received().is_empty(), "events are off");
    assert_eq!(guard.global(global::EVENTS_EMITTED), 0);
    assert_eq!(guard.global(global::EVENTS_LOST), 0);
}

#[test]
fn passed_packets_are_sampled_too_and_a_new_budget_applies_at_once() {
    if !support::privileged("passed_packets_are_sampled_too") {
        return;
    }
    let mut guard = Guard::load(0);
    let frame = icmpv6_custom_echo();
    guard.flood(&frame, 100);
    assert!(guard.received().is_empty());
    guard.maps.set_events_per_sec(50).expect("set the budget");
    assert_eq!(guard.maps.events_per_sec().expect("read"), 50);
    let (verdict, elapsed_ns) = guard.flood(&frame, 1000);
    assert_eq!(verdict, XDP_PASS);
    let events = guard.received();
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
