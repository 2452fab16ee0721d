//! The icmp-guard XDP program: classify every inbound ICMPv4/ICMPv6 packet by family, type
//! and code, apply the policy table, and count packets and bytes per (family, type, slot).
//!
//! Verdicts for packets we cannot classify are chosen on purpose:
//! - frames that are not IP, and IP that is not ICMP, pass untouched;
//! - an IP header that breaks the rules is dropped as `invalid` (the stack would drop it
//!   too, and a filter must not trust a header the stack would reject);
//! - a structure we refuse to walk further (over-deep VLAN stacks carrying IP, IPv6
//!   extension chains past the bound or past the packet) is dropped as `malformed`, since
//!   passing it would let an attacker hide ICMP behind it.

#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use icmp_guard_common::{
    CODE_COUNTER_ENTRIES, CodeCounter, Counter, DropReason, FAMILY_V4, FAMILY_V6,
    ICMP_COUNTER_ENTRIES, InterfaceCounter, SLOT_PASSED, Verdict, apply_mode, code_counter_index,
    config, counter_index,
    events::{EVENT_BYTES, EventBudget, IcmpEvent, RING_BYTES, action_of_slot, take_event},
    global,
    interface::{self, InterfaceConfig, NO_SLOT, link_kind},
    parse::{
        ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, ICMP_HLEN, IPPROTO_FRAGMENT, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPPROTO_ROUTING, IPV4_MIN_HLEN, IPV6_HLEN, MAX_IPV6_EXT_HEADERS,
        MAX_VLAN_TAGS, VLAN_HLEN, VLAN_PEEK_TAGS, check_ipv4, check_ipv6, ipv6_extension_len,
        ipv6_fragment, is_ipv6_extension, is_vlan,
    },
    policy::{
        Facts, GENERATIONS, LIST_ENTRIES, LimiterConfig, MAX_LIMITERS, POLICY_CODE_ENTRIES,
        POLICY_TYPE_ENTRIES, RATE_PREFIXES, RATE_SOURCES, RateKey, Rule, RuleVerdict,
        SCOPE_LINK_LOCAL, V4ListKey, V6ListKey, code_key, emission_interval_ns, evaluate, flags,
        gcra, ipv4_broadcast_or_multicast, ipv4_martian_source, ipv6_link_local_or_unspecified,
        ipv6_martian_source, ipv6_multicast_scope, limiter_flags, limiter_slot, list, mac_group,
        per, smurf_off, type_slot,
    },
};

#[map(name = "ICMP_COUNTERS")]
static ICMP_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(ICMP_COUNTER_ENTRIES, 0);

#[map(name = "CODE_COUNTERS")]
static CODE_COUNTERS: PerCpuArray<CodeCounter> =
    PerCpuArray::with_max_entries(CODE_COUNTER_ENTRIES, 0);

/// Per interface slot ([`INTERFACE_SLOT`]); userspace claims and frees the slots.
#[map(name = "INTERFACE_COUNTERS")]
static INTERFACE_COUNTERS: PerCpuArray<InterfaceCounter> =
    PerCpuArray::with_max_entries(interface::SLOTS, 0);

/// What userspace tells each instance about its interface, by slot.
#[map(name = "INTERFACES")]
static INTERFACES: Array<InterfaceConfig> = Array::with_max_entries(interface::SLOTS, 0);

/// Where frames start on this instance's interface (`interface::link_kind`); set by the
/// loader, a constant to the verifier, which drops the other parser.
#[unsafe(no_mangle)]
static LINK_KIND: Global<u8> = Global::new(link_kind::ETHERNET);

/// This instance's slot in `INTERFACES` and `INTERFACE_COUNTERS`; set by the loader.
#[unsafe(no_mangle)]
static INTERFACE_SLOT: Global<u32> = Global::new(NO_SLOT);

#[map(name = "GLOBAL_COUNTERS")]
static GLOBAL_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(global::ENTRIES, 0);

#[map(name = "POLICY_TYPES")]
static POLICY_TYPES: Array<Rule> = Array::with_max_entries(POLICY_TYPE_ENTRIES, 0);

#[map(name = "POLICY_CODES")]
static POLICY_CODES: HashMap<u32, Rule> = HashMap::with_max_entries(POLICY_CODE_ENTRIES, 0);

#[map(name = "LIMITERS")]
static LIMITERS: Array<LimiterConfig> = Array::with_max_entries(GENERATIONS * MAX_LIMITERS, 0);

