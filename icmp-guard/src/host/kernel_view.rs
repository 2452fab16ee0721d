//! What the kernel's own ICMP stack is set to, and what it counted, in the current network
//! namespace: the ICMP sysctls and the `Icmp`/`Icmp6` lines of `/proc/net/snmp` and
//! `/proc/net/snmp6`. Both are per network namespace and read as the namespace of the
//! reading process sees them, so `nsenter --net=... icmp-guard status` shows the
//! namespace's values. A file that does not exist (an older kernel, IPv6 disabled) gives
//! `null`, never an error.

use std::path::Path;

use icmp_guard_common::{FAMILY_V4, icmp};
use serde::{Serialize, Serializer, ser::SerializeMap as _};

/// The ICMP sysctls shown, by name (`net.ipv4.icmp_ratelimit` is
/// `/proc/sys/net/ipv4/icmp_ratelimit`).
pub const SYSCTLS: [&str; 10] = [
    "net.ipv4.icmp_echo_ignore_all",
    "net.ipv4.icmp_echo_ignore_broadcasts",
    "net.ipv4.icmp_ratelimit",
    "net.ipv4.icmp_ratemask",
    "net.ipv4.icmp_msgs_per_sec",
    "net.ipv4.icmp_msgs_burst",
    "net.ipv6.icmp.echo_ignore_all",
    "net.ipv6.icmp.echo_ignore_multicast",
    "net.ipv6.icmp.ratelimit",
    "net.ipv6.icmp.ratemask",
];

/// Fields of the `Icmp:` lines of `/proc/net/snmp`.
pub const SNMP_FIELDS: [&str; 5] = [
    "InMsgs",
    "InErrors",
    "OutMsgs",
    "OutRateLimitGlobal",
    "OutRateLimitHost",
];

/// Fields of `/proc/net/snmp6`.
pub const SNMP6_FIELDS: [&str; 3] = ["Icmp6InMsgs", "Icmp6OutMsgs", "Icmp6OutRateLimitHost"];

/// A sysctl's value: a number when it is one (most are), else its text (`ratemask` of
/// IPv6 is a list of ranges such as `0-1,3-127`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SysctlValue {
    Number(i64),
    Text(String),
}

impl std::fmt::Display for SysctlValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(number) => write!(f, "{number}"),
            Self::Text(text) => f.write_str(text),
        }
    }
}

/// Name/value pairs that serialize as a JSON object in this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields<V>(pub Vec<(&'static str, Option<V>)>);

impl<V> Default for Fields<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> Fields<V> {
    pub fn get(&self, name: &str) -> Option<&V> {
        self.0
            .iter()
            .find(|(field, _)| *field == name)
            .and_then(|(_, value)| value.as_ref())
    }
}

impl<V: Serialize> Serialize for Fields<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The kernel's ICMP settings and counters in this network namespace: `status --json`'s
/// `"kernel"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelView {
    pub sysctl: Fields<SysctlValue>,
    pub snmp: Fields<u64>,
    pub snmp6: Fields<u64>,
}

impl KernelView {
    /// Reads everything from `/proc`.
    pub fn read() -> Self {
        Self::read_from(Path::new("/proc"))
    }

    /// Reads everything below `proc` (a fake tree in tests).
    pub fn read_from(proc: &Path) -> Self {
        let sysctl = SYSCTLS
            .iter()
            .map(|name| {
                let path = proc.join("sys").join(name.replace('.', "/"));
                let value = std::fs::read_to_string(path)
                    .ok()
                    .map(|text| parse_sysctl(&text));
                (*name, value)
            })
            .collect();
        let snmp = std::fs::read_to_string(proc.join("net/snmp")).unwrap_or_default();
        let snmp6 = std::fs::read_to_string(proc.join("net/snmp6")).unwrap_or_default();
        Self {
            sysctl: Fields(sysctl),
            snmp: Fields(parse_snmp(&snmp, "Icmp", &SNMP_FIELDS)),
            snmp6: Fields(parse_snmp6(&snmp6, &SNMP6_FIELDS)),
        }
    }
}

fn parse_sysctl(text: &str) -> SysctlValue {
    let text = text.trim();
    text.parse()
        .map_or_else(|_| SysctlValue::Text(text.to_owned()), SysctlValue::Number)
}

/// The ICMPv4 types whose bits are set in `net.ipv4.icmp_ratemask`.
pub fn ratemask_types(mask: i64) -> String {
    let names: Vec<String> = (0..32u8)
        .filter(|bit| mask & (1i64 << bit) != 0)
        .map(|bit| icmp::type_name(FAMILY_V4, bit).map_or_else(|| bit.to_string(), str::to_owned))
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Reads `wanted` fields of the `<protocol>:` header/value line pair of `/proc/net/snmp`.
pub fn parse_snmp(
    text: &str,
    protocol: &str,
    wanted: &[&'static str],
) -> Vec<(&'static str, Option<u64>)> {
    let prefix = format!("{protocol}:");
    let mut lines = text
        .lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()));
    let (names, values) = match (lines.next(), lines.next()) {
        (Some(names), Some(values)) => (names, values),
        _ => ("", ""),
    };
    let pairs: Vec<(&str, &str)> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .collect();
    wanted
        .iter()
        .map(|field| {
            let value = pairs
                .iter()
                .find(|(name, _)| name == field)
                .and_then(|(_, value)| value.parse().ok());
            (*field, value)
        })
        .collect()
}

