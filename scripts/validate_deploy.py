#!/usr/bin/env python3
"""Offline validation of the deployment files, one PASS or FAIL line per check.

Usage: scripts/validate-deploy.sh (installs the pinned tools into .venv, then
runs this with .venv's Python). Directly: .venv/bin/python scripts/validate_deploy.py
(from any directory; --venv and --binary, when given, are relative to the current one).

In order:
  - the scripts' own Python (scripts/): ruff check and ruff format --check, and
    the unit tests in scripts/tests/;
  - every Kubernetes object in k8s/ against the Kubernetes 1.30 OpenAPI schemas
    shipped in kubernetes-validate, strict (unknown fields refused), then
    kustomization.yaml and the references between the manifests
    (deploy_checks.kubernetes);
  - docker-compose.yml against the Compose specification schema vendored in
    check-jsonschema, then its services (deploy_checks.compose);
  - the Grafana dashboard (deploy_checks.dashboard);
  - the Dockerfile and .dockerignore (deploy_checks.dockerfile);
  - every ORDER__ variable of k8s/, docker-compose.yml and the README's key
    table, through the configuration loader of target/debug/order-api, built
    when missing (deploy_checks.config_keys).
Ends with "N passed, N failed" and exits 1 when any check failed.
"""

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from deploy_checks import common, compose, config_keys, dashboard, dockerfile, kubernetes

KUBERNETES_VERSION = "1.30.0"


def say(text):
    print(f"==> {text}", flush=True)


def tool_check(name, argv):
    """Runs a tool: PASS when it exits 0, else FAIL with its output."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return common.report(name, [f"{type(e).__name__}: {e}"])
    out = (proc.stdout + proc.stderr).strip()
    problems = [] if proc.returncode == 0 else (out.splitlines() or [f"exited with {proc.returncode}"])
    return common.report(name, problems)


def guarded(name, check, *args):
    """Runs one of deploy_checks' checks; a file it cannot even read is a FAIL, not a crash."""
    try:
        return check(*args)
    except Exception as e:  # a malformed file: report, do not hide the other checks
        return common.report(f"{name}: could not check", [f"{type(e).__name__}: {e}"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", help="where kubernetes-validate, check-jsonschema and ruff are (default .venv)")
    parser.add_argument("--binary", help="the order-api whose loader checks keys (default target/debug/order-api)")
    opts = parser.parse_args()
    venv = Path(opts.venv).resolve() if opts.venv else None
    binary = Path(opts.binary).resolve() if opts.binary else None
    # Every other path is the repository's, wherever this is started from.
    os.chdir(Path(__file__).resolve().parent.parent)
    tools = (venv or Path(".venv")) / "bin"
    binary = str(binary or Path("target/debug/order-api"))

    say(f"the checker's own code (ruff {version('ruff')}, unit tests)")
    tool_check("scripts/: ruff check", [tools / "ruff", "check", "scripts/"])
    tool_check("scripts/: ruff format --check", [tools / "ruff", "format", "--check", "scripts/"])
    tool_check(
        "scripts/tests: unit tests",
        [sys.executable, "-m", "unittest", "discover", "-s", "scripts/tests", "-t", "scripts"],
    )

    say(
        f"Kubernetes manifests (kubernetes-validate {version('kubernetes-validate')}, "
        f"Kubernetes {KUBERNETES_VERSION}, strict)"
    )
    manifests = [p for p in sorted(Path("k8s").glob("*.yaml")) if p.name != "kustomization.yaml"]
    if not manifests:
        common.report("k8s/: manifests", ["no manifests"])
    for path in manifests:
        tool_check(
            f"{path}: Kubernetes {KUBERNETES_VERSION.removesuffix('.0')} schema (strict)",
            [tools / "kubernetes-validate", "--kubernetes-version", KUBERNETES_VERSION, "--strict", "--quiet", path],
        )
    guarded("kustomization", kubernetes.check_kustomization)
    guarded("k8s-references", kubernetes.check_k8s_references)

    say(f"docker-compose.yml (check-jsonschema {version('check-jsonschema')}, vendored Compose specification schema)")
    tool_check(
        "docker-compose.yml: Compose specification schema",
        [tools / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
    )
    guarded("compose", compose.check_compose)

    say("Grafana dashboard")
    guarded("dashboard", dashboard.check_dashboard)

    say("Dockerfile")
    guarded("dockerfile", dockerfile.check_dockerfile)

    say(f"ORDER__ variables against the configuration loader ({binary} migrate)")
    if not Path(binary).is_file():
        say(f"building {binary} (debug)")
        subprocess.run(["cargo", "build", "-p", "order-api"], check=True)
    guarded("config-keys", config_keys.check_config_keys, binary)

    print(f"{common.TALLY['passed']} passed, {common.TALLY['failed']} failed")
    return 0 if common.TALLY["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
