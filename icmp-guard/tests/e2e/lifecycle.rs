//! Lifecycle end-to-end tests: protection that outlives the CLI, idempotent detach, map
//! layouts, upgrades without a gap, foreign programs, attach modes and MTUs, concurrent CLI
//! calls, and interfaces that disappear. Same lab as `e2e.rs` (namespaces removed in
//! `Drop`); every flood is bounded by `timeout`.

use std::{
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::lab::*;
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The CLI in the lab's guard namespace, with any pin directory.
fn cli_in(lab: &Lab, pin_dir: &Path, args: &[&str]) -> Output {
    output(&mut lab.cli_command_in(pin_dir, args))
}

/// Starts a flood of echo requests from the peer, bounded by `timeout -s INT`.
fn spawn_flood(lab: &Lab, seconds: u32) -> Background {
    let command = ping::hping3(
        &lab.peer_ns,
        seconds,
        &["--flood", "--icmp", "-q", GUARD_V4],
    );
    Background::spawn("flood", command).expect("start hping3")
}

/// Waits for a flood and returns how many packets hping3 says it sent (SIGINT can land
/// between a send and its count, so the guard may see one or two more).
fn flood_transmitted(flood: Background) -> u64 {
    // hping3 prints its summary on stderr when SIGINT stops it.
    let summary = flood.finish(Duration::from_secs(15));
    let (sent, _) = ping::summary_in("hping3", &summary).unwrap_or_else(|err| panic!("{err}"));
    sent
}

/// (packets, passed, dropped as rate_limit) for ICMPv4 echo requests.
fn echo_requests(lab: &Lab) -> (u64, u64, u64) {
    let stats = lab.json(&["stats", "--json"]);
    icmp_row(&stats, "v4", 8).map_or((0, 0, 0), |row| {
        (
            row["packets"].as_u64().expect("packets"),
            row["passed"].as_u64().expect("passed"),
            row["dropped"]["rate_limit"].as_u64().expect("rate_limit"),
        )
    })
}

/// `Icmp: InEchos` of a namespace: echo requests that reached its IP stack.
fn in_echos(ns: &str) -> u64 {
    icmp_guard_lab::netns::snmp(ns, "Icmp", "InEchos").unwrap_or_else(|err| panic!("{err}"))
}

fn interfaces(lab: &Lab) -> Vec<Value> {
    lab.json(&["status", "--json"])["interfaces"]
        .as_array()
        .expect("interfaces")
        .clone()
}

fn program_exists(id: u64) -> bool {
    run("bpftool", &["prog", "show", "id", &id.to_string()])
        .status
        .success()
}

/// Processes of this binary that run with `pin_dir` in their environment.
fn cli_processes(pin_dir: &Path) -> Vec<u32> {
    let needle = [b"ICMP_GUARD_PIN_DIR=", pin_dir.as_os_str().as_bytes()].concat();
    let binary = Path::new(env!("CARGO_BIN_EXE_icmp-guard"));
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            exe.as_deref() == Some(binary)
                && environ.split(|b| *b == 0).any(|entry| entry == needle)
        })
        .collect()
}

/// A veth pair with both ends in the guard namespace, both up.
fn second_pair(lab: &Lab) -> (String, String) {
    let (a, b) = (format!("{}x", lab.guard_if), format!("{}y", lab.guard_if));
    let guard = &lab.guard_ns;
    lab.ip(
        guard,
        &["link", "add", &a, "type", "veth", "peer", "name", &b],
    );
    lab.ip(guard, &["link", "set", &a, "up"]);
    lab.ip(guard, &["link", "set", &b, "up"]);
    (a, b)
}

/// A second pin directory, detached and removed on drop.
struct OtherPins<'a> {
    lab: &'a Lab,
    dir: PathBuf,
}

impl<'a> OtherPins<'a> {
    fn new(lab: &'a Lab) -> Self {
        let mut dir = lab.pin_dir.clone().into_os_string();
        dir.push("-other");
        Self {
            lab,
            dir: dir.into(),
        }
    }
}

