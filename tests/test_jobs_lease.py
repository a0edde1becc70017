"""The generic job lease (``jobs.lease``) and the in-process engine's fair scheduling, on SQLite
and PostgreSQL: of two claimers exactly one wins; a batch claim never hands one row to two
claimers; a lost lease cancels the step; transitions only move forward and tell the terminal hooks
once; due rows are picked round-robin across workspaces with a per-workspace cap.

Every wait here waits for an outcome (with a generous safety timeout), never for a duration."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from aistats_gateway.db.base import UTCDateTime, utcnow
from aistats_gateway.db.engine import create_engine
from aistats_gateway.jobs import lease as leases
from aistats_gateway.jobs.engine import (
    GroupLimiter,
    LeasedWork,
    LocalEngine,
    leased_source,
)
from tests.support.gateway import BACKENDS, Database, new_database

meta = MetaData()
ITEMS = Table(
    "lease_items", meta,
    Column("id", String(40), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("workspace_id", String(40), nullable=False),
    Column("lease_owner", String(100), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("next_run_at", UTCDateTime(), nullable=False),
)
UNOWNED = Table(  # the webhook outbox's shape: no owner column, fenced by the lease deadline
    "lease_unowned", meta,
    Column("id", String(40), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
)
LT = leases.LeaseTable(kind="item", table=ITEMS, active=("queued", "running"), terminal=("done", "failed"),
                       group_col="workspace_id")
LT_UNOWNED = leases.LeaseTable(kind="unowned", table=UNOWNED, active=("pending",), terminal=("sent",),
                               owner_col=None, due_col="next_attempt_at")
SAFETY = 20.0  # seconds: only ever reached when something is broken


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    db = new_database(request.param, tmp_path)
    try:
        yield db
    finally:
        db.drop()


async def _engine(db: Database) -> AsyncEngine:
    eng = create_engine(db.url, pool_size=4)
    async with eng.begin() as conn:
        await conn.run_sync(meta.create_all)
    return eng


def _run(database: Database, body: Callable[..., Awaitable[None]], engines: int = 1) -> None:
    """``await body(*engines)`` on a fresh loop: the first engine creates the test tables, each further one
    is another "process" on the same database; all are disposed of afterwards."""

    async def main() -> None:
        first = await _engine(database)
        more = [create_engine(database.url, pool_size=4) for _ in range(engines - 1)]
        try:
            await body(first, *more)
        finally:
            for eng in (first, *more):
                await eng.dispose()

    asyncio.run(main())


async def _add(eng: AsyncEngine, *rows: dict[str, Any]) -> None:
    async with eng.begin() as conn:
        await conn.execute(insert(ITEMS), list(rows))


def _row(item_id: str, ws: str = "ws_a", *, at: dt.datetime | None = None, status: str = "queued") -> dict[str, Any]:
    return {"id": item_id, "status": status, "workspace_id": ws, "lease_owner": None, "lease_until": None,
            "next_run_at": at or utcnow() - dt.timedelta(seconds=60)}


async def _status(eng: AsyncEngine, item_id: str) -> Any:
    async with eng.connect() as conn:
        return (await conn.execute(select(ITEMS).where(ITEMS.c.id == item_id))).one()


async def _until(cond: Any) -> None:
    """Bounded poll: check ``cond`` every 10 ms; TimeoutError once SAFETY seconds pass without it holding."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SAFETY
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {SAFETY}s")
        await asyncio.sleep(0.01)


def test_two_claimers_one_wins(database: Database) -> None:
    async def main(a: AsyncEngine, b: AsyncEngine) -> None:  # two "processes"
        await _add(a, _row("i1"))
        got = await asyncio.gather(*(leases.claim(e, LT, "i1", f"w{n}", 30) for n, e in enumerate([a, b] * 4)))
        winners = [g for g in got if g is not None]
        assert len(winners) == 1
        row = await _status(a, "i1")
        assert row.lease_owner == winners[0].owner
        # Not re-entrant: the winner itself cannot claim it again while the lease lasts.
        assert await leases.claim(a, LT, "i1", winners[0].owner, 30) is None
        # Releasing someone else's lease does nothing; the holder's release frees it.
        other = leases.Lease(LT, "i1", "intruder", utcnow(), 30)
        assert not await leases.release(a, other, 5.0)
        assert await leases.release(a, winners[0], 0.0)
        assert (await _status(a, "i1")).lease_owner is None
        assert await leases.claim(b, LT, "i1", "w9", 30) is not None

    _run(database, main, engines=2)


