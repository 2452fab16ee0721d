//! `cargo xtask fleet-check`: validates what `deploy/` gives a fleet operator, offline, with
//! the tools the operators themselves use.
//!
//! - `kubernetes-validate --strict` checks every manifest against the schemas of a current
//!   Kubernetes release ([`KUBERNETES_VERSION`]);
//! - `crosscheck.py` checks what no schema sees: that the objects fit together (selectors,
//!   named ports, the scrape annotations and `--metrics`, the ConfigMap key the DaemonSet
//!   reads, the uninstaller's pin directory) and the PodMonitor, whose CRD
//!   kubernetes-validate lacks;
//! - the ConfigMap's policy passes `icmp-guard policy check` (the binary of this tree);
//! - `ansible-playbook --syntax-check` reads the playbook, then its policy tasks run for real
//!   against localhost, with the playbook's own `validate: icmp-guard policy check %s`;
//! - `promtool check rules` and `promtool test rules` check the alert rules and their unit
//!   tests, and `promtool check rules` parses every query of the Grafana dashboard.
//!
//! The Python tools live in a virtualenv under `~/.cache/icmp-guard/` with every package
//! pinned ([`PYTHON_PACKAGES`]): installed from PyPI the first time, used offline after.
//! `--negative-control` breaks a copy of `deploy/` one way at a time and shows that the
//! check meant to catch each break does.

use std::{
    env, fmt, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{cargo, process, setup};

/// The Kubernetes release the manifests are validated against: the newest that the pinned
/// kubernetes-validate knows.
const KUBERNETES_VERSION: &str = "1.37.0";

/// The virtualenv's packages, every one pinned (the tools and what they pull in), so that a
/// check that passed today passes tomorrow.
const PYTHON_PACKAGES: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "ansible-core==2.19.14",
    "attrs==26.1.0",
    "cffi==2.1.1",
    "cryptography==50.0.2",
    "importlib_resources==7.1.0",
    "Jinja2==3.1.6",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "MarkupSafe==3.0.4",
    "packaging==26.4",
    "pycparser==3.12",
    "PyYAML==6.0.4",
    "referencing==0.37.0",
    "resolvelib==1.2.1",
    "rpds-py==2026.9.1",
    "typing_extensions==4.16.0",
];

/// Kinds kubernetes-validate has no schema for, checked by `crosscheck.py` instead.
const CROSS_CHECKED_KINDS: &[&str] = &["PodMonitor", "Kustomization"];

/// The cross-checks, run with the virtualenv's Python (PyYAML comes with it).
const CROSSCHECK: &str = include_str!("fleet/crosscheck.py");

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Instead of checking deploy/, break copies of it one way at a time and succeed only if
    /// the check meant to catch each break rejects it
    #[arg(long, conflicts_with = "rehearse_image")]
    negative_control: bool,

    /// Instead of checking deploy/, run the DaemonSet rehearsal (tests/e2e/fleet_rehearsal.rs)
    /// with the binary of the container image that `cargo xtask dist` left in target/dist
    /// (unpacked with skopeo and umoci, as a runtime would); needs root
    #[arg(long)]
    rehearse_image: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if args.rehearse_image {
        return rehearse_image();
    }
    setup::run()?;
    process::run(process::command("cargo").args(["build", "--package", "icmp-guard"]))?;
    let binary = cargo::target_dir()?.join("debug").join("icmp-guard");
    if !binary.is_file() {
        bail!(
            "`cargo build` succeeded but {} is missing",
            binary.display()
        );
    }
    let tools = Tools::ensure(binary)?;
    let deploy = cargo::workspace_root().join("deploy");
    if args.negative_control {
        return negative_control(&tools, &deploy);
    }
    match check_tree(&tools, &deploy, true) {
        Ok(()) => {
            println!("cargo xtask fleet-check: deploy/ passed every check");
            Ok(())
        }
        Err(failure) => Err(failure.error.context(format!("{} failed", failure.check))),
    }
}

