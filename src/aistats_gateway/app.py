"""Application assembly: settings → engine → catalogue → routes and middleware."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import Response

from aistats_gateway import __version__
from aistats_gateway.billing.endpoints import router as billing_router
from aistats_gateway.catalogue import service as catalogue_service
from aistats_gateway.catalogue.endpoints import router as catalogue_router
from aistats_gateway.db.engine import create_engine, session_factory
from aistats_gateway.files import endpoints as files_endpoints
from aistats_gateway.http import errors
from aistats_gateway.http.asyncjobs import router as asyncjobs_router
from aistats_gateway.http.frontdoor import GatewayApp
from aistats_gateway.http.health import router as health_router
from aistats_gateway.http.methods import MethodsMiddleware
from aistats_gateway.http.middleware import GatewayMiddleware, Metrics
from aistats_gateway.http.responses import ErrorResponse, JSONBytes
from aistats_gateway.inference.endpoints import router as inference_router
from aistats_gateway.routing.breaker import BreakerCollector, CircuitBreaker
from aistats_gateway.settings import Settings
from aistats_gateway.videos.alias import alias_router as video_alias_router
from aistats_gateway.videos.endpoints import router as videos_router

if TYPE_CHECKING:
    import httpx

    from aistats_gateway.db.fastread import FastReader
    from aistats_gateway.http.ssrf import GuardPolicy
    from aistats_gateway.jobs.engine import JobEngine
    from aistats_gateway.storage.base import BlobStore
    from aistats_gateway.videos.cache import RenderedJobs
    from aistats_gateway.videos.hooks import JobHooks
    from aistats_gateway.videos.runner import RunnerContext
    from aistats_gateway.webhooks.service import WebhookConfig

log = logging.getLogger("aistats_gateway")
# The domains whose ``jobs`` module gives the job engines their sources (``sources(state)``).
JOB_DOMAINS = ("aistats_gateway.videos.jobs", "aistats_gateway.billing.jobs", "aistats_gateway.webhooks.jobs",
               "aistats_gateway.files.jobs", "aistats_gateway.batches.jobs")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]


class StopSignal(Protocol):
    async def wait(self) -> object: ...


@dataclass
class GatewayState:
    """Everything one gateway process shares. The optional fields are set up by ``start_services``
    (the lifespan) and are None before it ran and after ``stop_services``."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    catalogue: catalogue_service.CatalogueStore
    metrics: Metrics
    reader: FastReader | None = None  # the lean reader of the hot read paths
    # routing's per-provider circuit breaker and observed health (in /metrics)
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    storage: BlobStore | None = None
    http: httpx.AsyncClient | None = None  # upstream provider calls
    fetch_client: httpx.AsyncClient | None = None  # fetching caller-given URLs (images, webhooks)
    fetch_policy: GuardPolicy | None = None
    runner: RunnerContext | None = None
    jobs: JobEngine | None = None  # the job engine
    hooks: JobHooks | None = None  # what happens when a job changes (billing, webhooks)
    webhooks: WebhookConfig | None = None  # webhook delivery configuration
    # Per hold kind (billing.Ref.kind), the product's settle-or-void of one operation; the billing
    # sweep calls it for terminal operations whose hold is still open.
    rendered_jobs: RenderedJobs | None = None  # JSON of finished jobs for GET /v1/videos/{id}
    hold_finalizers: dict[str, Callable[[str], Awaitable[None]]] = field(default_factory=dict)


def _new_state(settings: Settings, engine: AsyncEngine, metrics: Metrics) -> GatewayState:
    sessions = session_factory(engine)
    state = GatewayState(
        settings=settings, engine=engine, sessions=sessions,
        catalogue=catalogue_service.CatalogueStore(sessions, settings.catalogue_refresh_seconds), metrics=metrics,
        breaker=CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_seconds),
    )
    metrics.registry.register(BreakerCollector(state.breaker))
    return state


