"""Keyset pagination over ``(created_at, id)``: the one ordering every list endpoint uses.

Invariant: the order is total (``id`` breaks ties between rows created in the same instant), so a
page that starts after a cursor row never repeats or skips a row, whatever was inserted meanwhile.
The caller resolves and authorises the cursor row (an unknown or foreign cursor is its 400).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Protocol

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute


class Anchor(Protocol):
    @property
    def created_at(self) -> dt.datetime: ...

    @property
    def id(self) -> str: ...


def keyset(stmt: Select[Any], created_at: InstrumentedAttribute[dt.datetime], id_: InstrumentedAttribute[str],
           anchor: Anchor | None, order: Literal["asc", "desc"] = "desc") -> Select[Any]:
    """``stmt`` restricted to the rows after ``anchor`` (if any) and ordered by ``order``."""
    if order == "desc":
        if anchor is not None:
            stmt = stmt.where(or_(created_at < anchor.created_at,
                                  and_(created_at == anchor.created_at, id_ < anchor.id)))
        return stmt.order_by(created_at.desc(), id_.desc())
    if anchor is not None:
        stmt = stmt.where(or_(created_at > anchor.created_at,
                              and_(created_at == anchor.created_at, id_ > anchor.id)))
    return stmt.order_by(created_at.asc(), id_.asc())
