//! The decision stage: the facts that need the maps (martian sources and group destinations
//! need the interface's directed broadcasts), and the lookups of the allow/deny lists and
//! the rules. The precedence itself is [`icmp_guard_common::decide`]'s.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::maps::lpm_trie::Key;
use icmp_guard_common::{
    FAMILY_V4, FAMILY_V6, block,
    config::{GenerationConfig, generation_flags},
    decide::{Decision, IcmpFragment, IcmpMessage, Tables, decide_fragment, decide_message},
    interface::InterfaceConfig,
    policy::{
        Facts, Rule, SCOPE_LINK_LOCAL, V4ListKey, V6ListKey, checks_off, code_key, flags,
        ipv4_broadcast_or_multicast, ipv4_martian_source, ipv6_link_local, ipv6_martian_source,
        ipv6_multicast_scope, ipv6_unspecified, list, type_slot,
    },
};

use crate::{
    maps::{
        BLOCKED_V4, BLOCKED_V6, INTERFACE_SLOT, INTERFACES, LISTS_V4, LISTS_V6, POLICY_CODES,
        POLICY_TYPES,
    },
    parse::{Headers, header_flags},
};

/// The lists and rules of one generation, looked up for one packet.
struct MapTables<'a> {
    generation: u32,
    flags: u8,
    headers: &'a Headers,
    /// What `listed` found.
    listed: u32,
}

impl Tables for MapTables<'_> {
    #[inline(always)]
    fn listed(&mut self) -> u32 {
        let source = &self.headers.source;
        let found = if self.headers.family == FAMILY_V4 {
            if self.flags & generation_flags::LISTS_V4 == 0 {
                return 0;
            }
            let address = self.headers.source_v4();
            let data: V4ListKey = [
                self.generation as u8,
                address[0],
                address[1],
                address[2],
                address[3],
            ];
            LISTS_V4.get(Key::new(8 + 32, data)).copied()
        } else {
            if self.flags & generation_flags::LISTS_V6 == 0 {
                return 0;
            }
            let mut data: V6ListKey = [0; 17];
            data[0] = self.generation as u8;
            data[1..17].copy_from_slice(source);
            LISTS_V6.get(Key::new(8 + 128, data)).copied()
        };
        self.listed = found.unwrap_or(0);
        self.listed
    }

    #[inline(always)]
    fn rule(&mut self) -> Rule {
        let (family, icmp_type) = (self.headers.family, self.headers.icmp_type);
        let rule = POLICY_TYPES
            .get(type_slot(self.generation, family, icmp_type))
            .copied()
            .unwrap_or(Rule::DROP);
        if rule.flags & flags::HAS_CODE_RULES != 0 {
            let key = code_key(self.generation, family, icmp_type, self.headers.code);
            // SAFETY: the value is copied out at once; userspace replaces whole entries.
            if let Some(code_rule) = unsafe { POLICY_CODES.get(key) } {
                return *code_rule;
            }
        }
        rule
    }

    #[inline(always)]
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by reference the verifier processes far fewer instructions (165k against 98k on 6.18) than with the key copied"
    )]
    fn blocked(&mut self) -> bool {
        let until = if self.headers.family == FAMILY_V4 {
            // SAFETY: the value is copied out at once.
            unsafe { BLOCKED_V4.get(&self.headers.source_v4()) }.copied()
        } else {
            // SAFETY: as above.
            unsafe { BLOCKED_V6.get(&self.headers.source) }.copied()
        };
        match until {
            // SAFETY: a helper without arguments.
            Some(until) => block::holds(until, unsafe { bpf_ktime_get_ns() }),
            None => false,
        }
    }
}

/// This instance's interface slot.
#[inline(always)]
pub fn interface() -> Option<&'static InterfaceConfig> {
    INTERFACES.get(INTERFACE_SLOT.load())
}

/// What is true of the addresses whatever the packet carries: a martian source, and a
/// broadcast or multicast destination (L2; L3; a directed broadcast of ours). IPv6 has no
/// broadcast; its multicast scope matters to the callers.
#[inline(always)]
fn v4_addresses(headers: &Headers) -> (bool, bool) {
    let source = headers.source_v4();
    let destination = headers.destination_v4();
    let ours = interface();
    let martian = ipv4_martian_source(source) || ours.is_some_and(|ours| ours.is_broadcast(source));
    let group = headers.flags & header_flags::MAC_GROUP != 0
        || ipv4_broadcast_or_multicast(destination)
        || ours.is_some_and(|ours| ours.is_broadcast(destination));
    (martian, group)
}

