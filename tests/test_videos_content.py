"""The /v1/videos content routes against a real gateway (SQLite and PostgreSQL) and the local renderer:
content headers, ranges and variants, signed download links, cancel and delete, tenant isolation."""

from __future__ import annotations

import io
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from PIL import Image

from aistats_gateway.videos import signing
from tests.support.videos_api import (
    assert_error,
    create,
    data_url,
    png,
    video_fixtures,
    wait,
)

done, video_bytes, other = video_fixtures()

# ---- Content: headers, ranges, variants ------------------------------------------------------------------


def test_content_headers(api: httpx.Client, done: dict[str, Any], video_bytes: bytes) -> None:
    r = api.get(f"/v1/videos/{done['id']}/content")
    assert r.headers["content-type"] == "video/mp4"
    assert int(r.headers["content-length"]) == len(video_bytes) == done["asset"]["bytes"]
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"].startswith('"') and r.headers["etag"].endswith('"')
    assert video_bytes[4:8] == b"ftyp"
    assert "content-disposition" not in r.headers
    assert api.get(f"/v1/videos/{done['id']}/content", params={"variant": "video", "index": 0}).content == video_bytes


@pytest.mark.parametrize("spec", ["0-99", "100-", "-100", "last", "last-open", "0-huge", "middle"])
def test_content_ranges(api: httpx.Client, done: dict[str, Any], video_bytes: bytes, spec: str) -> None:
    n = len(video_bytes)
    header, expected = {
        "0-99": ("bytes=0-99", (0, 99)), "100-": ("bytes=100-", (100, n - 1)), "-100": ("bytes=-100", (n - 100, n - 1)),
        "last": (f"bytes={n - 1}-{n - 1}", (n - 1, n - 1)), "last-open": (f"bytes={n - 1}-", (n - 1, n - 1)),
        "0-huge": (f"bytes=0-{n * 10}", (0, n - 1)), "middle": ("bytes=1000-1999", (1000, 1999)),
    }[spec]
    r = api.get(f"/v1/videos/{done['id']}/content", headers={"Range": header})
    assert r.status_code == 206, r.text
    start, end = expected
    assert r.headers["content-range"] == f"bytes {start}-{end}/{n}"
    assert int(r.headers["content-length"]) == end - start + 1
    assert r.content == video_bytes[start:end + 1]
    assert r.headers["content-type"] == "video/mp4" and r.headers["etag"]


