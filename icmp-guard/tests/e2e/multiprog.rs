//! `attach --multiprog`: icmp-guard as one program of a libxdp dispatcher, beside
//! xdp-filter (xdp-tools), on the same interface, each dropping what it drops; `detach`
//! leaves xdp-filter running.
//!
//! Where the kernel refuses program extensions (`BPF_PROG_TYPE_EXT`), libxdp itself falls
//! back to loading xdp-filter as a single program without a dispatcher, and nothing can join
//! it: these tests then check what the guard promises there instead, that it refuses in one
//! sentence and leaves the interface as it was, with xdp-filter still dropping.

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use icmp_guard_lab::gate;

use crate::lab::{GUARD_V4, Lab, PEER_V4, one_sentence, output, wait_until};

/// The source xdp-filter's rule drops, a second address of the peer.
const FILTERED_V4: &str = "192.0.2.99";

/// xdp-filter keeps one state for the whole machine (`/sys/fs/bpf/xdp-filter`, its rules
/// shared by every interface, removed by the last unload): one test at a time uses it.
fn one_xdp_filter_at_a_time() -> MutexGuard<'static, ()> {
    static XDP_FILTER: Mutex<()> = Mutex::new(());
    XDP_FILTER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lab, with the peer also at [`FILTERED_V4`], and xdp-filter to itself.
fn lab(test: &'static str) -> Option<(MutexGuard<'static, ()>, Lab)> {
    if !crate::lab::privileged(test) {
        return None;
    }
    let turn = one_xdp_filter_at_a_time();
    let lab = Lab::of_kind("multiprog");
    lab.add_peer_address(FILTERED_V4);
    Some((turn, lab))
}

/// xdp-filter (or another xdp-tools program) in the guard namespace; its output.
fn xdp_tool(lab: &Lab, tool: &str, args: &[&str]) -> String {
    let out = output(lab.command(&lab.guard_ns, tool).args(args));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {args:?} failed: {text}");
    text
}

/// Loads xdp-filter on the guard's interface with a rule that drops [`FILTERED_V4`].
fn load_xdp_filter(lab: &Lab) {
    xdp_tool(lab, "xdp-filter", &["load", &lab.guard_if]);
    xdp_tool(lab, "xdp-filter", &["ip", FILTERED_V4, "-m", "src"]);
}

