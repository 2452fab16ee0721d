//! Per-packet cost of the XDP program, as a ratio to an empty XDP program measured in the
//! same run (these machines are noisy; only ratios travel). A benchmark with its own
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
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use icmp_guard::{
    bpf::{self, GuardMaps},
    policy::{self, Limit, Per, Policy, RuleSpec, model::MAX_RATE},
};
use icmp_guard_common::{BASELINE_PROGRAM_NAME, FAMILY_V4, FAMILY_V6, PROGRAM_NAME};
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
        verdict: result.return_value,
    }
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
        verdict,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    /// One frame, `REPEAT` times in one call.
    Repeated,
    /// `DISTINCT_SOURCES` frames, one call each.
    OneCallEach,
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
}

struct Case {
    id: &'static str,
    name: &'static str,
    policy: Which,
    method: Method,
    frame: Option<Vec<u8>>,
    /// The verdict the last packet must get; `None` when it may vary.
    verdict: Option<u32>,
    /// The issue's target, as a ratio to the empty program.
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
            target: None,
            samples: Vec::new(),
        }
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            verdict: Some(XDP_PASS),
            target: Some(1.5),
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
            verdict: Some(XDP_DROP),
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
            target: Some(2.0),
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
        Case {
            verdict: Some(XDP_PASS),
            target: Some(1.2),
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

/// The program loaded with private maps holding `policy`.
fn guard_with(policy: &Policy) -> Ebpf {
    let mut ebpf = bpf::load(None).expect("load the XDP program (run as root)");
    let mut maps = GuardMaps::take(&mut ebpf).expect("maps");
    policy::apply(&mut maps, policy).expect("apply the policy");
    ebpf
}

fn program<'a>(ebpf: &'a Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name)
        .unwrap_or_else(|| panic!("program {name} not in the object"))
        .try_into()
        .expect("an XDP program")
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

struct Args {
    runs: usize,
    json: Option<PathBuf>,
}

fn args() -> Args {
    let mut parsed = Args {
        runs: DEFAULT_RUNS,
        json: None,
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
            "--bench" => {} // passed by `cargo bench`-style runners; nothing to do
            other => panic!("unknown argument {other}; usage: bench [--runs N] [--json FILE]"),
        }
    }
    parsed
}

fn main() {
    let args = args();
    let started = Instant::now();
    let mut default_guard = guard_with(&Policy::default_profile());
    let open_guard = guard_with(&open_policy());
    let pass_guard = guard_with(&pass_policy());
    let global_guard = guard_with(&global_policy());
    let baseline: &mut Xdp = default_guard
        .program_mut(BASELINE_PROGRAM_NAME)
        .expect("baseline program")
        .try_into()
        .expect("XDP");
    baseline.load().expect("load the baseline");
    let baseline = program(&default_guard, BASELINE_PROGRAM_NAME);
    let guard = |which: Which| match which {
        Which::Default => program(&default_guard, PROGRAM_NAME),
        Which::Open => program(&open_guard, PROGRAM_NAME),
        Which::Pass => program(&pass_guard, PROGRAM_NAME),
        Which::Global => program(&global_guard, PROGRAM_NAME),
    };

    let mut cases = cases();
    // Spend the default policy's burst for the over-limit case before anything is timed.
    let over = echo_v4(OUR_MAC, SOURCE_V4, OUR_V4);
    let warm = repeated(guard(Which::Default), &over);
    assert_eq!(warm.verdict, XDP_DROP, "the burst is spent after a warm-up");
    // A pass can also mean "not ICMP at all": the IPv6 frame must reach the echo-request
    // limiter, so under the default profile a thousand in a row end in a drop.
    let v6 = echo_v6_two_extension_headers();
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

    let mut base_repeated = Vec::new();
    let mut base_repeated_kernel = Vec::new();
    let mut base_each = Vec::new();
    println!(
        "per-packet cost: {} runs; {REPEAT} repetitions per repeated case, {DISTINCT_SOURCES} calls per many-source case",
        args.runs
    );
    for run in 1..=args.runs {
        let run_started = Instant::now();
        let base = repeated(baseline, &over);
        assert_eq!(base.verdict, XDP_PASS);
        base_repeated.push(base.ns);
        base_repeated_kernel.push(base.kernel_ns);
        let each = one_call_each(baseline);
        base_each.push(each.ns);
        for case in &mut cases {
            let program = guard(case.policy);
            let sample = match (&case.frame, case.method) {
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
        println!(
            "  run {run}/{}: empty program {:.1} ns repeated, {:.1} ns one call per frame ({:.1} s)",
            args.runs,
            base.ns,
            each.ns,
            run_started.elapsed().as_secs_f64()
        );
    }

    let mut table = String::new();
    let (repeated, lo, hi) = spread(&base_repeated);
    let (each, each_lo, each_hi) = spread(&base_each);
    let _ = writeln!(
        table,
        "empty XDP program: {repeated:.1} ns/packet repeated ({lo:.1}-{hi:.1}), {each:.1} ns/packet one call per frame ({each_lo:.1}-{each_hi:.1})",
    );
    let _ = writeln!(
        table,
        "{:<48} {:>9} {:>7} {:>13} {:>9}",
        "case", "ns/packet", "x empty", "spread", "target"
    );
    let mut json_cases = Vec::new();
    for case in &cases {
        let bases = match case.method {
            Method::Repeated => &base_repeated,
            Method::OneCallEach => &base_each,
        };
        let ns: Vec<f64> = case.samples.iter().map(|sample| sample.ns).collect();
        let kernel_ns: Vec<f64> = case.samples.iter().map(|sample| sample.kernel_ns).collect();
        let ratios: Vec<f64> = ns.iter().zip(bases).map(|(ns, base)| ns / base).collect();
        let (ratio, lo, hi) = spread(&ratios);
        let median_ns = spread(&ns).0;
        let target = case.target.map_or_else(String::new, |target| {
            let verdict = if ratio <= target { "met" } else { "MISSED" };
            format!("<={target} {verdict}")
        });
        let _ = writeln!(
            table,
            "{:<48} {:>9.1} {:>7.2} {:>13} {:>9}",
            case.name,
            median_ns,
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
            },
            "method": match case.method {
                Method::Repeated => "one frame repeated in the kernel",
                Method::OneCallEach => "one BPF_PROG_TEST_RUN call per frame",
            },
            "verdict_checked": case.verdict.map(|v| if v == XDP_PASS { "pass" } else { "drop" }),
            "ns_per_packet": ns,
            "kernel_reported_ns_per_packet": kernel_ns,
            "ratio_to_empty": ratios,
            "median_ns": median_ns,
            "median_ratio": ratio,
            "min_ratio": lo,
            "max_ratio": hi,
            "target_ratio": case.target,
            "target_met": case.target.map(|target| ratio <= target),
        }));
    }
    let _ = writeln!(
        table,
        "(median of {} runs; spread = lowest-highest ratio; the many-source cases are compared with the empty program called once per frame)",
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
            "cases": json_cases,
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
