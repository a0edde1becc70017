"""The shared kit of the video fakes: what every fake records, times and injects, in one place.

Each fake keeps its own wire format (paths, envelopes, error bodies, status names); this module holds
only what they all do the same way:

* :class:`RecordedRequest` — one row per request that reached a fake (method, path, query, lower-cased
  headers, parsed body, answer status, arrival time on ``time.monotonic``), and :func:`recorded`, the
  endpoint wrapper that records it, runs an optional gate (auth, rate limit) and turns the fake's own
  error type into its own error response.
* :class:`FakeState` — the base of every fake's state: the clock, the render time of jobs created
  afterwards, the request log with :meth:`FakeState.find_requests` / :attr:`FakeState.creates`, and
  the fault knobs with one reading each: fail the next N creates with ``fail_status``
  (:meth:`take_create_failure`), rate-limit the next N authenticated calls with an optional
  ``Retry-After`` (:meth:`take_rate_limit`, :meth:`retry_after`), a create delay (:meth:`create_delay`),
  prompt lists matched case-insensitively (:func:`mentions`). :meth:`FakeState.reset` puts every knob
  back to its value when the fake was built (recorded state is kept unless ``clear=True``).
* Job timing — a job is created at a reading of the fake's clock and takes ``render_seconds``; its status
  is derived from the clock on every read (:func:`stage`, :func:`stepped_progress`), so a job advances
  when it is read and a test can drive it with a fake clock. Cancelling is per fake (some freeze the job,
  some forget it), as are the status names.
* :func:`bearer` — the token of an ``Authorization: Bearer`` header ("" when absent or another scheme).
* :func:`remember` / :func:`replay` — the Idempotency-Key map from key to job id.

Invariants: the state is touched only from the fake's event loop (no locks needed); knobs are plain
fields so a test sets them directly; nothing here changes a fake's documented behaviour.
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "FakeState", "RecordedRequest", "bearer", "mentions", "recorded", "remember", "replay", "stage",
    "stepped_progress",
]


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any = None  # parsed JSON / form dict; None when not parsed
    status: int | None = None  # response status code
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic, not the fake clock)

    @classmethod
    def of(cls, request: Request) -> Self:
        return cls(request.method, request.url.path, dict(request.query_params),
                   {k.lower(): v for k, v in request.headers.items()})


@dataclass
class FakeState:
    """Base of a fake's state. Subclasses redeclare a field to change its default, add their own knobs,
    and name their recorded collections in ``RECORDED`` and their create route in ``CREATE_ROUTE``."""

    clock: Callable[[], float] = time.monotonic
    render_seconds: float = 2.0  # for jobs created afterwards
    # fault injection
    fail_next_creates: int = 0
    fail_status: int = 503
    rate_limit_next: int = 0
    retry_after_seconds: float | None = None
    create_delay_seconds: float = 0.0
    # recorded state
    requests: list[Any] = field(default_factory=list)

    CREATE_ROUTE: ClassVar[tuple[str, str]] = ("POST", "")
    RECORDED: ClassVar[tuple[str, ...]] = ("requests",)  # emptied by reset(clear=True)
    KEPT: ClassVar[tuple[str, ...]] = ()  # set up after construction (e.g. trusted accounts): reset leaves them

    def __post_init__(self) -> None:
        self._initial = {f.name: copy.copy(getattr(self, f.name)) for f in dataclasses.fields(self)
                         if f.name not in self.RECORDED + self.KEPT and not f.name.startswith("_")}
        self._wall0, self._mono0 = time.time(), self.clock()

    # ------------------------------------------------------------ the clock
    def wall(self, mono: float | None = None) -> float:
        """Unix time of a reading of the fake clock (now by default)."""
        return self._wall0 + ((self.clock() if mono is None else mono) - self._mono0)

    def unix(self, mono: float | None = None) -> int:
        return int(self.wall(mono))

    # ------------------------------------------------------------ the request log
    def find_requests(self, method: str | None = None, path: str | None = None) -> list[Any]:
        return [r for r in self.requests if method in (None, r.method) and path in (None, r.path)]

    @property
    def creates(self) -> list[Any]:
        return self.find_requests(*self.CREATE_ROUTE)

    # ------------------------------------------------------------ faults
    def take_create_failure(self) -> int | None:
        """The status to fail this create with, when ``fail_next_creates`` is still counting down."""
        if self.fail_next_creates > 0:
            self.fail_next_creates -= 1
            return self.fail_status
        return None

    def take_rate_limit(self) -> bool:
        """True when this (authenticated) call is one of the next ``rate_limit_next`` to answer 429."""
        if self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            return True
        return False

    def retry_after(self, name: str = "retry-after") -> dict[str, str]:
        """The Retry-After header of an injected 429, or none when ``retry_after_seconds`` is None."""
        return {name: f"{self.retry_after_seconds:g}"} if self.retry_after_seconds is not None else {}

    async def create_delay(self) -> None:
        if self.create_delay_seconds > 0:
            await asyncio.sleep(self.create_delay_seconds)

    def reset(self, *, clear: bool = False, **overrides: Any) -> None:
        """Every knob back to its value when the fake was built (then ``overrides``); with ``clear`` the
        recorded collections are emptied too."""
        for name, value in self._initial.items():
            setattr(self, name, copy.copy(value))
        for name, value in overrides.items():
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__} has no knob {name!r}")
            setattr(self, name, value)
        if clear:
            for name in self.RECORDED:
                getattr(self, name).clear()


# ---------------------------------------------------------------- endpoints


Handler = Callable[..., Awaitable[Response]]


def recorded(state: FakeState, handler: Handler, *, errors: type[Exception] | tuple[type[Exception], ...],
             answer: Callable[[Any, Any], Response],
             gate: Callable[[Request, Any], None] | None = None,
             record: Callable[[Request], RecordedRequest] = RecordedRequest.of,
             args: Callable[[Request, Any], tuple[Any, ...]] | None = None,
             finish: Callable[[Response, Any], None] | None = None) -> Callable[[Request], Awaitable[Response]]:
    """Wrap ``handler(request, rec, *args)``: record the request, run ``gate`` (raise ``errors`` to refuse),
    answer ``errors`` with ``answer(exc, rec)``, record the status of the answer, then ``finish(response,
    rec)`` (headers every answer carries)."""

    async def wrapped(request: Request) -> Response:
        rec = record(request)
        state.requests.append(rec)
        try:
            if gate is not None:
                gate(request, rec)
            response = await handler(request, rec, *(args(request, rec) if args else ()))
        except errors as exc:
            response = answer(exc, rec)
        rec.status = response.status_code
        if finish is not None:
            finish(response, rec)
        return response

    return wrapped


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.startswith("Bearer ") else ""


def mentions(prompt: str, words: Iterable[str]) -> bool:
    """True when the prompt contains any of ``words`` (case-insensitive): the fakes' prompt lists."""
    lowered = prompt.lower()
    return any(w.lower() in lowered for w in words)


