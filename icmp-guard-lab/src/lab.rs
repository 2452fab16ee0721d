//! Namespaces, veth pairs and a pin directory, created under unique names and removed
//! again, every failure of the clean-up reported.
//!
//! Modelled on aya's `NetNsGuard` (`aya/src/test_helpers.rs`): the lab is `!Send`, so it
//! is cleaned up by the thread that made it, and its `Drop` panics when something could
//! not be removed, unless the thread is already panicking (then it prints what is left
//! behind, so the first failure stays the one reported). Code that wants the clean-up's
//! error as a value, like the demo, calls [`Lab::clean_up`] itself.

use std::{
    ffi::OsStr,
    fs,
    marker::PhantomData,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{
    Error, Result,
    process::{self, netns_path, nsenter},
};

/// The guarded side of a [`Pair`].
pub const GUARD_V4: &str = "192.0.2.1";
pub const GUARD_V6: &str = "2001:db8::1";
/// The side that sends the traffic.
pub const PEER_V4: &str = "192.0.2.2";
pub const PEER_V6: &str = "2001:db8::2";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Namespaces and veth pairs of our own, removed with everything in them when the lab is
/// cleaned up.
pub struct Lab {
    /// `{pid % 100000}{counter}`: unique among the labs of this machine.
    id: String,
    /// Short name of the user (`test`, `demo`, `bench`), in every name the lab makes.
    kind: String,
    /// Namespaces created so far, in order.
    namespaces: Vec<String>,
    pin_dir: PathBuf,
    /// The icmp-guard binary last run through [`Lab::guard`]: clean-up detaches with it.
    guard: Option<PathBuf>,
    cleaned: bool,
    /// `!Send` and `!Sync`, like aya's NetNsGuard.
    _not_send: PhantomData<*const ()>,
}

impl Lab {
    /// An empty lab; nothing exists until [`Lab::add_namespace`].
    pub fn new(kind: &str) -> Self {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/icmp-guard-{kind}-{id}"));
        Self {
            id,
            kind: kind.to_owned(),
            namespaces: Vec::new(),
            pin_dir,
            guard: None,
            cleaned: false,
            _not_send: PhantomData,
        }
    }

    /// The lab's own pin directory (icmp-guard's `ICMP_GUARD_PIN_DIR`).
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// `ig{kind}-{id}-{role}`: the name of a namespace of this lab.
    pub fn ns_name(&self, role: &str) -> String {
        format!("ig{}-{}-{role}", self.kind, self.id)
    }

    /// An interface name of this lab, at most 15 bytes: `ig`, the kind's first letter, the
    /// id and `role`'s first letter.
    pub fn if_name(&self, role: &str) -> String {
        let first = |text: &str| text.chars().next().unwrap_or('x');
        format!("ig{}{}{}", first(&self.kind), self.id, first(role))
    }

    /// Creates the namespace [`Lab::ns_name`]`(role)`, with its loopback up; returns its name.
    pub fn add_namespace(&mut self, role: &str) -> Result<String> {
        let ns = self.ns_name(role);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A veth pair, each end created straight inside its namespace (so no interface of
    /// the machine is ever involved) and left down.
    pub fn add_veth(&self, (ns_a, if_a): (&str, &str), (ns_b, if_b): (&str, &str)) -> Result<()> {
        ip(&[
            "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b,
        ])
        .map(drop)
    }

    /// `ip -n NS ARGS`; returns its stdout.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// `program` in the namespace `ns`.
    pub fn command(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        nsenter(ns, program)
    }

    /// `binary` (icmp-guard) in `ns` with the lab's pin directory. Clean-up then runs
    /// `binary detach --all` before it removes the namespaces.
    pub fn guard(&mut self, ns: &str, binary: &Path) -> Command {
        self.guard = Some(binary.to_owned());
        self.guard_command(ns, binary)
    }

    /// Like [`Lab::guard`] for a lab that has already been told its binary, or for another.
    pub fn guard_command(&self, ns: &str, binary: &Path) -> Command {
        let mut command = nsenter(ns, binary);
        command.env("ICMP_GUARD_PIN_DIR", &self.pin_dir);
        command
    }

    /// Removes everything the lab made: detaches icmp-guard (when it ran), deletes the
    /// namespaces (and with them their veth ends, XDP programs and nftables tables) and
    /// the pin directory. Every step runs even after one fails; the error lists them all.
    pub fn clean_up(mut self) -> Result<()> {
        self.remove_everything()
    }

    fn remove_everything(&mut self) -> Result<()> {
        self.cleaned = true;
        let mut failures = Vec::new();
        if let Some(binary) = &self.guard
            && self.pin_dir.exists()
            && let Some(ns) = self.namespaces.first()
        {
            let mut detach = self.guard_command(ns, binary);
            detach.args(["detach", "--all"]);
            if let Err(err) = process::run(&mut detach) {
                failures.push(err.to_string());
            }
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(err) = ip(&["netns", "del", &ns]) {
                failures.push(err.to_string());
            } else if netns_path(&ns).exists() {
                failures.push(format!(
                    "namespace {ns} is still there after `ip netns del`"
                ));
            }
        }
        if self.pin_dir.exists()
            && let Err(err) = fs::remove_dir_all(&self.pin_dir)
        {
            failures.push(format!("removing {}: {err}", self.pin_dir.display()));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::CleanUp {
                lab: self.id.clone(),
                failures,
            })
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        if let Err(err) = self.remove_everything() {
            if std::thread::panicking() {
                eprintln!("{err}");
            } else {
                panic!("{err}");
            }
        }
    }
}

fn ip(args: &[&str]) -> Result<String> {
    process::run(Command::new("ip").args(args))
}

/// One end of a [`Pair`].
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub ifname: String,
    pub v4: &'static str,
    pub v6: &'static str,
}

/// Two namespaces joined by a veth pair: `guard` (192.0.2.1/24, 2001:db8::1/64), where
/// icmp-guard runs, and `peer` (192.0.2.2/24, 2001:db8::2/64), which sends the traffic.
pub struct Pair {
    pub lab: Lab,
    pub guard: Host,
    pub peer: Host,
}

impl Pair {
    /// The pair, with IPv6 (`ipv6`), or with IPv6 switched off in both namespaces, so that
    /// router solicitations and MLD reports do not add noise to counters.
    pub fn new(kind: &str, ipv6: bool) -> Result<Self> {
        let mut lab = Lab::new(kind);
        let end = |lab: &Lab, role: &str, v4, v6| Host {
            ns: lab.ns_name(role),
            ifname: lab.if_name(role),
            v4,
            v6,
        };
        let guard = end(&lab, "guard", GUARD_V4, GUARD_V6);
        let peer = end(&lab, "peer", PEER_V4, PEER_V6);
        for (role, host) in [("guard", &guard), ("peer", &peer)] {
            lab.add_namespace(role)?;
            if !ipv6 {
                process::run(lab.command(&host.ns, "sysctl").args([
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ]))?;
            }
        }
        lab.add_veth((&guard.ns, &guard.ifname), (&peer.ns, &peer.ifname))?;
        for host in [&guard, &peer] {
            lab.ip(
                &host.ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", host.v4),
                    "dev",
                    &host.ifname,
                ],
            )?;
            if ipv6 {
                let v6 = format!("{}/64", host.v6);
                lab.ip(
                    &host.ns,
                    &["addr", "add", &v6, "dev", &host.ifname, "nodad"],
                )?;
            }
            lab.ip(&host.ns, &["link", "set", &host.ifname, "up"])?;
        }
        Ok(Self { lab, guard, peer })
    }
}
