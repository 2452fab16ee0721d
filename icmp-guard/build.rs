use std::{path::Path, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the XDP object from `icmp-guard-ebpf` and leaves it in `OUT_DIR/icmp-guard`, and
/// its trace build (feature `trace`, for `icmp-guard trace`) in `OUT_DIR/icmp-guard-trace`.
///
/// With `ICMP_GUARD_STUB_EBPF=1` empty files stand in for the objects, so `cargo check`
/// and clippy work where bpf-linker is absent. A binary built that way refuses to attach.
fn main() -> anyhow::Result<()> {
    record_commit()?;
    println!("cargo:rerun-if-env-changed=ICMP_GUARD_STUB_EBPF");
    println!("cargo::rustc-check-cfg=cfg(icmp_guard_stub_ebpf)");
    if std::env::var_os("ICMP_GUARD_STUB_EBPF").is_some_and(|value| value == "1") {
        let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
        for name in ["icmp-guard", TRACE_OBJECT] {
            std::fs::write(Path::new(&out_dir).join(name), [])
                .context("writing the stub eBPF object")?;
        }
        println!("cargo:rustc-cfg=icmp_guard_stub_ebpf");
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == "icmp-guard-ebpf")
        .ok_or_else(|| anyhow!("icmp-guard-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("icmp-guard-ebpf manifest has no parent directory"))?;
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
    let out_dir = Path::new(&out_dir);
    // aya-build names the object after the binary, so the trace build goes first and is
    // renamed before the production build takes the name. Both share one target directory,
    // where cargo keeps each feature set's artifacts apart.
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            features: &["trace"],
            ..Default::default()
        }],
        Toolchain::default(),
    )?;
    std::fs::rename(out_dir.join("icmp-guard"), out_dir.join(TRACE_OBJECT))
        .context("renaming the trace build of the eBPF object")?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

/// The trace build's object in `OUT_DIR`.
const TRACE_OBJECT: &str = "icmp-guard-trace";

/// Writes the commit this binary is built from to `OUT_DIR/commit` for `--version`.
///
/// In order: `ICMP_GUARD_COMMIT` (a packager who builds outside git), `git rev-parse HEAD`
/// in a checkout, the hash `git archive` writes into `COMMIT` (see `.gitattributes`), else
/// `unknown`. Only the file `HEAD` and the ref it names are watched, so a commit reruns this
/// script (and relinks the crate once), while edits elsewhere in `.git` do not.
fn record_commit() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=ICMP_GUARD_COMMIT");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let archived = Path::new(&manifest_dir).join("COMMIT");
    println!("cargo:rerun-if-changed={}", archived.display());
    let commit = match std::env::var("ICMP_GUARD_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => commit.trim().to_owned(),
        _ => git_commit(&manifest_dir)
            .or_else(|| archived_commit(&archived))
            .unwrap_or_else(|| "unknown".to_owned()),
    };
    let out_dir = std::env::var_os("OUT_DIR").context("OUT_DIR not set")?;
    let path = Path::new(&out_dir).join("commit");
    // Rewritten only when it changes, so that an unchanged commit never looks new.
    if std::fs::read_to_string(&path).ok().as_deref() != Some(commit.as_str()) {
        std::fs::write(&path, &commit).context("writing OUT_DIR/commit")?;
    }
    Ok(())
}

fn git(dir: &str, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// The checkout's commit, watching the files that change when it does. `None`
/// outside a git checkout (a source tarball) or without git.
fn git_commit(dir: &str) -> Option<String> {
    let commit = git(dir, &["rev-parse", "--verify", "HEAD"])?;
    // `HEAD` changes on a checkout, the branch's ref on a commit; a packed branch has no
    // loose ref, but `logs/HEAD` grows with every commit, reset and checkout.
    let mut watched = vec![
        "HEAD".to_owned(),
        "logs/HEAD".to_owned(),
        "packed-refs".to_owned(),
    ];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        // A path that does not exist would make cargo rerun this script on every build.
        if let Some(path) = git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", &name],
        ) && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    Some(commit)
}

/// The hash `git archive` substituted into `COMMIT`; the unsubstituted placeholder (a
/// checkout) does not count.
fn archived_commit(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let commit = text.trim();
    (commit.len() >= 7 && commit.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .then(|| commit.to_owned())
}
