//! The XDP links that hold the program on each interface, pinned so that protection
//! outlives the process.
//!
//! Links are created with `BPF_LINK_CREATE` directly (never the legacy netlink path, which
//! cannot be pinned), and an upgrade swaps the program inside the existing pinned link with
//! `BPF_LINK_UPDATE`, so the interface is never without a program.

use std::{
    io,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::Path,
};

use icmp_guard_common::interface::link_kind;

use super::{Error, Result, pins::PinDir, sys};
use crate::net::link::{self as netlink, AttachMode};

/// The attach mode an operator asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeRequest {
    /// Native (driver) mode, falling back to generic where the driver lacks XDP.
    #[default]
    #[value(alias = "unspecified")]
    Auto,
    /// Native (driver) mode or fail (xdp-loader's `drv`).
    #[value(alias = "drv")]
    Native,
    /// Generic (skb) mode, slower but supported everywhere (xdp-loader's `skb`).
    #[value(alias = "skb")]
    Generic,
}

/// A pinned link and what the kernel says about it now.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LinkStatus {
    /// Interface name, `None` when the interface is gone.
    pub name: Option<String>,
    pub ifindex: u32,
    pub link_id: u32,
    pub program_id: u32,
    /// The mode our program runs in on that interface, `None` when it no longer runs there.
    pub mode: Option<AttachMode>,
    /// True when the kernel says the link's interface was deleted: the pin protects nothing
    /// and the next `detach` removes it.
    pub interface_gone: bool,
}

/// A link just created and pinned.
#[derive(Clone, Debug)]
pub struct NewLink {
    pub link_id: u32,
    pub program_id: u32,
    /// The mode the kernel reports, read back over netlink.
    pub mode: Option<AttachMode>,
    /// Why native mode was not used, when `auto` fell back to generic.
    pub fallback: Option<String>,
}

/// Where frames start on an interface of `link_type` (`ARPHRD_*`) and driver `kind`, or why
/// icmp-guard refuses it. Only kinds whose frame start is proven by a test are accepted:
/// parsing a layer-3 interface as Ethernet would read an address as the EtherType and pass
/// every packet.
pub fn link_kind_of(name: &str, link_type: u16, kind: Option<&str>) -> Result<u8> {
    match (link_type, kind) {
        (libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK, _) => Ok(link_kind::ETHERNET),
        // tun hands XDP the IP header itself (tun_get_user resets the MAC header to it).
        (libc::ARPHRD_NONE, Some("tun")) => Ok(link_kind::RAW_IP),
        (link_type, kind) => Err(Error::UnsupportedLinkType {
            name: name.to_owned(),
            link_type,
            what: match kind {
                Some(kind) => format!("a {kind} interface"),
                None => "an interface of this type".to_owned(),
            },
        }),
    }
}

/// The mode `program_id` runs in on `ifindex` now, if it runs there.
pub fn running_mode(ifindex: u32, program_id: u32) -> Option<AttachMode> {
    netlink::xdp_state(ifindex)
        .ok()
        .flatten()
        .and_then(|state| state.mode_of(program_id))
}

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Attaches `program` to `ifindex` (named `name`) of namespace `netns` with a new link in
/// `mode`, and pins the link in `pins`. Until the pin exists the link's descriptor is its
/// only reference: an error drops it, which detaches.
pub fn create(
    program: BorrowedFd<'_>,
    pins: &PinDir,
    netns: u64,
    name: &str,
    ifindex: u32,
    mode: ModeRequest,
) -> Result<NewLink> {
    let failed = |source: sys::SyscallError| Error::AttachFailed {
        name: name.to_owned(),
        source,
    };
    let (link, fallback) = match mode {
        ModeRequest::Generic => (
            sys::link_create_xdp(program, ifindex, XDP_FLAGS_SKB_MODE).map_err(failed)?,
            None,
        ),
        ModeRequest::Native => (
            sys::link_create_xdp(program, ifindex, XDP_FLAGS_DRV_MODE)
                .map_err(|err| native_refused(name, ifindex, err))?,
            None,
        ),
        ModeRequest::Auto => match sys::link_create_xdp(program, ifindex, XDP_FLAGS_DRV_MODE) {
            Ok(link) => (link, None),
            Err(native_err) => {
                let reason = native_refusal_reason(ifindex, &native_err);
                (
                    sys::link_create_xdp(program, ifindex, XDP_FLAGS_SKB_MODE).map_err(failed)?,
                    Some(reason),
                )
            }
        },
    };
    let info = sys::link_info(link.as_fd()).map_err(|source| Error::Syscall {
        action: "reading the XDP link",
        source,
    })?;
    pins.create_namespace_links_dir(netns)?;
    sys::obj_pin(link.as_fd(), &pins.link_path(netns, ifindex)).map_err(|source| {
        Error::PinLink {
            name: name.to_owned(),
            source,
        }
    })?;
    Ok(NewLink {
        link_id: info.id,
        program_id: info.program_id,
        mode: running_mode(ifindex, info.program_id),
        fallback,
    })
}

