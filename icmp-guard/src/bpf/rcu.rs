//! Waiting for an RCU grace period from userspace.
//!
//! The kernel calls `synchronize_rcu()` before returning from an update of an
//! ARRAY_OF_MAPS element ("maybe_wait_bpf_programs" in kernel/bpf/syscall.c), so that
//! userspace knows no running program still sees the old value. The kernel's own selftests
//! (test_btf_map_in_map) use the same trick. XDP programs, and BPF_PROG_TEST_RUN, run
//! inside RCU read-side sections, so once this returns every packet that started before the
//! call has been fully classified.

use std::os::fd::{AsRawFd as _, OwnedFd};

use aya_obj::generated::{bpf_cmd, bpf_map_type};

use super::sys::{SyscallError, bpf, owned, zeroed_attr};

/// Returns once every BPF program invocation that was running when it was called has ended.
pub fn synchronize() -> Result<(), SyscallError> {
    let inner = create_map(bpf_map_type::BPF_MAP_TYPE_ARRAY, None)?;
    let outer = create_map(
        bpf_map_type::BPF_MAP_TYPE_ARRAY_OF_MAPS,
        Some(inner.as_raw_fd() as u32),
    )?;
    let key = 0u32;
    let value = inner.as_raw_fd() as u32;
    let mut attr = zeroed_attr();
    // Key and value outlive the call.
    attr.__bindgen_anon_2.map_fd = outer.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = &raw const key as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = &raw const value as u64;
    bpf(
        "BPF_MAP_UPDATE_ELEM",
        bpf_cmd::BPF_MAP_UPDATE_ELEM,
        &mut attr,
    )
    .map(drop)
}

fn create_map(map_type: bpf_map_type, inner_map_fd: Option<u32>) -> Result<OwnedFd, SyscallError> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_1.map_type = map_type as u32;
    attr.__bindgen_anon_1.key_size = 4;
    // A map descriptor, for the outer map.
    attr.__bindgen_anon_1.value_size = 4;
    attr.__bindgen_anon_1.max_entries = 1;
    attr.__bindgen_anon_1.inner_map_fd = inner_map_fd.unwrap_or(0);
    bpf("BPF_MAP_CREATE", bpf_cmd::BPF_MAP_CREATE, &mut attr).map(owned)
}
