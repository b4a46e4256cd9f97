"""Prometheus config and alert rules (promtool), the Grafana provisioning and dashboard structure, and that
every PromQL query (dashboard, alerts, adapter) parses."""

from __future__ import annotations

import json
import subprocess


from deploy_helpers import (
    ADAPTER, COMPOSE_FILES, DASHBOARD, GRAFANA, PROM, RULES, adapter_exprs, adapter_rules, adapter_to_promql,
    dashboard, dashboard_exprs, grafana_to_promql, k8s_by_kind, load_compose, need_tool, promql_metric_names,
    rule_exprs, yaml,
)


def _promtool(*args, cwd=PROM):
    exe = need_tool("promtool", "prometheus")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_config():
    r = _promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr, "the rule_files glob must find the alert rules"


def test_promtool_check_rules():
    r = _promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_rule_unit_tests():
    """Each alert fires on a synthetic incident and stays quiet on healthy traffic."""
    r = _promtool("test", "rules", "tests/nemgan.rules.test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_alerts_cover_the_issue():
    alerts = {name: expr for name, expr in rule_exprs()}
    text = RULES.read_text()
    for needed in ("NemganHighErrorRate", "NemganHighLatencyP99", "NemganQueueDepthHigh", "NemganJobsFailing",
                   "NemganNoReadyReplica"):
        assert needed in alerts
    assert "0.99" in text and "nemgan_queue_depth" in text and 'state="failed"' in text and "nemgan_ready" in text
    tested = (PROM / "tests" / "nemgan.rules.test.yml").read_text()
    for name in alerts:
        if name.startswith("Nemgan"):
            assert f"alertname: {name}" in tested, f"{name} has no promtool unit test"


def _parse_all(tmp_path, exprs):
    """promtool parses PromQL when it checks recording rules: one rule per query."""
    rules = {"groups": [{"name": "parse", "rules": [
        {"record": f"parse:q{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}
    f = tmp_path / "parse.rules.yml"
    f.write_text(yaml.safe_dump(rules))
    r = _promtool("check", "rules", str(f))
    assert r.returncode == 0, r.stdout + r.stderr + "\n" + "\n".join(f"q{i}: {t}: {e}" for i, (t, e) in enumerate(exprs))


def test_dashboard_queries_parse(tmp_path):
    _parse_all(tmp_path, [(t, grafana_to_promql(e)) for t, e in dashboard_exprs()])


def test_adapter_queries_parse(tmp_path):
    _parse_all(tmp_path, [(t, adapter_to_promql(e)) for t, e in adapter_exprs()])


def test_hpa_metrics_served_by_adapter():
    hpa = k8s_by_kind("HorizontalPodAutoscaler")["nemgan-api"]
    served = {r["name"]["as"] for r in adapter_rules()}
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert wanted and wanted <= served
    for r in adapter_rules():
        assert set(r["resources"]["overrides"]) == {"namespace", "pod"}
    assert ADAPTER.is_file()


# ---------------------------------------------------------------- Grafana

def test_grafana_provisioning():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    (prom,) = [d for d in ds["datasources"] if d["type"] == "prometheus"]
    assert prom["url"] == "http://prometheus:9090" and prom["uid"] == "prometheus" and prom["isDefault"]
    dp = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "nemgan.yml").read_text())
    (provider,) = dp["providers"]
    assert provider["type"] == "file"
    # The provider's path is where compose mounts deploy/grafana/dashboards.
    for path in COMPOSE_FILES:
        mounts = {v.split(":")[1]: v.split(":")[0] for v in load_compose(path)["services"]["grafana"]["volumes"]}
        assert mounts[provider["options"]["path"]].endswith("deploy/grafana/dashboards")
        assert mounts["/etc/grafana/provisioning"].endswith("deploy/grafana/provisioning")


def test_dashboard_structure():
    d = json.loads(DASHBOARD.read_text())  # valid JSON
    for key in ("uid", "title", "panels", "schemaVersion", "templating", "time"):
        assert key in d, key
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert 0 < len(d["uid"]) <= 40
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids, cells = set(), set()
    for p in d["panels"]:
        assert isinstance(p["id"], int) and p["id"] not in ids, f"duplicate panel id {p['id']}"
        ids.add(p["id"])
        assert p["type"] in {"row", "timeseries", "stat", "table", "gauge", "bargauge", "text", "heatmap"}
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0 and g["y"] >= 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["title"] and p["targets"], p
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}"
            for var in ("$model",):
                if var in t["expr"]:
                    assert var[1:] in variables


def test_dashboard_covers_the_issue():
    """Request rate and errors by route, latency p50/p90/p99, batch sizes, queue depth, images generated, jobs by
    state and duration, active model version, GPU memory."""
    exprs = [e for _, e in dashboard_exprs()]
    joined = "\n".join(exprs)
    names = set().union(*(promql_metric_names(e) for e in exprs))
    for metric in ("nemgan_requests_total", "nemgan_request_duration_seconds_bucket", "nemgan_batch_size_bucket",
                   "nemgan_queue_depth", "nemgan_images_generated_total", "nemgan_jobs",
                   "nemgan_job_duration_seconds_bucket", "nemgan_model_info", "nemgan_gpu_memory_used_bytes",
                   "nemgan_inference_duration_seconds_bucket", "nemgan_queue_wait_seconds_bucket",
                   "nemgan_rejected_requests_total", "nemgan_ready", "nemgan_worker_jobs_total"):
        assert metric in names, metric
    assert "by (route" in joined and 'status=~"5.."' in joined
    for q in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(nemgan_request_duration_seconds_bucket" in joined
    titles = {p["title"] for p in dashboard()["panels"]}
    assert {"Request rate by route", "Errors by route and status", "Latency p50 / p90 / p99", "Queue depth",
            "Images generated / s", "Jobs by state", "Active model version", "GPU memory used"} <= titles


def test_promql_name_extraction():
    assert promql_metric_names('sum(rate(nemgan_requests_total{route="nemgan_fake"}[5m])) / nemgan:rec') == {
        "nemgan_requests_total"}
    assert promql_metric_names("sum(<<.Series>>{<<.LabelMatchers>>})") == set()


def test_dashboard_json_matches_generator():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(GRAFANA / "dashboard.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
