"""The credit ledger: every balance change is an entry; balances are recomputed from it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aistats_gateway.db.base import Base, UTCDateTime, utcnow


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    # credit | hold | settle | void | adjustment
    kind: Mapped[str] = mapped_column(String(20))
    amount_nanos: Mapped[int] = mapped_column(BigInteger)
    hold_id: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)
    memo: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
