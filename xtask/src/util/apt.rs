//! Debian's package tools, as set-up and the kernel matrix use them.

use std::process::{Command, Stdio};

use anyhow::Result;

use super::process;

/// `apt-get` with `-o` `options`, which never asks a question: CI runs without a terminal
/// or stdin.
pub fn apt_get(options: &[String]) -> Command {
    let mut command = process::command("apt-get");
    for option in options {
        command.args(["-o", option]);
    }
    command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    command
}

/// The installed version of `package`, `None` when dpkg does not have it installed (or
/// there is no dpkg).
pub fn installed_version(package: &str) -> Result<Option<String>> {
    if process::find_program("dpkg-query").is_none() {
        return Ok(None);
    }
    let output = process::output(process::command("dpkg-query").args([
        "-W",
        "-f=${Status}|${Version}",
        package,
    ]))?;
    // dpkg-query exits non-zero for a package it has never heard of; a removed package
    // that left its configuration behind reports `deinstall ok config-files`.
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .split_once('|')
        .filter(|(status, _)| output.status.success() && status.contains("install ok installed"))
        .map(|(_, version)| version.to_owned()))
}
