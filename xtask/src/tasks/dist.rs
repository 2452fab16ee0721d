//! `cargo xtask dist`: one static release build of icmp-guard, packaged four ways into
//! `target/dist/` with SHA-256 sums: a tarball laid out as it installs, a .deb, an .rpm and
//! an OCI image archive. `--check` then proves each by installing it (see [`check`]).
//!
//! Every artefact is made from the same staging tree, `target/dist/stage/`, which holds the
//! files as they install: the binary, the unit, the example policy and the unit's settings
//! (both configuration files), the manual pages and the completions, all written by the
//! binary itself, and `/usr/share/doc/icmp-guard/BUILD-INFO` with the version and commit.

mod check;
mod image;
mod roots;
mod service;
mod setup;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{
    cargo,
    process::{self, command},
};

/// The target of the static binary: musl links everything in, so one binary runs on any
/// x86-64 Linux, whatever its glibc (Debian 11 has 2.31, RHEL 8 2.28).
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// Where the binary is installed by every artefact, and what the unit runs.
pub const BINARY: &str = "usr/sbin/icmp-guard";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Then prove every artefact by installing it: the .deb into a Debian 12 root, the
    /// static binary into a Debian 11 root, the .rpm into a root with rpm, the image by
    /// unpacking and running it (needs root, and Debian's mirror the first time)
    #[arg(long)]
    check: bool,

    /// With --check: prove the artefacts already in target/dist instead of building them
    #[arg(long, requires = "check")]
    no_build: bool,
}

/// What one `dist` made, for the proofs.
#[derive(Debug)]
pub struct Artefacts {
    pub version: String,
    pub commit: String,
    /// Seconds since the epoch of the commit: every timestamp in the artefacts.
    pub commit_time: u64,
    pub dir: PathBuf,
    pub stage: PathBuf,
    pub tarball: PathBuf,
    pub deb: PathBuf,
    pub rpm: PathBuf,
    pub image: PathBuf,
}

impl Artefacts {
    fn new(version: String, commit: String, commit_time: u64) -> Self {
        let dir = cargo::workspace_root().join("target/dist");
        Self {
            stage: dir.join("stage"),
            tarball: dir.join(format!("icmp-guard-{version}-x86_64-linux.tar.gz")),
            deb: dir.join(format!("icmp-guard_{version}-1_amd64.deb")),
            rpm: dir.join(format!("icmp-guard-{version}-1.x86_64.rpm")),
            image: dir.join(format!("icmp-guard-{version}-oci.tar")),
            dir,
            version,
            commit,
            commit_time,
        }
    }

    /// The four artefacts, in the order of SHA256SUMS.
    pub fn all(&self) -> [&Path; 4] {
        [&self.tarball, &self.deb, &self.rpm, &self.image]
    }

    /// The name of the tarball's top directory.
    pub fn tarball_root(&self) -> String {
        format!("icmp-guard-{}-x86_64-linux", self.version)
    }

    /// What `icmp-guard --version` must print.
    pub fn version_line(&self) -> String {
        format!("icmp-guard {} (commit {})", self.version, self.commit)
    }
}

/// What `cargo xtask setup` adds for `dist`.
pub fn setup() -> Result<()> {
    setup::run()
}

pub fn run(args: &Args) -> Result<()> {
    crate::util::setup::run()?;
    setup::run()?;
    let artefacts = identify()?;
    if args.no_build {
        for artefact in artefacts.all() {
            if !artefact.exists() {
                bail!(
                    "{} is missing: run `cargo xtask dist` first",
                    artefact.display()
                );
            }
        }
    } else {
        build(&artefacts)?;
    }
    if args.check {
        check::run(&artefacts)?;
    }
    Ok(())
}

/// The version and commit the artefacts are made from.
fn identify() -> Result<Artefacts> {
    let metadata: serde_json::Value =
        serde_json::from_str(&process::stdout_of(command("cargo").args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
        ]))?)
        .context("parsing `cargo metadata`")?;
    let version = metadata["packages"]
        .as_array()
        .and_then(|packages| {
            packages
                .iter()
                .find(|package| package["name"] == "icmp-guard")
        })
        .and_then(|package| package["version"].as_str())
        .context("`cargo metadata` lists no icmp-guard package with a version")?
        .to_owned();
    let commit = process::stdout_of(command("git").args(["rev-parse", "HEAD"]))
        .context("dist states the commit in every artefact, so it needs a git checkout")?
        .trim()
        .to_owned();
    let commit_time = process::stdout_of(command("git").args(["log", "-1", "--format=%ct"]))?
        .trim()
        .parse()
        .context("reading the commit's time")?;
    Ok(Artefacts::new(version, commit, commit_time))
}

