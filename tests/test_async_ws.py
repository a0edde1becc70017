"""``GET /v1/async/{kind}/{id}/ws`` with a real websocket client over real HTTP, on SQLite and
PostgreSQL: handshake errors, auth by header or query, tenant isolation, ping/refresh, pushes on
change (well inside the re-read interval), job.deleted and close_on_terminal."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support.gateway import Gateway

MODEL = "local/procedural-video"
TERMINAL = ("completed", "failed", "cancelled", "expired")


def _ws_url(gateway: Gateway, video_id: str, query: str = "", kind: str = "video") -> str:
    return f"ws://127.0.0.1:{gateway.server.port}/v1/async/{kind}/{video_id}/ws{'?' + query if query else ''}"


def _open(gateway: Gateway, video_id: str, key: str | None, query: str = "", kind: str = "video") -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(_ws_url(gateway, video_id, query, kind), additional_headers=headers, open_timeout=10)


def _recv(ws: ClientConnection, timeout: float = 30) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return message


def _refused(gateway: Gateway, video_id: str, key: str | None, query: str = "", kind: str = "video"
             ) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        _open(gateway, video_id, key, query, kind)
    response = info.value.response
    return response.status_code, json.loads(response.body or b"{}")


def _create(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": "ws", "duration": 1, "resolution": "480p", **fields}
    r = api.post("/v1/videos", json=body)
    assert r.status_code == 202, r.text
    created: dict[str, Any] = r.json()
    return created


def _finished(api: httpx.Client, video_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v: dict[str, Any] = api.get(f"/v1/videos/{video_id}").json()
        if v["status"] in TERMINAL and v["billing"]["state"] in ("settled", "void"):
            return v
        time.sleep(0.1)
    raise AssertionError(f"{video_id} did not finish")


@pytest.fixture(scope="module")
def done(api: httpx.Client) -> dict[str, Any]:
    created = _create(api)
    return _finished(api, created["id"])


def test_plain_get_is_426(api: httpx.Client, done: dict[str, Any]) -> None:
    r = api.get(f"/v1/async/video/{done['id']}/ws")
    assert r.status_code == 426 and r.headers["upgrade"].lower() == "websocket"
    assert r.json()["error"]["code"] == "websocket_upgrade_required"


def test_handshake_errors(gateway: Gateway, key: str, done: dict[str, Any]) -> None:
    status, body = _refused(gateway, done["id"], None)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = _refused(gateway, done["id"], "aistats_v1_sk_abcdefabcdef_wrongsecretwrongsecret")
    assert status == 401
    other = gateway.create_key("other workspace")
    foreign = _refused(gateway, done["id"], other)
    unknown = _refused(gateway, "video_" + "0" * 24, key)
    assert foreign[0] == unknown[0] == 404
    assert foreign[1]["error"]["code"] == unknown[1]["error"]["code"] == "async_job_not_found_or_not_owned"
    status, body = _refused(gateway, done["id"], key, kind="music")
    assert status == 400 and body["error"]["code"] == "invalid_async_job_path"
    status, body = _refused(gateway, done["id"], key, query="interval_ms=soon")
    assert status == 400 and body["error"]["param"] == "interval_ms"


def test_snapshot_of_a_finished_job_then_close(gateway: Gateway, key: str, api: httpx.Client,
                                               done: dict[str, Any]) -> None:
    with _open(gateway, done["id"], key, "interval_ms=50") as ws:  # clamped to 1000, not refused
        snap = _recv(ws)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1000
    assert snap["type"] == "job.snapshot"
    rest = api.get(f"/v1/videos/{done['id']}").json()
    volatile = ("download_url", "expires_at", "outputs", "poll_after_seconds", "webhook")
    assert {k: v for k, v in snap["data"].items() if k not in volatile} == \
        {k: v for k, v in rest.items() if k not in volatile}


def test_query_key_ping_refresh_and_deleted_push(gateway: Gateway, key: str, api: httpx.Client) -> None:
    vid = _finished(api, _create(api)["id"])["id"]
    with _open(gateway, vid, None, f"api_key={key}&close_on_terminal=false&interval_ms=10000") as ws:
        connected_at = time.monotonic()  # the server's first re-read is due 10 s after its accept, before this
        assert _recv(ws)["type"] == "job.snapshot"
        ws.send("ping")
        assert _recv(ws) == {"type": "pong"}
        ws.send(json.dumps({"type": "ping"}))
        assert _recv(ws) == {"type": "pong"}
        ws.send("refresh")
        refreshed = _recv(ws)
        assert refreshed["type"] == "job.updated" and refreshed["data"]["id"] == vid
        ws.send("something else")  # ignored
        ws.send("ping")
        assert _recv(ws) == {"type": "pong"}
        assert api.delete(f"/v1/videos/{vid}").status_code == 200
        gone = _recv(ws, timeout=30)
        pushed_after = time.monotonic() - connected_at
        assert gone == {"type": "job.deleted", "data": {"id": vid, "kind": "video"}}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1000
    assert pushed_after < 9.5, pushed_after  # so it was pushed on the change, not found by a re-read


def test_changes_are_pushed_and_terminal_closes(gateway: Gateway, key: str, api: httpx.Client) -> None:
    vid = _create(api, duration=20, resolution="1080p", prompt="long")["id"]
    messages = []
    with _open(gateway, vid, key, "interval_ms=10000") as ws:
        connected_at = time.monotonic()  # the server's first re-read is due 10 s after its accept, before this
        messages.append(_recv(ws))
        assert api.post(f"/v1/videos/{vid}/cancel").status_code == 200
        while True:
            try:
                messages.append(_recv(ws))
            except ConnectionClosed:
                break
        pushed_after = time.monotonic() - connected_at
        assert ws.close_code == 1000
    assert messages[0]["type"] == "job.snapshot" and messages[0]["data"]["status"] in ("queued", "in_progress")
    assert all(m["type"] == "job.updated" for m in messages[1:])
    assert messages[-1]["data"]["status"] == "cancelled" and messages[-1]["data"]["lifecycle_status"] == "cancelled"
    assert pushed_after < 9.5, pushed_after  # so it was pushed on the change, not found by a re-read