def test_batch_claims_never_overlap(database: Database) -> None:
    async def main(a: AsyncEngine, b: AsyncEngine) -> None:
        await _add(a, *(_row(f"i{n:02d}", f"ws_{n % 3}") for n in range(30)))
        await _add(a, _row("later", at=utcnow() + dt.timedelta(hours=1)), _row("gone", status="done"))
        results = await asyncio.gather(*(leases.claim_due(e, LT, f"w{n}", 30, 7)
                                         for n, e in enumerate([a, b, a, b, a, b])))
        ids = [lease.item_id for batch in results for lease in batch]
        assert len(ids) == len(set(ids))  # no row handed to two claimers
        assert set(ids) <= {f"i{n:02d}" for n in range(30)}  # nothing not due, nothing finished
        more = await leases.claim_due(a, LT, "w_last", 30, 100)
        assert set(ids) | {x.item_id for x in more} == {f"i{n:02d}" for n in range(30)}
        assert await leases.next_due(a, LT) is not None  # "later" is the next due row

    _run(database, main, engines=2)


def test_losing_the_lease_cancels_the_step(database: Database) -> None:
    async def main(eng: AsyncEngine) -> None:
        await _add(eng, _row("i1"))
        lease = await leases.claim(eng, LT, "i1", "w1", 1.5)  # heartbeat every 0.5 s
        assert lease is not None
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def step(held: leases.Lease) -> float | None:
            started.set()
            try:
                await asyncio.Event().wait()  # a step that would run forever
            finally:
                cancelled.set()
            return 1.0

        runner = asyncio.create_task(leases.run_leased(eng, lease, step))
        await asyncio.wait_for(started.wait(), SAFETY)
        async with eng.begin() as conn:  # another process took the row (this one "stalled")
            await conn.execute(update(ITEMS).where(ITEMS.c.id == "i1").values(lease_owner="w2"))
        assert await asyncio.wait_for(runner, SAFETY) is None
        assert cancelled.is_set()
        assert (await _status(eng, "i1")).lease_owner == "w2"  # the loser released nothing

    _run(database, main)


def test_heartbeat_keeps_and_release_schedules(database: Database) -> None:
    async def main(eng: AsyncEngine) -> None:
        await _add(eng, _row("i1"))
        lease = await leases.claim(eng, LT, "i1", "w1", 30)
        assert lease is not None
        first = lease.until
        assert await leases.heartbeat(eng, lease) and lease.until >= first
        assert await leases.release(eng, lease, 3600.0)
        row = await _status(eng, "i1")
        assert row.lease_until is None and row.next_run_at > utcnow() + dt.timedelta(minutes=59)
        assert await leases.claim_due(eng, LT, "w1", 30, 10) == []  # not due any more

    _run(database, main)


def test_unowned_table_is_fenced_by_its_deadline(database: Database) -> None:
    async def main(eng: AsyncEngine) -> None:
        async with eng.begin() as conn:
            await conn.execute(insert(UNOWNED), [{"id": "d1", "status": "pending", "lease_until": None,
                                                  "next_attempt_at": utcnow()}])
        first = await leases.claim(eng, LT_UNOWNED, "d1", "x", 30)
        assert first is not None and await leases.claim(eng, LT_UNOWNED, "d1", "x", 30) is None
        async with eng.begin() as conn:  # the first holder stalled past its lease
            await conn.execute(update(UNOWNED).values(lease_until=utcnow() - dt.timedelta(seconds=1)))
        second = await leases.claim(eng, LT_UNOWNED, "d1", "x", 30)
        assert second is not None
        assert not await leases.heartbeat(eng, first) and not await leases.release(eng, first, 1.0)
        assert await leases.heartbeat(eng, second) and await leases.release(eng, second, None, status="sent")
        assert await leases.due_ids(eng, LT_UNOWNED, 10) == []

    _run(database, main)


def test_transitions_only_move_forward_and_tell_terminal_hooks_once(database: Database) -> None:
    async def main(eng: AsyncEngine) -> None:
        await _add(eng, _row("i1"))
        events = leases.JobEvents()
        seen: list[tuple[str, str, str, str]] = []

        async def on_status(item_id: str, old: str, new: str) -> None:
            seen.append(("status", item_id, old, new))

        async def on_terminal(item_id: str, old: str, new: str) -> None:
            seen.append(("terminal", item_id, old, new))

        async def broken(item_id: str, old: str, new: str) -> None:
            raise RuntimeError("a failing hook does not undo the move")

        events.on_status("item", on_status)
        events.on_terminal("item", broken)
        events.on_terminal("item", on_terminal)
        events.on_terminal("other", on_terminal)
        forward = ("queued",)
        assert await leases.transition(eng, LT, "i1", "running", forward, events=events)
        assert not await leases.transition(eng, LT, "i1", "queued", ("running",) * 0, events=events)
        assert not await leases.transition(eng, LT, "i1", "running", forward, events=events)
        results = await asyncio.gather(*(leases.transition(eng, LT, "i1", new, ("queued", "running"),
                                                           events=events) for new in ["done", "failed"] * 3))
        assert results.count(True) == 1
        final = (await _status(eng, "i1")).status
        assert not await leases.transition(eng, LT, "i1", "running", ("queued",), events=events)
        assert seen == [("status", "i1", "queued", "running"), ("status", "i1", "running", final),
                        ("terminal", "i1", "running", final)]
        assert not await leases.transition(eng, LT, "missing", "done", ("queued",), events=events)

    _run(database, main)


