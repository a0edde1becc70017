"""Chunk leases of batch rows (``batches.chunks``) and the row runner (``batches.rows``) on SQLite and
PostgreSQL, with an injected clock and a fake upstream that records every call:

* two claimers of one batch get disjoint pages, together every row;
* a call that outlasts the lease keeps its rows (the heartbeat extends them): another runner
  finds nothing to claim, every row goes upstream once;
* a runner stalled past its whole lease loses its rows to another runner and then sends none of
  the rows it had not started (it re-checks its lease before each send), and its late result is
  not written over the other runner's;
* results are written in grouped transactions (far fewer commits than rows).

The clock only moves when the test moves it; every wait waits for an outcome (safety timeout)."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace
from typing import Any

from sqlalchemy import event, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from aistats_gateway.auth.tables import Workspace
from aistats_gateway.batches import chunks, execute, rows
from aistats_gateway.batches.tables import Batch, BatchRow
from aistats_gateway.db.engine import create_engine
from tests.support.gateway import Database

SAFETY = 20.0
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Upstream:
    """Records each row sent; calls wait for ``gate`` when it is set up."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.calls: list[tuple[str, str]] = []  # (runner, row id)
        self.gate = gate
        self.arrived = asyncio.Event()

    def runner(self, name: str) -> Any:
        async def call(state: Any, limits: Any, batch: Any, row: Any, routes: Any = None,
                       http: Any = None) -> execute.Outcome:
            self.calls.append((name, row.id))
            self.arrived.set()
            if self.gate is not None:
                await self.gate.wait()
            return execute.Outcome("completed", "openai", 200, {"by": name}, None, {"total_tokens": 1}, 7)
        return call

    def sent(self, row_id: str) -> int:
        return sum(1 for _, r in self.calls if r == row_id)


async def _setup(db: Database, n: int) -> tuple[AsyncEngine, list[str]]:
    eng = create_engine(db.url, pool_size=4)
    now = T0 - dt.timedelta(seconds=1)
    async with eng.begin() as conn:
        await conn.execute(insert(Workspace.__table__).values(id="ws_1", name="w", created_at=now))
        await conn.execute(insert(Batch.__table__).values(
            id="batch_1", workspace_id="ws_1", key_id="k", status="in_progress", mode="gateway",
            endpoint="/v1/chat/completions", completion_window="24h", total=n, completed=0, failed=0,
            progress_bucket=0, hold_nanos=0, cost_nanos=0, created_at=now, updated_at=now,
            expires_at=T0 + dt.timedelta(days=1), next_run_at=now))
        await conn.execute(insert(BatchRow.__table__), [
            {"id": f"batch_1:{i}", "batch_id": "batch_1", "workspace_id": "ws_1", "line": i, "custom_id": f"c{i}",
             "body": b"{}", "status": "queued", "attempts": 0, "cost_nanos": 0, "created_at": now,
             "updated_at": now, "next_run_at": now} for i in range(1, n + 1)])
    return eng, [f"batch_1:{i}" for i in range(1, n + 1)]


def _run(eng: AsyncEngine, owner: str, up: Upstream, clock: Clock, **kw: Any) -> rows.RowRun:
    settings = rows.RowSettings(clock=clock, beat_every=3600.0, flush_seconds=0.02, **kw)
    return rows.RowRun(SimpleNamespace(sessions=None, jobs=None), execute.Limits(), settings, "batch_1", owner,
                       up.runner(owner), engine=eng)


async def _calls(up: Upstream, n: int) -> None:
    """Wait until ``n`` calls reached the upstream."""
    async with asyncio.timeout(SAFETY):
        while len(up.calls) < n:
            up.arrived.clear()
            await up.arrived.wait()


async def _state(eng: AsyncEngine) -> dict[str, tuple[str, int, Any]]:
    async with eng.connect() as conn:
        got = await conn.execute(select(BatchRow.id, BatchRow.status, BatchRow.cost_nanos, BatchRow.response,
                                        BatchRow.lease_owner))
        return {r[0]: (r[1], r[2], r[3] and bytes(r[3]), r[4]) for r in got}


def test_two_claimers_get_disjoint_pages(database: Database) -> None:
    async def main() -> None:
        eng, ids = await _setup(database, 30)
        try:
            got = await asyncio.gather(*(chunks.claim(eng, "batch_1", f"o{i}", 8, T0, 30) for i in range(4)))
            flat = [r.id for page in got for r in page]
            assert len(flat) == len(set(flat)) == 30  # no row twice, every row once
            again = await chunks.claim(eng, "batch_1", "late", 8, T0, 30)
            assert again == []  # every row leased
            lapsed = await chunks.claim(eng, "batch_1", "late", 100, T0 + dt.timedelta(seconds=31), 30)
            assert sorted(r.id for r in lapsed) == sorted(ids)  # lapsed leases are workable again
        finally:
            await eng.dispose()

    asyncio.run(main())


def test_a_call_longer_than_the_lease_keeps_its_rows(database: Database) -> None:
    async def main() -> None:
        eng, ids = await _setup(database, 4)
        clock = Clock()
        up = Upstream(asyncio.Event())
        a = _run(eng, "A", up, clock, concurrency=4, chunk=4, lease_seconds=30)
        task = asyncio.create_task(a.run())
        try:
            await _calls(up, 4)  # every row in a (blocked) call
            clock.advance(25)
            await a.beat()  # the heartbeat: leases now end at T0 + 55 s
            clock.advance(20)  # T0 + 45 s: past the first lease
            b = _run(eng, "B", up, clock, concurrency=4, chunk=4, lease_seconds=30)
            await asyncio.wait_for(b.run(), SAFETY)
            assert b.sent == 0  # nothing to claim: A still holds every row
            assert up.gate is not None
            up.gate.set()
            await asyncio.wait_for(task, SAFETY)
            assert sorted(r for _, r in up.calls) == sorted(ids)  # each row sent once
            state = await _state(eng)
            assert all(st == "completed" and owner is None for st, _, _, owner in state.values())
            assert a.written == 4
        finally:
            task.cancel()
            await eng.dispose()

    asyncio.run(main())


