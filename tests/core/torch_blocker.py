"""Run Python code in a subprocess where `import torch` fails, as in a serving-only install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A meta-path finder placed first: any import of torch (or torch.*, torchvision) raises ImportError.
BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"torch is blocked in this test: something imported {name!r}")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def run_without_torch(code: str, *args: str, timeout: float = 120, cwd: Path | None = None,
                      env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -c BLOCK_TORCH + code args...` in the repository (or cwd); returns the finished process."""
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code, *args], cwd=cwd or REPO, env=e,
                          capture_output=True, text=True, timeout=timeout)
