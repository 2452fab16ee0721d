//! `cargo xtask test`: the workspace tests, after setup, built static: the kernel matrix
//! then boots the same `prog` binary without building it again.

use std::ffi::OsString;

use anyhow::Result;
/// Set to `1` (CI does) to make root-only tests fail instead of skipping. Read by the tests;
/// we only pass it through by inheriting the environment.
use icmp_guard_lab::gate::REQUIRE_PRIVILEGED;

use crate::util::{cargo, process, setup};

pub fn run(extra_args: &[OsString]) -> Result<()> {
    setup::run()?;

    if !process::is_root() && std::env::var_os(REQUIRE_PRIVILEGED).is_none() {
        println!(
            "note: not running as root, so tests that load XDP programs will be skipped \
             (set {REQUIRE_PRIVILEGED}=1 to make them fail instead)"
        );
    }

    // The eBPF crate only builds for the BPF target; icmp-guard's build script builds it.
    let mut test = process::command("cargo");
    cargo::static_test_build(test.arg("test")).args(extra_args);
    match process::run(&mut test) {
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
