"""Worker process entry: `python -m service.jobs.worker` (what `nemgan worker` runs)."""

from __future__ import annotations

import logging

from ..settings import Settings

log = logging.getLogger("nemgan.worker")


def run_worker(settings: Settings | None = None, loglevel: str = "INFO") -> None:
    from celery.signals import worker_ready

    from .celery_app import make_celery
    from .tasks import recover_orphans

    settings = settings or Settings()
    app = make_celery(settings)

    @worker_ready.connect(weak=False)
    def _ready(sender=None, **kw):
        if settings.worker_metrics_port:
            from prometheus_client import start_http_server

            from .. import metrics  # noqa: F401  (registers the metric families)

            try:
                start_http_server(settings.worker_metrics_port)
            except OSError as e:
                log.error("worker metrics port %s: %s", settings.worker_metrics_port, e)
        try:
            recover_orphans(app, settings)
        except Exception as e:
            log.error("orphan recovery failed: %s", e)

    app.worker_main(["worker", "--pool", "solo", "--concurrency", "1", "--loglevel", loglevel,
                     "--queues", settings.queue_name, "--without-gossip", "--without-mingle",
                     "--hostname", "nemgan@%h"])


if __name__ == "__main__":
    run_worker()
