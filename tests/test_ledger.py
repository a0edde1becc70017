"""The ledger on a real database (SQLite and PostgreSQL): holds never overdraw, settle/void happen
exactly once under concurrency, and balances always recompute from the entries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aistats_gateway.billing import accounts as keys_service
from aistats_gateway.billing import ledger, pricing
from aistats_gateway.billing.tables import Hold
from aistats_gateway.catalogue.schema import PriceRule
from tests.support.gateway import Gateway, run_async

USD = 1_000_000_000


def _workspace(gateway: Gateway, credits: int) -> tuple[str, str]:
    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            k = await keys_service.create_key(s, gateway.settings.pepper, "ledger", credits_nanos=credits)
            return k.workspace_id, k.id

    return run_async(work, gateway.settings)


def _check_recompute(gateway: Gateway, ws: str) -> ledger.Balance:
    async def work(sessions: Any) -> Any:
        async with sessions() as s:
            return await ledger.balance(s, ws), await ledger.recompute(s, ws)

    stored, again = run_async(work, gateway.settings)
    assert stored == again
    return stored


def test_usd_formatting() -> None:
    assert ledger.usd(0) == "0.00"
    assert ledger.usd(1_500_000_000) == "1.50"
    assert ledger.usd(10) == "0.00000001"
    assert ledger.usd(-2 * USD) == "-2.00"


def test_price_rule_choice_and_rounding() -> None:
    rules = [
        PriceRule(meter="output_video_seconds", unit="second", price="0.10"),
        PriceRule(meter="output_video_seconds", unit="second", price="0.30", when={"resolution": "1080p"}),
        PriceRule(meter="output_video_seconds", unit="second", price="0.50", when={"resolution": "1080p",
                                                                                     "audio": True}),
        PriceRule(meter="output_video_seconds", unit="second", unit_size=6, price="0.28", plan="batch"),
    ]
    assert pricing.video(rules, seconds=8, count=1, resolution="720p", audio=False).nanos == 8 * 100_000_000
    assert pricing.video(rules, seconds=8, count=2, resolution="1080p", audio=False).nanos == 16 * 300_000_000
    assert pricing.video(rules, seconds=4, count=1, resolution="1080p", audio=True).nanos == 4 * 500_000_000
    line = pricing.price(rules, "output_video_seconds", 10, {}, plan="batch")
    assert line.units == 2 and line.nanos == 2 * 280_000_000
    tokens = [PriceRule(meter="input_tokens", unit="token", unit_size=1_000_000, price="1.25")]
    assert pricing.price(tokens, "input_tokens", 2_000_001, {}).nanos == 3 * 1_250_000_000
    assert pricing.video([], seconds=4, count=1, resolution="720p", audio=False).nanos == 0


def test_hold_settle_void_exactly_once(gateway: Gateway) -> None:
    ws, key_id = _workspace(gateway, 10 * USD)

    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            await ledger.place_hold(s, hold_id="hold_a", workspace_id=ws, key_id=key_id, ref_kind="test",
                                    ref="a", amount_nanos=4 * USD)
            await ledger.place_hold(s, hold_id="hold_b", workspace_id=ws, key_id=key_id, ref_kind="test",
                                    ref="b", amount_nanos=3 * USD)
        async with sessions() as s:
            mid = await ledger.balance(s, ws)
        # Many concurrent finalizers race on the same holds: exactly one wins each.
        async def settle_a() -> bool:
            async with sessions() as s, s.begin():
                return await ledger.settle(s, "hold_a", 2 * USD)

        async def void_a() -> bool:
            async with sessions() as s, s.begin():
                return await ledger.void(s, "hold_a")

        async def void_b() -> bool:
            async with sessions() as s, s.begin():
                return await ledger.void(s, "hold_b")

        results_a = await asyncio.gather(*[settle_a() if i % 2 else void_a() for i in range(10)])
        results_b = await asyncio.gather(*[void_b() for _ in range(10)])
        async with sessions() as s:
            end = await ledger.balance(s, ws)
            hold_a = await s.get(Hold, "hold_a")
        return mid, results_a, results_b, end, hold_a.state, hold_a.settled_nanos

    mid, ra, rb, end, state_a, settled_a = run_async(work, gateway.settings)
    assert mid.held_nanos == 7 * USD and mid.available_nanos == 3 * USD
    assert sum(ra) == 1 and sum(rb) == 1
    assert end.held_nanos == 0
    assert end.balance_nanos == 10 * USD - (settled_a if state_a == "settled" else 0)
    _check_recompute(gateway, ws)


@pytest.mark.parametrize("attempts", [100])
def test_concurrent_holds_never_overdraw(gateway: Gateway, attempts: int) -> None:
    """100 simultaneous holds of 1 USD against 10 USD: exactly 10 succeed."""
    ws, key_id = _workspace(gateway, 10 * USD)

    async def work(sessions: Any) -> Any:
        async def one(i: int) -> bool:
            try:
                async with sessions() as s, s.begin():
                    await ledger.place_hold(s, hold_id=f"hold_c{i}_{ws}", workspace_id=ws, key_id=key_id,
                                            ref_kind="test",
                                            ref=f"c{i}", amount_nanos=USD)
                return True
            except ledger.InsufficientFunds:
                return False

        return await asyncio.gather(*[one(i) for i in range(attempts)])

    results = run_async(work, gateway.settings)
    assert sum(results) == 10
    bal = _check_recompute(gateway, ws)
    assert bal.held_nanos == 10 * USD and bal.available_nanos == 0


def test_credit_unknown_workspace(gateway: Gateway) -> None:
    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            await ledger.credit(s, "ws_missing", USD)

    with pytest.raises(LookupError):
        run_async(work, gateway.settings)
