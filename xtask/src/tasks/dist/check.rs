//! `cargo xtask dist --check`: every artefact proven by installing it, not by listing it.
//!
//! - the unit: `systemd-analyze security --offline=yes` exposure below 3.0; and booted
//!   under systemd with the .deb installed (see [`super::service`]);
//! - the tarball: unpacked with the README's command into a fresh Debian 11 root (glibc
//!   2.31), where the static binary runs `--version` and `policy check`;
//! - the .deb: lintian finds no error; `dpkg -i` into a fresh Debian 12 root, where
//!   `--version` and `policy check /etc/icmp-guard/policy.toml` succeed, the unit is enabled,
//!   the maintainer script starts it only once INTERFACES is set, the bash completion
//!   offers interfaces and type names; `dpkg -r` removes everything but the conffiles,
//!   `dpkg -P` those too;
//! - the .rpm: `rpm -qlp` shows the layout; `rpm -i` into a fresh root, where the binary
//!   runs, and `rpm -e` removes it;
//! - the image: unpacked as a runtime would and its entrypoint run with chroot (see
//!   [`super::image`]); the `Containerfile` builds the same image.

use std::{collections::BTreeSet, fs, path::Path};

use anyhow::{Context as _, Result};

use super::{
    Artefacts, BINARY, file_name,
    image::{self, ENTRYPOINT},
    roots::{BOOKWORM, BULLSEYE, Scratch, ensure},
};
use crate::util::process::{self, command, is_root};

/// The exposure `systemd-analyze security` may give the unit at most (issue 16: below 3.0;
/// 4.2 before it).
pub const MAX_EXPOSURE: f64 = 3.0;

pub fn run(artefacts: &Artefacts) -> Result<()> {
    if !is_root() {
        anyhow::bail!(
            "the install proofs need root (debootstrap, chroot, dpkg -i): run `sudo cargo xtask dist --check`"
        );
    }
    let started = std::time::Instant::now();
    let mut proven = Vec::new();
    let mut prove = |what: &str, proof: &dyn Fn() -> Result<String>| -> Result<()> {
        println!("\n=== proving {what}");
        let said = proof().with_context(|| format!("proving {what}"))?;
        println!("=== {what}: ok ({said})");
        proven.push(format!("{what}: {said}"));
        Ok(())
    };
    prove("the sums", &|| sums(artefacts))?;
    prove("the unit", &|| unit(artefacts))?;
    prove("the unit under systemd", &|| {
        super::service::prove(artefacts)
    })?;
    prove("the tarball on Debian 11", &|| tarball(artefacts))?;
    prove("the .deb on Debian 12", &|| deb(artefacts))?;
    prove("the .rpm", &|| rpm(artefacts))?;
    prove("the zsh and fish completions", &|| completions(artefacts))?;
    prove("the OCI image", &|| oci_image(artefacts))?;
    println!(
        "\ncargo xtask dist --check: every artefact proven by installing it ({} s):",
        started.elapsed().as_secs()
    );
    for line in &proven {
        println!("  {line}");
    }
    Ok(())
}

