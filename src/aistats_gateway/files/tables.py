"""Uploaded files. The row is the truth; the bytes live in the blob store under ``storage_key``.

Life of a row: ``uploading`` (inserted before the first byte is stored, invisible to the API,
``updated_at`` refreshed while bytes arrive) → ``processed`` (stored, and for ``purpose=batch``
validated; ``batch_*`` columns filled) → ``deleting`` (hidden; the blob is being removed) → gone.
An upload that stops refreshing ``updated_at`` and an expired file are moved to ``deleting`` and
removed by the sweep in ``files/jobs.py``, so a crash never leaves bytes without a row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from aistats_gateway.db.base import Base, JSONType, UTCDateTime, utcnow

VISIBLE = ("uploaded", "processed", "error")


class StoredFile(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # file-…
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # None when the gateway wrote it
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20), default="uploading")
    status_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    storage_key: Mapped[str] = mapped_column(String(500))
    # For purpose=batch: what the validator found (requests, their endpoint, the models named).
    batch_lines: Mapped[int | None] = mapped_column(Integer, nullable=True)
    batch_endpoint: Mapped[str | None] = mapped_column(String(40), nullable=True)
    batch_models: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        Index("ix_files_workspace_created", "workspace_id", "created_at", "id"),
        Index("ix_files_status_expires", "status", "expires_at"),
        Index("ix_files_status_updated", "status", "updated_at"),
    )
