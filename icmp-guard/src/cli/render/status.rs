//! `status` as text and as JSON.

use std::fmt::Write as _;

use icmp_guard::{bpf::PinDir, guard::Status, host::kernel_view::KernelView};

/// The `status --json` document.
pub fn json(pins: &PinDir, status: &Status, kernel: &KernelView) -> serde_json::Result<String> {
    let document = serde_json::json!({
        "attached": !status.links.is_empty(),
        "pin_dir": pins.root(),
        "mode": status.mode,
        "interfaces": status.links,
        "tracked": status.tracked,
        "kernel": kernel,
    });
    serde_json::to_string_pretty(&document)
}

/// `status` as text.
pub fn text(pins: &PinDir, status: &Status, kernel: &KernelView) -> String {
    let mut out = String::new();
    if status.links.is_empty() {
        let _ = writeln!(out, "not attached (pin dir {})", pins.root().display());
        out.push_str(&super::kernel_view::kernel_view(kernel));
        return out;
    }
    let _ = writeln!(
        out,
        "mode: {}    pin dir: {}",
        status.mode.unwrap_or("unknown"),
        pins.root().display()
    );
    if let Some(tracked) = status.tracked {
        let _ = writeln!(
            out,
            "rate-limit buckets: {} of {} sources, {} of {} prefixes",
            tracked.sources, tracked.sources_capacity, tracked.prefixes, tracked.prefixes_capacity
        );
    }
    for link in &status.links {
        let name = link.name.as_deref().unwrap_or("<gone>");
        let xdp = link
            .mode
            .map_or("not running (interface gone or program replaced)", |m| {
                m.as_str()
            });
        let _ = writeln!(
            out,
            "{name:<16} ifindex {:<5} {xdp:<8} program {} link {}",
            link.ifindex, link.program_id, link.link_id
        );
    }
    out.push_str(&super::kernel_view::kernel_view(kernel));
    out
}
