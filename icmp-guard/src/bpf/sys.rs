//! The bpf(2) commands aya 0.14 cannot do for us, filled in through the kernel's own
//! `union bpf_attr` as `aya_obj::generated` declares it (never byte offsets):
//!
//! - `BPF_LINK_CREATE` for XDP without aya's silent fall-back to the legacy netlink attach,
//!   which cannot be pinned and so would not outlive the process;
//! - `BPF_LINK_DETACH`, which aya does not expose;
//! - the XDP link's interface (`bpf_link_info.xdp.ifindex`), which aya's `LinkInfo` keeps
//!   private;
//! - `BPF_OBJ_PIN`, `BPF_OBJ_GET` and `BPF_LINK_UPDATE` on a link descriptor of our own:
//!   aya's `FdLink` can neither be built from a descriptor nor lend one;
//! - the map pair of [`super::rcu`].

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type};

/// `enum bpf_link_type`: an XDP link.
pub const BPF_LINK_TYPE_XDP: u32 = bpf_link_type::BPF_LINK_TYPE_XDP as u32;

/// A bpf(2) call that failed, with the command's name (as aya's `SyscallError` has it).
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {source}")]
pub struct SyscallError {
    pub call: &'static str,
    #[source]
    pub source: io::Error,
}

impl SyscallError {
    /// The errno the kernel returned.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// A zeroed `union bpf_attr`: every field the kernel does not get from us must be 0.
pub(crate) fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a C union of integers; all-zero is a valid value of each member.
    unsafe { std::mem::zeroed() }
}

/// bpf(2) with `attr`; the returned number is a descriptor for the commands that make one.
pub(crate) fn bpf(
    call: &'static str,
    command: bpf_cmd,
    attr: &mut bpf_attr,
) -> Result<libc::c_long, SyscallError> {
    // SAFETY: attr is a valid, writable bpf_attr that outlives the call, and every pointer
    // stored in it points to memory that outlives the call too.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if result < 0 {
        Err(SyscallError {
            call,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(result)
    }
}

/// The descriptor a successful bpf(2) call returned.
pub(crate) fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

fn c_path(call: &'static str, path: &Path) -> Result<CString, SyscallError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SyscallError {
        call,
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"),
    })
}

/// BPF_LINK_CREATE for XDP on `ifindex` with XDP_FLAGS_* `flags`.
pub fn link_create_xdp(
    program: BorrowedFd<'_>,
    ifindex: u32,
    flags: u32,
) -> Result<OwnedFd, SyscallError> {
    let mut attr = zeroed_attr();
    attr.link_create.__bindgen_anon_1.prog_fd = fd_u32(program);
    attr.link_create.__bindgen_anon_2.target_ifindex = ifindex;
    attr.link_create.attach_type = bpf_attach_type::BPF_XDP as u32;
    attr.link_create.flags = flags;
    bpf("BPF_LINK_CREATE", bpf_cmd::BPF_LINK_CREATE, &mut attr).map(owned)
}

/// BPF_LINK_UPDATE: the link runs `program` from now on, atomically.
pub fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> Result<(), SyscallError> {
    let mut attr = zeroed_attr();
    attr.link_update.link_fd = fd_u32(link);
    attr.link_update.__bindgen_anon_1.new_prog_fd = fd_u32(program);
    bpf("BPF_LINK_UPDATE", bpf_cmd::BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// BPF_LINK_DETACH: the link lets go of its interface now, even while other descriptors
/// (a concurrent `status`, bpftool) still hold the link itself.
pub fn link_detach(link: BorrowedFd<'_>) -> Result<(), SyscallError> {
    let mut attr = zeroed_attr();
    attr.link_detach.link_fd = fd_u32(link);
    bpf("BPF_LINK_DETACH", bpf_cmd::BPF_LINK_DETACH, &mut attr).map(drop)
}

/// BPF_OBJ_PIN.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> Result<(), SyscallError> {
    let path = c_path("BPF_OBJ_PIN", path)?;
    let mut attr = zeroed_attr();
    // The path outlives the call.
    attr.__bindgen_anon_4.pathname = path.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = fd_u32(fd);
    bpf("BPF_OBJ_PIN", bpf_cmd::BPF_OBJ_PIN, &mut attr).map(drop)
}

/// BPF_OBJ_GET.
pub fn obj_get(path: &Path) -> Result<OwnedFd, SyscallError> {
    let path = c_path("BPF_OBJ_GET", path)?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = path.as_ptr() as u64;
    bpf("BPF_OBJ_GET", bpf_cmd::BPF_OBJ_GET, &mut attr).map(owned)
}

/// What `struct bpf_link_info` says about a link.
#[derive(Clone, Copy, Debug)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub program_id: u32,
    /// For XDP links: the interface, 0 once it is deleted.
    pub ifindex: u32,
}

