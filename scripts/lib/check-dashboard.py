#!/usr/bin/env python3
"""Lints the Grafana dashboard (deploy/grafana/sondakika.json) and the Prometheus rules
(deploy/prometheus/sondakika.rules.yml) without a Prometheus: the JSON is a provisionable
dashboard (unique panel ids, every panel on the grid with the `datasource` variable and a
query), every variable a query uses is defined, every metric a query or rule names is one
src/telemetry.rs exports or a recording rule defines, and every query parses as PromQL
(`promtool check rules` on a rules file made of them). The same queries are run against a real
Prometheus by the `operations` integration tests."""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/sondakika.json"
RULES = ROOT / "deploy/prometheus/sondakika.rules.yml"
problems = []

# What the integration test substitutes too (tests/api/operations.rs).
SUBSTITUTE = {"$__rate_interval": "2m", "$instance": ".*"}

telemetry = (ROOT / "src/telemetry.rs").read_text()
exported = set(re.findall(r'"(sondakika_[a-z0-9_]+)"', telemetry))
# The one metric counted outside telemetry.rs is described there too; anything else is not
# exported.
rules = yaml.safe_load(RULES.read_text())
recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def metric_names(expr):
    names = set(re.findall(r"\b(sondakika(?:_|:)[a-z0-9_:]+)", expr))
    return names


def known(name):
    if name in recorded:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in exported:
            return True
    return name in exported


for g in rules["groups"]:
    for r in g["rules"]:
        for name in metric_names(r["expr"]):
            if not known(name):
                fail_at = r.get("alert") or r.get("record")
                problems.append(f"rule {fail_at}: {name} is neither exported (src/telemetry.rs) nor recorded")

d = json.loads(DASHBOARD.read_text())
variables = {v["name"] for v in d["templating"]["list"]}
if "datasource" not in variables:
    problems.append("no `datasource` variable: the dashboard cannot be provisioned into any Grafana")
ids = set()
exprs = []
for p in d["panels"]:
    if p["id"] in ids:
        problems.append(f"panel id {p['id']} twice")
    ids.add(p["id"])
    g = p["gridPos"]
    if g["x"] < 0 or g["x"] + g["w"] > 24 or g["h"] <= 0:
        problems.append(f"panel {p['title']!r} is off the grid: {g}")
    if p["type"] == "row":
        continue
    if p.get("datasource", {}).get("uid") != "${datasource}":
        problems.append(f"panel {p['title']!r} does not use the datasource variable")
    if not p.get("targets"):
        problems.append(f"panel {p['title']!r} has no query")
    for t in p.get("targets", []):
        e = t["expr"]
        for var in re.findall(r"\$\{?([A-Za-z_]+)", e):
            if not var.startswith("__") and var not in variables:
                problems.append(f"panel {p['title']!r} uses ${var}, which is not a variable")
        for name in metric_names(e):
            if not known(name):
                problems.append(f"panel {p['title']!r}: {name} is neither exported nor recorded")
        for k, v in SUBSTITUTE.items():
            e = e.replace(k, v)
        if "$" in e:
            problems.append(f"panel {p['title']!r}: {e} has a variable the checks do not substitute")
        exprs.append((p["title"], e))

# promtool parses PromQL only in rule files: one recording rule per query.
with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}, f)
    f.flush()
    out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    if out.returncode != 0:
        problems.append("a dashboard query is not valid PromQL:\n" + out.stdout + out.stderr)

if problems:
    sys.exit("check-dashboard:\n  " + "\n  ".join(problems))
print(f"check-dashboard: {len(exprs)} queries in {len(ids)} panels parse and name exported metrics")
