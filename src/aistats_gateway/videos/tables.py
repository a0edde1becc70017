"""Video jobs and their stored outputs. The job row is the truth the runner resumes from."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from aistats_gateway.db.base import Base, JSONType, UTCDateTime, utcnow
from aistats_gateway.jobs.lease import LeaseTable

TERMINAL = ("completed", "failed", "cancelled", "expired")
STATUS_RANK = {"queued": 0, "in_progress": 1, "completed": 2, "failed": 2, "cancelled": 2, "expired": 2}


class VideoJob(Base):
    __tablename__ = "video_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    key_id: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))  # canonical model id
    requested_model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    # Routing: candidate providers in order, the one in use, its native id and every attempt.
    candidates: Mapped[list[str]] = mapped_column(JSONType, default=list)
    provider: Mapped[str | None] = mapped_column(String(100), nullable=True)
    provider_model_slug: Mapped[str | None] = mapped_column(String(200), nullable=True)
    native_id: Mapped[str | None] = mapped_column(String(500), nullable=True)
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # The validated request (parameters, image inputs are stored as blobs, referenced here).
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    output_access: Mapped[str] = mapped_column(String(20), default="both")
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    size: Mapped[str | None] = mapped_column(String(40), nullable=True)
    audio: Mapped[bool] = mapped_column(Boolean, default=False)
    sample_count: Mapped[int] = mapped_column(Integer, default=1)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    progress_source: Mapped[str] = mapped_column(String(20), default="estimated")
    # Provider finished: the outputs it handed over (to be copied into our storage).
    provider_done: Mapped[bool] = mapped_column(Boolean, default=False)
    provider_outputs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, nullable=True)
    provider_usage: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    download_attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(100), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Scheduling: when to look at the job next, polls so far, when it expires, who holds it.
    next_run_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    poll_count: Mapped[int] = mapped_column(Integer, default=0)
    deadline_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # Billing and webhooks (filled by those domains).
    billing: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_video_jobs_workspace_created", "workspace_id", "created_at", "id"),
        Index("ix_video_jobs_status_next_run", "status", "next_run_at"),
    )


class VideoOutput(Base):
    __tablename__ = "video_outputs"

    job_id: Mapped[str] = mapped_column(ForeignKey("video_jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    variant: Mapped[str] = mapped_column(String(20), primary_key=True)  # video | thumbnail
    storage_key: Mapped[str] = mapped_column(String(500))
    mime_type: Mapped[str] = mapped_column(String(100))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


_jobs: Table = VideoJob.__table__  # type: ignore[assignment]
# The job engine's view of the table: who holds a job, when it is due, who it belongs to (fairness).
VIDEO_LEASE = LeaseTable(kind="video", table=_jobs, active=("queued", "in_progress"), terminal=TERMINAL,
                         group_col="workspace_id", live=(_jobs.c.deleted_at.is_(None),))
