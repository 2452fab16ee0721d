//! `completions` and `man`: generated from the command-line definition itself, so they never
//! drift from it.

use std::path::PathBuf;

use clap::CommandFactory as _;
use clap_complete::Shell;

/// Print a shell completion script.
///
/// Example: icmp-guard completions bash > /usr/share/bash-completion/completions/icmp-guard
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Print the manual page (roff) to stdout, or write one page per command to a directory.
///
/// Example: icmp-guard man | man -l -
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write icmp-guard.1 and one icmp-guard-COMMAND.1 per command here instead.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// The whole command line, as `main` parses it.
pub fn command() -> clap::Command {
    crate::Cli::command()
}

/// Writes the completion script for `shell` of `command` to `out`.
pub fn write_completions(shell: Shell, mut command: clap::Command, out: &mut dyn std::io::Write) {
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, &mut command, name, out);
}

/// Writes the roff manual page of `command` to `out`.
pub fn write_man(command: clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(command).render(out)
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    write_completions(args.shell, command(), &mut std::io::stdout().lock());
    Ok(())
}

pub fn man(args: ManArgs) -> anyhow::Result<()> {
    match args.out_dir {
        None => write_man(command(), &mut std::io::stdout().lock())?,
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", dir.display()))?;
            clap_mangen::generate_to(command(), &dir)
                .map_err(|err| anyhow::anyhow!("cannot write to {}: {err}", dir.display()))?;
            println!("wrote manual pages to {}", dir.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(shell: Shell) -> String {
        let mut out = Vec::new();
        write_completions(shell, command(), &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn completions_know_every_command() {
        let bash = render(Shell::Bash);
        for word in ["attach", "stats", "run", "metrics", "--watch", "--by-code"] {
            assert!(bash.contains(word), "bash completion lacks {word}");
        }
        assert!(render(Shell::Zsh).starts_with("#compdef icmp-guard"));
        assert!(render(Shell::Fish).contains("complete -c icmp-guard"));
    }

    #[test]
    fn the_man_page_is_roff_with_the_commands() {
        let mut out = Vec::new();
        write_man(command(), &mut out).expect("renders");
        let page = String::from_utf8(out).expect("UTF-8");
        assert!(page.contains(".TH icmp-guard 1"), "{page}");
        assert!(page.contains("run"), "{page}");
    }
}
