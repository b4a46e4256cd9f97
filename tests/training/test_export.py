"""Export contract: files, manifest, sha256, parity of ONNX Runtime and TorchScript vs eager."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.export import PARITY_ATOL, check_parity, export_model, load_exported
from core.latent import sample_latents
from core.manifest import ManifestError, load_manifest
from training.model import NemganModel


def test_model_directory_contents(tiny_model_dir):
    man = load_manifest(tiny_model_dir, verify=True)
    for f in ("g.onnx", "h1.onnx", "h2.onnx", "g.ts", "h1.ts", "h2.ts", "latent.npz", "checkpoint.pt"):
        assert (tiny_model_dir / f).is_file()
        assert f in man.data["files"]
    d = man.data
    assert d["name"] == "tiny" and d["version"] == "1"
    assert d["latent"]["n_modes"] == 10 and d["latent"]["dim"] == 50
    assert abs(sum(d["latent"]["priors"]) - 1) < 1e-6
    assert d["image"]["channels"] == 1 and d["image"]["height"] == 28
    assert d["image"]["preprocessing"]["scale"] == pytest.approx(1 / 127.5)
    assert d["onnx"]["g"]["inputs"] == ["z"] and d["onnx"]["h2"]["outputs"] == ["logits"]
    assert d["training"]["latent_kind"] == "nemgan"
    assert len(man.mode_labels) == 10


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_onnx_and_torchscript_match_eager(tiny_model_dir, batch):
    """Tolerance: max abs error <= 1e-4 (float32 through different kernels), any batch size."""
    model = load_exported(tiny_model_dir).eval()
    man = load_manifest(tiny_model_dir)
    z, _ = sample_latents(man.latent_spec(), batch, seed=1)
    with torch.no_grad():
        ref = model.g(torch.from_numpy(z)).numpy()
        ts = torch.jit.load(str(tiny_model_dir / "g.ts"))(torch.from_numpy(z)).numpy()
        zh_ref, logits_ref = model.h(torch.from_numpy(ref))
    sess = {n: ort.InferenceSession(str(man.onnx_path(n)), providers=["CPUExecutionProvider"]) for n in ("g", "h1", "h2")}
    x = sess["g"].run(None, {"z": z})[0]
    zh = sess["h1"].run(None, {"x": x})[0]
    logits = sess["h2"].run(None, {"z": zh})[0]
    assert np.abs(x - ref).max() <= PARITY_ATOL
    assert np.abs(ts - ref).max() <= PARITY_ATOL
    assert np.abs(zh - zh_ref.numpy()).max() <= PARITY_ATOL
    assert np.abs(logits - logits_ref.numpy()).max() <= PARITY_ATOL
    assert x.shape == (batch, 1, 28, 28) and logits.shape == (batch, 10)


def test_parity_is_recorded_and_rechecks(tiny_model_dir):
    man = load_manifest(tiny_model_dir)
    for net in ("g", "h1", "h2"):
        assert man.data["parity"][net]["onnx_max_abs_err"] <= PARITY_ATOL
    again = check_parity(tiny_model_dir, load_exported(tiny_model_dir))
    assert max(max(v.values()) for v in again.values()) <= PARITY_ATOL


def test_export_refuses_to_overwrite_and_is_atomic(tiny_model_dir, tmp_path):
    model = load_exported(tiny_model_dir)
    out = export_model(model, tmp_path / "m", name="m", version="2")
    with pytest.raises(FileExistsError):
        export_model(model, out, name="m", version="3")
    export_model(model, out, name="m", version="3", overwrite=True)
    assert load_manifest(out).version == "3"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_tampered_file_fails_verification(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, d)
    (d / "h2.onnx").write_bytes((d / "h2.onnx").read_bytes() + b"x")
    with pytest.raises(ManifestError, match="sha256"):
        load_manifest(d, verify=True)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="invalid JSON"):
        load_manifest(d)
    with pytest.raises(ManifestError, match="not a model directory"):
        load_manifest(tmp_path)
    (d / "manifest.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ManifestError, match="missing keys"):
        load_manifest(d)


def test_exported_checkpoint_rebuilds_without_discriminator(tiny_model_dir):
    m = load_exported(tiny_model_dir)
    assert isinstance(m, NemganModel) and m.n_modes == 10
    x, modes = m.generate(4, mode=2, seed=0)
    assert x.shape == (4, 1, 28, 28) and (modes == 2).all()
