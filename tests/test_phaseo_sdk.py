"""The official Phaseo Python SDK (``phaseo`` 3.0.0) against this gateway, over real HTTP, on
SQLite and PostgreSQL: health, catalogue, credits, the whole video lifecycle, the websocket URL it
builds, and a webhook delivery checked with its own verifier."""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from phaseo import Phaseo
from phaseo.webhooks import verify_async_webhook_signature
from websockets.sync.client import connect

from tests.support.gateway import BACKENDS, Gateway, running_gateway
from tests.webhook_receiver import Receiver

USD = 1_000_000_000
MODEL = "local/procedural-video"
SECRET = "whsec_" + "cGhhc2VvLXNkay10ZXN0LXNlY3JldC0xMjM0NQ=="
TERMINAL = ("completed", "failed", "cancelled", "expired")


@pytest.fixture(scope="module", params=BACKENDS)
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(request.param, tmp_path_factory.mktemp("phaseo"), webhook_allow_local=True) as g:
        yield g


@pytest.fixture(scope="module")
def key(gw: Gateway) -> str:
    return gw.create_key("phaseo sdk", credits_usd=10)


@pytest.fixture(scope="module")
def sdk(gw: Gateway, key: str) -> Phaseo:
    return Phaseo(api_key=key, base_url=f"{gw.base_url}/v1", enable_deprecation_warnings=False)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def _wait(sdk: Phaseo, video_id: str, timeout: float = 60) -> dict[str, Any]:
    """Until finished: a terminal status and its hold settled or voided (that follows the status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = sdk.videos.retrieve(video_id)
        if v["status"] in TERMINAL and v["billing"]["state"] in ("settled", "void"):
            return v
        time.sleep(0.1)
    raise AssertionError(f"{video_id} did not finish")


def _http_error(call: Any) -> urllib.error.HTTPError:
    with pytest.raises(urllib.error.HTTPError) as info:
        call()
    return info.value


def test_health(sdk: Phaseo, gw: Gateway) -> None:
    h = sdk.get_health()
    assert h["ok"] is True and h["status"] == "ok"
    assert h["database"]["status"] == "ok"
    assert h["database"]["backend"] == ("sqlite" if gw.backend == "sqlite" else "postgresql")
    local = next(p for p in h["providers"] if p["id"] == "local")
    assert local["active"] is True and "video.generation" in local["endpoints"]
    assert local["needs_credentials"] is False and local["configured"] is True


def test_models(sdk: Phaseo) -> None:
    page = sdk.models.list()
    assert page["ok"] is True and page["limit"] == 50 and page["offset"] == 0
    assert page["total"] > len(page["models"]) == 50
    assert page["object"] == "list"
    assert [m["id"] for m in page["data"]] == [m["model_id"] for m in page["models"]]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in page["data"])
    small = sdk.models.list({"limit": 3, "offset": 2})
    assert [m["model_id"] for m in small["models"]] == [m["model_id"] for m in page["models"][2:5]]
    assert [m["id"] for m in small["data"]] == [m["model_id"] for m in small["models"]]


def test_video_and_batch_models(sdk: Phaseo) -> None:
    videos = sdk.videos.list_models()
    local = next(m for m in videos["data"] if m["model"] == MODEL)
    assert "duration_seconds" in local["supported_parameters_detail"]["duration"]["aliases"]
    batches = sdk.batches.list_models()
    assert batches["object"] == "list" and batches["data"]
    assert all("endpoint" in m["supported_params_detail"] for m in batches["data"])


def test_credits(sdk: Phaseo) -> None:
    c = sdk.get_credits()
    assert c["ok"] is True
    credits = c["credits"]
    assert credits["balance_nanos"] == c["balance_nanos"] and credits["available_nanos"] == c["available_nanos"]
    assert credits["balance_usd"] == c["balance_usd"] and credits["workspace_id"] == c["workspace_id"]
    assert c["entries"] and c["entries"][0]["kind"]


def test_video_lifecycle_websocket_and_webhook(sdk: Phaseo, gw: Gateway, key: str, receiver: Receiver) -> None:
    created = sdk.videos.create({
        "model": MODEL, "prompt": "a clip made through the phaseo sdk", "duration_seconds": 2, "resolution": "480p",
        "webhook": {"url": receiver.url, "secret": SECRET,
                    "events": ["video.created", "video.status_changed", "video.completed"]},
    })
    vid = created["id"]
    assert created["object"] == "video" and created["seconds"] == 2
    assert created["status"] in ("queued", "in_progress")
    assert created["lifecycle_status"] == {"queued": "pending", "in_progress": "running"}[created["status"]]
    assert created["cancel_url"] == f"{gw.base_url}/v1/videos/{vid}/cancel"
    assert created["websocket_url"] == sdk.videos.websocket_url(vid)
    assert created["billing"]["state"] == "estimated" and created["billing"]["hold_state"] == "held"
    assert created["billing"]["reserved_nanos"] == created["billing"]["held_nanos"]

    # The SDK's websocket URL, followed to the end (close_on_terminal is the default).
    messages = []
    with connect(sdk.videos.websocket_url(vid, interval_ms=1000), open_timeout=10,
                 additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        while True:
            try:
                messages.append(json.loads(ws.recv(timeout=60)))
            except Exception:
                break
        assert ws.close_code == 1000
    assert messages[0]["type"] == "job.snapshot" and messages[0]["data"]["id"] == vid
    assert {m["type"] for m in messages[1:]} <= {"job.updated"}
    assert messages[-1]["data"]["status"] == "completed"

    done = _wait(sdk, vid)
    assert done["status"] == "completed" and done["lifecycle_status"] == "completed"
    assert done["cancel_url"] is None and done["native_video_id"]
    assert done["billing"]["state"] == "settled" and done["billing"]["total_nanos"] == done["billing"]["settled_nanos"]
    assert vid in [v["id"] for v in sdk.videos.list({"limit": 10})["data"]]

    content = sdk.videos.content(vid)
    assert content[4:8] == b"ftyp"
    link = sdk.videos.download_url(vid, {"ttl_seconds": 120})
    assert httpx.get(link["download_url"]).content == content  # signed: no key needed

    completed = receiver.wait_for(vid, "video.completed")
    assert verify_async_webhook_signature(secret=SECRET, body=completed.body, headers=completed.headers)
    assert not verify_async_webhook_signature(secret=SECRET, body=completed.body + b" ", headers=completed.headers)
    assert not verify_async_webhook_signature(secret=SECRET + "x", body=completed.body, headers=completed.headers)
    assert completed.headers["x-phaseo-event-type"] == "video.completed"
    assert completed.event["data"]["id"] == vid and completed.event["data"]["status"] == "completed"
    changed = receiver.wait_for(vid, "video.status_changed")
    assert verify_async_webhook_signature(secret=SECRET, body=changed.body, headers=changed.headers)

    assert sdk.videos.delete(vid) == {"id": vid, "object": "video.deleted", "deleted": True}
    assert _http_error(lambda: sdk.videos.retrieve(vid)).code == 404


def test_cancel(sdk: Phaseo) -> None:
    created = sdk.videos.create({"model": MODEL, "prompt": "long", "duration_seconds": 20, "resolution": "1080p"})
    cancelled = sdk.videos.cancel(created["id"])
    assert cancelled["status"] == "cancelled" and cancelled["lifecycle_status"] == "cancelled"
    assert cancelled["cancel_url"] is None
    final = _wait(sdk, created["id"])
    assert final["status"] == "cancelled"
    assert final["billing"]["state"] == "void" and final["billing"]["total_nanos"] == 0


def test_conflicting_duration_spellings_are_a_400(sdk: Phaseo) -> None:
    err = _http_error(lambda: sdk.videos.create({"model": MODEL, "prompt": "x", "duration_seconds": 2,
                                                 "duration": 3}))
    assert err.code == 400
    body = json.loads(err.read())
    assert body["error"]["code"] == "conflicting_parameters" and body["error"]["param"] == "duration_seconds"


def test_health_reports_an_unreachable_database() -> None:
    """No gateway: the database check itself, with sessions that cannot connect."""
    import asyncio
    from types import SimpleNamespace

    from aistats_gateway.http.health import database_health

    class Broken:
        async def __aenter__(self) -> Broken:
            raise ConnectionRefusedError("connection refused")

        async def __aexit__(self, *exc: object) -> None:
            return None

    gw = SimpleNamespace(settings=SimpleNamespace(is_sqlite=False), sessions=Broken)
    assert asyncio.run(database_health(gw)) == {"status": "unavailable", "backend": "postgresql",
                                                 "latency_ms": None, "error": "ConnectionRefusedError"}
