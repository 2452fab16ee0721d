//! What the verifier makes of the program, as ordinary tests: every instance of icmp-guard
//! (each variant the kernel can load, for Ethernet and raw IP) is accepted within 30 % of
//! the instruction limit (the kernel matrix prints the heaviest count per kernel), and the
//! negative control, a program that reads packet memory without a bounds check, is
//! rejected. The harness loads that broken program instead of icmp-guard when
//! `ICMP_GUARD_NEGATIVE_CONTROL=1`, so the whole suite must then fail.
//!
//! The instruction count: the kernel reports it in `bpf_prog_info.verified_insns` from
//! 5.16 on, and in the "processed N insns" line of a verifier log with statistics on every
//! kernel. aya passes a log buffer to BPF_PROG_LOAD only after a failed load, so a child
//! process (this test binary again, running only [`stats_child`]) loads the object with a
//! seccomp filter that traps BPF_PROG_LOAD and re-issues it with a statistics log attached
//! ([`trap`]); the seccomp filter and the SIGSYS handler never touch the tests' own process.

use std::{io::Write as _, process::Command};

use icmp_guard::{
    bpf::{self, Capacity, Instance, Variant},
    policy::Policy,
};

use crate::harness::{Guard, skip};

/// Set in the environment of the child that [`stats_child`] runs in.
const STATS_CHILD: &str = "ICMP_GUARD_VERIFIER_STATS_CHILD";
/// Around the log the child prints.
const LOG_BEGIN: &str = "VERIFIER-LOG-BEGIN";
const LOG_END: &str = "VERIFIER-LOG-END";
/// Lines the kernel matrix reads from a guest's console.
pub const STATS_MARKER: &str = "VERIFIER-STATS ";
pub const NEGATIVE_MARKER: &str = "NEGATIVE-CONTROL ";
/// The most of the verifier's instruction limit any instance may take (issue 14).
const HEADROOM_PERCENT: u64 = 30;
/// The trace build's own budget (issue 18): it is loaded only for a trace.
const TRACE_HEADROOM_PERCENT: u64 = 50;
/// The names of the trace build's programs begin so.
const TRACE_PREFIX: &str = "icmp_trace";
/// The lines of the trace build's counts, for the kernel matrix's log.
pub const TRACE_MARKER: &str = "VERIFIER-TRACE-STATS ";

/// Prints a line for the kernel matrix, past libtest's capture.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Kernel (major, minor) of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = icmp_guard::host::preflight::kernel_release();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse::<u32>().ok());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

#[test]
fn icmp_guard_is_verified_inside_the_instruction_limit() {
    root_or_skip!("icmp_guard_is_verified_inside_the_instruction_limit");
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "verifier::stats_child",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(STATS_CHILD, "1")
        .output()
        .expect("run the statistics child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the statistics child failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // One statistics line per instance the child loaded: each variant the kernel can load
    // (compare-and-exchange from 5.12, spin locks everywhere), for Ethernet and raw IP.
    let mut heaviest: Option<(u64, u64, String)> = None;
    let mut trace_seen = 0;
    let mut rest = stdout.as_ref();
    while let Some((_, after)) = rest.split_once(LOG_BEGIN) {
        let (block, remainder) = after
            .split_once(LOG_END)
            .unwrap_or_else(|| panic!("an unterminated log from the child:\n{stdout}"));
        rest = remainder;
        let (name, log) = block.split_once('\n').unwrap_or((block, ""));
        // One "processed" line per BPF_PROG_LOAD, and only the XDP program is loaded.
        let line = log
            .lines()
            .rev()
            .find(|line| line.starts_with("processed "))
            .unwrap_or_else(|| panic!("no \"processed N insns\" line in the log:\n{log}"));
        let number_after = |word: &str| -> u64 {
            line.split(word)
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse().ok())
                .unwrap_or_else(|| panic!("no number after {word:?} in {line:?}"))
        };
        let (processed, limit) = (number_after("processed "), number_after("(limit "));
        report(&format!("verifier: {} {}", name.trim(), line.trim()));
        if name.trim().starts_with(TRACE_PREFIX) {
            // The trace build has its own budget; the matrix's line is production's.
            trace_seen += 1;
            assert!(
                processed * 100 <= limit * TRACE_HEADROOM_PERCENT,
                "the verifier processed {processed} instructions of the trace build, over {TRACE_HEADROOM_PERCENT} % of its limit of {limit}: {line}"
            );
            report(&format!("{TRACE_MARKER}{} — {}", line.trim(), name.trim()));
            continue;
        }
        if heaviest
            .as_ref()
            .is_none_or(|(most, _, _)| processed > *most)
        {
            heaviest = Some((
                processed,
                limit,
                format!("{} — {}", line.trim(), name.trim()),
            ));
        }
    }
    // Each trace instance loads its guard and its report program.
    assert!(trace_seen >= 4, "the trace build was not loaded:\n{stdout}");
    let (processed, limit, line) =
        heaviest.unwrap_or_else(|| panic!("no verifier log from the child:\n{stdout}"));
    // The matrix prints the last of these lines: the heaviest instance.
    report(&format!("{STATS_MARKER}{line}"));
    assert!(
        0 < processed && processed < limit,
        "the verifier processed {processed} instructions of its limit of {limit}"
    );
    // Issue 14: at most 30 % of the limit, so that the next features still fit.
    assert!(
        processed * 100 <= limit * HEADROOM_PERCENT,
        "the verifier processed {processed} instructions, over {HEADROOM_PERCENT} % of its limit of {limit}: {line}"
    );
}

