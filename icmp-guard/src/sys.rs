//! Raw bpf(2) commands that aya 0.14 either does not expose (on a pinned link, or for the
//! RCU trick in `rcu`) or wraps in a legacy netlink fallback we never want.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;
/// enum bpf_attach_type: BPF_XDP.
const BPF_XDP: u32 = 37;
/// enum bpf_link_type: BPF_LINK_TYPE_XDP.
pub const BPF_LINK_TYPE_XDP: u32 = 6;
/// Smaller than union bpf_attr; the kernel reads only what it is given.
pub(crate) const ATTR_SIZE: usize = 128;

pub(crate) fn bpf(command: libc::c_long, attr: &mut [u8; ATTR_SIZE]) -> io::Result<libc::c_long> {
    // SAFETY: attr is a writable buffer of ATTR_SIZE bytes that outlives the call, and every
    // pointer stored in it points to memory that outlives the call too.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_mut_ptr(),
            ATTR_SIZE as libc::c_uint,
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn put(attr: &mut [u8; ATTR_SIZE], offset: usize, value: u32) {
    attr[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

pub(crate) fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// BPF_LINK_CREATE for XDP on `ifindex` with XDP_FLAGS_* `flags`.
pub fn link_create_xdp(program: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; ATTR_SIZE];
    put(&mut attr, 0, fd_u32(program));
    put(&mut attr, 4, ifindex);
    put(&mut attr, 8, BPF_XDP);
    put(&mut attr, 12, flags);
    bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}

/// BPF_LINK_UPDATE: the link runs `program` from now on, atomically.
pub fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = [0u8; ATTR_SIZE];
    put(&mut attr, 0, fd_u32(link));
    put(&mut attr, 4, fd_u32(program));
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// BPF_LINK_DETACH: the link lets go of its interface now, even while other descriptors
/// (a concurrent `status`, bpftool) still hold the link itself.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = [0u8; ATTR_SIZE];
    put(&mut attr, 0, fd_u32(link));
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// BPF_OBJ_PIN.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    let mut attr = [0u8; ATTR_SIZE];
    attr[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 8, fd_u32(fd));
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// BPF_OBJ_GET.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut attr = [0u8; ATTR_SIZE];
    attr[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET, &mut attr).map(owned)
}

/// The start of struct bpf_link_info.
#[derive(Clone, Copy, Debug)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub program_id: u32,
    /// For XDP links: the interface, 0 once it is deleted.
    pub ifindex: u32,
}

/// BPF_OBJ_GET_INFO_BY_FD on a link.
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    // type, id, prog_id, padding, then the union whose xdp member starts with ifindex.
    let mut info = [0u8; 24];
    let mut attr = [0u8; ATTR_SIZE];
    put(&mut attr, 0, fd_u32(link));
    put(&mut attr, 4, info.len() as u32);
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let word = |offset: usize| {
        u32::from_ne_bytes([
            info[offset],
            info[offset + 1],
            info[offset + 2],
            info[offset + 3],
        ])
    };
    Ok(LinkInfo {
        link_type: word(0),
        id: word(4),
        program_id: word(8),
        ifindex: word(16),
    })
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// True when the kernel accepts the atomic compare-and-exchange instruction (Linux 5.12,
/// commit 5ffa25502b5a "bpf: Add instructions for atomic_[cmp]xchg"), which the limiter of
/// `icmp_guard` uses; older kernels get `icmp_guard_lock`. Probed once, by loading a
/// six-instruction XDP program that exchanges a stack slot.
pub fn supports_atomic_cmpxchg() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // (code, dst | src << 4, offset, immediate)
        let program: [(u8, u8, i16, i32); 7] = [
            (0xb7, 0x01, 0, 0),     // r1 = 0
            (0x7b, 0x1a, -8, 0),    // *(u64 *)(r10 - 8) = r1
            (0xb7, 0x00, 0, 0),     // r0 = 0
            (0xb7, 0x01, 0, 1),     // r1 = 1
            (0xdb, 0x1a, -8, 0xf1), // r0 = cmpxchg_64(r10 - 8, r0, r1)
            (0xb7, 0x00, 0, 2),     // r0 = XDP_PASS
            (0x95, 0x00, 0, 0),     // exit
        ];
        let mut instructions = Vec::with_capacity(program.len() * 8);
        for (code, registers, offset, immediate) in program {
            instructions.push(code);
            instructions.push(registers);
            instructions.extend_from_slice(&offset.to_ne_bytes());
            instructions.extend_from_slice(&immediate.to_ne_bytes());
        }
        let license = c"GPL";
        let mut attr = [0u8; ATTR_SIZE];
        put(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put(&mut attr, 4, program.len() as u32);
        attr[8..16].copy_from_slice(&(instructions.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        bpf(BPF_PROG_LOAD, &mut attr).map(owned).is_ok()
    })
}