/// The fate of an ICMP message under `generation`'s policy, and whether its source is on
/// the allow list.
#[inline(always)]
pub fn message(
    headers: &Headers,
    generation: u32,
    settings: &GenerationConfig,
) -> (Decision, bool) {
    let icmp_type = headers.icmp_type;
    let flags = headers.flags;
    let message = if headers.family == FAMILY_V4 {
        let (martian, group) = v4_addresses(headers);
        IcmpMessage {
            martian,
            smurf: (icmp_type == 8 || icmp_type == 13) && group,
            smurf_check: checks_off::BROADCAST_ECHO,
            block_exempt: block::exempt(FAMILY_V4, icmp_type, headers.code),
            facts: Facts {
                code: headers.code,
                hop_limit: headers.hop_limit,
                fragmented: flags & header_flags::FRAGMENTED != 0,
                source_link_local: false,
                source_unspecified: false,
                embeds_header: flags & header_flags::EMBEDS_HEADER != 0,
                group_destination: group,
                mtu: 0,
                length: headers.length,
            },
        }
    } else {
        let scope = ipv6_multicast_scope(headers.destination);
        IcmpMessage {
            martian: ipv6_martian_source(headers.source, icmp_type),
            smurf: icmp_type == 128 && scope > SCOPE_LINK_LOCAL,
            smurf_check: checks_off::MULTICAST_ECHO_V6,
            block_exempt: block::exempt(FAMILY_V6, icmp_type, headers.code),
            facts: Facts {
                code: headers.code,
                hop_limit: headers.hop_limit,
                fragmented: flags & header_flags::FRAGMENTED != 0,
                source_link_local: ipv6_link_local(headers.source),
                source_unspecified: ipv6_unspecified(headers.source),
                embeds_header: flags & header_flags::EMBEDS_HEADER != 0,
                group_destination: headers.destination[0] == 0xff,
                mtu: u32::from_be_bytes(headers.word),
                length: headers.length,
            },
        }
    };
    let mut tables = MapTables {
        generation,
        flags: settings.flags,
        headers,
        listed: 0,
    };
    let decision = decide_message(&message, settings, &mut tables);
    (decision, tables.listed == list::ALLOW)
}

/// The fate of a non-first ICMP fragment under `generation`'s policy.
#[inline(always)]
pub fn fragment(headers: &Headers, generation: u32, settings: &GenerationConfig) -> Decision {
    let fragment = if headers.family == FAMILY_V4 {
        let (martian, group) = v4_addresses(headers);
        IcmpFragment {
            martian,
            group_destination: group,
            group_check: checks_off::BROADCAST_ECHO,
        }
    } else {
        IcmpFragment {
            // Type 0 has no exception for `::`: no ND or MLD message comes in fragments.
            martian: ipv6_martian_source(headers.source, 0),
            group_destination: ipv6_multicast_scope(headers.destination) > SCOPE_LINK_LOCAL,
            group_check: checks_off::MULTICAST_ECHO_V6,
        }
    };
    let mut tables = MapTables {
        generation,
        flags: settings.flags,
        headers,
        listed: 0,
    };
    decide_fragment(&fragment, settings, &mut tables)
}

/// For the trace build's report: the packet's list value, its rule and whether its source
/// is martian, looked up again after the decision (the decision itself stays as it is).
#[cfg(feature = "trace")]
#[inline(always)]
pub fn explain(
    headers: &Headers,
    generation: u32,
    settings: &GenerationConfig,
) -> (u32, Rule, bool) {
    let mut tables = MapTables {
        generation,
        flags: settings.flags,
        headers,
        listed: 0,
    };
    let martian = if headers.family == FAMILY_V4 {
        v4_addresses(headers).0
    } else {
        let icmp_type = if headers.is_fragment() {
            0
        } else {
            headers.icmp_type
        };
        ipv6_martian_source(headers.source, icmp_type)
    };
    (tables.listed(), tables.rule(), martian)
}
