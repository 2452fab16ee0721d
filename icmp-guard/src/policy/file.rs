//! The policy file: a TOML document that lists rules on top of a base profile, plus the
//! allow and deny lists. [`parse`] reads one (every error names the line and column of the
//! offending value), [`render`] writes a policy back in the same format.
//!
//! ```toml
//! mode = "enforce"            # or "dry-run"
//! base = "default"            # or "pass-all"
//!
//! [[rule]]
//! type = "echo-request"       # a name, or 0-255 together with family
//! family = "both"             # "v4", "v6" or "both"; names default to every family that has them
//! codes = [0]                 # optional: per-code rules instead of one for the whole type,
//!                             #   numbers or names as nft spells them ("frag-needed")
//! action = "limit"            # "pass", "drop" or "limit"
//! rate = 50                   # limit only: packets per second, or "10/second",
//!                             #   "120/minute", "7200/hour", "86400/day" as in nft
//! burst = 100                 # limit only: bucket depth in packets
//! per = "source"              # limit only: "source", "prefix" or "global"
//! prefix_v4 = 24              # per = "prefix" only: how sources are grouped (1-32)
//! prefix_v6 = 64              # per = "prefix" only (1-128)
//! new_source_rate = 500       # limit per source/prefix only: the budget of sources without
//! new_source_burst = 1000     #   a bucket yet (default 10 x rate and burst)
//! probation = 5               # limit per source/prefix only: seconds a source the budget
//!                             #   admitted stays charged to it (0-3600, default 5)
//! force = false               # allow dropping messages the network needs
//!
//! [errors]                    # the per-source ceiling of ICMP errors their rule passes
//! rate = 1000
//! burst = 2000
//!
//! [fragments]                 # the budget of non-first ICMP fragments
//! rate = 20                   # per source
//! burst = 60
//! total_rate = 40             # all sources together
//! total_burst = 100
//!
//! [lists]
//! allow = ["192.0.2.10/32"]
//! deny = ["203.0.113.0/24"]
//! force = false               # allow deny entries that cover ::, link-local, on-link
//!                             #   prefixes or 0.0.0.0/0 (neighbour discovery, PMTUD)
//! ```

use std::{
    fmt::Write as _,
    io::Read as _,
    ops::Range,
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
    time::Duration,
};

use icmp_guard_common::{FAMILY_V4, FAMILY_V6, icmp, policy as kernel};
use serde::Deserialize;
use toml::{Spanned, Value};

use super::{
    model::{
        Action, ByteLimit, Cidr, DEFAULT_LIMIT, DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6,
        DEFAULT_PROBATION, Limit, MAX_BLOCK_MS, MAX_PROBATION, MAX_RATE, MIN_MAX_SIZE, Mode,
        NewSources, Per, Policy, PolicyError, RuleSpec,
    },
    names,
    rate::Rate,
    units::{self, ByteRate, format_duration, parse_duration},
};

/// A policy file that cannot be used, with the position of the offending value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct FileError {
    /// 1-based line; 0 when the file could not be read at all.
    pub line: usize,
    /// 1-based column in characters; 0 when the file could not be read at all.
    pub column: usize,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

/// Reads a policy file: the base profile, then every rule in file order, then the lists.
/// The result is validated as a whole ([`Policy::validate`]).
pub fn parse(text: &str) -> Result<Policy, FileError> {
    let source = Source(text);
    let document: Document = toml::from_str(text).map_err(|error| source.toml_error(&error))?;

    let mut policy = match document.base {
        Some(BaseName::PassAll) => Policy::pass_all(),
        Some(BaseName::Default) | None => Policy::default_profile(),
    };
    policy.mode = match document.mode {
        Some(ModeName::DryRun) => Mode::DryRun,
        Some(ModeName::Enforce) | None => Mode::Enforce,
    };
    for rule in &document.rule {
        apply_rule(&source, &mut policy, rule)?;
    }

    let smurf = document.smurf.unwrap_or_default();
    let defaults = policy.smurf;
    policy.smurf.broadcast_echo = smurf.broadcast_echo.unwrap_or(defaults.broadcast_echo);
    policy.smurf.multicast_echo_v6 = smurf
        .multicast_echo_v6
        .unwrap_or(defaults.multicast_echo_v6);
    policy.smurf.martian_sources = smurf.martian_sources.unwrap_or(defaults.martian_sources);
    if let Some(ceiling) = &smurf.reply_ceiling {
        policy.smurf.reply_ceiling = rate_value(&source, ceiling, "reply_ceiling")?;
    }
    if let Some(burst) = &smurf.reply_ceiling_burst {
        policy.smurf.reply_ceiling_burst = count(&source, burst, "reply_ceiling_burst", "packets")?;
    }
    let errors = document.errors.unwrap_or_default();
    for (value, field, unit, target) in [
        (
            &errors.rate,
            "rate",
            "packets per second",
            &mut policy.errors.rate,
        ),
        (&errors.burst, "burst", "packets", &mut policy.errors.burst),
    ] {
        if let Some(value) = value {
            *target = count(&source, value, field, unit)?;
        }
    }
    let fragments = document.fragments.unwrap_or_default();
    for (value, field, unit, target) in [
        (
            &fragments.rate,
            "rate",
            "packets per second",
            &mut policy.fragments.rate,
        ),
        (
            &fragments.burst,
            "burst",
            "packets",
            &mut policy.fragments.burst,
        ),
        (
            &fragments.total_rate,
            "total_rate",
            "packets per second",
            &mut policy.fragments.total_rate,
        ),
        (
            &fragments.total_burst,
            "total_burst",
            "packets",
            &mut policy.fragments.total_burst,
        ),
    ] {
        if let Some(value) = value {
            *target = count(&source, value, field, unit)?;
        }
    }

    if let Some(recon) = &document.recon {
        read_recon(&source, recon, &mut policy.recon)?;
    }

    let lists = document.lists.unwrap_or_default();
    let allow = cidrs(&source, &lists.allow)?;
    let deny = cidrs(&source, &lists.deny)?;
    policy.allow = allow.iter().map(|(cidr, _)| *cidr).collect();
    policy.deny = deny.iter().map(|(cidr, _)| *cidr).collect();
    policy.force_lists = lists.force.unwrap_or(false);

    let placed = |error: PolicyError| {
        let span = match &error {
            PolicyError::AllowAndDeny { cidr } | PolicyError::ProtectedPrefix { cidr, .. } => deny
                .iter()
                .find(|(listed, _)| listed == cidr)
                .map(|(_, span)| span.clone()),
            PolicyError::Protected { .. }
            | PolicyError::BadLimit { .. }
            | PolicyError::BadRecon { .. }
            | PolicyError::ListedInOther { .. }
            | PolicyError::TooMany { .. } => None,
        };
        source.error(span.unwrap_or(0..0), error.to_string())
    };
    policy.validate().map_err(placed)?;
    // The rules that need no interface: ::, link-local, 0.0.0.0/0. Prefixes on the attached
    // interfaces are checked again when the policy is applied.
    policy.check_added_entries(None, &[]).map_err(placed)?;
    Ok(policy)
}

