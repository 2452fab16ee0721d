//! The traffic tools, run inside a namespace, and the parsers of what they print:
//! `ping` (iputils and busybox), `hping3` and `trafgen`.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    Error, Result,
    process::{self, nsenter},
};

/// (transmitted, received) from a "N packets transmitted, M (packets) received" line, as
/// ping, busybox ping and hping3 print it.
pub fn summary(text: &str) -> Option<(u64, u64)> {
    text.lines().find_map(|line| {
        let (sent, rest) = line.split_once(" packets transmitted, ")?;
        let sent = sent.trim().parse().ok()?;
        let received = rest.split_whitespace().next()?.parse().ok()?;
        Some((sent, received))
    })
}

/// [`summary`], or an error that shows the text.
pub fn summary_in(tool: &str, text: &str) -> Result<(u64, u64)> {
    summary(text).ok_or_else(|| Error::Output {
        what: format!("{tool} summary"),
        output: text.to_owned(),
    })
}

/// `icmp_seq=N` in a ping line.
pub fn icmp_seq(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("icmp_seq=")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `ping ARGS` in `ns`.
pub fn ping(ns: &str, args: &[&str]) -> Command {
    let mut command = nsenter(ns, "ping");
    command.args(args);
    command
}

/// `count` quick pings from `ns` to `target` (0.2 s apart, 1 s for each reply); returns
/// how many were answered.
pub fn replies(ns: &str, target: &str, count: u32) -> Result<u64> {
    let count = count.to_string();
    let args = ["-c", &count, "-i", "0.2", "-W", "1", "-q", target];
    let output = process::output(&mut ping(ns, &args))?;
    summary_in("ping", &process::text(&output)).map(|(_, received)| received)
}

/// hping3's arguments for ICMP "fragmentation needed" (3/4), the PMTUD message no guard
/// may ever charge to a budget.
pub const FRAG_NEEDED: [&str; 5] = ["--icmp", "--icmptype", "3", "--icmpcode", "4"];

/// `hping3 ARGS` in `ns`, stopped with SIGINT after `seconds` whatever happens, so a flood
/// is always bounded in time.
pub fn hping3(ns: &str, seconds: u32, args: &[&str]) -> Command {
    let mut command = nsenter(ns, "timeout");
    command
        .args(["-s", "INT", &seconds.to_string(), "hping3"])
        .args(args);
    command
}

/// Runs [`hping3`] and returns everything it printed (replies on stdout, the summary on
/// stderr) with its (transmitted, received) summary.
pub fn hping3_summary(ns: &str, seconds: u32, args: &[&str]) -> Result<(String, (u64, u64))> {
    let output = process::output(&mut hping3(ns, seconds, args))?;
    let text = process::text(&output);
    let counts = summary_in("hping3", &text)?;
    Ok((text, counts))
}

/// `trafgen` in `ns`, sending `packets` frames described by `config` out of `dev`: one
/// process, a fixed seed (so every run sends the same spoofed sources), and the machine's
/// socket memory and IRQ affinities left alone.
pub fn trafgen(ns: &str, dev: &str, config: &Path, packets: u64) -> Command {
    let mut command = nsenter(ns, "trafgen");
    command
        .args(["--dev", dev, "--conf"])
        .arg(config)
        .args(["--num", &packets.to_string()])
        .args(["--cpus", "1", "--seed", "1"])
        .args(["--no-sock-mem", "--notouch-irq", "--no-cpu-stats"]);
    command
}

/// A `ping -O -i 1` running in the background, its replies followed line by line.
pub struct Pinger {
    child: Child,
    log: Arc<Mutex<PingLog>>,
    reader: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct PingLog {
    replies: BTreeSet<u64>,
    highest: u64,
    summary: Option<(u64, u64)>,
}

/// How a [`Pinger`]'s pings went.
pub struct PingTally {
    pub transmitted: u64,
    pub received: u64,
    /// Sequence numbers without a reply.
    pub missing: Vec<u64>,
}

impl Pinger {
    /// Starts pinging `target` from `ns` once a second; returns the pinger and the
    /// command as a user would type it.
    pub fn start(ns: &str, target: &str) -> Result<(Self, String)> {
        let args = ["-O", "-i", "1", target];
        let mut command = ping(ns, &args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            command: process::display(&command),
            source,
        })?;
        let stdout = child.stdout.take().ok_or_else(|| Error::Output {
            what: "stdout pipe".to_owned(),
            output: process::display(&command),
        })?;
        let log = Arc::new(Mutex::new(PingLog::default()));
        let shared = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut log = shared.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(seq) = icmp_seq(&line) {
                    log.highest = log.highest.max(seq);
                    // With -O, ping also prints "no answer yet for icmp_seq=N" when it
                    // sends the next request without a reply to this one.
                    if line.contains(" bytes from ") {
                        log.replies.insert(seq);
                    }
                } else if let Some(counts) = summary(&line) {
                    log.summary = Some(counts);
                }
            }
        });
        let shown = format!("ping {}", args.join(" "));
        let pinger = Self {
            child,
            log,
            reader: Some(reader),
        };
        Ok((pinger, shown))
    }

    fn lock(&self) -> MutexGuard<'_, PingLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replies so far.
    pub fn replies(&self) -> usize {
        self.lock().replies.len()
    }

    /// Sequence numbers below the highest one sent that got no reply so far.
    pub fn missing(&self) -> Vec<u64> {
        let log = self.lock();
        (1..log.highest)
            .filter(|seq| !log.replies.contains(seq))
            .collect()
    }

    /// Waits until `count` replies have come, at most `limit`; false if they did not.
    pub fn wait_for_replies(&self, count: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.replies() < count {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Stops ping right after a reply, so no request is in flight, and returns its tally.
    pub fn stop(mut self) -> Result<PingTally> {
        let answered = self.replies();
        self.wait_for_replies(answered + 1, Duration::from_secs(3));
        self.interrupt();
        let status = self.child.wait().map_err(|source| Error::Io {
            what: "waiting for ping".to_owned(),
            source,
        })?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self.lock();
        let (transmitted, received) = log.summary.ok_or_else(|| Error::Output {
            what: "ping summary".to_owned(),
            output: format!("ping ended ({status}) without one"),
        })?;
        let missing = (1..=transmitted)
            .filter(|seq| !log.replies.contains(seq))
            .collect();
        Ok(PingTally {
            transmitted,
            received,
            missing,
        })
    }

    fn interrupt(&self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signalling our own child, which has not been waited for yet.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        // Only reached without `stop`, after a failure: end our ping.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.interrupt();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{icmp_seq, summary};

    #[test]
    fn summaries_of_ping_busybox_and_hping3() {
        let iputils = "--- 192.0.2.1 ping statistics ---\n\
                       5 packets transmitted, 3 received, 40% packet loss, time 802ms\n";
        assert_eq!(summary(iputils), Some((5, 3)));
        let busybox = "2 packets transmitted, 0 packets received, 100% packet loss\n";
        assert_eq!(summary(busybox), Some((2, 0)));
        let hping3 = "--- 192.0.2.1 hping statistic ---\n\
                      20 packets transmitted, 20 packets received, 0% packet loss\n";
        assert_eq!(summary(hping3), Some((20, 20)));
        assert_eq!(summary("ping: connect: Network is unreachable"), None);
    }

    #[test]
    fn sequence_numbers_of_replies_and_of_missing_answers() {
        assert_eq!(
            icmp_seq("64 bytes from 192.0.2.1: icmp_seq=12 ttl=64 time=0.05 ms"),
            Some(12)
        );
        assert_eq!(icmp_seq("no answer yet for icmp_seq=3"), Some(3));
        assert_eq!(
            icmp_seq("PING 192.0.2.1 (192.0.2.1) 56(84) bytes of data."),
            None
        );
    }
}
