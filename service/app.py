"""The FastAPI app: `create_app(settings)`. ONNX sessions are loaded and warmed up in the lifespan, before
/v2/health/ready says ready; a background task polls the registry's active pointers and hot-swaps
versions; on shutdown the batchers drain before the sessions are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import FastAPI

from . import errors
from . import metrics as M
from .fastpath import FastPath
from .jobs.store import JobStore
from .jobs.submit import JobQueue
from .middleware import BodyLimitMiddleware, MetricsMiddleware
from .registry import Registry
from .routes import cluster, docs, generate, health, jobs, metrics, models, playground, v2
from .runtime import ModelPool
from .security import Front
from .settings import Settings

log = logging.getLogger("nemgan.service")

DESCRIPTION = """NEMGAN inference service: generate images by mode, cluster images, learn mode priors
from a few labels (Celery jobs), with a versioned model registry. Errors are `{"error": "..."}`."""


def seed_registry(registry: Registry, settings: Settings) -> None:
    for d in settings.model_dirs:
        try:
            registry.seed(d)
        except Exception as e:
            log.error("cannot seed %s into the registry: %s", d, e)


async def _poll(app: FastAPI) -> None:
    s: Settings = app.state.settings
    while True:
        await asyncio.sleep(s.poll_interval_s)
        try:
            changed = await app.state.pool.refresh()
            for name, version in changed:
                log.info("now serving %s/%s", name, version)
        except Exception as e:  # keep polling
            log.error("registry poll failed: %s", e)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    s: Settings = app.state.settings
    t0 = time.perf_counter()
    M.READY.set(0)
    registry = Registry(s.registry)
    await asyncio.to_thread(seed_registry, registry, s)
    pool = ModelPool(registry, s)
    app.state.registry, app.state.pool = registry, pool
    await pool.start()
    if not pool.active:
        log.warning("no model in the registry %s (seed one with NEMGAN_MODEL_DIRS)", s.registry)
    M.READY.set(1 if pool.active else 0)
    pool.ready = bool(pool.active)
    log.info("ready in %.2fs: %s", time.perf_counter() - t0, {n: r.version for n, r in pool.active.items()})
    poller = asyncio.create_task(_poll(app))
    app.state.job_queue.start_reaper()
    try:
        yield
    finally:
        app.state.job_queue.close()
        app.state.draining = True
        M.READY.set(0)
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await pool.close(timeout=s.graceful_timeout_s)
        M.JOBS.store = None


class NemganApp(FastAPI):
    """FastAPI, with the hot inference routes answered by `service.fastpath` before the router."""

    fast_routes: dict = {}
    front: Front | None = None  # origin check + security headers (service/security.py), around everything

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            front = self.front
            if front is not None:
                refused = front.refusal(scope)
                if refused is not None:
                    return await refused(scope, receive, send)
                send = front.wrap_send(scope, send)
            if scope["method"] == "POST":
                handler = self.fast_routes.get(scope["path"])
                if handler is not None:
                    return await handler(scope, receive, send)
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or Settings()
    # docs_url/redoc_url off: FastAPI's pages load their assets from a CDN; routes/docs.py serves them locally
    app = NemganApp(title="nemgan", version="1", description=DESCRIPTION, lifespan=lifespan, docs_url=None,
                    redoc_url=None)
    app.state.settings = s
    app.state.draining = False
    app.state.started_at = time.time()
    app.state.jobs = JobStore(s.jobs)
    app.state.jobs_seen = set()
    app.state.pool = None
    app.state.job_queue = JobQueue(s, app.state.jobs)
    M.JOBS.store = app.state.jobs
    M.WORKERS.jobs_root = s.jobs
    errors.install(app, s.retry_after_s)
    for r in (health, metrics, generate, cluster, models, jobs, v2):
        app.include_router(r.router)
    docs.install(app)
    playground.install(app)
    app.add_middleware(BodyLimitMiddleware, default_cap=s.max_upload_bytes,
                       caps={"/v1/priors/learn": s.max_job_upload_bytes, "/v1/models/": s.max_model_upload_bytes})
    app.add_middleware(MetricsMiddleware)
    if s.fast_path:
        app.fast_routes = FastPath(app, super(NemganApp, app).__call__).routes
    app.front = Front(s)
    return app
