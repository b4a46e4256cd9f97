"""The README's serving table is the one benchmarks/serve_table.py builds from docs/results/serve_bench.json."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_serving_table_is_built_from_the_results_file():
    r = subprocess.run([sys.executable, "benchmarks/serve_table.py", "--check"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, f"README.md's serving table is stale: run `python benchmarks/serve_table.py`\n{r.stderr}"
