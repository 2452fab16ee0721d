//! The payload `cargo xtask kernels` runs on each kernel of the matrix: inside a QEMU guest
//! (as a static binary started by a busybox initramfs) or directly on the host.
//!
//! It loads icmp-guard's real XDP object with private maps (`bpf::load(None)`), measures
//! what the verifier spent on it, applies the safe default profile, runs a table of frames
//! through BPF_PROG_TEST_RUN, reconciles the counters and prints one result line:
//!
//! ```text
//! KERNEL-PROBE-RESULT {"kernel": "...", "ok": true, "verifier": {...}, "passed": 44, "total": 44, ...}
//! ```
//!
//! which the xtask reads from the guest's serial console. The exit code is 0 only when the
//! program loaded and every case passed.
//!
//! `--negative-control` loads a hand-assembled XDP program that reads packet memory without
//! a bounds check instead; every kernel must reject it, so the probe then reports a load
//! failure with the verifier's reason, through the same path a rejected icmp-guard would
//! take. `--verbose` prints every case, not only failures.
//!
//! The verifier's instruction count: the kernel reports it in `bpf_prog_info.verified_insns`
//! from 5.16 on, and in the "processed N insns" line of a verifier log with stats on every
//! kernel. aya passes a log buffer to BPF_PROG_LOAD only after a failed load, so a forked
//! child loads the object a second time with a seccomp filter that traps BPF_PROG_LOAD and
//! re-issues it with a stats-level log attached (see [`verifier_stats`]); the parent's own
//! load stays untouched.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, Read as _, Write as _},
    os::fd::{FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions},
};
use icmp_guard::{
    bpf::{self, GuardMaps},
    observe::events::EventReader,
    observe::stats,
    policy::{self, Policy},
};
use icmp_guard_common::{DropReason, FAMILY_V4, FAMILY_V6, events::max_events, global};
use serde_json::{Value, json};

/// Prefix of the one line the xtask parses.
const RESULT_MARKER: &str = "KERNEL-PROBE-RESULT ";
/// Verifier log lines kept from a rejection.
const LOG_TAIL_LINES: usize = 25;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let negative_control = args.iter().any(|arg| arg == "--negative-control");
    let verbose = args.iter().any(|arg| arg == "--verbose");
    if let Some(unknown) = args
        .iter()
        .find(|arg| !matches!(arg.as_str(), "--negative-control" | "--verbose"))
    {
        eprintln!("kernel_probe: unknown argument {unknown}; use --negative-control, --verbose");
        std::process::exit(2);
    }
    let started = Instant::now();
    let mut result = json!({
        "kernel": icmp_guard::host::preflight::kernel_release(),
        "mode": if negative_control { "negative-control" } else { "icmp-guard" },
        "ok": false,
    });
    let ok = if negative_control {
        negative_control_run(&mut result)
    } else {
        probe(&mut result, verbose)
    };
    result["ok"] = json!(ok);
    result["elapsed_ms"] = json!(millis(started.elapsed()));
    // One line, flushed, so the xtask never sees half of it before the guest powers off.
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{RESULT_MARKER}{result}");
    let _ = stdout.flush();
    std::process::exit(if ok { 0 } else { 1 });
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Loads, verifies and exercises icmp-guard; fills `result`, returns whether all went well.
fn probe(result: &mut Value, verbose: bool) -> bool {
    let load_started = Instant::now();
    let loaded = bpf::load(None);
    result["load_ms"] = json!(millis(load_started.elapsed()));
    let mut ebpf = match loaded {
        Ok(ebpf) => ebpf,
        Err(err) => {
            report_load_failure(result, &err);
            return false;
        }
    };
    println!(
        "kernel-probe: icmp-guard loaded and verified in {} ms",
        result["load_ms"]
    );
    result["verifier"] = verifier_report(&mut ebpf);

    let mut maps = match GuardMaps::take(&mut ebpf) {
        Ok(maps) => maps,
        Err(err) => {
            result["error"] = json!(format!("taking the maps: {err}"));
            return false;
        }
    };
    if let Err(err) = policy::apply(&mut maps, &Policy::default_profile()) {
        result["error"] = json!(format!("applying the default profile: {err}"));
        return false;
    }

    let cases = cases();
    let mut failures = Vec::new();
    let mut passed = 0usize;
    let mut total = 0usize;
    for case in &cases {
        total += 1;
        match run_case(&mut ebpf, case) {
            Ok(()) => {
                passed += 1;
                if verbose {
                    println!("kernel-probe: ok   {}", case.name);
                }
            }
            Err(why) => {
                println!("kernel-probe: FAIL {}: {why}", case.name);
                failures.push(format!("{}: {why}", case.name));
            }
        }
    }

    total += 1;
    match reconcile_counters(&maps, &cases) {
        Ok(checked) => {
            passed += 1;
            if verbose {
                println!("kernel-probe: ok   counters ({checked} values read back)");
            }
        }
        Err(why) => {
            println!("kernel-probe: FAIL counters: {why}");
            failures.push(format!("counters: {why}"));
        }
    }

    total += 1;
    match rate_limit_case(&mut ebpf, &maps) {
        Ok(detail) => {
            passed += 1;
            if verbose {
                println!("kernel-probe: ok   rate limit ({detail})");
            }
        }
        Err(why) => {
            println!("kernel-probe: FAIL rate limit: {why}");
            failures.push(format!("rate limit: {why}"));
        }
    }

    total += 1;
    match live::attach_and_ping(&mut ebpf, &maps) {
        Ok(detail) => {
            passed += 1;
            if verbose {
                println!("kernel-probe: ok   live attach ({detail})");
            }
        }
        Err(why) => {
            println!("kernel-probe: FAIL live attach: {why}");
            failures.push(format!("live attach: {why}"));
        }
    }

    total += 1;
    match events_case(&mut ebpf, &mut maps) {
        Ok(detail) => {
            passed += 1;
            if verbose {
                println!("kernel-probe: ok   sampled events ({detail})");
            }
        }
        Err(why) => {
            println!("kernel-probe: FAIL sampled events: {why}");
            failures.push(format!("sampled events: {why}"));
        }
    }

    result["passed"] = json!(passed);
    result["total"] = json!(total);
    result["failures"] = json!(failures);
    passed == total
}

