"""Pure ASGI middleware: request metrics (route templates as labels) and the upload cap.

The cap is enforced by Content-Length before anything is read, and again while the body streams in
(chunked uploads, lying clients): the receive wrapper raises `HTTPException(413)` as soon as the running
total passes the cap, which the app's exception handler turns into a JSON 413.
"""

from __future__ import annotations

import time

from . import metrics as M
from starlette.exceptions import HTTPException

from .errors import error_response


class BodyLimitMiddleware:
    def __init__(self, app, default_cap: int, caps: dict[str, int] | None = None):
        self.app = app
        self.default_cap = default_cap
        self.caps = caps or {}

    def _cap(self, path: str) -> int:
        for prefix, cap in self.caps.items():
            if path.startswith(prefix):
                return cap
        return self.default_cap

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        cap = self._cap(scope["path"])
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = -1
                if n < 0:
                    return await error_response(400, "invalid Content-Length")(scope, receive, send)
                if n > cap:
                    M.REJECTED.labels("too_large").inc()
                    return await error_response(413, f"request body of {n} bytes exceeds the cap of {cap} bytes")(
                        scope, receive, send)
                break
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > cap:
                    M.REJECTED.labels("too_large").inc()
                    raise HTTPException(413, f"request body exceeds the cap of {cap} bytes")
            return msg

        await self.app(scope, limited_receive, send)


class MetricsMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(msg):
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            M.REQUESTS.labels(path, method, str(status)).inc()
            M.REQUEST_DURATION.labels(path, method).observe(time.perf_counter() - t0)