/// Unpacks the image of `cargo xtask dist` and runs the DaemonSet rehearsal with its root.
fn rehearse_image() -> Result<()> {
    if !process::is_root() {
        bail!("run with sudo: the rehearsal creates network and mount namespaces");
    }
    let dist = cargo::target_dir()?.join("dist");
    let archive = fs::read_dir(&dist)
        .with_context(|| format!("reading {}: run `cargo xtask dist` first", dist.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("icmp-guard-") && name.ends_with("-oci.tar"))
        })
        .with_context(|| {
            format!(
                "no image in {}: run `cargo xtask dist` first",
                dist.display()
            )
        })?;
    let name = archive
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    let version = name
        .trim_start_matches("icmp-guard-")
        .trim_end_matches("-oci.tar")
        .to_owned();
    let scratch = TempDir::new("image")?;
    let layout = scratch.path().join("layout");
    let bundle = scratch.path().join("bundle");
    process::run(
        process::command("skopeo")
            .arg("copy")
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("oci:{}:{version}", layout.display())),
    )?;
    process::run(
        process::command("umoci")
            .arg("unpack")
            .arg(format!("--image={}:{version}", layout.display()))
            .arg(&bundle),
    )?;
    let rootfs = bundle.join("rootfs");
    println!(
        "rehearsing the DaemonSet with the image's root {}",
        rootfs.display()
    );
    // The same static build `cargo xtask test` made: nothing to compile again.
    let mut test = process::command("cargo");
    cargo::static_test_build(test.arg("test"))
        .args([
            "--test",
            "e2e",
            "--",
            "fleet_rehearsal::",
            "--test-threads",
            "1",
            "--nocapture",
        ])
        .env("ICMP_GUARD_REHEARSAL_ROOTFS", &rootfs);
    process::run(&mut test)
}

/// The checks, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    KubernetesValidate,
    Manifests,
    ConfigMapPolicy,
    DashboardQueries,
    PromtoolCheckRules,
    PromtoolTestRules,
    AnsibleSyntax,
    AnsiblePolicy,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KubernetesValidate => "kubernetes-validate --strict",
            Self::Manifests => "the manifests' cross-checks",
            Self::ConfigMapPolicy => "icmp-guard policy check of the ConfigMap's policy",
            Self::DashboardQueries => "promtool check rules of the dashboard's queries",
            Self::PromtoolCheckRules => "promtool check rules",
            Self::PromtoolTestRules => "promtool test rules",
            Self::AnsibleSyntax => "ansible-playbook --syntax-check",
            Self::AnsiblePolicy => "the playbook's validated policy template",
        })
    }
}

/// Which check rejected the tree, and why.
#[derive(Debug)]
struct Failure {
    check: Check,
    error: anyhow::Error,
}

trait During<T> {
    /// Tags an error with the check it happened in.
    fn during(self, check: Check) -> Result<T, Failure>;
}

impl<T> During<T> for Result<T> {
    fn during(self, check: Check) -> Result<T, Failure> {
        self.map_err(|error| Failure { check, error })
    }
}

/// The programs the checks run.
struct Tools {
    /// icmp-guard, built from this tree.
    binary: PathBuf,
    /// The virtualenv's `bin/` directory.
    venv_bin: PathBuf,
    /// Where Ansible keeps its temporary files and collections, instead of `~/.ansible`.
    ansible_home: PathBuf,
}