def test_content_unsatisfiable_and_conditional(api: httpx.Client, done: dict[str, Any], video_bytes: bytes) -> None:
    url, n = f"/v1/videos/{done['id']}/content", len(video_bytes)
    for bad in (f"bytes={n}-", f"bytes={n + 5}-{n + 10}", "bytes=-0", "bytes=50-10"):
        r = api.get(url, headers={"Range": bad})
        assert r.status_code == 416, (bad, r.status_code)
        assert r.headers["content-range"] == f"bytes */{n}"
        assert r.json()["error"]["code"] == "range_not_satisfiable"
    assert api.get(url, headers={"Range": "pages=1-2"}).status_code == 200  # ignored
    etag = api.get(url).headers["etag"]
    r = api.get(url, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    assert api.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    r = api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and len(r.content) == n
    assert api.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206


def test_thumbnail_variant(api: httpx.Client, done: dict[str, Any]) -> None:
    r = api.get(f"/v1/videos/{done['id']}/content", params={"variant": "thumbnail"})
    assert r.status_code == 200
    assert r.headers["content-type"] in ("image/webp", "image/jpeg")
    assert int(r.headers["content-length"]) == len(r.content) > 0
    with Image.open(io.BytesIO(r.content)) as img:
        assert img.width > 0 and img.height > 0
    assert done["outputs"][0]["thumbnail_url"].endswith("variant=thumbnail")


@pytest.mark.parametrize(("params", "status", "param"), [
    ({"index": 1}, 404, "index"), ({"index": 3, "variant": "thumbnail"}, 404, "index"),
    ({"index": 4}, 400, "index"), ({"index": -1}, 400, "index"), ({"index": "one"}, 400, "index"),
    ({"variant": "spritesheet"}, 400, "variant"),
])
def test_content_bad_index_or_variant(api: httpx.Client, done: dict[str, Any], params: dict[str, Any],
                                      status: int, param: str) -> None:
    assert_error(api.get(f"/v1/videos/{done['id']}/content", params=params), status, param)


def test_content_and_link_while_not_finished(api: httpx.Client) -> None:
    job = create(api, duration=20, resolution="1080p")
    try:
        err = assert_error(api.get(f"/v1/videos/{job['id']}/content"), 409, "video_id")
        assert err["code"] == "video_not_ready"
        assert_error(api.post(f"/v1/videos/{job['id']}/download_url"), 409, "video_id")
    finally:
        api.post(f"/v1/videos/{job['id']}/cancel")


def test_unknown_video(api: httpx.Client, gateway: Any) -> None:
    for vid in ("video_000000000000000000000000", "x" * 200, "video_%00", "a%20b", "%E2%9C%93"):
        assert_error(api.get(f"/v1/videos/{vid}"), 404, "video_id")
        assert_error(api.get(f"/v1/videos/{vid}/content"), 404, "video_id")
        assert_error(api.post(f"/v1/videos/{vid}/download_url"), 404, "video_id")
        assert_error(api.post(f"/v1/videos/{vid}/cancel"), 404, "video_id")
        assert_error(api.delete(f"/v1/videos/{vid}"), 404, "video_id")
        if "%" not in vid:  # a valid signature for a video that does not exist
            assert httpx.get(signing.sign(gateway.settings.signing_key, gateway.base_url, vid).url).status_code == 404
    for after in ("\x00", "x" * 200, "video_000000000000000000000000"):
        assert_error(api.get("/v1/videos", params={"after": after}), 400, "after")


def test_head_content(api: httpx.Client, done: dict[str, Any], video_bytes: bytes) -> None:
    r = api.head(f"/v1/videos/{done['id']}/content")
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) == len(video_bytes) and r.headers["content-type"] == "video/mp4"
    r = api.head(f"/v1/videos/{done['id']}/content", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 0-9/{len(video_bytes)}"
    link = api.post(f"/v1/videos/{done['id']}/download_url").json()["download_url"]
    assert httpx.head(link).status_code == 200
    assert api.head("/v1/videos/video_000000000000000000000000/content").status_code == 404


# ---- Signed download links -------------------------------------------------------------------------------


def test_signed_link(api: httpx.Client, done: dict[str, Any], video_bytes: bytes) -> None:
    r = api.post(f"/v1/videos/{done['id']}/download_url", json={"ttl_seconds": 120})
    assert r.status_code == 200, r.text
    link = r.json()
    assert set(link) == {"download_url", "expires_at"}
    assert abs(link["expires_at"] - (time.time() + 120)) < 10
    got = httpx.get(link["download_url"])  # no key
    assert got.status_code == 200 and got.content == video_bytes
    assert got.headers["content-type"] == "video/mp4" and got.headers["accept-ranges"] == "bytes"
    assert got.headers["content-disposition"] == f'attachment; filename="{done["id"]}.mp4"'
    part = httpx.get(link["download_url"], headers={"Range": "bytes=-10"})
    assert part.status_code == 206 and part.content == video_bytes[-10:]


@pytest.mark.parametrize("disposition", ["inline", "attachment"])
def test_signed_link_disposition(api: httpx.Client, done: dict[str, Any], disposition: str) -> None:
    link = api.post(f"/v1/videos/{done['id']}/download_url", json={"disposition": disposition}).json()
    r = httpx.get(link["download_url"])
    assert r.status_code == 200 and r.headers["content-disposition"].startswith(f"{disposition};")


def test_download_url_accepts_empty_body(api: httpx.Client, done: dict[str, Any]) -> None:
    for headers in ({"Content-Type": "application/json"}, {}):
        r = api.post(f"/v1/videos/{done['id']}/download_url", content=b"", headers=headers)
        assert r.status_code == 200, r.text
        assert abs(r.json()["expires_at"] - (time.time() + 900)) < 10


def _tamper(url: str, **changes: Any) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update({k: str(v) for k, v in changes.items()})
    query = {k: v for k, v in query.items() if v != "None"}
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


@pytest.mark.parametrize("change", ["sig", "expires", "index", "variant", "disposition", "no-sig", "id",
                                    "non-ascii-sig", "upper-sig", "short-sig", "no-expires", "expires-zero"])
def test_signed_link_tampered(api: httpx.Client, gateway: Any, done: dict[str, Any], change: str) -> None:
    url = api.post(f"/v1/videos/{done['id']}/download_url").json()["download_url"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    bad = {
        "sig": _tamper(url, sig=("0" if query["sig"][0] != "0" else "1") + query["sig"][1:]),
        "expires": _tamper(url, expires=int(query["expires"]) + 3600),
        "index": _tamper(url, index=1), "variant": _tamper(url, variant="thumbnail"),
        "disposition": _tamper(url, disposition="inline"), "no-sig": _tamper(url, sig=None),
        "id": url.replace(done["id"], done["id"][:-1] + ("0" if done["id"][-1] != "0" else "1")),
        "non-ascii-sig": _tamper(url, sig="é" * 64), "upper-sig": _tamper(url, sig=query["sig"].upper()),
        "short-sig": _tamper(url, sig=query["sig"][:-1]), "no-expires": _tamper(url, expires=None),
        "expires-zero": _tamper(url, expires=0),
    }[change]
    r = httpx.get(bad)
    assert r.status_code == 403, (change, r.status_code, r.text)
    assert r.json()["error"]["code"].startswith("download_link_")


def test_signed_link_expired_and_thumbnail(gateway: Any, done: dict[str, Any]) -> None:
    key = gateway.settings.signing_key
    old = signing.sign(key, gateway.base_url, done["id"], ttl_seconds=900, now=time.time() - 1000)
    r = httpx.get(old.url)
    assert r.status_code == 403 and r.json()["error"]["code"] == "download_link_expired"
    thumb = signing.sign(key, gateway.base_url, done["id"], variant="thumbnail", disposition="inline")
    r = httpx.get(thumb.url)
    assert r.status_code == 200 and r.headers["content-type"] in ("image/webp", "image/jpeg")
    assert r.headers["content-disposition"].startswith("inline;")
    other_key = signing.sign(b"not-the-gateway-key" * 2, gateway.base_url, done["id"])
    assert httpx.get(other_key.url).status_code == 403


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"ttl_seconds": 59}, 400, "ttl_seconds"), ({"ttl_seconds": 3601}, 400, "ttl_seconds"),
    ({"ttl_seconds": "soon"}, 400, "ttl_seconds"), ({"index": 4}, 400, "index"), ({"index": 1}, 400, "index"),
    ({"disposition": "download"}, 400, "disposition"), ({"ttl": 60}, 400, "ttl"), ([1], 400, None),
    ({"ttl_seconds": True}, 400, "ttl_seconds"), ({"index": False}, 400, "index"),
])
def test_download_url_bad_bodies(api: httpx.Client, done: dict[str, Any], body: Any, status: int,
                                 param: str | None) -> None:
    assert_error(api.post(f"/v1/videos/{done['id']}/download_url", json=body), status, param)


