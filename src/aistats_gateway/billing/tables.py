"""Credits: the ledger (the truth), holds, and the per-workspace running totals it explains."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from aistats_gateway.db.base import Base, UTCDateTime, utcnow


class LedgerEntry(Base):
    """One balance event. kind: credit | adjustment (± balance), hold (+ held), settle (− balance,
    releases its hold), void (releases its hold). Balance and held are always recomputable from these."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    amount_nanos: Mapped[int] = mapped_column(BigInteger)
    hold_id: Mapped[str | None] = mapped_column(String(80), nullable=True)  # no index: nothing looks entries up by hold
    memo: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Hold(Base):
    """Funds set aside for one operation, named by ``(ref_kind, ref)`` — e.g. ``("video", job id)``.
    ``state`` moves held → settled | void exactly once. ``shortfall_nanos``: usage above what the
    workspace could pay when settling (see ``ledger.settle_actual``)."""

    __tablename__ = "holds"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    key_id: Mapped[str] = mapped_column(String(40))
    ref_kind: Mapped[str] = mapped_column(String(20))  # the operation's kind: video, batch, generation …
    ref: Mapped[str] = mapped_column(String(100))  # the operation's id
    amount_nanos: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(10), default="held")
    settled_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    shortfall_nanos: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finalized_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_holds_key_created", "key_id", "created_at"),
        # the holds still held, for the billing sweep (``state = 'held' AND ref_kind = ? AND ref IN …``);
        # partial, so a settled hold costs no index page (migration 0009)
        Index("ix_holds_held", "ref_kind", "ref", sqlite_where=text("state = 'held'"),
              postgresql_where=text("state = 'held'")),
    )
