use super::Context;

/// Repair a damaged guard without a gap: when its pinned maps were removed (or replaced)
/// while links still run its program, pin that program's maps again, with their policy and
/// counters; give an interface whose slot is missing a new program instance in place.
/// `status` says when a guard is damaged.
///
/// Example: icmp-guard repair
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn execute(_args: Args, context: &Context) -> anyhow::Result<()> {
    let repaired = context.open()?.repair()?;
    if let Some((program, maps)) = repaired.maps_from {
        println!("pinned the {maps} maps of the running program (id {program}) again");
    }
    for name in &repaired.reslotted {
        println!("{name}: swapped in a program instance with its own interface slot (no gap)");
    }
    for name in &repaired.untraced {
        println!("{name}: swapped the production program back in place of a stale trace build");
    }
    if repaired.maps_from.is_none() && repaired.reslotted.is_empty() && repaired.untraced.is_empty()
    {
        println!("nothing to repair");
    }
    Ok(())
}
