"""End to end: a 2-mode model on imbalanced MNIST (3 vs 5 at 90:10), priors learned from a few dozen labels
by a real Celery worker (embedded broker), the new version goes live, and /v1/generate without a mode
follows the learned priors."""

from __future__ import annotations

import io
import time
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from svc_helpers import Server, Worker, base_env


@pytest.fixture(scope="module")
def imbalanced_model(tmp_path_factory, data_root):
    from training.config import TrainConfig
    from training.export import export_model
    from training.model import NemganModel
    from training.train import train

    run = tmp_path_factory.mktemp("mnist-2-90-10")
    cfg = TrainConfig(out_dir=str(run), dataset="mnist-2-90-10", data_root=str(data_root), steps=300, batch_size=32,
                      eval_every=300, ckpt_every=300, sample_every=10**6, log_every=100, val_samples=300,
                      g_width=16, d_width=16, fc_hidden=64, h2_hidden=64, latent_dim=20, threads=1, seed=0)
    train(cfg, progress=False)
    out = tmp_path_factory.mktemp("export") / "mnist2"
    export_model(NemganModel.load(run / "best.pt"), out, name="mnist2", version="1")
    return out


def _labeled_zip(data_root, labels: list[str], per_class: int = 20) -> bytes:
    from training.dataset import load_dataset

    test = load_dataset("mnist", split="test", data_root=data_root)
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for lab in labels:
            idx = np.flatnonzero(test.y == int(lab))[:per_class]
            for i in idx:
                im = io.BytesIO()
                Image.fromarray(test.x[i, 0]).save(im, "PNG")
                z.writestr(f"{lab}/{i}.png", im.getvalue())
    return b.getvalue()


@pytest.mark.slow
def test_learned_priors_drive_generation(tmp_path, imbalanced_model, data_root):
    from core.manifest import load_manifest

    labels = load_manifest(imbalanced_model).mode_labels
    assert labels == ["3", "5"]
    env = base_env(tmp_path / "var", [imbalanced_model], NEMGAN_POLL_INTERVAL_S="0.3", NEMGAN_DATA_DIR=data_root,
                   NEMGAN_MAX_N=2000)
    srv, wrk = Server(env, tmp_path / "api.log"), Worker(env, tmp_path / "worker.log")
    try:
        srv.wait_ready()
        r = httpx.post(f"{srv.url}/v1/priors/learn", timeout=30,
                       files={"labeled": ("labels.zip", _labeled_zip(data_root, labels), "application/zip")},
                       data={"method": "kl", "h_steps": "150", "alpha_steps": "500", "seed": "0"})
        assert r.status_code == 202, r.text
        loc = r.headers["location"]
        end, seen_progress = time.time() + 150, set()
        while time.time() < end:
            j = httpx.get(srv.url + loc, timeout=5).json()
            seen_progress.add(j["progress"])
            if j["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        assert j["state"] == "succeeded", (j, (tmp_path / "worker.log").read_text()[-3000:])
        priors = np.asarray(j["result"]["priors"])
        assert j["result"]["version"] == "2"
        # learned priors: closer to the true 0.9/0.1 than to uniform
        assert abs(priors[0] - 0.9) < abs(priors[0] - 0.5), priors
        for _ in range(50):
            g = httpx.post(f"{srv.url}/v1/generate", json={"n": 2000, "seed": 1, "format": "npz"}, timeout=30)
            assert g.status_code == 200, g.text
            if g.headers["x-nemgan-version"] == "2":
                break
            time.sleep(0.2)
        assert g.headers["x-nemgan-version"] == "2"
        modes = np.load(io.BytesIO(g.content))["modes"]
        freq = np.bincount(modes, minlength=2) / len(modes)
        assert np.abs(freq - priors).max() < 0.03, (freq, priors)
    finally:
        wrk.stop()
        srv.stop()
