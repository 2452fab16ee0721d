//! Reads what the kernel says is attached to an interface (RTM_GETLINK, IFLA_XDP), so that
//! `status` reports the mode the kernel actually gave rather than the one we asked for.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use super::netlink::{Attributes, Socket, invalid};

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLA_F_NESTED: u16 = 1 << 15;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;

/// How the kernel runs an XDP program on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver (XDP_ATTACHED_DRV).
    Native,
    /// In the generic, skb-based path (XDP_ATTACHED_SKB).
    Generic,
    /// Offloaded to the NIC (XDP_ATTACHED_HW).
    Offload,
}

impl AttachMode {
    /// Lower-case name, as printed.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Offload => "offload",
        }
    }
}

/// What IFLA_XDP says about one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpState {
    /// Interface name.
    pub name: String,
    /// Programs by mode; more than one when several modes are in use (XDP_ATTACHED_MULTI).
    pub programs: Vec<(AttachMode, u32)>,
    /// The interface's MTU (IFLA_MTU), read in the caller's network namespace.
    pub mtu: Option<u32>,
    /// The link type (`ifi_type`, an `ARPHRD_*` number): where its frames start.
    pub link_type: u16,
    /// The driver kind (IFLA_INFO_KIND: `veth`, `tun`, `bridge`, ...), for devices that
    /// have one.
    pub kind: Option<String>,
}

impl XdpState {
    /// The mode `program_id` runs in here, if it runs here at all.
    pub fn mode_of(&self, program_id: u32) -> Option<AttachMode> {
        self.programs
            .iter()
            .find(|(_, id)| *id == program_id)
            .map(|(mode, _)| *mode)
    }
}

/// Queries the XDP state of `ifindex` in the current network namespace. `Ok(None)` when the
/// interface no longer exists.
pub fn xdp_state(ifindex: u32) -> io::Result<Option<XdpState>> {
    let socket = Socket::open()?;
    socket.send(&link_request(
        RTM_GETLINK,
        libc::NLM_F_REQUEST as u16,
        ifindex,
        &[],
    ))?;

    let mut buffer = vec![0u8; 64 * 1024];
    let received = socket.recv(&mut buffer)?;
    let reply = &buffer[..received];
    let header = reply
        .get(..16)
        .ok_or_else(|| invalid("short netlink reply"))?;
    let message_type = u16::from_ne_bytes([header[4], header[5]]);
    match message_type {
        NLMSG_ERROR => {
            let code = reply
                .get(16..20)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| invalid("short netlink error"))?;
            if code == -libc::ENODEV {
                Ok(None)
            } else {
                Err(io::Error::from_raw_os_error(-code))
            }
        }
        RTM_NEWLINK => {
            let length = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let message = reply
                .get(16 + 16..length.min(reply.len()))
                .ok_or_else(|| invalid("short RTM_NEWLINK"))?;
            // struct ifinfomsg: family, pad, type (u16), index, flags, change.
            let link_type = reply
                .get(16 + 2..16 + 4)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]))
                .ok_or_else(|| invalid("short RTM_NEWLINK"))?;
            let mut state = parse_link(message);
            state.link_type = link_type;
            Ok(Some(state))
        }
        other => Err(invalid(&format!("unexpected netlink message {other}"))),
    }
}

