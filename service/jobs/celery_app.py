"""The Celery app: Redis for broker + results when NEMGAN_REDIS_URL is set, otherwise an embedded broker
(kombu filesystem transport) and result store (SQLite via SQLAlchemy) under <var_dir>.

Celery done for long GPU jobs: acks late + reject on worker lost (a killed worker's job runs again),
prefetch 1, solo pool (CUDA does not survive fork), time limits, Redis visibility timeout > the longest
job. The filesystem transport removes a message when it is fetched, so it cannot redeliver after a
crash; the worker therefore requeues orphaned jobs from the job store when it starts
(`tasks.recover_orphans`), in both modes. Publishing is idempotent per job id, so a job delivered twice
publishes one version.
"""

from __future__ import annotations

from ..settings import Settings

TASK_NAME = "nemgan.learn_priors"


def broker_config(settings: Settings) -> dict:
    if settings.redis_url:
        opts = {"visibility_timeout": int(settings.visibility_timeout)}
        return {"broker_url": settings.redis_url, "result_backend": settings.redis_url,
                "broker_transport_options": opts, "result_backend_transport_options": opts}
    base = settings.var_dir / "broker"
    queue = base / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    (base / "processed").mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {"data_folder_in": str(queue), "data_folder_out": str(queue),
                                     "processed_folder": str(base / "processed"), "store_processed": False},
        "result_backend": f"db+sqlite:///{(settings.var_dir / 'celery-results.sqlite').resolve()}",
    }


def make_celery(settings: Settings | None = None):
    from celery import Celery

    settings = settings or Settings()
    app = Celery("nemgan")
    app.conf.update(
        **broker_config(settings),
        task_default_queue=settings.queue_name,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="solo",
        task_soft_time_limit=settings.job_time_limit_s,
        task_time_limit=settings.job_time_limit_s + 60,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_extended=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=bool(settings.redis_url),
        worker_send_task_events=False,
    )
    app.nemgan_settings = settings

    @app.task(name=TASK_NAME, bind=True)
    def learn_priors_task(self, job_id: str):
        from .tasks import run_learn_job

        def hook(frac: float, msg: str):
            try:
                self.update_state(state="PROGRESS", meta={"job_id": job_id, "progress": frac, "message": msg})
            except Exception:
                pass

        return run_learn_job(job_id, settings, progress_hook=hook)

    return app
