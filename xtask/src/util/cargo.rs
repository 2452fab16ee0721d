//! Where cargo and the workspace are: the workspace root, the target directory, the
//! cargo bin directory and the `PATH` every child gets.

use std::{
    env,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::process;

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

/// The cargo target directory, which `CARGO_TARGET_DIR` or a config file may have moved.
pub fn target_dir() -> Result<PathBuf> {
    let json = process::stdout_of(process::command("cargo").args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let metadata: Value = serde_json::from_str(&json).context("parsing `cargo metadata` output")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` reported no target_directory")
}

/// This machine's own target, named: with `--target`, RUSTFLAGS reach only what runs on the
/// target, never build scripts or proc macros, which the plain build's target directory
/// then shares.
pub fn host_target() -> String {
    format!("{}-unknown-linux-gnu", env::consts::ARCH)
}

/// Makes `cargo` (`cargo test ...`) build the workspace's tests and binaries static
/// (glibc's `+crt-static`). `cargo xtask test` runs them, and the kernel matrix boots the
/// very same `prog` test binary and `icmp-guard` binary in its guests, which have no C
/// library: one build for both.
pub fn static_test_build(cargo: &mut Command) -> &mut Command {
    cargo
        .args(["--workspace", "--exclude", "icmp-guard-ebpf", "--target"])
        .arg(host_target())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
}