fn build(artefacts: &Artefacts) -> Result<()> {
    let dirty = process::stdout_of(command("git").args(["status", "--porcelain"]))?;
    if !dirty.trim().is_empty() {
        println!(
            "warning: the work tree has uncommitted changes; the artefacts say commit {} but \
             contain them",
            artefacts.commit
        );
    }
    if artefacts.dir.exists() {
        fs::remove_dir_all(&artefacts.dir)
            .with_context(|| format!("removing {}", artefacts.dir.display()))?;
    }
    fs::create_dir_all(&artefacts.dir)?;

    let binary = build_binary(artefacts)?;
    stage(artefacts, &binary)?;
    tarball(artefacts)?;
    deb(artefacts)?;
    rpm(artefacts)?;
    image::build(artefacts)?;
    sums(artefacts)?;
    println!(
        "cargo xtask dist: the artefacts are in {}:",
        artefacts.dir.display()
    );
    for artefact in artefacts.all() {
        let size = fs::metadata(artefact).map(|meta| meta.len()).unwrap_or(0);
        println!(
            "  {:<44} {:>6} KiB",
            file_name(artefact),
            size.div_ceil(1024)
        );
    }
    println!("  SHA256SUMS");
    Ok(())
}

/// The release build for [`TARGET`], stripped; returns the binary.
fn build_binary(artefacts: &Artefacts) -> Result<PathBuf> {
    let mut cargo = command("cargo");
    cargo
        .args(["build", "--release", "--locked", "--package", "icmp-guard"])
        .args(["--target", TARGET])
        // The binary's own symbols only: the eBPF object inside keeps its BTF, which is
        // built for another target and untouched by this flag.
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS",
            "-C strip=symbols",
        )
        .env("ICMP_GUARD_COMMIT", &artefacts.commit);
    process::run(&mut cargo)?;
    let binary = target_dir()?.join(TARGET).join("release/icmp-guard");
    let printed = version_of(&binary)?;
    if printed != artefacts.version_line() {
        bail!(
            "{} --version says {printed:?}, not {:?}",
            binary.display(),
            artefacts.version_line()
        );
    }
    Ok(binary)
}

