"""docker-compose stacks: `docker-compose config` accepts them; GPU, volumes, health checks, restarts;
the CPU stack stays in step with the GPU one; Prometheus scrapes what compose runs."""

from __future__ import annotations

import os
import subprocess

import pytest

from deploy_helpers import COMPOSE_FILES, NON_SETTINGS_ENV, PROM, REPO, load_compose, need_tool, yaml

GPU_FILE, CPU_FILE = COMPOSE_FILES
SERVICES = {"api", "worker", "redis", "prometheus", "grafana"}
ENV = {**os.environ, "NEMGAN_API_KEY": "test-key"}


def _compose_config(path, env):
    exe = need_tool("docker-compose", "docker-compose")
    return subprocess.run([exe, "-f", str(path), "config"], cwd=path.parent, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_docker_compose_config_accepts(path):
    r = _compose_config(path, ENV)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert SERVICES <= set(cfg["services"])
    # The resolved build context is the repository root (where .dockerignore lives).
    for name in ("api", "worker"):
        assert os.path.realpath(cfg["services"][name]["build"]["context"]) == os.path.realpath(REPO)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_api_key_is_required(path):
    env = {k: v for k, v in ENV.items() if k != "NEMGAN_API_KEY"}
    r = _compose_config(path, env)
    assert r.returncode != 0 and "NEMGAN_API_KEY" in (r.stderr + r.stdout)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_services_restart_and_healthchecks(path):
    services = load_compose(path)["services"]
    assert SERVICES <= set(services)
    for name, svc in services.items():
        assert svc.get("restart") in ("unless-stopped", "always"), name
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert "/v2/health/live" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_gpu_reservations():
    services = load_compose(GPU_FILE)["services"]
    for name in ("api", "worker"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d.get("count", 0) >= 1
                   for d in devices), name
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
    cpu = load_compose(CPU_FILE)["services"]
    for name in ("api", "worker"):
        assert "deploy" not in cpu[name]
        assert cpu[name]["build"]["dockerfile"] == "docker/Dockerfile.cpu"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_shared_registry_volume(path):
    cfg = load_compose(path)
    services = cfg["services"]

    def mounts(name):
        return {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}

    api, worker = mounts("api"), mounts("worker")
    env = services["api"]["environment"]
    state = "/var/lib/nemgan"
    assert api[state] == worker[state] and api[state] in cfg["volumes"], "api and worker must share one named volume"
    for key in ("NEMGAN_REGISTRY_DIR", "NEMGAN_JOBS_DIR"):
        assert env[key].startswith(state + "/") and services["worker"]["environment"][key] == env[key]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_bind_mounts_exist(path):
    """docker-compose config does not check bind-mount sources: the monitoring config must be in the repo."""
    for name, svc in load_compose(path)["services"].items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith(".") and not src.startswith("${"):
                assert (path.parent / src).exists(), f"{name}: {src} does not exist"


def test_container_env_are_settings():
    """Every NEMGAN_* variable given to a container is a service setting (typos fail here)."""
    from service import settings  # a service that does not import fails here, never skips
    fields = {f"NEMGAN_{k.upper()}" for k in settings.Settings.model_fields}
    for path in COMPOSE_FILES:
        for name, svc in load_compose(path)["services"].items():
            for key in svc.get("environment", {}) or {}:
                if key.startswith("NEMGAN_"):
                    assert key in fields | NON_SETTINGS_ENV, f"{path.name}:{name}: {key} is not a setting"


def test_cpu_stack_in_step_with_gpu_stack():
    gpu, cpu = load_compose(GPU_FILE), load_compose(CPU_FILE)
    assert set(gpu["services"]) == set(cpu["services"])
    assert set(gpu["volumes"]) == set(cpu["volumes"])
    for name in gpu["services"]:
        g, c = dict(gpu["services"][name]), dict(cpu["services"][name])
        for key in ("deploy", "build", "image", "volumes"):
            g.pop(key, None), c.pop(key, None)
        g_env, c_env = g.pop("environment", {}) or {}, c.pop("environment", {}) or {}
        assert set(g_env) == set(c_env), name
        assert g == c, f"{name} differs between the GPU and CPU stacks"
        # Paths in the CPU file are relative to docker/.
        gv = [v.replace("./", "../", 1) if v.startswith("./") else v.replace("-./", "-../")
              for v in gpu["services"][name].get("volumes", [])]
        cv = cpu["services"][name].get("volumes", [])
        assert gv == cv, name


def test_prometheus_scrapes_compose_services():
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    services = load_compose(GPU_FILE)["services"]
    api_port = services["api"]["environment"]["NEMGAN_PORT"]
    worker_port = services["api"]["environment"]["NEMGAN_WORKER_METRICS_PORT"]
    assert jobs["nemgan-api"]["static_configs"][0]["targets"] == [f"api:{api_port}"]
    assert jobs["nemgan-worker"]["static_configs"][0]["targets"] == [f"worker:{worker_port}"]
    assert jobs["nemgan-api"].get("metrics_path", "/metrics") == "/metrics"
    # Health checks of api and worker probe the same ports.
    assert f":{api_port}/v2/health/live" in " ".join(services["api"]["healthcheck"]["test"])
    assert f":{worker_port}/metrics" in " ".join(services["worker"]["healthcheck"]["test"])
