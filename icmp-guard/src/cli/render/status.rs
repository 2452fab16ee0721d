//! `status` as text and as JSON, and the lines of `status --check`.

use std::fmt::Write as _;

use icmp_guard::{
    guard::{Check, State, Status},
    host::kernel_view::KernelView,
};

/// The `status --json` document.
pub fn json(status: &Status, kernel: &KernelView) -> serde_json::Result<String> {
    let document = serde_json::json!({
        "attached": status.attached(),
        "pin_dir": status.pin_dir,
        "netns": status.netns,
        "maps": status.maps,
        "mode": status.mode,
        "revision": status.revision,
        "interfaces": status.interfaces,
        "tracked": status.tracked,
        "lists": status.lists,
        "blocked_sources": status.blocked,
        "elsewhere": status.elsewhere,
        "problems": status.problems,
        "kernel": kernel,
    });
    serde_json::to_string_pretty(&document)
}

/// `status` as text.
pub fn text(status: &Status, kernel: &KernelView) -> String {
    let mut out = String::new();
    if status.interfaces.is_empty() {
        let _ = writeln!(
            out,
            "not attached in this network namespace (pin dir {})",
            status.pin_dir.display()
        );
    } else {
        let _ = writeln!(
            out,
            "mode: {}    policy revision: {}    pin dir: {}",
            status.mode.unwrap_or("unknown"),
            status
                .revision
                .map_or_else(|| "unknown".to_owned(), |r| r.to_string()),
            status.pin_dir.display()
        );
    }
    if let Some(tracked) = status.tracked {
        let _ = writeln!(
            out,
            "rate-limit buckets (estimated): {} of {} sources, {} of {} prefixes",
            tracked.sources, tracked.sources_capacity, tracked.prefixes, tracked.prefixes_capacity
        );
        if tracked.recon_untracked != 0 {
            let _ = writeln!(
                out,
                "sweep detection: {} new sources or prefixes went untracked (their set of sketches held two flagged ones)",
                tracked.recon_untracked
            );
        }
    }
    if let Some(blocked) = status.blocked {
        let _ = writeln!(
            out,
            "blocked sources (block time): {blocked}{}",
            if blocked > 0 {
                " (`icmp-guard unblock CIDR|--all` lifts them)"
            } else {
                ""
            }
        );
    }
    if let Some(lists) = status.lists {
        let _ = writeln!(
            out,
            "lists: {} of {} IPv4 prefixes, {} of {} IPv6 prefixes",
            lists.v4, lists.capacity_v4, lists.v6, lists.capacity_v6
        );
    }
    for interface in &status.interfaces {
        let name = interface.name.as_deref().unwrap_or("<gone>");
        let mode = match (&interface.multiprog, interface.mode) {
            (Some(_), _) => "multiprog",
            (None, mode) => mode.map_or("-", |m| m.as_str()),
        };
        let ifindex = interface
            .ifindex
            .map_or_else(|| "-".to_owned(), |i| i.to_string());
        let mut line = format!(
            "{name:<16} ifindex {ifindex:<5} {:<11} {mode:<8}",
            interface.state.as_str()
        );
        if let Some(kind) = interface.link_kind {
            let _ = write!(line, " {kind:<8}");
        }
        if let (Some(program), Some(link)) = (interface.program_id, interface.link_id) {
            let _ = write!(line, " program {program} link {link}");
        }
        if let (Some(program), None) = (interface.program_id, interface.link_id) {
            let _ = write!(line, " program {program}");
        }
        let _ = writeln!(out, "{}", line.trim_end());
        if let Some(member) = &interface.multiprog {
            let programs: Vec<String> = member
                .programs
                .iter()
                .map(|(name, priority)| format!("{name} ({priority})"))
                .collect();
            let _ = writeln!(
                out,
                "  priority {}: program {} of {} in libxdp dispatcher {} ({} mode), run order: {}",
                member.priority,
                member.position + 1,
                member.programs.len(),
                member.dispatcher_id,
                interface.mode.map_or("unknown", |m| m.as_str()),
                programs.join(", ")
            );
        }
        if let Some(recon) = interface.recon {
            let _ = writeln!(out, "  recon: {recon}");
        }
        if let Some(until) = &interface.tracing_until {
            let _ = writeln!(
                out,
                "  tracing until {until} (`icmp-guard trace` runs the trace build there)"
            );
        }
        if let Some(reason) = &interface.reason {
            let _ = writeln!(out, "  {reason}");
        }
        if let Some(repair) = &interface.repair {
            let _ = writeln!(out, "  repair: {repair}");
        }
    }
    for other in &status.elsewhere {
        match other.netns {
            Some(netns) => {
                let _ = writeln!(
                    out,
                    "the pin dir also holds {} link(s) of network namespace {netns} (not shown: run status there)",
                    other.links
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "the pin dir also holds {} link(s) an older icmp-guard pinned without their network namespace",
                    other.links
                );
            }
        }
    }
    for problem in &status.problems {
        let _ = writeln!(out, "problem: {problem}");
    }
    out.push_str(&super::kernel_view::kernel_view(kernel));
    out
}

/// The lines of `status --check`.
pub fn check(check: &Check) -> String {
    let mut out = String::new();
    for line in &check.lines {
        let verdict = match line.state {
            State::Protected => "protected",
            State::Damaged => "DAMAGED",
            _ => "NOT PROTECTED",
        };
        let _ = write!(out, "{}: {verdict}", line.interface);
        if line.state != State::Protected {
            let _ = write!(out, " ({}", line.state.as_str());
            if let Some(reason) = &line.reason {
                let _ = write!(out, ": {reason}");
            }
            out.push(')');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use icmp_guard::guard::Tracked;

    fn status(recon_untracked: u64) -> Status {
        Status {
            pin_dir: "/sys/fs/bpf/icmp-guard".into(),
            netns: 1,
            maps: "complete",
            mode: Some("enforce"),
            revision: Some(1),
            tracked: Some(Tracked {
                estimated: true,
                sources: 3,
                sources_capacity: 65_536,
                prefixes: 1,
                prefixes_capacity: 16_384,
                recon_untracked,
            }),
            lists: None,
            blocked: None,
            interfaces: Vec::new(),
            elsewhere: Vec::new(),
            problems: Vec::new(),
        }
    }

    #[test]
    fn sources_sweep_detection_could_not_track_are_said_and_in_the_json() {
        let kernel = KernelView::default();
        let shown = text(&status(48), &kernel);
        assert!(
            shown.contains("sweep detection: 48 new sources or prefixes went untracked"),
            "{shown}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&json(&status(48), &kernel).expect("json")).expect("parse");
        assert_eq!(json["tracked"]["recon_untracked"], 48);
        // None untracked: no line.
        assert!(!text(&status(0), &kernel).contains("untracked"));
    }
}
