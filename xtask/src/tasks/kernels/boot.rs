//! Runs the payload: in a QEMU guest (serial console on stdout) or directly on the host,
//! under a timeout, keeping everything it prints.
//!
//! QEMU's exit status says nothing about the guest (a powered-off guest and a panicked one
//! both exit 0), so the verdict always comes from what the payload printed.

use std::{
    env,
    fmt::Write as _,
    fs::File,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::util::process;

/// How a run ended.
pub enum End {
    Exited(ExitStatus),
    TimedOut,
}

pub struct Run {
    /// Everything the guest's console (or the host payload's stdout) showed.
    pub output: String,
    /// QEMU's (or the host payload's) stderr.
    pub errors: String,
    pub end: End,
    pub wall: Duration,
}

/// The QEMU accelerator: TCG unless `ICMP_GUARD_QEMU_ACCEL` names another (`kvm` where
/// nested virtualisation works; on these CI machines /dev/kvm exists but guests hang).
pub fn accelerator() -> String {
    env::var("ICMP_GUARD_QEMU_ACCEL")
        .ok()
        .filter(|accel| !accel.is_empty())
        .unwrap_or_else(|| "tcg".to_owned())
}

/// Boots `kernel` with `initrd`; the payload gets `payload_args`.
pub fn guest(
    qemu: &Path,
    kernel: &Path,
    initrd: &Path,
    payload_args: &[&str],
    timeout: Duration,
    log: &Path,
    echo: bool,
) -> Result<Run> {
    // quiet: only errors from the kernel, so they cannot split the result line.
    // panic=-1 with -no-reboot: a panic (oops=panic, init exiting) ends QEMU at once.
    let mut append = String::from("console=ttyS0 quiet panic=-1 oops=panic");
    if !payload_args.is_empty() {
        // Words after `--` become init's arguments.
        let _ = write!(append, " -- {}", payload_args.join(" "));
    }
    let mut command = process::command(qemu);
    command
        .args(["-accel", &accelerator()])
        // The initramfs (about 160 MB: the suite's static binaries, each embedding the
        // production and the trace object) is unpacked into RAM beside its own copy; with
        // 512 MB the unpacking ran out of memory and the kernel found no root.
        .args(["-m", "1024", "-smp", "2"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(&append);
    supervise(command, timeout, log, echo)
}

/// Runs the payload on the running kernel: `command` is all set up.
pub fn host(command: Command, timeout: Duration, log: &Path, echo: bool) -> Result<Run> {
    supervise(command, timeout, log, echo)
}

/// Runs `command` with stdout and stderr collected (and stdout copied to `log`, and to our
/// stdout with `echo`), killing it after `timeout`.
fn supervise(mut command: Command, timeout: Duration, log: &Path, echo: bool) -> Result<Run> {
    let shown = process::display(&command);
    if echo {
        println!("$ {shown}");
    }
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{shown}`"))?;
    let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let output = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().context("no stdout")?;
    let stdout_reader = {
        let output = Arc::clone(&output);
        thread::spawn(move || copy_lines(stdout, &output, log_file, echo))
    };
    let errors = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().context("no stderr")?;
    let stderr_reader = {
        let errors = Arc::clone(&errors);
        thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            if let Ok(mut errors) = errors.lock() {
                errors.push_str(&text);
            }
        })
    };
    let end = wait(&mut child, timeout)?;
    let wall = started.elapsed();
    let _ = stdout_reader.join();
    let _ = stderr_reader.join();
    let output = output.lock().map(|text| text.clone()).unwrap_or_default();
    let errors = errors.lock().map(|text| text.clone()).unwrap_or_default();
    Ok(Run {
        output,
        errors,
        end,
        wall,
    })
}

fn wait(child: &mut Child, timeout: Duration) -> Result<End> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the run")? {
            return Ok(End::Exited(status));
        }
        if Instant::now() >= deadline {
            // Our own child, by its handle: SIGKILL, then reap it.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(End::TimedOut);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Copies lines (the console uses CR LF, and firmware escape sequences) into `output` and
/// `log`, echoing them with `echo`.
fn copy_lines(source: impl Read, output: &Mutex<String>, mut log: File, echo: bool) {
    let mut reader = BufReader::new(source);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = printable(&String::from_utf8_lossy(&raw));
        let line = line.trim_end();
        let _ = writeln!(log, "{line}");
        if echo {
            println!("  | {line}");
        }
        if let Ok(mut output) = output.lock() {
            output.push_str(line);
            output.push('\n');
        }
    }
}

/// The line without terminal escape sequences (SeaBIOS clears the screen on the serial
/// console) and other control characters.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte; other escapes: ESC and one character.
            if chars.next_if_eq(&'[').is_some() {
                for next in chars.by_ref() {
                    if ('@'..='~').contains(&next) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escape_sequences_and_control_characters_are_dropped() {
        assert_eq!(
            printable("\u{1b}c\u{1b}[?7l\u{1b}[2JMATRIX-KERNEL 6.1\r"),
            "MATRIX-KERNEL 6.1"
        );
        assert_eq!(printable("a\tb"), "a\tb");
    }
}
