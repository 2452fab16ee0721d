//! Per-packet cost of the XDP program, as a ratio to baselines measured in the same run
//! (these machines are noisy; only ratios travel): an empty XDP program, and the cheapest
//! per-source limiter there is (`icmp_guard_common::baseline`: Ethernet, IPv4 with IHL, one
//! LRU lookup by source, `bpf_ktime_get_ns`, a GCRA update) with and without a new-source
//! budget, each case against the baseline that does the same job the same way. A benchmark with its own
//! `main` (`harness = false`). Run it through `cargo xtask bench` as root, which also runs
//! the flood benchmark; on its own:
//!
//! ```text
//! sudo cargo bench --package icmp-guard --bench per_packet -- [--runs N] [--json FILE]
//! ```
//!
//! Each case feeds frames through BPF_PROG_TEST_RUN. Most cases repeat one frame a million
//! times inside one call and divide the thread's CPU time for the call by a million (the
//! kernel's own figure is rounded down to whole nanoseconds; it is kept in the JSON). The
//! cases with a million distinct sources need a different frame each time, so they make one
//! call per frame and sum the kernel's timing of each call, which excludes the syscall; their
//! baseline, the empty program, is measured the same way. Every run measures the baselines
//! and then every case; the table shows the median of the runs and the spread (lowest and
//! highest ratio). Each case also checks the verdict the program returned, so the benchmark
//! can never quietly measure the wrong path.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use icmp_guard::{
    bpf::{self, Capacity, GuardMaps, Instance, Variant},
    policy::{
        self, Limit, Per, Policy, RuleSpec,
        model::{DEFAULT_PROBATION, MAX_RATE},
        recon::{Enabled, MAX_THRESHOLD, Recon},
    },
};
use icmp_guard_common::{
    BASELINE_PROGRAM_NAME, FAMILY_V4, FAMILY_V6,
    baseline::{self, MINIMAL_LIMITER, MINIMAL_LIMITER_WITH_BUDGET},
    interface,
    limit::RATE_SOURCES,
    maps,
    recon::mode as recon_mode,
};
use serde_json::{Value, json};

/// Frames per BPF_PROG_TEST_RUN call in the repeated cases.
const REPEAT: u32 = 1_000_000;
/// Distinct sources (one call each) in the many-source cases.
const DISTINCT_SOURCES: u32 = 1_000_000;
const DEFAULT_RUNS: usize = 5;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The unicast destination MAC of every frame but the smurf one.
const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const OUR_V4: [u8; 4] = [192, 0, 2, 1];
const DIRECTED_BROADCAST_V4: [u8; 4] = [192, 0, 2, 255];
const SOURCE_V4: [u8; 4] = [198, 51, 100, 7];

fn ethernet(destination: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = destination.to_vec();
    frame.extend_from_slice(&PEER_MAC);
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn ipv4(protocol: u8, source: [u8; 4], destination: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).expect("small packet");
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0, 64, protocol, 0, 0]);
    packet.extend_from_slice(&source);
    packet.extend_from_slice(&destination);
    packet.extend_from_slice(payload);
    packet
}

/// An ICMP echo request with a 56-byte payload, as `ping` sends it.
fn echo_message(icmp_type: u8) -> Vec<u8> {
    let mut icmp = vec![icmp_type, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(&[0xab; 56]);
    icmp
}

fn echo_v4(mac: [u8; 6], source: [u8; 4], destination: [u8; 4]) -> Vec<u8> {
    ethernet(mac, 0x0800, &ipv4(1, source, destination, &echo_message(8)))
}

/// Offset of the IPv4 source address in an untagged frame.
const V4_SOURCE_OFFSET: usize = 14 + 12;

/// ICMPv6 echo request behind a hop-by-hop and a destination-options header.
fn echo_v6_two_extension_headers() -> Vec<u8> {
    const HOP_BY_HOP: u8 = 0;
    const DESTINATION_OPTIONS: u8 = 60;
    const ICMPV6: u8 = 58;
    // Each header: next header, length in 8-octet units beyond the first (0), and a PadN
    // option filling the remaining 6 bytes.
    let mut payload = vec![DESTINATION_OPTIONS, 0, 1, 4, 0, 0, 0, 0];
    payload.extend_from_slice(&[ICMPV6, 0, 1, 4, 0, 0, 0, 0]);
    payload.extend_from_slice(&echo_message(128));
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&u16::try_from(payload.len()).expect("small").to_be_bytes());
    packet.extend_from_slice(&[HOP_BY_HOP, 64]);
    // 2001:db8::7 -> 2001:db8::1
    packet.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    packet.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    packet.extend_from_slice(&payload);
    ethernet(OUR_MAC, 0x86dd, &packet)
}

fn tcp_syn() -> Vec<u8> {
    let mut segment = vec![
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0,
    ];
    segment.extend_from_slice(&[0, 0, 0, 0]);
    ethernet(OUR_MAC, 0x0800, &ipv4(6, SOURCE_V4, OUR_V4, &segment))
}

/// One timed pass: mean nanoseconds per packet and the verdict of the last packet.
struct Sample {
    ns: f64,
    /// What the kernel reported for the same thing (whole nanoseconds per repetition).
    kernel_ns: f64,
    /// The thread's CPU time per packet, where it is not `ns` ([`Method::Sweep`]).
    thread_cpu_ns: Option<f64>,
    verdict: u32,
}

