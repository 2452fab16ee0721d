//! The `icmp-guard` command: parse arguments and dispatch to one module per command.

mod cli;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use icmp_guard::{bpf::pins::DEFAULT_PIN_DIR, error::Error, guard::Guard, host::preflight};

/// `--version`: the release and the commit it was built from (see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    include_str!(concat!(env!("OUT_DIR"), "/commit")),
    ")"
);

/// XDP ICMP firewall and flood guard.
#[derive(Debug, Parser)]
#[command(version = VERSION, about, propagate_version = true)]
struct Cli {
    /// Say more: debug logs, and the verifier's log when the kernel rejects the program.
    #[arg(short, long, global = true)]
    verbose: bool,

    /// bpffs directory that holds the pinned links and maps.
    #[arg(long, global = true, env = "ICMP_GUARD_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,

    #[command(subcommand)]
    command: cli::Command,
}

/// Keeps the kernel's directed-broadcast map in step with the attached interfaces'
/// addresses on every invocation. Quiet when there is nothing to refresh or no privilege
/// (the command itself says what is wrong); a failure is a warning, not an error.
fn refresh_broadcasts(guard: &Guard) {
    if preflight::require_privileges().is_err() || !guard.has_maps() {
        return;
    }
    match guard.refresh_broadcasts() {
        Ok(Some(addresses)) => log::debug!("directed broadcasts: {addresses:?}"),
        Ok(None) => {}
        Err(err) => log::warn!("could not refresh the directed-broadcast addresses: {err}"),
    }
}

fn main() -> ExitCode {
    // Shell completion: the installed scripts call back with a variable set; exits then.
    cli::completions::complete_if_asked();
    let cli = Cli::parse();
    // Rust ignores SIGPIPE, so `status | head -1` would end in a panic on the closed pipe.
    // Like other Unix tools, a one-shot command ends quietly there instead; the services
    // (`run`, `metrics --listen`) keep it ignored and never panic on output (`say!`).
    if !cli.command.is_service() {
        // SAFETY: restoring the default disposition of a signal, before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    env_logger::Builder::new()
        .filter_level(if cli.verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        })
        .format_timestamp(None)
        .init();
    let context = cli::Context {
        pins: icmp_guard::bpf::PinDir::new(cli.pin_dir),
    };
    let guard = Guard::new(context.pins.clone());
    refresh_broadcasts(&guard);
    let outcome = cli.command.execute(&context);
    // Again after the command, so that a first `attach` covers its interfaces' broadcasts.
    refresh_broadcasts(&guard);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(cli::Exit(code)) = err.downcast_ref::<cli::Exit>() {
                return ExitCode::from(*code);
            }
            eprintln!("error: {err}");
            if let (Some(log), true) = (
                err.downcast_ref::<Error>().and_then(Error::verifier_log),
                cli.verbose,
            ) {
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- verifier log (last lines) ---");
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{line}");
                }
            }
            ExitCode::FAILURE
        }
    }
}
