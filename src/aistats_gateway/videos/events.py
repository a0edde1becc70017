"""The video subject kind and its webhook event names, registered with ``webhooks`` at import."""

from __future__ import annotations

from aistats_gateway.webhooks import service as webhooks

KIND = "video"
EVENTS = ("video.created", "video.progress", "video.completed", "video.failed", "video.cancelled", "video.expired",
          "video.status_changed")
DEFAULT_EVENTS = ("video.completed", "video.failed", "video.cancelled", "video.expired")

webhooks.register_events(KIND, EVENTS, DEFAULT_EVENTS)


def subject(job_id: str) -> webhooks.Subject:
    return webhooks.Subject(KIND, job_id)
