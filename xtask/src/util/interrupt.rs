//! Turns Ctrl-C into an ordinary error for the demo, so its cleanup (a `Drop`) still runs.
//!
//! By default SIGINT kills xtask on the spot and leaves namespaces, an attached XDP program
//! and bpffs pins behind. A handler (unlike `SIG_IGN`) is reset to the default action by
//! `exec`, so Ctrl-C still stops the ping or icmp-guard that is running; the demo then sees
//! that step fail, or sees the flag at its next [`check`], and unwinds through the cleanup.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn record(_signal: libc::c_int) {
    // Storing to an atomic is async-signal-safe; anything more is left to `check`.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Records SIGINT, SIGTERM and SIGHUP instead of dying from them.
pub fn catch() -> Result<()> {
    let handler = record as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `record` only touches an atomic, so it is safe to run at any point.
        // glibc's `signal` installs it with SA_RESTART, so blocking calls such as waiting
        // for a child resume after it runs.
        let previous = unsafe { libc::signal(signal, handler) };
        if previous == libc::SIG_ERR {
            bail!(
                "installing a handler for signal {signal}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Fails once a signal has arrived, so the demo stops before its next step.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}
