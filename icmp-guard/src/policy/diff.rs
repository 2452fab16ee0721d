//! What applying one policy over another would change, for `policy apply --diff`: the mode,
//! type rules, per-code rules (with the rule that applies once one is removed), their
//! limits, the smurf settings, and allow and deny entries added or removed.

use serde::Serialize;

use super::model::{Action, Cidr, Limit, Per, Policy, RuleSpec, describe};

/// Whether something appears, disappears or changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Added,
    Removed,
    Changed,
}

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: Kind,
    /// `mode`, `rule`, `code-rule`, `smurf`, `errors`, `fragments`, `recon`, `allow` or `deny`.
    pub section: &'static str,
    /// What changes: "v4 8 (echo-request)", "reply_ceiling", "192.0.2.0/24".
    pub subject: String,
    /// The setting before, when there was one ("limit 100/s burst 200 per source").
    pub before: Option<String>,
    /// The setting after, when there is one.
    pub after: Option<String>,
    /// What applies instead, for a removed per-code rule: its type's rule.
    pub note: Option<String>,
}

/// Every difference between `live` and `new`, in the order: mode, type rules, per-code
/// rules, smurf settings, allow list, deny list.
pub fn diff(live: &Policy, new: &Policy) -> Vec<Change> {
    let mut changes = Vec::new();
    if live.mode != new.mode {
        changes.push(changed(
            "mode",
            "mode".to_owned(),
            live.mode.as_str().to_owned(),
            new.mode.as_str().to_owned(),
        ));
    }
    for (key, after) in &new.types {
        let before = live.types.get(key);
        if before != Some(after) {
            let (family, icmp_type) = *key;
            let subject = describe(family, icmp_type, None);
            changes.push(match before {
                Some(before) => changed("rule", subject, spec_text(before), spec_text(after)),
                None => added("rule", subject, spec_text(after)),
            });
        }
    }
    for (key, before) in &live.types {
        if !new.types.contains_key(key) {
            let subject = describe(key.0, key.1, None);
            changes.push(removed("rule", subject, spec_text(before), None));
        }
    }
    let codes = live.codes.keys().chain(new.codes.keys());
    let mut seen = std::collections::BTreeSet::new();
    for &(family, icmp_type, code) in codes {
        if !seen.insert((family, icmp_type, code)) {
            continue;
        }
        let subject = describe(family, icmp_type, Some(code));
        let key = (family, icmp_type, code);
        match (live.codes.get(&key), new.codes.get(&key)) {
            (Some(before), Some(after)) if before != after => {
                changes.push(changed(
                    "code-rule",
                    subject,
                    spec_text(before),
                    spec_text(after),
                ));
            }
            (None, Some(after)) => changes.push(added("code-rule", subject, spec_text(after))),
            (Some(before), None) => {
                let instead = new.rule_for(family, icmp_type, code);
                changes.push(removed(
                    "code-rule",
                    subject,
                    spec_text(before),
                    Some(format!("the type's rule applies: {}", spec_text(&instead))),
                ));
            }
            _ => {}
        }
    }
    let (old, smurf) = (&live.smurf, &new.smurf);
    for (field, before, after) in [
        (
            "broadcast_echo",
            old.broadcast_echo.to_string(),
            smurf.broadcast_echo.to_string(),
        ),
        (
            "multicast_echo_v6",
            old.multicast_echo_v6.to_string(),
            smurf.multicast_echo_v6.to_string(),
        ),
        (
            "martian_sources",
            old.martian_sources.to_string(),
            smurf.martian_sources.to_string(),
        ),
        (
            "reply_ceiling",
            old.reply_ceiling.to_string(),
            smurf.reply_ceiling.to_string(),
        ),
        (
            "reply_ceiling_burst",
            old.reply_ceiling_burst.to_string(),
            smurf.reply_ceiling_burst.to_string(),
        ),
    ] {
        if before != after {
            changes.push(changed("smurf", field.to_owned(), before, after));
        }
    }
    let (old, now) = (&live.errors, &new.errors);
    let (old_fragments, fragments) = (&live.fragments, &new.fragments);
    for (section, field, before, after) in [
        ("errors", "rate", old.rate, now.rate),
        ("errors", "burst", old.burst, now.burst),
        ("fragments", "rate", old_fragments.rate, fragments.rate),
        ("fragments", "burst", old_fragments.burst, fragments.burst),
        (
            "fragments",
            "total_rate",
            old_fragments.total_rate,
            fragments.total_rate,
        ),
        (
            "fragments",
            "total_burst",
            old_fragments.total_burst,
            fragments.total_burst,
        ),
    ] {
        if before != after {
            changes.push(changed(
                section,
                field.to_owned(),
                before.to_string(),
                after.to_string(),
            ));
        }
    }
    let (old_recon, recon) = (&live.recon, &new.recon);
    for (field, before, after) in recon_fields(old_recon)
        .into_iter()
        .zip(recon_fields(recon))
        .map(|((field, before), (_, after))| (field, before, after))
    {
        if before != after {
            changes.push(changed("recon", field.to_owned(), before, after));
        }
    }
    for (section, before, after) in [
        ("allow", &live.allow, &new.allow),
        ("deny", &live.deny, &new.deny),
    ] {
        changes.extend(list_changes(section, before, after));
    }
    changes
}

