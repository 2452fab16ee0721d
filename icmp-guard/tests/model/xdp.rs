//! What the model is compared with: the real XDP program, loaded into the running kernel
//! with private maps, fed one frame at a time through BPF_PROG_TEST_RUN, its counters read
//! back in the model's terms ([`Where`]).

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions},
};
use icmp_guard::{
    bpf::{self, GuardMaps},
    policy::{self, Policy},
};
use icmp_guard_common::{Counter, ICMP_COUNTER_ENTRIES, global};

use super::{COUNTER_SLOTS, Verdict, Where};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The XDP action the model's verdict stands for.
pub fn action_of(verdict: Verdict) -> u32 {
    match verdict {
        Verdict::Pass => XDP_PASS,
        Verdict::Drop => XDP_DROP,
    }
}

/// A loaded program with its own maps, a policy and directed broadcasts.
pub struct Guard {
    ebpf: Ebpf,
    maps: GuardMaps,
}

/// One run of the program.
pub struct Run {
    /// The XDP action it returned.
    pub action: u32,
    /// The frame as it left the program.
    pub data_out: Vec<u8>,
}

impl Guard {
    pub fn load(policy: &Policy, broadcasts: &[Ipv4Addr]) -> Self {
        let mut ebpf = bpf::load(None).expect("the XDP program loads and passes the verifier");
        let mut maps = GuardMaps::take(&mut ebpf).expect("the object declares every map");
        maps.set_unattached_broadcasts(broadcasts)
            .expect("write the directed broadcasts");
        policy::apply(&mut maps, policy).expect("apply the policy");
        Self { ebpf, maps }
    }

    /// Runs one frame (at least 14 bytes: BPF_PROG_TEST_RUN refuses shorter ones).
    pub fn run(&mut self, frame: &[u8]) -> Run {
        let program = bpf::xdp_program(&mut self.ebpf).expect("program present");
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
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

    /// One counter, summed over CPUs: a single map lookup.
    pub fn counter(&self, at: Where) -> Counter {
        let index = at.flat_index();
        let icmp_entries = ICMP_COUNTER_ENTRIES as usize;
        if index < icmp_entries {
            self.maps
                .icmp_counter(index as u32)
                .expect("read a counter")
        } else {
            self.maps
                .global_counter((index - icmp_entries) as u32)
                .expect("read a counter")
        }
    }

    /// Every counter, flattened as [`Where::flat_index`] numbers them.
    pub fn counters(&self) -> Vec<Counter> {
        let mut all = Vec::with_capacity(COUNTER_SLOTS);
        for index in 0..ICMP_COUNTER_ENTRIES {
            all.push(self.maps.icmp_counter(index).expect("read a counter"));
        }
        for slot in 0..global::ENTRIES {
            all.push(self.maps.global_counter(slot).expect("read a counter"));
        }
        all
    }
}

/// What the program did with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The XDP action.
    pub action: u32,
    /// Every counter the frame moved: one, unless the program miscounts.
    pub counted: Vec<Where>,
    /// The program passed the frame changed.
    pub modified: bool,
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match self.action {
            XDP_PASS => "PASS".to_owned(),
            XDP_DROP => "DROP".to_owned(),
            other => format!("XDP action {other}"),
        };
        let counted: Vec<String> = self.counted.iter().map(ToString::to_string).collect();
        let counted = if counted.is_empty() {
            "nowhere".to_owned()
        } else {
            counted.join(" and ")
        };
        write!(f, "{action}, counted as {counted}")?;
        if self.modified {
            write!(f, ", and the frame came back modified")?;
        }
        Ok(())
    }
}

/// A guard whose counters are followed frame by frame without reading them all each time:
/// a shadow copy of every counter advances by where each frame should be counted, one
/// lookup checks that counter after each run, and [`Tracked::audit`] compares the whole
/// shadow with the kernel now and then (which catches a frame counted twice).
pub struct Tracked {
    guard: Guard,
    shadow: Vec<Counter>,
}

impl Tracked {
    pub fn new(guard: Guard) -> Self {
        let shadow = guard.counters();
        Self { guard, shadow }
    }

    /// Runs `frame`, which should be counted at `predicted`, and reports what the program
    /// did and where it counted the frame.
    pub fn run(&mut self, frame: &[u8], predicted: Where) -> Observed {
        let run = self.guard.run(frame);
        let modified = run.action == XDP_PASS && run.data_out != frame;
        let index = predicted.flat_index();
        let mut expected = self.shadow[index];
        expected.packets += 1;
        expected.bytes += frame.len() as u64;
        let counted = if self.guard.counter(predicted) == expected {
            self.shadow[index] = expected;
            vec![predicted]
        } else {
            // Somewhere else: find where from the whole set, and start again from it.
            let now = self.guard.counters();
            let moved = (0..COUNTER_SLOTS)
                .filter(|&index| now[index] != self.shadow[index])
                .map(Where::from_flat_index)
                .collect();
            self.shadow = now;
            moved
        };
        Observed {
            action: run.action,
            counted,
            modified,
        }
    }

    /// Every counter that differs from the shadow, as (where, kernel, shadow); the shadow
    /// then starts again from the kernel's values.
    pub fn audit(&mut self) -> Vec<(Where, Counter, Counter)> {
        let now = self.guard.counters();
        let drift = (0..COUNTER_SLOTS)
            .filter(|&index| now[index] != self.shadow[index])
            .map(|index| {
                (
                    Where::from_flat_index(index),
                    now[index],
                    self.shadow[index],
                )
            })
            .collect();
        self.shadow = now;
        drift
    }
}