fn target_dir() -> Result<PathBuf> {
    let metadata: serde_json::Value =
        serde_json::from_str(&process::stdout_of(command("cargo").args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
        ]))?)?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` has no target_directory")
}

/// The first line `binary --version` prints.
pub fn version_of(binary: &Path) -> Result<String> {
    let out = process::stdout_of(std::process::Command::new(binary).arg("--version"))?;
    Ok(out.lines().next().unwrap_or_default().to_owned())
}

/// Files of the staging tree, as they install: (path under the root, mode).
pub const STAGED: &[(&str, u32)] = &[
    (BINARY, 0o755),
    ("usr/lib/systemd/system/icmp-guard.service", 0o644),
    ("etc/icmp-guard/policy.toml", 0o644),
    ("etc/default/icmp-guard", 0o644),
    ("usr/share/bash-completion/completions/icmp-guard", 0o644),
    ("usr/share/zsh/site-functions/_icmp-guard", 0o644),
    ("usr/share/fish/vendor_completions.d/icmp-guard.fish", 0o644),
    ("usr/share/doc/icmp-guard/README.md", 0o644),
    ("usr/share/doc/icmp-guard/BUILD-INFO", 0o644),
    ("usr/share/doc/icmp-guard/examples/policy.toml", 0o644),
    ("usr/share/doc/icmp-guard/Containerfile", 0o644),
    ("usr/share/man/man8/icmp-guard.8.gz", 0o644),
    ("usr/share/man/man8/icmp-guard-run.8.gz", 0o644),
    ("usr/share/man/man5/icmp-guard.toml.5.gz", 0o644),
];

fn stage(artefacts: &Artefacts, binary: &Path) -> Result<()> {
    let stage = &artefacts.stage;
    let root = cargo::workspace_root();
    let put = |path: &str, from: &Path| -> Result<()> {
        let to = stage.join(path);
        fs::create_dir_all(to.parent().context("a staged path has a parent")?)?;
        fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    put(BINARY, binary)?;
    put(
        "usr/lib/systemd/system/icmp-guard.service",
        &root.join("packaging/icmp-guard.service"),
    )?;
    put(
        "etc/icmp-guard/policy.toml",
        &root.join("examples/policy.toml"),
    )?;
    put(
        "etc/default/icmp-guard",
        &root.join("packaging/icmp-guard.default"),
    )?;
    put(
        "usr/share/doc/icmp-guard/README.md",
        &root.join("README.md"),
    )?;
    put(
        "usr/share/doc/icmp-guard/examples/policy.toml",
        &root.join("examples/policy.toml"),
    )?;
    put(
        "usr/share/doc/icmp-guard/Containerfile",
        &root.join("packaging/Containerfile"),
    )?;
    let rustc = process::stdout_of(command("rustc").arg("--version"))?;
    let info = stage.join("usr/share/doc/icmp-guard/BUILD-INFO");
    fs::write(
        &info,
        format!(
            "icmp-guard {}\ncommit {}\ntarget {TARGET} (static)\n{}\n",
            artefacts.version,
            artefacts.commit,
            rustc.trim()
        ),
    )?;

    // The binary writes its own manual and completions, so they match it exactly.
    let staged_binary = stage.join(BINARY);
    let man = stage.join("usr/share/man");
    process::run(
        std::process::Command::new(&staged_binary)
            .args(["man", "--out-dir"])
            .arg(&man),
    )?;
    let mut pages = Vec::new();
    for section in ["man5", "man8"] {
        for entry in fs::read_dir(man.join(section))? {
            pages.push(entry?.path());
        }
    }
    pages.sort();
    // -n: no name or time in the header, so the same page compresses the same.
    process::run(command("gzip").args(["-9", "-n", "-f"]).args(&pages))?;
    let completer = format!("/{BINARY}");
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/icmp-guard"),
        ("zsh", "usr/share/zsh/site-functions/_icmp-guard"),
        (
            "fish",
            "usr/share/fish/vendor_completions.d/icmp-guard.fish",
        ),
    ] {
        let script = process::stdout_of(std::process::Command::new(&staged_binary).args([
            "completions",
            shell,
            "--completer",
            &completer,
        ]))?;
        let path = stage.join(path);
        fs::create_dir_all(path.parent().context("a staged path has a parent")?)?;
        fs::write(path, script)?;
    }

    // Modes and times as they install; the commit's time makes the archives reproducible.
    for (path, mode) in STAGED {
        let file = stage.join(path);
        if !file.exists() {
            bail!("the staging tree lacks {path}");
        }
        fs::set_permissions(&file, fs::Permissions::from_mode(*mode))?;
    }
    for path in walk(stage)? {
        if path.is_dir() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
    }
    process::stdout_of(
        command("touch")
            .arg("--no-dereference")
            .arg(format!("--date=@{}", artefacts.commit_time))
            .args(walk(stage)?),
    )?;
    Ok(())
}

/// Every file and directory under `dir`, `dir` included.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = vec![dir.to_path_buf()];
    let mut index = 0;
    while index < found.len() {
        if found[index].is_dir() && !found[index].is_symlink() {
            let mut children: Vec<PathBuf> = fs::read_dir(&found[index])?
                .map(|entry| entry.map(|entry| entry.path()))
                .collect::<Result<_, _>>()?;
            children.sort();
            found.extend(children);
        }
        index += 1;
    }
    Ok(found)
}

/// `icmp-guard-<version>-x86_64-linux.tar.gz`: the staging tree under one top directory,
/// owned by root, sorted, dated by the commit.
fn tarball(artefacts: &Artefacts) -> Result<()> {
    let root = artefacts.tarball_root();
    process::run(
        command("tar")
            .arg("--create")
            .arg(format!("--file={}", artefacts.tarball.display()))
            .arg("--use-compress-program=gzip -9 -n")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .arg(format!("--mtime=@{}", artefacts.commit_time))
            .arg(format!("--transform=s,^stage,{root},"))
            .arg("--directory")
            .arg(&artefacts.dir)
            .arg("stage"),
    )
}

/// The .deb, by cargo-deb from `[package.metadata.deb]` in icmp-guard/Cargo.toml, whose
/// assets are the staging tree.
fn deb(artefacts: &Artefacts) -> Result<()> {
    process::run(
        command("cargo")
            .args(["deb", "--package", "icmp-guard", "--no-build", "--no-strip"])
            // Without it, one warning per asset that it is not in target/release/: they
            // come from the staging tree on purpose. lintian checks the result.
            .arg("--quiet")
            .args(["--target", TARGET])
            .args(["--deb-version", &format!("{}-1", artefacts.version)])
            .arg("--output")
            .arg(&artefacts.deb)
            .env("SOURCE_DATE_EPOCH", artefacts.commit_time.to_string()),
    )
}

/// The .rpm, by cargo-generate-rpm from `packaging/rpm/metadata.toml` with the staging
/// tree's absolute paths filled in.
fn rpm(artefacts: &Artefacts) -> Result<()> {
    let root = cargo::workspace_root();
    let template = fs::read_to_string(root.join("packaging/rpm/metadata.toml"))?;
    let metadata = template
        .replace("@STAGE@", &artefacts.stage.display().to_string())
        .replace(
            "@PACKAGING@",
            &root.join("packaging/rpm").display().to_string(),
        );
    let metadata_file = artefacts.dir.join("rpm-metadata.toml");
    fs::write(&metadata_file, metadata)?;
    process::run(
        command("cargo")
            .args(["generate-rpm", "--package", "icmp-guard"])
            .args(["--target", TARGET, "--payload-compress", "xz"])
            .arg(format!("--source-date={}", artefacts.commit_time))
            .arg(format!("--metadata-overwrite={}", metadata_file.display()))
            .arg("--output")
            .arg(&artefacts.rpm),
    )?;
    fs::remove_file(metadata_file)?;
    Ok(())
}

/// `SHA256SUMS`, in the format `sha256sum --check` reads.
fn sums(artefacts: &Artefacts) -> Result<()> {
    let names: Vec<String> = artefacts.all().iter().map(|path| file_name(path)).collect();
    let sums = process::stdout_of(
        command("sha256sum")
            .args(&names)
            .current_dir(&artefacts.dir),
    )?;
    fs::write(artefacts.dir.join("SHA256SUMS"), sums)?;
    Ok(())
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}
