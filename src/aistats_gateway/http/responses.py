"""Response helpers and the documented error responses shared by every route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class JSONBytes(JSONResponse):
    """A JSON response from already-serialised bytes (or any object, via orjson).

    A ``JSONResponse`` subclass, so FastAPI documents the route's ``response_model`` as the body
    schema in /openapi.json (for other response classes it documents ``{"type": "string"}``).
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)


class EventStream(StreamingResponse):
    """A ``StreamingResponse`` of bytes frames sent as they come, without Starlette's task group
    that listens for the client's disconnect meanwhile (a task group and a task per response).

    For bodies that do not depend on the client staying (the inference pumps read the provider's
    stream to its end either way): once the client is gone the server drops the sends (uvicorn)
    or raises ``OSError`` (then the body iterator is closed at once); either way the iterator is
    closed when this returns."""

    body_iterator: AsyncIterator[bytes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.body_iterator
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
        if self.background is not None:
            await self.background()


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _err("Invalid request: the error names the parameter in `param`"),
    401: _err("Missing, wrong or revoked API key"),
    413: _err("Request body too large"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _err("Not found (or not owned by this key)")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: _err("Not in a state that allows this")}
