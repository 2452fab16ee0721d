//! `cargo xtask kernels`: the kernel matrix. Runs the real `prog` test suite — every test
//! that runs frames through the XDP program, as `cargo test` runs them — on several
//! kernels, and the real `icmp-guard` binary on each.
//!
//! For each Debian kernel series asked for (default: 5.10, 6.1, 6.12) the newest cloud
//! kernel of that series is resolved through the `linux-image-cloud-amd64` meta-package of
//! the Debian suites, downloaded once and cached ([`fetch`]). The `prog` test binary and
//! the `icmp-guard` binary, both built static, go into a busybox initramfs with the
//! [`initramfs::PAYLOAD`] script; each kernel boots it under QEMU with TCG ([`boot`]).
//! `host` runs the same payload on the running kernel, in a network namespace of its own.
//!
//! A kernel passes when libtest's summary line says `ok` and counts every test of the
//! binary (a test that cannot run on a kernel passes after printing why, and the table
//! lists those reasons), and when the static CLI attached to `lo` stopped the martian
//! pings from 127.0.0.1 and let them through again after `detach`. The verifier's
//! instruction count is printed per kernel, from the suite's verifier test.
//!
//! `--negative-control` makes the suite load a hand-assembled program with a missing
//! bounds check instead of icmp-guard. Every kernel must reject it, so every test that
//! loads the program must fail; the command then reports the verifier's reason for each
//! kernel and exits non-zero, which is what shows that a rejected program fails the matrix.
//!
//! The binaries are `cargo xtask test`'s own ([`cargo::static_test_build`]): built for
//! `x86_64-unknown-linux-gnu` with glibc's `+crt-static`, not for musl, which needs nothing
//! beyond the toolchain and Debian's libc6-dev, where the musl target would have to come
//! from rustup's download server, which a fresh machine here cannot reach. The debug
//! profile, like `cargo test`'s: in CI the matrix then builds nothing, which saves more
//! than optimised code would save the emulated guests.

mod boot;
mod fetch;
mod initramfs;
mod tools;

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use icmp_guard_lab::{gate::SKIP_MARKER, ping};
use serde_json::Value;

use crate::util::{cargo, numbers::thousands, process, setup};

/// The kernels tested when none is named: the oldest Debian cloud kernel we support
/// (bullseye), the two Debian stable series after it, and the machine's own kernel.
const DEFAULT_KERNELS: [&str; 4] = ["5.10", "6.1", "6.12", HOST];
const HOST: &str = "host";
/// Lines of console shown for a failing kernel.
const TAIL_LINES: usize = 25;
/// The suite's own lines (`harness.rs`, `verifier.rs`) and the payload's.
const VERIFIER_MARKER: &str = "VERIFIER-STATS ";
const NEGATIVE_MARKER: &str = "NEGATIVE-CONTROL ";
const KERNEL_MARKER: &str = "MATRIX-KERNEL ";
const PROG_EXIT_MARKER: &str = "MATRIX-PROG-EXIT ";
const CLI_PING_MARKER: &str = "MATRIX-CLI-PING ";
const CLI_ATTACH_MARKER: &str = "MATRIX-CLI-ATTACH-EXIT ";
const CLI_DETACH_MARKER: &str = "MATRIX-CLI-DETACH-EXIT ";
const MULTIPROG_ATTACH_MARKER: &str = "MATRIX-CLI-MULTIPROG-ATTACH-EXIT ";
const MULTIPROG_DETACH_MARKER: &str = "MATRIX-CLI-MULTIPROG-DETACH-EXIT ";
const MULTIPROG_STATS_MARKER: &str = "MATRIX-CLI-MULTIPROG-STATS ";
const MULTIPROG_TRACE_MARKER: &str = "MATRIX-CLI-MULTIPROG-TRACE-EXIT ";
const RUN_MULTIPROG_MARKER: &str = "MATRIX-CLI-RUN-MULTIPROG-EXIT ";
const RUN_ADOPT_MARKER: &str = "MATRIX-CLI-RUN-ADOPT-EXIT ";
/// What `trace` says of an interface where icmp-guard runs in a dispatcher.
const TRACE_REFUSED: &str = "whose programs trace cannot swap; nothing was changed";
/// What `attach --multiprog` says where the kernel refuses program extensions.
const EXTENSIONS_REFUSED: &str = "this kernel refuses program extensions";
const SHARED_XDP_FILTER_MARKER: &str = "MATRIX-SHARED-XDP-FILTER-EXIT ";
const SHARED_ATTACH_MARKER: &str = "MATRIX-SHARED-ATTACH-EXIT ";
const SHARED_DETACH_MARKER: &str = "MATRIX-SHARED-DETACH-EXIT ";
const SHARED_HITS_MARKER: &str = "MATRIX-SHARED-HITS ";
const SHARED_STAYS_MARKER: &str = "MATRIX-SHARED-XDP-FILTER-STAYS ";
/// What `attach --multiprog` says beside a program that runs without a dispatcher.
const NO_DISPATCHER: &str = "runs without a libxdp dispatcher";
/// Where libxdp's dispatcher object is on the host (xdp-tools pulls in libxdp1).
const DISPATCHER_OBJECTS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/bpf/xdp-dispatcher.o",
    "/usr/lib/bpf/xdp-dispatcher.o",
];

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
    /// Seconds one kernel may take (boot, the suite, the CLI, power-off) before it counts
    /// as hung
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    pub timeout: u64,
    /// Show each guest's whole console
    #[arg(long, short)]
    pub verbose: bool,
    /// Run only the prog tests whose names contain NAME (to chase one kernel's failure
    /// without the whole suite); the static CLI check still runs
    #[arg(long, value_name = "NAME", conflicts_with = "negative_control")]
    pub only: Option<String>,
}

