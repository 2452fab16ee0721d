//! Doing things inside a network namespace from this process, without `ip netns exec`,
//! and reading its counters.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread, so the work runs on a short-lived
//! thread. What it creates keeps its namespace after the thread is gone: an XDP link names
//! its interface by index in that namespace, and a `/proc/thread-self/net/*` file opened
//! there keeps showing that namespace's counters on every read.

use std::{ffi::CString, fs::File, os::fd::AsRawFd as _};

use crate::{Error, Result, process::netns_path};

/// Runs `work` on a thread that has joined the network namespace `ns`.
pub fn run_in<T: Send>(ns: &str, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let handle = netns_path(ns);
    let file = File::open(&handle).map_err(|source| Error::Io {
        what: format!("opening {}", handle.display()),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: a valid namespace fd; the call affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(Error::Io {
                        what: format!("joining network namespace {ns}"),
                        source: std::io::Error::last_os_error(),
                    });
                }
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Opens `/proc/net/<name>` as the namespace `ns` sees it.
pub fn open_proc_net(ns: &str, name: &str) -> Result<File> {
    run_in(ns, || {
        let path = format!("/proc/thread-self/net/{name}");
        File::open(&path).map_err(|source| Error::Io {
            what: format!("opening {path}"),
            source,
        })
    })
}

/// The interface index of `ifname` inside `ns`.
pub fn ifindex(ns: &str, ifname: &str) -> Result<u32> {
    let name = CString::new(ifname).map_err(|_| Error::Output {
        what: "interface name without a NUL byte".to_owned(),
        output: ifname.to_owned(),
    })?;
    run_in(ns, || {
        // SAFETY: a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(Error::Io {
                what: format!("looking up interface {ifname} in namespace {ns}"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(index)
    })
}

/// A counter of `/proc/net/snmp` text: `field` of the `protocol` lines (`Icmp`,
/// `InEchos`).
pub fn snmp_counter(snmp: &str, protocol: &str, field: &str) -> Option<u64> {
    let prefix = format!("{protocol}:");
    let mut lines = snmp.lines().filter(|line| line.starts_with(&prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == field)
        .and_then(|(_, value)| value.parse().ok())
}

/// [`snmp_counter`] of the namespace `ns`, read now.
pub fn snmp(ns: &str, protocol: &str, field: &str) -> Result<u64> {
    let text = run_in(ns, || {
        std::fs::read_to_string("/proc/thread-self/net/snmp").map_err(|source| Error::Io {
            what: "reading /proc/thread-self/net/snmp".to_owned(),
            source,
        })
    })?;
    snmp_counter(&text, protocol, field).ok_or_else(|| Error::Output {
        what: format!("{protocol} {field} counter"),
        output: text,
    })
}

#[cfg(test)]
mod tests {
    use super::snmp_counter;

    #[test]
    fn snmp_counters_are_found_by_protocol_and_name() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives\nIp: 2 64 1234\n\
                    Icmp: InMsgs InErrors InEchos\nIcmp: 10 0 7\n";
        assert_eq!(snmp_counter(snmp, "Icmp", "InEchos"), Some(7));
        assert_eq!(snmp_counter(snmp, "Ip", "InReceives"), Some(1234));
        assert_eq!(snmp_counter(snmp, "Icmp", "OutEchos"), None);
        assert_eq!(snmp_counter(snmp, "Udp", "InDatagrams"), None);
    }
}
