"""Tests of the fake OpenAI Videos (Sora) server used by the gateway's provider tests."""
from __future__ import annotations

import base64
import io
import time

import av
import httpx
import pytest
from PIL import Image

from aistats_gateway.providers.fakes import FAKES, is_loopback, serve
from aistats_gateway.providers.fakes.openai import FilePart, create_app
from aistats_gateway.providers.fakes.testing import RunningFake

AUTH = {"Authorization": "Bearer sk-test"}
VIDEO_KEYS = {"id", "object", "model", "status", "progress", "created_at", "completed_at", "expires_at",
              "prompt", "size", "seconds", "remixed_from_video_id", "error"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock):
    with RunningFake("openai", clock=clock, render_seconds=10.0, steps=10) as running:
        yield running


@pytest.fixture
def client(fake):
    with httpx.Client(base_url=fake.base_url, headers=AUTH, timeout=10) as c:
        yield c


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def form(**fields: str) -> dict:
    return {k: (None, v) for k, v in fields.items()}


def assert_error(resp: httpx.Response, status: int, param: str | None = None, code: str | None = None):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param
    if code is not None:
        assert err["code"] == code
    return err


def create(client, **body) -> dict:
    resp = client.post("/videos", json={"prompt": "a cat", **body})
    assert resp.status_code == 200, resp.text
    return resp.json()


# ---------------------------------------------------------------- auth and routing
@pytest.mark.parametrize("method,path", [("POST", "/videos"), ("GET", "/videos"), ("GET", "/videos/video_x"),
                                         ("DELETE", "/videos/video_x"), ("GET", "/videos/video_x/content")])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "sk-test"}])
def test_auth_required(fake, method, path, headers):
    resp = httpx.request(method, fake.base_url + path, headers=headers, json={"prompt": "x"})
    err = assert_error(resp, 401, code="invalid_api_key")
    assert err["type"] == "invalid_request_error"
    assert not fake.state.videos and fake.state.requests[-1].status == 401


def test_unknown_route_uses_error_envelope(client):
    assert_error(client.get("/nope"), 404)
    assert_error(client.put("/videos"), 405)


# ---------------------------------------------------------------- create
def test_create_multipart(client, fake):
    resp = client.post("/videos", files=form(prompt="a cat", model="sora-2", seconds="8", size="1280x720"))
    assert resp.status_code == 200, resp.text
    video = resp.json()
    assert set(video) == VIDEO_KEYS
    assert video["id"].startswith("video_") and len(video["id"]) > 20
    assert video | {"id": None, "created_at": None} == {
        "id": None, "object": "video", "model": "sora-2", "status": "queued", "progress": 0,
        "created_at": None, "completed_at": None, "expires_at": None, "prompt": "a cat",
        "size": "1280x720", "seconds": "8", "remixed_from_video_id": None, "error": None}
    assert abs(video["created_at"] - time.time()) < 5
    rec = fake.state.creates[-1]
    assert rec.headers["content-type"].startswith("multipart/form-data")
    assert rec.headers["authorization"] == "Bearer sk-test" and rec.status == 200
    assert rec.body == {"prompt": "a cat", "model": "sora-2", "seconds": "8", "size": "1280x720"}


def test_create_json_defaults_and_accepted_values(client, fake):
    video = create(client)
    assert (video["model"], video["seconds"], video["size"]) == ("sora-2", "4", "720x1280")
    assert fake.state.creates[-1].body == {"prompt": "a cat"}
    pro = create(client, model="sora-2-pro", size="1920x1080", seconds="20")
    assert (pro["size"], pro["seconds"]) == ("1920x1080", "20")
    assert create(client, model="sora-2-2025-12-08", seconds="16", size="1792x1024")["seconds"] == "16"


@pytest.mark.parametrize("body,param,code", [
    ({}, "prompt", "missing_required_parameter"),
    ({"prompt": ""}, "prompt", "string_below_min_length"),
    ({"prompt": "x" * 32001}, "prompt", "string_above_max_length"),
    ({"prompt": "x", "model": "sora-3"}, "model", "invalid_value"),
    ({"prompt": "x", "seconds": "5"}, "seconds", "invalid_value"),
    ({"prompt": "x", "seconds": 8}, "seconds", "invalid_type"),
    ({"prompt": "x", "size": "1920x1080"}, "size", "invalid_value"),
    ({"prompt": "x", "size": "640x480", "model": "sora-2-pro"}, "size", "invalid_value"),
    ({"prompt": "x", "negative_prompt": "y"}, "negative_prompt", "unknown_parameter"),
    ({"prompt": "x", "input_reference": "https://example.com/a.png"}, "input_reference", "invalid_type"),
    ({"prompt": "x", "input_reference": {"image_url": "https://e.com/a.png", "file_id": "file-1"}},
     "input_reference", "invalid_value"),
    ({"prompt": "x", "input_reference": {"url": "https://e.com/a.png"}}, "input_reference.url",
     "unknown_parameter"),
    ({"prompt": "x", "input_reference": {"image_url": "ftp://e.com/a.png"}}, "input_reference.image_url",
     None),
])
def test_create_validation(client, fake, body, param, code):
    assert_error(client.post("/videos", json=body), 400, param=param, code=code)
    assert not fake.state.videos