/// CPU time this thread has used, in nanoseconds: time spent preempted by other tasks is
/// not in it.
fn thread_cpu_ns() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to; the clock id is a constant.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) };
    assert_eq!(result, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as f64 * 1e9 + now.tv_nsec as f64
}

/// One frame repeated `REPEAT` times in the kernel.
///
/// The kernel also reports the mean time of one repetition, but in whole nanoseconds,
/// which for a 26 ns program is a 4% step. The thread's CPU time over the whole call has
/// no such step; it adds the syscall and the set-up of one call, about a microsecond, which
/// spread over a million repetitions is a thousandth of a nanosecond.
fn repeated(program: &Xdp, frame: &[u8]) -> Sample {
    let started = thread_cpu_ns();
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: REPEAT,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    let cpu = thread_cpu_ns() - started;
    Sample {
        ns: cpu / f64::from(REPEAT),
        kernel_ns: result.duration.as_nanos() as f64,
        thread_cpu_ns: None,
        verdict: result.return_value,
    }
}

/// `frame` `times` times in one call, untimed; the last verdict.
fn repeated_n(program: &Xdp, frame: &[u8], times: u32) -> u32 {
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: times,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

/// `DISTINCT_SOURCES` echo requests from 10.0.0.0 upwards, one call each; every call is
/// timed by the kernel, so only the program's runs are summed.
fn one_call_each(program: &Xdp) -> Sample {
    let mut frame = echo_v4(OUR_MAC, [10, 0, 0, 0], OUR_V4);
    let mut total = Duration::ZERO;
    let mut verdict = 0;
    for index in 0..DISTINCT_SOURCES {
        let [a, b, c, d] = index.to_be_bytes();
        frame[V4_SOURCE_OFFSET..V4_SOURCE_OFFSET + 4].copy_from_slice(&[10 + a, b, c, d]);
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        total += result.duration;
        verdict = result.return_value;
    }
    let ns = total.as_nanos() as f64 / f64::from(DISTINCT_SOURCES);
    Sample {
        ns,
        kernel_ns: ns,
        thread_cpu_ns: None,
        verdict,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    /// One frame, `REPEAT` times in one call.
    Repeated,
    /// `DISTINCT_SOURCES` frames, one call each.
    OneCallEach,
    /// [`SWEEP_DESTINATIONS`] frames from one source, one destination each, one call per
    /// frame repeating it `REPEAT / SWEEP_DESTINATIONS` times, so that the sketch holds
    /// every destination; timed by the kernel (the mean of its per-call figures, each
    /// rounded down to a whole nanosecond, the same way for every case of this method).
    /// The thread's CPU time is kept in the JSON: with 256 calls it carried a per-call
    /// cost (of the order of 0.5 ms a call on the development VM, under load) that swamped
    /// the difference measured.
    Sweep,
}

/// Destinations of the sweep-detection cases: 203.0.113.0/24, every address.
const SWEEP_DESTINATIONS: u32 = 256;

/// The echo requests of the sweep-detection cases, one per destination.
fn sweep_frames() -> Vec<Vec<u8>> {
    (0..SWEEP_DESTINATIONS)
        .map(|last| {
            let last = u8::try_from(last).expect("256 destinations");
            echo_v4(OUR_MAC, SOURCE_V4, [203, 0, 113, last])
        })
        .collect()
}

/// The sweep frames, each repeated `REPEAT / SWEEP_DESTINATIONS` times in its own call: the
/// kernel's mean time per packet over all the calls (`ns`; the thread's CPU time per
/// packet in `kernel_ns`'s place is not kept: see [`Method::Sweep`]), and the verdict of
/// the last packet (every call's verdict must be the same).
fn sweep(program: &Xdp, frames: &[Vec<u8>]) -> Sample {
    let per_frame = REPEAT / SWEEP_DESTINATIONS;
    let mut kernel = Duration::ZERO;
    let mut verdicts = Vec::with_capacity(frames.len());
    let started = thread_cpu_ns();
    for frame in frames {
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: per_frame,
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        kernel += result.duration;
        verdicts.push(result.return_value);
    }
    let cpu = thread_cpu_ns() - started;
    let verdict = verdicts[0];
    assert!(
        verdicts.iter().all(|&v| v == verdict),
        "the sweep's destinations got different verdicts: {verdicts:?}"
    );
    Sample {
        ns: kernel.as_nanos() as f64 / frames.len() as f64,
        thread_cpu_ns: Some(cpu / f64::from(per_frame * SWEEP_DESTINATIONS)),
        kernel_ns: kernel.as_nanos() as f64 / frames.len() as f64,
        verdict,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    /// Default profile: echo requests limited to 100/s per source, burst 200.
    Default,
    /// Echo requests limited with a rate and burst no run can exhaust.
    Open,
    /// Echo requests passed by their rule, without a limit: everything but the limiter.
    Pass,
    /// Echo requests under one global bucket that no run exhausts: the limiter without the
    /// per-source lookup.
    Global,
    /// [`Which::Open`] in the variant for kernels without compare-and-exchange (spin locks).
    OpenLocks,
    /// [`Which::Open`] with sweep detection on (`[recon] enabled = "on"`), thresholds no
    /// run reaches: every echo request is counted into its source's and prefix's sketch.
    ReconOn,
    /// [`Which::ReconOn`] with `enabled = "off"`: the same program and policy otherwise.
    ReconOff,
    /// [`Which::ReconOn`] with `prefix_threshold = 0`: the source's sketch only.
    ReconOnNoPrefix,
}

/// What a case is compared with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Base {
    /// The empty XDP program, measured the same way as the case.
    Empty,
    /// The minimal limiter admitting (limits no run reaches).
    MinimalWithin,
    /// The minimal limiter refusing (default numbers, the source's burst spent).
    MinimalOver,
    /// The minimal limiter passing TCP.
    MinimalTcp,
    /// The minimal limiter with a new-source budget, 1,000,000 sources, one call each.
    MinimalBudgetSources,
    /// The minimal limiter admitting, on the coarse clock: informational only.
    MinimalCoarseWithin,
}

impl Base {
    const ALL: [Self; 6] = [
        Self::Empty,
        Self::MinimalWithin,
        Self::MinimalOver,
        Self::MinimalTcp,
        Self::MinimalBudgetSources,
        Self::MinimalCoarseWithin,
    ];

    fn id(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::MinimalWithin => "minimal_limiter_within",
            Self::MinimalOver => "minimal_limiter_over",
            Self::MinimalTcp => "minimal_limiter_tcp",
            Self::MinimalBudgetSources => "minimal_limiter_with_budget_1m_sources",
            Self::MinimalCoarseWithin => "minimal_limiter_coarse_clock_within",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty XDP program",
            Self::MinimalWithin => "minimal limiter, echo within limit",
            Self::MinimalOver => "minimal limiter, echo over limit",
            Self::MinimalTcp => "minimal limiter, TCP",
            Self::MinimalBudgetSources => "minimal limiter + budget, 1,000,000 sources",
            Self::MinimalCoarseWithin => "minimal limiter on the coarse clock, within",
        }
    }

    /// Short, for the table's column.
    fn short(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::MinimalWithin => "min within",
            Self::MinimalOver => "min over",
            Self::MinimalTcp => "min TCP",
            Self::MinimalBudgetSources => "min+budget 1M",
            Self::MinimalCoarseWithin => "min coarse",
        }
    }
}

