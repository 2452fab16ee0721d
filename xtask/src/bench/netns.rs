//! Doing things inside a network namespace from this process, without `ip netns exec`.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread, so the work runs on a short-lived
//! thread. What it creates keeps its namespace after the thread is gone: an XDP link names
//! its interface by index in that namespace, and a `/proc/thread-self/net/*` file opened
//! there keeps showing that namespace's counters on every read.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// Where `ip netns add` leaves the namespace's handle.
pub fn path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Runs `work` on a thread that has joined the network namespace `ns`.
pub fn run_in<T: Send>(ns: &str, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let handle = path(ns);
    let file = File::open(&handle).with_context(|| format!("opening {}", handle.display()))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: a valid namespace fd; the call affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!(
                        "joining network namespace {ns}: {}",
                        std::io::Error::last_os_error()
                    );
                }
                work()
            })
            .join()
            .unwrap_or_else(|_| bail!("the thread working in namespace {ns} panicked"))
    })
}

/// Opens `/proc/net/<name>` as the namespace `ns` sees it.
pub fn open_proc_net(ns: &str, name: &str) -> Result<File> {
    let name = name.to_owned();
    run_in(ns, move || {
        let path = format!("/proc/thread-self/net/{name}");
        File::open(&path).with_context(|| format!("opening {path}"))
    })
}

/// The interface index of `ifname` inside `ns`.
pub fn ifindex(ns: &str, ifname: &str) -> Result<u32> {
    let name = std::ffi::CString::new(ifname).context("interface name with a NUL byte")?;
    run_in(ns, move || {
        // SAFETY: a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            bail!(
                "no interface {ifname} in namespace {ns}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(index)
    })
}
