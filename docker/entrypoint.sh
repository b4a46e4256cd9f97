#!/bin/sh
# nemgan container entrypoint: one image, two roles.
#   api     -> nemgan serve  (FastAPI/uvicorn on $NEMGAN_HOST:$NEMGAN_PORT; /v2/health/*, /metrics)
#   worker  -> nemgan worker (Celery, solo pool: one job at a time per GPU; metrics on $NEMGAN_WORKER_METRICS_PORT)
#   anything else is run as given (e.g. `nemgan --help`, `sh`).
# exec keeps the server as the child of tini (PID 1), so SIGTERM reaches it and it drains in-flight work.
set -eu

role="${1:-api}"
[ "$#" -gt 0 ] && shift
case "$role" in
  api|serve)
    export NEMGAN_ROLE=api
    exec nemgan serve --host "${NEMGAN_HOST:-0.0.0.0}" --port "${NEMGAN_PORT:-8000}" "$@"
    ;;
  worker)
    export NEMGAN_ROLE=worker
    exec nemgan worker "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