struct Case {
    id: &'static str,
    name: &'static str,
    policy: Which,
    method: Method,
    frame: Option<Vec<u8>>,
    /// The verdict the last packet must get; `None` when it may vary.
    verdict: Option<u32>,
    /// The baseline the case is compared with.
    versus: Base,
    /// Issue 14's target, as a ratio to `versus`.
    target: Option<f64>,
    samples: Vec<Sample>,
}

impl Case {
    fn new(id: &'static str, name: &'static str, policy: Which, frame: Vec<u8>) -> Self {
        Self {
            id,
            name,
            policy,
            method: Method::Repeated,
            frame: Some(frame),
            verdict: None,
            versus: Base::Empty,
            target: None,
            samples: Vec::new(),
        }
    }

    /// A sweep-detection case: echo requests from one source to 256 destinations, each
    /// passed, measured against the minimal limiter within its limit.
    fn sweep(id: &'static str, name: &'static str, policy: Which) -> Self {
        Self {
            method: Method::Sweep,
            frame: None,
            verdict: Some(XDP_PASS),
            versus: Base::MinimalWithin,
            ..Self::new(id, name, policy, Vec::new())
        }
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            verdict: Some(XDP_PASS),
            versus: Base::MinimalWithin,
            target: Some(1.25),
            ..Case::new(
                "echo_within_limit",
                "echo request, unicast, within limit",
                Which::Open,
                echo_v4(OUR_MAC, SOURCE_V4, OUR_V4),
            )
        },
        Case {
            verdict: Some(XDP_PASS),
            ..Case::new(
                "echo_rule_pass",
                "echo request, unicast, rule pass (no limiter)",
                Which::Pass,
                echo_v4(OUR_MAC, SOURCE_V4, OUR_V4),
            )
        },
        Case {
            verdict: Some(XDP_PASS),
            ..Case::new(
                "echo_global_limit",
                "echo request, unicast, one global bucket",
                Which::Global,
                echo_v4(OUR_MAC, SOURCE_V4, OUR_V4),
            )
        },
        Case {
            verdict: Some(XDP_PASS),
            versus: Base::MinimalWithin,
            ..Case::new(
                "echo_within_limit_locks",
                "echo request, within limit, spin-lock variant",
                Which::OpenLocks,
                echo_v4(OUR_MAC, SOURCE_V4, OUR_V4),
            )
        },
        Case {
            verdict: Some(XDP_DROP),
            versus: Base::MinimalOver,
            target: Some(1.25),
            ..Case::new(
                "echo_over_limit",
                "echo request, unicast, over limit (burst spent)",
                Which::Default,
                echo_v4(OUR_MAC, SOURCE_V4, OUR_V4),
            )
        },
        Case {
            method: Method::OneCallEach,
            frame: None,
            versus: Base::MinimalBudgetSources,
            target: Some(1.5),
            ..Case::new(
                "echo_1m_sources",
                "echo request, 1,000,000 sources (default)",
                Which::Default,
                Vec::new(),
            )
        },
        Case {
            method: Method::OneCallEach,
            frame: None,
            verdict: Some(XDP_PASS),
            ..Case::new(
                "echo_1m_sources_all_admitted",
                "echo request, 1,000,000 sources, all admitted",
                Which::Open,
                Vec::new(),
            )
        },
        Case {
            verdict: Some(XDP_DROP),
            ..Case::new(
                "smurf_broadcast_echo",
                "smurf: echo request to ff:ff:ff:ff:ff:ff",
                Which::Default,
                echo_v4(BROADCAST_MAC, SOURCE_V4, DIRECTED_BROADCAST_V4),
            )
        },
        Case {
            verdict: Some(XDP_PASS),
            ..Case::new(
                "echo_v6_two_extension_headers",
                "ICMPv6 echo request, 2 extension headers",
                Which::Open,
                echo_v6_two_extension_headers(),
            )
        },
        Case::sweep(
            RECON_OFF_CASE,
            "echo sweep, 256 destinations, recon off",
            Which::ReconOff,
        ),
        Case::sweep(
            RECON_ON_CASE,
            "echo sweep, 256 destinations, recon on",
            Which::ReconOn,
        ),
        Case::sweep(
            RECON_SOURCE_CASE,
            "echo sweep, 256 dest., recon on, no prefix",
            Which::ReconOnNoPrefix,
        ),
        Case {
            verdict: Some(XDP_PASS),
            versus: Base::MinimalTcp,
            target: Some(1.15),
            ..Case::new(
                "tcp_passthrough",
                "TCP (not ICMP), passed untouched",
                Which::Default,
                tcp_syn(),
            )
        },
    ]
}