impl Drop for OtherPins<'_> {
    fn drop(&mut self) {
        let _ = cli_in(self.lab, &self.dir, &["detach", "--all"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A program that is not ours: `XDP_PASS`, loaded with bpf(2), pinned and attached with
/// `ip link set ... xdpgeneric pinned`, removed on drop.
struct ForeignXdp {
    pin: PathBuf,
    ns: String,
    dev: String,
}

impl ForeignXdp {
    fn attach(lab: &Lab, dev: &str) -> Self {
        let pin = PathBuf::from(format!(
            "/sys/fs/bpf/icmp-guard-test-foreign-{}-{}",
            std::process::id(),
            dev
        ));
        load_and_pin_pass_program(&pin);
        let foreign = Self {
            pin,
            ns: lab.guard_ns.clone(),
            dev: dev.to_owned(),
        };
        // nsenter, not `ip -n`: the latter remounts /sys and would hide the pin.
        let pinned = foreign.pin.to_str().expect("UTF-8 path");
        lab.run_in(
            &foreign.ns,
            "ip",
            &["link", "set", "dev", dev, "xdpgeneric", "pinned", pinned],
        );
        foreign
    }
}

impl Drop for ForeignXdp {
    fn drop(&mut self) {
        let _ = run(
            "ip",
            &[
                "-n",
                &self.ns,
                "link",
                "set",
                "dev",
                &self.dev,
                "xdpgeneric",
                "off",
            ],
        );
        let _ = std::fs::remove_file(&self.pin);
    }
}

fn load_and_pin_pass_program(pin: &Path) {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    // r0 = XDP_PASS; exit
    let instructions: [u8; 16] = [
        0xb7, 0, 0, 0, 2, 0, 0, 0, //
        0x95, 0, 0, 0, 0, 0, 0, 0,
    ];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(instructions.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..60].copy_from_slice(b"foreign_pass");
    // SAFETY: attr and the buffers it points to outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_mut_ptr(), 128u32) };
    assert!(
        fd >= 0,
        "BPF_PROG_LOAD: {}",
        std::io::Error::last_os_error()
    );
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes()).expect("path");
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    // SAFETY: as above.
    let pinned = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, attr.as_mut_ptr(), 128u32) };
    let pin_error = std::io::Error::last_os_error();
    // SAFETY: fd is ours; the pin keeps the program.
    unsafe { libc::close(fd as i32) };
    assert!(pinned == 0, "BPF_OBJ_PIN: {pin_error}");
}

/// Attaches the pinned program at `pin` to `dev` in namespace `ns` with a bpf_link held
/// only by the returned descriptor (as a tool that owns its attachment would), created
/// from a thread that joined the namespace.
fn link_pinned_program(pin: &Path, ns: &str, dev: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    let ifindex = icmp_guard_lab::netns::ifindex(ns, dev).unwrap_or_else(|err| panic!("{err}"));
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes()).expect("path");
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    // SAFETY: attr and the path outlive the call.
    let program = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_mut_ptr(), 128u32) };
    assert!(
        program >= 0,
        "BPF_OBJ_GET: {}",
        std::io::Error::last_os_error()
    );
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(program as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_XDP.to_ne_bytes());
    attr[12..16].copy_from_slice(&XDP_FLAGS_SKB_MODE.to_ne_bytes());
    // The kernel resolves the index in the caller's namespace: create the link from a
    // thread inside `ns`.
    let (link, error) = icmp_guard_lab::netns::run_in(ns, || {
        // SAFETY: as above.
        let link =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, attr.as_mut_ptr(), 128u32) };
        Ok((link, std::io::Error::last_os_error()))
    })
    .unwrap_or_else(|err| panic!("{err}"));
    // SAFETY: our descriptor; the link holds the program.
    unsafe { libc::close(program as i32) };
    assert!(link >= 0, "BPF_LINK_CREATE: {error}");
    // SAFETY: a new descriptor nobody else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(link as i32) }
}

