#!/usr/bin/env python3
"""What a Kubernetes workload of k8s/ asks of its container, as one JSON object.

Usage: scripts/k8s_spec.py MANIFEST [--configmap k8s/configmap.yaml]

For the single container of a Deployment or Job manifest it prints:
  command, args        the container's command (the image's ENTRYPOINT is
                       replaced) and args (its CMD is replaced)
  env                  the ConfigMap's data, then the container's own env
                       (later wins), as Kubernetes builds it; secretRef keys
                       are left to the caller
  user, group          securityContext runAsUser / runAsGroup (the
                       container's, else the Pod's)
  extra_groups         the Pod's fsGroup and supplementalGroups
  run_as_non_root, read_only_root, no_new_privileges, cap_drop
  tmpfs                [{path, size_mib}] for every emptyDir volume mounted
  memory_mib, cpus     resources.limits
  grace_seconds        terminationGracePeriodSeconds
  probes               [{kind, path, port, timeout}] with named ports resolved
  pre_stop             the preStop exec command, or null
  scrape               {path, port} from the prometheus.io annotations, or null

scripts/container-smoke.sh runs the image with exactly these settings, so a
container that works there works as the manifest runs it.
"""

import argparse
import json
import re
import sys

import yaml


def quantity_mib(value):
    """A Kubernetes memory quantity (64Mi, 1Gi, 512M, bytes) in MiB, rounded up."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G)?", str(value))
    if not m:
        raise ValueError(f"unsupported quantity {value!r}")
    factor = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}[m.group(2)]
    return -(-int(m.group(1)) * factor // 1024**2)


def cpus(value):
    """A Kubernetes CPU quantity ("1", "500m") as a number of CPUs."""
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def spec(manifest, configmap):
    with open(manifest, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    template = doc["spec"]["template"]
    pod = template["spec"]
    containers = pod["containers"]
    if len(containers) != 1:
        raise SystemExit(f"{manifest}: one container expected, found {len(containers)}")
    c = containers[0]

    env = {}
    for source in c.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            with open(configmap, encoding="utf-8") as f:
                cm = yaml.safe_load(f)
            if cm["metadata"]["name"] != ref["name"]:
                raise SystemExit(f"{manifest}: ConfigMap {ref['name']} is not {configmap}")
            env.update({k: str(v) for k, v in cm.get("data", {}).items()})
    for item in c.get("env", []):
        if "value" not in item:
            raise SystemExit(f"{manifest}: env {item['name']} has no literal value")
        env[item["name"]] = str(item["value"])

    pod_sc = pod.get("securityContext", {})
    sc = c.get("securityContext", {})

    def security(key, default=None):
        return sc.get(key, pod_sc.get(key, default))

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmpfs = []
    for mount in c.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "emptyDir" not in volume:
            raise SystemExit(f"{manifest}: volume {mount['name']} is not an emptyDir")
        limit = (volume["emptyDir"] or {}).get("sizeLimit")
        tmpfs.append({"path": mount["mountPath"], "size_mib": quantity_mib(limit) if limit else None})

    ports = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    probes = []
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = c.get(kind)
        if not probe:
            continue
        get = probe.get("httpGet")
        if not get:
            raise SystemExit(f"{manifest}: {kind} is not an httpGet probe")
        port = get["port"]
        if isinstance(port, str):
            if port not in ports:
                raise SystemExit(f"{manifest}: {kind} names port {port!r}, which the container lacks")
            port = ports[port]
        probes.append({"kind": kind, "path": get["path"], "port": port, "timeout": probe.get("timeoutSeconds", 1)})

    annotations = template.get("metadata", {}).get("annotations", {})
    scrape = None
    if annotations.get("prometheus.io/scrape") == "true":
        scrape = {
            "path": annotations.get("prometheus.io/path", "/metrics"),
            "port": int(annotations["prometheus.io/port"]),
        }

    limits = c.get("resources", {}).get("limits", {})
    return {
        "name": c["name"],
        "command": c.get("command", []),
        "args": c.get("args", []),
        "env": env,
        "user": security("runAsUser"),
        "group": security("runAsGroup"),
        "run_as_non_root": bool(security("runAsNonRoot", False)),
        "read_only_root": bool(sc.get("readOnlyRootFilesystem", False)),
        "no_new_privileges": sc.get("allowPrivilegeEscalation") is False,
        "cap_drop": sc.get("capabilities", {}).get("drop", []),
        "tmpfs": tmpfs,
        "memory_mib": quantity_mib(limits["memory"]) if "memory" in limits else None,
        "cpus": cpus(limits["cpu"]) if "cpu" in limits else None,
        "extra_groups": ([pod_sc["fsGroup"]] if "fsGroup" in pod_sc else []) + pod_sc.get("supplementalGroups", []),
        "grace_seconds": pod.get("terminationGracePeriodSeconds", 30),
        "pre_stop": ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command"),
        "probes": probes,
        "scrape": scrape,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--configmap", default="k8s/configmap.yaml")
    opts = parser.parse_args()
    json.dump(spec(opts.manifest, opts.configmap), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
