//! The DaemonSet rehearsed without a cluster (issue 17, point 6).
//!
//! The test reads `deploy/kubernetes/daemonset.yaml` and `uninstall.yaml` and runs their
//! containers the way the kubelet would on a node: the manifest's command and args (with
//! `$(VAR)` expanded from its env, `status.hostIP` being the node's address), its
//! capabilities (everything else dropped, no new privileges), and its volumes mounted into a
//! fresh mount namespace over an image-like root (`/usr/sbin/icmp-guard` and nothing else in
//! `/usr/sbin` and `/etc`): the "host's bpffs" is a directory of the real bpffs bound with
//! HostToContainer (rslave) propagation, the policy ConfigMap is a directory in the kubelet's
//! layout (`..data` symlink, key symlinks), bound read-only. The node is a lab network
//! namespace with a veth towards a peer that sends the traffic.
//!
//! Because the manifest is read, not copied, a change to it is rehearsed as it is: the
//! manifest and the rehearsal cannot drift.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::{fd::AsRawFd as _, unix::fs::symlink},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::lab::*;
use serde_json::Value as Json;
use serde_norway::Value;

/// Names the unpacked root of the container image (`rootfs/` of `umoci unpack`) whose
/// binary the pods run instead of this build's.
const REHEARSAL_ROOTFS: &str = "ICMP_GUARD_REHEARSAL_ROOTFS";

/// The node's address: what `status.hostIP` resolves to.
const NODE_IP: &str = GUARD_V4;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn manifest(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(name);
    let yaml = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_norway::Deserializer::from_str(&yaml)
        .map(|document| serde::Deserialize::deserialize(document).expect("YAML"))
        .collect()
}

fn string(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
        .to_owned()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| items.iter().map(string).collect())
        .unwrap_or_default()
}

/// Where a volume comes from on the node.
#[derive(Clone, Debug)]
enum Source {
    HostPath(String),
    ConfigMap(String),
}

#[derive(Clone, Debug)]
struct VolumeMount {
    mount_path: String,
    source: Source,
    host_to_container: bool,
    read_only: bool,
}

/// A container of a manifest, as the kubelet would run it.
#[derive(Clone, Debug)]
struct ContainerSpec {
    command: Vec<String>,
    args: Vec<String>,
    /// Environment: literal values, and `status.hostIP` already resolved to [`NODE_IP`].
    env: Vec<(String, String)>,
    /// Capabilities added, in setpriv's spelling (`bpf`, `net_admin`).
    capabilities: Vec<String>,
    no_new_privs: bool,
    mounts: Vec<VolumeMount>,
    /// The HTTP paths of the readiness and liveness probes.
    readiness: Option<String>,
    liveness: Option<String>,
}

