"""A provider's own batch API (OpenAI ``/batches``, Anthropic ``/messages/batches``, Gemini
``batchGenerateContent``): the :class:`BatchProvider` protocol, its typed registry key
:data:`BATCH`, and the small helpers the adapters share.

Invariants:

* An adapter converts rows between the unified request (the inference IR, already cut to what the
  chosen offer supports) and its provider's protocol, and talks to the provider; it never touches
  the database, storage or billing (the batches product does, ``batches/native.py``).
* Every call raises :class:`Ambiguous` when the outcome is unknown (a timeout, 408/429/5xx) or
  :class:`Rejected` for a definitive refusal (another 4xx); the caller reconciles an ambiguous
  submission with :meth:`BatchProvider.find` before it ever submits again.
* Provider ``custom_id``s are ``r<line>`` (valid for every provider); results map back by line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson

from aistats_gateway.llm.ir import IRRequest, IRResponse, Usage
from aistats_gateway.providers.registry import Capability


class Ambiguous(Exception):
    """The provider's answer does not tell whether the call took effect."""


class Rejected(Exception):
    """The provider refused the call definitively (4xx other than 408/429)."""


@dataclass(frozen=True)
class Target:
    """The offer a batch runs on: the provider's model name and the IR features it honours."""

    model_slug: str
    supports: frozenset[str]


@dataclass
class Result:
    line: int
    status: int  # 200, or the provider's error status (0 when it gave none)
    body: dict[str, Any] | None  # the answer in the provider's protocol
    error: dict[str, Any] | None


@dataclass
class Status:
    state: str  # running | completed | cancelled | expired | failed
    native: dict[str, Any]


class BatchProvider(Protocol):
    """One provider's batch API. ``endpoints`` are the gateway endpoints whose rows it can run."""

    endpoints: tuple[str, ...]

    def encode(self, endpoint: str, req: IRRequest | None, body: dict[str, Any], target: Target) -> dict[str, Any]:
        """One row in the provider's protocol: ``req`` is the row decoded (None for endpoints the
        IR does not model, e.g. embeddings: then ``body`` goes through with the model renamed)."""
        ...

    def decode(self, endpoint: str, body: dict[str, Any]) -> tuple[IRResponse | dict[str, Any], Usage]:
        """One answer: the IR response (the caller encodes it for the client's protocol), or the
        body itself when it already is in the client's protocol; and its usage."""
        ...

    async def create(self, http: httpx.AsyncClient, batch_id: str, endpoint: str, window: str,
                     lines: list[tuple[int, dict[str, Any]]]) -> str: ...

    async def find(self, http: httpx.AsyncClient, batch_id: str, total: int, since: dt.datetime) -> list[str]:
        """The provider batches that may be this submission (by metadata: at most one)."""
        ...

    async def status(self, http: httpx.AsyncClient, native_id: str) -> Status: ...

    def results(self, http: httpx.AsyncClient, st: Status) -> AsyncIterator[Result]: ...

    async def cancel(self, http: httpx.AsyncClient, native_id: str) -> None: ...


BATCH: Capability[BatchProvider] = Capability("batch", frozenset({"batch"}))


async def call(http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
    """One request; its JSON (or bytes), else :class:`Ambiguous` / :class:`Rejected`."""
    try:
        r = await http.request(method, url, headers=headers, **kw)
    except httpx.HTTPError as e:
        raise Ambiguous(f"{method} {url}: {type(e).__name__}") from None
    if r.status_code >= 500 or r.status_code in (408, 429):
        raise Ambiguous(f"{method} {url}: HTTP {r.status_code}")
    if r.status_code >= 400:
        raise Rejected(f"HTTP {r.status_code}: {r.text[:500]}")
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.content


def line_of(custom_id: Any) -> int | None:
    s = str(custom_id or "")
    return int(s[1:]) if s.startswith("r") and s[1:].isdigit() else None


def jsonl(data: Any) -> list[bytes]:
    """The non-empty lines of a JSONL answer (bytes, or JSON the client already parsed)."""
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return [line for line in raw.splitlines() if line.strip()]
