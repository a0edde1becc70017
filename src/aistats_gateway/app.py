"""Application assembly: settings → engine → catalogue → routes and middleware."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Awaitable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.responses import Response

from aistats_gateway import __version__
from aistats_gateway.catalogue import service as catalogue_service
from aistats_gateway.catalogue.endpoints import router as catalogue_router
from aistats_gateway.db.engine import create_engine, session_factory
from aistats_gateway.http import errors
from aistats_gateway.http.middleware import GatewayMiddleware, Metrics
from aistats_gateway.http.responses import JSONBytes
from aistats_gateway.settings import Settings

log = logging.getLogger("aistats_gateway")

# Domains add routers and start/stop hooks here (videos, webhooks, batches …).
Hook = Callable[["GatewayState"], Awaitable[None]]


@dataclass
class GatewayState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    catalogue: catalogue_service.CatalogueStore
    metrics: Metrics
    extras: dict[str, Any] = field(default_factory=dict)


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> FastAPI:
    metrics = metrics or Metrics()
    settings.ensure_data_dir()
    engine = create_engine(settings.db_url, pool_size=settings.db_pool_size)
    sessions = session_factory(engine)
    state = GatewayState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        catalogue=catalogue_service.CatalogueStore(sessions, settings.catalogue_refresh_seconds),
        metrics=metrics,
    )
    startup: list[Hook] = []
    shutdown: list[Hook] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.sync_catalogue_on_start:
            await sync_catalogue_at_start(state)
        await state.catalogue.get()
        for hook in startup:
            await hook(state)
        try:
            yield
        finally:
            for hook in reversed(shutdown):
                await hook(state)
            await engine.dispose()

    app = FastAPI(
        title="AI Stats Gateway API",
        description="A self-hostable gateway implementing the AI Stats Gateway API: OpenAI-compatible "
        "endpoints in front of many AI providers.",
        version=__version__,
        lifespan=lifespan,
        default_response_class=JSONBytes,
    )
    app.state.gateway = state
    app.state.startup_hooks = startup
    app.state.shutdown_hooks = shutdown
    errors.install(app)
    app.add_middleware(GatewayMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)

    @app.get("/healthz", tags=["Operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["Operations"], summary="The database is reachable",
             responses={503: {"description": "Database unreachable"}})
    async def readyz(request: Request) -> Response:
        try:
            async with sessions() as s:
                await s.execute(text("SELECT 1"))
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness check failed", extra={"error": str(e)})
            return errors.error_response(503, "The database is not reachable.", code="database_unavailable",
                                         type="server_error")
        return JSONBytes({"status": "ready"})

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(catalogue_router)
    for install in _domain_installers():
        install(app, state)
    return app


def _domain_installers() -> list[Callable[[FastAPI, GatewayState], None]]:
    """Each domain module that has routes exposes ``install(app, state)``."""
    return []


async def sync_catalogue_at_start(state: GatewayState) -> None:
    from pathlib import Path

    from aistats_gateway.catalogue import loader

    overlay = None
    source = None
    if state.settings.catalogue_file:
        path = Path(state.settings.catalogue_file)
        overlay, _ = loader.load_file(path)
        source = str(path)
    result = await catalogue_service.sync(
        state.sessions, overlay, source, keep_overlay=True, only_if_changed=True
    )
    log.info("catalogue synced" if result.changed else "catalogue up to date",
             extra={"version": result.version, "models": result.models})


def create_app_from_env() -> FastAPI:
    """Factory used by ``serve`` (uvicorn workers build the app from the environment)."""
    from aistats_gateway import logs
    from aistats_gateway.settings import load_settings

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)
