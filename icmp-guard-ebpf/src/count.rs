//! Counters: per-CPU arrays that userspace sums. Nothing here decides anything.

use aya_ebpf::maps::PerCpuArray;
use icmp_guard_common::{Counter, code_counter_index, interface::NO_SLOT};

use crate::maps::{CODE_COUNTERS, GLOBAL_COUNTERS, INTERFACE_COUNTERS, INTERFACE_SLOT};

#[inline(always)]
fn add(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU (XDP runs with preemption off),
        // and the pointer comes from a successful lookup.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}

/// One packet of `bytes` in slot `index` of `GLOBAL_COUNTERS`.
#[inline(always)]
pub fn global(index: u32, bytes: u64) {
    add(&GLOBAL_COUNTERS, index, bytes);
}

/// One packet in slot `index` of `ICMP_COUNTERS`.
#[inline(always)]
pub fn icmp(index: u32, bytes: u64) {
    add(&crate::maps::ICMP_COUNTERS, index, bytes);
}

/// A bucket the limiter created (`global::SOURCE_BUCKETS_CREATED` or
/// `PREFIX_BUCKETS_CREATED`), or a sweep sketch that found no slot
/// (`global::RECON_UNTRACKED`): a count of events, not packets.
#[inline(always)]
pub fn event(index: u32) {
    add(&GLOBAL_COUNTERS, index, 0);
}

/// One packet of (family, type, code).
#[inline(always)]
pub fn code(family: u8, icmp_type: u8, code: u8, dropped: bool, would_drop: bool, bytes: u64) {
    let index = code_counter_index(family, icmp_type, code);
    if let Some(counter) = CODE_COUNTERS.get_ptr_mut(index) {
        // SAFETY: as in `add`: this CPU's slot, from a successful lookup.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
            (*counter).dropped += u64::from(dropped);
            (*counter).would_drop += u64::from(would_drop);
        }
    }
}

/// A judged packet on this instance's interface (instances without a slot, those of
/// `BPF_PROG_TEST_RUN`, count nothing here).
#[inline(always)]
pub fn interface(dropped: bool, would_drop: bool, bytes: u64) {
    let slot = INTERFACE_SLOT.load();
    if slot == NO_SLOT {
        return;
    }
    if let Some(counter) = INTERFACE_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: this CPU's value, from a successful lookup.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
            (*counter).passed += u64::from(!dropped && !would_drop);
            (*counter).dropped += u64::from(dropped);
            (*counter).would_drop += u64::from(would_drop);
        }
    }
}
