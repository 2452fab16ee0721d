//! The IPv4 addresses of the interfaces, read over netlink (RTM_GETADDR), and the directed
//! broadcasts they imply.
//!
//! The broadcast address of a subnet is computed from the address and its prefix length
//! (or taken from IFA_BROADCAST when the kernel has one), never guessed from the last octet:
//! 192.0.2.255 on a /23 is an ordinary host.

use std::{io, net::Ipv4Addr};

use super::{Error, Result, netlink::Socket};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

/// One IPv4 address of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub ifindex: u32,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// IFA_BROADCAST, when the kernel reports one.
    pub broadcast: Option<Ipv4Addr>,
}

impl InterfaceAddress {
    /// The subnet's directed broadcast; none for /31 and /32, which have no broadcast
    /// (RFC 3021).
    pub fn directed_broadcast(&self) -> Option<Ipv4Addr> {
        if let Some(broadcast) = self.broadcast.filter(|b| !b.is_unspecified()) {
            return Some(broadcast);
        }
        if self.prefix_len >= 31 {
            return None;
        }
        let host_bits = u32::MAX >> self.prefix_len;
        Some(Ipv4Addr::from(u32::from(self.address) | host_bits))
    }
}

/// Every IPv4 address in the current network namespace.
pub fn ipv4_addresses() -> io::Result<Vec<InterfaceAddress>> {
    let socket = Socket::open()?;
    let mut request = Vec::with_capacity(24);
    request.extend_from_slice(&24u32.to_ne_bytes());
    request.extend_from_slice(&RTM_GETADDR.to_ne_bytes());
    request.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifaddrmsg: family, prefixlen, flags, scope, index
    request.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    request.extend_from_slice(&0u32.to_ne_bytes());
    socket.send(&request)?;

    let mut found = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let received = socket.recv(&mut buffer)?;
        let mut rest = &buffer[..received];
        while rest.len() >= 16 {
            let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if length < 16 || length > rest.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink message",
                ));
            }
            match kind {
                NLMSG_DONE => return Ok(found),
                NLMSG_ERROR => {
                    let code = rest
                        .get(16..20)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                RTM_NEWADDR => {
                    if let Some(address) = parse_address(&rest[16..length]) {
                        found.push(address);
                    }
                }
                _ => {}
            }
            rest = rest.get((length + 3) & !3..).unwrap_or(&[]);
        }
    }
}

fn parse_address(message: &[u8]) -> Option<InterfaceAddress> {
    let header = message.get(..8)?;
    if header[0] != libc::AF_INET as u8 {
        return None;
    }
    let prefix_len = header[1];
    let ifindex = u32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
    let mut local = None;
    let mut address = None;
    let mut broadcast = None;
    let mut rest = &message[8..];
    while rest.len() >= 4 {
        let length = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if length < 4 || length > rest.len() {
            break;
        }
        let value = &rest[4..length];
        let ip = <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from);
        match kind {
            IFA_LOCAL => local = ip,
            IFA_ADDRESS => address = ip,
            IFA_BROADCAST => broadcast = ip,
            _ => {}
        }
        rest = rest.get((length + 3) & !3..).unwrap_or(&[]);
    }
    Some(InterfaceAddress {
        ifindex,
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
        // point-to-point links and equal to it elsewhere.
        address: local.or(address)?,
        prefix_len,
        broadcast,
    })
}

/// The directed broadcasts of the interfaces in `ifindexes`, sorted, each once.
pub fn directed_broadcasts(ifindexes: &[u32]) -> Result<Vec<Ipv4Addr>> {
    let addresses = ipv4_addresses().map_err(|source| Error::Io {
        action: "reading interface addresses",
        source,
    })?;
    let mut wanted: Vec<Ipv4Addr> = addresses
        .iter()
        .filter(|address| ifindexes.contains(&address.ifindex))
        .filter_map(InterfaceAddress::directed_broadcast)
        .collect();
    wanted.sort();
    wanted.dedup();
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str, prefix_len: u8) -> InterfaceAddress {
        InterfaceAddress {
            ifindex: 1,
            address: text.parse().expect("IPv4"),
            prefix_len,
            broadcast: None,
        }
    }

    #[test]
    fn broadcast_comes_from_the_prefix_never_the_last_octet() {
        assert_eq!(
            address("192.0.2.1", 24).directed_broadcast(),
            Some(Ipv4Addr::new(192, 0, 2, 255))
        );
        // On a /23, 192.0.2.255 is a host; the broadcast is 192.0.3.255.
        assert_eq!(
            address("192.0.2.255", 23).directed_broadcast(),
            Some(Ipv4Addr::new(192, 0, 3, 255))
        );
        assert_eq!(
            address("198.51.100.9", 28).directed_broadcast(),
            Some(Ipv4Addr::new(198, 51, 100, 15))
        );
        assert_eq!(address("203.0.113.1", 31).directed_broadcast(), None);
        assert_eq!(address("203.0.113.1", 32).directed_broadcast(), None);
        let reported = InterfaceAddress {
            broadcast: Some(Ipv4Addr::new(10, 255, 255, 255)),
            ..address("10.1.2.3", 8)
        };
        assert_eq!(
            reported.directed_broadcast(),
            Some(Ipv4Addr::new(10, 255, 255, 255))
        );
    }
}
