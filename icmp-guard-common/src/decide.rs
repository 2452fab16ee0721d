//! The precedence of the checks, in one place: what decides a parsed packet's fate, in
//! which order. The XDP program's decision stage computes the facts that need its maps
//! (martian sources and group destinations need the interface's directed broadcasts) and
//! supplies the lookups through [`Tables`]; host tests supply fakes.
//!
//! For an ICMP message: martian source (`invalid`) → deny list → block time (`blocked`;
//! not for allowed sources, nor PMTUD and ND messages) → smurf → the type/code rule
//! and its conditions (`policy`, `invalid`) → the rule's limiter, or for an error the rule
//! passes, the error limiter; allowed sources skip the limiters. For a non-first ICMP
//! fragment, which has no type: martian source → deny list → broadcast or multicast
//! destination (`smurf`) → the fragment limiter, again skipped by allowed sources.

use crate::{
    DropReason,
    config::{GenerationConfig, NO_LIMITER, generation_flags},
    policy::{Facts, Rule, RuleVerdict, checks_off, condition, evaluate, list},
};

/// The lookups a decision may need, made only when it gets that far.
pub trait Tables {
    /// The allow/deny list value of the packet's source: 0, [`list::ALLOW`] or
    /// [`list::DENY`].
    fn listed(&mut self) -> u32;
    /// The rule of the packet's (family, type, code).
    fn rule(&mut self) -> Rule;
    /// True when the packet's source serves a block time ([`crate::block`]). Asked only
    /// when the generation has [`generation_flags::BLOCKS`].
    fn blocked(&mut self) -> bool;
}

/// What the checks decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Pass,
    Drop(DropReason),
    /// Pass when the limiter with this index admits the packet.
    Limit(u8),
}

/// A classified ICMP message, as the precedence sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpMessage {
    /// The source is one no packet may carry, or a broadcast address of ours.
    pub martian: bool,
    /// An amplifier request: echo or timestamp request to a broadcast or multicast
    /// destination, or ICMPv6 echo to multicast beyond the link.
    pub smurf: bool,
    /// The [`checks_off`] bit that switches the `smurf` check off.
    pub smurf_check: u32,
    /// A message no block applies to ([`crate::block::exempt`]).
    pub block_exempt: bool,
    /// What the rule's conditions look at.
    pub facts: Facts,
}

/// The fate of an ICMP message.
#[inline(always)]
pub fn decide_message<T: Tables>(
    message: &IcmpMessage,
    generation: &GenerationConfig,
    tables: &mut T,
) -> Decision {
    let off = generation.checks_off;
    if message.martian && off & checks_off::MARTIAN_SOURCES == 0 {
        return Decision::Drop(DropReason::Invalid);
    }
    let listed = tables.listed();
    if listed == list::DENY {
        return Decision::Drop(DropReason::DenyList);
    }
    if generation.flags & generation_flags::BLOCKS != 0
        && listed != list::ALLOW
        && !message.block_exempt
        && tables.blocked()
    {
        return Decision::Drop(DropReason::Blocked);
    }
    if message.smurf && off & message.smurf_check == 0 {
        return Decision::Drop(DropReason::Smurf);
    }
    let rule = tables.rule();
    match evaluate(rule, &message.facts) {
        RuleVerdict::Drop(reason) => Decision::Drop(reason),
        RuleVerdict::Limit(_) | RuleVerdict::Pass if listed == list::ALLOW => Decision::Pass,
        RuleVerdict::Limit(limiter) => Decision::Limit(limiter),
        RuleVerdict::Pass
            if rule.condition & condition::ERROR != 0 && generation.error_limiter != NO_LIMITER =>
        {
            Decision::Limit(generation.error_limiter)
        }
        RuleVerdict::Pass => Decision::Pass,
    }
}

/// A non-first ICMP fragment, as the precedence sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpFragment {
    /// As [`IcmpMessage::martian`] (IPv6 `::` included: no ND or MLD message is
    /// fragmented).
    pub martian: bool,
    /// To a destination an amplifier request would go to: a v4 broadcast or multicast
    /// (L2, L3, directed), IPv6 multicast beyond the link.
    pub group_destination: bool,
    /// The [`checks_off`] bit that switches the group-destination check off (the same as
    /// for echo requests of the family).
    pub group_check: u32,
}

