"""Generates deploy/grafana/dashboards/nemgan.json (the provisioned Grafana dashboard).

    python deploy/grafana/dashboard.py            # rewrite the JSON
    python deploy/grafana/dashboard.py --check    # exit 1 if the JSON is not what this script makes

Edit panels here, not in the JSON. tests/deploy checks that every nemgan_* metric a query reads exists in the
service's /metrics output, and that the committed JSON matches this script.
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "nemgan.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
panels = []
pid = [0]
y = [0]
x = [0]
rowh = [0]

def nid():
    pid[0] += 1
    return pid[0]

def row(title):
    if x[0] != 0:
        y[0] += rowh[0]; x[0] = 0
    panels.append({"type": "row", "title": title, "id": nid(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1; rowh[0] = 0

def place(w, h):
    if x[0] + w > 24:
        y[0] += rowh[0]; x[0] = 0; rowh[0] = 0
    g = {"h": h, "w": w, "x": x[0], "y": y[0]}
    x[0] += w; rowh[0] = max(rowh[0], h)
    return g

def tgt(expr, legend, ref, instant=False, fmt=None):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": not instant, "instant": instant}
    if fmt: t["format"] = fmt
    return t

def ts(title, targets, unit="short", w=12, h=8, desc="", stack=False, draw="line"):
    p = {"type": "timeseries", "title": title, "id": nid(), "datasource": DS, "description": desc,
         "gridPos": place(w, h),
         "targets": [tgt(e, l, chr(65 + i)) for i, (e, l) in enumerate(targets)],
         "fieldConfig": {"defaults": {"unit": unit, "custom": {"drawStyle": draw, "lineWidth": 1, "fillOpacity": 10 if not stack else 60,
                                                                 "showPoints": "never", "spanNulls": True,
                                                                 "stacking": {"mode": "normal" if stack else "none", "group": "A"}},
                                      "color": {"mode": "palette-classic"}}, "overrides": []},
         "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["lastNotNull", "max"]},
                     "tooltip": {"mode": "multi", "sort": "desc"}}}
    panels.append(p)

def stat(title, expr, legend="", unit="short", w=4, h=4, desc="", text="auto", thresholds=None, instant=True):
    th = thresholds or [{"color": "green", "value": None}]
    p = {"type": "stat", "title": title, "id": nid(), "datasource": DS, "description": desc, "gridPos": place(w, h),
         "targets": [tgt(expr, legend, "A", instant=instant)],
         "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": th}, "color": {"mode": "thresholds"}},
                         "overrides": []},
         "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "textMode": text,
                     "colorMode": "background" if thresholds else "value", "graphMode": "none", "justifyMode": "auto",
                     "orientation": "auto"}}
    panels.append(p)

def table(title, expr, w=12, h=8, desc="", cols=None):
    p = {"type": "table", "title": title, "id": nid(), "datasource": DS, "description": desc, "gridPos": place(w, h),
         "targets": [tgt(expr, "", "A", instant=True, fmt="table")],
         "fieldConfig": {"defaults": {}, "overrides": []},
         "options": {"showHeader": True, "cellHeight": "sm"},
         "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True},
                                                             "indexByName": {}, "renameByName": {}}}]}
    panels.append(p)

R = "$__rate_interval"
NOT_INFRA = 'route!~"/metrics|/healthz|/readyz|/v2/health/.*"'
M = 'model=~"$model"'
N = 'name=~"$model"'  # nemgan_model_info labels the model `name`

def q(h, sel, by, legend_by):
    return [(f'histogram_quantile({p}, sum by (le{"," if by else ""}{by}) (rate({h}_bucket{{{sel}}}[{R}])))',
             f"p{int(p*100)}" + (f" {legend_by}" if legend_by else "")) for p in (0.5, 0.9, 0.99)]

row("Overview")
stat("Ready API replicas", "sum(nemgan_ready)", desc="Replicas reporting nemgan_ready=1 (models loaded and warmed up).",
     thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}])
stat("Active model version", f'max by (name, version) (nemgan_model_info{{{N}}}) == 1', legend="{{name}} v{{version}}",
     w=6, text="name", desc="nemgan_model_info: the version each model serves now.")
stat("Requests / s", f"sum(rate(nemgan_requests_total{{{NOT_INFRA}}}[{R}]))", unit="reqps", desc="API requests, health and metrics routes excluded.")
stat("5xx ratio", f'sum(rate(nemgan_requests_total{{status=~"5.."}}[{R}])) / sum(rate(nemgan_requests_total[{R}]))',
     unit="percentunit", thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.01}, {"color": "red", "value": 0.05}])
stat("p99 latency", f"histogram_quantile(0.99, sum by (le) (rate(nemgan_request_duration_seconds_bucket{{{NOT_INFRA}}}[{R}])))",
     unit="s", w=3, thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.5}, {"color": "red", "value": 1}])
stat("Jobs running", 'sum(nemgan_jobs{state="running"})', w=3, desc="Prior-learning jobs running (job store).")

row("Requests")
ts("Request rate by route", [(f"sum by (route, method) (rate(nemgan_requests_total[{R}]))", "{{method}} {{route}}")], unit="reqps")
ts("Errors by route and status", [(f'sum by (route, status) (rate(nemgan_requests_total{{status=~"[45].."}}[{R}]))', "{{status}} {{route}}")],
   unit="reqps", desc="4xx and 5xx answers per route.")
ts("Latency p50 / p90 / p99", q("nemgan_request_duration_seconds", NOT_INFRA, "", ""), unit="s",
   desc="nemgan_request_duration_seconds over all API routes except health and metrics.")
ts("p99 latency by route", [(f"histogram_quantile(0.99, sum by (le, route) (rate(nemgan_request_duration_seconds_bucket{{{NOT_INFRA}}}[{R}])))", "{{route}}")], unit="s")
ts("Rejected requests by reason", [(f"sum by (reason) (rate(nemgan_rejected_requests_total[{R}]))", "{{reason}}")], unit="reqps",
   desc="Refused requests: queue_full (503), shutting_down, too_large (413), broker_unavailable.")
ts("Error ratio (5xx)", [(f'sum(rate(nemgan_requests_total{{status=~"5.."}}[{R}])) / sum(rate(nemgan_requests_total[{R}]))', "5xx / all")],
   unit="percentunit", desc="Alert NemganHighErrorRate fires above 5% for 5 minutes.")

row("Batching and inference")
ts("Inference time p50 / p90 / p99", q("nemgan_inference_duration_seconds", M, "model, network", "{{model}}/{{network}}"), unit="s",
   desc="ONNX Runtime call duration per merged batch.")
ts("Batch size p50 / p90 / p99 and mean",
   q("nemgan_batch_size", M, "model, network", "{{model}}/{{network}}")
   + [(f"sum by (model, network) (rate(nemgan_batch_size_sum{{{M}}}[{R}])) / sum by (model, network) (rate(nemgan_batch_size_count{{{M}}}[{R}]))",
       "mean {{model}}/{{network}}")], desc="Rows per ONNX Runtime call after dynamic batching.")
ts("Queue depth", [(f"sum by (model, network) (nemgan_queue_depth{{{M}}})", "{{model}}/{{network}}")],
   desc="Requests waiting in the dynamic batcher (all replicas). 503s start at NEMGAN_MAX_QUEUE per replica.")
ts("Queue wait p50 / p99", [e for e in q("nemgan_queue_wait_seconds", M, "model, network", "{{model}}/{{network}}") if not e[1].startswith("p90")],
   unit="s", desc="Time from submit to the start of the batch that serves it.")

row("Images")
ts("Images generated / s", [(f"sum by (model) (rate(nemgan_images_generated_total{{{M}}}[{R}]))", "{{model}}")], unit="short")
ts("Images clustered / s", [(f"sum by (model) (rate(nemgan_images_clustered_total{{{M}}}[{R}]))", "{{model}}")], unit="short")

row("Prior-learning jobs")
ts("Jobs by state", [("sum by (state) (nemgan_jobs)", "{{state}}")], w=8, desc="From the job store (pending, running, succeeded, failed, cancelled).")
ts("Job duration p50 / p90 / p99", [(f"histogram_quantile({p}, sum by (le) (rate(nemgan_job_duration_seconds_bucket[1h])))", f"p{int(p*100)}")
                                     for p in (0.5, 0.9, 0.99)], unit="s", w=8, desc="Observed when a job finishes (1 h window: jobs are rare).")
ts("Jobs finished by workers", [("sum by (state) (increase(nemgan_worker_jobs_total[1h]))", "{{state}}")], w=8, draw="bars", stack=True,
   desc="nemgan_worker_jobs_total from the workers' metrics endpoint, per hour.")

row("Models and GPU")
table("Model versions", "max by (name, version) (nemgan_model_info)", w=8, desc="Every loaded version; value 1 = active.")
ts("Active model version over time", [(f"max by (name, version) (nemgan_model_info{{{N}}}) == 1", "{{name}} v{{version}}")], w=8,
   desc="A new line appears when traffic moves to a new version.")
ts("GPU memory used", [("sum by (instance, device) (nemgan_gpu_memory_used_bytes)", "{{instance}} {{device}}")], unit="bytes", w=8,
   desc="Exported by GPU replicas only (empty on CPU deployments).")

dash = {
    "uid": "nemgan-overview", "title": "nemgan", "description": "nemgan API and worker: traffic, latency, batching, jobs, models, GPU.",
    "tags": ["nemgan"], "timezone": "browser", "editable": True, "graphTooltip": 1, "refresh": "10s",
    "schemaVersion": 39, "version": 1, "time": {"from": "now-1h", "to": "now"}, "timepicker": {},
    "fiscalYearStartMonth": 0, "liveNow": False, "links": [],
    "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
                              "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "current": {"text": "Prometheus", "value": "prometheus"},
         "hide": 0, "refresh": 1, "regex": "", "options": [], "includeAll": False, "multi": False},
        {"name": "model", "label": "Model", "type": "query", "datasource": DS,
         "definition": "label_values(nemgan_model_info, name)",
         "query": {"query": "label_values(nemgan_model_info, name)", "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
         "refresh": 2, "includeAll": True, "allValue": ".*", "multi": True, "current": {"text": ["All"], "value": ["$__all"]},
         "hide": 0, "regex": "", "sort": 1, "options": []},
    ]},
    "panels": panels,
}


def render() -> str:
    return json.dumps(dash, indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != render():
            sys.exit(f"{OUT} is out of date: run python {Path(__file__).name}")
        print(f"{OUT}: up to date ({len(panels)} panels)")
    else:
        OUT.write_text(render())
        print(f"wrote {OUT} ({len(panels)} panels)")
