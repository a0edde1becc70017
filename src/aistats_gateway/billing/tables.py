"""Credits: the ledger (the truth), holds, and the per-workspace running totals it explains."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
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
    hold_id: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)
    memo: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Hold(Base):
    """Funds set aside for one job. ``state`` moves held → settled | void exactly once."""

    __tablename__ = "holds"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    key_id: Mapped[str] = mapped_column(String(40))
    ref: Mapped[str] = mapped_column(String(100))  # the job id
    amount_nanos: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(10), default="held")
    settled_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finalized_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_holds_key_created", "key_id", "created_at"),
        Index("ix_holds_state", "state"),
    )


class RateCounter(Base):
    """Requests per key per minute window (for the requests-per-minute limit)."""

    __tablename__ = "rate_counters"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # unix minute
    count: Mapped[int] = mapped_column(Integer, default=0)
