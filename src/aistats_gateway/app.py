"""Application assembly: settings → engine → catalogue → routes and middleware."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.responses import Response

from aistats_gateway import __version__
from aistats_gateway.catalogue import service as catalogue_service
from aistats_gateway.billing.endpoints import router as billing_router
from aistats_gateway.catalogue.endpoints import router as catalogue_router
from aistats_gateway.videos.alias import alias_router as video_alias_router
from aistats_gateway.videos.endpoints import router as videos_router
from aistats_gateway.files import endpoints as files_endpoints
from aistats_gateway.http.asyncjobs import router as asyncjobs_router
from aistats_gateway.http.health import router as health_router
from aistats_gateway.db.engine import create_engine, session_factory
from aistats_gateway.http import errors
from aistats_gateway.http.middleware import GatewayMiddleware, Metrics
from aistats_gateway.http.responses import ErrorResponse, JSONBytes
from aistats_gateway.settings import Settings

log = logging.getLogger("aistats_gateway")
# The domains whose ``jobs`` module gives the job engines their sources (``sources(state)``).
JOB_DOMAINS = ("aistats_gateway.videos.jobs", "aistats_gateway.billing.jobs", "aistats_gateway.webhooks.jobs",
               "aistats_gateway.files.jobs")

class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]


@dataclass
class GatewayState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    catalogue: catalogue_service.CatalogueStore
    metrics: Metrics
    reader: Any = None  # FastReader for the hot read paths
    # Set up in the lifespan: blob storage, upstream HTTP clients, the job runner and engine.
    storage: Any = None
    http: Any = None
    fetch_client: Any = None
    fetch_policy: Any = None
    runner: Any = None
    jobs: Any = None  # the job engine
    hooks: Any = None  # what happens when a job changes (billing, webhooks)
    webhooks: Any = None  # webhook delivery configuration
    rendered_jobs: Any = None  # videos.cache.RenderedJobs: JSON of finished jobs for GET /v1/videos/{id}


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
    from aistats_gateway.db.fastread import FastReader

    state.reader = FastReader(engine, settings.db_url)
    from aistats_gateway.videos.cache import RenderedJobs

    state.rendered_jobs = RenderedJobs()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.sync_catalogue_on_start:
            await sync_catalogue_at_start(state)
        await state.catalogue.get()
        await start_services(state)
        try:
            yield
        finally:
            await stop_services(state)
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
    errors.install(app)
    from aistats_gateway.videos.fastget import FastVideoGet

    app.add_middleware(FastVideoGet)  # inside GatewayMiddleware (added later = outermost)
    app.add_middleware(GatewayMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       own_limit_paths=files_endpoints.UPLOAD_PATHS)

    @app.get("/healthz", tags=["Operations"], summary="The process is up", response_model=Health)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["Operations"], summary="The database is reachable", response_model=Ready,
             responses={503: {"model": ErrorResponse, "description": "Database unreachable"}})
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
    app.include_router(videos_router)
    app.include_router(files_endpoints.router)  # before any /v1/batches/{id} router
    from aistats_gateway.batches.endpoints import router as batches_router

    app.include_router(batches_router)  # after the catalogue's /v1/batches/models and the files routes
    app.include_router(billing_router)
    app.include_router(health_router)
    app.include_router(asyncjobs_router)
    app.include_router(video_alias_router(catalogue_router, videos_router))
    return app


async def start_services(state: GatewayState) -> None:
    from aistats_gateway import providers  # noqa: F401  (registers the adapters)
    from aistats_gateway.http import ssrf
    from aistats_gateway.http.client import create_client
    from aistats_gateway.jobs.engine import LocalEngine
    from aistats_gateway.storage import create_store
    from aistats_gateway.videos.runner import RunnerContext

    s = state.settings
    if state.reader is None:
        from aistats_gateway.db.fastread import FastReader

        state.reader = FastReader(state.engine, s.db_url)
    state.storage = create_store(s.storage, s.data_dir, {
        "endpoint_url": s.s3_endpoint_url, "bucket": s.s3_bucket, "access_key": s.s3_access_key_id,
        "secret_key": s.s3_secret_access_key, "region": s.s3_region, "prefix": s.s3_prefix,
    } if s.storage == "s3" else None)
    state.http = create_client(s.upstream_timeout_seconds)
    state.fetch_client = create_client(15.0)
    state.fetch_policy = ssrf.GuardPolicy(allow_private=s.fetch_allow_private, allowed_hosts=s.allowed_hosts)
    state.runner = RunnerContext(sessions=state.sessions, storage=state.storage, http=state.http,
                                 data_dir=s.data_dir, lease_seconds=s.job_lease_seconds, reader=state.reader,
                                 poll_age_fraction=s.job_poll_age_fraction)
    from aistats_gateway.jobs.registry import collect as collect_sources
    from aistats_gateway.videos.hooks import JobHooks
    from aistats_gateway.webhooks import service as webhook_service

    state.webhooks = webhook_service.WebhookConfig(
        policy=webhook_service.policy_for(s.webhook_allow_local, s.allowed_hosts),
        schedule=s.retry_schedule, timeout=s.webhook_timeout_seconds)
    state.hooks = JobHooks(state)
    state.runner.events.on_terminal("video", state.hooks.on_status)
    state.runner.on_progress.append(state.hooks.on_progress)
    from aistats_gateway.videos import ws as video_ws

    video_ws.install(state)  # websocket kind "video", status_changed webhooks, change notices
    sources = collect_sources(state, JOB_DOMAINS)
    if s.is_sqlite:
        state.jobs = LocalEngine(sources, concurrency=s.job_concurrency, max_idle=s.job_max_idle_seconds)
    else:
        from aistats_gateway.jobs.procrastinate_engine import ProcrastinateEngine

        state.jobs = ProcrastinateEngine(s.db_url, sources, run_worker=s.run_worker, concurrency=s.job_concurrency)
    if s.is_sqlite and not s.run_worker:
        log.warning("AISTATS_RUN_WORKER=false is ignored on SQLite: jobs run in the server process")
    await state.jobs.start()


async def stop_services(state: GatewayState) -> None:
    if state.jobs is not None:
        await state.jobs.stop()
    for client in (state.http, state.fetch_client):
        if client is not None:
            await client.aclose()
    if state.storage is not None:
        await state.storage.close()
    if state.reader is not None:
        await state.reader.aclose()


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


async def run_worker_forever(settings: Settings, stop: Any) -> None:
    """A worker process: the services and the job engine, no HTTP server."""
    engine = create_engine(settings.db_url, pool_size=settings.db_pool_size)
    sessions = session_factory(engine)
    state = GatewayState(settings=settings, engine=engine, sessions=sessions,
                         catalogue=catalogue_service.CatalogueStore(sessions, settings.catalogue_refresh_seconds),
                         metrics=Metrics())
    await start_services(state)
    try:
        await stop.wait()
    finally:
        await stop_services(state)
        await engine.dispose()


def create_app_from_env() -> FastAPI:
    """Factory used by ``serve`` (uvicorn workers build the app from the environment)."""
    from aistats_gateway import logs
    from aistats_gateway.settings import load_settings

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)
