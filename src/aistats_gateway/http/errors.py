"""Errors in the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

log = logging.getLogger("aistats_gateway.errors")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """Raise anywhere in request handling to answer with an OpenAI-shaped error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None,
               type: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param=param, code=code, type=type), status, headers=headers)


def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def _validation_message(err: dict[str, Any], param: str | None) -> str:
    kind = err.get("type", "")
    msg = err.get("msg", "invalid value")
    if kind == "missing":
        return f"Missing required parameter: '{param}'." if param else "Missing required parameter."
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: '{param}'."
    if kind == "json_invalid":
        return "We could not parse the JSON body of your request."
    if param:
        return f"Invalid value for '{param}': {msg}."
    return str(msg)


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request"}
    loc = tuple(first.get("loc", ()))
    param = _param_from_loc(loc)
    code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
    if first.get("type") == "json_invalid":
        param, code = None, "invalid_json"
    if first.get("type") == "extra_forbidden":
        code = "unknown_parameter"
    return error_response(400, _validation_message(first, param), param=param, code=code)


async def _api_error_handler(request: Request, exc: APIError) -> JSONResponse:
    return error_response(exc.status, exc.message, param=exc.param, code=exc.code, type=exc.type,
                          headers=exc.headers)


async def _http_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    if status == 404:
        message, code = f"Unknown request URL: {request.method} {request.url.path}.", "unknown_url"
    elif status == 405:
        from aistats_gateway.http.methods import allowed_methods

        message, code = f"Method {request.method} is not allowed for {request.url.path}.", "method_not_allowed"
        allowed = allowed_methods(request.scope)
        if allowed:
            return error_response(status, message, code=code, headers={"Allow": ", ".join(allowed)})
    else:
        message, code = str(exc.detail), None
    return error_response(status, message, code=code, headers=getattr(exc, "headers", None))


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        log.error("out of disk space", extra={"path": request.url.path})
        return error_response(503, "The gateway is out of disk space; try again later.",
                              code="insufficient_storage", type="server_error", headers={"Retry-After": "30"})
    log.exception("unhandled error", extra={"path": request.url.path})
    return error_response(500, "The server had an error while processing your request.", code="internal_error")


def add_component_schemas(app: FastAPI, models: list[Any]) -> None:
    """Put ``models`` into /openapi.json's components (for bodies a route parses by hand and
    references with ``$ref``), so every ``$ref`` in the document resolves."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = generate()
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            if model.__name__ in components:
                continue
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
            for name, sub in schema.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components[model.__name__] = schema
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    from aistats_gateway.http.domain import install_domain_errors

    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(APIError, _api_error_handler)  # type: ignore[arg-type]
    install_domain_errors(app)
    app.add_exception_handler(StarletteHTTPException, _http_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
    _document_validation_errors(app)


_FASTAPI_422_REF = "#/components/schemas/HTTPValidationError"


def _document_validation_errors(app: FastAPI) -> None:
    """Make /openapi.json say what ``_validation_handler`` does.

    FastAPI documents a ``422 {"detail": [...]}`` on every route with parameters, but validation
    errors are answered with ``400`` and the OpenAI error shape. Replace those 422 entries by that
    400 (keeping a 400 the route documents itself) and drop FastAPI's unused validation schemas.
    """
    from aistats_gateway.http.responses import ErrorResponse

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = generate()
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        replaced = False
        for item in doc.get("paths", {}).values():
            for op in item.values():
                responses = op.get("responses") if isinstance(op, dict) else None
                if not responses or "422" not in responses:
                    continue
                schema = responses["422"].get("content", {}).get("application/json", {}).get("schema", {})
                if schema.get("$ref") != _FASTAPI_422_REF:
                    continue  # a 422 the route documents itself
                del responses["422"]
                responses.setdefault("400", {
                    "description": "Invalid request: the error names the parameter in `param`",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
                })
                replaced = True
        if replaced:
            if "ErrorResponse" not in components:
                defs = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(defs.pop("$defs", {}))
                components["ErrorResponse"] = defs
            if _FASTAPI_422_REF.rsplit("/", 1)[1] not in str(doc.get("paths")):
                components.pop("HTTPValidationError", None)
                components.pop("ValidationError", None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
