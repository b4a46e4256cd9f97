"""The Celery app: Redis as the broker when NEMGAN_REDIS_URL is set, otherwise an embedded broker (kombu
filesystem transport) under <var_dir>/broker.

Celery only carries messages. Job state lives in the job store (service/jobs/store.py), so no Celery result
backend is configured and tasks keep no results.

Settings done for long GPU jobs: acks late + reject on worker lost, prefetch 1, solo pool (CUDA does not
survive fork). Redis socket and connect timeouts are bounded (NEMGAN_REDIS_TIMEOUT_S), so a Redis that stops
answering makes a submit fail instead of hanging. A killed worker's job is re-queued by the reaper
(service/jobs/reaper.py) once its heartbeat stops, on any host; the Redis visibility timeout is only a
fallback, and a redelivered message never runs a job twice (JobStore.start claims the job).

Time limits: Celery's soft/hard time limits need the prefork pool's timers and are NOT enforced by the solo
pool, so none are set. NEMGAN_JOB_TIME_LIMIT_S is enforced by the task itself (tasks.run_learn_job checks its
deadline before every training step and between phases, and fails the job).
"""

from __future__ import annotations

from ..settings import Settings

TASK_NAME = "nemgan.learn_priors"
QUEUE = "nemgan"  # the one Celery queue (separate deployments on one Redis use separate databases)


def broker_config(settings: Settings) -> dict:
    if settings.redis_url:
        t = float(settings.redis_timeout_s)
        return {"broker_url": settings.redis_url, "broker_connection_timeout": t,
                "broker_transport_options": {"visibility_timeout": int(settings.visibility_timeout),
                                             "socket_timeout": t, "socket_connect_timeout": t,
                                             "socket_keepalive": True, "health_check_interval": 10}}
    base = settings.var_dir / "broker"
    for sub in ("queue", "processed", "control"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    queue = str(base / "queue")
    return {
        "broker_url": "filesystem://",
        # control_folder: kombu's default is ./control, i.e. wherever the process was started
        "broker_transport_options": {"data_folder_in": queue, "data_folder_out": queue,
                                     "processed_folder": str(base / "processed"), "store_processed": False,
                                     "control_folder": str(base / "control")},
    }


def make_celery(settings: Settings | None = None):
    from celery import Celery
    from celery.exceptions import Ignore

    settings = settings or Settings()
    app = Celery("nemgan")
    app.conf.update(
        **broker_config(settings),
        result_backend=None,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="solo",
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=bool(settings.redis_url),
        worker_send_task_events=False,
    )
    app.nemgan_settings = settings

    @app.task(name=TASK_NAME, ignore_result=True)
    def learn_priors_task(job_id: str):
        from .tasks import run_learn_job

        if run_learn_job(job_id, settings) is None:
            # cancelled, failed (logged by the task) or running elsewhere: Celery must not log "succeeded"
            raise Ignore()

    return app


def send_job(app, settings: Settings, job_id: str) -> None:
    """Hand a job to the broker once (no publish retries: the timeouts above bound the wait)."""
    app.send_task(TASK_NAME, args=[job_id], task_id=job_id, queue=QUEUE, retry=False,
                  ignore_result=True)


_REDIS: dict[str, object] = {}


def _task_id(raw) -> str | None:
    import json

    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # kombu's unacked hash: [message, exchange, routing key]
            msg = msg[0]
        return (msg.get("headers") or {}).get("id") or (msg.get("properties") or {}).get("correlation_id")
    except (ValueError, TypeError, AttributeError, IndexError):
        return None


def broker_job_ids(app, settings: Settings) -> set[str] | None:
    """The job ids whose message the broker holds: waiting in the queue or delivered but not acknowledged.
    None when the broker cannot be asked (the reaper then assumes nothing is lost).

    Redis: kombu's queue lists (one per priority step) and its `unacked` hash. Embedded broker: the message
    files of the queue folder."""
    if settings.redis_url:
        import redis

        r = _REDIS.get(settings.redis_url)
        if r is None:
            t = float(settings.redis_timeout_s)
            r = _REDIS[settings.redis_url] = redis.Redis.from_url(settings.redis_url, socket_timeout=t,
                                                                  socket_connect_timeout=t)
        try:
            raws = []
            for key in [QUEUE] + [f"{QUEUE}\x06\x16{p}" for p in (3, 6, 9)]:
                raws += r.lrange(key, 0, -1)
            raws += r.hvals("unacked")
        except redis.RedisError:
            return None
        return {i for i in map(_task_id, raws) if i}
    from pathlib import Path

    folder = Path(broker_config(settings)["broker_transport_options"]["data_folder_in"])
    out = set()
    try:
        files = list(folder.glob(f"*.{QUEUE}.msg"))
    except OSError:
        return None
    for p in files:
        try:
            i = _task_id(p.read_bytes())
        except OSError:  # taken by a worker meanwhile
            continue
        if i:
            out.add(i)
    return out
