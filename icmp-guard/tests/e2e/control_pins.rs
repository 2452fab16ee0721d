//! The pin directory cannot fail open (issue 15, points 1-5, and 17.1): an interrupted
//! first attach never leaves an open guard, a pin path another user controls is refused,
//! lock waits end and name the holder, namespaces sharing a pin directory keep to their
//! own links, maps removed under a live link are "damaged" (and repaired), and `status
//! --check` / `attach --ensure` serve configuration management. Lab of `lab.rs`
//! (namespaces removed in `Drop`); every flood is bounded.

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::lab::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
use serde_json::Value;

/// The CLI in `lab`'s guard namespace with pin directory `pin_dir` and `env`.
fn cli_command(lab: &Lab, pin_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", lab.guard_ns))
        .arg(env!("CARGO_BIN_EXE_icmp-guard"))
        .args(args)
        .env("ICMP_GUARD_PIN_DIR", pin_dir)
        .envs(env.iter().copied());
    command
}

fn cli_in(lab: &Lab, pin_dir: &Path, args: &[&str]) -> Output {
    cli_command(lab, pin_dir, args, &[])
        .output()
        .expect("running icmp-guard")
}

fn cli_ok_in(lab: &Lab, pin_dir: &Path, args: &[&str]) -> String {
    let output = cli_in(lab, pin_dir, args);
    assert!(
        output.status.success(),
        "icmp-guard {args:?} failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// A process killed and reaped in `Drop`.
struct Held(Child);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// As the user `nobody`, which owns nothing of the guard's.
fn as_nobody(args: &[&str]) -> Output {
    let mut all = vec!["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"];
    all.extend_from_slice(args);
    run("setpriv", &all)
}

/// `ping -f` from the peer for at most 2 s: how many of 1000 echo requests were answered.
fn flood_replies(lab: &Lab) -> u32 {
    let output = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.peer_ns,
            "ping",
            "-f",
            "-q",
            "-c",
            "1000",
            "-w",
            "2",
            GUARD_V4,
        ],
    );
    ping_replies(&text(&output.stdout))
}

fn rate_limited_echoes(lab: &Lab) -> u64 {
    let stats = lab.json(&["stats", "--json"]);
    icmp_row(&stats, "v4", 8)
        .and_then(|row| row["dropped"]["rate_limit"].as_u64())
        .unwrap_or(0)
}

fn program_id(lab: &Lab) -> u64 {
    lab.json(&["status", "--json"])["interfaces"][0]["program_id"]
        .as_u64()
        .expect("attached")
}

/// A small xorshift generator: the kill points vary from run to run, and the seed is
/// printed so that a failure can be replayed (ICMP_GUARD_KILL_SEED).
struct Random(u64);

impl Random {
    fn seeded() -> Self {
        let seed = std::env::var("ICMP_GUARD_KILL_SEED")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |elapsed| elapsed.as_nanos() as u64)
                    | 1
            });
        eprintln!("kill points from seed {seed} (ICMP_GUARD_KILL_SEED={seed} replays them)");
        Self(seed)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// Point 1: kill a first `attach` (SIGKILL, and SIGTERM as `systemctl stop` sends) many
