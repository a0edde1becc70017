"""The application object: FastAPI, with a few hot routes answered before FastAPI's middleware stack.

Invariants:
* :class:`GatewayApp` is a FastAPI app in every respect (routes, ``/openapi.json``, lifespan,
  exception handlers, ``app.state``). Only an ``http`` request whose method and exact path were
  registered with :meth:`GatewayApp.front_door` goes to that door's ASGI app instead of
  ``middleware_stack``; everything else (other methods, paths, a trailing slash, websockets,
  lifespan) goes through FastAPI unchanged.
* A door is built by the composition root from the same pieces the stack would apply to it: the
  gateway middleware (request id, access log, metrics, body limit) and the app's own 500 handler
  (Starlette's ``ServerErrorMiddleware``, outermost, as in the stack). What a door skips per call is
  the rest of the stack (FastAPI's exception telemetry and body-limit middlewares, the method and
  video middlewares, the router's match over every route): ~0.15–0.2 ms of CPU per call measured
  (docs/benchmarks.md).
* ``scope["app"]`` and ``root_path`` are set as FastAPI sets them, so handlers see the same scope.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send


class GatewayApp(FastAPI):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._doors: dict[tuple[str, str], ASGIApp] = {}

    def front_door(self, method: str, paths: frozenset[str], app: ASGIApp) -> None:
        """Answer ``method`` on exactly these ``paths`` with ``app``, before the middleware stack."""
        for path in paths:
            self._doors[(method, path)] = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            door = self._doors.get((scope["method"], scope["path"]))
            if door is not None:
                scope["app"] = self
                if self.root_path:
                    scope["root_path"] = self.root_path
                await door(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