fn list_changes(section: &'static str, before: &[Cidr], after: &[Cidr]) -> Vec<Change> {
    let mut changes: Vec<Change> = after
        .iter()
        .filter(|cidr| !before.contains(cidr))
        .map(|cidr| Change {
            kind: Kind::Added,
            section,
            subject: cidr.to_string(),
            before: None,
            after: None,
            note: None,
        })
        .collect();
    changes.extend(
        before
            .iter()
            .filter(|cidr| !after.contains(cidr))
            .map(|cidr| Change {
                kind: Kind::Removed,
                section,
                subject: cidr.to_string(),
                before: None,
                after: None,
                note: None,
            }),
    );
    changes
}

fn changed(section: &'static str, subject: String, before: String, after: String) -> Change {
    Change {
        kind: Kind::Changed,
        section,
        subject,
        before: Some(before),
        after: Some(after),
        note: None,
    }
}

fn added(section: &'static str, subject: String, after: String) -> Change {
    Change {
        kind: Kind::Added,
        section,
        subject,
        before: None,
        after: Some(after),
        note: None,
    }
}

fn removed(section: &'static str, subject: String, before: String, note: Option<String>) -> Change {
    Change {
        kind: Kind::Removed,
        section,
        subject,
        before: Some(before),
        after: None,
        note,
    }
}

/// "pass", "drop", "limit 50/s burst 100 per source, new sources 250/s burst 500".
pub fn spec_text(spec: &RuleSpec) -> String {
    let mut text = match (spec.action, spec.limit) {
        (Action::Limit, Some(limit)) => format!("limit {}", limit_text(&limit)),
        (action, _) => action.as_str().to_owned(),
    };
    if let Some(max_size) = spec.max_size {
        text.push_str(&format!(", max size {max_size} bytes"));
    }
    text
}

/// "50/s burst 100 per source", with the prefixes and the new-source budget when they are
/// not the defaults.
pub fn limit_text(limit: &Limit) -> String {
    let mut text = format!(
        "{}/s burst {} per {}",
        limit.rate,
        limit.burst,
        limit.per.as_str()
    );
    if limit.per == Per::Prefix {
        text.push_str(&format!(" (/{}, /{})", limit.prefix_v4, limit.prefix_v6));
    }
    if let Some(new) = limit.new_sources {
        text.push_str(&format!(", new sources {}/s burst {}", new.rate, new.burst));
    }
    if limit.per != Per::Global && limit.probation != super::model::DEFAULT_PROBATION {
        text.push_str(&format!(", probation {} s", limit.probation));
    }
    if let Some(bytes) = limit.bytes {
        text.push_str(&format!(
            ", bytes {}/s burst {}",
            super::units::format_bytes(bytes.rate),
            super::units::format_bytes(bytes.burst)
        ));
    }
    if limit.block_ms != 0 {
        text.push_str(&format!(
            ", block {}",
            super::units::format_duration(std::time::Duration::from_millis(u64::from(
                limit.block_ms
            )))
        ));
    }
    text
}

