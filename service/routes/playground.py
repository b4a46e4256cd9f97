"""The web playground: GET / serves service/static/index.html; its script and stylesheet are mounted at
/playground/ with StaticFiles. Plain files shipped inside the package (no CDN, no build step): the page
only calls the public API (/v1/models, /v1/generate, /v1/cluster, /v1/priors/learn, /v1/jobs/...)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"
MOUNT = "/playground"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    # no-cache: a browser revalidates after an upgrade instead of pairing an old page with a new API
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(MOUNT, StaticFiles(directory=STATIC), name="playground")
