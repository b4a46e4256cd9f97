"""Service settings (pydantic-settings, env prefix NEMGAN_). Every field has an embedded default so that
`nemgan serve` runs on a laptop with no configuration at all.

Lists (``NEMGAN_MODEL_DIRS``) accept a JSON list or a comma/colon separated string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.data import default_data_root

REPO = Path(__file__).resolve().parents[1]


def _default_model_dirs() -> list[Path]:
    models = REPO / "models"
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if (p / "manifest.json").is_file())


def _str_list(v, sep: str):
    """An environment string as a list: a JSON list, or items separated by `sep` (blanks dropped)."""
    if not isinstance(v, str):
        return v
    v = v.strip()
    if v.startswith("["):
        import json

        return json.loads(v)
    return [p for p in (s.strip() for s in v.split(sep)) if p]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEMGAN_", extra="ignore", protected_namespaces=())

    # ---------------------------------------------------------------- where things live
    var_dir: Path = Field(REPO / "var", description="Root for the embedded broker, result store and defaults below.")
    registry_dir: Path | None = Field(None, description="Model registry (name/version dirs). Default: <var_dir>/registry.")
    jobs_dir: Path | None = Field(None, description="Shared job directory (uploads, job state). Default: <var_dir>/jobs.")
    data_dir: Path = Field(default_factory=default_data_root, description="Data root for the data set presets "
                           "(core.data: $NEMGAN_DATA_DIR, else ../shared/data beside the repository).")
    model_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=_default_model_dirs,
        description="Model directories seeded into the registry at start-up when it lacks them.")
    default_model: str | None = Field(
        "mnist", description="Model used when a request names none (the shipped MNIST model; when the registry "
                             "has no such model, the first name in alphabetical order).")

    # ---------------------------------------------------------------- serving
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = Field(None, description="Bearer key for mutating endpoints; unset = auth off.")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="With auth off: origins (https://host[:port]) besides the service's own "
                                          "whose pages may send state-changing requests (comma list or JSON).")
    max_n: int = Field(1024, ge=1, description="Cap on images per /v1/generate request.")
    max_images: int = Field(256, ge=1, description="Cap on images per /v1/cluster request.")
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1, description="Cap on request bodies (413 above).")
    max_job_upload_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Cap on /v1/priors/learn bodies.")
    max_model_upload_bytes: int = Field(512 * 1024 * 1024, ge=1, description="Cap on a model archive uploaded to "
                                        "POST /v1/models/{name}/versions, and on what it unpacks to.")
    batching: bool = Field(True, description="Dynamic batching on/off.")
    fast_path: bool = Field(True, description="Serve /v1/cluster and /v1/generate by the pure-ASGI handlers "
                                              "(service/fastpath.py) instead of FastAPI's router.")
    max_batch_size: int = Field(256, ge=1, description="Largest merged batch (rows).")
    max_wait_ms: float = Field(2.0, ge=0, description="Longest a request waits for others to join its batch.")
    adaptive_wait: bool = Field(True, description="Wait max_wait_ms only while another batch is running (an idle "
                                                  "service flushes at once); false: always wait.")
    max_queue: int = Field(512, ge=1, description="Queued requests per model+network before 503.")
    retry_after_s: int = Field(1, ge=0)
    providers: Literal["auto", "cpu", "cuda"] = Field("auto", description="ONNX Runtime execution provider.")
    intra_op_threads: int = Field(0, ge=0, description="ORT intra-op threads; 0 = ORT default.")
    warmup: bool = True
    poll_interval_s: float = Field(2.0, gt=0, description="How often replicas poll the active pointer.")
    graceful_timeout_s: float = Field(30.0, ge=0, description="uvicorn graceful shutdown timeout.")

    # ---------------------------------------------------------------- jobs
    redis_url: str | None = Field(None, description="Redis for broker + results; unset = embedded broker.")
    job_time_limit_s: float = Field(3600.0, gt=0, description="A prior-learning job fails after this long.")
    visibility_timeout_s: float | None = Field(None, description="Redis visibility timeout (default: time limit + 10 min).")
    job_stale_after_s: float = Field(30.0, gt=0, description="A running job whose heartbeat (written every "
                                     "second while it runs) is older is requeued by the reaper, on any host.")
    max_queued_jobs: int = Field(32, ge=1, description="Jobs waiting for a worker (pending) before a submit gets "
                                 "429 + Retry-After.")
    max_job_unpacked_bytes: int = Field(64 * 1024 * 1024, ge=1, description="What one job's uploads may take once "
                                        "unpacked and stored (uint8 pixels), checked before anything is written.")
    job_lost_after_s: float = Field(120.0, gt=0, description="A queued job whose broker message is gone (Redis "
                                    "replaced by an empty instance) is sent again once it was queued this long ago.")
    worker_beat_s: float = Field(5.0, gt=0, description="How often a worker writes its presence into the job store; "
                                 "a worker is gone after 3 missed beats.")
    job_retention_s: float = Field(7 * 24 * 3600.0, gt=0, description="Finished jobs' folders (uploads, "
                                   "state) are deleted this long after they finish.")
    redis_timeout_s: float = Field(3.0, gt=0, description="Socket/connect timeout towards Redis: a job submit "
                                   "to a Redis that stops answering fails with 503 after about this long.")
    worker_metrics_host: str = Field("127.0.0.1", description="Address the worker's metrics server binds "
                                     "(0.0.0.0 in containers, like NEMGAN_HOST).")
    worker_metrics_port: int = Field(9808, ge=0)

    @field_validator("model_dirs", mode="before")
    @classmethod
    def _split(cls, v):  # paths: "a,b" or "a:b" (PATH-style) or a JSON list
        return _str_list(v, "," if isinstance(v, str) and "," in v else ":")

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, v):  # origins contain ":" themselves: "a,b" or a JSON list
        return _str_list(v, ",")

    @property
    def registry(self) -> Path:
        return self.registry_dir or self.var_dir / "registry"

    @property
    def jobs(self) -> Path:
        return self.jobs_dir or self.var_dir / "jobs"

    @property
    def visibility_timeout(self) -> float:
        return self.visibility_timeout_s or self.job_time_limit_s + 600.0
