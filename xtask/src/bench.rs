//! `cargo xtask bench`: per-packet cost of the XDP program as a ratio to an empty XDP
//! program measured in the same run (icmp-guard/examples/bench.rs).

use anyhow::{Result, bail};

use crate::{process, setup};

pub fn run() -> Result<()> {
    if !process::is_root() {
        bail!("run with sudo: the benchmark loads XDP programs into the kernel");
    }
    setup::run()?;
    process::run(process::command("cargo").args([
        "run",
        "--release",
        "--package",
        "icmp-guard",
        "--example",
        "bench",
    ]))
}
