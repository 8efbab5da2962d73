"""What the deployment checks share: the PASS/FAIL report and YAML reading."""

import re
from pathlib import Path

import yaml

ROLES = {"order-api": 8082, "order-worker": 8084, "order-compensator": 8085}
SECRET_EXAMPLE = "secret.example.yaml"

# PASS and FAIL lines printed so far.
TALLY = {"passed": 0, "failed": 0}


def report(name, problems):
    """One PASS or FAIL line for a check, the problems indented below it; True when it passed."""
    if problems:
        print(f"FAIL  {name}")
        for p in problems:
            print(f"      {p}")
        TALLY["failed"] += 1
    else:
        print(f"PASS  {name}")
        TALLY["passed"] += 1
    return not problems


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def duration_secs(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", str(text).strip())
    if not m:
        return None
    n = int(m.group(1))
    return n * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def k8s_objects():
    objs = {}
    for path in sorted(Path("k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml(path):
            objs.setdefault(doc.get("kind"), []).append((path.name, doc))
    return objs


def as_port(value, problems):
    try:
        return int(value)
    except (TypeError, ValueError):
        problems.append(f"port {value!r} is not a number")
        return None


def containers_of(doc):
    return doc["spec"]["template"]["spec"]["containers"]
