//! The policy file `run` applies and watches: read at start-up, polled, reloaded on SIGHUP;
//! a file that does not parse or validate leaves the last good policy in force.

use std::path::Path;

use icmp_guard::{
    guard::Guard,
    policy::{self, Policy},
};

/// The policy file at start-up.
pub enum Initial {
    Good(Vec<u8>, Policy),
    /// What the watcher saw, and the error to report.
    Refused(Seen, String),
}

impl Initial {
    /// Reads the file at `path`; `--dry-run` overrides its mode.
    pub fn read(path: &Path, dry_run: bool) -> Self {
        match std::fs::read(path) {
            Ok(text) => match parse(path, &text, dry_run) {
                Ok(parsed) => Self::Good(text, parsed),
                Err(err) => Self::Refused(Seen::Text(text), err.to_string()),
            },
            Err(err) => {
                let message = format!("cannot read {}: {err}", path.display());
                Self::Refused(Seen::Unreadable(message.clone()), message)
            }
        }
    }
}

/// What the policy file watcher last saw.
pub enum Seen {
    /// Applied (or refused as invalid): nothing to do until the bytes change.
    Text(Vec<u8>),
    /// New bytes seen once: applied when the next poll reads the same, so that a file an
    /// editor is still writing (truncated, half written) is never applied.
    Settling(Vec<u8>),
    Unreadable(String),
}

/// Parses a policy file's bytes; `--dry-run` overrides its mode.
pub fn parse(path: &Path, text: &[u8], dry_run: bool) -> anyhow::Result<Policy> {
    let text = std::str::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("{}: the file is not UTF-8 text", path.display()))?;
    let mut parsed =
        policy::file::parse(text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    if dry_run {
        parsed.mode = policy::Mode::DryRun;
    }
    Ok(parsed)
}

/// The policy file as it is now, when it is valid.
pub fn current(path: &Path, dry_run: bool) -> Option<Policy> {
    std::fs::read(path)
        .ok()
        .and_then(|text| parse(path, &text, dry_run).ok())
}

/// The active generation, for messages.
pub fn generation(guard: &Guard) -> String {
    guard
        .generation()
        .map_or_else(|_| "unknown".to_owned(), |g| g.to_string())
}

/// Checks the policy file and applies it when its bytes changed, or always when `force`
/// (SIGHUP). A file that cannot be read, parsed or applied leaves the live policy alone and
/// is reported once on stderr.
pub fn reload(guard: &Guard, path: &Path, dry_run: bool, seen: &mut Option<Seen>, force: bool) {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(err) => {
            let message = err.to_string();
            if force || !matches!(seen, Some(Seen::Unreadable(m)) if *m == message) {
                eprintln!(
                    "error: cannot read {}: {message}; keeping the last good policy (generation {})",
                    path.display(),
                    generation(guard)
                );
            }
            *seen = Some(Seen::Unreadable(message));
            return;
        }
    };
    if !force {
        match seen {
            Some(Seen::Text(old)) if *old == text => return,
            Some(Seen::Settling(old)) if *old == text => {}
            _ => {
                *seen = Some(Seen::Settling(text));
                return;
            }
        }
    }
    let parsed = match parse(path, &text, dry_run) {
        Ok(parsed) => parsed,
        Err(err) => {
            // Reported once: the file stays refused until its bytes change.
            *seen = Some(Seen::Text(text));
            eprintln!(
                "error: {err}; keeping the last good policy (generation {})",
                generation(guard)
            );
            return;
        }
    };
    match guard.apply_policy(&parsed) {
        Ok(generation) => {
            *seen = Some(Seen::Text(text));
            println!(
                "applied policy {} (generation {generation})",
                path.display()
            );
        }
        // A valid file that could not be written (a passing error) is tried again on the
        // next poll: `seen` stays as it was. Reported once per distinct error.
        Err(err) => {
            let message = format!("applying {}: {err}", path.display());
            if force || !matches!(seen, Some(Seen::Unreadable(m)) if *m == message) {
                eprintln!(
                    "error: {message}; keeping the last good policy (generation {}) and retrying",
                    generation(guard)
                );
            }
            *seen = Some(Seen::Unreadable(message));
        }
    }
}
