"""The rendered-JSON cache of finished jobs (``videos/cache.py``) never answers what the database
would not: another workspace still gets 404, a job deleted (here, or by another process straight
in the database) is gone at once, and a re-billed job is re-rendered. Both backends."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import update

from aistats_gateway.db.base import utcnow
from aistats_gateway.videos.tables import VideoJob
from tests.support.gateway import Gateway, run_async

SHORT = {"model": "local/procedural-video", "prompt": "a red square", "seconds": 1, "resolution": "480p"}
TERMINAL = ("completed", "failed", "cancelled", "expired")


def _done(api: httpx.Client) -> dict[str, Any]:
    r = api.post("/v1/videos", json=SHORT)
    assert r.status_code == 202, r.text
    vid = r.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        body = api.get(f"/v1/videos/{vid}").json()
        if body["status"] in TERMINAL and body["billing"]["hold_state"] != "held":  # settled just after the move
            assert body["status"] == "completed", body
            return dict(body)
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _write(gateway: Gateway, video_id: str, **values: Any) -> None:
    async def go(sessions: Any) -> None:
        async with sessions() as s, s.begin():
            await s.execute(update(VideoJob).where(VideoJob.id == video_id).values(**values))

    run_async(go, gateway.settings)


def test_cached_answer_is_the_rendered_one(gateway: Gateway, api: httpx.Client) -> None:
    done = _done(api)
    first = api.get(f"/v1/videos/{done['id']}")
    again = [api.get(f"/v1/videos/{done['id']}") for _ in range(5)]
    for r in again:
        assert r.status_code == 200 and r.headers["openai-poll-after-ms"] == first.headers["openai-poll-after-ms"]
        body, ref = r.json(), first.json()
        # Signed links are minted per second; everything else is identical.
        for k in ("download_url", "expires_at"):
            body.pop(k), ref.pop(k)
        for o in body["outputs"] + ref["outputs"]:
            o.pop("download_url"), o.pop("expires_at")
        assert body == ref
    other = gateway.client(gateway.create_key("cache tenant b", credits_usd=1))
    assert other.get(f"/v1/videos/{done['id']}").status_code == 404


def test_changes_in_the_database_win_over_the_cache(gateway: Gateway, api: httpx.Client) -> None:
    done = _done(api)
    vid = done["id"]
    assert api.get(f"/v1/videos/{vid}").status_code == 200
    # Another process re-bills the job: the next answer shows it.
    billing = {**done["billing"], "state": "settled", "settled_nanos": 123_000_000_000}
    _write(gateway, vid, billing=billing, updated_at=utcnow())
    assert api.get(f"/v1/videos/{vid}").json()["billing"]["settled_nanos"] == 123_000_000_000
    # Another process deletes it: gone at once.
    _write(gateway, vid, deleted_at=utcnow())
    r = api.get(f"/v1/videos/{vid}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "video_not_found"


def test_delete_through_the_api_is_seen_at_once(api: httpx.Client) -> None:
    done = _done(api)
    for _ in range(3):
        assert api.get(f"/v1/videos/{done['id']}").status_code == 200
    assert api.delete(f"/v1/videos/{done['id']}").status_code == 200
    assert api.get(f"/v1/videos/{done['id']}").status_code == 404
