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
