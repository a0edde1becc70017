"""HTTP methods: ``Allow`` lists every method of a path, HEAD works wherever GET does, OPTIONS answers.

Invariants
----------
* :func:`allowed_methods` is the union of the methods of *every* route whose path matches (the
  router alone reports only the first partially matching route), plus HEAD when GET is there and
  OPTIONS. The 405 handler (``http/errors.py``) and OPTIONS use it.
* ``HEAD`` on a path with a GET route and no HEAD route of its own runs the GET handler and sends
  its status and headers (``Content-Length`` included) without the body.
* ``OPTIONS`` on a known path answers 204 with ``Allow``; on an unknown path the router's 404 stays.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _routes(scope: Scope) -> list[Any]:
    app = scope.get("app")
    router = getattr(app, "router", None)
    return list(getattr(router, "routes", []))


def _matches(scope: Scope, method: str) -> bool:
    probe = {**scope, "method": method}
    for route in _routes(scope):  # routes and included routers alike answer ``matches``
        try:
            match, _ = route.matches(probe)
        except Exception:
            continue
        if match == Match.FULL:
            return True
    return False


def allowed_methods(scope: Scope) -> list[str]:
    methods = {m for m in _ORDER if m != "OPTIONS" and _matches(scope, m)}
    if not methods:
        return []
    if "GET" in methods:
        methods.add("HEAD")
    methods.add("OPTIONS")
    return [m for m in _ORDER if m in methods]


def _has_own_head(scope: Scope) -> bool:
    return _matches(scope, "HEAD")


class MethodsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method") if scope["type"] == "http" else None
        if method == "OPTIONS":
            allowed = allowed_methods(scope)
            if allowed:
                await send({"type": "http.response.start", "status": 204,
                            "headers": [(b"allow", ", ".join(allowed).encode()), (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
        if method == "HEAD" and not _has_own_head(scope) and "GET" in allowed_methods(scope):
            sent_end = False

            async def head_send(message: Message) -> None:
                nonlocal sent_end
                if message["type"] == "http.response.body":
                    if sent_end:
                        return
                    if not message.get("more_body", False):
                        sent_end = True
                    await send({"type": "http.response.body", "body": b"", "more_body": not sent_end})
                    return
                await send(message)

            await self.app({**scope, "method": "GET"}, receive, head_send)
            return
        await self.app(scope, receive, send)
