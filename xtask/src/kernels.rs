//! `cargo xtask kernels`: the kernel matrix. Proves that the XDP program loads, passes the
//! verifier and gives the same verdicts on several kernels.
//!
//! For each Debian kernel series asked for (default: 5.10, 6.1, 6.12) the newest cloud
//! kernel of that series is resolved through the `linux-image-cloud-amd64` meta-package of
//! the Debian suites, downloaded once and cached ([`fetch`]). A static build of
//! `icmp-guard/examples/kernel_probe.rs` goes into a busybox initramfs ([`initramfs`]), each
//! kernel boots it under QEMU with TCG ([`boot`]), and the probe prints one result line on
//! the serial console: verifier instructions processed, verdict cases passed. `host` runs
//! the same probe on the running kernel, without QEMU.
//!
//! `--negative-control` makes the probe load a hand-assembled program with a missing
//! bounds check instead. Every kernel must reject it; the command then reports the
//! verifier's reason for each kernel and exits non-zero, which is what shows that a
//! rejected program fails the matrix.

mod boot;
mod fetch;
mod initramfs;
mod tools;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{bench::stats::thousands, process, setup};

/// The kernels tested when none is named: the oldest Debian cloud kernel we support
/// (bullseye), the two Debian stable series after it, and the machine's own kernel.
const DEFAULT_KERNELS: [&str; 4] = ["5.10", "6.1", "6.12", HOST];
const HOST: &str = "host";
/// The payload is built for this target, statically linked (`+crt-static`).
const PROBE_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Prefix of the probe's result line.
const RESULT_MARKER: &str = "KERNEL-PROBE-RESULT ";
/// Lines of console or verifier log shown for a failing kernel.
const TAIL_LINES: usize = 25;

/// Options of `cargo xtask kernels` besides the kernel list.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Load a deliberately broken program instead (a packet read without a bounds check):
    /// every kernel must reject it, and the command reports why and exits non-zero
    #[arg(long)]
    pub negative_control: bool,
    /// Refresh the Debian package lists even when the cached ones are less than a day old
    #[arg(long, conflicts_with = "offline")]
    pub refresh: bool,
    /// Use only cached kernels and package lists, never the network
    #[arg(long)]
    pub offline: bool,
    /// Seconds one kernel may take (boot, load, cases, power-off) before it counts as hung
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
    /// Show every verdict case and each guest's whole console
    #[arg(long, short)]
    pub verbose: bool,
}

/// One kernel of the matrix, ready to run.
enum Subject {
    Host,
    Guest(fetch::Kernel),
}

/// What one kernel did.
struct Outcome {
    /// The series asked for ("5.10", "host").
    asked: String,
    /// The kernel release as known before the run, for when the probe says nothing.
    release: String,
    /// Where the kernel came from, for the table.
    origin: String,
    wall: Duration,
    /// The probe's result line, parsed; `None` when it never printed one.
    result: Option<Value>,
    /// Why there is no result, with the end of the console.
    missing: Option<String>,
}

