"""Response helpers and the documented error responses shared by every route."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import JSONResponse


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


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _err("Invalid request: the error names the parameter in `param`"),
    401: _err("Missing, wrong or revoked API key"),
    413: _err("Request body too large"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _err("Not found (or not owned by this key)")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: _err("Not in a state that allows this")}
