"""The Grafana dashboard: schema version, panels, and metrics the code exports."""

import json
import re
from pathlib import Path

from .common import (
    report,
)

DASHBOARD_TITLES = [
    "Ingest rate",
    "Orders created rate",
    "Duplicates rate",
    "Poison rate",
    "Failure backlog",
    "Processing latency p50/p99",
    "Message age p99",
    "HTTP request rate by route",
    "HTTP latency p50/p99",
    "HTTP 5xx rate",
    "Cache hit ratio",
    "Consumer connected",
    "Events written and published",
    "Outbox backlog",
    "Commit to confirm latency p50/p99",
    "DB pool connections",
    "Compensator retries by result",
]
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def readme_metrics():
    metrics = {}
    text = Path("README.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[1] in ("counter", "gauge", "histogram", "summary"):
            for name in re.findall(r"`([a-z_:][a-z0-9_:]*)`", cells[0]):
                metrics[name] = cells[1]
    return metrics


def check_dashboard():
    path = "deploy/grafana/order-service-dashboard.json"
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        return report(f"{path}: valid JSON", [str(e)])
    problems = []
    if d.get("schemaVersion") != 39:
        problems.append(f"schemaVersion {d.get('schemaVersion')}, 39 expected")
    for key in ("title", "uid", "panels"):
        if not d.get(key):
            problems.append(f"{key} missing")
    ds_vars = [v["name"] for v in (d.get("templating") or {}).get("list", []) if v.get("type") == "datasource"]
    inputs = [i["name"] for i in d.get("__inputs") or [] if i.get("type") == "datasource"]
    ds_refs = {f"${{{n}}}" for n in ds_vars + inputs} | {f"${n}" for n in ds_vars + inputs}
    if not ds_refs:
        problems.append("no datasource template variable or ${DS_PROMETHEUS} input")
    panels = []
    for p in d.get("panels") or []:
        panels.append(p)
        panels.extend(p.get("panels") or [])
    titles = [p.get("title") for p in panels]
    for t in DASHBOARD_TITLES:
        if t not in titles:
            problems.append(f"panel {t!r} missing")
    ids = [p.get("id") for p in panels]
    if len(set(ids)) != len(ids):
        problems.append("duplicate panel ids")
    known = readme_metrics()
    if not known:
        problems.append("no metrics table found in README.md")
    for p in panels:
        if p.get("type") == "row":
            continue
        if ((p.get("datasource") or {}).get("uid")) not in ds_refs:
            problems.append(f"panel {p.get('title')!r}: datasource is not the template variable/input")
        gp = p.get("gridPos") or {}
        if not all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")) or gp["x"] + gp["w"] > 24:
            problems.append(f"panel {p.get('title')!r}: bad gridPos {gp}")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"panel {p.get('title')!r}: no query")
        for t in targets:
            expr = t.get("expr") or ""
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                problems.append(f"panel {p.get('title')!r}: unbalanced brackets in {expr}")
            stripped = re.sub(r"\{[^}]*\}", "", expr)
            stripped = re.sub(r"\b(by|without)\s*\([^)]*\)", "", stripped)
            stripped = re.sub(r"\[[^\]]*\]", "", stripped)
            names = re.findall(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", stripped)
            metric_names = [n for n in names if n.lower() not in PROMQL_WORDS]
            if not metric_names:
                problems.append(f"panel {p.get('title')!r}: no metric in {expr}")
            for n in metric_names:
                base = re.sub(r"_(bucket|sum|count)$", "", n)
                if n in known and not (known[n] == "histogram" and n == base):
                    continue
                if base != n and known.get(base) in ("histogram", "summary"):
                    continue
                problems.append(f"panel {p.get('title')!r}: metric {n} is not in README.md's metrics table")
    return report(f"{path}: schemaVersion, datasource, panels, metric names", problems)
