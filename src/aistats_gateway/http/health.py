"""``GET /v1/health``: ``/healthz`` (the process is up) plus the database and the providers.

Always 200 while the process serves requests (``/readyz`` is the probe that fails with the
database); ``status`` is ``ok``, or ``degraded`` when the database does not answer. Provider status
is what this gateway can route to right now (an adapter is installed and, when it needs one, a
credential is configured); no provider is called. Needs an API key, like every ``/v1`` route, since
it tells which providers are configured.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import text
from starlette.responses import Response

from aistats_gateway import __version__
from aistats_gateway.auth.dependencies import Principal, require_key
from aistats_gateway.http.responses import ERRORS, JSONBytes
from aistats_gateway.providers import config as provider_config
from aistats_gateway.providers import registry

log = logging.getLogger("aistats_gateway")
router = APIRouter(prefix="/v1", tags=["Operations"], responses=ERRORS)
DB_TIMEOUT_SECONDS = 5.0


class DatabaseHealth(BaseModel):
    status: Literal["ok", "unavailable"]
    backend: Literal["sqlite", "postgresql"]
    latency_ms: float | None = Field(description="Round trip of SELECT 1; null when it failed")
    error: str | None = None


class ProviderHealth(BaseModel):
    id: str
    endpoints: list[str] = Field(description="Gateway endpoints the adapter implements")
    active: bool = Field(description="True when the gateway routes to it (adapter present, credential if needed)")
    needs_credentials: bool
    configured: bool = Field(description="A credential is set (or none is needed)")


class Health(BaseModel):
    ok: bool
    status: Literal["ok", "degraded"]
    version: str
    time: int = Field(description="Server time, unix seconds")
    database: DatabaseHealth
    providers: list[ProviderHealth]


async def database_health(gw: Any) -> dict[str, Any]:
    backend = "sqlite" if gw.settings.is_sqlite else "postgresql"
    started = time.perf_counter()
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS):
            async with gw.sessions() as s:
                await s.execute(text("SELECT 1"))
    except Exception as e:
        log.warning("health: database check failed", extra={"error": str(e)})
        return {"status": "unavailable", "backend": backend, "latency_ms": None, "error": type(e).__name__}
    return {"status": "ok", "backend": backend, "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "error": None}


def provider_health() -> list[dict[str, Any]]:
    out = []
    for pid, entry in sorted(registry.registered().items()):
        endpoints = sorted(entry.endpoints)
        active = any(registry.is_routable(pid, ep) for ep in endpoints)
        out.append({"id": pid, "endpoints": endpoints, "active": active,
                    "needs_credentials": entry.needs_credentials,
                    "configured": not entry.needs_credentials or provider_config.load(pid).has_credentials})
    return out


@router.get("/health", response_model=Health, summary="Gateway health: process, database and providers")
async def health(request: Request, _: Principal = Depends(require_key)) -> Response:
    gw = request.app.state.gateway
    db = await database_health(gw)
    ok = db["status"] == "ok"
    return JSONBytes({"ok": ok, "status": "ok" if ok else "degraded", "version": __version__,
                      "time": int(time.time()), "database": db, "providers": provider_health()})
