use std::path::PathBuf;

use icmp_guard::policy::{
    self, Action, ByteLimit, DEFAULT_LIMIT, Limit, NewSources, Per, Policy, RuleSpec, file,
    model::{MAX_BLOCK_MS, MAX_RATE, MIN_MAX_SIZE},
    rate::Rate,
    target::{FamilyChoice, RuleTarget},
    units::{self, ByteRate},
};

use super::{Context, render};

/// Read or change the ICMP policy of the running guard.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Set the action for an ICMP type or type/code; takes effect on the next packet.
    ///
    /// Example: icmp-guard policy set timestamp-request pass
    Set(SetArgs),
    /// Print the live policy as a policy file (or JSON) that `policy apply` accepts back.
    ///
    /// Example: icmp-guard policy show > /etc/icmp-guard/policy.toml
    Show(ShowArgs),
    /// Replace the whole policy with a policy file, atomically.
    ///
    /// Example: icmp-guard policy apply examples/policy.toml --dry-run
    Apply(ApplyArgs),
    /// Validate a policy file without applying it, and say how much of the maps it would use;
    /// exit 0 when it is valid and fits.
    ///
    /// Example: icmp-guard policy check examples/policy.toml --json
    Check(CheckArgs),
    /// Put every rule back to the safe default profile (allow/deny lists and mode stay), its
    /// limiters starting from fresh state.
    ///
    /// Example: icmp-guard policy reset
    Reset,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// Which family: v4, v6 or both. Names default to every family that has them;
    /// numbers need a family.
    #[arg(long, value_enum)]
    family: Option<FamilyChoice>,

    /// ICMP type as a number (0-255) or a name (echo-request, packet-too-big, ...), with an
    /// optional /CODE as a number or a name as nft spells it
    /// (destination-unreachable/frag-needed); a code name alone means its type, as in
    /// iptables (fragmentation-needed).
    #[arg(value_name = "TYPE[/CODE]")]
    target: RuleTarget,

    /// pass, drop or limit.
    #[arg(value_enum)]
    action: Action,

    /// For limit: packets per second, as N, N/s or as nft writes it (10/second, 120/minute,
    /// 7200/hour, 86400/day): whole packets per second.
    #[arg(long, value_parser = parse_rate, allow_hyphen_values = true)]
    rate: Option<u32>,

    /// For limit: bucket depth in packets.
    #[arg(long, value_parser = parse_burst, allow_hyphen_values = true)]
    burst: Option<u32>,

    /// For limit: who shares a bucket.
    #[arg(long, value_enum)]
    per: Option<Per>,

    /// For limit --per prefix: IPv4 prefix length that groups sources [default: 24].
    #[arg(long, value_name = "LEN", value_parser = clap::value_parser!(u8).range(1..=32))]
    prefix_v4: Option<u8>,

    /// For limit --per prefix: IPv6 prefix length that groups sources [default: 64].
    #[arg(long, value_name = "LEN", value_parser = clap::value_parser!(u8).range(1..=128))]
    prefix_v6: Option<u8>,

    /// For limit per source or prefix: packets per second admitted from sources without a
    /// bucket yet, the cap of a spoofed flood [default: 10 x rate].
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    new_source_rate: Option<u32>,

    /// For limit per source or prefix: burst of the new-source budget [default: 10 x burst].
    #[arg(long, value_name = "N", value_parser = parse_burst)]
    new_source_burst: Option<u32>,

    /// For limit per source or prefix: seconds a source admitted by the new-source budget
    /// stays on probation, its packets charged to the budget too [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(0..=3600))]
    probation: Option<u32>,

    /// For limit per source or prefix: block a source that goes over the limit for this
    /// long (60s, 5m, 1h, 500ms): all its ICMP is dropped as `blocked`, never its TCP/UDP
    /// and never its PMTUD and ND messages; `icmp-guard unblock` lifts it.
    #[arg(long, value_name = "DURATION", value_parser = parse_block)]
    block: Option<u32>,

    /// For limit: a byte rate besides the packet rate, in the same scope, as nft and tc
    /// write it (1MiB/s, 8Mbit/s, 10 mbytes/second, 600MB/minute): bytes of IP packets.
    #[arg(long, value_name = "RATE", value_parser = parse_bytes_rate)]
    bytes: Option<u64>,

    /// For limit --bytes: the byte bucket's depth (2MiB, 64KiB, 1500) [default: one
    /// second's worth, at least 64KiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes_burst, requires = "bytes")]
    bytes_burst: Option<u64>,

    /// For pass and limit: the largest IP packet admitted, bytes (28-65535); larger ones are
    /// dropped as `oversize`.
    #[arg(long, value_name = "BYTES", value_parser = parse_max_size)]
    max_size: Option<u16>,

    /// Allow dropping or rate-limiting messages the network needs (PMTUD, neighbour
    /// discovery).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Print JSON instead of a policy file.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// A TOML policy file (see examples/policy.toml), or the JSON of `policy show --json`.
    /// Only a regular file of at most 4 MiB is read.
    file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    file: FileArgs,

    /// First print what would change from the live policy: rules, limits, per-code rules,
    /// smurf settings, allow and deny entries added, removed or changed.
    #[arg(long)]
    diff: bool,

    /// Print what would change (as --diff) and stop: nothing is applied. (Not the policy's
    /// mode = "dry-run", which applies a policy that only counts.)
    #[arg(long)]
    dry_run: bool,

    /// With --diff or --dry-run: print the changes as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    file: FileArgs,

    /// Print the verdict as JSON: `valid`, and `errors` with file, line, column and message
    /// (for CI annotations).
    #[arg(long)]
    json: bool,
}