/// times, half of them at random points and half aimed at the moment its maps appear;
/// every following `attach` leaves a guard that limits a `ping -f`. Before, a kill after the maps were pinned and before the policy was written
/// left zero-filled maps that the next attach reused: every echo answered.
#[test]
fn an_interrupted_first_attach_never_leaves_an_open_guard() {
    let lab = lab_or_skip!("an_interrupted_first_attach_never_leaves_an_open_guard");
    // How long a whole first attach takes here: the window the kills fall into.
    let started = Instant::now();
    lab.cli_ok(&["attach", &lab.guard_if]);
    let span = started.elapsed();
    lab.cli_ok(&["detach", "--all"]);
    let mut random = Random::seeded();
    let mut half_made = 0;
    const KILLS: u32 = 32;
    let config_pin = lab.pin_dir.join("maps").join("CONFIG");
    for round in 0..KILLS {
        let signal = if round % 4 == 3 {
            libc::SIGTERM
        } else {
            libc::SIGKILL
        };
        let mut child = cli_command(&lab, &lab.pin_dir, &["attach", &lab.guard_if], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn attach");
        // Even rounds aim at the window that matters: the maps just pinned, the policy not
        // yet written (a few milliseconds here). Odd rounds kill anywhere in an attach.
        let started = Instant::now();
        let delay = if round % 2 == 0 {
            while !config_pin.exists()
                && started.elapsed() < Duration::from_secs(10)
                && matches!(child.try_wait(), Ok(None))
            {
                std::thread::sleep(Duration::from_micros(100));
            }
            std::thread::sleep(Duration::from_micros(random.below(3000)));
            started.elapsed()
        } else {
            let delay = Duration::from_micros(random.below(span.as_micros() as u64 + 1));
            std::thread::sleep(delay);
            delay
        };
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let _ = child.wait();

        let next = lab.cli(&["attach", &lab.guard_if]);
        let (out, err) = (text(&next.stdout), text(&next.stderr));
        if !next.status.success() {
            // The killed attach finished before the signal: nothing was interrupted.
            assert!(err.contains("already attached"), "round {round}: {err}");
        }
        if out.contains("interrupted") {
            half_made += 1;
        }
        assert!(lab.xdp_on_interface(), "round {round}: attached");
        let replies = flood_replies(&lab);
        let limited = rate_limited_echoes(&lab);
        assert!(
            replies < 1000 && limited > 0,
            "round {round} (kill after {delay:?} with signal {signal}): {replies} of 1000 answered, {limited} rate-limited\n{out}{err}"
        );
        lab.cli_ok(&["detach", "--all"]);
        assert!(!lab.pin_dir.exists(), "round {round}: nothing left behind");
    }
    eprintln!(
        "{half_made} of {KILLS} kills left a half-made pin dir that the next attach finished"
    );
    assert!(
        half_made >= 4,
        "only {half_made} of {KILLS} kills left a half-made pin dir (span {span:?}): the test did not exercise the window"
    );
}

/// Point 2: a pin path another user owns or may write is refused; icmp-guard's
/// directories are 0700, so `nobody` can neither remove the link pins nor lock the
/// directory; bpffs that icmp-guard mounts itself is mode=0700, nosuid, nodev, noexec.
#[test]
fn a_pin_dir_another_user_controls_is_refused_and_ours_are_0700() {
    let lab = lab_or_skip!("a_pin_dir_another_user_controls_is_refused");
    let pin_dir = lab.pin_dir.to_str().expect("UTF-8").to_owned();
    // Made by root and handed to nobody: whether nobody could make it in /sys/fs/bpf
    // depends on how the host mounted bpffs (1777 by default, 0700 as icmp-guard mounts it).
    std::fs::create_dir(&lab.pin_dir).expect("mkdir");
    let given = run("chown", &["nobody:nogroup", &pin_dir]);
    assert!(given.status.success(), "{}", text(&given.stderr));
    let err = lab.cli_err(&["attach", &lab.guard_if]);
    let err = one_sentence(&err);
    assert!(
        err.contains("refusing the pin path") && err.contains("owned by another user"),
        "{err}"
    );
    assert!(!lab.xdp_on_interface(), "the refusal changed nothing");
    std::fs::remove_dir(&lab.pin_dir).expect("rmdir");

    std::fs::create_dir(&lab.pin_dir).expect("mkdir");
    std::fs::set_permissions(
        &lab.pin_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let err = lab.cli_err(&["status"]);
    assert!(
        one_sentence(&err).contains("writable by other users"),
        "{err}"
    );
    std::fs::remove_dir(&lab.pin_dir).expect("rmdir");

    lab.cli_ok(&["attach", &lab.guard_if]);
    let links = lab.pin_dir.join("links");
    let namespace = std::fs::read_dir(&links)
        .expect("links")
        .next()
        .expect("a namespace directory")
        .expect("entry")
        .path();
    for dir in [
        lab.pin_dir.clone(),
        lab.pin_dir.join("maps"),
        links,
        namespace.clone(),
    ] {
        let mode = std::fs::metadata(&dir).expect("exists").mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    let link_pin = std::fs::read_dir(&namespace)
        .expect("namespace")
        .next()
        .expect("a link")
        .expect("entry")
        .path();
    let removed = as_nobody(&["rm", "-f", link_pin.to_str().expect("UTF-8")]);
    assert!(!removed.status.success(), "nobody removed the link pin");
    let locked = as_nobody(&["flock", "--nonblock", &pin_dir, "true"]);
    assert!(!locked.status.success(), "nobody could lock the pin dir");
    assert!(lab.xdp_on_interface(), "still protected");
    lab.cli_ok(&["detach", "--all"]);

    // A bpffs icmp-guard mounts itself (in a mount namespace of this test, with the host's
    // unmounted there) is mode=0700, nosuid, nodev, noexec.
    let script = format!(
        "umount /sys/fs/bpf && {bin} attach {dev} && grep ' /sys/fs/bpf ' /proc/self/mountinfo && {bin} detach --all",
        bin = env!("CARGO_BIN_EXE_icmp-guard"),
        dev = lab.guard_if
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "nsenter"])
        .arg(format!("--net=/run/netns/{}", lab.guard_ns))
        .args(["sh", "-c", &script])
        .env("ICMP_GUARD_PIN_DIR", &lab.pin_dir)
        .output()
        .expect("unshare");
    let out = text(&output.stdout);
    assert!(output.status.success(), "{out}{}", text(&output.stderr));
    assert!(out.contains("mounted bpffs at /sys/fs/bpf"), "{out}");
    let mount = out
        .lines()
        .find(|line| line.contains(" /sys/fs/bpf "))
        .expect("mountinfo line");
    for option in ["nosuid", "nodev", "noexec", "mode=700"] {
        assert!(mount.contains(option), "{option} missing: {mount}");
    }
    assert!(
        !lab.xdp_on_interface(),
        "the test's own mount is gone with it"
    );
}

/// Point 3: a command waiting for the pin directory's lock gives up after
/// ICMP_GUARD_LOCK_TIMEOUT (10 s by default) and names the holder from /proc/locks.
/// Before, it waited forever.
#[test]
fn a_lock_wait_ends_and_names_the_holder() {
    let lab = lab_or_skip!("a_lock_wait_ends_and_names_the_holder");
    lab.cli_ok(&["attach", &lab.guard_if]);
    let holder = Held(
        // --no-fork: the lock's holder is the process killed at the end, not a child.
        Command::new("flock")
            .arg("--no-fork")
            .arg(&lab.pin_dir)
            .args(["sleep", "60"])
            .spawn()
            .expect("flock"),
    );
    let pid = holder.0.id();
    wait_until("the holder has the lock", || {
        std::fs::read_to_string("/proc/locks").is_ok_and(|locks| {
            locks
                .lines()
                .any(|line| line.contains(" FLOCK ") && line.contains(&format!(" {pid} ")))
        })
    });
    let timed = |env: &[(&str, &str)], args: &[&str]| {
        let started = Instant::now();
        let mut command = Command::new("timeout");
        command.arg("30");
        let inner = cli_command(&lab, &lab.pin_dir, args, env);
        command
            .arg(inner.get_program())
            .args(inner.get_args())
            .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))));
        let output = command.output().expect("timeout");
        (output, started.elapsed())
    };
    let (output, waited) = timed(
        &[("ICMP_GUARD_LOCK_TIMEOUT", "1")],
        &["policy", "set", "timestamp-request", "pass"],
    );
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    let err = one_sentence(&err);
    assert!(
        err.contains(&format!("pid {pid} (sleep 60)")) && err.contains("ICMP_GUARD_LOCK_TIMEOUT"),
        "{err}"
    );
    // The default wait ends too.
    let (output, waited) = timed(&[], &["detach", "--all"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "waited {waited:?}"
    );
    drop(holder);
    lab.cli_ok(&["policy", "set", "timestamp-request", "pass"]);
}

/// Point 4: two network namespaces share a pin directory; their interfaces have the same
/// ifindex. Each one's detach, detach --all and status act on its own links only, and say
/// what else the pin directory holds. Before, the second attach was refused (the first
/// one's link seemed to be "elsewhere"), and a detach removed the other's guard.
#[test]
fn namespaces_sharing_a_pin_dir_keep_to_their_own_links() {
    let a = lab_or_skip!("namespaces_sharing_a_pin_dir");
    let b = Lab::new();
    let shared = a.pin_dir.clone();
    let ifindex = |lab: &Lab| {
        let output = run(
            "ip",
            &["-n", &lab.guard_ns, "-j", "link", "show", &lab.guard_if],
        );
        serde_json::from_slice::<Value>(&output.stdout).expect("ip JSON")[0]["ifindex"]
            .as_u64()
            .expect("ifindex")
    };
    assert_eq!(
        ifindex(&a),
        ifindex(&b),
        "the same ifindex in both namespaces"
    );
    cli_ok_in(&a, &shared, &["attach", &a.guard_if]);
    cli_ok_in(&b, &shared, &["attach", &b.guard_if]);
    assert!(a.xdp_on_interface() && b.xdp_on_interface());

    let status: Value =
        serde_json::from_str(&cli_ok_in(&b, &shared, &["status", "--json"])).expect("JSON");
    let interfaces = status["interfaces"].as_array().expect("interfaces");
    assert_eq!(interfaces.len(), 1, "{status}");
    assert_eq!(interfaces[0]["name"], b.guard_if.as_str());
    assert_eq!(status["elsewhere"][0]["links"], 1, "{status}");
    let text_status = cli_ok_in(&b, &shared, &["status"]);
    assert!(
        text_status.contains("also holds 1 link(s) of network namespace"),
        "{text_status}"
    );

    let out = cli_ok_in(&b, &shared, &["detach", &b.guard_if]);
    assert!(out.contains("detached from"), "{out}");
    assert!(!b.xdp_on_interface());
    assert!(a.xdp_on_interface(), "the other namespace keeps its guard");
    assert_eq!(a.ping(GUARD_V4, 1), 1);

    cli_ok_in(&b, &shared, &["attach", &b.guard_if]);
    cli_ok_in(&a, &shared, &["detach", "--all"]);
    assert!(!a.xdp_on_interface());
    assert!(b.xdp_on_interface(), "detach --all stays in its namespace");
    assert!(shared.exists(), "the maps stay while b's link uses them");
    let status: Value =
        serde_json::from_str(&cli_ok_in(&b, &shared, &["status", "--json"])).expect("JSON");
    assert_eq!(status["interfaces"][0]["state"], "protected", "{status}");
    assert!(
        status["elsewhere"].as_array().is_some_and(Vec::is_empty),
        "{status}"
    );
    cli_ok_in(&b, &shared, &["detach", "--all"]);
    assert!(!shared.exists(), "the last detach removes every pin");
}

/// Point 5: maps unpinned under a live link make the guard "damaged": status says so and
/// how to repair, status --check exits 2, attach --upgrade refuses instead of making new
/// maps (and losing the policy), and `repair` pins the running program's maps again with
/// their policy, without a gap. Before, status looked normal and the upgrade succeeded
/// "without a gap" on fresh, default maps.
#[test]
fn maps_removed_under_a_live_link_are_damaged_and_repaired() {
    let lab = lab_or_skip!("maps_removed_under_a_live_link");
    lab.cli_ok(&["attach", &lab.guard_if]);
    lab.cli_ok(&["policy", "set", "echo-request", "drop"]);
    assert_eq!(lab.ping(GUARD_V4, 2), 0);
    let program = program_id(&lab);
    std::fs::remove_dir_all(lab.pin_dir.join("maps")).expect("unpin the maps");

    let status = lab.json(&["status", "--json"]);
    let interface = &status["interfaces"][0];
    assert_eq!(interface["state"], "damaged", "{status}");
    assert!(
        interface["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no longer pinned")),
        "{status}"
    );
    assert_eq!(interface["repair"], "icmp-guard repair");
    let text_status = lab.cli_ok(&["status"]);
    assert!(
        text_status.contains("damaged") && text_status.contains("repair: icmp-guard repair"),
        "{text_status}"
    );
    let check = lab.cli(&["status", "--check"]);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check.stdout));
    assert!(text(&check.stdout).contains("DAMAGED"));

    for args in [
        &["attach", "--upgrade", lab.guard_if.as_str()][..],
        &["attach", "lo"][..],
    ] {
        let err = lab.cli_err(args);
        assert!(
            one_sentence(&err).contains("is damaged") && err.contains("icmp-guard repair"),
            "{args:?}: {err}"
        );
    }
    assert!(
        !lab.pin_dir.join("maps").exists(),
        "no new maps were made behind the running program"
    );
    assert_eq!(
        lab.ping(GUARD_V4, 2),
        0,
        "the program keeps its policy meanwhile"
    );

    let out = lab.cli_ok(&["repair"]);
    assert!(out.contains(&format!("(id {program}) again")), "{out}");
    let check = lab.cli(&["status", "--check", &lab.guard_if]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    assert_eq!(program_id(&lab), program, "repaired in place");
    let policy = lab.json(&["policy", "show", "--json"]);
    let echo = policy["types"]
        .as_array()
        .expect("types")
        .iter()
        .find(|rule| rule["family"] == "v4" && rule["type"] == 8)
        .expect("v4 echo");
    assert_eq!(echo["action"], "drop", "the policy came back with the maps");
    let stats = lab.json(&["stats", "--json"]);
    assert_eq!(
        icmp_row(&stats, "v4", 8).expect("echo")["dropped"]["policy"],
        4,
        "and so did the counters"
    );
    assert!(lab.cli_ok(&["repair"]).contains("nothing to repair"));
}

/// Issue 17, point 1: `status --check [IFACE...]` exits 0 when protected, 1 when not, 2
/// when damaged (above); `attach --ensure` is idempotent.
#[test]
fn status_check_and_attach_ensure_serve_configuration_management() {
    let lab = lab_or_skip!("status_check_and_attach_ensure");
    let check = |args: &[&str]| {
        let mut all = vec!["status", "--check"];
        all.extend_from_slice(args);
        let output = lab.cli(&all);
        (output.status.code(), text(&output.stdout))
    };
    let (code, out) = check(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("NOT PROTECTED"), "{out}");

    let first = lab.cli_ok(&["attach", "--ensure", &lab.guard_if]);
    assert!(first.contains("attached to"), "{first}");
    let program = program_id(&lab);
    assert_eq!(check(&[]).0, Some(0));
    assert_eq!(check(&[&lab.guard_if]).0, Some(0));
    let (code, out) = check(&[&lab.guard_if, "lo"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("{}: protected", lab.guard_if)) && out.contains("lo: NOT PROTECTED"),
        "{out}"
    );
    let json: Value =
        serde_json::from_str(&lab.cli_ok(&["status", "--check", "--json", &lab.guard_if]))
            .expect("JSON");
    assert_eq!(json["code"], 0, "{json}");

    let again = lab.cli_ok(&["attach", "--ensure", &lab.guard_if]);
    assert!(again.contains("already guarded"), "{again}");
    assert_eq!(program_id(&lab), program, "left as it was");
    let both = lab.cli_ok(&["attach", "--ensure", &lab.guard_if, "lo"]);
    assert!(both.contains("attached to lo"), "{both}");
    assert_eq!(check(&[&lab.guard_if, "lo"]).0, Some(0));
    let err = lab.cli_err(&["attach", &lab.guard_if]);
    assert!(
        err.contains("already attached"),
        "plain attach still refuses: {err}"
    );
}
