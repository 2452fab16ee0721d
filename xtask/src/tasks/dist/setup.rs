//! What `cargo xtask dist` needs beyond the build's own set-up: the musl target, the two
//! packagers from crates.io, and the Debian tools that build the image and prove the
//! artefacts. One `checking ...` line per step, as `cargo xtask setup` prints; a second run
//! only asks rustup, two binaries and dpkg.

use anyhow::{Result, bail};

use super::TARGET;
use crate::util::{
    process::{self, command},
    setup::{self, Step},
};

/// (crate, version): cargo-deb and cargo-generate-rpm, installed with `--locked`.
const CARGO_TOOLS: &[(&str, &str)] = &[("cargo-deb", "3.8.0"), ("cargo-generate-rpm", "0.21.1")];

/// Debian packages of the dist tools, each with a program it provides.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    // The container image (buildah), its proof (skopeo, umoci).
    ("buildah", "buildah"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    // The Debian 12 and Debian 11 roots the packages are installed into.
    ("debootstrap", "debootstrap"),
    ("lintian", "lintian"),
    // `rpm -qlp`, and installing the .rpm into a root.
    ("rpm", "rpm"),
    // `systemd-analyze security --offline=yes` of the unit, and systemd-nspawn, which
    // boots a Debian root with systemd to run the unit for real.
    ("systemd", "systemd-analyze"),
    ("systemd-container", "systemd-nspawn"),
    // Syntax checks of the completion scripts.
    ("zsh", "zsh"),
    ("fish", "fish"),
];

/// Checks everything `dist` needs and installs what is missing.
pub fn run() -> Result<()> {
    ensure_target()?;
    for (name, version) in CARGO_TOOLS {
        ensure_cargo_tool(name, version)?;
    }
    setup::ensure_debian_packages(DEBIAN_PACKAGES)
}

fn ensure_target() -> Result<()> {
    let step = Step::start(&format!("rust target {TARGET}"));
    let installed = process::stdout_of(command("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == TARGET) {
        step.finish("ok");
        return Ok(());
    }
    step.finish("missing");
    process::run(command("rustup").args(["target", "add", TARGET]))
}

fn ensure_cargo_tool(name: &str, version: &str) -> Result<()> {
    let step = Step::start(&format!("{name} {version}"));
    // Both print `<name> <version>`.
    let found = process::find_program(name)
        .and_then(|_| process::output(command(name).arg("--version")).ok())
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    let wanted = format!("{name} {version}");
    let force = match found {
        Some(line) if line == wanted => {
            step.finish("ok");
            return Ok(());
        }
        Some(line) => {
            step.finish(&format!("found {line:?}, replacing it"));
            true
        }
        None => {
            step.finish("not found");
            false
        }
    };
    println!("installing {name} {version} (takes a few minutes)...");
    let mut install = command("cargo");
    install.args(["install", &format!("{name}@{version}"), "--locked"]);
    if force {
        install.arg("--force");
    }
    process::run(&mut install)?;
    let output = process::output(command(name).arg("--version"))?;
    let now = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if now != wanted {
        bail!("installed {name} {version}, but `{name} --version` now says {now:?}");
    }
    println!("installing {name} {version}... ok");
    Ok(())
}
