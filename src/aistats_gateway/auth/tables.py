"""Workspaces, API keys and the per-key request counter."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aistats_gateway.db.base import Base, UTCDateTime, utcnow


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Running totals maintained with every ledger entry (recomputable from the ledger).
    balance_nanos: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    held_nanos: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # hex HMAC-SHA256(pepper, secret); the secret itself is never stored
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Limits (None = unlimited): requests per minute, spend per UTC day / calendar month.
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_spend_limit_nanos: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    monthly_spend_limit_nanos: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Tokens per minute (inference; input + output tokens), None = unlimited.
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)


class RateCounter(Base):
    """Requests per key per minute window (for the requests-per-minute limit)."""

    __tablename__ = "rate_counters"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # unix minute
    count: Mapped[int] = mapped_column(Integer, default=0)
