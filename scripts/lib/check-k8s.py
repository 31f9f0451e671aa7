#!/usr/bin/env python3
"""Checks the Kubernetes manifests that `kubectl kustomize deploy/k8s` built (YAML on stdin)
against the code they run: every environment variable is a setting of src/config.rs, probes
hit routes that exist, ports agree with the bind settings, selectors select the pods, the
termination grace covers preStop plus shutdown_grace_secs, and the Job runs a real command.
Exits 1 naming every problem found."""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
problems = []


def fail(msg):
    problems.append(msg)


def settings_fields():
    src = (ROOT / "src/config.rs").read_text()
    body = re.search(r"pub struct Settings \{(.*?)\n\}", src, re.S).group(1)
    return set(re.findall(r"^\s+pub ([a-z0-9_]+):", body, re.M))


def health_routes():
    src = (ROOT / "src/api/health.rs").read_text()
    return set(re.findall(r'path = "(/[a-z]+)"', src))


def cli_commands():
    src = (ROOT / "src/cli/mod.rs").read_text()
    body = re.search(r"pub enum Command \{(.*?)\n\}", src, re.S).group(1)
    return {name.lower() for name in re.findall(r"^    ([A-Z][a-zA-Z]+)\b", body, re.M)}


docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
for kind in ["Namespace", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget",
             "HorizontalPodAutoscaler", "Job"]:
    if kind not in by_kind:
        fail(f"no {kind} in the build")
if problems:
    sys.exit("\n".join(problems))

fields = settings_fields()
routes = health_routes()
commands = cli_commands()
configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind["ConfigMap"]}


def env_name_ok(name):
    if name == "DATABASE_URL":
        return True
    return name.startswith("SONDAKIKA_") and name[len("SONDAKIKA_"):].lower() in fields


def container_env(c):
    """Every variable a container gets, with its value where the build knows it."""
    env = {}
    for src in c.get("envFrom", []):
        ref = src.get("configMapRef")
        if ref:
            if ref["name"] not in configmaps:
                fail(f"container {c['name']}: envFrom names ConfigMap {ref['name']}, not in the build")
                continue
            env.update(configmaps[ref["name"]])
        else:
            fail(f"container {c['name']}: envFrom other than a ConfigMap cannot be checked")
    for e in c.get("env", []):
        env[e["name"]] = e.get("value")
    return env


def pod_checks(what, spec, labels):
    for c in spec["containers"]:
        env = container_env(c)
        for name in env:
            if not env_name_ok(name):
                fail(f"{what}/{c['name']}: {name} is not a setting of src/config.rs")
        if "DATABASE_URL" not in env:
            fail(f"{what}/{c['name']}: no DATABASE_URL (it would start a private PostgreSQL)")
        args = c.get("args", [])
        if not args or args[0] not in commands:
            fail(f"{what}/{c['name']}: args {args} do not start with a command of src/cli ({sorted(commands)})")
    return env


# The server.
(dep,) = by_kind["Deployment"]
tmpl = dep["spec"]["template"]
pod_labels = tmpl["metadata"]["labels"]
spec = tmpl["spec"]
(c,) = spec["containers"]
env = pod_checks("Deployment", spec, pod_labels)
if c["args"][:1] != ["serve"]:
    fail(f"Deployment runs {c['args']}, not serve")
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
bind_port = int(env.get("SONDAKIKA_BIND", "127.0.0.1:8080").rsplit(":", 1)[1])
if not env.get("SONDAKIKA_BIND", "").startswith("0.0.0.0:"):
    fail("SONDAKIKA_BIND must listen on 0.0.0.0 in a pod (the default is loopback)")
if ports.get("http") != bind_port:
    fail(f"container port http {ports.get('http')} is not SONDAKIKA_BIND's {bind_port}")
if "SONDAKIKA_METRICS_BIND" in env:
    mport = int(env["SONDAKIKA_METRICS_BIND"].rsplit(":", 1)[1])
    if ports.get("metrics") != mport:
        fail(f"container port metrics {ports.get('metrics')} is not SONDAKIKA_METRICS_BIND's {mport}")
    ann = tmpl["metadata"].get("annotations", {})
    if ann.get("prometheus.io/port") != str(mport):
        fail(f"prometheus.io/port {ann.get('prometheus.io/port')} is not the metrics port {mport}")
for probe, want in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")]:
    p = c.get(probe)
    if not p:
        fail(f"no {probe}")
        continue
    path, port = p["httpGet"]["path"], p["httpGet"]["port"]
    if path != want or path not in routes:
        fail(f"{probe} GETs {path}: want {want}, and the routes of src/api/health.rs are {sorted(routes)}")
    if port not in ports and port not in ports.values():
        fail(f"{probe} port {port} is not a container port")
sleep = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
if sleep[:1] != ["sleep"]:
    fail(f"preStop is {sleep}, not a sleep while the pod leaves the endpoints")
else:
    grace_default = int(re.search(r"shutdown_grace_secs: (\d+),", (ROOT / "src/config.rs").read_text()).group(1))
    grace = int(env.get("SONDAKIKA_SHUTDOWN_GRACE_SECS", grace_default))
    need = int(sleep[1]) + grace + 5
    if spec["terminationGracePeriodSeconds"] < need:
        fail(f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} < preStop {sleep[1]} s "
             f"+ shutdown_grace_secs {grace} s + 5 s")


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


for svc in by_kind["Service"]:
    if not selects(svc["spec"]["selector"], pod_labels):
        fail(f"Service {svc['metadata']['name']} does not select the Deployment's pods")
    for p in svc["spec"]["ports"]:
        if p["targetPort"] not in ports and p["targetPort"] not in ports.values():
            fail(f"Service port {p['name']} targets {p['targetPort']}, not a container port")
if not selects(dep["spec"]["selector"]["matchLabels"], pod_labels):
    fail("the Deployment's selector does not match its pods")
for pdb in by_kind["PodDisruptionBudget"]:
    if not selects(pdb["spec"]["selector"]["matchLabels"], pod_labels):
        fail("the PodDisruptionBudget does not select the Deployment's pods")
for hpa in by_kind["HorizontalPodAutoscaler"]:
    ref = hpa["spec"]["scaleTargetRef"]
    if (ref["kind"], ref["name"]) != ("Deployment", dep["metadata"]["name"]):
        fail(f"the HorizontalPodAutoscaler scales {ref}, not the Deployment")
    if hpa["spec"]["minReplicas"] < 2:
        fail("minReplicas below 2: a rollout or a drain would drop every ticker at once")

# The migrations.
(job,) = by_kind["Job"]
pod_checks("Job", job["spec"]["template"]["spec"], {})
if job["spec"]["template"]["spec"]["containers"][0]["args"] != ["migrate"]:
    fail("the Job does not run `sondakika migrate`")

if problems:
    sys.exit("check-k8s:\n  " + "\n  ".join(problems))
print(f"check-k8s: {len(docs)} objects agree with src/config.rs, src/api/health.rs and src/cli")
