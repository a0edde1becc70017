"""The ledger checks the inference, media and batch tests share, read straight from the gateway's database.

* :func:`workspace_of`: the workspace an API key belongs to.
* :func:`assert_books_balance`: the workspace's stored balance equals the ledger recomputed from its entries,
  and the settlements equal the generations' ``cost_nanos`` (optionally: no generation is still running).
* :func:`batch_books`: (settled for the workspace, the sum of one batch's row costs, still held), after
  asserting the ledger recomputes.

Invariants: every read runs on a private loop and engine (``run_async``) and changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from aistats_gateway.auth import keys
from aistats_gateway.auth.tables import ApiKey
from aistats_gateway.batches.tables import BatchRow
from aistats_gateway.billing import ledger
from aistats_gateway.billing.tables import LedgerEntry
from aistats_gateway.inference.tables import Generation
from tests.support.gateway import Gateway, run_async


def workspace_of(gateway: Gateway, key: str) -> str:
    parsed = keys.parse(key)
    assert parsed is not None

    async def work(sessions: Any) -> str:
        async with sessions() as s:
            return str((await s.execute(select(ApiKey.workspace_id).where(ApiKey.id == parsed.key_id))).scalar_one())

    return str(run_async(work, gateway.settings))


async def _settled(s: Any, ws: str) -> int:
    """The sum of the workspace's settle entries (each a positive charge)."""
    value = (await s.execute(select(func.sum(LedgerEntry.amount_nanos)).where(
        LedgerEntry.workspace_id == ws, LedgerEntry.kind == "settle"))).scalar() or 0
    return int(value)


def assert_books_balance(gateway: Gateway, key: str, *, none_in_progress: bool = False) -> None:
    """The ledger recomputes to the running totals, and settlements equal the generations' costs; with
    ``none_in_progress``, no generation of the workspace is still in progress."""
    ws = workspace_of(gateway, key)

    async def work(sessions: Any) -> tuple[Any, Any, int, int, int]:
        async with sessions() as s:
            bal = await ledger.balance(s, ws)
            again = await ledger.recompute(s, ws)
            costs = (await s.execute(select(func.sum(Generation.cost_nanos)).where(
                Generation.workspace_id == ws))).scalar() or 0
            open_ = (await s.execute(select(func.count()).select_from(Generation).where(
                Generation.workspace_id == ws, Generation.status == "in_progress"))).scalar() or 0
            return bal, again, await _settled(s, ws), int(costs), int(open_)

    bal, again, settled, costs, open_ = run_async(work, gateway.settings)
    assert bal == again
    assert settled == costs
    if none_in_progress:
        assert open_ == 0


def batch_books(gateway: Gateway, key: str, batch_id: str) -> tuple[int, int, int]:
    """(settled for the key's workspace, sum of the batch rows' costs, still held); asserts the ledger
    recomputes."""
    ws = workspace_of(gateway, key)

    async def work(sessions: Any) -> tuple[Any, Any, int, int]:
        async with sessions() as s:
            bal = await ledger.balance(s, ws)
            again = await ledger.recompute(s, ws)
            costs = (await s.execute(select(func.sum(BatchRow.cost_nanos)).where(
                BatchRow.batch_id == batch_id))).scalar() or 0
            return bal, again, await _settled(s, ws), int(costs)

    bal, again, settled, costs = run_async(work, gateway.settings)
    assert bal == again
    return settled, costs, bal.held_nanos
