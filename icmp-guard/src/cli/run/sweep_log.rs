//! The sweep lines of `run`: one line per source (or prefix) sweep detection flags, e.g.
//! "198.51.100.66 swept ≥ 40 addresses in 10 s; its echo requests are blocked for 60 s".

use std::collections::HashSet;

use icmp_guard::{guard::Guard, observe::recon::log_line};

use crate::cli::render::clock;

/// Remembers what it logged; what was flagged before the service started is not news.
#[derive(Default)]
pub struct SweepLogger {
    /// (name, flagged at) of every entry seen.
    seen: HashSet<(String, u64)>,
    started: bool,
}

impl SweepLogger {
    /// Logs the entries flagged since the last call. Errors are left to the other checks of
    /// the loop, which read the same maps.
    pub fn check(&mut self, guard: &Guard) {
        if !guard.has_maps() {
            return;
        }
        let Ok(flagged) = guard.flagged() else {
            return;
        };
        let fresh: Vec<_> = flagged
            .into_iter()
            .filter(|entry| self.seen.insert((entry.name(), entry.flagged_at_ns)))
            .collect();
        if !self.started {
            self.started = true;
            return;
        }
        if fresh.is_empty() {
            return;
        }
        let window = guard
            .policy()
            .map(|live| live.policy.recon.window)
            .unwrap_or_default();
        for entry in fresh.iter().filter(|entry| entry.active()) {
            say!("{} {}", clock(), log_line(entry, window));
        }
    }
}
