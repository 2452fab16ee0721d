//! The trace build (`icmp-guard trace`) through BPF_PROG_TEST_RUN: the same verdicts as the
//! production build, one report per matching packet through aya-log, none outside the
//! filter or after the deadline; and the production object carries no logging at all.

use std::sync::{Arc, Mutex};

use aya::programs::{TestRun as _, TestRunOptions};
use aya_log::EbpfLogger;
use icmp_guard::{
    bpf::{self, GuardMaps, Instance, trace as bpf_trace},
    observe::trace::TraceLine,
    policy::{self, Policy},
};
use icmp_guard_common::{
    FAMILY_V4,
    trace::{ANY, TYPE_V4, TYPE_V6, TraceConfig},
};

use crate::{
    frames::{V4_PEER, icmpv4_frame},
    harness::{self, XDP_DROP, XDP_PASS},
};

/// aya-log's records, kept for the test.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<String>>>);

impl log::Log for Records {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .expect("records")
            .push(record.args().to_string());
    }

    fn flush(&self) {}
}

fn timestamp_dropped() -> Policy {
    harness::pass_all_but(&[(FAMILY_V4, 13)])
}

#[test]
fn the_production_object_carries_no_logging_and_the_trace_build_does() {
    let production = aya_obj::Object::parse(icmp_guard::ebpf_object()).expect("parse");
    let trace = aya_obj::Object::parse(icmp_guard::trace_object()).expect("parse");
    for name in ["AYA_LOGS", "TRACE", "TRACE_LOG", "TRACE_RECORD"] {
        assert!(
            !production.maps.contains_key(name),
            "the production object has {name}"
        );
        assert!(
            trace.maps.contains_key(name),
            "the trace object lacks {name}"
        );
    }
    assert!(
        production
            .programs
            .keys()
            .all(|name| !name.starts_with("icmp_trace")),
        "{:?}",
        production.programs.keys()
    );
    for name in ["icmp_trace", "icmp_trace_lock", "icmp_trace_log"] {
        assert!(
            trace.programs.contains_key(name),
            "the trace object lacks {name}"
        );
    }
    // The trace build pins nothing of its own: every map the guard pins is in both.
    for name in icmp_guard_common::maps::ALL {
        assert!(
            trace.maps.contains_key(name),
            "the trace object lacks {name}"
        );
    }
}

#[test]
fn the_trace_build_decides_as_production_does_and_reports_each_matching_packet() {
    root_or_skip!("the_trace_build_decides_as_production_does_and_reports_each_matching_packet");
    let policy = timestamp_dropped();
    let mut production = harness::Guard::load(&policy);
    let mut ebpf = bpf::load_trace_instance(None, Instance::UNATTACHED)
        .expect("the trace build loads and passes the verifier");
    let mut maps = GuardMaps::take(&mut ebpf).expect("the trace object declares every map");
    policy::apply(&mut maps, &policy).expect("apply the policy");
    let records = Records::default();
    let mut logger =
        EbpfLogger::init_with_logger(&mut ebpf, records.clone()).expect("the trace logs");
    let configure = |ebpf: &mut aya::Ebpf, config: TraceConfig| {
        bpf_trace::configure(ebpf, &config).expect("write TRACE");
    };
    let live = TraceConfig {
        deadline_ns: bpf_trace::monotonic_ns() + 60_000_000_000,
        family: ANY,
        ..TraceConfig::default()
    };
    let run = |ebpf: &mut aya::Ebpf, frame: &[u8]| -> u32 {
        let program = bpf_trace::program(ebpf).expect("the trace program");
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN")
            .return_value
    };
    let lines = |logger: &mut EbpfLogger<Records>| -> Vec<String> {
        logger.flush();
        std::mem::take(&mut *records.0.lock().expect("records"))
            .iter()
            .map(|record| {
                TraceLine::parse(record)
                    .unwrap_or_else(|| panic!("not a trace line: {record}"))
                    .to_string()
            })
            .collect()
    };
    configure(&mut ebpf, live);
    let echo = icmpv4_frame(8, 0);
    let timestamp = icmpv4_frame(13, 0);
    for frame in [&echo, &timestamp] {
        assert_eq!(
            run(&mut ebpf, frame),
            production.action(frame),
            "the same verdict"
        );
    }
    assert_eq!(production.action(&echo), XDP_PASS);
    assert_eq!(production.action(&timestamp), XDP_DROP);
    let reported = lines(&mut logger);
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert!(
        reported[0].contains("v4 echo-request/0 passed by "),
        "{reported:?}"
    );
    assert!(
        reported[1].ends_with("v4 timestamp-request/0 dropped (policy) by type/code rule: drop"),
        "{reported:?}"
    );
    // Another type: filtered out in the kernel, same verdict.
    configure(
        &mut ebpf,
        TraceConfig {
            type_v4: 13,
            type_v6: 128,
            types: TYPE_V4 | TYPE_V6,
            ..live
        },
    );
    assert_eq!(run(&mut ebpf, &echo), XDP_PASS);
    assert_eq!(lines(&mut logger), Vec::<String>::new());
    assert_eq!(run(&mut ebpf, &timestamp), XDP_DROP);
    assert_eq!(lines(&mut logger).len(), 1);
    // Its source, then another source: only the first is reported.
    let mut peer = [0u8; 16];
    peer[..4].copy_from_slice(&V4_PEER);
    configure(
        &mut ebpf,
        TraceConfig {
            family: FAMILY_V4,
            source: peer,
            prefix_len: 32,
            ..live
        },
    );
    assert_eq!(run(&mut ebpf, &timestamp), XDP_DROP);
    assert_eq!(lines(&mut logger).len(), 1);
    configure(
        &mut ebpf,
        TraceConfig {
            family: FAMILY_V4,
            source: [203, 0, 113, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            prefix_len: 24,
            ..live
        },
    );
    assert_eq!(run(&mut ebpf, &timestamp), XDP_DROP);
    assert_eq!(lines(&mut logger), Vec::<String>::new());
    // After the deadline: nothing reported, and still the guard.
    configure(
        &mut ebpf,
        TraceConfig {
            deadline_ns: bpf_trace::monotonic_ns(),
            ..live
        },
    );
    assert_eq!(run(&mut ebpf, &echo), XDP_PASS);
    assert_eq!(run(&mut ebpf, &timestamp), XDP_DROP);
    assert_eq!(lines(&mut logger), Vec::<String>::new());
}
