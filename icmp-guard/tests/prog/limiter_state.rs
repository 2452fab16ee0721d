//! Issue 14, point 1: limiter state belongs to the limiter's settings. A changed or reset
//! limiter starts from fresh state on the next packet; the per-rule global bucket and the
//! new-source budget of a per-source rule are separate state; a policy change that leaves a
//! limiter alone leaves its state alone (no free refill for a flooder).
//!
//! Against main before issue 14 the first two tests fail: the old buckets stored an
//! absolute arrival time per limiter index, which a reset or raised limit inherited.

use crate::{
    frames::*,
    harness::{Guard, XDP_DROP, XDP_PASS},
};
use icmp_guard::policy::{Limit, Per, Policy, RuleSpec};
use icmp_guard_common::{DropReason, FAMILY_V4};

fn echo_from(source: [u8; 4]) -> Vec<u8> {
    icmpv4_between(source, V4_GUARD, 8, 0)
}

fn with_echo_limit(limit: Limit) -> Policy {
    let mut policy = Policy::default_profile();
    policy
        .set(FAMILY_V4, 8, None, RuleSpec::limit(limit), false)
        .expect("a valid limit");
    policy
}

/// A thousand sources, one echo each: how many pass.
fn new_sources_admitted(guard: &mut Guard, first: u8) -> u64 {
    let before = guard.snapshot().of(FAMILY_V4, 8).passed();
    for index in 0..1000u32 {
        let [_, _, high, low] = index.to_be_bytes();
        guard.action(&echo_from([198, first, high, low]));
    }
    guard.snapshot().of(FAMILY_V4, 8).passed() - before
}

#[test]
fn a_reset_after_a_spent_global_limit_admits_new_sources_at_once() {
    root_or_skip!("a_reset_after_a_spent_global_limit");
    // The reproduction: `policy set echo-request limit --rate 1 --burst 1000 --per
    // global --family v4`, spend it, `policy reset`.
    let mut guard = Guard::load(&with_echo_limit(Limit::new(1, 1000, Per::Global)));
    assert_eq!(
        guard.repeat(&echo_from([198, 51, 100, 7]), 1500).0,
        XDP_DROP
    );
    let spent = guard.snapshot().of(FAMILY_V4, 8);
    assert!(
        (1000..=1001).contains(&spent.passed()),
        "the global burst: {spent:?}"
    );
    guard.apply_fresh(&Policy::default_profile());
    // Every new source is charged to the default new-source budget (1,000/s, burst 2,000),
    // which starts full: a thousand of them pass.
    assert_eq!(
        new_sources_admitted(&mut guard, 18),
        1000,
        "new sources after the reset"
    );
}

#[test]
fn raising_a_spent_limit_starts_it_fresh() {
    root_or_skip!("raising_a_spent_limit_starts_it_fresh");
    let mut guard = Guard::load(&with_echo_limit(Limit::new(1, 1000, Per::Global)));
    guard.repeat(&echo_from([198, 51, 100, 7]), 1500);
    // "raising the limit to 100000/s did not help"
    guard.apply(&with_echo_limit(Limit::new(100_000, 1000, Per::Global)));
    let before = guard.snapshot().of(FAMILY_V4, 8).passed();
    guard.repeat(&echo_from([198, 51, 100, 7]), 500);
    let passed = guard.snapshot().of(FAMILY_V4, 8).passed() - before;
    assert_eq!(passed, 500, "the changed limit's burst is whole");
}

#[test]
fn the_global_bucket_and_the_new_source_budget_are_separate_state() {
    root_or_skip!("the_global_bucket_and_the_new_source_budget");
    // A spent global bucket of limit 100/s burst 200...
    let mut guard = Guard::load(&with_echo_limit(Limit::new(100, 200, Per::Global)));
    guard.repeat(&echo_from([198, 51, 100, 7]), 1000);
    assert!(
        guard
            .snapshot()
            .of(FAMILY_V4, 8)
            .dropped(DropReason::RateLimit)
            >= 790
    );
    // ...then the same numbers per source: its new-source budget (1,000/s, burst 2,000) is
    // other state, and starts full whatever the global bucket went through.
    guard.apply(&with_echo_limit(Limit::new(100, 200, Per::Source)));
    assert_eq!(new_sources_admitted(&mut guard, 18), 1000);
}

#[test]
fn an_unrelated_policy_change_leaves_a_spent_bucket_spent() {
    root_or_skip!("an_unrelated_policy_change_leaves_a_spent_bucket_spent");
    let mut policy = with_echo_limit(Limit::new(1, 100, Per::Source));
    let mut guard = Guard::load(&policy);
    let flooder = echo_from([198, 51, 100, 66]);
    guard.repeat(&flooder, 200);
    assert_eq!(
        guard.action(&flooder),
        XDP_DROP,
        "the flooder's bucket is spent"
    );
    // Timestamp requests now pass: the echo limiter did not change, so neither did its
    // buckets; a flooder gets no refill from an operator's unrelated edit.
    policy
        .set(FAMILY_V4, 13, None, RuleSpec::PASS, false)
        .expect("valid");
    guard.apply(&policy);
    assert_eq!(
        guard.action(&flooder),
        XDP_DROP,
        "still spent after the edit"
    );
    // Another source still has its own full bucket.
    assert_eq!(guard.action(&echo_from([198, 51, 100, 67])), XDP_PASS);
    // `policy reset` (every limiter fresh) does refill it.
    guard.apply_fresh(&policy);
    assert_eq!(guard.action(&flooder), XDP_PASS, "fresh after a reset");
}