impl ContainerSpec {
    /// The container `container` (or init container) of the DaemonSet `daemonset` in `file`.
    fn read(file: &str, daemonset: &str, container: &str) -> Self {
        let documents = manifest(file);
        let set = documents
            .iter()
            .find(|doc| doc["kind"] == "DaemonSet" && doc["metadata"]["name"] == daemonset)
            .unwrap_or_else(|| panic!("no DaemonSet {daemonset} in {file}"));
        let pod = &set["spec"]["template"]["spec"];
        assert_eq!(
            pod["hostNetwork"],
            Value::Bool(true),
            "{daemonset}: hostNetwork"
        );
        let spec = ["containers", "initContainers"]
            .iter()
            .filter_map(|key| pod[*key].as_sequence())
            .flatten()
            .find(|c| c["name"] == container)
            .unwrap_or_else(|| panic!("no container {container} in {daemonset}"));
        let env = spec["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|item| {
                let value = if let Some(value) = item["value"].as_str() {
                    value.to_owned()
                } else {
                    let field = string(&item["valueFrom"]["fieldRef"]["fieldPath"]);
                    assert_eq!(field, "status.hostIP", "only status.hostIP is rehearsed");
                    NODE_IP.to_owned()
                };
                (string(&item["name"]), value)
            })
            .collect();
        let security = &spec["securityContext"];
        assert_eq!(
            strings(&security["capabilities"]["drop"]),
            ["ALL"],
            "{container}: drops all capabilities"
        );
        assert_ne!(
            security["privileged"],
            Value::Bool(true),
            "{container}: not privileged"
        );
        let capabilities = strings(&security["capabilities"]["add"])
            .into_iter()
            .map(|cap| cap.to_lowercase())
            .collect();
        let volumes = pod["volumes"].as_sequence().expect("volumes");
        let mounts = spec["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|mount| {
                let volume = volumes
                    .iter()
                    .find(|v| v["name"] == mount["name"])
                    .expect("a volume for every mount");
                assert!(mount.get("subPath").is_none(), "subPath is not rehearsed");
                let source = if let Some(path) = volume["hostPath"]["path"].as_str() {
                    Source::HostPath(path.to_owned())
                } else {
                    Source::ConfigMap(string(&volume["configMap"]["name"]))
                };
                VolumeMount {
                    mount_path: string(&mount["mountPath"]),
                    source,
                    host_to_container: mount["mountPropagation"] == "HostToContainer",
                    read_only: mount["readOnly"] == Value::Bool(true),
                }
            })
            .collect();
        let probe = |key: &str| spec[key]["httpGet"]["path"].as_str().map(str::to_owned);
        Self {
            command: strings(&spec["command"]),
            args: strings(&spec["args"]),
            env,
            capabilities,
            no_new_privs: security["allowPrivilegeEscalation"] == Value::Bool(false),
            mounts,
            readiness: probe("readinessProbe"),
            liveness: probe("livenessProbe"),
        }
    }

    /// The args with `$(VAR)` replaced from the env, as the kubelet expands them.
    fn expanded_args(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|arg| {
                self.env.iter().fold(arg.clone(), |arg, (name, value)| {
                    arg.replace(&format!("$({name})"), value)
                })
            })
            .collect()
    }

    fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The value after `flag` in the args.
    fn arg_after(&self, flag: &str) -> String {
        let args = self.expanded_args();
        let at = args.iter().position(|arg| arg == flag).expect(flag);
        args[at + 1].clone()
    }
}

/// The ConfigMap volume as the kubelet lays it out: `..<timestamp>/KEY` directories, a
/// `..data` symlink to the current one, and `KEY -> ..data/KEY`. An update writes a new
/// timestamped directory and swaps `..data` with a rename, atomically.
struct ConfigMapVolume {
    /// The ConfigMap's name, which the pods' volumes must name.
    name: String,
    dir: PathBuf,
    revision: u32,
}

impl ConfigMapVolume {
    fn new(name: String, dir: PathBuf, data: &[(&str, &str)]) -> Self {
        fs::create_dir_all(&dir).expect("configmap dir");
        let mut volume = Self {
            name,
            dir,
            revision: 0,
        };
        volume.update(data);
        for (key, _) in data {
            symlink(format!("..data/{key}"), volume.dir.join(key)).expect("key symlink");
        }
        volume
    }

    fn update(&mut self, data: &[(&str, &str)]) {
        self.revision += 1;
        let timestamped = format!("..2026_11_30_12_00_00.{:09}", self.revision);
        let new = self.dir.join(&timestamped);
        fs::create_dir(&new).expect("timestamped dir");
        for (key, value) in data {
            fs::write(new.join(key), value).expect("configmap key");
        }
        let old = fs::read_link(self.dir.join("..data")).ok();
        let temporary = self.dir.join("..data_tmp");
        symlink(&timestamped, &temporary).expect("..data_tmp");
        fs::rename(&temporary, self.dir.join("..data")).expect("..data flip");
        if let Some(old) = old {
            fs::remove_dir_all(self.dir.join(old)).expect("old revision removed");
        }
    }
}

/// One node: the lab (the node's network namespace and a peer), a directory of the real
/// bpffs standing for the node's `/sys/fs/bpf`, the ConfigMap volume, and a staging
/// directory for the pods' mounts.
struct Node {
    lab: Lab,
    host_bpffs: PathBuf,
    configmap: ConfigMapVolume,
    stage: PathBuf,
    next_pod: u32,
}

