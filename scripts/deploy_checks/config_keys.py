"""Every ORDER__ variable of k8s/, docker-compose.yml and the README is a real key."""

import os
import re
import subprocess
from pathlib import Path

import yaml

from .common import (
    containers_of,
    k8s_objects,
    report,
)
from .compose import APP_SERVICES, compose, compose_env


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
    for part in name[len("ORDER__") :].lower().split("__"):
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
    ok &= report(
        "config keys: every ORDER__ variable used is in README.md's key table",
        [f"{n} is not documented" for n in undocumented],
    )
    return ok