/// One kernel of the matrix, ready to run.
enum Subject {
    Host,
    Guest(fetch::Kernel),
}

/// The two static binaries and the tests the suite holds.
struct Payload {
    prog: PathBuf,
    icmp_guard: PathBuf,
    /// Every test of `prog`, ignored ones included.
    tests: usize,
}

/// libtest's summary line: `test result: ok. 38 passed; 0 failed; 1 ignored; ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Summary {
    ok: bool,
    passed: usize,
    failed: usize,
    ignored: usize,
}

/// What the static CLI did on `lo`: pings answered before attach, while attached, after
/// detach (of two each), and the exit codes of attach and detach.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cli {
    answered: [Option<u64>; 3],
    attach: Option<i32>,
    detach: Option<i32>,
    /// `attach --multiprog`: pings answered while attached and after detach.
    multiprog_answered: [Option<u64>; 2],
    multiprog_attach: Option<i32>,
    multiprog_detach: Option<i32>,
    /// The ICMP packets counted in `stats --json`'s row for `lo` while attached, if that row
    /// is marked multiprog and running.
    multiprog_row: Option<u64>,
    /// `trace` on it refused, in its sentence, with a non-zero exit.
    multiprog_trace_refused: bool,
    /// `run --multiprog`: pings answered while it ran and after its SIGTERM, its exit code,
    /// and whether it said it detached on the way out.
    run_answered: [Option<u64>; 2],
    run_exit: Option<i32>,
    run_detached: bool,
    /// Its own output says the kernel refuses program extensions.
    run_refused: bool,
    /// The same after `attach --multiprog`: its exit code, whether it said it adopted the
    /// guard and left it, and pings answered after it stopped.
    adopt_exit: Option<i32>,
    adopt_said: bool,
    adopt_answered: Option<u64>,
    /// The attach refused because the kernel refuses program extensions.
    multiprog_refused: bool,
    /// Beside xdp-filter: its load's exit code, icmp-guard's attach and detach, pings
    /// answered while both ran and after the detach, xdp-filter's hit counter after each,
    /// and how many xdp-filter programs ran at the end.
    shared_xdp_filter: Option<i32>,
    shared_attach: Option<i32>,
    shared_detach: Option<i32>,
    shared_answered: [Option<u64>; 2],
    shared_hits: [Option<u64>; 2],
    shared_stays: Option<u64>,
    /// The attach refused because xdp-filter runs without a dispatcher.
    shared_refused: bool,
}

/// What `attach --multiprog` did on a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Multiprog {
    /// Made a dispatcher, dropped while in it, and left nothing after detach.
    Joined,
    /// Refused, because the kernel refuses program extensions, and changed nothing.
    Refused,
    Failed,
}

/// What one kernel did.
struct Outcome {
    /// The series asked for ("5.10", "host").
    asked: String,
    /// The kernel release, as the payload printed it or as known before the run.
    release: String,
    /// Where the kernel came from, for the table.
    origin: String,
    wall: Duration,
    summary: Option<Summary>,
    /// Tests that failed, by name.
    failed: Vec<String>,
    /// Tests that said why they did not run: (test, reason).
    skipped: Vec<(String, String)>,
    /// The verifier's statistics line for icmp-guard.
    verifier: Option<String>,
    /// What the negative control's loads said: `rejected: ...` or `ACCEPTED`.
    negative: Vec<String>,
    cli: Cli,
    /// Why the run says nothing, with the end of the console.
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
    if asked.iter().any(|kernel| kernel == HOST) && !process::is_root() {
        bail!(
            "run with sudo: the `host` kernel loads the XDP program into this machine's kernel \
             (or pass only guest kernels, e.g. --kernel 5.10 --kernel 6.1)"
        );
    }

    setup::run()?;
    let started = Instant::now();
    let guests = asked.iter().any(|kernel| kernel != HOST);
    let qemu = guests.then(tools::ensure_qemu).transpose()?;
    let busybox = tools::ensure_static_busybox()?;
    let payload = build_payload(options.only.as_deref())?;

    let mut subjects = Vec::new();
    let mut fetcher = None;
    for kernel in &asked {
        if kernel == HOST {
            subjects.push((kernel.clone(), Subject::Host));
            continue;
        }
        if fetcher.is_none() {
            fetcher = Some(fetch::Fetcher::new(options.offline, options.refresh)?);
        }
        let fetcher = fetcher.as_mut().context("the fetcher was just made")?;
        subjects.push((kernel.clone(), Subject::Guest(fetcher.kernel(kernel)?)));
    }
    let prepared = started.elapsed();

