//! The policy as a JSON document: what `policy show --json` prints and what `policy apply`
//! (and every other reader of a policy file) accepts back, so that a policy read from one
//! host can be applied to another.
//!
//! Every rule is listed; `name`, `generation` and `revision` are information for readers
//! and ignored on input. Rules that drop or rate-limit a protected message carry
//! `"force": true`, and `"force_lists": true` stands for protected deny entries, exactly as
//! `force = true` in a TOML policy file.

use icmp_guard_common::{FAMILY_V4, FAMILY_V6, icmp};
use serde::{Deserialize, Serialize};

use super::{
    file::{FileError, needs_force},
    model::{
        Action, ByteLimit, Cidr, DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6, DEFAULT_PROBATION,
        ErrorCeiling, FragmentBudget, Limit, Mode, NewSources, Per, Policy, RuleSpec, Smurf,
    },
};

/// The `policy show --json` document.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub mode: Mode,
    /// The active generation of the double buffer; output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// The policy revision; output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// One rule per (family, type); types left out keep the default profile's rule.
    #[serde(default)]
    pub types: Vec<RuleEntry>,
    /// Per-code exceptions.
    #[serde(default)]
    pub codes: Vec<RuleEntry>,
    #[serde(default)]
    pub allow: Vec<Cidr>,
    #[serde(default)]
    pub deny: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smurf: Option<Smurf>,
    /// The per-source ceiling of ICMP errors; left out, the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorCeiling>,
    /// The budget of non-first ICMP fragments; left out, the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragments: Option<FragmentBudget>,
    /// Sweep detection; left out, the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recon: Option<crate::policy::recon::Recon>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_lists: bool,
}

/// One rule of the document.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    /// `v4` or `v6`.
    pub family: String,
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub code: Option<u8>,
    /// The type's name; output only.
    #[serde(default)]
    pub name: Option<String>,
    /// The code's name as nft spells it (`frag-needed`); output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_name: Option<String>,
    pub action: Action,
    #[serde(default)]
    pub limit: Option<LimitEntry>,
    /// Largest IP packet the rule admits, bytes; larger ones are dropped as `oversize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u16>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

/// A rate limit of the document.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitEntry {
    pub rate: u32,
    pub burst: u32,
    pub per: Per,
    #[serde(default = "default_prefix_v4")]
    pub prefix_v4: u8,
    #[serde(default = "default_prefix_v6")]
    pub prefix_v6: u8,
    #[serde(default)]
    pub new_sources: Option<NewSources>,
    /// Seconds a source admitted by the new-source budget stays on probation.
    #[serde(default = "default_probation")]
    pub probation: u32,
    /// Milliseconds a source over the limit is blocked (0: none).
    #[serde(default)]
    pub block_ms: u32,
    /// The byte rate (bytes per second) and burst (bytes), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<ByteLimit>,
}

const fn default_probation() -> u32 {
    DEFAULT_PROBATION
}

const fn default_prefix_v4() -> u8 {
    DEFAULT_PREFIX_V4
}

const fn default_prefix_v6() -> u8 {
    DEFAULT_PREFIX_V6
}

/// For serde's `skip_serializing_if`, which passes a reference.
const fn is_false(value: &bool) -> bool {
    !*value
}

impl From<Limit> for LimitEntry {
    fn from(limit: Limit) -> Self {
        Self {
            rate: limit.rate,
            burst: limit.burst,
            per: limit.per,
            prefix_v4: limit.prefix_v4,
            prefix_v6: limit.prefix_v6,
            new_sources: limit.new_sources,
            probation: limit.probation,
            block_ms: limit.block_ms,
            bytes: limit.bytes,
        }
    }
}

impl From<LimitEntry> for Limit {
    fn from(entry: LimitEntry) -> Self {
        Self {
            rate: entry.rate,
            burst: entry.burst,
            per: entry.per,
            prefix_v4: entry.prefix_v4,
            prefix_v6: entry.prefix_v6,
            new_sources: entry.new_sources,
            probation: entry.probation,
            block_ms: entry.block_ms,
            bytes: entry.bytes,
        }
    }
}

fn entry(family: u8, icmp_type: u8, code: Option<u8>, spec: &RuleSpec) -> RuleEntry {
    RuleEntry {
        family: icmp::family_label(family).to_owned(),
        icmp_type,
        code,
        name: icmp::type_name(family, icmp_type).map(str::to_owned),
        code_name: code
            .and_then(|code| super::names::code_name(family, icmp_type, code))
            .map(str::to_owned),
        action: spec.action,
        limit: spec.limit.map(LimitEntry::from),
        max_size: spec.max_size,
        force: needs_force(family, icmp_type, code, spec),
    }
}

impl Document {
    /// The document of `policy`, with the generation and revision it is live in.
    pub fn of(policy: &Policy, generation: Option<u32>, revision: Option<u32>) -> Self {
        Self {
            mode: policy.mode,
            generation,
            revision,
            types: policy
                .types
                .iter()
                .map(|(&(family, icmp_type), spec)| entry(family, icmp_type, None, spec))
                .collect(),
            codes: policy
                .codes
                .iter()
                .map(|(&(family, icmp_type, code), spec)| {
                    entry(family, icmp_type, Some(code), spec)
                })
                .collect(),
            allow: policy.allow.clone(),
            deny: policy.deny.clone(),
            smurf: Some(policy.smurf),
            errors: Some(policy.errors),
            fragments: Some(policy.fragments),
            recon: Some(policy.recon),
            force_lists: policy.check_added_entries(None, &[]).is_err(),
        }
    }

