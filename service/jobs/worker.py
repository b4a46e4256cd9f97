"""Worker process entry: `python -m service.jobs.worker` (what `nemgan worker` runs)."""

from __future__ import annotations

import logging

from ..settings import Settings

log = logging.getLogger("nemgan.worker")


def run_worker(settings: Settings | None = None, loglevel: str = "INFO") -> None:
    from celery.signals import worker_ready, worker_shutdown

    from ..registry import Registry
    from .celery_app import QUEUE, broker_job_ids, make_celery, send_job
    from .reaper import Reaper
    from .store import JobStore

    settings = settings or Settings()
    app = make_celery(settings)
    from .workers import WorkerBeat

    reaper = Reaper(JobStore(settings.jobs), lambda job_id: send_job(app, settings, job_id),
                    settings.job_stale_after_s, settings.job_retention_s, Registry(settings.registry),
                    present=lambda: broker_job_ids(app, settings), lost_after=settings.job_lost_after_s)
    presence = WorkerBeat(settings.jobs, settings.worker_beat_s,
                          {"broker": "redis" if settings.redis_url else "embedded"})

    @worker_ready.connect(weak=False)
    def _ready(sender=None, **kw):
        if settings.worker_metrics_port:
            from prometheus_client import start_http_server

            from .. import metrics  # noqa: F401  (registers the metric families)

            try:
                start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
            except OSError as e:
                log.error("worker metrics on %s:%s: %s", settings.worker_metrics_host,
                          settings.worker_metrics_port, e)
        reaper.start()  # re-queues jobs of dead workers (any host), fails lost submits, applies retention
        presence.start()  # GET /v1/workers, nemgan_workers, "no worker is running" on queued jobs

    @worker_shutdown.connect(weak=False)
    def _shutdown(sender=None, **kw):
        reaper.stop()
        presence.stop()

    app.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--loglevel", loglevel,
                     "--queues", QUEUE, "--without-gossip", "--without-mingle",
                     "--hostname", "nemgan@%h"])


if __name__ == "__main__":
    run_worker()