#[test]
fn protection_outlives_the_cli_and_attach_detach_are_idempotent() {
    let lab = lab_or_skip!("protection_outlives_the_cli");
    let attached = lab.cli_ok(&["attach", &lab.guard_if]);
    assert!(attached.contains("attached to"), "{attached}");
    assert_eq!(
        cli_processes(&lab.pin_dir),
        Vec::<u32>::new(),
        "attach returned and left no process behind"
    );
    assert!(lab.xdp_on_interface());

    let before_echos = in_echos(&lab.guard_ns);
    let transmitted = {
        let _one = one_flood_at_a_time();
        flood_transmitted(spawn_flood(&lab, 2))
    };
    let (packets, passed, limited) = echo_requests(&lab);
    eprintln!("flood after the CLI exited: {transmitted} sent, {packets} seen, {passed} passed");
    assert!(limited > 0, "the flood was limited: {packets} {passed}");
    assert_eq!(packets, passed + limited, "every packet has one verdict");
    assert!(
        packets <= transmitted + 2 && packets * 1000 >= transmitted * 999,
        "the guard saw {packets} of {transmitted} packets"
    );
    assert!(
        in_echos(&lab.guard_ns) - before_echos <= passed,
        "no echo request reached the stack without passing the guard"
    );

    let before = interfaces(&lab);
    let err = lab.cli_err(&["attach", &lab.guard_if]);
    assert!(one_sentence(&err).contains("already attached"), "{err}");
    assert_eq!(interfaces(&lab), before, "a refused attach changes nothing");

    let first = lab.cli_ok(&["detach", &lab.guard_if]);
    assert!(first.contains("detached from"), "{first}");
    let second = lab.cli_ok(&["detach", &lab.guard_if]);
    assert!(second.contains("nothing to do"), "{second}");
    let all = lab.cli_ok(&["detach", "--all"]);
    assert!(all.contains("nothing to do"), "{all}");
    lab.assert_unprotected(2);
}

#[test]
fn pinned_maps_of_another_layout_are_refused() {
    let lab = lab_or_skip!("pinned_maps_of_another_layout_are_refused");
    lab.cli_ok(&["attach", &lab.guard_if]);
    let program_id = xdp_program_id(&lab.guard_ns, &lab.guard_if).expect("attached");
    let maps = lab.pin_dir.join("maps");
    let pinned = maps.join("POLICY_TYPES");
    let show = run(
        "bpftool",
        &[
            "-j",
            "map",
            "show",
            "pinned",
            pinned.to_str().expect("UTF-8"),
        ],
    );
    let info: Value = serde_json::from_slice(&show.stdout).expect("bpftool JSON");
    let value_size = info["bytes_value"].as_u64().expect("value size");
    let entries = info["max_entries"].as_u64().expect("entries");

    // What another version might have left: the same map with a wider value.
    std::fs::remove_file(&pinned).expect("unpin");
    run_ok(
        "bpftool",
        &[
            "map",
            "create",
            pinned.to_str().expect("UTF-8"),
            "type",
            "array",
            "key",
            "4",
            "value",
            &(value_size + 4).to_string(),
            "entries",
            &entries.to_string(),
            "name",
            "POLICY_TYPES",
        ],
    );
    let detail = format!(
        "map POLICY_TYPES has value size {}, this binary expects {value_size}",
        value_size + 4
    );
    let err = lab.cli_err(&["attach", "lo"]);
    let err = one_sentence(&err);
    assert!(
        err.contains(&format!(
            "the pinned maps in {} were made by another icmp-guard version",
            maps.display()
        )) && err.contains(&detail)
            && err.contains("detach --all"),
        "{err}"
    );
    assert!(
        !xdp_on(&lab.guard_ns, "lo"),
        "the refused attach changed nothing"
    );
    let err = lab.cli_err(&["attach", "--upgrade", &lab.guard_if]);
    assert!(one_sentence(&err).contains(&detail), "{err}");
    assert_eq!(
        xdp_program_id(&lab.guard_ns, &lab.guard_if),
        Some(program_id),
        "no upgrade"
    );
    let err = lab.cli_err(&["policy", "show"]);
    assert!(
        err.contains("another icmp-guard version") && err.contains(&detail),
        "reading is refused too: {err}"
    );
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        2,
        "the running program keeps its own map"
    );

    // detach --all clears the mixed state, also the map this binary does not recognise.
    lab.cli_ok(&["detach", "--all"]);
    assert!(!lab.pin_dir.exists());
    lab.cli_ok(&["attach", &lab.guard_if]);

    // Same shapes, another meaning: the layout version in CONFIG decides (the `layout`
    // field of the one settings struct, bytes 16..20).
    let config = maps.join("CONFIG");
    let config = config.to_str().expect("UTF-8");
    let stamped = run(
        "bpftool",
        &[
            "-j", "map", "lookup", "pinned", config, "key", "0", "0", "0", "0",
        ],
    );
    let stamped: Value = serde_json::from_slice(&stamped.stdout).expect("bpftool JSON");
    let mut bytes: Vec<String> = stamped["value"]
        .as_array()
        .expect("the value's bytes")
        .iter()
        .map(|byte| byte.as_str().expect("a hex byte").to_owned())
        .collect();
    let version = icmp_guard_common::config::LAYOUT_VERSION;
    assert_eq!(
        bytes[16..20],
        [
            format!("0x{version:02x}"),
            "0x00".into(),
            "0x00".into(),
            "0x00".into()
        ],
        "a first attach writes layout version {version}: {stamped}"
    );
    bytes[16] = "0x63".to_owned();
    let mut update = vec![
        "map", "update", "pinned", config, "key", "0", "0", "0", "0", "value",
    ];
    update.extend(bytes.iter().map(String::as_str));
    run_ok("bpftool", &update);
    for args in [&["status"][..], &["attach", "lo"][..]] {
        let err = lab.cli_err(args);
        assert!(
            one_sentence(&err).contains(&format!("layout version 99, this binary uses {version}")),
            "{args:?}: {err}"
        );
    }
    lab.cli_ok(&["detach", "--all"]);
    assert!(!lab.pin_dir.exists());
    lab.cli_ok(&["attach", &lab.guard_if]);

    // A map that is missing is another layout as well.
    std::fs::remove_file(maps.join("CONFIG")).expect("unpin");
    let err = lab.cli_err(&["attach", "lo"]);
    assert!(
        one_sentence(&err).contains("map CONFIG is missing"),
        "{err}"
    );
    lab.cli_ok(&["detach", "--all"]);
    assert!(!lab.pin_dir.exists());
}

