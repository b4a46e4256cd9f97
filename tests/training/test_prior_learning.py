"""One prior-learning pipeline: `nemgan learn-priors` and the service's job publish the same manifest fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from core.manifest import load_manifest

STEPS = {"h_steps": 3, "alpha_steps": 20, "seed": 0}


@pytest.fixture
def labeled():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (20, 1, 28, 28), dtype=np.uint8), np.arange(20) % 10


def via_cli(tiny_model_dir, tmp_path, x, y):
    np.savez(tmp_path / "lab.npz", x=x, y=y)
    r = CliRunner().invoke(app, ["learn-priors", str(tiny_model_dir), "--labeled", str(tmp_path / "lab.npz"),
                                 "--out", str(tmp_path / "cli-model"), "--h-steps", "3", "--alpha-steps", "20"])
    assert r.exit_code == 0, r.output
    return load_manifest(tmp_path / "cli-model", verify=True)


def via_job(tiny_model_dir, tmp_path, x, y):
    pytest.importorskip("celery", reason="the serving extra is not installed")
    from service.jobs.store import JobStore
    from service.jobs.tasks import run_learn_job
    from service.registry import Registry
    from service.settings import Settings

    settings = Settings(var_dir=tmp_path / "var", model_dirs=[tiny_model_dir], worker_metrics_port=0)
    registry = Registry(settings.registry)
    name, version = registry.seed(tiny_model_dir)
    store = JobStore(settings.jobs)
    job_id = store.new_id()
    store.dir(job_id).mkdir(parents=True)
    np.savez(store.dir(job_id) / "labeled.npz", x=x, y=y)
    store.create(job_id, {"model": name, "version": version, "method": "kl", **STEPS})
    res = run_learn_job(job_id, settings)
    assert res is not None, store.get(job_id)
    return registry.manifest(name, res["version"])


def test_cli_and_job_publish_the_same_manifest_fields(tiny_model_dir, tmp_path, labeled):
    parent = load_manifest(tiny_model_dir)
    cli_m = via_cli(tiny_model_dir, tmp_path, *labeled)
    job_m = via_job(tiny_model_dir, tmp_path, *labeled)
    assert cli_m.version == job_m.version == "2"
    # the job's manifest adds only the registry's own bookkeeping ("job": id, parent version)
    assert set(job_m.data) - set(cli_m.data) <= {"job"} and set(cli_m.data) <= set(job_m.data)
    for m in (cli_m, job_m):
        assert m.data["metrics"]["prior_learning"]["labeled_acc"] == pytest.approx(
            cli_m.data["metrics"]["prior_learning"]["labeled_acc"])
        assert "priors_learning" not in m.data["metrics"]
        for key in ("supervision", "dataset", "mode_labels", "image"):
            assert m.data[key] == parent.data[key], key
        assert json.dumps({k: v for k, v in m.data["metrics"].items() if k != "prior_learning"}, sort_keys=True) \
            == json.dumps(parent.data["metrics"], sort_keys=True)
    # same inputs, same seed: the same learned priors on both paths
    np.testing.assert_allclose(cli_m.priors, job_m.priors, atol=1e-6)