/// The default profile with `rules`, (family, type, rule) each.
fn profile_with(rules: &[(u8, u8, RuleSpec)]) -> Policy {
    let mut policy = Policy::default_profile();
    for &(family, icmp_type, rule) in rules {
        policy
            .set(family, icmp_type, None, rule, false)
            .unwrap_or_else(|err| panic!("{family}/{icmp_type}: {err}"));
    }
    policy
}

/// The default profile with echo requests (v4 and v6) limited far beyond what a run sends:
/// every packet takes the full limiter path and is admitted.
fn open_policy() -> Policy {
    let limit = RuleSpec::limit(Limit::new(MAX_RATE, MAX_RATE, Per::Source));
    profile_with(&[(FAMILY_V4, 8, limit), (FAMILY_V6, 128, limit)])
}

/// The default profile with v4 echo requests under one global bucket no run exhausts.
fn global_policy() -> Policy {
    let limit = RuleSpec::limit(Limit::new(MAX_RATE, MAX_RATE, Per::Global));
    profile_with(&[(FAMILY_V4, 8, limit)])
}

/// The default profile with echo requests passed by their rule: the cost of everything but
/// the limiter.
fn pass_policy() -> Policy {
    profile_with(&[(FAMILY_V4, 8, RuleSpec::PASS)])
}

/// Issue 20's target: sweep detection adds at most this much per echo request.
const RECON_TARGET_NS: f64 = 10.0;
const RECON_OFF_CASE: &str = "echo_sweep_recon_off";
const RECON_ON_CASE: &str = "echo_sweep_recon_on";
const RECON_SOURCE_CASE: &str = "echo_sweep_recon_on_no_prefix";

/// [`open_policy`] with sweep detection `enabled`, its thresholds (source and /24 prefix)
/// at the largest allowed, 1024 destinations, which the benchmark's 256 never reach.
/// `prefixes`: with the per-prefix sketch too (the default), else `prefix_threshold = 0`.
fn recon_policy(enabled: Enabled, prefixes: bool) -> Policy {
    let mut policy = open_policy();
    policy.recon = Recon {
        enabled,
        sweep_threshold: MAX_THRESHOLD,
        prefix_threshold: if prefixes { MAX_THRESHOLD } else { 0 },
        ..Recon::default()
    };
    policy.recon.validate().expect("a valid [recon] section");
    policy
}

/// The bits set in the sketch of `SOURCE_V4` (`len` 32) in `maps`' `RECON_V4`; `None` when
/// it has none.
fn sketch_bits(maps: &GuardMaps) -> Option<u32> {
    maps.sweep_sketch(std::net::IpAddr::from(SOURCE_V4), 32)
        .expect("reading RECON_V4")
        .map(|sweep| sweep.bits)
}

/// The program (`variant`) loaded with private maps holding `policy`, and the maps.
fn guard_with(policy: &Policy, variant: Variant) -> (Ebpf, GuardMaps) {
    let instance = Instance::UNATTACHED.with_variant(variant);
    let mut ebpf = bpf::load_instance(None, Capacity::default(), instance)
        .expect("load the XDP program (run as root)");
    let mut maps = GuardMaps::take(&mut ebpf).expect("maps");
    policy::apply(&mut maps, policy).expect("apply the policy");
    (ebpf, maps)
}

/// The object with the empty program and the two minimal limiters loaded, the limiters'
/// table as large as the guard's. `open`: limits no run reaches (100,000,000/s, a second
/// of burst, as [`open_policy`]); else the default profile's (100/s per source, burst 200;
/// the new-source budget 1,000/s, burst 2,000). `coarse`: on the coarse clock.
fn baselines(open: bool, coarse: bool) -> Ebpf {
    let (interval, tolerance): (u64, u64) = if open {
        (10, 1_000_000_000)
    } else {
        (10_000_000, 199 * 10_000_000)
    };
    let coarse = u8::from(coarse);
    let tick = bpf::ns_per_jiffy();
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(maps::BASELINE_SOURCES, RATE_SOURCES)
        .override_global(baseline::globals::INTERVAL_NS, &interval, true)
        .override_global(baseline::globals::TOLERANCE_NS, &tolerance, true)
        .override_global(baseline::globals::COARSE_CLOCK, &coarse, true)
        .override_global(interface::globals::NS_PER_JIFFY, &tick, true)
        .load(icmp_guard::ebpf_object())
        .expect("load the eBPF object (run as root)");
    for name in [
        BASELINE_PROGRAM_NAME,
        MINIMAL_LIMITER,
        MINIMAL_LIMITER_WITH_BUDGET,
    ] {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("{name} is not in the object"))
            .try_into()
            .expect("an XDP program");
        program
            .load()
            .unwrap_or_else(|err| panic!("loading {name}: {err}"));
    }
    ebpf
}

