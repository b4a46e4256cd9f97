"""OOD calibration written by export (training/calibrate.py) and by `nemgan calibrate-ood`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core import ood
from core.errors import ManifestError
from core.images import U8_TO_MODEL
from core.manifest import load_manifest, write_manifest


def test_export_writes_the_calibration_and_the_input_declaration(tiny_model_dir):
    man = load_manifest(tiny_model_dir, verify=True)
    sec = man.data["ood"]
    assert sec["components"] == list(ood.DEFAULT_COMPONENTS) and sec["fpr"] == ood.DEFAULT_FPR
    assert "ood.npz" in man.data["files"] and (tiny_model_dir / "ood.npz").is_file()
    cal = sec["calibration"]
    # the tiny model's dry-run data: 256 fake images, split 2:1 into fit / held out
    assert cal["n_fit"] + cal["n_holdout"] == 256 and cal["n_holdout"] >= 80
    assert cal["holdout_fpr"] == pytest.approx(0.05, abs=0.03)
    assert np.isfinite(sec["threshold"])
    inp = man.data["input"]
    assert inp["dtype"] == "uint8" and inp["range"] == [0, 255] and (inp["channels"], inp["height"]) == (1, 28)
    assert inp["polarity"] == "white-on-black"  # the fake blobs are bright on a dark background


def test_calibration_reproduces_and_scores_noise_as_ood(tiny_model_dir, tmp_path):
    from training.calibrate import Networks, calibrate, training_images

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    again = calibrate(d)
    before = load_manifest(tiny_model_dir).data["ood"]
    assert again["threshold"] == pytest.approx(before["threshold"], rel=1e-5)
    assert again["log_mean"] == pytest.approx(before["log_mean"], rel=1e-5)
    man = load_manifest(d, verify=True)
    cal = ood.OodCalibration.load(man.data["ood"], d)
    nets = Networks(d)
    train = training_images(man.data)
    noise = np.random.default_rng(0).integers(0, 256, (64, 1, 28, 28), dtype=np.uint8)
    z, logits = nets.h(U8_TO_MODEL[noise])
    assert np.mean(cal.flag(cal.score(z, logits, U8_TO_MODEL[noise]))) > 0.9
    z, logits = nets.h(U8_TO_MODEL[train])
    assert np.mean(cal.flag(cal.score(z, logits, U8_TO_MODEL[train]))) < 0.2


def test_calibrate_on_given_images_and_with_the_pixel_term(tiny_model_dir, tmp_path):
    from training.calibrate import calibrate, training_images

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    x = training_images(load_manifest(d).data)[:120]
    sec = calibrate(d, x, components=(ood.LATENT, ood.PIXEL), fpr=0.1, source="120 given images")
    assert sec["components"] == [ood.LATENT, ood.PIXEL] and sec["fpr"] == 0.1
    assert sec["calibration"]["n_fit"] == 80 and sec["calibration"]["images"] == "120 given images"
    with pytest.raises(ValueError, match="uint8"):
        calibrate(d, x.astype(np.float32))
    with pytest.raises(ValueError, match="at least 30"):
        calibrate(d, x[:10])


def test_manifest_validation_of_the_new_sections(tiny_model_dir, tmp_path):
    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    data = json.loads((d / "manifest.json").read_text())
    for key, broken, msg in [("ood", {**data["ood"], "fpr": 0}, "fpr"),
                             ("ood", {**data["ood"], "file": "gone.npz"}, "missing"),
                             ("input", {**data["input"], "polarity": "sideways"}, "polarity"),
                             ("input", {k: v for k, v in data["input"].items() if k != "range"}, "missing keys")]:
        write_manifest(d, {**data, key: broken})
        with pytest.raises(ManifestError, match=msg):
            load_manifest(d)
    write_manifest(d, data)
    load_manifest(d, verify=True)


def test_export_without_calibration_data_says_how(tmp_path, tiny_model_dir):
    from training.export import export_model, load_exported

    model = load_exported(tiny_model_dir)
    model.cfg.dry_run, model.cfg.dataset, model.cfg.data_root = False, "no-such-data", str(tmp_path)
    with pytest.raises(RuntimeError, match="calibrate_ood=False"):
        export_model(model, tmp_path / "out", name="x")
    assert not (tmp_path / "out").exists()
    export_model(model, tmp_path / "out", name="x", calibrate_ood=False)
    assert "ood" not in load_manifest(tmp_path / "out").data
