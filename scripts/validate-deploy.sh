#!/usr/bin/env bash
# Offline validation of the deployment files: k8s/, docker-compose.yml,
# deploy/grafana/order-service-dashboard.json and the Dockerfile. Nothing is
# run in a container and nothing is downloaded but the pinned PyPI packages
# below (into .venv, kept if it exists).
#
# Usage: scripts/validate-deploy.sh
#
# Checks (one line each, then "N passed, N failed"; exit 1 on any failure):
#   - every Kubernetes object in k8s/ against the Kubernetes 1.30 OpenAPI
#     schemas shipped in kubernetes-validate, strict (unknown fields refused);
#   - k8s/kustomization.yaml (no schema ships offline): its resources exist,
#     list every manifest but secret.example.yaml, and its images entry names
#     the image the workloads use; cross-references between the manifests
#     (ConfigMap/Secret names, selectors, probe and scrape ports, security
#     context, grace period vs worker.shutdown_timeout);
#   - docker-compose.yml against the Compose specification schema vendored in
#     check-jsonschema (--builtin-schema vendor.compose-spec), then the service
#     names, dependencies, health checks and the one-shot migrate service;
#   - the Grafana dashboard: JSON, schemaVersion 39, the expected panels, and
#     every metric its queries use is in README.md's metrics table;
#   - the Dockerfile, minimally: every COPY source exists and is not excluded
#     by .dockerignore (target/image-bin/, runtime-prebuilt's binaries, is
#     made by scripts/container-smoke.sh and need only be let through), every workspace member's manifest is in the dependency
#     layer, the build is --release --locked, the runtime user, ports, entrypoint;
#   - every ORDER__… variable of k8s/ (per workload: ConfigMap + Secret example
#     + container env), docker-compose.yml (per app service) and the README key
#     table is a real configuration key with a valid value: the set is given to
#     `target/debug/order-api migrate` with the database pointed at
#     127.0.0.1:1, so a valid configuration fails later (exit 1, database
#     unreachable) and an unknown key or bad value exits 2 naming the key.
#     target/debug/order-api is built (debug) when missing.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
KUBERNETES_VERSION=1.30.0

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "${script_dir}/.." && pwd)
cd "$repo_root"

say() { printf '==> %s\n' "$*"; }

passed=0
failed=0
pass() {
    printf 'PASS  %s\n' "$1"
    passed=$((passed + 1))
}
fail() {
    printf 'FAIL  %s\n' "$1"
    if [[ -n "${2:-}" ]]; then
        printf '%s\n' "$2" | sed 's/^/      /'
    fi
    failed=$((failed + 1))
}
# check NAME COMMAND...: one PASS/FAIL line; the command's output on failure.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$name"
    else
        fail "$name" "$out"
    fi
}
# py_checks SUBCOMMAND [ARGS...]: the helper prints its own PASS/FAIL lines.
py_checks() {
    local out rc=0 line
    out=$("$venv/bin/python" "$helper" "$@" 2>&1) || rc=$?
    while IFS= read -r line; do
        case "$line" in
            "PASS  "*) passed=$((passed + 1)); printf '%s\n' "$line" ;;
            "FAIL  "*) failed=$((failed + 1)); printf '%s\n' "$line" ;;
            *) printf '%s\n' "$line" ;;
        esac
    done <<<"$out"
    if [[ $rc -ne 0 ]] && ! grep -q '^FAIL  ' <<<"$out"; then
        fail "helper '$1' exited with code $rc"
    fi
}

# ------------------------------------------------------------------ tools ---
venv=.venv
if [[ ! -x "$venv/bin/python" ]]; then
    say "creating ${venv}"
    python3 -m venv "$venv"