def test_create_rejects_bad_bodies(client):
    json_ct = {"content-type": "application/json"}
    assert_error(client.post("/videos", content=b"{not json", headers=json_ct), 400)
    assert_error(client.post("/videos", content=b"prompt", headers={"content-type": "text/plain"}), 400)
    assert_error(client.post("/videos", files=form(prompt="x", seconds="5")), 400, param="seconds")


def test_input_reference_forms(client, fake):
    url_ref = {"image_url": "https://example.com/a.png"}
    video = create(client, size="1280x720", input_reference=url_ref)
    assert fake.state.videos[video["id"]].input_reference == url_ref
    # multipart bracket keys, as the openai SDK sends extra_body={"input_reference": {...}}
    data_url = "data:image/png;base64," + base64.b64encode(png(1280, 720)).decode()
    for key, value in (("image_url", data_url), ("file_id", "file-abc123")):
        fields = form(prompt="x", size="1280x720", **{f"input_reference[{key}]": value})
        resp = client.post("/videos", files=fields)
        assert resp.status_code == 200, resp.text
        assert fake.state.creates[-1].body["input_reference"] == {key: value}
    # a file part
    resp = client.post("/videos", data={"prompt": "x", "size": "1280x720"},
                       files={"input_reference": ("ref.png", png(1280, 720), "image/png")})
    assert resp.status_code == 200, resp.text
    part = fake.state.creates[-1].body["input_reference"]
    assert isinstance(part, FilePart) and part.filename == "ref.png" and part.content_type == "image/png"
    assert fake.state.videos[resp.json()["id"]].input_reference.data == png(1280, 720)


def test_input_reference_must_match_size(client, fake):
    resp = client.post("/videos", data={"prompt": "x", "size": "1280x720"},
                       files={"input_reference": ("ref.png", png(720, 1280), "image/png")})
    assert_error(resp, 400, param="input_reference", code="invalid_image_size")
    resp = client.post("/videos", data={"prompt": "x"},
                       files={"input_reference": ("ref.png", b"not an image", "image/png")})
    assert_error(resp, 400, param="input_reference", code="invalid_image")
    bad = "data:image/png;base64," + base64.b64encode(png(64, 64)).decode()
    resp = client.post("/videos", json={"prompt": "x", "input_reference": {"image_url": bad}})
    assert_error(resp, 400, param="input_reference.image_url", code="invalid_image_size")
    fake.state.check_input_reference = False
    assert create(client, input_reference={"image_url": bad})["status"] == "queued"


def test_idempotency_key(client, fake):
    first = client.post("/videos", json={"prompt": "x"}, headers={"Idempotency-Key": "k1"}).json()
    again = client.post("/videos", json={"prompt": "x"}, headers={"Idempotency-Key": "k1"}).json()
    other = client.post("/videos", json={"prompt": "x"}, headers={"Idempotency-Key": "k2"}).json()
    plain = create(client)
    assert first["id"] == again["id"] and len({first["id"], other["id"], plain["id"]}) == 3
    assert len(fake.state.videos) == 3 and len(fake.state.creates) == 4
    assert fake.state.creates[1].headers["idempotency-key"] == "k1"


# ---------------------------------------------------------------- lifecycle
def test_status_progression(client, clock):
    video = create(client)
    seen = []
    for t in (0, 1.9, 2.5, 5.0, 9.0, 9.99, 10.0, 50.0):
        clock.now = 1000.0 + t
        seen.append(client.get(f"/videos/{video['id']}").json())
    assert [v["status"] for v in seen] == ["queued"] * 2 + ["in_progress"] * 4 + ["completed"] * 2
    progress = [v["progress"] for v in seen]
    assert progress == sorted(progress) and progress[2] == 0 and 0 < progress[3] < progress[4] < 100
    assert all(isinstance(p, int) for p in progress) and progress[-1] == 100
    assert all(v["completed_at"] is None and v["expires_at"] is None for v in seen[:6])
    done = seen[-1]
    assert done["completed_at"] == done["created_at"] + 10
    assert done["expires_at"] == done["completed_at"] + 3600
    assert seen[-2] == done


