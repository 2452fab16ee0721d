//! Per-packet cost of the XDP program, as a ratio to an empty XDP program in the same run
//! (these machines are noisy; only ratios travel). Run with `cargo xtask bench` as root.
//!
//! Each case feeds frames through BPF_PROG_TEST_RUN and reads the kernel's own timing,
//! which excludes the syscall. Cases with many distinct sources run one frame per call, so
//! the baseline is measured the same way for them.

use std::time::Duration;

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use icmp_guard::{
    loader::{self, GuardMaps},
    policy::{self, Policy},
};
use icmp_guard_common::BASELINE_PROGRAM_NAME;

const REPEAT: u32 = 1_000_000;
const DISTINCT_SOURCES: u32 = 1_000_000;

fn ethernet(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn ipv4(protocol: u8, source: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut packet = vec![0x45, 0];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0, 64, protocol, 0, 0]);
    packet.extend_from_slice(&source);
    packet.extend_from_slice(&[192, 0, 2, 1]);
    packet.extend_from_slice(payload);
    ethernet(0x0800, &packet)
}

fn echo_from(source: [u8; 4]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(&[0xab; 56]);
    ipv4(1, source, &icmp)
}

fn tcp() -> Vec<u8> {
    let mut segment = vec![
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0,
    ];
    segment.extend_from_slice(&[0, 0, 0, 0]);
    ipv4(6, [198, 51, 100, 1], &segment)
}

/// Mean nanoseconds per packet of one frame repeated in the kernel.
fn repeated(program: &Xdp, frame: &[u8]) -> f64 {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: REPEAT,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    result.duration.as_nanos() as f64
}

/// Mean nanoseconds per packet over many frames, one call each.
fn one_each(program: &Xdp, frames: impl Iterator<Item = Vec<u8>>) -> f64 {
    let mut total = Duration::ZERO;
    let mut count = 0u32;
    for frame in frames {
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        total += result.duration;
        count += 1;
    }
    total.as_nanos() as f64 / f64::from(count)
}

fn distinct_sources() -> impl Iterator<Item = Vec<u8>> {
    (0..DISTINCT_SOURCES).map(|index| {
        let bytes = index.to_be_bytes();
        echo_from([10 + bytes[0], bytes[1], bytes[2], bytes[3]])
    })
}

fn main() {
    let mut ebpf = loader::load(None).expect("load the XDP program (run as root)");
    let mut maps = GuardMaps::take(&mut ebpf).expect("maps");
    policy::apply(&mut maps, &Policy::default_profile()).expect("apply the default profile");
    let baseline: &mut Xdp = ebpf
        .program_mut(BASELINE_PROGRAM_NAME)
        .expect("baseline program")
        .try_into()
        .expect("XDP");
    baseline.load().expect("load the baseline");

    let echo = echo_from([198, 51, 100, 7]);
    let tcp = tcp();
    let base_repeat = {
        let program: &Xdp = ebpf
            .program(BASELINE_PROGRAM_NAME)
            .expect("baseline")
            .try_into()
            .expect("XDP");
        repeated(program, &echo)
    };
    let base_each = {
        let program: &Xdp = ebpf
            .program(BASELINE_PROGRAM_NAME)
            .expect("baseline")
            .try_into()
            .expect("XDP");
        one_each(program, distinct_sources())
    };
    let guard: &Xdp = loader::xdp_program(&mut ebpf).expect("program");
    let rows = [
        (
            "TCP (not ICMP), passed untouched",
            repeated(guard, &tcp),
            base_repeat,
        ),
        (
            "echo request, one source (rate-limited)",
            repeated(guard, &echo),
            base_repeat,
        ),
        (
            "echo request, 1,000,000 distinct sources",
            one_each(guard, distinct_sources()),
            base_each,
        ),
    ];
    println!(
        "baseline (empty XDP program): {base_repeat:.1} ns/packet repeated, {base_each:.1} ns/packet one call per frame"
    );
    println!("{:<44} {:>12} {:>10}", "case", "ns/packet", "× empty");
    for (name, cost, base) in rows {
        println!("{name:<44} {cost:>12.1} {:>10.2}", cost / base);
    }
}
