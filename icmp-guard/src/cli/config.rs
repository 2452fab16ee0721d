use icmp_guard::loader::{self, GuardMaps};

use super::Context;

/// Settings of a running guard that are not policy.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show or set how many sampled events (for `top` and the `run` drop log) each CPU
    /// may send per second; 0 turns events off. Takes effect on the next packet.
    ///
    /// Example: icmp-guard config events-per-sec 1000
    EventsPerSec(EventsPerSecArgs),
}

#[derive(Debug, clap::Args)]
pub struct EventsPerSecArgs {
    /// The new budget per CPU; without it, the current one is shown.
    #[arg(value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    value: Option<u32>,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn execute(command: Command, context: &Context) -> anyhow::Result<()> {
    context.preflight()?;
    // Pins of an older version have no slot for these settings: say so plainly.
    loader::check_layout(&context.pins)?;
    match command {
        Command::EventsPerSec(args) => {
            let per_sec = match args.value {
                Some(value) => {
                    // Serialised with attach and policy edits, which write the same map.
                    let _lock = context.pins.lock_attached()?;
                    GuardMaps::open(&context.pins)?.set_events_per_sec(value)?;
                    value
                }
                None => GuardMaps::open(&context.pins)?.events_per_sec()?,
            };
            if args.json {
                println!("{}", serde_json::json!({ "events_per_sec": per_sec }));
            } else if per_sec == 0 {
                println!("events-per-sec: 0 (sampled events are off)");
            } else {
                println!("events-per-sec: {per_sec} per CPU");
            }
            Ok(())
        }
    }
}
