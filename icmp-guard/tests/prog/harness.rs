//! The one BPF_PROG_TEST_RUN harness: the real XDP program, loaded into the running kernel
//! with private maps (nothing pinned, nothing attached), a policy applied, frames run
//! through it, its counters read back.
//!
//! With `ICMP_GUARD_NEGATIVE_CONTROL=1` (the kernel matrix's `--negative-control`) every
//! load is of a program with a missing bounds check instead, which every verifier must
//! reject: each test that loads the program then fails the way it would if icmp-guard
//! itself were rejected, and so must the suite.

use std::{net::Ipv4Addr, time::Duration};

use aya::{
    Ebpf,
    maps::RingBuf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use icmp_guard::{
    bpf::{self, GuardMaps, Instance, Variant},
    observe::events::EventReader,
    observe::stats::{self, Snapshot},
    policy::{self, LimiterState, Policy, RuleSpec},
};
use icmp_guard_common::{DropReason, maps};
pub use icmp_guard_lab::gate::{privileged, skip};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Set to `1` to load the broken program of the negative control instead of icmp-guard.
pub const NEGATIVE_CONTROL: &str = "ICMP_GUARD_NEGATIVE_CONTROL";

/// What a frame must get: passed, or dropped and counted for a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Pass,
    Drop(DropReason),
}

/// One run of the program.
pub struct Run {
    /// The XDP action it returned.
    pub action: u32,
    /// The frame as it left the program.
    pub data_out: Vec<u8>,
}

/// The loaded program with its maps.
pub struct Guard {
    ebpf: Ebpf,
    pub maps: GuardMaps,
}

impl Guard {
    /// The program with `policy` applied.
    pub fn load(policy: &Policy) -> Self {
        Self::with_broadcasts(policy, &[])
    }

    /// The program with `policy` applied and `broadcasts` as the directed broadcasts of
    /// the interface.
    pub fn with_broadcasts(policy: &Policy, broadcasts: &[Ipv4Addr]) -> Self {
        Self::instance(policy, broadcasts, Instance::UNATTACHED)
    }

    /// The program instance of an interface kind (where frames start) with `policy`
    /// applied and `broadcasts` as the directed broadcasts of its slot.
    pub fn instance(policy: &Policy, broadcasts: &[Ipv4Addr], instance: Instance) -> Self {
        if std::env::var_os(NEGATIVE_CONTROL).is_some_and(|value| value == "1") {
            crate::verifier::load_the_negative_control();
        }
        let mut ebpf = bpf::load_instance(None, bpf::Capacity::default(), instance)
            .expect("the XDP program loads and passes the verifier");
        let mut maps = GuardMaps::take(&mut ebpf).expect("the object declares every map");
        maps.set_unattached_broadcasts(broadcasts)
            .expect("write the directed broadcasts");
        let mut guard = Self { ebpf, maps };
        guard.apply(policy);
        guard
    }

    /// `instance` (its variant, its link kind) with `policy` applied.
    pub fn variant(instance: Instance, policy: &Policy) -> Self {
        Self::instance(policy, &[], instance)
    }

    /// Each variant of the program the running kernel can load, with `policy` applied:
    /// the one with compare-and-exchange only where the kernel has it (5.12+), the one
    /// with spin locks everywhere.
    pub fn every_variant(policy: &Policy) -> Vec<(Variant, Self)> {
        let mut variants = vec![Variant::Locks];
        if Variant::Auto.resolved() == Variant::Atomics {
            variants.insert(0, Variant::Atomics);
        }
        variants
            .into_iter()
            .map(|variant| {
                let guard = Self::variant(Instance::UNATTACHED.with_variant(variant), policy);
                (variant, guard)
            })
            .collect()
    }

    /// Swaps the whole policy, as `policy apply` does: limiters whose settings did not
    /// change keep their state.
    pub fn apply(&mut self, policy: &Policy) {
        policy::apply(&mut self.maps, policy).expect("apply the policy");
    }

    /// Swaps the whole policy with every limiter starting fresh, as `policy reset` does.
    pub fn apply_fresh(&mut self, policy: &Policy) {
        policy::apply_with(&mut self.maps, policy, LimiterState::Fresh).expect("apply");
    }

    pub fn program(&mut self) -> &Xdp {
        self.program_and_maps().0
    }