def create_app(settings: Settings, *, metrics: Metrics | None = None, freeze_gc: bool = False) -> FastAPI:
    """The app. ``freeze_gc`` (the server's own process, ``serve``): once started, everything alive
    (modules, routes, the catalogue snapshot: most of the process's objects) is moved out of the
    cyclic GC's reach (``gc.freeze``). Full collections walking them stalled the loop ~110 ms under
    load; frozen, the longest measured 0.8 ms. Not for processes that build many apps (tests):
    cyclic garbage among frozen objects is never collected."""
    metrics = metrics or Metrics()
    settings.ensure_data_dir()
    engine = create_engine(settings.db_url, pool_size=settings.db_pool_size)
    state = _new_state(settings, engine, metrics)
    sessions = state.sessions
    from aistats_gateway.db.fastread import FastReader

    state.reader = FastReader(engine, settings.db_url)
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        from aistats_gateway.http.middleware import WriterStats

        metrics.registry.register(WriterStats(str(engine.url.database)))
    from aistats_gateway.videos.cache import RenderedJobs

    state.rendered_jobs = RenderedJobs()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.sync_catalogue_on_start:
            await sync_catalogue_at_start(state)
        await state.catalogue.get()
        metrics.loop_lag.start()
        await start_services(state)
        if freeze_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await stop_services(state)
            await metrics.loop_lag.stop()
            await engine.dispose()

    app = GatewayApp(
        title="AI Stats Gateway API",
        description="A self-hostable gateway implementing the AI Stats Gateway API: OpenAI-compatible "
        "endpoints in front of many AI providers.",
        version=__version__,
        lifespan=lifespan,
        default_response_class=JSONBytes,
    )
    app.state.gateway = state
    errors.install(app)
    from aistats_gateway.inference import fastpath
    from aistats_gateway.videos.fastget import FastVideoGet

    app.add_middleware(FastVideoGet)  # inside GatewayMiddleware (added later = outermost)
    app.add_middleware(MethodsMiddleware)
    app.add_middleware(GatewayMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       own_limit_paths=files_endpoints.UPLOAD_PATHS)
    # The inference POSTs skip the rest of the stack: the gateway middleware and the 500 handler only.
    app.front_door("POST", fastpath.PATHS, ServerErrorMiddleware(
        GatewayMiddleware(fastpath.FastInference(), metrics=metrics, max_body_bytes=settings.max_body_bytes),
        handler=app.exception_handlers[Exception]))

    @app.get("/healthz", tags=["Operations"], summary="The process is up", response_model=Health)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["Operations"], summary="The database is reachable and the disk has room",
             response_model=Ready,
             responses={503: {"model": ErrorResponse, "description": "Database unreachable or disk low"}})
    async def readyz(request: Request) -> Response:
        try:
            async with sessions() as s:
                await s.execute(text("SELECT 1"))
        except Exception as e:
            log.warning("readiness check failed", extra={"error": str(e)})
            return errors.error_response(503, "The database is not reachable.", code="database_unavailable",
                                         type="server_error")
        if settings.uses_local_disk_storage:
            from aistats_gateway.videos.admission import free_disk_bytes

            free = await free_disk_bytes(settings.data_dir)
            if free < settings.min_free_disk_bytes:
                return errors.error_response(
                    503, f"Low disk space: {free:,} bytes free in the data directory, "
                    f"AISTATS_MIN_FREE_DISK_BYTES is {settings.min_free_disk_bytes:,}.", code="low_disk_space",
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
    from aistats_gateway.media_api.endpoints import router as media_router

    app.include_router(media_router)  # images and audio (docs/media.md)
    app.include_router(health_router)
    app.include_router(asyncjobs_router)
    app.include_router(video_alias_router(catalogue_router, videos_router))
    app.include_router(inference_router)

    from aistats_gateway.videos.schemas import DownloadURLRequest, VideoCreateRequest

    errors.add_component_schemas(app, [VideoCreateRequest, DownloadURLRequest])  # bodies parsed by hand
    return app


async def start_services(state: GatewayState) -> None:
    from aistats_gateway import providers  # noqa: F401  (registers the adapters)
    from aistats_gateway.http import ssrf
    from aistats_gateway.http.client import create_client
    from aistats_gateway.jobs.engine import LocalEngine
    from aistats_gateway.jobs.registry import collect as collect_sources
    from aistats_gateway.storage import create_store
    from aistats_gateway.videos import billing as video_billing
    from aistats_gateway.videos import ws as video_ws
    from aistats_gateway.videos.hooks import JobHooks
    from aistats_gateway.videos.runner import RunnerContext
    from aistats_gateway.webhooks import service as webhook_service

    s = state.settings
    from aistats_gateway.inference import providers_file

    providers_file.load()  # AISTATS_PROVIDERS_FILE: validated (and its providers registered) before serving
    from aistats_gateway.inference import charge as inference_charge

    await inference_charge.sweep_stale(state.sessions)  # calls a crashed process left open: void their holds
    if state.reader is None:
        from aistats_gateway.db.fastread import FastReader

        state.reader = FastReader(state.engine, s.db_url)
    state.storage = storage = create_store(s.storage, s.data_dir, {
        "endpoint_url": s.s3_endpoint_url, "bucket": s.s3_bucket, "access_key": s.s3_access_key_id,
        "secret_key": s.s3_secret_access_key, "region": s.s3_region, "prefix": s.s3_prefix,
    } if s.storage == "s3" else None)
    state.http = http = create_client(s.upstream_timeout_seconds, upstream=True)
    state.fetch_client = create_client(15.0)
    state.fetch_policy = ssrf.GuardPolicy(allow_private=s.fetch_allow_private, allowed_hosts=s.allowed_hosts)
    state.runner = runner = RunnerContext(sessions=state.sessions, storage=storage, http=http, data_dir=s.data_dir,
                                          lease_seconds=s.job_lease_seconds, reader=state.reader,
                                          breaker=state.breaker, poll_age_fraction=s.job_poll_age_fraction)
    state.webhooks = webhook_service.WebhookConfig(
        policy=webhook_service.policy_for(s.webhook_allow_local, s.allowed_hosts),
        schedule=s.retry_schedule, timeout=s.webhook_timeout_seconds)
    state.hooks = hooks = JobHooks(state)
    runner.events.on_terminal("video", hooks.on_status)
    runner.on_progress.append(hooks.on_progress)
    state.hold_finalizers[video_billing.KIND] = hooks.finalize
    from aistats_gateway.media_api import calls as media_calls

    state.hold_finalizers[media_calls.KIND] = media_calls.finalizer(state)  # abandoned image/audio calls
    from aistats_gateway.media_api import forms as media_forms

    await media_forms.sweep_async(s.data_dir)  # temp files a crash left behind
    from aistats_gateway.videos import scratch

    runner.on_status.append(scratch.ScratchHooks(s.data_dir).on_status)
    try:
        await scratch.sweep(state.sessions, s.data_dir, s.scratch_orphan_seconds)
    except Exception:
        log.exception("scratch sweep failed")
    video_ws.install(state)  # websocket kind "video", status_changed webhooks, change notices
    sources = collect_sources(state, JOB_DOMAINS)
    engine: JobEngine
    if s.is_sqlite:
        engine = LocalEngine(sources, concurrency=s.job_concurrency, max_idle=s.job_max_idle_seconds)
    else:
        from aistats_gateway.jobs.procrastinate_engine import ProcrastinateEngine

        engine = ProcrastinateEngine(s.db_url, sources, run_worker=s.run_worker, concurrency=s.job_concurrency)
    state.jobs = engine
    if s.is_sqlite and not s.run_worker:
        log.warning("AISTATS_RUN_WORKER=false is ignored on SQLite: jobs run in the server process")
    await engine.start()


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


async def run_worker_forever(settings: Settings, stop: StopSignal) -> None:
    """A worker process: the services and the job engine, no HTTP server."""
    engine = create_engine(settings.db_url, pool_size=settings.db_pool_size)
    state = _new_state(settings, engine, Metrics())
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
    return create_app(settings, freeze_gc=True)
