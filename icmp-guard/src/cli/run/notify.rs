//! The service manager's notification protocol (sd_notify(3)), by hand: a datagram of
//! `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for
//! an abstract socket). systemd starts a `Type=notify` unit's dependents only after
//! `READY=1`, and restarts it when `WATCHDOG=1` stops arriving within `WatchdogSec=`.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call does nothing. A message that cannot
//! be sent is logged once as a warning and never stops the guard: systemd will then time
//! the service out, which says more than an exit would.

use std::{
    cell::Cell,
    os::{
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram},
    },
    time::Duration,
};

/// Why `$NOTIFY_SOCKET` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={value:?} is neither a path nor an @abstract name")]
    BadAddress {
        value: String,
        #[source]
        io_error: Option<std::io::Error>,
    },
    #[error("cannot open a socket to notify systemd")]
    Socket(#[source] std::io::Error),
}

/// Sends state changes to the service manager; see the module docs.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
    /// Whether a failed send was already reported, so a gone manager is not reported every
    /// second.
    warned: Cell<bool>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    address: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for: one that does nothing when it is unset (or
    /// unusable, which is logged), so that callers need no special case.
    pub fn from_env() -> Self {
        let target = match Self::target_from_env() {
            Ok(target) => target,
            Err(err) => {
                log::warn!("cannot notify systemd: {err}");
                None
            }
        };
        Self {
            target,
            warned: Cell::new(false),
        }
    }

    fn target_from_env() -> Result<Option<Target>, NotifyError> {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let value = value.to_string_lossy().into_owned();
        let address = parse_address(&value)?;
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        Ok(Some(Target {
            socket,
            address,
            watchdog: watchdog_from(
                std::env::var("WATCHDOG_USEC").ok().as_deref(),
                std::env::var("WATCHDOG_PID").ok().as_deref(),
                std::process::id(),
            ),
        }))
    }

    /// The watchdog timeout the manager set for this process (`WatchdogSec=`), if any.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.target.as_ref().and_then(|target| target.watchdog)
    }

    /// `READY=1`: start-up is complete; `status` is what `systemctl status` shows.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`, sent only when the manager asked for a watchdog.
    pub fn watchdog(&self) {
        if self.watchdog_timeout().is_some() {
            self.send("WATCHDOG=1");
        }
    }

    /// `STOPPING=1`: the service is shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        match target
            .socket
            .send_to_addr(message.as_bytes(), &target.address)
        {
            Ok(_) => self.warned.set(false),
            Err(err) => {
                if !self.warned.replace(true) {
                    log::warn!("cannot notify systemd ({message:?}): {err}");
                }
            }
        }
    }
}

/// A socket address from `$NOTIFY_SOCKET`: `/path` or `@abstract`.
fn parse_address(value: &str) -> Result<SocketAddr, NotifyError> {
    let bad = |io_error| NotifyError::BadAddress {
        value: value.to_owned(),
        io_error,
    };
    if let Some(name) = value.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(|err| bad(Some(err)))
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value).map_err(|err| bad(Some(err)))
    } else {
        Err(bad(None))
    }
}

/// The watchdog timeout when `WATCHDOG_USEC` is set for this process: `WATCHDOG_PID`,
/// when set, must be ours (a child that inherited the environment must not feed it).
fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|usec| *usec > 0)?;
    match pid {
        Some(pid) if pid.trim().parse::<u32>().ok() != Some(own_pid) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

/// The protocol is line based: a newline in a status would start a new assignment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert_eq!(
            parse_address("/run/systemd/notify")
                .expect("path")
                .as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert_eq!(
            parse_address("@icmp-guard/notify")
                .expect("abstract")
                .as_abstract_name(),
            Some(&b"icmp-guard/notify"[..])
        );
        assert!(matches!(
            parse_address("relative/notify"),
            Err(NotifyError::BadAddress { .. })
        ));
    }

    #[test]
    fn the_watchdog_is_for_the_process_it_names() {
        assert_eq!(
            watchdog_from(Some("10000000"), None, 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            watchdog_from(Some("10000000"), Some("7"), 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(watchdog_from(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("icmp-guard-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let server = UnixDatagram::bind_addr(&address).expect("bind");
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let notifier = Notifier {
            target: Some(Target {
                socket: UnixDatagram::unbound().expect("socket"),
                address: parse_address(&format!("@{name}")).expect("parses"),
                watchdog: Some(Duration::from_secs(10)),
            }),
            warned: Cell::new(false),
        };
        let mut buffer = [0; 256];
        notifier.ready("protecting eth0\nand more");
        let length = server.recv(&mut buffer).expect("READY");
        assert_eq!(
            &buffer[..length],
            b"READY=1\nSTATUS=protecting eth0 and more"
        );
        notifier.watchdog();
        let length = server.recv(&mut buffer).expect("WATCHDOG");
        assert_eq!(&buffer[..length], b"WATCHDOG=1");
    }

    #[test]
    fn without_a_manager_nothing_is_sent_and_nothing_fails() {
        let notifier = Notifier {
            target: None,
            warned: Cell::new(false),
        };
        assert!(notifier.target.is_none());
        notifier.ready("x");
        notifier.watchdog();
        notifier.stopping();
    }
}