impl Tools {
    /// Finds promtool and brings the virtualenv up (creating it the first time).
    fn ensure(binary: PathBuf) -> Result<Self> {
        if process::find_program("promtool").is_none() {
            bail!("promtool is missing: install Debian's prometheus package (cargo xtask setup)");
        }
        let venv = cache_dir()?.join(format!("fleet-venv-{:016x}", fnv1a(PYTHON_PACKAGES)));
        let venv_bin = venv.join("bin");
        let stamp = venv.join("icmp-guard-packages");
        let wanted = PYTHON_PACKAGES.join("\n");
        let python_runs = || {
            process::output(process::command(venv_bin.join("python")).arg("--version"))
                .is_ok_and(|output| output.status.success())
        };
        let fresh = fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted);
        if fresh && python_runs() {
            println!("using the pinned Python tools in {}", venv.display());
        } else {
            // A half-made or outdated virtualenv is made again from nothing.
            if venv.exists() {
                fs::remove_dir_all(&venv)
                    .with_context(|| format!("removing the stale {}", venv.display()))?;
            }
            let python = process::find_program("python3").context(
                "python3 is missing: the fleet checks run kubernetes-validate and ansible-core \
                 from a Python virtualenv (apt-get install python3 python3-venv)",
            )?;
            process::run(process::command(python).args(["-m", "venv"]).arg(&venv))
                .context("creating the virtualenv (Debian: apt-get install python3-venv)")?;
            process::run(
                process::command(venv_bin.join("pip"))
                    .args([
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "--no-input",
                    ])
                    .args(PYTHON_PACKAGES),
            )
            .context("installing the pinned Python tools from PyPI")?;
            fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
        }
        let ansible_home = venv.join("ansible-home");
        // An empty configuration of our own: the workspace's or the user's ansible.cfg must
        // not change what is checked.
        fs::create_dir_all(&ansible_home)
            .with_context(|| format!("creating {}", ansible_home.display()))?;
        fs::write(ansible_home.join("ansible.cfg"), "[defaults]\n")
            .context("writing an empty ansible.cfg")?;
        Ok(Self {
            binary,
            venv_bin,
            ansible_home,
        })
    }

    fn venv(&self, program: &str) -> Command {
        process::command(self.venv_bin.join(program))
    }

    /// An Ansible program of the virtualenv, with its state and configuration kept there.
    fn ansible(&self, program: &str) -> Command {
        let mut command = self.venv(program);
        command
            .env("ANSIBLE_HOME", &self.ansible_home)
            .env("ANSIBLE_LOCAL_TEMP", self.ansible_home.join("tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env("ANSIBLE_CONFIG", self.ansible_home.join("ansible.cfg"));
        command
    }
}

/// `$XDG_CACHE_HOME/icmp-guard`, else `~/.cache/icmp-guard`.
fn cache_dir() -> Result<PathBuf> {
    let base = env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set: no place for the virtualenv")?;
    Ok(base.join("icmp-guard"))
}

/// A stable fingerprint of the package list, naming its virtualenv (FNV-1a, 64 bits).
fn fnv1a(words: &[&str]) -> u64 {
    words
        .iter()
        .flat_map(|word| word.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = env::temp_dir().join(format!(
            "icmp-guard-fleet-{}-{what}-{n}",
            std::process::id()
        ));
        if path.exists() {
            fs::remove_dir_all(&path)?;
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `command`; a non-zero exit is an error carrying its output. With `verbose`, prints
/// the command and its output as it would appear in a terminal.
fn checked(command: &mut Command, verbose: bool) -> Result<String> {
    let shown = process::display(command);
    let output = process::output(command)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if verbose {
        println!("$ {shown}");
        print!("{text}");
    }
    if !output.status.success() {
        bail!("`{shown}` failed ({}):\n{}", output.status, text.trim_end());
    }
    Ok(text)
}

/// Runs every check on the `deploy/` tree at `deploy`; stops at the first that fails.
fn check_tree(tools: &Tools, deploy: &Path, verbose: bool) -> Result<(), Failure> {
    let kubernetes = deploy.join("kubernetes");
    let monitoring = deploy.join("monitoring");
    let ansible = deploy.join("ansible");
    let scratch = TempDir::new("check").during(Check::Manifests)?;

    let manifests = yaml_files(&kubernetes).during(Check::KubernetesValidate)?;
    let output = checked(
        tools
            .venv("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .args(&manifests),
        verbose,
    )
    .during(Check::KubernetesValidate)?;
    unvalidated_kinds(&output).during(Check::KubernetesValidate)?;

    let script = scratch.path().join("crosscheck.py");
    fs::write(&script, CROSSCHECK)
        .context("writing crosscheck.py")
        .during(Check::Manifests)?;
    checked(
        tools
            .venv("python")
            .arg(&script)
            .arg(deploy)
            .arg(scratch.path()),
        verbose,
    )
    .during(Check::Manifests)?;

    checked(
        process::command(&tools.binary)
            .args(["policy", "check"])
            .arg(scratch.path().join("configmap-policy.toml")),
        verbose,
    )
    .during(Check::ConfigMapPolicy)?;

    checked(
        process::command("promtool")
            .args(["check", "rules"])
            .arg(scratch.path().join("dashboard-rules.yaml")),
        verbose,
    )
    .during(Check::DashboardQueries)?;

    checked(
        process::command("promtool")
            .args(["check", "rules"])
            .arg(monitoring.join("alerts.yaml")),
        verbose,
    )
    .during(Check::PromtoolCheckRules)?;
    let tests = yaml_files(&monitoring.join("tests")).during(Check::PromtoolTestRules)?;
    checked(
        process::command("promtool")
            .args(["test", "rules"])
            .args(&tests),
        verbose,
    )
    .during(Check::PromtoolTestRules)?;

    let playbook = ansible.join("playbook.yml");
    checked(
        tools
            .ansible("ansible-playbook")
            .args(["--syntax-check", "-i"])
            .arg(ansible.join("inventory.example.ini"))
            .arg(&playbook),
        verbose,
    )
    .during(Check::AnsibleSyntax)?;
    ansible_policy(tools, &playbook, scratch.path(), verbose).during(Check::AnsiblePolicy)?;
    Ok(())
}

/// The `*.yaml` files of `dir`, sorted; an empty directory is an error (a check of nothing).
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} has no .yaml file to check", dir.display());
    }
    Ok(files)
}

/// kubernetes-validate passes a kind it has no schema for with a warning; only the kinds
/// that `crosscheck.py` checks instead may pass that way.
fn unvalidated_kinds(output: &str) -> Result<()> {
    let unchecked: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("Couldn't find schema for kind"))
        .filter(|line| {
            !CROSS_CHECKED_KINDS
                .iter()
                .any(|kind| line.contains(&format!("kind {kind} ")))
        })
        .collect();
    if !unchecked.is_empty() {
        bail!(
            "kubernetes-validate checked nothing of these, and neither does crosscheck.py:\n{}",
            unchecked.join("\n")
        );
    }
    Ok(())
}

/// Runs the playbook's policy tasks against localhost, into a scratch directory, with the
/// binary of this tree as the `validate:` command; then checks what they wrote.
fn ansible_policy(tools: &Tools, playbook: &Path, scratch: &Path, verbose: bool) -> Result<()> {
    let config = scratch.join("ansible-etc");
    let python = tools.venv_bin.join("python");
    let vars = serde_json::json!({
        "icmp_guard_hosts": "localhost",
        "ansible_become": false,
        "ansible_python_interpreter": python,
        "icmp_guard_service": false,
        "icmp_guard_binary": tools.binary,
        "icmp_guard_config_dir": config,
    });
    checked(
        tools
            .ansible("ansible-playbook")
            .args(["-i", "localhost,", "-c", "local", "--tags", "policy", "-e"])
            .arg(vars.to_string())
            .arg(playbook),
        verbose,
    )?;
    let written = config.join("policy.toml");
    if !written.is_file() {
        bail!("the playbook succeeded but wrote no {}", written.display());
    }
    checked(
        process::command(&tools.binary)
            .args(["policy", "check"])
            .arg(&written),
        verbose,
    )?;
    Ok(())
}

/// The line of a tool's output that says why it failed, else its last line, cut to a
/// readable length.
fn telling_line(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    // Most telling first: promtool's parse errors and failed alert tests, then errors.
    let line = ["parse error", "alertname:", "ERROR", "error:"]
        .iter()
        .find_map(|marker| {
            lines
                .iter()
                .find(|line| line.contains(marker) && !line.starts_with('`'))
        })
        .or(lines.last())
        .copied()
        .unwrap_or_default();
    line.chars().take(240).collect()
}

/// One way to break `deploy/`, and the check that must catch it.
struct Mutation {
    what: &'static str,
    /// The file, relative to `deploy/`.
    file: &'static str,
    /// Text that occurs exactly once in the file, and its replacement.
    from: &'static str,
    to: &'static str,
    caught_by: Check,
}

const MUTATIONS: &[Mutation] = &[
    Mutation {
        what: "a misspelled field in the DaemonSet",
        file: "kubernetes/daemonset.yaml",
        from: "              mountPropagation: HostToContainer",
        to: "              mountPropogation: HostToContainer",
        caught_by: Check::KubernetesValidate,
    },
    Mutation {
        what: "--metrics on another port than the container port and the scrape annotation",
        file: "kubernetes/daemonset.yaml",
        from: "- $(HOST_IP):9469",
        to: "- $(HOST_IP):9470",
        caught_by: Check::Manifests,
    },
    Mutation {
        what: "a PodMonitor scraping a port the pods do not have",
        file: "kubernetes/podmonitor.yaml",
        from: "- port: metrics",
        to: "- port: metric",
        caught_by: Check::Manifests,
    },
    Mutation {
        what: "an uninstaller that detaches nothing",
        file: "kubernetes/uninstall.yaml",
        from: r#"args: ["detach", "--all"]"#,
        to: r#"args: ["status"]"#,
        caught_by: Check::Manifests,
    },
    Mutation {
        what: "a ConfigMap policy that drops IPv6 packet-too-big without force",
        file: "kubernetes/configmap.yaml",
        from: "    base = \"default\"\n",
        to: "    base = \"default\"\n\n    [[rule]]\n    type = \"packet-too-big\"\n    action = \"drop\"\n",
        caught_by: Check::ConfigMapPolicy,
    },
    Mutation {
        what: "a dashboard query that does not parse",
        file: "monitoring/grafana-dashboard.json",
        from: r#""expr": "sum(icmp_guard_interface_attached{"#,
        to: r#""expr": "sum(icmp_guard_interface_attached{{"#,
        caught_by: Check::DashboardQueries,
    },
    Mutation {
        what: "an alert rule that does not parse",
        file: "monitoring/alerts.yaml",
        from: "expr: icmp_guard_up == 0",
        to: "expr: icmp_guard_up === 0",
        caught_by: Check::PromtoolCheckRules,
    },
    Mutation {
        what: "a flood threshold the alert tests do not expect",
        file: "monitoring/alerts.yaml",
        from: "  ) > 1000\n",
        to: "  ) > 100000\n",
        caught_by: Check::PromtoolTestRules,
    },
    Mutation {
        what: "a playbook task with an unknown module",
        file: "ansible/playbook.yml",
        from: "ansible.builtin.template:\n        src: policy.toml.j2",
        to: "ansible.builtin.templat:\n        src: policy.toml.j2",
        caught_by: Check::AnsibleSyntax,
    },
    Mutation {
        what: "a policy template that renders a policy icmp-guard refuses",
        file: "ansible/templates/policy.toml.j2",
        from: r#"base = "{{ icmp_guard_base }}""#,
        to: r#"base = "{{ icmp_guard_base }}-profile""#,
        caught_by: Check::AnsiblePolicy,
    },
];

/// Copies `from` to `to`, recursively (plain files and directories only).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Applies `mutation` to the copy of `deploy/` at `tree`.
fn mutate(tree: &Path, mutation: &Mutation) -> Result<()> {
    let path = tree.join(mutation.file);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    // A mutation that no longer applies must fail loudly, not test the unbroken file.
    let found = text.matches(mutation.from).count();
    if found != 1 {
        bail!(
            "the negative control \"{}\" expects {:?} once in {}, found it {found} times: update it",
            mutation.what,
            mutation.from,
            mutation.file
        );
    }
    fs::write(&path, text.replacen(mutation.from, mutation.to, 1))
        .with_context(|| format!("writing {}", path.display()))
}

fn negative_control(tools: &Tools, deploy: &Path) -> Result<()> {
    println!("the unbroken deploy/ first, so that every rejection below is the break's doing:");
    check_tree(tools, deploy, false)
        .map_err(|failure| failure.error.context(format!("{} failed", failure.check)))?;
    let mut missed = Vec::new();
    for mutation in MUTATIONS {
        let copy = TempDir::new("negative")?;
        copy_tree(deploy, copy.path())?;
        mutate(copy.path(), mutation)?;
        match check_tree(tools, copy.path(), false) {
            Err(failure) if failure.check == mutation.caught_by => {
                println!(
                    "rejected by {}: {}\n    {}",
                    failure.check,
                    mutation.what,
                    telling_line(&format!("{:#}", failure.error))
                );
            }
            Err(failure) => {
                println!(
                    "WRONG CHECK: {} was rejected by {}, not {}: {:#}",
                    mutation.what, failure.check, mutation.caught_by, failure.error
                );
                missed.push(mutation.what);
            }
            Ok(()) => {
                println!("NOT REJECTED: {} passed every check", mutation.what);
                missed.push(mutation.what);
            }
        }
    }
    if !missed.is_empty() {
        bail!(
            "the fleet checks let through what they must reject: {}",
            missed.join("; ")
        );
    }
    println!(
        "cargo xtask fleet-check --negative-control: all {} broken inputs rejected, each by the check meant for it",
        MUTATIONS.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cross_checked_kinds_may_pass_without_a_schema() {
        let ok = "WARN a.yaml Couldn't find schema for kind PodMonitor with api version monitoring.coreos.com/v1 for kubernetes version 1.37\n\
                  INFO b.yaml passed for resource configmap/x against version 1.37";
        assert!(unvalidated_kinds(ok).is_ok());
        let bad = "WARN c.yaml Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1 for kubernetes version 1.37";
        let error = unvalidated_kinds(bad).expect_err("ServiceMonitor is checked by nothing");
        assert!(format!("{error:#}").contains("ServiceMonitor"), "{error:#}");
    }

    #[test]
    fn every_mutation_applies_to_the_committed_tree_exactly_once() {
        let deploy = cargo::workspace_root().join("deploy");
        for mutation in MUTATIONS {
            let text = fs::read_to_string(deploy.join(mutation.file)).expect("readable");
            assert_eq!(
                text.matches(mutation.from).count(),
                1,
                "{}: {:?} in {}",
                mutation.what,
                mutation.from,
                mutation.file
            );
            assert_ne!(mutation.from, mutation.to, "{}", mutation.what);
        }
    }

    #[test]
    fn the_venv_name_follows_the_pins() {
        assert_eq!(fnv1a(&["a==1"]), fnv1a(&["a==1"]));
        assert_ne!(fnv1a(&["a==1"]), fnv1a(&["a==2"]));
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }
}
