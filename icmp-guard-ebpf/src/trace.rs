//! The trace build's one report (feature `trace`; the production build has none of this):
//! after the pipeline has decided and counted a packet, a packet that matches the
//! [`TRACE`] filter before its deadline gets one log record through aya-log saying which
//! check decided, the rule or limiter behind it, and the verdict. The stages are not
//! touched: what decided is read back from the decision, the lists, the rule and the
//! limiter's bucket here.

use aya_ebpf::{macros::map, maps::Array, programs::XdpContext};
use aya_log_ebpf::info;
use icmp_guard_common::{
    DropReason, FAMILY_V4,
    config::GenerationConfig,
    decide::Decision,
    limit::{V4Key, V6Key, limiter_flags, limiter_slot, mask_v4, mask_v6, per, prefix_len},
    policy::{checks_off, list},
    trace::{Line, TraceConfig, check},
};

use crate::{
    decide,
    limit::Clock,
    maps::{LIMITERS, PREFIXES_V4, PREFIXES_V6, SHARED_BUCKETS, SOURCES_V4, SOURCES_V6},
    parse::Headers,
};

/// The filter and deadline userspace writes before it swaps this program in.
#[map(name = "TRACE")]
pub static TRACE: Array<TraceConfig> = Array::with_max_entries(1, 0);

/// No bucket: a new source, charged to the new-source budget.
const NO_BUCKET: u64 = u64::MAX;

/// Reports the fate of the packet of `headers`: `decision` is what the checks said,
/// `refused` why the limiter refused it (if it did), `dropped` whether it is dropped
/// (false in dry-run mode, where a drop is a would-drop).
#[inline(always)]
pub fn report(
    ctx: &XdpContext,
    headers: &Headers,
    generation: u32,
    settings: &GenerationConfig,
    decision: Decision,
    refused: Option<DropReason>,
    dropped: bool,
    clock: &mut Clock,
) {
    let Some(filter) = TRACE.get(0) else {
        return;
    };
    if clock.precise() > filter.deadline_ns {
        return;
    }
    let family = headers.family;
    let mut source = headers.source;
    if family == FAMILY_V4 {
        // As an IPv4-mapped IPv6 address, so that one format prints both families.
        source = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, source[0], source[1], source[2], source[3],
        ];
    }
    let fragment = headers.is_fragment();
    let icmp_type = if fragment { 0 } else { headers.icmp_type };
    let mut plain = headers.source;
    if family == FAMILY_V4 {
        plain[4..].fill(0);
    }
    if !filter.matches(family, &plain, icmp_type) {
        return;
    }
    let (listed, rule, martian) = decide::explain(headers, generation, settings);
    let mut limiter = u8::MAX;
    let mut reason = 0u8;
    let decided = match decision {
        Decision::Drop(why) => {
            reason = why as u8;
            match why {
                DropReason::Invalid
                    if martian && settings.checks_off & checks_off::MARTIAN_SOURCES == 0 =>
                {
                    check::MARTIAN
                }
                DropReason::DenyList => check::DENY_LIST,
                DropReason::Smurf => check::SMURF,
                _ => check::RULE,
            }
        }
        Decision::Pass if listed == list::ALLOW => check::ALLOW_LIST,
        Decision::Pass if fragment => check::FRAGMENT,
        Decision::Pass => check::RULE,
        Decision::Limit(index) => {
            limiter = index;
            if let Some(why) = refused {
                reason = why as u8;
            }
            check::LIMITER
        }
    };
    let (mut scope, mut rate, mut burst, mut ahead) = (0u8, 0u32, 0u32, NO_BUCKET);
    if limiter != u8::MAX
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
    let verdict: u8 = match (reason != 0, dropped) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => 2,
    };
    let code = if fragment { 0 } else { headers.code };
    // Few arguments: every argument and every piece of text between them is a field on the
    // stack. Userspace unpacks them (`icmp_guard_common::trace::Line`).
    let packet = Line {
        family,
        icmp_type,
        code,
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
            PREFIXES_V4.get_ptr(&key)
        } else {
            SOURCES_V4.get_ptr(&key)
        }
    } else {
        let key = V6Key {
            id: config.id,
            addr: mask_v6(headers.source, prefix),
        };
        if by_prefix {
            PREFIXES_V6.get_ptr(&key)
        } else {
            SOURCES_V6.get_ptr(&key)
        }
    }?;
    // SAFETY: a pointer into a map value from a successful lookup; a torn read of a TAT
    // another CPU is updating only makes the reported state a packet old.
    Some(unsafe { (*bucket).tat })
}
