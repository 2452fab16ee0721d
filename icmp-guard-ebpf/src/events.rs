//! Sampled events for `top` and the `run` drop log, under a per-CPU budget: a packet over
//! budget never touches the ring buffer. See [`icmp_guard_common::events`].

use aya_ebpf::{helpers::bpf_get_smp_processor_id, programs::XdpContext};
use icmp_guard_common::{
    FAMILY_V4,
    events::{EVENT_BYTES, IcmpEvent, action_of_slot, take_event},
    global,
};

use crate::{
    count,
    limit::Clock,
    maps::{EVENT_BUDGET, EVENTS},
    parse::Headers,
};

/// Writes a sampled event for `headers`, counted in `slot`, when this CPU's budget allows.
/// The budget's window runs on the coarse clock; the event's time stamp is the precise one
/// (`top` compares it with CLOCK_MONOTONIC), read only for an event that is written.
#[inline(always)]
pub fn emit(
    ctx: &XdpContext,
    headers: &Headers,
    slot: u32,
    len: u64,
    per_sec: u32,
    clock: &mut Clock,
) {
    if per_sec == 0 {
        return;
    }
    let Some(budget) = EVENT_BUDGET.get_ptr_mut(0) else {
        return;
    };
    let now = clock.coarse();
    // SAFETY: a per-CPU slot is only touched by this CPU (XDP runs with preemption off),
    // and the pointer comes from a successful lookup.
    if !take_event(unsafe { &mut *budget }, now, per_sec) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<IcmpEvent>(0) else {
        count::global(global::EVENTS_LOST, EVENT_BYTES as u64);
        return;
    };
    let (action, reason) = action_of_slot(slot);
    // Built from zero: spelling out the struct's byte-array padding would cost a call to
    // memset.
    let mut event = IcmpEvent {
        timestamp_ns: clock.precise(),
        ifindex: ctx.ingress_ifindex() as u32,
        packet_len: len as u32,
        // SAFETY: a helper without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        family: headers.family,
        icmp_type: headers.icmp_type,
        code: headers.code,
        action,
        reason,
        ..IcmpEvent::default()
    };
    if headers.family == FAMILY_V4 {
        // The other 12 bytes of an IPv4 packet's headers mean nothing; the event's are 0.
        event.source[..4].copy_from_slice(&headers.source_v4());
    } else {
        event.source = headers.source;
    }
    entry.write(event);
    entry.submit(0);
    count::global(global::EVENTS_EMITTED, EVENT_BYTES as u64);
}
