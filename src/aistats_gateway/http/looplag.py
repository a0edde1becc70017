"""Event-loop lag: how late the loop runs a task that asked to wake up.

A small task sleeps ``interval`` seconds in a loop and records how much later than asked it woke
up. Anything that blocks the loop (a CPU-heavy parse, a blocking call) shows up here as lag. It is
exported in ``/metrics`` as ``aistats_event_loop_lag_seconds`` (a histogram of every sample) and
``aistats_event_loop_lag_max_seconds`` (the largest sample since start). The budget is ~50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry, Gauge, Histogram

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopLag:
    def __init__(self, registry: CollectorRegistry, interval: float = 0.02) -> None:
        self.interval = interval
        self.histogram = Histogram("aistats_event_loop_lag_seconds", "How late the event loop woke a sleeping task",
                                   registry=registry, buckets=BUCKETS)
        self.max_gauge = Gauge("aistats_event_loop_lag_max_seconds", "Largest event-loop lag since start",
                               registry=registry)
        self.max_seen = 0.0
        self._task: asyncio.Task[None] | None = None

    def observe(self, lag: float) -> None:
        lag = max(lag, 0.0)
        self.histogram.observe(lag)
        if lag > self.max_seen:
            self.max_seen = lag
            self.max_gauge.set(lag)

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.observe(time.perf_counter() - start - self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