fn report_load_failure(result: &mut Value, err: &bpf::Error) {
    match err {
        bpf::Error::VerifierRejected {
            source: reason,
            log,
        } => {
            println!("kernel-probe: the verifier rejected icmp-guard: {reason}");
            for line in tail(log, LOG_TAIL_LINES) {
                println!("kernel-probe:   {line}");
            }
            result["error"] = json!(format!("verifier rejected the program: {reason}"));
            result["verifier_log_tail"] = json!(tail(log, LOG_TAIL_LINES));
        }
        other => {
            println!("kernel-probe: loading icmp-guard failed: {other}");
            result["error"] = json!(format!("loading failed: {other}"));
        }
    }
}

/// The last `count` non-empty lines of a verifier log.
fn tail(log: &str, count: usize) -> Vec<String> {
    let lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|line| (*line).to_owned())
        .collect()
}

// ----------------------------------------------------------------------------------------
// Verifier statistics
// ----------------------------------------------------------------------------------------

/// What the kernel says the verifier spent: `verified_insns` from the program info (5.16+)
/// and the stats line of a second, logged load (every kernel).
fn verifier_report(ebpf: &mut Ebpf) -> Value {
    let info = bpf::xdp_program(ebpf)
        .ok()
        .and_then(|program| program.info().ok());
    let verified_insns = info
        .as_ref()
        .and_then(aya::programs::ProgramInfo::verified_instruction_count);
    let xlated = info
        .as_ref()
        .map(aya::programs::ProgramInfo::size_translated);
    let mut report = json!({
        "verified_insns": verified_insns,
        "xlated_bytes": xlated.flatten(),
    });
    match verifier_stats() {
        Ok(stats) => {
            println!("kernel-probe: verifier: {}", stats.line);
            report["processed_insns"] = json!(stats.processed);
            report["stats"] = json!(stats.line);
            report["stats_log"] = json!(stats.log);
        }
        Err(err) => {
            println!("kernel-probe: no verifier stats: {err}");
            report["stats_error"] = json!(err);
        }
    }
    report
}

struct VerifierStats {
    processed: u64,
    /// The "processed N insns ..." line as the kernel wrote it.
    line: String,
    /// The whole stats log (a few lines).
    log: Vec<String>,
}

/// Loads the object again in a forked child whose BPF_PROG_LOAD calls get a stats-level
/// verifier log, and parses "processed N insns" from it.
fn verifier_stats() -> Result<VerifierStats, String> {
    let mut fds = [0; 2];
    // SAFETY: pipe fills two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are new and owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let _ = io::stdout().flush();
    // SAFETY: the process is single-threaded here; the child only loads, writes and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(read_end);
        let mut out = std::fs::File::from(write_end);
        let message = match stats_child() {
            Ok(log) => format!("ok\n{log}"),
            Err(err) => format!("error\n{err}"),
        };
        let _ = out.write_all(message.as_bytes());
        drop(out);
        // SAFETY: leave without running the parent's destructors twice.
        unsafe { libc::_exit(0) };
    }
    drop(write_end);
    let mut message = String::new();
    let read = std::fs::File::from(read_end).read_to_string(&mut message);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    read.map_err(|err| format!("reading the child's log: {err}"))?;
    let (kind, body) = message
        .split_once('\n')
        .ok_or_else(|| format!("the stats child died (wait status {status})"))?;
    if kind != "ok" {
        return Err(body.to_owned());
    }
    let log: Vec<String> = body
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect();
    // The last "processed" line: one per BPF_PROG_LOAD, and only the XDP program is loaded.
    let line = log
        .iter()
        .rev()
        .find(|line| line.starts_with("processed "))
        .ok_or_else(|| format!("no \"processed N insns\" line in the log: {log:?}"))?
        .clone();
    let processed = line
        .split_whitespace()
        .nth(1)
        .and_then(|count| count.parse().ok())
        .ok_or_else(|| format!("cannot read the count in {line:?}"))?;
    Ok(VerifierStats {
        processed,
        line,
        log,
    })
}

/// In the forked child: trap BPF_PROG_LOAD, load the object, return the captured log.
fn stats_child() -> Result<String, String> {
    trap::install().map_err(|err| format!("installing the seccomp trap: {err}"))?;
    match bpf::load(None) {
        Ok(_ebpf) => Ok(trap::captured_log()),
        Err(err) => Err(format!("second load failed: {err}")),
    }
}

/// Emulates BPF_PROG_LOAD through SIGSYS to attach a verifier log with stats.
///
/// A seccomp filter returns SECCOMP_RET_TRAP for `bpf(BPF_PROG_LOAD, ...)` unless the
/// fourth syscall argument register (unused by bpf) carries [`PASS_MAGIC`]. The SIGSYS
/// handler adds a log buffer with `log_level = BPF_LOG_STATS` when the caller passed none,
/// re-issues the syscall with the magic value, and stores the result in the caller's RAX.
mod trap {
    use std::{
        cell::UnsafeCell,
        io,
        sync::atomic::{AtomicUsize, Ordering},
    };

