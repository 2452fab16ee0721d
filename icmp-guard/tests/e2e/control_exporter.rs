//! The metrics server under abuse (issue 15, point 12): a peer that opens a thousand idle
//! connections, or dribbles its requests slow-loris style, cannot stop the scraper: at
//! least 9 of 10 scrapes succeed under both. Listening beyond loopback draws a warning.
//! Lab of `lab.rs` (namespaces removed in `Drop`); the attack is bounded in
//! connections and seconds.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::lab::*;

/// Runs `work` on a thread that joined network namespace `ns` (setns changes only the
/// calling thread's).
fn in_ns<T: Send + 'static>(
    ns: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("netns file");
        // SAFETY: a valid namespace fd; affects only this thread.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        work()
    })
}

/// Ten scrapes of 127.0.0.1:`port` from the guard namespace, 2 s timeout each: how many
/// came back 200 with the exposition.
fn scrapes(lab: &Lab, port: u16) -> usize {
    in_ns(&lab.guard_ns, move || {
        (0..10)
            .filter(|_| {
                let started = Instant::now();
                let ok =
                    (|| -> std::io::Result<bool> {
                        let mut stream = TcpStream::connect_timeout(
                            &([127, 0, 0, 1], port).into(),
                            Duration::from_secs(2),
                        )?;
                        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
                        let mut response = String::new();
                        stream.read_to_string(&mut response)?;
                        Ok(response.starts_with("HTTP/1.1 200")
                            && response.contains("icmp_guard_up 1"))
                    })()
                    .unwrap_or(false);
                std::thread::sleep(Duration::from_millis(100).saturating_sub(started.elapsed()));
                ok
            })
            .count()
    })
    .join()
    .expect("scraper")
}

/// Raises this process's open-files limit to `wanted` (the attacker's sockets).
fn raise_nofile(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(wanted.max(limit.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

#[test]
fn scrapes_keep_succeeding_under_idle_and_slow_loris_clients() {
    let lab = lab_or_skip!("scrapes_keep_succeeding_under_abuse");
    raise_nofile(4096);
    lab.cli_ok(&["attach", &lab.guard_if]);
    let mut server = lab.background(&["metrics", "--listen", "0.0.0.0:0"]);
    server.wait_for("the server", Duration::from_secs(10), |out, _| {
        out.contains("serving metrics on")
    });
    let port: u16 = server
        .stdout()
        .split("serving metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .and_then(|authority| authority.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .expect("port");
    assert_eq!(scrapes(&lab, port), 10, "undisturbed");

    // A thousand idle connections from the peer.
    let idle = in_ns(&lab.peer_ns, move || {
        (0..1000)
            .filter_map(|_| {
                TcpStream::connect_timeout(&([192, 0, 2, 1], port).into(), Duration::from_secs(2))
                    .ok()
            })
            .collect::<Vec<_>>()
    })
    .join()
    .expect("attacker");
    eprintln!("{} idle connections opened", idle.len());
    let served = scrapes(&lab, port);
    eprintln!(
        "{served} of 10 scrapes succeeded beside {} idle connections",
        idle.len()
    );
    assert!(
        served >= 9,
        "{served} of 10 scrapes with 1000 idle connections"
    );
    drop(idle);

    // Slow loris: 200 connections sending one byte of a request every 500 ms, for 8 s.
    let stop = Arc::new(AtomicBool::new(false));
    let attacking = Arc::clone(&stop);
    let loris = in_ns(&lab.peer_ns, move || {
        let mut streams: Vec<TcpStream> = (0..200)
            .filter_map(|_| {
                TcpStream::connect_timeout(&([192, 0, 2, 1], port).into(), Duration::from_secs(2))
                    .ok()
            })
            .collect();
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n";
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut sent = 0;
        while Instant::now() < deadline && !attacking.load(Ordering::Relaxed) {
            let byte = [request[sent % request.len()]];
            streams.retain_mut(|stream| stream.write_all(&byte).is_ok());
            // Reconnect what the server closed, as an attacker would.
            while streams.len() < 200 {
                match TcpStream::connect_timeout(
                    &([192, 0, 2, 1], port).into(),
                    Duration::from_millis(200),
                ) {
                    Ok(stream) => streams.push(stream),
                    Err(_) => break,
                }
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let served = scrapes(&lab, port);
    stop.store(true, Ordering::Relaxed);
    loris.join().expect("slow loris");
    eprintln!("{served} of 10 scrapes succeeded beside a slow-loris client");
    assert!(served >= 9, "{served} of 10 scrapes under slow loris");
    assert!(
        server.stderr().contains("beyond loopback"),
        "a warning for 0.0.0.0: {}",
        server.stderr()
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}
