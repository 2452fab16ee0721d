//! Checks on the machine before anything is changed: privileges, kernel, bpffs.

use std::{
    ffi::{CStr, CString},
    path::Path,
};

use super::{Error, Result};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Fails with [`Error::NotPrivileged`] unless the process may load BPF programs and attach
/// them to interfaces.
pub fn require_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|source| Error::Io {
        action: "reading /proc/self/status",
        source,
    })?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if (has(CAP_BPF) || has(CAP_SYS_ADMIN)) && has(CAP_NET_ADMIN) {
        Ok(())
    } else {
        Err(Error::NotPrivileged)
    }
}

/// Fails with [`Error::KernelTooOld`] before 5.9, which added bpf_link-based XDP attachment
/// (commit aa8d3a716b59, "bpf, xdp: Add bpf_link-based XDP attachment API"); without it the
/// attachment cannot be pinned and would not outlive the process.
pub fn require_kernel() -> Result<()> {
    let release = kernel_release();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version >= (5, 9) {
        Ok(())
    } else {
        Err(Error::KernelTooOld { release })
    }
}

/// The running kernel's release string, as `uname -r` prints it.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it and NUL-terminates every field.
    unsafe {
        let mut uts: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut uts) != 0 {
            return String::from("unknown");
        }
        CStr::from_ptr(uts.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// Fails with [`Error::BpffsMissing`] unless `pin_dir` is (or would be created) on a bpffs.
pub fn require_bpffs(pin_dir: &Path) -> Result<()> {
    let mut probe = pin_dir;
    while !probe.exists() {
        match probe.parent() {
            Some(parent) => probe = parent,
            None => break,
        }
    }
    if is_bpffs(probe) {
        Ok(())
    } else {
        Err(Error::BpffsMissing {
            path: probe.to_path_buf(),
        })
    }
}

/// Where bpffs lives by convention.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Mounts bpffs at /sys/fs/bpf when `pin_dir` lies under it and nothing is mounted there,
/// as bpftool and xdp-loader do. Returns true when it mounted.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<bool> {
    let root = Path::new(BPFFS_ROOT);
    if !pin_dir.starts_with(root) || is_bpffs(root) || !root.is_dir() {
        return Ok(false);
    }
    let source = c"bpf";
    let target = c"/sys/fs/bpf";
    // SAFETY: constant NUL-terminated strings; no data argument.
    let status = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if status != 0 {
        return Err(Error::BpffsMountFailed {
            path: root.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(true)
}

/// Whether this process shares the mount namespace of the machine's init, as far as it can
/// tell. False in a container (where it is PID 1 of its own PID namespace, or where PID 1
/// lives in another mount namespace) and in a service with private mounts: a bpffs that
/// such a process mounts exists only in its namespace, and its pins die with it.
pub fn in_host_mount_namespace() -> bool {
    if std::process::id() == 1 {
        return false;
    }
    match (
        std::fs::read_link("/proc/self/ns/mnt"),
        std::fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(own), Ok(init)) => own == init,
        // PID 1's namespace hidden from us: we cannot be sure we share it.
        _ => false,
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_is_new_enough() {
        require_kernel().expect("the test machines run 6.x");
    }
}
