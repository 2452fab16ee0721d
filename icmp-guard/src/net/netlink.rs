//! The NETLINK_ROUTE socket and attribute walker that the link and address queries share.

use std::{io, mem::size_of};

const NLA_TYPE_MASK: u16 = 0x3fff;

/// Iterates netlink attributes (struct nlattr, 4-byte aligned).
pub(crate) struct Attributes<'a>(pub(crate) &'a [u8]);

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let header = self.0.get(..4)?;
        let length = u16::from_ne_bytes([header[0], header[1]]) as usize;
        let kind = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
        if length < 4 || length > self.0.len() {
            self.0 = &[];
            return None;
        }
        let payload = &self.0[4..length];
        let aligned = (length + 3) & !3;
        self.0 = self.0.get(aligned..).unwrap_or(&[]);
        Some((kind, payload))
    }
}

pub(crate) fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// A NETLINK_ROUTE socket, shared by the link and address queries.
pub(crate) struct Socket(std::os::fd::OwnedFd);

impl Socket {
    pub(crate) fn open() -> io::Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// A non-blocking socket bound to the multicast `groups` (RTMGRP_* bits).
    pub(crate) fn subscribe(groups: u32) -> io::Result<Self> {
        use std::os::fd::AsRawFd as _;
        let socket = Self::open()?;
        // SAFETY: sockaddr_nl is plain data.
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as u16;
        address.nl_groups = groups;
        // SAFETY: the address outlives the call and its size is passed.
        let bound = unsafe {
            libc::bind(
                socket.0.as_raw_fd(),
                (&raw const address).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fcntl on a descriptor we own.
        let nonblocking = unsafe {
            let flags = libc::fcntl(socket.0.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(
                socket.0.as_raw_fd(),
                libc::F_SETFL,
                flags | libc::O_NONBLOCK,
            )
        };
        if nonblocking != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// Like `recv`, on a non-blocking socket: `WouldBlock` when nothing waits.
    pub(crate) fn recv_nonblocking(&self, buffer: &mut [u8]) -> io::Result<usize> {
        self.recv(buffer)
    }

    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.0.as_fd()
    }

    pub(crate) fn send(&self, message: &[u8]) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: sockaddr_nl is plain data; zeroed means "to the kernel".
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: message and address outlive the call.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const address).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub(crate) fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: the buffer is ours and its length is passed.
        let received = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if received < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(received as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_stop_at_garbage() {
        let bytes = [8u8, 0, 3, 0, b'l', b'o', 0, 0, 200, 0, 1, 0];
        let parsed: Vec<_> = Attributes(&bytes).collect();
        assert_eq!(parsed, vec![(3, &b"lo\0\0"[..])]);
    }
}
