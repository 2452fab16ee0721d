use icmp_guard::{
    loader::{self, GuardMaps},
    stats,
};

use super::Context;

/// Show ICMP counters per family and type, with drops by reason.
///
/// Example: icmp-guard stats --json
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn execute(args: Args, context: &Context) -> anyhow::Result<()> {
    context.preflight()?;
    let maps = GuardMaps::open(&context.pins)?;
    let snapshot = stats::read(&maps)?;
    let links = loader::links(&context.pins)?;
    let report = stats::report(&snapshot, &links);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", stats::render_table(&report));
    }
    Ok(())
}