fn program<'a>(ebpf: &'a Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name)
        .unwrap_or_else(|| panic!("program {name} not in the object"))
        .try_into()
        .expect("an XDP program")
}

/// The loaded guard program of an object (either variant).
fn guard_program(ebpf: &mut Ebpf) -> &Xdp {
    bpf::xdp_program(ebpf).expect("the guard program")
}

/// The median, the lowest and the highest of `values`.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    };
    (median, sorted[0], sorted[sorted.len() - 1])
}

/// The sweep measured on one instance, the recon-on one, with detection on and with it off
/// (its `[recon]` mode switched in place in the live generation, nothing else touched), in
/// alternating order from run to run: unlike the on and off cases, which are separate
/// instances with their own maps, this difference carries no bias of where each
/// instance's memory happens to lie. Returns [on, off] in ns per packet; leaves detection
/// on.
fn toggle_recon(maps: &mut GuardMaps, program: &Xdp, frames: &[Vec<u8>], run: usize) -> [f64; 2] {
    let mut pair = [0.0; 2];
    let order = if run % 2 == 1 {
        [recon_mode::ON, recon_mode::OFF]
    } else {
        [recon_mode::OFF, recon_mode::ON]
    };
    for mode in order {
        set_recon_mode(maps, mode);
        let sample = sweep(program, frames);
        assert_eq!(
            sample.verdict, XDP_PASS,
            "the toggled sweep measured the wrong path"
        );
        pair[usize::from(mode == recon_mode::OFF)] = sample.ns;
    }
    set_recon_mode(maps, recon_mode::ON);
    pair
}

/// Sets the live generation's `[recon]` mode.
fn set_recon_mode(maps: &mut GuardMaps, mode: u8) {
    maps.update_config("the recon mode", |config| {
        let live = (config.active_generation & 1) as usize;
        config.generations[live].recon.mode = mode;
    })
    .expect("switch sweep detection");
}

/// The toggled measurement's line and JSON (`toggle_recon`).
fn toggled_cost(toggled: &[[f64; 2]]) -> ReconCost {
    let differences: Vec<f64> = toggled.iter().map(|[on, off]| on - off).collect();
    let ratios: Vec<f64> = toggled.iter().map(|[on, off]| on / off).collect();
    let (difference, lo, hi) = spread(&differences);
    let (ratio, ratio_lo, ratio_hi) = spread(&ratios);
    let met = difference <= RECON_TARGET_NS;
    ReconCost {
        line: format!(
            "  one instance, detection switched on and off in place each run: {difference:+.1} ns ({lo:+.1} to {hi:+.1}), {ratio:.2}x ({ratio_lo:.2}-{ratio_hi:.2}); target <= {RECON_TARGET_NS} ns more: {}",
            if met { "met" } else { "MISSED" }
        ),
        json: json!({
            "on_off_ns": toggled,
            "difference_ns": differences,
            "median_difference_ns": difference,
            "median_ratio": ratio,
            "target_met": met,
        }),
    }
}

/// Sweep detection's cost: the recon-on case minus the recon-off case, run by run.
struct ReconCost {
    line: String,
    json: Value,
}

/// `None` when `--only` left a sweep-detection case out.
fn recon_cost(cases: &[Case]) -> Option<ReconCost> {
    if [RECON_ON_CASE, RECON_OFF_CASE, RECON_SOURCE_CASE]
        .iter()
        .any(|id| !cases.iter().any(|case| case.id == *id))
    {
        return None;
    }
    let samples = |id: &str| -> Vec<f64> {
        cases
            .iter()
            .find(|case| case.id == id)
            .expect("the sweep-detection cases are in the list")
            .samples
            .iter()
            .map(|sample| sample.ns)
            .collect()
    };
    let (on, off) = (samples(RECON_ON_CASE), samples(RECON_OFF_CASE));
    let differences: Vec<f64> = on.iter().zip(&off).map(|(on, off)| on - off).collect();
    let ratios: Vec<f64> = on.iter().zip(&off).map(|(on, off)| on / off).collect();
    let (difference, lo, hi) = spread(&differences);
    let (ratio, ratio_lo, ratio_hi) = spread(&ratios);
    let met = difference <= RECON_TARGET_NS;
    let source_only: Vec<f64> = samples(RECON_SOURCE_CASE)
        .iter()
        .zip(&off)
        .map(|(on, off)| on - off)
        .collect();
    let (source_difference, source_lo, source_hi) = spread(&source_only);
    let line = format!(
        "sweep detection: recon on costs {difference:+.1} ns per echo request over recon off ({lo:+.1} to {hi:+.1}), {ratio:.2}x ({ratio_lo:.2}-{ratio_hi:.2}); target <= {RECON_TARGET_NS} ns more: {}\n  (without the prefix sketch, prefix_threshold = 0: {source_difference:+.1} ns, {source_lo:+.1} to {source_hi:+.1})",
        if met { "met" } else { "MISSED" }
    );
    Some(ReconCost {
        line,
        json: json!({
            "recon_on_ns": on,
            "recon_off_ns": off,
            "difference_ns": differences,
            "ratio": ratios,
            "median_difference_ns": difference,
            "no_prefix_difference_ns": source_only,
            "median_no_prefix_difference_ns": source_difference,
            "median_ratio": ratio,
            "target_ns": RECON_TARGET_NS,
            "target_met": met,
        }),
    })
}

