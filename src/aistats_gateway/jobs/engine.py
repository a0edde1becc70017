"""Background work. The database rows are the truth; engines only decide *when* and *where* the
task functions run.

* ``LocalEngine`` (SQLite default, or PostgreSQL without separate workers): runs due work in this
  process. It scans each source's table for due, unleased rows, so on start every unfinished job is
  found and resumed, and several processes sharing one database never run the same row at once.
* ``ProcrastinateEngine`` (PostgreSQL): the same task functions dispatched through procrastinate's
  PostgreSQL queue to any number of worker processes (``aistats-gateway worker``). A reconciler in
  each worker re-defers rows that are due but have no queued task (after a crash), so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("aistats_gateway.jobs")


@dataclass(frozen=True)
class Source:
    """A kind of background work: how to find due rows and how to advance one."""

    name: str
    due: Callable[[int], Awaitable[list[str]]]  # up to N ids whose work is due and not leased
    run: Callable[[str], Awaitable[float | None]]  # advance one; seconds until due again, or None


class JobEngine(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def wake(self, source: str, item_id: str) -> None: ...


class LocalEngine:
    def __init__(self, sources: list[Source], *, concurrency: int = 4, tick: float = 0.25) -> None:
        self.sources = {s.name: s for s in sources}
        self.concurrency = concurrency
        self.tick = tick
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="aistats-local-engine")

    async def stop(self) -> None:
        self._stopping = True
        self._event.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in list(self._running.values()):
            t.cancel()
        for t in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def wake(self, source: str, item_id: str) -> None:
        self._event.set()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self._fill()
            except Exception:
                log.exception("job scan failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event.wait(), self.tick)
            self._event.clear()

    async def _fill(self) -> None:
        for source in self.sources.values():
            free = self.concurrency - len(self._running)
            if free <= 0:
                return
            for item_id in await source.due(free + len(self._running)):
                key = (source.name, item_id)
                if key in self._running or len(self._running) >= self.concurrency:
                    continue
                self._running[key] = asyncio.create_task(self._run(source, item_id))

    async def _run(self, source: Source, item_id: str) -> None:
        try:
            delay = await source.run(item_id)
            if delay is not None and delay <= self.tick:
                self._event.set()
        except Exception:
            log.exception("background task failed", extra={"source": source.name, "id": item_id})
        finally:
            self._running.pop((source.name, item_id), None)
            self._event.set()
