//! Brings the machine to the state the build and the tests need, installing only what is
//! missing, so that every other task can call [`run`] first at the cost of a few
//! milliseconds.

use std::io::Write as _;

use anyhow::{Context as _, Result, bail};

use super::{
    apt::{apt_get, installed_version},
    cargo,
    process::{self, command},
};

/// The bpf-linker release we build with. 0.11 and later link against a system LLVM 21 that
/// Debian 12 does not ship; 0.10.1 emits BTF names the kernel's verifier rejects.
pub const BPF_LINKER_VERSION: &str = "0.10.4";

/// Debian packages the tests and the demo run, each with a program it provides, for
/// systems without dpkg.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("iputils-ping", "ping"),
    ("bpftool", "bpftool"),
    ("hping3", "hping3"),
    ("tcpdump", "tcpdump"),
    ("nftables", "nft"),
    ("procps", "sysctl"),
    ("util-linux", "nsenter"),
    ("iputils-tracepath", "tracepath"),
    // fping -g, the ping sweep of the reconnaissance test and demo.
    ("fping", "fping"),
    ("ndisc6", "ndisc6"),
    ("prometheus", "promtool"),
    // trafgen, the flood generator of `cargo xtask bench`.
    ("netsniff-ng", "trafgen"),
    // xdp-filter and xdp-loader, the other libxdp programs of the `attach --multiprog`
    // tests; with them libxdp1, whose xdp-dispatcher.o `--multiprog` loads.
    ("xdp-tools", "xdp-filter"),
];

/// Checks everything and installs what is missing; see the module docs.
pub fn run() -> Result<()> {
    ensure_nightly()?;
    ensure_nightly_component("rust-src")?;
    ensure_bpf_linker()?;
    ensure_debian_packages(DEBIAN_PACKAGES)?;
    Ok(())
}

/// One `checking ...` line. The verdict ends the line; a step dropped without a verdict
/// (an early `?` return) ends it with "failed" so the error that follows starts on its own
/// line.
pub struct Step {
    finished: bool,
}

impl Step {
    pub fn start(what: &str) -> Self {
        print!("checking {what}... ");
        // Without a flush the line would only appear together with its verdict, which for
        // a slow check looks like a hang.
        let _ = std::io::stdout().flush();
        Self { finished: false }
    }

    pub fn finish(mut self, verdict: &str) {
        println!("{verdict}");
        self.finished = true;
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.finished {
            println!("failed");
        }
    }
}

fn ensure_nightly() -> Result<()> {
    let step = Step::start("nightly toolchain");
    let toolchains = process::stdout_of(command("rustup").args(["toolchain", "list"]))
        .context("icmp-guard needs rustup (https://rustup.rs) to build the eBPF program")?;
    if !toolchains.lines().any(is_floating_nightly) {
        step.finish("missing");
        // Installing a nightly is the user's call: it is large, and they may want a
        // specific date that matches their bpf-linker.
        bail!(
            "the eBPF program is built with the `nightly` toolchain, which is not installed; \
             install it with `rustup toolchain install nightly --component rust-src`"
        );
    }
    step.finish("ok");
    Ok(())
}

