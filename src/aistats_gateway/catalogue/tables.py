"""The catalogue as synced into the database: one JSON document per entry plus a version row."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from aistats_gateway.db.base import Base, JSONType, UTCDateTime, utcnow


class CatalogueOrganisation(Base):
    __tablename__ = "catalogue_organisations"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    doc: Mapped[dict[str, Any]] = mapped_column(JSONType)


class CatalogueProvider(Base):
    __tablename__ = "catalogue_providers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    doc: Mapped[dict[str, Any]] = mapped_column(JSONType)


class CatalogueModel(Base):
    __tablename__ = "catalogue_models"

    model_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, index=True)
    doc: Mapped[dict[str, Any]] = mapped_column(JSONType)


class CatalogueState(Base):
    """A single row (id=1); ``version`` grows with every sync so servers reload their snapshot."""

    __tablename__ = "catalogue_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))
    # The operator's overlay document (from ``catalogue sync FILE``), re-applied on every sync.
    overlay: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    overlay_source: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    synced_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
