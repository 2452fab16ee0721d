//! What the guests need on the host: QEMU and a statically linked busybox, installed from
//! Debian when missing, the way `cargo xtask setup` does for the test tools (apt-get, one
//! `checking ...` line each). Kept out of setup's list so that `cargo xtask test` does not
//! pull in QEMU.
//!
//! apt-get always runs with `--no-remove`: installing must never take anything away. That
//! matters here: a qemu-utils from `<release>-backports` (as on the CI machines) Breaks the
//! older qemu-system-common of the release itself, so QEMU is then installed from the same
//! backports suite, through a private sources file next to the machine's own sources.

use std::{
    fs,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{
    apt::{apt_get, installed_version},
    process,
};

const QEMU: &str = "qemu-system-x86_64";
const QEMU_PACKAGE: &str = "qemu-system-x86";
const BUSYBOX_PACKAGE: &str = "busybox-static";

fn checking(what: &str) {
    print!("checking {what}... ");
    let _ = std::io::stdout().flush();
}

/// The path of qemu-system-x86_64, installing qemu-system-x86 if needed.
pub fn ensure_qemu() -> Result<PathBuf> {
    checking(QEMU);
    if let Some(path) = process::find_program(QEMU) {
        println!("ok ({})", path.display());
        return Ok(path);
    }
    println!("missing");
    let backports = installed_version("qemu-utils")?
        .filter(|version| version.contains("~bpo"))
        .map(|_| backports_suite())
        .transpose()?;
    install(QEMU_PACKAGE, backports.as_deref())?;
    process::find_program(QEMU)
        .with_context(|| format!("{QEMU_PACKAGE} is installed, but {QEMU} is not on PATH"))
}

/// The path of a statically linked busybox, installing busybox-static if needed.
pub fn ensure_static_busybox() -> Result<PathBuf> {
    checking("a static busybox");
    if let Some(path) = process::find_program("busybox")
        && is_static_elf(&path)?
    {
        println!("ok ({})", path.display());
        return Ok(path);
    }
    println!("missing");
    install(BUSYBOX_PACKAGE, None)?;
    match process::find_program("busybox") {
        Some(path) if is_static_elf(&path)? => Ok(path),
        _ => bail!("{BUSYBOX_PACKAGE} is installed, but the busybox on PATH is not static"),
    }
}

/// `<codename>-backports` of the running Debian release.
fn backports_suite() -> Result<String> {
    let os_release = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    let codename = os_release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
        .context("/etc/os-release has no VERSION_CODENAME")?;
    Ok(format!("{codename}-backports"))
}

/// `apt-get install --no-install-recommends --no-remove PACKAGE`, from `backports` (with
/// its lists in the kernel cache) when given.
fn install(package: &str, backports: Option<&str>) -> Result<()> {
    if process::find_program("apt-get").is_none() {
        bail!("install {package} (Debian's name) with your package manager");
    }
    if !process::is_root() {
        bail!(
            "{package} is missing; install it with: sudo apt-get install --no-install-recommends {package}{}",
            backports
                .map(|suite| format!(" -t {suite}"))
                .unwrap_or_default()
        );
    }
    let mut private = Vec::new();
    if let Some(suite) = backports {
        let dir = super::fetch::cache_dir()?.join("apt-host-backports");
        let lists = dir.join("lists");
        fs::create_dir_all(lists.join("partial"))?;
        let sources = dir.join("sources.list");
        fs::write(
            &sources,
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                 http://deb.debian.org/debian {suite} main\n"
            ),
        )?;
        // The machine's own sources (sources.list.d) stay; this file adds backports, and
        // the lists of both go to a private directory.
        private = vec![
            format!("Dir::Etc::SourceList={}", sources.display()),
            format!("Dir::State::Lists={}", lists.display()),
            "APT::Sandbox::User=root".to_owned(),
        ];
    }
    process::run(apt_get(&private).arg("update"))?;
    let mut install = apt_get(&private);
    install.args(["install", "-y", "--no-install-recommends", "--no-remove"]);
    if let Some(suite) = backports {
        install.args(["-t", suite]);
    }
    process::run(install.arg(package))
}

/// Whether `path` is an ELF executable without a program interpreter (static or
/// static-pie), i.e. one that runs in an initramfs without a C library.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let mut header = Vec::new();
    fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(1 << 20)
        .read_to_end(&mut header)?;
    let u16_at = |offset: usize| -> Option<u16> {
        Some(u16::from_le_bytes(
            header.get(offset..offset + 2)?.try_into().ok()?,
        ))
    };
    let u32_at = |offset: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            header.get(offset..offset + 4)?.try_into().ok()?,
        ))
    };
    let u64_at = |offset: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            header.get(offset..offset + 8)?.try_into().ok()?,
        ))
    };
    // ELF64, little endian.
    if header.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    const PT_INTERP: u32 = 3;
    for index in 0..usize::from(phnum) {
        let offset = usize::try_from(phoff)? + index * usize::from(phentsize);
        match u32_at(offset) {
            Some(PT_INTERP) => return Ok(false),
            Some(_) => {}
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// xdp-tools for the guests: xdp-filter and xdp-loader with the shared libraries they load
/// (found with `ldd`, libxdp being linked in), libxdp's BPF objects (its dispatcher and
/// xdp-filter's programs), each as (its path in the guest, which is its path here, the file
/// here). xdp-tools comes with `cargo xtask setup`.
pub fn xdp_tools() -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for tool in ["xdp-filter", "xdp-loader"] {
        let path = process::find_program(tool)
            .with_context(|| format!("{tool} is missing: install xdp-tools (cargo xtask setup)"))?;
        let ldd = process::output(process::command("ldd").arg(&path))?;
        let listed = String::from_utf8_lossy(&ldd.stdout).into_owned();
        for library in listed.lines().filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        }) {
            files.push(library);
        }
        files.push(path);
    }
    for dir in ["/usr/lib/x86_64-linux-gnu/bpf", "/usr/lib/bpf"] {
        if let Ok(entries) = fs::read_dir(dir) {
            files.extend(entries.filter_map(|entry| Some(entry.ok()?.path())));
        }
    }
    files.sort();
    files.dedup();
    Ok(files
        .into_iter()
        .map(|path| {
            let guest = path.to_string_lossy().trim_start_matches('/').to_owned();
            (guest, path)
        })
        .collect())
}
