//! The addresses of the interfaces, read over netlink (RTM_GETADDR), the directed
//! broadcasts and on-link prefixes they imply, and a subscription to their changes
//! (RTM_NEWADDR and RTM_DELADDR on the address groups), so that a service sees an address
//! added or removed at once.
//!
//! The broadcast address of a subnet is computed from the address and its prefix length
//! (or taken from IFA_BROADCAST when the kernel has one), never guessed from the last octet:
//! 192.0.2.255 on a /23 is an ordinary host.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, BorrowedFd},
};

use super::{Error, Result, netlink::Socket};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
/// Multicast groups of address changes (RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR).
const ADDRESS_GROUPS: u32 = 0x10 | 0x100;

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

/// One address of either family as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RawAddress {
    ifindex: u32,
    address: IpAddr,
    prefix_len: u8,
    broadcast: Option<Ipv4Addr>,
}

/// Every address of `family` (AF_INET, AF_INET6) in the current network namespace.
fn dump(family: i32) -> io::Result<Vec<RawAddress>> {
    let socket = Socket::open()?;
    let mut request = Vec::with_capacity(24);
    request.extend_from_slice(&24u32.to_ne_bytes());
    request.extend_from_slice(&RTM_GETADDR.to_ne_bytes());
    request.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifaddrmsg: family, prefixlen, flags, scope, index
    request.extend_from_slice(&[family as u8, 0, 0, 0]);
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

/// Every IPv4 address in the current network namespace.
pub fn ipv4_addresses() -> io::Result<Vec<InterfaceAddress>> {
    Ok(dump(libc::AF_INET)?
        .into_iter()
        .filter_map(|raw| match raw.address {
            IpAddr::V4(address) => Some(InterfaceAddress {
                ifindex: raw.ifindex,
                address,
                prefix_len: raw.prefix_len,
                broadcast: raw.broadcast,
            }),
            IpAddr::V6(_) => None,
        })
        .collect())
}

fn parse_address(message: &[u8]) -> Option<RawAddress> {
    let header = message.get(..8)?;
    let family = i32::from(header[0]);
    if family != libc::AF_INET && family != libc::AF_INET6 {
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
        let ip = if family == libc::AF_INET {
            <[u8; 4]>::try_from(value).ok().map(IpAddr::from)
        } else {
            <[u8; 16]>::try_from(value)
                .ok()
                .map(|octets| IpAddr::V6(Ipv6Addr::from(octets)))
        };
        match kind {
            IFA_LOCAL => local = ip,
            IFA_ADDRESS => address = ip,
            IFA_BROADCAST => {
                broadcast = match ip {
                    Some(IpAddr::V4(v4)) => Some(v4),
                    _ => None,
                }
            }
            _ => {}
        }
        rest = rest.get((length + 3) & !3..).unwrap_or(&[]);
    }
    Some(RawAddress {
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

/// The prefixes on the links of the interfaces in `ifindexes`, as (network address,
/// prefix length), sorted, each once; host routes (/32, /128) are no prefix.
pub fn on_link_prefixes(ifindexes: &[u32]) -> Result<Vec<(IpAddr, u8)>> {
    let mut prefixes = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        let addresses = dump(family).map_err(|source| Error::Io {
            action: "reading interface addresses",
            source,
        })?;
        for raw in addresses {
            let max = if raw.address.is_ipv4() { 32 } else { 128 };
            if ifindexes.contains(&raw.ifindex) && raw.prefix_len < max {
                prefixes.push((network(raw.address, raw.prefix_len), raw.prefix_len));
            }
        }
    }
    prefixes.sort();
    prefixes.dedup();
    Ok(prefixes)
}

/// `address` with its host bits cleared.
fn network(address: IpAddr, prefix_len: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// A subscription to address changes in the current network namespace: readable when an
/// address was added or removed (either family).
pub struct AddressEvents {
    socket: Socket,
}

impl AddressEvents {
    /// Subscribes; the socket does not block.
    pub fn subscribe() -> Result<Self> {
        let socket = Socket::subscribe(ADDRESS_GROUPS).map_err(|source| Error::Io {
            action: "subscribing to address changes",
            source,
        })?;
        Ok(Self { socket })
    }

    /// Reads every notification waiting; true when one was an address added or removed.
    /// Also true after an overrun (ENOBUFS): changes were lost, so the caller re-reads.
    pub fn drain(&self) -> bool {
        let mut buffer = vec![0u8; 16 * 1024];
        let mut changed = false;
        loop {
            match self.socket.recv_nonblocking(&mut buffer) {
                Ok(0) => return changed,
                Ok(received) => {
                    let mut rest = &buffer[..received];
                    while rest.len() >= 16 {
                        let length =
                            u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                        if length < 16 || length > rest.len() {
                            break;
                        }
                        changed |= kind == RTM_NEWADDR || kind == RTM_DELADDR;
                        rest = rest.get((length + 3) & !3..).unwrap_or(&[]);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return changed,
                Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                Err(_) => return changed,
            }
        }
    }
}

impl AsFd for AddressEvents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl std::os::fd::AsRawFd for AddressEvents {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_clear_the_host_bits() {
        assert_eq!(
            network("192.0.2.77".parse().expect("v4"), 24),
            "192.0.2.0".parse::<IpAddr>().expect("v4")
        );
        assert_eq!(
            network("2001:db8::1".parse().expect("v6"), 64),
            "2001:db8::".parse::<IpAddr>().expect("v6")
        );
        assert_eq!(
            network("10.1.2.3".parse().expect("v4"), 0),
            "0.0.0.0".parse::<IpAddr>().expect("v4")
        );
    }

    #[test]
    fn loopback_has_its_prefixes_and_an_event_socket_subscribes() {
        let lo = crate::net::interface::ifindex("lo").expect("lo");
        let prefixes = on_link_prefixes(&[lo]).expect("netlink answers");
        assert!(
            prefixes.contains(&("127.0.0.0".parse().expect("v4"), 8)),
            "{prefixes:?}"
        );
        let events = AddressEvents::subscribe().expect("subscribed");
        assert!(!events.drain(), "nothing changed yet");
    }

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