fn sums(artefacts: &Artefacts) -> Result<String> {
    let out = process::stdout_of(
        command("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(&artefacts.dir),
    )?;
    print!("{out}");
    Ok(format!(
        "{} artefacts match SHA256SUMS",
        out.lines().count()
    ))
}

/// The exposure of `unit` as `systemd-analyze security --offline=yes` rates it.
pub fn exposure(unit: &Path) -> Result<f64> {
    let out = process::output(
        command("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(unit),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "→ Overall exposure level for icmp-guard.service: 2.3 OK 🙂"
    text.lines()
        .find_map(|line| {
            let (_, rest) = line.split_once("Overall exposure level for ")?;
            rest.split_once(": ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| {
            format!(
                "`systemd-analyze security --offline=yes {}` printed no exposure level:\n{text}{}",
                unit.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn unit(artefacts: &Artefacts) -> Result<String> {
    let unit = artefacts
        .stage
        .join("usr/lib/systemd/system/icmp-guard.service");
    let level = exposure(&unit)?;
    ensure(level < MAX_EXPOSURE, || {
        format!("the unit's exposure is {level}, not below {MAX_EXPOSURE}")
    })?;
    Ok(format!(
        "systemd-analyze security --offline=yes: exposure {level}"
    ))
}

/// `--version` and `policy check` of the installed binary inside `root`; also that a
/// broken policy is refused there, so the check is known to be able to fail.
fn runs_in(root: &Scratch, artefacts: &Artefacts) -> Result<()> {
    let binary = format!("/{BINARY}");
    let version = root.run(&binary, &["--version"])?;
    ensure(version.trim() == artefacts.version_line(), || {
        format!(
            "--version printed {version:?}, not {:?}",
            artefacts.version_line()
        )
    })?;
    root.run(&binary, &["policy", "check", "/etc/icmp-guard/policy.toml"])?;
    fs::write(
        root.join("/tmp/broken.toml"),
        "[[rule]]\ntype = \"no-such-type\"\naction = \"drop\"\n",
    )?;
    let refused =
        process::output(
            root.chroot(&binary)
                .args(["policy", "check", "/tmp/broken.toml"]),
        )?;
    ensure(refused.status.code() == Some(1), || {
        format!(
            "policy check accepted a broken file ({}): {}",
            refused.status,
            String::from_utf8_lossy(&refused.stderr)
        )
    })?;
    Ok(())
}

fn tarball(artefacts: &Artefacts) -> Result<String> {
    let root = Scratch::of(&BULLSEYE)?;
    let glibc = root.run("/usr/bin/ldd", &["--version"])?;
    let glibc = glibc
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().last())
        .unwrap_or_default()
        .to_owned();
    ensure(glibc == "2.31", || {
        format!("the Debian 11 root has glibc {glibc}, not 2.31")
    })?;
    // The README's command, unchanged.
    process::run(
        command("tar")
            .args(["-xzf"])
            .arg(&artefacts.tarball)
            .args(["-C"])
            .arg(root.path())
            .args([
                "--strip-components=1",
                "--no-overwrite-dir",
                "--keep-directory-symlink",
            ]),
    )?;
    runs_in(&root, artefacts)?;
    for (path, _) in super::STAGED {
        ensure(root.join(path).exists(), || {
            format!("the tarball did not install /{path}")
        })?;
    }
    // An upgrade with the README's exclusion keeps the operator's settings.
    let settings = root.join("/etc/default/icmp-guard");
    fs::write(&settings, "INTERFACES=eth0\n")?;
    process::run(
        command("tar")
            .args(["-xzf"])
            .arg(&artefacts.tarball)
            .args(["-C"])
            .arg(root.path())
            .args([
                "--strip-components=1",
                "--no-overwrite-dir",
                "--keep-directory-symlink",
                "--exclude=*/etc",
            ]),
    )?;
    ensure(
        fs::read_to_string(&settings)? == "INTERFACES=eth0\n",
        || "the tarball upgrade overwrote /etc/default/icmp-guard".to_owned(),
    )?;
    Ok(format!(
        "static binary runs on glibc {glibc}: --version and policy check; an upgrade keeps /etc"
    ))
}

/// Every file of the staging tree, as `/path`, with the moves of a package: the unit and
/// zsh's completion go where `distro` keeps them.
fn installed_layout(artefacts: &Artefacts, debian: bool) -> Result<BTreeSet<String>> {
    let listing = process::stdout_of(
        command("find")
            .arg(".")
            .args(["-type", "f", "-printf", "/%P\\n"])
            .current_dir(&artefacts.stage),
    )?;
    Ok(listing
        .lines()
        .map(|path| {
            if debian {
                path.replace("/usr/lib/systemd/system/", "/lib/systemd/system/")
                    .replace("/zsh/site-functions/", "/zsh/vendor-completions/")
            } else {
                path.to_owned()
            }
        })
        .collect())
}

fn deb(artefacts: &Artefacts) -> Result<String> {
    let lintian = process::output(
        command("lintian")
            .args([
                "--fail-on",
                "error",
                "--display-info",
                "--no-tag-display-limit",
            ])
            .arg(&artefacts.deb),
    )?;
    print!("{}", String::from_utf8_lossy(&lintian.stdout));
    let tags = String::from_utf8_lossy(&lintian.stdout).to_string();
    ensure(lintian.status.success(), || {
        format!(
            "lintian found errors in the .deb ({}): {}{}",
            lintian.status,
            tags,
            String::from_utf8_lossy(&lintian.stderr)
        )
    })?;
    let warnings = tags.lines().filter(|line| line.starts_with("W:")).count();

    let root = Scratch::of(&BOOKWORM)?;
    let name = file_name(&artefacts.deb);
    fs::copy(&artefacts.deb, root.join(&format!("/tmp/{name}")))?;
    root.run("dpkg", &["-i", &format!("/tmp/{name}")])?;
    let status = root.run("dpkg-query", &["-W", "-f=${Status}", "icmp-guard"])?;
    ensure(status == "install ok installed", || {
        format!("after dpkg -i the package is {status:?}")
    })?;
    runs_in(&root, artefacts)?;

    let installed: BTreeSet<String> = root
        .run("dpkg", &["-L", "icmp-guard"])?
        .lines()
        .filter(|path| root.join(path).is_file())
        .map(str::to_owned)
        .collect();
    let wanted = installed_layout(artefacts, true)?;
    let missing: Vec<&String> = wanted.difference(&installed).collect();
    ensure(missing.is_empty(), || {
        format!("the .deb did not install {missing:?}")
    })?;
    let extra: Vec<&String> = installed
        .difference(&wanted)
        .filter(|path| !path.starts_with("/usr/share/doc/icmp-guard/"))
        .collect();
    ensure(extra.is_empty(), || {
        format!("the .deb installed files dist did not stage: {extra:?}")
    })?;
    let conffiles: BTreeSet<String> = root
        .run("dpkg-query", &["-W", "-f=${Conffiles}", "icmp-guard"])?
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    let wanted_conffiles: BTreeSet<String> =
        ["/etc/default/icmp-guard", "/etc/icmp-guard/policy.toml"]
            .map(str::to_owned)
            .into();
    ensure(conffiles == wanted_conffiles, || {
        format!("the conffiles are {conffiles:?}, not {wanted_conffiles:?}")
    })?;
    ensure(
        root.join("/etc/systemd/system/sysinit.target.wants/icmp-guard.service")
            .is_symlink(),
        || "dpkg -i did not enable the unit (no sysinit.target.wants link)".to_owned(),
    )?;

    maintainer_script_starts_only_when_configured(&root)?;
    completes_in(&root)?;

    root.run("dpkg", &["-r", "icmp-guard"])?;
    let status = root.run("dpkg-query", &["-W", "-f=${Status}", "icmp-guard"])?;
    ensure(status == "deinstall ok config-files", || {
        format!("after dpkg -r the package is {status:?}")
    })?;
    let left: Vec<&String> = installed
        .iter()
        .filter(|path| root.join(path).exists())
        .collect();
    let left_set: BTreeSet<String> = left.iter().map(|path| (*path).clone()).collect();
    ensure(left_set == wanted_conffiles, || {
        format!("dpkg -r left {left:?}; only the conffiles should stay")
    })?;
    root.run("dpkg", &["-P", "icmp-guard"])?;
    let left: Vec<&String> = installed
        .iter()
        .filter(|path| root.join(path).exists())
        .collect();
    ensure(left.is_empty(), || format!("dpkg -P left {left:?}"))?;
    ensure(
        !root
            .join("/etc/systemd/system/sysinit.target.wants/icmp-guard.service")
            .is_symlink(),
        || "dpkg -P left the unit enabled".to_owned(),
    )?;
    Ok(format!(
        "lintian: 0 errors, {warnings} warnings; dpkg -i: {} files, --version, policy check, unit enabled, started only with INTERFACES set, completion; dpkg -r kept only the 2 conffiles; dpkg -P removed them",
        installed.len()
    ))
}

/// Runs the installed postinst as dpkg would on a systemd host (a `/run/systemd/system`
/// and a `systemctl` that records its calls): no start while INTERFACES is empty, a
/// restart once it is set.
fn maintainer_script_starts_only_when_configured(root: &Scratch) -> Result<()> {
    fs::create_dir_all(root.join("/run/systemd/system"))?;
    let log = root.join("/tmp/systemctl.log");
    let recorder = "#!/bin/sh\necho \"$*\" >> /tmp/systemctl.log\nexit 0\n";
    let systemctl = root.join("/usr/bin/systemctl");
    fs::write(&systemctl, recorder)?;
    process::run(command("chmod").arg("755").arg(&systemctl))?;
    let postinst = "/var/lib/dpkg/info/icmp-guard.postinst";

    root.run(postinst, &["configure", "0.0.1-1"])?;
    let calls = fs::read_to_string(&log).unwrap_or_default();
    ensure(!calls.lines().any(|call| call.contains("start")), || {
        format!("with INTERFACES empty, postinst still ran systemctl {calls:?}")
    })?;

    let settings = root.join("/etc/default/icmp-guard");
    let original = fs::read_to_string(&settings)?;
    fs::write(
        &settings,
        original.replace("\nINTERFACES=\n", "\nINTERFACES=eth0\n"),
    )?;
    fs::write(&log, "")?;
    root.run(postinst, &["configure", "0.0.1-1"])?;
    let calls = fs::read_to_string(&log).unwrap_or_default();
    ensure(
        calls
            .lines()
            .any(|call| call.contains("restart") && call.contains("icmp-guard.service")),
        || format!("with INTERFACES=eth0, postinst did not restart the unit: {calls:?}"),
    )?;

    // Back to a plain root for the removal that follows.
    fs::write(&settings, original)?;
    fs::remove_file(&systemctl)?;
    fs::remove_file(&log)?;
    fs::remove_dir_all(root.join("/run/systemd"))?;
    Ok(())
}

/// The installed bash completion, sourced in bash inside the root, offers the interfaces
/// (a `/sys/class/net` made for the proof) and the type names.
fn completes_in(root: &Scratch) -> Result<()> {
    fs::create_dir_all(root.join("/sys/class/net/proof0"))?;
    fs::write(root.join("/sys/class/net/proof0/ifindex"), "7\n")?;
    let complete = |line: &str| -> Result<Vec<String>> {
        let words: Vec<&str> = line.split(' ').collect();
        let script = format!(
            "source /usr/share/bash-completion/completions/icmp-guard\n\
             COMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n\
             COMP_TYPE=9\n\
             func=$(complete -p icmp-guard | sed -e 's/.*-F \\([^ ]*\\) .*/\\1/')\n\
             $func icmp-guard '{current}' '{previous}'\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words = words
                .iter()
                .map(|word| format!("'{word}'"))
                .collect::<Vec<_>>()
                .join(" "),
            cword = words.len() - 1,
            current = words.last().copied().unwrap_or_default(),
            previous = words
                .get(words.len().saturating_sub(2))
                .copied()
                .unwrap_or_default(),
        );
        Ok(root
            .run("/bin/bash", &["-c", &script])?
            .lines()
            .map(|word| word.trim().to_owned())
            .collect())
    };
    let offered = complete("icmp-guard attach ")?;
    ensure(offered.iter().any(|word| word == "proof0"), || {
        format!("`icmp-guard attach <TAB>` offered {offered:?}, not the interface proof0")
    })?;
    let offered = complete("icmp-guard policy set packet-")?;
    ensure(offered.iter().any(|word| word == "packet-too-big"), || {
        format!("`icmp-guard policy set packet-<TAB>` offered {offered:?}")
    })?;
    fs::remove_dir_all(root.join("/sys/class"))?;
    Ok(())
}

/// zsh and fish load the staged scripts without a syntax error, and fish, asked as it asks
/// on TAB, gets the type names from the binary (here the staged one: the scripts call back
/// the path given to `completions --completer`). bash is proven inside the Debian root.
fn completions(artefacts: &Artefacts) -> Result<String> {
    let stage = &artefacts.stage;
    process::run(
        command("zsh")
            .arg("-n")
            .arg(stage.join("usr/share/zsh/site-functions/_icmp-guard")),
    )?;
    process::run(
        command("fish")
            .arg("--no-execute")
            .arg(stage.join("usr/share/fish/vendor_completions.d/icmp-guard.fish")),
    )?;
    let scratch = Scratch::empty("fish")?;
    let binary = stage.join(BINARY);
    let script = process::stdout_of(
        std::process::Command::new(&binary)
            .args(["completions", "fish", "--completer"])
            .arg(&binary),
    )?;
    let script_path = scratch.path().join("icmp-guard.fish");
    fs::write(&script_path, script)?;
    let offered = process::stdout_of(
        command("fish")
            .arg("--no-config")
            .arg("-c")
            .arg(format!(
                "source {}; complete --do-complete='icmp-guard policy set packet-'",
                script_path.display()
            ))
            .env("HOME", scratch.path()),
    )?;
    print!("{offered}");
    ensure(
        offered
            .lines()
            .any(|line| line.starts_with("packet-too-big")),
        || format!("fish offered {offered:?} for `icmp-guard policy set packet-<TAB>`"),
    )?;
    Ok("zsh -n and fish --no-execute load the scripts; fish completes packet-too-big".to_owned())
}

fn rpm(artefacts: &Artefacts) -> Result<String> {
    let rpm = artefacts.rpm.display().to_string();
    let listed: BTreeSet<String> = process::stdout_of(command("rpm").args(["-qlp", &rpm]))?
        .lines()
        .map(str::to_owned)
        .collect();
    println!("$ rpm -qlp {rpm}");
    for path in &listed {
        println!("{path}");
    }
    let wanted = installed_layout(artefacts, false)?;
    let missing: Vec<&String> = wanted.difference(&listed).collect();
    ensure(missing.is_empty(), || format!("the .rpm lacks {missing:?}"))?;
    let configs: BTreeSet<String> = process::stdout_of(command("rpm").args(["-qcp", &rpm]))?
        .lines()
        .map(str::to_owned)
        .collect();
    ensure(
        configs.contains("/etc/icmp-guard/policy.toml")
            && configs.contains("/etc/default/icmp-guard"),
        || format!("the .rpm's configuration files are {configs:?}"),
    )?;
    let info = process::stdout_of(command("rpm").args(["-qip", &rpm]))?;
    print!("{info}");

    // Installed with rpm into a root that has /bin/sh for the scriptlets but no rpm
    // database of its own (a Debian 11 root: no RPM-based root can be made offline here),
    // hence --nodeps.
    let root = Scratch::of(&BULLSEYE)?;
    let root_dir = root.path().display().to_string();
    process::run(command("rpm").args(["--root", &root_dir, "--initdb"]))?;
    process::run(command("rpm").args(["--root", &root_dir, "-i", "--nodeps", &rpm]))?;
    runs_in(&root, artefacts)?;
    process::run(command("rpm").args(["--root", &root_dir, "-e", "icmp-guard"]))?;
    ensure(!root.join(&format!("/{BINARY}")).exists(), || {
        "rpm -e left the binary".to_owned()
    })?;
    Ok(format!(
        "rpm -qlp: {} paths as staged, 2 config files; rpm -i into a root: --version, policy check; rpm -e removed it",
        listed.len()
    ))
}

fn oci_image(artefacts: &Artefacts) -> Result<String> {
    let scratch = Scratch::empty("oci")?;
    let ours = image::unpack(&artefacts.image, &artefacts.version, &scratch)?;
    ensure(ours.entrypoint == ENTRYPOINT, || {
        format!("the image's entrypoint is {:?}", ours.entrypoint)
    })?;
    ensure(
        ours.labels.get("org.opencontainers.image.revision") == Some(&artefacts.commit)
            && ours.labels.get("org.opencontainers.image.version") == Some(&artefacts.version),
        || format!("the image's labels are {:?}", ours.labels),
    )?;
    let paths: Vec<String> = ours.files.keys().cloned().collect();
    ensure(paths == image::expected_paths(), || {
        format!(
            "the image holds {paths:?}, not only {:?}",
            image::expected_paths()
        )
    })?;

    // The runtime's job, from the bundle umoci made: the entrypoint in the root.
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(ours.bundle.join("config.json"))?)?;
    let args: Vec<String> = config["process"]["args"]
        .as_array()
        .map(|args| {
            args.iter()
                .filter_map(|arg| arg.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ensure(args == ENTRYPOINT, || {
        format!("the bundle would run {args:?}")
    })?;
    let rootfs = ours.bundle.join("rootfs");
    let version = process::stdout_of(
        command("chroot")
            .arg(&rootfs)
            .args(&args)
            .arg("--version")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    )?;
    println!(
        "$ chroot {} {} --version\n{version}",
        rootfs.display(),
        args.join(" ")
    );
    let expected = format!(
        "icmp-guard-run {} (commit {})",
        artefacts.version, artefacts.commit
    );
    ensure(version.trim() == expected, || {
        format!("the entrypoint printed {version:?}, not {expected:?}")
    })?;
    println!(
        "$ chroot {} {} policy check /etc/icmp-guard/policy.toml",
        rootfs.display(),
        args[0]
    );
    let check = process::stdout_of(
        command("chroot")
            .arg(&rootfs)
            .args([&args[0], "policy", "check", "/etc/icmp-guard/policy.toml"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    )?;
    print!("{check}");

    let podman = podman_run(artefacts);

    // The Containerfile, built from the unpacked tarball as its comments say, makes the
    // same image: same configuration, same files, byte for byte.
    let context = scratch.path().join("context");
    fs::create_dir_all(&context)?;
    process::run(
        command("tar")
            .arg("-xzf")
            .arg(&artefacts.tarball)
            .arg("-C")
            .arg(&context)
            .arg("--strip-components=1"),
    )?;
    let archive = image::build_containerfile(artefacts, &context, &scratch)?;
    let theirs_scratch = Scratch::empty("oci-containerfile")?;
    let theirs = image::unpack(&archive, "containerfile", &theirs_scratch)?;
    ensure(
        theirs.entrypoint == ours.entrypoint
            && theirs.cmd == ours.cmd
            && theirs.labels == ours.labels
            && theirs.files == ours.files,
        || {
            format!(
                "the Containerfile builds another image:\n ours:   {:?} {:?} {:?} {:?}\n theirs: {:?} {:?} {:?} {:?}",
                ours.entrypoint,
                ours.cmd,
                ours.labels,
                ours.files,
                theirs.entrypoint,
                theirs.cmd,
                theirs.labels,
                theirs.files
            )
        },
    )?;
    Ok(format!(
        "skopeo copy + umoci unpack, entrypoint `{}` --version and policy check run with chroot; {podman}; the Containerfile builds the same files, entrypoint and labels",
        args.join(" ")
    ))
}

/// `podman run --rm <image> --version` where podman can run containers; here it cannot,
/// which is said, not hidden.
fn podman_run(artefacts: &Artefacts) -> String {
    if process::find_program("podman").is_none() {
        return "podman is not installed, so `podman run` was not tried".to_owned();
    }
    let image = format!("oci-archive:{}", artefacts.image.display());
    // Storage of its own, as for buildah: the machine's container storage is not ours.
    let storage = artefacts.dir.join("podman");
    let outcome = process::output(
        command("podman")
            .arg(format!("--root={}", storage.join("root").display()))
            .arg(format!("--runroot={}", storage.join("run").display()))
            .args(["--storage-driver=vfs", "run", "--rm", &image, "--version"]),
    );
    let _ = fs::remove_dir_all(&storage);
    match outcome {
        Ok(out) if out.status.success() => format!(
            "podman run printed {:?}",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
                .to_owned();
            println!("note: `podman run` cannot run containers here: {why}");
            format!("podman run cannot run containers here ({why})")
        }
        Err(err) => format!("podman run could not start ({err})"),
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_EXPOSURE, exposure};

    /// Issue 16: the unit's exposure, as `systemd-analyze security --offline=yes` rates
    /// it, is below 3.0 (it was 4.2). systemd-analyze comes with Debian's systemd package,
    /// which `cargo xtask setup` installs.
    #[test]
    fn the_unit_is_exposed_below_3() {
        let unit = crate::util::cargo::workspace_root().join("packaging/icmp-guard.service");
        let level = exposure(&unit).expect("systemd-analyze rates the unit");
        assert!(
            level < MAX_EXPOSURE,
            "systemd-analyze security rates the unit {level}, not below {MAX_EXPOSURE}"
        );
    }
}
