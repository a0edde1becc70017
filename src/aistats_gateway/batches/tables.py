"""Batches and their rows. The rows are the truth the runner resumes from.

* ``batches``: one row per batch. Its status moves forward only (conditional UPDATEs):
  ``validating → in_progress → finalizing → completed | failed | expired`` and
  ``… → cancelling → cancelled``. The lease columns (``lease_owner``, ``lease_until``,
  ``next_run_at``) let the generic job lease drive the batch step (progress, expiry, finalisation).
* ``batch_rows``: one row per request, copied at create (so a deleted input file changes nothing).
  ``queued`` → ``completed | failed`` (by the row runner holding the row's chunk lease, see
  ``batches.rows``) or ``expired | cancelled`` (by the batch step, only while not leased). Rows of
  a native batch are ``submitted`` (never claimed by the row runner) until the provider's results
  are reconciled into them. A row's result is
  written only by the holder of its lease and only while it is ``queued``, so a finished row is
  never run or written again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from aistats_gateway.db.base import Base, JSONType, UTCDateTime, utcnow

BATCH_ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
BATCH_TERMINAL = ("completed", "failed", "expired", "cancelled")
ROW_DONE = ("completed", "failed", "expired", "cancelled")


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # batch_…
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    key_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="validating")
    mode: Mapped[str] = mapped_column(String(10), default="gateway")  # gateway | native
    endpoint: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(10), default="24h")
    input_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the batch's model, if one
    provider: Mapped[str | None] = mapped_column(String(100), nullable=True)  # native provider, or the last used
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)  # the request's `provider`
    native_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Native mode: None → submitting (recorded before the provider is called; an unknown outcome
    # is reconciled by the batch's metadata before any retry) → submitted → cancel_sent.
    native_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    native_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # submitting since
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)  # the client's metadata
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    errors: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    progress_bucket: Mapped[int] = mapped_column(Integer, default=0)  # last batch.progress sent (0, 10 … 90)
    hold_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    billing: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    in_progress_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finalizing_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancelling_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_run_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)

    __table_args__ = (
        Index("ix_batches_workspace_created", "workspace_id", "created_at", "id"),
        Index("ix_batches_status_next_run", "status", "next_run_at"),
    )


class BatchRow(Base):
    __tablename__ = "batch_rows"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)  # "<batch id>:<line>"
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(String(40))
    line: Mapped[int] = mapped_column(Integer)  # 1-based, as in the input
    custom_id: Mapped[str] = mapped_column(String(600))
    body: Mapped[bytes] = mapped_column(LargeBinary)  # the request body, compact JSON
    status: Mapped[str] = mapped_column(String(20), default="queued")
    provider: Mapped[str | None] = mapped_column(String(100), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    request_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    response: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # the body, compact JSON
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_run_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)

    __table_args__ = (
        Index("ix_batch_rows_batch_line", "batch_id", "line", unique=True),
        Index("ix_batch_rows_status_next_run", "status", "next_run_at"),
        Index("ix_batch_rows_batch_status", "batch_id", "status"),
    )
