"""The one fallback loop every capability uses, and the attempt record it produces.

``run_with_fallback(offers, call, breaker)`` calls ``call(offer)`` for each offer in order:

* success → returns ``(result, attempts)`` at once;
* ``ProviderError`` whose kind is in ``providers.base.RETRYABLE_KINDS`` → recorded, counted by the
  breaker, and the next offer is tried;
* any other ``ProviderError`` (``client``, ``content_policy``) → recorded, and raised as
  :class:`FallbackFailed` with ``retryable=False`` — the request itself is at fault, so no other
  provider is asked;
* an offer whose circuit is open is not called: a ``skipped`` attempt (code ``circuit_open``) is recorded;
* nothing left → :class:`FallbackFailed` with the last provider error (or ``no_provider`` when every
  offer was skipped) and ``retryable=True``.

Other exceptions (bugs, cancellation) propagate untouched. Every attempt is an :class:`Attempt`;
the product stores ``[a.as_dict() for a in attempts]`` on the operation it served (a video job's
``attempts`` column, a chat generation's record).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from aistats_gateway.providers.base import RETRYABLE_KINDS, ProviderError
from aistats_gateway.routing.breaker import CircuitBreaker

Outcome = Literal["accepted", "error", "skipped"]


class Routable(Protocol):
    """Anything naming the provider it is served by (a catalogue ``ProviderOffer``, a :class:`Target`)."""

    @property
    def provider_id(self) -> str: ...


@dataclass(frozen=True)
class Target:
    """A provider to try when only its id (and the provider's model slug) is at hand, e.g. a stored job."""

    provider_id: str
    slug: str | None = None


OfferT = TypeVar("OfferT", bound=Routable)
R = TypeVar("R")


@dataclass(frozen=True)
class Attempt:
    """One provider call made (or skipped) for an operation."""

    provider: str
    outcome: Outcome
    at: int  # unix seconds
    status: int | None = None  # the provider's HTTP status, when it answered
    code: str | None = None
    message: str | None = None
    kind: str | None = None  # ProviderError.kind, for errors
    duration_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The stored form: the keys the video API always showed (provider, outcome, status, code,
        message, at)."""
        return {"provider": self.provider, "outcome": self.outcome, "status": self.status, "code": self.code,
                "message": self.message, "at": self.at}


class FallbackFailed(Exception):
    """No offer served the request. ``error`` decides the answer; ``attempts`` are what was tried."""

    def __init__(self, error: ProviderError, attempts: list[Attempt], *, retryable: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts
        self.retryable = retryable


def is_retryable(error: ProviderError) -> bool:
    return error.kind in RETRYABLE_KINDS


async def run_with_fallback(
    offers: Sequence[OfferT],
    call: Callable[[OfferT], Awaitable[R]],
    breaker: CircuitBreaker | None,
    *,
    clock: Callable[[], float] = time.time,
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[R, list[Attempt]]:
    """Try ``offers`` in order with ``call`` until one succeeds (see the module docstring).

    Returns the first result and every attempt; raises :class:`FallbackFailed` otherwise."""
    attempts: list[Attempt] = []
    last: ProviderError | None = None
    for offer in offers:
        pid = offer.provider_id
        if breaker is not None and not breaker.allow(pid):
            breaker.record_skip(pid)
            attempts.append(Attempt(pid, "skipped", int(clock()), code="circuit_open",
                                    message="skipped: too many recent failures (circuit open)"))
            continue
        started = timer()
        try:
            result = await call(offer)
        except ProviderError as e:
            elapsed = round((timer() - started) * 1000, 1)
            retryable = is_retryable(e)
            attempts.append(Attempt(pid, "error", int(clock()), e.status, e.code, e.message, e.kind, elapsed))
            if breaker is not None:
                breaker.record_failure(pid, retryable=retryable)
            if not retryable:
                raise FallbackFailed(e, attempts, retryable=False) from e
            last = e
            continue
        seconds = timer() - started
        if breaker is not None:
            breaker.record_success(pid, seconds)
        attempts.append(Attempt(pid, "accepted", int(clock()), duration_ms=round(seconds * 1000, 1)))
        return result, attempts
    error = last or ProviderError("unavailable", "no provider could take the job", code="no_provider")
    raise FallbackFailed(error, attempts, retryable=True)
