//! The program attached for real, the way `icmp-guard attach` does it (a bpf_link from
//! BPF_LINK_CREATE, kernel 5.9+), in generic mode on the loopback device of a network
//! namespace of the test's own: a ping to an address on it must be seen by the program
//! (the echo request and the reply counted as passed), and once the link is closed a
//! second ping must not be.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use icmp_guard::policy::Policy;
use icmp_guard_common::FAMILY_V4;

use crate::{frames::icmp, harness::Guard};

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// An address of the guarded side in the verdict frames, put on `lo:1`.
const ADDRESS: [u8; 4] = [192, 0, 2, 1];
const ECHO_ID: u16 = 0x4b50;

/// Runs `work` on a thread of its own in a new network namespace, which goes away with the
/// thread: nothing of the machine's own network is ever touched.
fn in_private_netns<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare has no memory preconditions; CLONE_NEWNET moves only
                // this thread.
                let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                assert_eq!(
                    unshared,
                    0,
                    "unshare(CLONE_NEWNET): {}",
                    io::Error::last_os_error()
                );
                work()
            })
            .join()
            .expect("the thread in the private namespace")
    })
}

#[test]
fn a_bpf_link_on_loopback_sees_a_real_ping_and_nothing_after_it_is_closed() {
    root_or_skip!("a_bpf_link_on_loopback_sees_a_real_ping");
    let mut guard = Guard::load(&Policy::default_profile());
    let echo_counts = |guard: &Guard| {
        let snapshot = guard.snapshot();
        (
            snapshot.of(FAMILY_V4, 8).passed(),
            snapshot.of(FAMILY_V4, 0).passed(),
        )
    };
    let before = echo_counts(&guard);
    let program_fd = guard
        .program()
        .fd()
        .expect("the program's descriptor")
        .as_fd()
        .as_raw_fd();
    in_private_netns(|| {
        loopback_up_with(ADDRESS).expect("lo up, with 192.0.2.1 on lo:1");
        let link = link_create(program_fd, 1).expect("BPF_LINK_CREATE (XDP, generic mode) on lo");
        ping(1).expect("ping with the program attached");
        let attached = echo_counts(&guard);
        drop(link);
        ping(2).expect("ping after closing the link");
        let detached = echo_counts(&guard);
        assert_eq!(
            (attached.0 - before.0, attached.1 - before.1),
            (1, 1),
            "with the link, the program counts one echo request and one reply passed"
        );
        assert_eq!(
            detached, attached,
            "the program saw packets after its link was closed"
        );
    });
}

fn loopback_up_with(address: [u8; 4]) -> io::Result<()> {
    // A plain socket for interface ioctls.
    let socket = inet_socket(libc::SOCK_DGRAM, 0)?;
    let request = |name: &str| {
        // SAFETY: an all-zero ifreq is valid.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        request
    };
    let mut flags = request("lo");
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut flags) != 0 {
            return Err(io::Error::last_os_error());
        }
        flags.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &flags) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut alias = request("lo:1");
    let sockaddr = sockaddr_v4(address);
    // SAFETY: sockaddr_in fits in the ifreq's sockaddr union member.
    unsafe {
        std::ptr::write_unaligned(
            (&raw mut alias.ifr_ifru).cast::<libc::sockaddr_in>(),
            sockaddr,
        );
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFADDR, &alias) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// An `AF_INET` socket of `kind`, closed on exec and when dropped.
fn inet_socket(kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket has no memory preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just created and nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_v4(address: [u8; 4]) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address),
        },
        sin_zero: [0; 8],
    }
}

fn link_create(program_fd: i32, ifindex: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(program_fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_XDP.to_ne_bytes());
    attr[12..16].copy_from_slice(&XDP_FLAGS_SKB_MODE.to_ne_bytes());
    // SAFETY: attr is a zeroed union bpf_attr without pointers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends one echo request to [`ADDRESS`] over a raw socket and waits for its reply.
fn ping(sequence: u16) -> io::Result<()> {
    let socket = inet_socket(libc::SOCK_RAW, libc::IPPROTO_ICMP)?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: a timeval of the size we pass.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let mut rest = ECHO_ID.to_be_bytes().to_vec();
    rest.extend_from_slice(&sequence.to_be_bytes());
    rest.extend_from_slice(b"kernel-probe live ping");
    let message = icmp(8, 0, &rest);
    let destination = sockaddr_v4(ADDRESS);
    // SAFETY: message and destination outlive the call.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            message.as_ptr().cast(),
            message.len(),
            0,
            (&raw const destination).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buffer = [0u8; 1500];
    while Instant::now() < deadline {
        // SAFETY: buffer outlives the call.
        let read = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        let Ok(read) = usize::try_from(read) else {
            continue; // timeout or EINTR: look at the deadline again
        };
        let packet = &buffer[..read];
        let header = usize::from(packet.first().copied().unwrap_or(0) & 0x0f) * 4;
        let Some(message) = packet.get(header..header + 8) else {
            continue;
        };
        let id = u16::from_be_bytes([message[4], message[5]]);
        let seq = u16::from_be_bytes([message[6], message[7]]);
        // The raw socket also receives our own request; wait for the reply.
        if message[0] == 0 && id == ECHO_ID && seq == sequence {
            return Ok(());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "no echo reply within 3 s",
    ))
}
