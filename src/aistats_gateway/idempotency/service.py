"""Safe retries: the ``Idempotency-Key`` request header on creating routes.

Invariants
----------
* A key is scoped to the API key and the route (``scope``) and lives ``ttl`` seconds (24 h by
  default). Its row records a fingerprint of the request (the parsed body, canonical JSON, plus any
  uploaded file's digest), the resource it created and, once finished, the response.
* The same key with the same request returns the first response (``Idempotent-Replayed: true``)
  without running the handler again: no second hold, no second upstream call.
* The same key with a different request is 409 ``idempotency_key_reused``.
* Concurrent duplicates wait (polling the row) for the first to finish, up to ``wait_seconds``;
  then 409 ``idempotency_key_in_use`` with ``Retry-After``.
* The running request keeps a lease on the row (heartbeat). If its process dies, a duplicate
  takes the row over once the lease lapses: when the dead request had already stored its resource
  (linked in the *same* transaction, see :meth:`Claim.attach`), the resource's current state is
  returned instead of creating another; otherwise the request runs afresh.
* Only 2xx answers are remembered. An error answer releases the key, so a retry runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from aistats_gateway.db.base import utcnow
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.idempotency.tables import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII
_KEEP_HEADERS = ("content-type", "openai-poll-after-ms")
Sessions = async_sessionmaker[AsyncSession]


_LARGE = 64 * 1024


def _digest_large(node: Any) -> Any:
    """A copy of ``node`` in which long strings are replaced by their sha256 (hashlib releases the GIL)."""
    if isinstance(node, str):
        return "sha256:" + hashlib.sha256(node.encode()).hexdigest() if len(node) > _LARGE else node
    if isinstance(node, dict):
        return {k: _digest_large(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_digest_large(v) for v in node]
    return node


def _fingerprint(data: Any, upload: bytes | None, extra: str, blobs: list[memoryview]) -> str:
    h = hashlib.sha256(orjson.dumps(_digest_large(data), option=orjson.OPT_SORT_KEYS))
    h.update(b"\x00" + hashlib.sha256(upload).digest() if upload is not None else b"\x00-")
    for blob in blobs:  # parts of the body kept as bytes (large data: URLs)
        h.update(b"\x00" + hashlib.sha256(blob).digest())
    h.update(extra.encode())
    return h.hexdigest()


async def fingerprint(data: Any, upload: bytes | None = None, extra: str = "",
                      blobs: list[memoryview] | None = None) -> str:
    """sha256 of the canonical request (the parsed body, key order ignored, plus any upload and the
    body parts kept as bytes), computed in a worker thread. ``data`` is depth-checked already."""
    return await asyncio.to_thread(_fingerprint, data, upload, extra, blobs or [])


def key_from(request: Request) -> str | None:
    value = request.headers.get(HEADER)
    if value is None:
        return None
    if not _KEY.match(value):
        raise bad_request(f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} visible ASCII characters.", HEADER,
                          "invalid_idempotency_key")
    return value


@dataclass
class Claim:
    sessions: Sessions
    scope: str
    key: str
    owner: str
    lease: float

    async def attach(self, s: AsyncSession, resource_id: str) -> None:
        """Link the created resource, in the transaction that creates it."""
        await s.execute(update(IdempotencyRecord).where(
            IdempotencyRecord.scope == self.scope, IdempotencyRecord.key == self.key,
            IdempotencyRecord.owner == self.owner).values(resource_id=resource_id))

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(max(self.lease / 3, 0.2))
            with contextlib.suppress(Exception):
                async with self.sessions() as s, s.begin():
                    await s.execute(update(IdempotencyRecord).where(
                        IdempotencyRecord.scope == self.scope, IdempotencyRecord.key == self.key,
                        IdempotencyRecord.owner == self.owner)
                        .values(locked_until=utcnow() + dt.timedelta(seconds=self.lease)))

    async def finish(self, response: Response) -> None:
        headers = {k: v for k, v in response.headers.items() if k.lower() in _KEEP_HEADERS}
        async with self.sessions() as s, s.begin():
            await s.execute(update(IdempotencyRecord).where(
                IdempotencyRecord.scope == self.scope, IdempotencyRecord.key == self.key,
                IdempotencyRecord.owner == self.owner).values(
                    state="done", status_code=response.status_code, response_body=bytes(response.body).decode(),
                    response_headers=headers))

    async def release(self) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(delete(IdempotencyRecord).where(
                IdempotencyRecord.scope == self.scope, IdempotencyRecord.key == self.key,
                IdempotencyRecord.owner == self.owner))


@dataclass
class Replay:
    status_code: int
    body: bytes
    headers: dict[str, str]


@dataclass
class Recovered:
    """The previous owner died after creating ``resource_id``; this request now owns the key."""

    claim: Claim
    resource_id: str


def _conflict(message: str, code: str, retry_after: int | None = None) -> APIError:
    return APIError(409, message, param=HEADER, code=code,
                    headers={"Retry-After": str(retry_after)} if retry_after else None)


async def begin(sessions: Sessions, scope: str, key: str, fp: str, *, ttl: float, lease: float = 30.0,
                wait_seconds: float = 120.0, poll: float = 0.05) -> Claim | Replay | Recovered:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    owner = "i_" + secrets.token_hex(8)
    claim = Claim(sessions, scope, key, owner, lease)
    while True:
        now = utcnow()
        try:
            async with sessions() as s, s.begin():
                s.add(IdempotencyRecord(scope=scope, key=key, fingerprint=fp, state="running", owner=owner,
                                        locked_until=now + dt.timedelta(seconds=lease), created_at=now,
                                        expires_at=now + dt.timedelta(seconds=ttl)))
            return claim
        except IntegrityError:
            pass
        async with sessions() as s:
            row = await s.get(IdempotencyRecord, (scope, key))
        if row is None:
            continue  # released or expired meanwhile: try again
        if row.expires_at <= now:
            async with sessions() as s, s.begin():
                await s.execute(delete(IdempotencyRecord).where(
                    IdempotencyRecord.scope == scope, IdempotencyRecord.key == key,
                    IdempotencyRecord.expires_at <= now))
            continue
        if row.fingerprint != fp:
            raise _conflict(f"This {HEADER} was already used with a different request; use a new key for a new "
                            "request.", "idempotency_key_reused")
        if row.state == "done":
            return Replay(row.status_code or 200, (row.response_body or "").encode(),
                          dict(row.response_headers or {}))
        if row.locked_until < now:  # its owner died: take the key over
            async with sessions() as s, s.begin():
                took = await s.execute(update(IdempotencyRecord).where(
                    IdempotencyRecord.scope == scope, IdempotencyRecord.key == key,
                    IdempotencyRecord.owner == row.owner, IdempotencyRecord.state == "running")
                    .values(owner=owner, locked_until=now + dt.timedelta(seconds=lease)))
            if getattr(took, "rowcount", 0) == 1:
                return Recovered(claim, row.resource_id) if row.resource_id else claim
            continue
        if loop.time() >= deadline:
            raise _conflict(f"A request with this {HEADER} is still being processed; retry shortly.",
                            "idempotency_key_in_use", retry_after=1)
        await asyncio.sleep(poll)


def _replayed(status: int, body: bytes, headers: dict[str, str]) -> Response:
    return Response(body, status_code=status, headers={**headers, REPLAYED_HEADER: "true"})


async def run(request: Request, sessions: Sessions, *, scope: str, fp: str, ttl: float,
              handler: Callable[[Claim | None], Awaitable[Response]],
              recover: Callable[[str], Awaitable[Response]]) -> Response:
    """Answer ``request`` through ``handler`` at most once per Idempotency-Key (see the module doc)."""
    key = key_from(request)
    if key is None:
        return await handler(None)
    outcome = await begin(sessions, scope, key, fp, ttl=ttl)
    if isinstance(outcome, Replay):
        return _replayed(outcome.status_code, outcome.body, outcome.headers)
    claim = outcome.claim if isinstance(outcome, Recovered) else outcome
    beat = asyncio.get_running_loop().create_task(claim.heartbeat())
    try:
        if isinstance(outcome, Recovered):
            response = await recover(outcome.resource_id)
        else:
            response = await handler(claim)
    except BaseException:
        beat.cancel()
        with contextlib.suppress(Exception):
            await asyncio.shield(claim.release())
        raise
    beat.cancel()
    if 200 <= response.status_code < 300:
        await claim.finish(response)
        if isinstance(outcome, Recovered):
            response.headers[REPLAYED_HEADER] = "true"
    else:
        await claim.release()
    return response


async def purge_expired(sessions: Sessions) -> int:
    async with sessions() as s, s.begin():
        res = await s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utcnow()))
        return int(getattr(res, "rowcount", 0) or 0)


__all__ = ["HEADER", "Claim", "Recovered", "Replay", "begin", "fingerprint", "key_from", "purge_expired", "run"]
