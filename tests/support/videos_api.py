"""Shared pieces of the /v1/videos API tests (``test_videos_api.py``, ``test_videos_content.py``): the
short local-renderer job, its create/wait helpers, the OpenAI error-shape check, image builders, and the
module fixtures ``done`` (one completed, seeded job), ``video_bytes`` (its content) and ``other`` (a key
in a second workspace), which a test module binds with ``done, video_bytes, other = video_fixtures()``."""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

MODEL = "local/procedural-video"
SHORT = {"model": MODEL, "prompt": "a short test clip", "duration": 1, "resolution": "480p"}
TERMINAL = {"completed", "failed", "cancelled", "expired"}
SEED_FIELDS = {  # every field of the seed's video response
    "id", "polling_url", "model", "request_id", "session_id", "status", "output_access", "generation_id",
    "created_at", "started_at", "completed_at", "object", "poll_after_seconds", "provider", "seconds", "size", "audio",
    "content_url", "download_url", "expires_at", "progress", "progress_source", "asset", "outputs", "billing", "usage",
    "error",
}
RANK = {"queued": 0, "in_progress": 1, "completed": 2, "failed": 2, "cancelled": 2, "expired": 2}


def png(width: int = 32, height: int = 32, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height (cheap; only the header is read)."""
    raw = bytearray(png(1, 1))
    ihdr = b"IHDR" + struct.pack(">II", width, height) + bytes(raw[24:29])
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(raw)


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def create(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    r = api.post("/v1/videos", json={**SHORT, **fields})
    assert r.status_code == 202, r.text
    return r.json()


def wait(api: httpx.Client, video_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/v1/videos/{video_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in TERMINAL:
            return body
        assert time.monotonic() < deadline, f"{video_id} still {body['status']}"
        time.sleep(0.05)


def assert_error(r: httpx.Response, status: int, param: str | None, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param, err
    assert isinstance(err["message"], str) and len(err["message"]) > 10
    for w in words:
        assert w.lower() in err["message"].lower(), (w, err["message"])
    return err


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def video_fixtures() -> tuple[Any, Any, Any]:
    """The module fixtures ``done``, ``video_bytes`` and ``other`` (bind all three in the module)."""

    @pytest.fixture(scope="module")
    def done(api: httpx.Client) -> dict[str, Any]:
        """One completed 1 s 480p 16:9 job, seeded."""
        job = create(api, seed=1234, negative_prompt="blur")
        return wait(api, job["id"])

    @pytest.fixture(scope="module")
    def video_bytes(api: httpx.Client, done: dict[str, Any]) -> bytes:
        r = api.get(f"/v1/videos/{done['id']}/content")
        assert r.status_code == 200
        return r.content

    @pytest.fixture(scope="module")
    def other(gateway: Any) -> httpx.Client:
        """A second key in its own workspace."""
        return gateway.client(gateway.create_key("tenant b", credits_usd=10))

    return done, video_bytes, other