/// Reads `wanted` fields of `/proc/net/snmp6` (one `Name value` pair per line).
pub fn parse_snmp6(text: &str, wanted: &[&'static str]) -> Vec<(&'static str, Option<u64>)> {
    wanted
        .iter()
        .map(|field| {
            let value = text.lines().find_map(|line| {
                let mut parts = line.split_whitespace();
                (parts.next() == Some(*field))
                    .then(|| parts.next()?.parse().ok())
                    .flatten()
            });
            (*field, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 100
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs OutMsgs OutErrors OutRateLimitGlobal OutRateLimitHost
Icmp: 12 1 0 3 9 0 4 5
IcmpMsg: InType3 OutType0
IcmpMsg: 3 9
";

    #[test]
    fn snmp_icmp_fields_are_read_and_icmpmsg_is_not_confused_with_icmp() {
        let fields = parse_snmp(SNMP, "Icmp", &SNMP_FIELDS);
        assert_eq!(
            fields,
            vec![
                ("InMsgs", Some(12)),
                ("InErrors", Some(1)),
                ("OutMsgs", Some(9)),
                ("OutRateLimitGlobal", Some(4)),
                ("OutRateLimitHost", Some(5)),
            ]
        );
    }

    #[test]
    fn fields_an_older_kernel_lacks_are_null() {
        let old = "Icmp: InMsgs InErrors OutMsgs\nIcmp: 1 2 3\n";
        let fields = parse_snmp(old, "Icmp", &SNMP_FIELDS);
        assert_eq!(fields[2], ("OutMsgs", Some(3)));
        assert_eq!(fields[3], ("OutRateLimitGlobal", None));
        assert_eq!(parse_snmp("", "Icmp", &SNMP_FIELDS)[0], ("InMsgs", None));
    }

    #[test]
    fn snmp6_pairs_are_read() {
        let text = "Icmp6InMsgs                     \t7\nIcmp6InErrors 1\nIcmp6OutMsgs 9\n";
        assert_eq!(
            parse_snmp6(text, &SNMP6_FIELDS),
            vec![
                ("Icmp6InMsgs", Some(7)),
                ("Icmp6OutMsgs", Some(9)),
                ("Icmp6OutRateLimitHost", None),
            ]
        );
    }

    #[test]
    fn the_default_ratemask_names_the_four_error_types() {
        assert_eq!(
            ratemask_types(6168),
            "destination-unreachable, source-quench, time-exceeded, parameter-problem"
        );
        assert_eq!(ratemask_types(0), "none");
    }

    #[test]
    fn a_missing_proc_tree_gives_nulls_not_errors() {
        let view = KernelView::read_from(Path::new("/nonexistent-icmp-guard-proc"));
        let json = serde_json::to_value(&view).expect("serializes");
        assert!(
            json["sysctl"]["net.ipv4.icmp_ratelimit"].is_null(),
            "{json}"
        );
        assert!(json["snmp"]["InMsgs"].is_null(), "{json}");
        assert!(json["snmp6"]["Icmp6OutMsgs"].is_null(), "{json}");
    }

    #[test]
    fn a_fake_proc_tree_is_read_in_order() {
        let root = std::env::temp_dir().join(format!("icmp-guard-kv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sys/net/ipv4")).expect("mkdir");
        std::fs::create_dir_all(root.join("sys/net/ipv6/icmp")).expect("mkdir");
        std::fs::create_dir_all(root.join("net")).expect("mkdir");
        std::fs::write(root.join("sys/net/ipv4/icmp_ratelimit"), "1000\n").expect("write");
        std::fs::write(root.join("sys/net/ipv6/icmp/ratemask"), "0-1,3-127\n").expect("write");
        std::fs::write(root.join("net/snmp"), SNMP).expect("write");
        let view = KernelView::read_from(&root);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            view.sysctl.get("net.ipv4.icmp_ratelimit"),
            Some(&SysctlValue::Number(1000))
        );
        assert_eq!(
            view.sysctl.get("net.ipv6.icmp.ratemask"),
            Some(&SysctlValue::Text("0-1,3-127".to_owned()))
        );
        assert_eq!(view.sysctl.get("net.ipv4.icmp_msgs_burst"), None);
        assert_eq!(view.snmp.get("OutRateLimitHost"), Some(&5));
        let json = serde_json::to_string(&view).expect("serializes");
        let first = json.find("icmp_echo_ignore_all").expect("present");
        let later = json.find("icmp_msgs_burst").expect("present");
        assert!(first < later, "listed order is kept: {json}");
        assert!(
            json.contains("\"net.ipv6.icmp.ratemask\":\"0-1,3-127\""),
            "{json}"
        );
    }

    #[test]
    fn this_machine_has_the_usual_files() {
        let view = KernelView::read();
        assert!(view.sysctl.get("net.ipv4.icmp_ratelimit").is_some());
        assert!(view.snmp.get("InMsgs").is_some());
    }
}