/// GCRA state (theoretical arrival time, ns) per (limiter, source).
#[map(name = "RATE_SOURCES")]
static RATE_SOURCE_STATE: LruHashMap<RateKey, u64> = LruHashMap::with_max_entries(RATE_SOURCES, 0);

/// GCRA state per (limiter, source prefix).
#[map(name = "RATE_PREFIXES")]
static RATE_PREFIX_STATE: LruHashMap<RateKey, u64> = LruHashMap::with_max_entries(RATE_PREFIXES, 0);

/// GCRA state of each limiter's global bucket (its new-source budget unless per = global).
#[map(name = "RATE_GLOBAL")]
static RATE_GLOBAL: Array<u64> = Array::with_max_entries(MAX_LIMITERS, 0);

#[map(name = "LISTS_V4")]
static LISTS_V4: LpmTrie<V4ListKey, u32> = LpmTrie::with_max_entries(LIST_ENTRIES, 0);

#[map(name = "LISTS_V6")]
static LISTS_V6: LpmTrie<V6ListKey, u32> = LpmTrie::with_max_entries(LIST_ENTRIES, 0);

#[map(name = "CONFIG")]
static CONFIG: Array<u32> = Array::with_max_entries(config::ENTRIES, 0);

/// Sampled events for `top` and the `run` drop log; see [`icmp_guard_common::events`].
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

#[map(name = "EVENT_BUDGET")]
static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

/// Offsets beyond this are refused before they are added to a packet pointer, which also
/// gives the verifier the bound it needs for variable offsets.
const MAX_OFFSET: usize = 0x3fff;

