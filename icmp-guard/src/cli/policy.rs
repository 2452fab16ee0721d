use icmp_guard::{
    loader::GuardMaps,
    policy::{self, Action, FamilyChoice, RuleTarget},
};

use super::Context;

/// Read or change the ICMP policy of the running guard.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Set the action for an ICMP type; takes effect on the next packet.
    ///
    /// Example: icmp-guard policy set echo-request drop
    Set(SetArgs),
    /// Show every type whose action is not the default.
    ///
    /// Example: icmp-guard policy show --json
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// Which family: v4, v6 or both. Names default to every family that has them; numbers
    /// need a family.
    #[arg(long, value_enum)]
    family: Option<FamilyChoice>,

    /// ICMP type as a number (0-255) or a name (echo-request, packet-too-big, ...).
    #[arg(value_name = "TYPE[/CODE]")]
    target: RuleTarget,

    /// pass or drop.
    #[arg(value_enum)]
    action: Action,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn execute(command: Command, context: &Context) -> anyhow::Result<()> {
    match command {
        Command::Set(args) => set(args, context),
        Command::Show(args) => show(args, context),
    }
}

fn set(args: SetArgs, context: &Context) -> anyhow::Result<()> {
    let entries = args.target.resolve(args.family)?;
    if args.target.code.is_some() {
        anyhow::bail!(
            "per-code rules are not supported yet: set the whole type (for example `echo-request`)"
        );
    }
    context.preflight()?;
    let mut maps = GuardMaps::open(&context.pins)?;
    policy::set(&mut maps, &entries, args.action)?;
    for (family, icmp_type) in entries {
        println!(
            "{} type {icmp_type} ({}): {}",
            icmp_guard_common::icmp::family_label(family),
            icmp_guard_common::icmp::type_name(family, icmp_type).unwrap_or("unassigned"),
            args.action.as_str()
        );
    }
    Ok(())
}

fn show(args: ShowArgs, context: &Context) -> anyhow::Result<()> {
    context.preflight()?;
    let maps = GuardMaps::open(&context.pins)?;
    let rows = policy::show(&maps)?;
    if args.json {
        let document = serde_json::json!({ "default": "pass", "rules": rows });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(());
    }
    println!("default: pass");
    for row in rows {
        println!(
            "{} {:>3} {:<28} {}",
            row.family,
            row.icmp_type,
            row.name.unwrap_or("(unassigned)"),
            row.action.as_str()
        );
    }
    Ok(())
}
