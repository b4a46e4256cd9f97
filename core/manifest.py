"""The model-directory contract: manifest.json, read, written and validated.

Torch-free on purpose: the service's request path (and anyone else consuming an exported model)
imports this module with only numpy and Pillow installed.

A model directory written by `nemgan export` holds:

    manifest.json      this contract (see `Manifest` below for the fields)
    g.onnx  h1.onnx  h2.onnx      ONNX graphs, dynamic batch axis
    h.onnx             optional (newer exports): h2 . h1 fused in one graph, x -> (z, logits)
    g.ts    h1.ts    h2.ts        TorchScript modules (torch.jit.load)
    latent.npz         centres [K,D], scales [K,D], priors [K] (float64)
    checkpoint.pt      eager weights + TrainConfig, so h can be retrained (prior learning)

The latent formula is in core/latent.py, the preprocessing in core/images.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ManifestError
from .images import ImageSpec
from .latent import LatentSpec
from .modes import mode_labels, resolve_mode

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
NETWORKS = ("g", "h1", "h2")

# ONNX input/output names, fixed so that the service never has to guess.
ONNX_IO = {
    "g": {"inputs": ["z"], "outputs": ["x"]},
    "h1": {"inputs": ["x"], "outputs": ["z"]},
    "h2": {"inputs": ["z"], "outputs": ["logits"]},
}

# Optional fused graphs (manifest `onnx.<net>` when present; older model directories lack them).
# "h": h2 . h1 in one graph, x -> z (= h1(x)) and logits (= h2(z)): one ONNX call to cluster.
ONNX_FUSED_IO = {
    "h": {"inputs": ["x"], "outputs": ["z", "logits"]},
}


# --------------------------------------------------------------------------- manifest


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Manifest:
    """Parsed manifest.json plus the directory it came from."""

    root: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def n_modes(self) -> int:
        return int(self.data["latent"]["n_modes"])

    @property
    def latent_dim(self) -> int:
        return int(self.data["latent"]["dim"])

    @property
    def mode_labels(self) -> list[str]:
        return mode_labels(self.n_modes, self.data.get("mode_labels"))

    @property
    def image(self) -> ImageSpec:
        return ImageSpec.from_dict(self.data["image"])

    @property
    def priors(self) -> np.ndarray:
        return np.asarray(self.data["latent"]["priors"], dtype=np.float64)

    def path(self, key: str) -> Path:
        """File of a network ('g.onnx', 'h1.ts', ...) or any listed file."""
        return self.root / key

    def onnx_path(self, net: str) -> Path:
        return self.root / self.data["onnx"][net]["file"]

    def has_onnx(self, net: str) -> bool:
        """Whether the manifest lists an ONNX graph for `net` (e.g. the optional fused "h")."""
        return net in self.data.get("onnx", {})

    def latent_spec(self) -> LatentSpec:
        return LatentSpec.load(self.root / self.data["latent"]["file"])

    def resolve_mode(self, mode: int | str | None) -> int | None:
        """Mode given by index or by label -> index; None stays None (draw from priors)."""
        return resolve_mode(mode, self.mode_labels)

    def verify(self) -> None:
        """Check every listed file exists and matches its sha256."""
        for rel, digest in self.data.get("files", {}).items():
            p = self.root / rel
            if not p.is_file():
                raise ManifestError(f"{self.root}: missing file {rel}")
            if sha256_file(p) != digest:
                raise ManifestError(f"{self.root}: sha256 mismatch for {rel}")


REQUIRED_KEYS = ("format_version", "name", "version", "latent", "image", "onnx", "files")


def load_manifest(model_dir: str | Path, verify: bool = False) -> Manifest:
    root = Path(model_dir)
    p = root / MANIFEST_NAME
    if not p.is_file():
        raise ManifestError(f"{root} is not a model directory: no {MANIFEST_NAME}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{p}: invalid JSON: {e}") from e
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ManifestError(f"{p}: missing keys {missing}")
    if int(data["format_version"]) > FORMAT_VERSION:
        raise ManifestError(f"{p}: format_version {data['format_version']} is newer than this nemgan supports")
    # Optional sections (older model directories lack them): the input declaration and the OOD calibration.
    from . import inputs, ood

    if "input" in data:
        inputs.validate_section(data["input"])
    if "ood" in data:
        ood.validate_section(data["ood"], root)
    m = Manifest(root, data)
    if verify:
        m.verify()
    return m


def write_manifest(model_dir: str | Path, data: dict[str, Any]) -> Path:
    """Write manifest.json with the sha256 of every file in the directory (manifest excluded)."""
    root = Path(model_dir)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    data = dict(data)
    data["format_version"] = FORMAT_VERSION
    data["files"] = {str(p.relative_to(root)): sha256_file(p) for p in files}
    out = root / MANIFEST_NAME
    tmp = root / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(out)
    return out


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")