#[xdp]
pub fn icmp_guard(ctx: XdpContext) -> u32 {
    let packet = Packet {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let mode = CONFIG
        .get(config::MODE)
        .copied()
        .unwrap_or(config::MODE_ENFORCE);
    let len = packet.len() as u64;
    match classify(&packet) {
        Classified::NotIcmp => {
            count(&GLOBAL_COUNTERS, global::NON_ICMP_PASSED, len);
            xdp_action::XDP_PASS
        }
        Classified::IcmpFragment => {
            count(&GLOBAL_COUNTERS, global::ICMP_FRAGMENT_PASSED, len);
            xdp_action::XDP_PASS
        }
        Classified::Unclassified(reason) => {
            let dry_run = mode == config::MODE_DRY_RUN;
            let slot = match (reason, dry_run) {
                (DropReason::Malformed, false) => global::MALFORMED_DROPPED,
                (DropReason::Malformed, true) => global::MALFORMED_WOULD_DROP,
                (_, false) => global::INVALID_DROPPED,
                (_, true) => global::INVALID_WOULD_DROP,
            };
            count(&GLOBAL_COUNTERS, slot, len);
            count_interface(!dry_run, dry_run, len);
            if dry_run {
                xdp_action::XDP_PASS
            } else {
                xdp_action::XDP_DROP
            }
        }
        Classified::Icmp(icmp) => {
            // Read once: every lookup for this packet uses the same policy generation.
            let generation = CONFIG
                .get(config::ACTIVE_GEN)
                // SAFETY: a valid pointer from a successful lookup; volatile so the
                // generation is read exactly once.
                .map_or(0, |value| unsafe { core::ptr::read_volatile(value) })
                & 1;
            let mut clock = Clock(0);
            let verdict = decide(&icmp, generation, &mut clock);
            let outcome = apply_mode(verdict, mode);
            count(
                &ICMP_COUNTERS,
                counter_index(icmp.family, icmp.icmp_type, outcome.slot),
                len,
            );
            let would_drop = !outcome.drop && outcome.slot != SLOT_PASSED;
            count_code(&icmp, outcome.drop, would_drop, len);
            count_interface(outcome.drop, would_drop, len);
            // Once, after every branch of the decision has joined: the verifier walks this
            // code for the joined states only.
            emit_event(&ctx, &icmp, outcome.slot, len, &mut clock);
            if outcome.drop {
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            }
        }
    }
}

/// `bpf_ktime_get_ns`, read at most once per packet: the rate limiter and the event budget
/// share one reading (the helper is a real cost at flood rates).
struct Clock(u64);

impl Clock {
    #[inline(always)]
    fn now(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: a helper without arguments.
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }
}

/// The cheapest XDP program there is: the baseline that benchmarks divide by.
#[xdp]
pub fn xdp_pass_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// What the parser found.
enum Classified {
    /// Not ICMP at all: passed untouched.
    NotIcmp,
    /// A non-first ICMP fragment: no header to classify.
    IcmpFragment,
    /// Dropped before an ICMP type could be read.
    Unclassified(DropReason),
    /// An ICMP message with its type read from the real ICMP header.
    Icmp(Icmp),
}

struct Icmp {
    family: u8,
    icmp_type: u8,
    code: u8,
    /// Source address; IPv4 in the first 4 bytes.
    source: [u8; 16],
    /// A smurf amplifier request: echo or timestamp request to a broadcast or multicast
    /// destination (L2, L3, or a directed broadcast of an attached interface), or ICMPv6
    /// echo to multicast beyond the link. Which of the two is recorded in `smurf_check`.
    smurf: bool,
    /// The `smurf_off` bit that switches the `smurf` check off.
    smurf_check: u32,
    /// The source is one no packet may carry (or a broadcast address of ours).
    martian: bool,
    facts: Facts,
}

/// Precedence: deny/allow list (most specific prefix wins) → smurf → type/code rule and
/// its condition → rate limit (skipped for allowed sources). Invalid packets never get
/// here.
#[inline(always)]
fn decide(icmp: &Icmp, generation: u32, clock: &mut Clock) -> Verdict {
    let checks_off = CONFIG
        .get(config::SMURF_OFF + generation)
        .copied()
        .unwrap_or(0);
    if icmp.martian && checks_off & smurf_off::MARTIAN_SOURCES == 0 {
        return Verdict::Drop(DropReason::Invalid);
    }
    let listed = source_list(icmp, generation);
    if listed == list::DENY {
        return Verdict::Drop(DropReason::DenyList);
    }
    if icmp.smurf && checks_off & icmp.smurf_check == 0 {
        return Verdict::Drop(DropReason::Smurf);
    }
    let mut rule = POLICY_TYPES
        .get(type_slot(generation, icmp.family, icmp.icmp_type))
        .copied()
        .unwrap_or(Rule::DROP);
    if rule.flags & flags::HAS_CODE_RULES != 0
        // SAFETY: the value is copied out at once; userspace replaces whole entries.
        && let Some(code_rule) = unsafe {
            POLICY_CODES.get(code_key(generation, icmp.family, icmp.icmp_type, icmp.code))
        }
    {
        rule = *code_rule;
    }
    match evaluate(rule, &icmp.facts) {
        RuleVerdict::Pass => Verdict::Pass,
        RuleVerdict::Drop(reason) => Verdict::Drop(reason),
        RuleVerdict::Limit(_) if listed == list::ALLOW => Verdict::Pass,
        RuleVerdict::Limit(limiter) => match admit(icmp, generation, limiter, clock) {
            None => Verdict::Pass,
            Some(reason) => Verdict::Drop(reason),
        },
    }
}

/// Takes a token for `icmp` from `limiter`. Buckets are shared by both CPUs and updated
/// without locks (the kernel forbids spin locks in LRU maps): two CPUs that read the same
/// TAT at once can both admit, so a race over-admits by at most one packet per CPU.
/// Returns why the packet is refused, or `None` when it may pass.
#[inline(always)]
fn admit(icmp: &Icmp, generation: u32, limiter: u8, clock: &mut Clock) -> Option<DropReason> {
    let Some(config) = LIMITERS.get(limiter_slot(generation, limiter)).copied() else {
        return Some(DropReason::RateLimit);
    };
    let reason = if config.flags & limiter_flags::REASON_SMURF != 0 {
        DropReason::Smurf
    } else {
        DropReason::RateLimit
    };
    if take_token(icmp, &config, limiter, clock.now()) {
        None
    } else {
        Some(reason)
    }
}

#[inline(always)]
fn take_token(icmp: &Icmp, config: &LimiterConfig, limiter: u8, now: u64) -> bool {
    let Some(global) = RATE_GLOBAL.get_ptr_mut(u32::from(limiter) % MAX_LIMITERS) else {
        return false;
    };
    if config.per == per::GLOBAL {
        return take(global, now, config.rate, config.burst);
    }
    let (state, prefix_len) = if config.per == per::PREFIX {
        let prefix_len = if icmp.family == FAMILY_V4 {
            config.prefix_v4
        } else {
            config.prefix_v6
        };
        (&RATE_PREFIX_STATE, prefix_len)
    } else {
        (&RATE_SOURCE_STATE, 128)
    };
    let key = RateKey::new(limiter, icmp.family, &icmp.source, prefix_len);
    match state.get_ptr_mut(key) {
        // An established source (or prefix): its own bucket decides.
        Some(tat) => take(tat, now, config.rate, config.burst),
        None => {
            // A new one is charged to the new-source budget first, so that random
            // spoofed sources, each new, are capped by it; its bucket is created only when
            // admitted, so rejected spoofed packets do not churn the LRU.
            if !take(global, now, config.global_rate, config.global_burst) {
                return false;
            }
            let interval = emission_interval_ns(config.rate);
            match gcra(0, now, interval, config.burst) {
                Some(tat) => {
                    // Losing an insert race to the other CPU is fine: that packet was
                    // already charged to the new-source budget.
                    let _ = state.insert(key, tat, u64::from(BPF_NOEXIST));
                    true
                }
                None => false,
            }
        }
    }
}

#[inline(always)]
fn take(tat: *mut u64, now: u64, rate: u32, burst: u32) -> bool {
    // SAFETY: `tat` comes from a successful map lookup and stays valid for this program
    // run; concurrent writers race benignly (see `admit`).
    unsafe {
        match gcra(*tat, now, emission_interval_ns(rate), burst) {
            Some(next) => {
                *tat = next;
                true
            }
            None => false,
        }
    }
}

#[inline(always)]
fn source_list(icmp: &Icmp, generation: u32) -> u32 {
    let found = if icmp.family == FAMILY_V4 {
        let mut data: V4ListKey = [0; 5];
        data[0] = generation as u8;
        data[1..5].copy_from_slice(&icmp.source[..4]);
        LISTS_V4.get(Key::new(8 + 32, data)).copied()
    } else {
        let mut data: V6ListKey = [0; 17];
        data[0] = generation as u8;
        data[1..17].copy_from_slice(&icmp.source);
        LISTS_V6.get(Key::new(8 + 128, data)).copied()
    };
    found.unwrap_or(0)
}

struct Packet {
    start: usize,
    end: usize,
}

impl Packet {
    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }

    /// The only way this program reads the packet: a pointer to `N` bytes at `offset`, or
    /// `None` when they are not all inside the packet.
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<&[u8; N]> {
        if offset > MAX_OFFSET {
            return None;
        }
        let at = self.start + offset;
        if at + N > self.end {
            return None;
        }
        // SAFETY: the N bytes at `at` lie inside [start, end), checked just above.
        Some(unsafe { &*(at as *const [u8; N]) })
    }
}

