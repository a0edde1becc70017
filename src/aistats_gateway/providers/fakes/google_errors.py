"""Google's API error envelope ``{"error": {"code", "message", "status", "details"}}`` for the fake Google
Veo APIs (:mod:`.google`)."""
from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from .google_state import FakeGoogleState


class ApiError(Exception):
    """A Google API error: ``{"error": {"code", "message", "status", "details"}}``."""

    def __init__(self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.details, self.headers = code, status, message, details, headers

    def response(self) -> JSONResponse:
        err: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            err["details"] = self.details
        return JSONResponse({"error": err}, status_code=self.code, headers=self.headers)


def invalid(message: str, field_name: str | None = None) -> ApiError:
    details = None
    if field_name:
        details = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": field_name, "description": message}]}]
    return ApiError(400, "INVALID_ARGUMENT", message, details)


def rate_limited(state: FakeGoogleState) -> ApiError:
    return ApiError(429, "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted (e.g. check quota). Please retry in "
                    f"{state.retry_delay_seconds:g}s.",
                    [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                      "retryDelay": f"{state.retry_delay_seconds:g}s"}])


def injected_failure(state: FakeGoogleState) -> ApiError:
    status = state.fail_status
    if status == 429:
        return rate_limited(state)
    names = {500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
             401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 400: "INVALID_ARGUMENT"}
    messages = {503: "The service is currently unavailable.", 500: "Internal error encountered.",
                504: "Deadline expired before operation could complete."}
    return ApiError(status, names.get(status, "UNKNOWN"), messages.get(status, f"Injected failure ({status})."))
