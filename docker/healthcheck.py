#!/usr/bin/env python3
"""Container health check (Docker HEALTHCHECK, compose).

api role (default): GET /v2/health/live on the API port; the worker role: GET its Prometheus metrics
endpoint (the worker has no HTTP API). Exit 0 healthy, 1 unhealthy. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def role() -> str:
    """NEMGAN_ROLE if set (compose and k8s set it), else the entrypoint's argument seen in PID 1's command line
    (a HEALTHCHECK process does not inherit what the entrypoint exported)."""
    if os.environ.get("NEMGAN_ROLE"):
        return os.environ["NEMGAN_ROLE"]
    try:
        with open("/proc/1/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return "api"
    return "worker" if "worker" in argv else "api"


def url() -> str:
    if role() == "worker":
        return f"http://127.0.0.1:{os.environ.get('NEMGAN_WORKER_METRICS_PORT', '9808')}/metrics"
    return f"http://127.0.0.1:{os.environ.get('NEMGAN_PORT', '8000')}/v2/health/live"


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else url()
    try:
        with urllib.request.urlopen(target, timeout=float(os.environ.get("NEMGAN_HEALTHCHECK_TIMEOUT", "4"))) as r:
            return 0 if 200 <= r.status < 300 else 1
    except Exception as exc:  # connection refused, timeout, HTTP error
        print(f"unhealthy: {target}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
