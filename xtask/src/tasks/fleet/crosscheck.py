"""Cross-checks of deploy/ that no schema sees: names that must agree between files.

Run by `cargo xtask fleet-check` with the Python of its virtualenv (PyYAML comes with
kubernetes-validate). Usage: crosscheck.py DEPLOY_DIR OUT_DIR

kubernetes-validate checks each object against the Kubernetes schemas; this checks that the
objects fit together (selectors select the guard's pods, named ports exist, the scrape
annotations, the --metrics argument and the container port agree, the policy file the
DaemonSet reads is the ConfigMap's key), checks the PodMonitor, whose CRD schema
kubernetes-validate does not have, and turns the Grafana dashboard's queries into a rule
file for `promtool check rules`. It writes to OUT_DIR:
  configmap-policy.toml   the policy of the ConfigMap, for `icmp-guard policy check`
  dashboard-rules.yaml    one recording rule per dashboard query, for `promtool check rules`
Exit 1 with one line per problem.
"""

import json
import os
import re
import sys

import yaml

problems = []


def problem(message):
    problems.append(message)


def load_objects(directory):
    objects = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(directory, name)) as file:
            for document in yaml.safe_load_all(file):
                if document is not None:
                    objects.setdefault(document.get("kind"), []).append((name, document))
    return objects


def one(objects, kind, name):
    found = [doc for _, doc in objects.get(kind, []) if doc["metadata"]["name"] == name]
    if len(found) != 1:
        problem(f"expected one {kind} named {name}, found {len(found)}")
        return None
    return found[0]


def selects(selector, labels):
    return all(labels.get(key) == value for key, value in selector.items())


def container(pod_spec, name):
    for candidate in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        if candidate["name"] == name:
            return candidate
    problem(f"no container named {name}")
    return {}


def argument(args, flag):
    if flag in args and args.index(flag) + 1 < len(args):
        return args[args.index(flag) + 1]
    problem(f"the guard's args lack {flag} VALUE: {args}")
    return ""


# Fields of the PodMonitor CRD (monitoring.coreos.com/v1) this file may use; anything else
# is a typo the API server would reject (or, worse, silently drop with older operators).
PODMONITOR_SPEC = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel",
                   "podTargetLabels", "sampleLimit", "targetLimit", "attachMetadata"}
PODMONITOR_ENDPOINT = {"port", "portNumber", "path", "interval", "scrapeTimeout", "scheme",
                       "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings",
                       "params", "enableHttp2", "filterRunning", "followRedirects"}
RELABELING = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement",
              "action"}


