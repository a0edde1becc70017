"""The /v1/videos HTTP API against a real gateway (SQLite and PostgreSQL) and the local renderer."""

from __future__ import annotations

import hashlib
import itertools
import time
from typing import Any

import httpx
import pytest

from aistats_gateway.videos import media
from tests.support.videos_api import (
    MODEL,
    RANK,
    SEED_FIELDS,
    SHORT,
    TERMINAL,
    assert_error,
    create,
    data_url,
    huge_png,
    path_of,
    png,
    video_fixtures,
    wait,
)

done, video_bytes, other = video_fixtures()

# ---- Create: the body, every field, and the video object -------------------------------------------------


def test_create_with_every_supported_seed_field(api: httpx.Client, tmp_path: Any) -> None:
    body = {
        "model": MODEL, "prompt": "a red square drifting", "duration": 1, "resolution": "480p",
        "aspect_ratio": "1:1", "seed": 42, "sample_count": 1, "negative_prompt": "noise",
        "generate_audio": False, "enhance_prompt": False,
        "input_references": [{"type": "image_url", "role": "first_frame", "reference_type": "asset",
                              "image_url": {"url": data_url(png())}}],
        "provider_params": {"style": "calm"}, "output": {"access": "both"},
        "webhook": {"url": "https://93.184.215.14/hook", "secret": "whsec_c2VjcmV0", "events": ["video.completed"]},
        "provider": {"order": ["local"], "only": ["local"], "ignore": [], "include_alpha": False},
    }
    r = api.post("/v1/videos", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "in_progress")
    assert job["provider"] == "local" and job["model"] == MODEL
    assert job["size"] == "480x480" and job["seconds"] == 1.0 and job["audio"] is False
    assert job["webhook"] == {"url": "https://93.184.215.14/hook", "events": ["video.completed"],
                              "has_secret": True, "deliveries": []}  # the secret itself is never shown
    final = wait(api, job["id"])
    assert final["status"] == "completed", final
    asset = final["asset"]
    assert (asset["width"], asset["height"], asset["duration_seconds"]) == (480, 480, 1.0)
    path = tmp_path / "v.mp4"
    path.write_bytes(api.get(f"/v1/videos/{job['id']}/content").content)
    info = media.probe(path)
    assert (info.width, info.height) == (480, 480) and abs(info.duration_seconds - 1.0) < 0.05


def test_queued_video_object_fields(api: httpx.Client) -> None:
    r = api.post("/v1/videos", json=SHORT)
    assert r.status_code == 202
    assert int(r.headers["openai-poll-after-ms"]) > 0
    job = r.json()
    assert set(job) >= SEED_FIELDS, SEED_FIELDS - set(job)
    assert job["request_id"] == r.headers["x-request-id"] and job["session_id"] is None
    assert job["object"] == "video" and job["id"].startswith("video_")
    assert job["polling_url"].endswith(f"/v1/videos/{job['id']}")
    assert job["status"] in ("queued", "in_progress") and job["output_access"] == "both"
    assert isinstance(job["created_at"], int) and abs(job["created_at"] - time.time()) < 60
    assert job["completed_at"] is None and job["asset"] is None and job["outputs"] == []
    assert job["content_url"] is None and job["download_url"] is None and job["expires_at"] is None
    assert isinstance(job["progress"], int) and 0 <= job["progress"] <= 100
    assert job["progress_source"] in ("provider", "estimated")
    assert isinstance(job["poll_after_seconds"], int) and job["poll_after_seconds"] >= 1
    assert job["usage"] == {"cost": 0.0, "is_byok": False} and isinstance(job["billing"], dict)
    assert job["error"] is None and job["size"] == "854x480" and job["seconds"] == 1.0
    wait(api, job["id"])