#[inline(always)]
fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

#[inline(always)]
fn classify(packet: &Packet) -> Classified {
    if LINK_KIND.load() == link_kind::RAW_IP {
        // No link-layer header: the IP version says which IP. Anything else, or anything
        // shorter than the smallest IP header, is not IP, and the stack drops it. (A
        // one-byte read here compiles to a bounds check the verifier cannot follow.)
        return match packet.bytes::<IPV4_MIN_HLEN>(0).map(|first| first[0] >> 4) {
            Some(4) => classify_ipv4(packet, 0),
            Some(6) => classify_ipv6(packet, 0),
            _ => Classified::NotIcmp,
        };
    }
    let Some(eth) = packet.bytes::<ETH_HLEN>(0) else {
        // A runt frame carries no IP; the stack discards it.
        return Classified::NotIcmp;
    };
    let mut ether_type = be16([eth[12], eth[13]]);
    let mut offset = ETH_HLEN;
    let mut tags = 0;
    for _ in 0..VLAN_PEEK_TAGS {
        if !is_vlan(ether_type) {
            break;
        }
        let Some(tag) = packet.bytes::<VLAN_HLEN>(offset) else {
            // A truncated tag cannot carry IP.
            return Classified::NotIcmp;
        };
        ether_type = be16([tag[2], tag[3]]);
        offset += VLAN_HLEN;
        tags += 1;
    }
    if is_vlan(ether_type) {
        // Deeper than we peek: we cannot tell what it carries, so it does not get through.
        return Classified::Unclassified(DropReason::Malformed);
    }
    if ether_type != ETH_P_IPV4 && ether_type != ETH_P_IPV6 {
        return Classified::NotIcmp;
    }
    if tags > MAX_VLAN_TAGS {
        return Classified::Unclassified(DropReason::Malformed);
    }
    if ether_type == ETH_P_IPV4 {
        classify_ipv4(packet, offset)
    } else {
        classify_ipv6(packet, offset)
    }
}

