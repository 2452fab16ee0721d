//! `completions` and `man`: generated from the command-line definition itself, so they never
//! drift from it.
//!
//! Completion is dynamic: the script a shell loads only calls back into `icmp-guard` with
//! `ICMP_GUARD_COMPLETE=<shell>` set ([`complete_if_asked`]), and the binary answers from
//! its own definition. So
//! `<IFACE>` completes the interfaces that exist now (`/sys/class/net`) and `<TYPE>` the ICMP
//! type names the policy accepts, in bash, zsh and fish alike.

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::{
    ArgValueCandidates, CompleteEnv, CompletionCandidate,
    env::{Bash, EnvCompleter, Fish, Zsh},
};
use icmp_guard_common::icmp;

use super::manual;

/// The shells we ship completion scripts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Print a shell completion script.
///
/// The script calls `icmp-guard` back while completing, so it completes interface names and
/// ICMP type names, not only the command line's words.
///
/// Example: icmp-guard completions bash > /usr/share/bash-completion/completions/icmp-guard
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,

    /// The icmp-guard the script calls back [default: this binary].
    #[arg(long, value_name = "PATH")]
    completer: Option<PathBuf>,
}

/// Print the manual page (roff) to stdout, or write every page to a directory.
///
/// Example: icmp-guard man | man -l -
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write man8/icmp-guard.8, one man8/icmp-guard-COMMAND.8 per command and
    /// man5/icmp-guard.toml.5 here instead.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// The variable the completion scripts set when they call the binary back. Not clap's
/// default `COMPLETE`: a name that generic may be set for other reasons, and would then
/// turn every command into a completion request.
const COMPLETE_VAR: &str = "ICMP_GUARD_COMPLETE";

/// Answers a completion request and exits, when the shell's script made one; else returns.
pub fn complete_if_asked() {
    CompleteEnv::with_factory(command)
        .var(COMPLETE_VAR)
        .complete();
}

/// The whole command line, as `main` parses it, with the completers of its values.
pub fn command() -> clap::Command {
    with_completers(crate::Cli::command())
}

/// Adds the value completers to every argument, by the name its help shows: `IFACE` gets
/// the interfaces, `TYPE[/CODE]` the ICMP type names. Done here, by name, so that the
/// commands' own modules need not know about completion.
fn with_completers(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let value_names: Vec<String> = arg
                .get_value_names()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect();
            if value_names.iter().any(|name| name == "IFACE") {
                arg.add(ArgValueCandidates::new(interface_candidates))
            } else if value_names.iter().any(|name| name.starts_with("TYPE")) {
                arg.add(ArgValueCandidates::new(type_candidates))
            } else {
                arg
            }
        })
        .mut_subcommands(with_completers)
}

/// The interfaces of this network namespace, as `/sys/class/net` lists them.
fn interface_candidates() -> Vec<CompletionCandidate> {
    interface_names(Path::new("/sys/class/net"))
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

fn interface_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.file_name().into_string().ok())
                // `bonding_masters` is a file there, not an interface.
                .filter(|name| dir.join(name).join("ifindex").exists())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every ICMP type name the policy accepts, once, with the numbers it stands for.
fn type_candidates() -> Vec<CompletionCandidate> {
    type_names()
        .into_iter()
        .map(|(name, help)| CompletionCandidate::new(name).help(Some(help.into())))
        .collect()
}