def test_list_paging(client, clock):
    ids = []
    for i in range(5):
        ids.append(create(client, prompt=f"p{i}")["id"])
        clock.advance(1)
    page = client.get("/videos", params={"limit": 2}).json()
    assert page["object"] == "list" and [v["id"] for v in page["data"]] == ids[:2:-1][:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[4], ids[3], True)
    page = client.get("/videos", params={"limit": 2, "after": page["last_id"]}).json()
    assert [v["id"] for v in page["data"]] == [ids[2], ids[1]] and page["has_more"] is True
    page = client.get("/videos", params={"limit": 2, "after": page["last_id"]}).json()
    assert [v["id"] for v in page["data"]] == [ids[0]] and page["has_more"] is False
    page = client.get("/videos", params={"order": "asc", "limit": 100}).json()
    assert [v["id"] for v in page["data"]] == ids and page["has_more"] is False
    assert client.get("/videos").json()["data"][0]["id"] == ids[-1]  # default order: desc
    empty = client.get("/videos", params={"limit": 0}).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": True}
    for params, param in (({"limit": 101}, "limit"), ({"limit": "x"}, "limit"), ({"order": "up"}, "order"),
                          ({"after": "video_nope"}, "after")):
        assert_error(client.get("/videos", params=params), 400, param=param)