def check_kubernetes(directory, out):
    objects = load_objects(directory)
    guard = one(objects, "DaemonSet", "icmp-guard")
    uninstall = one(objects, "DaemonSet", "icmp-guard-uninstall")
    configmap = one(objects, "ConfigMap", "icmp-guard-policy")
    namespace = one(objects, "Namespace", "icmp-guard")
    if not (guard and uninstall and configmap and namespace):
        return
    for kind, documents in objects.items():
        for file, document in documents:
            if kind in ("Namespace", "Kustomization"):
                continue
            ns = document["metadata"].get("namespace")
            if ns != "icmp-guard":
                problem(f"{file}: {kind} {document['metadata']['name']} is not in namespace icmp-guard")
    pod = guard["spec"]["template"]
    labels = pod["metadata"]["labels"]
    if not selects(guard["spec"]["selector"]["matchLabels"], labels):
        problem("daemonset.yaml: the selector does not select the DaemonSet's own pods")
    spec = pod["spec"]
    main = container(spec, "icmp-guard")
    args = main.get("args", [])
    ports = {port["name"]: port["containerPort"] for port in main.get("ports", [])}
    metrics_port = ports.get("metrics")
    if metrics_port is None:
        problem("daemonset.yaml: the guard has no container port named metrics")
    listen = argument(args, "--metrics")
    if not listen.endswith(f":{metrics_port}"):
        problem(f"daemonset.yaml: --metrics {listen} does not listen on the metrics port {metrics_port}")
    annotations = pod["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(metrics_port):
        problem(f"daemonset.yaml: prometheus.io/port {annotations.get('prometheus.io/port')} is not the metrics port {metrics_port}")
    if annotations.get("prometheus.io/path") != "/metrics":
        problem("daemonset.yaml: prometheus.io/path is not /metrics")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = main.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("metrics", metrics_port):
            problem(f"daemonset.yaml: {probe} must GET {path} on the metrics port, not {get}")
    if args[:1] != ["run"] or "--keep" not in args:
        problem(f"daemonset.yaml: the guard must run `icmp-guard run ... --keep`, not {args}")
    if not spec.get("hostNetwork"):
        problem("daemonset.yaml: the guard needs hostNetwork to attach to the node's interfaces")
    strategy = guard["spec"].get("updateStrategy", {})
    rolling = strategy.get("rollingUpdate", {})
    if strategy.get("type") != "RollingUpdate" or rolling.get("maxUnavailable") != 1 or rolling.get("maxSurge", 0) != 0:
        problem(f"daemonset.yaml: the update must roll one node at a time with no surge, not {strategy}")
    capabilities = main.get("securityContext", {}).get("capabilities", {})
    if capabilities.get("drop") != ["ALL"] or sorted(capabilities.get("add", [])) != ["BPF", "NET_ADMIN", "PERFMON"]:
        problem(f"daemonset.yaml: the guard must drop ALL and add BPF, NET_ADMIN and PERFMON only, not {capabilities}")
    if main.get("securityContext", {}).get("privileged"):
        problem("daemonset.yaml: the guard must not be privileged")

    # The pin directory on the host's bpffs, shared with the uninstaller.
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    mounts = {mount["name"]: mount for mount in main.get("volumeMounts", [])}
    env = {item["name"]: item.get("value") for item in main.get("env", [])}
    pin_dir = env.get("ICMP_GUARD_PIN_DIR", "/sys/fs/bpf/icmp-guard")
    bpffs = [name for name, mount in mounts.items() if pin_dir.startswith(mount["mountPath"].rstrip("/") + "/")]
    if not bpffs:
        problem(f"daemonset.yaml: the pin directory {pin_dir} is on no volume: the pins would die with the pod")
    else:
        mount = mounts[bpffs[0]]
        host = volumes.get(bpffs[0], {}).get("hostPath", {}).get("path")
        if host != "/sys/fs/bpf" or mount.get("mountPropagation") != "HostToContainer":
            problem(f"daemonset.yaml: the pin directory must be on the host's /sys/fs/bpf with HostToContainer propagation, not {host} {mount}")

    # The policy file is the ConfigMap's key, mounted as a directory (a subPath mount never
    # sees the kubelet's ..data flip).
    policy = argument(args, "--policy")
    policy_mounts = [m for m in main.get("volumeMounts", []) if policy.startswith(m["mountPath"].rstrip("/") + "/")]
    if len(policy_mounts) != 1:
        problem(f"daemonset.yaml: --policy {policy} is on no volume mount")
    else:
        mount = policy_mounts[0]
        if "subPath" in mount:
            problem("daemonset.yaml: the policy mount uses subPath, which never sees ConfigMap updates")
        source = volumes.get(mount["name"], {}).get("configMap", {}).get("name")
        if source != configmap["metadata"]["name"]:
            problem(f"daemonset.yaml: --policy {policy} is not on the ConfigMap {configmap['metadata']['name']} (volume {mount['name']} is {source})")
        key = policy[len(mount["mountPath"].rstrip("/")) + 1:]
        text = configmap.get("data", {}).get(key)
        if text is None:
            problem(f"configmap.yaml: no key {key}, which the DaemonSet reads as {policy}")
        else:
            with open(os.path.join(out, "configmap-policy.toml"), "w") as file:
                file.write(text)

    # The uninstaller: detach --all, with the guard's image, pin directory and bpffs.
    un_spec = uninstall["spec"]["template"]["spec"]
    detach = container(un_spec, "detach")
    if detach.get("args") != ["detach", "--all"] or detach.get("image") != main.get("image"):
        problem(f"uninstall.yaml: the detach container must run `detach --all` with the guard's image {main.get('image')}")
    un_env = {item["name"]: item.get("value") for item in detach.get("env", [])}
    if un_env.get("ICMP_GUARD_PIN_DIR", "/sys/fs/bpf/icmp-guard") != pin_dir:
        problem("uninstall.yaml: the detach container's pin directory differs from the guard's")
    un_volumes = {volume["name"]: volume for volume in un_spec.get("volumes", [])}
    if not any(un_volumes.get(m["name"], {}).get("hostPath", {}).get("path") == "/sys/fs/bpf"
               and m["mountPath"] == "/sys/fs/bpf" for m in detach.get("volumeMounts", [])):
        problem("uninstall.yaml: the detach container does not mount the host's /sys/fs/bpf")
    if not un_spec.get("hostNetwork"):
        problem("uninstall.yaml: the detach container needs the host's network namespace")
    if uninstall["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == labels.get("app.kubernetes.io/component"):
        problem("uninstall.yaml: its pods carry the guard's labels and would be scraped and selected as guards")

    # The NetworkPolicy and the PodMonitor select the guard's pods and name its port.
    for file, policy_object in objects.get("NetworkPolicy", []):
        if not selects(policy_object["spec"]["podSelector"].get("matchLabels", {}), labels):
            problem(f"{file}: the NetworkPolicy does not select the guard's pods")
        for rule in policy_object["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if port.get("port") not in ("metrics", metrics_port):
                    problem(f"{file}: the NetworkPolicy opens port {port.get('port')}, not the metrics port")
    monitors = objects.get("PodMonitor", [])
    if len(monitors) != 1:
        problem(f"expected one PodMonitor, found {len(monitors)}")
    for file, monitor in monitors:
        if monitor.get("apiVersion") != "monitoring.coreos.com/v1":
            problem(f"{file}: apiVersion must be monitoring.coreos.com/v1")
        spec_keys = set(monitor.get("spec", {}))
        if spec_keys - PODMONITOR_SPEC:
            problem(f"{file}: unknown PodMonitor spec fields {sorted(spec_keys - PODMONITOR_SPEC)}")
        if not selects(monitor["spec"]["selector"].get("matchLabels", {}), labels):
            problem(f"{file}: the PodMonitor does not select the guard's pods")
        if selects(monitor["spec"]["selector"].get("matchLabels", {}), uninstall["spec"]["template"]["metadata"]["labels"]):
            problem(f"{file}: the PodMonitor also selects the uninstaller's pods")
        for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
            if set(endpoint) - PODMONITOR_ENDPOINT:
                problem(f"{file}: unknown podMetricsEndpoints fields {sorted(set(endpoint) - PODMONITOR_ENDPOINT)}")
            if endpoint.get("port") != "metrics" or endpoint.get("path", "/metrics") != "/metrics":
                problem(f"{file}: the endpoint must scrape port metrics at /metrics, not {endpoint}")
            for relabeling in endpoint.get("relabelings", []) + endpoint.get("metricRelabelings", []):
                if set(relabeling) - RELABELING:
                    problem(f"{file}: unknown relabeling fields {sorted(set(relabeling) - RELABELING)}")
    for file, kustomization in objects.get("Kustomization", []):
        for resource in kustomization.get("resources", []):
            if not os.path.isfile(os.path.join(directory, resource)):
                problem(f"{file}: lists {resource}, which does not exist")
        if "uninstall.yaml" in kustomization.get("resources", []):
            problem(f"{file}: must not install uninstall.yaml, which removes the guard")


def dashboard_rules(directory, out):
    """The dashboard's queries as recording rules, Grafana's variables replaced by values."""
    with open(os.path.join(directory, "grafana-dashboard.json")) as file:
        dashboard = json.load(file)
    names = {variable["name"] for variable in dashboard["templating"]["list"]}
    if names != {"datasource", "job", "instance"}:
        problem(f"grafana-dashboard.json: variables {sorted(names)}, expected datasource, job, instance")
    rules = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problem(f"grafana-dashboard.json: panel {panel['title']!r} does not use the datasource variable")
            expr = (target["expr"].replace("$__rate_interval", "5m")
                    .replace("$job", ".*").replace("$instance", ".*"))
            if "$" in expr:
                problem(f"grafana-dashboard.json: panel {panel['title']!r} uses an unknown variable: {target['expr']}")
            rules.append({"record": f"dashboard:panel_{panel['id']}_{target['refId']}", "expr": expr})
        if panel["type"] != "row" and not panel.get("targets"):
            problem(f"grafana-dashboard.json: panel {panel['title']!r} has no query")
    with open(os.path.join(out, "dashboard-rules.yaml"), "w") as file:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, file)
    return len(rules)


def main():
    deploy, out = sys.argv[1], sys.argv[2]
    check_kubernetes(os.path.join(deploy, "kubernetes"), out)
    queries = dashboard_rules(os.path.join(deploy, "monitoring"), out)
    if problems:
        for line in problems:
            print(line)
        sys.exit(1)
    print(f"cross-checks passed: manifests agree with each other, {queries} dashboard queries extracted")


if __name__ == "__main__":
    main()
