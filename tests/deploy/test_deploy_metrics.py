"""The monitoring queries read only metrics the service really exports.

Starts `nemgan serve` (the command the images run) on a tiny exported model and `nemgan worker` (embedded
broker), sends a few requests, scrapes both /metrics endpoints, and checks every nemgan_* series that the
Grafana dashboard, the alert rules and the Prometheus-adapter rules query (histograms through their
_bucket/_sum/_count series, counters through _total), and the label names they filter or group by.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from deploy_helpers import (
    REPO, adapter_exprs, dashboard_exprs, nemgan_argv, promql_metric_names, recorded_names, rule_exprs,
)

# A service that does not import must fail these tests, never skip them.
import cli.serve  # noqa: E402,F401
import service.app  # noqa: E402,F401
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("_sum", "_count", "_created", ""), "info": ("_info",),
            "unknown": ("",), "untyped": ("",)}
NEMGAN = nemgan_argv()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _post(url: str, body: bytes, timeout: float = 30.0) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _wait(proc, url, log, deadline_s=180.0, want=200):
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        if proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if _get(url, timeout=2)[0] == want:
                return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} not answering {want} after {deadline_s}s:\n{log.read_text()[-4000:]}")


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def service_env(tiny_model_dir, tmp_path_factory):
    var = tmp_path_factory.mktemp("deploy-var")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMGAN_")}
    env.update(NEMGAN_VAR_DIR=str(var), NEMGAN_MODEL_DIRS=str(tiny_model_dir), NEMGAN_PROVIDERS="cpu",
               NEMGAN_DATA_DIR=str(var / "data"), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def api(service_env, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("deploy-api") / "api.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*NEMGAN, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=REPO,
                                env=service_env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(proc, f"{base}/v2/health/ready", log)
        yield base
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def worker_metrics(service_env, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("deploy-worker") / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*NEMGAN, "worker", "--metrics-port", str(port)], cwd=REPO, env=service_env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        _wait(proc, url, log)
        yield url
    finally:
        _stop(proc)


def _exposed(text: str) -> dict[str, set[str]]:
    """series name -> label names, for every series the exposition has or declares (# TYPE)."""
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(fam.type, ("",)):
            out.setdefault(fam.name + suffix, set())
        for s in fam.samples:
            out.setdefault(s.name, set()).update(k for k in s.labels if k not in ("le", "quantile"))
    return out


def _declared_labels() -> dict[str, set[str]]:
    """Label names from the service's metric objects, for labelled families with no sample yet."""
    from prometheus_client import REGISTRY

    import service.metrics  # noqa: F401

    out = {}
    for collector in list(getattr(REGISTRY, "_collector_to_names", {})):
        names = getattr(collector, "_labelnames", None)
        if names is not None and getattr(collector, "_name", "").startswith("nemgan_"):
            for series in REGISTRY._collector_to_names[collector]:
                out[series] = set(names)
    return out


@pytest.fixture(scope="module")
def scraped(api, worker_metrics):
    # Traffic, so that labelled families have samples: generate (batcher, inference, images), an error,
    # a 404, the health paths.
    for body in (b'{"n": 4, "seed": 1}', b'{"n": 2, "mode": 0, "format": "npz", "seed": 2}', b'{"n": 0}'):
        _post(f"{api}/v1/generate", body)
    for path in ("/v2/health/live", "/v2/health/ready", "/healthz", "/readyz", "/v1/models", "/nope"):
        _get(api + path)
    status, api_text = _get(f"{api}/metrics")
    assert status == 200
    status, worker_text = _get(worker_metrics)
    assert status == 200
    return {"api": api_text, "worker": worker_text}


QUERIES = (
    [("dashboard", t, e) for t, e in dashboard_exprs()]
    + [("alert rules", t, e) for t, e in rule_exprs()]
    + [("prometheus adapter", t, e) for t, e in adapter_exprs()]
)
_SELECTOR = re.compile(r"(nemgan_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def test_queries_found():
    names = set().union(*(promql_metric_names(e) for _, _, e in QUERIES))
    assert len(names) >= 14, names


def test_every_queried_metric_is_exported(scraped):
    exposed = _exposed(scraped["api"])
    for name, labels in _exposed(scraped["worker"]).items():
        exposed.setdefault(name, set()).update(labels)
    recorded = recorded_names()
    missing = {}
    for source, title, expr in QUERIES:
        for name in promql_metric_names(expr) - recorded:
            if name not in exposed:
                missing.setdefault(name, []).append(f"{source}: {title}")
    assert not missing, "queried but not in the service's /metrics output:\n" + "\n".join(
        f"  {n}  <- {', '.join(sorted(set(w)))}" for n, w in sorted(missing.items()))


def test_queried_labels_exist(scraped):
    """Label names used in selectors and by(...) clauses exist on the metric (e.g. model_info's `name`, not
    `model`)."""
    exposed = _exposed(scraped["api"])
    for name, labels in _exposed(scraped["worker"]).items():
        exposed.setdefault(name, set()).update(labels)
    declared = _declared_labels()
    infra = {"instance", "job", "namespace", "pod", "le", "component"}
    bad = []
    for source, title, expr in QUERIES:
        expr = re.sub(r"<<\.LabelMatchers>>,?", "", expr)
        for name, matchers in _SELECTOR.findall(expr):
            base = re.sub(r"_(bucket|sum|count|total)$", "", name)
            have = exposed.get(name, set()) | declared.get(name, set()) | declared.get(base, set())
            for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
                if label not in have | infra:
                    bad.append(f"{source}: {title}: {name} has no label {label!r} (has {sorted(have)})")
        # by (...) clauses of single-metric expressions
        names = promql_metric_names(expr)
        if len(names) == 1:
            (name,) = names
            base = re.sub(r"_(bucket|sum|count|total)$", "", name)
            have = exposed.get(name, set()) | declared.get(name, set()) | declared.get(base, set())
            for group in _GROUPING.findall(expr):
                for label in (g.strip() for g in group.split(",")):
                    if label and label not in have | infra:
                        bad.append(f"{source}: {title}: {name} has no label {label!r} (has {sorted(have)})")
    assert not bad, "\n".join(bad)


def test_worker_exports_its_metrics(scraped):
    worker = _exposed(scraped["worker"])
    for name in ("nemgan_worker_jobs_total", "nemgan_job_duration_seconds_bucket"):
        assert name in worker, name


def test_api_traffic_was_counted(scraped):
    api = scraped["api"]
    assert 'nemgan_requests_total{' in api and 'route="/v1/generate"' in api
    assert re.search(r"^nemgan_ready(\{\})? 1\.0$", api, re.M), "the API did not report ready"
    assert "nemgan_model_info{" in api


def test_container_healthcheck_script(api, worker_metrics):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMGAN_")}
    script = str(REPO / "docker" / "healthcheck.py")
    port = api.rsplit(":", 1)[1]
    r = subprocess.run([sys.executable, script], env={**env, "NEMGAN_PORT": port}, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    wport = worker_metrics.split(":")[2].split("/")[0]
    r = subprocess.run([sys.executable, script], env={**env, "NEMGAN_ROLE": "worker", "NEMGAN_WORKER_METRICS_PORT": wport},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
