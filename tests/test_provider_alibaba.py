"""Alibaba DashScope (Wan) adapter and its fake.

Unit tests of the request mapping and the status/error tables, the adapter against the fake directly,
and end-to-end runs through a real gateway (SQLite and PostgreSQL) whose ``alibaba`` provider points at
the fake DashScope API on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import av
import httpx
import pytest

from aistats_gateway.providers import alibaba
from aistats_gateway.providers.base import CallContext, ImageInput, ProviderError, VideoRequest
from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes.alibaba import CREATE, create_app
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

KEY = "sk-dashscope-test"
ENV = "AISTATS_PROVIDER_ALIBABA_"
RENDER_SECONDS = 0.5
FALLBACK_MODEL = "qwen/test-wan-with-local"
PROMPT = "a koi pond at dawn, ripples spreading"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"}

FREE = [{"meter": "output_video_seconds", "unit": "second", "price": "0"}]
OVERLAY = {"models": [{
    "model_id": FALLBACK_MODEL, "name": "Wan 2.5 with a local fallback", "organisation": "qwen",
    "status": "active", "input_types": ["text"], "output_types": ["video"],
    "providers": [
        {"provider": "alibaba", "provider_model_slug": "wan2.5-t2v-preview", "endpoints": ["video.generation"],
         "input_modalities": ["text"], "output_modalities": ["video"], "pricing": FREE,
         "parameters": {"video.generation": {
             "duration": {"type": "integer", "values": [5, 10], "default": 5, "aliases": ["seconds"]},
             "resolution": {"type": "string", "values": ["480p", "720p"], "default": "480p"},
             "aspect_ratio": {"type": "string", "values": ["16:9"], "default": "16:9"}}}},
        {"provider": "local", "provider_model_slug": "procedural-video", "endpoints": ["video.generation"],
         "input_modalities": ["text"], "output_modalities": ["video"], "pricing": FREE,
         "parameters": {"video.generation": {
             "duration": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5, "aliases": ["seconds"]},
             "resolution": {"values": ["480p", "720p"], "default": "480p"},
             "aspect_ratio": {"values": ["16:9"], "default": "16:9"}}}},
    ],
}]}


KIT = ProviderKit("alibaba", api_key=KEY, fake_kwargs={"render_seconds": RENDER_SECONDS}, overlay=OVERLAY)
fake, provider_env, gateway, reset_fake = provider_fixtures(KIT)
wait_done = final_status


def png(width: int, height: int, colour: tuple[int, int, int] = (240, 160, 20)) -> bytes:
    return image_bytes(width, height, colour=colour)


def request(**kw: Any) -> VideoRequest:
    base: dict[str, Any] = dict(job_id="video_x", model_slug="wan2.6-t2v", prompt=PROMPT, duration=5,
                                width=1280, height=720, resolution="720p", aspect_ratio="16:9", size=None)
    base.update(kw)
    return VideoRequest(**base)


# ---------------------------------------------------------------- unit: request mapping


def test_text_to_video_body_maps_every_field() -> None:
    body = alibaba.build_body(request(duration=10, seed=9, negative_prompt="blurry", enhance_prompt=False,
                                      generate_audio=True, resolution="1080p", aspect_ratio="3:4",
                                      provider_params={"watermark": True, "shot_type": "multi",
                                                       "audio_url": "https://a.example/a.mp3"}))
    assert body == {
        "model": "wan2.6-t2v",
        "input": {"prompt": PROMPT, "negative_prompt": "blurry", "audio_url": "https://a.example/a.mp3"},
        "parameters": {"size": "1248*1632", "duration": 10, "seed": 9, "prompt_extend": False, "audio": True,
                       "watermark": True, "shot_type": "multi"},
    }


def test_first_frame_switches_to_the_i2v_model() -> None:
    url_image = ImageInput("first_frame", png(640, 360), "image/png", url="https://img.example/f.png")
    body = alibaba.build_body(request(model_slug="wan2.5-t2v-preview", resolution="480p", images=(url_image,)))
    assert body == {"model": "wan2.5-i2v-preview", "input": {"prompt": PROMPT, "img_url": "https://img.example/f.png"},
                    "parameters": {"resolution": "480P", "duration": 5}}
    inline = ImageInput("first_frame", b"jpeg", "image/jpeg")
    body = alibaba.build_body(request(model_slug="wan2.2-t2v-plus", prompt="", images=(inline,)))
    assert body["model"] == "wan2.2-i2v-plus" and body["input"] == {"img_url": data_url(b"jpeg", "image/jpeg")}


def test_key_frames_on_a_kf2v_model() -> None:
    images = (ImageInput("first_frame", b"a", "image/png"), ImageInput("last_frame", b"b", "image/png"))
    body = alibaba.build_body(request(model_slug="wan2.2-kf2v-flash", images=images))
    assert body["input"] == {"prompt": PROMPT, "first_frame_url": data_url(b"a"), "last_frame_url": data_url(b"b")}
    assert body["parameters"]["resolution"] == "720P"
    with pytest.raises(ProviderError) as exc:
        alibaba.build_body(request(images=images))  # wan2.6-t2v has no last-frame sibling
    assert exc.value.kind == "client"


@pytest.mark.parametrize("resolution,aspect,width,height,size", [
    ("720p", "16:9", 1280, 720, "1280*720"), ("720p", "9:16", 720, 1280, "720*1280"),
    ("1080p", "1:1", 1080, 1080, "1440*1440"), ("480p", "1:1", 480, 480, "624*624"),
    ("480p", "4:3", 640, 480, "624*624"),  # 480P has no 4:3: the nearest ratio
    (None, None, 1920, 1080, "1920*1080"), (None, None, 832, 1088, "832*1088"), (None, None, None, None, None),
])
def test_size_table(resolution: str | None, aspect: str | None, width: int | None, height: int | None,
                    size: str | None) -> None:
    assert alibaba.native_size(request(resolution=resolution, aspect_ratio=aspect, width=width,
                                       height=height)) == size


def test_audio_false_is_dropped_for_silent_models_and_unknown_roles_refused() -> None:
    assert "audio" not in alibaba.build_body(request(model_slug="wan2.2-t2v-plus", generate_audio=False))["parameters"]
    assert alibaba.build_body(request(generate_audio=False))["parameters"]["audio"] is False
    with pytest.raises(ProviderError) as exc:
        alibaba.build_body(request(images=(ImageInput("reference", b"r", "image/png"),)))
    assert exc.value.kind == "client"


# ---------------------------------------------------------------- unit: status and error tables


def test_status_table() -> None:
    assert alibaba.STATUS == {"PENDING": "queued", "RUNNING": "in_progress", "SUCCEEDED": "completed",
                              "FAILED": "failed", "CANCELED": "cancelled"}


@pytest.mark.parametrize("status,code,kind", [
    (401, "InvalidApiKey", "auth"), (403, "AccessDenied", "auth"), (403, "AccessDenied.Unpurchased", "auth"),
    (400, "Arrearage", "quota"), (429, "Throttling.AllocationQuota", "quota"),
    (429, "Throttling.RateQuota", "rate_limit"), (429, "Throttling", "rate_limit"),
    (400, "DataInspectionFailed", "content_policy"), (400, "InvalidParameter.DataInspection", "client"),
    (400, "InvalidParameter", "client"), (400, "BadRequest.EmptyInput", "client"),
    (500, "InternalError", "unavailable"), (500, "InternalError.Algo", "unavailable"), (503, None, "unavailable"),
])
def test_error_codes(status: int, code: str | None, kind: str) -> None:
    e = alibaba.error_for(status, code, "msg", retry_after=2.0)
    assert e.kind == kind and e.status == status
    if code:
        assert code in e.message
    if kind == "content_policy":
        assert e.code == "content_policy_violation"


# ---------------------------------------------------------------- the adapter against the fake


async def _with_ctx(fake: RunningFake, fn: Any, key: str = KEY) -> Any:
    async with httpx.AsyncClient(timeout=10) as http:
        return await fn(CallContext(http=http, api_key=key, base_url=fake.url))


def test_adapter_round_trip(fake: RunningFake) -> None:
    adapter = alibaba.adapter

    async def flow(ctx: CallContext) -> tuple[list[str], bytes, Any]:
        sub = await adapter.submit(request(model_slug="wan2.5-t2v-preview", resolution="480p"), ctx)
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
    assert polled.usage == {"count": 1, "seconds": 5.0}
    with av.open(io.BytesIO(data)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (832, 480)
    [sent] = fake.state.creates[-1:]
    assert sent.headers["x-dashscope-async"] == "enable" and sent.headers["authorization"] == f"Bearer {KEY}"
    [link] = [r for r in fake.state.requests if r.path.startswith("/oss/")]
    assert "authorization" not in link.headers


def test_unknown_task_is_not_found(fake: RunningFake) -> None:
    with pytest.raises(ProviderError) as exc:
        asyncio.run(_with_ctx(fake, lambda ctx: alibaba.adapter.poll("no-such-task", ctx)))
    assert exc.value.kind == "not_found"


def test_cancel_only_while_pending(fake: RunningFake) -> None:
    fake.state.render_seconds, fake.state.queued_fraction = 30, 0.5

    async def flow(ctx: CallContext) -> tuple[str, str]:
        sub = await alibaba.adapter.submit(request(), ctx)
        assert await alibaba.adapter.cancel(sub.native_id, ctx) is True
        return sub.native_id, (await alibaba.adapter.poll(sub.native_id, ctx)).status

    task_id, status = asyncio.run(_with_ctx(fake, flow))
    assert status == "cancelled" and fake.state.cancels[-1] == task_id
    fake.state.queued_fraction = 0.0

    async def running(ctx: CallContext) -> None:
        sub = await alibaba.adapter.submit(request(), ctx)
        await alibaba.adapter.cancel(sub.native_id, ctx)

    with pytest.raises(ProviderError) as exc:
        asyncio.run(_with_ctx(fake, running))
    assert exc.value.kind == "client" and "UnsupportedOperation" in exc.value.message


def test_fake_requires_the_async_header(fake: RunningFake) -> None:
    body = {"model": "wan2.6-t2v", "input": {"prompt": "x"}, "parameters": {"size": "1280*720"}}
    r = httpx.post(fake.url + CREATE, json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 403
    assert r.json()["code"] == "AccessDenied" and "synchronous" in r.json()["message"] and r.json()["request_id"]
    assert httpx.post(fake.url + CREATE, json=body, headers=HEADERS).status_code == 200


@pytest.mark.parametrize("body,status,code", [
    ({"input": {"prompt": "x"}}, 400, "BadRequest.EmptyModel"),
    ({"model": "wan2.6-t2v"}, 400, "BadRequest.EmptyInput"),
    ({"model": "wan9", "input": {"prompt": "x"}}, 400, "InvalidParameter"),
    ({"model": "wan2.6-t2v", "input": {"prompt": "x"}, "parameters": {"size": "832*480"}}, 400, "InvalidParameter"),
    ({"model": "wan2.6-t2v", "input": {"prompt": "x"}, "parameters": {"resolution": "720P"}}, 400,
     "InvalidParameter"),
    ({"model": "wan2.6-i2v", "input": {"prompt": "x", "img_url": "https://e.com/a.png"},
      "parameters": {"size": "1280*720"}}, 400, "InvalidParameter"),
    ({"model": "wan2.6-i2v", "input": {"prompt": "x"}}, 400, "InvalidParameter"),
    ({"model": "wan2.5-t2v-preview", "input": {"prompt": "x"}, "parameters": {"duration": 15}}, 400,
     "InvalidParameter"),
    ({"model": "wan2.2-t2v-plus", "input": {"prompt": "x"}, "parameters": {"audio": True}}, 400,
     "InvalidParameter"),
    ({"model": "wan2.6-t2v", "input": {"prompt": "x"}, "parameters": {"seed": -1}}, 400, "InvalidParameter"),
    ({"model": "wan2.6-i2v", "input": {"img_url": data_url(png(200, 200))}}, 400, "InvalidParameter"),
    ({"model": "wan2.6-i2v", "input": {"img_url": "ftp://e.com/a.png"}}, 400, "InvalidURL"),
])
def test_fake_validates_like_dashscope(fake: RunningFake, body: dict[str, Any], status: int, code: str) -> None:
    r = httpx.post(fake.url + CREATE, json=body, headers=HEADERS)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and set(r.json()) == {"code", "message", "request_id"}


def test_fake_lifecycle_and_unknown_ids() -> None:
    now = [0.0]
    app = create_app(clock=lambda: now[0], render_seconds=10)
    with RunningFake(app) as running:
        r = httpx.post(running.url + CREATE, headers=HEADERS, json={
            "model": "wan2.6-i2v", "input": {"prompt": "x", "img_url": data_url(png(360, 640))},
            "parameters": {"resolution": "720P", "duration": 2, "shot_type": "single"}})
        assert r.json()["output"]["task_status"] == "PENDING"
        task_id = r.json()["output"]["task_id"]
        statuses = []
        for t in (0, 5, 10):
            now[0] = t
            got = httpx.get(f"{running.url}/api/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {KEY}"})
            statuses.append(got.json()["output"]["task_status"])
        assert statuses == ["PENDING", "RUNNING", "SUCCEEDED"]
        out = got.json()["output"]
        assert {"submit_time", "scheduled_time", "end_time", "video_url", "orig_prompt", "actual_prompt"} <= set(out)
        assert got.json()["usage"]["size"] == "720*1280"  # a portrait first frame at 720P
        assert httpx.get(out["video_url"]).status_code == 200
        now[0] += 24 * 3600
        assert httpx.get(out["video_url"]).status_code == 403
        unknown = httpx.get(f"{running.url}/api/v1/tasks/nope", headers={"Authorization": f"Bearer {KEY}"})
        assert unknown.status_code == 200 and unknown.json()["output"]["task_status"] == "UNKNOWN"
        denied = httpx.get(f"{running.url}/api/v1/tasks/nope", headers={"Authorization": "Bearer nope"})
        assert denied.status_code == 401 and denied.json()["code"] == "InvalidApiKey"
    assert FAKES["alibaba"] is create_app


# ---------------------------------------------------------------- through the gateway


def sent_for(fake: RunningFake, prompt: str) -> Any:
    [sent] = [r for r in fake.state.creates if ((r.body or {}).get("input") or {}).get("prompt") == prompt]
    return sent


def task_for(fake: RunningFake, prompt: str) -> Any:
    return next(t for t in fake.state.tasks.values() if t.prompt == prompt)


def probe(data: bytes) -> tuple[int, int, float]:
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[0]
        return s.width, s.height, c.duration / 1e6


def test_text_to_video_end_to_end(api: httpx.Client, fake: RunningFake, gateway: Gateway) -> None:
    prompt = f"{PROMPT} ({gateway.backend})"
    r = api.post("/v1/videos", json={"model": "qwen/wan-2.5-preview", "prompt": prompt, "seconds": 5,
                                     "resolution": "480p", "aspect_ratio": "16:9", "seed": 11,
                                     "negative_prompt": "blurry", "enhance_prompt": False, "generate_audio": False,
                                     "provider_params": {"watermark": True}})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "completed" and body["provider"] == "alibaba", body
    sent = sent_for(fake, prompt)
    assert sent.path == CREATE and sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-dashscope-async"] == "enable"
    assert sent.body == {"model": "wan2.5-t2v-preview", "input": {"prompt": prompt, "negative_prompt": "blurry"},
                         "parameters": {"watermark": True, "size": "832*480", "duration": 5, "seed": 11,
                                        "prompt_extend": False, "audio": False}}
    assert fake.state.find_requests("GET", f"/api/v1/tasks/{task_for(fake, prompt).id}")
    content = api.get(f"/v1/videos/{body['id']}/content")
    assert content.status_code == 200
    width, height, seconds = probe(content.content)
    assert (width, height) == (832, 480) and seconds == pytest.approx(5, abs=0.2)


def test_image_to_video_end_to_end(api: httpx.Client, fake: RunningFake, gateway: Gateway) -> None:
    prompt = f"from a frame ({gateway.backend})"
    frame = png(640, 360)
    r = api.post("/v1/videos", json={"model": "qwen/wan-2.2-plus", "prompt": prompt, "seconds": 5,
                                     "resolution": "480p",
                                     "input_references": [
                                         {"role": "first_frame", "image_url": {"url": data_url(frame)}}]})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "completed", body
    sent = sent_for(fake, prompt)
    assert sent.body["model"] == "wan2.2-i2v-plus"
    assert sent.body["input"]["img_url"] == data_url(frame)
    assert sent.body["parameters"] == {"resolution": "480P", "duration": 5}
    task = task_for(fake, prompt)
    assert probe(api.get(f"/v1/videos/{body['id']}/content").content)[:2] == (task.width, task.height)


def test_failed_job_keeps_the_providers_code(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_jobs = True
    r = api.post("/v1/videos", json={"model": "qwen/wan-2.5-preview", "prompt": "doomed", "seconds": 5,
                                     "resolution": "480p"})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "InternalError.Algo" and "(fake)" in body["error"]["message"]


def test_content_policy_at_submit_and_after(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.sensitive_input_prompts, fake.state.sensitive_output_prompts = ["forbidden"], ["risky"]
    r = api.post("/v1/videos", json={"model": "qwen/wan-2.5-preview", "prompt": "a forbidden act", "seconds": 5,
                                     "resolution": "480p"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "content_policy_violation"
    assert "DataInspectionFailed" in r.json()["error"]["message"]
    r = api.post("/v1/videos", json={"model": "qwen/wan-2.5-preview", "prompt": "a risky act", "seconds": 5,
                                     "resolution": "480p"})
    assert r.status_code == 202, r.text
    body = wait_done(api, r.json()["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "content_policy_violation", body
    assert "Output data" in body["error"]["message"]


def test_rate_limit_is_a_429_with_retry_after(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.rate_limit_next = 1
    r = api.post("/v1/videos", json={"model": "qwen/wan-2.5-preview", "prompt": "busy", "seconds": 5,
                                     "resolution": "480p"})
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "rate_limit_exceeded"


def test_arrearage_is_a_quota_error(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.arrearage = True
    r = api.post("/v1/videos", json={"model": "qwen/wan-2.5-preview", "prompt": "broke", "seconds": 5,
                                     "resolution": "480p"})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "provider_quota_exceeded" and "Arrearage" in r.json()["error"]["message"]


def test_wrong_key_is_a_clear_error(api: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV + "API_KEY", "sk-wrong")
    r = api.post("/v1/videos", json={"model": "qwen/wan-2.5-preview", "prompt": "who", "seconds": 5,
                                     "resolution": "480p"})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "provider_auth_failed" and "InvalidApiKey" in r.json()["error"]["message"]
    r = api.post("/v1/videos", json={"model": FALLBACK_MODEL, "prompt": "who", "seconds": 5})
    assert r.status_code == 202, r.text
    assert [(a["provider"], a["code"]) for a in r.json()["attempts"]] == [("alibaba", "provider_auth_failed"),
                                                                          ("local", None)]
    api.post(f"/v1/videos/{r.json()['id']}/cancel")


def test_fallback_to_local_on_503(api: httpx.Client, fake: RunningFake) -> None:
    falls_back_to_local(api, fake, "alibaba", model=FALLBACK_MODEL, prompt="fallback", seconds=5)


def test_cancel_reaches_dashscope(api: httpx.Client, fake: RunningFake, gateway: Gateway) -> None:
    fake.state.render_seconds, fake.state.queued_fraction = 60, 0.9
    prompt = f"cancel me ({gateway.backend})"
    r = api.post("/v1/videos", json={"model": "qwen/wan-2.5-preview", "prompt": prompt, "seconds": 5,
                                     "resolution": "480p"})
    assert r.status_code == 202, r.text
    c = api.post(f"/v1/videos/{r.json()['id']}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "cancelled", c.text
    task = task_for(fake, prompt)
    assert task.id in fake.state.cancels
    [cancel] = fake.state.find_requests("POST", f"/api/v1/tasks/{task.id}/cancel")
    assert cancel.headers["authorization"] == f"Bearer {KEY}" and cancel.status == 200
    assert wait_done(api, r.json()["id"])["status"] == "cancelled"