    const BPF_PROG_LOAD: u32 = 5;
    const BPF_LOG_STATS: u32 = 4;
    const PASS_MAGIC: u64 = 0x6b70_726f_6265_0001;
    const LOG_SIZE: usize = 1 << 20;
    // Offsets in union bpf_attr for BPF_PROG_LOAD (stable UAPI).
    const LOG_LEVEL: usize = 24;
    const LOG_SIZE_FIELD: usize = 28;
    const LOG_BUF: usize = 32;

    struct Buffer(UnsafeCell<[u8; LOG_SIZE]>);
    // SAFETY: only written by the kernel inside the handler and read after the load, on
    // one thread.
    unsafe impl Sync for Buffer {}
    static LOG: Buffer = Buffer(UnsafeCell::new([0; LOG_SIZE]));
    static LOADS: AtomicUsize = AtomicUsize::new(0);

    pub fn install() -> io::Result<()> {
        // SAFETY: a zeroed sigaction with a valid handler and flags.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // struct seccomp_data: nr @0, arch @4, ip @8, args @16 (8 bytes each, low half
        // first on little endian).
        let filter = [
            stmt(0x20, 4),                               // ld arch
            jump(0x15, 0xc000_003e, 1, 0),               // jeq AUDIT_ARCH_X86_64
            stmt(0x06, 0x7fff_0000),                     // ret ALLOW
            stmt(0x20, 0),                               // ld nr
            jump(0x15, libc::SYS_bpf as u32, 1, 0),      // jeq bpf
            stmt(0x06, 0x7fff_0000),                     // ret ALLOW
            stmt(0x20, 16),                              // ld args[0] low
            jump(0x15, BPF_PROG_LOAD, 1, 0),             // jeq BPF_PROG_LOAD
            stmt(0x06, 0x7fff_0000),                     // ret ALLOW
            stmt(0x20, 16 + 3 * 8),                      // ld args[3] low
            jump(0x15, PASS_MAGIC as u32, 0, 3),         // jeq magic low
            stmt(0x20, 16 + 3 * 8 + 4),                  // ld args[3] high
            jump(0x15, (PASS_MAGIC >> 32) as u32, 0, 1), // jeq magic high
            stmt(0x06, 0x7fff_0000),                     // ret ALLOW
            stmt(0x06, 0x0003_0000),                     // ret TRAP
        ];
        let program = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: a valid filter program that outlives the call.
        let installed = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &raw const program,
            )
        };
        if installed != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    const fn stmt(code: u16, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }

    /// The log of the last load the handler attached a buffer to.
    pub fn captured_log() -> String {
        if LOADS.load(Ordering::SeqCst) == 0 {
            return String::new();
        }
        // SAFETY: no load is running; the kernel NUL-terminates the log.
        let bytes = unsafe { &*LOG.0.get() };
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }

    extern "C" fn handler(
        _signal: libc::c_int,
        _info: *mut libc::siginfo_t,
        context: *mut libc::c_void,
    ) {
        // SAFETY: the kernel passes a ucontext_t for SA_SIGINFO handlers; the registers
        // hold the trapped bpf() call's arguments, and attr points to a bpf_attr of
        // `size` bytes in the caller's memory.
        unsafe {
            let context = &mut *context.cast::<libc::ucontext_t>();
            let registers = &mut context.uc_mcontext.gregs;
            let command = registers[libc::REG_RDI as usize] as u64;
            let attr = registers[libc::REG_RSI as usize] as *mut u8;
            let size = registers[libc::REG_RDX as usize] as u64;
            let has_log = attr.add(LOG_BUF).cast::<u64>().read_unaligned() != 0;
            let mut attached = false;
            if !has_log && size as usize >= LOG_BUF + 8 {
                let buffer = LOG.0.get().cast::<u8>();
                *buffer = 0;
                attr.add(LOG_LEVEL)
                    .cast::<u32>()
                    .write_unaligned(BPF_LOG_STATS);
                attr.add(LOG_SIZE_FIELD)
                    .cast::<u32>()
                    .write_unaligned(LOG_SIZE as u32);
                attr.add(LOG_BUF)
                    .cast::<u64>()
                    .write_unaligned(buffer as u64);
                attached = true;
            }
            let result: i64;
            core::arch::asm!(
                "syscall",
                inlateout("rax") libc::SYS_bpf => result,
                in("rdi") command,
                in("rsi") attr,
                in("rdx") size,
                in("r10") PASS_MAGIC,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
            if attached {
                // Leave the caller's attribute as it was.
                attr.add(LOG_LEVEL).cast::<u32>().write_unaligned(0);
                attr.add(LOG_SIZE_FIELD).cast::<u32>().write_unaligned(0);
                attr.add(LOG_BUF).cast::<u64>().write_unaligned(0);
                LOADS.fetch_add(1, Ordering::SeqCst);
            }
            registers[libc::REG_RAX as usize] = result;
        }
    }
}

// ----------------------------------------------------------------------------------------
// Negative control
// ----------------------------------------------------------------------------------------