pub fn run(kernels: &[String], options: &Options) -> Result<()> {
    if !cfg!(target_arch = "x86_64") {
        bail!("the kernel matrix boots Debian amd64 kernels and runs only on x86_64 hosts");
    }
    let asked: Vec<String> = if kernels.is_empty() {
        DEFAULT_KERNELS.iter().map(|k| (*k).to_owned()).collect()
    } else {
        kernels.to_vec()
    };
    for kernel in &asked {
        if kernel != HOST && !fetch::is_series(kernel) {
            bail!(
                "--kernel {kernel}: name a Debian kernel series as MAJOR.MINOR (5.10, 6.1, 6.12, ...) \
                 or `host`"
            );
        }
    }
    let guests = asked.iter().any(|kernel| kernel != HOST);
    if asked.iter().any(|kernel| kernel == HOST) && !process::is_root() {
        bail!(
            "run with sudo: the `host` kernel loads the XDP program into this machine's kernel \
             (or pass only guest kernels, e.g. --kernel 5.10 --kernel 6.1)"
        );
    }

    setup::run()?;
    let started = Instant::now();
    let (qemu, busybox) = if guests {
        (
            Some(tools::ensure_qemu()?),
            Some(tools::ensure_static_busybox()?),
        )
    } else {
        (None, None)
    };
    let probe = build_probe()?;

    let mut subjects = Vec::new();
    if guests {
        let mut fetcher = fetch::Fetcher::new(options.offline, options.refresh)?;
        for kernel in &asked {
            if kernel == HOST {
                subjects.push((kernel.clone(), Subject::Host));
            } else {
                let resolved = fetcher.kernel(kernel)?;
                subjects.push((kernel.clone(), Subject::Guest(resolved)));
            }
        }
    } else {
        subjects.push((HOST.to_owned(), Subject::Host));
    }
    let prepared = started.elapsed();

    let work_dir = probe_target_dir();
    let initrd = match busybox {
        Some(busybox) => {
            let path = work_dir.join("initramfs.cpio");
            initramfs::write(&path, &busybox, &probe)?;
            Some(path)
        }
        None => None,
    };

    let mut probe_args = Vec::new();
    if options.negative_control {
        probe_args.push("--negative-control");
    }
    if options.verbose {
        probe_args.push("--verbose");
    }
    let timeout = Duration::from_secs(options.timeout);
    let mut outcomes = Vec::new();
    for (asked, subject) in &subjects {
        let log = work_dir.join(format!("console-{asked}.log"));
        let (release, origin, run) = match subject {
            Subject::Host => {
                println!("kernels: running the probe on the host kernel");
                let run = boot::host(&probe, &probe_args, timeout, &log, options.verbose)?;
                let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map_or_else(|_| "?".to_owned(), |release| release.trim().to_owned());
                (release, "this machine".to_owned(), run)
            }
            Subject::Guest(kernel) => {
                println!(
                    "kernels: booting {} {} under QEMU ({})",
                    kernel.package,
                    kernel.version,
                    boot::accelerator()
                );
                let run = boot::guest(
                    qemu.as_deref().context("QEMU was not checked")?,
                    &kernel.vmlinuz,
                    initrd.as_deref().context("no initramfs was built")?,
                    &probe_args,
                    timeout,
                    &log,
                    options.verbose,
                )?;
                let release = kernel
                    .package
                    .strip_prefix("linux-image-")
                    .unwrap_or(&kernel.package)
                    .to_owned();
                (release, format!("{} {}", kernel.suite, kernel.version), run)
            }
        };
        let outcome = outcome(asked, release, origin, &run, &log);
        print_detail(&outcome, options.negative_control);
        outcomes.push(outcome);
    }

    println!();
    if options.negative_control {
        print_negative_table(&outcomes);
    } else {
        print_table(&outcomes);
    }
    println!(
        "({} kernels in {:.1} s, of which {:.1} s building and fetching; consoles in {})",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        prepared.as_secs_f64(),
        work_dir.display()
    );
    verdict(&outcomes, options.negative_control)
}

/// `target/kernel-probe`: the probe's own target directory, so the static build neither
/// invalidates nor waits for the workspace's usual one.
fn probe_target_dir() -> PathBuf {
    process::workspace_root()
        .join("target")
        .join("kernel-probe")
}

/// Builds the probe as a static binary and returns its path.
///
/// `--target` keeps RUSTFLAGS away from build scripts and proc macros. The eBPF object
/// that icmp-guard's build.rs builds through aya-build is not affected either: aya-build
/// gives its nested cargo its own CARGO_ENCODED_RUSTFLAGS, which cargo prefers to
/// RUSTFLAGS (the embedded object is byte-identical to the one of a plain build).
fn build_probe() -> Result<PathBuf> {
    let target_dir = probe_target_dir();
    let mut cargo = process::command("cargo");
    cargo
        .args([
            "build",
            "--release",
            "--package",
            "icmp-guard",
            "--example",
            "kernel_probe",
            "--target",
            PROBE_TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        // A stub object would make every kernel "fail" for the wrong reason.
        .env_remove("ICMP_GUARD_STUB_EBPF");
    process::run(&mut cargo)?;
    let binary = target_dir
        .join(PROBE_TARGET)
        .join("release")
        .join("examples")
        .join("kernel_probe");
    if !tools::is_static_elf(&binary)? {
        bail!(
            "{} is dynamically linked; the guests have no C library (was +crt-static dropped?)",
            binary.display()
        );
    }
    Ok(binary)
}

fn outcome(asked: &str, release: String, origin: String, run: &boot::Run, log: &Path) -> Outcome {
    let result = run
        .output
        .lines()
        .filter_map(|line| line.split_once(RESULT_MARKER).map(|(_, json)| json.trim()))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .next_back();
    let missing = if result.is_some() {
        None
    } else {
        let probe_exit = run.output.lines().find_map(|line| {
            line.split_once(initramfs::EXIT_MARKER)
                .map(|(_, status)| status.trim().to_owned())
        });
        let why = match (&run.end, probe_exit) {
            (boot::End::TimedOut, _) => format!("no result within {} s", run.wall.as_secs()),
            (_, Some(status)) => {
                format!("the probe exited with status {status} without a result line")
            }
            (boot::End::Exited(status), None) => {
                format!("no result line (the run ended: {status})")
            }
        };
        let mut text = format!("{why}; console ({}):", log.display());
        for line in tail_lines(&run.output, TAIL_LINES) {
            text.push_str("\n    ");
            text.push_str(&line);
        }
        if !run.errors.trim().is_empty() {
            text.push_str("\n  stderr:");
            for line in tail_lines(&run.errors, 10) {
                text.push_str("\n    ");
                text.push_str(&line);
            }
        }
        Some(text)
    };
    Outcome {
        asked: asked.to_owned(),
        release,
        origin,
        wall: run.wall,
        result,
        missing,
    }
}

fn tail_lines(text: &str, count: usize) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|line| (*line).to_owned())
        .collect()
}