    /// The program and the maps at once, for runs on other threads while the maps change.
    pub fn program_and_maps(&mut self) -> (&Xdp, &mut GuardMaps) {
        let program = bpf::xdp_program(&mut self.ebpf).expect("the object has the XDP program");
        (program, &mut self.maps)
    }

    /// The `EVENTS` ring buffer, read as the CLI reads it.
    pub fn take_events(&mut self) -> EventReader {
        let ring = self
            .ebpf
            .take_map(maps::EVENTS)
            .map(RingBuf::try_from)
            .expect("the object declares EVENTS")
            .expect("EVENTS is a ring buffer");
        EventReader::from_ring(ring)
    }

    /// Runs one frame (at least 14 bytes: BPF_PROG_TEST_RUN refuses shorter ones).
    pub fn run(&mut self, frame: &[u8]) -> Run {
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        Run {
            action: result.return_value,
            data_out: out,
        }
    }

    /// Runs one frame; the XDP action.
    pub fn action(&mut self, frame: &[u8]) -> u32 {
        repeat(self.program(), frame, 1)
    }

    /// Runs `frame` `times` times in one call; returns the last action and the wall-clock
    /// time the call took.
    pub fn repeat(&mut self, frame: &[u8], times: u32) -> (u32, Duration) {
        let started = std::time::Instant::now();
        let action = repeat(self.program(), frame, times);
        (action, started.elapsed())
    }

    /// Every counter, summed over CPUs.
    pub fn snapshot(&self) -> Snapshot {
        stats::read(&self.maps).expect("read the counters")
    }

    /// Runs a frame that must pass untouched, byte for byte.
    pub fn assert_passes_unchanged(&mut self, frame: &[u8], what: &str) {
        let run = self.run(frame);
        assert_eq!(run.action, XDP_PASS, "{what} must pass");
        assert_eq!(run.data_out, frame, "{what} must come back byte-identical");
    }

    /// Runs a frame and checks its verdict and that the counter of its (family, type) and
    /// outcome moved by one.
    pub fn expect(&mut self, what: &str, frame: &[u8], family: u8, icmp_type: u8, expect: Expect) {
        let before = self.snapshot().of(family, icmp_type);
        let action = self.run(frame).action;
        let after = self.snapshot().of(family, icmp_type);
        match expect {
            Expect::Pass => {
                assert_eq!(action, XDP_PASS, "{what}: expected pass");
                assert_eq!(
                    after.passed(),
                    before.passed() + 1,
                    "{what}: counted as passed"
                );
            }
            Expect::Drop(reason) => {
                assert_eq!(
                    action,
                    XDP_DROP,
                    "{what}: expected a {} drop",
                    reason.name()
                );
                assert_eq!(
                    after.dropped(reason),
                    before.dropped(reason) + 1,
                    "{what}: counted as {}",
                    reason.name()
                );
            }
        }
    }
}

/// `policy` with `rules` set, each (family, type, one code or every code, rule), forced
/// past the protection of the messages that must never be dropped: a test says what it
/// means.
pub fn with_rules(mut policy: Policy, rules: &[(u8, u8, Option<u8>, RuleSpec)]) -> Policy {
    for &(family, icmp_type, code, rule) in rules {
        policy
            .set(family, icmp_type, code, rule, true)
            .unwrap_or_else(|err| panic!("{family}/{icmp_type}/{code:?}: {err}"));
    }
    policy
}

/// A policy that passes every type but `drops`, (family, type) each, so that a test
/// states only the rules it is about.
pub fn pass_all_but(drops: &[(u8, u8)]) -> Policy {
    let rules: Vec<_> = drops
        .iter()
        .map(|&(family, icmp_type)| (family, icmp_type, None, RuleSpec::DROP))
        .collect();
    with_rules(Policy::pass_all(), &rules)
}

/// `frame` through `program` `times` times in one BPF_PROG_TEST_RUN; the last action.
pub fn repeat(program: &Xdp, frame: &[u8], times: u32) -> u32 {
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: times,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

/// Pins the calling thread to `cpu`: BPF_PROG_TEST_RUN runs the program on the caller's
/// CPU, so every packet of a flood is charged to that CPU's per-CPU state.
pub fn pin_to_cpu(cpu: usize) {
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
