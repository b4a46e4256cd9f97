"""The model-directory contract: manifest.json, the latent spec and image preprocessing.

Everything here is torch-free on purpose: the service's request path (and anyone else
consuming an exported model) imports this module with only numpy and Pillow installed.

A model directory written by `nemgan export` holds:

    manifest.json      this contract (see `Manifest` below for the fields)
    g.onnx  h1.onnx  h2.onnx      ONNX graphs, dynamic batch axis
    h.onnx             optional (newer exports): h2 . h1 fused in one graph, x -> (z, logits)
    g.ts    h1.ts    h2.ts        TorchScript modules (torch.jit.load)
    latent.npz         centres [K,D], scales [K,D], priors [K] (float64)
    checkpoint.pt      eager weights + TrainConfig, so h can be retrained (prior learning)

Every latent kind we support reduces, at sampling time, to one formula:

    z = centres[mode] + sigma * scales[mode] * eps,   eps ~ U(-1,1)^D  (NEMGAN, NEMGAN-P)
                                                      eps ~ N(0,1)^D   (MM-GAN)
    mode ~ Categorical(priors)  unless the caller fixes it

so a consumer needs no knowledge of how the latent was trained. sigma scales the noise
(sigma=0 gives the mode centre): the quality/diversity knob of MM-GAN (004 sec. 4.3).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


class ManifestError(ValueError):
    """A model directory or manifest that does not follow the contract."""


# --------------------------------------------------------------------------- latent


@dataclass
class LatentSpec:
    kind: str  # "nemgan" | "nemgan-p" | "mmgan-static" | "mmgan-dynamic" | "unimodal"
    centres: np.ndarray  # [K, D]
    scales: np.ndarray  # [K, D]
    priors: np.ndarray  # [K], sums to 1
    noise: str  # "uniform" | "gaussian"

    @property
    def n_modes(self) -> int:
        return int(self.centres.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centres.shape[1])

    def validate(self) -> "LatentSpec":
        if self.centres.ndim != 2 or self.scales.shape != self.centres.shape:
            raise ManifestError(f"latent centres {self.centres.shape} and scales {self.scales.shape} must both be [K, D]")
        if self.priors.shape != (self.n_modes,):
            raise ManifestError(f"latent priors shape {self.priors.shape} != ({self.n_modes},)")
        if not np.all(np.isfinite(self.priors)) or np.any(self.priors < 0) or abs(self.priors.sum() - 1) > 1e-4:
            raise ManifestError(f"latent priors must be non-negative and sum to 1, got {self.priors.tolist()}")
        if self.noise not in ("uniform", "gaussian"):
            raise ManifestError(f"unknown latent noise {self.noise!r}")
        return self

    def with_priors(self, priors) -> "LatentSpec":
        p = np.asarray(priors, dtype=np.float64)
        return LatentSpec(self.kind, self.centres, self.scales, p / p.sum(), self.noise).validate()

    def save(self, path: str | Path) -> None:
        np.savez(path, centres=self.centres, scales=self.scales, priors=self.priors,
                 kind=np.array(self.kind), noise=np.array(self.noise))

    @classmethod
    def load(cls, path: str | Path) -> "LatentSpec":
        try:
            with np.load(path, allow_pickle=False) as f:
                return cls(str(f["kind"]), f["centres"].astype(np.float64), f["scales"].astype(np.float64),
                           f["priors"].astype(np.float64), str(f["noise"])).validate()
        except (OSError, KeyError, ValueError) as e:
            if isinstance(e, ManifestError):
                raise
            raise ManifestError(f"cannot read latent file {path}: {e}") from e


def sample_latents(spec: LatentSpec, n: int, mode: int | None = None, sigma: float = 1.0,
                   seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw n latents. Same (spec, n, mode, sigma, seed) -> bit-identical z.

    The mode draw and the noise draw use one numpy Generator in a fixed order, so a seed
    reproduces the images exactly across the CLI, the service and the tests.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    rng = np.random.default_rng(seed)
    if mode is None:
        # Renormalise in float64: priors that went through float32 (softmax of alpha) can miss 1 by
        # more than numpy's choice() tolerates.
        p = np.asarray(spec.priors, np.float64)
        modes = rng.choice(spec.n_modes, size=n, p=p / p.sum())
    else:
        if not 0 <= int(mode) < spec.n_modes:
            raise ValueError(f"mode {mode} out of range 0..{spec.n_modes - 1}")
        modes = np.full(n, int(mode), dtype=np.int64)
    if spec.noise == "uniform":
        eps = rng.uniform(-1.0, 1.0, size=(n, spec.dim))
    else:
        eps = rng.standard_normal(size=(n, spec.dim))
    z = spec.centres[modes] + sigma * spec.scales[modes] * eps
    return z.astype(np.float32), modes.astype(np.int64)


# --------------------------------------------------------------------------- images


@dataclass
class ImageSpec:
    channels: int
    height: int
    width: int
    pixel_range: tuple[float, float] = (-1.0, 1.0)

    def to_dict(self) -> dict:
        return {
            "channels": self.channels, "height": self.height, "width": self.width,
            "layout": "NCHW", "dtype": "float32", "pixel_range": list(self.pixel_range),
            "preprocessing": {
                "description": ("decode; convert to grey ('L') if channels == 1 else RGB; resize to "
                                "(width, height) with bilinear resampling if the size differs; "
                                "x = pixel / 127.5 - 1 (uint8 0..255 -> float32 -1..1); layout NCHW"),
                "color": "L" if self.channels == 1 else "RGB",
                "resize": [self.width, self.height],
                "resample": "bilinear",
                "scale": 1 / 127.5,
                "offset": -1.0,
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ImageSpec":
        return cls(int(d["channels"]), int(d["height"]), int(d["width"]), tuple(d.get("pixel_range", (-1, 1))))


def uint8_to_model(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def model_to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def preprocess_image_bytes(data: bytes, image: ImageSpec) -> np.ndarray:
    """Decode one encoded image (PNG/JPEG/...) into a float32 [C,H,W] model input.

    Raises ValueError with a readable message for empty or corrupt data.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("empty image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = im.convert("L" if image.channels == 1 else "RGB")
            if im.size != (image.width, image.height):
                im = im.resize((image.width, image.height), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image: {e}") from e
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return uint8_to_model(arr)


def prepare_array_batch(x: np.ndarray, image: ImageSpec) -> np.ndarray:
    """A numeric batch (.npy/.npz upload) -> float32 NCHW in the model's range.

    Accepts [N,H,W], [N,C,H,W] or [N,H,W,C]; uint8 is scaled by the documented preprocessing,
    floats are taken as already in the model's [-1, 1] range.
    """
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"array dtype {x.dtype} is not numeric")
    c, h, w = image.channels, image.height, image.width
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    if x.ndim == 4 and x.shape[1:] != (c, h, w) and x.shape[1:] == (h, w, c):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1:] != (c, h, w):
        raise ValueError(f"array shape {tuple(x.shape)} does not match the model input "
                         f"[N,{c},{h},{w}] (or [N,{h},{w},{c}]{', [N,%d,%d]' % (h, w) if c == 1 else ''})")
    if np.issubdtype(x.dtype, np.integer):
        if x.min(initial=0) < 0 or x.max(initial=0) > 255:
            raise ValueError("integer pixels must be in 0..255")
        return uint8_to_model(x.astype(np.uint8))
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("array contains NaN or infinite values")
    if x.size and (x.min() < -1.0001 or x.max() > 1.0001):
        raise ValueError("float pixels must be in the model range [-1, 1] (send uint8 for 0..255)")
    return x


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
        labels = self.data.get("mode_labels")
        return [str(v) for v in labels] if labels else [str(k) for k in range(self.n_modes)]

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
        if mode is None:
            return None
        if isinstance(mode, bool):
            raise ValueError(f"mode must be an index or a label, got {mode!r}")
        if isinstance(mode, int):
            if 0 <= mode < self.n_modes:
                return mode
            raise ValueError(f"mode {mode} out of range 0..{self.n_modes - 1}")
        labels = self.mode_labels
        if mode in labels:
            return labels.index(mode)
        raise ValueError(f"unknown mode {mode!r}; known labels: {labels}")

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


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
