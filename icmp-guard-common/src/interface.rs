//! What the program knows about the interface it runs on.
//!
//! Every attachment runs its own instance of the XDP program, loaded with read-only
//! globals that the verifier sees as constants:
//!
//! - [`LINK_KIND`](globals::LINK_KIND): where the frame starts. Ethernet frames start with a
//!   MAC header; layer-3 interfaces (tun, WireGuard: `ARPHRD_NONE`) hand XDP the IP header
//!   itself, and a program that parsed them as Ethernet would read an address as the
//!   EtherType and pass every packet. Userspace reads the interface's link type from the
//!   kernel and refuses kinds it cannot parse.
//! - [`INTERFACE_SLOT`](globals::INTERFACE_SLOT): the instance's slot in the `INTERFACES`
//!   table and in `INTERFACE_COUNTERS`, claimed by `attach` for one (network namespace,
//!   ifindex) and freed by `detach`. Slot [`NO_SLOT`] belongs to no interface: the
//!   instances that `BPF_PROG_TEST_RUN` uses run there, and count nothing per interface.
//! - [`NS_PER_JIFFY`](globals::NS_PER_JIFFY): the length of the kernel's tick, which turns
//!   jiffies into the limiter's coarse clock (see [`crate::limit::Clock`]); the loader reads
//!   it from `clock_getres(CLOCK_MONOTONIC_COARSE)`.
//!
//! The slot, not the ifindex, indexes per-interface state: ifindexes repeat across network
//! namespaces that share one pin directory, and never collide in a slot.

/// Values of [`globals::LINK_KIND`].
pub mod link_kind {
    /// Frames start with an Ethernet header (and up to two VLAN tags).
    pub const ETHERNET: u8 = 0;
    /// Frames start with the IP header; its version nibble says which IP.
    pub const RAW_IP: u8 = 1;
}

/// Names of the read-only globals of each program instance (`EbpfLoader::set_global`).
pub mod globals {
    /// `u8`, one of [`super::link_kind`].
    pub const LINK_KIND: &str = "LINK_KIND";
    /// `u32`, the instance's slot.
    pub const INTERFACE_SLOT: &str = "INTERFACE_SLOT";
    /// `u64`, nanoseconds per jiffy.
    pub const NS_PER_JIFFY: &str = "NS_PER_JIFFY";
}

/// Bits of [`InterfaceConfig::flags`].
pub mod interface_flags {
    /// The interface forwards (`net.ipv4.conf.IF.forwarding` or
    /// `net.ipv6.conf.IF.forwarding` is 1): sweep detection in mode auto is on.
    pub const FORWARDING: u8 = 1;
}

/// The tick the object assumes until the loader says otherwise (HZ = 250, Debian's).
pub const DEFAULT_NS_PER_JIFFY: u64 = 4_000_000;

/// Slots of `INTERFACES` and `INTERFACE_COUNTERS`; slot 0 is [`NO_SLOT`], so at most
/// `SLOTS - 1` interfaces can be attached to one pin directory.
pub const SLOTS: u32 = 1024;

/// The slot of program instances that run for no interface (`BPF_PROG_TEST_RUN`).
pub const NO_SLOT: u32 = 0;

/// Directed-broadcast addresses one slot holds: those of the attached interfaces of the
/// slot's network namespace. `attach` refuses a namespace with more.
pub const MAX_BROADCASTS: usize = 16;

/// One interface slot, written by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// The inode of the owner's network namespace (`/proc/self/ns/net`).
    pub netns: u64,
    /// The owner's ifindex in that namespace; 0 when the slot is free.
    pub ifindex: u32,
    /// One of [`link_kind`], as the instance was loaded with (for `status`).
    pub link_kind: u8,
    /// Bits of [`interface_flags`].
    pub flags: u8,
    /// How many entries of `broadcasts` are in use.
    pub broadcast_count: u8,
    pub _padding: u8,
    /// IPv4 directed broadcasts (network order) of the attached interfaces of `netns`:
    /// echo to them is a smurf, ICMP from them is martian.
    pub broadcasts: [[u8; 4]; MAX_BROADCASTS],
}

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, integers and byte arrays with explicit padding, every bit pattern
// valid.
unsafe impl aya::Pod for InterfaceConfig {}

impl InterfaceConfig {
    /// True when `address` is one of the slot's directed broadcasts.
    #[inline(always)]
    pub fn is_broadcast(&self, address: [u8; 4]) -> bool {
        let count = self.broadcast_count as usize;
        let mut index = 0;
        while index < MAX_BROADCASTS {
            if index >= count {
                return false;
            }
            if self.broadcasts[index] == address {
                return true;
            }
            index += 1;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_are_matched_only_up_to_the_count() {
        let mut config = InterfaceConfig {
            broadcast_count: 1,
            ..InterfaceConfig::default()
        };
        config.broadcasts[0] = [192, 0, 2, 255];
        config.broadcasts[1] = [198, 51, 100, 255];
        assert!(config.is_broadcast([192, 0, 2, 255]));
        assert!(!config.is_broadcast([198, 51, 100, 255]), "past the count");
        assert!(!InterfaceConfig::default().is_broadcast([0, 0, 0, 0]));
        config.broadcast_count = MAX_BROADCASTS as u8;
        assert!(config.is_broadcast([198, 51, 100, 255]));
    }

    #[test]
    fn the_layout_has_no_implicit_padding() {
        assert_eq!(size_of::<InterfaceConfig>(), 8 + 4 + 4 + 4 * MAX_BROADCASTS);
    }
}