/// Loads an XDP program that reads a packet byte without comparing against data_end. A
/// kernel that accepts it would mean the harness cannot tell a broken program from a good
/// one; a kernel that rejects it is reported as a load failure, like a rejected icmp-guard.
fn negative_control_run(result: &mut Value) -> bool {
    // r2 = *(u32 *)(r1 + 0)   ; xdp_md->data
    // r0 = *(u8 *)(r2 + 0)    ; no check against data_end
    // exit
    let program: [[u8; 8]; 3] = [
        [0x61, 0x12, 0, 0, 0, 0, 0, 0],
        [0x71, 0x20, 0, 0, 0, 0, 0, 0],
        [0x95, 0, 0, 0, 0, 0, 0, 0],
    ];
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = [0u8; 128];
    let put32 = |attr: &mut [u8; 128], offset: usize, value: u32| {
        attr[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    };
    let put64 = |attr: &mut [u8; 128], offset: usize, value: u64| {
        attr[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    };
    put32(&mut attr, 0, 6); // BPF_PROG_TYPE_XDP
    put32(&mut attr, 4, program.len() as u32);
    put64(&mut attr, 8, program.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 24, 1); // log_level
    put32(&mut attr, 28, log.len() as u32);
    put64(&mut attr, 32, log.as_mut_ptr() as u64);
    // SAFETY: attr is a union bpf_attr whose pointers point at live locals.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_mut_ptr(), attr.len() as u32) };
    let errno = io::Error::last_os_error();
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let log = String::from_utf8_lossy(&log[..end]).into_owned();
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just returned.
        unsafe { libc::close(fd as i32) };
        println!("kernel-probe: the negative control was ACCEPTED: the harness cannot fail");
        result["error"] = json!("the negative control (unchecked packet read) was accepted");
        result["negative_control"] = json!("accepted");
        return false;
    }
    println!("kernel-probe: the verifier rejected the negative control: {errno}");
    for line in tail(&log, LOG_TAIL_LINES) {
        println!("kernel-probe:   {line}");
    }
    result["negative_control"] = json!("rejected");
    result["errno"] = json!(errno.raw_os_error());
    result["error"] = json!(format!("verifier rejected the program: {errno}"));
    result["verifier_log_tail"] = json!(tail(&log, LOG_TAIL_LINES));
    false
}

// ----------------------------------------------------------------------------------------
// Verdict cases
// ----------------------------------------------------------------------------------------

/// Where the program must count a frame.
#[derive(Clone, Copy, Debug)]
enum Counted {
    /// Classified as (family, type) and passed.
    Passed(u8, u8),
    /// Classified as (family, type) and dropped for this reason.
    Dropped(u8, u8, DropReason),
    /// Never classified: a slot of `GLOBAL_COUNTERS`.
    Global(u32),
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    verdict: u32,
    counted: Counted,
}

fn case(name: &'static str, frame: Vec<u8>, counted: Counted) -> Case {
    let verdict = match counted {
        Counted::Passed(..) => XDP_PASS,
        Counted::Dropped(..) => XDP_DROP,
        Counted::Global(slot) => match slot {
            global::NON_ICMP_PASSED | global::ICMP_FRAGMENT_PASSED => XDP_PASS,
            _ => XDP_DROP,
        },
    };
    Case {
        name,
        frame,
        verdict,
        counted,
    }
}

/// The table, all under the safe default profile, each frame run once. Echo requests
/// come from one source and stay far below their burst of 200.
fn cases() -> Vec<Case> {
    use Counted::{Dropped, Global, Passed};
    use DropReason::{Invalid, Policy as ByPolicy, Smurf};
    const V4: u8 = FAMILY_V4;
    const V6: u8 = FAMILY_V6;

    let echo_v4 = ipv4(1, &[], 0, &icmp(8, 0, &echo_body()));
    let reply_v4 = ipv4(1, &[], 0, &icmp(0, 0, &echo_body()));
    let mut ihl_four = echo_v4.clone();
    ihl_four[0] = 0x44;
    let mut too_long = echo_v4.clone();
    too_long[2..4].copy_from_slice(&((echo_v4.len() + 1) as u16).to_be_bytes());
    let short_icmp = ipv4(1, &[], 0, &[8, 0, 0, 0]);
    let fragment_data = icmp(8, 0, &echo_body());
    let mut v6_too_long = icmpv6_frame(&[], 128, 0);
    v6_too_long[14 + 5] += 1;
    let routing = |routing_type: u8, segments_left: u8| Ext {
        kind: 43,
        body: vec![routing_type, segments_left, 0, 0, 0, 0],
    };
    let long_chain: Vec<Ext> = (0..9).map(|_| Ext::options(60, 1)).collect();
    let mtu = |mtu: u32| mtu.to_be_bytes();

    vec![
        // ICMPv4 under the default table.
        case("v4 echo request", icmpv4_frame(8, 0), Passed(V4, 8)),
        case("v4 echo reply", icmpv4_frame(0, 0), Passed(V4, 0)),
        case("v4 frag needed (3/4)", icmpv4_frame(3, 4), Passed(V4, 3)),
        case("v4 time exceeded", icmpv4_frame(11, 0), Passed(V4, 11)),
        case("v4 parameter problem", icmpv4_frame(12, 0), Passed(V4, 12)),
        case("v4 redirect", icmpv4_frame(5, 1), Dropped(V4, 5, ByPolicy)),
        case(
            "v4 source quench",
            icmpv4_frame(4, 0),
            Dropped(V4, 4, ByPolicy),
        ),
        case(
            "v4 timestamp request",
            icmpv4_frame(13, 0),
            Dropped(V4, 13, ByPolicy),
        ),
        case(
            "v4 address mask request",
            icmpv4_frame(17, 0),
            Dropped(V4, 17, ByPolicy),
        ),
        // Parsing.
        case(
            "v4 echo request behind IP options (IHL 8)",
            ethernet(
                &[],
                ETH_P_IPV4,
                &ipv4(1, &[1; 12], 0, &icmp(8, 0, &echo_body())),
            ),
            Passed(V4, 8),
        ),
        case(
            "v4 redirect behind IP options (IHL 15)",
            ethernet(
                &[],
                ETH_P_IPV4,
                &ipv4(1, &[8; 40], 0, &icmp(5, 0, &echo_body())),
            ),
            Dropped(V4, 5, ByPolicy),
        ),
        case(
            "v4 echo reply under one VLAN tag",
            ethernet(&[(ETH_P_8021Q, 10)], ETH_P_IPV4, &reply_v4),
            Passed(V4, 0),
        ),
        case(
            "v4 echo reply under QinQ",
            ethernet(
                &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10)],
                ETH_P_IPV4,
                &reply_v4,
            ),
            Passed(V4, 0),
        ),
        case(
            "v4 under three VLAN tags",
            ethernet(
                &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 10), (ETH_P_8021Q, 11)],
                ETH_P_IPV4,
                &echo_v4,
            ),
            Global(global::MALFORMED_DROPPED),
        ),
        case(
            "v4 non-first fragment",
            ethernet(&[], ETH_P_IPV4, &ipv4(1, &[], 185, &fragment_data)),
            Global(global::ICMP_FRAGMENT_PASSED),
        ),
        case(
            "v4 first fragment of a redirect",
            ethernet(
                &[],
                ETH_P_IPV4,
                &ipv4(1, &[], 0x2000, &icmp(5, 0, &echo_body())),
            ),
            Dropped(V4, 5, ByPolicy),
        ),
        case(
            "v4 ping of death",
            ethernet(&[], ETH_P_IPV4, &ipv4(1, &[], 0x1fff, &fragment_data)),
            Global(global::INVALID_DROPPED),
        ),
        case(
            "v4 IHL 4",
            ethernet(&[], ETH_P_IPV4, &ihl_four),
            Global(global::INVALID_DROPPED),
        ),
        case(
            "v4 total length past the frame",
            ethernet(&[], ETH_P_IPV4, &too_long),
            Global(global::INVALID_DROPPED),
        ),
        case(
            "v4 ICMP shorter than 8 bytes",
            ethernet(&[], ETH_P_IPV4, &short_icmp),
            Global(global::INVALID_DROPPED),
        ),
        case(
            "v4 truncated header",
            icmpv4_frame(8, 0)[..30].to_vec(),
            Global(global::INVALID_DROPPED),
        ),
        // Smurf and martians.
        case(
            "v4 echo request to the broadcast MAC",
            with_dst_mac(icmpv4_frame(8, 0), [0xff; 6]),
            Dropped(V4, 8, Smurf),
        ),
        case(
            "v4 echo request to 255.255.255.255",
            icmpv4_between(V4_PEER, [255; 4], 8, 0),
            Dropped(V4, 8, Smurf),
        ),
        case(
            "v4 echo request to 224.0.0.1",
            icmpv4_between(V4_PEER, [224, 0, 0, 1], 8, 0),
            Dropped(V4, 8, Smurf),
        ),
        case(
            "v4 timestamp request to 255.255.255.255",
            icmpv4_between(V4_PEER, [255; 4], 13, 0),
            Dropped(V4, 13, Smurf),
        ),
        case(
            "v4 echo from 127.0.0.1 (martian)",
            icmpv4_between([127, 0, 0, 1], V4_GUARD, 8, 0),
            Dropped(V4, 8, Invalid),
        ),
        // Not ICMP.
        case(
            "TCP over IPv4",
            ethernet(&[], ETH_P_IPV4, &ipv4(6, &[], 0, &tcp_syn())),
            Global(global::NON_ICMP_PASSED),
        ),
        case(
            "UDP over IPv6 behind hop-by-hop",
            ethernet(
                &[],
                ETH_P_IPV6,
                &ipv6(64, &[Ext::options(0, 1)], 17, &udp()),
            ),
            Global(global::NON_ICMP_PASSED),
        ),
        case("ARP", arp(), Global(global::NON_ICMP_PASSED)),
        // ICMPv6 under the default table.
        case(
            "v6 echo request",
            icmpv6_frame(&[], 128, 0),
            Passed(V6, 128),
        ),
        case("v6 echo reply", icmpv6_frame(&[], 129, 0), Passed(V6, 129)),
        case(
            "v6 destination unreachable",
            icmpv6_frame(&[], 1, 4),
            Passed(V6, 1),
        ),
        case(
            "v6 packet too big, MTU 1280",
            icmpv6_custom(V6_PEER, V6_GUARD, 64, &[], 2, 0, mtu(1280)),
            Passed(V6, 2),
        ),
        case(
            "v6 packet too big, MTU 1279",
            icmpv6_custom(V6_PEER, V6_GUARD, 64, &[], 2, 0, mtu(1279)),
            Dropped(V6, 2, Invalid),
        ),
        case(
            "v6 neighbour solicitation, hop limit 255",
            icmpv6_custom(v6("fe80::2"), V6_GUARD, 255, &[], 135, 0, [0; 4]),
            Passed(V6, 135),
        ),
        case(
            "v6 neighbour solicitation, hop limit 64",
            icmpv6_custom(v6("fe80::2"), V6_GUARD, 64, &[], 135, 0, [0; 4]),
            Dropped(V6, 135, Invalid),
        ),
        case(
            "v6 MLDv2 report from link-local, hop limit 1",
            icmpv6_custom(v6("fe80::2"), v6("ff02::16"), 1, &[], 143, 0, [0; 4]),
            Passed(V6, 143),
        ),
        case(
            "v6 MLDv2 report from a global source",
            icmpv6_custom(V6_PEER, v6("ff02::16"), 1, &[], 143, 0, [0; 4]),
            Dropped(V6, 143, Invalid),
        ),
        case(
            "v6 redirect",
            icmpv6_frame(&[], 137, 0),
            Dropped(V6, 137, ByPolicy),
        ),
        case(
            "v6 node information query",
            icmpv6_frame(&[], 139, 0),
            Dropped(V6, 139, ByPolicy),
        ),
        case(
            "v6 echo request to ff05::1",
            icmpv6_custom(V6_PEER, v6("ff05::1"), 64, &[], 128, 0, [0; 4]),
            Dropped(V6, 128, Smurf),
        ),
        case(
            "v6 echo request to ff02::1",
            icmpv6_custom(V6_PEER, v6("ff02::1"), 64, &[], 128, 0, [0; 4]),
            Passed(V6, 128),
        ),
        case(
            "v6 echo from ::1 (martian)",
            icmpv6_custom(v6("::1"), V6_GUARD, 64, &[], 128, 0, [0; 4]),
            Dropped(V6, 128, Invalid),
        ),
        // IPv6 parsing.
        case(
            "v6 echo reply behind hop-by-hop, AH, destination options",
            icmpv6_frame(
                &[Ext::options(0, 1), Ext::ah(3), Ext::options(60, 1)],
                129,
                0,
            ),
            Passed(V6, 129),
        ),
        case(
            "v6 echo reply, atomic fragment",
            icmpv6_frame(&[Ext::fragment(0, false)], 129, 0),
            Passed(V6, 129),
        ),
        case(
            "v6 redirect behind a first fragment",
            icmpv6_frame(&[Ext::options(60, 4), Ext::fragment(0, true)], 137, 0),
            Dropped(V6, 137, ByPolicy),
        ),
        case(
            "v6 non-first fragment",
            ethernet(
                &[],
                ETH_P_IPV6,
                &ipv6(64, &[Ext::fragment(1480, false)], 58, &fragment_data),
            ),
            Global(global::ICMP_FRAGMENT_PASSED),
        ),
        case(
            "v6 chain of 9 extension headers",
            icmpv6_frame(&long_chain, 129, 0),
            Global(global::MALFORMED_DROPPED),
        ),
        case(
            "v6 routing header type 0 with segments left",
            icmpv6_frame(&[routing(0, 1)], 129, 0),
            Global(global::INVALID_DROPPED),
        ),
        case(
            "v6 payload length past the frame",
            v6_too_long,
            Global(global::INVALID_DROPPED),
        ),
        case(
            "v6 truncated header",
            icmpv6_frame(&[], 128, 0)[..50].to_vec(),
            Global(global::INVALID_DROPPED),
        ),
    ]
}

