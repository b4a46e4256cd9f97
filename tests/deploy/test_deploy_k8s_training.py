"""k8s/training: the multi-node torchrun recipe, validated offline.

The Job, its headless Service and the data PVC validate against the bundled Kubernetes schemas
(kubernetes-validate, strict). The PyTorchJob is a custom resource with no schema there: its structure is
checked against the fields the Kubeflow training operator documents for kubeflow.org/v1 (PyTorchJobSpec,
ReplicaSpec, RunPolicy in pkg/apis/kubeflow.org/v1), and its pod template, a core PodTemplateSpec, is
validated strictly. Then the pieces must fit: torchrun's node count and rendezvous address match the Job
and Service, GPUs match processes, and the options after `-m cli.train_ddp` are `nemgan train` options.
"""

from __future__ import annotations

import shlex

import pytest

from deploy_helpers import K8S, load_yaml_docs, yaml

TRAIN = K8S / "training"
K8S_VERSIONS = ["1.29.0", "1.37.0"]

# kubeflow.org/v1 PyTorchJob, as the training operator defines it.
PYTORCHJOB_SPEC = {"runPolicy", "elasticPolicy", "pytorchReplicaSpecs", "nprocPerNode"}
REPLICA_TYPES = {"Master", "Worker"}
REPLICA_SPEC = {"replicas", "template", "restartPolicy"}
RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}
RUN_POLICY = {"cleanPodPolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit",
              "schedulingPolicy", "suspend", "managedBy"}
CLEAN_POD_POLICIES = {"All", "Running", "None"}


def _kv():
    return pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (dev extra)")


def kustomization() -> dict:
    return yaml.safe_load((TRAIN / "kustomization.yaml").read_text())


def by_kind(kind: str) -> dict:
    out = {}
    for rel in kustomization()["resources"]:
        for d in load_yaml_docs(TRAIN / rel):
            if d["kind"] == kind:
                out[d["metadata"]["name"]] = d
    return out


def pytorchjob() -> dict:
    (doc,) = load_yaml_docs(TRAIN / "pytorchjob.yaml")
    return doc


def pytorchjob_errors(doc: dict, version: str) -> list[str]:
    """Structural check of a PyTorchJob against the documented fields; [] when valid."""
    errs = []
    if doc.get("apiVersion") != "kubeflow.org/v1" or doc.get("kind") != "PyTorchJob":
        errs.append("apiVersion/kind must be kubeflow.org/v1 PyTorchJob")
    if not doc.get("metadata", {}).get("name"):
        errs.append("metadata.name missing")
    spec = doc.get("spec", {})
    errs += [f"spec.{k}: not a PyTorchJobSpec field" for k in set(spec) - PYTORCHJOB_SPEC]
    npn = spec.get("nprocPerNode")
    if npn is not None and not (isinstance(npn, str) and (npn in ("auto", "cpu", "gpu") or npn.isdigit())):
        errs.append("spec.nprocPerNode must be a string: auto, cpu, gpu or an integer")
    run = spec.get("runPolicy", {})
    errs += [f"spec.runPolicy.{k}: not a RunPolicy field" for k in set(run) - RUN_POLICY]
    if run.get("cleanPodPolicy", "None") not in CLEAN_POD_POLICIES:
        errs.append(f"spec.runPolicy.cleanPodPolicy must be one of {sorted(CLEAN_POD_POLICIES)}")
    replicas = spec.get("pytorchReplicaSpecs") or {}
    if "Master" not in replicas:
        errs.append("spec.pytorchReplicaSpecs.Master missing")
    for rtype, rs in replicas.items():
        where = f"spec.pytorchReplicaSpecs.{rtype}"
        if rtype not in REPLICA_TYPES:
            errs.append(f"{where}: replica type must be one of {sorted(REPLICA_TYPES)}")
            continue
        errs += [f"{where}.{k}: not a ReplicaSpec field" for k in set(rs) - REPLICA_SPEC]
        if not isinstance(rs.get("replicas"), int) or rs["replicas"] < (1 if rtype == "Master" else 0):
            errs.append(f"{where}.replicas must be an integer (Master: exactly 1)")
        if rtype == "Master" and rs.get("replicas") != 1:
            errs.append(f"{where}.replicas must be 1")
        if rs.get("restartPolicy", "OnFailure") not in RESTART_POLICIES:
            errs.append(f"{where}.restartPolicy must be one of {sorted(RESTART_POLICIES)}")
        template = rs.get("template") or {}
        names = [c.get("name") for c in template.get("spec", {}).get("containers", [])]
        if "pytorch" not in names:
            errs.append(f"{where}: the operator configures the container named 'pytorch'; got {names}")
        kv = _kv()
        try:  # the pod template is a core PodTemplateSpec: validate it as a PodTemplate object
            kv.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template},
                        version, strict=True)
        except kv.ValidationError as e:
            errs.append(f"{where}.template: {e}")
    return errs


