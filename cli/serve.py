"""`nemgan serve` and `nemgan worker`: the serving commands (the serving extra; no torch for `serve`).

Importing this module stays light: fastapi, uvicorn, celery and onnxruntime are imported inside the
functions. Options override the NEMGAN_* environment (see service/README.md for every setting).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import fail, need

# One option, one set of names, for both processes (uvicorn takes them lower-case, Celery upper-case).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (NEMGAN_HOST, default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (NEMGAN_PORT, default 8000).")] = None,
    model: Annotated[Optional[list[Path]], typer.Option(
        "--model", "-m", help="Model directory to seed into the registry (repeatable; default: models/*).")] = None,
    registry_dir: Annotated[Optional[Path], typer.Option(help="Registry directory (NEMGAN_REGISTRY_DIR).")] = None,
    no_batching: Annotated[bool, typer.Option("--no-batching", help="Turn dynamic batching off.")] = False,
    log_level: Annotated[str, typer.Option(help="Log level: debug, info, warning, error (as `nemgan worker --log-level`).")] = "info",
) -> None:
    """Serve the models over HTTP (FastAPI + ONNX Runtime); with no options, the shipped models/ on :8000."""
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    import logging

    try:
        import uvicorn

        from service.app import create_app
        from service.settings import Settings
    except ImportError as e:
        need("serving", e)

    overrides = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if model:
        from core.errors import ManifestError
        from core.manifest import load_manifest

        for p in model:  # refused now, rather than serving with no model
            try:
                load_manifest(p)
            except (ManifestError, ValueError, OSError) as e:
                fail(f"--model: {e}")
        overrides["model_dirs"] = [p.resolve() for p in model]
    if registry_dir is not None:
        overrides["registry_dir"] = registry_dir
    if no_batching:
        overrides["batching"] = False
    settings = Settings(**overrides)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from service import server

    log = logging.getLogger("nemgan.serve")
    for level, line in server.startup_notes(settings):
        log.log(level, line)
    # the guarded protocol: request heads over 64 KiB / 100 fields get 431 (service/server.py)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level,
                timeout_graceful_shutdown=int(settings.graceful_timeout_s) or None, access_log=False,
                **server.uvicorn_options())


def worker(
    log_level: Annotated[str, typer.Option("--log-level", "--loglevel", help="Log level: debug, info, warning, error (as `nemgan serve --log-level`).")] = "info",
    metrics_port: Annotated[Optional[int], typer.Option(
        help="Prometheus port (NEMGAN_WORKER_METRICS_PORT, default 9808; 0 = off).")] = None,
) -> None:
    """Run a Celery worker for prior-learning jobs (solo pool; Redis if NEMGAN_REDIS_URL, else embedded)."""
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    try:
        from service.jobs.worker import run_worker
    except ImportError as e:
        need("serving", e)
    try:  # jobs retrain h with torch: refuse to start without it, rather than fail at the first job
        import torch  # noqa: F401
    except ImportError as e:
        need("training", e)

    if metrics_port is not None:
        os.environ["NEMGAN_WORKER_METRICS_PORT"] = str(metrics_port)
    run_worker(loglevel=log_level.upper())
