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
    let guard = context.open()?;
    match command {
        Command::EventsPerSec(args) => {
            let per_sec = match args.value {
                Some(value) => {
                    guard.set_events_per_sec(value)?;
                    value
                }
                None => guard.events_per_sec()?,
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
