"""The lean, group-committed write path of an inference call (``db.writer``, ``billing.lean``,
``inference.charge``), on SQLite and PostgreSQL, without an HTTP server:

* 100 concurrent calls against a balance that covers only some of them: never overdrawn, exactly the
  covered ones hold, every one closes charged once, the ledger recomputes (and on SQLite they really
  were group-committed);
* a transaction that fails inside a group is rolled back alone;
* SQLite: a group that finds the database locked by another connection goes to the writer thread and
  commits once the lock is released, while the event loop keeps running;
* SQLite: under sustained writes the WAL is restarted (it does not grow with every write);
* a process SIGKILLed while making calls leaves no double charge: after the sweep every generation
  is finalised once and settlements equal the generations' costs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from aistats_gateway.auth.tables import Workspace
from aistats_gateway.billing import accounts, ledger
from aistats_gateway.billing.errors import InsufficientCredits
from aistats_gateway.billing.tables import Hold, LedgerEntry
from aistats_gateway.catalogue.schema import PriceRule
from aistats_gateway.db import writer
from aistats_gateway.db.engine import create_engine, session_factory
from aistats_gateway.inference import charge
from aistats_gateway.inference.tables import Generation
from aistats_gateway.llm.ir import Usage
from aistats_gateway.migrate import upgrade
from tests.support.gateway import Database, new_database

PEPPER = b"writer-test-pepper"
RULES = [PriceRule(meter="input_tokens", unit="token", unit_size=1_000_000, price="1.00"),
         PriceRule(meter="output_tokens", unit="token", unit_size=1_000_000, price="2.00")]
COST = 800 * 1000 + 700 * 2000  # Usage(800, 700) at $1 / $2 per million tokens, in nano-USD


def run(db: Database, fn: Any) -> Any:
    async def main() -> Any:
        engine = create_engine(db.url, pool_size=4)
        try:
            return await fn(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


async def new_key(sessions: Any, credits_nanos: int) -> tuple[str, str]:
    async with sessions() as s, s.begin():
        k = await accounts.create_key(s, PEPPER, "w", credits_nanos=credits_nanos)
    return k.id, k.workspace_id


async def books(sessions: Any, ws: str) -> tuple[ledger.Balance, ledger.Balance, int, int, int]:
    async with sessions() as s:
        bal = await ledger.balance(s, ws)
        again = await ledger.recompute(s, ws)
        settled = (await s.execute(select(func.sum(LedgerEntry.amount_nanos)).where(
            LedgerEntry.workspace_id == ws, LedgerEntry.kind == "settle"))).scalar() or 0
        costs = (await s.execute(select(func.sum(Generation.cost_nanos)).where(
            Generation.workspace_id == ws))).scalar() or 0
        open_ = (await s.execute(select(func.count()).select_from(Hold).where(
            Hold.workspace_id == ws, Hold.state == "held"))).scalar() or 0
    return bal, again, int(settled), int(costs), int(open_)


def test_100_concurrent_calls_never_overdraw_and_charge_once(database: Database) -> None:
    hold = charge.estimate([RULES], 1000, 1000)  # 3,000,000 nanos each
    assert hold == 3_000_000
    covered = 37

    async def work(sessions: Any) -> tuple[Any, ...]:
        key_id, ws = await new_key(sessions, hold * covered + hold // 2)
        calls = [charge.Call(f"gen_w{i:03d}{key_id}", ws, key_id, "chat.completions", "m", False, hold, 2000)
                 for i in range(100)]
        before = writer.sqlite_writer(database.url.split(":///", 1)[1]).groups if database.backend == "sqlite" else 0
        opened = await asyncio.gather(*(charge.open_call(sessions, c, tpm_tokens=1000) for c in calls),
                                      return_exceptions=True)
        ok = [c for c, r in zip(calls, opened) if r is None]
        refused = [r for r in opened if isinstance(r, InsufficientCredits)]
        mid = await books(sessions, ws)
        closed = await asyncio.gather(*(charge.close_call(sessions, c, charge.Outcome(
            "completed", "openai", None, Usage(800, 700), RULES)) for c in ok))
        again = await asyncio.gather(*(charge.close_call(sessions, c, charge.Outcome(
            "completed", "openai", None, Usage(800, 700), RULES)) for c in ok))  # a second close-out: no-op
        groups = (writer.sqlite_writer(database.url.split(":///", 1)[1]).groups - before
                  if database.backend == "sqlite" else None)
        return ok, refused, mid, closed, again, await books(sessions, ws), groups

    ok, refused, mid, closed, again, end, groups = run(database, work)
    assert len(ok) == covered and len(refused) == 100 - covered
    bal, recomputed, _, _, open_holds = mid
    assert bal.available_nanos >= 0 and bal.held_nanos == hold * covered and bal == recomputed
    assert open_holds == covered
    assert all(n == COST for n, _ in closed)
    assert all(n == 0 for n, _ in again)
    bal, recomputed, settled, costs, open_holds = end
    assert bal == recomputed and bal.held_nanos == 0 and open_holds == 0
    assert settled == costs == covered * COST
    if groups is not None:  # 100 opens and 37 closes, submitted together: far fewer commits than calls
        assert groups < 20


def test_a_hold_is_finalised_once_with_or_without_what_its_caller_knows(database: Database) -> None:
    """``lean.settle`` / ``lean.void`` with ``Known`` (no RETURNING) and without it finalise a hold
    exactly once between them, and the books recompute."""
    from aistats_gateway.billing import lean

    async def work(sessions: Any) -> tuple[Any, ...]:
        key_id, ws = await new_key(sessions, 10_000)
        known = {h: lean.Known(1_000, ws, h) for h in ("a", "b")}

        async def place(tx: writer.Tx) -> None:
            for h in known:
                await lean.place_hold(tx, hold_id=f"hold_{h}", workspace_id=ws, key_id=key_id, ref_kind="generation",
                                      ref=h, amount_nanos=1_000)

        async def finish(tx: writer.Tx) -> tuple[Any, ...]:
            return (await lean.settle(tx, "hold_a", 400, known["a"]), await lean.void(tx, "hold_a"),
                    await lean.settle(tx, "hold_a", 400, known["a"]), await lean.void(tx, "hold_b"),
                    await lean.settle(tx, "hold_b", 400, known["b"]), await lean.void(tx, "hold_b", known=known["b"]))

        await writer.run(sessions, place)
        got = await writer.run(sessions, finish)
        return got, await books(sessions, ws)

    (settled, void_after, settle_again, voided, settle_voided, void_again), (bal, again, paid, _, open_) = run(
        database, work)
    assert settled is not None and settled.charged_nanos == 400 and settled.held_nanos == 1_000
    assert void_after is False and settle_again is None
    assert voided is True and settle_voided is None and void_again is False
    assert bal == again and bal.held_nanos == 0 and bal.balance_nanos == 10_000 - 400 and paid == 400 and open_ == 0


def test_spend_limits_count_the_hold_being_placed(database: Database) -> None:
    """The lean hold enforces the key's daily and monthly limits with the new hold counted in its own
    day and month (the group's timestamp), concurrent calls included."""
    from aistats_gateway.billing.errors import SpendLimitExceeded

    async def work(sessions: Any) -> tuple[list[Any], list[Any], Any]:
        key_id, ws = await new_key(sessions, 100_000_000)
        daily = charge.KeyLimits(daily_nanos=5_000_000)
        monthly = charge.KeyLimits(monthly_nanos=3_000_000)
        calls = [charge.Call(f"gen_l{i}{key_id}", ws, key_id, "chat.completions", "m", False, 2_000_000, 10,
                             limits=daily) for i in range(3)]
        got = await asyncio.gather(*(charge.open_call(sessions, c, tpm_tokens=1) for c in calls),
                                   return_exceptions=True)
        more = charge.Call(f"gen_m{key_id}", ws, key_id, "chat.completions", "m", False, 2_000_000, 10, limits=monthly)
        got_monthly = await asyncio.gather(charge.open_call(sessions, more, tpm_tokens=1), return_exceptions=True)
        return got, got_monthly, await books(sessions, ws)

    daily_got, monthly_got, (bal, again, _, _, open_) = run(database, work)
    # which two of the three concurrent calls fit is up to the backend's ordering; exactly two do
    refused = [r for r in daily_got if r is not None]
    assert daily_got.count(None) == 2 and len(refused) == 1
    assert isinstance(refused[0], SpendLimitExceeded) and refused[0].period == "daily"
    assert isinstance(monthly_got[0], SpendLimitExceeded) and monthly_got[0].period == "monthly"
    assert bal == again and bal.held_nanos == 4_000_000 and open_ == 2


def test_a_failing_transaction_is_rolled_back_alone(database: Database) -> None:
    async def work(sessions: Any) -> tuple[Any, Any, Any]:
        _, ws = await new_key(sessions, 1000)

        async def bump(tx: writer.Tx) -> int:
            return await tx.exec("UPDATE workspaces SET balance_nanos = balance_nanos + 1 WHERE id = ?", (ws,))

        async def bump_then_fail(tx: writer.Tx) -> int:
            await tx.exec("UPDATE workspaces SET balance_nanos = balance_nanos + 100 WHERE id = ?", (ws,))
            raise ValueError("no")

        got = await asyncio.gather(writer.run(sessions, bump), writer.run(sessions, bump_then_fail),
                                   writer.run(sessions, bump), return_exceptions=True)
        async with sessions() as s:
            bal = (await s.execute(select(Workspace.balance_nanos).where(Workspace.id == ws))).scalar()
        return got[0], got[1], bal

    first, second, bal = run(database, work)
    assert first == 1 and isinstance(second, ValueError) and bal == 1002


def test_sqlite_locked_database_goes_to_the_writer_thread_without_blocking_the_loop(tmp_path: Path) -> None:
    db = new_database("sqlite", tmp_path)
    upgrade(db.url)
    path = db.url.split(":///", 1)[1]

    async def work(sessions: Any) -> tuple[int, int, int]:
        _, ws = await new_key(sessions, 1000)
        w = writer.sqlite_writer(path)
        handed = w.handed_over
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another connection holds the write lock

        async def bump(tx: writer.Tx) -> int:
            return await tx.exec("UPDATE workspaces SET balance_nanos = balance_nanos + 5 WHERE id = ?", (ws,))

        task = asyncio.ensure_future(writer.run(sessions, bump))
        ticks = 0
        for _ in range(20):  # the loop keeps turning while the write waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert not task.done()
        locker.execute("COMMIT")
        locker.close()
        assert await asyncio.wait_for(task, 30) == 1
        async with sessions() as s:
            bal = (await s.execute(select(Workspace.balance_nanos).where(Workspace.id == ws))).scalar()
        return ticks, w.handed_over - handed, int(bal or 0)

    ticks, handed, bal = run(db, work)
    assert ticks == 20 and handed >= 1 and bal == 1005


def test_sqlite_wal_stays_bounded_under_sustained_writes(tmp_path: Path, monkeypatch: Any) -> None:
    db = new_database("sqlite", tmp_path)
    upgrade(db.url)
    path = db.url.split(":///", 1)[1]
    monkeypatch.setattr(writer.SQLiteWriter, "CHECKPOINT_EVERY", 10)
    monkeypatch.setattr(writer, "RESTART_FRAMES", 100)

    async def work(sessions: Any) -> tuple[int, int]:
        _, ws = await new_key(sessions, 1000)
        w = writer.sqlite_writer(path)
        before = w.groups

        async def bump(tx: writer.Tx) -> int:
            await tx.exec("INSERT INTO ledger_entries (workspace_id, kind, amount_nanos, memo, created_at) "
                          "VALUES (?, 'grant', 0, ?, ?)", (ws, "x" * 400, dt.datetime.now(dt.UTC)))
            return await tx.exec("UPDATE workspaces SET balance_nanos = balance_nanos + 1 WHERE id = ?", (ws,))

        for _ in range(1500):  # no pause between groups: a passive checkpoint alone never catches up
            await asyncio.gather(*(writer.run(sessions, bump) for _ in range(3)))
        probe = sqlite3.connect(path, isolation_level=None)  # while the writer's connections are open
        try:
            for _ in range(100):  # -1 while the writer thread's own checkpoint runs
                frames = int(probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
                if frames >= 0:
                    break
                await asyncio.sleep(0.02)
        finally:
            probe.close()
        return w.groups - before, frames

    groups, frames = run(db, work)
    assert groups >= 1500
    assert 0 <= frames < groups // 3, f"{frames} WAL frames after {groups} group commits: the WAL was not restarted"


CHILD = textwrap.dedent("""
    import asyncio, sys
    from aistats_gateway.db.engine import create_engine, session_factory
    from aistats_gateway.inference import charge
    from aistats_gateway.llm.ir import Usage
    from tests.test_inference_writer import RULES

    url, key_id, ws = sys.argv[1:4]

    async def main():
        sessions = session_factory(create_engine(url, pool_size=2))
        i = 0
        while True:
            calls = [charge.Call(f"gen_k{i}_{j}_{key_id}", ws, key_id, "chat.completions", "m", False, 3000, 2000)
                     for j in range(8)]
            i += 1
            await asyncio.gather(*(charge.open_call(sessions, c, tpm_tokens=1) for c in calls))
            print("opened", flush=True)
            await asyncio.gather(*(charge.close_call(sessions, c, charge.Outcome(
                "completed", "openai", None, Usage(800, 700), RULES)) for c in calls[:6]))
            print("closed", flush=True)

    asyncio.run(main())
""")


def test_a_killed_process_leaves_no_double_charge(database: Database, tmp_path: Path) -> None:
    key_id, ws = run(database, lambda sessions: new_key(sessions, 10**12))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    child = subprocess.Popen([sys.executable, str(script), database.url, key_id, ws], stdout=subprocess.PIPE,
                             env=env, cwd=root)
    try:
        assert child.stdout is not None
        for _ in range(6):  # let it open and close a few rounds of calls, then kill it mid-work
            assert child.stdout.readline().strip() in (b"opened", b"closed")
        time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)

    async def sweep(sessions: Any) -> tuple[Any, ...]:
        async with sessions() as s:
            left = (await s.execute(select(func.count()).select_from(Generation).where(
                Generation.workspace_id == ws, Generation.status == "in_progress"))).scalar()
            per_hold = (await s.execute(select(LedgerEntry.hold_id, func.count()).where(
                LedgerEntry.workspace_id == ws, LedgerEntry.kind.in_(("settle", "void")))
                .group_by(LedgerEntry.hold_id))).all()
        swept = await charge.sweep_stale(sessions, older_than=0)
        async with sessions() as s:
            still = (await s.execute(select(func.count()).select_from(Generation).where(
                Generation.workspace_id == ws, Generation.status == "in_progress"))).scalar()
            finals = (await s.execute(select(LedgerEntry.hold_id, func.count()).where(
                LedgerEntry.workspace_id == ws, LedgerEntry.kind.in_(("settle", "void")))
                .group_by(LedgerEntry.hold_id))).all()
            gens = (await s.execute(select(func.count()).select_from(Generation).where(
                Generation.workspace_id == ws))).scalar()
        return left, per_hold, swept, still, finals, gens, await books(sessions, ws)

    left, per_hold, swept, still, finals, gens, end = run(database, sweep)
    assert left and left >= 2  # the child left calls open (two per round at least)
    assert all(n == 1 for _, n in per_hold)
    assert swept == left and still == 0
    assert len(finals) == gens and all(n == 1 for _, n in finals)  # every call finalised exactly once
    bal, recomputed, settled, costs, open_holds = end
    assert bal == recomputed and open_holds == 0 and bal.held_nanos == 0
    assert settled == costs > 0