    let work_dir = cargo::target_dir()?.join("kernel-matrix");
    fs::create_dir_all(&work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    let initrd = work_dir.join("initramfs.cpio");
    if guests {
        let dispatcher = DISPATCHER_OBJECTS
            .iter()
            .map(Path::new)
            .find(|path| path.is_file())
            .context(
                "libxdp's xdp-dispatcher.o is missing: install xdp-tools (cargo xtask setup)",
            )?;
        initramfs::write(
            &initrd,
            &busybox,
            &payload.prog,
            &payload.icmp_guard,
            dispatcher,
            &tools::xdp_tools()?,
        )?;
    }
    let payload_script = work_dir.join("payload.sh");
    fs::write(&payload_script, initramfs::PAYLOAD)
        .with_context(|| format!("writing {}", payload_script.display()))?;

    let only = options.only.as_ref().map(|name| format!("only={name}"));
    let payload_args: Vec<&str> = if options.negative_control {
        vec!["negative-control"]
    } else {
        only.iter().map(String::as_str).collect()
    };
    let timeout = Duration::from_secs(options.timeout);
    let run_one = |asked: &str, subject: &Subject| -> Result<Outcome> {
        let log = work_dir.join(format!("console-{asked}.log"));
        let (release, origin, run) = match subject {
            Subject::Host => {
                println!("kernels: running the suite on the host kernel");
                let command = host_command(&busybox, &payload_script, &payload, &payload_args);
                let run = boot::host(command, timeout, &log, options.verbose)?;
                let release = fs::read_to_string("/proc/sys/kernel/osrelease")
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
                    &initrd,
                    &payload_args,
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
        print_detail(&outcome, payload.tests, options.negative_control);
        Ok(outcome)
    };
    let outcomes = run_all(&subjects, &run_one)?;

    println!();
    if options.negative_control {
        print_negative_table(&outcomes);
    } else {
        print_table(&outcomes, payload.tests);
    }
    println!(
        "({} kernels in {:.1} s, of which {:.1} s building and fetching; consoles in {})",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        prepared.as_secs_f64(),
        work_dir.display()
    );
    verdict(&outcomes, payload.tests, options.negative_control)
}

/// Runs every kernel, as many at once as there are CPUs (each guest has two, so that the
/// contention tests run there too; the CPUs are shared between the guests), the
/// slowest guests first and the host last, so that it shares the machine with at most the
/// last guest. Returns the outcomes in the order of `subjects`.
fn run_all(
    subjects: &[(String, Subject)],
    run_one: &(dyn Fn(&str, &Subject) -> Result<Outcome> + Sync),
) -> Result<Vec<Outcome>> {
    let jobs = std::thread::available_parallelism().map_or(1, usize::from);
    // Popped from the end: the newest guests (the slowest verifiers) first, the host last.
    let mut queue: Vec<(usize, &(String, Subject))> = subjects.iter().enumerate().collect();
    queue.sort_by_key(|(index, (_, subject))| (matches!(subject, Subject::Guest(_)), *index));
    let queue = std::sync::Mutex::new(queue);
    let mut outcomes: Vec<Option<Result<Outcome>>> = subjects.iter().map(|_| None).collect();
    let finished = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let next = queue.lock().map(|mut queue| queue.pop()).ok().flatten();
                        let Some((index, (asked, subject))) = next else {
                            return done;
                        };
                        done.push((index, run_one(asked, subject)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_default())
            .collect::<Vec<_>>()
    });
    for (index, outcome) in finished {
        outcomes[index] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.context("a kernel of the matrix did not run")?)
        .collect()
}

/// On the host: the payload under `unshare --net`, so that `lo` is a loopback of its own,
/// with a pin directory of its own.
fn host_command(busybox: &Path, script: &Path, payload: &Payload, args: &[&str]) -> Command {
    let mut command = process::command("unshare");
    command
        .arg("--net")
        .arg("--")
        .arg(busybox)
        .arg("sh")
        .arg(script)
        .args(args)
        .env("BB", busybox)
        .env("PROG", &payload.prog)
        .env("ICMP_GUARD", &payload.icmp_guard)
        .env(
            "TEST_THREADS",
            std::thread::available_parallelism()
                .map_or(1, usize::from)
                .to_string(),
        )
        .env(
            "ICMP_GUARD_PIN_DIR",
            format!("/sys/fs/bpf/icmp-guard-matrix-{}", std::process::id()),
        );
    command
}

/// Builds the `prog` test binary and the `icmp-guard` binary static, as `cargo xtask test`
/// does (after which this is no work at all), and counts the tests (those whose names
/// contain `only`, when given).
///
/// The eBPF object that icmp-guard's build.rs builds through aya-build is not affected by
/// the static RUSTFLAGS: aya-build gives its nested cargo its own CARGO_ENCODED_RUSTFLAGS,
/// which cargo prefers to RUSTFLAGS.
fn build_payload(only: Option<&str>) -> Result<Payload> {
    let mut cargo = process::command("cargo");
    cargo::static_test_build(cargo.args(["test", "--no-run"]))
        .args(["--message-format", "json-render-diagnostics"])
        // A stub object would make every kernel "fail" for the wrong reason.
        .env_remove("ICMP_GUARD_STUB_EBPF")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    println!("$ {}", process::display(&cargo));
    let output = cargo
        .output()
        .with_context(|| format!("running `{}`", process::display(&cargo)))?;
    if !output.status.success() {
        bail!("building the static test binary failed ({})", output.status);
    }
    let messages = String::from_utf8_lossy(&output.stdout);
    let executable = |kind: &str, name: &str| {
        messages
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|message| {
                message["reason"] == "compiler-artifact"
                    && message["target"]["name"] == name
                    && message["target"]["kind"][0] == kind
                    // The binary, not the unit tests of its crate.
                    && message["profile"]["test"] == (kind == "test")
            })
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .with_context(|| format!("cargo built no {kind} {name}"))
    };
    let prog = executable("test", "prog")?;
    let icmp_guard = executable("bin", "icmp-guard")?;
    for binary in [&prog, &icmp_guard] {
        if !tools::is_static_elf(binary)? {
            bail!(
                "{} is dynamically linked; the guests have no C library (was +crt-static dropped?)",
                binary.display()
            );
        }
    }
    let listed = process::stdout_of(
        process::command(&prog)
            .args(["--list", "--format", "terse", "--include-ignored"])
            .args(only),
    )?;
    let tests = listed
        .lines()
        .filter(|line| line.ends_with(": test"))
        .count();
    match only {
        Some(name) => println!("kernels: {tests} tests of the suite contain `{name}`"),
        None => println!("kernels: the suite has {tests} tests; every kernel must run them all"),
    }
    Ok(Payload {
        prog,
        icmp_guard,
        tests,
    })
}

/// The text after `marker` on each line that has it.
fn after<'a>(output: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    output
        .lines()
        .filter_map(move |line| line.split_once(marker).map(|(_, rest)| rest.trim()))
}

