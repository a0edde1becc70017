"""The real openai Python SDK pointed at the gateway (no provider keys, local renderer), and the
multipart/form-data bodies it sends, checked field by field with plain HTTP."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from aistats_gateway.videos import media

MODEL = "local/procedural-video"
TERMINAL = {"completed", "failed", "cancelled", "expired"}


def png(color: tuple[int, int, int] = (30, 160, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 27), color).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def client(gateway: Any, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url + "/v1", max_retries=0, timeout=60)


def probe(data: bytes, tmp_path: Path) -> media.MediaInfo:
    path = tmp_path / "out.mp4"
    path.write_bytes(data)
    return media.probe(path)


def finish(client: openai.OpenAI, video_id: str) -> Any:
    return client.videos.poll(video_id, poll_interval_ms=100)


def client_wait(api: httpx.Client, video_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (body := api.get(f"/v1/videos/{video_id}").json())["status"] not in TERMINAL:
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    return body


def test_create_and_poll_then_download(client: openai.OpenAI, tmp_path: Path) -> None:
    video = client.videos.create_and_poll(model=MODEL, prompt="a lighthouse at dusk", seconds="2", size="640x360",
                                          poll_interval_ms=200)
    assert video.status == "completed" and video.object == "video"
    assert video.id.startswith("video_") and video.model == MODEL and video.progress == 100
    assert video.size == "640x360" and float(video.seconds) == 2.0
    content = client.videos.download_content(video.id)
    data = content.read()
    info = probe(data, tmp_path)
    assert (info.width, info.height) == (640, 360)
    assert info.duration_seconds == pytest.approx(2.0, abs=0.05)
    assert info.mime_type == "video/mp4"
    thumb = client.videos.download_content(video.id, variant="thumbnail").read()
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.format in ("WEBP", "JPEG")
    retrieved = client.videos.retrieve(video.id)
    assert retrieved.id == video.id and retrieved.status == "completed"
    assert retrieved.model_extra is not None and retrieved.model_extra["asset"]["bytes"] == len(data)


def test_list_pages_through_30_jobs(gateway: Any) -> None:
    key = gateway.create_key("sdk lister", credits_usd=10)
    raw = gateway.client(key)
    ids = []
    for i in range(30):
        r = raw.post("/v1/videos", json={"model": MODEL, "prompt": f"job {i}", "duration": 1, "resolution": "480p",
                                         "aspect_ratio": "1:1"})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
        if i % 3:  # keep the renders (and the test) short: most jobs are cancelled straight away
            cancel = raw.post(f"/v1/videos/{ids[-1]}/cancel")
            # A 1 s render may finish before the cancel arrives: then the cancel is a 409 on a completed job.
            assert cancel.status_code == 200 or (
                cancel.status_code == 409 and raw.get(f"/v1/videos/{ids[-1]}").json()["status"] == "completed"
            ), cancel.text
    client = openai.OpenAI(api_key=key, base_url=gateway.base_url + "/v1", max_retries=0)
    seen = [v.id for v in client.videos.list(limit=7)]
    assert seen == ids[::-1]  # newest first, each exactly once
    assert [v.id for v in client.videos.list(limit=7, order="asc")] == ids
    first = client.videos.list(limit=7)
    assert len(first.data) == 7 and first.has_more is True and first.last_id == ids[-7]
    pages, page = 1, first
    while page.has_next_page():
        page = page.get_next_page()
        pages += 1
    assert pages == 5 and len(page.data) == 2 and page.has_more is False
    for vid in ids[::3]:
        assert finish(client, vid).status == "completed"


def test_multipart_extra_body(client: openai.OpenAI, tmp_path: Path) -> None:
    video = client.videos.create(model=MODEL, prompt="two takes", seconds="1", size="640x480",
                                 extra_body={"negative_prompt": "flicker", "sample_count": "2", "seed": "77"})
    assert video.status in ("queued", "in_progress")
    done = finish(client, video.id)
    assert done.status == "completed"
    outputs = done.model_extra["outputs"]
    assert len(outputs) == 2 and outputs[0]["sha256"] != outputs[1]["sha256"]
    again = finish(client, client.videos.create(model=MODEL, prompt="two takes", seconds="1", size="640x480",
                                                extra_body={"negative_prompt": "flicker", "sample_count": "2",
                                                            "seed": "77"}).id)
    assert [o["sha256"] for o in again.model_extra["outputs"]] == [o["sha256"] for o in outputs]
    info = probe(client.videos.download_content(video.id).read(), tmp_path)
    assert (info.width, info.height) == (640, 480)


def test_multipart_bracketed_image_url(client: openai.OpenAI) -> None:
    video = client.videos.create(model=MODEL, prompt="", seconds="1", size="640x360",
                                 extra_body={"input_reference": {"image_url": data_url(png())}})
    assert finish(client, video.id).status == "completed"


def test_multipart_uploaded_image(client: openai.OpenAI) -> None:
    video = client.videos.create(model=MODEL, prompt="from a frame", seconds="1", size="640x360",
                                 input_reference=("frame.png", png((200, 20, 20)), "image/png"))
    assert finish(client, video.id).status == "completed"
    plain = finish(client, client.videos.create(model=MODEL, prompt="from a frame", seconds="1",
                                                size="640x360").id)
    assert plain.status == "completed"


def test_delete_and_retrieve(client: openai.OpenAI, gateway: Any) -> None:
    video = client.videos.create_and_poll(model=MODEL, prompt="to delete", seconds="1", size="640x360",
                                          poll_interval_ms=100)
    deleted = client.videos.delete(video.id)
    assert deleted.id == video.id and deleted.deleted is True and deleted.object == "video.deleted"
    assert not (gateway.data_dir / "blobs" / "videos" / video.id).exists()
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.delete(video.id)


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"model": "sora-9"}, "model"),
    ({"model": "sora-2"}, "model"),  # known, but no provider key on this gateway
    ({"model": openai.omit}, "model"),
    ({"seconds": "30"}, "seconds"),
    ({"size": "2048x2048", "seconds": "1"}, "size"),
    ({"size": "1000x200", "seconds": "1"}, "size"),
    ({"seconds": "4", "extra_body": {"duration": 8}}, "seconds"),
    ({"seconds": "1", "extra_body": {"generate_audio": "true"}}, "generate_audio"),
    ({"seconds": "1", "extra_body": {"sample_count": "9"}}, "sample_count"),
    ({"seconds": "1", "extra_body": {"mystery": "1"}}, "mystery"),
    ({"seconds": "1", "extra_body": {"input_reference": {"image_url": "https://169.254.169.254/a.png"}}},
     "input_reference.image_url"),
    ({"seconds": "1", "extra_body": {"input_reference": {"image_url": "http://example.com/a.png"}}},
     "input_reference.image_url"),
])
def test_errors_are_bad_request_with_param(client: openai.OpenAI, kwargs: dict[str, Any], param: str) -> None:
    kwargs = {"model": MODEL, "prompt": "x", **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client.videos.create(**kwargs)
    assert info.value.status_code == 400 and info.value.param == param
    assert info.value.type == "invalid_request_error" and info.value.code


def test_sdk_sees_conflicts_and_auth_errors(client: openai.OpenAI, gateway: Any) -> None:
    video = client.videos.create(model=MODEL, prompt="long", seconds="20", size="1920x1080")
    try:
        with pytest.raises(openai.ConflictError) as info:
            client.videos.download_content(video.id)
        assert info.value.code == "video_not_ready"
        with pytest.raises(openai.ConflictError):
            client.videos.delete(video.id)
    finally:
        httpx.post(f"{gateway.base_url}/v1/videos/{video.id}/cancel",
                   headers={"Authorization": f"Bearer {client.api_key}", "Content-Type": "application/json"})
    deadline = time.monotonic() + 10
    while client.videos.retrieve(video.id).status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.videos.retrieve(video.id).status == "cancelled"
    assert client.videos.delete(video.id).deleted is True
    bad = openai.OpenAI(api_key="sk-not-a-key", base_url=gateway.base_url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.videos.list()


# ---- multipart/form-data as the SDK (and curl -F) send it --------------------------------------------


def test_multipart_with_bracketed_keys(api: httpx.Client) -> None:
    fields = {"model": MODEL, "prompt": "multipart", "seconds": "1", "resolution": "480p", "aspect_ratio": "3:4",
              "seed": "3", "generate_audio": "false", "enhance_prompt": "false", "output[access]": "bytes",
              "provider[only][]": "local", "provider[include_alpha]": "false",
              "input_references[0][role]": "first_frame", "input_references[0][image_url][url]": data_url(png())}
    r = api.post("/v1/videos", files={k: (None, v) for k, v in fields.items()})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["size"] == "480x640" and job["output_access"] == "bytes" and job["seconds"] == 1.0
    final = client_wait(api, job["id"])
    assert final["status"] == "completed" and final["download_url"] is None and final["content_url"]


def test_multipart_json_valued_fields_and_urlencoded(api: httpx.Client) -> None:
    fields = {"model": MODEL, "prompt": "json fields", "seconds": "1", "resolution": "480p",
              "output": '{"access": "signed_url"}', "provider": '{"only": ["local"]}'}
    r = api.post("/v1/videos", files={k: (None, v) for k, v in fields.items()})
    assert r.status_code == 202, r.text
    assert r.json()["output_access"] == "signed_url"
    r2 = api.post("/v1/videos", data={"model": MODEL, "prompt": "urlencoded", "seconds": "1", "resolution": "480p"})
    assert r2.status_code == 202, r2.text
    for vid in (r.json()["id"], r2.json()["id"]):
        assert client_wait(api, vid)["status"] == "completed"


@pytest.mark.parametrize(("fields", "files", "param"), [
    ({"seconds": "zero"}, {}, "seconds"),
    ({"sample_count": "many"}, {}, "sample_count"),
    ({"generate_audio": "maybe"}, {}, "generate_audio"),
    ({"input_references[x][y]": "z"}, {}, "input_references"),
    ({"input_references[0][role]": "first_frame"}, {}, "input_references[0].image_url"),
    ({"bad key]": "1"}, {}, "bad key]"),
    ({"model[]": "x"}, {}, "model[]"),
    ({"output": "{not json"}, {}, "output"),
    ({"mystery": "1"}, {}, "mystery"),
    ({}, {"video": ("a.png", b"x", "image/png")}, "video"),
    ({}, {"input_reference": ("a.txt", b"hello", "text/plain")}, "input_reference"),
    ({}, {"input_reference": ("a.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")}, "input_reference"),
    ({"input_reference[image_url]": "data:image/png;base64," + base64.b64encode(png()).decode()},
     {"input_reference": ("a.png", png(), "image/png")}, "input_references"),
], ids=["seconds", "sample_count", "bool", "refs-not-list", "ref-no-image", "key", "model-list", "bad-json",
        "unknown", "other-file", "upload-not-image", "upload-broken", "two-first-frames"])
def test_multipart_bad_values(api: httpx.Client, fields: dict[str, str], files: dict[str, Any], param: str) -> None:
    body = {"model": MODEL, "prompt": "x", "seconds": "1", **fields}
    r = api.post("/v1/videos", files={**{k: (None, v) for k, v in body.items()}, **files})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]
    if "upload" in str(files) or "broken" in str(files):
        assert "image" in err["message"]
