//! What the model is compared with: the real XDP program, loaded into the running kernel
//! with private maps, fed one frame at a time through BPF_PROG_TEST_RUN, its counters read
//! back in the model's terms ([`Where`]).

use std::net::Ipv4Addr;

use icmp_guard::policy::Policy;
use icmp_guard_common::{Counter, ICMP_COUNTER_ENTRIES, global};

use super::{COUNTER_SLOTS, Verdict, Where};
use crate::harness::{Guard, XDP_DROP, XDP_PASS};

/// The XDP action the model's verdict stands for.
pub fn action_of(verdict: Verdict) -> u32 {
    match verdict {
        Verdict::Pass => XDP_PASS,
        Verdict::Drop => XDP_DROP,
    }
}

/// One counter, summed over CPUs: a single map lookup.
fn counter(guard: &Guard, at: Where) -> Counter {
    let index = at.flat_index();
    let icmp_entries = ICMP_COUNTER_ENTRIES as usize;
    if index < icmp_entries {
        guard
            .maps
            .icmp_counter(index as u32)
            .expect("read a counter")
    } else {
        guard
            .maps
            .global_counter((index - icmp_entries) as u32)
            .expect("read a counter")
    }
}

/// Every counter, flattened as [`Where::flat_index`] numbers them.
fn counters(guard: &Guard) -> Vec<Counter> {
    let mut all = Vec::with_capacity(COUNTER_SLOTS);
    for index in 0..ICMP_COUNTER_ENTRIES {
        all.push(guard.maps.icmp_counter(index).expect("read a counter"));
    }
    for slot in 0..global::PACKET_SLOTS {
        all.push(guard.maps.global_counter(slot).expect("read a counter"));
    }
    all
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
    /// The program with `policy` and the directed `broadcasts`.
    pub fn load(policy: &Policy, broadcasts: &[Ipv4Addr]) -> Self {
        let guard = Guard::with_broadcasts(policy, broadcasts);
        let shadow = counters(&guard);
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
        let counted = if counter(&self.guard, predicted) == expected {
            self.shadow[index] = expected;
            vec![predicted]
        } else {
            // Somewhere else: find where from the whole set, and start again from it.
            let now = counters(&self.guard);
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
        let now = counters(&self.guard);
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
