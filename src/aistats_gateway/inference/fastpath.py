"""The inference POST routes as one pure-ASGI app, the app's front door for them (``http.frontdoor``).

The composition root wraps :class:`FastInference` in the gateway middleware (request id, access log,
metrics and the body-size limit still apply) and the app's 500 handler, and registers it for
``POST`` on exactly :data:`PATHS`. Each call runs the same endpoint function the FastAPI route calls
(:mod:`inference.endpoints`), with a Starlette ``Request`` on the same scope, and renders its errors
exactly as the app's exception handlers do (``APIError`` and the domain errors: OpenAI's shape;
``/v1/messages`` renders Anthropic's itself; anything else is the 500 handler's). What it skips per
call: FastAPI's middleware stack, the router's match over every route and FastAPI's
request/dependency machinery. ``/openapi.json`` still documents these routes from the FastAPI
routes, which stay registered and answer identically (a path outside the door, e.g. with a trailing
slash, reaches them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

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


PATHS = frozenset(_HANDLERS)


class FastInference:
    """ASGI app for ``POST`` on :data:`PATHS` (the front door sends nothing else here)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fn, route = _HANDLERS[scope["path"]]
        scope["route"] = route
        scope.setdefault("path_params", {})
        request = Request(scope, receive, send)
        response: Any
        try:
            response = await fn(request)
        except (APIError, *domain.DOMAIN_ERRORS) as exc:
            response = _error(exc)
        await response(scope, receive, send)
