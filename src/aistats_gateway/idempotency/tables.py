"""One row per (scope, Idempotency-Key): who is running the request and what it answered."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from aistats_gateway.db.base import Base, JSONType, UTCDateTime, utcnow


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(200), primary_key=True)  # "<key_id> POST /v1/videos"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical request
    state: Mapped[str] = mapped_column(String(10), default="running")  # running | done
    owner: Mapped[str] = mapped_column(String(40))
    locked_until: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    resource_id: Mapped[str | None] = mapped_column(String(100), nullable=True)  # e.g. the job id
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_idempotency_keys_expires", "expires_at"),)
