"""The batch subject kind and its webhook events, registered with ``webhooks`` at import.

Events are queued in the caller's transaction (the outbox), so an event exists exactly when the
state change that caused it was committed. Event keys make each event unique per batch
(``batch.progress:<bucket>``), so a step that runs twice never queues one twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from aistats_gateway.webhooks import service as webhooks

KIND = "batch"
EVENTS = ("batch.created", "batch.status_changed", "batch.progress", "batch.completed", "batch.failed",
          "batch.cancelled", "batch.expired")
DEFAULT_EVENTS = ("batch.completed", "batch.failed", "batch.cancelled", "batch.expired")
TERMINAL_EVENT = {"completed": "batch.completed", "failed": "batch.failed", "cancelled": "batch.cancelled",
                  "expired": "batch.expired"}

webhooks.register_events(KIND, EVENTS, DEFAULT_EVENTS)


def subject(batch_id: str) -> webhooks.Subject:
    return webhooks.Subject(KIND, batch_id)


def data(b: Any) -> dict[str, Any]:
    progress = 100 if b.status == "completed" else (
        int(100 * (b.completed + b.failed) / b.total) if b.total else 0)
    return {"id": b.id, "object": "batch", "status": b.status, "endpoint": b.endpoint, "model": b.model,
            "mode": b.mode, "progress": progress,
            "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
            "input_file_id": b.input_file_id, "output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
            "metadata": b.meta, "usage": b.usage, "billing": b.billing}


async def emit(s: AsyncSession, b: Any, event_type: str, key: str | None = None) -> None:
    if not b.webhook:
        return
    await webhooks.enqueue(s, subject=subject(b.id), workspace_id=b.workspace_id, webhook=b.webhook,
                           event_type=event_type, event_key=key, data=data(b))


async def status_changed(s: AsyncSession, b: Any, previous: str) -> None:
    if not b.webhook:
        return
    body = {**data(b), "previous_status": previous}
    await webhooks.enqueue(s, subject=subject(b.id), workspace_id=b.workspace_id, webhook=b.webhook,
                           event_type="batch.status_changed", event_key=f"batch.status_changed:{b.status}",
                           data=body)
    terminal = TERMINAL_EVENT.get(b.status)
    if terminal:
        await emit(s, b, terminal)
