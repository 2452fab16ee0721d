//! One module per command, each with an `execute`: arguments, one call on the
//! [`Guard`](icmp_guard::guard::Guard), and output through [`render`]. `run/` is the service
//! loop.

/// `println!` that never panics: a long-running command keeps serving when its stdout goes
/// away (a closed pipe, a stopped journal).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics; see [`say`].
macro_rules! complain {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod attach;
pub mod completions;
mod config;
mod detach;
mod lists;
mod manual;
mod metrics;
mod policy;
mod render;
mod repair;
mod run;
mod stats;
mod status;
mod top;
mod trace;
mod unblock;

use icmp_guard::{bpf::PinDir, error::Error, guard::Guard};

/// A command's verdict as an exit code, with nothing more to say on stderr (`status
/// --check` says it on stdout).
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// What every command gets.
pub struct Context {
    pub pins: PinDir,
}

impl Context {
    /// The guard of `--pin-dir`, after the checks every command that touches BPF state runs
    /// first, so that a refusal changes nothing.
    pub fn open(&self) -> Result<Guard, Error> {
        Guard::open(self.pins.clone())
    }

    /// As [`Self::open`], mounting bpffs first where it is missing (`attach`, `run`); says
    /// so when it did.
    pub fn open_mounting(&self) -> Result<Guard, Error> {
        let (guard, mounted) = Guard::open_mounting(self.pins.clone())?;
        if mounted {
            println!(
                "mounted bpffs at {}",
                icmp_guard::host::preflight::BPFFS_ROOT
            );
        }
        Ok(guard)
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
    Repair(repair::Args),
    Top(top::Args),
    Unblock(unblock::Args),
    Trace(trace::Args),
    #[command(subcommand)]
    /// Settings of a running guard that are not policy (the event budget).
    Config(config::Command),
    Metrics(metrics::Args),
    Completions(completions::CompletionsArgs),
    Man(completions::ManArgs),
}

impl Command {
    /// True for the long-running commands.
    pub fn is_service(&self) -> bool {
        match self {
            Self::Run(_) => true,
            Self::Metrics(args) => args.serves(),
            _ => false,
        }
    }

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
            Self::Repair(args) => repair::execute(args, context),
            Self::Top(args) => top::execute(args, context),
            Self::Unblock(args) => unblock::execute(args, context),
            Self::Trace(args) => trace::execute(args, context),
            Self::Config(command) => config::execute(command, context),
            Self::Metrics(args) => metrics::execute(args, context),
            Self::Completions(args) => completions::completions(args),
            Self::Man(args) => completions::man(args),
        }
    }
}