@pytest.mark.parametrize("ttl", [60, 3600])
def test_download_url_ttl_bounds(api: httpx.Client, done: dict[str, Any], ttl: int) -> None:
    r = api.post(f"/v1/videos/{done['id']}/download_url", json={"ttl_seconds": ttl})
    assert r.status_code == 200 and abs(r.json()["expires_at"] - (time.time() + ttl)) < 10


def test_download_url_bad_json(api: httpx.Client, done: dict[str, Any]) -> None:
    r = api.post(f"/v1/videos/{done['id']}/download_url", content=b"{oops",
                 headers={"Content-Type": "application/json"})
    assert_error(r, 400, None, "JSON")


# ---- Cancel and delete -----------------------------------------------------------------------------------


def test_cancel_and_delete_a_running_job(api: httpx.Client, gateway: Any) -> None:
    job = create(api, duration=20, resolution="1080p", prompt="long")
    vid = job["id"]
    err = assert_error(api.delete(f"/v1/videos/{vid}", headers={"Content-Type": "application/json"}), 409,
                       "video_id")
    assert err["code"] == "video_not_terminal"
    r = api.post(f"/v1/videos/{vid}/cancel", content=b"", headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["error"]["code"] == "cancelled"
    for _ in range(8):
        body = api.get(f"/v1/videos/{vid}").json()
        assert body["status"] == "cancelled" and body["outputs"] == [] and body["asset"] is None
        time.sleep(0.25)
    assert_error(api.post(f"/v1/videos/{vid}/cancel"), 409, "video_id", "cancelled")
    err = assert_error(api.get(f"/v1/videos/{vid}/content"), 409, "video_id", "cancelled")
    assert err["code"] == "video_cancelled"
    assert_error(api.post(f"/v1/videos/{vid}/download_url"), 409, "video_id")
    r = api.delete(f"/v1/videos/{vid}", headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json() == {"id": vid, "object": "video.deleted", "deleted": True}
    assert not (gateway.data_dir / "blobs" / "videos" / vid).exists()
    assert not list((gateway.data_dir / "scratch" / "local").glob(f"{vid}-*"))


def test_cancel_a_completed_job(api: httpx.Client, done: dict[str, Any]) -> None:
    err = assert_error(api.post(f"/v1/videos/{done['id']}/cancel", json={}), 409, "video_id", "completed")
    assert err["code"] == "video_not_cancellable"
    assert api.get(f"/v1/videos/{done['id']}").json()["status"] == "completed"


def test_delete_a_completed_job(api: httpx.Client, gateway: Any) -> None:
    job = wait(api, create(api, input_references=[{"image_url": {"url": data_url(png())}}])["id"])
    vid = job["id"]
    blobs = gateway.data_dir / "blobs" / "videos" / vid
    assert blobs.is_dir() and any(blobs.rglob("*.mp4")) and any(blobs.rglob("inputs/*"))
    link = api.post(f"/v1/videos/{vid}/download_url").json()["download_url"]
    r = api.request("DELETE", f"/v1/videos/{vid}", content=b"", headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json() == {"id": vid, "object": "video.deleted", "deleted": True}
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))
    assert_error(api.get(f"/v1/videos/{vid}"), 404, "video_id")
    assert_error(api.get(f"/v1/videos/{vid}/content"), 404, "video_id")
    assert httpx.get(link).status_code == 404
    assert_error(api.delete(f"/v1/videos/{vid}"), 404, "video_id")
    assert_error(api.post(f"/v1/videos/{vid}/cancel"), 404, "video_id")
    assert vid not in [v["id"] for v in api.get("/v1/videos", params={"limit": 100}).json()["data"]]


def test_failed_job(api: httpx.Client, gateway: Any) -> None:
    from sqlalchemy import update

    from aistats_gateway.videos.tables import VideoJob
    from tests.support.gateway import run_async

    vid = create(api, duration=20, resolution="1080p")["id"]

    async def fail(sessions: Any) -> int:
        async with sessions() as s, s.begin():
            res = await s.execute(update(VideoJob).where(VideoJob.id == vid).values(
                status="failed", error_code="provider_error", error_message="the provider exploded"))
            return res.rowcount

    assert run_async(fail, gateway.settings) == 1
    time.sleep(1.0)  # the runner notices and stops; it must not move the job
    body = api.get(f"/v1/videos/{vid}").json()
    assert body["status"] == "failed"
    assert body["error"] == {"code": "provider_error", "message": "the provider exploded"}
    err = assert_error(api.get(f"/v1/videos/{vid}/content"), 409, "video_id", "the provider exploded")
    assert err["code"] == "video_failed"
    assert_error(api.post(f"/v1/videos/{vid}/download_url"), 409, "video_id")
    assert_error(api.post(f"/v1/videos/{vid}/cancel"), 409, "video_id", "failed")
    assert api.delete(f"/v1/videos/{vid}").json()["deleted"] is True


# ---- Tenant isolation ------------------------------------------------------------------------------------


def test_tenant_isolation(api: httpx.Client, other: httpx.Client, done: dict[str, Any]) -> None:
    vid = done["id"]
    running = create(api, duration=20, resolution="1080p")["id"]
    try:
        for target in (vid, running):
            assert_error(other.get(f"/v1/videos/{target}"), 404, "video_id")
            assert_error(other.get(f"/v1/videos/{target}/content"), 404, "video_id")
            assert_error(other.get(f"/v1/videos/{target}/content", params={"variant": "thumbnail"}), 404, "video_id")
            assert_error(other.post(f"/v1/videos/{target}/download_url"), 404, "video_id")
            assert_error(other.post(f"/v1/videos/{target}/cancel"), 404, "video_id")
            assert_error(other.delete(f"/v1/videos/{target}"), 404, "video_id")
        listed = other.get("/v1/videos", params={"limit": 100}).json()
        assert vid not in [v["id"] for v in listed["data"]] and running not in [v["id"] for v in listed["data"]]
        assert_error(other.get("/v1/videos", params={"after": vid}), 400, "after")
        assert api.get(f"/v1/videos/{running}").json()["status"] in ("queued", "in_progress")
        assert api.get(f"/v1/videos/{vid}").json()["status"] == "completed"
    finally:
        api.post(f"/v1/videos/{running}/cancel")
