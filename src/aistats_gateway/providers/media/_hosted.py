"""Small helpers of the image adapters for hosted APIs (sizes, aspect ratios, task polling).

Invariants: nothing here talks to the database or storage; ``poll`` waits with ``asyncio.sleep``
(never blocks the loop) and gives up after ``give_up_after`` seconds with a retryable ``unavailable``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aistats_gateway.providers.base import ProviderError
from aistats_gateway.providers.protocols import ImageRequest

POLL_SECONDS = 0.5
POLL_TIMEOUT = 300.0


def dimensions(request: ImageRequest) -> tuple[int, int] | None:
    """``size`` as (width, height) when it is ``WxH`` (or ``W*H``); None when open or named."""
    size = (request.size or "").lower().replace("*", "x")
    if "x" not in size:
        return None
    try:
        w, h = (int(v) for v in size.split("x", 1))
    except ValueError:
        raise ProviderError("client", f"size {request.size!r} is not WIDTHxHEIGHT", code="invalid_size",
                            param="size") from None
    return w, h


def nearest_ratio(request: ImageRequest, ratios: tuple[str, ...], default: str) -> str:
    """``aspect_ratio`` when given, else the ratio in ``ratios`` nearest to ``size``, else ``default``."""
    given = request.provider_params.get("aspect_ratio")
    if isinstance(given, str) and given:
        return given
    dims = dimensions(request)
    if dims is None:
        return default

    def value(r: str) -> float:
        a, b = r.split(":")
        return float(a) / float(b)

    target = dims[0] / dims[1]
    return min(ratios, key=lambda r: abs(value(r) - target))


async def poll(fetch: Callable[[], Awaitable[dict[str, Any]]], done: Callable[[dict[str, Any]], bool],
               provider: str, *, every: float = POLL_SECONDS, give_up_after: float = POLL_TIMEOUT) -> dict[str, Any]:
    """Call ``fetch`` until ``done(answer)``; the last answer."""
    deadline = time.monotonic() + give_up_after
    while True:
        got = await fetch()
        if done(got):
            return got
        if time.monotonic() > deadline:
            raise ProviderError("unavailable", f"{provider} did not finish the image within {give_up_after:.0f} s",
                                code="provider_timeout")
        await asyncio.sleep(every)
