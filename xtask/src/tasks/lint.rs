//! `cargo xtask lint`: rustfmt and clippy, with warnings as errors.
//!
//! The eBPF crate gets its own clippy pass: it is `no_std`/`no_main` and only compiles for
//! the BPF target with nightly's `-Z build-std`, so `--workspace` has to leave it out.

use std::process::Command;

use anyhow::{Result, bail};

use crate::util::{process, setup};

pub fn run() -> Result<()> {
    setup::run()?;
    setup::ensure_nightly_component("clippy")?;
    ensure_default_toolchain_tools()?;

    let passes = [
        ("rustfmt", rustfmt()),
        ("clippy", clippy_host()),
        ("clippy (eBPF)", clippy_ebpf(false)),
        ("clippy (eBPF, trace build)", clippy_ebpf(true)),
    ];
    // Run every pass even after a failure, so one run shows all the problems.
    let mut failed = Vec::new();
    for (name, mut command) in passes {
        if let Err(err) = process::run(&mut command) {
            eprintln!("error: {err:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    println!("cargo xtask lint: clean");
    Ok(())
}

/// CI images sometimes ship a minimal profile without rustfmt or clippy.
fn ensure_default_toolchain_tools() -> Result<()> {
    let works = |tool: &str| {
        process::output(process::command("cargo").args([tool, "--version"]))
            .is_ok_and(|output| output.status.success())
    };
    if works("fmt") && works("clippy") {
        return Ok(());
    }
    println!("rustfmt or clippy is missing from the default toolchain; adding them");
    process::run(process::command("rustup").args(["component", "add", "rustfmt", "clippy"]))
}

fn rustfmt() -> Command {
    let mut cargo = process::command("cargo");
    cargo.args(["fmt", "--all", "--", "--check"]);
    cargo
}

fn clippy_host() -> Command {
    let mut cargo = process::command("cargo");
    cargo.args([
        "clippy",
        "--workspace",
        "--exclude",
        "icmp-guard-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    cargo
}

/// The eBPF crate, as the production build or (`trace`) as the trace build, whose code
/// sits behind the `trace` feature.
fn clippy_ebpf(trace: bool) -> Command {
    let target = if cfg!(target_endian = "big") {
        "bpfeb-unknown-none"
    } else {
        "bpfel-unknown-none"
    };
    let mut cargo = process::command("cargo");
    cargo.args([
        "+nightly",
        "clippy",
        "--package",
        "icmp-guard-ebpf",
        "--target",
        target,
        "-Z",
        "build-std=core",
    ]);
    if trace {
        cargo.args(["--features", "trace"]);
    }
    cargo.args(["--", "-D", "warnings"]);
    // aya-build compiles the crate with this cfg (naming the host the program will run on),
    // so lint the code that actually ships. With --target, rustflags reach only the BPF
    // crates, not build scripts. CARGO_ENCODED_RUSTFLAGS overrides any RUSTFLAGS meant for
    // the host.
    cargo.env(
        "CARGO_ENCODED_RUSTFLAGS",
        format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
    );
    // `cargo run` of a stable xtask may have left a stable rustc here; `+nightly` would
    // then drive it with nightly-only flags. aya-build drops the same variables.
    cargo
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    cargo
}
