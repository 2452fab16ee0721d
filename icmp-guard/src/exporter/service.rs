//! What `run` serves beside `/metrics`: whether it is ready (`/readyz`), whether its service
//! loop is alive (`/healthz`), and the policy file's reload state for the fleet metrics.
//!
//! `run` owns the facts; the HTTP server only asks. Readiness is computed when asked, from
//! the interfaces and the policy file as they are at that moment, so a probe never reports
//! a state older than itself.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How long the service loop may go without a beat before `/healthz` says it is stuck. The
/// loop beats at least every second (its watchdog), so this leaves room for a slow attach.
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(30);

/// The policy file's reload state, as the fleet metrics expose it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reload {
    /// Whether the file as last read is in force: false after a file that was refused or
    /// could not be read (the last good policy then stays in force).
    pub success: bool,
    /// When a version of the file was last applied, in seconds since the epoch.
    pub last_success: Option<f64>,
    /// The SHA-256 of the file version in force, in hex.
    pub sha256: Option<String>,
}

type Readiness = Box<dyn Fn() -> Result<(), String> + Send + Sync>;
type ReloadState = Box<dyn Fn() -> Option<Reload> + Send + Sync>;

/// What `run` lets its HTTP server ask.
pub struct Service {
    readiness: Readiness,
    reload: ReloadState,
    heartbeat: Mutex<Instant>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// `readiness` answers `Ok` when the service is ready, else the one-line reason why not;
    /// it runs on a blocking thread for each probe. `reload` gives the policy file's reload
    /// state, `None` without a policy file.
    pub fn new(
        readiness: impl Fn() -> Result<(), String> + Send + Sync + 'static,
        reload: impl Fn() -> Option<Reload> + Send + Sync + 'static,
    ) -> Self {
        Self {
            readiness: Box::new(readiness),
            reload: Box::new(reload),
            heartbeat: Mutex::new(Instant::now()),
        }
    }

    /// The service loop ran.
    pub fn beat(&self) {
        *self
            .heartbeat
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// The policy file's reload state, for the fleet metrics.
    pub fn reload(&self) -> Option<Reload> {
        (self.reload)()
    }

    /// `Ok` when ready, else why not, in one line.
    pub fn ready(&self) -> Result<(), String> {
        (self.readiness)().map_err(|reason| reason.replace(['\r', '\n'], " "))
    }

    /// `Ok` while the service loop beats, else how long it has been silent.
    pub fn alive(&self) -> Result<(), String> {
        let silent = self
            .heartbeat
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        if silent > LIVENESS_LIMIT {
            Err(format!(
                "the service loop has not run for {} s",
                silent.as_secs()
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    #[test]
    fn readiness_is_asked_each_time_and_kept_to_one_line() {
        let ready = Arc::new(AtomicBool::new(false));
        let seen = ready.clone();
        let service = Service::new(
            move || {
                if seen.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("eth0 is not protected:\nits link was removed".to_owned())
                }
            },
            || None,
        );
        assert_eq!(
            service.ready(),
            Err("eth0 is not protected: its link was removed".to_owned())
        );
        ready.store(true, Ordering::Relaxed);
        assert_eq!(service.ready(), Ok(()));
    }

    #[test]
    fn a_silent_loop_is_not_alive() {
        let service = Service::new(|| Ok(()), || None);
        assert_eq!(service.alive(), Ok(()));
        *service.heartbeat.lock().expect("lock") = Instant::now()
            .checked_sub(LIVENESS_LIMIT + Duration::from_secs(1))
            .expect("uptime");
        let error = service.alive().expect_err("stuck");
        assert!(error.contains("has not run for"), "{error}");
        service.beat();
        assert_eq!(service.alive(), Ok(()));
    }
}