fn parse_summary(output: &str) -> Option<Summary> {
    let line = after(output, "test result: ").last()?;
    let count = |word: &str| {
        line.split(';')
            .find_map(|part| {
                let number = part.trim().strip_suffix(word)?.split_whitespace().last()?;
                number.parse().ok()
            })
            .unwrap_or(0)
    };
    Some(Summary {
        ok: line.starts_with("ok."),
        passed: count("passed"),
        failed: count("failed"),
        ignored: count("ignored"),
    })
}

fn parse_cli(output: &str) -> Cli {
    let mut cli = Cli::default();
    for rest in after(output, CLI_PING_MARKER) {
        let (phase, summary) = rest.split_once(' ').unwrap_or((rest, ""));
        let received = ping::summary(summary).map(|(_, received)| received);
        match phase {
            "before" => cli.answered[0] = received,
            "attached" => cli.answered[1] = received,
            "detached" => cli.answered[2] = received,
            "multiprog" => cli.multiprog_answered[0] = received,
            "multiprog-detached" => cli.multiprog_answered[1] = received,
            "run-multiprog" => cli.run_answered[0] = received,
            "run-multiprog-stopped" => cli.run_answered[1] = received,
            "run-adopted-stopped" => cli.adopt_answered = received,
            "shared" => cli.shared_answered[0] = received,
            "shared-detached" => cli.shared_answered[1] = received,
            _ => {}
        }
    }
    let code = |marker| {
        after(output, marker)
            .last()
            .and_then(|code| code.parse().ok())
    };
    cli.attach = code(CLI_ATTACH_MARKER);
    cli.detach = code(CLI_DETACH_MARKER);
    cli.multiprog_attach = code(MULTIPROG_ATTACH_MARKER);
    cli.multiprog_detach = code(MULTIPROG_DETACH_MARKER);
    // In the attach's own output: the text between the ping before it and its exit code
    // (`run --multiprog`, later, prints the same refusal).
    cli.multiprog_refused = output
        .split_once(MULTIPROG_ATTACH_MARKER)
        .map(|(before, _)| before.rsplit(CLI_PING_MARKER).next().unwrap_or(before))
        .is_some_and(|attach| attach.contains(EXTENSIONS_REFUSED));
    cli.run_exit = code(RUN_MULTIPROG_MARKER);
    // In the service's own output, printed after its exit code (the `detach` before it
    // prints the same words).
    let log_after = |marker: &str| {
        output
            .split_once(marker)
            .and_then(|(_, rest)| rest.split(CLI_PING_MARKER).next())
            .unwrap_or_default()
    };
    let run_log = log_after(RUN_MULTIPROG_MARKER);
    cli.run_detached = run_log.contains("detached from lo");
    cli.run_refused = run_log.contains(EXTENSIONS_REFUSED);
    cli.adopt_exit = code(RUN_ADOPT_MARKER);
    let adopt_log = log_after(RUN_ADOPT_MARKER);
    cli.adopt_said = adopt_log.contains("adopting the running guard as it is")
        && adopt_log.contains("left lo attached as found");
    cli.multiprog_trace_refused = output.contains(TRACE_REFUSED)
        && code(MULTIPROG_TRACE_MARKER).is_some_and(|code: i32| code != 0);
    cli.multiprog_row = after(output, MULTIPROG_STATS_MARKER)
        .last()
        .and_then(multiprog_row);
    cli.shared_xdp_filter = code(SHARED_XDP_FILTER_MARKER);
    cli.shared_attach = code(SHARED_ATTACH_MARKER);
    cli.shared_detach = code(SHARED_DETACH_MARKER);
    for rest in after(output, SHARED_HITS_MARKER) {
        let (phase, hits) = rest.split_once(' ').unwrap_or((rest, ""));
        let hits = hits.trim().parse().ok();
        match phase {
            "attached" => cli.shared_hits[0] = hits,
            "detached" => cli.shared_hits[1] = hits,
            _ => {}
        }
    }
    cli.shared_stays = after(output, SHARED_STAYS_MARKER)
        .last()
        .and_then(|count| count.parse().ok());
    cli.shared_refused = output.contains(NO_DISPATCHER);
    cli
}

/// icmp-guard beside xdp-filter: both dropped while both ran (no ping answered, the
/// connection attempts counted: two SYNs at least, their retransmissions may add some), and
/// after icmp-guard's detach xdp-filter alone (pings answered, two more attempts counted,
/// its program still there).
fn shared(cli: &Cli) -> Multiprog {
    let filtered = match cli.shared_hits {
        [Some(attached), Some(detached)] => attached >= 2 && detached >= attached + 2,
        _ => false,
    };
    let both = cli.shared_xdp_filter == Some(0)
        && cli.shared_attach == Some(0)
        && cli.shared_answered == [Some(0), Some(2)]
        && filtered
        && cli.shared_detach == Some(0)
        && cli.shared_stays == Some(1);
    if both {
        Multiprog::Joined
    } else if cli.shared_xdp_filter == Some(0)
        && cli.shared_attach.is_some_and(|code| code != 0)
        && cli.shared_refused
        && cli.shared_answered == [Some(2), Some(2)]
        && filtered
    {
        Multiprog::Refused
    } else {
        Multiprog::Failed
    }
}

