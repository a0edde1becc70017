"""The webhook outbox: one row per (subject, event key), delivered at least once by the job engine.

A subject is the operation an event is about, by kind and id (``("video", job id)``, later
``("batch", batch id)``); ``(subject_kind, subject_id, event_key)`` is unique, so an event is never
queued twice."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aistats_gateway.db.base import Base, JSONType, UTCDateTime, utcnow


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # msg_…, sent as webhook-id
    subject_kind: Mapped[str] = mapped_column(String(20))  # video | batch | …
    subject_id: Mapped[str] = mapped_column(String(64))
    workspace_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(40))
    event_key: Mapped[str] = mapped_column(String(60))  # e.g. video.completed or video.progress:30
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(500))
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body, signed as is
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("subject_kind", "subject_id", "event_key", name="uq_webhook_deliveries_subject_event"),
        Index("ix_webhook_deliveries_subject", "subject_kind", "subject_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )
