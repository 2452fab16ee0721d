//! The unit under a real systemd: a Debian 12 root with the .deb installed is booted with
//! systemd-nspawn inside a network namespace made for the proof (a veth pair, both ends
//! inside it), with the host's bpffs bound in and a pin directory of its own. A one-shot
//! unit in the container then checks what the unit promises:
//!
//! - with `INTERFACES` empty (as installed) the enabled unit is skipped at boot, not failed;
//! - once `INTERFACES` is set, `systemctl start` returns when `run` said READY=1
//!   (`Type=notify`), the guard is on the interface, and after 13 s (more than
//!   `WatchdogSec=10s`) it still runs, never restarted, its watchdog fed;
//! - it is ordered before `network-pre.target`;
//! - `systemctl stop` detaches and leaves no pin.
//!
//! The unit runs with its whole sandbox (system call filter, capability bounding set,
//! IP address allow list, ...). The container itself is started with nspawn's own seccomp
//! filter off and every capability, since nspawn would otherwise forbid BPF to everything
//! inside it, the unit included.

use std::{collections::BTreeMap, fs, path::PathBuf, process::Stdio};

use anyhow::{Context as _, Result};

use super::{
    Artefacts, file_name,
    roots::{BOOKWORM_SYSTEMD, Scratch, ensure},
};
use crate::util::process::{self, command};

/// A network namespace with a veth pair, and the pin directory of the guard inside the
/// container; both removed on drop.
struct Lab {
    netns: String,
    interface: String,
    pins: PathBuf,
}

impl Lab {
    fn new() -> Result<Self> {
        let id = std::process::id();
        let lab = Self {
            netns: format!("igdist-{id}"),
            interface: format!("igd{id}a"),
            pins: PathBuf::from(format!("/sys/fs/bpf/icmp-guard-dist-{id}")),
        };
        let peer = format!("igd{id}b");
        process::run(command("ip").args(["netns", "add", &lab.netns]))?;
        process::run(command("ip").args([
            "-n",
            &lab.netns,
            "link",
            "add",
            &lab.interface,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]))?;
        for device in [&lab.interface, &peer, &"lo".to_owned()] {
            process::run(command("ip").args(["-n", &lab.netns, "link", "set", device, "up"]))?;
        }
        Ok(lab)
    }

    fn xdp_attached(&self) -> Result<bool> {
        let link = process::stdout_of(command("ip").args([
            "-n",
            &self.netns,
            "-d",
            "link",
            "show",
            "dev",
            &self.interface,
        ]))?;
        Ok(link.contains("prog/xdp"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair and with it any XDP link on it.
        let _ = process::output(command("ip").args(["netns", "del", &self.netns]));
        if self.pins.exists() {
            let _ = fs::remove_dir_all(&self.pins);
        }
    }
}

/// What the one-shot unit inside the container records, in /proof.
const PROOF_SCRIPT: &str = r#"#!/bin/sh
show() {
    systemctl show icmp-guard.service -p ActiveState -p SubState -p Result -p StatusText \
        -p NRestarts -p ExecMainStartTimestampMonotonic -p WatchdogTimestampMonotonic \
        > "/proof/$1"
}
show unconfigured
sed -i 's/^INTERFACES=.*/INTERFACES=@IFACE@/' /etc/default/icmp-guard
systemctl start icmp-guard.service
echo "$?" > /proof/start
ip -d link show dev @IFACE@ > /proof/link 2>&1
sleep 13
show running
systemctl show network-pre.target -p After > /proof/network-pre
systemctl stop icmp-guard.service
show stopped
journalctl -b -u icmp-guard.service --no-pager > /proof/journal 2>&1
systemctl poweroff
"#;

const PROOF_UNIT: &str = "[Unit]
Description=prove icmp-guard.service under systemd
After=icmp-guard.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/icmp-guard-proof

[Install]
WantedBy=multi-user.target
";

pub fn prove(artefacts: &Artefacts) -> Result<String> {
    let root = Scratch::of(&BOOKWORM_SYSTEMD)?;
    let name = file_name(&artefacts.deb);
    fs::copy(&artefacts.deb, root.join(&format!("/tmp/{name}")))?;
    root.run("dpkg", &["-i", &format!("/tmp/{name}")])?;

    let lab = Lab::new()?;
    // As installed (INTERFACES empty), with this proof's pin directory and no --keep, so
    // that the stop detaches.
    let settings = root.join("/etc/default/icmp-guard");
    let installed = fs::read_to_string(&settings)?;
    fs::write(
        &settings,
        installed.replace(
            "\nEXTRA=--keep\n",
            &format!("\nEXTRA=\"--pin-dir {}\"\n", lab.pins.display()),
        ),
    )?;
    let script = root.join("/usr/local/sbin/icmp-guard-proof");
    fs::create_dir_all(root.join("/usr/local/sbin"))?;
    fs::write(&script, PROOF_SCRIPT.replace("@IFACE@", &lab.interface))?;
    process::run(command("chmod").arg("755").arg(&script))?;
    fs::write(
        root.join("/etc/systemd/system/icmp-guard-proof.service"),
        PROOF_UNIT,
    )?;
    std::os::unix::fs::symlink(
        "/etc/systemd/system/icmp-guard-proof.service",
        root.join("/etc/systemd/system/multi-user.target.wants/icmp-guard-proof.service"),
    )?;

    let proof = Scratch::empty("service-proof")?;
    let console = proof.path().join("console.log");
    let mut nspawn = command("timeout");
    nspawn
        .args([
            "180",
            "systemd-nspawn",
            "--boot",
            "--register=no",
            "--keep-unit",
        ])
        .arg("--directory")
        .arg(root.path())
        .arg(format!("--network-namespace-path=/run/netns/{}", lab.netns))
        .arg(format!("--bind={}:/proof", proof.path().display()))
        .arg("--bind=/sys/fs/bpf")
        .arg("--capability=all")
        .arg("--console=pipe")
        .env("SYSTEMD_SECCOMP", "0")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&console)?)
        .stderr(fs::File::create(proof.path().join("nspawn.log"))?);
    println!("$ {}", process::display(&nspawn));
    let status = nspawn.status().context("starting systemd-nspawn")?;
    let read = |name: &str| fs::read_to_string(proof.path().join(name)).unwrap_or_default();
    let journal = read("journal");
    print!("{journal}");
    let explain = || {
        format!(
            "\n--- journal of icmp-guard.service:\n{journal}--- nspawn:\n{}--- console (last lines):\n{}",
            read("nspawn.log"),
            read("console.log")
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    ensure(status.success(), || {
        format!(
            "the container did not boot and power off ({status}){}",
            explain()
        )
    })?;

    let unconfigured = properties(&read("unconfigured"));
    ensure(
        unconfigured.get("ActiveState").map(String::as_str) == Some("inactive"),
        || {
            format!(
                "with INTERFACES empty the unit should be skipped, not {unconfigured:?}{}",
                explain()
            )
        },
    )?;
    ensure(read("start").trim() == "0", || {
        format!(
            "systemctl start icmp-guard failed ({}){}",
            read("start").trim(),
            explain()
        )
    })?;
    ensure(read("link").contains("prog/xdp"), || {
        format!(
            "when systemctl start returned, {} ran no XDP program:\n{}{}",
            lab.interface,
            read("link"),
            explain()
        )
    })?;
    let running = properties(&read("running"));
    let get = |key: &str| running.get(key).cloned().unwrap_or_default();
    let started: u64 = get("ExecMainStartTimestampMonotonic").parse().unwrap_or(0);
    let fed: u64 = get("WatchdogTimestampMonotonic").parse().unwrap_or(0);
    ensure(
        get("ActiveState") == "active"
            && get("SubState") == "running"
            && get("NRestarts") == "0"
            && get("StatusText") == format!("protecting {}", lab.interface)
            && fed > started + 5_000_000,
        || {
            format!(
                "13 s after the start the unit should run, never restarted, its watchdog fed: {running:?}{}",
                explain()
            )
        },
    )?;
    ensure(read("network-pre").contains("icmp-guard.service"), || {
        format!(
            "network-pre.target is not ordered after the unit: {}",
            read("network-pre")
        )
    })?;
    let stopped = properties(&read("stopped"));
    ensure(
        stopped.get("ActiveState").map(String::as_str) == Some("inactive"),
        || format!("after systemctl stop: {stopped:?}{}", explain()),
    )?;
    ensure(!lab.xdp_attached()? && !lab.pins.exists(), || {
        format!(
            "after systemctl stop the guard is still attached or pinned{}",
            explain()
        )
    })?;
    Ok(format!(
        "booted with systemd-nspawn: skipped while INTERFACES is empty ({}), started by READY=1 with XDP on the interface, still running after 13 s with the watchdog last fed {:.1} s after start and no restart, before network-pre.target, detached on stop",
        unconfigured
            .get("Result")
            .map_or("inactive", String::as_str),
        (fed.saturating_sub(started)) as f64 / 1e6
    ))
}

/// `Key=Value` lines of `systemctl show`.
fn properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}
