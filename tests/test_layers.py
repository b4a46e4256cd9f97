"""The layers hold: core at the bottom, training and service side by side, cli on top (import-linter contracts in
pyproject.toml), and the one join of service and training is inside the worker's task, never at module level."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules a file imports (absolute names; relative imports resolved against its package)."""
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = pkg.rsplit(".", n.level - 1)[0] if n.level > 1 else pkg
            out.add(f"{base}.{n.module}" if n.level and n.module else (n.module or base))
    return out


def first(name: str) -> str:
    return name.split(".")[0]


def test_service_imports_training_only_inside_the_workers_task():
    joins = {}
    for f in sorted((REPO / "service").rglob("*.py")):
        assert not {first(m) for m in imports(f, top_level_only=True)} & {"training", "torch", "cli"}, f
        if "training" in {first(m) for m in imports(f, top_level_only=False)}:
            joins[f.relative_to(REPO).as_posix()] = sorted(m for m in imports(f, False) if first(m) == "training")
    assert joins == {"service/jobs/tasks.py": ["training.prior_learning", "training.priors"]}


@pytest.mark.parametrize("pkg, above", [("core", {"training", "service", "cli", "torch"}),
                                        ("training", {"service", "cli"})])
def test_lower_layers_never_import_upper_ones(pkg, above):
    for f in sorted((REPO / pkg).rglob("*.py")):
        bad = {m for m in imports(f, top_level_only=False) if first(m) in above}
        assert not bad, (f, bad)


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="the dev extra installs import-linter")
def test_import_linter_contracts_are_kept():
    r = subprocess.run([shutil.which("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "layers" in r.stdout
