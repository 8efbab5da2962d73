#!/usr/bin/env bash
# Offline validation of the deployment files: k8s/, docker-compose.yml,
# deploy/grafana/order-service-dashboard.json, the Dockerfile and every
# ORDER__… variable they and the README set. Nothing is run in a container and
# nothing is downloaded but the pinned PyPI packages below (into .venv, kept if
# it exists).
#
# Usage: scripts/validate-deploy.sh
#
# The checks are scripts/validate_deploy.py and its package
# scripts/deploy_checks/ (one module per kind of file; the list is in
# validate_deploy.py's docstring), with their unit tests in scripts/tests/ and
# ruff over scripts/, run first. One line per check, then "N passed,
# N failed"; exit 1 on any failure.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
RUFF_VERSION=0.17.6

cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv
if [[ ! -x "$venv/bin/python" ]]; then
    printf '==> creating %s\n' "$venv"
    python3 -m venv "$venv"
fi
installed() {
    "$venv/bin/python" -c 'import sys; from importlib.metadata import version; print(version(sys.argv[1]))' \
        "$1" 2>/dev/null || true
}
if [[ "$(installed kubernetes-validate)" != "$KUBERNETES_VALIDATE_VERSION" ]] ||
    [[ "$(installed check-jsonschema)" != "$CHECK_JSONSCHEMA_VERSION" ]] ||
    [[ "$(installed ruff)" != "$RUFF_VERSION" ]]; then
    printf '==> installing kubernetes-validate %s, check-jsonschema %s and ruff %s into %s\n' \
        "$KUBERNETES_VALIDATE_VERSION" "$CHECK_JSONSCHEMA_VERSION" "$RUFF_VERSION" "$venv"
    "$venv/bin/pip" install -q \
        "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" \
        "check-jsonschema==${CHECK_JSONSCHEMA_VERSION}" \
        "ruff==${RUFF_VERSION}"
fi

exec "$venv/bin/python" scripts/validate_deploy.py --venv "$venv"
