//! The policy file `run` applies and watches: read at start-up, polled, reloaded on SIGHUP;
//! a file that does not parse or validate leaves the last good policy in force. The
//! [`Tracker`] remembers what is in force, for `/readyz` and the fleet metrics.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use icmp_guard::{
    exporter::Reload,
    guard::Guard,
    policy::{self, Policy},
};
use sha2::{Digest as _, Sha256};

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

/// The policy file as it is now (its bytes and the policy), when it is valid.
pub fn current(path: &Path, dry_run: bool) -> Option<(Vec<u8>, Policy)> {
    let text = std::fs::read(path).ok()?;
    let policy = parse(path, &text, dry_run).ok()?;
    Some((text, policy))
}

/// The active generation, for messages.
pub fn generation(guard: &Guard) -> String {
    guard
        .generation()
        .map_or_else(|_| "unknown".to_owned(), |g| g.to_string())
}

/// What a look at the policy file came to.
pub enum Outcome {
    /// The bytes in force did not change, or new bytes wait for the next poll to settle.
    Nothing,
    /// These bytes are now in force.
    Applied(Vec<u8>),
    /// The file cannot be used (unreadable, invalid, or not written to the maps): why.
    Refused(String),
}

/// Checks the policy file and applies it when its bytes changed, or always when `force`
/// (SIGHUP). A file that cannot be read, parsed or applied leaves the live policy alone and
/// is reported once on stderr.
pub fn reload(
    guard: &Guard,
    path: &Path,
    dry_run: bool,
    seen: &mut Option<Seen>,
    force: bool,
) -> Outcome {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(err) => {
            let message = format!("cannot read {}: {err}", path.display());
            if force || !matches!(seen, Some(Seen::Unreadable(m)) if *m == message) {
                eprintln!(
                    "error: {message}; keeping the last good policy (generation {})",
                    generation(guard)
                );
            }
            *seen = Some(Seen::Unreadable(message.clone()));
            return Outcome::Refused(message);
        }
    };
    if !force {
        match seen {
            Some(Seen::Text(old)) if *old == text => return Outcome::Nothing,
            Some(Seen::Settling(old)) if *old == text => {}
            _ => {
                *seen = Some(Seen::Settling(text));
                return Outcome::Nothing;
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
            return Outcome::Refused(format!("refused: {err}"));
        }
    };
    match guard.apply_policy(&parsed) {
        Ok(generation) => {
            *seen = Some(Seen::Text(text.clone()));
            println!(
                "applied policy {} (generation {generation})",
                path.display()
            );
            Outcome::Applied(text)
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
            *seen = Some(Seen::Unreadable(message.clone()));
            Outcome::Refused(message)
        }
    }
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Where the policy file stands, for readiness.
#[derive(Clone, Debug)]
enum FileState {
    /// Not applied yet (no interface to attach to so far).
    Pending,
    /// These bytes (by SHA-256) are in force.
    InForce(String),
    /// The file as last read cannot be used: why.
    Refused(String),
}

/// What `run` knows about its policy file: what is in force, and whether the file as it is
/// now is that. Shared with the readiness check and the fleet metrics.
#[derive(Clone)]
pub struct Tracker {
    path: PathBuf,
    state: Arc<Mutex<FileState>>,
    reload: Arc<Mutex<Reload>>,
}

impl Tracker {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            state: Arc::new(Mutex::new(FileState::Pending)),
            reload: Arc::new(Mutex::new(Reload::default())),
        }
    }

    /// The reload state, for the fleet metrics.
    pub fn reload(&self) -> Reload {
        self.reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records `text` as in force.
    pub fn applied(&self, text: &[u8]) {
        let sha = sha256_hex(text);
        let mut reload = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
        if reload.sha256.as_deref() != Some(sha.as_str()) {
            reload.revision += 1;
        }
        reload.success = true;
        reload.sha256 = Some(sha.clone());
        reload.last_success = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|since| since.as_secs_f64());
        drop(reload);
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = FileState::InForce(sha);
    }

    /// Records that the file as last read cannot be used, and why.
    pub fn refused(&self, why: String) {
        let mut reload = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
        reload.success = false;
        drop(reload);
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = FileState::Refused(why);
    }

    /// Records what a [`reload`] came to.
    pub fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Nothing => {}
            Outcome::Applied(text) => self.applied(&text),
            Outcome::Refused(why) => self.refused(why),
        }
    }

    /// `Ok` when the file as it is on disk now is the policy in force; else why not.
    pub fn ready(&self) -> Result<(), String> {
        let path = self.path.display();
        let state = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match state {
            FileState::Pending => Err(format!("the policy file {path} is not applied yet")),
            FileState::Refused(why) => Err(format!(
                "the policy file {path} is not in force ({why}); the last good policy is"
            )),
            FileState::InForce(sha) => match std::fs::read(&self.path) {
                Ok(text) if sha256_hex(&text) == sha => Ok(()),
                Ok(_) => Err(format!(
                    "the policy file {path} changed and is not applied yet"
                )),
                Err(err) => Err(format!("cannot read the policy file {path}: {err}")),
            },
        }
    }
}
