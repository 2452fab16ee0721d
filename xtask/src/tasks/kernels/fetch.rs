//! Debian cloud kernels for the matrix.
//!
//! A series ("5.10") is resolved through the `linux-image-cloud-amd64` meta-package: the
//! newest version of it whose upstream version is in the series names the kernel package
//! it depends on (`linux-image-5.10.0-46-cloud-amd64 (= 5.10.262-1)`), so security updates
//! that bump the ABI number are picked up without editing anything. Package lists of the
//! Debian suites that carry such kernels (bullseye to sid, with their security and
//! backports suites) are read with a private apt configuration under the cache directory:
//! the machine's own sources, lists and dpkg state are never read or written.
//!
//! The cache (`$ICMP_GUARD_KERNEL_CACHE`, else `$XDG_CACHE_HOME/icmp-guard/kernels`, else
//! `~/.cache/icmp-guard/kernels`) keeps the package lists (refreshed once a day) and, per
//! kernel package and version, only `vmlinuz` and `config` out of the .deb. When the lists
//! cannot be refreshed (no network, `--offline`), the newest cached kernel of the series is
//! used. `ICMP_GUARD_DEBIAN_MIRROR` and `ICMP_GUARD_DEBIAN_SECURITY_MIRROR` replace
//! deb.debian.org.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::util::process;

const META_PACKAGE: &str = "linux-image-cloud-amd64";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
/// Suites searched for kernels, `true` for those on the security mirror. 5.10 lives in
/// bullseye, 6.1 in bookworm, 6.12 in trixie and bookworm-backports, newer ones in the
/// backports of trixie and in sid.
const SUITES: &[(&str, bool)] = &[
    ("bullseye", false),
    ("bullseye-security", true),
    ("bookworm", false),
    ("bookworm-security", true),
    ("bookworm-backports", false),
    ("trixie", false),
    ("trixie-security", true),
    ("trixie-backports", false),
    ("sid", false),
];
/// Package lists younger than this are used without asking the mirror again.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// A kernel ready to boot.
pub struct Kernel {
    /// The kernel package, e.g. `linux-image-5.10.0-46-cloud-amd64`.
    pub package: String,
    /// Its Debian version, e.g. `5.10.262-1`.
    pub version: String,
    /// The suite it came from (`cache` when the lists could not be read).
    pub suite: String,
    pub vmlinuz: PathBuf,
}

/// One version of the meta-package, as the lists describe it.
struct Candidate {
    /// Version of the meta-package, which is the kernel's upstream version plus Debian
    /// revision (`6.12.95-1~bpo12+1`).
    meta_version: String,
    package: String,
    version: String,
    suite: String,
}

pub struct Fetcher {
    cache: PathBuf,
    offline: bool,
    refresh: bool,
    /// Read once per run: `None` until needed, then the candidates (or why there are none).
    candidates: Option<std::result::Result<Vec<Candidate>, String>>,
}