impl Node {
    /// A node with the ConfigMap of configmap.yaml mounted, its policy key replaced by
    /// `policy`.
    fn new(policy: &str) -> Self {
        let configmap = &manifest("configmap.yaml")[0];
        let name = string(&configmap["metadata"]["name"]);
        let lab = Lab::new();
        let host_bpffs = lab.pin_dir.clone();
        fs::create_dir_all(&host_bpffs).expect("the node's bpffs directory");
        let stage = std::env::temp_dir().join(format!(
            "icmp-guard-rehearsal-{}",
            lab.pin_dir.file_name().expect("name").to_string_lossy()
        ));
        fs::create_dir_all(&stage).expect("stage");
        let configmap =
            ConfigMapVolume::new(name, stage.join("configmap"), &[("policy.toml", policy)]);
        Self {
            lab,
            host_bpffs,
            configmap,
            stage,
            next_pod: 0,
        }
    }

    /// The node path behind a path inside a pod, through its hostPath mounts.
    fn host_path(&self, spec: &ContainerSpec, inside: &str) -> PathBuf {
        spec.mounts
            .iter()
            .find_map(|mount| {
                let Source::HostPath(host) = &mount.source else {
                    return None;
                };
                let rest = Path::new(inside).strip_prefix(&mount.mount_path).ok()?;
                Some(self.node_path(host).join(rest))
            })
            .unwrap_or_else(|| panic!("{inside} is on no hostPath volume"))
    }

    /// Where the rehearsal keeps a node path: the node's /sys/fs/bpf is our directory on
    /// the real bpffs; no other hostPath is rehearsed.
    fn node_path(&self, host: &str) -> PathBuf {
        assert_eq!(host, "/sys/fs/bpf", "only the bpffs hostPath is rehearsed");
        self.host_bpffs.clone()
    }

    /// Starts `spec` as a pod: a fresh mount namespace in the node's network namespace,
    /// mounts as the manifest says over an image-like root, the capabilities it adds and
    /// no others. `without_volumes` leaves those mounts out (a broken manifest), and
    /// `extra_caps` adds capabilities the manifest does not.
    fn start_pod(
        &mut self,
        spec: &ContainerSpec,
        without_volumes: &[&str],
        extra_caps: &[&str],
    ) -> Background {
        self.next_pod += 1;
        let stage = self.stage.join(format!("pod{}", self.next_pod));
        fs::create_dir_all(&stage).expect("pod stage");
        // The image's own binary when its unpacked root is given (`cargo xtask dist` makes
        // the image; `umoci unpack` gives the root), else this build's.
        let binary = std::env::var_os(REHEARSAL_ROOTFS).map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_icmp-guard")),
            |root| PathBuf::from(root).join(spec.command[0].trim_start_matches('/')),
        );
        let program = &spec.command[0];
        let program_dir = Path::new(program).parent().expect("command dir");
        let mut script = vec!["set -eu".to_owned()];
        // The volumes' sources first, while the node's /sys is still visible.
        let mounts: Vec<&VolumeMount> = spec
            .mounts
            .iter()
            .filter(|mount| !without_volumes.contains(&mount.mount_path.as_str()))
            .collect();
        for (i, mount) in mounts.iter().enumerate() {
            let source = match &mount.source {
                Source::HostPath(host) => self.node_path(host),
                Source::ConfigMap(name) => {
                    assert_eq!(*name, self.configmap.name, "the pod mounts the ConfigMap");
                    self.configmap.dir.clone()
                }
            };
            let staged = stage.join(format!("volume{i}"));
            fs::create_dir_all(&staged).expect("staged volume");
            script.push(format!(
                "mount --bind {} {}",
                quote(&source),
                quote(&staged)
            ));
        }
        // The runtime's view of the node: a sysfs of this network namespace, and the
        // image's /etc and command directory (the binary and nothing else).
        script.push("mount -t sysfs sysfs /sys".to_owned());
        script.push("mount -t tmpfs -o mode=0755 image-etc /etc".to_owned());
        script.push(format!(
            "mount -t tmpfs -o mode=0755 image-bin {}",
            quote(program_dir)
        ));
        script.push(format!(
            "cp {} {}",
            quote(&binary),
            quote(Path::new(program))
        ));
        for (i, mount) in mounts.iter().enumerate() {
            let target = Path::new(&mount.mount_path);
            script.push(format!("mkdir -p {}", quote(target)));
            script.push(format!(
                "mount --bind {} {}",
                quote(&stage.join(format!("volume{i}"))),
                quote(target)
            ));
            if mount.host_to_container {
                script.push(format!("mount --make-rslave {}", quote(target)));
            }
            if mount.read_only {
                script.push(format!("mount -o remount,bind,ro {}", quote(target)));
            }
        }
        let caps: Vec<String> = spec
            .capabilities
            .iter()
            .map(String::as_str)
            .chain(extra_caps.iter().copied())
            .map(|cap| format!("+{cap}"))
            .collect();
        let caps = format!("-all,{}", caps.join(","));
        let mut exec = vec![
            "exec".to_owned(),
            "setpriv".to_owned(),
            format!("--bounding-set={caps}"),
            format!("--inh-caps={caps}"),
            format!("--ambient-caps={caps}"),
        ];
        if spec.no_new_privs {
            exec.push("--no-new-privs".to_owned());
        }
        exec.push("--".to_owned());
        exec.extend(
            spec.command
                .iter()
                .chain(&spec.expanded_args())
                .map(|word| quote(Path::new(word))),
        );
        script.push(exec.join(" "));

        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.lab.guard_ns))
            .args(["--", "unshare", "--mount", "--propagation", "slave", "--"])
            .args(["sh", "-c", &script.join("\n")])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (name, value) in &spec.env {
            command.env(name, value);
        }
        Background::spawn("pod", command).expect("start it")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The pins live one level down (the pod's pin directory on the node's bpffs):
        // detach there before the lab removes the namespaces and the directory.
        let pins = self.host_bpffs.join("icmp-guard");
        let _ = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.lab.guard_ns))
            .arg(env!("CARGO_BIN_EXE_icmp-guard"))
            .args(["detach", "--all"])
            .env("ICMP_GUARD_PIN_DIR", &pins)
            .output();
        let _ = fs::remove_dir_all(&self.stage);
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