def test_completed_video_object_fields(api: httpx.Client, done: dict[str, Any], video_bytes: bytes,
                                       tmp_path: Any) -> None:
    r = api.get(f"/v1/videos/{done['id']}")
    assert r.status_code == 200 and int(r.headers["openai-poll-after-ms"]) > 0
    job = r.json()
    assert set(job) >= SEED_FIELDS, SEED_FIELDS - set(job)
    assert job["request_id"] == done["request_id"] != r.headers["x-request-id"]
    assert job["request_id"].startswith("req_")
    assert job["status"] == "completed" and job["progress"] == 100 and job["error"] is None
    assert job["created_at"] <= job["started_at"] <= job["completed_at"]
    assert job["poll_after_seconds"] == 0
    asset = job["asset"]
    assert set(asset) == {"id", "mime_type", "bytes", "sha256", "width", "height", "duration_seconds"}
    assert asset["mime_type"] == "video/mp4" and asset["bytes"] == len(video_bytes)
    assert asset["sha256"] == hashlib.sha256(video_bytes).hexdigest()
    path = tmp_path / "v.mp4"
    path.write_bytes(video_bytes)
    info = media.probe(path)
    assert (asset["width"], asset["height"]) == (info.width, info.height) == (854, 480)
    assert asset["duration_seconds"] == pytest.approx(info.duration_seconds, abs=0.01)
    assert asset["duration_seconds"] == pytest.approx(1.0, abs=0.05)
    [out] = job["outputs"]
    assert out["index"] == 0 and out["bytes_available"] is True and out["mime_type"] == "video/mp4"
    assert out["sha256"] == asset["sha256"]
    assert out["content_url"] == job["content_url"] and job["content_url"].endswith(f"/{job['id']}/content")
    assert out["download_url"] == job["download_url"] and job["expires_at"] > time.time()