fn parse_count(text: &str, what: &str) -> Result<u32, String> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{what} '{text}' is not a whole number between 1 and {MAX_RATE}"
        ));
    }
    match digits.parse::<u64>() {
        Ok(0) => Err(format!("{what} must be at least 1 (use drop to block)")),
        Ok(value) if value <= u64::from(MAX_RATE) => Ok(value as u32),
        _ => Err(format!(
            "{what} '{text}' is above the maximum of {MAX_RATE}"
        )),
    }
}

fn parse_rate(text: &str) -> Result<u32, String> {
    let per_second = Rate::parse(text, "rate")?.per_second("rate")?;
    parse_count(&per_second.to_string(), "rate")
}

fn parse_burst(text: &str) -> Result<u32, String> {
    parse_count(text, "burst")
}

/// A byte rate in bytes per second.
fn parse_bytes_rate(text: &str) -> Result<u64, String> {
    let rate = ByteRate::parse(text, "bytes")?.per_second();
    ByteLimit::new(rate).validate()?;
    Ok(rate)
}

/// A byte burst in bytes.
fn parse_bytes_burst(text: &str) -> Result<u64, String> {
    let burst = units::parse_bytes(text, "bytes-burst")?;
    ByteLimit { rate: 1, burst }
        .validate()
        .map_err(|message| message.replace("bytes_burst", "--bytes-burst"))?;
    Ok(burst)
}

/// A block time in milliseconds, 1 ms to 1 day.
fn parse_block(text: &str) -> Result<u32, String> {
    let duration = units::parse_duration(text, "block")?;
    u32::try_from(duration.as_millis())
        .ok()
        .filter(|ms| (1..=MAX_BLOCK_MS).contains(ms))
        .ok_or_else(|| format!("block '{text}' must be from 1ms to 1 day (86400s)"))
}

/// A maximum size in bytes, from an IPv4 and ICMP header (28) to 65535.
fn parse_max_size(text: &str) -> Result<u16, String> {
    let bytes = units::parse_bytes(text, "max-size")?;
    u16::try_from(bytes)
        .ok()
        .filter(|size| *size >= MIN_MAX_SIZE)
        .ok_or_else(|| {
            format!("max-size '{text}' must be from {MIN_MAX_SIZE} to 65535 bytes (the IP packet's length)")
        })
}

pub fn execute(command: Command, context: &Context) -> anyhow::Result<()> {
    match command {
        Command::Set(args) => set(args, context),
        Command::Show(args) => show(args, context),
        Command::Apply(args) => apply(args, context),
        Command::Check(args) => check(args),
        Command::Reset => reset(context),
    }
}

fn set(args: SetArgs, context: &Context) -> anyhow::Result<()> {
    let entries = args.target.resolve_rules(args.family)?;
    let spec = match args.action {
        Action::Limit => {
            let mut limit = Limit::new(
                args.rate.unwrap_or(DEFAULT_LIMIT.rate),
                args.burst.unwrap_or(DEFAULT_LIMIT.burst),
                args.per.unwrap_or(DEFAULT_LIMIT.per),
            );
            limit.prefix_v4 = args.prefix_v4.unwrap_or(limit.prefix_v4);
            limit.prefix_v6 = args.prefix_v6.unwrap_or(limit.prefix_v6);
            limit.probation = args.probation.unwrap_or(limit.probation);
            limit.block_ms = args.block.unwrap_or(0);
            if let Some(rate) = args.bytes {
                let mut bytes = ByteLimit::new(rate);
                bytes.burst = args.bytes_burst.unwrap_or(bytes.burst);
                limit.bytes = Some(bytes);
            }
            if args.new_source_rate.is_some() || args.new_source_burst.is_some() {
                let default = limit.new_source_budget();
                limit.new_sources = Some(NewSources {
                    rate: args.new_source_rate.unwrap_or(default.rate),
                    burst: args.new_source_burst.unwrap_or(default.burst),
                });
            }
            RuleSpec::limit(limit)
        }
        other => {
            if args.rate.is_some()
                || args.burst.is_some()
                || args.per.is_some()
                || args.prefix_v4.is_some()
                || args.prefix_v6.is_some()
                || args.new_source_rate.is_some()
                || args.new_source_burst.is_some()
                || args.probation.is_some()
                || args.block.is_some()
                || args.bytes.is_some()
            {
                anyhow::bail!(
                    "--rate, --burst, --per, --prefix-v4/-v6, --new-source-rate/-burst, --probation, --block and --bytes only go with the limit action"
                );
            }
            if other == Action::Drop && args.max_size.is_some() {
                anyhow::bail!(
                    "--max-size only goes with pass and limit: a drop rule drops every size"
                );
            }
            RuleSpec {
                action: other,
                limit: None,
                max_size: None,
            }
        }
    }
    .with_max_size(args.max_size);
    context.open()?.edit_policy(|live| {
        for (family, icmp_type, code) in &entries {
            live.set(*family, *icmp_type, *code, spec, args.force)?;
        }
        Ok(())
    })?;
    for (family, icmp_type, code) in entries {
        let mut limit = spec
            .limit
            .map(|l| format!(" {}/s burst {} per {}", l.rate, l.burst, l.per.as_str()))
            .unwrap_or_default();
        if let Some(bytes) = spec.limit.and_then(|l| l.bytes) {
            limit.push_str(&format!(
                " bytes {}/s burst {}",
                units::format_bytes(bytes.rate),
                units::format_bytes(bytes.burst)
            ));
        }
        if let Some(block) = spec.limit.map(|l| l.block_ms).filter(|ms| *ms != 0) {
            limit.push_str(&format!(
                " block {}",
                units::format_duration(std::time::Duration::from_millis(u64::from(block)))
            ));
        }
        if let Some(size) = spec.max_size {
            limit.push_str(&format!(" max-size {size}"));
        }
        println!(
            "{}: {}{limit}",
            policy::describe(family, icmp_type, code),
            spec.action.as_str()
        );
    }
    Ok(())
}