/// Swaps `program` into `link` (`BPF_LINK_UPDATE`): the interface runs the new program from
/// the next packet on, never none.
pub fn upgrade(name: &str, link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> Result<()> {
    sys::link_update(link, program).map_err(|source| Error::UpgradeFailed {
        name: name.to_owned(),
        source,
    })
}

/// True when a native attach failed because the MTU is too large for single-buffer XDP:
/// veth says ERANGE ("Peer MTU is too large to set XDP"), most other drivers EINVAL.
fn mtu_too_large(err: &io::Error, mtu: Option<u32>) -> bool {
    match err.raw_os_error() {
        Some(libc::ERANGE) => true,
        Some(libc::EINVAL) => mtu.is_some_and(|mtu| mtu > 1500),
        _ => false,
    }
}

fn interface_mtu(ifindex: u32) -> Option<u32> {
    netlink::xdp_state(ifindex).ok().flatten()?.mtu
}

fn native_refused(name: &str, ifindex: u32, err: sys::SyscallError) -> Error {
    let mtu = interface_mtu(ifindex);
    match (mtu_too_large(&err.source, mtu), mtu) {
        (true, Some(mtu)) => Error::MtuTooLarge {
            name: name.to_owned(),
            mtu,
        },
        _ => Error::NativeUnsupported {
            name: name.to_owned(),
            source: err,
        },
    }
}

fn native_refusal_reason(ifindex: u32, err: &sys::SyscallError) -> String {
    let mtu = interface_mtu(ifindex);
    match (mtu_too_large(&err.source, mtu), mtu) {
        (true, Some(mtu)) => format!("MTU {mtu} is too large for single-buffer native XDP"),
        _ => err.source.to_string(),
    }
}

/// Opens a pinned link and checks that it is an XDP link.
pub fn open(path: &Path) -> Result<(OwnedFd, sys::LinkInfo)> {
    let broken = |source: sys::SyscallError| Error::BrokenLinkPin {
        path: path.to_path_buf(),
        source,
    };
    let link = sys::obj_get(path).map_err(broken)?;
    let info = sys::link_info(link.as_fd()).map_err(broken)?;
    if info.link_type != sys::BPF_LINK_TYPE_XDP {
        return Err(Error::NotAnXdpLink {
            path: path.to_path_buf(),
            link_type: info.link_type,
        });
    }
    Ok((link, info))
}

/// Removes a pin.
pub fn remove_pin(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|err| Error::io(format!("removing {}", path.display()), err))
}

/// Removes the pinned link at `path`, which detaches the program from its interface.
/// `Ok(false)` when nothing was pinned there. The caller holds the pin directory's lock.
pub fn detach_path(path: &Path) -> Result<bool> {
    // Detach first, so that the interface is free when we return even if another process
    // holds the link open; removing the pin alone would wait for the last descriptor.
    if let Ok(link) = sys::obj_get(path) {
        let _ = sys::link_detach(link.as_fd());
    }
    match std::fs::remove_file(path) {
        // The pin was the last reference to the link: the kernel releases it, and with it the
        // attachment, once no process has it open.
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io(format!("removing {}", path.display()), err)),
    }
}

