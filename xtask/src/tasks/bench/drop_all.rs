//! The floor of the flood benchmark: an XDP program that drops every frame, two
//! instructions long, loaded with bpf(2) and attached through a BPF link.
//!
//! It lives here rather than in the eBPF crate so the product ships nothing that exists
//! only for a benchmark. The link is not pinned: closing its fd, when [`DropAll`] is
//! dropped or the process dies, detaches the program.

use std::{
    io,
    mem::size_of,
    os::fd::{FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result};

use icmp_guard_lab::netns;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// XDP_FLAGS_DRV_MODE: native (driver) mode, as icmp-guard uses on veth.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_DROP: i32 = 1;

/// One eBPF instruction (`struct bpf_insn`): opcode, dst/src registers, offset, immediate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Instruction {
    code: u8,
    registers: u8,
    offset: i16,
    immediate: i32,
}

/// `r0 = XDP_DROP; exit`.
const PROGRAM: [Instruction; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
    Instruction {
        code: 0x07 | 0xb0,
        registers: 0,
        offset: 0,
        immediate: XDP_DROP,
    },
    // BPF_JMP | BPF_EXIT
    Instruction {
        code: 0x05 | 0x90,
        registers: 0,
        offset: 0,
        immediate: 0,
    },
];

/// The BPF_PROG_LOAD part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The BPF_LINK_CREATE part of `union bpf_attr`, up to `flags`.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union bpf_attr` for this
    // command, and its size is passed with it; the kernel zero-fills the rest.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just gave us this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The drop-all program attached to an interface; detached when dropped.
pub struct DropAll {
    _link: OwnedFd,
    _program: OwnedFd,
}

/// Loads the program and attaches it in native mode to `ifname` in namespace `ns`.
pub fn attach(ns: &str, ifname: &str) -> Result<DropAll> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"xdp_drop_all");
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_XDP,
        ..ProgLoadAttr::default()
    };
    let program = bpf(BPF_PROG_LOAD, &mut load).map_err(|err| {
        let log = String::from_utf8_lossy(&log);
        anyhow::anyhow!(
            "loading the drop-all XDP program: {err}; verifier log: {}",
            log.trim_end_matches('\0').trim()
        )
    })?;

    let ifindex = netns::ifindex(ns, ifname)?;
    // The index is resolved in the caller's namespace, so the link is created from inside
    // `ns` too.
    let mut create = LinkCreateAttr {
        prog_fd: u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&program)).context("program fd")?,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
    };
    let link = netns::run_in(ns, || Ok(bpf(BPF_LINK_CREATE, &mut create)))?
        .with_context(|| format!("attaching the drop-all XDP program to {ifname} in {ns}"))?;
    Ok(DropAll {
        _link: link,
        _program: program,
    })
}

const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// While alive, the kernel keeps `run_time_ns` and `run_cnt` for every BPF program
/// (BPF_ENABLE_STATS; the same switch as the `kernel.bpf_stats_enabled` sysctl, but counted,
/// and released with the fd, so it never stays on or turns someone else's off).
pub struct RunTimeStats {
    _fd: OwnedFd,
}

pub fn enable_run_time_stats() -> Result<RunTimeStats> {
    let mut kind = BPF_STATS_RUN_TIME;
    let fd = bpf(BPF_ENABLE_STATS, &mut kind).context("enabling BPF run-time statistics")?;
    Ok(RunTimeStats { _fd: fd })
}
