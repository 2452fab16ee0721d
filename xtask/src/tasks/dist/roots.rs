//! Debian roots for the install proofs: made once by debootstrap, kept under
//! `~/.cache/icmp-guard/roots/<suite>`, and copied for each proof so that every proof
//! starts from a fresh system.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::process::{self, command};

/// Debian's mirror, the one the packages of this machine come from.
const MIRROR: &str = "http://deb.debian.org/debian";

/// A Debian root: the release as debootstrap names it, the packages a proof needs beyond
/// `minbase`, and the name of its cache directory.
pub struct Suite {
    pub name: &'static str,
    pub release: &'static str,
    pub include: &'static [&'static str],
}

/// Debian 12: the .deb is installed here. init-system-helpers brings deb-systemd-helper,
/// which the maintainer scripts use to enable the unit.
pub const BOOKWORM: Suite = Suite {
    name: "bookworm",
    release: "bookworm",
    include: &["init-system-helpers"],
};

/// Debian 12 with systemd as init, booted with systemd-nspawn to run the unit for real.
pub const BOOKWORM_SYSTEMD: Suite = Suite {
    name: "bookworm-systemd",
    release: "bookworm",
    include: &["systemd", "systemd-sysv", "iproute2", "init-system-helpers"],
};

/// Debian 11 (glibc 2.31): the static binary must run here.
pub const BULLSEYE: Suite = Suite {
    name: "bullseye",
    release: "bullseye",
    include: &[],
};

fn cache_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(base.join("icmp-guard"))
}

/// The cached root of `suite`, made by debootstrap the first time (a few minutes).
pub fn cached(suite: &Suite) -> Result<PathBuf> {
    let roots = cache_dir()?.join("roots");
    let root = roots.join(suite.name);
    // A root is only ever renamed into place once debootstrap finished.
    if root.join("etc/debian_version").exists() {
        return Ok(root);
    }
    fs::create_dir_all(&roots)?;
    let partial = roots.join(format!("{}.partial", suite.name));
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the unfinished {}", partial.display()))?;
    }
    println!(
        "making a Debian {} root with debootstrap in {} (once; a few minutes)...",
        suite.name,
        root.display()
    );
    let mut debootstrap = command("debootstrap");
    debootstrap.arg("--variant=minbase");
    if !suite.include.is_empty() {
        debootstrap.arg(format!("--include={}", suite.include.join(",")));
    }
    debootstrap
        .arg(suite.release)
        .arg(&partial)
        .arg(MIRROR)
        .stdin(std::process::Stdio::null());
    // Hundreds of lines when it works; shown only when it does not.
    println!("$ {}", process::display(&debootstrap));
    let output = process::output(&mut debootstrap)?;
    if !output.status.success() {
        let log = String::from_utf8_lossy(&output.stdout);
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        for line in tail.iter().rev() {
            println!("{line}");
        }
        bail!(
            "debootstrap of Debian {} failed ({}): {}",
            suite.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    fs::rename(&partial, &root)?;
    Ok(root)
}

/// A throwaway copy of a root, removed on drop. Nothing is mounted inside it, so removing
/// it can never reach outside.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A copy of the cached root of `suite`.
    pub fn of(suite: &Suite) -> Result<Self> {
        let root = cached(suite)?;
        let scratch = Self::empty(suite.name)?;
        process::run(
            command("cp")
                .args(["-a", "--reflink=auto", "-T"])
                .arg(&root)
                .arg(&scratch.path),
        )?;
        Ok(scratch)
    }

    /// An empty directory, for a root that only the artefact fills.
    pub fn empty(label: &str) -> Result<Self> {
        let path = cache_dir()?.join(format!("scratch-{label}-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path)?;
        }
        fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command run inside the root with `chroot`, with a plain environment.
    pub fn chroot(&self, program: &str) -> Command {
        let mut chroot = Command::new("chroot");
        chroot
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LC_ALL", "C")
            .env("HOME", "/root")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .arg(&self.path)
            .arg(program);
        chroot
    }

    /// Runs `program args` in the root; its stdout, or an error with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut chroot = self.chroot(program);
        chroot.args(args);
        println!(
            "$ chroot {} {program} {}",
            self.path.display(),
            args.join(" ")
        );
        let out = process::stdout_of(&mut chroot)?;
        print!("{out}");
        if !out.is_empty() && !out.ends_with('\n') {
            println!();
        }
        Ok(out)
    }

    /// A path inside the root.
    pub fn join(&self, path: &str) -> PathBuf {
        self.path.join(path.trim_start_matches('/'))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mounted = fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mounts| {
            mounts
                .lines()
                .filter_map(|line| line.split(' ').nth(4))
                .any(|point| Path::new(point).starts_with(&self.path))
        });
        if mounted {
            eprintln!(
                "warning: something is mounted under {}; leaving it in place",
                self.path.display()
            );
            return;
        }
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: cannot remove {}: {err}", self.path.display());
        }
    }
}

/// Fails unless `condition`, saying what the proof expected.
pub fn ensure(condition: bool, what: impl FnOnce() -> String) -> Result<()> {
    if !condition {
        bail!("{}", what());
    }
    Ok(())
}