/// The ICMP packets of `lo`'s row in `{"interfaces": [...]}` (from `stats --json`), when
/// that row says icmp-guard runs there in a dispatcher.
fn multiprog_row(interfaces: &str) -> Option<u64> {
    let document: Value = serde_json::from_str(interfaces.trim()).ok()?;
    let row = document["interfaces"]
        .as_array()?
        .iter()
        .find(|row| row["name"] == "lo")?;
    let running = row["multiprog"] == true && row["mode"].is_string();
    running.then(|| row["counters"]["packets"].as_u64())?
}

fn multiprog(cli: &Cli) -> Multiprog {
    match (
        cli.multiprog_attach,
        cli.multiprog_answered,
        cli.multiprog_detach,
    ) {
        // Both pings were dropped there, so its row counts at least those two.
        (Some(0), [Some(0), Some(2)], Some(0))
            if cli.multiprog_row >= Some(2) && cli.multiprog_trace_refused =>
        {
            Multiprog::Joined
        }
        (Some(code), [Some(2), Some(2)], Some(0)) if code != 0 && cli.multiprog_refused => {
            Multiprog::Refused
        }
        _ => Multiprog::Failed,
    }
}

/// `run --multiprog`: filtered from a dispatcher while it ran, and its SIGTERM detached
/// it; or, where the kernel refuses program extensions, it refused at start (non-zero) in
/// its sentence and nothing changed.
fn run_multiprog(cli: &Cli) -> Multiprog {
    match (cli.run_answered, cli.run_exit) {
        ([Some(0), Some(2)], Some(0))
            if cli.run_detached
                && cli.adopt_exit == Some(0)
                && cli.adopt_said
                && cli.adopt_answered == Some(0) =>
        {
            Multiprog::Joined
        }
        ([Some(2), Some(2)], Some(code)) if code != 0 && cli.run_refused => Multiprog::Refused,
        _ => Multiprog::Failed,
    }
}

/// `attach --multiprog` joined a dispatcher; on the host a kernel that refuses program
/// extensions may refuse it instead (this machine's does), as long as nothing changed.
fn multiprog_ok(outcome: &Outcome) -> bool {
    [
        multiprog(&outcome.cli),
        run_multiprog(&outcome.cli),
        shared(&outcome.cli),
    ]
    .into_iter()
    .all(|result| match result {
        Multiprog::Joined => true,
        Multiprog::Refused => outcome.asked == HOST,
        Multiprog::Failed => false,
    })
}

