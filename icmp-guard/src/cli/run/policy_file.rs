//! The policy file `run` applies and watches. The file is read on a thread of its own
//! (under the rules of every policy reader: a regular file, at most 4 MiB), so that a file
//! that blocks (on a hung file system) never stalls the loop that serves the watchdog,
//! signals and metrics. Reads come back through a channel: a poll every 250 ms, and one on
//! SIGHUP. A change is applied once two polls read the same bytes (so a half-written file
//! never is); a file that does not parse or validate is reported once while the last good
//! policy stays in force.

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    time::Duration,
};

use icmp_guard::{
    guard::Guard,
    policy::{self, Policy},
};
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
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
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
                    Err(err)
                }
            },
            Err(err) => {
                self.seen = Some(Seen::Failed(err.clone()));
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
                self.seen = Some(Seen::Failed(message));
            }
        }
    }
}