/// Runs one frame; checks the verdict and, for a pass, that the frame is unchanged.
fn run_case(ebpf: &mut Ebpf, case: &Case) -> Result<(), String> {
    let program = bpf::xdp_program(ebpf).map_err(|err| err.to_string())?;
    let mut out = vec![0u8; case.frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(&case.frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .map_err(|err| format!("BPF_PROG_TEST_RUN: {err}"))?;
    out.truncate(result.data_size_out as usize);
    if result.return_value != case.verdict {
        return Err(format!(
            "verdict {}, expected {}",
            verdict_name(result.return_value),
            verdict_name(case.verdict)
        ));
    }
    if case.verdict == XDP_PASS && out != case.frame {
        return Err("passed, but the frame came back changed".to_owned());
    }
    Ok(())
}

fn verdict_name(verdict: u32) -> String {
    match verdict {
        0 => "XDP_ABORTED".to_owned(),
        XDP_DROP => "XDP_DROP".to_owned(),
        XDP_PASS => "XDP_PASS".to_owned(),
        3 => "XDP_TX".to_owned(),
        4 => "XDP_REDIRECT".to_owned(),
        other => format!("{other}"),
    }
}

/// What one (family, type) should show: packets per outcome ("passed" or a drop reason's
/// name) and bytes.
type Expected = (BTreeMap<&'static str, u64>, u64);

/// Reads every counter back and compares it with what the table implies: packets and bytes
/// per (family, type) and outcome, and the global slots. Returns how many values matched.
fn reconcile_counters(maps: &GuardMaps, cases: &[Case]) -> Result<usize, String> {
    let snapshot = stats::read(maps).map_err(|err| format!("reading counters: {err}"))?;
    // (family, type) -> (slot name -> packets), bytes
    let mut per_type: BTreeMap<(u8, u8), Expected> = BTreeMap::new();
    let mut globals: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for case in cases {
        let bytes = case.frame.len() as u64;
        match case.counted {
            Counted::Passed(family, icmp_type) => {
                let entry = per_type.entry((family, icmp_type)).or_default();
                *entry.0.entry("passed").or_default() += 1;
                entry.1 += bytes;
            }
            Counted::Dropped(family, icmp_type, reason) => {
                let entry = per_type.entry((family, icmp_type)).or_default();
                *entry.0.entry(reason.name()).or_default() += 1;
                entry.1 += bytes;
            }
            Counted::Global(slot) => {
                let entry = globals.entry(slot).or_default();
                entry.0 += 1;
                entry.1 += bytes;
            }
        }
    }
    let mut problems = String::new();
    let mut checked = 0usize;
    for counters in &snapshot.icmp {
        if !per_type.contains_key(&(counters.family, counters.icmp_type)) {
            let _ = write!(
                problems,
                "; family {} type {} counted {} packets, expected none",
                counters.family,
                counters.icmp_type,
                counters.packets()
            );
        }
    }
    for (&(family, icmp_type), (slots, bytes)) in &per_type {
        let counters = snapshot.of(family, icmp_type);
        let mut actual: Vec<(&'static str, u64)> = vec![("passed", counters.passed())];
        actual.extend(
            DropReason::ALL
                .iter()
                .map(|reason| (reason.name(), counters.dropped(*reason))),
        );
        for (name, have) in actual {
            let want = slots.get(name).copied().unwrap_or(0);
            checked += 1;
            if have != want {
                let _ = write!(
                    problems,
                    "; family {family} type {icmp_type} {name}: {have}, expected {want}"
                );
            }
        }
        checked += 1;
        if counters.bytes() != *bytes {
            let _ = write!(
                problems,
                "; family {family} type {icmp_type} bytes: {}, expected {bytes}",
                counters.bytes()
            );
        }
    }
    for slot in 0..global::ENTRIES {
        let (packets, bytes) = globals.get(&slot).copied().unwrap_or_default();
        let counter = snapshot.global(slot);
        checked += 2;
        if counter.packets != packets || counter.bytes != bytes {
            let _ = write!(
                problems,
                "; global slot {slot}: {} packets / {} bytes, expected {packets} / {bytes}",
                counter.packets, counter.bytes
            );
        }
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(problems.trim_start_matches("; ").to_owned())
    }
}

/// 400 echo requests from a new source in one BPF_PROG_TEST_RUN call (no time passes
/// between them but what the kernel spends): the burst of 200 is admitted, plus what the
/// 100/s refill earns while the loop runs, and the rest is counted as `rate_limit`.
fn rate_limit_case(ebpf: &mut Ebpf, maps: &GuardMaps) -> Result<String, String> {
    const REPEAT: u32 = 400;
    const BURST: u64 = 200;
    const RATE: f64 = 100.0;
    let source = [192, 0, 2, 77];
    let frame = icmpv4_between(source, V4_GUARD, 8, 0);
    let before = stats::read(maps)
        .map_err(|err| err.to_string())?
        .of(FAMILY_V4, 8);
    let started = Instant::now();
    let program = bpf::xdp_program(ebpf).map_err(|err| err.to_string())?;
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: REPEAT,
            ..TestRunOptions::default()
        })
        .map_err(|err| format!("BPF_PROG_TEST_RUN: {err}"))?;
    let wall = started.elapsed();
    let after = stats::read(maps)
        .map_err(|err| err.to_string())?
        .of(FAMILY_V4, 8);
    let passed = after.passed() - before.passed();
    let limited = after.dropped(DropReason::RateLimit) - before.dropped(DropReason::RateLimit);
    // Whatever the kernel's clock could have refilled during the call, plus one for the
    // rounding of the first refill.
    let refill = (wall.as_secs_f64() * RATE).ceil() as u64 + 1;
    let detail = format!(
        "{passed} admitted, {limited} rate-limited of {REPEAT} in {} ms; last verdict {}",
        millis(wall),
        verdict_name(result.return_value)
    );
    if passed + limited != u64::from(REPEAT) {
        return Err(format!("{detail}: counts do not add up to {REPEAT}"));
    }
    if passed < BURST || passed > BURST + refill {
        return Err(format!(
            "{detail}: expected the burst of {BURST} (+ at most {refill} refilled)"
        ));
    }
    if result.return_value != XDP_DROP {
        return Err(format!("{detail}: the last request should be dropped"));
    }
    Ok(detail)
}

/// Sampled events through the ring buffer: a flood of echo requests under a budget yields
/// at least one event and no more than the budget allows, and budget 0 yields none.
fn events_case(ebpf: &mut Ebpf, maps: &mut GuardMaps) -> Result<String, String> {
    const BUDGET: u32 = 100;
    const REPEAT: u32 = 5000;
    let ring = ebpf
        .take_map(icmp_guard_common::maps::EVENTS)
        .ok_or("the object has no EVENTS map")?;
    let mut reader = EventReader::from_ring(
        aya::maps::RingBuf::try_from(ring).map_err(|err| format!("opening EVENTS: {err}"))?,
    );
    let source = [198, 51, 100, 9];
    let frame = icmpv4_between(source, V4_GUARD, 8, 0);
    let flood = |ebpf: &mut Ebpf| -> Result<u64, String> {
        let started = Instant::now();
        bpf::xdp_program(ebpf)
            .map_err(|err| err.to_string())?
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: REPEAT,
                ..TestRunOptions::default()
            })
            .map_err(|err| format!("BPF_PROG_TEST_RUN: {err}"))?;
        Ok(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))
    };
    maps.set_events_per_sec(BUDGET)
        .map_err(|err| err.to_string())?;
    let elapsed_ns = flood(ebpf)?;
    let mut events = Vec::new();
    reader.drain(|event| events.push(event));
    let cpus = aya::util::online_cpus().map_or(1, |cpus| cpus.len()) as u64;
    let bound = cpus * max_events(BUDGET, elapsed_ns);
    let detail = format!(
        "{} events from {REPEAT} packets in {} ms, at most {bound} allowed",
        events.len(),
        elapsed_ns / 1_000_000
    );
    if events.is_empty() || events.len() as u64 > bound {
        return Err(detail);
    }
    if let Some(wrong) = events.iter().find(|event| {
        event.family != FAMILY_V4 || event.icmp_type != 8 || event.source[..4] != source
    }) {
        return Err(format!("{detail}; an event for another packet: {wrong:?}"));
    }
    maps.set_events_per_sec(0).map_err(|err| err.to_string())?;
    flood(ebpf)?;
    let after_off = reader.drain(|_| {});
    if after_off != 0 {
        return Err(format!("{detail}; {after_off} more with events off"));
    }
    Ok(detail)
}

