"""Pure-ASGI middleware: request ids, access log, Prometheus metrics and the body size limit.

The metric children of each (method, route, status) are looked up once and kept (``Metrics.record``):
prometheus_client's ``labels()`` costs more than the increment itself. The keys are bounded (route
templates, not paths; an unrouted request is ``unmatched``)."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aistats_gateway.http.errors import error_body

access_log = logging.getLogger("aistats_gateway.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "aistats_http_requests_total", "HTTP requests by route and status",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "aistats_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        from aistats_gateway.http.looplag import LoopLag

        self.loop_lag = LoopLag(self.registry)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        got = self._children.get(key)
        if got is None:
            got = self._children[key] = (self.requests.labels(method, route, str(status)),
                                         self.latency.labels(method, route))
        got[0].inc()
        got[1].observe(seconds)


class WriterStats:
    """``/metrics`` counters of the SQLite group-commit writer of one database file (``db.writer``):
    group commits, the transactions they carried and the groups handed to the writer thread."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        from aistats_gateway.db.writer import sqlite_writer

        w = sqlite_writer(self.path)
        yield CounterMetricFamily("aistats_db_group_commits", "SQLite group commits of the lean writer",
                                  value=w.groups)
        yield CounterMetricFamily("aistats_db_group_commit_transactions",
                                  "Write transactions committed in those groups", value=w.items)
        yield CounterMetricFamily("aistats_db_group_commits_handed_over",
                                  "Groups handed to the writer thread (the database was locked)", value=w.handed_over)


class _TooLarge(Exception):
    pass


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int,
                 own_limit_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.own_limit_paths = own_limit_paths  # POST routes that enforce their own body limit (uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else "req_" + secrets.token_hex(12)
        scope.setdefault("state", {})["request_id"] = request_id
        rid_header = (b"x-request-id", request_id.encode())
        status = 500
        started = False
        too_large = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if too_large:
                return  # the app's answer to a truncated body is replaced by the 413 below
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        if scope.get("method") == "POST" and scope.get("path") in self.own_limit_paths:
            await self.app(scope, receive, send_wrapper)
            self._record(scope, status, start, request_id)
            return
        length = _header(scope, b"content-length")
        if length and length.isdigit() and int(length) > self.max_body:
            status = await self._send_413(send, rid_header)
            self._record(scope, status, start, request_id)
            return

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except _TooLarge:
            pass
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            status = await self._send_413(send, rid_header)
        self._record(scope, status, start, request_id)

    async def _send_413(self, send: Send, rid_header: tuple[bytes, bytes]) -> int:
        body = orjson.dumps(error_body(
            413, f"Request body too large; the limit is {self.max_body} bytes.", code="request_too_large"))
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), rid_header]})
        await send({"type": "http.response.body", "body": body})
        return 413

    def _record(self, scope: Scope, status: int, start: float, request_id: str) -> None:
        elapsed = time.perf_counter() - start
        route = scope.get("route")
        route_path = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        self.metrics.record(method, route_path, status, elapsed)
        state: dict[str, Any] = scope.get("state", {})
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("request", extra={
                "request_id": request_id, "method": method, "path": scope.get("path"), "route": route_path,
                "status": status, "duration_ms": round(elapsed * 1000, 3), "key_id": state.get("key_id"),
            })


def _header(scope: Scope, name: bytes) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None
