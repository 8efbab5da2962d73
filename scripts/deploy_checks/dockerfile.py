"""The Dockerfile and .dockerignore, minimally: stages, COPY sources, build, runtime."""

import json
import re
import tomllib
from pathlib import Path

from .common import (
    report,
)


def dockerfile_instructions(path="Dockerfile"):
    lines, current = [], ""
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        s = raw.strip()
        if not current and (not s or s.startswith("#")):
            continue
        if current and s.startswith("#"):
            continue
        if s.endswith("\\"):
            current += s[:-1].rstrip() + " "
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


def check_dockerfile(path="Dockerfile"):
    problems = []
    instr = dockerfile_instructions(path)
    args = {}
    stages = []
    stage_image = {}
    stage_names = []
    stage_from = []  # each stage's FROM, as written
    stage_lines = []  # each stage's instructions after its FROM
    patterns = dockerignore_patterns()
    copied = []
    runs = []
    for word, rest in instr:
        if stage_lines and word != "FROM":
            stage_lines[-1].append((word, rest))
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
            stage_from.append(tokens[0])
            stage_lines.append([])
            continue
        elif word in ("COPY", "ADD"):
            tokens = rest.split()
            flags = [t for t in tokens if t.startswith("--")]
            paths = [t for t in tokens if not t.startswith("--")]
            if rest.lstrip().startswith("["):
                paths = json.loads(rest[rest.index("[") :])
            if any(f.startswith("--from=") for f in flags):
                continue
            for src in paths[:-1]:
                copied.append(src)
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
        if f"{m}/src" not in copied:
            problems.append(f"{m}/src is not copied: the workspace does not load without every member")
        if not Path(m, "Cargo.toml").is_file():
            problems.append(f"workspace member {m} has no Cargo.toml")
    for src in (
        "Cargo.toml",
        "Cargo.lock",
        "config/config.yaml",
        "migrations",
        "order-api/openapi.json",
        "order-api/assets",
    ):
        if src not in copied and not any(src.startswith(c.rstrip("/") + "/") for c in copied):
            problems.append(f"{src} is not copied")
    builds = [r for r in runs if "cargo build" in r]
    if not builds or not all("--release" in r and "--locked" in r for r in builds):
        problems.append("cargo build --release --locked expected")
    for bin_name in ("order-api", "order-worker", "order-compensator", "order-loadgen"):
        if not Path(bin_name, "src", "main.rs").is_file():
            problems.append(f"{bin_name}/src/main.rs missing: no such binary")
        # The default target's binaries are the builder's, not anything else.
        final = stage_lines[-1] if stage_lines else []
        if not any(w == "COPY" and "--from=builder" in r and bin_name in r and "/usr/local/bin" in r for w, r in final):
            problems.append(f"{bin_name} is not copied from the builder stage into /usr/local/bin of the last stage")
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
    if stage_from[-1:] != ["runtime-base"] or "runtime-base" not in stage_names:
        problems.append("the last stage must be FROM runtime-base (scripts/container-smoke.sh builds that target)")
    elif any(w not in ("COPY", "LABEL") for w, _ in stage_lines[-1]):
        problems.append("the last stage may only add the binaries: the rest belongs to runtime-base")
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
