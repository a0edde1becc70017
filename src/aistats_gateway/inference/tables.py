"""Generation records (one per inference call) and the tokens-per-minute counters.

A generation row is written with its hold (``status = in_progress``) before anything is sent
upstream and finalised exactly once (a conditional UPDATE on ``status = in_progress``) in the same
transaction that settles or voids the hold, so ``cost_nanos`` always equals what the ledger charged.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from aistats_gateway.db.base import Base, UTCDateTime, utcnow

_JSON = JSON().with_variant(JSONB(), "postgresql")


class Generation(Base):
    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(40))  # chat.completions | responses | messages | embeddings | …
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(80), nullable=True)
    native_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="in_progress")  # in_progress | completed | failed
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(80), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(_JSON, default=list)
    usage: Mapped[dict[str, Any]] = mapped_column(_JSON, default=dict)
    finish_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)
    hold_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_generations_workspace_created", "workspace_id", "created_at"),)


class TokenCounter(Base):
    """Tokens used per key per minute window (for the tokens-per-minute limit)."""

    __tablename__ = "token_counters"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # unix minute
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