/// Whether a `rustup toolchain list` line is the toolchain `+nightly` selects, as opposed
/// to a dated one such as `nightly-2025-01-01-x86_64-unknown-linux-gnu`.
fn is_floating_nightly(line: &str) -> bool {
    let name = line.split_whitespace().next().unwrap_or_default();
    name == "nightly"
        || name
            .strip_prefix("nightly-")
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// Makes sure the nightly toolchain has `component` (rust-src for `-Z build-std`, clippy
/// for linting the eBPF crate).
pub fn ensure_nightly_component(component: &str) -> Result<()> {
    let step = Step::start(&format!("{component} on the nightly toolchain"));
    let installed = process::stdout_of(command("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    // Target-specific components carry the host triple, e.g. `clippy-x86_64-unknown-linux-gnu`.
    let prefix = format!("{component}-");
    if installed
        .lines()
        .any(|line| line == component || line.starts_with(&prefix))
    {
        step.finish("ok");
        return Ok(());
    }
    step.finish("missing");
    process::run(command("rustup").args(["component", "add", component, "--toolchain", "nightly"]))
}

fn ensure_bpf_linker() -> Result<()> {
    let step = Step::start(&format!("bpf-linker {BPF_LINKER_VERSION}"));
    let force = match bpf_linker_version()? {
        Some(version) if version == BPF_LINKER_VERSION => {
            let location = process::find_program("bpf-linker")
                .map(|path| format!(" ({})", path.display()))
                .unwrap_or_default();
            step.finish(&format!("ok{location}"));
            note_if_cargo_bin_not_on_path();
            return Ok(());
        }
        Some(version) => {
            step.finish(&format!("found {version}, replacing it"));
            true
        }
        None => {
            step.finish("not found");
            false
        }
    };

    println!("installing bpf-linker {BPF_LINKER_VERSION} (takes ~3 minutes)...");
    let mut install = command("cargo");
    install.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
    ]);
    if force {
        install.arg("--force");
    }
    process::run(&mut install)?;

    // Verify through PATH, the way rustc will look for it.
    match bpf_linker_version()? {
        Some(version) if version == BPF_LINKER_VERSION => {
            println!("installing bpf-linker {BPF_LINKER_VERSION}... ok");
            note_if_cargo_bin_not_on_path();
            Ok(())
        }
        found => bail!(
            "installed bpf-linker {BPF_LINKER_VERSION}, but `bpf-linker --version` now reports {}",
            found.as_deref().unwrap_or("nothing")
        ),
    }
}

/// The version `bpf-linker --version` reports, `None` if it is not on `PATH`.
fn bpf_linker_version() -> Result<Option<String>> {
    if process::find_program("bpf-linker").is_none() {
        return Ok(None);
    }
    let output = process::output(command("bpf-linker").arg("--version"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Prints `bpf-linker 0.10.4`. A broken binary counts as a wrong version, so it gets
    // replaced rather than failing the build later with a less obvious error.
    let version = stdout
        .split_whitespace()
        .nth(1)
        .filter(|_| output.status.success())
        .unwrap_or("an unusable binary");
    Ok(Some(version.to_owned()))
}

fn note_if_cargo_bin_not_on_path() {
    if !cargo::cargo_bin_on_user_path()
        && let Some(bin) = cargo::cargo_bin_dir()
    {
        println!(
            "note: {} is not on your PATH; xtask adds it for the commands it runs, \
             but add it yourself to run cargo build directly",
            bin.display()
        );
    }
}

/// Installs the Debian packages of `packages` ((package, a program it provides)) that are
/// missing.
pub fn ensure_debian_packages(packages: &[(&str, &str)]) -> Result<()> {
    let names = packages.iter().map(|(package, _)| *package);
    let step = Step::start(&format!(
        "Debian packages ({})",
        names.clone().collect::<Vec<_>>().join(" ")
    ));

    if process::find_program("dpkg-query").is_none() {
        // Not Debian: the best we can do is look for the programs and name the packages.
        let missing: Vec<_> = packages
            .iter()
            .filter(|(_, program)| process::find_program(program).is_none())
            .map(|(package, program)| format!("{program} (Debian: {package})"))
            .collect();
        if missing.is_empty() {
            step.finish("ok (no dpkg; found the programs)");
            return Ok(());
        }
        step.finish("missing");
        bail!(
            "no dpkg here, so install these with your package manager: {}",
            missing.join(", ")
        );
    }

    let missing = missing_packages(names)?;
    if missing.is_empty() {
        step.finish("ok");
        return Ok(());
    }
    step.finish(&format!("missing {}", missing.join(" ")));

    let install_args = ["install", "-y", "--no-install-recommends"];
    if !process::is_root() {
        bail!(
            "missing Debian packages; install them with:\n  \
             sudo apt-get update && sudo apt-get {} {}",
            install_args.join(" "),
            missing.join(" ")
        );
    }
    process::run(apt_get(&[]).arg("update"))?;
    process::run(apt_get(&[]).args(install_args).args(&missing))?;

    let still_missing = missing_packages(missing.iter().map(String::as_str))?;
    if !still_missing.is_empty() {
        bail!(
            "apt-get finished, but these packages are still not installed: {}",
            still_missing.join(" ")
        );
    }
    println!("installing Debian packages... ok");
    Ok(())
}

pub fn missing_packages<'a>(packages: impl Iterator<Item = &'a str>) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for package in packages {
        if installed_version(package)?.is_none() {
            missing.push(package.to_owned());
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::is_floating_nightly;

    #[test]
    fn recognises_the_floating_nightly_only() {
        assert!(is_floating_nightly("nightly-x86_64-unknown-linux-gnu"));
        assert!(is_floating_nightly(
            "nightly-x86_64-unknown-linux-gnu (override)"
        ));
        assert!(is_floating_nightly("nightly"));
        assert!(!is_floating_nightly(
            "nightly-2025-01-01-x86_64-unknown-linux-gnu"
        ));
        assert!(!is_floating_nightly(
            "stable-x86_64-unknown-linux-gnu (active, default)"
        ));
        assert!(!is_floating_nightly(""));
    }
}
