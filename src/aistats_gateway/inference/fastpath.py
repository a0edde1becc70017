"""The inference POST routes straight from the ASGI middleware stack, past FastAPI's router.

Pure ASGI, inside the gateway middleware (request id, access log, metrics and the body-size limit
still apply, and ``MethodsMiddleware``). ``POST`` to exactly one of the inference paths calls the
same endpoint function the FastAPI route calls (:mod:`inference.endpoints`), with a Starlette
``Request`` on the same scope, and renders its errors exactly as the app's exception handlers do
(``APIError`` and the domain errors: OpenAI's shape; ``/v1/messages`` renders Anthropic's itself).
Anything else (other methods, paths, a trailing slash) goes on to FastAPI unchanged. What it skips
per call: the router's match over every route, FastAPI's request/dependency machinery and its
exception and body-limit middlewares (~0.2 ms of CPU per call). ``/openapi.json`` still documents
these routes from the FastAPI routes, which stay registered and answer identically.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from aistats_gateway.http import domain
from aistats_gateway.http.errors import APIError, error_response
from aistats_gateway.inference import endpoints


class _Route:
    def __init__(self, path: str) -> None:
        self.path = path  # the label the metrics and the access log use (``scope["route"].path``)


_HANDLERS: dict[str, tuple[Callable[[Request], Awaitable[Response]], _Route]] = {
    path: (fn, _Route(path)) for path, fn in (
        ("/v1/chat/completions", endpoints.chat_completions), ("/v1/responses", endpoints.create_response),
        ("/v1/messages", endpoints.create_message), ("/v1/embeddings", endpoints.create_embeddings),
        ("/v1/moderations", endpoints.create_moderation))}


def _error(exc: Exception) -> Response:
    e = exc if isinstance(exc, APIError) else domain.to_api_error(exc)
    return error_response(e.status, e.message, param=e.param, code=e.code, type=e.type, headers=e.headers)


class FastInference:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            got = _HANDLERS.get(scope["path"])
            if got is not None:
                await self._serve(got[0], got[1], scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _serve(fn: Callable[[Request], Awaitable[Response]], route: _Route, scope: Scope, receive: Receive,
                     send: Send) -> None:
        scope["route"] = route
        scope.setdefault("path_params", {})
        request = Request(scope, receive, send)
        response: Any
        try:
            response = await fn(request)
        except (APIError, *domain.DOMAIN_ERRORS) as exc:
            response = _error(exc)
        await response(scope, receive, send)
