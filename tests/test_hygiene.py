"""The test suite's own rules: a missing module of ours is a failure, never a skip."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWN = ("core", "training", "service", "cli", "benchmarks")


def test_no_importorskip_of_our_own_modules():
    pattern = re.compile(r"importorskip\(\s*[\"']((?:" + "|".join(OWN) + r")(?:\.[\w.]+)?)[\"']")
    hits = [(p.relative_to(REPO).as_posix(), m) for p in (REPO / "tests").rglob("*.py")
            for m in pattern.findall(p.read_text())]
    assert not hits, hits


def test_every_slow_entry_names_a_test():
    import ast

    tree = ast.parse((REPO / "tests" / "conftest.py").read_text())  # by path: `conftest` may name another one
    (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "SLOW_TESTS"]
    slow = ast.literal_eval(node.value.args[0])
    assert len(slow) >= 20
    for node in slow:
        path, _, name = node.partition("::")
        assert (REPO / path).is_file() and (not name or f"def {name}(" in (REPO / path).read_text()), node