fi
installed_version() {
    "$venv/bin/python" - "$1" <<'PY' 2>/dev/null || true
import sys
from importlib.metadata import version
print(version(sys.argv[1]))
PY
}
if [[ "$(installed_version kubernetes-validate)" != "$KUBERNETES_VALIDATE_VERSION" ]] ||
    [[ "$(installed_version check-jsonschema)" != "$CHECK_JSONSCHEMA_VERSION" ]]; then
    say "installing kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} and check-jsonschema ${CHECK_JSONSCHEMA_VERSION} into ${venv}"
    "$venv/bin/pip" install -q \
        "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}" \
        "check-jsonschema==${CHECK_JSONSCHEMA_VERSION}"
fi

tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
helper="$tmpdir/validate_deploy.py"
cat >"$helper" <<'PY'
"""Checks of scripts/validate-deploy.sh that need a YAML/JSON parser."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROLES = {"order-api": 8082, "order-worker": 8084, "order-compensator": 8085}
SECRET_EXAMPLE = "secret.example.yaml"


def report(name, problems):
    if problems:
        print(f"FAIL  {name}")
        for p in problems:
            print(f"      {p}")
    else:
        print(f"PASS  {name}")
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


# ------------------------------------------------------------------ k8s ---
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


def check_kustomization():
    problems = []
    docs = load_yaml("k8s/kustomization.yaml")
    if len(docs) != 1:
        return report("k8s/kustomization.yaml: one Kustomization", ["expected one document"])
    k = docs[0]
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        problems.append("apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization")
    allowed = {"apiVersion", "kind", "namespace", "resources", "images", "labels",
               "commonLabels", "commonAnnotations", "configMapGenerator",
               "secretGenerator", "generatorOptions", "patches", "replicas", "components"}
    for key in k:
        if key not in allowed:
            problems.append(f"unexpected field {key!r}")
    resources = k.get("resources") or []
    for r in resources:
        if not (Path("k8s") / r).is_file():
            problems.append(f"resource {r} does not exist")
    expected = {p.name for p in Path("k8s").glob("*.yaml")} - {"kustomization.yaml", SECRET_EXAMPLE}
    for missing in sorted(expected - set(resources)):
        problems.append(f"{missing} is not listed in resources")
    if SECRET_EXAMPLE in resources:
        problems.append(f"{SECRET_EXAMPLE} must not be listed (placeholder secrets)")
    if len(set(resources)) != len(resources):
        problems.append("a resource is listed twice")
    image_names = {i.get("name") for i in k.get("images") or []}
    used = set()
    for r in resources:
        path = Path("k8s") / r
        if not path.is_file():
            continue
        for doc in load_yaml(path):
            if doc.get("kind") in ("Deployment", "Job"):
                for c in containers_of(doc):
                    used.add(c["image"].split(":")[0].split("@")[0])
    for name in sorted(used - image_names):
        problems.append(f"image {name} has no images: entry (cannot be overridden)")
    if not image_names:
        problems.append("no images: entry")
    return report("k8s/kustomization.yaml: resources and images", problems)


def check_k8s_references():
    objs = k8s_objects()
    ok = True
    configmaps = {d["metadata"]["name"]: d for _, d in objs.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"]: d for _, d in objs.get("Secret", [])}
    cm_data = {}
    for d in configmaps.values():
        cm_data.update(d.get("data") or {})
    shutdown = duration_secs(cm_data.get("ORDER__WORKER__SHUTDOWN_TIMEOUT", "25s")) or 25
    deployments = {d["metadata"]["name"]: (f, d) for f, d in objs.get("Deployment", [])}

    for name in ROLES:
        if name not in deployments:
            ok &= report(f"k8s: Deployment {name}", [f"no Deployment named {name} in k8s/"])
    for name, (fname, d) in sorted(deployments.items()):
        problems = []
        spec = d["spec"]
        pod = spec["template"]
        labels = pod["metadata"].get("labels") or {}
        for key, value in (spec["selector"].get("matchLabels") or {}).items():
            if labels.get(key) != value:
                problems.append(f"selector {key}={value} does not match the Pod labels")
        podspec = pod["spec"]
        grace = podspec.get("terminationGracePeriodSeconds")
        if not isinstance(grace, int) or grace <= shutdown:
            problems.append(f"terminationGracePeriodSeconds {grace} must be above worker.shutdown_timeout ({shutdown:g}s)")
        psc = podspec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 10001:
            problems.append("pod securityContext: runAsNonRoot true and runAsUser 10001 expected")
        ann = pod["metadata"].get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics":
            problems.append("prometheus.io/scrape \"true\" and prometheus.io/path /metrics expected")
        containers = podspec["containers"]
        c = containers[0]
        if len(containers) != 1:
            problems.append("one container expected")
        command = (c.get("command") or []) + (c.get("args") or [])
        role = command[0] if command else "order-api"
        if role not in ROLES:
            problems.append(f"command {command} runs no known role")
        expected_port = ROLES.get(role)
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        if role == "order-api":
            expected_port = as_port(env.get("ORDER__SERVER__PORT") or cm_data.get("ORDER__SERVER__PORT") or 8082, problems)
        elif "ORDER__OBSERVABILITY__PORT" in env:
            expected_port = as_port(env["ORDER__OBSERVABILITY__PORT"], problems)
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        if expected_port is None:
            pass  # reported above; the port checks below would only repeat it
        elif expected_port not in ports.values():
            problems.append(f"containerPort {expected_port} expected for {role}")
        if expected_port is not None and ann.get("prometheus.io/port") != str(expected_port):
            problems.append(f"prometheus.io/port must be \"{expected_port}\"")
        for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
            if expected_port is None:
                break
            get = (c.get(probe) or {}).get("httpGet") or {}
            port = get.get("port")
            port = ports.get(port, port) if isinstance(port, str) else port
            if get.get("path") != path or port != expected_port:
                problems.append(f"{probe} must GET {path} on port {expected_port} (got {get.get('path')} on {port})")
        if env.get("ORDER__LOG__FORMAT") != "json":
            problems.append("env ORDER__LOG__FORMAT must be json")
        if env.get("ORDER__DATABASE__AUTO_MIGRATE") != "false":
            problems.append('env ORDER__DATABASE__AUTO_MIGRATE must be "false"')
        problems += container_common(c, configmaps, secrets)
        ok &= report(f"k8s/{fname}: ports, probes, env, security", problems)

    for fname, job in objs.get("Job", []):
        problems = []
        spec = job["spec"]
        c = spec["template"]["spec"]["containers"][0]
        if (c.get("command") or []) + (c.get("args") or []) != ["order-api", "migrate"]:
            problems.append("the Job must run order-api migrate")
        for key in ("backoffLimit", "ttlSecondsAfterFinished"):
            if key not in spec:
                problems.append(f"{key} missing")
        if spec["template"]["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
            problems.append("restartPolicy Never or OnFailure expected")
        problems += container_common(c, configmaps, secrets)
        ok &= report(f"k8s/{fname}: order-api migrate", problems)

    for fname, svc in objs.get("Service", []):
        problems = []
        sel = svc["spec"].get("selector") or {}
        targets = [d for _, d in deployments.values()
                   if sel and all((d["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v
                                  for k, v in sel.items())]
        if not targets:
            problems.append(f"selector {sel} matches no Deployment")
        for d in targets:
            c = containers_of(d)[0]
            names = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            for p in svc["spec"]["ports"]:
                t = p.get("targetPort", p["port"])
                if (t not in names) if isinstance(t, str) else (t not in names.values()):
                    problems.append(f"targetPort {t} is no port of {d['metadata']['name']}")
        ok &= report(f"k8s/{fname}: selector and ports", problems)

    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        for fname, obj in objs.get(kind, []):
            problems = []
            if kind == "HorizontalPodAutoscaler":
                ref = obj["spec"]["scaleTargetRef"]
                if ref.get("kind") != "Deployment" or ref.get("name") not in deployments:
                    problems.append(f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is no Deployment in k8s/")
                if not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
                           for m in obj["spec"].get("metrics") or []):
                    problems.append("no CPU metric")
            else:
                sel = obj["spec"]["selector"].get("matchLabels") or {}
                if not any(all((d["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v
                               for k, v in sel.items())
                           for _, d in deployments.values()) or not sel:
                    problems.append(f"selector {sel} matches no Deployment")
            ok &= report(f"k8s/{fname}: target", problems)
    return ok


def container_common(c, configmaps, secrets):
    problems = []
    refs = c.get("envFrom") or []
    cms = [r["configMapRef"]["name"] for r in refs if "configMapRef" in r]
    secs = [r["secretRef"]["name"] for r in refs if "secretRef" in r]
    if not cms or any(n not in configmaps for n in cms):
        problems.append(f"envFrom configMapRef {cms} must name the ConfigMap of k8s/ {sorted(configmaps)}")
    if not secs or any(n not in secrets for n in secs):
        problems.append(f"envFrom secretRef {secs} must name the Secret of k8s/{SECRET_EXAMPLE} {sorted(secrets)}")
    sc = c.get("securityContext") or {}
    if sc.get("runAsNonRoot") is not True or sc.get("runAsUser") != 10001:
        problems.append("container securityContext: runAsNonRoot true, runAsUser 10001 expected")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem true expected")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation false expected")
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append("capabilities drop [ALL] expected")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        if not all(k in (res.get(part) or {}) for k in ("cpu", "memory")):
            problems.append(f"resources.{part} cpu and memory expected")
    if c["image"].split(":")[0] != "order-service":
        problems.append(f"image {c['image']} is not order-service")
    return problems


# -------------------------------------------------------------- compose ---
REQUIRED_SERVICES = ["postgres", "mysql", "redis", "rabbitmq", "kafka", "migrate", "api", "worker", "compensator"]
APP_SERVICES = {"migrate": None, "api": 8082, "worker": 8084, "compensator": 8085}


def compose():
    with open("docker-compose.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def interpolate(value):
    """Compose interpolation with the shell empty: ${X:-default} gives default."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"

    def sub(m):
        body = m.group(1)
        for sep in (":-", "-"):
            if sep in body:
                return body.split(sep, 1)[1]
        return ""
    return re.sub(r"\$\{([^}]*)\}", sub, str(value)).replace("$$", "$")


