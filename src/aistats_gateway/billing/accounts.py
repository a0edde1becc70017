"""Keys with credits: ``auth`` creates the key, billing funds its workspace (auth never imports billing)."""

from __future__ import annotations

import dataclasses

from sqlalchemy.ext.asyncio import AsyncSession

from aistats_gateway.auth import service as auth_service
from aistats_gateway.billing import ledger


async def create_key(s: AsyncSession, pepper: bytes, name: str, *, workspace_id: str | None = None,
                     credits_nanos: int = 0) -> auth_service.CreatedKey:
    """``auth.service.create_key``, then ``credits_nanos`` credited to the workspace, in the caller's transaction."""
    created = await auth_service.create_key(s, pepper, name, workspace_id=workspace_id)
    if credits_nanos:
        await ledger.credit(s, created.workspace_id, credits_nanos, memo=f"credits added with key {created.id}")
    return dataclasses.replace(created, credits_nanos=credits_nanos)