/// The largest policy file icmp-guard reads: a policy with every list full and every
/// code rule set renders to about 1.2 MB.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a policy file the way every reader of one does (`attach`, `policy apply`,
/// `policy check`, `run`): only a regular file (a FIFO would block the reader forever, a
/// device such as `/dev/zero` would never end), at most [`MAX_FILE_BYTES`], UTF-8. The
/// file is opened without blocking, so that a FIFO is refused, not waited on.
pub fn read_text(path: &Path) -> Result<String, super::Error> {
    let unreadable = |source| super::Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    let file_type = metadata.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_dir() {
            "a directory"
        } else if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_char_device() {
            "a character device"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(super::Error::NotRegularFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(super::Error::TooLarge {
            path: path.to_path_buf(),
            max: MAX_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| super::Error::NotText {
        path: path.to_path_buf(),
    })
}

/// Reads a policy file ([`read_text`]) and parses it: a TOML policy file, or the JSON
/// document of `policy show --json` (text that starts with `{`).
pub fn read(path: &Path) -> Result<Policy, super::Error> {
    parse_any(&read_text(path)?).map_err(|source| super::Error::File {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a TOML policy file or a `policy show --json` document.
pub fn parse_any(text: &str) -> Result<Policy, FileError> {
    if text.trim_start().starts_with('{') {
        super::document::parse(text)
    } else {
        parse(text)
    }
}

/// Reads and parses a policy file. An unreadable file is reported at line 0, column 0.
pub fn parse_file(path: &Path) -> Result<Policy, FileError> {
    let text = read_text(path).map_err(|error| FileError {
        line: 0,
        column: 0,
        message: error.to_string(),
    })?;
    parse(&text)
}

/// Writes `policy` as a policy file that [`parse`] turns back into the same policy: the
/// mode, the default base, one rule per type that differs from the default profile, then
/// the per-code rules (after every type rule, since a type rule clears its codes), then the
/// lists.
pub fn render(policy: &Policy) -> String {
    let defaults = Policy::default_profile();
    // Writing to a String cannot fail, hence the `let _ = writeln!` below.
    let mut out = String::new();
    out.push_str("# icmp-guard policy: rules apply in file order on top of the base profile.\n");
    let _ = writeln!(out, "mode = {}", quote(policy.mode.as_str()));
    out.push_str("base = \"default\"\n");

    let changed = |family: u8, icmp_type: u8| {
        policy.types.get(&(family, icmp_type)) != defaults.types.get(&(family, icmp_type))
    };
    // v6 types already written together with their v4 namesake as family = "both".
    let mut written_v6 = Vec::new();
    for (&(family, icmp_type), spec) in &policy.types {
        if !changed(family, icmp_type) || (family == FAMILY_V6 && written_v6.contains(&icmp_type)) {
            continue;
        }
        let name = icmp::type_name(family, icmp_type);
        let twin = name
            .filter(|_| family == FAMILY_V4)
            .and_then(|name| icmp::type_by_name(FAMILY_V6, name))
            .filter(|&v6_type| {
                changed(FAMILY_V6, v6_type) && policy.types.get(&(FAMILY_V6, v6_type)) == Some(spec)
            });
        let (family_text, force) = match twin {
            Some(v6_type) => {
                written_v6.push(v6_type);
                let force = needs_force(FAMILY_V4, icmp_type, None, spec)
                    || needs_force(FAMILY_V6, v6_type, None, spec);
                ("both", force)
            }
            None => (
                icmp::family_label(family),
                needs_force(family, icmp_type, None, spec),
            ),
        };
        write_rule(&mut out, name, icmp_type, family_text, None, spec, force);
    }
    for (&(family, icmp_type, code), spec) in &policy.codes {
        write_rule(
            &mut out,
            icmp::type_name(family, icmp_type),
            icmp_type,
            icmp::family_label(family),
            Some(code),
            spec,
            needs_force(family, icmp_type, Some(code), spec),
        );
    }

    let smurf = &policy.smurf;
    out.push_str("\n[smurf]\n");
    let _ = writeln!(out, "broadcast_echo = {}", smurf.broadcast_echo);
    let _ = writeln!(out, "multicast_echo_v6 = {}", smurf.multicast_echo_v6);
    let _ = writeln!(out, "martian_sources = {}", smurf.martian_sources);
    let _ = writeln!(out, "reply_ceiling = {}", smurf.reply_ceiling);
    let _ = writeln!(out, "reply_ceiling_burst = {}", smurf.reply_ceiling_burst);

    out.push_str("\n[errors]\n");
    let _ = writeln!(out, "rate = {}", policy.errors.rate);
    let _ = writeln!(out, "burst = {}", policy.errors.burst);

    let fragments = &policy.fragments;
    out.push_str("\n[fragments]\n");
    let _ = writeln!(out, "rate = {}", fragments.rate);
    let _ = writeln!(out, "burst = {}", fragments.burst);
    let _ = writeln!(out, "total_rate = {}", fragments.total_rate);
    let _ = writeln!(out, "total_burst = {}", fragments.total_burst);

    let recon = &policy.recon;
    out.push_str("\n[recon]\n");
    let _ = writeln!(out, "enabled = {}", quote(recon.enabled.as_str()));
    let _ = writeln!(out, "sweep_threshold = {}", recon.sweep_threshold);
    let _ = writeln!(out, "window = {}", quote(&format_duration(recon.window)));
    let _ = writeln!(out, "action = {}", quote(recon.action.as_str()));
    let _ = writeln!(out, "block = {}", quote(&format_duration(recon.block)));
    let _ = writeln!(out, "prefix_v4 = {}", recon.prefix_v4);
    let _ = writeln!(out, "prefix_v6 = {}", recon.prefix_v6);
    let _ = writeln!(out, "prefix_threshold = {}", recon.prefix_threshold);

    out.push_str("\n[lists]\n");
    for (key, list) in [("allow", &policy.allow), ("deny", &policy.deny)] {
        let entries: Vec<String> = list.iter().map(|cidr| quote(&cidr.to_string())).collect();
        let _ = writeln!(out, "{key} = [{}]", entries.join(", "));
    }
    if policy.check_added_entries(None, &[]).is_err() {
        out.push_str("force = true\n");
    }
    out
}

/// True when `spec` needs `force` on (family, type, code): a drop, a limit or a size cap
/// of a protected message.
pub(super) fn needs_force(family: u8, icmp_type: u8, code: Option<u8>, spec: &RuleSpec) -> bool {
    (spec.action != Action::Pass || spec.max_size.is_some())
        && kernel::protected(family, icmp_type, code).is_some()
}

fn write_rule(
    out: &mut String,
    name: Option<&str>,
    icmp_type: u8,
    family: &str,
    code: Option<u8>,
    spec: &RuleSpec,
    force: bool,
) {
    out.push_str("\n[[rule]]\n");
    let _ = match name {
        Some(name) => writeln!(out, "type = {}", quote(name)),
        None => writeln!(out, "type = {icmp_type}"),
    };
    let _ = writeln!(out, "family = {}", quote(family));
    if let Some(code) = code {
        let _ = match names::code_name(family_number(family), icmp_type, code) {
            Some(code_name) => writeln!(out, "codes = [{}]", quote(code_name)),
            None => writeln!(out, "codes = [{code}]"),
        };
    }
    let _ = writeln!(out, "action = {}", quote(spec.action.as_str()));
    if let (Action::Limit, Some(limit)) = (spec.action, spec.limit) {
        let _ = writeln!(out, "rate = {}", limit.rate);
        let _ = writeln!(out, "burst = {}", limit.burst);
        let _ = writeln!(out, "per = {}", quote(limit.per.as_str()));
        if (limit.prefix_v4, limit.prefix_v6) != (DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6) {
            let _ = writeln!(out, "prefix_v4 = {}", limit.prefix_v4);
            let _ = writeln!(out, "prefix_v6 = {}", limit.prefix_v6);
        }
        if let Some(new) = limit.new_sources {
            let _ = writeln!(out, "new_source_rate = {}", new.rate);
            let _ = writeln!(out, "new_source_burst = {}", new.burst);
        }
        if limit.probation != DEFAULT_PROBATION {
            let _ = writeln!(out, "probation = {}", limit.probation);
        }
        if let Some(bytes) = limit.bytes {
            let _ = writeln!(
                out,
                "bytes = {}",
                quote(&format!("{}/s", units::format_bytes(bytes.rate)))
            );
            let _ = writeln!(
                out,
                "bytes_burst = {}",
                quote(&units::format_bytes(bytes.burst))
            );
        }
        if limit.block_ms != 0 {
            let _ = writeln!(
                out,
                "block = {}",
                quote(&format_duration(Duration::from_millis(u64::from(
                    limit.block_ms
                ))))
            );
        }
    }
    if let Some(max_size) = spec.max_size {
        let _ = writeln!(out, "max_size = {max_size}");
    }
    if force {
        out.push_str("force = true\n");
    }
}

/// The family of a label written by [`render`] ("v4" or "v6"; a per-code rule is never
/// written for "both").
fn family_number(label: &str) -> u8 {
    if label == icmp::family_label(FAMILY_V6) {
        FAMILY_V6
    } else {
        FAMILY_V4
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// The document as written; every value the semantic checks may complain about keeps its
/// span.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    mode: Option<ModeName>,
    base: Option<BaseName>,
    #[serde(default)]
    rule: Vec<RuleEntry>,
    lists: Option<Lists>,
    smurf: Option<SmurfEntry>,
    errors: Option<ErrorsEntry>,
    fragments: Option<FragmentsEntry>,
    recon: Option<ReconEntry>,
}

/// `[recon]`: sweep detection.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconEntry {
    enabled: Option<Spanned<Value>>,
    sweep_threshold: Option<Spanned<Value>>,
    window: Option<Spanned<Value>>,
    action: Option<Spanned<Value>>,
    block: Option<Spanned<Value>>,
    prefix_v4: Option<Spanned<Value>>,
    prefix_v6: Option<Spanned<Value>>,
    prefix_threshold: Option<Spanned<Value>>,
}

/// `[errors]`: the per-source ceiling of ICMP errors.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorsEntry {
    rate: Option<Spanned<Value>>,
    burst: Option<Spanned<Value>>,
}

/// `[fragments]`: the budget of non-first ICMP fragments.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FragmentsEntry {
    rate: Option<Spanned<Value>>,
    burst: Option<Spanned<Value>>,
    total_rate: Option<Spanned<Value>>,
    total_burst: Option<Spanned<Value>>,
}

/// `[smurf]`: switch off or tune each smurf and reflection defence.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmurfEntry {
    broadcast_echo: Option<bool>,
    multicast_echo_v6: Option<bool>,
    martian_sources: Option<bool>,
    reply_ceiling: Option<Spanned<Value>>,
    reply_ceiling_burst: Option<Spanned<Value>>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ModeName {
    Enforce,
    DryRun,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum BaseName {
    Default,
    PassAll,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FamilyName {
    V4,
    V6,
    Both,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ActionName {
    Pass,
    Drop,
    Limit,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PerName {
    Source,
    Prefix,
    Global,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    #[serde(rename = "type")]
    icmp_type: Spanned<Value>,
    family: Option<Spanned<FamilyName>>,
    codes: Option<Spanned<Vec<Spanned<Value>>>>,
    action: Spanned<ActionName>,
    rate: Option<Spanned<Value>>,
    burst: Option<Spanned<Value>>,
    per: Option<Spanned<PerName>>,
    prefix_v4: Option<Spanned<Value>>,
    prefix_v6: Option<Spanned<Value>>,
    new_source_rate: Option<Spanned<Value>>,
    new_source_burst: Option<Spanned<Value>>,
    probation: Option<Spanned<Value>>,
    block: Option<Spanned<Value>>,
    bytes: Option<Spanned<Value>>,
    #[serde(alias = "bytes-burst")]
    bytes_burst: Option<Spanned<Value>>,
    #[serde(alias = "max-size")]
    max_size: Option<Spanned<Value>>,
    force: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Lists {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    force: Option<bool>,
}

/// The file's text, to turn byte spans into lines and columns.
struct Source<'a>(&'a str);

impl Source<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> FileError {
        let mut offset = span.start.min(self.0.len());
        while !self.0.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.0[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        FileError {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message: message.into(),
        }
    }

    fn toml_error(&self, error: &toml::de::Error) -> FileError {
        let message = error.message().trim_end().to_owned();
        self.error(error.span().unwrap_or(0..0), message)
    }

    /// The value as written, for messages.
    fn text(&self, span: Range<usize>) -> &str {
        self.0.get(span).unwrap_or("this value")
    }
}

fn apply_rule(source: &Source<'_>, policy: &mut Policy, rule: &RuleEntry) -> Result<(), FileError> {
    let spec = rule_spec(source, rule)?;
    let types = resolve_types(source, rule)?;
    let targets = resolve_codes(source, rule, &types)?;
    let force = rule.force.unwrap_or(false);
    let refused = |error: PolicyError, span: Range<usize>| {
        let span = match error {
            PolicyError::BadLimit { .. } => rule.rate.as_ref().map_or(span, Spanned::span),
            PolicyError::Protected { .. }
            | PolicyError::AllowAndDeny { .. }
            | PolicyError::BadRecon { .. }
            | PolicyError::ListedInOther { .. }
            | PolicyError::ProtectedPrefix { .. }
            | PolicyError::TooMany { .. } => span,
        };
        source.error(span, error.to_string())
    };
    for (family, icmp_type, code, span) in targets {
        policy
            .set(family, icmp_type, code, spec, force)
            .map_err(|error| refused(error, span))?;
    }
    Ok(())
}

/// (family, type, code or the whole type, the span a refusal points at).
type CodeTarget = (u8, u8, Option<u8>, Range<usize>);

/// The (family, type, code) rules of a rule on `types`, each with the span a refusal points
/// at: one per type without `codes`, else one per type and code. A code is a number, or a
/// name as nft or iptables spell it ([`names`]), which applies in every family whose type
/// has it (an explicit family must have it).
fn resolve_codes(
    source: &Source<'_>,
    rule: &RuleEntry,
    types: &[(u8, u8)],
) -> Result<Vec<CodeTarget>, FileError> {
    let Some(codes) = &rule.codes else {
        return Ok(types
            .iter()
            .map(|&(family, icmp_type)| (family, icmp_type, None, rule.action.span()))
            .collect());
    };
    if codes.get_ref().is_empty() {
        return Err(source.error(
            codes.span(),
            "codes is empty: list at least one code, or leave codes out for the whole type",
        ));
    }
    let mut targets = Vec::new();
    for &(family, icmp_type) in types {
        for code in codes.get_ref() {
            let number = match code.get_ref() {
                Value::String(name) => match names::code_by_name(family, icmp_type, name) {
                    Some(number) => number,
                    // Without family, a name applies where it exists, as type names do.
                    None if rule.family.is_none()
                        && types
                            .iter()
                            .any(|&(f, t)| names::code_by_name(f, t, name).is_some()) =>
                    {
                        continue;
                    }
                    None => {
                        let known = names::code_list(family, icmp_type);
                        let hint = if name.trim().parse::<u8>().is_ok() {
                            ": write a number without quotes".to_owned()
                        } else if known.is_empty() {
                            ": this type has no named codes, use a number 0-255".to_owned()
                        } else {
                            format!(": use a number 0-255 or {known}")
                        };
                        return Err(source.error(
                            code.span(),
                            format!(
                                "unknown code '{name}' for {} {}{hint}",
                                icmp::family_label(family),
                                icmp::type_name(family, icmp_type)
                                    .map_or_else(|| format!("type {icmp_type}"), str::to_owned)
                            ),
                        ));
                    }
                },
                _ => byte(source, code, "code")?,
            };
            targets.push((family, icmp_type, Some(number), code.span()));
        }
    }
    Ok(targets)
}

fn rule_spec(source: &Source<'_>, rule: &RuleEntry) -> Result<RuleSpec, FileError> {
    let max_size = match &rule.max_size {
        None => None,
        Some(value) => {
            let written = source.text(value.span());
            match value.get_ref() {
                Value::Integer(size)
                    if (i64::from(MIN_MAX_SIZE)..=i64::from(u16::MAX)).contains(size) =>
                {
                    Some(*size as u16)
                }
                _ => {
                    return Err(source.error(
                        value.span(),
                        format!(
                            "max_size must be a whole number of bytes from {MIN_MAX_SIZE} to 65535 (the IP packet's length), not {written}"
                        ),
                    ));
                }
            }
        }
    };
    let spec = rule_spec_without_size(source, rule)?;
    if let (Some(value), Action::Drop) = (&rule.max_size, spec.action) {
        return Err(source.error(
            value.span(),
            "max_size only applies to action = \"pass\" or \"limit\": a drop rule drops every size",
        ));
    }
    Ok(spec.with_max_size(max_size))
}

fn rule_spec_without_size(source: &Source<'_>, rule: &RuleEntry) -> Result<RuleSpec, FileError> {
    let action = match rule.action.get_ref() {
        ActionName::Pass => Action::Pass,
        ActionName::Drop => Action::Drop,
        ActionName::Limit => Action::Limit,
    };
    if action != Action::Limit {
        let limit_fields = [
            ("rate", rule.rate.as_ref().map(Spanned::span)),
            ("burst", rule.burst.as_ref().map(Spanned::span)),
            ("per", rule.per.as_ref().map(Spanned::span)),
            ("prefix_v4", rule.prefix_v4.as_ref().map(Spanned::span)),
            ("prefix_v6", rule.prefix_v6.as_ref().map(Spanned::span)),
            (
                "new_source_rate",
                rule.new_source_rate.as_ref().map(Spanned::span),
            ),
            (
                "new_source_burst",
                rule.new_source_burst.as_ref().map(Spanned::span),
            ),
            ("probation", rule.probation.as_ref().map(Spanned::span)),
            ("block", rule.block.as_ref().map(Spanned::span)),
            ("bytes", rule.bytes.as_ref().map(Spanned::span)),
            ("bytes_burst", rule.bytes_burst.as_ref().map(Spanned::span)),
        ];
        if let Some((field, Some(span))) = limit_fields.into_iter().find(|(_, span)| span.is_some())
        {
            return Err(source.error(
                span,
                format!(
                    "{field} only applies to action = \"limit\", not \"{}\": {}",
                    action.as_str(),
                    "remove it or change the action"
                ),
            ));
        }
        return Ok(RuleSpec {
            action,
            limit: None,
            max_size: None,
        });
    }
    let rate = match &rule.rate {
        Some(value) => rate_value(source, value, "rate")?,
        None => DEFAULT_LIMIT.rate,
    };
    let burst = match &rule.burst {
        Some(burst) => count(source, burst, "burst", "packets")?,
        None => DEFAULT_LIMIT.burst,
    };
    let per = match rule.per.as_ref().map(Spanned::get_ref) {
        Some(PerName::Source) => Per::Source,
        Some(PerName::Prefix) => Per::Prefix,
        Some(PerName::Global) => Per::Global,
        None => DEFAULT_LIMIT.per,
    };
    let mut limit = Limit::new(rate, burst, per);
    for (value, field, max, target) in [
        (&rule.prefix_v4, "prefix_v4", 32, &mut limit.prefix_v4),
        (&rule.prefix_v6, "prefix_v6", 128, &mut limit.prefix_v6),
    ] {
        let Some(value) = value else { continue };
        if per != Per::Prefix {
            return Err(source.error(
                value.span(),
                format!(
                    "{field} only applies to per = \"prefix\", not \"{}\": remove it or set per = \"prefix\"",
                    per.as_str()
                ),
            ));
        }
        *target = match value.get_ref() {
            Value::Integer(number) if (1..=max).contains(number) => *number as u8,
            _ => {
                return Err(source.error(
                    value.span(),
                    format!(
                        "{field} must be a prefix length from 1 to {max}, not {}",
                        source.text(value.span())
                    ),
                ));
            }
        };
    }
    let new_rate = rule.new_source_rate.as_ref();
    let new_burst = rule.new_source_burst.as_ref();
    if let Some(first) = new_rate.or(new_burst) {
        if per == Per::Global {
            return Err(source.error(
                first.span(),
                "a global limit has no new sources: new_source_rate and new_source_burst apply to per = \"source\" and per = \"prefix\"",
            ));
        }
        let default = limit.new_source_budget();
        limit.new_sources = Some(NewSources {
            rate: match new_rate {
                Some(value) => rate_value(source, value, "new_source_rate")?,
                None => default.rate,
            },
            burst: match new_burst {
                Some(value) => count(source, value, "new_source_burst", "packets")?,
                None => default.burst,
            },
        });
    }
    if let Some(value) = &rule.probation {
        if per == Per::Global {
            return Err(source.error(
                value.span(),
                "a global limit has no new sources, so no probation: probation applies to per = \"source\" and per = \"prefix\"",
            ));
        }
        limit.probation = match value.get_ref() {
            Value::Integer(seconds) if (0..=i64::from(MAX_PROBATION)).contains(seconds) => {
                *seconds as u32
            }
            _ => {
                return Err(source.error(
                    value.span(),
                    format!(
                        "probation must be a whole number of seconds from 0 to {MAX_PROBATION}, not {}",
                        source.text(value.span())
                    ),
                ));
            }
        };
    }
    if let Some(value) = &rule.bytes_burst
        && rule.bytes.is_none()
    {
        return Err(source.error(
            value.span(),
            "bytes_burst needs bytes, the byte rate (bytes = \"1MiB/s\")",
        ));
    }
    if let Some(value) = &rule.bytes {
        let text = match value.get_ref() {
            Value::String(text) => text.clone(),
            Value::Integer(bytes) if *bytes >= 0 => bytes.to_string(),
            _ => source.text(value.span()).to_owned(),
        };
        let rate = ByteRate::parse(&text, "bytes")
            .map_err(|message| source.error(value.span(), message))?;
        let mut bytes = ByteLimit::new(rate.per_second());
        if let Some(burst) = &rule.bytes_burst {
            let text = match burst.get_ref() {
                Value::String(text) => text.clone(),
                Value::Integer(bytes) if *bytes >= 0 => bytes.to_string(),
                _ => source.text(burst.span()).to_owned(),
            };
            bytes.burst = units::parse_bytes(&text, "bytes_burst")
                .map_err(|message| source.error(burst.span(), message))?;
            if let Err(message) = (ByteLimit { rate: 1, ..bytes }).validate() {
                return Err(source.error(burst.span(), message));
            }
        }
        bytes
            .validate()
            .map_err(|message| source.error(value.span(), message))?;
        limit.bytes = Some(bytes);
    }
    if let Some(value) = &rule.block {
        if per == Per::Global {
            return Err(source.error(
                value.span(),
                "a global limit has no source to block: block applies to per = \"source\" and per = \"prefix\"",
            ));
        }
        let text = match value.get_ref() {
            Value::String(text) => text.clone(),
            Value::Integer(seconds) if *seconds >= 0 => seconds.to_string(),
            _ => source.text(value.span()).to_owned(),
        };
        let duration = parse_duration(&text, "block")
            .map_err(|message| source.error(value.span(), message))?;
        limit.block_ms = u32::try_from(duration.as_millis())
            .ok()
            .filter(|ms| *ms <= MAX_BLOCK_MS)
            .ok_or_else(|| source.error(value.span(), "block must be at most 1 day (86400s)"))?;
    }
    Ok(RuleSpec::limit(limit))
}

/// A rate or burst: an integer from 1 to [`MAX_RATE`], in `unit` (plural).
/// `[recon]`, each value checked where it is written; the settings together by
/// [`crate::policy::recon::Recon::validate`], at the section.
fn read_recon(
    source: &Source<'_>,
    entry: &ReconEntry,
    recon: &mut crate::policy::recon::Recon,
) -> Result<(), FileError> {
    let text = |value: &Spanned<Value>, field: &str| -> Result<String, FileError> {
        match value.get_ref() {
            Value::String(text) => Ok(text.clone()),
            _ => Err(source.error(
                value.span(),
                format!(
                    "{field} must be a string, not {}",
                    source.text(value.span())
                ),
            )),
        }
    };
    let number = |value: &Spanned<Value>, field: &str| -> Result<u32, FileError> {
        match value.get_ref() {
            Value::Integer(number) => u32::try_from(*number).map_err(|_| {
                source.error(value.span(), format!("{field} {number} is out of range"))
            }),
            _ => Err(source.error(
                value.span(),
                format!(
                    "{field} must be a whole number, not {}",
                    source.text(value.span())
                ),
            )),
        }
    };
    let at = |value: &Spanned<Value>, message: String| source.error(value.span(), message);
    if let Some(value) = &entry.enabled {
        recon.enabled = text(value, "enabled")?
            .parse()
            .map_err(|message| at(value, message))?;
    }
    if let Some(value) = &entry.action {
        recon.action = text(value, "action")?
            .parse()
            .map_err(|message| at(value, message))?;
    }
    for (value, field, target) in [
        (&entry.window, "window", &mut recon.window),
        (&entry.block, "block", &mut recon.block),
    ] {
        if let Some(value) = value {
            let written = match value.get_ref() {
                Value::Integer(seconds) => seconds.to_string(),
                _ => text(value, field)?,
            };
            *target = parse_duration(&written, field).map_err(|message| at(value, message))?;
        }
    }
    for (value, field, target) in [
        (
            &entry.sweep_threshold,
            "sweep_threshold",
            &mut recon.sweep_threshold,
        ),
        (
            &entry.prefix_threshold,
            "prefix_threshold",
            &mut recon.prefix_threshold,
        ),
    ] {
        if let Some(value) = value {
            *target = number(value, field)?;
        }
    }
    for (value, field, target) in [
        (&entry.prefix_v4, "prefix_v4", &mut recon.prefix_v4),
        (&entry.prefix_v6, "prefix_v6", &mut recon.prefix_v6),
    ] {
        if let Some(value) = value {
            let number = number(value, field)?;
            *target = u8::try_from(number)
                .map_err(|_| at(value, format!("{field} {number} is out of range")))?;
        }
    }
    if let Err(message) = recon.validate() {
        // The value named first in the message is the one to point at.
        let spans = [
            ("sweep_threshold", &entry.sweep_threshold),
            ("prefix_threshold", &entry.prefix_threshold),
            ("window", &entry.window),
            ("block", &entry.block),
            ("prefix_v4", &entry.prefix_v4),
            ("prefix_v6", &entry.prefix_v6),
        ];
        let span = spans
            .iter()
            .find(|(field, _)| message.starts_with(field))
            .and_then(|(_, value)| value.as_ref())
            .map_or(0..0, Spanned::span);
        return Err(source.error(span, message));
    }
    Ok(())
}

fn count(
    source: &Source<'_>,
    value: &Spanned<Value>,
    field: &str,
    unit: &str,
) -> Result<u32, FileError> {
    let written = source.text(value.span());
    let one = unit.replacen("packets", "packet", 1);
    match value.get_ref() {
        Value::Integer(number) if *number < 1 => Err(source.error(
            value.span(),
            format!(
                "{field} must be at least 1 {one}, not {written}: use action = \"drop\" to block"
            ),
        )),
        Value::Integer(number) => u32::try_from(*number)
            .ok()
            .filter(|number| *number <= MAX_RATE)
            .ok_or_else(|| {
                source.error(
                    value.span(),
                    format!("{field} {written} is above the maximum of {MAX_RATE} {unit}"),
                )
            }),
        _ => Err(source.error(
            value.span(),
            format!("{field} must be a whole number from 1 to {MAX_RATE} {unit}, not {written}"),
        )),
    }
}

/// A rate: packets per second as an integer, or a string as nft writes it ("10/second",
/// "120/minute"), which must come to whole packets per second ([`Rate::per_second`]).
fn rate_value(source: &Source<'_>, value: &Spanned<Value>, field: &str) -> Result<u32, FileError> {
    let Value::String(text) = value.get_ref() else {
        return count(source, value, field, "packets per second");
    };
    let per_second = Rate::parse(text, field)
        .and_then(|rate| rate.per_second(field))
        .map_err(|message| source.error(value.span(), message))?;
    let as_integer = Spanned::new(
        value.span(),
        Value::Integer(i64::try_from(per_second).unwrap_or(i64::MAX)),
    );
    count(source, &as_integer, field, "packets per second")
}

/// A type or code number: an integer from 0 to 255.
fn byte(source: &Source<'_>, value: &Spanned<Value>, what: &str) -> Result<u8, FileError> {
    match value.get_ref() {
        Value::Integer(number) => u8::try_from(*number).map_err(|_| {
            source.error(
                value.span(),
                format!("{what} {number} is out of range 0-255"),
            )
        }),
        _ => Err(source.error(
            value.span(),
            format!(
                "{what} must be an integer from 0 to 255, not {}",
                source.text(value.span())
            ),
        )),
    }
}

/// The (family, type) pairs a rule applies to.
fn resolve_types(source: &Source<'_>, rule: &RuleEntry) -> Result<Vec<(u8, u8)>, FileError> {
    let family = rule.family.as_ref().map(|family| *family.get_ref());
    let families: &[u8] = match family {
        Some(FamilyName::V4) => &[FAMILY_V4],
        Some(FamilyName::V6) => &[FAMILY_V6],
        Some(FamilyName::Both) | None => &[FAMILY_V4, FAMILY_V6],
    };
    let span = rule.icmp_type.span();
    match rule.icmp_type.get_ref() {
        Value::String(name) => {
            let found: Vec<(u8, u8)> = families
                .iter()
                .filter_map(|&family| icmp::type_by_name(family, name).map(|t| (family, t)))
                .collect();
            let missing = families
                .iter()
                .find(|&&family| !found.iter().any(|(found, _)| *found == family));
            match (family, missing) {
                (None, _) if !found.is_empty() => Ok(found),
                (Some(_), None) => Ok(found),
                (Some(_), Some(&family)) => {
                    let label = icmp::family_label(family);
                    let other = if family == FAMILY_V4 {
                        FAMILY_V6
                    } else {
                        FAMILY_V4
                    };
                    let hint = if icmp::type_by_name(other, name).is_some() {
                        format!(
                            " (it is a {} type: use family = \"{}\")",
                            icmp::family_label(other),
                            icmp::family_label(other)
                        )
                    } else {
                        String::new()
                    };
                    Err(source.error(
                        span,
                        format!("unknown ICMP type '{name}' for {label}{hint}"),
                    ))
                }
                (None, _) => {
                    let code_of = families.iter().find_map(|&family| {
                        names::type_and_code_by_name(family, name).map(|(t, _)| (family, t))
                    });
                    let hint = if let Some((family, icmp_type)) = code_of {
                        format!(
                            ": it is a code of {}: write type = \"{}\" and codes = [\"{name}\"]",
                            icmp::type_name(family, icmp_type).unwrap_or("its type"),
                            icmp::type_name(family, icmp_type).unwrap_or("its type"),
                        )
                    } else if name.trim().parse::<u8>().is_ok() {
                        ": write a number without quotes, together with family".to_owned()
                    } else {
                        ": use a name such as \"echo-request\", or a number 0-255 with family"
                            .to_owned()
                    };
                    Err(source.error(span, format!("unknown ICMP type '{name}'{hint}")))
                }
            }
        }
        Value::Integer(_) => {
            let number = byte(source, &rule.icmp_type, "type")?;
            if family.is_none() {
                return Err(source.error(
                    span,
                    format!(
                        "type {number} is a number, so the rule needs {}",
                        "family = \"v4\", \"v6\" or \"both\""
                    ),
                ));
            }
            Ok(families.iter().map(|&family| (family, number)).collect())
        }
        _ => Err(source.error(
            span.clone(),
            format!(
                "type must be a name such as \"echo-request\" or an integer 0-255, not {}",
                source.text(span)
            ),
        )),
    }
}

fn cidrs(
    source: &Source<'_>,
    entries: &[Spanned<String>],
) -> Result<Vec<(Cidr, Range<usize>)>, FileError> {
    entries
        .iter()
        .map(|entry| {
            entry
                .get_ref()
                .parse::<Cidr>()
                .map(|cidr| (cidr, entry.span()))
                .map_err(|message| source.error(entry.span(), message))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> FileError {
        parse(text).expect_err("the file must be refused")
    }

    #[track_caller]
    fn assert_error(text: &str, line: usize, column: Option<usize>, needle: &str) {
        let error = error(text);
        assert_eq!(error.line, line, "{error}");
        if let Some(column) = column {
            assert_eq!(error.column, column, "{error}");
        }
        assert!(error.message.contains(needle), "{needle:?} not in: {error}");
    }

    #[test]
    fn default_profile_round_trips() {
        let policy = Policy::default_profile();
        let text = render(&policy);
        assert_eq!(parse(&text), Ok(policy), "{text}");
        assert!(!text.contains("[[rule]]"), "{text}");
    }

    #[test]
    fn changed_policy_round_trips() {
        let mut policy = Policy::default_profile();
        policy.mode = Mode::DryRun;
        policy
            .set(FAMILY_V4, 13, None, RuleSpec::PASS, false)
            .expect("timestamp-request");
        let limit = RuleSpec::limit(Limit {
            prefix_v4: 20,
            prefix_v6: 48,
            new_sources: Some(NewSources { rate: 7, burst: 9 }),
            ..Limit::new(50, 10, Per::Prefix)
        });
        policy
            .set(FAMILY_V4, 8, None, limit, false)
            .expect("v4 echo");
        policy
            .set(FAMILY_V6, 128, None, limit, false)
            .expect("v6 echo");
        policy
            .set(FAMILY_V4, 3, Some(1), RuleSpec::DROP, false)
            .expect("3/1");
        policy
            .set(FAMILY_V4, 3, Some(4), RuleSpec::DROP, true)
            .expect("3/4 forced");
        policy
            .set(FAMILY_V6, 2, None, RuleSpec::DROP, true)
            .expect("ptb forced");
        policy
            .set(FAMILY_V6, 139, None, RuleSpec::PASS, false)
            .expect("v6 only");
        policy
            .set(FAMILY_V4, 42, None, RuleSpec::PASS, false)
            .expect("named v4 only");
        policy
            .set(FAMILY_V4, 200, None, RuleSpec::PASS, false)
            .expect("unnamed");
        policy
            .set(FAMILY_V6, 0, Some(7), RuleSpec::limit(DEFAULT_LIMIT), false)
            .expect("unnamed code rule");
        policy.allow = vec![
            "192.0.2.10/32".parse().expect("cidr"),
            "2001:db8::10/128".parse().expect("cidr"),
        ];
        policy.deny = vec![
            "203.0.113.0/24".parse().expect("cidr"),
            "2001:db8:bad::/48".parse().expect("cidr"),
        ];
        let text = render(&policy);
        assert_eq!(parse(&text), Ok(policy), "{text}");
        assert!(text.contains("family = \"both\""), "{text}");
        assert!(text.contains("force = true"), "{text}");
        assert!(text.contains("mode = \"dry-run\""), "{text}");
        assert!(text.contains("prefix_v4 = 20\nprefix_v6 = 48\n"), "{text}");
        assert!(
            text.contains("codes = [\"frag-needed\"]")
                && text.contains("codes = [\"host-unreachable\"]"),
            "named codes are written by name: {text}"
        );
        assert!(
            text.contains("codes = [7]"),
            "unnamed ones by number: {text}"
        );
        assert!(
            text.contains("new_source_rate = 7\nnew_source_burst = 9\n"),
            "{text}"
        );
    }

    #[test]
    fn pass_all_round_trips() {
        let mut policy = Policy::pass_all();
        policy
            .set(FAMILY_V4, 3, None, RuleSpec::DROP, true)
            .expect("forced");
        policy
            .set(FAMILY_V4, 3, Some(4), RuleSpec::PASS, false)
            .expect("3/4 back");
        assert_eq!(parse(&render(&policy)), Ok(policy));
    }

    #[test]
    fn example_file_parses() {
        let policy = parse(include_str!("../../../examples/policy.toml")).expect("valid example");
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.rule_for(FAMILY_V4, 13, 0), RuleSpec::PASS);
        assert_eq!(policy.rule_for(FAMILY_V4, 3, 5), RuleSpec::DROP);
        assert_eq!(policy.rule_for(FAMILY_V4, 3, 4), RuleSpec::PASS);
        let echo = RuleSpec::limit(Limit {
            new_sources: Some(NewSources {
                rate: 250,
                burst: 500,
            }),
            bytes: Some(ByteLimit {
                rate: 64 << 10,
                burst: 128 << 10,
            }),
            ..Limit::new(50, 100, Per::Source)
        })
        .with_max_size(Some(1500));
        assert_eq!(policy.rule_for(FAMILY_V4, 8, 0), echo);
        assert_eq!(policy.rule_for(FAMILY_V6, 128, 0), echo);
        assert_eq!(policy.allow.len(), 2);
        assert_eq!(policy.deny.len(), 1);
        assert_eq!(parse(&render(&policy)), Ok(policy));
    }

    #[test]
    fn empty_file_is_the_default_profile() {
        assert_eq!(parse(""), Ok(Policy::default_profile()));
        assert_eq!(
            parse("base = \"pass-all\"\nmode = \"enforce\""),
            Ok(Policy::pass_all())
        );
    }

    #[test]
    fn names_apply_to_every_family_that_has_them() {
        let policy = parse("[[rule]]\ntype = \"echo-request\"\naction = \"drop\"\n").expect("ok");
        assert_eq!(policy.rule_for(FAMILY_V4, 8, 0), RuleSpec::DROP);
        assert_eq!(policy.rule_for(FAMILY_V6, 128, 0), RuleSpec::DROP);
        let policy =
            parse("[[rule]]\ntype = \"packet-too-big\"\naction = \"pass\"\n").expect("v6 only");
        assert_eq!(policy, Policy::default_profile());
        let policy =
            parse("[[rule]]\ntype = 13\nfamily = \"v4\"\ncodes = [0]\naction = \"pass\"\n")
                .expect("numeric");
        assert_eq!(policy.rule_for(FAMILY_V4, 13, 0), RuleSpec::PASS);
        assert_eq!(policy.rule_for(FAMILY_V4, 13, 1), RuleSpec::DROP);
    }

    #[test]
    fn syntax_error() {
        assert_error(
            "mode = \"enforce\"\n\n[[rule]\ntype = 1\n",
            3,
            None,
            "expected",
        );
        assert_error("mode = \"enforce\"\nbase = \n", 2, Some(8), "expected");
        assert_error("mode = \"dry_run\"\n", 1, Some(8), "dry-run");
    }

    #[test]
    fn unknown_type_name() {
        assert_error(
            "[[rule]]\ntype = \"foo\"\naction = \"pass\"\n",
            2,
            Some(8),
            "unknown ICMP type 'foo'",
        );
        assert_error(
            "[[rule]]\ntype = \"packet-too-big\"\nfamily = \"both\"\naction = \"pass\"\n",
            2,
            Some(8),
            "unknown ICMP type 'packet-too-big' for v4",
        );
    }

    #[test]
    fn type_out_of_range() {
        assert_error(
            "[[rule]]\nfamily = \"v4\"\ntype = 256\naction = \"pass\"\n",
            3,
            Some(8),
            "type 256 is out of range",
        );
    }

    #[test]
    fn code_out_of_range() {
        assert_error(
            "[[rule]]\ntype = \"destination-unreachable\"\ncodes = [1, 300]\naction = \"drop\"\n",
            3,
            Some(13),
            "code 300 is out of range",
        );
    }

    #[test]
    fn bad_prefixes() {
        assert_error(
            "[lists]\nallow = [\"192.0.2.10/32\"]\ndeny = [\"10.0.0.0/33\"]\n",
            3,
            Some(9),
            "out of range 0-32",
        );
        assert_error(
            "[lists]\nallow = [\n  \"2001:db8::10/128\",\n  \"::/129\",\n]\n",
            4,
            Some(3),
            "out of range 0-128",
        );
    }

    #[test]
    fn allow_and_deny_overlap() {
        assert_error(
            "[lists]\nallow = [\"192.0.2.0/24\"]\ndeny = [\"192.0.2.0/24\"]\n",
            3,
            Some(9),
            "both the allow and the deny list",
        );
    }

    const LIMIT_RULE: &str = "[[rule]]\ntype = \"echo-request\"\naction = \"limit\"\n";

    #[test]
    fn bad_rates() {
        assert_error(
            &format!("{LIMIT_RULE}rate = -1\n"),
            4,
            Some(8),
            "at least 1",
        );
        assert_error(
            &format!("{LIMIT_RULE}rate = 0\nburst = 0\n"),
            4,
            Some(8),
            "rate must be at least 1",
        );
        assert_error(
            &format!("{LIMIT_RULE}burst = 0\n"),
            4,
            Some(9),
            "burst must be at least 1",
        );
        assert_error(
            &format!("{LIMIT_RULE}rate = 1e99\n"),
            4,
            Some(8),
            "not 1e99",
        );
        assert_error(
            &format!("{LIMIT_RULE}rate = \"abc\"\n"),
            4,
            Some(8),
            "rate 'abc' is not a whole number of packets, such as 100 or 10/second",
        );
        assert_error(
            &format!("{LIMIT_RULE}rate = 100000001\n"),
            4,
            Some(8),
            "above the maximum",
        );
        assert_error(
            &format!("{LIMIT_RULE}burst = 99999999999\n"),
            4,
            Some(9),
            "above the maximum",
        );
        assert_error(
            &format!("{LIMIT_RULE}per = \"host\"\n"),
            4,
            Some(7),
            "unknown variant",
        );
    }

    #[test]
    fn protected_message_needs_force() {
        let text = "[[rule]]\ntype = \"packet-too-big\"\naction = \"drop\"\n";
        assert_error(text, 3, Some(10), "RFC 8201");
        let forced = parse(&format!("{text}force = true\n")).expect("forced");
        assert_eq!(forced.rule_for(FAMILY_V6, 2, 0), RuleSpec::DROP);
        assert_error(
            "[[rule]]\ntype = \"unreachable\"\nfamily = \"v4\"\n\
             codes = [1, 4]\naction = \"drop\"\n",
            4,
            Some(13),
            "RFC 1191",
        );
    }

    #[test]
    fn unknown_keys() {
        assert_error("mode = \"enforce\"\nbogus = 1\n", 2, Some(1), "bogus");
        assert_error(
            "[[rule]]\ntype = \"echo-request\"\naction = \"pass\"\nratee = 5\n",
            4,
            Some(1),
            "ratee",
        );
        assert_error("[lists]\nallowed = []\n", 2, Some(1), "allowed");
    }

    #[test]
    fn integer_type_needs_family() {
        assert_error(
            "[[rule]]\ntype = 13\naction = \"pass\"\n",
            2,
            Some(8),
            "needs family",
        );
    }

    #[test]
    fn block_and_max_size_parse_round_trip_and_refuse_nonsense() {
        let text = "[[rule]]\ntype = \"echo-request\"\naction = \"limit\"\nrate = 5\nblock = \"1m30s\"\nmax-size = 1500\n\n[[rule]]\ntype = \"timestamp-request\"\nfamily = \"v4\"\naction = \"pass\"\nmax_size = 100\n";
        let policy = parse(text).expect("valid");
        let echo = policy.rule_for(FAMILY_V4, 8, 0);
        assert_eq!(echo.limit.map(|limit| limit.block_ms), Some(90_000));
        assert_eq!(echo.max_size, Some(1500));
        assert_eq!(policy.rule_for(FAMILY_V6, 128, 0), echo);
        assert_eq!(policy.rule_for(FAMILY_V4, 13, 0).max_size, Some(100));
        let rendered = render(&policy);
        assert!(rendered.contains("block = \"1m30s\""), "{rendered}");
        assert!(rendered.contains("max_size = 1500"), "{rendered}");
        assert_eq!(parse(&rendered), Ok(policy));
        let seconds = "[[rule]]\ntype = \"echo-request\"\naction = \"limit\"\nblock = 60\n";
        assert_eq!(
            parse(seconds)
                .expect("seconds")
                .rule_for(FAMILY_V4, 8, 0)
                .limit
                .map(|limit| limit.block_ms),
            Some(60_000)
        );
        for (bad, column, needle) in [
            ("action = \"limit\"\nblock = \"soon\"", 9, "not a duration"),
            ("action = \"limit\"\nblock = \"2d\"", 9, "at most 1 day"),
            (
                "action = \"limit\"\nper = \"global\"\nblock = \"1s\"",
                9,
                "no source to block",
            ),
            (
                "action = \"pass\"\nblock = \"1s\"",
                9,
                "only applies to action = \"limit\"",
            ),
            (
                "action = \"drop\"\nmax_size = 1500",
                12,
                "a drop rule drops every size",
            ),
            ("action = \"pass\"\nmax_size = 20", 12, "from 28 to 65535"),
            (
                "action = \"pass\"\nmax_size = 70000",
                12,
                "from 28 to 65535",
            ),
        ] {
            let text = format!("[[rule]]\ntype = \"echo-request\"\n{bad}\n");
            let line = text.lines().count();
            assert_error(&text, line, Some(column), needle);
        }
    }

    #[test]
    fn byte_rates_parse_as_nft_writes_them_and_round_trip() {
        let rule = |extra: &str| {
            format!("[[rule]]\ntype = \"echo-request\"\naction = \"limit\"\n{extra}\n")
        };
        for (written, rate, burst) in [
            (
                "bytes = \"1MiB/s\"\nbytes_burst = \"2MiB\"",
                1 << 20,
                2 << 20,
            ),
            ("bytes = \"8Mbit/s\"", 1_000_000, 1_000_000),
            ("bytes = \"10 mbytes/second\"", 10 << 20, 10 << 20),
            ("bytes = \"600MB/minute\"", 10_000_000, 10_000_000),
            ("bytes = 1000\nbytes-burst = 1500", 1000, 1500),
            ("bytes = \"1KiB/s\"", 1024, 65_536),
        ] {
            let policy = parse(&rule(written)).expect(written);
            let limit = policy.rule_for(FAMILY_V4, 8, 0).limit.expect("a limit");
            assert_eq!(limit.bytes, Some(ByteLimit { rate, burst }), "{written}");
            assert_eq!(parse(&render(&policy)), Ok(policy), "{written}");
        }
        for (bad, needle) in [
            ("bytes = \"1M/s\"", "ambiguous"),
            ("bytes = \"fast\"", "not a size"),
            ("bytes = \"1MiB/fortnight\"", "unknown unit"),
            ("bytes = \"0/s\"", "at least 1 byte"),
            (
                "bytes = \"1MiB/s\"\nbytes_burst = 100",
                "one full-size packet",
            ),
            ("bytes_burst = \"2MiB\"", "bytes_burst needs bytes"),
        ] {
            let error = error(&rule(bad));
            assert!(
                error.message.contains(needle),
                "{bad}: {needle:?} not in {error}"
            );
            assert_eq!(
                error.line,
                4 + usize::from(bad.contains('\n')),
                "{bad}: {error}"
            );
        }
        assert_error(
            "[[rule]]\ntype = \"echo-request\"\naction = \"pass\"\nbytes = \"1MiB/s\"\n",
            4,
            Some(9),
            "only applies to action = \"limit\"",
        );
    }

    #[test]
    fn limit_fields_need_limit_action() {
        assert_error(
            "[[rule]]\ntype = \"echo-request\"\naction = \"pass\"\nrate = 5\n",
            4,
            Some(8),
            "only applies to action = \"limit\"",
        );
        assert_error(
            "[[rule]]\ntype = \"echo-request\"\naction = \"drop\"\nper = \"global\"\n",
            4,
            Some(7),
            "only applies to action = \"limit\"",
        );
    }

    #[test]
    fn empty_codes_and_missing_fields() {
        assert_error(
            "[[rule]]\ntype = \"echo-request\"\ncodes = []\naction = \"pass\"\n",
            3,
            Some(9),
            "codes is empty",
        );
        let missing = error("[[rule]]\ntype = \"echo-request\"\n");
        assert!(missing.message.contains("action"), "{missing}");
        assert!(missing.line >= 1, "{missing}");
    }

    #[test]
    fn codes_by_name_as_nft_and_iptables_spell_them() {
        let policy = parse(
            "[[rule]]\ntype = \"destination-unreachable\"\n\
             codes = [\"admin-prohibited\", \"source-route-failed\", 7]\nfamily = \"v4\"\naction = \"drop\"\n",
        )
        .expect("valid");
        for code in [13, 5, 7] {
            assert_eq!(
                policy.rule_for(FAMILY_V4, 3, code),
                RuleSpec::DROP,
                "3/{code}"
            );
        }
        assert_eq!(policy.rule_for(FAMILY_V4, 3, 4), RuleSpec::PASS);
        // Without family a name applies in every family whose type has it: admin-prohibited
        // is 3/13 in v4 and 1/1 in v6; frag-needed exists in v4 only.
        let policy = parse(
            "[[rule]]\ntype = \"destination-unreachable\"\n\
             codes = [\"admin-prohibited\", \"Fragmentation_Needed\"]\naction = \"drop\"\nforce = true\n",
        )
        .expect("valid");
        assert_eq!(policy.rule_for(FAMILY_V4, 3, 13), RuleSpec::DROP);
        assert_eq!(policy.rule_for(FAMILY_V6, 1, 1), RuleSpec::DROP);
        assert_eq!(policy.rule_for(FAMILY_V4, 3, 4), RuleSpec::DROP);
        assert_eq!(policy.rule_for(FAMILY_V6, 1, 4), RuleSpec::PASS);
        assert_eq!(parse(&render(&policy)), Ok(policy));
        assert_error(
            "[[rule]]\ntype = \"destination-unreachable\"\nfamily = \"v6\"\n\
             codes = [4, \"frag-needed\"]\naction = \"drop\"\n",
            4,
            Some(13),
            "unknown code 'frag-needed' for v6 destination-unreachable: use a number 0-255 or no-route,",
        );
        assert_error(
            "[[rule]]\ntype = \"destination-unreachable\"\ncodes = [\"bogus\"]\naction = \"drop\"\n",
            3,
            Some(10),
            "unknown code 'bogus' for v4 destination-unreachable",
        );
        assert_error(
            "[[rule]]\ntype = \"echo-request\"\ncodes = [\"0\"]\naction = \"drop\"\n",
            3,
            Some(10),
            "write a number without quotes",
        );
        assert_error(
            "[[rule]]\ntype = \"frag-needed\"\naction = \"drop\"\n",
            2,
            Some(8),
            "it is a code of destination-unreachable: write type = \"destination-unreachable\" and codes = [\"frag-needed\"]",
        );
    }

    #[test]
    fn rates_as_nft_writes_them() {
        let policy = parse(&format!(
            "{LIMIT_RULE}rate = \"120/minute\"\nburst = 5\nnew_source_rate = \"86400/day\"\n\
             [smurf]\nreply_ceiling = \"10000/second\"\n"
        ))
        .expect("valid");
        let limit = policy.rule_for(FAMILY_V4, 8, 0).limit.expect("a limit");
        assert_eq!((limit.rate, limit.burst), (2, 5));
        assert_eq!(limit.new_source_budget().rate, 1);
        assert_eq!(policy.smurf.reply_ceiling, 10_000);
        assert_error(
            &format!("{LIMIT_RULE}rate = \"1/minute\"\n"),
            4,
            Some(8),
            "rate 1/minute is one packet every 60 s, below the 1 packet per second",
        );
        assert_error(
            &format!("{LIMIT_RULE}rate = \"90/minute\"\n"),
            4,
            Some(8),
            "use 1/second or 2/second",
        );
        assert_error(
            &format!("{LIMIT_RULE}rate = \"10/fortnight\"\n"),
            4,
            Some(8),
            "unknown unit '/fortnight'",
        );
        assert_error(
            &format!("{LIMIT_RULE}rate = \"0/second\"\n"),
            4,
            Some(8),
            "at least 1",
        );
    }

    #[test]
    fn smurf_section_parses_and_round_trips() {
        let policy =
            parse("[smurf]\nbroadcast_echo = false\nmartian_sources = false\nreply_ceiling = 50\n")
                .expect("valid");
        assert!(!policy.smurf.broadcast_echo);
        assert!(policy.smurf.multicast_echo_v6);
        assert!(!policy.smurf.martian_sources);
        assert_eq!(policy.smurf.reply_ceiling, 50);
        assert_eq!(parse(&render(&policy)), Ok(policy));
        assert_error("[smurf]\nreply_ceiling = 0\n", 2, Some(17), "at least 1");
        assert_error("[smurf]\nbroadcast = true\n", 2, Some(1), "broadcast");
    }

    #[test]
    fn unreadable_file() {
        let path = Path::new("/nonexistent/icmp-guard/policy.toml");
        let error = parse_file(path).expect_err("no such file");
        assert_eq!((error.line, error.column), (0, 0));
        assert!(
            error
                .message
                .contains("/nonexistent/icmp-guard/policy.toml"),
            "{error}"
        );
        assert!(
            error.to_string().starts_with("line 0, column 0: "),
            "{error}"
        );
    }
}
