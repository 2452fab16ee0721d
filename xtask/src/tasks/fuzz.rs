//! `cargo xtask fuzz [--count N]`: the differential test (icmp-guard/tests/prog/differential.rs)
//! in release mode on N random frames, each compared between the real XDP program and the
//! reference model under five policies. Prints how many frames were compared and how many
//! differences were found; fails on any difference that is not a known divergence.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};

use crate::util::{process, setup};

/// Frames to generate unless `--count` says otherwise.
pub const DEFAULT_COUNT: u64 = 1_000_000;

#[derive(clap::Args)]
pub struct Args {
    /// Random frames to generate (each is run under every policy of the test)
    #[arg(long, default_value_t = DEFAULT_COUNT)]
    count: u64,
}

pub fn run(args: &Args) -> Result<()> {
    if !process::is_root() {
        bail!("run with sudo: the differential test loads the XDP program into the kernel");
    }
    setup::run()?;
    // A new seed each run explores new frames; ICMP_GUARD_FUZZ_SEED replays a run.
    let seed = std::env::var("ICMP_GUARD_FUZZ_SEED").unwrap_or_else(|_| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        format!("{now:#x}")
    });
    println!(
        "cargo xtask fuzz: {} frames, seed {seed} (ICMP_GUARD_FUZZ_SEED={seed} replays it)",
        args.count
    );
    let mut cargo = process::command("cargo");
    cargo
        .args(["test", "--release", "--package", "icmp-guard"])
        .args(["--test", "prog", "--", "--exact", "--nocapture"])
        .arg("differential::xdp_program_agrees_with_the_model_on_random_frames")
        .env("ICMP_GUARD_FUZZ_CASES", args.count.to_string())
        .env("ICMP_GUARD_FUZZ_SEED", &seed)
        .env("ICMP_GUARD_REQUIRE_PRIVILEGED", "1");
    process::run(&mut cargo)
}
