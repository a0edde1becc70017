"""The files sweep as a job engine source: expired files, abandoned uploads, retried deletions.

``due`` lists rows that need removing; ``run`` claims one with a conditional UPDATE and removes
its blob, then its row (``service.sweep_one``), so two processes never both act on one file.
"""

from __future__ import annotations

from typing import Any

from aistats_gateway.files import service
from aistats_gateway.jobs.engine import Source


def source(state: Any) -> Source:
    async def due(limit: int) -> list[str]:
        return await service.due_for_sweep(service.context(state), limit)

    async def run(file_id: str) -> float | None:
        await service.sweep_one(service.context(state), file_id)
        return None

    return Source("files", due, run)


def sources(state: Any) -> list[Source]:
    return [source(state)]
