"""``GET /v1/async/{kind}/{id}/ws``: a websocket that pushes an asynchronous job's state.

A kind (``video``; ``batch`` later) plugs in with ``register(kind, loader)``. The loader reads the
job for the caller's workspace and returns a ``JobView`` (the same ``data`` object its webhooks
send), or None when the job does not exist, belongs to another workspace or was deleted: tenant
isolation is the loader's ``workspace_id`` filter, and an unknown and a foreign job look the same.

Protocol (reference §7): auth by the same API key (``Authorization: Bearer``, or ``?api_key=``
for browsers, which cannot set headers on a websocket). The server sends ``job.snapshot`` at once,
``job.updated`` when the job's ``version`` changes (or after a client ``refresh``), ``pong`` for a
client ``ping`` (raw text or ``{"type": "ping"}``), and ``job.deleted`` before closing when the job
disappears. It re-reads the job every ``interval_ms`` (1000–10000, default 2500) and at once when
``NOTIFIER.poke(kind, id)`` is called in this process (the job's status hooks do), so changes made
in this process are pushed without waiting for the timer. With ``close_on_terminal`` (default
true) the socket closes with 1000 after a completed, failed or cancelled payload. A plain HTTP GET
(no upgrade) is answered 426.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from fastapi import APIRouter, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect, WebSocketState

from aistats_gateway.auth.dependencies import Principal, require_key
from aistats_gateway.http.errors import APIError, error_response
from aistats_gateway.http.responses import _err

log = logging.getLogger("aistats_gateway.asyncjobs")
DEFAULT_INTERVAL_MS = 2500
MIN_INTERVAL_MS, MAX_INTERVAL_MS = 1000, 10000
CLOSING_STATUSES = frozenset({"completed", "failed", "cancelled"})  # expired does not close (reference)
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class JobView:
    data: dict[str, Any]  # what job.snapshot / job.updated carry
    status: str
    version: str  # changes exactly when a subscriber should be told (volatile fields excluded)


# (connection, workspace id, job id) -> the job as the caller may see it, or None.
Loader = Callable[[Any, str, str], Awaitable[JobView | None]]
KINDS: dict[str, Loader] = {}


def register(kind: str, loader: Loader) -> None:
    KINDS[kind] = loader


class Notifier:
    """In-process change signals: ``poke`` wakes every socket watching that job, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[tuple[str, str], set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]]] = {}

    @contextlib.asynccontextmanager
    async def watch(self, kind: str, job_id: str, inbox: asyncio.Queue[str]) -> AsyncIterator[None]:
        entry = (asyncio.get_running_loop(), inbox)
        with self._lock:
            self._watchers.setdefault((kind, job_id), set()).add(entry)
        try:
            yield
        finally:
            with self._lock:
                watchers = self._watchers.get((kind, job_id))
                if watchers is not None:
                    watchers.discard(entry)
                    if not watchers:
                        del self._watchers[(kind, job_id)]

    def poke(self, kind: str, job_id: str) -> None:
        with self._lock:
            targets = list(self._watchers.get((kind, job_id), ()))
        for loop, inbox in targets:
            with contextlib.suppress(RuntimeError):  # that loop is closing
                loop.call_soon_threadsafe(inbox.put_nowait, "change")

    def watching(self, kind: str, job_id: str) -> int:
        with self._lock:
            return len(self._watchers.get((kind, job_id), ()))


NOTIFIER = Notifier()
router = APIRouter(prefix="/v1/async", tags=["Async jobs"])


def parse_interval(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_INTERVAL_MS
    try:
        value = int(raw)
    except ValueError:
        raise APIError(400, f"Invalid interval_ms {raw!r}: use an integer number of milliseconds "
                       f"({MIN_INTERVAL_MS}-{MAX_INTERVAL_MS}).", param="interval_ms", code="invalid_value") from None
    return max(MIN_INTERVAL_MS, min(MAX_INTERVAL_MS, value))


def parse_close_on_terminal(raw: str | None) -> bool:
    return raw is None or raw.strip().lower() not in _FALSE


_WS_DOC = (
    "Upgrade to a websocket (`Upgrade: websocket`) to follow an asynchronous job. Query: `interval_ms` "
    "(1000-10000, default 2500), `close_on_terminal` (default true; 0/false/no/off disable it), and "
    "`api_key` for clients that cannot send an Authorization header. Server messages (JSON): "
    "`job.snapshot` at once, `job.updated` on change or after a client `refresh`, `pong` for a client "
    "`ping`, `job.deleted` before closing. The `data` of each is the job object its webhooks carry. "
    "Without an upgrade the answer is 426."
)


@router.get("/{kind}/{job_id}/ws", summary="Follow an async job over a websocket", description=_WS_DOC,
            status_code=426, response_class=Response,
            responses={426: _err("Websocket upgrade required (the only answer to a plain HTTP GET)")})
async def upgrade_required(kind: str, job_id: str) -> Response:
    return error_response(426, "This endpoint is a websocket: connect with 'Upgrade: websocket'.",
                          code="websocket_upgrade_required", headers={"Upgrade": "websocket", "Connection": "Upgrade"})


async def _authenticate(ws: WebSocket) -> Principal:
    header = ws.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        token = ws.query_params.get("api_key", "")
    creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token) if token.strip() else None
    return await require_key(cast(Request, ws), creds)


