//! A process running beside a test (the CLI in service mode, a flood), its output in
//! files so that nothing blocks on a full pipe. Killed and reaped in `Drop` if it is still
//! running, so a failing test leaves no process behind.

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use super::lab::Lab;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Background {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Background {
    /// Starts `command`; `what` names it in failures and in its output files.
    pub fn spawn(what: &str, mut command: Command) -> Self {
        let base = std::env::temp_dir().join(format!(
            "icmp-guard-bg-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let (out, err) = (base.with_extension("out"), base.with_extension("err"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|err| panic!("starting {what}: {err}"));
        Self { child, out, err }
    }

    /// `program ARGS`.
    pub fn start(what: &str, program: &str, args: &[&str]) -> Self {
        let mut command = Command::new(program);
        command.args(args);
        Self::spawn(what, command)
    }

    /// `icmp-guard ARGS` in the lab's guard namespace with its pin directory.
    pub fn guard(lab: &Lab, args: &[&str]) -> Self {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", lab.guard_ns))
            .arg(env!("CARGO_BIN_EXE_icmp-guard"))
            .args(args)
            .env("ICMP_GUARD_PIN_DIR", &lab.pin_dir)
            .env_remove("NO_COLOR");
        Self::spawn("icmp-guard", command)
    }

    /// The process id (nsenter execs the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until `condition(stdout, stderr)`; fails with both after `timeout`, or at
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
                panic!("exited ({status}) before {what}\nstdout:\n{out}\nstderr:\n{err}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nstdout:\n{out}\nstderr:\n{err}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        // nsenter execs the program, so the child's pid is the program's.
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
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
                "still running after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}
