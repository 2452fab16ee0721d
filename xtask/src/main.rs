//! `cargo xtask`: developer tasks for icmp-guard.
//!
//! `main` only parses and dispatches: each task is a module of [`tasks`], and what tasks
//! share is in [`util`] (tasks never import each other). Every task that builds or runs
//! anything first calls [`util::setup::run`], so a fresh machine needs nothing but rustup
//! and `cargo xtask <task>`.

mod tasks;
mod util;

use std::{ffi::OsString, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Developer tasks for icmp-guard",
    // The alias runs `cargo run --package xtask --`, so `cargo xtask` is what users type.
    bin_name = "cargo xtask"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Check and install what the build and tests need (nightly rust-src, bpf-linker, Debian packages)
    Setup,
    /// Run the workspace tests after setup; extra arguments go to `cargo test`
    Test {
        /// Passed to `cargo test` as they are, e.g. `cargo xtask test policy -- --nocapture`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Check formatting and run clippy on the host crates and on the eBPF crate
    Lint,
    /// Show icmp-guard filtering pings between two throwaway network namespaces (needs root);
    /// --plot also draws what happened as an SVG
    Demo(tasks::demo::Args),
    /// Measure per-packet cost as a ratio to an empty XDP program (needs root)
    Bench,
    /// Compare the XDP program with the reference model on random frames (needs root)
    Fuzz(tasks::fuzz::Args),
    /// Validate deploy/ offline: the Kubernetes manifests (kubernetes-validate --strict), the
    /// Ansible playbook, the alert rules and their tests, the Grafana dashboard's queries
    FleetCheck(tasks::fleet::Args),
    /// Boot Debian kernels under QEMU (and use the host's) to check that the XDP program
    /// loads, passes the verifier and gives the same verdicts on each (host kernel: root)
    Kernels {
        /// A Debian kernel series (5.10, 6.1, 6.12, ...) or `host`; repeat for several
        /// [default: 5.10 6.1 6.12 host]
        #[arg(long = "kernel", value_name = "VERSION")]
        kernel: Vec<String>,
        #[command(flatten)]
        options: tasks::kernels::Options,
    },
    /// Build the release artefacts into target/dist: a static tarball, a .deb, an .rpm
    /// and an OCI image, with SHA-256 sums; --check proves each by installing it (root)
    Dist(tasks::dist::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        // dist's own tools too, so that a fresh machine is set up for every task at once.
        Task::Setup => util::setup::run().and_then(|()| tasks::dist::setup()),
        Task::Test { args } => tasks::test::run(&args),
        Task::Lint => tasks::lint::run(),
        Task::Demo(args) => tasks::demo::run(&args),
        Task::Bench => tasks::bench::run(),
        Task::Fuzz(args) => tasks::fuzz::run(&args),
        Task::Kernels { kernel, options } => tasks::kernels::run(&kernel, &options),
        Task::FleetCheck(args) => tasks::fleet::run(&args),
        Task::Dist(args) => tasks::dist::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` keeps the context chain on one line, which reads better in CI logs
            // than anyhow's multi-line Debug output.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Task};

    fn test_args(argv: &[&str]) -> Vec<String> {
        let cli = Cli::try_parse_from(["xtask", "test"].iter().chain(argv)).expect("parses");
        match cli.task {
            Task::Test { args } => args
                .into_iter()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect(),
            _ => panic!("not the test task"),
        }
    }

    #[test]
    fn test_passes_arguments_through() {
        assert!(test_args(&[]).is_empty());
        assert_eq!(test_args(&["--release"]), ["--release"]);
        assert_eq!(
            test_args(&["policy", "--", "--nocapture"]),
            ["policy", "--", "--nocapture"]
        );
        assert_eq!(test_args(&["--", "--nocapture"]), ["--nocapture"]);
        assert_eq!(
            test_args(&["--", "--", "--nocapture"]),
            ["--", "--nocapture"]
        );
    }
}