/// Whether `text` names a kernel series: MAJOR.MINOR.
pub fn is_series(text: &str) -> bool {
    let mut parts = text.split('.');
    let number = |part: Option<&str>| {
        part.is_some_and(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
    };
    number(parts.next()) && number(parts.next()) && parts.next().is_none()
}

/// Where kernels and package lists are cached.
pub fn cache_dir() -> Result<PathBuf> {
    let non_empty = |name: &str| env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = non_empty("ICMP_GUARD_KERNEL_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let base = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("neither HOME nor XDG_CACHE_HOME is set: set ICMP_GUARD_KERNEL_CACHE")?;
    Ok(base.join("icmp-guard").join("kernels"))
}

impl Fetcher {
    pub fn new(offline: bool, refresh: bool) -> Result<Self> {
        let cache = cache_dir()?;
        fs::create_dir_all(&cache)
            .with_context(|| format!("creating the kernel cache {}", cache.display()))?;
        Ok(Self {
            cache,
            offline,
            refresh,
            candidates: None,
        })
    }

    /// The newest Debian cloud kernel of `series`, downloaded if it is not cached yet.
    pub fn kernel(&mut self, series: &str) -> Result<Kernel> {
        let prefix = format!("{series}.");
        let chosen = match self.candidates() {
            Ok(candidates) => candidates
                .iter()
                .find(|candidate| candidate.meta_version.starts_with(&prefix))
                .map(|candidate| {
                    (
                        candidate.package.clone(),
                        candidate.version.clone(),
                        candidate.suite.clone(),
                    )
                }),
            Err(why) => {
                println!("kernels: {why}; looking for a cached {series} kernel");
                let cached = self.newest_cached(series)?.with_context(|| {
                    format!(
                        "no Debian {series} kernel is cached, and the package lists are unavailable"
                    )
                })?;
                return Ok(cached);
            }
        };
        let Some((package, version, suite)) = chosen else {
            let known: Vec<String> = self
                .candidates()
                .map(|candidates| {
                    let mut series: Vec<String> = candidates
                        .iter()
                        .filter_map(|c| {
                            let mut parts = c.meta_version.split('.');
                            Some(format!("{}.{}", parts.next()?, parts.next()?))
                        })
                        .collect();
                    series.dedup();
                    series
                })
                .unwrap_or_default();
            bail!(
                "no Debian cloud kernel of series {series} in {}; available: {}",
                suite_names(", "),
                known.join(", ")
            );
        };
        let dir = self.cache.join(format!("{package}_{version}"));
        let vmlinuz = dir.join("vmlinuz");
        if vmlinuz.is_file() {
            println!("kernels: {series} is {package} {version} ({suite}), cached");
        } else {
            if self.offline {
                bail!("{package} {version} is not cached and --offline forbids downloading it");
            }
            println!("kernels: {series} is {package} {version} ({suite}), downloading");
            self.download(&package, &version, &suite, &dir)?;
        }
        self.prune(series, &dir);
        Ok(Kernel {
            package,
            version,
            suite,
            vmlinuz,
        })
    }

    fn apt_dir(&self) -> PathBuf {
        self.cache.join("apt")
    }

    /// `apt-get` or `apt-cache` with the private configuration.
    fn apt(&self, program: &str) -> Command {
        let apt = self.apt_dir();
        let mut command = process::command(program);
        command.arg("-q");
        let mut option = |key: &str, value: &Path| {
            command.arg("-o").arg(format!("{key}={}", value.display()));
        };
        option("Dir::Etc::SourceList", &apt.join("sources.list"));
        option("Dir::Etc::SourceParts", &apt.join("empty"));
        option(
            "Dir::Etc::Preferences",
            &apt.join("empty").join("preferences"),
        );
        option("Dir::Etc::PreferencesParts", &apt.join("empty"));
        option("Dir::State", &apt.join("state"));
        option("Dir::State::Lists", &apt.join("state").join("lists"));
        option("Dir::State::status", &apt.join("state").join("status"));
        option("Dir::Cache", &apt.join("cache"));
        option("Dir::Cache::Archives", &apt.join("cache").join("archives"));
        for setting in [
            "APT::Architectures=amd64",
            "Acquire::Languages=none",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
        ] {
            command.args(["-o", setting]);
        }
        if process::is_root() {
            // The lists live in our cache, which apt's unprivileged `_apt` user cannot
            // write.
            command.args(["-o", "APT::Sandbox::User=root"]);
        }
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        command
    }

    /// The meta-package's versions, newest first, reading (and refreshing) the lists once.
    fn candidates(&mut self) -> std::result::Result<&Vec<Candidate>, String> {
        if self.candidates.is_none() {
            self.candidates = Some(self.read_candidates().map_err(|err| format!("{err:#}")));
        }
        match self.candidates.as_ref() {
            Some(Ok(candidates)) => Ok(candidates),
            Some(Err(why)) => Err(why.clone()),
            None => Err("the package lists were not read".to_owned()),
        }
    }

    fn read_candidates(&self) -> Result<Vec<Candidate>> {
        self.prepare_lists()?;
        let show = process::output(self.apt("apt-cache").args(["show", META_PACKAGE]))?;
        if !show.status.success() {
            bail!(
                "apt-cache show {META_PACKAGE} failed: {}",
                String::from_utf8_lossy(&show.stderr).trim()
            );
        }
        let madison = process::stdout_of(self.apt("apt-cache").args(["madison", META_PACKAGE]))?;
        let suite_of = |version: &str| -> String {
            madison
                .lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split('|').map(str::trim).collect();
                    (fields.get(1) == Some(&version)).then_some(fields.get(2).copied()?)
                })
                .filter_map(|source| source.split_whitespace().nth(1))
                .filter_map(|suite| suite.split('/').next())
                .next()
                .unwrap_or("?")
                .to_owned()
        };
        // apt lists the versions of a package newest first.
        let mut candidates = Vec::new();
        for stanza in String::from_utf8_lossy(&show.stdout).split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(str::trim)
            };
            let (Some(meta_version), Some(depends)) = (field("Version:"), field("Depends:")) else {
                continue;
            };
            // "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"
            let Some((package, version)) = depends
                .split(',')
                .map(str::trim)
                .filter(|dependency| dependency.starts_with("linux-image-"))
                .find_map(|dependency| {
                    let (package, rest) = dependency.split_once(" (= ")?;
                    Some((package.trim(), rest.trim_end_matches(')').trim()))
                })
            else {
                continue;
            };
            candidates.push(Candidate {
                meta_version: meta_version.to_owned(),
                package: package.to_owned(),
                version: version.to_owned(),
                suite: suite_of(meta_version),
            });
        }
        if candidates.is_empty() {
            bail!("the package lists name no {META_PACKAGE}");
        }
        Ok(candidates)
    }

    /// Writes the private apt configuration and refreshes the lists when they are missing,
    /// older than a day, or `--refresh` asks. A failed refresh with lists present only
    /// warns: stale lists still name kernels that are downloadable or cached.
    fn prepare_lists(&self) -> Result<()> {
        let apt = self.apt_dir();
        for dir in [
            apt.join("empty"),
            apt.join("state").join("lists").join("partial"),
            apt.join("cache").join("archives").join("partial"),
        ] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let status = apt.join("state").join("status");
        if !status.exists() {
            fs::write(&status, "").with_context(|| format!("creating {}", status.display()))?;
        }
        if !Path::new(KEYRING).exists() {
            bail!("{KEYRING} is missing: install debian-archive-keyring");
        }
        let sources = sources_list();
        let sources_path = apt.join("sources.list");
        let sources_changed = fs::read_to_string(&sources_path).ok().as_deref() != Some(&sources);
        if sources_changed {
            fs::write(&sources_path, &sources)
                .with_context(|| format!("writing {}", sources_path.display()))?;
        }
        let stamp = apt.join("updated");
        let have_lists = || {
            fs::read_dir(apt.join("state").join("lists")).is_ok_and(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|entry| entry.file_name().to_string_lossy().contains("_Packages"))
            })
        };
        let age = fs::metadata(&stamp)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok());
        let fresh = !sources_changed && age.is_some_and(|age| age < LISTS_MAX_AGE);
        if self.offline {
            if !have_lists() {
                bail!("--offline, and no package lists are cached yet");
            }
            return Ok(());
        }
        if fresh && !self.refresh {
            return Ok(());
        }
        println!(
            "kernels: reading the Debian package lists ({}) into {}",
            suite_names(" "),
            apt.display()
        );
        let update = process::output(self.apt("apt-get").arg("update"))?;
        let stderr = String::from_utf8_lossy(&update.stderr);
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("E:") || line.starts_with("W:"))
            .collect();
        if update.status.success() && complaints.iter().all(|line| line.starts_with("W:")) {
            for line in complaints {
                println!("kernels: apt: {line}");
            }
            fs::write(&stamp, "").with_context(|| format!("writing {}", stamp.display()))?;
            return Ok(());
        }
        // One suite gone from the mirror (a release moving to archive.debian.org) or a
        // network hiccup must not stop the series the other lists still name; the lists are
        // tried again on the next run.
        let why = complaints.join(" / ");
        if have_lists() {
            println!(
                "kernels: the package lists could not all be refreshed ({why}); \
                 going on with what is there"
            );
            return Ok(());
        }
        bail!("apt-get update failed: {why}")
    }

    /// The package that holds the kernel image: the image package itself, or, since the
    /// split of Debian 14 (forky), the `linux-binary-*` package it depends on.
    fn image_holder(&self, package: &str, version: &str) -> Result<String> {
        let show = process::stdout_of(
            self.apt("apt-cache")
                .args(["show", &format!("{package}={version}")]),
        )?;
        let depends = show
            .lines()
            .find_map(|line| line.strip_prefix("Depends:"))
            .unwrap_or_default();
        Ok(depends
            .split(',')
            .filter_map(|dependency| dependency.split_whitespace().next())
            .find(|name| name.starts_with("linux-binary-"))
            .unwrap_or(package)
            .to_owned())
    }

    fn download(&self, package: &str, version: &str, suite: &str, dir: &Path) -> Result<()> {
        let holder = self.image_holder(package, version)?;
        let staging = Staging::new(self.cache.join(format!(".staging-{}", std::process::id())))?;
        let download = process::output(
            self.apt("apt-get")
                .current_dir(&staging.0)
                .args(["download", &format!("{holder}={version}")]),
        )?;
        if !download.status.success() {
            bail!(
                "apt-get download {holder}={version} failed: {}",
                String::from_utf8_lossy(&download.stderr).trim()
            );
        }
        let deb = fs::read_dir(&staging.0)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .context("apt-get download left no .deb")?;
        // Only the image and its config: the modules are not needed (BPF, XDP and bpffs
        // are built in). /boot/vmlinuz-ABI up to Debian 13, /usr/lib/modules/ABI/vmlinuz
        // after.
        let listing = process::stdout_of(process::command("dpkg-deb").arg("--contents").arg(&deb))
            .context("listing the kernel package (Debian's dpkg-deb is needed)")?;
        let mut wanted: Vec<(&str, String)> = Vec::new();
        for line in listing.lines().filter(|line| line.starts_with('-')) {
            let Some(path) = line.split_whitespace().last() else {
                continue;
            };
            let name = path.rsplit('/').next().unwrap_or_default();
            let in_boot = path.starts_with("./boot/");
            let in_modules =
                path.starts_with("./usr/lib/modules/") && path.matches('/').count() == 5;
            let target = match name {
                _ if in_boot && name.starts_with("vmlinuz-") => "vmlinuz",
                _ if in_boot && name.starts_with("config-") => "config",
                "vmlinuz" if in_modules => "vmlinuz",
                "config" if in_modules => "config",
                _ => continue,
            };
            wanted.push((target, path.to_owned()));
        }
        if !wanted.iter().any(|(target, _)| *target == "vmlinuz") {
            bail!("{} contains no kernel image (vmlinuz)", deb.display());
        }
        let root = staging.0.join("root");
        fs::create_dir_all(&root)?;
        let mut unpack = process::command("dpkg-deb");
        unpack
            .arg("--fsys-tarfile")
            .arg(&deb)
            .stdout(Stdio::piped())
            .stdin(Stdio::null());
        let mut unpack = unpack.spawn().context("starting dpkg-deb")?;
        let tar_input = unpack.stdout.take().context("dpkg-deb has no stdout")?;
        let tar = process::command("tar")
            .arg("-x")
            .arg("-C")
            .arg(&root)
            .args(wanted.iter().map(|(_, path)| path))
            .stdin(tar_input)
            .output()
            .context("starting tar")?;
        let unpacked = unpack.wait()?;
        if !unpacked.success() || !tar.status.success() {
            bail!(
                "unpacking {} failed: {}",
                deb.display(),
                String::from_utf8_lossy(&tar.stderr).trim()
            );
        }
        let kernel = staging.0.join("kernel");
        fs::create_dir_all(&kernel)?;
        for (target, path) in &wanted {
            fs::rename(root.join(path), kernel.join(target))
                .with_context(|| format!("taking {path} out of {}", deb.display()))?;
        }
        fs::write(
            kernel.join("origin"),
            format!("{package}\n{version}\n{suite}\n"),
        )?;
        fs::rename(&kernel, dir).with_context(|| format!("moving the kernel to {}", dir.display()))
    }

    /// Cached kernels of `series`: `(dir, package, version, suite)`.
    fn cached(&self, series: &str) -> Vec<(PathBuf, String, String, String)> {
        let prefix = format!("{series}.");
        let Ok(entries) = fs::read_dir(&self.cache) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|dir| dir.join("vmlinuz").is_file())
            .filter_map(|dir| {
                let origin = fs::read_to_string(dir.join("origin")).ok()?;
                let mut lines = origin.lines();
                let (package, version) = (lines.next()?.to_owned(), lines.next()?.to_owned());
                let suite = lines.next().unwrap_or("?").to_owned();
                version
                    .starts_with(&prefix)
                    .then_some((dir, package, version, suite))
            })
            .collect()
    }

    fn newest_cached(&self, series: &str) -> Result<Option<Kernel>> {
        let mut best: Option<(PathBuf, String, String, String)> = None;
        for candidate in self.cached(series) {
            let newer = match &best {
                None => true,
                Some(current) => version_greater(&candidate.2, &current.2)?,
            };
            if newer {
                best = Some(candidate);
            }
        }
        Ok(best.map(|(dir, package, version, suite)| {
            println!("kernels: {series} is {package} {version} (cached from {suite})");
            Kernel {
                package,
                version,
                suite: format!("{suite}, cached"),
                vmlinuz: dir.join("vmlinuz"),
            }
        }))
    }

    /// Removes older cached kernels of `series` once a newer one is in place.
    fn prune(&self, series: &str, keep: &Path) {
        for (dir, package, version, _) in self.cached(series) {
            if dir != keep && fs::remove_dir_all(&dir).is_ok() {
                println!("kernels: removed the superseded {package} {version} from the cache");
            }
        }
    }
}

