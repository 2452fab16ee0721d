//! The sampled events as the `run` drop log prints them.

use icmp_guard::observe::events::{drop_reason, source_address};
use icmp_guard_common::{
    DropReason,
    events::{ACTION_WOULD_DROP, IcmpEvent},
    icmp,
};

/// "echo-request (8/0)", or "type 42/0" for an unassigned type.
pub fn type_label(family: u8, icmp_type: u8, code: u8) -> String {
    match icmp::type_name(family, icmp_type) {
        Some(name) => format!("{name} ({icmp_type}/{code})"),
        None => format!("type {icmp_type}/{code}"),
    }
}

/// The drop log line of one event, without the time stamp.
pub fn drop_line(event: &IcmpEvent, interface: Option<&str>) -> String {
    let reason = drop_reason(event).map_or("unknown", DropReason::name);
    let verb = if event.action == ACTION_WOULD_DROP {
        "would drop"
    } else {
        "dropped"
    };
    let interface = interface.map_or_else(|| format!("ifindex {}", event.ifindex), str::to_owned);
    format!(
        "{verb} {} from {} on {interface}: {reason}, {} bytes (sampled)",
        type_label(event.family, event.icmp_type, event.code),
        source_address(event),
        event.packet_len,
    )
}

#[cfg(test)]
mod tests {
    use icmp_guard_common::{FAMILY_V4, events::ACTION_DROPPED};

    use super::*;

    fn event(action: u8, reason: DropReason) -> IcmpEvent {
        let mut source = [0; 16];
        source[..4].copy_from_slice(&[192, 0, 2, 9]);
        IcmpEvent {
            source,
            family: FAMILY_V4,
            icmp_type: 8,
            action,
            reason: reason as u8,
            packet_len: 98,
            ifindex: 7,
            ..IcmpEvent::default()
        }
    }

    #[test]
    fn a_drop_line_names_type_source_interface_and_reason() {
        let dropped = event(ACTION_DROPPED, DropReason::RateLimit);
        assert_eq!(
            drop_line(&dropped, Some("eth0")),
            "dropped echo-request (8/0) from 192.0.2.9 on eth0: rate_limit, 98 bytes (sampled)"
        );
        let would = event(ACTION_WOULD_DROP, DropReason::Policy);
        assert!(drop_line(&would, None).starts_with("would drop echo-request"));
        assert!(drop_line(&would, None).contains("on ifindex 7: policy"));
    }
}
