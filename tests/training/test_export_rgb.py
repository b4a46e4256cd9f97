"""Export of colour models: 32x32 and 64x64 RGB networks to TorchScript + ONNX, parity with the eager model,
the manifest's image section, and the OOD calibration on colour images."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from core.latent import sample_latents
from core.manifest import load_manifest
from core.ood import OodCalibration
from training.export import PARITY_ATOL, check_parity, load_exported


@pytest.fixture(scope="module")
def rgb64(tiny_rgb64_model_dir):
    return tiny_rgb64_model_dir


@pytest.mark.parametrize("which", ["32", "64"])
def test_rgb_export_parity_and_manifest(which, tiny_rgb_model_dir, rgb64):
    d, side = (tiny_rgb_model_dir, 32) if which == "32" else (rgb64, 64)
    man = load_manifest(d, verify=True)
    img = man.data["image"]
    assert (img["channels"], img["height"], img["width"]) == (3, side, side)
    assert img["preprocessing"]["color"] == "RGB" and man.data["input"]["channels"] == 3
    assert all(man.data["parity"][n]["onnx_max_abs_err"] <= PARITY_ATOL for n in ("g", "h1", "h2", "h"))
    model = load_exported(d).eval()
    assert model.net_cfg.stages == {32: 3, 64: 4}[side]
    again = check_parity(d, model)
    assert max(max(v.values()) for v in again.values()) <= PARITY_ATOL
    for batch in (1, 5):
        z, _ = sample_latents(man.latent_spec(), batch, seed=2)
        sess = {n: ort.InferenceSession(str(man.onnx_path(n)), providers=["CPUExecutionProvider"])
                for n in ("g", "h1", "h2")}
        x = sess["g"].run(None, {"z": z})[0]
        logits = sess["h2"].run(None, {"z": sess["h1"].run(None, {"x": x})[0]})[0]
        with torch.no_grad():
            ref = model.g(torch.from_numpy(z)).numpy()
            ref_logits = model.h(torch.from_numpy(ref))[1].numpy()
        assert x.shape == (batch, 3, side, side) and logits.shape == (batch, 4)
        assert np.abs(x - ref).max() <= PARITY_ATOL and np.abs(logits - ref_logits).max() <= PARITY_ATOL
        with torch.no_grad():
            ts = torch.jit.load(str(d / "g.ts"))(torch.from_numpy(z)).numpy()
        assert np.abs(ts - ref).max() <= PARITY_ATOL


def test_rgb_ood_calibration_scores_colour_images(tiny_rgb_model_dir):
    man = load_manifest(tiny_rgb_model_dir)
    cal = OodCalibration.load(man.data["ood"], tiny_rgb_model_dir)
    assert cal.means.shape == (4, 50)
    sess = ort.InferenceSession(str(man.onnx_path("h")), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (6, 3, 32, 32)).astype(np.float32)
    z, logits = sess.run(["z", "logits"], {"x": x})
    recon = None
    if cal.needs_reconstruction:  # pixel components score the image itself (3x32x32 here)
        g = ort.InferenceSession(str(man.onnx_path("g")), providers=["CPUExecutionProvider"])
        recon = g.run(None, {"z": z})[0]
    s = cal.score(z, logits, x=x, recon=recon)
    assert s.shape == (6,) and np.all(np.isfinite(s))