fn ok(outcome: &Outcome) -> bool {
    outcome
        .result
        .as_ref()
        .is_some_and(|result| result["ok"] == Value::Bool(true))
}

fn rejected(outcome: &Outcome) -> bool {
    outcome
        .result
        .as_ref()
        .is_some_and(|result| result["negative_control"] == "rejected")
}

fn kernel_name(outcome: &Outcome) -> String {
    let release = outcome
        .result
        .as_ref()
        .and_then(|result| result["kernel"].as_str())
        .unwrap_or(&outcome.release);
    if outcome.asked == HOST {
        format!("{release} (host)")
    } else {
        release.to_owned()
    }
}

/// The verifier's own words: the lines of the log after the instruction dump, without the
/// statistics.
fn verifier_reason(result: &Value) -> String {
    let lines: Vec<&str> = result["verifier_log_tail"]
        .as_array()
        .map(|lines| lines.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let reason: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| {
            !line.starts_with("processed ")
                && !line.starts_with("verification time")
                && !line.starts_with("stack depth")
                && !line.starts_with("from ")
                && !line.starts_with(';')
                && !line.starts_with(|c: char| c.is_ascii_digit())
        })
        .collect();
    if reason.is_empty() {
        result["error"]
            .as_str()
            .unwrap_or("no reason given")
            .to_owned()
    } else {
        reason.join("; ")
    }
}

/// Prints what went wrong on one kernel right after it ran.
fn print_detail(outcome: &Outcome, negative_control: bool) {
    let name = kernel_name(outcome);
    if let Some(missing) = &outcome.missing {
        println!("kernels: {name} FAILED: {missing}");
        return;
    }
    let Some(result) = &outcome.result else {
        return;
    };
    if negative_control {
        if rejected(outcome) {
            println!(
                "kernels: {name} rejected the negative control: {}",
                verifier_reason(result)
            );
        } else {
            println!("kernels: {name} did NOT reject the negative control");
        }
        return;
    }
    if ok(outcome) {
        println!(
            "kernels: {name} ok: {}/{} cases, {} verifier instructions, {:.1} s",
            result["passed"],
            result["total"],
            insns(result),
            outcome.wall.as_secs_f64()
        );
        return;
    }
    println!(
        "kernels: {name} FAILED: {}",
        result["error"].as_str().unwrap_or("some cases failed")
    );
    if let Some(log) = result["verifier_log_tail"].as_array() {
        println!("  last lines of the verifier log:");
        for line in log.iter().filter_map(Value::as_str) {
            println!("    {line}");
        }
    }
    if let Some(failures) = result["failures"].as_array() {
        for failure in failures.iter().filter_map(Value::as_str) {
            println!("  case failed: {failure}");
        }
    }
}

/// "83,454 (8% of 1M)" from the verifier statistics, or what the kernel reported.
fn insns(result: &Value) -> String {
    let verifier = &result["verifier"];
    let processed = verifier["processed_insns"]
        .as_u64()
        .or_else(|| verifier["verified_insns"].as_u64());
    let Some(processed) = processed else {
        return "?".to_owned();
    };
    let limit = verifier["stats"]
        .as_str()
        .and_then(|line| line.split("(limit ").nth(1))
        .and_then(|rest| rest.split(')').next())
        .and_then(|limit| limit.parse::<u64>().ok());
    match limit {
        Some(limit) if limit > 0 => {
            format!(
                "{} ({}% of limit)",
                thousands(processed),
                processed * 100 / limit
            )
        }
        _ => thousands(processed),
    }
}

/// EACCES for 13, as the verifier's callers see it.
fn errno_name(errno: &Value) -> String {
    match errno.as_i64() {
        Some(1) => "EPERM".to_owned(),
        Some(7) => "E2BIG".to_owned(),
        Some(13) => "EACCES".to_owned(),
        Some(22) => "EINVAL".to_owned(),
        Some(28) => "ENOSPC".to_owned(),
        Some(other) => format!("errno {other}"),
        None => "?".to_owned(),
    }
}

