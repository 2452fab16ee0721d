//! `run --interfaces GLOB`: interfaces chosen by rule follow links as they come and go, and
//! `/readyz` says what is missing meanwhile (issue 17, points 1 and 3). The `auto` rule and
//! the DaemonSet are rehearsed in `fleet_rehearsal.rs`.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::fd::AsRawFd as _,
    time::Duration,
};

use crate::lab::*;

/// `GET path` on the guard namespace's metrics port: (status, body), `None` when nothing
/// answers.
pub fn get(lab: &Lab, path: &str) -> Option<(u16, String)> {
    let ns = format!("/run/netns/{}", lab.guard_ns);
    let path = path.to_owned();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).expect("netns");
        // SAFETY: setns on this thread only; the fd is open.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let address = format!("{GUARD_V4}:9469").parse().expect("address");
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        Some((status, response.split_once("\r\n\r\n")?.1.trim().to_owned()))
    })
    .join()
    .expect("probe thread")
}

fn xdp_on(lab: &Lab, interface: &str) -> bool {
    let output = run(
        "ip",
        &["-n", &lab.guard_ns, "-d", "link", "show", "dev", interface],
    );
    String::from_utf8_lossy(&output.stdout).contains("prog/xdp")
}

#[test]
fn a_glob_follows_interfaces_as_they_come_and_go() {
    if !privileged("a_glob_follows_interfaces_as_they_come_and_go") {
        return;
    }
    let lab = Lab::new();
    // The lab's guard interface is igt<id>g; the glob matches it and the one added below,
    // not the added one's peer, and never lo.
    let stem = lab.guard_if.trim_end_matches('g').to_owned();
    let glob = format!("{stem}*");
    let (extra, extra_peer) = (format!("{stem}x"), format!("zz{}", &stem[3..]));
    let mut service = lab.background(&[
        "run",
        "--interfaces",
        &glob,
        "--metrics",
        &format!("{GUARD_V4}:9469"),
        "--drop-log",
        "0",
    ]);
    service.wait_for("the attach", Duration::from_secs(15), |out, _| {
        out.contains(&format!("attached to {}", lab.guard_if))
    });
    wait_until("ready", || {
        get(&lab, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    assert!(!xdp_on(&lab, "lo"), "a glob never picks lo");
    assert_eq!(
        get(&lab, "/healthz").map(|(status, _)| status),
        Some(200),
        "alive"
    );

    // A new interface that matches: attached within the second's re-evaluation.
    run_ok(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "link",
            "add",
            &extra,
            "type",
            "veth",
            "peer",
            "name",
            &extra_peer,
        ],
    );
    run_ok("ip", &["-n", &lab.guard_ns, "link", "set", &extra, "up"]);
    run_ok(
        "ip",
        &["-n", &lab.guard_ns, "link", "set", &extra_peer, "up"],
    );
    service.wait_for("the new interface", Duration::from_secs(5), |out, _| {
        out.contains(&format!("attached to {extra}"))
    });
    assert!(xdp_on(&lab, &extra), "{extra} is guarded");
    assert!(!xdp_on(&lab, &extra_peer), "{extra_peer} does not match");
    wait_until("ready with both", || {
        get(&lab, "/readyz").is_some_and(|(s, _)| s == 200)
    });

    // Someone detaches it behind the service's back: not ready, with the reason, until the
    // next re-evaluation attaches it again.
    let status = lab.json(&["status", "--json"]);
    assert_eq!(
        status["interfaces"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    lab.cli_ok(&["detach", &extra]);
    let (code, reason) = get(&lab, "/readyz").expect("answer");
    if code == 503 {
        assert!(reason.contains(&extra), "{reason}");
    }
    service.wait_for("the re-attach", Duration::from_secs(5), |out, _| {
        out.matches(&format!("attached to {extra}")).count() >= 2
    });
    wait_until("ready again", || {
        get(&lab, "/readyz").is_some_and(|(s, _)| s == 200)
    });

    // The interface goes away: let go, and still ready (the rest is guarded).
    run_ok("ip", &["-n", &lab.guard_ns, "link", "del", &extra]);
    service.wait_for("letting go", Duration::from_secs(5), |out, _| {
        out.contains(&format!("{extra} is gone"))
    });
    wait_until("ready without it", || {
        get(&lab, "/readyz").is_some_and(|(s, _)| s == 200)
    });

    // No interface left that matches (renamed; a rename needs the link down): not ready,
    // and says so.
    run_ok(
        "ip",
        &["-n", &lab.guard_ns, "link", "set", &lab.guard_if, "down"],
    );
    run_ok(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "link",
            "set",
            &lab.guard_if,
            "name",
            "renamed0",
        ],
    );
    let mut reason = String::new();
    wait_until("unready with nothing to guard", || {
        match get(&lab, "/readyz") {
            Some((503, body)) if body.contains("no interface matches") => {
                reason = body;
                true
            }
            _ => false,
        }
    });
    assert!(reason.contains(&glob), "{reason}");
    service.wait_for(
        "letting go of the renamed one",
        Duration::from_secs(5),
        |out, _| out.contains(&format!("{} is gone", lab.guard_if)),
    );

    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(15)).success());
    let _ = run(
        "ip",
        &[
            "-n",
            &lab.guard_ns,
            "link",
            "set",
            "renamed0",
            "name",
            &lab.guard_if,
        ],
    );
}