/// BPF_OBJ_GET_INFO_BY_FD on a link.
pub fn link_info(link: BorrowedFd<'_>) -> Result<LinkInfo, SyscallError> {
    // SAFETY: bpf_link_info is a C struct of integers and unions of integers.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    // `info` outlives the call and is as long as the length we give.
    attr.info.bpf_fd = fd_u32(link);
    attr.info.info_len = size_of::<bpf_link_info>() as u32;
    attr.info.info = std::ptr::from_mut(&mut info) as u64;
    bpf(
        "BPF_OBJ_GET_INFO_BY_FD",
        bpf_cmd::BPF_OBJ_GET_INFO_BY_FD,
        &mut attr,
    )?;
    let ifindex = if info.type_ == BPF_LINK_TYPE_XDP {
        // SAFETY: the kernel filled the xdp member for an XDP link.
        unsafe { info.__bindgen_anon_1.xdp.ifindex }
    } else {
        0
    };
    Ok(LinkInfo {
        link_type: info.type_,
        id: info.id,
        program_id: info.prog_id,
        ifindex,
    })
}

/// True when the kernel accepts the atomic compare-and-exchange instruction (Linux 5.12,
/// commit 5ffa25502b5a "bpf: Add instructions for atomic_[cmp]xchg"), which the limiter of
/// `icmp_guard` uses; older kernels get `icmp_guard_lock`. Probed once, by loading a
/// seven-instruction XDP program that exchanges a stack slot.
pub fn supports_atomic_cmpxchg() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        use aya_obj::generated::{bpf_insn, bpf_prog_type};
        let instruction = |code: u8, dst: u8, src: u8, offset: i16, immediate: i32| {
            // SAFETY: bpf_insn is integers and a bitfield; all-zero is valid.
            let mut insn: bpf_insn = unsafe { std::mem::zeroed() };
            insn.code = code;
            insn.off = offset;
            insn.imm = immediate;
            insn.set_dst_reg(dst);
            insn.set_src_reg(src);
            insn
        };
        let program = [
            instruction(0xb7, 1, 0, 0, 0),      // r1 = 0
            instruction(0x7b, 10, 1, -8, 0),    // *(u64 *)(r10 - 8) = r1
            instruction(0xb7, 0, 0, 0, 0),      // r0 = 0
            instruction(0xb7, 1, 0, 0, 1),      // r1 = 1
            instruction(0xdb, 10, 1, -8, 0xf1), // r0 = cmpxchg_64(r10 - 8, r0, r1)
            instruction(0xb7, 0, 0, 0, 2),      // r0 = XDP_PASS
            instruction(0x95, 0, 0, 0, 0),      // exit
        ];
        let license = c"GPL";
        let mut attr = zeroed_attr();
        // SAFETY: the BPF_PROG_LOAD member of the zeroed union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = bpf_prog_type::BPF_PROG_TYPE_XDP as u32;
        load.insn_cnt = program.len() as u32;
        load.insns = program.as_ptr() as u64;
        load.license = license.as_ptr() as u64;
        bpf("BPF_PROG_LOAD", bpf_cmd::BPF_PROG_LOAD, &mut attr)
            .map(owned)
            .is_ok()
    })
}
