//! The icmp-guard XDP program: classify every inbound ICMPv4/ICMPv6 packet by family, type
//! and code, apply the policy and its limiters, and count packets and bytes per (family,
//! type, verdict). Stages, one file each: [`parse`] (the frame to headers, nothing looked
//! up) → [`decide`] (martians, lists, smurf, rule; the precedence is in
//! `icmp_guard_common::decide`) → [`limit`] (buckets) → [`count`] → [`events`].
//!
//! Two entry points run the same stages and differ only in how the limiter updates a
//! bucket ([`limit::Sync`]): `icmp_guard` with atomic compare-and-exchange (5.12+),
//! `icmp_guard_lock` with `bpf_spin_lock`. Userspace loads the one the kernel supports.
//! Beside them: the benchmarks' baselines.

#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core::intrinsics::atomic_cxchg: the BPF target has no AtomicU64::compare_exchange"
)]

mod count;
mod decide;
mod events;
mod limit;
mod maps;
mod parse;
mod recon;
#[cfg(feature = "trace")]
mod trace;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use icmp_guard_common::{
    DropReason, SLOT_PASSED, Verdict, apply_mode,
    config::{self, Config},
    counter_index,
    decide::Decision,
    global,
    limit::gcra,
    parse::{ETH_P_IPV4, IPPROTO_ICMP, IPV4_MIN_HLEN},
};
use network_types::{eth::EthHdr, icmp::Icmpv4Hdr, ip::Ipv4Hdr};

use crate::{
    limit::{Atomics, Clock, Locks, Sync},
    maps::{
        BASELINE_BUDGET, BASELINE_BUDGET_INTERVAL_NS, BASELINE_BUDGET_TOLERANCE_NS,
        BASELINE_COARSE_CLOCK, BASELINE_INTERVAL_NS, BASELINE_SOURCES, BASELINE_TOLERANCE_NS,
        CONFIG, LINK_KIND, NS_PER_JIFFY, PACKET,
    },
    parse::{Frame, Headers, Parsed},
};

/// The guard for kernels with atomic compare-and-exchange.
#[cfg(not(feature = "trace"))]
#[xdp]
#[inline(always)]
pub fn icmp_guard(ctx: XdpContext) -> u32 {
    guard::<Atomics>(&ctx)
}

/// The guard for kernels without it (5.10, 5.11).
#[cfg(not(feature = "trace"))]
#[xdp]
#[inline(always)]
pub fn icmp_guard_lock(ctx: XdpContext) -> u32 {
    guard::<Locks>(&ctx)
}

/// The trace build of `icmp_guard` (`icmp_guard_common::trace`): the same guard, which
/// also reports why each matching packet got its verdict. Its own name, so that a link
/// that runs it is told apart.
#[cfg(feature = "trace")]
#[xdp]
#[inline(always)]
pub fn icmp_trace(ctx: XdpContext) -> u32 {
    guard::<Atomics>(&ctx)
}

/// The trace build of `icmp_guard_lock`.
#[cfg(feature = "trace")]
#[xdp]
#[inline(always)]
pub fn icmp_trace_lock(ctx: XdpContext) -> u32 {
    guard::<Locks>(&ctx)
}

/// The trace build's report, tail-called by either guard once it has decided: verified
/// once on its own rather than once for every state the guard reaches its end in.
#[cfg(feature = "trace")]
#[xdp]
pub fn icmp_trace_log(ctx: XdpContext) -> u32 {
    trace::report(&ctx)
}

