"""MiniMax (Hailuo) adapter and its fake.

Unit tests of the request mapping and the status/error tables, the adapter against the fake directly,
and end-to-end runs through a real gateway (SQLite and PostgreSQL) whose ``minimax`` provider points at
the fake MiniMax API on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import av
import httpx
import pytest

from aistats_gateway.providers import minimax
from aistats_gateway.providers.base import CallContext, ImageInput, OutputRef, ProviderError, VideoRequest
from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes.minimax import create_app
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.gateway import Gateway
from tests.support.providers import (
    ProviderKit,
    data_url,
    falls_back_to_local,
    final_status,
    image_bytes,
    provider_fixtures,
)

KEY = "mm-test"
ENV = "AISTATS_PROVIDER_MINIMAX_"
RENDER_SECONDS = 0.5
FALLBACK_MODEL = "minimax/test-hailuo-with-local"
PROMPT = "a paper boat drifting down a rainy street"

HAILUO_PARAMS = {"video.generation": {
    "duration": {"type": "integer", "values": [6, 10], "default": 6, "aliases": ["seconds"]},
    "resolution": {"type": "string", "values": ["720p", "1080p"], "default": "720p", "aliases": ["size"]},
    "enhance_prompt": {"type": "boolean", "default": True},
}}
OVERLAY = {"models": [{
    "model_id": FALLBACK_MODEL, "name": "Hailuo 2.3 with a local fallback", "organisation": "minimax",
    "status": "active", "input_types": ["text", "image"], "output_types": ["video"],
    "providers": [
        # Hailuo-02 at 512P (our 480p, image-to-video only) keeps the local fallback render small.
        {"provider": "minimax", "provider_model_slug": "MiniMax-Hailuo-02", "endpoints": ["video.generation"],
         "input_modalities": ["text", "image"], "output_modalities": ["video"],
         "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": "0"}], "parameters": {
             "video.generation": {**HAILUO_PARAMS["video.generation"],
                                  "resolution": {"type": "string", "values": ["480p", "720p", "1080p"],
                                                 "default": "480p", "aliases": ["size"]},
                                  "input_references": {"type": "array", "values": ["first_frame"]}}}},
        {"provider": "local", "provider_model_slug": "procedural-video", "endpoints": ["video.generation"],
         "input_modalities": ["text", "image"], "output_modalities": ["video"],
         "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": "0"}],
         "parameters": {"video.generation": {
             "input_references": {"type": "array", "values": ["first_frame"]},
             "duration": {"type": "integer", "minimum": 1, "maximum": 10, "default": 6, "aliases": ["seconds"]},
             "resolution": {"values": ["480p", "720p", "1080p"], "default": "720p", "aliases": ["size"]},
             "enhance_prompt": {"type": "boolean", "values": [False, True]},
         }}},
    ],
}]}


KIT = ProviderKit("minimax", api_key=KEY, fake_kwargs={"render_seconds": RENDER_SECONDS}, overlay=OVERLAY)
fake, provider_env, gateway, reset_fake = provider_fixtures(KIT)
wait_done = final_status


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    return image_bytes(width, height, colour=colour)


# A request both providers of FALLBACK_MODEL accept: 480p (MiniMax 512P) from a first frame.
FALLBACK_INPUT = {"resolution": "480p",
                  "input_references": [{"role": "first_frame", "image_url": {"url": data_url(png(640, 360))}}]}


def request(**kw: Any) -> VideoRequest:
    base: dict[str, Any] = dict(job_id="video_x", model_slug="MiniMax-Hailuo-2.3", prompt=PROMPT, duration=6,
                                width=1280, height=720, resolution="720p", aspect_ratio="16:9", size=None)
    base.update(kw)
    return VideoRequest(**base)


# ---------------------------------------------------------------- unit: request mapping


def test_body_maps_every_unified_field() -> None:
    first = ImageInput("first_frame", png(640, 360), "image/png", url="https://img.example/first.png")
    last = ImageInput("last_frame", png(640, 360), "image/png")
    body = minimax.build_body(request(model_slug="MiniMax-Hailuo-02", enhance_prompt=False, duration=10,
                                      images=(first, last), provider_params={"fast_pretreatment": True}))
    assert body == {
        "model": "MiniMax-Hailuo-02", "prompt": PROMPT, "prompt_optimizer": False, "duration": 10,
        "resolution": "768P", "first_frame_image": "https://img.example/first.png",
        "last_frame_image": data_url(png(640, 360)), "fast_pretreatment": True,
    }


@pytest.mark.parametrize("resolution,width,height,expected", [
    ("720p", 1280, 720, "768P"), ("1080p", 1920, 1080, "1080P"), ("480p", 854, 480, "512P"),
    (None, 1366, 768, "768P"), (None, 1080, 1920, "1080P"), (None, 912, 512, "512P"), (None, None, None, None),
])
def test_resolution_vocabulary(resolution: str | None, width: int | None, height: int | None,
                               expected: str | None) -> None:
    assert minimax.native_resolution(request(resolution=resolution, width=width, height=height)) == expected


def test_unknown_resolution_is_a_client_error() -> None:
    with pytest.raises(ProviderError) as exc:
        minimax.native_resolution(request(resolution="4K"))
    assert exc.value.kind == "client" and exc.value.param == "resolution"


def test_body_leaves_out_what_is_not_given() -> None:
    body = minimax.build_body(request(prompt="", duration=None, resolution=None, width=None, height=None,
                                      images=(ImageInput("first_frame", b"x", "image/jpeg"),)))
    assert body == {"model": "MiniMax-Hailuo-2.3", "first_frame_image": data_url(b"x", "image/jpeg")}


def test_01_series_models_take_no_duration_or_resolution() -> None:
    body = minimax.build_body(request(model_slug="T2V-01-Director", enhance_prompt=True))
    assert body == {"model": "T2V-01-Director", "prompt": PROMPT, "prompt_optimizer": True}


def test_subject_reference_for_s2v_models() -> None:
    ref = ImageInput("reference", b"face", "image/png", url="https://img.example/face.png")
    body = minimax.build_body(request(model_slug="S2V-01", images=(ref,)))
    assert body["subject_reference"] == [{"type": "character", "image": ["https://img.example/face.png"]}]
    assert "duration" not in body and "resolution" not in body
    with pytest.raises(ProviderError) as exc:
        minimax.build_body(request(model_slug="S2V-01"))
    assert exc.value.kind == "client"


@pytest.mark.parametrize("slug,roles", [
    ("MiniMax-Hailuo-2.3", ("reference",)), ("MiniMax-Hailuo-2.3", ("mask",)),
    ("MiniMax-Hailuo-2.3-Fast", ()), ("I2V-01", ()), ("MiniMax-Hailuo-02", ("last_frame",)),
])
def test_impossible_inputs_are_client_errors(slug: str, roles: tuple[str, ...]) -> None:
    images = tuple(ImageInput(r, b"x", "image/png") for r in roles)
    with pytest.raises(ProviderError) as exc:
        minimax.build_body(request(model_slug=slug, images=images))
    assert exc.value.kind == "client"


def test_shared_http_helpers() -> None:
    from email.utils import formatdate

    from aistats_gateway.providers import _http

    assert _http.retry_after(httpx.Response(429, headers={"retry-after": "5"})) == 5.0
    assert _http.retry_after(httpx.Response(429, headers={"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert _http.retry_after(httpx.Response(429, headers={"retry-after": "soon"})) is None
    assert _http.retry_after(httpx.Response(429)) is None
    when = _http.retry_after(httpx.Response(429, headers={"retry-after": formatdate(time.time() + 60, usegmt=True)}))
    assert when is not None and 55 <= when <= 60
    assert _http.image_url(ImageInput("first_frame", b"x", "image/png", url="https://e.com/a.png")) == \
        "https://e.com/a.png"
    assert _http.image_url(ImageInput("first_frame", b"x", "image/png")) == data_url(b"x")
    with pytest.raises(ProviderError) as exc:
        _http.json_object(httpx.Response(200, text="<html>"), "X")
    assert exc.value.kind == "upstream"


# ---------------------------------------------------------------- unit: status and error tables


def test_status_table() -> None:
    assert minimax.STATUS == {"Preparing": "queued", "Queueing": "queued", "Processing": "in_progress",
                              "Success": "completed", "Fail": "failed"}


@pytest.mark.parametrize("code,kind", [
    (1004, "auth"), (2049, "auth"), (1008, "quota"), (1002, "rate_limit"), (2056, "rate_limit"),
    (1026, "content_policy"), (1027, "content_policy"), (2013, "client"), (1000, "unavailable"),
    (1024, "unavailable"), (1033, "unavailable"), (9999, "upstream"),
])
def test_base_resp_codes(code: int, kind: str) -> None:
    e = minimax.base_error(code, "msg")
    assert e.kind == kind and str(code) in e.message
    assert e.code == minimax.KIND_CODE[kind]
    if kind == "content_policy":
        assert e.code == "content_policy_violation"


# ---------------------------------------------------------------- the adapter against the fake


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_ctx(fake: RunningFake, fn: Any, key: str = KEY) -> Any:
    async with httpx.AsyncClient(timeout=10) as http:
        return await fn(CallContext(http=http, api_key=key, base_url=fake.url))


def test_adapter_round_trip(fake: RunningFake) -> None:
    adapter = minimax.adapter

    async def flow(ctx: CallContext) -> tuple[list[str], bytes]:
        sub = await adapter.submit(request(duration=6, resolution="720p", enhance_prompt=True), ctx)
        seen = []
        while True:
            polled = await adapter.poll(sub.native_id, ctx)
            seen.append(polled.status)
            if polled.status in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)
        assert polled.status == "completed" and polled.usage["width"] == 1366
        data = b"".join([c async for c in adapter.open_output(sub.native_id, polled.outputs[0], ctx)])
        return seen, data

    seen, data = run(_with_ctx(fake, flow))
    assert seen[0] == "queued" and seen[-1] == "completed" and "in_progress" in seen
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (1366, 768)
        assert c.duration / 1e6 == pytest.approx(6, abs=0.2)
    [retrieve] = fake.state.find_requests("GET", "/v1/files/retrieve")
    assert retrieve.headers["authorization"] == f"Bearer {KEY}"
    [download] = [r for r in fake.state.requests if r.path.startswith("/download/")]
    assert "authorization" not in download.headers  # the CDN link gets no credentials


@pytest.mark.parametrize("knobs,kind", [
    ({"rate_limit_next": 1}, "rate_limit"), ({"insufficient_balance": True}, "quota"),
    ({"sensitive_input_prompts": ["boat"]}, "content_policy"), ({"fail_next_creates": 1}, "unavailable"),
    ({"fail_next_creates": 1, "fail_status": 200, "fail_code": 1033}, "unavailable"),
])
def test_http_200_errors_are_mapped(fake: RunningFake, knobs: dict[str, Any], kind: str) -> None:
    for k, v in knobs.items():
        setattr(fake.state, k, v)
    with pytest.raises(ProviderError) as exc:
        run(_with_ctx(fake, lambda ctx: minimax.adapter.submit(request(), ctx)))
    assert exc.value.kind == kind


def test_wrong_and_missing_key(fake: RunningFake) -> None:
    for key, code in (("mm-wrong", "2049"), ("", "1004")):
        with pytest.raises(ProviderError) as exc:
            run(_with_ctx(fake, lambda ctx: minimax.adapter.submit(request(), ctx), key=key))
        assert exc.value.kind == "auth" and code in exc.value.message
    assert [r.status for r in fake.state.creates[-2:]] == [200, 200]  # MiniMax answers errors with HTTP 200


def test_unknown_task_and_file_are_not_found(fake: RunningFake) -> None:
    with pytest.raises(ProviderError) as exc:
        run(_with_ctx(fake, lambda ctx: minimax.adapter.poll("123", ctx)))
    assert exc.value.kind == "not_found"

    async def read(ctx: CallContext) -> bytes:
        return b"".join([c async for c in minimax.adapter.open_output("1", OutputRef(index=0, handle="42"), ctx)])

    with pytest.raises(ProviderError) as exc:
        run(_with_ctx(fake, read))
    assert exc.value.kind == "not_found"


@pytest.mark.parametrize("body,fragment", [
    ({"model": "MiniMax-Hailuo-2.3", "prompt": "x", "duration": 10, "resolution": "1080P"}, "1080P"),
    ({"model": "MiniMax-Hailuo-2.3", "prompt": "x", "duration": 8}, "duration"),
    ({"model": "MiniMax-Hailuo-2.3", "prompt": "x", "resolution": "512P"}, "resolution"),
    ({"model": "MiniMax-Hailuo-2.3-Fast", "prompt": "x"}, "first_frame_image"),
    ({"model": "MiniMax-Hailuo-02", "prompt": "x", "resolution": "512P"}, "image-to-video"),
    ({"model": "MiniMax-Hailuo-2.3", "prompt": "x", "last_frame_image": "https://e.com/a.png",
      "first_frame_image": "https://e.com/b.png"}, "last_frame_image"),
    ({"model": "T2V-01", "prompt": "x", "duration": 6}, "duration"),
    ({"model": "S2V-01", "prompt": "x"}, "subject_reference"),
    ({"model": "MiniMax-Hailuo-2.3", "prompt": "x", "first_frame_image": data_url(png(200, 200))}, "300px"),
    ({"model": "MiniMax-Hailuo-2.3", "prompt": "x" * 2001}, "2000"),
    ({"model": "Hailuo-9"}, "not supported"),
])
def test_fake_validates_like_minimax(fake: RunningFake, body: dict[str, Any], fragment: str) -> None:
    r = httpx.post(fake.url + "/v1/video_generation", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.headers["trace-id"]
    assert r.json()["base_resp"]["status_code"] == 2013, r.text
    assert fragment in r.json()["base_resp"]["status_msg"]


def test_fake_status_progression_and_expiry() -> None:
    now = [0.0]
    app = create_app(clock=lambda: now[0], render_seconds=10)
    with RunningFake(app) as running:
        auth = {"Authorization": f"Bearer {KEY}"}
        r = httpx.post(running.url + "/v1/video_generation", headers=auth,
                       json={"model": "MiniMax-Hailuo-02", "prompt": "x", "resolution": "512P",
                             "first_frame_image": data_url(png(400, 800))})
        task_id = r.json()["task_id"]
        statuses = []
        for t in (0, 2, 5, 10):
            now[0] = t
            q = httpx.get(running.url + "/v1/query/video_generation", params={"task_id": task_id}, headers=auth)
            statuses.append(q.json()["status"])
        assert statuses == ["Preparing", "Queueing", "Processing", "Success"]
        body = q.json()
        assert (body["video_width"], body["video_height"]) == (512, 1024)  # portrait first frame at 512P
        f = httpx.get(running.url + "/v1/files/retrieve", params={"file_id": body["file_id"]}, headers=auth).json()
        assert isinstance(f["file"]["file_id"], int) and f["file"]["bytes"] > 0
        assert httpx.get(f["file"]["download_url"]).status_code == 200
        now[0] += minimax_ttl()
        assert httpx.get(f["file"]["download_url"]).status_code == 403
    assert FAKES["minimax"] is create_app


def minimax_ttl() -> float:
    from aistats_gateway.providers.fakes.minimax import DOWNLOAD_TTL_SECONDS

    return DOWNLOAD_TTL_SECONDS


# ---------------------------------------------------------------- through the gateway


def creates_for(fake: RunningFake, prompt: str) -> list[Any]:
    return [r for r in fake.state.creates if (r.body or {}).get("prompt") == prompt]


def probe(data: bytes) -> tuple[int, int, float]:
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        return s.width, s.height, c.duration / 1e6


def test_text_to_video_end_to_end(api: httpx.Client, fake: RunningFake, gateway: Gateway) -> None:
    prompt = f"{PROMPT} ({gateway.backend})"
    r = api.post("/v1/videos", json={"model": "minimax/hailuo-2.3", "prompt": prompt, "seconds": 6,
                                     "resolution": "720p", "enhance_prompt": False})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "completed", body
    assert body["provider"] == "minimax"
    [sent] = creates_for(fake, prompt)
    assert sent.path == "/v1/video_generation" and sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body == {"model": "MiniMax-Hailuo-2.3", "prompt": prompt, "prompt_optimizer": False,
                         "duration": 6, "resolution": "768P"}
    task_id = next(t.id for t in fake.state.tasks.values() if t.prompt == prompt)
    assert any(q.query == {"task_id": task_id} and q.headers["authorization"] == f"Bearer {KEY}"
               for q in fake.state.find_requests("GET", "/v1/query/video_generation"))
    content = api.get(f"/v1/videos/{body['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"].startswith("video/mp4")
    width, height, seconds = probe(content.content)
    assert (width, height) == (1366, 768) and seconds == pytest.approx(6, abs=0.2)
    [out] = body["outputs"]
    assert (out["width"], out["height"]) == (1366, 768)


def test_first_and_last_frame_end_to_end(api: httpx.Client, fake: RunningFake, gateway: Gateway) -> None:
    prompt = f"frames ({gateway.backend})"
    first, last = png(640, 360, (10, 200, 10)), png(640, 360, (10, 10, 200))
    r = api.post("/v1/videos", json={
        "model": "minimax/hailuo-02", "prompt": prompt, "seconds": 6, "resolution": "720p",
        "input_references": [{"role": "first_frame", "image_url": {"url": data_url(first)}},
                             {"role": "last_frame", "image_url": {"url": data_url(last)}}]})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "completed", body
    [sent] = creates_for(fake, prompt)
    assert sent.body["model"] == "MiniMax-Hailuo-02"
    assert sent.body["first_frame_image"] == data_url(first) and sent.body["last_frame_image"] == data_url(last)
    assert probe(api.get(f"/v1/videos/{body['id']}/content").content)[:2] == (1366, 768)


def test_image_only_model_without_image_is_a_400(api: httpx.Client, fake: RunningFake) -> None:
    creates = len(fake.state.creates)
    r = api.post("/v1/videos", json={"model": "minimax/hailuo-2.3-fast", "prompt": "x", "seconds": 6})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "missing_required_parameter"
    assert len(fake.state.creates) == creates  # refused before calling MiniMax


def test_failed_job_keeps_the_providers_code(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_jobs, fake.state.fail_job_code = True, 1000
    r = api.post("/v1/videos", json={"model": "minimax/hailuo-2.3", "prompt": "fail please", "seconds": 6})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "generation_failed"
    assert "1000" in body["error"]["message"] and "video generation failed (fake)" in body["error"]["message"]


def test_content_policy_at_submit_is_a_400(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.sensitive_input_prompts = ["forbidden"]
    r = api.post("/v1/videos", json={"model": "minimax/hailuo-2.3", "prompt": "a forbidden scene", "seconds": 6})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "content_policy_violation"
    assert "1026" in r.json()["error"]["message"]


def test_content_policy_after_submit_fails_the_job(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.sensitive_output_prompts = ["risky"]
    r = api.post("/v1/videos", json={"model": "minimax/hailuo-2.3", "prompt": "a risky scene", "seconds": 6})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "content_policy_violation", body
    assert "1027" in body["error"]["message"]


def test_rate_limit_is_a_429_with_retry_after(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.rate_limit_next = 1
    r = api.post("/v1/videos", json={"model": "minimax/hailuo-2.3", "prompt": "busy", "seconds": 6})
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_rate_limit_falls_back(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.rate_limit_next = 1
    r = api.post("/v1/videos", json={"model": FALLBACK_MODEL, "prompt": "busy", "seconds": 6,
                                     **FALLBACK_INPUT})
    assert r.status_code == 202, r.text
    assert [(a["provider"], a["outcome"], a["code"]) for a in r.json()["attempts"]] == [
        ("minimax", "error", "rate_limit_exceeded"), ("local", "accepted", None)]
    api.post(f"/v1/videos/{r.json()['id']}/cancel")  # no need to render it


def test_wrong_key_is_a_clear_error(api: httpx.Client, fake: RunningFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV + "API_KEY", "mm-wrong")
    r = api.post("/v1/videos", json={"model": "minimax/hailuo-2.3", "prompt": "who am i", "seconds": 6})
    assert r.status_code == 502, r.text
    assert "2049" in r.json()["error"]["message"] and r.json()["error"]["code"] == "provider_auth_failed"
    # With a second provider the job goes on there.
    r = api.post("/v1/videos", json={"model": FALLBACK_MODEL, "prompt": "who am i", "seconds": 6,
                                     **FALLBACK_INPUT})
    assert r.status_code == 202, r.text
    attempts = r.json()["attempts"]
    assert [(a["provider"], a["outcome"], a["code"]) for a in attempts] == [
        ("minimax", "error", "provider_auth_failed"), ("local", "accepted", None)]
    api.post(f"/v1/videos/{r.json()['id']}/cancel")  # test_fallback_to_local_on_503 waits for a local render


def test_fallback_to_local_on_503(api: httpx.Client, fake: RunningFake) -> None:
    falls_back_to_local(api, fake, "minimax", model=FALLBACK_MODEL, prompt="fallback", seconds=6, **FALLBACK_INPUT)


def test_cancel_only_stops_polling(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.render_seconds = 30
    r = api.post("/v1/videos", json={"model": "minimax/hailuo-2.3", "prompt": "slow boat", "seconds": 6})
    assert r.status_code == 202, r.text
    before = {(q.method, q.path) for q in fake.state.requests}
    c = api.post(f"/v1/videos/{r.json()['id']}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "cancelled", c.text
    assert wait_done(api, r.json()["id"])["status"] == "cancelled"
    after = {(q.method, q.path) for q in fake.state.requests}
    assert after <= before | {("GET", "/v1/query/video_generation")}  # MiniMax has no cancel endpoint


def test_expired_download_link_fails_the_job(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.expire_outputs = True
    r = api.post("/v1/videos", json={"model": "minimax/hailuo-2.3", "prompt": "too late", "seconds": 6})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "output_unavailable", body
