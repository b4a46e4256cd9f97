"""benchmarks/recipes_report.py: the RESULTS.md section is built from the row files alone, says which
targets are met, and is spliced in place without touching the rest of RESULTS.md."""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import recipes_report as R  # noqa: E402


def _row(name, role, acc, nmi, labels="none", preset=None, overrides=None, alg2=None, prior=None):
    return {"row": name, "preset": preset or name, "overrides": overrides or {}, "role": role, "steps": 2000,
            "train_time_s": 600.0, "labels": labels, "selected": {"step": 400, "by": "val_mi", "score": 2.2},
            "test_onnx": {"acc": acc, "nmi": nmi, "ari": nmi - 0.02, "purity": acc},
            "eval": {"cluster": {"acc": acc}, **({"cluster_algorithm2": {"acc": alg2}} if alg2 is not None else {}),
                     "gen_purity": {"mean": 0.96, "min": 0.9, "classes_covered": 10.0, "coverage": 1.0}},
            "curve": [{"step": 200, "val_acc": acc - 0.1, "val_mi": 2.0}, {"step": 400, "val_acc": acc, "val_mi": 2.2},
                      {"step": 2000, "val_acc": acc, "val_mi": 2.2}],
            **({"prior_learning": prior} if prior else {})}


def test_report_section_verdicts_and_splice(tmp_path):
    res = tmp_path / "docs" / "results" / "recipes"
    res.mkdir(parents=True)
    rows = [_row("mnist-unsup", "ours", 0.97, 0.93), _row("fmnist-unsup", "ours", 0.60, 0.55),
            _row("mnist-abl-no-im", "ablation", 0.5, 0.4, preset="mnist-unsup", overrides={"im_weight": 0.0}),
            _row("mnist-mmgan", "ours", 0.96, 0.9, alg2=0.93, preset="mnist-unsup",
                 overrides={"latent_kind": "mmgan-static"}),
            dict(_row("mnist-unsup-seed1", "seed", 0.91, 0.88, preset="mnist-unsup", overrides={"seed": 1}),
                 curve=[{"step": 400, "val_acc": 0.91, "val_mi": 2.3}]),
            _row("mnist2-90-10", "ours", 0.99, 0.9, labels="1% of the training set",
                 prior={"n_labeled": 100, "learned_priors": [0.9, 0.1], "true_priors": [0.9, 0.1],
                        "prior_abs_error_max": 0.004, "before": {"acc": 0.99, "nmi": 0.9, "ari": 0.9},
                        "after": {"acc": 0.99, "nmi": 0.9, "ari": 0.9}})]
    for r in rows:
        (res / f"{r['row']}.json").write_text(json.dumps(r))
    (tmp_path / "RESULTS.md").write_text("# Results\n\nolder reproduction text\n")
    (tmp_path / "README.md").write_text(f"intro\n{R.TBEGIN}\nstale\n{R.TEND}\noutro\n")
    R.write_report(res, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "stale" not in readme and readme.startswith("intro\n") and readme.endswith("outro\n")
    assert "| `mnist-unsup` | none | 2000 | 10 min | 0.970 | 0.930 | meets the target |" in readme
    assert "mnist-abl-no-im" not in readme  # ablations and variants stay in RESULTS.md
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.startswith("# Results\n") and "older reproduction text" in text
    assert text.count(R.BEGIN) == 1 and text.count(R.END) == 1
    line = {r: next(ln for ln in text.splitlines() if ln.startswith(f"| `{r}` |")) for r in ("mnist-unsup", "fmnist-unsup")}
    assert "meets the target" in line["mnist-unsup"] and "0.970" in line["mnist-unsup"]
    assert "acc 0.600 < 0.65" in line["fmnist-unsup"]
    assert "alg2_acc 0.930 < 0.95" in text  # MM-GAN judged on Algorithm 2
    assert "| `mnist-abl-no-im` | mnist | `im_weight=0.0` | 0.500 | 0.500 (2000) | 0.500 | 0.400 | 0.960 (10) |" in text
    seed = next(ln for ln in text.splitlines() if ln.startswith("| `mnist-unsup` | 0: "))
    # MI at the selected step 400: 2.2 for seed 0, 2.3 for seed 1, so the label-free pick is seed 1.
    assert seed == ("| `mnist-unsup` | 0: 0.970 / 0.930 (2.200); 1: 0.910 / 0.880 (2.300) | 0.910 | 0.940 | "
                    "0.910 / 0.880 (seed 1) | min 0.910 < 0.95; mean 0.940 < 0.97; kept_acc 0.910 < 0.97; "
                    "kept_nmi 0.880 < 0.93 |")
    assert "[0.9, 0.1]" in text and (tmp_path / "docs" / "images" / "recipes-curves.png").is_file()
    # Rewriting replaces the block in place.
    (res / "fmnist-unsup.json").unlink()
    R.write_report(res, tmp_path)
    again = (tmp_path / "RESULTS.md").read_text()
    assert again.count(R.BEGIN) == 1 and "fmnist-unsup" not in again and "older reproduction text" in again


def test_splice_puts_a_new_block_after_the_title():
    out = R.splice("# T\nbody\n", [R.BEGIN, "x", R.END])
    assert out.index(R.BEGIN) < out.index("body") and out.startswith("# T\n")


def test_shipped_mnist_manifest_figures_are_what_onnx_h_gives():
    """The shipped model's test figures in its manifest are recomputed from h.onnx and the test set."""
    import pytest

    from core.data import default_data_root

    if not (Path(default_data_root()) / "mnist").is_dir():
        pytest.skip("MNIST IDX files not found: set NEMGAN_DATA_DIR to a folder holding mnist/ (see README)")
    import recipes
    from training.dataset import load_dataset

    test = load_dataset("mnist", split="test")
    got = recipes.onnx_scores(REPO / "models" / "mnist", test.x, test.y)
    manifest = json.loads((REPO / "models" / "mnist" / "manifest.json").read_text())
    assert got["acc"] == manifest["metrics"]["test_onnx"]["acc"] and got["acc"] >= 0.97
    assert abs(got["nmi"] - manifest["metrics"]["test_onnx"]["nmi"]) < 1e-9


def _preset_rows():
    import recipes

    return [n for n, (_, over, _, role) in recipes.ROWS.items()
            if role in ("ours", "seed") and not set(recipes._LEGACY_CADENCE) <= set(over)]


def test_recipe_rows_train_what_the_readme_command_trains(tmp_path, monkeypatch):
    """A preset's row and `nemgan train --preset P [--seed S]` train the same configuration: the preset alone
    decides it (the runner adds only the folder, thread count and how often samples/last.pt are written)."""
    import recipes
    import training.train
    from typer.testing import CliRunner

    from cli import app

    rows = _preset_rows()
    assert rows, "no row runs a preset as the README does"
    seen = {}

    def capture(cfg, resume=False, progress=True):
        seen["cfg"] = cfg
        return {"best": {}}

    monkeypatch.setattr(training.train, "train", capture)
    for name in rows:
        preset_name, over, _, _ = recipes.ROWS[name]
        assert set(over) <= {"seed"}, f"{name}: a preset row may only change the seed, not {sorted(over)}"
        args = ["train", "--preset", preset_name, "--out", str(tmp_path / name), "--no-progress"]
        if "seed" in over:
            args += ["--seed", str(over["seed"])]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        ignore = {"out_dir", "threads", *recipes.RUN_OPTS}
        cli_cfg = {k: v for k, v in seen.pop("cfg").to_dict().items() if k not in ignore}
        row_cfg = {k: v for k, v in recipes.row_config(name).to_dict().items() if k not in ignore}
        assert row_cfg == cli_cfg, name


def test_report_lists_the_papers_colour_rows_as_not_run_until_they_are(tmp_path):
    from training.config import PRESETS

    assert set(R.COLOUR_PAPER_ROWS) <= set(PRESETS)  # each row names a preset that exists
    lines = R.colour_paper_rows({})
    assert sum("not run here: data not on this machine" in ln for ln in lines) == len(R.COLOUR_PAPER_ROWS)
    done = _row("cifar10-airplane-frog-paper", "paper", 0.8, 0.5)
    lines = R.colour_paper_rows({"cifar10-airplane-frog-paper": done})
    row = next(ln for ln in lines if "`cifar10-airplane-frog-paper`" in ln)
    assert "0.800" in row and "not run here" not in row
