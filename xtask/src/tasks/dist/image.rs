//! The container image: built offline with `buildah from scratch` (no base image, nothing
//! pulled) and saved as an OCI archive; and its proof, which unpacks it the way a runtime
//! would (skopeo, umoci) and runs the entrypoint's binary in the unpacked root.
//!
//! `podman run` cannot run here: this sandbox does not let crun set RLIMIT_NPROC. So the
//! proof does what a runtime does up to that point, and runs the entrypoint with chroot.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::{Artefacts, BINARY, roots::Scratch};
use crate::util::process::{self, command};

/// What the image holds: (path in the image, path in the staging tree).
const CONTENT: &[(&str, &str)] = &[
    ("/usr/sbin/icmp-guard", BINARY),
    ("/etc/icmp-guard/policy.toml", "etc/icmp-guard/policy.toml"),
    (
        "/usr/share/doc/icmp-guard/BUILD-INFO",
        "usr/share/doc/icmp-guard/BUILD-INFO",
    ),
];

/// The entrypoint: `podman run IMAGE eth0 --policy ...` runs the guard.
pub const ENTRYPOINT: [&str; 2] = ["/usr/sbin/icmp-guard", "run"];

/// buildah with its own storage under target/dist, so that nothing of the machine's
/// container storage is read or changed, and the vfs driver, which works everywhere.
fn buildah(artefacts: &Artefacts) -> Command {
    let storage = artefacts.dir.join("buildah");
    let mut buildah = command("buildah");
    buildah
        .arg(format!("--root={}", storage.join("root").display()))
        .arg(format!("--runroot={}", storage.join("run").display()))
        .arg("--storage-driver=vfs");
    buildah
}

fn labels(artefacts: &Artefacts) -> Vec<(&'static str, String)> {
    vec![
        ("org.opencontainers.image.title", "icmp-guard".to_owned()),
        (
            "org.opencontainers.image.description",
            "XDP ICMP firewall and flood guard".to_owned(),
        ),
        (
            "org.opencontainers.image.licenses",
            "MIT OR Apache-2.0".to_owned(),
        ),
        (
            "org.opencontainers.image.version",
            artefacts.version.clone(),
        ),
        (
            "org.opencontainers.image.revision",
            artefacts.commit.clone(),
        ),
    ]
}

/// Builds the image from scratch and writes `icmp-guard-<version>-oci.tar`.
pub fn build(artefacts: &Artefacts) -> Result<()> {
    let name = format!("icmp-guard-dist-{}", std::process::id());
    process::run(buildah(artefacts).args(["from", "--name", &name, "scratch"]))?;
    let result = fill_and_commit(artefacts, &name);
    // A failed build leaves no working container behind (commit --rm removes it on success).
    if result.is_err() {
        let _ = process::output(buildah(artefacts).args(["rm", &name]));
    }
    result?;
    // The storage only served this build.
    fs::remove_dir_all(artefacts.dir.join("buildah")).ok();
    Ok(())
}

fn fill_and_commit(artefacts: &Artefacts, name: &str) -> Result<()> {
    for (inside, staged) in CONTENT {
        process::run(
            buildah(artefacts)
                .args(["copy", name])
                .arg(artefacts.stage.join(staged))
                .arg(inside),
        )?;
    }
    let mut config = buildah(artefacts);
    config
        .arg("config")
        .arg(format!(
            "--entrypoint={}",
            serde_json::to_string(&ENTRYPOINT)?
        ))
        .args(["--os", "linux", "--arch", "amd64"]);
    for (key, value) in labels(artefacts) {
        config.arg(format!("--label={key}={value}"));
    }
    process::run(config.arg(name))?;
    process::run(
        buildah(artefacts)
            .args([
                "commit",
                "--format",
                "oci",
                "--rm",
                "--disable-compression=false",
            ])
            .arg(format!("--timestamp={}", artefacts.commit_time))
            .arg(name)
            .arg(format!(
                "oci-archive:{}:icmp-guard:{}",
                artefacts.image.display(),
                artefacts.version
            )),
    )
}