/// The fate of a non-first ICMP fragment.
#[inline(always)]
pub fn decide_fragment<T: Tables>(
    fragment: &IcmpFragment,
    generation: &GenerationConfig,
    tables: &mut T,
) -> Decision {
    let off = generation.checks_off;
    if fragment.martian && off & checks_off::MARTIAN_SOURCES == 0 {
        return Decision::Drop(DropReason::Invalid);
    }
    let listed = tables.listed();
    if listed == list::DENY {
        return Decision::Drop(DropReason::DenyList);
    }
    if fragment.group_destination && off & fragment.group_check == 0 {
        return Decision::Drop(DropReason::Smurf);
    }
    if listed == list::ALLOW || generation.fragment_limiter == NO_LIMITER {
        return Decision::Pass;
    }
    Decision::Limit(generation.fragment_limiter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{action, checks_off, default_rule};

    /// Lookups that answer from fixed values and count how often they were asked.
    struct Fake {
        listed: u32,
        rule: Rule,
        blocked: bool,
        lookups: u32,
    }

    impl Fake {
        fn new(listed: u32, rule: Rule) -> Self {
            Self {
                listed,
                rule,
                blocked: false,
                lookups: 0,
            }
        }
    }

    #[test]
    fn a_block_drops_after_the_deny_list_but_not_allowed_sources_nor_exempt_messages() {
        let blocks = GenerationConfig {
            flags: generation_flags::BLOCKS,
            ..GENERATION
        };
        let echo_message = IcmpMessage::default();
        let mut blocked = Fake::new(0, echo());
        blocked.blocked = true;
        assert_eq!(
            decide_message(&echo_message, &blocks, &mut blocked),
            Decision::Drop(DropReason::Blocked)
        );
        assert_eq!(
            decide_message(&echo_message, &GENERATION, &mut blocked),
            Decision::Limit(0),
            "without a block in the policy the table is not asked"
        );
        let exempt = IcmpMessage {
            block_exempt: true,
            ..echo_message
        };
        assert_eq!(
            decide_message(&exempt, &blocks, &mut blocked),
            Decision::Limit(0)
        );
        let mut allowed = Fake::new(list::ALLOW, echo());
        allowed.blocked = true;
        assert_eq!(
            decide_message(&echo_message, &blocks, &mut allowed),
            Decision::Pass
        );
        let mut denied = Fake::new(list::DENY, echo());
        denied.blocked = true;
        assert_eq!(
            decide_message(&echo_message, &blocks, &mut denied),
            Decision::Drop(DropReason::DenyList)
        );
    }

    impl Tables for Fake {
        fn listed(&mut self) -> u32 {
            self.lookups += 1;
            self.listed
        }

        fn rule(&mut self) -> Rule {
            self.lookups += 1;
            self.rule
        }

        fn blocked(&mut self) -> bool {
            self.lookups += 1;
            self.blocked
        }
    }

    const GENERATION: GenerationConfig = GenerationConfig {
        checks_off: 0,
        flags: 0,
        error_limiter: 7,
        fragment_limiter: 9,
        _padding: 0,
        recon: crate::recon::ReconConfig {
            mode: 0,
            action: 0,
            prefix_v4: 0,
            prefix_v6: 0,
            source_bits: 0,
            prefix_bits: 0,
            sweep_threshold: 0,
            prefix_threshold: 0,
            _padding: 0,
            epoch_ns: 0,
            block_ns: 0,
        },
    };

    fn echo() -> Rule {
        default_rule(crate::FAMILY_V4, 8)
    }

    #[test]
    fn a_martian_source_is_refused_before_any_lookup() {
        let message = IcmpMessage {
            martian: true,
            smurf: true,
            smurf_check: checks_off::BROADCAST_ECHO,
            ..IcmpMessage::default()
        };
        let mut tables = Fake::new(list::ALLOW, Rule::PASS);
        assert_eq!(
            decide_message(&message, &GENERATION, &mut tables),
            Decision::Drop(DropReason::Invalid)
        );
        assert_eq!(tables.lookups, 0);
        let off = GenerationConfig {
            checks_off: checks_off::MARTIAN_SOURCES,
            ..GENERATION
        };
        assert_eq!(
            decide_message(&message, &off, &mut tables),
            Decision::Drop(DropReason::Smurf),
            "with martians off, the smurf check still applies"
        );
    }

    #[test]
    fn the_deny_list_comes_before_smurf_and_rules_and_allow_skips_only_limits() {
        let smurf = IcmpMessage {
            smurf: true,
            smurf_check: checks_off::BROADCAST_ECHO,
            ..IcmpMessage::default()
        };
        let mut denied = Fake::new(list::DENY, Rule::PASS);
        assert_eq!(
            decide_message(&smurf, &GENERATION, &mut denied),
            Decision::Drop(DropReason::DenyList)
        );
        assert_eq!(denied.lookups, 1, "no rule lookup after the deny list");
        let mut allowed = Fake::new(list::ALLOW, echo());
        assert_eq!(
            decide_message(&smurf, &GENERATION, &mut allowed),
            Decision::Drop(DropReason::Smurf),
            "an allowed source still cannot send a smurf request"
        );
        let plain = IcmpMessage::default();
        assert_eq!(
            decide_message(&plain, &GENERATION, &mut Fake::new(list::ALLOW, echo())),
            Decision::Pass
        );
        assert_eq!(
            decide_message(&plain, &GENERATION, &mut Fake::new(0, echo())),
            Decision::Limit(0)
        );
        assert_eq!(
            decide_message(&plain, &GENERATION, &mut Fake::new(list::ALLOW, Rule::DROP)),
            Decision::Drop(DropReason::Policy),
            "an allowed source still meets the type rules"
        );
    }

    #[test]
    fn errors_that_their_rule_passes_go_to_the_error_limiter() {
        let unreachable = default_rule(crate::FAMILY_V4, 3);
        let valid = IcmpMessage {
            facts: Facts {
                embeds_header: true,
                ..Facts::default()
            },
            ..IcmpMessage::default()
        };
        assert_eq!(
            decide_message(&valid, &GENERATION, &mut Fake::new(0, unreachable)),
            Decision::Limit(7)
        );
        assert_eq!(
            decide_message(
                &valid,
                &GENERATION,
                &mut Fake::new(list::ALLOW, unreachable)
            ),
            Decision::Pass
        );
        let none = GenerationConfig {
            error_limiter: NO_LIMITER,
            ..GENERATION
        };
        assert_eq!(
            decide_message(&valid, &none, &mut Fake::new(0, unreachable)),
            Decision::Pass
        );
        let limited = Rule::new(action::LIMIT, unreachable.condition).with_limiter(3);
        assert_eq!(
            decide_message(&valid, &GENERATION, &mut Fake::new(0, limited)),
            Decision::Limit(3),
            "a limit rule of the operator's replaces the error ceiling"
        );
        assert_eq!(
            decide_message(
                &IcmpMessage::default(),
                &GENERATION,
                &mut Fake::new(0, unreachable)
            ),
            Decision::Drop(DropReason::Invalid),
            "an error without the header it reports on"
        );
    }

    #[test]
    fn fragments_meet_martian_deny_group_and_budget_checks() {
        let fragment = IcmpFragment {
            group_check: checks_off::BROADCAST_ECHO,
            ..IcmpFragment::default()
        };
        assert_eq!(
            decide_fragment(&fragment, &GENERATION, &mut Fake::new(0, Rule::DROP)),
            Decision::Limit(9)
        );
        assert_eq!(
            decide_fragment(
                &fragment,
                &GENERATION,
                &mut Fake::new(list::ALLOW, Rule::DROP)
            ),
            Decision::Pass
        );
        assert_eq!(
            decide_fragment(
                &fragment,
                &GENERATION,
                &mut Fake::new(list::DENY, Rule::PASS)
            ),
            Decision::Drop(DropReason::DenyList)
        );
        let martian = IcmpFragment {
            martian: true,
            ..fragment
        };
        assert_eq!(
            decide_fragment(
                &martian,
                &GENERATION,
                &mut Fake::new(list::ALLOW, Rule::PASS)
            ),
            Decision::Drop(DropReason::Invalid)
        );
        let broadcast = IcmpFragment {
            group_destination: true,
            ..fragment
        };
        assert_eq!(
            decide_fragment(
                &broadcast,
                &GENERATION,
                &mut Fake::new(list::ALLOW, Rule::PASS)
            ),
            Decision::Drop(DropReason::Smurf)
        );
        let off = GenerationConfig {
            checks_off: checks_off::BROADCAST_ECHO,
            ..GENERATION
        };
        assert_eq!(
            decide_fragment(&broadcast, &off, &mut Fake::new(0, Rule::PASS)),
            Decision::Limit(9)
        );
    }
}