@pytest.mark.parametrize("timing", [{"seconds": "1"}, {"seconds": 1, "duration": 1}, {"duration": 1.0}])
def test_seconds_is_duration(api: httpx.Client, timing: dict[str, Any]) -> None:
    body = {k: v for k, v in SHORT.items() if k != "duration"} | timing
    r = api.post("/v1/videos", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["seconds"] == 1.0
    api.post(f"/v1/videos/{r.json()['id']}/cancel")


@pytest.mark.parametrize(("aspect", "size"), [
    ("16:9", (854, 480)), ("1:1", (480, 480)), ("4:3", (640, 480)), ("3:4", (480, 640)),
    ("9:16", (480, 854)),
])
def test_every_aspect_ratio_renders_at_480p(api: httpx.Client, aspect: str, size: tuple[int, int]) -> None:
    job = wait(api, create(api, aspect_ratio=aspect)["id"])
    assert job["status"] == "completed", job["error"]
    assert (job["asset"]["width"], job["asset"]["height"]) == size


def test_data_png_first_frame_and_uploaded_non_image(api: httpx.Client) -> None:
    job = create(api, prompt="", input_references=[{"role": "first_frame", "image_url": {"url": data_url(png())}}])
    assert wait(api, job["id"])["status"] == "completed"
    r = api.post("/v1/videos", data={"model": MODEL, "prompt": "x", "seconds": "1"},
                 files={"input_reference": ("a.txt", b"hello", "text/plain")})
    assert_error(r, 400, "input_reference", "image")


# ---- Validation: every failure is a 400 in the OpenAI shape with param set -------------------------------

HTTPS_IMG = "https://images.example/a.png"
INVALID: list[tuple[str, dict[str, Any], str | None, tuple[str, ...]]] = [
    ("model-missing", {"model": None}, "model", ("model",)),
    ("model-empty", {"model": ""}, "model", ()),
    ("model-not-string", {"model": 12}, "model", ()),
    ("prompt-missing", {"prompt": None}, "prompt", ("prompt",)),
    ("prompt-not-string", {"prompt": ["a"]}, "prompt", ()),
    ("prompt-too-long", {"prompt": "x" * 32001}, "prompt", ("32000",)),
    ("prompt-empty-no-image", {"prompt": "  "}, "prompt", ("image",)),
    ("model-unknown", {"model": "nobody/no-such-model"}, "model", ("nobody/no-such-model",)),
    ("model-not-video", {"model": "openai/gpt-5"}, "model", ("openai/gpt-5", "video")),
    ("size-with-resolution", {"size": "640x360"}, "size", ("resolution",)),
    ("size-with-aspect", {"resolution": None, "size": "640x360", "aspect_ratio": "16:9"}, "size",
     ("aspect_ratio",)),
    ("size-malformed", {"resolution": None, "size": "big"}, "size", ("WxH",)),
    ("size-empty", {"resolution": None, "size": ""}, "size", ("WxH",)),
    ("size-zero", {"resolution": None, "size": "0x0"}, "size", ("WxH",)),
    ("size-bad-ratio", {"resolution": None, "size": "1000x200"}, "size", ("16:9", "9:16", "1:1")),
    ("resolution-unknown", {"resolution": "360p"}, "resolution", ("480p", "720p", "1080p", "4K")),
    ("resolution-empty", {"resolution": ""}, "resolution", ("480p", "720p", "1080p", "4K")),
    ("resolution-unsupported", {"resolution": "4K"}, "resolution", ("480p", "720p", "1080p")),
    ("aspect-malformed", {"aspect_ratio": "wide"}, "aspect_ratio", ("W:H",)),
    ("aspect-zero", {"aspect_ratio": "0:9"}, "aspect_ratio", ()),
    ("aspect-unsupported", {"aspect_ratio": "21:9"}, "aspect_ratio", ("16:9", "9:16", "1:1", "4:3", "3:4")),
    ("duration-seconds-disagree", {"duration": 1, "seconds": 2}, "seconds", ("duration",)),
    ("duration-too-long", {"duration": 21}, "duration", ("between 1 and 20",)),
    ("seconds-too-long", {"duration": None, "seconds": 30}, "seconds", ("between 1 and 20",)),
    ("duration-zero", {"duration": 0}, "duration", ()),
    ("duration-not-number", {"duration": "long"}, "duration", ()),
    ("duration-fraction", {"duration": 1.5}, "duration", ()),
    ("duration-bool", {"duration": True}, "duration", ("boolean",)),
    ("seed-bool", {"seed": False}, "seed", ("boolean",)),
    ("sample-count-bool", {"sample_count": True}, "sample_count", ("boolean",)),
    ("generate-audio-number", {"generate_audio": 0}, "generate_audio", ("boolean",)),
    ("include-alpha-number", {"provider": {"include_alpha": 1}}, "provider.include_alpha", ("boolean",)),
    ("seed-negative", {"seed": -1}, "seed", ()),
    ("sample-count-high", {"sample_count": 5}, "sample_count", ("4",)),
    ("sample-count-zero", {"sample_count": 0}, "sample_count", ()),
    ("generate-audio", {"generate_audio": True}, "generate_audio", ("(true)", "one of: false")),
    ("enhance-prompt", {"enhance_prompt": True}, "enhance_prompt", ("not supported",)),
    ("compression-quality", {"compression_quality": 50}, "compression_quality", ("not supported",)),
    ("person-generation", {"person_generation": "allow_all"}, "person_generation", ("not supported",)),
    ("resize-mode", {"resize_mode": "pad"}, "resize_mode", ("not supported",)),
    ("negative-not-string", {"negative_prompt": 5}, "negative_prompt", ()),
    ("unknown-field", {"foo": 1}, "foo", ("foo",)),
    ("unknown-nested", {"output": {"access": "both", "ttl": 5}}, "output.ttl", ("ttl",)),
    ("output-access", {"output": {"access": "public"}}, "output.access", ("bytes", "signed_url", "both")),
    ("provider-only-unknown", {"provider": {"only": ["acme"]}}, "provider.only", ("acme", "local")),
    ("provider-ignore-all", {"provider": {"ignore": ["local"]}}, "provider", ()),
    ("provider-params-controlled", {"provider_params": {"seed": 1}}, "provider_params.seed", ("seed",)),
    ("webhook-bad-event", {"webhook": {"url": HTTPS_IMG, "events": ["video.exploded"]}}, "webhook.events[0]", ()),
    ("refs-not-list", {"input_references": "x"}, "input_references", ()),
    ("refs-bad-role", {"input_references": [{"role": "background", "image_url": {"url": HTTPS_IMG}}]},
     "input_references[0].role", ("first_frame", "last_frame", "reference", "source", "mask")),
    ("refs-no-image", {"input_references": [{"role": "reference"}]}, "input_references[0].image_url", ()),
    ("refs-two-first-frames", {"input_references": [{"image_url": {"url": data_url(png())}}] * 2},
     "input_references", ("first_frame",)),
    ("refs-not-an-image", {"input_references": [{"image_url": {"url": data_url(b"GIF89a-not-really")}}]},
     "input_references[0].image_url.url", ("not a readable image",)),
    ("refs-truncated-png", {"input_references": [{"image_url": {"url": data_url(png()[:60])}}]},
     "input_references[0].image_url.url", ("not a readable image",)),
    ("refs-too-many-pixels", {"input_references": [{"image_url": {"url": data_url(huge_png(8000, 6000))}}]},
     "input_references[0].image_url.url", ("too large",)),
    ("refs-decompression-bomb", {"input_references": [{"image_url": {"url": data_url(huge_png(30000, 30000))}}]},
     "input_references[0].image_url.url", ("too large",)),
    ("refs-http", {"input_references": [{"image_url": {"url": "http://images.example/a.png"}}]},
     "input_references[0].image_url.url", ()),
    ("refs-loopback", {"input_references": [{"image_url": {"url": "https://127.0.0.1/a.png"}}]},
     "input_references[0].image_url.url", ()),
    ("refs-localhost", {"input_references": [{"image_url": {"url": "https://localhost:8443/a.png"}}]},
     "input_references[0].image_url.url", ()),
    ("refs-metadata", {"input_references": [{"image_url": {"url": "https://169.254.169.254/latest/x.png"}}]},
     "input_references[0].image_url.url", ()),
    ("refs-private", {"input_references": [{"image_url": {"url": "https://10.0.0.7/a.png"}}]},
     "input_references[0].image_url.url", ()),
    ("refs-ftp", {"input_references": [{"image_url": {"url": "ftp://images.example/a.png"}}]},
     "input_references[0].image_url.url", ()),
    ("refs-data-not-image", {"input_references": [{"image_url": {"url": "data:text/plain;base64,aGk="}}]},
     "input_references[0].image_url.url", ("image",)),
    ("refs-data-bad-base64", {"input_references": [{"image_url": {"url": "data:image/png;base64,***"}}]},
     "input_references[0].image_url.url", ()),
    ("openai-ref-loopback", {"input_reference": {"image_url": "https://127.0.0.1/a.png"}},
     "input_reference.image_url", ()),
    ("prompt-nul", {"prompt": "a\x00b"}, "prompt", ("NUL",)),
    ("negative-nul", {"negative_prompt": "\x00"}, "negative_prompt", ("NUL",)),
    ("provider-params-nul", {"provider_params": {"note": "x\x00"}}, "provider_params.note", ("NUL",)),
    ("webhook-nul", {"webhook": {"url": "https://hooks.example/\x00"}}, "webhook.url", ("NUL",)),
    ("refs-nul", {"input_references": [{"reference_type": "\x00", "image_url": {"url": HTTPS_IMG}}]},
     "input_references[0].reference_type", ("NUL",)),
    ("openai-ref-file-id", {"input_reference": {"file_id": "file_123"}}, "input_reference.file_id", ()),
]


@pytest.mark.parametrize(("body", "param", "words"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_validation_errors(api: httpx.Client, body: dict[str, Any], param: str, words: tuple[str, ...]) -> None:
    payload = {k: v for k, v in {**SHORT, **body}.items() if v is not None}
    err = assert_error(api.post("/v1/videos", json=payload), 400, param, *words)
    assert err["type"] == "invalid_request_error" and err["code"]


def test_no_job_is_left_behind_by_rejected_requests(api: httpx.Client, gateway: Any) -> None:
    client = gateway.client(gateway.create_key("rejects", credits_usd=10))
    for _, body, _, _ in INVALID:
        assert client.post("/v1/videos", json={**SHORT, **body}).status_code == 400
    assert client.get("/v1/videos").json()["data"] == []


@pytest.mark.parametrize(("content", "ctype", "status", "code"), [
    (b'{"model": "local/procedural-video", "prompt":', "application/json", 400, "invalid_json"),
    (b'["model"]', "application/json", 400, "invalid_json"),
    (b"null", "application/json", 400, "invalid_json"),
    (b"", "application/json", 400, "missing_body"),
    (b"   ", None, 400, "missing_body"),
    (b"model=x", "text/plain", 415, "unsupported_media_type"),
    (b'{"model": "x", "prompt": "y"}', "application/xml", 415, "unsupported_media_type"),
    (b"\xff\xfe{", "application/json", 400, "invalid_json"),
    (b"--x\r\nbroken", "multipart/form-data; boundary=x", 400, None),
], ids=["truncated", "array", "null", "empty", "blank-no-type", "text", "xml", "binary", "bad-multipart"])
def test_bad_bodies(api: httpx.Client, content: bytes, ctype: str | None, status: int, code: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    r = api.post("/v1/videos", content=content, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code:
        assert err["code"] == code


def test_requires_a_key(gateway: Any) -> None:
    anon = gateway.client()
    assert anon.post("/v1/videos", json=SHORT).status_code == 401
    assert anon.get("/v1/videos").status_code == 401


# ---- Outputs: samples, seeds, access modes, progress -----------------------------------------------------


def test_two_samples_have_different_bytes(api: httpx.Client) -> None:
    job = wait(api, create(api, sample_count=2, seed=5)["id"])
    assert job["status"] == "completed"
    assert [o["index"] for o in job["outputs"]] == [0, 1]
    blobs = [api.get(path_of(o["content_url"])).content for o in job["outputs"]]
    assert job["outputs"][1]["content_url"].endswith("?index=1")
    assert blobs[0] != blobs[1]
    assert [hashlib.sha256(b).hexdigest() for b in blobs] == [o["sha256"] for o in job["outputs"]]
    assert job["asset"]["sha256"] == job["outputs"][0]["sha256"]
    link = api.post(f"/v1/videos/{job['id']}/download_url", json={"index": 1}).json()["download_url"]
    assert httpx.get(link).content == blobs[1]


def test_same_seed_same_bytes(api: httpx.Client, done: dict[str, Any]) -> None:
    again = wait(api, create(api, seed=1234, negative_prompt="blur")["id"])
    assert again["asset"]["sha256"] == done["asset"]["sha256"]
    different = wait(api, create(api, seed=1235, negative_prompt="blur")["id"])
    assert different["asset"]["sha256"] != done["asset"]["sha256"]


@pytest.mark.parametrize("access", ["bytes", "signed_url", "both"])
def test_output_access(api: httpx.Client, access: str) -> None:
    job = create(api, output={"access": access})
    assert job["output_access"] == access
    first = wait(api, job["id"])
    second = api.get(f"/v1/videos/{job['id']}").json()
    for body in (first, second):
        out = body["outputs"][0]
        has_bytes, has_signed = access in ("bytes", "both"), access in ("signed_url", "both")
        assert (body["content_url"] is not None) is has_bytes and (out["content_url"] is not None) is has_bytes
        assert (body["download_url"] is not None) is has_signed and (out["download_url"] is not None) is has_signed
        assert (body["expires_at"] is not None) is has_signed
    if access != "bytes":
        assert httpx.get(second["download_url"]).status_code == 200
        listed = next(v for v in api.get("/v1/videos", params={"limit": 100}).json()["data"] if v["id"] == job["id"])
        assert listed["download_url"] and listed["expires_at"] >= second["expires_at"]


def test_status_and_progress_never_move_backwards(api: httpx.Client) -> None:
    job = create(api, duration=2, sample_count=2)
    seen: list[tuple[str, int]] = [(job["status"], job["progress"])]
    deadline = time.monotonic() + 60
    while seen[-1][0] not in TERMINAL and time.monotonic() < deadline:
        r = api.get(f"/v1/videos/{job['id']}")
        assert int(r.headers["openai-poll-after-ms"]) > 0
        seen.append((r.json()["status"], r.json()["progress"]))
        time.sleep(0.02)
    assert seen[-1] == ("completed", 100), seen
    for (s1, p1), (s2, p2) in itertools.pairwise(seen):
        assert RANK[s2] >= RANK[s1] and p2 >= p1, seen
    assert any(s == "in_progress" for s, _ in seen), seen
    for _ in range(3):
        assert api.get(f"/v1/videos/{job['id']}").json()["status"] == "completed"


# ---- Listing ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lister(gateway: Any) -> tuple[httpx.Client, list[str], set[str]]:
    """A fresh key with 5 jobs (created in order): 3 completed, 2 cancelled."""
    client = gateway.client(gateway.create_key("lister", credits_usd=10))
    ids, cancelled = [], set()
    for i in range(5):
        if i in (1, 3):
            job = create(client, duration=20, resolution="1080p")
            assert client.post(f"/v1/videos/{job['id']}/cancel").status_code == 200
            cancelled.add(job["id"])
        else:
            job = create(client)
        ids.append(job["id"])
    for vid in ids:
        wait(client, vid)
    return client, ids, cancelled


def test_list_paging(lister: tuple[httpx.Client, list[str], set[str]]) -> None:
    client, ids, _ = lister
    full = client.get("/v1/videos").json()
    assert full["object"] == "list" and full["has_more"] is False
    assert [v["id"] for v in full["data"]] == ids[::-1]
    assert full["first_id"] == ids[-1] and full["last_id"] == ids[0]
    for order, expected in (("desc", ids[::-1]), ("asc", ids)):
        got, after = [], None
        while True:
            params: dict[str, Any] = {"limit": 2, "order": order, **({"after": after} if after else {})}
            page = client.get("/v1/videos", params=params).json()
            assert len(page["data"]) <= 2
            assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
            got += [v["id"] for v in page["data"]]
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert got == expected
    last = client.get("/v1/videos", params={"after": ids[0]}).json()
    assert last == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    exact = client.get("/v1/videos", params={"limit": 5}).json()
    assert len(exact["data"]) == 5 and exact["has_more"] is False
    assert client.get("/v1/videos", params={"limit": 4}).json()["has_more"] is True


def test_list_status_filter(lister: tuple[httpx.Client, list[str], set[str]]) -> None:
    client, ids, cancelled = lister

    def listed(*status: str) -> list[str]:
        r = client.get("/v1/videos", params=[("status", s) for s in status] + [("order", "asc")])
        assert r.status_code == 200, r.text
        return [v["id"] for v in r.json()["data"]]

    assert listed("completed") == [i for i in ids if i not in cancelled]
    assert listed("cancelled") == listed("canceled") == [i for i in ids if i in cancelled]
    assert listed("completed", "cancelled") == listed("completed,cancelled") == ids
    assert listed("pending") == listed("processing") == listed("queued", "in_progress") == []
    assert listed("failed") == []
    running = create(client, duration=20, resolution="1080p")
    try:
        assert running["id"] in listed("pending", "processing")
        assert running["id"] not in listed("completed")
    finally:
        client.post(f"/v1/videos/{running['id']}/cancel")


@pytest.mark.parametrize(("params", "param"), [
    ({"status": "done"}, "status"), ({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
    ({"limit": "ten"}, "limit"), ({"order": "newest"}, "order"), ({"after": "video_nope"}, "after"),
])
def test_list_bad_params(api: httpx.Client, params: dict[str, Any], param: str) -> None:
    assert_error(api.get("/v1/videos", params=params), 400, param)