def compose_env(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: interpolate(v) for k, v in env.items()}


def check_compose():
    problems = []
    c = compose()
    if "version" in c:
        problems.append("obsolete top-level version: key")
    services = c.get("services") or {}
    for name in REQUIRED_SERVICES:
        if name not in services:
            problems.append(f"service {name} missing")
    for name, s in services.items():
        profiles = s.get("profiles") or []
        for dep, cond in (s.get("depends_on") or {}).items() if isinstance(s.get("depends_on"), dict) else \
                ((d, {}) for d in s.get("depends_on") or []):
            if dep not in services:
                problems.append(f"{name} depends on unknown service {dep}")
                continue
            dep_profiles = services[dep].get("profiles") or []
            if dep_profiles and not set(dep_profiles) & set(profiles):
                problems.append(f"{name} depends on {dep}, which only runs with profile {dep_profiles}")
            condition = (cond or {}).get("condition", "service_started")
            if condition == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name} waits for {dep} to be healthy but {dep} has no healthcheck")
            if condition == "service_completed_successfully" and dep != "migrate":
                problems.append(f"{name} waits for {dep} to complete")
        if name != "migrate" and "healthcheck" not in s:
            problems.append(f"{name} has no healthcheck")
        restart = str(s.get("restart", "no"))
        if not re.fullmatch(r"no|always|unless-stopped|on-failure(:\d+)?", restart):
            problems.append(f"{name}: restart {restart!r} is not no, always, on-failure[:N] or unless-stopped")
    if (services.get("mysql") or {}).get("profiles") != ["mysql"]:
        problems.append("mysql must be in profile mysql only")
    migrate = services.get("migrate") or {}
    if "migrate" not in (migrate.get("command") or []):
        problems.append("migrate must run `order-api migrate`")
    if str(migrate.get("restart")) != "no":
        problems.append('migrate must have restart "no"')
    for name, port in APP_SERVICES.items():
        s = services.get(name) or {}
        build = s.get("build") or {}
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        if not build or not (Path(context) / dockerfile).is_file():
            problems.append(f"{name}: build must name the repository's Dockerfile")
        env = compose_env(s)
        if env.get("ORDER__DATABASE__AUTO_MIGRATE") != "false":
            problems.append(f'{name}: ORDER__DATABASE__AUTO_MIGRATE must be "false"')
        if name == "migrate":
            continue
        deps = s.get("depends_on") or {}
        if (deps.get("migrate") or {}).get("condition") != "service_completed_successfully":
            problems.append(f"{name} must wait for migrate (service_completed_successfully)")
        if name != "api":
            if env.get("ORDER__OBSERVABILITY__PORT") != str(port):
                problems.append(f"{name}: ORDER__OBSERVABILITY__PORT must be {port}")
            entry = s.get("entrypoint") or []
            if entry[:1] != [f"order-{name}"]:
                problems.append(f"{name}: entrypoint must be order-{name}")
        test = " ".join(map(str, (s.get("healthcheck") or {}).get("test") or []))
        if f"127.0.0.1:{port}/health/ready" not in test:
            problems.append(f"{name}: healthcheck must query /health/ready on port {port}")
        grace = duration_secs(str(s.get("stop_grace_period", "10s")))
        if grace is None or grace <= 25:
            problems.append(f"{name}: stop_grace_period must be above worker.shutdown_timeout (25s)")
    return report("docker-compose.yml: services, dependencies, health checks", problems)


