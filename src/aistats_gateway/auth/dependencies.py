"""The ``Authorization: Bearer`` check used by every ``/v1`` route.

Every request reads the key row, so a revoked key stops working at once in every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aistats_gateway.auth import keys
from aistats_gateway.auth.tables import ApiKey
from aistats_gateway.http.errors import APIError

bearer = HTTPBearer(auto_error=False, description="An API key: `aistats_v1_sk_<id>_<secret>`")
# The key row's columns the check reads (not its timestamps and labels: fewer values to convert).
_COLUMNS = ("secret_hash", "revoked_at", "workspace_id", "name", "rpm_limit", "tpm_limit",
            "daily_spend_limit_nanos", "monthly_spend_limit_nanos")
# Hash compared when the key id is unknown, so both paths cost the same.
_DUMMY_HASH = "0" * 64


@dataclass(frozen=True)
class Principal:
    key_id: str
    workspace_id: str
    name: str
    # The key's other limits as read with it on this request (fresh, never cached), for the hot paths.
    tpm_limit: int | None = None
    daily_spend_limit_nanos: int | None = None
    monthly_spend_limit_nanos: int | None = None


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


async def require_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> Principal:
    return await authenticate(request, credentials.credentials if credentials is not None else None)


async def authenticate(request: Request, token: str | None) -> Principal:
    """The key check of :func:`require_key` for a token taken from the request by the caller."""
    if not token:
        raise _unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
    parsed = keys.parse(token.strip())
    if parsed is None:
        raise _unauthorized("Incorrect API key provided.")
    state = request.app.state.gateway
    rows = await state.reader.columns_by(ApiKey.__table__, _COLUMNS, "id", parsed.key_id)
    row = SimpleNamespace(**dict(zip(_COLUMNS, rows[0], strict=True))) if rows else None
    ok = keys.verify(state.settings.pepper, parsed.secret, row.secret_hash if row else _DUMMY_HASH)
    if row is None or not ok:
        raise _unauthorized("Incorrect API key provided.")
    if row.revoked_at is not None:
        raise _unauthorized("This API key has been revoked.")
    request.state.key_id = parsed.key_id
    if row.rpm_limit is not None:
        await _count_request(state, parsed.key_id, row.rpm_limit)
    return Principal(parsed.key_id, row.workspace_id, row.name, row.tpm_limit, row.daily_spend_limit_nanos,
                     row.monthly_spend_limit_nanos)


async def _count_request(state: object, key_id: str, limit: int) -> None:
    """Requests per minute per key: a counter row per minute window, incremented atomically."""
    import time

    from aistats_gateway.auth.limits import hit

    now = time.time()
    count = await hit(state.sessions, key_id, int(now // 60))  # type: ignore[attr-defined]
    if count > limit:
        retry = max(1, int(60 - now % 60))
        raise APIError(429, f"Rate limit reached: this key allows {limit} requests per minute. "
                       f"Try again in {retry} s.", code="rate_limit_exceeded", headers={"Retry-After": str(retry)})