    /// The policy the document describes, under the same rules as a policy file: protected
    /// messages and deny entries need their `force`.
    pub fn to_policy(&self) -> Result<Policy, String> {
        let mut policy = Policy::default_profile();
        policy.mode = self.mode;
        for rule in self.types.iter().filter(|rule| rule.code.is_none()) {
            set(&mut policy, rule)?;
        }
        if let Some(rule) = self.types.iter().find(|rule| rule.code.is_some()) {
            return Err(format!(
                "types has a rule with a code ({} {}/{}): put it under codes",
                rule.family,
                rule.icmp_type,
                rule.code.unwrap_or_default()
            ));
        }
        for rule in &self.codes {
            if rule.code.is_none() {
                return Err(format!(
                    "codes has a rule without a code ({} {}): put it under types",
                    rule.family, rule.icmp_type
                ));
            }
            set(&mut policy, rule)?;
        }
        policy.allow.clone_from(&self.allow);
        policy.deny.clone_from(&self.deny);
        if let Some(smurf) = self.smurf {
            policy.smurf = smurf;
        }
        if let Some(errors) = self.errors {
            policy.errors = errors;
        }
        if let Some(fragments) = self.fragments {
            policy.fragments = fragments;
        }
        if let Some(recon) = self.recon {
            policy.recon = recon;
        }
        policy.force_lists = self.force_lists;
        policy.validate().map_err(|err| err.to_string())?;
        policy
            .check_added_entries(None, &[])
            .map_err(|err| err.to_string())?;
        Ok(policy)
    }
}

fn set(policy: &mut Policy, rule: &RuleEntry) -> Result<(), String> {
    let family = match rule.family.as_str() {
        "v4" => FAMILY_V4,
        "v6" => FAMILY_V6,
        other => return Err(format!("family \"{other}\" is not \"v4\" or \"v6\"")),
    };
    let spec = match (rule.action, rule.limit) {
        (Action::Limit, Some(limit)) => RuleSpec::limit(limit.into()),
        (Action::Limit, None) => {
            return Err(format!(
                "{} {}: action \"limit\" needs a limit",
                rule.family, rule.icmp_type
            ));
        }
        (action, _) => RuleSpec {
            action,
            limit: None,
            max_size: None,
        },
    }
    .with_max_size(rule.max_size);
    policy
        .set(family, rule.icmp_type, rule.code, spec, rule.force)
        .map_err(|err| err.to_string())
}

/// Parses a `policy show --json` document; an error names the line and column, or is at
/// line 0 when it is about the policy rather than the JSON.
pub fn parse(text: &str) -> Result<Policy, FileError> {
    let document: Document = serde_json::from_str(text).map_err(|err| FileError {
        line: err.line(),
        column: err.column(),
        message: err.to_string(),
    })?;
    document.to_policy().map_err(|message| FileError {
        line: 0,
        column: 0,
        message,
    })
}

/// The document as `policy show --json` prints it.
pub fn render(document: &Document) -> String {
    // A document of plain data always serializes.
    serde_json::to_string_pretty(document).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Limit, Per};

    #[test]
    fn the_json_document_round_trips_also_with_forced_entries() {
        let mut policy = Policy::default_profile();
        policy
            .set(FAMILY_V4, 13, None, RuleSpec::PASS, false)
            .expect("valid");
        policy
            .set(FAMILY_V4, 3, Some(1), RuleSpec::DROP, false)
            .expect("valid");
        policy
            .set(
                FAMILY_V6,
                128,
                None,
                RuleSpec::limit(Limit {
                    new_sources: Some(NewSources { rate: 7, burst: 9 }),
                    block_ms: 2_500,
                    bytes: Some(ByteLimit {
                        rate: 1 << 20,
                        burst: 3_000,
                    }),
                    ..Limit::new(5, 10, Per::Prefix)
                })
                .with_max_size(Some(1280)),
                false,
            )
            .expect("valid");
        policy
            .set(FAMILY_V6, 2, None, RuleSpec::DROP, true)
            .expect("forced");
        policy.deny.push("::/0".parse().expect("valid"));
        policy.allow.push("192.0.2.10/32".parse().expect("valid"));
        policy.smurf.reply_ceiling = 77;
        policy.mode = Mode::DryRun;
        let text = render(&Document::of(&policy, Some(1), Some(9)));
        assert!(
            text.contains("\"block_ms\": 2500") && text.contains("\"max_size\": 1280"),
            "block and max_size are in the document: {text}"
        );
        assert!(
            text.contains("\"code_name\": \"host-unreachable\""),
            "codes are named: {text}"
        );
        assert_eq!(parse(&text), Ok(policy));
        let unforced = text.replace("\"force\": true", "\"force\": false");
        let err = parse(&unforced).expect_err("a protected drop needs its force");
        assert!(err.message.contains("RFC 8201"), "{err}");
        let lists = text.replace("\"force_lists\": true", "\"force_lists\": false");
        let err = parse(&lists).expect_err("::/0 needs its force");
        assert!(err.message.contains("RFC 4861"), "{err}");
        let err = parse("{\"mode\": \"enforce\",\n \"typo\": 1}").expect_err("unknown field");
        assert_eq!(err.line, 2, "{err}");
    }
}