/// `dpkg --compare-versions a gt b`.
/// The names of [`SUITES`], joined by `separator`.
fn suite_names(separator: &str) -> String {
    let names: Vec<&str> = SUITES.iter().map(|(suite, _)| *suite).collect();
    names.join(separator)
}

fn version_greater(a: &str, b: &str) -> Result<bool> {
    let status =
        process::output(process::command("dpkg").args(["--compare-versions", a, "gt", b]))?.status;
    Ok(status.success())
}

fn sources_list() -> String {
    let mirror = |name: &str, default: &str| {
        env::var(name)
            .ok()
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let main = mirror("ICMP_GUARD_DEBIAN_MIRROR", DEFAULT_MIRROR);
    let security = mirror("ICMP_GUARD_DEBIAN_SECURITY_MIRROR", DEFAULT_SECURITY_MIRROR);
    let mut text =
        String::from("# Written by `cargo xtask kernels`; read only by its own apt calls.\n");
    for (suite, on_security) in SUITES {
        let uri = if *on_security { &security } else { &main };
        text.push_str(&format!("deb [signed-by={KEYRING}] {uri} {suite} main\n"));
    }
    text
}

/// A directory removed when dropped, whatever happened in between.
struct Staging(PathBuf);

impl Staging {
    fn new(path: PathBuf) -> Result<Self> {
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::is_series;

    #[test]
    fn series_are_major_dot_minor() {
        assert!(is_series("5.10"));
        assert!(is_series("6.1"));
        assert!(!is_series("6"));
        assert!(!is_series("6.1.0"));
        assert!(!is_series("host"));
        assert!(!is_series("6."));
    }
}
