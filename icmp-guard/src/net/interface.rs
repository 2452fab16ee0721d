//! Interfaces by name and index, and the network namespace they live in.

use std::{
    ffi::{CStr, CString},
    os::unix::fs::MetadataExt as _,
};

use super::{Error, Result};

/// The index of a network interface in the current namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let unknown = || Error::UnknownInterface {
        name: name.to_owned(),
    };
    if name.len() >= libc::IF_NAMESIZE {
        return Err(Error::NameTooLong {
            name: name.to_owned(),
            bytes: name.len(),
        });
    }
    if name.is_empty() {
        return Err(unknown());
    }
    let c_name = CString::new(name).map_err(|_| unknown())?;
    // SAFETY: a NUL-terminated string; 0 means "no such interface".
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(unknown()),
        index => Ok(index),
    }
}

/// The identity of the caller's network namespace: the inode of `/proc/self/ns/net`,
/// which `ip netns identify` and `lsns` show too. Interfaces are owned by (namespace,
/// ifindex), since ifindexes repeat across namespaces.
pub fn netns_id() -> Result<u64> {
    std::fs::metadata("/proc/self/ns/net")
        .map(|metadata| metadata.ino())
        .map_err(|source| Error::Io {
            action: "reading /proc/self/ns/net",
            source,
        })
}

/// The name of the interface with `ifindex` in the current namespace, if it still exists.
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buffer = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buffer.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    Some(
        unsafe { CStr::from_ptr(buffer.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// True when `ifindex` (in the caller's network namespace) forwards IPv4 or IPv6:
/// `/proc/sys/net/ipv4/conf/IF/forwarding` or `/proc/sys/net/ipv6/conf/IF/forwarding` is 1.
/// An interface that cannot be read counts as not forwarding.
pub fn forwards(ifindex: u32) -> bool {
    let Some(name) = ifname(ifindex) else {
        return false;
    };
    ["ipv4", "ipv6"].iter().any(|family| {
        std::fs::read_to_string(format!("/proc/sys/net/{family}/conf/{name}/forwarding"))
            .is_ok_and(|value| value.trim() == "1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolves_both_ways() {
        let index = ifindex("lo").expect("every namespace has lo");
        assert_eq!(ifname(index).as_deref(), Some("lo"));
    }

    #[test]
    fn unknown_interfaces_are_refused() {
        for name in ["", "no-such-if0"] {
            assert!(matches!(ifindex(name), Err(Error::UnknownInterface { .. })));
        }
        let err = ifindex("a-name-longer-than-15").expect_err("too long");
        assert_eq!(
            err.to_string(),
            "interface name a-name-longer-than-15 is 21 bytes long, more than the 15 Linux allows: check the name with `ip link`"
        );
    }
}