/// (name, "v4 8, v6 128") for every canonical name, sorted by name.
pub fn type_names() -> Vec<(&'static str, String)> {
    let mut names: Vec<(&'static str, String)> = Vec::new();
    for (family, number, name) in icmp::known_types() {
        let label = format!("{} {number}", icmp::family_label(family));
        match names.iter_mut().find(|(known, _)| *known == name) {
            Some((_, numbers)) => {
                numbers.push_str(", ");
                numbers.push_str(&label);
            }
            None => names.push((name, label)),
        }
    }
    names.sort();
    names
}

/// Writes the completion script for `shell`: a registration that calls `completer` back.
pub fn write_completions(
    shell: Shell,
    completer: &Path,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let name = crate::Cli::command().get_name().to_owned();
    let completer = completer.to_string_lossy();
    let env: &dyn EnvCompleter = match shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    if shell == Shell::Zsh {
        // Lets zsh's compinit autoload the file from $fpath (vendor-completions).
        writeln!(out, "#compdef {name}")?;
    }
    env.write_registration(COMPLETE_VAR, &name, &name, &completer, out)
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let completer = match args.completer {
        Some(path) => path,
        None => std::env::current_exe().map_err(|err| {
            anyhow::anyhow!("cannot tell where this binary is ({err}); pass --completer PATH")
        })?,
    };
    write_completions(args.shell, &completer, &mut std::io::stdout().lock())?;
    Ok(())
}

pub fn man(args: ManArgs) -> anyhow::Result<()> {
    match args.out_dir {
        None => manual::write_page(&manual::pages(command())[0], &mut std::io::stdout().lock())?,
        Some(dir) => {
            let written = manual::write_all(command(), &dir)
                .map_err(|err| anyhow::anyhow!("cannot write to {}: {err}", dir.display()))?;
            println!("wrote {} manual pages to {}", written, dir.display());
        }
    }
    Ok(())
}

/// The candidates the completion engine offers for `args` typed so far (the last one being
/// completed), as a shell would get them. For tests.
#[cfg(test)]
fn complete(args: &[&str]) -> Vec<String> {
    let mut command = command();
    let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    let index = args.len() - 1;
    clap_complete::engine::complete(&mut command, args, index, None)
        .expect("completes")
        .into_iter()
        .map(|candidate| candidate.get_value().to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(shell: Shell) -> String {
        let mut out = Vec::new();
        write_completions(shell, Path::new("/usr/sbin/icmp-guard"), &mut out).expect("renders");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn scripts_call_the_installed_binary_back() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = render(shell);
            assert!(
                script.contains("ICMP_GUARD_COMPLETE=") && script.contains("/usr/sbin/icmp-guard"),
                "{shell:?}: {script}"
            );
        }
        assert!(render(Shell::Zsh).starts_with("#compdef icmp-guard\n"));
        assert!(render(Shell::Fish).contains("complete "));
    }

    #[test]
    fn interfaces_complete_from_sys_class_net() {
        let lo = Path::new("/sys/class/net/lo");
        assert!(lo.exists(), "no loopback interface to complete");
        for command in [
            &["icmp-guard", "attach", ""][..],
            &["icmp-guard", "detach", "l"],
            &["icmp-guard", "run", "lo", ""],
        ] {
            let offered = complete(command);
            assert!(
                offered.iter().any(|name| name == "lo"),
                "{command:?} offered {offered:?}"
            );
            assert!(
                !offered
                    .iter()
                    .any(|name| name.contains('/') || name == "Cargo.toml"),
                "{command:?} offered file names: {offered:?}"
            );
        }
    }

    #[test]
    fn types_complete_by_name() {
        let offered = complete(&["icmp-guard", "policy", "set", "echo-"]);
        assert!(
            offered.iter().any(|name| name == "echo-request"),
            "{offered:?}"
        );
        assert!(
            offered.iter().any(|name| name == "echo-reply"),
            "{offered:?}"
        );
        assert!(
            offered.iter().all(|name| name.starts_with("echo-")),
            "{offered:?}"
        );
        let offered = complete(&["icmp-guard", "policy", "set", "packet"]);
        assert_eq!(offered, ["packet-too-big"]);
    }

    #[test]
    fn every_type_name_is_one_the_policy_accepts() {
        let names = type_names();
        assert!(names.len() > 40, "{names:?}");
        let (_, numbers) = names
            .iter()
            .find(|(name, _)| *name == "echo-request")
            .expect("echo-request");
        assert_eq!(numbers, "v4 8, v6 128");
        for (name, _) in names {
            let accepted = name
                .parse::<icmp_guard::policy::target::RuleTarget>()
                .is_ok_and(|target| target.resolve(None).is_ok_and(|types| !types.is_empty()));
            assert!(accepted, "{name} is offered but not accepted");
        }
    }

    #[test]
    fn interface_names_skip_files_that_are_not_interfaces() {
        let dir = std::env::temp_dir().join(format!("icmp-guard-ifaces-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("eth0")).expect("mkdir");
        std::fs::write(dir.join("eth0/ifindex"), "2\n").expect("write");
        std::fs::write(dir.join("bonding_masters"), "").expect("write");
        let names = interface_names(&dir);
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(names, ["eth0"]);
    }
}