def test_kustomization_lists_every_file():
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in TRAIN.glob("*.y*ml")} - {"kustomization.yaml", "pytorchjob.yaml"}
    assert listed == on_disk, f"not listed: {on_disk - listed}; missing: {listed - on_disk}"
    assert (TRAIN / "pytorchjob.yaml").is_file()
    assert not list(TRAIN.glob("*/"))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate(version):
    kv = _kv()
    for rel in kustomization()["resources"]:
        for doc in load_yaml_docs(TRAIN / rel):
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{rel}: {doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {e}")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pytorchjob_structure(version):
    assert pytorchjob_errors(pytorchjob(), version) == []


def test_pytorchjob_check_is_not_vacuous():
    good = pytorchjob()
    for mutate in (lambda d: d["spec"].__setitem__("pytorchReplicasSpecs", {}),
                   lambda d: d["spec"]["pytorchReplicaSpecs"]["Master"].__setitem__("restartPolicy", "Sometimes"),
                   lambda d: d["spec"]["pytorchReplicaSpecs"].__setitem__("Chief", d["spec"]["pytorchReplicaSpecs"]["Worker"]),
                   lambda d: d["spec"].__setitem__("nprocPerNode", 1),
                   lambda d: d["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].__setitem__("name", "train"),
                   lambda d: d["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].__setitem__("resourcez", {})):
        bad = yaml.safe_load(yaml.safe_dump(good))
        mutate(bad)
        assert pytorchjob_errors(bad, K8S_VERSIONS[-1]), "a broken PyTorchJob passed the check"


def torchrun_argv(container: dict) -> list[str]:
    args = container["args"]
    assert args[:2] == ["sh", "-c"] and args[2].startswith("exec torchrun ")
    return shlex.split(args[2])[2:]


def torchrun_opts(argv: list[str]) -> tuple[dict, list[str]]:
    """torchrun's --key=value options and the arguments after `-m cli.train_ddp`."""
    i = argv.index("-m")
    assert argv[i + 1] == "cli.train_ddp"
    opts = dict(a[2:].split("=", 1) for a in argv[:i])
    return opts, argv[i + 2:]


def check_train_options(argv: list[str]) -> None:
    """The options given to cli.train_ddp are options of `nemgan train`, and the preset exists."""
    import typer

    from cli import app

    cmd = typer.main.get_command(app).commands["train"]
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    given = [a for a in argv if a.startswith("--")]
    assert set(given) <= known, f"not nemgan train options: {set(given) - known}"
    if "--preset" in argv:
        from training import config  # our own module: an ImportError here is a failure, never a skip

        assert argv[argv.index("--preset") + 1] in config.PRESETS


def test_job_fits_its_service_and_torchrun():
    (job,) = by_kind("Job").values()
    (svc,) = by_kind("Service").values()
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert pod["subdomain"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    (c,) = pod["containers"]
    opts, train_args = torchrun_opts(torchrun_argv(c))
    assert int(opts["nnodes"]) == spec["completions"]
    assert opts["node_rank"] == "$JOB_COMPLETION_INDEX"
    assert opts["master_addr"] == f"{job['metadata']['name']}-0.{svc['metadata']['name']}"  # pod 0's DNS name
    (port,) = svc["spec"]["ports"]
    assert int(opts["master_port"]) == port["port"]
    assert port["targetPort"] in {p["name"] for p in c["ports"]}
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == int(opts["nproc_per_node"])
    assert "--resume" in train_args, "a restarted pod must continue from last.pt"
    check_train_options(train_args)


def test_pytorchjob_runs_the_same_training():
    doc = pytorchjob()
    (job,) = by_kind("Job").values()
    _, job_args = torchrun_opts(torchrun_argv(job["spec"]["template"]["spec"]["containers"][0]))
    for rtype, rs in doc["spec"]["pytorchReplicaSpecs"].items():
        (c,) = rs["template"]["spec"]["containers"]
        opts, args = torchrun_opts(torchrun_argv(c))
        assert args == job_args, rtype
        # the operator's variables: PET_* (training-operator >= 1.7) or WORLD_SIZE/RANK (nodes, node rank)
        assert opts["master_addr"] == "$MASTER_ADDR" and opts["master_port"] == "$MASTER_PORT"
        assert opts["nnodes"] == "${PET_NNODES:-$WORLD_SIZE}" and opts["node_rank"] == "${PET_NODE_RANK:-$RANK}"
        assert {p["name"] for p in c["ports"]} == {"pytorchjob-port"}
        assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == int(doc["spec"]["nprocPerNode"])


def test_volumes_exist():
    """The run folder is the shared nemgan-state volume of k8s/ (every node reads last.pt on resume)."""
    main_pvcs = {d["metadata"]["name"]: d for d in load_yaml_docs(K8S / "registry-pvc.yaml")
                 if d["kind"] == "PersistentVolumeClaim"}
    pvcs = {**main_pvcs, **by_kind("PersistentVolumeClaim")}
    (job,) = by_kind("Job").values()
    for pod in (job["spec"]["template"]["spec"], pytorchjob()["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        for claim in claims.values():
            assert claim in pvcs and "ReadWriteMany" in pvcs[claim]["spec"]["accessModes"], claim
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert claims[mounts["/var/lib/nemgan"]] == "nemgan-state"