/// Runs only as the child of the test above (`--ignored --exact`): installs the trap in
/// this process, loads icmp-guard, and prints the statistics log it captured.
#[test]
#[ignore = "changes its process (seccomp, SIGSYS); the instruction-limit test runs it as a child"]
fn stats_child() {
    trap::install().expect("install the seccomp trap");
    let mut variants = vec![Variant::Locks];
    if Variant::Auto.resolved() == Variant::Atomics {
        variants.insert(0, Variant::Atomics);
    }
    for variant in variants {
        for (kind, instance) in [
            ("ethernet", Instance::UNATTACHED),
            ("raw IP", Instance::UNATTACHED_RAW_IP),
        ] {
            let instance = instance.with_variant(variant);
            let ebpf = bpf::load_instance(None, Capacity::default(), instance)
                .expect("icmp-guard loads with a statistics log");
            drop(ebpf);
            let log = trap::captured_log();
            assert!(
                log.contains("processed "),
                "no statistics in the log: {log}"
            );
            if std::env::var_os(STATS_CHILD).is_some() {
                let name = format!("{} ({kind})", variant.program_name());
                println!("{LOG_BEGIN}{name}\n{log}\n{LOG_END}");
            }
            // The trace build of the same instance: its guard, then its report program.
            let mut ebpf = bpf::load_trace_guard(None, instance)
                .expect("the trace build's guard loads with a statistics log");
            let guard_log = trap::captured_log();
            bpf::trace::install_log(&mut ebpf)
                .expect("the trace build's report program loads with a statistics log");
            let log_log = trap::captured_log();
            drop(ebpf);
            if std::env::var_os(STATS_CHILD).is_some() {
                let guard_name = match variant.resolved() {
                    Variant::Locks => icmp_guard_common::trace::LOCKED_PROGRAM_NAME,
                    _ => icmp_guard_common::trace::PROGRAM_NAME,
                };
                println!("{LOG_BEGIN}{guard_name} ({kind})\n{guard_log}\n{LOG_END}");
                println!(
                    "{LOG_BEGIN}{} ({kind})\n{log_log}\n{LOG_END}",
                    bpf::trace::LOG_PROGRAM_NAME
                );
            }
        }
    }
}

/// `verified_insns` arrived in `bpf_prog_info` with Linux 5.16 (commit aba64c7da983, "bpf:
/// Add verified_insns to bpf_prog_info and fdinfo"); before that the field reads 0.
#[test]
fn the_kernel_reports_verified_instructions_in_the_program_info() {
    root_or_skip!("the_kernel_reports_verified_instructions_in_the_program_info");
    let version = kernel_version();
    if version < (5, 16) {
        skip(
            "the_kernel_reports_verified_instructions_in_the_program_info",
            &format!(
                "bpf_prog_info.verified_insns arrived in Linux 5.16 (commit aba64c7da983); \
                 this is {}.{}",
                version.0, version.1
            ),
        );
        return;
    }
    let mut guard = Guard::load(&Policy::default_profile());
    let info = guard.program().info().expect("BPF_OBJ_GET_INFO_BY_FD");
    let verified = info
        .verified_instruction_count()
        .expect("a kernel from 5.16 on reports verified_insns");
    assert!(verified > 0);
    let translated = info.size_translated().expect("the translated size");
    assert!(translated > 0);
}

