"""The ledger's hold / settle / void as plain statements in a lean write transaction (``db.writer.Tx``).

The same rules as :mod:`billing.ledger` and :mod:`billing.service`, for the per-request hot path (an
inference call): the same rows, ledger entries and memos, the same conditional UPDATEs —

* :func:`place_hold` moves ``held_nanos`` only ``WHERE balance - held >= amount`` (else
  ``InsufficientCredits``, and the caller's transaction rolls back), then enforces the key's spend
  limits with the hold counted (``SpendLimitExceeded``);
* :func:`settle` / :func:`void` finalise a hold only ``WHERE state = 'held'`` (exactly once from any
  number of processes; a caller that placed the hold passes :class:`Known` and saves the
  ``RETURNING``); overage is ``ledger.settle_actual``'s rule (the actual amount when the workspace
  can pay it, else what it can, never less than the hold, the shortfall recorded).

So ``ledger.recompute`` explains every balance these functions move, like the ORM path's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from aistats_gateway.billing.errors import InsufficientCredits, SpendLimitExceeded
from aistats_gateway.billing.ledger import Balance, Settled, overage_charge, settle_memo
from aistats_gateway.db.writer import Tx


@dataclass(frozen=True)
class KeyLimits:
    """The spend limits of a key as read with it (``auth``'s key row), None = unlimited."""

    daily_nanos: int | None = None
    monthly_nanos: int | None = None


async def balance(tx: Tx, workspace_id: str) -> Balance:
    row = await tx.one("SELECT balance_nanos, held_nanos FROM workspaces WHERE id = ?", (workspace_id,))
    if row is None:
        raise LookupError(f"workspace {workspace_id} does not exist")
    return Balance(int(row[0]), int(row[1]))


async def _entry(tx: Tx, workspace_id: str, kind: str, amount: int, hold_id: str, memo: str,
                 now: dt.datetime | str) -> None:
    await tx.exec("INSERT INTO ledger_entries (workspace_id, kind, amount_nanos, hold_id, memo, created_at) "
                  "VALUES (?, ?, ?, ?, ?, ?)", (workspace_id, kind, amount, hold_id, memo[:500], now))


async def place_hold(tx: Tx, *, hold_id: str, workspace_id: str, key_id: str, ref_kind: str, ref: str,
                     amount_nanos: int, limits: KeyLimits | None = None) -> None:
    now = tx.now()
    moved = await tx.exec("UPDATE workspaces SET held_nanos = held_nanos + ? WHERE id = ? "
                          "AND balance_nanos - held_nanos >= ?", (amount_nanos, workspace_id, amount_nanos))
    if moved != 1:
        bal = await balance(tx, workspace_id)
        raise InsufficientCredits(amount_nanos, bal.available_nanos)
    await tx.exec("INSERT INTO holds (id, workspace_id, key_id, ref_kind, ref, amount_nanos, state, settled_nanos, "
                  "shortfall_nanos, created_at) VALUES (?, ?, ?, ?, ?, ?, 'held', 0, 0, ?)",
                  (hold_id, workspace_id, key_id, ref_kind, ref, amount_nanos, now))
    await _entry(tx, workspace_id, "hold", amount_nanos, hold_id, f"hold for {ref}", now)
    if limits is None:
        return
    at = now if isinstance(now, dt.datetime) else dt.datetime.fromisoformat(now).replace(tzinfo=dt.UTC)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)  # the hold's own day (it counts in it)
    periods = (("daily", limits.daily_nanos, day), ("monthly", limits.monthly_nanos, day.replace(day=1)))
    for period, limit, since in periods:
        if limit is None:
            continue
        spent = await spent_since(tx, key_id, since)  # includes the hold just placed
        if spent > limit:
            raise SpendLimitExceeded("daily" if period == "daily" else "monthly", limit, spent - amount_nanos,
                                     amount_nanos)