def test_a_stalled_runner_sends_none_of_the_rows_it_lost(database: Database) -> None:
    async def main() -> None:
        eng, ids = await _setup(database, 4)
        clock = Clock()
        up = Upstream()
        slow = Upstream(asyncio.Event())
        a = _run(eng, "A", slow, clock, concurrency=1, chunk=4, lease_seconds=30)
        task = asyncio.create_task(a.run())
        try:
            await _calls(slow, 1)  # A holds 4 rows, one in a call, 3 waiting
            first = slow.calls[0][1]
            clock.advance(31)  # A stalls past its whole lease (no heartbeat)
            b = _run(eng, "B", up, clock, concurrency=4, chunk=4, lease_seconds=30)
            await asyncio.wait_for(b.run(), SAFETY)
            assert sorted(r for _, r in up.calls) == sorted(ids)  # B took every lapsed row
            assert slow.gate is not None
            slow.gate.set()  # A wakes up: its call ends, then it looks at its 3 other rows
            await asyncio.wait_for(task, SAFETY)
            assert [r for _, r in slow.calls] == [first]  # A sent nothing it had lost
            for rid in ids:
                assert up.sent(rid) + slow.sent(rid) == (2 if rid == first else 1)
            state = await _state(eng)
            assert all(st == "completed" and b'"B"' in (resp or b"") for st, _, resp, _ in state.values())
            assert a.written == 0 and b.written == 4  # A's late answer was not written over B's
        finally:
            task.cancel()
            await eng.dispose()

    asyncio.run(main())


def test_results_are_written_in_groups(database: Database) -> None:
    async def main() -> None:
        eng, _ = await _setup(database, 200)
        commits = 0

        def on_commit(_: Any) -> None:
            nonlocal commits
            commits += 1

        event.listen(eng.sync_engine, "commit", on_commit)
        up = Upstream()
        run = _run(eng, "A", up, Clock(), concurrency=16, chunk=50, lease_seconds=30, flush_rows=50)
        try:
            await asyncio.wait_for(run.run(), SAFETY)
            state = await _state(eng)
            assert all(st == "completed" and cost == 7 for st, cost, _, _ in state.values())
            assert len(up.calls) == 200 and run.written == 200
            assert commits <= 200 // 4, commits  # claims + grouped writes, not one commit per row
        finally:
            await eng.dispose()

    asyncio.run(main())


def test_due_batches_are_round_robin_across_workspaces(database: Database) -> None:
    """One workspace's backlog of batches never hides another workspace's batch: the due list takes
    each workspace's oldest batch before any workspace's second, and a process runs at most its
    per-workspace share of batch runners at once."""
    async def main() -> None:
        eng = create_engine(database.url, pool_size=4)
        now = T0 - dt.timedelta(seconds=60)
        try:
            async with eng.begin() as conn:
                for ws in ("ws_a", "ws_b"):
                    await conn.execute(insert(Workspace.__table__).values(id=ws, name=ws, created_at=now))
                # ws_a created five batches before ws_b's only one
                plan = [("ws_a", i) for i in range(5)] + [("ws_b", 5)]
                for ws, i in plan:
                    bid = f"batch_{i}"
                    at = now + dt.timedelta(seconds=i)
                    await conn.execute(insert(Batch.__table__).values(
                        id=bid, workspace_id=ws, key_id="k", status="in_progress", mode="gateway",
                        endpoint="/v1/chat/completions", completion_window="24h", total=1, completed=0, failed=0,
                        progress_bucket=0, hold_nanos=0, cost_nanos=0, created_at=at, updated_at=at,
                        expires_at=T0 + dt.timedelta(days=1), next_run_at=at))
                    await conn.execute(insert(BatchRow.__table__).values(
                        id=f"{bid}:1", batch_id=bid, workspace_id=ws, line=1, custom_id="c", body=b"{}",
                        status="queued", attempts=0, cost_nanos=0, created_at=at, updated_at=at, next_run_at=at))
            seen: dict[str, str] = {}
            assert await chunks.batches_with_due_rows(eng, T0, 2, seen) == ["batch_0", "batch_5"]
            assert await chunks.batches_with_due_rows(eng, T0, 4) == ["batch_0", "batch_5", "batch_1", "batch_2"]
            assert seen == {f"batch_{i}": ("ws_b" if i == 5 else "ws_a") for i in range(6)}
        finally:
            await eng.dispose()

        from aistats_gateway.batches import runner

        ctx = runner.BatchContext(SimpleNamespace(), workspace_cap=2, workspace_of=dict(seen))
        assert ctx.admit("batch_0") and ctx.admit("batch_1")
        assert not ctx.admit("batch_2")  # ws_a has its share of this process's slots
        assert ctx.admit("batch_5")  # ws_b still gets one
        ctx.leave("batch_0")
        assert ctx.admit("batch_2")
        assert ctx.limiter.running == {"ws_a": 2, "ws_b": 1}

    asyncio.run(main())
