//! Commands inside a namespace, checked runs, and processes that run beside a test or a
//! demo and are killed when dropped.

use std::{
    ffi::OsStr,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{Error, Result};

/// Where `ip netns add` leaves a namespace's handle.
pub fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// `program` in the network namespace `ns`.
///
/// nsenter joins only the network namespace; `ip netns exec` would also remount /sys for
/// the namespace, hiding the host's bpffs and with it every pin.
pub fn nsenter(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", netns_path(ns).display()))
        .arg(program);
    command
}

/// Renders a command the way a user would type it, for `$ ...` lines and errors.
pub fn display(command: &Command) -> String {
    let envs = command.get_envs().filter_map(|(key, value)| {
        // PATH is set on every xtask command; showing it would only add noise.
        let value = value.filter(|_| key != "PATH")?;
        Some(format!("{}={}", key.to_string_lossy(), quote(value)))
    });
    let program = std::iter::once(quote(command.get_program()));
    let args = command.get_args().map(quote);
    envs.chain(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+@,%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs the command quietly and returns its output, whatever its exit status.
pub fn output(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: display(command),
            source,
        })
}

/// Runs the command quietly; a non-zero exit is an error. Returns stdout.
pub fn run(command: &mut Command) -> Result<String> {
    let output = output(command)?;
    if !output.status.success() {
        return Err(Error::Failed {
            command: display(command),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// stdout and stderr of a finished command, one after the other (hping3 prints its summary
/// on stderr, ping on stdout).
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A process running beside a test (the CLI in service mode, a flood), its output in
/// files so that nothing blocks on a full pipe. Killed and reaped in `Drop` if it is still
/// running, so a failure leaves no process behind.
pub struct Background {
    child: Child,
    what: String,
    out: PathBuf,
    err: PathBuf,
}

impl Background {
    /// Starts `command`; `what` names it in failures and in its output files.
    pub fn spawn(what: &str, mut command: Command) -> Result<Self> {
        let base = std::env::temp_dir().join(format!(
            "icmp-guard-bg-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let (out, err) = (base.with_extension("out"), base.with_extension("err"));
        let create = |path: &Path| {
            File::create(path).map_err(|source| Error::Io {
                what: format!("creating {}", path.display()),
                source,
            })
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(create(&out)?)
            .stderr(create(&err)?)
            .spawn()
            .map_err(|source| Error::Spawn {
                command: display(&command),
                source,
            })?;
        Ok(Self {
            child,
            what: what.to_owned(),
            out,
            err,
        })
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until `condition(stdout, stderr)`; panics with both after `timeout`, or at
    /// once if the process ends first.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&str, &str) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let (out, err) = (self.stdout(), self.stderr());
            if condition(&out, &err) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {what}\nstdout:\n{out}\nstderr:\n{err}",
                    self.what
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nstdout:\n{out}\nstderr:\n{err}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    /// The process id (nsenter execs its program, so that is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` to the process (nsenter execs its program, so that is the program).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {signal}");
    }

    /// Waits for the process to end, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.what,
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to end by itself (a bounded flood, a counted ping) and
    /// returns its stdout and stderr together.
    pub fn finish(mut self, timeout: Duration) -> String {
        self.wait_exit(timeout);
        format!("{}{}", self.stdout(), self.stderr())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Our own child, by its handle: SIGKILL, then reap it.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}