def _work(eng: AsyncEngine, started: list[str], gates: dict[str, asyncio.Event], cap: int | None) -> LeasedWork:
    async def step(held: leases.Lease) -> float | None:
        started.append(held.item_id)
        await gates.setdefault(held.item_id, asyncio.Event()).wait()
        await leases.transition(eng, LT, held.item_id, "done", ("queued", "running"))
        return None

    return LeasedWork(db=eng, table=LT, step=step, owner="w1", seconds=30, limiter=GroupLimiter(cap=cap))


@asynccontextmanager
async def _scheduling(eng: AsyncEngine, backlog: int, cap: int | None,
                      concurrency: int) -> AsyncIterator[tuple[list[str], dict[str, asyncio.Event]]]:
    """Workspace A's ``backlog`` jobs a0, a1, ... due first (in that order), then B's single job b0, run by a
    started LocalEngine; each step waits for its gate. Yields (the items started, in order; the gates);
    afterwards every gate opens and the engine stops."""
    now = utcnow()
    await _add(eng, *(_row(f"a{n}", "ws_a", at=now - dt.timedelta(seconds=100 - n)) for n in range(backlog)))
    await _add(eng, _row("b0", "ws_b", at=now - dt.timedelta(seconds=1)))
    started: list[str] = []
    gates: dict[str, asyncio.Event] = {}
    engine = LocalEngine([leased_source("items", _work(eng, started, gates, cap=cap))], concurrency=concurrency)
    await engine.start()
    try:
        yield started, gates
    finally:
        for g in gates.values():
            g.set()
        await engine.stop()


def test_one_workspace_cannot_take_every_slot(database: Database) -> None:
    """Workspace A's long backlog is due first; B's single job is claimed while A's first jobs still
    run, because A may hold at most ``cap`` of the engine's slots."""

    async def main(eng: AsyncEngine) -> None:
        async with _scheduling(eng, backlog=6, cap=2, concurrency=3) as (started, gates):
            await _until(lambda: len(started) == 3)
            assert sorted(started) == ["a0", "a1", "b0"]  # B did not wait for A's backlog
            for item in ("a0", "a1", "b0"):
                gates.setdefault(item, asyncio.Event()).set()
            await _until(lambda: len(started) == 5)
            assert set(started[3:]) == {"a2", "a3"}  # never more than two of A at once

    _run(database, main)


def test_due_rows_are_taken_round_robin_across_workspaces(database: Database) -> None:
    """One slot, no cap: after A's first job, B's job (due later than all of A's) goes next."""

    async def main(eng: AsyncEngine) -> None:
        async with _scheduling(eng, backlog=4, cap=None, concurrency=1) as (started, gates):
            for n in range(5):
                await _until(lambda n=n: len(started) == n + 1)  # type: ignore[misc]
                gates.setdefault(started[-1], asyncio.Event()).set()
            assert started[:3] == ["a0", "b0", "a1"]
            assert sorted(started) == ["a0", "a1", "a2", "a3", "b0"]

    _run(database, main)


def test_fair_order_unit() -> None:
    cands = [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("c1", "C"), ("b2", "B")]
    assert [i for i, _ in leases.fair_order(cands)] == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert [i for i, _ in leases.fair_order(cands, running={"A": 1})] == ["b1", "c1", "a1", "b2", "a2", "a3"]
    assert [i for i, _ in leases.fair_order(cands, running={"A": 1}, cap=1)] == ["b1", "c1"]
    assert [i for i, _ in leases.fair_order(cands, recent={"A": 5, "B": 2})] == ["c1", "b1", "a1", "b2", "a2",
                                                                                  "a3"]


def test_a_task_for_a_capped_workspace_is_handed_back(database: Database) -> None:
    """The procrastinate path (``LeasedWork.run_one``): a row whose workspace already runs ``cap``
    steps in this process is released and due again shortly, without running its step; another
    workspace's row runs."""

    async def main(eng: AsyncEngine) -> None:
        await _add(eng, _row("a1", "ws_a"), _row("b1", "ws_b"))
        started: list[str] = []
        gates = {"b1": asyncio.Event()}
        gates["b1"].set()
        work = _work(eng, started, gates, cap=1)
        work.limiter.enter("ws_a")  # ws_a already runs one step here
        assert await work.run_one("a1") == work.capped_retry
        row = await _status(eng, "a1")
        assert row.lease_owner is None and row.status == "queued" and row.next_run_at > utcnow()
        assert await work.run_one("b1") is None
        assert started == ["b1"] and (await _status(eng, "b1")).status == "done"
        work.limiter.leave("ws_a")

    _run(database, main)
