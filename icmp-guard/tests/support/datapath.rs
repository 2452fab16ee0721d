//! The program with private maps, for the data path's verdict tests (`tests/datapath_*.rs`):
//! load a chosen variant, apply a policy, run frames, read what was counted.

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use icmp_guard::{
    bpf::{self, Capacity, GuardMaps, Instance, Variant},
    observe::stats::{self, Snapshot},
    policy::{self, LimiterState, Policy},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// A loaded program and its private maps.
pub struct Guard {
    pub ebpf: Ebpf,
    pub maps: GuardMaps,
}

impl Guard {
    /// The program the running kernel gets, under `policy`.
    pub fn with(policy: &Policy) -> Self {
        Self::variant(Instance::UNATTACHED, policy)
    }

    /// `instance` (its variant, its link kind) under `policy`.
    pub fn variant(instance: Instance, policy: &Policy) -> Self {
        let mut ebpf = bpf::load_instance(None, Capacity::default(), instance)
            .unwrap_or_else(|err| panic!("loading {:?}: {err:?}", instance.variant));
        let mut maps = GuardMaps::take(&mut ebpf).expect("the object declares every map");
        policy::apply(&mut maps, policy).expect("apply the policy");
        Self { ebpf, maps }
    }

    /// Both variants the running kernel can load, each under `policy`: the one with
    /// compare-and-exchange only where the kernel has it.
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

    /// Applies a new policy, keeping unchanged limiters' state.
    pub fn apply(&mut self, policy: &Policy) {
        policy::apply(&mut self.maps, policy).expect("apply the policy");
    }

    /// Applies a new policy with every limiter fresh, as `policy reset` does.
    pub fn apply_fresh(&mut self, policy: &Policy) {
        policy::apply_with(&mut self.maps, policy, LimiterState::Fresh).expect("apply");
    }

    pub fn program(&mut self) -> &Xdp {
        bpf::xdp_program(&mut self.ebpf).expect("the guard program")
    }

    /// Runs `frame` once; returns the XDP action.
    pub fn run(&mut self, frame: &[u8]) -> u32 {
        self.run_repeated(frame, 1)
    }

    /// Runs `frame` `repeat` times in one call; returns the last XDP action.
    pub fn run_repeated(&mut self, frame: &[u8], repeat: u32) -> u32 {
        self.program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN")
            .return_value
    }

    pub fn snapshot(&self) -> Snapshot {
        stats::read(&self.maps).expect("read the counters")
    }
}

/// Pins the calling thread to `cpu` (BPF_PROG_TEST_RUN runs the program on the caller's
/// CPU).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get
    // valid pointers to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set),
            0,
            "pinning to CPU {cpu}"
        );
    }
}
