//! The policy cannot be made to fail open or lie (issue 15, points 10, 11, 13): deny
//! entries and limits that would cover the messages the network needs need --force, the
//! capacity of the lists is stated, shown and enforced by name, `policy show --json` is
//! accepted back, and every policy change counts one revision. Lab of `lab.rs`
//! (namespaces removed in `Drop`).

use crate::lab::*;
use serde_json::Value;

/// The live policy without what changes with every write.
fn live(lab: &Lab) -> Value {
    let mut policy = lab.json(&["policy", "show", "--json"]);
    let object = policy.as_object_mut().expect("object");
    object.remove("generation");
    object.remove("revision");
    policy
}

/// Point 10: deny entries over `::`, link-local, the on-link IPv6 prefix or 0.0.0.0/0,
/// and limits on PMTUD and ND messages, need --force, with the RFC named; the refusal
/// changes nothing, and a policy file needs `force = true` for them. Before, all of them
/// were accepted silently and cut the host off its link or broke PMTUD.
#[test]
fn entries_and_limits_over_protected_messages_need_force() {
    let lab = lab_or_skip!("entries_and_limits_over_protected_messages_need_force");
    lab.cli_ok(&["attach", &lab.guard_if]);
    let before = live(&lab);
    for (args, rfc) in [
        (&["deny", "add", "::/0"][..], "RFC 4861"),
        (&["deny", "add", "fe80::/10"][..], "RFC 4861"),
        (&["deny", "add", "2001:db8::/64"][..], "RFC 4861"),
        (
            &["deny", "add", "203.0.113.0/24", "0.0.0.0/0"][..],
            "RFC 1191",
        ),
        (
            &[
                "policy", "set", "--family", "v4", "3/4", "limit", "--rate", "1",
            ][..],
            "RFC 1191",
        ),
        (
            &["policy", "set", "packet-too-big", "limit", "--rate", "1"][..],
            "RFC 8201",
        ),
        (
            &[
                "policy",
                "set",
                "neighbor-solicitation",
                "limit",
                "--rate",
                "1",
            ][..],
            "RFC 4861",
        ),
    ] {
        let err = lab.cli_err(args);
        let err = one_sentence(&err);
        assert!(
            err.contains(rfc) && err.contains("--force"),
            "{args:?}: {err}"
        );
        assert_eq!(live(&lab), before, "{args:?} changed the policy");
    }
    assert_eq!(lab.ping(GUARD_V6, 2), 2, "neighbour discovery still works");
    assert!(
        lab.cli_ok(&["deny", "add", "2001:db8:bad::/48"])
            .contains("added 2001:db8:bad::/48"),
        "an ordinary prefix needs no force"
    );
    let forced = lab.cli_ok(&["deny", "add", "--force", "fe80::/10"]);
    assert!(forced.contains("added fe80::/10"), "{forced}");
    lab.cli_ok(&["deny", "del", "fe80::/10"]);

    let dir = TempDir::new("force");
    let unforced = dir.write("deny.toml", "[lists]\ndeny = [\"::/0\"]\n");
    let err = lab.cli_err(&["policy", "check", &unforced]);
    assert!(
        err.contains("line 2") && err.contains("RFC 4861"),
        "policy check obeys the same rule: {err}"
    );
    let forced = dir.write("forced.toml", "[lists]\ndeny = [\"::/0\"]\nforce = true\n");
    lab.cli_ok(&["policy", "check", &forced]);
}

