"""The webhook outbox as a job engine source."""

from __future__ import annotations

from typing import Any

from aistats_gateway.jobs.engine import Source
from aistats_gateway.webhooks import service


def source(state: Any, cfg: service.WebhookConfig) -> Source:
    async def due(limit: int) -> list[str]:
        return await service.due(state.sessions, limit)

    async def run(delivery_id: str) -> float | None:
        return await service.deliver(state.sessions, state.fetch_client, cfg, delivery_id)

    return Source("webhooks", due, run)
