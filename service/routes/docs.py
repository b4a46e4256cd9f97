"""Offline API docs: Swagger UI at /docs and ReDoc at /redoc with their JavaScript and CSS served from the
`fastapi-offline` package's files (MIT; Swagger UI and ReDoc bundles), so the docs work with no internet
(air-gapped clusters). FastAPI's own /docs and /redoc (CDN assets) are switched off in create_app."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"

router = APIRouter(include_in_schema=False)

# What the Swagger UI and ReDoc bundles need beside their own files: their inline styles, data: images, a
# blob: worker (ReDoc's search), and the page's one inline script (Swagger's set-up), allowed by its hash.
DOCS_CSP = ("default-src 'self'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def with_csp(page: HTMLResponse) -> HTMLResponse:
    """The page with its Content-Security-Policy: its inline scripts allowed by their sha256, nothing else."""
    hashes = "".join(f" 'sha256-{base64.b64encode(hashlib.sha256(m.encode()).digest()).decode()}'"
                     for m in _INLINE_SCRIPT.findall(page.body.decode()))
    page.headers["content-security-policy"] = DOCS_CSP.format(hashes=hashes)
    return page


def _root(request: Request) -> str:
    return request.scope.get("root_path", "")


@router.get("/docs")
async def swagger(request: Request) -> HTMLResponse:
    app = request.app
    root = _root(request)
    return with_csp(get_swagger_ui_html(
        openapi_url=root + app.openapi_url, title=app.title + " - API docs",
        oauth2_redirect_url=root + "/docs/oauth2-redirect",
        swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS}/favicon.png", swagger_ui_parameters=app.swagger_ui_parameters))


@router.get("/docs/oauth2-redirect")
async def swagger_redirect() -> HTMLResponse:
    return with_csp(get_swagger_ui_oauth2_redirect_html())


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return with_csp(get_redoc_html(openapi_url=root + request.app.openapi_url, title=request.app.title + " - ReDoc",
                          redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
                          redoc_favicon_url=f"{root}{ASSETS}/favicon.png", with_google_fonts=False))


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")