/// Removes xdp-filter again (the test's clean-up; a failure fails the test).
struct XdpFilter<'a>(&'a Lab);

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        let lab = self.0;
        let out = output(
            lab.command(&lab.guard_ns, "xdp-filter")
                .args(["unload", &lab.guard_if]),
        );
        if !out.status.success() && !std::thread::panicking() {
            panic!(
                "xdp-filter unload: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Echo replies the guard sends for `count` pings from `source` (one of the peer's).
fn pings_from(lab: &Lab, source: &str, count: u32) -> u32 {
    let count = count.to_string();
    let out = output(lab.command(&lab.peer_ns, "ping").args([
        "-n", "-q", "-c", &count, "-i", "0.2", "-W", "1", "-I", source, GUARD_V4,
    ]));
    crate::lab::ping_replies(&String::from_utf8_lossy(&out.stdout))
}

/// What runs on the guard's interface: (program name, id), as the kernel names it.
fn xdp_program(lab: &Lab) -> Option<(String, u64)> {
    crate::lab::xdp_program(&lab.guard_ns, &lab.guard_if)
}

/// `stderr` is one sentence saying that the kernel refuses program extensions and that
/// nothing was changed, and nothing was: the interface runs no XDP program, nothing pinned.
fn assert_refused_without_extensions(lab: &Lab, stderr: &str) {
    let err = one_sentence(stderr);
    assert!(
        err.contains("refuses program extensions") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(
        xdp_program(lab),
        None,
        "the interface runs nothing, as before"
    );
    assert!(!lab.pin_dir.exists(), "nothing pinned");
}

/// xdp-filter drops [`FILTERED_V4`] and lets the peer's own address through.
fn assert_xdp_filter_drops(lab: &Lab, when: &str) {
    assert_eq!(
        pings_from(lab, FILTERED_V4, 3),
        0,
        "{when}: xdp-filter drops"
    );
    assert_eq!(pings_from(lab, PEER_V4, 3), 3, "{when}: other pings pass");
}

#[test]
fn multiprog_joins_xdp_filters_dispatcher_and_detach_leaves_it() {
    let Some((_turn, lab)) = lab("multiprog_joins_xdp_filters_dispatcher_and_detach_leaves_it")
    else {
        return;
    };
    load_xdp_filter(&lab);
    let _xdp_filter = XdpFilter(&lab);
    assert_xdp_filter_drops(&lab, "xdp-filter alone");
    let (before, before_id) = xdp_program(&lab).expect("xdp-filter's program runs");

    if before != "xdp_dispatcher" {
        // libxdp could not use its dispatcher on this kernel: there is nothing to join.
        let err = lab.cli_err(&["attach", &lab.guard_if, "--multiprog"]);
        let err = one_sentence(&err);
        assert!(
            err.contains("runs without a libxdp dispatcher") && err.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(
            xdp_program(&lab),
            Some((before, before_id)),
            "xdp-filter's program still runs, untouched"
        );
        assert!(!lab.pin_dir.exists(), "nothing pinned");
        assert_xdp_filter_drops(&lab, "after the refusal");
        gate::skip(
            "multiprog_joins_xdp_filters_dispatcher_and_detach_leaves_it",
            "libxdp loaded xdp-filter without its dispatcher on this kernel (it refuses \
             program extensions), so only the refusal was checked",
        );
        return;
    }

    let attached = lab.cli_ok(&["attach", &lab.guard_if, "--multiprog", "--priority", "20"]);
    assert!(attached.contains("priority 20"), "{attached}");
    // Both programs drop on the same interface: xdp-filter its source, icmp-guard the
    // timestamp requests its default profile drops, while plain pings pass both.
    assert_xdp_filter_drops(&lab, "both attached");
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 3);
    assert_eq!(replies, 0, "icmp-guard drops timestamp requests");
    lab.assert_counts(&[("v4", 13, "dropped.policy", 3)]);

    let status = lab.json(&["status", "--json"]);
    let interface = &status["interfaces"][0];
    assert_eq!(interface["state"], "protected", "{status}");
    assert_eq!(interface["multiprog"]["priority"], 20, "{status}");
    let text = lab.cli_ok(&["status"]);
    assert!(
        text.contains("multiprog") && text.contains("priority 20"),
        "{text}"
    );

    lab.cli_ok(&["detach", &lab.guard_if]);
    assert!(!lab.pin_dir.exists(), "nothing of icmp-guard left pinned");
    let (after, _) = xdp_program(&lab).expect("a program still runs");
    assert_eq!(after, "xdp_dispatcher", "xdp-filter's dispatcher stays");
    let loader = xdp_tool(&lab, "xdp-loader", &["status", &lab.guard_if]);
    assert!(
        loader.contains("xdpfilt") && !loader.contains("icmp_guard"),
        "{loader}"
    );
    assert_xdp_filter_drops(&lab, "after detach");
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 3);
    assert_eq!(replies, 3, "timestamp requests answered again");
}

#[test]
fn multiprog_without_a_dispatcher_makes_one_that_xdp_filter_joins() {
    let Some((_turn, lab)) = lab("multiprog_without_a_dispatcher_makes_one_that_xdp_filter_joins")
    else {
        return;
    };
    let out = lab.cli(&["attach", &lab.guard_if, "--multiprog"]);
    if !out.status.success() {
        assert_refused_without_extensions(&lab, &String::from_utf8_lossy(&out.stderr));
        // The same kernel makes libxdp fall back to a single program.
        load_xdp_filter(&lab);
        let _xdp_filter = XdpFilter(&lab);
        let (program, _) = xdp_program(&lab).expect("xdp-filter runs");
        assert_ne!(program, "xdp_dispatcher", "libxdp fell back as well");
        gate::skip(
            "multiprog_without_a_dispatcher_makes_one_that_xdp_filter_joins",
            "this kernel refuses program extensions, so only the refusal was checked",
        );
        return;
    }
    let (program, _) = xdp_program(&lab).expect("a dispatcher runs");
    assert_eq!(program, "xdp_dispatcher");
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 3);
    assert_eq!(replies, 0, "icmp-guard drops timestamp requests");

    load_xdp_filter(&lab);
    let _xdp_filter = XdpFilter(&lab);
    let loader = xdp_tool(&lab, "xdp-loader", &["status", &lab.guard_if]);
    assert!(
        loader.contains("xdpfilt") && loader.contains("icmp_guard"),
        "{loader}"
    );
    assert_xdp_filter_drops(&lab, "xdp-filter joined icmp-guard's dispatcher");
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 3);
    assert_eq!(replies, 0, "icmp-guard still drops");

    lab.cli_ok(&["detach", &lab.guard_if]);
    assert!(!lab.pin_dir.exists(), "nothing of icmp-guard left pinned");
    assert_xdp_filter_drops(&lab, "after detach");
}

