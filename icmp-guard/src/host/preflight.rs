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

/// Fails unless the process may load BPF programs and attach them to interfaces: with
/// [`Error::NotPrivileged`] for an ordinary user, and with [`Error::MissingCapabilities`],
/// which names what is missing, for root (or a process with some capabilities) that lacks
/// one, as in a container or a service manager that dropped it.
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
    let missing = missing_capabilities(effective);
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root || effective != 0 {
        Err(Error::MissingCapabilities {
            missing: missing.join(" and "),
        })
    } else {
        Err(Error::NotPrivileged)
    }
}

/// What `effective` (a CapEff mask) lacks to run the guard: CAP_BPF (or the older
/// CAP_SYS_ADMIN, which includes it) and CAP_NET_ADMIN.
fn missing_capabilities(effective: u64) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (or CAP_SYS_ADMIN)");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
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
/// as bpftool and xdp-loader do, with `mode=0700` (only root may see or change pins) and
/// nosuid, nodev, noexec. Returns true when it mounted.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<bool> {
    let root = Path::new(BPFFS_ROOT);
    if !pin_dir.starts_with(root) || is_bpffs(root) || !root.is_dir() {
        return Ok(false);
    }
    let source = c"bpf";
    let target = c"/sys/fs/bpf";
    let options = c"mode=0700";
    // SAFETY: constant NUL-terminated strings.
    let status = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            options.as_ptr().cast(),
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
    fn the_missing_capabilities_are_named() {
        let all = (1u64 << CAP_BPF) | (1u64 << CAP_NET_ADMIN);
        assert!(missing_capabilities(all).is_empty());
        assert!(missing_capabilities((1u64 << CAP_SYS_ADMIN) | (1u64 << CAP_NET_ADMIN)).is_empty());
        assert_eq!(
            missing_capabilities(1u64 << CAP_NET_ADMIN),
            ["CAP_BPF (or CAP_SYS_ADMIN)"]
        );
        assert_eq!(missing_capabilities(1u64 << CAP_BPF), ["CAP_NET_ADMIN"]);
        assert_eq!(missing_capabilities(0).len(), 2);
    }

    #[test]
    fn this_kernel_is_new_enough() {
        require_kernel().expect("the test machines run 6.x");
    }
}