def test_delete_then_404(client, clock):
    video = create(client)
    resp = client.request("DELETE", f"/videos/{video['id']}", content=b"",
                          headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
    clock.advance(20)
    assert_error(client.get(f"/videos/{video['id']}"), 404, param="video_id")
    assert_error(client.get(f"/videos/{video['id']}/content"), 404)
    assert_error(client.delete(f"/videos/{video['id']}"), 404)
    assert client.get("/videos").json()["data"] == []


def test_content(client, clock):
    video = create(client, size="1280x720", seconds="4")
    for t in (0, 5):
        clock.now = 1000.0 + t
        assert_error(client.get(f"/videos/{video['id']}/content"), 404, param="video_id")
    clock.now = 1010.0
    resp = client.get(f"/videos/{video['id']}/content", headers={"Accept": "application/binary"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(resp.content)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.codec_context.name) == (1280, 720, "h264")
        assert abs(container.duration / 1e6 - 4) <= 1 / 8
    for variant, ctype, fmt in (("thumbnail", "image/webp", "WEBP"), ("spritesheet", "image/jpeg", "JPEG")):
        resp = client.get(f"/videos/{video['id']}/content", params={"variant": variant})
        assert resp.status_code == 200 and resp.headers["content-type"] == ctype
        assert Image.open(io.BytesIO(resp.content)).format == fmt
    thumb = Image.open(io.BytesIO(client.get(f"/videos/{video['id']}/content?variant=thumbnail").content))
    assert thumb.size == (1280, 720)
    resp = client.get(f"/videos/{video['id']}/content", params={"variant": "gif"})
    assert_error(resp, 400, param="variant")
    clock.advance(3600)  # expires_at passed
    assert_error(client.get(f"/videos/{video['id']}/content"), 404, code="video_content_expired")


# ---------------------------------------------------------------- fault injection
def test_fail_next_creates(client, fake):
    fake.state.fail_next_creates = 2
    for _ in range(2):
        err = assert_error(client.post("/videos", json={"prompt": "x"}), 503)
        assert err["type"] == "server_error"
    assert not fake.state.videos
    assert create(client)["status"] == "queued"
    fake.state.fail_next_creates, fake.state.fail_status = 1, 500
    assert_error(client.post("/videos", json={"prompt": "x"}), 500)
    assert client.get("/videos").status_code == 200  # only creates are affected


def test_rate_limit_next(client, fake):
    fake.state.rate_limit_next, fake.state.retry_after_seconds = 2, 3
    resp = client.get("/videos")
    err = assert_error(resp, 429, code="rate_limit_exceeded")
    assert resp.headers["retry-after"] == "3" and resp.headers["retry-after-ms"] == "3000"
    assert err["type"] == "requests"
    assert_error(client.post("/videos", json={"prompt": "x"}), 429)
    assert client.get("/videos").status_code == 200 and not fake.state.videos


def test_create_delay_then_idempotent_retry(client, fake):
    fake.state.create_delay_seconds = 1.0
    with pytest.raises(httpx.ReadTimeout):
        client.post("/videos", json={"prompt": "x"}, headers={"Idempotency-Key": "retry-1"}, timeout=0.3)
    fake.state.create_delay_seconds = 0
    retry = client.post("/videos", json={"prompt": "x"}, headers={"Idempotency-Key": "retry-1"})
    assert retry.status_code == 200 and list(fake.state.videos) == [retry.json()["id"]]


def test_moderation_block(client, fake, clock):
    fake.state.moderation_block_prompts = ["forbidden"]
    blocked, fine = create(client, prompt="Something FORBIDDEN here"), create(client, prompt="ok")
    assert blocked["status"] == "queued" and blocked["error"] is None
    clock.advance(2)
    video = client.get(f"/videos/{blocked['id']}").json()
    assert video["status"] == "failed" and video["progress"] == 0 and video["expires_at"] is None
    assert video["error"]["code"] == "moderation_blocked" and video["error"]["message"]
    assert_error(client.get(f"/videos/{blocked['id']}/content"), 400)
    clock.advance(10)
    assert client.get(f"/videos/{fine['id']}").json()["status"] == "completed"


def test_fail_jobs(client, fake, clock):
    fake.state.fail_jobs = True
    video = create(client)
    clock.advance(9)
    assert client.get(f"/videos/{video['id']}").json()["status"] == "in_progress"
    clock.advance(1)
    video = client.get(f"/videos/{video['id']}").json()
    assert video["status"] == "failed" and video["error"]["code"] == "internal_error"
    assert video["completed_at"] is not None


def test_expire_content(client, fake, clock):
    video = create(client)
    clock.advance(10)
    assert client.get(f"/videos/{video['id']}/content").status_code == 200
    fake.state.expire_content = True
    err = assert_error(client.get(f"/videos/{video['id']}/content"), 404, code="video_content_expired")
    assert "expired" in err["message"].lower()


def test_poll_after_header_and_request_ids(client, fake):
    video = create(client)
    assert "openai-poll-after-ms" not in client.get(f"/videos/{video['id']}").headers
    fake.state.poll_after_ms = 250
    resp = client.get(f"/videos/{video['id']}")
    assert resp.headers["openai-poll-after-ms"] == "250" and resp.headers["x-request-id"].startswith("req_")


# ---------------------------------------------------------------- registry / serve
def test_registry_and_loopback_guard():
    assert FAKES["openai"] is create_app
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com", ""))
    with pytest.raises(ValueError):
        serve("openai", host="0.0.0.0")
    with pytest.raises(KeyError):
        serve("nope")


def test_running_fake_accepts_an_app():
    app = create_app("sk-other", render_seconds=0)
    with RunningFake(app) as running:
        assert running.state is app.state.fake
        resp = httpx.post(running.base_url + "/videos", json={"prompt": "x"},
                          headers={"Authorization": "Bearer sk-other"})
        assert resp.json()["status"] == "completed"
    running.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.base_url + "/videos", headers={"Authorization": "Bearer sk-other"})


# ---------------------------------------------------------------- the real openai SDK
def test_openai_sdk_end_to_end():
    openai = pytest.importorskip("openai")
    with RunningFake("openai", render_seconds=0.5) as running:
        client = openai.OpenAI(api_key="sk-test", base_url=running.base_url, max_retries=0)
        video = client.videos.create_and_poll(model="sora-2", prompt="x", seconds="4", size="1280x720",
                                              poll_interval_ms=100)
        assert video.status == "completed" and video.progress == 100 and video.seconds == "4"
        content = client.videos.download_content(video.id).content
        with av.open(io.BytesIO(content)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == (1280, 720)
            assert abs(container.duration / 1e6 - 4) <= 1 / 8
        rec = running.state.creates[0]
        assert rec.headers["content-type"].startswith("multipart/form-data")
        assert rec.body == {"prompt": "x", "model": "sora-2", "seconds": "4", "size": "1280x720"}
        assert any(r.headers.get("x-stainless-poll-helper") == "true" for r in running.state.requests)
        # documented workaround for the object form: extra_body → input_reference[image_url]
        ref = client.videos.create(prompt="y", size="1280x720",
                                   extra_body={"input_reference": {"image_url": "https://e.com/a.png"}})
        assert running.state.videos[ref.id].input_reference == {"image_url": "https://e.com/a.png"}
        image = ("r.png", png(1280, 720), "image/png")
        ref = client.videos.create(prompt="z", size="1280x720", input_reference=image)
        assert running.state.videos[ref.id].input_reference.data == png(1280, 720)
        listed = [v.id for v in client.videos.list(limit=1)]  # auto-pagination follows last_id
        assert listed == list(reversed(running.state.videos))
        with pytest.raises(openai.BadRequestError) as exc:
            client.videos.create(prompt="x", seconds="5")  # type: ignore[arg-type]
        assert exc.value.param == "seconds"
        assert client.videos.delete(video.id).deleted is True
        with pytest.raises(openai.NotFoundError):
            client.videos.retrieve(video.id)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="sk-bad", base_url=running.base_url, max_retries=0).videos.list()
