"""The credit ledger: credits, holds, settle/void exactly once, and recomputation.

Every change is one transaction that writes a ledger entry and moves the workspace's running
totals with a *conditional* UPDATE, so concurrent requests and workers can never overdraw a balance
or finalize a hold twice (PostgreSQL row locks; SQLite's single writer).

Overage (actual usage above the hold, e.g. a chat answer longer than estimated): ``settle_actual``
charges the actual amount when the workspace can pay it (its available balance plus this hold);
otherwise it charges what is available — never less than the hold — and returns the difference as
``shortfall_nanos``, which is stored on the hold and in the settle entry's memo, and which the
product records on its operation. Nothing is undercharged silently.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Result, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from aistats_gateway.auth.tables import ApiKey, Workspace
from aistats_gateway.billing.errors import InsufficientCredits
from aistats_gateway.billing.tables import Hold, LedgerEntry
from aistats_gateway.db.base import utcnow

NANOS = 1_000_000_000


def _affected(result: Result[Any]) -> int:
    """Rows an UPDATE matched (``execute`` returns a CursorResult for DML)."""
    return int(cast("CursorResult[Any]", result).rowcount)


def usd(nanos: int) -> str:
    """Nano-USD as a display string with up to 9 decimals, e.g. 1.5 → "1.50"."""
    d = (Decimal(nanos) / NANOS).quantize(Decimal("0.000000001")).normalize()
    text = format(d, "f")
    if "." not in text:
        return text + ".00"
    whole, frac = text.split(".")
    return f"{whole}.{frac.ljust(2, '0')}"


InsufficientFunds = InsufficientCredits  # the name this module used before billing.errors


@dataclass(frozen=True)
class Balance:
    balance_nanos: int
    held_nanos: int

    @property
    def available_nanos(self) -> int:
        return self.balance_nanos - self.held_nanos


async def credit(s: AsyncSession, workspace_id: str, amount_nanos: int, memo: str | None = None,
                 kind: str = "credit") -> None:
    """Add (or, with kind="adjustment", add or remove) funds. Call inside a transaction."""
    if kind not in ("credit", "adjustment"):
        raise ValueError(kind)
    res = await s.execute(update(Workspace).where(Workspace.id == workspace_id)
                          .values(balance_nanos=Workspace.balance_nanos + amount_nanos))
    if _affected(res) != 1:
        raise LookupError(f"workspace {workspace_id} does not exist")
    s.add(LedgerEntry(workspace_id=workspace_id, kind=kind, amount_nanos=amount_nanos, memo=memo))
    await s.flush()


async def place_hold(s: AsyncSession, *, hold_id: str, workspace_id: str, key_id: str, ref_kind: str, ref: str,
                     amount_nanos: int) -> None:
    """Set ``amount_nanos`` aside for the operation ``(ref_kind, ref)`` (e.g. ``("video", job id)``), or
    raise InsufficientCredits. Call inside a transaction."""
    res = await s.execute(
        update(Workspace)
        .where(Workspace.id == workspace_id, Workspace.balance_nanos - Workspace.held_nanos >= amount_nanos)
        .values(held_nanos=Workspace.held_nanos + amount_nanos)
    )
    if _affected(res) != 1:
        bal = await balance(s, workspace_id)
        raise InsufficientCredits(amount_nanos, bal.available_nanos)
    s.add(Hold(id=hold_id, workspace_id=workspace_id, key_id=key_id, ref_kind=ref_kind, ref=ref,
               amount_nanos=amount_nanos))
    s.add(LedgerEntry(workspace_id=workspace_id, kind="hold", amount_nanos=amount_nanos, hold_id=hold_id,
                      memo=f"hold for {ref}"))
    await s.flush()


@dataclass(frozen=True)
class Settled:
    """What one settle did: the hold, the actual amount asked for, what was charged, what was not."""

    hold_id: str
    held_nanos: int
    actual_nanos: int
    charged_nanos: int
    shortfall_nanos: int


async def settle(s: AsyncSession, hold_id: str, actual_nanos: int) -> bool:
    """``settle_actual``, answering only whether this call did it."""
    return await settle_actual(s, hold_id, actual_nanos) is not None


def overage_charge(actual: int, held: int, can_pay: int) -> int:
    """What a settlement above its hold charges: the actual amount when the workspace can pay it
    (``can_pay`` = its available balance once this hold is released), else what it can, never
    less than the hold (which is always covered)."""
    return min(actual, max(held, can_pay))


def settle_memo(ref: str, held: int, actual: int, shortfall: int) -> str:
    memo = f"settled {ref} (held {usd(held)})"
    if shortfall:
        memo += f"; usage {usd(actual)}, {usd(shortfall)} not covered by the balance"
    elif actual > held:
        memo += f"; usage {usd(actual)} above the hold"
    return memo


async def settle_actual(s: AsyncSession, hold_id: str, actual_nanos: int) -> Settled | None:
    """Charge ``actual_nanos`` and release the hold (see the module docstring for overage). Only the
    one call that did it gets a result; every later or concurrent call is a no-op returning None."""
    hold = await s.get(Hold, hold_id)
    if hold is None:
        return None
    res = await s.execute(update(Hold).where(Hold.id == hold_id, Hold.state == "held")
                          .values(state="settled", finalized_at=utcnow()))
    if _affected(res) != 1:
        return None
    actual = max(0, actual_nanos)
    held = hold.amount_nanos
    charge = min(actual, held)
    for _ in range(20):
        cond: ColumnElement[bool]
        if actual <= held:
            charge = actual
            cond = true()
        else:
            bal = await balance(s, hold.workspace_id)
            charge = overage_charge(actual, held, bal.balance_nanos - (bal.held_nanos - held))
            cond = Workspace.balance_nanos - (Workspace.held_nanos - held) >= charge
        moved = await s.execute(update(Workspace).where(Workspace.id == hold.workspace_id, cond).values(
            balance_nanos=Workspace.balance_nanos - charge, held_nanos=Workspace.held_nanos - held))
        if _affected(moved) == 1:
            break
    else:  # the balance kept moving under us: charge the hold, which is always covered
        charge = held
        await s.execute(update(Workspace).where(Workspace.id == hold.workspace_id).values(
            balance_nanos=Workspace.balance_nanos - charge, held_nanos=Workspace.held_nanos - held))
    shortfall = actual - charge
    await s.execute(update(Hold).where(Hold.id == hold_id).values(settled_nanos=charge, shortfall_nanos=shortfall))
    memo = settle_memo(hold.ref, held, actual, shortfall)
    s.add(LedgerEntry(workspace_id=hold.workspace_id, kind="settle", amount_nanos=charge, hold_id=hold_id, memo=memo))
    await s.flush()
    return Settled(hold_id, held, actual, charge, shortfall)


async def void(s: AsyncSession, hold_id: str, memo: str | None = None) -> bool:
    """Release the hold without charging. Exactly once, like ``settle``."""
    hold = await s.get(Hold, hold_id)
    if hold is None:
        return False
    res = await s.execute(update(Hold).where(Hold.id == hold_id, Hold.state == "held")
                          .values(state="void", finalized_at=utcnow()))
    if _affected(res) != 1:
        return False
    await s.execute(update(Workspace).where(Workspace.id == hold.workspace_id)
                    .values(held_nanos=Workspace.held_nanos - hold.amount_nanos))
    s.add(LedgerEntry(workspace_id=hold.workspace_id, kind="void", amount_nanos=hold.amount_nanos, hold_id=hold_id,
                      memo=memo or f"voided {hold.ref}"))
    await s.flush()
    return True


async def balance(s: AsyncSession, workspace_id: str) -> Balance:
    row = (await s.execute(select(Workspace.balance_nanos, Workspace.held_nanos)
                           .where(Workspace.id == workspace_id))).first()
    if row is None:
        raise LookupError(f"workspace {workspace_id} does not exist")
    return Balance(int(row[0]), int(row[1]))


async def recompute(s: AsyncSession, workspace_id: str) -> Balance:
    """The balance and the amount held, from the ledger alone."""
    sums = dict((k, int(v or 0)) for k, v in (await s.execute(
        select(LedgerEntry.kind, func.sum(LedgerEntry.amount_nanos))
        .where(LedgerEntry.workspace_id == workspace_id).group_by(LedgerEntry.kind))).all())
    finalized = select(LedgerEntry.hold_id).where(LedgerEntry.workspace_id == workspace_id,
                                                  LedgerEntry.kind.in_(("settle", "void")))
    open_held = (await s.execute(select(func.sum(LedgerEntry.amount_nanos)).where(
        LedgerEntry.workspace_id == workspace_id, LedgerEntry.kind == "hold",
        LedgerEntry.hold_id.not_in(finalized)))).scalar()
    return Balance(sums.get("credit", 0) + sums.get("adjustment", 0) - sums.get("settle", 0), int(open_held or 0))


async def entries(s: AsyncSession, workspace_id: str, limit: int = 100) -> list[dict[str, Any]]:
    rows = (await s.execute(select(LedgerEntry).where(LedgerEntry.workspace_id == workspace_id)
                            .order_by(LedgerEntry.id.desc()).limit(limit))).scalars()
    return [{"id": r.id, "kind": r.kind, "amount_nanos": r.amount_nanos, "amount_usd": usd(r.amount_nanos),
             "hold_id": r.hold_id, "memo": r.memo, "created_at": int(r.created_at.timestamp())} for r in rows]


async def spent_since(s: AsyncSession, key_id: str, since: dt.datetime) -> int:
    """What a key has settled plus what it still holds, for holds opened since ``since``."""
    settled = (await s.execute(select(func.sum(Hold.settled_nanos)).where(
        Hold.key_id == key_id, Hold.created_at >= since, Hold.state == "settled"))).scalar()
    held = (await s.execute(select(func.sum(Hold.amount_nanos)).where(
        Hold.key_id == key_id, Hold.created_at >= since, Hold.state == "held"))).scalar()
    return int(settled or 0) + int(held or 0)


async def key_limits(s: AsyncSession, key_id: str) -> tuple[int | None, int | None, int | None]:
    row = (await s.execute(select(ApiKey.rpm_limit, ApiKey.daily_spend_limit_nanos, ApiKey.monthly_spend_limit_nanos)
                           .where(ApiKey.id == key_id))).first()
    return (row[0], row[1], row[2]) if row else (None, None, None)