fn show(args: ShowArgs, context: &Context) -> anyhow::Result<()> {
    let live = context.open()?.policy()?;
    if args.json {
        println!("{}", render::policy::json(&live));
    } else {
        print!("{}", file::render(&live.policy));
    }
    Ok(())
}

fn apply(args: ApplyArgs, context: &Context) -> anyhow::Result<()> {
    let path = &args.file.file;
    let new = file::read(path)?;
    let guard = context.open()?;
    if args.diff || args.dry_run {
        // Everything apply would refuse is refused here too, before a word of the diff.
        policy::compile(&new).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        let changes = policy::diff::diff(&guard.policy()?.policy, &new);
        if args.json {
            let document = serde_json::json!({
                "file": path.display().to_string(),
                "dry_run": args.dry_run,
                "changes": changes,
            });
            println!("{}", serde_json::to_string_pretty(&document)?);
        } else {
            print!(
                "{}",
                render::diff::diff(&changes, &path.display().to_string())
            );
        }
        if args.dry_run {
            if !args.json {
                println!("dry run: nothing applied");
            }
            return Ok(());
        }
    } else if args.json {
        anyhow::bail!("--json goes with --diff or --dry-run");
    }
    let revision = guard.apply_policy(&new)?;
    if !args.json {
        println!("applied {} (policy revision {revision})", path.display());
    }
    Ok(())
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let path = &args.file.file;
    let outcome = file::read(path).and_then(|checked| {
        let usage = policy::compile(&checked)?.usage();
        Ok(usage)
    });
    if args.json {
        let errors: Vec<serde_json::Value> = match &outcome {
            Ok(_) => Vec::new(),
            Err(err) => vec![render::policy::error_json(path, err)],
        };
        let document = serde_json::json!({
            "file": path.display().to_string(),
            "valid": outcome.is_ok(),
            "errors": errors,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    }
    let usage = match outcome {
        Ok(usage) => usage,
        Err(policy::Error::Refused(err)) => anyhow::bail!("{}: {err}", path.display()),
        Err(err) => return Err(err.into()),
    };
    if !args.json {
        println!(
            "{} is a valid policy: {}",
            path.display(),
            render::policy::usage(&usage)
        );
    }
    Ok(())
}

fn reset(context: &Context) -> anyhow::Result<()> {
    // A reset limiter starts from fresh state: no debt and no probation carried over.
    context
        .open()?
        .edit_policy_with(policy::LimiterState::Fresh, |live| {
            let default = Policy::default_profile();
            live.types = default.types;
            live.codes = default.codes;
            Ok(())
        })?;
    println!("rules reset to the safe default profile");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_accept_plain_and_per_second() {
        assert_eq!(parse_rate("100"), Ok(100));
        assert_eq!(parse_rate("100/s"), Ok(100));
        assert_eq!(parse_rate("10/second"), Ok(10));
        assert_eq!(parse_rate("120/minute"), Ok(2));
        assert_eq!(parse_rate("7200/hour"), Ok(2));
        assert_eq!(parse_rate("86400/day"), Ok(1));
        for bad in [
            "-1",
            "0/s",
            "1e99",
            "abc",
            "",
            "1.5",
            "100000001",
            "1/minute",
            "10/fortnight",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_rate("0/minute").is_err_and(|err| err.contains("at least 1")));
        assert!(parse_burst("0").is_err());
    }
}