/// Point 11: the lists hold 8192 prefixes per family per policy; `status` shows how many
/// are in use, `policy check` predicts it, and a policy beyond it is refused by name
/// before anything is written. Before, `policy check` passed such a policy and the apply
/// failed half-way with "bpf_map_update_elem failed".
#[test]
fn list_capacity_is_shown_predicted_and_named_at_the_limit() {
    let lab = lab_or_skip!("list_capacity_is_shown");
    lab.cli_ok(&["attach", &lab.guard_if]);
    let status = lab.cli_ok(&["status"]);
    assert!(
        status.contains("lists: 0 of 8192 IPv4 prefixes, 0 of 8192 IPv6 prefixes"),
        "{status}"
    );
    lab.cli_ok(&[
        "deny",
        "add",
        "203.0.113.0/24",
        "198.51.100.7",
        "2001:db8:bad::/48",
    ]);
    let status = lab.json(&["status", "--json"]);
    assert_eq!(status["lists"]["v4"], 2, "{status}");
    assert_eq!(status["lists"]["v6"], 1, "{status}");
    assert_eq!(status["lists"]["capacity_v4"], 8192, "{status}");

    let prefixes = |count: u32| -> String {
        (0..count)
            .map(|n| {
                let address = std::net::Ipv4Addr::from(0x0a00_0000 + n);
                format!("\"{address}/32\"")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dir = TempDir::new("capacity");
    let full = dir.write(
        "full.toml",
        &format!("[lists]\ndeny = [{}]\n", prefixes(8192)),
    );
    let over = dir.write(
        "over.toml",
        &format!("[lists]\ndeny = [{}]\n", prefixes(8193)),
    );
    let checked = lab.cli_ok(&["policy", "check", &full]);
    assert!(
        checked.contains("lists: 8192 of 8192 IPv4 and 0 of 8192 IPv6 prefixes"),
        "{checked}"
    );
    let err = lab.cli_err(&["policy", "check", &over]);
    assert!(
        err.contains("8193 IPv4 allow and deny prefixes, more than the 8192 one policy may hold"),
        "{err}"
    );
    let before = live(&lab);
    let err = lab.cli_err(&["policy", "apply", &over]);
    assert!(
        one_sentence(&err).contains("more than the 8192 one policy may hold"),
        "{err}"
    );
    assert_eq!(live(&lab), before, "nothing was written");
    let applied = lab.cli_ok(&["policy", "apply", &full]);
    assert!(applied.contains("applied"), "{applied}");
    // The swap back needs the room of both generations: it fits too.
    lab.cli_ok(&["policy", "reset"]);
    let status = lab.json(&["status", "--json"]);
    assert_eq!(
        status["lists"]["v4"], 8192,
        "reset keeps the lists: {status}"
    );
}

/// Point 13: the JSON of `policy show --json` is accepted back by `policy apply` (its help
/// promises it), forced entries and the smurf settings included. Before, it was refused as
/// TOML.
#[test]
fn policy_show_json_is_accepted_back_by_policy_apply() {
    let lab = lab_or_skip!("policy_show_json_is_accepted_back");
    lab.cli_ok(&["attach", &lab.guard_if]);
    lab.cli_ok(&["policy", "set", "timestamp-request", "pass"]);
    lab.cli_ok(&["policy", "set", "packet-too-big", "drop", "--force"]);
    lab.cli_ok(&["policy", "set", "--family", "v4", "3/1", "drop"]);
    lab.cli_ok(&["deny", "add", "203.0.113.0/24", "--force", "::/0"]);
    lab.cli_ok(&["allow", "add", "198.51.100.7"]);
    let shown = lab.cli_ok(&["policy", "show", "--json"]);
    let expected = live(&lab);

    let dir = TempDir::new("json");
    let file = dir.write("policy.json", &shown);
    lab.cli_ok(&["policy", "reset"]);
    lab.cli_ok(&["deny", "del", "203.0.113.0/24", "::/0"]);
    lab.cli_ok(&["allow", "del", "198.51.100.7"]);
    assert_ne!(live(&lab), expected);
    let applied = lab.cli_ok(&["policy", "apply", &file]);
    assert!(applied.contains("applied"), "{applied}");
    assert_eq!(live(&lab), expected, "the JSON came back whole");
    assert_eq!(expected["force_lists"], true, "{expected}");
    let checked = lab.cli_ok(&["policy", "check", &file]);
    assert!(checked.contains("is a valid policy"), "{checked}");
}

/// Point 13: every policy written counts one revision, shown in `status`, `policy show
/// --json`, `policy apply`'s answer and the metrics (the run log says it too: see
/// e2e_observe). Before, only the 0/1 generation of the double buffer was shown.
#[test]
fn every_policy_written_counts_one_revision() {
    let lab = lab_or_skip!("every_policy_written_counts_one_revision");
    lab.cli_ok(&["attach", &lab.guard_if]);
    let revision = |lab: &Lab| lab.json(&["status", "--json"])["revision"].clone();
    assert_eq!(revision(&lab), 1, "the first attach writes revision 1");
    lab.cli_ok(&["policy", "set", "timestamp-request", "pass"]);
    lab.cli_ok(&["deny", "add", "203.0.113.0/24"]);
    assert_eq!(revision(&lab), 3);
    let dir = TempDir::new("revision");
    let file = dir.write("policy.toml", "mode = \"enforce\"\n");
    let applied = lab.cli_ok(&["policy", "apply", &file]);
    assert!(applied.contains("(policy revision 4)"), "{applied}");
    assert_eq!(lab.json(&["policy", "show", "--json"])["revision"], 4);
    let status = lab.cli_ok(&["status"]);
    assert!(status.contains("policy revision: 4"), "{status}");
    let metrics = lab.cli_ok(&["metrics", "--once"]);
    assert!(
        metrics.lines().any(|l| l == "icmp_guard_policy_revision 4"),
        "{metrics}"
    );
}
