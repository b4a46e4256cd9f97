"""Calibrate a model directory's out-of-distribution score on its training data, and declare its input.

Run by `export_model` on every export (so a re-shipped model is calibrated without anyone remembering to),
by the prior-learning job (a retrained h has other latents) and by `nemgan calibrate-ood MODEL_DIR` for a
directory exported before this existed. It goes through the exported ONNX graphs with ONNX Runtime (what
the service runs), not the eager model, so the statistics match what is served to the last float.

Writes `ood.npz` and the manifest's `ood` and `input` sections (see core/ood.py and core/inputs.py), then
rewrites manifest.json with fresh sha256 digests.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from core import inputs, ood
from core.images import U8_TO_MODEL
from core.manifest import ONNX_FUSED_IO, ONNX_IO, load_manifest, write_manifest

# Training images used: the statistics are fitted on N_FIT and the threshold set on N_HOLDOUT others.
N_FIT = 10_000
N_HOLDOUT = 5_000
BATCH = 512


class Networks:
    """The exported ONNX graphs of a model directory, run with ONNX Runtime on the CPU."""

    def __init__(self, model_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.manifest = load_manifest(model_dir)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self._ort, self._so, self._sessions = ort, so, {}

    def _session(self, net: str):
        if net not in self._sessions:
            self._sessions[net] = self._ort.InferenceSession(str(self.manifest.onnx_path(net)), self._so,
                                                             providers=["CPUExecutionProvider"])
        return self._sessions[net]

    def h(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.manifest.has_onnx("h"):
            io = ONNX_FUSED_IO["h"]
            z, logits = self._session("h").run(io["outputs"], {io["inputs"][0]: x})
            return z, logits
        z = self._session("h1").run(None, {ONNX_IO["h1"]["inputs"][0]: x})[0]
        return z, self._session("h2").run(None, {ONNX_IO["h2"]["inputs"][0]: z})[0]

    def g(self, z: np.ndarray) -> np.ndarray:
        return self._session("g").run(None, {ONNX_IO["g"]["inputs"][0]: z})[0]

    def h1(self, x: np.ndarray) -> np.ndarray:
        return self._session("h1").run(None, {ONNX_IO["h1"]["inputs"][0]: x})[0]

    def outputs(self, x_uint8: np.ndarray, reconstruct: bool = False) -> dict[str, np.ndarray]:
        """x (model range), z, logits and (reconstruct) g(z) for uint8 [N,C,H,W] images, in batches."""
        parts: dict[str, list] = {"x": [], "z": [], "logits": [], "recon": []}
        for i in range(0, len(x_uint8), BATCH):
            x = U8_TO_MODEL[x_uint8[i:i + BATCH]]
            z, logits = self.h(x)
            parts["x"].append(x)
            parts["z"].append(z)
            parts["logits"].append(logits)
            if reconstruct:
                parts["recon"].append(self.g(z))
        return {k: np.concatenate(v) if v else None for k, v in parts.items()}


def training_images(manifest_data: dict, data_root: str | None = None) -> np.ndarray:
    """The model's training images (uint8 [N,C,H,W]), from the training config recorded in its manifest."""
    from .config import TrainConfig
    from .dataset.run import load_training_data

    cfg = TrainConfig.from_dict(manifest_data["training"])
    if data_root is not None:
        cfg.data_root = str(data_root)
    return load_training_data(cfg, "train").x


def fit_on_images(nets: Networks, x_uint8: np.ndarray, *, components=ood.DEFAULT_COMPONENTS,
                  fpr: float = ood.DEFAULT_FPR, n_fit: int = N_FIT, n_holdout: int = N_HOLDOUT, seed: int = 0,
                  info: dict | None = None) -> ood.OodCalibration:
    """Fit an OOD score on in-distribution images: a random `n_fit` of them fit the statistics, `n_holdout`
    others set the threshold (small sets are split 2:1). Writes nothing."""
    x_uint8 = np.asarray(x_uint8)
    if x_uint8.dtype != np.uint8 or x_uint8.ndim != 4:
        raise ValueError(f"calibration images must be uint8 [N,C,H,W], got {x_uint8.dtype} {x_uint8.shape}")
    if len(x_uint8) < 30:
        raise ValueError(f"need at least 30 images to calibrate the OOD score, got {len(x_uint8)}")
    idx = np.random.default_rng(seed).permutation(len(x_uint8))
    if len(idx) < n_fit + n_holdout:
        n_fit = (2 * len(idx)) // 3
        n_holdout = len(idx) - n_fit
    fit_idx, hold_idx = np.sort(idx[:n_fit]), np.sort(idx[n_fit:n_fit + n_holdout])
    recon = ood.PIXEL in components
    a = nets.outputs(x_uint8[fit_idx], reconstruct=recon)
    b = nets.outputs(x_uint8[hold_idx], reconstruct=recon)
    return ood.fit(a["z"], a["logits"], b["z"], b["logits"], x_fit=a["x"], recon_fit=a["recon"], x_hold=b["x"],
                   recon_hold=b["recon"], components=components, fpr=fpr,
                   info={**(info or {}), "split": "random fit / held-out split", "seed": seed})


def calibrate(model_dir: str | Path, x_uint8: np.ndarray | None = None, *, components=ood.DEFAULT_COMPONENTS,
              fpr: float = ood.DEFAULT_FPR, n_fit: int = N_FIT, n_holdout: int = N_HOLDOUT, seed: int = 0,
              data_root: str | None = None, source: str | None = None) -> dict:
    """Fit the OOD score of `model_dir` on in-distribution images and record it (and the input declaration).

    x_uint8: the images to calibrate on, uint8 [N,C,H,W] (default: the model's training set, from its
    manifest's training config). Returns the manifest's new `ood` section."""
    model_dir = Path(model_dir)
    nets = Networks(model_dir)
    data = dict(nets.manifest.data)
    if x_uint8 is None:
        x_uint8 = training_images(data, data_root)
        source = source or f"training set of {data.get('training', {}).get('dataset')!r}"
    cal = fit_on_images(nets, x_uint8, components=components, fpr=fpr, n_fit=n_fit, n_holdout=n_holdout, seed=seed,
                        info={"images": source or "given images",
                              "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "command": "nemgan export (automatic) or nemgan calibrate-ood MODEL_DIR"})
    cal.save(model_dir)
    c, h, w = np.asarray(x_uint8).shape[1:]
    data["ood"] = cal.to_manifest()
    data["input"] = inputs.declare(x_uint8, c, h, w)
    write_manifest(model_dir, data)
    load_manifest(model_dir, verify=True)
    return data["ood"]
