//! Waiting for an RCU grace period from userspace.
//!
//! The kernel calls `synchronize_rcu()` before returning from an update of an
//! ARRAY_OF_MAPS element ("maybe_wait_bpf_programs" in kernel/bpf/syscall.c), so that
//! userspace knows no running program still sees the old value. The kernel's own selftests
//! (test_btf_map_in_map) use the same trick. XDP programs, and BPF_PROG_TEST_RUN, run
//! inside RCU read-side sections, so once this returns every packet that started before the
//! call has been fully classified.

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use crate::sys::{ATTR_SIZE, bpf, owned};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// Returns once every BPF program invocation that was running when it was called has ended.
pub fn synchronize() -> io::Result<()> {
    let inner = create_map(BPF_MAP_TYPE_ARRAY, None)?;
    let outer = create_map(BPF_MAP_TYPE_ARRAY_OF_MAPS, Some(inner.as_raw_fd() as u32))?;
    let key = 0u32;
    let value = inner.as_raw_fd() as u32;
    let mut attr = [0u8; ATTR_SIZE];
    attr[0..4].copy_from_slice(&(outer.as_raw_fd() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(&raw const key as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(&raw const value as u64).to_ne_bytes());
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

fn create_map(map_type: u32, inner_map_fd: Option<u32>) -> io::Result<OwnedFd> {
    let mut attr = [0u8; ATTR_SIZE];
    attr[0..4].copy_from_slice(&map_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&4u32.to_ne_bytes()); // key size
    attr[8..12].copy_from_slice(&4u32.to_ne_bytes()); // value size (a map fd for the outer map)
    attr[12..16].copy_from_slice(&1u32.to_ne_bytes()); // max entries
    if let Some(fd) = inner_map_fd {
        attr[20..24].copy_from_slice(&fd.to_ne_bytes());
    }
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}
