"""The serving side never imports torch: every `core`, `service` and `cli` module imports with torch blocked."""

from __future__ import annotations

from torch_blocker import run_without_torch

IMPORT_ALL = """
import importlib, pkgutil, sys
names = []
for pkg_name in ("core", "service", "cli"):
    pkg = importlib.import_module(pkg_name)
    names.append(pkg_name)
    for m in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
        if m.name.endswith(".__main__"):  # runs the command line when imported
            continue
        importlib.import_module(m.name)
        names.append(m.name)
assert "torch" not in sys.modules, "torch got imported"
print(len(names), " ".join(sorted(names)))
"""


def test_blocker_blocks_torch():
    r = run_without_torch("import torch")
    assert r.returncode != 0 and "torch is blocked" in r.stderr


def test_every_core_service_and_cli_module_imports_without_torch():
    r = run_without_torch(IMPORT_ALL)
    assert r.returncode == 0, r.stderr
    n, names = r.stdout.split(" ", 1)
    names = names.split()
    # The walk really reached the modules (a package that failed to list would leave only its root).
    for must in ("core.manifest", "core.images", "core.latent", "service.app", "service.runtime",
                 "service.routes.cluster", "service.jobs.tasks", "service.jobs.uploads", "cli.serve", "cli.sample", "cli.train"):
        assert must in names
    assert int(n) == len(names) >= 20
