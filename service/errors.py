"""Errors as JSON `{"error": "...", "detail": ...}`; never a traceback in a response."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from . import metrics as M
from .batcher import BatcherClosed, QueueFull
from .registry import RegistryError

log = logging.getLogger("nemgan.service")


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = status, message, detail, headers


def error_response(status: int, message: str, detail: Any = None, headers: dict | None = None) -> Response:
    import orjson

    body = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return Response(orjson.dumps(body, default=str), status_code=status, media_type="application/json",
                    headers=headers)


def _clean_validation(errors) -> list[dict]:
    out = []
    for e in errors:
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")})
    return out


def known_error_response(exc: BaseException, retry_after_s: int = 1) -> Response | None:
    """The response for the errors the service raises on purpose (None for anything else).

    Shared by the exception handlers below and the hot-path ASGI handlers (service/fastpath.py)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, exc.detail, exc.headers)
    if isinstance(exc, StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
    if isinstance(exc, RegistryError):  # 404 unknown; subclasses: 422 unusable version, 409 in use, 503 unavailable
        status = getattr(exc, "status", 404)
        return error_response(status, str(exc.args[0] if exc.args else exc),
                              headers={"Retry-After": "30"} if status == 503 else None)
    if isinstance(exc, QueueFull):
        M.REJECTED.labels("queue_full").inc()
        return error_response(503, "server busy: " + str(exc), headers={"Retry-After": str(retry_after_s)})
    if isinstance(exc, BatcherClosed):
        M.REJECTED.labels("shutting_down").inc()
        return error_response(503, "server is shutting down", headers={"Retry-After": str(retry_after_s)})
    return None


def install(app: FastAPI, retry_after_s: int = 1) -> None:
    async def _known(request: Request, exc: Exception):
        return known_error_response(exc, retry_after_s)

    for cls in (ApiError, StarletteHTTPException, RegistryError, QueueFull, BatcherClosed):
        app.add_exception_handler(cls, _known)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = _clean_validation(exc.errors())
        first = errs[0] if errs else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body", "query"))
        return error_response(422, f"{where}: {first['msg']}" if where else first["msg"], errs)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error")
