//! Block time: a limit with `block` blocks a source it refuses, and every ICMP message of
//! that source is then dropped as `blocked` until the block ends — except the messages
//! whose loss would let a spoofer break the source's network (v4 fragmentation needed, v6
//! packet too big, neighbour discovery): [`exempt`]. TCP, UDP and everything else that is
//! not ICMP never reaches the check.
//!
//! Blocked sources live in two LRU hash maps (`BLOCKED_V4`, `BLOCKED_V6`) of [`ENTRIES`]
//! each, keyed by the source address (also for `per = prefix` limits: the source that was
//! refused is blocked, not its whole prefix), the value the end of the block on the precise
//! clock (`bpf_ktime_get_ns`, CLOCK_MONOTONIC, which userspace reads as well). An entry
//! whose end has passed blocks nothing; the LRU recycles it. The check runs only while
//! the live generation has a limit with a block
//! ([`crate::config::generation_flags::BLOCKS`]).

use crate::{FAMILY_V4, FAMILY_V6};

/// Entries of each of `BLOCKED_V4` and `BLOCKED_V6`.
pub const ENTRIES: u32 = 16_384;

/// True for the messages a block never applies to: v4 3/4 (fragmentation needed), v6 2
/// (packet too big) and neighbour discovery (v6 133-136).
#[inline(always)]
pub const fn exempt(family: u8, icmp_type: u8, code: u8) -> bool {
    if family == FAMILY_V4 {
        icmp_type == 3 && code == 4
    } else if family == FAMILY_V6 {
        icmp_type == 2 || (icmp_type >= 133 && icmp_type <= 136)
    } else {
        false
    }
}

/// True while a block that ends at `until` holds at `now`.
#[inline(always)]
pub const fn holds(until: u64, now: u64) -> bool {
    until > now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmtud_and_nd_are_exempt_and_nothing_else() {
        assert!(exempt(FAMILY_V4, 3, 4));
        assert!(!exempt(FAMILY_V4, 3, 3));
        assert!(!exempt(FAMILY_V4, 8, 0));
        assert!(!exempt(FAMILY_V4, 13, 0));
        assert!(exempt(FAMILY_V6, 2, 0));
        for nd in 133..=136 {
            assert!(exempt(FAMILY_V6, nd, 0), "{nd}");
        }
        assert!(!exempt(FAMILY_V6, 128, 0));
        assert!(!exempt(FAMILY_V6, 137, 0));
        assert!(!exempt(FAMILY_V6, 1, 4));
    }

    #[test]
    fn a_block_holds_until_its_end() {
        assert!(holds(10, 9));
        assert!(!holds(10, 10));
        assert!(!holds(0, 1));
    }
}
