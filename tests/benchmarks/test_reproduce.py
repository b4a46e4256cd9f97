"""benchmarks/reproduce.py and benchmarks/evaluate_model.py: dry run end to end, report rebuilt from the
results JSON only, a failing row reported (not fatal), resume skipping finished rows, evaluate_model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import evaluate_model  # noqa: E402
import reproduce  # noqa: E402
from repro import evaluation, report as repro_report, rows as repro_rows  # noqa: E402

ROWS = "t1-fmnist-p,mm-static"  # covers prior learning, Algorithm 2, the sigma sweep and shipping


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    """One --dry-run of two rows in two parallel worker processes, as the real run is launched."""
    out = tmp_path_factory.mktemp("reproduce") / "out"
    t0 = time.time()
    p = subprocess.run([sys.executable, "benchmarks/reproduce.py", "--dry-run", "--out", str(out), "--rows", ROWS,
                        "--jobs", "2", "--ship-min-acc", "0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    return {"out": out, "proc": p, "seconds": time.time() - t0}


def test_dry_run_end_to_end(dry_run):
    out, p = dry_run["out"], dry_run["proc"]
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert dry_run["seconds"] < 120, f"dry run took {dry_run['seconds']:.0f} s"
    for row in ROWS.split(","):
        r = json.loads((out / "results" / f"{row}.json").read_text())
        assert r["status"] == "ok", r.get("traceback")
        assert r["dry_run"] and r["budget"]["steps_done"] == 3 and r["budget"]["paper_steps"] == 200_000
        assert 0.0 <= r["headline"]["acc"] <= 1.0
        assert r["git"]["commit"] and r["device"] and r["timings"]["train_s"] is not None
    p_row = json.loads((out / "results" / "t1-fmnist-p.json").read_text())
    pl = p_row["prior_learning"]
    assert len(pl["learned_priors"]) == len(pl["true_priors"]) and abs(sum(pl["learned_priors"]) - 1) < 1e-3
    mm = json.loads((out / "results" / "mm-static.json").read_text())
    assert mm["sigma_sweep"]["sigma"] == reproduce.SIGMAS and len(mm["sigma_sweep"]["quality"]) == len(reproduce.SIGMAS)
    assert 0.0 <= mm["algorithm2"]["acc"] <= 1.0 and "headline_h" in mm
    # the report and figures went inside the output folder, never to the repo root
    report = (out / "RESULTS.md").read_text()
    assert "Dry run" in report and "001 Table 1" in report and "004" in report and "Table III" in report
    for fig in ("curves_t1.png", "curves_mmgan.png", "sigma_quality_diversity.png", "algorithm2_vs_h.png",
                "samples/t1-fmnist-p.png", "samples/mm-static.png"):
        assert (out / "figures" / fig).is_file(), fig
    assert "started t1-fmnist-p" in (out / "reproduce.log").read_text()
    # shipping (threshold 0 here): an exported model directory that records how it was trained
    man = json.loads((out / "models" / "fashion-mnist" / "manifest.json").read_text())
    assert man["reproduce"]["row"] in ("t1-fmnist-p", "t1-fmnist-s") and "steps" in man["reproduce"]["how"]
    assert "Shipped model" in report


def test_report_only_uses_the_results_json(dry_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(dry_run["out"], out)
    res_p = out / "results" / "t1-fmnist-p.json"
    r = json.loads(res_p.read_text())
    r["headline"].update(acc=0.3712, nmi=0.2468)
    res_p.write_text(json.dumps(r))
    (out / "RESULTS.md").unlink()
    assert reproduce.main(["--report-only", "--out", str(out)]) == 0
    report = (out / "RESULTS.md").read_text()
    line = next(x for x in report.splitlines() if x.startswith("| `t1-fmnist-p`") and "NEMGAN_P" in x)
    assert "0.84 / 0.37" in line and "0.72 / 0.25" in line  # paper / ours, ours from the edited JSON
    assert "short by 0.47 ACC" in line


def test_rerun_skips_finished_rows(dry_run):
    out = dry_run["out"]
    before = json.loads((out / "results" / "mm-static.json").read_text())["finished"]
    assert reproduce.main(["--dry-run", "--out", str(out), "--rows", "mm-static", "--no-ship"]) == 0
    assert json.loads((out / "results" / "mm-static.json").read_text())["finished"] == before
    assert "done already" in (out / "reproduce.log").read_text()


def test_failing_row_is_reported_not_fatal(tmp_path, monkeypatch):
    bad = reproduce.Row("bad-row", "t1", "test", "MNIST", "broken", "a row whose config is invalid",
                        dict(latent_kind="no-such-latent"), dict(acc=0.5))
    monkeypatch.setattr(repro_rows, "ROWS", [bad, *[r for r in repro_rows.ROWS if r.id == "abl-c1n-c2n-c3n"]])
    out = tmp_path / "out"
    assert reproduce.main(["--dry-run", "--out", str(out), "--no-ship"]) == 0
    r = json.loads((out / "results" / "bad-row.json").read_text())
    assert r["status"] == "error" and "latent_kind" in r["error"] and r["traceback"]
    assert json.loads((out / "results" / "abl-c1n-c2n-c3n.json").read_text())["status"] == "ok"  # the run went on
    report = (out / "RESULTS.md").read_text()
    assert "**failed**" in report and "### Failed rows" in report and "bad-row" in report


def test_row_selection_and_help():
    assert [r.id for r in reproduce.select_rows("t1-mnist-*")] == ["t1-mnist-v", "t1-mnist-s", "t1-mnist-p"]
    assert {r.table for r in reproduce.select_rows("ablation")} == {"ablation"}
    assert len(reproduce.select_rows("ablation")) == 5
    with pytest.raises(SystemExit):
        reproduce.select_rows("no-such-row")
    ids = [r.id for r in reproduce.ROWS]
    assert len(ids) == len(set(ids))
    p = subprocess.run([sys.executable, "benchmarks/reproduce.py", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and "--report-only" in p.stdout and "--dry-run" in p.stdout


def test_rows_match_the_papers_tables():
    """Each table the issue names has its rows, and every config is a valid TrainConfig."""
    from training.config import TrainConfig

    tables = {}
    for r in reproduce.ROWS:
        tables.setdefault(r.table, []).append(r)
        TrainConfig.from_dict({**TrainConfig().to_dict(), **reproduce.row_config(r, reproduce.Options())}).validate()
    assert {r.dataset for r in tables["t1"]} == {"MNIST", "FMNIST"} and len(tables["t1"]) == 6
    assert sum("priors_learned" in r.paper for r in tables["t2"]) >= 3  # Table III: at least three ratios
    assert {r.overrides["latent_kind"] for r in tables["mmgan"]} == {"mmgan-static", "mmgan-dynamic"}
    assert any(r.ship == "fashion-mnist" for r in reproduce.ROWS)


def test_shortfall_and_prior_alignment():
    r = {"status": "ok", "paper": {"acc": 0.96}, "headline": {"acc": 0.90}, "caveat": "",
         "budget": {"steps_done": 3000, "paper_steps": 200_000}}
    text = repro_report._shortfall(r)
    assert text.startswith("short by 0.06 ACC") and "3k of the paper's 200k steps" in text
    r["headline"]["acc"] = 0.95
    assert repro_report._shortfall(r) == "reproduced (within 0.02)"
    assert repro_report._shortfall({"status": "error", "error": "boom"}).startswith("**failed**")
    # mode 0 -> class 1, mode 1 -> class 0
    assert evaluation._align_priors([0.3, 0.7], {0: 1, 1: 0}, 2) == [0.7, 0.3]
    assert evaluation._align_priors([0.2, 0.8], {1: 0}, 2) == [0.8, 0.2]


def test_evaluate_model_prints_and_writes_json(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = evaluate_model.main([str(tiny_model_dir), "--metrics", "cluster,prior_error,fcd", "--num-gen", "100",
                              "--classifier-steps", "5", "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    printed = cap.out
    assert "ACC (Hungarian)" in printed and "NMI" in printed and "ARI" in printed and "purity" in printed
    # said up front, then every phase with progress (issue 11: the classifier training used to be silent)
    err = cap.err
    plan = err.index("evaluating on")
    assert plan < err.index("1. cluster") < err.index("3. fcd") < err.index("[1/3] cluster ...")
    assert "real-data classifier: trained first on the training set for 5 steps" in err
    assert "classifier:" in err and "5/5" in err  # the classifier's own progress bar
    assert err.index("real-data classifier: ready") < err.index("[3/3] fcd done")
    res = json.loads(out.read_text())
    assert 0.0 <= res["cluster"]["acc"] <= 1.0 and "fcd" in res["fcd"] and res["n_modes"] == 10


def test_evaluate_model_rejects_unknown_metric(tiny_model_dir, capsys):
    assert evaluate_model.main([str(tiny_model_dir), "--metrics", "nope"]) == 2
    assert "unknown metric" in capsys.readouterr().out