#[test]
fn upgrade_swaps_the_program_during_a_flood_without_a_gap() {
    let lab = lab_or_skip!("upgrade_swaps_the_program_during_a_flood");
    lab.cli_ok(&["attach", &lab.guard_if]);
    lab.limit_echo("100/s", "200", &[]);
    let before = interfaces(&lab);
    let (old_program, link) = (
        before[0]["program_id"].as_u64().expect("program"),
        before[0]["link_id"].as_u64().expect("link"),
    );
    let policy_before = lab.cli_ok(&["policy", "show"]);
    let echos_before = in_echos(&lab.guard_ns);

    let _one = one_flood_at_a_time();
    let started = Instant::now();
    // Bounded at 8 s, stopped one second after the swap (a loaded machine slows the swap).
    let mut flood = spawn_flood(&lab, 8);
    std::thread::sleep(Duration::from_millis(700));
    let swap_started = Instant::now();
    let upgraded = lab.cli_ok(&["attach", "--upgrade", &lab.guard_if]);
    eprintln!("upgrade took {:?} under the flood", swap_started.elapsed());
    let (_, _, limited_at_swap) = echo_requests(&lab);
    assert!(flood.is_running(), "the upgrade finished during the flood");
    std::thread::sleep(Duration::from_secs(1));
    // nsenter execs `timeout`, which passes SIGINT on to hping3.
    flood.signal(libc::SIGINT);
    let transmitted = flood_transmitted(flood);
    let elapsed = started.elapsed().as_secs_f64();

    assert!(
        upgraded.contains("upgraded") && upgraded.contains("without a gap"),
        "{upgraded}"
    );
    let after = interfaces(&lab);
    let new_program = after[0]["program_id"].as_u64().expect("program");
    assert_ne!(new_program, old_program, "a new program runs");
    assert_eq!(after[0]["link_id"].as_u64(), Some(link), "in the same link");
    assert_eq!(after[0]["mode"], before[0]["mode"], "in the same mode");
    assert_eq!(
        lab.cli_ok(&["policy", "show"]),
        policy_before,
        "policy kept"
    );

    let (packets, passed, limited) = echo_requests(&lab);
    assert!(limited > limited_at_swap, "the new program kept limiting");
    assert_eq!(packets, passed + limited, "every packet has one verdict");
    assert!(
        packets <= transmitted + 2 && packets * 1000 >= transmitted * 999,
        "the guards saw {packets} of {transmitted} packets"
    );
    let reached_stack = in_echos(&lab.guard_ns) - echos_before;
    eprintln!(
        "upgrade during a {elapsed:.1} s flood: {transmitted} sent, {packets} seen, {passed} passed, \
         {reached_stack} reached the stack, {limited_at_swap} limited at the swap, {limited} in all"
    );
    assert!(
        reached_stack <= passed,
        "{reached_stack} echo requests reached the stack, only {passed} passed the guard: a gap"
    );
    // Same buckets before and after: no second burst.
    let ceiling = 200.0 + 100.0 * elapsed + 20.0;
    assert!(
        (passed as f64) <= ceiling,
        "{passed} passed in {elapsed:.1} s, more than {ceiling:.0}: buckets were reset"
    );
    wait_until("the old program is unloaded", || {
        !program_exists(old_program)
    });
}

