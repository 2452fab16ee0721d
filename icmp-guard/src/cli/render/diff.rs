//! `policy apply --diff`: what a policy file would change, one line per change.

use std::fmt::Write as _;

use icmp_guard::policy::diff::{Change, Kind};

/// One line per change, `+` added, `-` removed, `~` changed, then a count; or one line that
/// says nothing would change.
pub fn diff(changes: &[Change], file: &str) -> String {
    let mut out = String::new();
    if changes.is_empty() {
        let _ = writeln!(out, "no changes: {file} is the live policy");
        return out;
    }
    for change in changes {
        let sign = match change.kind {
            Kind::Added => '+',
            Kind::Removed => '-',
            Kind::Changed => '~',
        };
        let subject = if change.section == change.subject {
            change.subject.clone()
        } else {
            format!("{} {}", change.section, change.subject)
        };
        let _ = match (&change.before, &change.after) {
            (Some(before), Some(after)) => writeln!(out, "{sign} {subject}: {before} -> {after}"),
            (None, Some(after)) => writeln!(out, "{sign} {subject}: {after}"),
            (Some(before), None) => writeln!(out, "{sign} {subject}: {before}"),
            (None, None) => writeln!(out, "{sign} {subject}"),
        };
        if let Some(note) = &change.note {
            out.pop();
            let _ = writeln!(out, " ({note})");
        }
    }
    let count = changes.len();
    let _ = writeln!(
        out,
        "{count} change{} from the live policy",
        if count == 1 { "" } else { "s" }
    );
    out
}

#[cfg(test)]
mod tests {
    use icmp_guard::policy::{Policy, RuleSpec, diff::diff as policy_diff};
    use icmp_guard_common::FAMILY_V4;

    use super::*;

    #[test]
    fn one_line_per_change_with_its_sign() {
        let live = Policy::default_profile();
        let mut new = live.clone();
        new.set(FAMILY_V4, 13, None, RuleSpec::PASS, false)
            .expect("timestamp");
        new.set(FAMILY_V4, 3, Some(5), RuleSpec::DROP, false)
            .expect("3/5");
        new.deny.push("203.0.113.0/24".parse().expect("cidr"));
        assert_eq!(
            diff(&policy_diff(&live, &new), "p.toml"),
            "~ rule v4 13 (timestamp-request): drop -> pass\n\
             + code-rule v4 3/5 (destination-unreachable/source-route-failed): drop\n\
             + deny 203.0.113.0/24\n\
             3 changes from the live policy\n"
        );
        let mut back = new.clone();
        back.codes.clear();
        assert_eq!(
            diff(&policy_diff(&new, &back), "p.toml"),
            "- code-rule v4 3/5 (destination-unreachable/source-route-failed): drop (the type's rule applies: pass)\n\
             1 change from the live policy\n"
        );
        assert_eq!(
            diff(&[], "p.toml"),
            "no changes: p.toml is the live policy\n"
        );
    }
}
