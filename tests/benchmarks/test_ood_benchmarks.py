"""benchmarks/ood_auroc.py's RESULTS.md section (and reproduce.py keeping it) and benchmarks/ood_cost.py's
latent-only twin of a model: pure file work, no benchmark run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import ood_auroc  # noqa: E402
from repro import report as repro_report  # noqa: E402


def _auroc_doc(shipped=0.99):
    vs = {name: {"n_out": 10, "flagged": 0.9, "auroc": {"shipped": shipped, "latent_mahalanobis": 0.94}}
          for name in ("fashion-mnist test", "inverted test images", "uniform noise")}
    return {"command": "python benchmarks/ood_auroc.py models/mnist", "created": "2026-12-06T00:00:00+00:00",
            "target_auroc": 0.95, "results": [{"model": "models/mnist", "n_in": 10, "vs": vs, "shipped_score": {
                "components": ["latent_mahalanobis", "pixel_pca"], "test_fpr": 0.04}}]}


def _cost_doc():
    side = {"ratio_median": 0.97, "ratio_min": 0.6, "ratio_max": 1.5, "cpu_ratio_median": 0.99, "cpu_ratio_min": 0.9,
            "cpu_ratio_max": 1.1}
    return {"command": "python benchmarks/ood_cost.py", "date": "2026-12-06 00:00:00 UTC", "model": "models/mnist",
            "cores": 2, "load_average_start": [3.0, 3.0, 3.0], "repeat": 16, "target_png_ratio": 0.9,
            "cluster_c32": {"png": side, "npy": side},
            "micro_seconds_per_image": [{"batch": 256, "h.onnx": 1.7e-4, "latent_mahalanobis": 4e-7,
                                         "pixel_pca": 1.6e-6}]}


def test_results_section_is_written_after_the_recipes_block_and_replaced_on_rerun(tmp_path):
    auroc, cost, md = tmp_path / "a.json", tmp_path / "c.json", tmp_path / "RESULTS.md"
    auroc.write_text(json.dumps(_auroc_doc()))
    cost.write_text(json.dumps(_cost_doc()))
    md.write_text("# Results\n<!-- recipes:begin -->\nR\n<!-- recipes:end -->\n\nrest\n")
    ood_auroc.write_results_md(md, auroc, cost)
    text = md.read_text()
    assert text.index("<!-- recipes:end -->") < text.index("<!-- ood:begin -->") < text.index("rest")
    assert "| `models/mnist` | latent_mahalanobis+pixel_pca | uniform noise | 0.9900 | 0.9400 | 90.0% |" in text
    assert "**0.970** wall clock" in text and "**0.990** from the server's CPU time" in text
    auroc.write_text(json.dumps(_auroc_doc(0.9)))
    ood_auroc.write_results_md(md, auroc, tmp_path / "missing.json")
    text = md.read_text()
    assert text.count("<!-- ood:begin -->") == 1 and "0.9000 (< target)" in text and "Cost (" not in text
    # reproduce.py --report-only rebuilds the rest of the file and keeps both blocks, recipes first
    (tmp_path / "out" / "results").mkdir(parents=True)
    repro_report.build_report(tmp_path / "out", md, tmp_path / "figs")
    text = md.read_text()
    assert text.index("<!-- recipes:begin -->") < text.index("<!-- ood:begin -->") < text.index("<!-- ood:end -->")
    assert "0.9000 (< target)" in text and "rest" not in text


def test_cost_benchmark_derives_the_latent_only_twin(tiny_model_dir, tmp_path):
    import ood_cost

    from core import ood
    from core.manifest import load_manifest

    twin = ood_cost.latent_only_copy(tiny_model_dir, tmp_path / "twin")
    full = ood.OodCalibration.load(load_manifest(tiny_model_dir).data["ood"], tiny_model_dir)
    man = load_manifest(twin, verify=True)
    lat = ood.OodCalibration.load(man.data["ood"], twin)
    assert full.components == ood.DEFAULT_COMPONENTS and lat.components == (ood.LATENT,)
    assert lat.log_mean == {ood.LATENT: full.log_mean[ood.LATENT]} and lat.pca_basis is None
    z = np.random.default_rng(0).standard_normal((5, full.means.shape[1])).astype(np.float32)
    logits = np.eye(full.means.shape[0], dtype=np.float32)[np.arange(5) % full.means.shape[0]]
    np.testing.assert_array_equal(lat.values(z, logits)[ood.LATENT], full.values(z, logits, np.zeros((5, 1, 28, 28),
                                                                                             np.float32))[ood.LATENT])
