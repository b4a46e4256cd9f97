"""Exporting with dead modes pruned (`nemgan export --prune-modes`, training/export.py export_pruned): h2's last
layer and the latent sliced to the live modes, the kept logits and latents unchanged, the manifest's "pruning"
section, and the refusal to keep fewer than 2 modes."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from core.latent import sample_latents
from core.manifest import load_manifest
from training.export import (PARITY_ATOL, export_pruned, live_modes, load_exported, mode_usage,
                             prune_model)
from training.model import NemganModel

USAGE = [0.3, 0.004, 0.25, 0.0, 0.2, 0.246]  # modes 1 and 3 dead at min_usage 0.01
KEPT = [0, 2, 4, 5]


@pytest.fixture(scope="module")
def run6(tmp_path_factory):
    """A 3-step dry run with 6 modes and narrow networks (fake data)."""
    from training.config import TrainConfig
    from training.train import train

    run = tmp_path_factory.mktemp("run6")
    train(TrainConfig(out_dir=str(run), dry_run=True, seed=0, n_modes=6, g_width=8, d_width=8, fc_hidden=32,
                      h2_hidden=32, priors="learned"), progress=False)
    return run


@pytest.fixture(scope="module")
def model6(run6):
    return NemganModel.load(run6 / "best.pt").eval()


@pytest.fixture(scope="module")
def pruned_dir(model6, tmp_path_factory):
    return export_pruned(model6, tmp_path_factory.mktemp("pruned") / "p6", "p6", usage=USAGE)


def _x(n=16, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_prune_model_slices_logits_and_latent(model6):
    p = prune_model(model6, KEPT)
    assert p.n_modes == 4 and p.class_names == ["m0", "m1", "m2", "m3"]
    x = _x()
    with torch.no_grad():
        z0, l0 = model6.h(x)
        z1, l1 = p.h(x)
    torch.testing.assert_close(z1, z0, rtol=0, atol=0)
    # kept logits are the original ones (up to float32 summation order: a GEMM of another width blocks differently)
    torch.testing.assert_close(l1, l0[:, KEPT], rtol=0, atol=1e-6)
    s0, s1 = model6.latent.spec(), p.latent.spec()
    np.testing.assert_array_equal(s1.centres, s0.centres[KEPT])
    np.testing.assert_array_equal(s1.scales, s0.scales[KEPT])
    np.testing.assert_allclose(s1.priors, s0.priors[KEPT] / s0.priors[KEPT].sum(), rtol=1e-6)
    for j, k in enumerate(KEPT):  # sampling kept mode j == sampling original mode kept[j], bit for bit
        za, ma = sample_latents(s1, 8, j, 0.7, seed=3)
        zb, _ = sample_latents(s0, 8, k, 0.7, seed=3)
        np.testing.assert_array_equal(za, zb)
        assert (ma == j).all()
        with torch.no_grad():
            torch.testing.assert_close(p.g(torch.from_numpy(za)), model6.g(torch.from_numpy(zb)), rtol=0, atol=0)


def test_export_pruned_manifest_and_onnx(model6, pruned_dir):
    man = load_manifest(pruned_dir, verify=True)
    d = man.data
    assert man.n_modes == 4 and d["latent"]["n_modes"] == 4 and len(d["latent"]["priors"]) == 4
    assert man.mode_labels == ["m0", "m1", "m2", "m3"]
    pr = d["pruning"]
    assert pr["kept"] == KEPT and pr["dropped"] == [1, 3] and pr["original_n_modes"] == 6
    assert pr["usage"] == pytest.approx(USAGE) and pr["min_usage"] == 0.01 and len(pr["original_priors"]) == 6
    for net in ("g", "h1", "h2", "h"):
        assert d["parity"][net]["onnx_max_abs_err"] <= PARITY_ATOL
    # ONNX h2 / fused h: logits over the live modes only, equal to the original model's kept logits
    x = _x(8, 1)
    with torch.no_grad():
        z0, l0 = model6.h(x)
    l2 = ort.InferenceSession(str(man.onnx_path("h2")), providers=["CPUExecutionProvider"]).run(
        None, {"z": z0.numpy()})[0]
    assert l2.shape == (8, 4)
    np.testing.assert_allclose(l2, l0[:, KEPT].numpy(), atol=PARITY_ATOL)
    zf, lf = ort.InferenceSession(str(man.onnx_path("h")), providers=["CPUExecutionProvider"]).run(
        ["z", "logits"], {"x": x.numpy()})
    assert lf.shape == (8, 4)
    np.testing.assert_allclose(lf, l0[:, KEPT].numpy(), atol=PARITY_ATOL)
    # the spec on disk samples like the original's kept modes; the checkpoint rebuilds the pruned model
    s0 = model6.latent.spec()
    for j, k in enumerate(KEPT):
        np.testing.assert_array_equal(sample_latents(man.latent_spec(), 5, j, seed=2)[0],
                                      sample_latents(s0, 5, k, seed=2)[0])
    back = load_exported(pruned_dir)
    assert back.n_modes == 4 and back.class_names == ["m0", "m1", "m2", "m3"]
    np.testing.assert_array_equal(back.latent.spec().centres, s0.centres[KEPT])
    assert "ood" in d  # calibrated on the pruned graphs


def test_refuses_fewer_than_two_modes(model6, tmp_path):
    with pytest.raises(ValueError, match="at least 2"):
        live_modes([0.995, 0.005, 0, 0, 0, 0], 0.01)
    with pytest.raises(ValueError, match="at least 2"):
        export_pruned(model6, tmp_path / "one", "one", usage=[0.0, 1.0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="at least 2"):
        prune_model(model6, [2])
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(ValueError, match="shape"):
        export_pruned(model6, tmp_path / "bad", "bad", usage=[0.5, 0.5])


def test_usage_from_training_split_and_priors(model6, tmp_path):
    """Default usage: h's argmax on the training split. h2's last layer is set so that h splits the training
    images between modes 0 and 2 at the median of a direction of its input: the others get none."""
    import copy

    from training.calibrate import training_images

    x = training_images({"training": model6.cfg.to_dict()})
    m = copy.deepcopy(model6).eval()
    last = m.h.h2.net[-1]
    with torch.no_grad():
        hid = m.h.h2.net[:-1](m.h.h1(torch.from_numpy(x.astype(np.float32) / 127.5 - 1)))  # last layer's input
        w = torch.randn(hid.shape[1], generator=torch.Generator().manual_seed(0))
        med = (hid @ w).median()
        last.weight.zero_()
        last.bias.fill_(-1e3)
        last.weight[0], last.bias[0] = w, -med
        last.weight[2], last.bias[2] = -w, med
    u = mode_usage(m, x)
    ids, _ = m.cluster(torch.from_numpy(x.astype(np.float32) / 127.5 - 1))
    np.testing.assert_allclose(u, np.bincount(ids, minlength=6) / len(x))
    assert u[0] > 0.3 and u[2] > 0.3 and u[[1, 3, 4, 5]].sum() == 0
    out = export_pruned(m, tmp_path / "t", "t")
    man = load_manifest(out)
    pr = man.data["pruning"]
    assert pr["kept"] == [0, 2] and pr["n_images"] == len(x) and pr["usage"] == pytest.approx(u.tolist())
    assert "training split" in pr["criterion"] and man.n_modes == 2 and man.mode_labels == ["m0", "m1"]
    out = export_pruned(model6, tmp_path / "p", "p", usage_from="priors", calibrate_ood=False)
    pr = load_manifest(out).data["pruning"]
    assert pr["kept"] == list(range(6)) and "priors" in pr["criterion"]  # 3 steps: the priors are still ~uniform


def test_labels_of_kept_modes(model6):
    assert prune_model(model6, KEPT, list("abcdef")).class_names == ["a", "c", "e", "f"]
    assert prune_model(model6, KEPT, ["w", "x", "y", "z"]).class_names == ["w", "x", "y", "z"]
    with pytest.raises(ValueError, match="distinct"):
        prune_model(model6, KEPT, ["a", "b"])
    m = NemganModel.load(model6.cfg.out_dir + "/best.pt")
    m.class_names = [f"c{k}" for k in range(6)]
    assert prune_model(m, KEPT).class_names == ["m0", "m1", "m2", "m3"]  # unsupervised: neutral names
    m.cfg.labeled_fraction = 0.1  # labels trained h: the class names follow their modes
    assert prune_model(m, KEPT).class_names == ["c0", "c2", "c4", "c5"]


def test_cli_export_prune_modes(run6, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    r = CliRunner().invoke(app, ["export", str(run6), str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    assert "pruning" not in load_manifest(tmp_path / "plain").data  # without --prune-modes: unchanged
    r = CliRunner().invoke(app, ["export", str(run6), str(tmp_path / "pr"), "--prune-modes", "--min-usage", "0",
                                 "--mode-labels", "a,b,c,d,e,f"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):])
    assert out["pruning"]["kept"] == list(range(6)) and len(out["pruning"]["usage"]) == 6
    assert out["pruning"]["mode_labels"] == list("abcdef")
    assert load_manifest(tmp_path / "pr").data["pruning"]["n_images"] == 256  # the dry run's training split
    r = CliRunner().invoke(app, ["export", str(run6), str(tmp_path / "none"), "--prune-modes", "--min-usage", "0.99"])
    assert r.exit_code != 0 and "at least 2" in r.output
    assert not (tmp_path / "none").exists()