async def _deny(ws: WebSocket, e: APIError) -> None:
    """Refuse the handshake with the HTTP error (or close 1008 where the server cannot answer HTTP)."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(error_response(e.status, e.message, param=e.param, code=e.code, type=e.type,
                                                     headers=e.headers))
    else:
        await ws.close(1008, reason=e.message[:120])


async def _send(ws: WebSocket, message: dict[str, Any]) -> None:
    await ws.send_text(orjson.dumps(message).decode())


@router.websocket("/{kind}/{job_id}/ws")
async def follow(ws: WebSocket, kind: str, job_id: str) -> None:
    inbox: asyncio.Queue[str] = asyncio.Queue()
    # Watch before the first read, so a change between that read and the loop is not missed.
    async with NOTIFIER.watch(kind, job_id, inbox):
        try:
            loader = KINDS.get(kind)
            if loader is None:
                raise APIError(400, f"Unknown async job kind {kind!r}; one of: {', '.join(sorted(KINDS))}.",
                               param="kind", code="invalid_async_job_path")
            interval = parse_interval(ws.query_params.get("interval_ms")) / 1000
            close_on_terminal = parse_close_on_terminal(ws.query_params.get("close_on_terminal"))
            principal = await _authenticate(ws)
            view = await loader(ws, principal.workspace_id, job_id)
            if view is None:
                raise APIError(404, f"No {kind} job found with id '{job_id}'.", param="id",
                               code="async_job_not_found_or_not_owned")
        except APIError as e:
            await _deny(ws, e)
            return
        await ws.accept()
        reader = asyncio.create_task(_read_client(ws, inbox))
        try:
            await _serve(ws, loader, principal.workspace_id, kind, job_id, view, inbox, interval, close_on_terminal)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away mid-send
        except Exception:
            log.exception("async-job websocket failed", extra={"kind": kind, "job_id": job_id})
            with contextlib.suppress(Exception):
                await ws.close(1011)
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            if ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close(1000)


async def _read_client(ws: WebSocket, inbox: asyncio.Queue[str]) -> None:
    """Client messages into the inbox: ``ping``/``refresh`` as raw text or ``{"type": …}`` JSON."""
    try:
        while True:
            text = (await ws.receive_text()).strip()
            command = text
            if text.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                    command = str(orjson.loads(text).get("type", ""))
            if command in ("ping", "refresh"):
                inbox.put_nowait(command)
    except (WebSocketDisconnect, RuntimeError, KeyError):
        inbox.put_nowait("closed")


async def _serve(ws: WebSocket, loader: Loader, workspace_id: str, kind: str, job_id: str, view: JobView,
                 inbox: asyncio.Queue[str], interval: float, close_on_terminal: bool) -> None:
    await _send(ws, {"type": "job.snapshot", "data": view.data})
    if close_on_terminal and view.status in CLOSING_STATUSES:
        await ws.close(1000)
        return
    loop = asyncio.get_running_loop()
    next_read = loop.time() + interval
    while True:
        try:
            command = await asyncio.wait_for(inbox.get(), timeout=max(0.0, next_read - loop.time()))
        except TimeoutError:
            command = "tick"
        if command == "closed":
            return
        if command == "ping":
            await _send(ws, {"type": "pong"})
            continue
        if command == "tick":
            next_read = loop.time() + interval
        fresh = await loader(ws, workspace_id, job_id)
        if fresh is None:
            await _send(ws, {"type": "job.deleted", "data": {"id": job_id, "kind": kind}})
            await ws.close(1000)
            return
        if command == "refresh" or fresh.version != view.version:
            view = fresh
            await _send(ws, {"type": "job.updated", "data": view.data})
            if close_on_terminal and view.status in CLOSING_STATUSES:
                await ws.close(1000)
                return
