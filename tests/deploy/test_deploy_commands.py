"""Every command the images, compose files and manifests run exists in the project: the entrypoint's roles
map to registered `nemgan` commands with the options used, files the Dockerfiles copy exist and pass the
.dockerignore allow-list, and the health check script works."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_helpers import COMPOSE_FILES, DOCKERFILES, NON_SETTINGS_ENV, REPO, k8s_by_kind, load_compose, nemgan_argv

ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO / "docker" / "healthcheck.py"
ROLES = {"api", "serve", "worker"}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comment lines dropped (as docker does)."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        buf = f"{buf} {s}" if buf else s
        if buf.endswith("\\"):
            buf = buf[:-1].rstrip()
            continue
        instr, _, args = buf.partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def _exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def _dockerignore_allows(rel: str) -> bool:
    """The .dockerignore is an allow-list: `*` then `!path` lines (and re-excludes that don't matter here)."""
    allowed = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:] if neg else line
        parts = rel.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1))
        if hit:
            allowed = neg
    return allowed


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(path):
    ins = dockerfile_instructions(path)
    kinds = [i for i, _ in ins]
    assert kinds.count("FROM") >= 1 and "HEALTHCHECK" in kinds and "ENTRYPOINT" in kinds
    # Non-root.
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    useradd = " ".join(a for i, a in ins if i == "RUN" and "useradd" in a)
    assert users[-1] in useradd
    # Everything COPY'd from the context exists and is not excluded by .dockerignore.
    for i, a in ins:
        if i != "COPY":
            continue
        words = [w for w in shlex.split(a) if not w.startswith("--")]
        for src in words[:-1]:
            if "*" in src:
                continue  # optional files (README.md*)
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"
            assert _dockerignore_allows(src.rstrip("/")), f"COPY {src}: excluded by .dockerignore"
    # Torch from a pinned index before the project, then both extras the two roles need.
    runs = [a for i, a in ins if i == "RUN"]
    torch = next(n for n, r in enumerate(runs) if "torch==" in r)
    proj = next(n for n, r in enumerate(runs) if '".[training,serving]"' in r)
    assert torch < proj and "--index-url" in runs[torch]
    # ENTRYPOINT/HEALTHCHECK binaries are installed by the image.
    entry = _exec_form(next(a for i, a in ins if i == "ENTRYPOINT"))
    assert entry[:3] == ["tini", "--", "nemgan-entrypoint"] and any("tini" in r and "apt-get install" in r for r in runs)
    copied = {shlex.split(a)[-1].rsplit("/", 1)[-1]: shlex.split(a)[-2] for i, a in ins if i == "COPY"}
    assert copied["nemgan-entrypoint"] == "docker/entrypoint.sh"
    assert copied["nemgan-healthcheck"] == "docker/healthcheck.py"
    hc = next(a for i, a in ins if i == "HEALTHCHECK")
    assert _exec_form(hc.split("CMD", 1)[1].strip()) == ["nemgan-healthcheck"]
    assert _exec_form(next(a for i, a in ins if i == "CMD"))[0] in ROLES
    # Settings the image sets are real settings.
    from service import settings  # a service that does not import fails here, never skips
    fields = {f"NEMGAN_{k.upper()}" for k in settings.Settings.model_fields}
    envs = set(re.findall(r"\b(NEMGAN_[A-Z0-9_]+)=", " ".join(a for i, a in ins if i == "ENV")))
    assert envs and envs <= fields | NON_SETTINGS_ENV, envs - fields
    if path.name == "Dockerfile":
        assert "nvidia/cuda" in next(a for i, a in ins if i == "ARG" and a.startswith("CUDA_IMAGE"))
        assert "onnxruntime-gpu" in " ".join(runs) and "pip uninstall -y onnxruntime" in " ".join(runs)


def test_dockerignore_keeps_secrets_and_runs_out():
    for rel in (".git", "runs", "var", ".venv", "tests", "k8s", "data"):
        assert not _dockerignore_allows(rel), rel
    for rel in ("pyproject.toml", "training", "service", "models", "docker/entrypoint.sh"):
        assert _dockerignore_allows(rel), rel


def _fake_nemgan(tmp_path) -> dict:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    stub = bin_ / "nemgan"
    stub.write_text('#!/bin/sh\necho "nemgan $*"\n')
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMGAN_")}
    env["PATH"] = f"{bin_}:{env['PATH']}"
    return env


@pytest.mark.parametrize("args,expected", [
    ([], "nemgan serve --host 0.0.0.0 --port 8000"),
    (["api"], "nemgan serve --host 0.0.0.0 --port 8000"),
    (["api", "--log-level", "debug"], "nemgan serve --host 0.0.0.0 --port 8000 --log-level debug"),
    (["worker"], "nemgan worker"),
    (["nemgan", "--help"], "nemgan --help"),
])
def test_entrypoint_dispatch(tmp_path, args, expected):
    r = subprocess.run(["sh", str(ENTRYPOINT), *args], env=_fake_nemgan(tmp_path), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected


def _commands_run() -> list[list[str]]:
    """Container commands/args given to the image by compose and the manifests."""
    out = []
    for path in COMPOSE_FILES:
        for name in ("api", "worker"):
            out.append(load_compose(path)["services"][name]["command"])
    for dep in k8s_by_kind("Deployment").values():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            if c["image"] == "nemgan":
                out.append(c.get("command", []) + c.get("args", []))
    return out


def test_compose_and_k8s_run_entrypoint_roles():
    runs = _commands_run()
    assert len(runs) == 6
    for argv in runs:
        assert argv[0] in ROLES, argv


def _cli(*args):
    """The `nemgan` console script as installed (pyproject's [project.scripts])."""
    return subprocess.run([*nemgan_argv(), *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})


def test_nemgan_serve_is_registered_with_the_options_used():
    r = _cli("serve", "--help")
    assert r.returncode == 0, r.stdout + r.stderr
    for opt in ("--host", "--port", "--log-level"):
        assert opt in r.stdout, opt


def test_nemgan_worker_is_registered():
    r = _cli("worker", "--help")
    assert r.returncode == 0, r.stdout + r.stderr


def test_healthcheck_script_fails_when_nothing_listens():
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMGAN_")}
    r = subprocess.run([sys.executable, str(HEALTHCHECK), "http://127.0.0.1:9/v2/health/live"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "unhealthy" in r.stderr


def test_build_context_builds_the_package(tmp_path):
    """What the Dockerfiles copy (pyproject.toml, README.md, core/, cli/, training/, service/) is enough to build the wheel they
    install, and the wheel carries both packages and the console script."""
    import shutil
    import zipfile

    pytest.importorskip("setuptools")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for rel in ("pyproject.toml", "README.md"):
        if (REPO / rel).exists():
            shutil.copy(REPO / rel, ctx / rel)
    for rel in ("core", "cli", "training", "service"):
        shutil.copytree(REPO / rel, ctx / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "dist"), str(ctx)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("nemgan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cli/serve.py" in names and "cli/train.py" in names and "core/manifest.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "nemgan = cli:app" in zipfile.ZipFile(wheel).read(entry_points).decode()
