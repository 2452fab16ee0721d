//! The drop log of `run`: a few sampled drops a second, the rest summed up.

use std::{collections::HashMap, time::Instant};

use icmp_guard::{
    error::Result,
    guard::{EventTap, Guard, Tapped},
    net,
    observe::events::{DropLog, LogDecision, drop_reason, monotonic_ns},
};

use crate::cli::render::{clock, events::drop_line};

/// Drains the sampled events (holding them only while it drains), prints a few dropped ones
/// a second and sums up the rest. Skips a drain while `top` reads the events. Events from
/// before the service started (left in the ring buffer) are never printed as news.
pub struct DropLogger {
    /// CLOCK_MONOTONIC at start, the clock of the events' time stamps.
    start_ns: u64,
    log: DropLog,
    tap: EventTap,
    paused: bool,
    last_error: Option<String>,
    /// Interface names by ifindex, looked up once.
    names: HashMap<u32, Option<String>>,
}

impl DropLogger {
    pub fn new(guard: &Guard, lines_per_sec: u32) -> Self {
        Self {
            start_ns: monotonic_ns(),
            log: DropLog::new(lines_per_sec),
            tap: guard.event_tap(),
            paused: false,
            last_error: None,
            names: HashMap::new(),
        }
    }

    pub fn drain(&mut self) {
        if let Err(err) = self.try_drain() {
            let message = err.to_string();
            if self.last_error.as_ref() != Some(&message) {
                complain!("error: drop log: {message}");
                self.last_error = Some(message);
            }
            self.tap.reset();
        }
    }

    fn try_drain(&mut self) -> Result<()> {
        let now = Instant::now();
        if let Some(suppressed) = self.log.roll(now) {
            say!(
                "{} {suppressed} more sampled drops in the last second not shown",
                clock()
            );
        }
        let mut dropped = Vec::new();
        let start_ns = self.start_ns;
        let tapped = self.tap.drain(|event| {
            if drop_reason(&event).is_some() && event.timestamp_ns >= start_ns {
                dropped.push(event);
            }
        })?;
        match tapped {
            Tapped::Busy => {
                if !self.paused {
                    say!(
                        "{} drop log paused: `icmp-guard top` is reading the events",
                        clock()
                    );
                    self.paused = true;
                }
                return Ok(());
            }
            Tapped::Drained { resumed } => {
                if resumed && self.paused {
                    say!("{} drop log resumed", clock());
                }
                self.paused = false;
            }
        }
        for event in dropped {
            if self.log.offer(now) == LogDecision::Print {
                let name = self
                    .names
                    .entry(event.ifindex)
                    .or_insert_with(|| net::interface::ifname(event.ifindex));
                say!("{} {}", clock(), drop_line(&event, name.as_deref()));
            }
        }
        self.last_error = None;
        Ok(())
    }
}