#[test]
fn foreign_xdp_programs_are_refused() {
    let lab = lab_or_skip!("foreign_xdp_programs_are_refused");
    lab.cli_ok(&["attach", &lab.guard_if]);
    let ours = interfaces(&lab)[0]["program_id"].as_u64().expect("program");

    // icmp-guard itself from another pin directory is someone else here.
    let other = OtherPins::new(&lab);
    let output = cli_in(&lab, &other.dir, &["attach", &lab.guard_if]);
    assert!(!output.status.success());
    let err = text(&output.stderr);
    assert!(
        one_sentence(&err).contains(&format!("program id {ours}"))
            && err.contains("another pin directory"),
        "{err}"
    );
    let output = cli_in(&lab, &other.dir, &["attach", "--upgrade", &lab.guard_if]);
    assert!(!output.status.success(), "--upgrade never takes over");
    assert!(!other.dir.exists(), "the refusals pinned nothing");
    assert_eq!(interfaces(&lab)[0]["program_id"].as_u64(), Some(ours));
    assert_eq!(lab.ping(GUARD_V4, 2), 2);

    // Any other program.
    let (spare, _) = second_pair(&lab);
    let foreign = ForeignXdp::attach(&lab, &spare);
    let err = lab.cli_err(&["attach", &spare]);
    let err = one_sentence(&err);
    assert!(
        err.contains("already runs another XDP program (id "),
        "{err}"
    );
    assert_eq!(interfaces(&lab).len(), 1, "nothing attached to {spare}");
    let theirs = xdp_program_id(&lab.guard_ns, &spare).expect("the foreign program");
    assert!(
        err.contains("--replace"),
        "the refusal names the way out: {err}"
    );

    // --replace takes its place.
    let out = lab.cli_ok(&["attach", "--replace", &spare]);
    assert!(
        out.contains(&format!(
            "replaced the XDP program that was there (id {theirs})"
        )),
        "{out}"
    );
    let ours_there = xdp_program_id(&lab.guard_ns, &spare).expect("ours now");
    assert_ne!(ours_there, theirs);
    assert_eq!(interfaces(&lab).len(), 2);
    lab.cli_ok(&["detach", &spare]);
    assert!(
        !xdp_on(&lab.guard_ns, &spare),
        "detach leaves nothing, theirs included"
    );

    // A program someone holds with a bpf_link cannot be removed from outside.
    let link = link_pinned_program(&foreign.pin, &lab.guard_ns, &spare);
    let held = xdp_program_id(&lab.guard_ns, &spare).expect("the linked program");
    let err = lab.cli_err(&["attach", "--replace", &spare]);
    assert!(
        one_sentence(&err).contains(&format!("(id {held}) could not be removed"))
            && err.contains("bpftool link"),
        "{err}"
    );
    assert_eq!(
        xdp_program_id(&lab.guard_ns, &spare),
        Some(held),
        "left as it was"
    );
    drop(link);
    drop(foreign);
    lab.cli_ok(&["attach", &spare]);
    assert_eq!(interfaces(&lab).len(), 2);
}