/// `run --multiprog`: the service joins (or makes) the interface's libxdp dispatcher as
/// `attach --multiprog` does, and is ready. Where the kernel refuses program extensions
/// (this machine's), a `run` by name refuses at start in one sentence and leaves the
/// interface as it was; the kernel matrix's guests run the joining side (the service
/// filters from inside a dispatcher, and its SIGTERM detaches it).
#[test]
fn run_multiprog_joins_a_dispatcher_or_refuses_in_one_sentence() {
    let Some((_turn, lab)) = lab("run_multiprog_joins_a_dispatcher_or_refuses_in_one_sentence")
    else {
        return;
    };
    let metrics = format!("{GUARD_V4}:9469");
    let mut service = lab.background(&[
        "run",
        &lab.guard_if,
        "--multiprog",
        "--priority",
        "30",
        "--metrics",
        &metrics,
        "--drop-log",
        "0",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while service.is_running() && !service.stdout().contains("protecting") {
        assert!(
            Instant::now() < deadline,
            "neither protecting nor refused: {}{}",
            service.stdout(),
            service.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if !service.is_running() {
        assert!(!service.wait_exit(Duration::from_secs(1)).success());
        // The warning of a metrics address beyond loopback aside, one sentence, once.
        let stderr = service.stderr();
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|line| !line.starts_with("warning: serving metrics"))
            .collect();
        assert_refused_without_extensions(&lab, &errors.join("\n"));
        gate::skip(
            "run_multiprog_joins_a_dispatcher_or_refuses_in_one_sentence",
            "this kernel refuses program extensions, so only the refusal was checked (the \
             kernel matrix's guests run the service in a dispatcher)",
        );
        return;
    }
    let attached = service.stdout();
    assert!(
        attached.contains(&format!("attached to {}", lab.guard_if))
            && attached.contains("libxdp dispatcher"),
        "{attached}"
    );
    wait_until("ready", || {
        crate::fleet_interfaces::get(&lab, "/readyz").is_some_and(|(code, _)| code == 200)
    });
    let (_, replies) = lab.hping_icmp(&["--icmp-ts"], 3);
    assert_eq!(replies, 0, "icmp-guard drops timestamp requests");
    let status = lab.json(&["status", "--json"]);
    assert_eq!(
        status["interfaces"][0]["multiprog"]["priority"], 30,
        "{status}"
    );
    service.signal(libc::SIGTERM);
    assert!(service.wait_exit(Duration::from_secs(10)).success());
    assert_eq!(xdp_program(&lab), None, "its dispatcher went with it");
    assert!(!lab.pin_dir.exists(), "nothing of icmp-guard left pinned");
}
