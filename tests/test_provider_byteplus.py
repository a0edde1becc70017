"""BytePlus ModelArk (Seedance) adapter and its fake.

Unit tests of the request mapping and the status/error tables, the adapter against the fake directly,
and end-to-end runs through a real gateway (SQLite and PostgreSQL) whose ``byteplus`` provider points at
the fake ModelArk API on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import av
import httpx
import pytest

from aistats_gateway.providers import byteplus
from aistats_gateway.providers.base import CallContext, ImageInput, OutputRef, ProviderError, VideoRequest
from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes.byteplus import TASKS, create_app
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

KEY = "ark-test"
ENV = "AISTATS_PROVIDER_BYTEPLUS_"
RENDER_SECONDS = 0.5
FALLBACK_MODEL = "bytedance/test-seedance-with-local"
PROMPT = "a lighthouse beam sweeping over a stormy sea"
AUTH = {"Authorization": f"Bearer {KEY}"}

FREE = [{"meter": "output_video_seconds", "unit": "second", "price": "0"}]
OVERLAY = {"models": [{
    "model_id": FALLBACK_MODEL, "name": "Seedance 1.0 Pro with a local fallback", "organisation": "bytedance",
    "status": "active", "input_types": ["text"], "output_types": ["video"],
    "providers": [
        {"provider": "byteplus", "provider_model_slug": "seedance-1-0-pro-250528", "endpoints": ["video.generation"],
         "input_modalities": ["text"], "output_modalities": ["video"], "pricing": FREE,
         "parameters": {"video.generation": {
             "duration": {"type": "integer", "minimum": 2, "maximum": 12, "default": 5, "aliases": ["seconds"]},
             "resolution": {"type": "string", "values": ["480p", "720p", "1080p"], "default": "480p"},
             "aspect_ratio": {"type": "string", "values": ["16:9", "9:16", "1:1"], "default": "16:9"}}}},
        {"provider": "local", "provider_model_slug": "procedural-video", "endpoints": ["video.generation"],
         "input_modalities": ["text"], "output_modalities": ["video"], "pricing": FREE,
         "parameters": {"video.generation": {
             "duration": {"type": "integer", "minimum": 1, "maximum": 12, "default": 5, "aliases": ["seconds"]},
             "resolution": {"values": ["480p", "720p"], "default": "480p"},
             "aspect_ratio": {"values": ["16:9", "9:16", "1:1"], "default": "16:9"}}}},
    ],
}]}


KIT = ProviderKit("byteplus", api_key=KEY, fake_kwargs={"render_seconds": RENDER_SECONDS}, overlay=OVERLAY)
fake, provider_env, gateway, reset_fake = provider_fixtures(KIT)
wait_done = final_status


def png(width: int, height: int, colour: tuple[int, int, int] = (30, 90, 200)) -> bytes:
    return image_bytes(width, height, colour=colour)


def request(**kw: Any) -> VideoRequest:
    base: dict[str, Any] = dict(job_id="video_x", model_slug="seedance-1-5-pro-251215", prompt=PROMPT, duration=5,
                                width=864, height=480, resolution="480p", aspect_ratio="16:9", size=None)
    base.update(kw)
    return VideoRequest(**base)


# ---------------------------------------------------------------- unit: request mapping


def test_body_maps_every_unified_field() -> None:
    first = ImageInput("first_frame", png(640, 360), "image/png", url="https://img.example/first.png")
    last = ImageInput("last_frame", png(640, 360), "image/png")
    body = byteplus.build_body(request(duration=8, seed=7, generate_audio=True, resolution="1080p",
                                       images=(first, last), provider_params={"camera_fixed": True,
                                                                              "watermark": False}))
    assert body == {
        "model": "seedance-1-5-pro-251215",
        "content": [
            {"type": "text", "text": PROMPT},
            {"type": "image_url", "image_url": {"url": "https://img.example/first.png"}, "role": "first_frame"},
            {"type": "image_url", "image_url": {"url": data_url(png(640, 360))}, "role": "last_frame"},
        ],
        "ratio": "adaptive", "resolution": "1080p", "duration": 8, "seed": 7, "generate_audio": True,
        "camera_fixed": True, "watermark": False,
    }


def test_text_to_video_body_and_defaults() -> None:
    body = byteplus.build_body(request(aspect_ratio="9:16", width=480, height=864))
    assert body == {"model": "seedance-1-5-pro-251215", "content": [{"type": "text", "text": PROMPT}],
                    "ratio": "9:16", "resolution": "480p", "duration": 5}
    bare = byteplus.build_body(request(duration=None, resolution=None, aspect_ratio=None, width=None, height=None))
    assert set(bare) == {"model", "content"}


@pytest.mark.parametrize("width,height,ratio,resolution", [
    (1920, 1080, "16:9", "1080p"), (1280, 720, "16:9", "720p"), (720, 1280, "9:16", "720p"),
    (2560, 1080, "21:9", "1080p"), (1000, 1000, "1:1", "1080p"), (640, 480, "4:3", "480p"),
])
def test_size_maps_to_the_nearest_ratio(width: int, height: int, ratio: str, resolution: str) -> None:
    req = request(resolution=None, aspect_ratio=None, width=width, height=height)
    assert (byteplus.native_ratio(req), byteplus.native_resolution(req)) == (ratio, resolution)


def test_reference_images_and_lite_i2v_slug() -> None:
    refs = tuple(ImageInput("reference", b"r%d" % i, "image/jpeg") for i in range(2))
    body = byteplus.build_body(request(model_slug="seedance-1-0-lite-t2v-250428", images=refs))
    assert body["model"] == "seedance-1-0-lite-i2v-250428"
    assert [c.get("role") for c in body["content"]] == [None, "reference_image", "reference_image"]
    assert body["ratio"] == "16:9"  # no first frame: the requested ratio
    assert byteplus.native_model(request(model_slug="seedance-1-0-lite-t2v-250428")) == "seedance-1-0-lite-t2v-250428"


def test_generate_audio_false_is_dropped_for_silent_models() -> None:
    assert "generate_audio" not in byteplus.build_body(request(model_slug="seedance-1-0-pro-250528",
                                                               generate_audio=False))
    assert byteplus.build_body(request(generate_audio=False))["generate_audio"] is False


def test_unsupported_inputs_are_client_errors() -> None:
    with pytest.raises(ProviderError) as exc:
        byteplus.build_body(request(images=(ImageInput("mask", b"m", "image/png"),)))
    assert exc.value.kind == "client"
    with pytest.raises(ProviderError) as exc:
        byteplus.native_resolution(request(resolution="4K"))
    assert exc.value.kind == "client"


# ---------------------------------------------------------------- unit: status and error tables


def test_status_table() -> None:
    assert byteplus.STATUS == {"queued": "queued", "running": "in_progress", "succeeded": "completed",
                               "failed": "failed", "cancelled": "cancelled", "expired": "expired"}


@pytest.mark.parametrize("status,code,kind", [
    (400, "InputTextSensitiveContentDetected", "content_policy"),
    (400, "InputImageSensitiveContentDetected.PrivacyInformation", "content_policy"),
    (400, "InputTextRiskDetection", "content_policy"),
    (401, "AuthenticationError", "auth"), (403, "AccessDenied", "auth"),
    (403, "AccountOverdueError", "quota"), (429, "QuotaExceeded", "quota"), (429, "SetLimitExceeded", "quota"),
    (429, "RateLimitExceeded.EndpointRPMExceeded", "rate_limit"), (429, "ServerOverloaded", "rate_limit"),
    (400, "InvalidParameter", "client"), (404, "InvalidEndpointOrModel.NotFound", "not_found"),
    (500, "InternalServiceError", "unavailable"), (503, None, "unavailable"),
])
def test_error_codes(status: int, code: str | None, kind: str) -> None:
    e = byteplus.error_for(status, code, "msg", retry_after=3.0 if status == 429 else None)
    assert e.kind == kind and e.status == status
    if code:
        assert code in e.message
    if kind == "content_policy":
        assert e.code == "content_policy_violation"
    if kind == "rate_limit":
        assert e.retry_after == 3.0


# ---------------------------------------------------------------- the adapter against the fake


async def _with_ctx(fake: RunningFake, fn: Any, key: str = KEY) -> Any:
    async with httpx.AsyncClient(timeout=10) as http:
        return await fn(CallContext(http=http, api_key=key, base_url=fake.url))


def test_adapter_round_trip(fake: RunningFake) -> None:
    adapter = byteplus.adapter

    async def flow(ctx: CallContext) -> tuple[list[str], bytes, Any]:
        sub = await adapter.submit(request(duration=4, aspect_ratio="1:1", seed=5), ctx)
        seen = []
        while True:
            polled = await adapter.poll(sub.native_id, ctx)
            seen.append(polled.status)
            if polled.status not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.05)
        data = b"".join([c async for c in adapter.open_output(sub.native_id, polled.outputs[0], ctx)])
        return seen, data, polled

    seen, data, polled = asyncio.run(_with_ctx(fake, flow))
    assert seen[0] == "queued" and "in_progress" in seen and seen[-1] == "completed"
    assert polled.usage["seconds"] == 4 and polled.usage["completion_tokens"] > 0
    assert polled.outputs[0].expires_at is not None
    with av.open(io.BytesIO(data)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (640, 640)
    [link] = [r for r in fake.state.requests if r.path.startswith("/tos/")]
    assert "authorization" not in link.headers


def test_cancel_queued_and_running(fake: RunningFake) -> None:
    fake.state.render_seconds, fake.state.queued_fraction = 30, 0.5

    async def flow(ctx: CallContext) -> tuple[str, str]:
        sub = await byteplus.adapter.submit(request(), ctx)
        assert await byteplus.adapter.cancel(sub.native_id, ctx) is True
        return sub.native_id, (await byteplus.adapter.poll(sub.native_id, ctx)).status

    task_id, status = asyncio.run(_with_ctx(fake, flow))
    assert status == "cancelled" and fake.state.cancels[-1] == task_id
    assert fake.state.find_requests("DELETE", f"{TASKS}/{task_id}")[0].headers["authorization"] == f"Bearer {KEY}"

    fake.state.queued_fraction = 0.0  # running at once: ModelArk refuses the cancel

    async def running(ctx: CallContext) -> None:
        sub = await byteplus.adapter.submit(request(), ctx)
        await byteplus.adapter.cancel(sub.native_id, ctx)

    with pytest.raises(ProviderError) as exc:
        asyncio.run(_with_ctx(fake, running))
    assert exc.value.kind == "client"


def test_unknown_task_and_expired_link(fake: RunningFake) -> None:
    with pytest.raises(ProviderError) as exc:
        asyncio.run(_with_ctx(fake, lambda ctx: byteplus.adapter.poll("cgt-nope", ctx)))
    assert exc.value.kind == "not_found"

    async def read(ctx: CallContext) -> bytes:
        ref = OutputRef(index=0, url=fake.url + "/tos/nope.mp4")
        return b"".join([c async for c in byteplus.adapter.open_output("x", ref, ctx)])

    with pytest.raises(ProviderError) as exc:
        asyncio.run(_with_ctx(fake, read))
    assert exc.value.kind == "not_found"


def post(fake: RunningFake, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(fake.url + TASKS, json=body, headers=AUTH)


def text(prompt: str = "x") -> list[dict[str, Any]]:
    return [{"type": "text", "text": prompt}]


def image(role: str, url: str = "https://img.example/a.png") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}, "role": role}


@pytest.mark.parametrize("body,status,code", [
    ({"model": "seedance-1-0-pro-250528", "content": text(), "generate_audio": True}, 400, "InvalidParameter"),
    ({"model": "seedance-1-5-pro-251215", "content": text(), "duration": 2}, 400, "InvalidParameter"),
    ({"model": "seedance-1-5-pro-251215", "content": text(), "resolution": "4k"}, 400, "InvalidParameter"),
    ({"model": "seedance-1-5-pro-251215", "content": text(), "ratio": "2:1"}, 400, "InvalidParameter"),
    ({"model": "seedance-1-5-pro-251215", "content": text(), "seed": -2}, 400, "InvalidParameter"),
    ({"model": "seedance-1-5-pro-251215", "content": text(), "style": "noir"}, 400, "InvalidParameter"),
    ({"model": "seedance-1-5-pro-251215", "content": text() + [image("last_frame")]}, 400, "InvalidParameter"),
    ({"model": "seedance-1-0-lite-t2v-250428", "content": text() + [image("first_frame")]}, 400, "InvalidParameter"),
    ({"model": "seedance-1-0-lite-i2v-250428", "content": text()}, 400, "MissingParameter"),
    ({"model": "seedance-1-0-lite-i2v-250428", "content": [image("reference_image"), image("first_frame")]},
     400, "InvalidParameter"),
    ({"model": "seedance-1-5-pro-251215", "content": [image("first_frame", "data:image/png;base64,@@")]},
     400, "InvalidParameter"),
    ({"model": "seedance-9", "content": text()}, 404, "InvalidEndpointOrModel.NotFound"),
    ({"model": "seedance-1-5-pro-251215"}, 400, "MissingParameter"),
])
def test_fake_validates_like_modelark(fake: RunningFake, body: dict[str, Any], status: int, code: str) -> None:
    r = post(fake, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and set(err) == {"code", "message", "param", "type"}


def test_fake_accepts_documented_requests(fake: RunningFake) -> None:
    ok = [
        {"model": "seedance-1-0-lite-i2v-250428", "content": text() + [image("reference_image")] * 2},
        {"model": "seedance-1-0-pro-250528", "content": text() + [image("first_frame"), image("last_frame")],
         "camera_fixed": False, "watermark": True, "return_last_frame": True, "service_tier": "flex"},
        {"model": "ep-20250101-abcd", "content": text(), "frames": 121},
    ]
    for body in ok:
        r = post(fake, body)
        assert r.status_code == 200 and r.json()["id"].startswith("cgt-"), r.text


def test_fake_lifecycle_list_and_delete() -> None:
    now = [0.0]
    app = create_app(clock=lambda: now[0], render_seconds=10)
    with RunningFake(app) as running:
        r = httpx.post(running.url + TASKS, headers=AUTH, json={
            "model": "seedance-1-5-pro-251215", "content": text("adaptive") + [image("first_frame", data_url(
                png(400, 800)))], "resolution": "720p"})
        task_id = r.json()["id"]
        statuses = []
        for t in (0, 5, 10):
            now[0] = t
            statuses.append(httpx.get(f"{running.url}{TASKS}/{task_id}", headers=AUTH).json()["status"])
        assert statuses == ["queued", "running", "succeeded"]
        task = httpx.get(f"{running.url}{TASKS}/{task_id}", headers=AUTH).json()
        assert task["ratio"] == "9:16" and task["usage"]["completion_tokens"] > 0  # adaptive: follows the image
        listed = httpx.get(running.url + TASKS, headers=AUTH, params={"filter.status": "succeeded"}).json()
        assert [i["id"] for i in listed["items"]] == [task_id] and listed["total"] == 1
        assert httpx.get(task["content"]["video_url"]).status_code == 200
        now[0] += 24 * 3600
        assert httpx.get(task["content"]["video_url"]).status_code == 403
        assert httpx.delete(f"{running.url}{TASKS}/{task_id}", headers=AUTH).status_code == 200  # deletes a record
        assert httpx.get(f"{running.url}{TASKS}/{task_id}", headers=AUTH).status_code == 404
        assert httpx.get(running.url + TASKS, headers={"Authorization": "Bearer nope"}).json()["error"]["code"] \
            == "AuthenticationError"
    assert FAKES["byteplus"] is create_app


# ---------------------------------------------------------------- through the gateway


def sent_for(fake: RunningFake, prompt: str) -> Any:
    [sent] = [r for r in fake.state.creates if any(c.get("text") == prompt for c in (r.body or {}).get("content", []))]
    return sent


def task_for(fake: RunningFake, prompt: str) -> Any:
    return next(t for t in fake.state.tasks.values() if t.prompt == prompt)


def probe(data: bytes) -> tuple[int, int, float]:
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        return s.width, s.height, c.duration / 1e6


def test_text_to_video_end_to_end(api: httpx.Client, fake: RunningFake, gateway: Gateway) -> None:
    prompt = f"{PROMPT} ({gateway.backend})"
    r = api.post("/v1/videos", json={"model": "bytedance/seedance-1.5-pro", "prompt": prompt, "seconds": 4,
                                     "resolution": "480p", "aspect_ratio": "9:16", "seed": 42,
                                     "generate_audio": False, "provider_params": {"camera_fixed": True}})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "completed" and body["provider"] == "byteplus", body
    sent = sent_for(fake, prompt)
    assert sent.path == TASKS and sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body == {"model": "seedance-1-5-pro-251215", "content": [{"type": "text", "text": prompt}],
                         "ratio": "9:16", "resolution": "480p", "duration": 4, "seed": 42, "generate_audio": False,
                         "camera_fixed": True}
    task = task_for(fake, prompt)
    assert fake.state.find_requests("GET", f"{TASKS}/{task.id}")
    content = api.get(f"/v1/videos/{body['id']}/content")
    assert content.status_code == 200
    width, height, seconds = probe(content.content)
    assert (width, height) == (480, 864) and seconds == pytest.approx(4, abs=0.2)


def test_image_to_video_uses_the_i2v_slug(api: httpx.Client, fake: RunningFake, gateway: Gateway) -> None:
    prompt = f"first frame ({gateway.backend})"
    frame = png(640, 360)
    r = api.post("/v1/videos", json={"model": "bytedance/seedance-1-lite", "prompt": prompt, "seconds": 3,
                                     "resolution": "480p",
                                     "input_references": [
                                         {"role": "first_frame", "image_url": {"url": data_url(frame)}}]})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "completed", body
    sent = sent_for(fake, prompt)
    assert sent.body["model"] == "seedance-1-0-lite-i2v-250428" and sent.body["ratio"] == "adaptive"
    assert sent.body["content"][1] == {"type": "image_url", "image_url": {"url": data_url(frame)},
                                       "role": "first_frame"}
    assert probe(api.get(f"/v1/videos/{body['id']}/content").content)[:2] == (864, 480)


def test_failed_job_keeps_the_providers_code(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_jobs = True
    r = api.post("/v1/videos", json={"model": "bytedance/seedance-1.5-pro", "prompt": "doomed", "seconds": 4,
                                     "resolution": "480p"})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "InternalServiceError" and "unexpected internal error" in body["error"]["message"]


def test_content_policy_at_submit_and_after(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.sensitive_input_prompts, fake.state.sensitive_output_prompts = ["forbidden"], ["risky"]
    r = api.post("/v1/videos", json={"model": "bytedance/seedance-1.5-pro", "prompt": "a forbidden act",
                                     "seconds": 4, "resolution": "480p"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "content_policy_violation"
    assert "InputTextSensitiveContentDetected" in r.json()["error"]["message"]
    r = api.post("/v1/videos", json={"model": "bytedance/seedance-1.5-pro", "prompt": "a risky act",
                                     "seconds": 4, "resolution": "480p"})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "content_policy_violation", body
    assert "OutputVideoSensitiveContentDetected" in body["error"]["message"]


def test_rate_limit_is_a_429_with_retry_after(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.rate_limit_next, fake.state.retry_after_seconds = 1, 7
    r = api.post("/v1/videos", json={"model": "bytedance/seedance-1.5-pro", "prompt": "busy", "seconds": 4,
                                     "resolution": "480p"})
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "7" and r.json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("knob,code", [("account_overdue", "provider_quota_exceeded"),
                                       ("quota_exceeded", "provider_quota_exceeded")])
def test_quota_errors(api: httpx.Client, fake: RunningFake, knob: str, code: str) -> None:
    setattr(fake.state, knob, True)
    r = api.post("/v1/videos", json={"model": "bytedance/seedance-1.5-pro", "prompt": "broke", "seconds": 4,
                                     "resolution": "480p"})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == code


def test_wrong_key_is_a_clear_error(api: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV + "API_KEY", "ark-wrong")
    r = api.post("/v1/videos", json={"model": "bytedance/seedance-1.5-pro", "prompt": "who", "seconds": 4,
                                     "resolution": "480p"})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "provider_auth_failed" and "AuthenticationError" in r.json()["error"]["message"]
    r = api.post("/v1/videos", json={"model": FALLBACK_MODEL, "prompt": "who", "seconds": 2})
    assert r.status_code == 202, r.text
    assert [(a["provider"], a["code"]) for a in r.json()["attempts"]] == [("byteplus", "provider_auth_failed"),
                                                                          ("local", None)]
    api.post(f"/v1/videos/{r.json()['id']}/cancel")


def test_fallback_to_local_on_503(api: httpx.Client, fake: RunningFake) -> None:
    falls_back_to_local(api, fake, "byteplus", model=FALLBACK_MODEL, prompt="fallback", seconds=2)


def test_cancel_reaches_modelark(api: httpx.Client, fake: RunningFake, gateway: Gateway) -> None:
    fake.state.render_seconds, fake.state.queued_fraction = 60, 0.9
    prompt = f"cancel me ({gateway.backend})"
    r = api.post("/v1/videos", json={"model": "bytedance/seedance-1.5-pro", "prompt": prompt, "seconds": 4,
                                     "resolution": "480p"})
    assert r.status_code == 202, r.text
    c = api.post(f"/v1/videos/{r.json()['id']}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "cancelled", c.text
    task = task_for(fake, prompt)
    assert task.id in fake.state.cancels
    [delete] = fake.state.find_requests("DELETE", f"{TASKS}/{task.id}")
    assert delete.headers["authorization"] == f"Bearer {KEY}" and delete.status == 200


def test_cancel_of_a_running_task_still_cancels_the_job(api: httpx.Client, fake: RunningFake,
                                                        gateway: Gateway) -> None:
    fake.state.render_seconds, fake.state.queued_fraction = 60, 0.0
    prompt = f"already running ({gateway.backend})"
    r = api.post("/v1/videos", json={"model": "bytedance/seedance-1.5-pro", "prompt": prompt,
                                     "seconds": 4, "resolution": "480p"})
    assert r.status_code == 202, r.text
    c = api.post(f"/v1/videos/{r.json()['id']}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "cancelled", c.text
    task = task_for(fake, prompt)
    assert [d.status for d in fake.state.find_requests("DELETE", f"{TASKS}/{task.id}")] == [400]
    assert task.id not in fake.state.cancels