/// What an image is, for comparing two: its entrypoint, command and labels, and every file
/// with its mode and content hash.
#[derive(Debug, PartialEq, Eq)]
pub struct Unpacked {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub files: BTreeMap<String, String>,
    /// The unpacked bundle (config.json and rootfs/), removed with the scratch.
    pub bundle: PathBuf,
}

/// Unpacks an OCI archive as a runtime would: `skopeo copy` to an OCI layout, `umoci
/// unpack` to a bundle.
pub fn unpack(archive: &Path, tag: &str, scratch: &Scratch) -> Result<Unpacked> {
    let inspect: serde_json::Value = serde_json::from_str(&process::stdout_of(
        command("skopeo")
            .args(["inspect", "--config"])
            .arg(format!("oci-archive:{}", archive.display())),
    )?)?;
    let strings = |value: &serde_json::Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let config = &inspect["config"];
    let labels = config["Labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();

    let layout = scratch.path().join("layout");
    let bundle = scratch.path().join("bundle");
    process::run(
        command("skopeo")
            .arg("copy")
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("oci:{}:{tag}", layout.display())),
    )?;
    process::run(
        command("umoci")
            .arg("unpack")
            .arg(format!("--image={}:{tag}", layout.display()))
            .arg(&bundle),
    )?;
    Ok(Unpacked {
        entrypoint: strings(&config["Entrypoint"]),
        cmd: strings(&config["Cmd"]),
        labels,
        files: files(&bundle.join("rootfs"))?,
        bundle,
    })
}

/// path → "mode sha256" of every regular file under `root`; directories by mode only.
fn files(root: &Path) -> Result<BTreeMap<String, String>> {
    let listing = process::stdout_of(
        command("find")
            .arg(".")
            .args(["-mindepth", "1", "-printf", "%y %m %P\\n"])
            .current_dir(root),
    )?;
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let mut fields = line.splitn(3, ' ');
        let (Some(kind), Some(mode), Some(path)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let description = if kind == "f" {
            let sum = process::stdout_of(command("sha256sum").arg(root.join(path)))?;
            format!(
                "file {mode} {}",
                sum.split_whitespace().next().unwrap_or_default()
            )
        } else {
            format!("{kind} {mode}")
        };
        files.insert(path.to_owned(), description);
    }
    Ok(files)
}

/// Builds `packaging/Containerfile` with the unpacked tarball as its context (as its
/// comments tell people to) and returns the OCI archive, for comparison with ours.
pub fn build_containerfile(
    artefacts: &Artefacts,
    context: &Path,
    scratch: &Scratch,
) -> Result<PathBuf> {
    let archive = scratch.path().join("containerfile-oci.tar");
    let tag = format!("localhost/icmp-guard-containerfile:{}", artefacts.version);
    process::run(
        buildah(artefacts)
            .args(["build", "--format", "oci", "--layers=false", "--pull=never"])
            .arg(format!("--timestamp={}", artefacts.commit_time))
            .arg(format!("--build-arg=VERSION={}", artefacts.version))
            .arg(format!("--build-arg=REVISION={}", artefacts.commit))
            .arg(format!(
                "--file={}",
                context
                    .join("usr/share/doc/icmp-guard/Containerfile")
                    .display()
            ))
            .arg(format!("--tag={tag}"))
            .arg(context),
    )?;
    process::run(
        buildah(artefacts)
            .args(["push", &tag])
            .arg(format!("oci-archive:{}:containerfile", archive.display())),
    )?;
    let _ = process::output(buildah(artefacts).args(["rmi", "--all", "--force"]));
    fs::remove_dir_all(artefacts.dir.join("buildah")).context("removing buildah's storage")?;
    Ok(archive)
}

/// The files the image must hold, with their directories.
pub fn expected_paths() -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for (inside, _) in CONTENT {
        let inside = inside.trim_start_matches('/');
        let mut prefix = String::new();
        for part in inside.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !paths.contains(&prefix) {
                paths.push(prefix.clone());
            }
        }
    }
    paths.sort();
    paths
}
