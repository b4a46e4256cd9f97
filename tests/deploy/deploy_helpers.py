"""Helpers for the offline deployment checks (tests/deploy): paths, YAML loading, PromQL name extraction.

Tools: `docker-compose` and `promtool` (Debian packages docker-compose and prometheus), the
`kubernetes-validate` Python package (dev extra) and `kubectl` (optional, for `kubectl kustomize`).
A test whose tool is missing skips and says which package brings it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml (dev extra) is needed to read the deployment files")

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILES = [REPO / "docker-compose.yml", REPO / "docker" / "docker-compose.cpu.yml"]
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cpu"]
K8S = REPO / "k8s"
PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "rules" / "nemgan.rules.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "nemgan.json"
ADAPTER = REPO / "deploy" / "prometheus-adapter" / "values.yaml"

# Environment variables the deployment files may set that are not service settings: read by
# docker/entrypoint.sh and docker/healthcheck.py, or by the CUDA runtime.
NON_SETTINGS_ENV = {"NEMGAN_ROLE", "NEMGAN_HEALTHCHECK_TIMEOUT"}


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` not installed (apt-get install -y {package})")
    return path


def nemgan_argv() -> list[str]:
    """The `nemgan` console script as pyproject declares it, run with this interpreter."""
    import sys
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["nemgan"].partition(":")
    return [sys.executable, "-c", f"import sys, {module} as m; sys.argv[0] = 'nemgan'; m.{attr}()"]


def load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def load_compose(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_resources() -> list[tuple[Path, dict]]:
    out = []
    for rel in kustomization()["resources"]:
        p = K8S / rel
        out.extend((p, d) for d in load_yaml_docs(p))
    return out


def k8s_by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in k8s_resources() if d["kind"] == kind}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every panel target and query variable of the dashboard."""
    d = dashboard()
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(d["panels"])
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
            # Grafana's label_values(metric, label) is not PromQL: the equivalent series query.
            q = re.sub(r"label_values\((.*),\s*(\w+)\)", r"group by (\2) (\1)", q)
            out.append((f"variable {v['name']}", q))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    out = []
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            out.append((r.get("alert") or r.get("record"), r["expr"]))
    return out


def recorded_names() -> set[str]:
    return {name for name, _ in rule_exprs() if name and ":" in name}


def adapter_rules() -> list[dict]:
    return yaml.safe_load(ADAPTER.read_text())["rules"]["custom"]


def adapter_exprs() -> list[tuple[str, str]]:
    out = []
    for r in adapter_rules():
        out.append((r["name"]["as"], r["seriesQuery"]))
        out.append((r["name"]["as"], r["metricsQuery"]))
    return out


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"(?<![A-Za-z0-9_:])nemgan_[A-Za-z0-9_]+")


def promql_metric_names(expr: str) -> set[str]:
    """nemgan_* series names an expression reads (string literals such as label values removed;
    Go-template placeholders of the adapter are not names)."""
    expr = re.sub(r"<<[^>]*>>", "", expr)
    return set(_NAME.findall(_STRING.sub('""', expr)))


def grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced so that promtool can parse it."""
    return (expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
            .replace("${model}", ".*").replace("$model", ".*"))


def adapter_to_promql(expr: str) -> str:
    """An adapter metricsQuery/seriesQuery with its Go-template placeholders filled as the adapter does."""
    return (expr.replace("<<.LabelMatchers>>", 'namespace="nemgan",pod=~"nemgan-api-.*"')
            .replace("<<.GroupBy>>", "pod").replace("<<.Series>>", _series_of(expr)))


def _series_of(expr: str) -> str:
    for r in adapter_rules():
        if r["metricsQuery"] == expr or r["seriesQuery"] == expr:
            return r["seriesQuery"].split("{", 1)[0]
    raise KeyError(expr)
