"""Kubernetes manifests: every file validates against the bundled Kubernetes schemas (kubernetes-validate,
offline), the kustomization lists every file, `kubectl kustomize` builds it (when installed), and the
objects fit together (selectors, probes, GPU limits, graceful drain, HPA, PDB, config)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from deploy_helpers import K8S, NON_SETTINGS_ENV, k8s_by_kind, k8s_resources, kustomization, load_yaml_docs, yaml

# Oldest and newest Kubernetes minor versions the manifests are checked against.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
HEALTH = {"/v2/health/live", "/v2/health/ready", "/healthz", "/readyz"}


def _kv():
    return pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (dev extra)")


def test_kustomization_lists_every_file():
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.y*ml")} - {"kustomization.yaml"}
    assert listed == on_disk, f"not listed: {on_disk - listed}; missing: {listed - on_disk}"
    # k8s/training (the torchrun Job, applied on its own) is checked by test_deploy_k8s_training.py.
    assert [p.name for p in K8S.glob("*/")] == ["training"], "k8s/ has sub-directories the checks do not cover"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("rel", kustomization()["resources"])
def test_manifest_validates(rel, version):
    kv = _kv()
    docs = load_yaml_docs(K8S / rel)
    assert docs, rel
    for doc in docs:
        try:
            kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError as e:
            pytest.fail(f"{rel}: no schema for {doc.get('apiVersion')}/{doc.get('kind')} in {version}: {e}")
        except kv.ValidationError as e:
            pytest.fail(f"{rel}: {doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {e}")


def test_validator_rejects_a_broken_manifest():
    """The check above is not vacuous."""
    kv = _kv()
    (dep,) = [d for d in load_yaml_docs(K8S / "api-deployment.yaml")]
    bad = yaml.safe_load(yaml.safe_dump(dep))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"not": "a port"}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSIONS[-1], strict=True)
    bad = yaml.safe_load(yaml.safe_dump(dep))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_kubectl_kustomize_builds():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (optional: the per-file checks above cover the resources)")
    r = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 and "unknown command" in r.stderr:
        pytest.skip(f"this kubectl has no kustomize: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert len(docs) == len(k8s_resources())
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "nemgan", d["metadata"]["name"]
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert ":" in c["image"], f"{c['name']}: image without tag after kustomize"
    kv = pytest.importorskip("kubernetes_validate")
    for d in docs:
        kv.validate(d, K8S_VERSIONS[-1], strict=True)


def _container(deploy_name):
    (c,) = k8s_by_kind("Deployment")[deploy_name]["spec"]["template"]["spec"]["containers"]
    return c


def test_selectors_match():
    deployments = k8s_by_kind("Deployment")
    for name, dep in deployments.items():
        sel = dep["spec"]["selector"]["matchLabels"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= labels.items(), name
    for name, svc in k8s_by_kind("Service").items():
        matched = [d for d in deployments.values()
                   if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, f"Service {name} selects {len(matched)} Deployments"
        ports = {p["name"] for c in matched[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"Service {name}: no container port {p['targetPort']}"
    (pdb,) = k8s_by_kind("PodDisruptionBudget").values()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= \
        deployments["nemgan-api"]["spec"]["template"]["metadata"]["labels"].items()


def test_api_deployment():
    dep = k8s_by_kind("Deployment")["nemgan-api"]
    pod = dep["spec"]["template"]["spec"]
    c = _container("nemgan-api")
    assert c["args"] == ["api"]
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    for probe, path in (("startupProbe", "/v2/health/live"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        assert c[probe]["httpGet"]["path"] == path, probe
        assert c[probe]["httpGet"]["port"] in ("http", 8000)
    # In-flight requests finish: preStop (endpoints removed) + uvicorn's graceful drain fit in the grace period.
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    config = k8s_by_kind("ConfigMap")["nemgan-config"]["data"]
    drain = float(config["NEMGAN_GRACEFUL_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain + 5
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == "8000" and ann["prometheus.io/path"] == "/metrics"


def test_worker_deployment_one_job_per_gpu():
    dep = k8s_by_kind("Deployment")["nemgan-worker"]
    c = _container("nemgan-worker")
    assert c["args"] == ["worker"]
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a rollout must not need a spare GPU"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NEMGAN_ROLE"] == "worker"
    port = int(k8s_by_kind("ConfigMap")["nemgan-config"]["data"]["NEMGAN_WORKER_METRICS_PORT"])
    assert {p["containerPort"] for p in c["ports"]} == {port}
    assert c["livenessProbe"]["httpGet"]["path"] == "/metrics"


def test_shared_registry_volume_and_config():
    pvcs = k8s_by_kind("PersistentVolumeClaim")
    assert "ReadWriteMany" in pvcs["nemgan-state"]["spec"]["accessModes"]
    config = k8s_by_kind("ConfigMap")["nemgan-config"]["data"]
    secrets = k8s_by_kind("Secret")
    for name in ("nemgan-api", "nemgan-worker"):
        pod = k8s_by_kind("Deployment")[name]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        vols = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert vols[mounts["/var/lib/nemgan"]]["persistentVolumeClaim"]["claimName"] == "nemgan-state"
        assert c["envFrom"][0]["configMapRef"]["name"] == "nemgan-config"
        (key,) = [e for e in c["env"] if e["name"] == "NEMGAN_API_KEY"]
        ref = key["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]]["stringData"]
        for claim in (v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v):
            assert claim in pvcs
    for key in ("NEMGAN_REGISTRY_DIR", "NEMGAN_JOBS_DIR"):
        assert config[key].startswith("/var/lib/nemgan/")
    redis_svc = k8s_by_kind("Service")["nemgan-redis"]
    assert config["NEMGAN_REDIS_URL"] == f"redis://nemgan-redis:{redis_svc['spec']['ports'][0]['port']}/0"


def test_k8s_env_are_settings():
    from service import settings  # a service that does not import fails here, never skips
    fields = {f"NEMGAN_{k.upper()}" for k in settings.Settings.model_fields}
    keys = set(k8s_by_kind("ConfigMap")["nemgan-config"]["data"])
    for dep in k8s_by_kind("Deployment").values():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            keys |= {e["name"] for e in c.get("env", [])}
    unknown = {k for k in keys if k.startswith("NEMGAN_")} - fields - NON_SETTINGS_ENV
    assert not unknown, f"not service settings: {sorted(unknown)}"


def test_hpa_and_pdb():
    hpa = k8s_by_kind("HorizontalPodAutoscaler")["nemgan-api"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "nemgan-api"}
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Pods"}
    (pdb,) = k8s_by_kind("PodDisruptionBudget").values()
    # The PDB must leave room to evict: the HPA floor is above minAvailable.
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    assert k8s_by_kind("Deployment")["nemgan-api"]["spec"]["replicas"] >= hpa["spec"]["minReplicas"]
