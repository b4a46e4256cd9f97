"""A model whose dead modes were pruned (`nemgan export --prune-modes`) exposes only its live modes on every
surface: /v1/models (what the playground reads), /v1/generate (mode by index or label among the kept modes, the
next index a 422), /v1/cluster (mode ids, labels and probabilities over the kept modes), OIP v2 (h / h2 logits
shape [-1, 4]), `nemgan sample`, and the playground itself in a headless browser.

The model: a 3-step dry run with 6 modes, exported with the usage of modes 1 and 3 given below 1% (a model
trained that short has no real dead modes to find), so 4 modes remain."""

from __future__ import annotations

import io
import json
import signal

import numpy as np
import pytest
from PIL import Image

from svc_helpers import npy_bytes

NAME = "pruned"
USAGE = [0.3, 0.004, 0.25, 0.0, 0.2, 0.246]
LABELS = ["m0", "m1", "m2", "m3"]


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory):
    from training.config import TrainConfig
    from training.export import export_pruned
    from training.model import NemganModel
    from training.train import train

    run = tmp_path_factory.mktemp("pruned-run")
    train(TrainConfig(out_dir=str(run), dry_run=True, seed=0, n_modes=6, g_width=8, d_width=8, fc_hidden=32,
                      h2_hidden=32, priors="learned"), progress=False)
    return export_pruned(NemganModel.load(run / "best.pt"), tmp_path_factory.mktemp("pruned-export") / NAME, NAME,
                         usage=USAGE)


@pytest.fixture
def pclient(make_client, tmp_path, pruned_dir):
    from service.settings import Settings

    return make_client(Settings(var_dir=tmp_path / "var", model_dirs=[pruned_dir], intra_op_threads=1, max_n=64,
                                max_images=16, max_upload_bytes=200_000, worker_metrics_port=0))


def test_models_api_lists_the_live_modes(pclient, pruned_dir):
    detail = pclient.get(f"/v1/models/{NAME}").json()
    assert detail["n_modes"] == 4 and detail["mode_labels"] == LABELS
    assert len(detail["details"][0]["priors"]) == 4
    assert [m["n_modes"] for m in pclient.get("/v1/models").json()] == [4]
    man = json.loads((pruned_dir / "manifest.json").read_text())
    assert man["pruning"]["kept"] == [0, 2, 4, 5] and man["pruning"]["dropped"] == [1, 3]


def test_generate_among_the_kept_modes(pclient):
    body = pclient.post("/v1/generate", json={"n": 64, "seed": 1, "format": "json"}).json()
    assert set(body["modes"]) <= {0, 1, 2, 3} and set(body["mode_labels"]) <= set(LABELS)
    for mode, want in ((3, 3), ("m3", 3), ("2", 2), (0, 0)):
        r = pclient.post("/v1/generate", json={"n": 2, "seed": 1, "mode": mode, "format": "json"})
        assert r.status_code == 200, r.text
        assert r.json()["modes"] == [want] * 2 and r.json()["mode_labels"] == [LABELS[want]] * 2
    for bad in (4, 5, "4", "m4", -1):
        r = pclient.post("/v1/generate", json={"n": 1, "mode": bad, "format": "json"})
        assert r.status_code == 422, (bad, r.text)
    r = pclient.post("/v1/generate", json={"n": 1, "mode": 4, "format": "json"})
    assert "0..3" in r.text


def test_cluster_over_the_kept_modes(pclient):
    rng = np.random.default_rng(0)
    u8 = (rng.random((5, 1, 28, 28)) * 255).astype(np.uint8)
    r = pclient.post("/v1/cluster", content=npy_bytes(u8), headers={"content-type": "application/x-npy"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode_labels"] == LABELS
    for item in body["results"]:
        assert 0 <= item["mode"] < 4 and item["label"] == LABELS[item["mode"]]
        assert len(item["probabilities"]) == 4 and abs(sum(item["probabilities"]) - 1) < 1e-4


def test_oip_v2_logits_have_the_live_modes(pclient):
    for net in ("h", "h2"):
        meta = pclient.get(f"/v2/models/{NAME}-{net}").json()
        logits = [o for o in meta["outputs"] if o["name"] == "logits"]
        assert logits == [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}], meta
    r = pclient.post(f"/v2/models/{NAME}-h2/infer", json={"inputs": [
        {"name": "z", "shape": [3, 50], "datatype": "FP32", "data": [0.1] * 150}]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [3, 4]
    r = pclient.post(f"/v2/models/{NAME}-h/infer", json={"inputs": [
        {"name": "x", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 2 * 784}]})
    assert r.status_code == 200, r.text
    assert {o["name"]: o["shape"] for o in r.json()["outputs"]}["logits"] == [2, 4]


def test_playground_reads_the_modes_from_the_api(pclient):
    """The page's mode picker is built from /v1/models/{name}'s mode_labels (no mode count in the page)."""
    from pathlib import Path

    import service

    js = (Path(service.__file__).parent / "static" / "app.js").read_text()
    assert "d.mode_labels" in js and "res.mode_labels" in js
    assert pclient.get("/").status_code == 200


def test_nemgan_sample_pruned(pruned_dir, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(app, ["sample", str(pruned_dir), "--out", str(tmp_path / "g.png"), "--mode", "all",
                                   "--n", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["modes"] == [2, 2, 2, 2]
    assert Image.open(tmp_path / "g.png").size == (2 * 30 + 2, 4 * 30 + 2)  # one row per live mode
    res = CliRunner().invoke(app, ["sample", str(pruned_dir), "--out", str(tmp_path / "s.npz"), "--mode", "m3",
                                   "--n", "3", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "s.npz")["modes"].tolist() == [3, 3, 3]
    res = CliRunner().invoke(app, ["sample", str(pruned_dir), "--out", str(tmp_path / "x.npz"), "--mode", "4"])
    assert res.exit_code != 0 and "0..3" in res.output


@pytest.mark.slow
def test_playground_shows_only_live_modes(pruned_dir, tmp_path):
    """In a headless browser against a real server: the mode picker lists the 4 kept modes, picking m3 gives m3
    images, and a clustered upload shows 4 probability bars."""
    from test_playground_browser import CHROMIUM, _browser_or_skip, _drop_files
    from svc_helpers import Server, base_env

    _browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    srv = Server(base_env(tmp_path / "var", [pruned_dir]), tmp_path / "api.log")
    srv.wait_ready()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            try:
                page.goto(srv.url + "/")
                expect(page.locator("#model")).to_have_value(NAME)
                expect(page.locator("#gen-mode option")).to_have_count(5)
                assert page.locator("#gen-mode option").all_inner_texts() == ["from the priors", *LABELS]
                page.select_option("#gen-mode", label="m3")
                expect(page.locator("#gen-meta")).to_contain_text("mode m3")
                captions = page.locator("#gen-grid figcaption").all_inner_texts()
                assert captions and set(captions) == {"m3"}, captions
                b = io.BytesIO()
                Image.fromarray(np.full((28, 28), 128, np.uint8)).save(b, "PNG")
                _drop_files(page, "#drop", {"grey.png": b.getvalue()})
                results = page.locator("#cluster-results .result")
                expect(results).to_have_count(1)
                expect(results.nth(0).locator(".vbars .track")).to_have_count(4)
                assert results.nth(0).get_attribute("data-label") in LABELS
            finally:
                browser.close()
        assert not errors, errors
    finally:
        assert srv.stop() in (0, -signal.SIGTERM, None)
