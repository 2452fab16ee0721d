//! One module per command, each with an `execute`.

mod attach;
pub mod completions;
mod config;
mod detach;
mod lists;
mod manual;
mod metrics;
mod policy;
mod run;
mod stats;
mod status;
mod top;

use icmp_guard::{error::Error, pins::PinDir, system};

/// What every command gets.
pub struct Context {
    pub pins: PinDir,
}

impl Context {
    /// The checks every command that touches BPF state runs first, so that a refusal
    /// changes nothing.
    pub fn preflight(&self) -> Result<(), Error> {
        system::require_privileges()?;
        system::require_kernel()?;
        system::require_bpffs(self.pins.root())
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Attach(attach::Args),
    Detach(detach::Args),
    Status(status::Args),
    Stats(stats::Args),
    #[command(subcommand)]
    Policy(policy::Command),
    #[command(subcommand)]
    /// Sources that bypass the deny list and rate limits (monitoring hosts).
    Allow(lists::Command),
    #[command(subcommand)]
    /// Sources whose ICMP is always dropped.
    Deny(lists::Command),
    Run(run::Args),
    Top(top::Args),
    #[command(subcommand)]
    /// Settings of a running guard that are not policy (the event budget).
    Config(config::Command),
    Metrics(metrics::Args),
    Completions(completions::CompletionsArgs),
    Man(completions::ManArgs),
}

impl Command {
    pub fn execute(self, context: &Context) -> anyhow::Result<()> {
        match self {
            Self::Attach(args) => attach::execute(args, context),
            Self::Detach(args) => detach::execute(args, context),
            Self::Status(args) => status::execute(args, context),
            Self::Stats(args) => stats::execute(args, context),
            Self::Policy(command) => policy::execute(command, context),
            Self::Allow(command) => lists::execute(lists::Which::Allow, command, context),
            Self::Deny(command) => lists::execute(lists::Which::Deny, command, context),
            Self::Run(args) => run::execute(args, context),
            Self::Top(args) => top::execute(args, context),
            Self::Config(command) => config::execute(command, context),
            Self::Metrics(args) => metrics::execute(args, context),
            Self::Completions(args) => completions::completions(args),
            Self::Man(args) => completions::man(args),
        }
    }
}
