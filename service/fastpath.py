"""Pure-ASGI handlers for the hot routes, in front of FastAPI's router.

`POST /v1/cluster` and `POST /v1/generate` carry the inference traffic. Going through FastAPI's full stack
costs several Python layers per request (middleware chain, route matching over every route, dependency
resolution, exception-handler wrappers), which at thousands of small requests a second is most of the
service's CPU. `NemganApp.__call__` hands these two paths to `FastPath`, which does what that stack would
do, once, inline:

  * the upload cap (Content-Length, then the streamed size) -> 413, as `BodyLimitMiddleware`;
  * the same endpoint code (`handle_cluster` / `handle_generate`) on the body read once;
  * errors mapped by `errors.known_error_response` (the app's exception handlers use it too), 500 + log
    for anything else; request metrics with the route template as label, as `MetricsMiddleware`.

A /v1/generate body that is not a valid `GenerateRequest` is replayed into the FastAPI stack, so its 422
is exactly FastAPI's. The FastAPI routes stay registered: they document the endpoints in OpenAPI and
serve them when the fast path is off (`NEMGAN_FAST_PATH=false`).
"""

from __future__ import annotations

import logging
import time

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect

from . import metrics as M
from .errors import ApiError, error_response, known_error_response
from .routes.cluster import handle_cluster
from .routes.generate import handle_generate, json_content_type_error
from .schemas import GenerateRequest

_NO_QUERY: dict = {}

log = logging.getLogger("nemgan.service")


class FastPath:
    def __init__(self, app, fallback):
        """`app`: the FastAPI app (state: settings, pool); `fallback(scope, receive, send)`: its full stack."""
        self.app = app
        self.fallback = fallback
        s = app.state.settings
        self.cap = s.max_upload_bytes
        self.retry_after_s = s.retry_after_s
        self.routes = {"/v1/cluster": self.cluster, "/v1/generate": self.generate}
        self._metrics: dict[tuple[str, int], tuple] = {}

    # ------------------------------------------------------------------ routes
    async def cluster(self, scope, receive, send) -> None:
        t0 = time.perf_counter()
        try:
            body = await self._body(scope, receive)
            ctype = _header(scope, b"content-type")
            state = self.app.state
            qs = scope["query_string"]
            resp = await handle_cluster(state.pool, state.settings, QueryParams(qs) if qs else _NO_QUERY, ctype, body)
        except ClientDisconnect:
            return
        except Exception as e:
            resp = self._error(scope, e)
        await self._send(send, resp)
        self._observe("/v1/cluster", resp.status_code, t0)

    async def generate(self, scope, receive, send) -> None:
        t0 = time.perf_counter()
        try:
            body = await self._body(scope, receive)
        except ClientDisconnect:
            return
        except Exception as e:
            resp = self._error(scope, e)
        else:
            ctype_header = _header(scope, b"content-type")
            ctype = ctype_header.split(";")[0].strip().lower()
            wrong_type = json_content_type_error(ctype_header)
            try:
                if wrong_type is not None:
                    raise wrong_type
                if ctype != "application/json":
                    raise ValueError(ctype)
                req = GenerateRequest.model_validate(orjson.loads(body))
            except ApiError as e:
                resp = self._error(scope, e)
            except Exception:  # anything FastAPI would refuse: let it answer (its exact 422/400)
                return await self.fallback(scope, _replay(body, receive), send)
            else:
                try:
                    state = self.app.state
                    resp = await handle_generate(state.pool, state.settings, req)
                except Exception as e:
                    resp = self._error(scope, e)
        await self._send(send, resp)
        self._observe("/v1/generate", resp.status_code, t0)

    # ------------------------------------------------------------------ plumbing
    async def _body(self, scope, receive) -> bytes:
        cap = self.cap
        v = _header(scope, b"content-length")
        if v:
            try:
                n = int(v)
            except ValueError:
                n = -1
            if n < 0:
                raise ApiError(400, "invalid Content-Length")
            if n > cap:
                M.REJECTED.labels("too_large").inc()
                raise ApiError(413, f"request body of {n} bytes exceeds the cap of {cap} bytes")
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = msg.get("body", b"")
            if chunk:
                seen += len(chunk)
                if seen > cap:
                    M.REJECTED.labels("too_large").inc()
                    raise ApiError(413, f"request body exceeds the cap of {cap} bytes")
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _error(self, scope, exc: Exception):
        resp = known_error_response(exc, self.retry_after_s)
        if resp is None:
            log.error("unhandled error on POST %s", scope["path"], exc_info=exc)
            resp = error_response(500, "internal server error")
        return resp

    @staticmethod
    async def _send(send, resp) -> None:
        await send({"type": "http.response.start", "status": resp.status_code, "headers": resp.raw_headers})
        await send({"type": "http.response.body", "body": resp.body})

    def _observe(self, route: str, status: int, t0: float) -> None:
        m = self._metrics.get((route, status))
        if m is None:
            m = self._metrics[(route, status)] = (M.REQUESTS.labels(route, "POST", str(status)),
                                                  M.REQUEST_DURATION.labels(route, "POST"))
        m[0].inc()
        m[1].observe(time.perf_counter() - t0)


def _header(scope, name: bytes) -> str:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return ""


def _replay(body: bytes, receive):
    """A receive that yields the already-read body once, then defers to the connection's own."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
