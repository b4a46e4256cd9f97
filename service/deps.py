"""Request dependencies as Annotated aliases."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError
from .jobs.store import JobStore
from .registry import Registry
from .runtime import ModelPool
from .settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_pool(request: Request) -> ModelPool:
    return request.app.state.pool


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_jobs(request: Request) -> JobStore:
    return request.app.state.jobs


_bearer = HTTPBearer(auto_error=False, description="NEMGAN_API_KEY (only when set)")


def require_api_key(request: Request,
                    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    key = request.app.state.settings.api_key
    if not key:
        return
    if creds is None or creds.scheme.lower() != "bearer":
        raise ApiError(401, "missing API key (Authorization: Bearer <key>)", headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(creds.credentials.encode(), key.encode()):
        raise ApiError(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[ModelPool, Depends(get_pool)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
AuthDep = Annotated[None, Depends(require_api_key)]