#[test]
fn native_mode_refusal_and_auto_fallback_on_loopback() {
    let lab = lab_or_skip!("native_mode_refusal_and_auto_fallback");
    let err = lab.cli_err(&["attach", "lo", "--mode", "native"]);
    let err = one_sentence(&err);
    assert!(
        err.contains("lo does not support native XDP") && err.contains("--mode generic"),
        "{err}"
    );
    assert!(!lab.pin_dir.exists(), "the refusal pinned nothing");
    assert!(!xdp_on(&lab.guard_ns, "lo"));

    // Refused next to a running guard, with a policy file: the live policy stays.
    lab.cli_ok(&["attach", &lab.guard_if]);
    let policy = lab.cli_ok(&["policy", "show"]);
    let file = std::env::temp_dir().join(format!("{}-policy.toml", lab.guard_ns));
    std::fs::write(
        &file,
        "[[rule]]\ntype = \"timestamp-request\"\nfamily = \"v4\"\naction = \"pass\"\n",
    )
    .expect("policy file");
    let path = file.to_str().expect("UTF-8");
    let err = lab.cli_err(&["attach", "lo", "--mode", "native", "--policy", path]);
    assert!(
        one_sentence(&err).contains("does not support native XDP"),
        "{err}"
    );
    assert_eq!(lab.cli_ok(&["policy", "show"]), policy, "policy untouched");

    let attached = lab.cli_ok(&["attach", "lo", "--policy", path]);
    std::fs::remove_file(&file).expect("clean up");
    assert!(
        attached.contains("generic mode")
            && attached.contains("native XDP was refused")
            && attached.contains(&format!("applied policy {path}")),
        "{attached}"
    );
    assert_ne!(lab.cli_ok(&["policy", "show"]), policy, "policy applied");
    let status = interfaces(&lab);
    let lo = status
        .iter()
        .find(|link| link["name"] == "lo")
        .expect("lo attached");
    assert_eq!(lo["mode"], "generic");
    let args = ["-c", "2", "-i", "0.2", "-W", "1", "-q", "127.0.0.1"];
    let output = output(&mut ping::ping(&lab.guard_ns, &args));
    let (packets, _, _) = echo_requests(&lab);
    assert_eq!(
        packets,
        2,
        "generic XDP on lo classified the pings: {}",
        text(&output.stdout)
    );
}

#[test]
fn jumbo_mtu_native_is_refused_clearly_and_generic_carries_jumbo_frames() {
    let lab = lab_or_skip!("jumbo_mtu");
    lab.ip(
        &lab.guard_ns,
        &["link", "set", &lab.guard_if, "mtu", "9000"],
    );
    lab.ip(&lab.peer_ns, &["link", "set", &lab.peer_if, "mtu", "9000"]);

    let native = lab.cli(&["attach", &lab.guard_if, "--mode", "native"]);
    let native_works = native.status.success();
    if native_works {
        // A multi-buffer (xdp.frags) program: fine, and it must say native.
        assert_eq!(interfaces(&lab)[0]["mode"], "native");
        lab.cli_ok(&["detach", &lab.guard_if]);
    } else {
        let err = text(&native.stderr);
        assert_eq!(
            one_sentence(&err),
            format!(
                "error: MTU 9000 is too large for single-buffer native XDP on {}: lower the MTU or use --mode generic",
                lab.guard_if
            )
        );
        assert!(!lab.pin_dir.exists(), "the refusal pinned nothing");
        assert!(!lab.xdp_on_interface());
    }

    let attached = lab.cli_ok(&["attach", &lab.guard_if]);
    if !native_works {
        assert!(
            attached.contains("generic mode")
                && attached.contains("MTU 9000 is too large for single-buffer native XDP"),
            "{attached}"
        );
        assert_eq!(interfaces(&lab)[0]["mode"], "generic");
    }
    let jumbo = [
        "-c", "3", "-i", "0.2", "-W", "1", "-M", "do", "-s", "8000", "-q", GUARD_V4,
    ];
    let output = output(&mut ping::ping(&lab.peer_ns, &jumbo));
    assert!(
        text(&output.stdout).contains("3 received"),
        "{}",
        text(&output.stdout)
    );
    let stats = lab.json(&["stats", "--json"]);
    let echo = icmp_row(&stats, "v4", 8).expect("echo requests counted");
    assert_eq!(echo["passed"], 3, "{stats}");
    assert!(echo["bytes"].as_u64() >= Some(3 * 8000), "{stats}");
}

