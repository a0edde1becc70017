"""Creating, listing and revoking API keys; workspaces are created with their first key."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aistats_gateway.auth import keys
from aistats_gateway.auth.tables import ApiKey, Workspace
from aistats_gateway.db.base import utcnow


@dataclass(frozen=True)
class CreatedKey:
    id: str
    name: str
    workspace_id: str
    key: str
    credits_nanos: int


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    workspace_id: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


async def create_key(
    s: AsyncSession,
    pepper: bytes,
    name: str,
    *,
    workspace_id: str | None = None,
) -> CreatedKey:
    """A new key (and a new workspace unless ``workspace_id`` is given). Funding it is billing's:
    ``billing.accounts.create_key(..., credits_nanos=…)``."""
    if workspace_id is None:
        workspace_id = "ws_" + secrets.token_hex(8)
        s.add(Workspace(id=workspace_id, name=name))
        await s.flush()
    elif await s.get(Workspace, workspace_id) is None:
        raise LookupError(f"workspace {workspace_id} does not exist")
    key_id = keys.new_key_id()
    secret = keys.new_secret()
    s.add(ApiKey(id=key_id, workspace_id=workspace_id, name=name, secret_hash=keys.hash_secret(pepper, secret)))
    await s.flush()
    return CreatedKey(key_id, name, workspace_id, keys.format_key(key_id, secret), 0)


async def list_keys(s: AsyncSession, *, include_revoked: bool = True) -> list[KeyInfo]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    rows = (await s.execute(stmt)).scalars().all()
    return [KeyInfo(r.id, r.name, r.workspace_id, r.created_at, r.revoked_at) for r in rows]


async def count_active(s: AsyncSession) -> int:
    query = select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
    return int((await s.execute(query)).scalar() or 0)


async def revoke(s: AsyncSession, key_id: str) -> bool:
    """Revoke a key; False when it does not exist. Revoking twice keeps the first time."""
    if await s.get(ApiKey, key_id) is None:
        return False
    await s.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow()))
    return True