// ----------------------------------------------------------------------------------------
// Live attachment
// ----------------------------------------------------------------------------------------

/// The program attached for real, the way `icmp-guard attach` does it (a bpf_link from
/// BPF_LINK_CREATE, kernel 5.9+), in generic mode on the loopback device of a network
/// namespace of its own: a ping to an address on it must be seen by the program (the echo
/// request and the reply counted as passed), and once the link is closed a second ping
/// must not be. On the host nothing outside that namespace is touched.
mod live {
    use std::{
        io,
        mem::size_of,
        os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
        time::{Duration, Instant},
    };

    use aya::Ebpf;
    use icmp_guard::{
        bpf::{self, GuardMaps},
        observe::stats,
    };
    use icmp_guard_common::FAMILY_V4;

    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    /// An address of the guarded side in the verdict frames, put on `lo:1`.
    const ADDRESS: [u8; 4] = [192, 0, 2, 1];
    const ECHO_ID: u16 = 0x4b50;

    pub fn attach_and_ping(ebpf: &mut Ebpf, maps: &GuardMaps) -> Result<String, String> {
        // SAFETY: unshare has no memory preconditions; only this process moves.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                io::Error::last_os_error()
            ));
        }
        loopback_up_with(ADDRESS).map_err(|err| format!("setting up lo: {err}"))?;
        let program = bpf::xdp_program(ebpf).map_err(|err| err.to_string())?;
        let program_fd = program
            .fd()
            .map_err(|err| err.to_string())?
            .as_fd()
            .as_raw_fd();
        let counts = |maps: &GuardMaps| -> Result<(u64, u64), String> {
            let snapshot = stats::read(maps).map_err(|err| err.to_string())?;
            Ok((
                snapshot.of(FAMILY_V4, 8).passed(),
                snapshot.of(FAMILY_V4, 0).passed(),
            ))
        };

        let before = counts(maps)?;
        let link = link_create(program_fd, 1)
            .map_err(|err| format!("BPF_LINK_CREATE (XDP, generic mode) on lo: {err}"))?;
        ping(1).map_err(|err| format!("ping with the program attached: {err}"))?;
        let attached = counts(maps)?;
        drop(link);
        ping(2).map_err(|err| format!("ping after closing the link: {err}"))?;
        let detached = counts(maps)?;

        let seen = (attached.0 - before.0, attached.1 - before.1);
        if seen != (1, 1) {
            return Err(format!(
                "with the link, the program counted {} echo requests and {} replies passed, \
                 expected 1 and 1",
                seen.0, seen.1
            ));
        }
        if detached != attached {
            return Err("the program still saw packets after its link was closed".to_owned());
        }
        Ok(
            "bpf_link in generic mode on lo: echo request and reply passed, none after close"
                .to_owned(),
        )
    }

    fn loopback_up_with(address: [u8; 4]) -> io::Result<()> {
        // SAFETY: a plain socket for interface ioctls, owned at once.
        let socket =
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if socket < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just created.
        let socket = unsafe { OwnedFd::from_raw_fd(socket) };
        let request = |name: &str| {
            // SAFETY: an all-zero ifreq is valid.
            let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
            for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
                *slot = byte as libc::c_char;
            }
            request
        };
        let mut flags = request("lo");
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
        unsafe {
            if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut flags) != 0 {
                return Err(io::Error::last_os_error());
            }
            flags.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &flags) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let mut alias = request("lo:1");
        let sockaddr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(address),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in fits in the ifreq's sockaddr union member.
        unsafe {
            std::ptr::write_unaligned(
                (&raw mut alias.ifr_ifru).cast::<libc::sockaddr_in>(),
                sockaddr,
            );
            if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFADDR, &alias) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn link_create(program_fd: i32, ifindex: u32) -> io::Result<OwnedFd> {
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&(program_fd as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        attr[8..12].copy_from_slice(&BPF_XDP.to_ne_bytes());
        attr[12..16].copy_from_slice(&XDP_FLAGS_SKB_MODE.to_ne_bytes());
        // SAFETY: attr is a zeroed union bpf_attr without pointers.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_LINK_CREATE,
                attr.as_mut_ptr(),
                attr.len() as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor from the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Sends one echo request to [`ADDRESS`] over a raw socket and waits for its reply.
    fn ping(sequence: u16) -> io::Result<()> {
        // SAFETY: a raw ICMP socket, owned at once.
        let socket = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if socket < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just created.
        let socket = unsafe { OwnedFd::from_raw_fd(socket) };
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: a timeval of the size we pass.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let mut rest = ECHO_ID.to_be_bytes().to_vec();
        rest.extend_from_slice(&sequence.to_be_bytes());
        rest.extend_from_slice(b"kernel-probe live ping");
        let message = super::icmp(8, 0, &rest);
        let destination = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ADDRESS),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: message and destination outlive the call.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const destination).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buffer = [0u8; 1500];
        while Instant::now() < deadline {
            // SAFETY: buffer outlives the call.
            let read = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            let Ok(read) = usize::try_from(read) else {
                continue; // timeout or EINTR: look at the deadline again
            };
            let packet = &buffer[..read];
            let header = usize::from(packet.first().copied().unwrap_or(0) & 0x0f) * 4;
            let Some(message) = packet.get(header..header + 8) else {
                continue;
            };
            let id = u16::from_be_bytes([message[4], message[5]]);
            let seq = u16::from_be_bytes([message[6], message[7]]);
            // The raw socket also receives our own request; wait for the reply.
            if message[0] == 0 && id == ECHO_ID && seq == sequence {
                return Ok(());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no echo reply within 3 s",
        ))
    }
}

// The tests' frame builders: one copy for the verdict tests and this probe.
#[allow(dead_code)]
#[path = "../tests/support/frames.rs"]
mod frames;
use frames::*;
