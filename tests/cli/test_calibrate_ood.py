"""`nemgan calibrate-ood`: refits a model directory's OOD score; clean errors for bad input."""

import json
import shutil

from typer.testing import CliRunner

from cli import app
from core.manifest import load_manifest, write_manifest

runner = CliRunner()


def test_calibrate_ood_adds_the_sections_to_an_old_model_directory(tiny_model_dir, tmp_path):
    d = tmp_path / "old"
    shutil.copytree(tiny_model_dir, d)
    data = load_manifest(d).data
    del data["ood"], data["input"]
    (d / "ood.npz").unlink()
    write_manifest(d, data)  # as exported before calibration existed
    r = runner.invoke(app, ["calibrate-ood", str(d), "--fpr", "0.1"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["ood"]["fpr"] == 0.1
    man = load_manifest(d, verify=True)
    assert man.data["ood"]["threshold"] == out["ood"]["threshold"] and man.data["input"]["polarity"]


def test_calibrate_ood_errors(tiny_model_dir, tmp_path):
    r = runner.invoke(app, ["calibrate-ood", str(tmp_path)])
    assert r.exit_code == 2 and "not a model directory" in r.output
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    r = runner.invoke(app, ["calibrate-ood", str(d), "--components", "entropy"])
    assert r.exit_code == 2 and "components" in r.output