struct Args {
    runs: usize,
    json: Option<PathBuf>,
    /// Only the cases whose id contains this (`--only sweep`: the sweep-detection cases).
    only: Option<String>,
}

fn args() -> Args {
    let mut parsed = Args {
        runs: DEFAULT_RUNS,
        json: None,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                parsed.runs = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--runs takes a positive number");
            }
            "--json" => parsed.json = Some(args.next().expect("--json takes a file").into()),
            "--only" => parsed.only = Some(args.next().expect("--only takes a case id part")),
            "--bench" => {} // passed by `cargo bench`-style runners; nothing to do
            other => panic!(
                "unknown argument {other}; usage: bench [--runs N] [--json FILE] [--only TEXT]"
            ),
        }
    }
    parsed
}

fn main() {
    let args = args();
    let started = Instant::now();
    let (mut default_guard, _) = guard_with(&Policy::default_profile(), Variant::Auto);
    let (mut open_guard, _) = guard_with(&open_policy(), Variant::Auto);
    let (mut pass_guard, _) = guard_with(&pass_policy(), Variant::Auto);
    let (mut global_guard, _) = guard_with(&global_policy(), Variant::Auto);
    let (mut locks_guard, _) = guard_with(&open_policy(), Variant::Locks);
    let (mut recon_on_guard, mut recon_on_maps) =
        guard_with(&recon_policy(Enabled::On, true), Variant::Auto);
    let (mut recon_off_guard, recon_off_maps) =
        guard_with(&recon_policy(Enabled::Off, true), Variant::Auto);
    let (mut recon_source_guard, _) = guard_with(&recon_policy(Enabled::On, false), Variant::Auto);
    // The sweep's first pass makes the source's bucket and sketches; the second one, after
    // probation, is the steady state the cases measure.
    let sweep_frames = sweep_frames();
    for ebpf in [
        &mut recon_on_guard,
        &mut recon_off_guard,
        &mut recon_source_guard,
    ] {
        for frame in &sweep_frames {
            assert_eq!(repeated_n(guard_program(ebpf), frame, 1), XDP_PASS);
        }
    }
    let recon_on_bits = sketch_bits(&recon_on_maps);
    assert!(
        recon_on_bits.is_some_and(|bits| bits > 128),
        "recon on: the sweep's source has no sketch, or one with {recon_on_bits:?} bits: the benchmark would not measure sweep detection"
    );
    assert_eq!(
        sketch_bits(&recon_off_maps),
        None,
        "recon off: the source has a sketch"
    );
    let default_guard = guard_program(&mut default_guard);
    let open_guard = guard_program(&mut open_guard);
    let pass_guard = guard_program(&mut pass_guard);
    let global_guard = guard_program(&mut global_guard);
    let locks_guard = guard_program(&mut locks_guard);
    let recon_on = guard_program(&mut recon_on_guard);
    let recon_off = guard_program(&mut recon_off_guard);
    let recon_source = guard_program(&mut recon_source_guard);
    let guard = |which: Which| match which {
        Which::Default => default_guard,
        Which::Open => open_guard,
        Which::Pass => pass_guard,
        Which::Global => global_guard,
        Which::OpenLocks => locks_guard,
        Which::ReconOn => recon_on,
        Which::ReconOff => recon_off,
        Which::ReconOnNoPrefix => recon_source,
    };
    let open_baselines = baselines(true, false);
    let default_baselines = baselines(false, false);
    let coarse_baselines = baselines(true, true);
    let empty = program(&default_baselines, BASELINE_PROGRAM_NAME);
    let minimal_open = program(&open_baselines, MINIMAL_LIMITER);
    let minimal_default = program(&default_baselines, MINIMAL_LIMITER);
    let minimal_budget = program(&default_baselines, MINIMAL_LIMITER_WITH_BUDGET);
    let minimal_coarse = program(&coarse_baselines, MINIMAL_LIMITER);

    let mut cases = cases();
    if let Some(only) = &args.only {
        cases.retain(|case| case.id.contains(only.as_str()));
        assert!(!cases.is_empty(), "no case id contains {only:?}");
    }
    // The million-call baselines take seconds each: measured only for the cases that need
    // them.
    let one_call_cases = cases.iter().any(|case| case.method == Method::OneCallEach);
    let recon_cases = cases.iter().any(|case| case.id == RECON_ON_CASE);
    // [on, off] of the recon-on instance with detection switched per run (`toggle_recon`).
    let mut toggled: Vec<[f64; 2]> = Vec::new();
    let over = echo_v4(OUR_MAC, SOURCE_V4, OUR_V4);
    let v6 = echo_v6_two_extension_headers();
    // The one-source cases measure an established source: its bucket made and its
    // probation over (a source the new-source budget admitted is charged to the budget as
    // well for its first seconds; the many-source cases measure that path).
    for program in [guard(Which::Open), guard(Which::OpenLocks)] {
        for frame in [&over, &v6] {
            assert_eq!(repeated_n(program, frame, 1), XDP_PASS);
        }
    }
    let probation = Duration::from_secs(u64::from(DEFAULT_PROBATION));
    println!(
        "waiting {:.1} s for the benchmark's sources to leave probation",
        probation.as_secs_f64() + 0.2
    );
    std::thread::sleep(probation + Duration::from_millis(200));
    for program in [guard(Which::Open), guard(Which::OpenLocks)] {
        for frame in [&over, &v6] {
            assert_eq!(repeated_n(program, frame, 1), XDP_PASS);
        }
    }
    // Spend the default policy's burst for the over-limit cases before anything is timed.
    let warm = repeated(guard(Which::Default), &over);
    assert_eq!(warm.verdict, XDP_DROP, "the burst is spent after a warm-up");
    let warm = repeated(minimal_default, &over);
    assert_eq!(
        warm.verdict, XDP_DROP,
        "the minimal limiter's burst is spent after a warm-up"
    );
    // A pass can also mean "not ICMP at all": the IPv6 frame must reach the echo-request
    // limiter, so under the default profile a thousand in a row end in a drop.
    let path = guard(Which::Default)
        .test_run(TestRunOptions {
            data_in: Some(&v6),
            repeat: 1000,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    assert_eq!(
        path.return_value, XDP_DROP,
        "the IPv6 echo request behind two extension headers is not rate-limited: it is not parsed as ICMPv6"
    );

    let tcp = tcp_syn();
    let mut base_repeated = Vec::new();
    let mut base_repeated_kernel = Vec::new();
    let mut base_each = Vec::new();
    // The minimal limiters, per baseline (every one but `Base::Empty`).
    let mut minimal: Vec<(Base, Vec<f64>)> = Base::ALL[1..]
        .iter()
        .map(|&base| (base, Vec::new()))
        .collect();
    println!(
        "per-packet cost: {} runs; {REPEAT} repetitions per repeated case, {DISTINCT_SOURCES} calls per many-source case",
        args.runs
    );
    for run in 1..=args.runs {
        let run_started = Instant::now();
        let base = repeated(empty, &over);
        assert_eq!(base.verdict, XDP_PASS);
        base_repeated.push(base.ns);
        base_repeated_kernel.push(base.kernel_ns);
        let each = if one_call_cases {
            one_call_each(empty).ns
        } else {
            f64::NAN
        };
        base_each.push(each);
        let measure = |program: &Xdp, frame: &[u8], verdict: u32, what: &str| {
            let sample = repeated(program, frame);
            assert_eq!(
                sample.verdict, verdict,
                "{what}: the baseline measured the wrong path"
            );
            sample.ns
        };
        let within = measure(minimal_open, &over, XDP_PASS, "minimal limiter, within");
        let over_ns = measure(minimal_default, &over, XDP_DROP, "minimal limiter, over");
        let tcp_ns = measure(minimal_default, &tcp, XDP_PASS, "minimal limiter, TCP");
        let budget = if one_call_cases {
            one_call_each(minimal_budget).ns
        } else {
            f64::NAN
        };
        let coarse = measure(minimal_coarse, &over, XDP_PASS, "minimal limiter, coarse");
        for (base, samples) in &mut minimal {
            samples.push(match base {
                Base::Empty | Base::MinimalWithin => within,
                Base::MinimalOver => over_ns,
                Base::MinimalTcp => tcp_ns,
                Base::MinimalBudgetSources => budget,
                Base::MinimalCoarseWithin => coarse,
            });
        }
        for case in &mut cases {
            let program = guard(case.policy);
            let sample = match (&case.frame, case.method) {
                (_, Method::Sweep) => sweep(program, &sweep_frames),
                (Some(frame), Method::Repeated) => repeated(program, frame),
                _ => one_call_each(program),
            };
            if let Some(expected) = case.verdict {
                assert_eq!(
                    sample.verdict, expected,
                    "{}: the program returned {} instead of {expected}: the benchmark measured the wrong path",
                    case.name, sample.verdict
                );
            }
            case.samples.push(sample);
        }
        if recon_cases {
            toggled.push(toggle_recon(
                &mut recon_on_maps,
                recon_on,
                &sweep_frames,
                run,
            ));
        }
        println!(
            "  run {run}/{}: empty program {:.1} ns repeated, {:.1} ns one call per frame; minimal limiter {within:.1} ns within, {over_ns:.1} over, {tcp_ns:.1} TCP, {budget:.1} with a budget from 1M sources ({:.1} s)",
            args.runs,
            base.ns,
            each,
            run_started.elapsed().as_secs_f64()
        );
    }
    let base_samples = |base: Base, method: Method| -> &Vec<f64> {
        match (base, method) {
            (Base::Empty, Method::Repeated | Method::Sweep) => &base_repeated,
            (Base::Empty, Method::OneCallEach) => &base_each,
            _ => {
                &minimal
                    .iter()
                    .find(|(b, _)| *b == base)
                    .expect("every baseline is measured")
                    .1
            }
        }
    };

    let mut table = String::new();
    let (repeated, lo, hi) = spread(&base_repeated);
    let (each, each_lo, each_hi) = spread(&base_each);
    let _ = writeln!(
        table,
        "baselines (ns/packet, median and range):\n  empty XDP program: {repeated:.1} repeated ({lo:.1}-{hi:.1}), {each:.1} one call per frame ({each_lo:.1}-{each_hi:.1})",
    );
    let mut json_bases = Vec::new();
    for (base, samples) in &minimal {
        let (ns, lo, hi) = spread(samples);
        let empties = if *base == Base::MinimalBudgetSources {
            &base_each
        } else {
            &base_repeated
        };
        let over_empty: Vec<f64> = samples.iter().zip(empties).map(|(ns, e)| ns / e).collect();
        let _ = writeln!(
            table,
            "  {}: {ns:.1} ({lo:.1}-{hi:.1}), {:.2}x empty",
            base.name(),
            spread(&over_empty).0
        );
        json_bases.push(json!({
            "id": base.id(),
            "name": base.name(),
            "ns_per_packet": samples,
            "median_ns": ns,
            "ratio_to_empty": over_empty,
        }));
    }
    let _ = writeln!(
        table,
        "{:<48} {:>9} {:>7} {:>13} {:>5} {:>13} {:>13}",
        "case", "ns/packet", "x empty", "versus", "x", "spread", "target"
    );
    let mut json_cases = Vec::new();
    for case in &cases {
        let ns: Vec<f64> = case.samples.iter().map(|sample| sample.ns).collect();
        let kernel_ns: Vec<f64> = case.samples.iter().map(|sample| sample.kernel_ns).collect();
        let ratios_to = |base: Base| -> Vec<f64> {
            ns.iter()
                .zip(base_samples(base, case.method))
                .map(|(ns, base)| ns / base)
                .collect()
        };
        let to_empty = ratios_to(Base::Empty);
        let to_versus = ratios_to(case.versus);
        let empty_ratio = spread(&to_empty).0;
        let (ratio, lo, hi) = spread(&to_versus);
        let median_ns = spread(&ns).0;
        let target = case.target.map_or_else(String::new, |target| {
            let verdict = if ratio <= target { "met" } else { "MISSED" };
            format!("<={target} {verdict}")
        });
        let _ = writeln!(
            table,
            "{:<48} {:>9.1} {:>7.2} {:>13} {:>5.2} {:>13} {:>13}",
            case.name,
            median_ns,
            empty_ratio,
            case.versus.short(),
            ratio,
            format!("{lo:.2}-{hi:.2}"),
            target
        );
        json_cases.push(json!({
            "id": case.id,
            "name": case.name,
            "policy": match case.policy {
                Which::Default => "default profile (echo request 100/s per source, burst 200)",
                Which::Open => "echo request limited at 100,000,000/s, burst 100,000,000 (never reached)",
                Which::Pass => "default profile with echo request passed without a limit",
                Which::Global => "echo request limited by one global bucket, 100,000,000/s, burst 100,000,000",
                Which::OpenLocks => "as open, in the spin-lock variant (kernels before 5.12)",
                Which::ReconOn => "as open, [recon] enabled = \"on\", sweep_threshold and prefix_threshold 1024",
                Which::ReconOff => "as open, [recon] enabled = \"off\", sweep_threshold and prefix_threshold 1024",
                Which::ReconOnNoPrefix => "as open, [recon] enabled = \"on\", sweep_threshold 1024, prefix_threshold 0 (no prefix sketch)",
            },
            "method": match case.method {
                Method::Repeated => "one frame repeated in the kernel",
                Method::OneCallEach => "one BPF_PROG_TEST_RUN call per frame",
                Method::Sweep => "256 frames (one source, 203.0.113.0/24), one call each repeating it 3906 times, timed by the kernel",
            },
            "verdict_checked": case.verdict.map(|v| if v == XDP_PASS { "pass" } else { "drop" }),
            "ns_per_packet": ns,
            "kernel_reported_ns_per_packet": kernel_ns,
            "thread_cpu_ns_per_packet": case.samples.iter().map(|sample| sample.thread_cpu_ns).collect::<Vec<_>>(),
            "ratio_to_empty": to_empty,
            "versus": case.versus.id(),
            "ratio_to_versus": to_versus,
            "median_ns": median_ns,
            "median_ratio_to_empty": empty_ratio,
            "median_ratio": ratio,
            "min_ratio": lo,
            "max_ratio": hi,
            "target_ratio": case.target,
            "target_met": case.target.map(|target| ratio <= target),
        }));
    }
    let mut recon = recon_cost(&cases);
    if let Some(recon) = &mut recon {
        let toggled_cost = toggled_cost(&toggled);
        recon.line.push('\n');
        recon.line.push_str(&toggled_cost.line);
        recon.json["toggled"] = toggled_cost.json;
        let _ = writeln!(table, "{}", recon.line);
    }
    let _ = writeln!(
        table,
        "(median of {} runs; x = ratio to the baseline named under versus, per run; spread = its lowest-highest; the many-source cases and their baselines make one call per frame)",
        args.runs
    );
    print!("{table}");
    println!(
        "per-packet benchmark took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if let Some(path) = args.json {
        let report: Value = json!({
            "runs": args.runs,
            "repeat": REPEAT,
            "distinct_sources": DISTINCT_SOURCES,
            "baseline": {
                "repeated_ns": base_repeated,
                "repeated_kernel_reported_ns": base_repeated_kernel,
                "one_call_each_ns": base_each,
                "median_repeated_ns": repeated,
                "median_one_call_each_ns": each,
            },
            "baselines": json_bases,
            "cases": json_cases,
            "sweep_detection": recon.map(|recon| recon.json),
            "table": table,
        });
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("creating the JSON directory");
        }
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&report).expect("JSON") + "\n",
        )
        .unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
    }
}