/// Removes the pinned link of (`netns`, `ifindex`); see [`detach_path`].
pub fn detach(pins: &PinDir, netns: u64, ifindex: u32) -> Result<bool> {
    detach_path(&pins.link_path(netns, ifindex))
}

/// What the kernel says about the link pinned at `path`: `None` when it was unpinned
/// meanwhile (a concurrent detach).
pub fn inspect(path: &Path) -> Result<Option<sys::LinkInfo>> {
    match open(path) {
        Ok((_link, info)) => Ok(Some(info)),
        Err(_) if !path.exists() => Ok(None),
        Err(err) => Err(err),
    }
}

/// The links of namespace `netns` (the caller's: interfaces are looked up in it) with what
/// the kernel says about them.
pub fn list(pins: &PinDir, netns: u64) -> Result<Vec<LinkStatus>> {
    let mut statuses = Vec::new();
    for ifindex in pins.linked_ifindexes(netns)? {
        let Some(info) = inspect(&pins.link_path(netns, ifindex))? else {
            continue;
        };
        // The kernel sets a link's ifindex to 0 when its interface is deleted; an ifindex that
        // now names another interface is never reported as protected.
        let interface_gone = info.ifindex == 0;
        let state = if interface_gone {
            None
        } else {
            netlink::xdp_state(ifindex).ok().flatten()
        };
        statuses.push(LinkStatus {
            name: state.as_ref().map(|state| state.name.clone()),
            ifindex,
            link_id: info.id,
            program_id: info.program_id,
            mode: state.and_then(|state| state.mode_of(info.program_id)),
            interface_gone,
        });
    }
    Ok(statuses)
}

/// The ids of the maps program `program_id` uses; `None` when the program cannot be seen
/// (listing programs needs CAP_SYS_ADMIN, which a container with CAP_BPF alone lacks).
pub fn program_map_ids(program_id: u32) -> Option<Vec<u32>> {
    aya::programs::loaded_programs()
        .filter_map(std::result::Result::ok)
        .find(|info| info.id() == program_id)
        .and_then(|info| info.map_ids().ok().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_link_kinds_whose_frame_start_is_known_are_accepted() {
        assert_eq!(
            link_kind_of("eth0", libc::ARPHRD_ETHER, Some("veth")).ok(),
            Some(link_kind::ETHERNET)
        );
        assert_eq!(
            link_kind_of("lo", libc::ARPHRD_LOOPBACK, None).ok(),
            Some(link_kind::ETHERNET)
        );
        assert_eq!(
            link_kind_of("tun0", libc::ARPHRD_NONE, Some("tun")).ok(),
            Some(link_kind::RAW_IP)
        );
        for (link_type, kind) in [
            (libc::ARPHRD_NONE, Some("wireguard")),
            (libc::ARPHRD_TUNNEL, Some("ipip")),
            (libc::ARPHRD_IPGRE, Some("gre")),
            (libc::ARPHRD_INFINIBAND, None),
        ] {
            let err = link_kind_of("x0", link_type, kind).expect_err("not known");
            assert!(
                err.to_string().starts_with("icmp-guard cannot guard x0: "),
                "{err}"
            );
        }
    }

    #[test]
    fn a_native_refusal_names_the_mtu_when_it_is_the_cause() {
        let erange = io::Error::from_raw_os_error(libc::ERANGE);
        let einval = io::Error::from_raw_os_error(libc::EINVAL);
        let unsupported = io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        assert!(mtu_too_large(&erange, Some(1500)));
        assert!(mtu_too_large(&einval, Some(9000)));
        assert!(!mtu_too_large(&einval, Some(1500)));
        assert!(!mtu_too_large(&unsupported, Some(9000)));
    }
}
