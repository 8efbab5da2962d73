"""docker-compose.yml: services, dependencies, health checks, the one-shot migrate."""

import re
from pathlib import Path

import yaml

from .common import (
    duration_secs,
    report,
)

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
        for dep, cond in (
            (s.get("depends_on") or {}).items()
            if isinstance(s.get("depends_on"), dict)
            else ((d, {}) for d in s.get("depends_on") or [])
        ):
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