/// An HTTP GET from inside the network namespace `ns`: `Some((status, body))`, or `None`
/// when nothing listens (the kubelet counts that as a failed probe).
fn http_get(ns: &str, address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let ns = format!("/run/netns/{ns}");
    let path = path.to_owned();
    std::thread::spawn(move || {
        let file = fs::File::open(&ns).expect("netns file");
        // SAFETY: setns on this thread only (CLONE_NEWNET); the fd is open.
        let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns {ns}");
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    })
    .join()
    .expect("probe thread")
}

/// What the readiness probe saw while waiting for 200.
#[derive(Debug, Default)]
struct Readiness {
    refused: u32,
    unready: u32,
    reasons: Vec<String>,
}

/// Probes `path` every 20 ms until it answers 200 (at most `timeout`).
fn wait_ready(
    node: &Node,
    pod: &mut Background,
    address: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Readiness {
    let mut seen = Readiness::default();
    let deadline = Instant::now() + timeout;
    loop {
        match http_get(&node.lab.guard_ns, address, path) {
            Some((200, _)) => return seen,
            Some((503, body)) => {
                seen.unready += 1;
                let reason = body.trim().to_owned();
                assert!(
                    !reason.is_empty() && !reason.contains('\n'),
                    "a 503 gives one line of reason: {body:?}"
                );
                if !seen.reasons.contains(&reason) {
                    seen.reasons.push(reason);
                }
            }
            Some((status, body)) => panic!("{path} answered {status}: {body}"),
            None => seen.refused += 1,
        }
        assert!(
            Instant::now() < deadline,
            "not ready after {timeout:?}: {seen:?}\nstdout:\n{}\nstderr:\n{}",
            pod.stdout(),
            pod.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Probes until `path` answers 503 with a reason containing `why` (at most `timeout`);
/// returns the reason.
fn wait_unready(
    node: &Node,
    pod: &Background,
    address: SocketAddr,
    path: &str,
    why: &str,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((503, body)) = http_get(&node.lab.guard_ns, address, path)
            && body.contains(why)
        {
            return body.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered 503 for {why:?}\nstdout:\n{}\nstderr:\n{}",
            pod.stdout(),
            pod.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(node: &Node, address: SocketAddr) -> String {
    let (status, body) = http_get(&node.lab.guard_ns, address, "/metrics").expect("metrics answer");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the series `name` (with its labels, as exposed), if present.
fn series(metrics: &str, name: &str) -> Option<String> {
    metrics.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.to_owned())
    })
}

fn sha256(contents: &str) -> String {
    let file = std::env::temp_dir().join(format!("icmp-guard-sha-{}", std::process::id()));
    fs::write(&file, contents).expect("write");
    let output = run("sha256sum", &[file.to_str().expect("path")]);
    let _ = fs::remove_file(&file);
    text(&output.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_owned()
}

/// ICMPv4 timestamp requests (type 13) that reached the node's network stack.
fn stack_timestamps(ns: &str) -> u64 {
    let output = run(
        "nsenter",
        &[&format!("--net=/run/netns/{ns}"), "cat", "/proc/net/snmp"],
    );
    let snmp = text(&output.stdout);
    let mut lines = snmp.lines().filter(|line| line.starts_with("IcmpMsg:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "InType13")
        .map_or(0, |(_, value)| value.parse().expect("InType13"))
}

/// The guard's count of ICMPv4 timestamp requests dropped by policy, read from the pins.
fn guard_dropped_timestamps(node: &Node, pins: &Path) -> u64 {
    let output = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", node.lab.guard_ns))
        .arg(env!("CARGO_BIN_EXE_icmp-guard"))
        .args(["stats", "--json"])
        .env("ICMP_GUARD_PIN_DIR", pins)
        .output()
        .expect("stats");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stats: Json = serde_json::from_slice(&output.stdout).expect("JSON");
    icmp_row(&stats, "v4", 13).map_or(0, |row| row["dropped"]["policy"].as_u64().expect("policy"))
}

fn xdp_attached(node: &Node) -> bool {
    node.lab.xdp_on_interface()
}

fn ping_replies_from_peer(node: &Node, count: u32) -> u32 {
    node.lab.ping(NODE_IP, count)
}

#[test]
fn the_daemonset_rolls_over_a_node_without_an_unguarded_packet() {
    if !privileged("the_daemonset_rolls_over_a_node_without_an_unguarded_packet") {
        return;
    }
    let guard = ContainerSpec::read("daemonset.yaml", "icmp-guard", "icmp-guard");
    let uninstaller = ContainerSpec::read("uninstall.yaml", "icmp-guard-uninstall", "detach");
    let configmap = manifest("configmap.yaml");
    let policy_path = guard.arg_after("--policy");
    let key = Path::new(&policy_path)
        .file_name()
        .expect("policy key")
        .to_string_lossy()
        .into_owned();
    let revision_1 = string(&configmap[0]["data"][key.as_str()]);
    let address: SocketAddr = guard
        .arg_after("--metrics")
        .parse()
        .expect("--metrics IP:PORT");
    let readyz = guard.readiness.clone().expect("a readiness probe");
    let healthz = guard.liveness.clone().expect("a liveness probe");

    eprintln!(
        "the pods run {}",
        std::env::var(REHEARSAL_ROOTFS).map_or_else(
            |_| "this build's binary".to_owned(),
            |root| format!("the image's binary (root {root})")
        )
    );
    let mut node = Node::new(&revision_1);
    let pins = node.host_path(
        &guard,
        guard.env("ICMP_GUARD_PIN_DIR").expect("pin dir env"),
    );

    // 1. The node boots without its default route yet: `--interfaces auto` finds nothing,
    //    and the pod says so.
    let mut pod = node.start_pod(&guard, &[], &[]);
    let reason = wait_unready(
        &node,
        &pod,
        address,
        &readyz,
        "default route",
        Duration::from_secs(10),
    );
    eprintln!("before the default route: {readyz} 503 \"{reason}\"");
    assert_eq!(
        http_get(&node.lab.guard_ns, address, &healthz).map(|(status, _)| status),
        Some(200),
        "alive while not ready"
    );
    run_ok(
        "ip",
        &[
            "-n",
            &node.lab.guard_ns,
            "route",
            "add",
            "default",
            "via",
            PEER_V4,
        ],
    );
    let first = wait_ready(&node, &mut pod, address, &readyz, Duration::from_secs(10));
    eprintln!("first start: {first:?}");
    assert!(xdp_attached(&node), "ready means attached");
    let exposed = metrics(&node, address);
    assert_eq!(
        series(&exposed, "icmp_guard_policy_reload_success").as_deref(),
        Some("1")
    );
    assert!(
        exposed.contains(&format!(
            "\nicmp_guard_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{exposed}"
    );
    let info = format!(
        "icmp_guard_policy_info{{sha256=\"{}\"}}",
        sha256(&revision_1)
    );
    assert_eq!(series(&exposed, &info).as_deref(), Some("1"), "{exposed}");
    assert!(
        ping_replies_from_peer(&node, 3) >= 2,
        "pings pass under the ConfigMap's policy"
    );
    assert!(
        !pod.stderr().contains("bpffs") && !pod.stdout().contains("warning"),
        "no warning with the host's bpffs mounted: {}",
        pod.stderr()
    );

    // 2. A rolling update during a bounded stream of timestamp requests (dropped by the
    //    default profile): the old pod stops (--keep), a second later the new one starts and
    //    adopts the pinned program. Every request must be dropped by a guard, none may reach
    //    the node's stack.
    let stack_before = stack_timestamps(&node.lab.guard_ns);
    let dropped_before = guard_dropped_timestamps(&node, &pins);
    let mut stream = Background::spawn("hping3", {
        let mut command = Command::new("ip");
        command.args([
            "netns",
            "exec",
            &node.lab.peer_ns,
            "timeout",
            "30",
            "hping3",
            "--icmp",
            "--icmp-ts",
            "-c",
            "2000",
            "-i",
            "u4000",
            NODE_IP,
        ]);
        command
    })
    .expect("start hping3");
    std::thread::sleep(Duration::from_millis(1500));
    pod.signal(libc::SIGTERM);
    let status = pod.wait_exit(Duration::from_secs(20));
    assert!(
        status.success(),
        "the old pod stops cleanly: {status}\n{}",
        pod.stderr()
    );
    assert!(
        pod.stdout().contains("left the guard attached"),
        "{}",
        pod.stdout()
    );
    let old_stopped = Instant::now();
    assert!(
        xdp_attached(&node),
        "between the pods, the pinned program guards the node"
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut pod = node.start_pod(&guard, &[], &[]);
    let restart = wait_ready(&node, &mut pod, address, &readyz, Duration::from_secs(15));
    let not_ready_for = old_stopped.elapsed();
    assert!(
        pod.stdout().contains("adopting the running guard"),
        "the new pod adopts the pinned program: {}",
        pod.stdout()
    );
    // hping3 exits 1 when nothing answered, which is the point here.
    stream.wait_exit(Duration::from_secs(40));
    let summary = format!("{}{}", stream.stdout(), stream.stderr());
    let sent: u64 = summary
        .lines()
        .find_map(|line| {
            line.split_once(" packets transmitted")?
                .0
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no hping3 summary: {summary}"));
    let reached_stack = stack_timestamps(&node.lab.guard_ns) - stack_before;
    let dropped = guard_dropped_timestamps(&node, &pins) - dropped_before;
    eprintln!(
        "rolling update: {sent} timestamp requests sent, {dropped} dropped by the guard, \
         {reached_stack} reached the stack; new pod not ready for {:.2} s after the old one \
         stopped ({} probes refused, {} answered 503: {:?})",
        not_ready_for.as_secs_f64(),
        restart.refused,
        restart.unready,
        restart.reasons
    );
    assert_eq!(sent, 2000, "{summary}");
    assert_eq!(
        reached_stack, 0,
        "unguarded packets reached the node across the restart"
    );
    assert_eq!(dropped, sent, "every request was dropped by a guard");
    assert!(
        restart.refused + restart.unready > 0,
        "the new pod was not ready before it had adopted the guard"
    );

    // 3. A ConfigMap update (the kubelet's ..data flip): echo requests dropped. Applied
    //    without a restart, visible in the metrics.
    let revision_2 =
        format!("{revision_1}\n[[rule]]\ntype = \"echo-request\"\naction = \"drop\"\n");
    let flipped = Instant::now();
    node.configmap
        .update(&[(key.as_str(), revision_2.as_str())]);
    let info_2 = format!(
        "icmp_guard_policy_info{{sha256=\"{}\"}}",
        sha256(&revision_2)
    );
    wait_until("the new ConfigMap revision is applied", || {
        series(&metrics(&node, address), &info_2).as_deref() == Some("1")
    });
    eprintln!(
        "ConfigMap flip applied {:.2} s after the ..data rename",
        flipped.elapsed().as_secs_f64()
    );
    let exposed = metrics(&node, address);
    assert_eq!(
        series(&exposed, "icmp_guard_policy_reload_success").as_deref(),
        Some("1")
    );
    assert_eq!(
        ping_replies_from_peer(&node, 3),
        0,
        "the new policy drops echo requests"
    );
    assert!(http_get(&node.lab.guard_ns, address, &readyz).is_some_and(|(s, _)| s == 200));

    // 4. A broken push: the pod turns unready with the reason, the last good policy stays.
    node.configmap
        .update(&[(key.as_str(), "mode = \"enforce\"\nbase = \"nonsense\"\n")]);
    let reason = wait_unready(
        &node,
        &pod,
        address,
        &readyz,
        "not in force",
        Duration::from_secs(5),
    );
    eprintln!("broken ConfigMap: {readyz} 503 \"{reason}\"");
    assert!(reason.contains(&policy_path), "{reason}");
    let exposed = metrics(&node, address);
    assert_eq!(
        series(&exposed, "icmp_guard_policy_reload_success").as_deref(),
        Some("0")
    );
    assert_eq!(
        series(&exposed, &info_2).as_deref(),
        Some("1"),
        "the last good policy stays"
    );
    assert_eq!(ping_replies_from_peer(&node, 2), 0, "and is enforced");

    // 5. Fixed: ready again, pings answered.
    node.configmap
        .update(&[(key.as_str(), revision_1.as_str())]);
    let fixed = wait_ready(&node, &mut pod, address, &readyz, Duration::from_secs(5));
    eprintln!("fixed ConfigMap: {fixed:?}");
    assert!(ping_replies_from_peer(&node, 3) >= 2);

    // 6. Uninstall: the DaemonSet deleted (the pod stops, the guard stays), then the
    //    uninstaller's detach container removes it from the node.
    pod.signal(libc::SIGTERM);
    assert!(pod.wait_exit(Duration::from_secs(20)).success());
    assert!(
        xdp_attached(&node),
        "deleting the DaemonSet leaves the guard (--keep)"
    );
    let mut detach = node.start_pod(&uninstaller, &[], &[]);
    let status = detach.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "detach --all: {}", detach.stderr());
    assert!(!xdp_attached(&node), "the uninstaller detached the guard");
    assert!(!pins.exists(), "and removed its pins: {}", pins.display());
}

#[test]
fn a_pod_without_the_host_bpffs_is_warned_about_loudly() {
    if !privileged("a_pod_without_the_host_bpffs_is_warned_about_loudly") {
        return;
    }
    let guard = ContainerSpec::read("daemonset.yaml", "icmp-guard", "icmp-guard");
    let revision_1 = string(&manifest("configmap.yaml")[0]["data"]["policy.toml"]);
    let mut node = Node::new(&revision_1);
    run_ok(
        "ip",
        &[
            "-n",
            &node.lab.guard_ns,
            "route",
            "add",
            "default",
            "via",
            PEER_V4,
        ],
    );
    // The manifest without its bpffs volume. With the manifest's capabilities alone the
    // pod cannot mount a bpffs of its own, and must stop with an error.
    let mut pod = node.start_pod(&guard, &["/sys/fs/bpf"], &[]);
    let status = pod.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "no bpffs, no guard: {}", pod.stdout());
    assert!(pod.stderr().contains("bpffs"), "{}", pod.stderr());
    // With SYS_ADMIN it mounts one, private to the pod: the pins would die with it, and
    // --keep would keep nothing. It must say so at start.
    let mut pod = node.start_pod(&guard, &["/sys/fs/bpf"], &["sys_admin"]);
    pod.wait_for("the warning", Duration::from_secs(15), |_, err| {
        err.contains("warning") && err.contains("die with")
    });
    eprintln!("{}", pod.stderr());
    pod.wait_for("the attach", Duration::from_secs(15), |out, _| {
        out.contains("attached to")
    });
    assert!(xdp_attached(&node), "the pod attached");
    pod.signal(libc::SIGTERM);
    assert!(pod.wait_exit(Duration::from_secs(20)).success());
    // --keep, yet the pins died with the pod's mount namespace, and the guard with them.
    wait_until("the guard is gone with the pod", || !xdp_attached(&node));
}
