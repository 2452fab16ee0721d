//! The trace build's one report (feature `trace`; the production build has none of this).
//! Once the guard has decided and counted a packet it hands the decision over
//! ([`hand_over`]) and tail-calls `icmp_trace_log`, which, for a packet that matches the
//! [`TRACE`] filter before its deadline, logs one record through aya-log saying which
//! check decided, the rule or limiter behind it, and the verdict, and returns the guard's
//! action. The stages are not touched: what decided is read back from the decision, the
//! lists, the rule and the limiter's bucket here. A separate program, because the verifier
//! then walks the report once, not once for every state in which the guard ends.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use aya_log_ebpf::info;
use icmp_guard_common::{
    DropReason, FAMILY_V4,
    config::{self, GenerationConfig},
    decide::Decision,
    limit::{V4Key, V6Key, limiter_flags, limiter_slot, mask_v4, mask_v6, per, prefix_len},
    policy::{checks_off, list},
    trace::{Line, TraceConfig, check},
};

use crate::{
    decide,
    limit::Clock,
    maps::{
        CONFIG, LIMITERS, PACKET, PREFIXES_V4, PREFIXES_V6, SHARED_BUCKETS, SOURCES_V4, SOURCES_V6,
    },
    parse::Headers,
};

/// The filter and deadline userspace writes before it swaps this program in.
#[map(name = "TRACE")]
pub static TRACE: Array<TraceConfig> = Array::with_max_entries(1, 0);

/// `icmp_trace_log` at index 0, put there by userspace.
#[map(name = "TRACE_LOG")]
pub static TRACE_LOG: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What the guard decided, handed to `icmp_trace_log`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Record {
    pub generation: u32,
    /// The XDP action the guard chose: what `icmp_trace_log` returns.
    pub action: u32,
    /// 0 pass, 1 drop, 2 limit ([`Decision`]).
    pub kind: u8,
    /// The drop reason or the limiter's index.
    pub value: u8,
    /// Why the limiter refused the packet (a [`DropReason`]), 0 when it did not.
    pub refused: u8,
    /// 1 when the packet is dropped (0 in dry-run mode, where a drop is a would-drop).
    pub dropped: u8,
    pub _padding: u32,
}

#[map(name = "TRACE_RECORD")]
pub static TRACE_RECORD: PerCpuArray<Record> = PerCpuArray::with_max_entries(1, 0);

/// No bucket: a new source, charged to the new-source budget.
const NO_BUCKET: u64 = u64::MAX;

/// Hands the guard's decision to `icmp_trace_log` and tail-calls it; returns `action`
/// itself after the deadline (a trace build left behind costs one lookup per packet) or if
/// the tail call fails (no report, the same verdict).
#[inline(always)]
pub fn hand_over(
    ctx: &XdpContext,
    generation: u32,
    decision: Decision,
    refused: Option<DropReason>,
    dropped: bool,
    action: u32,
) -> u32 {
    let Some(filter) = TRACE.get(0) else {
        return action;
    };
    // SAFETY: a helper without arguments.
    if unsafe { bpf_ktime_get_ns() } > filter.deadline_ns {
        return action;
    }
    let Some(record) = TRACE_RECORD.get_ptr_mut(0) else {
        return action;
    };
    let (kind, value) = match decision {
        Decision::Pass => (0, 0),
        Decision::Drop(reason) => (1, reason as u8),
        Decision::Limit(index) => (2, index),
    };
    // SAFETY: this CPU's value, from a successful lookup; nothing else writes it now.
    unsafe {
        *record = Record {
            generation,
            action,
            kind,
            value,
            refused: refused.map_or(0, |reason| reason as u8),
            dropped: u8::from(dropped),
            _padding: 0,
        };
        TRACE_LOG.tail_call(ctx, 0);
    }
    action
}

/// `icmp_trace_log`: reports the packet the guard just decided, and returns its action.
#[inline(always)]
pub fn report(ctx: &XdpContext) -> u32 {
    let Some(record) = TRACE_RECORD.get_ptr(0) else {
        // Never: an array always has its entry. Fail closed.
        return xdp_action::XDP_DROP;
    };
    // SAFETY: this CPU's value, written by the guard that tail-called this program.
    let record = unsafe { &*record };
    log(ctx, record);
    record.action
}

