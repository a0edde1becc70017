"""The webhook outbox as a job engine source: a leased table (``service.WEBHOOK_LEASE``) whose
due rows the engine claims in batches, fairly across workspaces, and delivers one attempt each."""

from __future__ import annotations

from typing import Any

from aistats_gateway.jobs.engine import GroupLimiter, LeasedWork, Source, leased_source
from aistats_gateway.jobs.lease import Lease
from aistats_gateway.webhooks import service


def source(state: Any, cfg: service.WebhookConfig, limiter: GroupLimiter | None = None) -> Source:
    async def step(lease: Lease) -> float | None:
        return await service.attempt(state.sessions, state.fetch_client, cfg, lease)

    return leased_source("webhooks", LeasedWork(db=state.sessions, table=service.WEBHOOK_LEASE, step=step,
                                                owner=service.LEASE_OWNER, seconds=service.lease_seconds(cfg),
                                                limiter=limiter or GroupLimiter()))


def sources(state: Any) -> list[Source]:
    return [source(state, state.webhooks, GroupLimiter(cap=state.settings.job_workspace_cap()))]
