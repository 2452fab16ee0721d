//! The kernel's own ICMP settings and counters, as `status` prints them.

use std::fmt::Write as _;

use icmp_guard::host::kernel_view::{Fields, KernelView, SysctlValue, ratemask_types};

/// The kernel's ICMP settings and counters as `status` prints them.
pub fn kernel_view(view: &KernelView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kernel ICMP settings in this network namespace:");
    for (name, value) in &view.sysctl.0 {
        let shown = value
            .as_ref()
            .map_or_else(|| "n/a".to_owned(), ToString::to_string);
        let note = match (*name, value) {
            ("net.ipv4.icmp_ratemask", Some(SysctlValue::Number(mask))) => {
                format!("  (rate-limited: {})", ratemask_types(*mask))
            }
            ("net.ipv4.icmp_ratelimit" | "net.ipv6.icmp.ratelimit", Some(_)) => {
                "  (ms per token, per destination)".to_owned()
            }
            _ => String::new(),
        };
        let _ = writeln!(out, "  {name:<38} {shown}{note}");
    }
    let _ = writeln!(
        out,
        "kernel ICMP counters in this network namespace (/proc/net/snmp, /proc/net/snmp6):"
    );
    let line = |fields: &Fields<u64>, strip: &str| {
        fields
            .0
            .iter()
            .map(|(name, value)| {
                let shown = value.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
                format!("{} {shown}", name.strip_prefix(strip).unwrap_or(name))
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(out, "  Icmp   {}", line(&view.snmp, ""));
    let _ = writeln!(out, "  Icmp6  {}", line(&view.snmp6, "Icmp6"));
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_missing_proc_tree_is_shown_as_not_available() {
        let view = KernelView::read_from(Path::new("/nonexistent-icmp-guard-proc"));
        assert!(kernel_view(&view).contains("n/a"));
    }
}