#[inline(always)]
fn log(ctx: &XdpContext, record: &Record) {
    let Some(filter) = TRACE.get(0) else {
        return;
    };
    let mut clock = Clock::default();
    if clock.precise() > filter.deadline_ns {
        return;
    }
    let Some(headers) = PACKET.get_ptr(0) else {
        return;
    };
    // SAFETY: this CPU's value, written by the guard's parser for this packet.
    let headers: &Headers = unsafe { &*headers };
    let Some(config) = CONFIG.get(config::INDEX) else {
        return;
    };
    let generation = record.generation & 1;
    let settings: &GenerationConfig = config.generation(generation);
    let family = headers.family;
    let fragment = headers.is_fragment();
    let icmp_type = if fragment { 0 } else { headers.icmp_type };
    // An IPv4 filter's prefix is at most 32 bits: the bytes after the address are never
    // compared.
    if !filter.matches(family, &headers.source, icmp_type) {
        return;
    }
    let (listed, rule, martian) = decide::explain(headers, generation, settings);
    let mut limiter = Line::NO_LIMITER;
    let mut reason = 0u8;
    let decided = match record.kind {
        1 => {
            reason = record.value;
            if reason == DropReason::Invalid as u8
                && martian
                && settings.checks_off & checks_off::MARTIAN_SOURCES == 0
            {
                check::MARTIAN
            } else if reason == DropReason::DenyList as u8 {
                check::DENY_LIST
            } else if reason == DropReason::Smurf as u8 {
                check::SMURF
            } else if reason == DropReason::Blocked as u8 {
                check::BLOCK_TIME
            } else if reason == DropReason::Oversize as u8 {
                check::SIZE_CAP
            } else if reason == DropReason::Sweep as u8 {
                check::SWEEP
            } else {
                check::RULE
            }
        }
        2 => {
            limiter = record.value;
            reason = record.refused;
            check::LIMITER
        }
        _ if listed == list::ALLOW => check::ALLOW_LIST,
        _ if fragment => check::FRAGMENT,
        _ => check::RULE,
    };
    let (mut scope, mut rate, mut burst, mut ahead) = (0u8, 0u32, 0u32, NO_BUCKET);
    if limiter != Line::NO_LIMITER
        && let Some(config) = LIMITERS.get(limiter_slot(generation, limiter))
    {
        scope = config.per;
        rate = config.rate;
        burst = config.burst;
        let now = if config.flags & limiter_flags::PRECISE_CLOCK != 0 {
            clock.precise()
        } else {
            clock.coarse()
        };
        if let Some(tat) = bucket_tat(config, headers) {
            ahead = tat.saturating_sub(now);
        }
    }
    let verdict: u8 = match (reason != 0, record.dropped != 0) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => 2,
    };
    // Few arguments: every argument and every piece of text between them is a field on the
    // stack. Userspace unpacks them (`icmp_guard_common::trace::Line`).
    let packet = Line {
        family,
        icmp_type,
        code: if fragment { 0 } else { headers.code },
        verdict,
        reason,
        check: decided,
        action: rule.action,
        condition: rule.condition,
        limiter,
        scope,
        burst,
        rate,
    };
    let mut source = headers.source;
    if family == FAMILY_V4 {
        // As an IPv4-mapped IPv6 address, so that one format prints both families.
        source = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, source[0], source[1], source[2], source[3],
        ];
    }
    info!(
        ctx,
        "icmp-guard-trace {} {} {:i} {}",
        packet.decision_word(),
        packet.limiter_word(),
        source,
        ahead
    );
}

/// The TAT of the scope bucket the limiter `config` keeps for this packet's source.
#[inline(always)]
fn bucket_tat(config: &icmp_guard_common::limit::LimiterConfig, headers: &Headers) -> Option<u64> {
    if config.per == per::GLOBAL {
        let bucket = SHARED_BUCKETS.get_ptr_mut(u32::from(config.bucket))?;
        // SAFETY: a pointer into a map value from a successful lookup.
        return Some(unsafe { (*bucket).tat });
    }
    let family = headers.family;
    let prefix = prefix_len(config, family);
    let by_prefix = config.per == per::PREFIX;
    let bucket = if family == FAMILY_V4 {
        let key = V4Key {
            id: config.id,
            addr: mask_v4(headers.source_v4(), prefix),
        };
        // Each map named at its own call site, as in `limit`: the verifier wants to know it.
        if by_prefix {
            PREFIXES_V4.get_ptr(key)
        } else {
            SOURCES_V4.get_ptr(key)
        }
    } else {
        let key = V6Key {
            id: config.id,
            addr: mask_v6(headers.source, prefix),
        };
        if by_prefix {
            PREFIXES_V6.get_ptr(key)
        } else {
            SOURCES_V6.get_ptr(key)
        }
    }?;
    // SAFETY: a pointer into a map value from a successful lookup; a torn read of a TAT
    // another CPU is updating only makes the reported state a packet old.
    Some(unsafe { (*bucket).tat })
}