/// A link message about `ifindex`: netlink header, struct ifinfomsg, then `attributes`.
fn link_request(message_type: u16, flags: u16, ifindex: u32, attributes: &[u8]) -> Vec<u8> {
    let total = 16 + 16 + attributes.len();
    let mut request = Vec::with_capacity(total);
    request.extend_from_slice(&(total as u32).to_ne_bytes());
    request.extend_from_slice(&message_type.to_ne_bytes());
    request.extend_from_slice(&flags.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    // struct ifinfomsg: family, pad, type, index, flags, change
    request.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    request.extend_from_slice(&0u16.to_ne_bytes());
    request.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(attributes);
    request
}

/// Removes the XDP program attached in `mode` to `ifindex` through netlink (what `ip link
/// set dev X xdp off` does). The kernel refuses with EBUSY when a bpf_link holds it: only
/// the link's owner can let it go.
pub fn remove_xdp(ifindex: u32, mode: AttachMode) -> io::Result<()> {
    set_xdp(ifindex, None, mode, None)
}

/// Puts `program` (none: removes the program) on `ifindex` in `mode` through netlink, as
/// libxdp does for its dispatchers. With `expected`, only in place of that program
/// (`XDP_FLAGS_REPLACE`: the kernel refuses with EEXIST when another one runs by now), and
/// atomically, without a moment of no program; without, only where no program runs
/// (`XDP_FLAGS_UPDATE_IF_NOEXIST`), unless removing.
pub fn set_xdp(
    ifindex: u32,
    program: Option<BorrowedFd<'_>>,
    mode: AttachMode,
    expected: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut flags = match mode {
        AttachMode::Generic => XDP_FLAGS_SKB_MODE,
        AttachMode::Native => XDP_FLAGS_DRV_MODE,
        AttachMode::Offload => XDP_FLAGS_HW_MODE,
    };
    let fd = program.map_or(-1, |program| program.as_raw_fd());
    let mut fields = vec![(IFLA_XDP_FD, fd.to_ne_bytes())];
    match expected {
        Some(expected) => {
            flags |= XDP_FLAGS_REPLACE;
            fields.push((IFLA_XDP_EXPECTED_FD, expected.as_raw_fd().to_ne_bytes()));
        }
        None if program.is_some() => flags |= XDP_FLAGS_UPDATE_IF_NOEXIST,
        None => {}
    }
    fields.push((IFLA_XDP_FLAGS, flags.to_ne_bytes()));
    let mut xdp = Vec::with_capacity(8 * fields.len());
    for (kind, value) in fields {
        xdp.extend_from_slice(&8u16.to_ne_bytes());
        xdp.extend_from_slice(&kind.to_ne_bytes());
        xdp.extend_from_slice(&value);
    }
    let mut attributes = Vec::with_capacity(4 + xdp.len());
    attributes.extend_from_slice(&((4 + xdp.len()) as u16).to_ne_bytes());
    attributes.extend_from_slice(&(IFLA_XDP | NLA_F_NESTED).to_ne_bytes());
    attributes.extend_from_slice(&xdp);
    let socket = Socket::open()?;
    socket.send(&link_request(
        RTM_SETLINK,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        ifindex,
        &attributes,
    ))?;
    let mut buffer = vec![0u8; 8 * 1024];
    let received = socket.recv(&mut buffer)?;
    let reply = &buffer[..received];
    let header = reply
        .get(..16)
        .ok_or_else(|| invalid("short netlink reply"))?;
    if u16::from_ne_bytes([header[4], header[5]]) != NLMSG_ERROR {
        return Err(invalid("no netlink acknowledgement"));
    }
    let code = reply
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| invalid("short netlink acknowledgement"))?;
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    }
}

fn parse_link(attributes: &[u8]) -> XdpState {
    let mut state = XdpState::default();
    for (kind, payload) in Attributes(attributes) {
        match kind {
            IFLA_IFNAME => {
                let end = payload
                    .iter()
                    .position(|b| *b == 0)
                    .unwrap_or(payload.len());
                state.name = String::from_utf8_lossy(&payload[..end]).into_owned();
            }
            IFLA_LINKINFO => {
                state.kind = Attributes(payload)
                    .find(|(kind, _)| *kind == IFLA_INFO_KIND)
                    .map(|(_, name)| {
                        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
                        String::from_utf8_lossy(&name[..end]).into_owned()
                    });
            }
            IFLA_MTU => {
                state.mtu = payload
                    .get(..4)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            }
            IFLA_XDP => {
                let mut attached = 0u8;
                let mut single = 0u32;
                for (kind, value) in Attributes(payload) {
                    let id = || {
                        value
                            .get(..4)
                            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0)
                    };
                    match kind {
                        IFLA_XDP_ATTACHED => attached = value.first().copied().unwrap_or(0),
                        IFLA_XDP_PROG_ID => single = id(),
                        IFLA_XDP_DRV_PROG_ID => state.programs.push((AttachMode::Native, id())),
                        IFLA_XDP_SKB_PROG_ID => state.programs.push((AttachMode::Generic, id())),
                        IFLA_XDP_HW_PROG_ID => state.programs.push((AttachMode::Offload, id())),
                        _ => {}
                    }
                }
                // With one program the kernel sends only IFLA_XDP_PROG_ID and the mode.
                let mode = match attached {
                    1 => Some(AttachMode::Native),
                    2 => Some(AttachMode::Generic),
                    3 => Some(AttachMode::Offload),
                    _ => None,
                };
                if let Some(mode) = mode
                    && single != 0
                    && state.programs.is_empty()
                {
                    state.programs.push((mode, single));
                }
            }
            _ => {}
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_no_xdp_program() {
        let index = crate::net::interface::ifindex("lo").expect("lo exists");
        let state = xdp_state(index)
            .expect("netlink answers")
            .expect("lo exists");
        assert_eq!(state.name, "lo");
        assert_eq!(state.link_type, libc::ARPHRD_LOOPBACK);
        assert!(state.programs.is_empty());
        assert!(state.mtu.is_some_and(|mtu| mtu >= 1500), "{state:?}");
    }

    #[test]
    fn missing_interface_is_none() {
        assert_eq!(xdp_state(0x7fff_fff0).expect("netlink answers"), None);
    }
}
