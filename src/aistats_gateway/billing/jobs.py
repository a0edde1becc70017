"""The billing sweep: finalize open holds whose operation is already terminal (e.g. after a crash).

Billing joins no product table: each product registers, per hold kind, a selectable of its terminal
operation ids (``register_terminal("video", lambda: select(VideoJob.id).where(...))``) and puts its
finalizer (its own settle-or-void of one operation) in ``GatewayState.hold_finalizers[kind]``. The
sweep's items are ``"<kind>:<id>"``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aistats_gateway.billing.tables import Hold
from aistats_gateway.jobs.engine import Source

TerminalIds = Callable[[], Select[Any]]  # a one-column select of terminal operation ids
_TERMINAL: dict[str, TerminalIds] = {}


def register_terminal(kind: str, terminal_ids: TerminalIds) -> None:
    """Tell the sweep how to find ``kind``'s operations that are finished (their holds are due)."""
    _TERMINAL[kind] = terminal_ids


async def due_refs(sessions: async_sessionmaker[AsyncSession], kinds: list[str], limit: int) -> list[str]:
    out: list[str] = []
    async with sessions() as s:
        for kind in kinds:
            terminal = _TERMINAL.get(kind)
            if terminal is None or len(out) >= limit:
                continue
            rows = await s.execute(select(Hold.ref).where(
                Hold.state == "held", Hold.ref_kind == kind, Hold.ref.in_(terminal()))
                .limit(limit - len(out)))
            out += [f"{kind}:{r[0]}" for r in rows]
    return out


class HasFinalizers(Protocol):
    sessions: async_sessionmaker[AsyncSession]
    hold_finalizers: dict[str, Callable[[str], Awaitable[None]]]


def sources(state: HasFinalizers) -> list[Source]:
    """For ``jobs.registry.collect``: the sweep over every kind the products registered a finalizer
    for (``state.hold_finalizers``), scanned every few seconds (terminal transitions finalize holds
    at once; this only repairs what a crash left open)."""
    from dataclasses import replace

    return [replace(source(state.sessions, state.hold_finalizers), sweep_every=2.0)]


def source(sessions: async_sessionmaker[AsyncSession],
           finalizers: Mapping[str, Callable[[str], Awaitable[None]]]) -> Source:
    async def due(limit: int) -> list[str]:
        return await due_refs(sessions, list(finalizers), limit)

    async def run(item: str) -> float | None:
        kind, _, ref = item.partition(":")
        finalize = finalizers.get(kind)
        if finalize is not None:
            await finalize(ref)
        return None

    return Source("billing", due, run)

