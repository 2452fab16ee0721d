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
    ArgValueCandidates, ArgValueCompleter, CompleteEnv, CompletionCandidate,
    env::{Bash, EnvCompleter, Fish, Zsh},
};
use icmp_guard::policy::{names, rate::Period};
use icmp_guard_common::{FAMILY_V4, FAMILY_V6, icmp};

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
/// the interfaces, `TYPE[/CODE]` the ICMP type names and, after a `/`, the code names of
/// that type; a rate (`--rate 10/`) its units. Done here, by name, so that the commands'
/// own modules need not know about completion.
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
                arg.add(ArgValueCompleter::new(type_code_candidates))
            } else if arg.get_id().as_str().ends_with("rate") {
                arg.add(ArgValueCompleter::new(rate_candidates))
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

/// `TYPE[/CODE]` being typed: before a `/`, the type names that start with it (or, when
/// none does, the code names that do, which stand for their type as in iptables); after
/// one, `TYPE/CODE` for the code names of that type in either family.
fn type_code_candidates(current: &std::ffi::OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let starts = |name: &str, prefix: &str| {
        name.to_ascii_lowercase()
            .starts_with(&prefix.to_ascii_lowercase().replace('_', "-"))
    };
    let named = |names: Vec<(String, String)>| -> Vec<CompletionCandidate> {
        names
            .into_iter()
            .map(|(name, help)| CompletionCandidate::new(name).help(Some(help.into())))
            .collect()
    };
    if let Some((type_text, code_prefix)) = current.split_once('/') {
        let codes = code_names(type_text)
            .into_iter()
            .filter(|(name, _)| starts(name, code_prefix))
            .map(|(name, help)| (format!("{type_text}/{name}"), help))
            .collect();
        return named(codes);
    }
    let types: Vec<(String, String)> = type_names()
        .into_iter()
        .filter(|(name, _)| starts(name, &current))
        .map(|(name, help)| (name.to_owned(), help))
        .collect();
    if !types.is_empty() || current.is_empty() {
        return named(types);
    }
    let mut codes: Vec<(String, String)> = Vec::new();
    for (family, icmp_type, code, name) in names::known_spellings() {
        if !starts(name, &current) {
            continue;
        }
        let label = format!("{} {icmp_type}/{code}", icmp::family_label(family));
        match codes.iter_mut().find(|(known, _)| known == name) {
            Some((_, help)) => {
                help.push_str(", ");
                help.push_str(&label);
            }
            None => codes.push((name.to_owned(), label)),
        }
    }
    codes.sort();
    named(codes)
}

/// (code name, "v4 3/13, v6 1/1") for the named codes of a type as typed (a name or a
/// number), in both families, sorted by name.
pub fn code_names(type_text: &str) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = Vec::new();
    for family in [FAMILY_V4, FAMILY_V6] {
        let icmp_type = match type_text.trim().parse::<u8>() {
            Ok(number) => Some(number),
            Err(_) => icmp::type_by_name(family, type_text),
        };
        let Some(icmp_type) = icmp_type else { continue };
        for (code, name) in names::codes_of(family, icmp_type) {
            let label = format!("{} {icmp_type}/{code}", icmp::family_label(family));
            match names.iter_mut().find(|(known, _)| known == name) {
                Some((_, help)) => {
                    help.push_str(", ");
                    help.push_str(&label);
                }
                None => names.push((name.to_owned(), label)),
            }
        }
    }
    names.sort();
    names
}

/// A rate being typed: after `N/`, the units nft writes (`N/second`, `N/minute`, ...).
fn rate_candidates(current: &std::ffi::OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    let Some((number, unit)) = current.split_once('/') else {
        return Vec::new();
    };
    Period::ALL
        .into_iter()
        .filter(|period| period.as_str().starts_with(&unit.to_ascii_lowercase()))
        .map(|period| CompletionCandidate::new(format!("{number}/{}", period.as_str())))
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
    fn codes_complete_by_name_after_the_slash() {
        let offered = complete(&["icmp-guard", "policy", "set", "destination-unreachable/"]);
        for name in [
            "destination-unreachable/frag-needed",
            "destination-unreachable/admin-prohibited",
            "destination-unreachable/no-route",
            "destination-unreachable/policy-fail",
        ] {
            assert!(
                offered.iter().any(|o| o == name),
                "{name} not in {offered:?}"
            );
        }
        let offered = complete(&["icmp-guard", "policy", "set", "destination-unreachable/fr"]);
        assert_eq!(offered, ["destination-unreachable/frag-needed"]);
        let offered = complete(&["icmp-guard", "policy", "set", "time-exceeded/ttl"]);
        assert_eq!(
            offered,
            [
                "time-exceeded/ttl-zero-during-reassembly",
                "time-exceeded/ttl-zero-during-transit"
            ]
        );
        assert!(complete(&["icmp-guard", "policy", "set", "echo-request/"]).is_empty());
        let offered = complete(&["icmp-guard", "policy", "set", "fragm"]);
        assert_eq!(
            offered,
            ["fragmentation-needed"],
            "iptables' name, when no type matches"
        );
        for (name, help) in code_names("destination-unreachable") {
            let target = format!("destination-unreachable/{name}");
            let accepted = target
                .parse::<icmp_guard::policy::target::RuleTarget>()
                .is_ok_and(|t| t.resolve_rules(None).is_ok_and(|rules| !rules.is_empty()));
            assert!(accepted, "{target} ({help}) is offered but not accepted");
        }
    }

    #[test]
    fn rates_complete_their_units() {
        let offered = complete(&[
            "icmp-guard",
            "policy",
            "set",
            "echo-request",
            "limit",
            "--rate",
            "10/",
        ]);
        assert_eq!(
            offered,
            ["10/second", "10/minute", "10/hour", "10/day", "10/week"]
        );
        let offered = complete(&[
            "icmp-guard",
            "policy",
            "set",
            "echo-request",
            "limit",
            "--rate",
            "10/m",
        ]);
        assert_eq!(offered, ["10/minute"]);
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