fn print_rows(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    line(widths.iter().map(|width| "-".repeat(*width)).collect());
    for row in rows {
        line(row.clone());
    }
}

fn print_table(outcomes: &[Outcome]) {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|outcome| {
            let result = outcome.result.as_ref();
            let cases = result.map_or_else(
                || "-".to_owned(),
                |result| match (result["passed"].as_u64(), result["total"].as_u64()) {
                    (Some(passed), Some(total)) => format!("{passed}/{total}"),
                    _ => "-".to_owned(),
                },
            );
            let status = if ok(outcome) {
                "ok".to_owned()
            } else if outcome.missing.is_some() {
                "FAILED (no result)".to_owned()
            } else if result.is_some_and(|result| result["verifier_log_tail"].is_array()) {
                "FAILED (verifier)".to_owned()
            } else {
                "FAILED".to_owned()
            };
            let load = result
                .and_then(|result| result["load_ms"].as_u64())
                .map_or_else(
                    || "-".to_owned(),
                    |ms| format!("{:.1} s", ms as f64 / 1000.0),
                );
            vec![
                kernel_name(outcome),
                outcome.origin.clone(),
                result.map_or_else(|| "-".to_owned(), insns),
                cases,
                load,
                format!("{:.1} s", outcome.wall.as_secs_f64()),
                status,
            ]
        })
        .collect();
    print_rows(
        &[
            "kernel",
            "from",
            "verifier insns processed",
            "cases",
            "load",
            "time",
            "result",
        ],
        &rows,
    );
}

fn print_negative_table(outcomes: &[Outcome]) {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|outcome| {
            let verdict = match &outcome.result {
                None => "no result".to_owned(),
                Some(result) if rejected(outcome) => format!(
                    "rejected ({}): {}",
                    errno_name(&result["errno"]),
                    verifier_reason(result)
                ),
                Some(_) => "ACCEPTED (the harness cannot fail!)".to_owned(),
            };
            vec![
                kernel_name(outcome),
                outcome.origin.clone(),
                format!("{:.1} s", outcome.wall.as_secs_f64()),
                verdict,
            ]
        })
        .collect();
    print_rows(&["kernel", "from", "time", "negative control"], &rows);
}

fn verdict(outcomes: &[Outcome], negative_control: bool) -> Result<()> {
    if negative_control {
        let accepted: Vec<&str> = outcomes
            .iter()
            .filter(|outcome| !rejected(outcome))
            .map(|outcome| outcome.asked.as_str())
            .collect();
        if accepted.is_empty() {
            bail!(
                "negative control: all {} kernels rejected the broken program, as they must; \
                 a rejected program fails the matrix (this exit status is the proof)",
                outcomes.len()
            );
        }
        bail!(
            "negative control: the broken program was not rejected on {}: the harness \
             cannot be trusted there",
            accepted.join(", ")
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|outcome| !ok(outcome))
        .map(|outcome| outcome.asked.as_str())
        .collect();
    if failed.is_empty() {
        println!(
            "kernels: icmp-guard loads and gives the same verdicts on all {} kernels",
            outcomes.len()
        );
        Ok(())
    } else {
        bail!("icmp-guard failed on {} (details above)", failed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{insns, thousands, verifier_reason};

    #[test]
    fn the_verifier_reason_skips_the_instruction_dump_and_statistics() {
        let result = json!({
            "error": "verifier rejected the program: Permission denied (os error 13)",
            "verifier_log_tail": [
                "0: R1=ctx() R10=fp0",
                "0: (61) r2 = *(u32 *)(r1 +0)          ; R1=ctx() R2=pkt(r=0)",
                "1: (71) r0 = *(u8 *)(r2 +0)",
                "invalid access to packet, off=0 size=1, R2(id=0,off=0,r=0)",
                "R2 offset is outside of the packet",
                "processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0",
            ],
        });
        assert_eq!(
            verifier_reason(&result),
            "invalid access to packet, off=0 size=1, R2(id=0,off=0,r=0); \
             R2 offset is outside of the packet"
        );
        assert_eq!(
            verifier_reason(&json!({"error": "loading failed: no BTF"})),
            "loading failed: no BTF"
        );
    }

    #[test]
    fn instruction_counts_show_their_share_of_the_limit() {
        let result = json!({"verifier": {
            "processed_insns": 83454,
            "stats": "processed 83454 insns (limit 1000000) max_states_per_insn 25",
        }});
        assert_eq!(insns(&result), "83,454 (8% of limit)");
        assert_eq!(
            insns(&json!({"verifier": {"verified_insns": 1234}})),
            "1,234"
        );
        assert_eq!(insns(&json!({})), "?");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(999), "999");
    }
}
