//! `cargo xtask test`: the workspace tests, after setup.

use std::ffi::OsString;

use anyhow::Result;

use crate::util::{process, setup};

/// Set to `1` (CI does) to make root-only tests fail instead of skipping. Read by the tests;
/// we only pass it through by inheriting the environment.
use icmp_guard_lab::gate::REQUIRE_PRIVILEGED;

pub fn run(extra_args: &[OsString]) -> Result<()> {
    setup::run()?;

    if !process::is_root() && std::env::var_os(REQUIRE_PRIVILEGED).is_none() {
        println!(
            "note: not running as root, so tests that load XDP programs will be skipped \
             (set {REQUIRE_PRIVILEGED}=1 to make them fail instead)"
        );
    }

    // The eBPF crate only builds for the BPF target; icmp-guard's build script builds it.
    let mut cargo = process::command("cargo");
    cargo
        .args(["test", "--workspace", "--exclude", "icmp-guard-ebpf"])
        .args(extra_args);
    match process::run(&mut cargo) {
        Ok(()) => {
            println!("cargo xtask test: all tests passed");
            Ok(())
        }
        Err(err) => {
            println!("cargo xtask test: FAILED");
            Err(err)
        }
    }
}
