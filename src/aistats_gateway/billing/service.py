"""Billing by reference: hold before any provider call, then settle priced lines or void, once.

A hold belongs to an operation named by a :class:`Ref` — ``Ref("video", job_id)``, later
``Ref("batch", batch_id)`` … — and its id is ``hold_<ref id>`` (operation ids carry their kind's
prefix, so they never collide). Billing knows nothing of the products: the product prices its usage
(``billing.pricing``) and hands the lines to :func:`settle`, then stores the returned
:class:`Settlement` (``billing_doc``) on its operation in the same transaction.

Both ``settle`` and ``void`` are idempotent and safe from any number of processes at once (the
hold's conditional state change decides who does it). Overage is ``ledger.settle_actual``'s rule:
the actual amount when the workspace can pay it, else what it can (never less than the hold) with
the shortfall recorded. Errors are domain errors (``billing.errors``); the HTTP layer answers 402.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from aistats_gateway.billing import ledger
from aistats_gateway.billing.errors import SpendLimitExceeded
from aistats_gateway.billing.pricing import Line
from aistats_gateway.billing.tables import Hold

log = logging.getLogger("aistats_gateway.billing")


@dataclass(frozen=True)
class Ref:
    """The operation a hold pays for: its kind (``video``, ``batch`` …) and id."""

    kind: str
    id: str


def hold_id(ref_id: str) -> str:
    return f"hold_{ref_id}"


@dataclass(frozen=True)
class Estimate:
    nanos: int
    provider: str | None
    lines: list[dict[str, Any]]
    priced: bool


@dataclass(frozen=True)
class Settlement:
    """The outcome of settling or voiding one hold (what the product stores on its operation)."""

    hold_id: str
    state: str  # settled | void
    held_nanos: int
    charged_nanos: int
    actual_nanos: int
    shortfall_nanos: int
    lines: list[dict[str, Any]] | None


def _month_start(now: dt.datetime) -> dt.datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def hold(s: AsyncSession, *, ref: Ref, workspace_id: str, key_id: str, amount_nanos: int) -> str:
    """Hold ``amount_nanos`` for ``ref`` and enforce the key's spend limits, in the caller's transaction.
    Returns the hold id. Raises InsufficientCredits or SpendLimitExceeded (roll the transaction back)."""
    hid = hold_id(ref.id)
    await ledger.place_hold(s, hold_id=hid, workspace_id=workspace_id, key_id=key_id, ref_kind=ref.kind, ref=ref.id,
                            amount_nanos=amount_nanos)
    _, daily, monthly = await ledger.key_limits(s, key_id)
    now = dt.datetime.now(dt.UTC)
    periods = (("daily", daily, now.replace(hour=0, minute=0, second=0, microsecond=0)),
               ("monthly", monthly, _month_start(now)))
    for period, limit, since in periods:
        if limit is None:
            continue
        spent = await ledger.spent_since(s, key_id, since)  # includes the hold just placed
        if spent > limit:
            raise SpendLimitExceeded("daily" if period == "daily" else "monthly", limit, spent - amount_nanos,
                                     amount_nanos)
    return hid


async def settle(s: AsyncSession, ref: Ref, lines: Sequence[Line]) -> Settlement | None:
    """Charge the sum of ``lines`` for ``ref``'s hold; None when there is no open hold (already done)."""
    actual = sum(line.nanos for line in lines)
    done = await ledger.settle_actual(s, hold_id(ref.id), actual)
    if done is None:
        return None
    if done.shortfall_nanos:
        log.warning("usage above what the workspace could pay", extra={
            "ref_kind": ref.kind, "ref": ref.id, "actual_nanos": actual, "shortfall_nanos": done.shortfall_nanos})
    return Settlement(done.hold_id, "settled", done.held_nanos, done.charged_nanos, actual, done.shortfall_nanos,
                      [line.as_dict() for line in lines])


async def void(s: AsyncSession, ref: Ref, memo: str | None = None) -> Settlement | None:
    """Release ``ref``'s hold without charging; None when there is no open hold."""
    hid = hold_id(ref.id)
    held = await s.get(Hold, hid)
    if held is None or not await ledger.void(s, hid, memo=memo):
        return None
    return Settlement(hid, "void", held.amount_nanos, 0, 0, 0, None)


def billing_doc(settlement: Settlement | None, estimate_nanos: int | None = None,
                lines: list[dict[str, Any]] | None = None, priced: bool = True) -> dict[str, Any]:
    """The ``billing`` object a product shows on its operation."""
    if settlement is None:
        return {"state": "none", "currency": "usd", "held_nanos": 0, "settled_nanos": 0}
    doc: dict[str, Any] = {
        "state": settlement.state, "currency": "usd", "hold_id": settlement.hold_id,
        "held_nanos": settlement.held_nanos, "settled_nanos": settlement.charged_nanos,
        "held_usd": ledger.usd(settlement.held_nanos), "settled_usd": ledger.usd(settlement.charged_nanos),
        "priced": priced,
    }
    if estimate_nanos is not None:
        doc["estimate_nanos"] = estimate_nanos
    if settlement.lines is not None or lines is not None:
        doc["lines"] = settlement.lines if settlement.lines is not None else lines
    if settlement.shortfall_nanos:
        doc["usage_nanos"] = settlement.actual_nanos
        doc["shortfall_nanos"] = settlement.shortfall_nanos
        doc["shortfall_usd"] = ledger.usd(settlement.shortfall_nanos)
    return doc
