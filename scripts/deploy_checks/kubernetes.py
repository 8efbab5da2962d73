"""Kubernetes manifests: kustomization.yaml and the references between the manifests."""

from pathlib import Path

from .common import (
    ROLES,
    SECRET_EXAMPLE,
    as_port,
    containers_of,
    duration_secs,
    k8s_objects,
    load_yaml,
    report,
)


def check_kustomization():
    problems = []
    docs = load_yaml("k8s/kustomization.yaml")
    if len(docs) != 1:
        return report("k8s/kustomization.yaml: one Kustomization", ["expected one document"])
    k = docs[0]
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        problems.append("apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization")
    allowed = {
        "apiVersion",
        "kind",
        "namespace",
        "resources",
        "images",
        "labels",
        "commonLabels",
        "commonAnnotations",
        "configMapGenerator",
        "secretGenerator",
        "generatorOptions",
        "patches",
        "replicas",
        "components",
    }
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
    for _name, (fname, d) in sorted(deployments.items()):
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
            problems.append(
                f"terminationGracePeriodSeconds {grace} must be above worker.shutdown_timeout ({shutdown:g}s)"
            )
        psc = podspec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 10001:
            problems.append("pod securityContext: runAsNonRoot true and runAsUser 10001 expected")
        ann = pod["metadata"].get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/path") != "/metrics":
            problems.append('prometheus.io/scrape "true" and prometheus.io/path /metrics expected')
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
            port = env.get("ORDER__SERVER__PORT") or cm_data.get("ORDER__SERVER__PORT") or 8082
            expected_port = as_port(port, problems)
        elif "ORDER__OBSERVABILITY__PORT" in env:
            expected_port = as_port(env["ORDER__OBSERVABILITY__PORT"], problems)
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        if expected_port is None:
            pass  # reported above; the port checks below would only repeat it
        elif expected_port not in ports.values():
            problems.append(f"containerPort {expected_port} expected for {role}")
        if expected_port is not None and ann.get("prometheus.io/port") != str(expected_port):
            problems.append(f'prometheus.io/port must be "{expected_port}"')
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
        targets = [
            d
            for _, d in deployments.values()
            if sel and all((d["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())
        ]
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
                if not any(
                    m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
                    for m in obj["spec"].get("metrics") or []
                ):
                    problems.append("no CPU metric")
            else:
                sel = obj["spec"]["selector"].get("matchLabels") or {}
                if (
                    not any(
                        all((d["spec"]["template"]["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())
                        for _, d in deployments.values()
                    )
                    or not sel
                ):
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