#[test]
fn concurrent_attach_and_detach_are_serialised_and_a_dead_holder_does_not_wedge() {
    let lab = lab_or_skip!("concurrent_attach_and_detach");
    let (second, _) = second_pair(&lab);
    let spawn = |args: &[&str]| {
        lab.cli_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn icmp-guard")
    };
    let finish = |child: Child| {
        let output = child.wait_with_output().expect("icmp-guard finished");
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    };
    for round in 0..3 {
        let a = spawn(&["attach", &lab.guard_if]);
        let b = spawn(&["attach", &second]);
        let (a, b) = (finish(a), finish(b));
        assert!(
            a.contains("attached to") && b.contains("attached to"),
            "{a}{b}"
        );
        let status = interfaces(&lab);
        assert_eq!(status.len(), 2, "round {round}: {status:?}");
        assert!(status.iter().all(|link| !link["mode"].is_null()));
        assert_eq!(lab.ping(GUARD_V4, 1), 1);

        // A policy edit in between runs before or after a detach, never inside it.
        let edit = spawn(&[
            "policy",
            "set",
            "--family",
            "v4",
            "timestamp-request",
            "pass",
        ]);
        let detach_second = spawn(&["detach", &second]);
        let (edit, b) = (finish(edit), finish(detach_second));
        assert!(!edit.is_empty() && b.contains("detached"), "{edit}{b}");
        let policy = lab.json(&["policy", "show", "--json"]);
        assert_eq!(action_of(&policy, "v4", 13), "pass", "{policy}");
        assert_eq!(interfaces(&lab).len(), 1);

        let a = spawn(&["detach", &lab.guard_if]);
        let b = spawn(&["detach", "--all"]);
        let (a, b) = (finish(a), finish(b));
        assert!(
            a.contains("detached from") != b.contains("detached from"),
            "exactly one of them detached: {a}{b}"
        );
        assert!(
            !lab.pin_dir.exists(),
            "round {round}: the last detach removed the pins"
        );
        assert!(!xdp_on(&lab.guard_ns, &second) && !lab.xdp_on_interface());
    }

    // A process that dies holding the lock does not wedge the next command.
    lab.cli_ok(&["attach", &lab.guard_if]);
    let mut holder = Command::new("flock")
        .args(["--no-fork", "--exclusive"])
        .arg(&lab.pin_dir)
        .args(["sleep", "30"])
        .spawn()
        .expect("spawn flock");
    wait_until("flock holds the pin directory", || {
        !Command::new("flock")
            .args(["--nonblock", "--exclusive"])
            .arg(&lab.pin_dir)
            .arg("true")
            .status()
            .expect("flock")
            .success()
    });
    let mut waiting = spawn(&["attach", &second]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        waiting.try_wait().expect("attach").is_none(),
        "attach waits for the lock"
    );
    holder.kill().expect("SIGKILL the holder");
    holder.wait().expect("holder reaped");
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting.try_wait().expect("attach").is_none() {
        assert!(
            Instant::now() < deadline,
            "attach still waits after the holder died"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(finish(waiting).contains("attached to"));
    assert_eq!(interfaces(&lab).len(), 2);
}

#[test]
fn a_deleted_interface_is_gone_and_a_new_one_with_its_name_is_not_protected() {
    let lab = lab_or_skip!("a_deleted_interface_is_gone");
    lab.cli_ok(&["attach", &lab.guard_if]);
    let (spare, peer) = second_pair(&lab);
    lab.cli_ok(&["attach", &spare]);
    let old_index = interfaces(&lab)
        .iter()
        .find(|link| link["name"] == spare.as_str())
        .and_then(|link| link["ifindex"].as_u64())
        .expect("spare attached");

    lab.ip(&lab.guard_ns, &["link", "del", &spare]);
    let gone = |status: &[Value]| {
        status
            .iter()
            .find(|link| link["ifindex"].as_u64() == Some(old_index))
            .cloned()
            .expect("the pin of the deleted interface is listed")
    };
    let status = interfaces(&lab);
    let link = gone(&status);
    assert!(link["name"].is_null() && link["mode"].is_null(), "{link}");
    assert_eq!(link["interface_gone"], true);
    let text_status = lab.cli_ok(&["status"]);
    assert!(text_status.contains("<gone>"), "{text_status}");

    // Same name, new interface: never claimed as protected.
    lab.ip(
        &lab.guard_ns,
        &["link", "add", &spare, "type", "veth", "peer", "name", &peer],
    );
    lab.ip(&lab.guard_ns, &["link", "set", &spare, "up"]);
    let status = interfaces(&lab);
    assert!(
        !status
            .iter()
            .any(|link| link["name"] == spare.as_str() && !link["mode"].is_null()),
        "the new {spare} is not protected: {status:?}"
    );
    assert!(!xdp_on(&lab.guard_ns, &spare));

    // It can be attached right away; the stale pin stays until a detach.
    lab.cli_ok(&["attach", &spare]);
    let status = interfaces(&lab);
    assert_eq!(status.len(), 3, "{status:?}");
    assert!(
        status
            .iter()
            .any(|link| link["name"] == spare.as_str() && !link["mode"].is_null())
    );
    assert!(xdp_on(&lab.guard_ns, &spare));

    let detached = lab.cli_ok(&["detach", "--all"]);
    assert!(
        detached.contains(&format!(
            "removed the link of a deleted interface (ifindex {old_index})"
        )),
        "{detached}"
    );
    assert!(!lab.pin_dir.exists(), "every pin removed");
    assert!(!xdp_on(&lab.guard_ns, &spare) && !lab.xdp_on_interface());
}

/// The `stats --json` entry of interface `name`.
fn interface_counters(stats: &Value, name: &str) -> Value {
    stats["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {stats}"))["counters"]
        .clone()
}

#[test]
fn two_interfaces_share_one_policy_and_are_counted_apart() {
    let lab = lab_or_skip!("two_interfaces_are_counted_apart");
    let (second, _peer) = second_pair(&lab);
    lab.cli_ok(&["attach", &lab.guard_if, &second]);
    // One policy for both: echo dropped everywhere.
    lab.cli_ok(&["policy", "set", "echo-request", "drop"]);
    assert_eq!(
        lab.ping(GUARD_V4, 3),
        0,
        "echo dropped on the lab interface"
    );

    let stats = lab.json(&["stats", "--json"]);
    let first = interface_counters(&stats, &lab.guard_if);
    let other = interface_counters(&stats, &second);
    assert_eq!(first["dropped"], 3, "{stats}");
    assert_eq!(
        other["dropped"], 0,
        "nothing was sent through {second}: {stats}"
    );
    assert_eq!(
        first["dropped"].as_u64().unwrap() + other["dropped"].as_u64().unwrap(),
        stats["totals"]["dropped"].as_u64().unwrap(),
        "{stats}"
    );
    let table = lab.cli_ok(&["stats"]);
    for name in [&lab.guard_if, &second] {
        assert!(
            table
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{name}: icmp "))),
            "{table}"
        );
    }

    // Detaching one leaves the other protected and counted; attaching it again starts its
    // count from zero (a new attachment, whatever the old one saw).
    lab.cli_ok(&["detach", &lab.guard_if]);
    assert_eq!(lab.ping(GUARD_V4, 2), 2, "unguarded again");
    let stats = lab.json(&["stats", "--json"]);
    assert_eq!(
        stats["interfaces"].as_array().map(Vec::len),
        Some(1),
        "{stats}"
    );
    lab.cli_ok(&["attach", &lab.guard_if]);
    let stats = lab.json(&["stats", "--json"]);
    assert_eq!(
        interface_counters(&stats, &lab.guard_if)["dropped"],
        0,
        "{stats}"
    );
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        0,
        "the shared policy applies at once"
    );
    let stats = lab.json(&["stats", "--json"]);
    assert_eq!(
        interface_counters(&stats, &lab.guard_if)["dropped"],
        2,
        "{stats}"
    );
}
