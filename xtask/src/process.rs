//! Child processes, paths and privileges shared by all tasks.

use std::{
    env,
    ffi::{OsStr, OsString},
    io::ErrorKind,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
    sync::OnceLock,
};

use anyhow::{Context as _, Result, bail};

/// The workspace root, whatever directory `cargo xtask` was started from.
pub fn workspace_root() -> PathBuf {
    // Baked in at compile time: xtask always sits one level below the workspace root.
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.join(".."), Path::to_path_buf)
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, else `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// `PATH` for every child, with the cargo bin directory first.
///
/// bpf-linker is installed there, and rustc (several processes down, through aya-build)
/// finds it only through `PATH`. Putting it first also makes sure the bpf-linker we checked
/// or installed is the one that runs, not an older copy elsewhere on `PATH`.
pub fn child_path() -> &'static OsStr {
    static CHILD_PATH: OnceLock<OsString> = OnceLock::new();
    CHILD_PATH.get_or_init(|| {
        let inherited = env::var_os("PATH").unwrap_or_default();
        let Some(bin) = cargo_bin_dir() else {
            return inherited;
        };
        let rest = env::split_paths(&inherited).filter(|dir| *dir != bin);
        // join only fails on a directory containing ':', which a PATH entry cannot be.
        env::join_paths(std::iter::once(bin.clone()).chain(rest)).unwrap_or(inherited)
    })
}

/// Whether the user's own shell would find what we install into the cargo bin directory.
pub fn cargo_bin_on_user_path() -> bool {
    let Some(bin) = cargo_bin_dir() else {
        return true;
    };
    env::var_os("PATH").is_some_and(|path| env::split_paths(&path).any(|dir| dir == bin))
}

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
pub fn display(command: &Command) -> String {
    let envs = command.get_envs().filter_map(|(key, value)| {
        // PATH is set on every command; showing it would only add noise.
        let value = value.filter(|_| key != "PATH")?;
        Some(format!("{}={}", key.to_string_lossy(), quote(value)))
    });
    let program = std::iter::once(quote(command.get_program()));
    let args = command.get_args().map(quote);
    envs.chain(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+@,%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

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
        anyhow::anyhow!("`{program}` not found on PATH")
    } else {
        anyhow::Error::new(err).context(format!("starting `{}`", display(command)))
    }
}

/// Whether this process runs with root's effective uid.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