#[inline(always)]
fn classify_ipv4(packet: &Packet, offset: usize) -> Classified {
    let Some(ip) = packet.bytes::<IPV4_MIN_HLEN>(offset) else {
        return Classified::Unclassified(DropReason::Invalid);
    };
    let Some(shape) = check_ipv4(
        ip[0],
        be16([ip[2], ip[3]]),
        be16([ip[6], ip[7]]),
        packet.len() - offset,
    ) else {
        return Classified::Unclassified(DropReason::Invalid);
    };
    if ip[9] != IPPROTO_ICMP {
        return Classified::NotIcmp;
    }
    if shape.overflows_datagram() {
        return Classified::Unclassified(DropReason::Invalid);
    }
    if shape.is_non_first_fragment() {
        return Classified::IcmpFragment;
    }
    // The ICMP header starts where IHL says, never at a fixed 20 bytes.
    let icmp_offset = offset + shape.header_len;
    let Some(header) = read_icmp(packet, icmp_offset, shape.payload_len) else {
        return Classified::Unclassified(DropReason::Invalid);
    };
    let mut source = [0u8; 16];
    source[..4].copy_from_slice(&ip[12..16]);
    let source_v4 = [ip[12], ip[13], ip[14], ip[15]];
    let destination = [ip[16], ip[17], ip[18], ip[19]];
    let request = header[0] == 8 || header[0] == 13;
    let ours = INTERFACES.get(INTERFACE_SLOT.load());
    let group_destination = dst_mac_group(packet)
        || ipv4_broadcast_or_multicast(destination)
        || ours.is_some_and(|ours| ours.is_broadcast(destination));
    let martian =
        ipv4_martian_source(source_v4) || ours.is_some_and(|ours| ours.is_broadcast(source_v4));
    Classified::Icmp(Icmp {
        family: FAMILY_V4,
        icmp_type: header[0],
        code: header[1],
        source,
        smurf: request && group_destination,
        smurf_check: smurf_off::BROADCAST_ECHO,
        martian,
        facts: Facts {
            hop_limit: ip[8],
            fragmented: shape.more_fragments,
            source_link_local: false,
            mtu: 0,
        },
    })
}

#[inline(always)]
fn classify_ipv6(packet: &Packet, offset: usize) -> Classified {
    let Some(ip) = packet.bytes::<IPV6_HLEN>(offset) else {
        return Classified::Unclassified(DropReason::Invalid);
    };
    let payload_len = be16([ip[4], ip[5]]) as usize;
    if !check_ipv6(ip[0], payload_len as u16, packet.len() - offset) {
        return Classified::Unclassified(DropReason::Invalid);
    }
    // Opaque to the optimiser: it knows `packet_end` lies inside the frame (check_ipv6) and
    // would otherwise drop the frame-end check of the extension header reads below as
    // redundant with the payload-end check, which only the verifier cannot see.
    let packet_end = core::hint::black_box(offset + IPV6_HLEN + payload_len);
    let mut next_header = ip[6];
    let mut cursor = offset + IPV6_HLEN;
    let mut fragmented = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_extension(next_header) {
            break;
        }
        // Every extension header field is read from inside the IPv6 payload, never from
        // Ethernet padding or trailing bytes past it.
        if cursor + 8 > packet_end {
            return Classified::Unclassified(DropReason::Malformed);
        }
        let Some(ext) = packet.bytes::<8>(cursor) else {
            return Classified::Unclassified(DropReason::Malformed);
        };
        // The whole header inside the payload before any of its fields is acted on.
        let length = ipv6_extension_len(next_header, ext[1]);
        if cursor + length > packet_end {
            return Classified::Unclassified(DropReason::Malformed);
        }
        if next_header == IPPROTO_ROUTING && ext[2] == 0 && ext[3] != 0 {
            // Routing header type 0 with segments left (RFC 5095): deprecated, an
            // amplification vector, never processed.
            return Classified::Unclassified(DropReason::Invalid);
        }
        if next_header == IPPROTO_FRAGMENT {
            let (fragment_offset, _more) = ipv6_fragment(be16([ext[2], ext[3]]));
            // RFC 6980 §5: ND messages must not carry a Fragment header at all, atomic
            // fragments (RFC 6946) included; the ND condition reads this fact.
            fragmented = true;
            if fragment_offset != 0 {
                return if ext[0] == IPPROTO_ICMPV6 {
                    Classified::IcmpFragment
                } else {
                    Classified::NotIcmp
                };
            }
            // A first fragment, or an atomic fragment (RFC 6946): classify what follows.
        }
        cursor += length;
        next_header = ext[0];
    }
    if is_ipv6_extension(next_header) {
        return Classified::Unclassified(DropReason::Malformed);
    }
    if next_header != IPPROTO_ICMPV6 {
        return Classified::NotIcmp;
    }
    let Some(header) = read_icmp(packet, cursor, packet_end - cursor) else {
        return Classified::Unclassified(DropReason::Invalid);
    };
    let mut source = [0u8; 16];
    source.copy_from_slice(&ip[8..24]);
    let mut destination = [0u8; 16];
    destination.copy_from_slice(&ip[24..40]);
    Classified::Icmp(Icmp {
        family: FAMILY_V6,
        icmp_type: header[0],
        code: header[1],
        source,
        smurf: header[0] == 128 && ipv6_multicast_scope(destination) > SCOPE_LINK_LOCAL,
        smurf_check: smurf_off::MULTICAST_ECHO_V6,
        martian: ipv6_martian_source(source, header[0]),
        facts: Facts {
            hop_limit: ip[7],
            fragmented,
            source_link_local: ipv6_link_local_or_unspecified(source),
            mtu: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
        },
    })
}

