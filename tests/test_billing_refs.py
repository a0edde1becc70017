"""Billing by reference on a real database (SQLite and PostgreSQL): a hold names its operation by
kind + id, the product settles priced lines, and usage above the hold is charged when the workspace
can pay it, else charged up to what it has with the shortfall recorded — never silently less."""

from __future__ import annotations

from typing import Any

import pytest

from aistats_gateway.billing import accounts, errors, ledger, pricing
from aistats_gateway.billing import service as billing
from aistats_gateway.billing.tables import Hold, LedgerEntry
from aistats_gateway.catalogue.schema import PriceRule
from tests.support.gateway import Gateway, run_async

USD = 1_000_000_000
PER_TOKEN = [PriceRule(meter="output_tokens", unit="token", unit_size=1_000_000, price="1.00")]  # 1 USD / 1M


def _workspace(gateway: Gateway, credits: int) -> tuple[str, str]:
    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            k = await accounts.create_key(s, gateway.settings.pepper, "refs", credits_nanos=credits)
            return k.workspace_id, k.id

    return run_async(work, gateway.settings)


def _tokens(millions: int) -> list[pricing.Line]:
    return [pricing.price(PER_TOKEN, "output_tokens", millions * 1_000_000, {})]


def _run(gateway: Gateway, ws: str, key_id: str, ref: billing.Ref, held: int, lines: list[pricing.Line]) -> Any:
    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            hid = await billing.hold(s, ref=ref, workspace_id=ws, key_id=key_id, amount_nanos=held)
        async with sessions() as s, s.begin():
            done = await billing.settle(s, ref, lines)
        async with sessions() as s, s.begin():
            again = await billing.settle(s, ref, lines)  # exactly once
        async with sessions() as s:
            hold = await s.get(Hold, hid)
            memo = (await s.execute(LedgerEntry.__table__.select().where(
                LedgerEntry.hold_id == hid, LedgerEntry.kind == "settle"))).mappings().one()["memo"]
            return done, again, hold.ref_kind, hold.ref, hold.settled_nanos, hold.shortfall_nanos, memo, \
                await ledger.balance(s, ws), await ledger.recompute(s, ws)

    return run_async(work, gateway.settings)


def test_usage_below_the_hold_settles_the_actual_amount(gateway: Gateway) -> None:
    ws, key_id = _workspace(gateway, 10 * USD)
    done, again, kind, ref, settled, short, _, bal, recomputed = _run(
        gateway, ws, key_id, billing.Ref("test", "op_below"), 3 * USD, _tokens(2))
    assert (kind, ref) == ("test", "op_below") and again is None
    assert done.charged_nanos == settled == 2 * USD and done.shortfall_nanos == short == 0
    assert bal == recomputed and bal.balance_nanos == 8 * USD and bal.held_nanos == 0


def test_overage_is_charged_when_the_workspace_can_pay(gateway: Gateway) -> None:
    ws, key_id = _workspace(gateway, 10 * USD)
    done, _, _, _, settled, short, memo, bal, recomputed = _run(
        gateway, ws, key_id, billing.Ref("test", "op_over_paid"), 1 * USD, _tokens(4))
    assert done.actual_nanos == done.charged_nanos == settled == 4 * USD and short == 0
    assert "above the hold" in memo
    assert bal == recomputed and bal.balance_nanos == 6 * USD and bal.held_nanos == 0
    doc = billing.billing_doc(done)
    assert doc["settled_nanos"] == 4 * USD and "shortfall_nanos" not in doc


def test_overage_beyond_the_balance_charges_what_is_there_and_records_the_shortfall(gateway: Gateway) -> None:
    ws, key_id = _workspace(gateway, 3 * USD)
    done, _, _, _, settled, short, memo, bal, recomputed = _run(
        gateway, ws, key_id, billing.Ref("test", "op_over_short"), 1 * USD, _tokens(5))
    assert done.charged_nanos == settled == 3 * USD  # everything available, more than the hold
    assert done.shortfall_nanos == short == 2 * USD and done.actual_nanos == 5 * USD
    assert "not covered" in memo
    assert bal == recomputed and bal.balance_nanos == 0 and bal.held_nanos == 0
    doc = billing.billing_doc(done)
    assert doc["shortfall_nanos"] == 2 * USD and doc["usage_nanos"] == 5 * USD and doc["shortfall_usd"] == "2.00"


def test_overage_never_takes_funds_held_for_other_operations(gateway: Gateway) -> None:
    ws, key_id = _workspace(gateway, 5 * USD)

    async def work(sessions: Any) -> Any:
        other = billing.Ref("test", "op_other")
        async with sessions() as s, s.begin():
            await billing.hold(s, ref=other, workspace_id=ws, key_id=key_id, amount_nanos=3 * USD)
        # 2 USD left: hold 1, use 9 → 2 charged (1 held + 1 free), 7 short; the other 3 stay held.
        ref = billing.Ref("test", "op_greedy")
        async with sessions() as s, s.begin():
            await billing.hold(s, ref=ref, workspace_id=ws, key_id=key_id, amount_nanos=USD)
        async with sessions() as s, s.begin():
            done = await billing.settle(s, ref, _tokens(9))
        async with sessions() as s:
            return done, await ledger.balance(s, ws), await ledger.recompute(s, ws)

    done, bal, recomputed = run_async(work, gateway.settings)
    assert done.charged_nanos == 2 * USD and done.shortfall_nanos == 7 * USD
    assert bal == recomputed and bal.balance_nanos == 3 * USD and bal.held_nanos == 3 * USD


def test_hold_errors_are_domain_errors_with_fields(gateway: Gateway) -> None:
    ws, key_id = _workspace(gateway, 1 * USD)

    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            await billing.hold(s, ref=billing.Ref("test", "op_big"), workspace_id=ws, key_id=key_id,
                               amount_nanos=3 * USD)

    with pytest.raises(errors.InsufficientCredits) as e:
        run_async(work, gateway.settings)
    assert (e.value.needed, e.value.available, e.value.shortfall) == (3 * USD, USD, 2 * USD)


def test_void_by_reference_releases_without_charging(gateway: Gateway) -> None:
    ws, key_id = _workspace(gateway, 2 * USD)

    async def work(sessions: Any) -> Any:
        ref = billing.Ref("test", "op_void")
        async with sessions() as s, s.begin():
            await billing.hold(s, ref=ref, workspace_id=ws, key_id=key_id, amount_nanos=USD)
        async with sessions() as s, s.begin():
            done = await billing.void(s, ref, memo="nothing ran")
        async with sessions() as s, s.begin():
            again = await billing.void(s, ref)
        async with sessions() as s:
            return done, again, await ledger.balance(s, ws)

    done, again, bal = run_async(work, gateway.settings)
    assert done.state == "void" and done.charged_nanos == 0 and again is None
    assert bal.balance_nanos == 2 * USD and bal.held_nanos == 0
