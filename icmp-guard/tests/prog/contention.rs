//! Issue 14, point 2: two CPUs hammering one bucket for more than a second admit at most
//! `rate × time + burst` (+2 %), for a global bucket, a per-source bucket and the
//! new-source budget, with each program variant the kernel can load (compare-and-exchange,
//! spin locks). Prints what each admitted against what it could have.
//!
//! Against main before issue 14 the unsynchronised buckets admitted over: +68 % in the
//! issue's measurement, +5 to +13 % in this harness on this machine (the deep global case).

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use crate::{
    frames::*,
    harness::{Guard, pin_to_cpu, skip},
};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use icmp_guard::{
    bpf::Variant,
    observe::stats::TypeCounters,
    policy::{Limit, NewSources, Per, Policy, RuleSpec},
};
use icmp_guard_common::FAMILY_V4;

/// How long both CPUs hammer.
const HAMMER: Duration = Duration::from_millis(1500);
/// Repetitions per BPF_PROG_TEST_RUN call of one frame: a few tens of milliseconds each.
const REPEAT: u32 = 200_000;

/// Runs `frame_of(cpu, call)`, `repeat` times per call, on CPUs 0 and 1 at once until
/// [`HAMMER`] has passed; returns the wall time from before the first packet to after the
/// last, in seconds.
fn hammer(program: &Xdp, repeat: u32, frame_of: impl Fn(usize, u32) -> Vec<u8> + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for cpu in 0..2 {
            let frame_of = &frame_of;
            scope.spawn(move || {
                pin_to_cpu(cpu);
                let mut call = 0;
                while started.elapsed() < HAMMER {
                    let frame = frame_of(cpu, call);
                    program
                        .test_run(TestRunOptions {
                            data_in: Some(&frame),
                            repeat,
                            ..TestRunOptions::default()
                        })
                        .expect("BPF_PROG_TEST_RUN");
                    call += 1;
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

fn policy(limit: Limit) -> Policy {
    let mut policy = Policy::default_profile();
    policy
        .set(FAMILY_V4, 8, None, RuleSpec::limit(limit), false)
        .expect("a valid limit");
    policy
}

/// Asserts the `admitted` of `counters` is at most 2 % over `rate × seconds + burst`, and
/// prints both. The wall time includes moments when the scheduler took a CPU away (other
/// work on the machine: the kernel matrix runs this beside two QEMU guests), when a bucket
/// overflows and its tokens are lost; so the lower bound only says the limiter was not
/// starved outright, by refusals of its own: a tenth of what it could have admitted, or of
/// the packets sent where fewer were sent than that (an emulated guest on a shared machine
/// makes few one-packet calls a second), and only for buckets deep enough to keep their
/// tokens while a CPU is away.
fn check(
    what: &str,
    variant: Variant,
    counters: &TypeCounters,
    (rate, burst): (u32, u32),
    seconds: f64,
) {
    let admitted = counters.passed();
    let sent = counters.packets();
    let allowed = f64::from(rate) * seconds + f64::from(burst);
    let over = admitted as f64 / allowed - 1.0;
    // Past libtest's capture, so that the kernel matrix's console logs keep the numbers.
    let _ = writeln!(
        std::io::stderr().lock(),
        "CONTENTION {what}, {variant:?}: {admitted} of {sent} admitted in {seconds:.3} s, \
         {allowed:.0} allowed ({:+.2} %)",
        over * 100.0
    );
    assert!(
        admitted as f64 <= allowed * 1.02,
        "{what}, {variant:?}: {admitted} admitted, at most {allowed:.0} (+2 %) allowed"
    );
    // The limit is also not starved: exactness is not bought with refusals.
    // Only for a bucket at least 10 ms deep: a shallower one (the burst of 10 at
    // 100,000/s holds 0.1 ms) loses its refill whenever both CPUs are away that long, which
    // on a loaded machine is most of the time (load 10: 18,936 of 309,197 admitted).
    if f64::from(burst) / f64::from(rate) >= 0.01 {
        assert!(
            admitted as f64 >= allowed.min(sent as f64) * 0.1,
            "{what}, {variant:?}: only {admitted} of {sent} sent admitted, {allowed:.0} allowed"
        );
    }
}

/// Whether this machine has the two CPUs the test hammers from; says why not otherwise (the
/// kernel matrix's guests have one).
fn two_cpus(test: &str) -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        skip(
            test,
            &format!("needs two CPUs to hammer one bucket from; this machine has {cpus}"),
        );
    }
    cpus >= 2
}

#[test]
fn two_cpus_on_one_global_bucket_stay_within_the_limit() {
    root_or_skip!("two_cpus_on_one_global_bucket");
    if !two_cpus("two_cpus_on_one_global_bucket") {
        return;
    }
    // The reproduction (100,000/s, burst 10, per global), and the same rate with a
    // burst of 10 ms, deep enough that a CPU taken away by the scheduler loses no tokens:
    // there main's unsynchronised bucket admitted 5-13 % over, measured here.
    for limit in [(100_000, 10), (100_000, 1000)] {
        let (rate, burst) = limit;
        let policy = policy(Limit::new(rate, burst, Per::Global));
        for (variant, mut guard) in Guard::every_variant(&policy) {
            let frame = icmpv4_between([198, 51, 100, 7], V4_GUARD, 8, 0);
            let seconds = hammer(guard.program(), REPEAT, |_, _| frame.clone());
            let counters = guard.snapshot().of(FAMILY_V4, 8);
            check("global bucket", variant, &counters, limit, seconds);
        }
    }
}

#[test]
fn two_cpus_on_one_source_stay_within_its_limit() {
    root_or_skip!("two_cpus_on_one_source");
    if !two_cpus("two_cpus_on_one_source") {
        return;
    }
    let (rate, burst) = (50_000, 500);
    let limit = Limit {
        probation: 0,
        ..Limit::new(rate, burst, Per::Source)
    };
    for (variant, mut guard) in Guard::every_variant(&policy(limit)) {
        let frame = icmpv4_between([198, 51, 100, 7], V4_GUARD, 8, 0);
        let seconds = hammer(guard.program(), REPEAT, |_, _| frame.clone());
        let counters = guard.snapshot().of(FAMILY_V4, 8);
        check(
            "per-source bucket",
            variant,
            &counters,
            (rate, burst),
            seconds,
        );
    }
}

#[test]
fn two_cpus_of_new_sources_stay_within_the_new_source_budget() {
    root_or_skip!("two_cpus_of_new_sources");
    if !two_cpus("two_cpus_of_new_sources") {
        return;
    }
    // Every packet a new source, one BPF_PROG_TEST_RUN call each (some hundreds of
    // thousands a second per CPU): the budget is the bucket both CPUs fight over.
    let (rate, burst) = (20_000, 50);
    let limit = Limit {
        new_sources: Some(NewSources { rate, burst }),
        ..Limit::new(1, 1, Per::Source)
    };
    for (variant, mut guard) in Guard::every_variant(&policy(limit)) {
        let seconds = hammer(guard.program(), 1, |cpu, call| {
            let [_, b, c, d] = (call * 2 + cpu as u32).to_be_bytes();
            icmpv4_between([10 + b, c, d, 1], V4_GUARD, 8, 0)
        });
        let counters = guard.snapshot().of(FAMILY_V4, 8);
        check(
            "new-source budget",
            variant,
            &counters,
            (rate, burst),
            seconds,
        );
    }
}