/// The `[recon]` settings by name, as a policy file writes them.
fn recon_fields(recon: &crate::policy::recon::Recon) -> [(&'static str, String); 8] {
    use crate::policy::units::format_duration;
    [
        ("enabled", recon.enabled.as_str().to_owned()),
        ("sweep_threshold", recon.sweep_threshold.to_string()),
        ("window", format_duration(recon.window)),
        ("action", recon.action.as_str().to_owned()),
        ("block", format_duration(recon.block)),
        ("prefix_v4", recon.prefix_v4.to_string()),
        ("prefix_v6", recon.prefix_v6.to_string()),
        ("prefix_threshold", recon.prefix_threshold.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use icmp_guard_common::{FAMILY_V4, FAMILY_V6};

    use super::*;
    use crate::policy::{Mode, NewSources};

    #[test]
    fn the_same_policy_has_no_changes() {
        let policy = Policy::default_profile();
        assert_eq!(diff(&policy, &policy.clone()), []);
    }

    #[test]
    fn every_kind_of_change_is_listed() {
        let live = {
            let mut live = Policy::default_profile();
            live.set(FAMILY_V4, 3, Some(1), RuleSpec::DROP, false)
                .expect("3/1");
            live.set(FAMILY_V4, 3, Some(2), RuleSpec::DROP, false)
                .expect("3/2");
            live.allow = vec!["192.0.2.10/32".parse().expect("cidr")];
            live.deny = vec!["203.0.113.0/24".parse().expect("cidr")];
            live
        };
        let mut new = live.clone();
        new.mode = Mode::DryRun;
        let echo = Limit {
            new_sources: Some(NewSources {
                rate: 250,
                burst: 500,
            }),
            ..Limit::new(50, 100, Per::Source)
        };
        new.set(FAMILY_V4, 8, None, RuleSpec::limit(echo), false)
            .expect("echo");
        new.set(FAMILY_V4, 3, Some(5), RuleSpec::DROP, false)
            .expect("3/5");
        new.set(FAMILY_V4, 3, Some(2), RuleSpec::limit(echo), false)
            .expect("3/2");
        new.codes.remove(&(FAMILY_V4, 3, 1));
        new.smurf.reply_ceiling = 5_000;
        new.allow.push("2001:db8::10/128".parse().expect("cidr"));
        new.deny.clear();

        let changes = diff(&live, &new);
        let lines: Vec<String> = changes
            .iter()
            .map(|c| {
                format!(
                    "{:?} {} {}: {:?} -> {:?} {:?}",
                    c.kind, c.section, c.subject, c.before, c.after, c.note
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                "Changed mode mode: Some(\"enforce\") -> Some(\"dry-run\") None",
                "Changed rule v4 8 (echo-request): Some(\"limit 100/s burst 200 per source\") -> Some(\"limit 50/s burst 100 per source, new sources 250/s burst 500\") None",
                "Removed code-rule v4 3/1 (destination-unreachable/host-unreachable): Some(\"drop\") -> None Some(\"the type's rule applies: pass\")",
                "Changed code-rule v4 3/2 (destination-unreachable/prot-unreachable): Some(\"drop\") -> Some(\"limit 50/s burst 100 per source, new sources 250/s burst 500\") None",
                "Added code-rule v4 3/5 (destination-unreachable/source-route-failed): None -> Some(\"drop\") None",
                "Changed smurf reply_ceiling: Some(\"10000\") -> Some(\"5000\") None",
                "Added allow 2001:db8::10/128: None -> None None",
                "Removed deny 203.0.113.0/24: None -> None None",
            ]
        );
    }

    #[test]
    fn a_type_rule_that_clears_code_rules_shows_both() {
        let mut live = Policy::default_profile();
        live.set(FAMILY_V6, 1, Some(4), RuleSpec::DROP, false)
            .expect("1/4");
        let mut new = live.clone();
        new.set(FAMILY_V6, 1, None, RuleSpec::PASS, false)
            .expect("type rule");
        new.set(FAMILY_V6, 1, None, RuleSpec::DROP, false)
            .expect("type rule");
        let changes = diff(&live, &new);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].section, "rule");
        assert_eq!(changes[1].kind, Kind::Removed);
        assert_eq!(
            changes[1].note.as_deref(),
            Some("the type's rule applies: drop")
        );
    }
}