const fn action(drop: bool) -> u32 {
    if drop {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// parse → decide → limit → count → emit. What cannot be judged without the settings (a
/// `CONFIG` that does not answer, which an array never does) is dropped: fail closed.
#[inline(always)]
fn guard<S: Sync>(ctx: &XdpContext) -> u32 {
    let frame = Frame::new(ctx);
    let len = frame.len() as u64;
    // The hand-over: the parser writes an ICMP packet's headers into a per-CPU map, and the
    // later stages read them from there. The verifier does not track what a map holds, so
    // every way through the parser reaches the later stages in the same state, and they are
    // verified once rather than once per parse path.
    let mut handed: Option<*mut Headers> = None;
    let sink = || {
        handed = PACKET.get_ptr_mut(0);
        // SAFETY: this CPU's value, from a successful lookup; nothing else holds it.
        handed.map(|slot| unsafe { &mut *slot })
    };
    match parse::parse(&frame, LINK_KIND.load(), sink) {
        Parsed::NotIcmp => {
            // The cheapest path: no settings read, one counter.
            count::global(global::NON_ICMP_PASSED, len);
            return xdp_action::XDP_PASS;
        }
        Parsed::Unclassified(reason) => {
            let Some(config) = CONFIG.get(config::INDEX) else {
                return xdp_action::XDP_DROP;
            };
            let dry_run = config.mode == config::MODE_DRY_RUN;
            let slot = match (reason, dry_run) {
                (DropReason::Malformed, false) => global::MALFORMED_DROPPED,
                (DropReason::Malformed, true) => global::MALFORMED_WOULD_DROP,
                (_, false) => global::INVALID_DROPPED,
                (_, true) => global::INVALID_WOULD_DROP,
            };
            count::global(slot, len);
            count::interface(!dry_run, dry_run, len);
            return action(!dry_run);
        }
        Parsed::Icmp => {}
    }
    let Some(handed) = handed else {
        return xdp_action::XDP_DROP;
    };
    // Opaque to the optimiser, so that it reads the headers back from the map instead of
    // carrying the parser's values (and their many states) past this point.
    // SAFETY: the parser wrote this CPU's value; nothing else writes it during this run.
    let headers: &mut Headers = unsafe { &mut *core::hint::black_box(handed) };
    let Some(config) = CONFIG.get(config::INDEX) else {
        return xdp_action::XDP_DROP;
    };
    let dry_run = config.mode == config::MODE_DRY_RUN;
    let generation = live_generation(config);
    let settings = config.generation(generation);
    // Where every packet is in one verifier state: a blocked sweeper's probe is judged here,
    // and what sweep detection found goes into the hand-over.
    recon::observe_probe(headers, settings, config.recon_seed);
    // Read back through an opaque pointer, as after the parser.
    // SAFETY: as above.
    let headers: &Headers = unsafe { &*core::hint::black_box(handed) };
    let mut clock = Clock::default();
    let (verdict, decision) = if recon::blocked(headers) {
        (
            Verdict::Drop(DropReason::Sweep),
            Decision::Drop(DropReason::Sweep),
        )
    } else {
        if headers.is_fragment() {
            let decision = decide::fragment(headers, generation, settings);
            let verdict = match decision {
                Decision::Limit(limiter) => {
                    limit::admit::<S>(limiter, generation, headers, &mut clock)
                }
                Decision::Drop(reason) => Some(reason),
                Decision::Pass => None,
            };
            let result = match verdict {
                None => {
                    count::global(global::ICMP_FRAGMENT_PASSED, len);
                    count::interface(false, false, len);
                    xdp_action::XDP_PASS
                }
                Some(reason) => {
                    count::global(global::fragment_slot(reason, dry_run), len);
                    count::interface(!dry_run, dry_run, len);
                    action(!dry_run)
                }
            };
            #[cfg(feature = "trace")]
            return trace::hand_over(ctx, generation, decision, verdict, !dry_run, result);
            #[cfg(not(feature = "trace"))]
            return result;
        }
        let (decision, allowed) = decide::message(headers, generation, settings);
        let verdict = match decision {
            Decision::Pass => Verdict::Pass,
            Decision::Drop(reason) => Verdict::Drop(reason),
            Decision::Limit(limiter) => {
                match limit::admit::<S>(limiter, generation, headers, &mut clock) {
                    None => Verdict::Pass,
                    Some(reason) => Verdict::Drop(reason),
                }
            }
        };
        // Sketches are made only for what passed (a new source paid the new-source budget),
        // and never for the allow list.
        if verdict == Verdict::Pass && !allowed {
            recon::create(headers, &settings.recon, config.recon_seed);
        }
        (verdict, decision)
    };
    // Only the trace build reports the decision; production needs the verdict alone.
    #[cfg(not(feature = "trace"))]
    let _ = decision;
    let outcome = apply_mode(verdict, config.mode);
    let family = headers.family;
    count::icmp(counter_index(family, headers.icmp_type, outcome.slot), len);
    let would_drop = !outcome.drop && outcome.slot != SLOT_PASSED;
    count::code(
        family,
        headers.icmp_type,
        headers.code,
        outcome.drop,
        would_drop,
        len,
    );
    count::interface(outcome.drop, would_drop, len);
    // Once, after every branch of the decision has joined: the verifier walks this code for
    // the joined states only.
    events::emit(
        ctx,
        headers,
        outcome.slot,
        len,
        config.events_per_sec,
        &mut clock,
    );
    #[cfg(feature = "trace")]
    return trace::hand_over(
        ctx,
        generation,
        decision,
        match verdict {
            Verdict::Drop(reason) => Some(reason),
            Verdict::Pass => None,
        },
        outcome.drop,
        action(outcome.drop),
    );
    #[cfg(not(feature = "trace"))]
    action(outcome.drop)
}

/// The live policy generation, read once: every lookup for this packet uses it.
#[inline(always)]
fn live_generation(config: &Config) -> u32 {
    // SAFETY: a reference into the map value; volatile so the generation is read exactly
    // once.
    unsafe { core::ptr::read_volatile(&config.active_generation) & 1 }
}

/// The cheapest XDP program there is: the baseline that benchmarks divide by.
#[xdp]
pub fn xdp_pass_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The cheapest per-source limiter (`icmp_guard_common::baseline`): the benchmark's
/// measure of what any per-source limiter costs.
#[xdp]
pub fn xdp_minimal_per_source_limiter(ctx: XdpContext) -> u32 {
    minimal_limiter(&ctx, false)
}

/// The same with a new-source budget.
#[xdp]
pub fn xdp_minimal_per_source_limiter_with_budget(ctx: XdpContext) -> u32 {
    minimal_limiter(&ctx, true)
}

/// Ethernet, IPv4 with IHL, echo request; one LRU lookup by source, the precise clock, an
/// unsynchronised GCRA update.
#[inline(always)]
fn minimal_limiter(ctx: &XdpContext, budget: bool) -> u32 {
    let pass = xdp_action::XDP_PASS;
    let frame = Frame::new(ctx);
    let Some(eth) = frame.header::<EthHdr>(0) else {
        return pass;
    };
    // SAFETY: bounds checked by `header`.
    if u16::from_be(unsafe { (&raw const (*eth).ether_type).read_unaligned() }) != ETH_P_IPV4 {
        return pass;
    }
    let Some(ip) = frame.header::<Ipv4Hdr>(EthHdr::LEN) else {
        return pass;
    };
    // SAFETY: bounds checked by `header`; Ipv4Hdr is all bytes.
    let ip = unsafe { &*ip };
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    if ip.proto != IPPROTO_ICMP || header_len < IPV4_MIN_HLEN {
        return pass;
    }
    let Some(icmp) = frame.header::<Icmpv4Hdr>(EthHdr::LEN + header_len) else {
        return pass;
    };
    // SAFETY: as above.
    if unsafe { (*icmp).type_ } != 8 {
        return pass;
    }
    let now = if BASELINE_COARSE_CLOCK.load() == 0 {
        // SAFETY: a helper without arguments.
        unsafe { bpf_ktime_get_ns() }
    } else {
        // SAFETY: as above.
        unsafe { bpf_jiffies64() }.wrapping_mul(NS_PER_JIFFY.load())
    };
    let interval = BASELINE_INTERVAL_NS.load();
    match BASELINE_SOURCES.get_ptr_mut(ip.src_addr) {
        // SAFETY: a pointer from a successful lookup.
        Some(tat) => match gcra(unsafe { *tat }, now, interval, BASELINE_TOLERANCE_NS.load()) {
            Some(next) => {
                // SAFETY: as above.
                unsafe { *tat = next };
                pass
            }
            None => xdp_action::XDP_DROP,
        },
        None => {
            if budget {
                let Some(shared) = BASELINE_BUDGET.get_ptr_mut(0) else {
                    return xdp_action::XDP_DROP;
                };
                let interval = BASELINE_BUDGET_INTERVAL_NS.load();
                let tolerance = BASELINE_BUDGET_TOLERANCE_NS.load();
                // SAFETY: a pointer from a successful lookup.
                match gcra(unsafe { *shared }, now, interval, tolerance) {
                    // SAFETY: as above.
                    Some(next) => unsafe { *shared = next },
                    None => return xdp_action::XDP_DROP,
                }
            }
            let _ = BASELINE_SOURCES.insert(ip.src_addr, now + interval, 0);
            pass
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic at run time.
    unsafe { core::hint::unreachable_unchecked() }
}