# -------------------------------------------------------------- grafana ---
DASHBOARD_TITLES = [
    "Ingest rate", "Orders created rate", "Duplicates rate", "Poison rate", "Failure backlog",
    "Processing latency p50/p99", "Message age p99", "HTTP request rate by route",
    "HTTP latency p50/p99", "HTTP 5xx rate", "Cache hit ratio", "Consumer connected",
    "DB pool connections", "Compensator retries by result",
]
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan"}


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


# ----------------------------------------------------------- dockerfile ---
def dockerfile_instructions(path="Dockerfile"):
    lines, current = [], ""
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        s = raw.strip()
        if not current and (not s or s.startswith("#")):
            continue
        if current and s.startswith("#"):
            continue
        if s.endswith("\\"):
            current += s[:-1] + " "
            continue
        current += s
        lines.append(current)
        current = ""
    if current:
        lines.append(current)
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerignore_patterns():
    pats = []
    path = Path(".dockerignore")
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                pats.append(line)
    return pats


def pattern_regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def ignored(rel, patterns):
    """Minimal .dockerignore matching: a path is out when it or a parent matches
    (patterns from the context root, *, ?, **/, trailing /, ! exceptions)."""
    result = False
    parts = Path(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        neg = pat.startswith("!")
        regex = pattern_regex((pat[1:] if neg else pat).strip("/"))
        if any(re.fullmatch(regex, pre) for pre in prefixes):
            result = not neg
    return result


def check_dockerfile():
    problems = []
    instr = dockerfile_instructions()
    args = {}
    stages = []
    stage_image = {}
    stage_names = []
    patterns = dockerignore_patterns()
    copied = []
    runs = []
    for word, rest in instr:
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif word == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
            # A stage built on an earlier one stands for that one's image.
            image = stage_image.get(image, image)
            stages.append(image)
            tokens = rest.split()
            if len(tokens) == 3 and tokens[1].upper() == "AS":
                stage_image[tokens[2]] = image
                stage_names.append(tokens[2])
            else:
                stage_names.append(None)
        elif word in ("COPY", "ADD"):
            tokens = rest.split()
            flags = [t for t in tokens if t.startswith("--")]
            paths = [t for t in tokens if not t.startswith("--")]
            if rest.lstrip().startswith("["):
                paths = json.loads(rest[rest.index("["):])
            if any(f.startswith("--from=") for f in flags):
                continue
            for src in paths[:-1]:
                copied.append(src)
                if src.startswith("target/image-bin/"):
                    # runtime-prebuilt's binaries: made by container-smoke.sh,
                    # absent from a clean tree, but they must reach the context.
                    if ignored(src, patterns):
                        problems.append(f"{word} source {src} is excluded by .dockerignore")
                    continue
                matches = list(Path(".").glob(src)) if any(ch in src for ch in "*?[") else [Path(src)]
                if not matches or not all(m.exists() for m in matches):
                    problems.append(f"{word} source {src} does not exist")
                elif any(ignored(str(m), patterns) for m in matches):
                    problems.append(f"{word} source {src} is excluded by .dockerignore")
        elif word == "RUN":
            runs.append(rest)
    if len(stages) < 2:
        problems.append("a multi-stage build expected")
    else:
        if not stages[0].startswith("rust:1.95-bookworm"):
            problems.append(f"build stage {stages[0]}, rust:1.95-bookworm expected")
        if stages[-1] != "debian:bookworm-slim":
            problems.append(f"runtime stage {stages[-1]}, debian:bookworm-slim expected")
    with open("Cargo.toml", "rb") as f:
        members = tomllib.load(f)["workspace"]["members"]
    for m in members:
        if f"{m}/Cargo.toml" not in copied:
            problems.append(f"{m}/Cargo.toml is not copied (dependency layer)")
        if not Path(m, "Cargo.toml").is_file():
            problems.append(f"workspace member {m} has no Cargo.toml")
    for src in ("Cargo.toml", "Cargo.lock", "config/config.yaml", "migrations",
                "order-api/openapi.json", "order-api/assets"):
        if src not in copied and not any(src.startswith(c.rstrip("/") + "/") for c in copied):
            problems.append(f"{src} is not copied")
    builds = [r for r in runs if "cargo build" in r]
    if not builds or not all("--release" in r and "--locked" in r for r in builds):
        problems.append("cargo build --release --locked expected")
    for bin_name in ("order-api", "order-worker", "order-compensator", "order-loadgen"):
        if not Path(bin_name, "src", "main.rs").is_file():
            problems.append(f"{bin_name}/src/main.rs missing: no such binary")
        if not any(w == "COPY" and "--from=" in r and bin_name in r and "/usr/local/bin" in r
                   for w, r in instr):
            problems.append(f"{bin_name} is not copied into /usr/local/bin")
    words = {w: r for w, r in instr}
    if words.get("USER", "").split(":")[0] not in ("10001",):
        problems.append("USER 10001 expected (last USER)")
    if set(words.get("EXPOSE", "").split()) != {"8082", "8084", "8085"}:
        problems.append("EXPOSE 8082 8084 8085 expected")
    env_text = " ".join(r for w, r in instr if w == "ENV")
    for key in ("ORDER__SERVER__HOST", "ORDER__OBSERVABILITY__HOST"):
        if f"{key}=0.0.0.0" not in env_text:
            problems.append(f"ENV {key}=0.0.0.0 expected (config.yaml listens on loopback)")
    if words.get("WORKDIR") != "/app":
        problems.append("WORKDIR /app expected (last WORKDIR)")
    entry = words.get("ENTRYPOINT", "")
    try:
        entry_list = json.loads(entry)
    except ValueError:
        entry_list = entry.split()
    if entry_list[:1] != ["order-api"]:
        problems.append("ENTRYPOINT order-api expected")
    if stage_names[-1:] != ["runtime"]:
        problems.append("the last stage (the default target) must be runtime")
    if "runtime-prebuilt" not in stage_names:
        problems.append("a runtime-prebuilt stage expected (scripts/container-smoke.sh builds it)")
    # The runtime stages' RUN lines: every stage on the runtime image.
    runtime_runs = []
    seen_from = 0
    for w, r in instr:
        if w == "FROM":
            seen_from += 1
        elif w == "RUN" and stages[seen_from - 1] == stages[-1]:
            runtime_runs.append(r)
    if not any("ca-certificates" in r for r in runtime_runs):
        problems.append("runtime stage must install ca-certificates")
    if not any("10001" in r and "useradd" in r for r in runtime_runs):
        problems.append("runtime stage must create the user 10001")
    for want in ("target/", ".git/", ".venv/", ".kafka/"):
        if want not in patterns and want.rstrip("/") not in patterns:
            problems.append(f".dockerignore must exclude {want}")
    return report("Dockerfile + .dockerignore: stages, COPY sources, build, runtime", problems)


# --------------------------------------------------------- config keys ---
def readme_env_names():
    names = []
    text = Path("README.md").read_text(encoding="utf-8")
    in_table = False
    for line in text.splitlines():
        if line.startswith("| key | default | env |"):
            in_table = True
            continue
        if in_table:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 3:
                names += re.findall(r"ORDER__[A-Z0-9_]+", cells[2])
    return names


def config_yaml_value(name):
    with open("config/config.yaml", encoding="utf-8") as f:
        tree = yaml.safe_load(f) or {}
    node = tree
    for part in name[len("ORDER__"):].lower().split("__"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is None:
        return None
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, list):
        return ",".join(map(str, node))
    return str(node)


def env_sets():
    """(label, {NAME: value}) for each place that sets ORDER__ variables."""
    sets = []
    objs = k8s_objects()
    cm = {}
    for _, d in objs.get("ConfigMap", []):
        cm.update({k: str(v) for k, v in (d.get("data") or {}).items()})
    sec = {}
    for _, d in objs.get("Secret", []):
        sec.update({k: str(v) for k, v in (d.get("stringData") or {}).items()})
    for kind in ("Deployment", "Job"):
        for fname, d in objs.get(kind, []):
            for c in containers_of(d):
                env = {}
                refs = c.get("envFrom") or []
                if any("configMapRef" in r for r in refs):
                    env.update(cm)
                if any("secretRef" in r for r in refs):
                    env.update(sec)
                env.update({e["name"]: str(e["value"]) for e in c.get("env") or [] if "value" in e})
                sets.append((f"k8s/{fname} (ConfigMap + Secret example + env)", env))
    services = compose().get("services") or {}
    for name in APP_SERVICES:
        if name in services:
            sets.append((f"docker-compose.yml service {name}", compose_env(services[name])))
    readme = {}
    for n in readme_env_names():
        value = config_yaml_value(n)
        readme[n] = "1" if value is None else value
    sets.append(("README.md key table (values from config/config.yaml)", readme))
    return sets


def offline_database(env):
    """Points the database at 127.0.0.1:1 (refused at once), keeping the URL's scheme."""
    env = dict(env)
    url = env.get("ORDER__DATABASE__URL", "")
    if url:
        m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)(?:[^@/]*@)?[^/?#]*(.*)$", url)
        env["ORDER__DATABASE__URL"] = (m.group(1) + "postgres@127.0.0.1:1" + m.group(2)) if m else url
    env["ORDER__DATABASE__HOST"] = "127.0.0.1"
    env["ORDER__DATABASE__PORT"] = "1"
    env["ORDER__DATABASE__ACQUIRE_TIMEOUT"] = "1s"
    return env


def check_config_keys(binary):
    ok = True
    all_names = set()
    for label, env in env_sets():
        bad = [k for k in env if not re.fullmatch(r"ORDER__[A-Z0-9_]+", k)]
        names = {k for k in env if k.startswith("ORDER__")}
        all_names |= names
        problems = [f"{k}: not an ORDER__SECTION__KEY name" for k in bad]
        if env.get("ORDER__API__AUTH__MODE", "").strip().lower() == "none":
            problems.append("ORDER__API__AUTH__MODE=none: end-user auth off is for local use only")
        if not names:
            problems.append("no ORDER__ variables found")
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        run_env.update(offline_database({k: v for k, v in env.items() if k in names}))
        try:
            proc = subprocess.run([binary, "migrate"], env=run_env, capture_output=True, text=True, timeout=60)
            rc, out = proc.returncode, (proc.stderr + proc.stdout).strip()
        except subprocess.TimeoutExpired:
            rc, out = None, "timed out after 60s"
        if rc == 2:
            lines = [line for line in out.splitlines() if "configuration error" in line] or out.splitlines()[-3:]
            problems += lines
        elif rc != 1:
            problems.append(f"expected exit 1 (valid configuration, database unreachable), got {rc}: {out[-500:]}")
        ok &= report(f"config keys: {label}, {len(names)} ORDER__ variables", problems)
    documented = set(readme_env_names())
    undocumented = sorted(all_names - documented)
    ok &= report("config keys: every ORDER__ variable used is in README.md's key table",
                 [f"{n} is not documented" for n in undocumented])
    return ok


def main():
    try:
        run(sys.argv[1])
    except SystemExit:
        raise
    except Exception as e:  # a malformed file: report, do not hide the other checks
        report(f"{sys.argv[1]}: could not check", [f"{type(e).__name__}: {e}"])
        sys.exit(1)


def run(cmd):
    if cmd == "kustomization":
        ok = check_kustomization()
    elif cmd == "k8s-references":
        ok = check_k8s_references()
    elif cmd == "compose":
        ok = check_compose()
    elif cmd == "dashboard":
        ok = check_dashboard()
    elif cmd == "dockerfile":
        ok = check_dockerfile()
    elif cmd == "config-keys":
        ok = check_config_keys(sys.argv[2])
    else:
        raise SystemExit(f"unknown helper command {cmd}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
PY

# ------------------------------------------------------------ kubernetes ---
say "Kubernetes manifests (kubernetes-validate ${KUBERNETES_VALIDATE_VERSION}, Kubernetes ${KUBERNETES_VERSION}, strict)"
shopt -s nullglob
manifests=(k8s/*.yaml)
shopt -u nullglob
if [[ ${#manifests[@]} -eq 0 ]]; then
    fail "k8s/: no manifests"
fi
for file in "${manifests[@]}"; do
    [[ "$(basename "$file")" == kustomization.yaml ]] && continue
    check "${file}: Kubernetes ${KUBERNETES_VERSION%.0} schema (strict)" \
        "$venv/bin/kubernetes-validate" --kubernetes-version "$KUBERNETES_VERSION" --strict --quiet "$file"
done
py_checks kustomization
py_checks k8s-references

# --------------------------------------------------------------- compose ---
say "docker-compose.yml (check-jsonschema ${CHECK_JSONSCHEMA_VERSION}, vendored Compose specification schema)"
check "docker-compose.yml: Compose specification schema" \
    "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
py_checks compose

# --------------------------------------------------------------- grafana ---
say "Grafana dashboard"
py_checks dashboard

# ------------------------------------------------------------ dockerfile ---
say "Dockerfile"
py_checks dockerfile

# ----------------------------------------------------------- config keys ---
say "ORDER__ variables against the configuration loader (target/debug/order-api migrate)"
binary=target/debug/order-api
if [[ ! -x "$binary" ]]; then
    say "building ${binary} (debug)"
    cargo build -p order-api
fi
py_checks config-keys "$binary"

printf '%d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
