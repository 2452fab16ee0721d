//! The policy file `run` applies and watches. The file is read on a thread of its own
//! (under the rules of every policy reader: a regular file, at most 4 MiB), so that a file
//! that blocks (on a hung file system) never stalls the loop that serves the watchdog,
//! signals and metrics. Reads come back through a channel: a poll every 250 ms, and one on
//! SIGHUP. A change is applied once two polls read the same bytes (so a half-written file
//! never is); a file that does not parse or validate is reported once while the last good
//! policy stays in force. The [`Tracker`] remembers what is in force, for `/readyz` and
//! the fleet metrics.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, mpsc},
    time::{Duration, SystemTime},
};

use icmp_guard::{
    exporter::Reload,
    guard::Guard,
    policy::{self, Policy},
};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// One read of the file, done by the reader thread.
pub struct Read {
    /// On SIGHUP: apply whatever the file holds, at once.
    forced: bool,
    text: Result<String, String>,
}

/// What the watcher last saw.
enum Seen {
    /// Applied (or refused as invalid): nothing to do until the bytes change.
    Text(String),
    /// New bytes seen once: applied when the next poll reads the same.
    Settling(String),
    /// The file could not be read, or a valid file could not be applied: the message.
    Failed(String),
}

/// The watched policy file.
pub struct PolicyFile {
    path: PathBuf,
    dry_run: bool,
    requests: mpsc::Sender<bool>,
    reads: UnboundedReceiver<Read>,
    /// A read was asked for and has not come back: no second one is queued behind it.
    in_flight: bool,
    /// A SIGHUP came while a read was in flight.
    forced_pending: bool,
    seen: Option<Seen>,
    /// The last policy of the file that parsed, for attaching again.
    pub last_good: Option<Policy>,
    /// What is in force, shared with readiness and the metrics.
    tracker: Tracker,
}

/// Parses a policy file's text; `--dry-run` overrides its mode.
fn parse(path: &Path, text: &str, dry_run: bool) -> Result<Policy, String> {
    let mut parsed =
        policy::file::parse_any(text).map_err(|err| format!("{}: {err}", path.display()))?;
    if dry_run {
        parsed.mode = policy::Mode::DryRun;
    }
    Ok(parsed)
}

/// The revision of the live policy, for messages.
pub fn revision(guard: &Guard) -> String {
    guard
        .revision()
        .map_or_else(|_| "unknown".to_owned(), |r| r.to_string())
}