#[inline(always)]
fn dst_mac_group(packet: &Packet) -> bool {
    LINK_KIND.load() == link_kind::ETHERNET
        && packet.bytes::<6>(0).is_some_and(|mac| mac_group(*mac))
}

/// The fixed 8-byte ICMP header at `offset`, or `None` when the message is shorter.
#[inline(always)]
fn read_icmp(packet: &Packet, offset: usize, payload_len: usize) -> Option<[u8; ICMP_HLEN]> {
    // Anything shorter than the fixed header is invalid, and its first byte is not trusted
    // as a type: past the IP payload it is Ethernet padding.
    if payload_len < ICMP_HLEN {
        return None;
    }
    packet.bytes::<ICMP_HLEN>(offset).copied()
}

/// Writes a sampled event for `icmp` when this CPU's budget allows. The budget is checked
/// first, so a packet over budget never touches the ring buffer.
#[inline(always)]
fn emit_event(ctx: &XdpContext, icmp: &Icmp, slot: u32, len: u64, clock: &mut Clock) {
    let per_sec = CONFIG.get(config::EVENTS_PER_SEC).copied().unwrap_or(0);
    if per_sec == 0 {
        return;
    }
    let Some(budget) = EVENT_BUDGET.get_ptr_mut(0) else {
        return;
    };
    let now = clock.now();
    // SAFETY: a per-CPU slot is only touched by this CPU (XDP runs with preemption off),
    // and the pointer comes from a successful lookup.
    if !take_event(unsafe { &mut *budget }, now, per_sec) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<IcmpEvent>(0) else {
        count(&GLOBAL_COUNTERS, global::EVENTS_LOST, EVENT_BYTES as u64);
        return;
    };
    let (action, reason) = action_of_slot(slot);
    entry.write(IcmpEvent {
        timestamp_ns: now,
        source: icmp.source,
        ifindex: ctx.ingress_ifindex() as u32,
        packet_len: len as u32,
        // SAFETY: a helper without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        family: icmp.family,
        icmp_type: icmp.icmp_type,
        code: icmp.code,
        action,
        reason,
        _padding: [0; 7],
    });
    entry.submit(0);
    count(&GLOBAL_COUNTERS, global::EVENTS_EMITTED, EVENT_BYTES as u64);
}

#[inline(always)]
fn count(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and the pointer comes from a
        // successful lookup.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}

#[inline(always)]
fn count_code(icmp: &Icmp, dropped: bool, would_drop: bool, bytes: u64) {
    let index = code_counter_index(icmp.family, icmp.icmp_type, icmp.code);
    if let Some(counter) = CODE_COUNTERS.get_ptr_mut(index) {
        // SAFETY: as in `count`: this CPU's slot, from a successful lookup.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
            (*counter).dropped += u64::from(dropped);
            (*counter).would_drop += u64::from(would_drop);
        }
    }
}

/// Counts a judged packet for this instance's interface (instances without a slot, those
/// of `BPF_PROG_TEST_RUN`, count nothing here).
#[inline(always)]
fn count_interface(dropped: bool, would_drop: bool, bytes: u64) {
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic at run time.
    unsafe { core::hint::unreachable_unchecked() }
}
