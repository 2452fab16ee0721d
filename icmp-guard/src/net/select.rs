//! Interfaces chosen by rule rather than by name, for hosts that differ (`run --interfaces`):
//! `auto` means the interfaces that carry a default route (IPv4 or IPv6), anything else is a
//! shell glob (`en*`, `bond[01]`) matched against every interface of the namespace.
//!
//! A selection is a snapshot: [`select`] reads the interfaces and routes as they are now,
//! and a caller that wants to follow links coming and going evaluates it again.

use std::{ffi::CString, fmt, fs, io};

use super::{Error, Result};

/// One `--interfaces` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The interfaces that carry a default route.
    Auto,
    /// A shell pattern (`fnmatch`): `*`, `?` and `[...]`; a plain name matches itself.
    Glob(String),
}

impl Rule {
    /// `auto`, or a pattern; an empty pattern or one longer than an interface name can be
    /// matches nothing and is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "auto" {
            return Ok(Self::Auto);
        }
        if text.is_empty() || text.contains('/') || text.contains(char::is_whitespace) {
            return Err(format!(
                "{text:?} is not an interface pattern: give `auto` or a shell glob such as 'en*'"
            ));
        }
        Ok(Self::Glob(text.to_owned()))
    }

    fn matches(&self, name: &str, default_routes: &[String]) -> bool {
        match self {
            Self::Auto => default_routes.iter().any(|route| route == name),
            // A glob never picks the loopback interface: name it to protect it.
            Self::Glob(pattern) => (name != "lo" || pattern == "lo") && fnmatch(pattern, name),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Glob(pattern) => write!(f, "'{pattern}'"),
        }
    }
}

/// Whether `name` matches the shell pattern `pattern`.
fn fnmatch(pattern: &str, name: &str) -> bool {
    let (Ok(pattern), Ok(name)) = (CString::new(pattern), CString::new(name)) else {
        return false;
    };
    // SAFETY: two NUL-terminated strings; fnmatch only reads them.
    unsafe { libc::fnmatch(pattern.as_ptr(), name.as_ptr(), 0) == 0 }
}

/// Every interface of the current network namespace, as (name, ifindex), by ifindex.
pub fn interfaces() -> Result<Vec<(String, u32)>> {
    // SAFETY: if_nameindex returns a list ending in a zeroed entry, or null on failure; the
    // list is freed below, after its names are copied.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(Error::Io {
                action: "listing the network interfaces",
                source: io::Error::last_os_error(),
            });
        }
        let mut found = Vec::new();
        let mut entry = list;
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*entry).if_name);
            found.push((name.to_string_lossy().into_owned(), (*entry).if_index));
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
        found.sort_by_key(|(_, ifindex)| *ifindex);
        Ok(found)
    }
}

/// The interfaces that carry an IPv4 or IPv6 default route in the current namespace.
pub fn default_route_interfaces() -> Result<Vec<String>> {
    // /proc/net follows the reader's network namespace.
    let read = |path: &'static str| {
        fs::read_to_string(path).map_err(|source| Error::Io {
            action: "reading the routing table",
            source,
        })
    };
    let mut found = parse_ipv4_defaults(&read("/proc/net/route")?);
    // No IPv6 (disabled, or a kernel without it) means no IPv6 default route.
    if let Ok(text) = fs::read_to_string("/proc/net/ipv6_route") {
        found.extend(parse_ipv6_defaults(&text));
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// The interfaces of the default routes (destination and mask 0, up) in `/proc/net/route`.
fn parse_ipv4_defaults(table: &str) -> Vec<String> {
    const RTF_UP: u32 = 0x1;
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, destination, flags, mask) = (
                fields.first()?,
                fields.get(1)?,
                fields.get(3)?,
                fields.get(7)?,
            );
            let flags = u32::from_str_radix(flags, 16).ok()?;
            (*destination == "00000000" && *mask == "00000000" && flags & RTF_UP != 0)
                .then(|| (*name).to_owned())
        })
        .collect()
}

/// The interfaces of the default routes (`::/0`, up, not a reject route through `lo`) in
/// `/proc/net/ipv6_route`.
fn parse_ipv6_defaults(table: &str) -> Vec<String> {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 {
                return None;
            }
            let flags = u32::from_str_radix(fields[8], 16).ok()?;
            let default = fields[0].bytes().all(|b| b == b'0') && fields[1] == "00";
            (default && flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && fields[9] != "lo")
                .then(|| fields[9].to_owned())
        })
        .collect()
}

/// The interfaces that match any of `rules` now, as (name, ifindex), by ifindex.
pub fn select(rules: &[Rule]) -> Result<Vec<(String, u32)>> {
    let defaults = if rules.contains(&Rule::Auto) {
        default_route_interfaces()?
    } else {
        Vec::new()
    };
    Ok(interfaces()?
        .into_iter()
        .filter(|(name, _)| rules.iter().any(|rule| rule.matches(name, &defaults)))
        .collect())
}

/// The rules as an operator typed them, for messages: `auto`, `'en*' 'bond*'`.
pub fn describe(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_refuse_what_is_no_pattern() {
        assert_eq!(Rule::parse("auto"), Ok(Rule::Auto));
        assert_eq!(Rule::parse("en*"), Ok(Rule::Glob("en*".to_owned())));
        assert!(Rule::parse("").is_err());
        assert!(Rule::parse("a b").is_err());
        assert!(Rule::parse("../x").is_err());
    }

    #[test]
    fn globs_match_like_a_shell_and_leave_lo_alone() {
        let none: Vec<String> = Vec::new();
        let glob = |pattern: &str| Rule::Glob(pattern.to_owned());
        assert!(glob("en*").matches("enp3s0", &none));
        assert!(!glob("en*").matches("eth0", &none));
        assert!(glob("eth?").matches("eth1", &none));
        assert!(!glob("eth?").matches("eth10", &none));
        assert!(glob("bond[01]").matches("bond1", &none));
        assert!(!glob("bond[01]").matches("bond2", &none));
        assert!(glob("eth0").matches("eth0", &none));
        assert!(!glob("*").matches("lo", &none), "a glob never picks lo");
        assert!(glob("lo").matches("lo", &none), "naming it does");
    }

    #[test]
    fn auto_follows_the_default_routes() {
        let defaults = vec!["eth1".to_owned()];
        assert!(Rule::Auto.matches("eth1", &defaults));
        assert!(!Rule::Auto.matches("eth0", &defaults));
        assert!(!Rule::Auto.matches("eth1", &[]));
    }

    #[test]
    fn ipv4_default_routes_are_read_from_proc_net_route() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0102000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
            wg0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0\n\
            down0\t00000000\t00000000\t0000\t0\t0\t50\t00000000\t0\t0\t0\n";
        assert_eq!(parse_ipv4_defaults(table), ["eth0", "wg0"]);
    }

    #[test]
    fn ipv6_default_routes_are_read_from_proc_net_ipv6_route() {
        let zeros = "00000000000000000000000000000000";
        let table = format!(
            "{zeros} 00 {zeros} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
             20010db8000000000000000000000000 40 {zeros} 00 {zeros} 00000100 00000001 00000000 00000001 eth0\n\
             {zeros} 00 {zeros} 00 {zeros} ffffffff 00000001 00000000 00200200       lo\n"
        );
        assert_eq!(parse_ipv6_defaults(&table), ["eth0"]);
    }

    #[test]
    fn the_interfaces_of_this_namespace_include_lo() {
        let all = interfaces().expect("if_nameindex");
        assert!(all.iter().any(|(name, _)| name == "lo"), "{all:?}");
    }
}
