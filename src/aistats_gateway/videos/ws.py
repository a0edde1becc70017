"""Video jobs on the async-job websocket and the ``video.status_changed`` webhook.

``load`` is the ``video`` kind of ``http/asyncjobs``: the caller's job (never another
workspace's), rendered exactly as its webhooks carry it. ``install`` hooks the runner so that every
status change queues ``video.status_changed`` (for subscribers; delivery key
``video.status_changed:<new status>``, so each change is delivered once) before the other status
hooks run, and pokes the websocket notifier after them (so the pushed state already has its
settled billing); progress changes poke it too.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import select

from aistats_gateway.http import asyncjobs
from aistats_gateway.http.errors import APIError
from aistats_gateway.videos import present, service
from aistats_gateway.videos.tables import TERMINAL, VideoJob

KIND = "video"
# Renders that differ only in these (signed links are re-minted on every read) are the same state.
_VOLATILE = ("download_url", "expires_at", "poll_after_seconds")


def base_url(conn: Any) -> str:
    configured = conn.app.state.gateway.settings.public_base_url
    if configured:
        return str(configured).rstrip("/")
    url = str(conn.base_url).rstrip("/")
    return "http" + url[2:] if url.startswith("ws") else url  # ws:// → http://, wss:// → https://


def version(data: dict[str, Any]) -> str:
    stable = {k: v for k, v in data.items() if k not in _VOLATILE}
    stable["outputs"] = [{k: v for k, v in o.items() if k not in _VOLATILE} for o in data.get("outputs") or []]
    return hashlib.sha256(orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def load(conn: Any, workspace_id: str, job_id: str) -> asyncjobs.JobView | None:
    gw = conn.app.state.gateway
    try:
        job, outputs = await service.get_owned(gw.runner, service.Caller("", workspace_id), job_id)
    except APIError:
        return None
    data = present.render(job, outputs, base_url=base_url(conn), secret=gw.settings.signing_key)
    return asyncjobs.JobView(data=data, status=job.status, version=version(data))


def install(state: Any) -> None:
    """Register the kind and the runner hooks (call once the runner and JobHooks exist)."""
    asyncjobs.register(KIND, load)

    async def status_changed(job_id: str, old: str, new: str) -> None:
        if state.hooks is None or old == new:
            return
        async with state.sessions() as s:  # one column, so jobs without the subscription cost one read
            webhook = (await s.execute(select(VideoJob.webhook).where(VideoJob.id == job_id))).scalar()
        if webhook and "video.status_changed" in (webhook.get("events") or []):
            await state.hooks.event(job_id, "video.status_changed", f"video.status_changed:{new}")

    async def poke_status(job_id: str, old: str, new: str) -> None:
        if new not in TERMINAL:  # terminal moves are poked after billing settled (on_terminal below)
            asyncjobs.NOTIFIER.poke(KIND, job_id)

    async def poke_terminal(job_id: str, old: str, new: str) -> None:
        asyncjobs.NOTIFIER.poke(KIND, job_id)

    async def poke_progress(job_id: str, progress: int) -> None:
        asyncjobs.NOTIFIER.poke(KIND, job_id)

    state.runner.on_status.insert(0, status_changed)
    state.runner.on_status.append(poke_status)
    state.runner.on_progress.append(poke_progress)
    state.runner.events.on_terminal(KIND, poke_terminal)  # after JobHooks' terminal hook (registered first)