#[test]
fn every_verifier_rejects_an_unchecked_packet_read() {
    root_or_skip!("every_verifier_rejects_an_unchecked_packet_read");
    let rejection = load_unchecked_read().expect_err("the verifier must reject the program");
    report(&format!("{NEGATIVE_MARKER}rejected: {rejection}"));
    assert!(
        rejection.contains("outside of the packet") || rejection.contains("invalid access"),
        "rejected, but for another reason: {rejection}"
    );
}

/// What the harness does instead of loading icmp-guard in the negative control: loads the
/// broken program and fails the test the way a rejected icmp-guard would.
pub fn load_the_negative_control() -> ! {
    match load_unchecked_read() {
        Err(rejection) => {
            report(&format!("{NEGATIVE_MARKER}rejected: {rejection}"));
            panic!("the verifier rejected the program: {rejection}");
        }
        Ok(()) => {
            report(&format!("{NEGATIVE_MARKER}ACCEPTED"));
            panic!("the negative control was accepted: the harness cannot fail");
        }
    }
}

/// Loads an XDP program that reads a packet byte without comparing against data_end.
/// `Err` holds the errno and the verifier's own words (the log without the instruction
/// dump and the statistics).
fn load_unchecked_read() -> Result<(), String> {
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
    let mut put = |offset: usize, bytes: &[u8]| {
        attr[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    // Offsets in union bpf_attr for BPF_PROG_LOAD (stable UAPI).
    put(0, &6u32.to_ne_bytes()); // BPF_PROG_TYPE_XDP
    put(4, &(program.len() as u32).to_ne_bytes());
    put(8, &(program.as_ptr() as u64).to_ne_bytes());
    put(16, &(license.as_ptr() as u64).to_ne_bytes());
    put(24, &1u32.to_ne_bytes()); // log_level
    put(28, &(log.len() as u32).to_ne_bytes());
    put(32, &(log.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: attr is a union bpf_attr whose pointers point at live locals.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_mut_ptr(), attr.len() as u32) };
    let errno = std::io::Error::last_os_error();
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just returned.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let log = String::from_utf8_lossy(&log[..end]).into_owned();
    Err(format!("{errno}: {}", verifier_reason(&log)))
}

/// The verifier's own words in a log: the lines after the instruction dump, without the
/// statistics.
fn verifier_reason(log: &str) -> String {
    let reason: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("processed ")
                && !line.starts_with("verification time")
                && !line.starts_with("stack depth")
                && !line.starts_with("from ")
                && !line.starts_with(';')
                && !line.starts_with(|c: char| c.is_ascii_digit())
        })
        .collect();
    reason.join("; ")
}

#[test]
fn the_verifier_reason_skips_the_instruction_dump_and_statistics() {
    let log = "0: R1=ctx() R10=fp0\n\
               0: (61) r2 = *(u32 *)(r1 +0)          ; R1=ctx() R2=pkt(r=0)\n\
               1: (71) r0 = *(u8 *)(r2 +0)\n\
               invalid access to packet, off=0 size=1, R2(id=0,off=0,r=0)\n\
               R2 offset is outside of the packet\n\
               processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0\n";
    assert_eq!(
        verifier_reason(log),
        "invalid access to packet, off=0 size=1, R2(id=0,off=0,r=0); \
         R2 offset is outside of the packet"
    );
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
    // Offsets in union bpf_attr for BPF_PROG_LOAD (stable UAPI).
    const LOG_LEVEL: usize = 24;
    const LOG_SIZE_FIELD: usize = 28;
    const LOG_BUF: usize = 32;

    /// The verifier log of the trapped load.
    struct Buffer(UnsafeCell<[u8; LOG_SIZE]>);
    const LOG_SIZE: usize = 1 << 20;
    /// In the fourth argument register, which bpf(2) does not use: a load the handler
    /// re-issued, which the filter lets through.
    const PASS_MAGIC: u64 = 0x6b70_726f_6265_0001;
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
