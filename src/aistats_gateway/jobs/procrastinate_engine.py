"""The PostgreSQL job engine: procrastinate queues, many workers, scheduled polls.

One procrastinate task per source (``<source>.run``) carries an item id. After each step the task
defers itself again at the time the step asked for. ``queueing_lock`` keeps at most one queued task
per item; the item's own lease (in its row) keeps two workers from working it at once; and a
reconciler in every worker re-defers due items whose task was lost with a crashed process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

import procrastinate
from procrastinate import exceptions as pexc

from aistats_gateway.jobs.engine import Source

log = logging.getLogger("aistats_gateway.jobs")
QUEUE = "aistats"


def conninfo(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


class ProcrastinateEngine:
    distributed = True  # a deferred task may run in any worker process

    def __init__(self, url: str, sources: list[Source], *, run_worker: bool, concurrency: int = 4,
                 reconcile_every: float = 2.0) -> None:
        self.sources = {s.name: s for s in sources}
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(url)))
        self.run_worker = run_worker
        self.concurrency = concurrency
        self.reconcile_every = reconcile_every
        self._tasks: list[asyncio.Task[Any]] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._open = False
        for source in sources:
            self._register(source)

    def _register(self, source: Source) -> None:
        name = f"{source.name}.run"

        async def step(item_id: str) -> None:
            delay = await source.run(item_id)
            if delay is not None:
                await self.defer(source.name, item_id, delay)

        self.app.task(name=name, queue=QUEUE, pass_context=False)(step)

    async def start(self) -> None:
        await self.app.open_async()
        self._open = True
        if self.run_worker:
            self._tasks.append(asyncio.create_task(self.app.run_worker_async(
                queues=[QUEUE], concurrency=self.concurrency, install_signal_handlers=False,
                delete_jobs="successful", fetch_job_polling_interval=1.0), name="aistats-procrastinate-worker"))
            self._tasks.append(asyncio.create_task(self._reconcile(), name="aistats-reconciler"))

    async def stop(self) -> None:
        for t in [*self._tasks, *self._pending]:
            t.cancel()
        for t in [*self._tasks, *self._pending]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._open:
            await self.app.close_async()
            self._open = False

    async def defer(self, source: str, item_id: str, delay: float = 0.0) -> None:
        task = self.app.tasks[f"{source}.run"]
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=max(delay, 0.0))
        try:
            await task.configure(queueing_lock=f"{source}:{item_id}", schedule_at=when).defer_async(item_id=item_id)
        except pexc.AlreadyEnqueued:
            pass  # a task for this item is already queued; it will see the row as it is then

    def wake(self, source: str, item_id: str) -> None:
        t = asyncio.create_task(self.defer(source, item_id))
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)

    async def _queued(self, locks: list[str]) -> set[str]:
        """Which of these queueing locks already have a waiting task: one query, instead of a
        rejected insert (``AlreadyEnqueued``) per item on every round."""
        rows = await self.app.connector.execute_query_all_async(
            "SELECT queueing_lock FROM procrastinate_jobs WHERE status = 'todo' AND queueing_lock = ANY(%(locks)s)",
            locks=locks)
        return {str(r["queueing_lock"]) for r in rows}

    async def _reconcile(self) -> None:
        """Re-defer due, unleased items: resumes work whose task died with its process."""
        while True:
            try:
                for source in self.sources.values():
                    ids = await source.due(200)
                    queued = await self._queued([f"{source.name}:{i}" for i in ids]) if ids else set()
                    for item_id in ids:
                        if f"{source.name}:{item_id}" not in queued:
                            await self.defer(source.name, item_id)
            except Exception:
                log.exception("reconcile failed")
            await asyncio.sleep(self.reconcile_every)