fn outcome(asked: &str, release: String, origin: String, run: &boot::Run, log: &Path) -> Outcome {
    let output = &run.output;
    let summary = parse_summary(output);
    let failed = output
        .lines()
        .filter_map(|line| line.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .map(str::to_owned)
        .collect();
    let skipped = after(output, SKIP_MARKER)
        .filter_map(|rest| rest.split_once(": "))
        .map(|(test, reason)| (test.to_owned(), reason.to_owned()))
        .collect();
    let missing = summary.is_none().then(|| {
        let why = match (&run.end, after(output, PROG_EXIT_MARKER).last()) {
            (boot::End::TimedOut, _) => format!("no test summary within {} s", run.wall.as_secs()),
            (_, Some(status)) => format!("the suite exited with status {status} without a summary"),
            (boot::End::Exited(status), None) => {
                format!("no test summary (the run ended: {status})")
            }
        };
        let mut text = format!("{why}; console ({}):", log.display());
        for line in tail_lines(output, TAIL_LINES) {
            let _ = write!(text, "\n    {line}");
        }
        if !run.errors.trim().is_empty() {
            text.push_str("\n  stderr:");
            for line in tail_lines(&run.errors, 10) {
                let _ = write!(text, "\n    {line}");
            }
        }
        text
    });
    Outcome {
        asked: asked.to_owned(),
        release: after(output, KERNEL_MARKER)
            .next()
            .map_or(release, str::to_owned),
        origin,
        wall: run.wall,
        summary,
        failed,
        skipped,
        verifier: after(output, VERIFIER_MARKER).last().map(str::to_owned),
        negative: after(output, NEGATIVE_MARKER).map(str::to_owned).collect(),
        cli: parse_cli(output),
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

/// Every test ran and passed (or said why it could not run).
fn suite_ok(outcome: &Outcome, tests: usize) -> bool {
    outcome.summary.is_some_and(|summary| {
        summary.ok && summary.failed == 0 && summary.passed + summary.ignored == tests
    })
}

/// The static CLI filtered: answered, then dropped, then answered again.
fn cli_ok(cli: &Cli) -> bool {
    cli.answered == [Some(2), Some(0), Some(2)] && cli.attach == Some(0) && cli.detach == Some(0)
}

fn ok(outcome: &Outcome, tests: usize) -> bool {
    suite_ok(outcome, tests) && cli_ok(&outcome.cli) && multiprog_ok(outcome)
}

/// Rejected on this kernel: the suite failed, and only ever with the verifier's rejection.
fn rejected(outcome: &Outcome) -> bool {
    outcome
        .summary
        .is_some_and(|summary| !summary.ok && summary.failed > 0)
        && !outcome.negative.is_empty()
        && outcome
            .negative
            .iter()
            .all(|line| line.starts_with("rejected"))
}

fn kernel_name(outcome: &Outcome) -> String {
    if outcome.asked == HOST {
        format!("{} (host)", outcome.release)
    } else {
        outcome.release.clone()
    }
}

/// Prints what happened on one kernel right after it ran.
fn print_detail(outcome: &Outcome, tests: usize, negative_control: bool) {
    let name = kernel_name(outcome);
    if let Some(missing) = &outcome.missing {
        println!("kernels: {name} FAILED: {missing}");
        return;
    }
    if negative_control {
        match outcome.negative.first() {
            Some(line) if rejected(outcome) => {
                println!("kernels: {name} rejected the negative control: {line}");
            }
            _ => println!(
                "kernels: {name} did NOT reject the negative control ({:?})",
                outcome.negative
            ),
        }
        return;
    }
    println!(
        "kernels: {name} {}: {}, {} verifier instructions, static CLI {}, {:.1} s",
        if ok(outcome, tests) { "ok" } else { "FAILED" },
        tests_cell(outcome),
        insns(outcome.verifier.as_deref()),
        cli_cell(&outcome.cli),
        outcome.wall.as_secs_f64()
    );
    for test in &outcome.failed {
        println!("  test failed: {test}");
    }
}

/// "83,454 (8% of 1M)" from the verifier's statistics line.
fn insns(line: Option<&str>) -> String {
    let Some(line) = line else {
        return "?".to_owned();
    };
    let number_after = |word: &str| {
        line.split(word)
            .nth(1)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<u64>()
            .ok()
    };
    match (number_after("processed "), number_after("(limit ")) {
        (Some(processed), Some(limit)) if limit > 0 => format!(
            "{} ({}% of {})",
            thousands(processed),
            processed * 100 / limit,
            if limit == 1_000_000 {
                "1M".to_owned()
            } else {
                thousands(limit)
            }
        ),
        (Some(processed), _) => thousands(processed),
        _ => "?".to_owned(),
    }
}

fn tests_cell(outcome: &Outcome) -> String {
    outcome.summary.map_or_else(
        || "-".to_owned(),
        |summary| {
            format!(
                "{} passed ({} skipped), {} failed, {} ignored",
                summary.passed,
                outcome.skipped.len(),
                summary.failed,
                summary.ignored
            )
        },
    )
}

fn cli_cell(cli: &Cli) -> String {
    let answered = |slot: Option<u64>| slot.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let pings = format!(
        "pings answered {}/2, attached {}/2, detached {}/2",
        answered(cli.answered[0]),
        answered(cli.answered[1]),
        answered(cli.answered[2])
    );
    let plain = if cli_ok(cli) {
        format!("filters ({pings})")
    } else {
        format!(
            "FAILED ({pings}; attach exit {:?}, detach exit {:?})",
            cli.attach, cli.detach
        )
    };
    let in_dispatcher = match multiprog(cli) {
        Multiprog::Joined => "filters in a libxdp dispatcher".to_owned(),
        Multiprog::Refused => "--multiprog refused: no program extensions".to_owned(),
        Multiprog::Failed => format!(
            "--multiprog FAILED (attached {}/2, detached {}/2; attach exit {:?}, detach exit {:?}; stats row {}; trace {})",
            answered(cli.multiprog_answered[0]),
            answered(cli.multiprog_answered[1]),
            cli.multiprog_attach,
            cli.multiprog_detach,
            cli.multiprog_row.map_or_else(
                || "missing".to_owned(),
                |packets| format!("{packets} packets")
            ),
            if cli.multiprog_trace_refused {
                "refused"
            } else {
                "NOT refused"
            }
        ),
    };
    let service = match run_multiprog(cli) {
        Multiprog::Joined => {
            "run --multiprog filters from one, detaches on SIGTERM, adopts and leaves one found"
                .to_owned()
        }
        Multiprog::Refused => "run --multiprog refused at start".to_owned(),
        Multiprog::Failed => format!(
            "run --multiprog FAILED (running {}/2, stopped {}/2; exit {:?}; said it detached: {}; adopting: exit {:?}, said it adopted and left it: {}, {}/2 after)",
            answered(cli.run_answered[0]),
            answered(cli.run_answered[1]),
            cli.run_exit,
            cli.run_detached,
            cli.adopt_exit,
            cli.adopt_said,
            answered(cli.adopt_answered)
        ),
    };
    let beside = match shared(cli) {
        Multiprog::Joined => "beside xdp-filter both drop, its detach leaves xdp-filter".to_owned(),
        Multiprog::Refused => "xdp-filter without a dispatcher: refused".to_owned(),
        Multiprog::Failed => format!(
            "beside xdp-filter FAILED (xdp-filter exit {:?}, attach exit {:?}, pings {}/2 then {}/2, xdp-filter hits {:?}, detach exit {:?}, xdp-filter programs left {:?})",
            cli.shared_xdp_filter,
            cli.shared_attach,
            answered(cli.shared_answered[0]),
            answered(cli.shared_answered[1]),
            cli.shared_hits,
            cli.shared_detach,
            cli.shared_stays
        ),
    };
    format!("{plain}; {in_dispatcher}; {service}; {beside}")
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

fn print_table(outcomes: &[Outcome], tests: usize) {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|outcome| {
            let result = if ok(outcome, tests) {
                "ok"
            } else if outcome.missing.is_some() {
                "FAILED (no result)"
            } else {
                "FAILED"
            };
            vec![
                kernel_name(outcome),
                outcome.origin.clone(),
                insns(outcome.verifier.as_deref()),
                tests_cell(outcome),
                cli_cell(&outcome.cli),
                format!("{:.1} s", outcome.wall.as_secs_f64()),
                result.to_owned(),
            ]
        })
        .collect();
    print_rows(
        &[
            "kernel",
            "from",
            "verifier insns processed",
            &format!("prog suite ({tests} tests)"),
            "static icmp-guard on lo",
            "time",
            "result",
        ],
        &rows,
    );
    let skips: Vec<Vec<String>> = outcomes
        .iter()
        .flat_map(|outcome| {
            outcome
                .skipped
                .iter()
                .map(|(test, reason)| vec![kernel_name(outcome), test.clone(), reason.clone()])
        })
        .collect();
    if !skips.is_empty() {
        println!("\ntests skipped, by the reason each gives:");
        print_rows(&["kernel", "test", "reason"], &skips);
    }
}

fn print_negative_table(outcomes: &[Outcome]) {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|outcome| {
            let verdict = if outcome.summary.is_none() {
                "no result".to_owned()
            } else if rejected(outcome) {
                outcome.negative[0].clone()
            } else {
                "ACCEPTED (the harness cannot fail!)".to_owned()
            };
            let failed = outcome
                .summary
                .map_or_else(|| "-".to_owned(), |summary| summary.failed.to_string());
            vec![
                kernel_name(outcome),
                outcome.origin.clone(),
                format!("{:.1} s", outcome.wall.as_secs_f64()),
                failed,
                verdict,
            ]
        })
        .collect();
    print_rows(
        &["kernel", "from", "time", "tests failed", "negative control"],
        &rows,
    );
}

fn verdict(outcomes: &[Outcome], tests: usize, negative_control: bool) -> Result<()> {
    let failing: Vec<&str> = outcomes
        .iter()
        .filter(|outcome| {
            if negative_control {
                !rejected(outcome)
            } else {
                !ok(outcome, tests)
            }
        })
        .map(|outcome| outcome.asked.as_str())
        .collect();
    match (negative_control, failing.is_empty()) {
        (true, true) => bail!(
            "negative control: all {} kernels rejected the broken program, as they must; \
             a rejected program fails the matrix (this exit status is the proof)",
            outcomes.len()
        ),
        (true, false) => bail!(
            "negative control: the broken program was not rejected on {}: the harness \
             cannot be trusted there",
            failing.join(", ")
        ),
        (false, true) => {
            println!(
                "kernels: all {tests} tests of the prog suite and the static CLI pass on all {} \
                 kernels",
                outcomes.len()
            );
            Ok(())
        }
        (false, false) => bail!(
            "the matrix failed on {} (details above)",
            failing.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Cli, EXTENSIONS_REFUSED, Multiprog, NO_DISPATCHER, Summary, TRACE_REFUSED, cli_ok, insns,
        multiprog, parse_cli, parse_summary, run_multiprog, shared,
    };

    #[test]
    fn libtest_summaries_are_read_from_a_console() {
        let console = "test verdict::x ... ok\r\n\
            test result: ok. 38 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
            finished in 36.01s\n";
        assert_eq!(
            parse_summary(console),
            Some(Summary {
                ok: true,
                passed: 38,
                failed: 0,
                ignored: 1
            })
        );
        let failed = "test result: FAILED. 3 passed; 35 failed; 1 ignored; 0 measured";
        assert_eq!(
            parse_summary(failed).map(|summary| (summary.ok, summary.failed)),
            Some((false, 35))
        );
        assert_eq!(parse_summary("MATRIX-PROG-EXIT 101"), None);
    }

    #[test]
    fn the_static_cli_must_drop_while_attached_and_only_then() {
        let console = "MATRIX-CLI-PING before 2 packets transmitted, 2 packets received, 0% packet loss\n\
            MATRIX-CLI-ATTACH-EXIT 0\n\
            MATRIX-CLI-PING attached 2 packets transmitted, 0 packets received, 100% packet loss\n\
            MATRIX-CLI-DETACH-EXIT 0\n\
            MATRIX-CLI-PING detached 2 packets transmitted, 2 packets received, 0% packet loss\n";
        let cli = parse_cli(console);
        assert!(cli_ok(&cli), "{cli:?}");
        assert_eq!(multiprog(&cli), Multiprog::Failed, "no --multiprog lines");
        let joined = format!(
            "{console}MATRIX-CLI-MULTIPROG-ATTACH-EXIT 0\n\
             MATRIX-CLI-PING multiprog 2 packets transmitted, 0 packets received, 100% packet loss\n\
             MATRIX-CLI-MULTIPROG-STATS {{\"interfaces\":[{{\"name\":\"lo\",\"ifindex\":1,\"mode\":\"generic\",\"multiprog\":true,\"counters\":{{\"packets\":2,\"bytes\":196}}}}]}}\n\
             error: lo runs icmp-guard as one program of a libxdp dispatcher (`attach --multiprog`), {TRACE_REFUSED}\n\
             MATRIX-CLI-MULTIPROG-TRACE-EXIT 1\n\
             MATRIX-CLI-MULTIPROG-DETACH-EXIT 0\n\
             MATRIX-CLI-PING multiprog-detached 2 packets transmitted, 2 packets received, 0% packet loss\n"
        );
        assert_eq!(multiprog(&parse_cli(&joined)), Multiprog::Joined);
        for (broken, why) in [
            (r#""multiprog":true"#, r#""multiprog":false"#),
            (r#""mode":"generic""#, r#""mode":null"#),
            (r#""packets":2"#, r#""packets":0"#),
            (r#""name":"lo""#, r#""name":"eth0""#),
        ] {
            assert_eq!(
                multiprog(&parse_cli(&joined.replace(broken, why))),
                Multiprog::Failed,
                "a stats row with {why}"
            );
        }
        let service = format!(
            "{joined}MATRIX-CLI-PING run-multiprog 2 packets transmitted, 0 packets received, 100% packet loss\n\
             MATRIX-CLI-RUN-MULTIPROG-EXIT 0\n\
             attached to lo (ifindex 1) in generic mode as program 1 of 1 in libxdp dispatcher 30 (program 31)\n\
             detached from lo\n\
             MATRIX-CLI-PING run-multiprog-stopped 2 packets transmitted, 2 packets received, 0% packet loss\n\
             MATRIX-CLI-RUN-ADOPT-EXIT 0\n\
             lo: already attached as program 1 of 1 in libxdp dispatcher 40, adopting the running guard as it is (program 41; generic mode)\n\
             left lo attached as found\n\
             MATRIX-CLI-PING run-adopted-stopped 2 packets transmitted, 0 packets received, 100% packet loss\n"
        );
        assert_eq!(run_multiprog(&parse_cli(&service)), Multiprog::Joined);
        let dropped_it = service.replace(
            "run-adopted-stopped 2 packets transmitted, 0",
            "run-adopted-stopped 2 packets transmitted, 2",
        );
        assert_eq!(
            run_multiprog(&parse_cli(&dropped_it)),
            Multiprog::Failed,
            "an adopted guard stays"
        );
        assert_eq!(
            run_multiprog(&parse_cli(&joined)),
            Multiprog::Failed,
            "no service lines (the detach before says \"detached from lo\" too)"
        );
        let kept = service.replace("detached from lo\n", "");
        assert_eq!(
            run_multiprog(&parse_cli(&kept)),
            Multiprog::Failed,
            "the service must detach on its way out"
        );
        let service_refused = format!(
            "{joined}MATRIX-CLI-PING run-multiprog 2 packets transmitted, 2 packets received, 0% packet loss\n\
             MATRIX-CLI-RUN-MULTIPROG-EXIT 1\n\
             error: {EXTENSIONS_REFUSED} (...)\n\
             MATRIX-CLI-PING run-multiprog-stopped 2 packets transmitted, 2 packets received, 0% packet loss\n"
        );
        assert_eq!(
            run_multiprog(&parse_cli(&service_refused)),
            Multiprog::Refused
        );
        // The attach's refusal earlier in the console does not excuse another failure of
        // the service.
        let other_failure = format!(
            "{console}error: {EXTENSIONS_REFUSED} (...)\n\
             MATRIX-CLI-PING run-multiprog 2 packets transmitted, 2 packets received, 0% packet loss\n\
             MATRIX-CLI-RUN-MULTIPROG-EXIT 1\n\
             error: something else went wrong\n\
             MATRIX-CLI-PING run-multiprog-stopped 2 packets transmitted, 2 packets received, 0% packet loss\n"
        );
        assert_eq!(run_multiprog(&parse_cli(&other_failure)), Multiprog::Failed);
        let traced = joined.replace("TRACE-EXIT 1", "TRACE-EXIT 0");
        assert_eq!(
            multiprog(&parse_cli(&traced)),
            Multiprog::Failed,
            "trace ran"
        );
        let no_row = joined.replace(r#""interfaces":["#, r#""interfaces":[]}"#);
        assert_eq!(multiprog(&parse_cli(&no_row)), Multiprog::Failed, "no row");
        let refused = joined
            .replace("ATTACH-EXIT 0", "ATTACH-EXIT 1")
            .replace("2 packets transmitted, 0", "2 packets transmitted, 2");
        assert_eq!(
            multiprog(&parse_cli(&refused)),
            Multiprog::Failed,
            "a reason"
        );
        // The attach's own refusal, printed before its exit code, as in a console.
        let said = refused.replace(
            "MATRIX-CLI-MULTIPROG-ATTACH-EXIT 1",
            &format!("error: {EXTENSIONS_REFUSED} (...)\nMATRIX-CLI-MULTIPROG-ATTACH-EXIT 1"),
        );
        assert_eq!(multiprog(&parse_cli(&said)), Multiprog::Refused);
        // Said later, by the service, it does not excuse the attach.
        let said_later = format!("{refused}error: {EXTENSIONS_REFUSED} (...)\n");
        assert_eq!(
            multiprog(&parse_cli(&said_later)),
            Multiprog::Failed,
            "another command's refusal"
        );
    }

    #[test]
    fn beside_xdp_filter_both_must_drop_and_xdp_filter_must_stay() {
        let console = "MATRIX-SHARED-XDP-FILTER-EXIT 0\n\
            MATRIX-SHARED-ATTACH-EXIT 0\n\
            MATRIX-CLI-PING shared 2 packets transmitted, 0 packets received, 100% packet loss\n\
            MATRIX-SHARED-HITS attached 2\n\
            MATRIX-SHARED-DETACH-EXIT 0\n\
            MATRIX-CLI-PING shared-detached 2 packets transmitted, 2 packets received, 0% packet loss\n\
            MATRIX-SHARED-HITS detached 5\n\
            MATRIX-SHARED-XDP-FILTER-STAYS 1\n";
        assert_eq!(shared(&parse_cli(console)), Multiprog::Joined);
        let gone = console.replace("STAYS 1", "STAYS 0");
        assert_eq!(
            shared(&parse_cli(&gone)),
            Multiprog::Failed,
            "xdp-filter must stay"
        );
        let unfiltered = console.replace("detached 5", "detached 2");
        assert_eq!(shared(&parse_cli(&unfiltered)), Multiprog::Failed);
        let refused = console
            .replace("ATTACH-EXIT 0", "ATTACH-EXIT 1")
            .replace("2 packets transmitted, 0", "2 packets transmitted, 2");
        assert_eq!(shared(&parse_cli(&refused)), Multiprog::Failed, "a reason");
        let refused = format!("{refused}error: the XDP program on lo {NO_DISPATCHER}, ...\n");
        assert_eq!(shared(&parse_cli(&refused)), Multiprog::Refused);
        let never_attached =
            console.replace("2 packets transmitted, 0", "2 packets transmitted, 2");
        assert!(!cli_ok(&parse_cli(&never_attached)));
        assert!(!cli_ok(&Cli::default()));
    }

    #[test]
    fn instruction_counts_show_their_share_of_the_limit() {
        let line = "processed 83454 insns (limit 1000000) max_states_per_insn 25";
        assert_eq!(insns(Some(line)), "83,454 (8% of 1M)");
        assert_eq!(insns(Some("processed 1234 insns")), "1,234");
        assert_eq!(insns(None), "?");
    }
}
