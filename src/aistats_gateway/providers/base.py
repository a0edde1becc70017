"""The small protocols a provider module implements, the unified request it receives, and the one
error type (with the one set of retryable kinds) every capability uses.

A video adapter implements ``submit``, ``poll``, ``open_output`` and ``cancel``. It never touches
the database or storage: the job runner does that with what the adapter returns. Its registry key
is ``VIDEO`` (``registry.get(pid, VIDEO)`` is a ``VideoProvider | None``); other capabilities define
their protocol and key next to each other (chat/embeddings/moderation in ``providers/inference.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from aistats_gateway.providers.registry import Capability

ErrorKind = Literal["client", "auth", "rate_limit", "content_policy", "quota", "unavailable", "not_found", "upstream"]

# The one set of kinds after which the next provider is tried, for every capability (routing's
# fallback loop and circuit breaker use it). They say something about *this provider*, not about the
# request: it is rate limiting or down (``rate_limit``, ``unavailable``), answered garbage
# (``upstream``), refuses the gateway's credential or has no quota left (``auth``, ``quota``, the
# operator's problem, which another provider may not share), or does not know the model slug
# (``not_found``). ``client`` and ``content_policy`` are about the request and would fail the same
# way elsewhere, so they end the request with the provider's answer.
RETRYABLE_KINDS: frozenset[str] = frozenset({"rate_limit", "unavailable", "upstream", "auth", "quota", "not_found"})


class ProviderError(Exception):
    """A provider call failed.

    ``kind`` decides what happens: ``client``/``content_policy`` are the caller's problem and are
    returned as 400; every kind in ``RETRYABLE_KINDS`` — ``rate_limit``, ``unavailable`` (connection
    error, timeout, 408, 5xx), ``upstream`` (a malformed answer), ``auth``/``quota`` (the operator's)
    and ``not_found`` — makes the router try the next provider.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.param = param

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


def error_from_status(status: int, message: str, *, code: str | None = None,
                      retry_after: float | None = None) -> ProviderError:
    """The usual HTTP status → kind mapping; adapters refine it with the provider's own codes."""
    if status in (401, 403):
        return ProviderError("auth", message, status=status, code=code or "provider_auth_failed")
    if status == 402:
        return ProviderError("quota", message, status=status, code=code or "provider_quota_exceeded")
    if status == 404:
        return ProviderError("not_found", message, status=status, code=code or "not_found")
    if status == 408:
        return ProviderError("unavailable", message, status=status, code=code or "provider_timeout")
    if status == 429:
        return ProviderError("rate_limit", message, status=status, code=code or "rate_limit_exceeded",
                             retry_after=retry_after)
    if status >= 500:
        return ProviderError("unavailable", message, status=status, code=code or "provider_unavailable")
    return ProviderError("client", message, status=status, code=code or "provider_rejected_request")


@dataclass(frozen=True)
class ImageInput:
    """An input image, already fetched through the SSRF guard or decoded from a data URL."""

    role: str  # first_frame | last_frame | reference | source | mask
    content: bytes
    mime_type: str
    url: str | None = None  # the original https URL, for providers that prefer URLs
    reference_type: str | None = None


@dataclass(frozen=True)
class VideoRequest:
    """The unified, validated request handed to an adapter."""

    job_id: str  # also the idempotency key
    model_slug: str  # the provider's own model id
    prompt: str
    duration: int | float | None
    width: int | None
    height: int | None
    resolution: str | None
    aspect_ratio: str | None
    size: str | None
    seed: int | None = None
    sample_count: int = 1
    negative_prompt: str | None = None
    generate_audio: bool | None = None
    enhance_prompt: bool | None = None
    person_generation: str | None = None
    compression_quality: int | None = None
    resize_mode: str | None = None
    images: tuple[ImageInput, ...] = ()
    provider_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Submitted:
    native_id: str
    status: str = "queued"  # our status vocabulary
    poll_after: float | None = None  # seconds until the first poll
    progress: int | None = None


@dataclass(frozen=True)
class OutputRef:
    """Where one output can be fetched: a URL (plain or authenticated), inline bytes, or a handle."""

    index: int
    url: str | None = None
    data: bytes | None = None
    mime_type: str | None = "video/mp4"
    handle: str | None = None  # adapter-specific (e.g. a file id or a local path)
    expires_at: float | None = None
    duration_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "url": self.url, "mime_type": self.mime_type, "handle": self.handle,
                "expires_at": self.expires_at, "duration_seconds": self.duration_seconds,
                "inline": self.data is not None}


@dataclass(frozen=True)
class Polled:
    status: str  # queued | in_progress | completed | failed | cancelled | expired
    progress: int | None = None  # 0..100 when the provider reports it
    outputs: tuple[OutputRef, ...] = ()
    error_code: str | None = None
    error_message: str | None = None
    poll_after: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)  # e.g. {"seconds": 8, "count": 1}


class VideoProvider(Protocol):
    provider_id: str
    can_cancel: bool
    # Seconds between polls (first value) and the cap of the backoff; the job expires after deadline.
    poll_interval: float
    max_poll_interval: float
    deadline_seconds: float

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted: ...

    async def poll(self, native_id: str, ctx: CallContext) -> Polled: ...

    def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]: ...

    async def cancel(self, native_id: str, ctx: CallContext) -> bool: ...


@dataclass
class CallContext:
    """What an adapter may use: the shared HTTP client and its own configuration."""

    http: httpx.AsyncClient
    api_key: str | None
    base_url: str | None
    data_dir: Path | None = None  # for the local renderer's scratch space
    progress: Callable[[int], Coroutine[Any, Any, None]] | None = None  # for adapters reporting progress as they work
    extra: dict[str, Any] = field(default_factory=dict)


VIDEO: Capability[VideoProvider] = Capability("video", frozenset({"video.generation"}))
