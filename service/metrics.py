"""Prometheus metrics. The names are a contract (Grafana dashboards and alerts use them): do not rename.

Defined once per process on the default registry; the API process serves them on /metrics, the worker
through prometheus_client.start_http_server on NEMGAN_WORKER_METRICS_PORT.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

LAT = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
JOB = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
JOB_STATES = ("pending", "running", "succeeded", "failed", "cancelled")

REQUESTS = Counter("nemgan_requests", "HTTP requests", ["route", "method", "status"])
REQUEST_DURATION = Histogram("nemgan_request_duration_seconds", "HTTP request duration", ["route", "method"], buckets=LAT)
INFERENCE_DURATION = Histogram("nemgan_inference_duration_seconds", "ONNX Runtime call duration",
                               ["model", "network"], buckets=LAT)
BATCH_SIZE = Histogram("nemgan_batch_size", "Rows per ONNX call", ["model", "network"], buckets=BATCH)
QUEUE_DEPTH = Gauge("nemgan_queue_depth", "Requests waiting in the batcher", ["model", "network"])
QUEUE_WAIT = Histogram("nemgan_queue_wait_seconds", "Time from submit to batch start", ["model", "network"], buckets=LAT)
REJECTED = Counter("nemgan_rejected_requests", "Requests shed or refused", ["reason"])
IMAGES_GENERATED = Counter("nemgan_images_generated", "Images generated", ["model"])
IMAGES_CLUSTERED = Counter("nemgan_images_clustered", "Images clustered", ["model"])
JOB_DURATION = Histogram("nemgan_job_duration_seconds", "Prior-learning job duration (observed at finish)", buckets=JOB)
WORKER_JOBS = Counter("nemgan_worker_jobs", "Jobs finished by this worker", ["state"])
MODEL_INFO = Gauge("nemgan_model_info", "1 for the active version of each model", ["name", "version"])
PROBLEM_KINDS = ("fallback", "unavailable", "pointer")
MODEL_PROBLEM = Gauge("nemgan_model_problem", "1 when a model's active version is not what is served: fallback "
                      "(an older version is served), unavailable (nothing is), pointer (active.json unreadable)",
                      ["name", "kind"])
MODEL_LOAD_FAILURES = Counter("nemgan_model_load_failures", "Versions refused at load (digests, manifest, ONNX)",
                              ["name"])
READY = Gauge("nemgan_ready", "1 when models are loaded and warmed up")
GPU_MEMORY = Gauge("nemgan_gpu_memory_used_bytes", "GPU memory in use", ["device"])


class JobsCollector:
    """nemgan_jobs{state}: the job store's per-state counts, which every state change keeps (one small file
    read per scrape, shared by every API replica and worker; never a scan of the jobs)."""

    def __init__(self):
        self.store = None

    def collect(self):
        g = GaugeMetricFamily("nemgan_jobs", "Jobs by state (from the job store)", labels=["state"])
        counts = dict.fromkeys(JOB_STATES, 0)
        if self.store is not None:
            try:
                for state, n in self.store.counts().items():
                    counts[state] = counts.get(state, 0) + n
            except Exception:  # a scrape never fails because of the job store
                pass
        for state, n in counts.items():
            g.add_metric([state], n)
        yield g

    def describe(self):
        return []


JOBS = JobsCollector()
REGISTRY.register(JOBS)


class WorkersCollector:
    """nemgan_workers: workers whose presence beat is fresh (service/jobs/workers.py), read per scrape."""

    def __init__(self):
        self.jobs_root = None

    def collect(self):
        g = GaugeMetricFamily("nemgan_workers", "Job workers alive (presence beat within 3 intervals)")
        n = 0
        if self.jobs_root is not None:
            try:
                from .jobs.workers import list_workers

                n = sum(w["alive"] for w in list_workers(self.jobs_root))
            except Exception:
                pass
        g.add_metric([], n)
        yield g

    def describe(self):
        return []


WORKERS = WorkersCollector()
REGISTRY.register(WORKERS)


_ACTIVE: dict[str, str] = {}  # name -> the version whose nemgan_model_info series is exported


def set_active_model(name: str, version: str) -> None:
    """One nemgan_model_info series per model name: the old version's is removed (by our own record of it,
    not prometheus-client's private `_metrics`)."""
    old = _ACTIVE.get(name)
    if old is not None and old != version:
        MODEL_INFO.remove(name, old)
    _ACTIVE[name] = version
    MODEL_INFO.labels(name, version).set(1)


_GPU: bool | None = None


def update_gpu_memory_if_present() -> None:
    """nemgan_gpu_memory_used_bytes, only when a GPU is present (nvidia-smi on PATH)."""
    global _GPU
    if _GPU is None:
        import shutil

        _GPU = shutil.which("nvidia-smi") is not None
    if not _GPU:
        return
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=2)
        for line in out.stdout.strip().splitlines():
            idx, used = (s.strip() for s in line.split(","))
            GPU_MEMORY.labels(idx).set(float(used) * 1024 * 1024)
    except Exception:
        pass