impl PolicyFile {
    /// Starts the reader thread of `path`.
    pub fn watch(path: PathBuf, dry_run: bool) -> Self {
        let (requests, incoming) = mpsc::channel::<bool>();
        let (results, reads) = unbounded_channel();
        let reader_path = path.clone();
        let path_for_tracker = path.clone();
        std::thread::Builder::new()
            .name("policy-reader".to_owned())
            .spawn(move || {
                while let Ok(forced) = incoming.recv() {
                    let text = policy::file::read_text(&reader_path).map_err(|err| err.to_string());
                    if results.send(Read { forced, text }).is_err() {
                        return;
                    }
                }
            })
            .map_or_else(
                |err| complain!("error: cannot start the policy reader: {err}"),
                drop,
            );
        Self {
            path,
            dry_run,
            requests,
            reads,
            in_flight: false,
            forced_pending: false,
            seen: None,
            last_good: None,
            tracker: Tracker::new(path_for_tracker),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is in force, for readiness and the metrics.
    pub fn tracker(&self) -> Tracker {
        self.tracker.clone()
    }

    /// The first read (see [`Self::initial`]) could not be applied yet (no interface to
    /// attach to so far): the first read once there are maps applies it.
    pub fn defer_initial(&mut self) {
        self.seen = None;
    }

    /// The first read (see [`Self::initial`]) is in force now: a first attach applied it.
    pub fn initial_applied(&self) {
        if let Some(Seen::Text(text)) = &self.seen {
            self.tracker.applied(text.as_bytes());
        }
    }

    /// Asks for a read (`forced` on SIGHUP) unless one is in flight.
    pub fn request(&mut self, forced: bool) {
        if self.in_flight {
            self.forced_pending |= forced;
            return;
        }
        if self.requests.send(forced).is_ok() {
            self.in_flight = true;
        }
    }

    /// The next read that comes back.
    pub async fn next_read(&mut self) -> Option<Read> {
        let read = self.reads.recv().await;
        self.in_flight = false;
        if std::mem::take(&mut self.forced_pending) {
            self.request(true);
        }
        read
    }

    /// The file at start-up, waiting up to `patience` for the reader: the policy to attach
    /// with when it is good, or the error to report. Without an answer in time the service
    /// starts with the live policy and applies the file when it comes.
    pub async fn initial(&mut self, patience: Duration) -> Result<Policy, String> {
        self.request(false);
        let read = tokio::time::timeout(patience, self.next_read())
            .await
            .map_err(|_| {
                format!(
                    "reading {} took longer than {} s (a hung file system?)",
                    self.path.display(),
                    patience.as_secs()
                )
            })?
            .ok_or_else(|| format!("cannot read {}", self.path.display()))?;
        match read.text {
            Ok(text) => match parse(&self.path, &text, self.dry_run) {
                Ok(parsed) => {
                    self.seen = Some(Seen::Text(text));
                    self.last_good = Some(parsed.clone());
                    Ok(parsed)
                }
                Err(err) => {
                    self.seen = Some(Seen::Text(text));
                    self.tracker.refused(format!("refused: {err}"));
                    Err(err)
                }
            },
            Err(err) => {
                self.seen = Some(Seen::Failed(err.clone()));
                self.tracker.refused(err.clone());
                Err(err)
            }
        }
    }

    /// Acts on one read: applies the file when its bytes changed and settled, or at once
    /// when forced. A file that cannot be read, parsed or applied leaves the live policy
    /// alone and is reported once on stderr.
    pub fn handle(&mut self, guard: &Guard, read: Read) {
        let Read { forced, text } = read;
        let text = match text {
            Ok(text) => text,
            Err(message) => {
                if forced || !matches!(&self.seen, Some(Seen::Failed(m)) if *m == message) {
                    complain!(
                        "error: {message}; keeping the last good policy (revision {})",
                        revision(guard)
                    );
                }
                self.tracker.refused(message.clone());
                self.seen = Some(Seen::Failed(message));
                return;
            }
        };
        if !forced {
            match &self.seen {
                Some(Seen::Text(old)) if *old == text => return,
                Some(Seen::Settling(old)) if *old == text => {}
                _ => {
                    self.seen = Some(Seen::Settling(text));
                    return;
                }
            }
        }
        let parsed = match parse(&self.path, &text, self.dry_run) {
            Ok(parsed) => parsed,
            Err(err) => {
                // Reported once: the file stays refused until its bytes change.
                self.seen = Some(Seen::Text(text));
                self.tracker.refused(format!("refused: {err}"));
                complain!(
                    "error: {err}; keeping the last good policy (revision {})",
                    revision(guard)
                );
                return;
            }
        };
        self.last_good = Some(parsed.clone());
        match guard.apply_policy(&parsed) {
            Ok(revision) => {
                self.tracker.applied(text.as_bytes());
                self.seen = Some(Seen::Text(text));
                say!(
                    "applied policy {} (revision {revision})",
                    self.path.display()
                );
            }
            // A valid file that could not be written (a passing error) is tried again on
            // the next poll: reported once per distinct error.
            Err(err) => {
                let message = format!("applying {}: {err}", self.path.display());
                if forced || !matches!(&self.seen, Some(Seen::Failed(m)) if *m == message) {
                    complain!(
                        "error: {message}; keeping the last good policy (revision {}) and retrying",
                        revision(guard)
                    );
                }
                self.tracker.refused(message.clone());
                self.seen = Some(Seen::Failed(message));
            }
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
            // Under the rules of every policy reader: a FIFO put there never blocks a probe.
            FileState::InForce(sha) => match policy::file::read_text(&self.path) {
                Ok(text) if sha256_hex(text.as_bytes()) == sha => Ok(()),
                Ok(_) => Err(format!(
                    "the policy file {path} changed and is not applied yet"
                )),
                Err(err) => Err(err.to_string()),
            },
        }
    }
}