# ---------------------------------------------------------------- job timing


def stage(elapsed: float, render_seconds: float, queued_fraction: float, fail_at: float | None = None) -> str:
    """Where a job is ``elapsed`` seconds after its create, on the timeline the fakes share: ``failed`` once
    past ``fail_at`` (a fraction of the render) for a job that fails, ``done`` once rendered, ``queued`` for
    the first ``queued_fraction`` of the render, ``running`` in between. Each fake names these its own way."""
    if fail_at is not None and elapsed >= render_seconds * fail_at:
        return "failed"
    if elapsed >= render_seconds:
        return "done"
    if elapsed < render_seconds * queued_fraction:
        return "queued"
    return "running"


def stepped_progress(fraction: float, steps: int) -> int:
    """Whole-percent progress in ``steps`` equal steps, at most 99 (100 is for a finished job)."""
    steps = max(1, steps)
    return min(99, int(fraction * steps) * 100 // steps)


J = TypeVar("J")


def remember(index: dict[str, str], key: str | None, job_id: str) -> None:
    """Map an Idempotency-Key to the job it created."""
    if key:
        index[key] = job_id


def replay(index: Mapping[str, str], jobs: Mapping[str, J], key: str | None) -> J | None:
    """The job an Idempotency-Key created earlier, while it still exists."""
    if not key:
        return None
    job_id = index.get(key)
    return jobs.get(job_id) if job_id is not None else None