async def spent_since(tx: Tx, key_id: str, since: dt.datetime) -> int:
    """``ledger.spent_since``: settled plus still held, over holds opened since ``since``."""
    row = await tx.one("SELECT COALESCE(SUM(CASE WHEN state = 'settled' THEN settled_nanos "
                       "WHEN state = 'held' THEN amount_nanos ELSE 0 END), 0) FROM holds "
                       "WHERE key_id = ? AND created_at >= ?", (key_id, since))
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Known:
    """What the caller knows of a hold it placed itself (``amount_nanos``, ``workspace_id``, ``ref`` never
    change after :func:`place_hold`): with it, finalising the hold is a plain conditional UPDATE. SQLite's
    ``RETURNING`` costs ~40 µs per statement (measured), most of a settlement."""

    amount_nanos: int
    workspace_id: str
    ref: str


async def _finalise(tx: Tx, hold_id: str, set_sql: str, params: tuple[object, ...],
                    known: Known | None) -> tuple[int, str, str] | None:
    """``UPDATE holds SET <set_sql> WHERE id = ? AND state = 'held'``: (amount, workspace, ref) of the
    hold it moved, or None when it was not held any more."""
    sql = f"UPDATE holds SET {set_sql} WHERE id = ? AND state = 'held'"
    if known is not None:
        if await tx.exec(sql, (*params, hold_id)) != 1:
            return None
        return known.amount_nanos, known.workspace_id, known.ref
    row = await tx.one(sql + " RETURNING amount_nanos, workspace_id, ref", (*params, hold_id))
    return (int(row[0]), str(row[1]), str(row[2])) if row is not None else None


async def settle(tx: Tx, hold_id: str, actual_nanos: int, known: Known | None = None) -> Settled | None:
    """Charge ``actual_nanos`` and release the hold; None when it is not held any more (done before)."""
    now = tx.now()
    actual = max(0, actual_nanos)
    # Within the hold (the common case) the charge is the actual cost, settled in this one UPDATE;
    # above it, the hold row is corrected below once the overage charge is known.
    got = await _finalise(tx, hold_id, "state = 'settled', finalized_at = ?, settled_nanos = CASE WHEN "
                          "amount_nanos >= ? THEN ? ELSE amount_nanos END, shortfall_nanos = 0",
                          (now, actual, actual), known)
    if got is None:
        return None
    held, workspace_id, ref = got
    charge = actual
    if actual <= held:
        await tx.exec("UPDATE workspaces SET balance_nanos = balance_nanos - ?, held_nanos = held_nanos - ? "
                      "WHERE id = ?", (charge, held, workspace_id))
    else:
        for _ in range(20):
            bal = await balance(tx, workspace_id)
            charge = overage_charge(actual, held, bal.balance_nanos - (bal.held_nanos - held))
            moved = await tx.exec("UPDATE workspaces SET balance_nanos = balance_nanos - ?, "
                                  "held_nanos = held_nanos - ? WHERE id = ? AND balance_nanos - (held_nanos - ?) >= ?",
                                  (charge, held, workspace_id, held, charge))
            if moved == 1:
                break
        else:  # the balance kept moving under us: charge the hold, which is always covered
            charge = held
            await tx.exec("UPDATE workspaces SET balance_nanos = balance_nanos - ?, held_nanos = held_nanos - ? "
                          "WHERE id = ?", (charge, held, workspace_id))
        await tx.exec("UPDATE holds SET settled_nanos = ?, shortfall_nanos = ? WHERE id = ?",
                      (charge, actual - charge, hold_id))
    shortfall = actual - charge
    await _entry(tx, workspace_id, "settle", charge, hold_id, settle_memo(ref, held, actual, shortfall), now)
    return Settled(hold_id, held, actual, charge, shortfall)


async def void(tx: Tx, hold_id: str, memo: str | None = None, known: Known | None = None) -> bool:
    """Release the hold without charging, exactly once."""
    now = tx.now()
    got = await _finalise(tx, hold_id, "state = 'void', finalized_at = ?", (now,), known)
    if got is None:
        return False
    held, workspace_id, ref = got
    await tx.exec("UPDATE workspaces SET held_nanos = held_nanos - ? WHERE id = ?", (held, workspace_id))
    await _entry(tx, workspace_id, "void", held, hold_id, memo or f"voided {ref}", now)
    return True
