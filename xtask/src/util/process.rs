//! Child processes and privileges shared by all tasks.

use std::{
    env,
    ffi::OsStr,
    io::ErrorKind,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Command, ExitStatus, Output, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::cargo::{child_path, workspace_root};

/// Finds `program` the way a child would, plus the sbin directories: Debian leaves them off
/// non-root users' `PATH`, though bpftool, tcpdump and nft live there.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    env::split_paths(child_path())
        .chain(sbin)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// A command that runs from the workspace root with [`child_path`] as its `PATH`.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    // std resolves the program with the PATH set here, so this also covers bpf-linker itself.
    command.env("PATH", child_path());
    command.current_dir(workspace_root());
    command
}

/// Renders a command the way a user would type it, for `$ ...` echo lines and errors.
pub use icmp_guard_lab::process::display;

/// Echoes the command as `$ ...`, runs it with inherited stdio and returns its status.
pub fn status(command: &mut Command) -> Result<ExitStatus> {
    let shown = display(command);
    status_shown_as(command, &shown)
}

/// Like [`status`], but echoes `shown` instead: the demo shows `icmp-guard ...` for what
/// really is a long `nsenter` line.
pub fn status_shown_as(command: &mut Command, shown: &str) -> Result<ExitStatus> {
    println!("$ {shown}");
    command.status().map_err(|err| spawn_error(command, err))
}

/// Like [`status`], but a non-zero exit is an error.
pub fn run(command: &mut Command) -> Result<()> {
    let status = status(command)?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(command));
    }
    Ok(())
}

/// Runs the command quietly and returns its output, whatever its exit status.
pub fn output(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| spawn_error(command, err))
}

/// Runs the command quietly and returns its stdout; a non-zero exit is an error.
pub fn stdout_of(command: &mut Command) -> Result<String> {
    let output = output(command)?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{}` printed non-UTF-8", display(command)))
}

fn spawn_error(command: &Command, err: std::io::Error) -> anyhow::Error {
    let program = command.get_program().to_string_lossy();
    if err.kind() == ErrorKind::NotFound {
        // A missing working directory fails the spawn with the same error as a missing
        // program: the workspace baked into xtask (`workspace_root`) is gone when xtask was
        // built from a checkout since deleted that shared this target directory.
        if let Some(dir) = command.get_current_dir().filter(|dir| !dir.is_dir()) {
            return anyhow::anyhow!(
                "`{program}` cannot start in {}, which no longer exists: this xtask was built \
                 from another checkout; rebuild it here (`touch xtask/src/main.rs && cargo \
                 build -p xtask`)",
                dir.display()
            );
        }
        anyhow::anyhow!("`{program}` not found on PATH")
    } else {
        anyhow::Error::new(err).context(format!("starting `{}`", display(command)))
    }
}

/// Whether this process runs with root's effective uid.
pub use icmp_guard_lab::gate::is_root;

#[cfg(test)]
mod spawn_tests {
    use super::*;

    #[test]
    fn a_missing_working_directory_is_not_called_a_missing_program() {
        let mut gone = Command::new("true");
        gone.current_dir("/nonexistent/icmp-guard-checkout");
        let spawn = gone.output().expect_err("no such directory");
        let err = spawn_error(&gone, spawn);
        let text = err.to_string();
        assert!(text.contains("no longer exists"), "{text}");
        assert!(text.contains("/nonexistent/icmp-guard-checkout"), "{text}");

        let mut missing = Command::new("icmp-guard-no-such-program");
        let spawn = missing.output().expect_err("no such program");
        let err = spawn_error(&missing, spawn);
        assert_eq!(
            err.to_string(),
            "`icmp-guard-no-such-program` not found on PATH"
        );
    }
}
