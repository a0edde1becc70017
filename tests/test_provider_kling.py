"""The Kling adapter and its fake: request/status/error mapping, JWT auth, and whole jobs through a
real gateway (SQLite and PostgreSQL) against the fake Kling API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from aistats_gateway.providers import kling
from aistats_gateway.providers.base import CallContext, ImageInput, ProviderError, VideoRequest
from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes import kling as fake_kling
from aistats_gateway.providers.fakes.openai import render_media
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.gateway import Gateway
from tests.support.providers import (
    ProviderKit,
    accepted,
    data_url,
    falls_back_to_local,
    final_status,
    image_bytes,
    provider_fixtures,
    video_ids,
    wait_idle,
)

AK, SK = "ak-test", "sk-test"
ENV = "AISTATS_PROVIDER_KLING_"
FALLBACK_MODEL = "kuaishou/test-kling-fallback"  # kling, then local
RENDER_SECONDS = 0.5


def _offer(provider: str, slug: str) -> dict[str, Any]:
    return {"provider": provider, "provider_model_slug": slug, "endpoints": ["video.generation"],
            "input_modalities": ["text"], "output_modalities": ["video"],
            "parameters": {"video.generation": {
                "duration": {"values": [5, 10], "default": 5, "aliases": ["seconds"]},
                "aspect_ratio": {"values": ["16:9", "9:16", "1:1"], "default": "16:9"}}}}


OVERLAY = {"models": [{
    "model_id": FALLBACK_MODEL, "name": "Kling test (falls back to local)", "organisation": "kuaishou",
    "status": "active", "input_types": ["text"], "output_types": ["video"],
    "providers": [_offer("kling", "kling-v2-5-turbo"), _offer("local", "procedural-video")],
}]}


# ---------------------------------------------------------------- fixtures


KIT = ProviderKit("kling", api_key=f"{AK}:{SK}", fake_kwargs={"render_seconds": RENDER_SECONDS}, overlay=OVERLAY,
                  extra_env={ENV + "SECRET_KEY": None})
fake, provider_env, gateway, reset_fake = provider_fixtures(KIT)


@pytest.fixture()
def reset(fake: RunningFake) -> RunningFake:
    """The fake, for a test that changes its knobs (``reset_fake`` restores them afterwards)."""
    return fake


# ---------------------------------------------------------------- helpers

wait_done = final_status


def sent_for(fake: RunningFake, video_id: str) -> fake_kling.RecordedRequest:
    [rec] = [r for r in fake.state.creates if isinstance(r.body, dict) and r.body.get("external_task_id") == video_id]
    return rec


def task_for(fake: RunningFake, video_id: str) -> fake_kling.Task:
    return fake.state.tasks[fake.state.by_external[video_id]]


def request(**kw: Any) -> VideoRequest:
    base: dict[str, Any] = dict(job_id="video_job1", model_slug="kling-v2-6", prompt="a fox in the snow",
                                duration=5, width=1280, height=720, resolution=None, aspect_ratio="16:9", size=None)
    base.update(kw)
    return VideoRequest(**base)


# ---------------------------------------------------------------- through the gateway


def test_text_to_video_end_to_end(api: httpx.Client, reset: RunningFake) -> None:
    fake = reset
    created = accepted(api, model="kuaishou/kling-v2.6", prompt="a red fox running", seconds=5,
                       aspect_ratio="1:1", negative_prompt="blurry", generate_audio=True,
                       provider_params={"camera_control": {"type": "simple", "config": {"zoom": 5}}})
    vid = created["id"]
    assert created["provider"] == "kling" and created["status"] == "queued"
    body = wait_done(api, vid)
    assert body["status"] == "completed", body

    sent = sent_for(fake, vid)
    assert sent.method == "POST" and sent.path == "/v1/videos/text2video" and sent.status == 200
    assert sent.headers["content-type"].startswith("application/json")
    assert sent.headers["authorization"].startswith("Bearer ")
    assert sent.claims is not None and sent.claims["iss"] == AK
    assert sent.claims["exp"] - sent.claims["nbf"] == 1805
    assert abs(sent.claims["exp"] - (time.time() + 1800)) < 60
    assert sent.body == {"model_name": "kling-v2-6", "prompt": "a red fox running", "negative_prompt": "blurry",
                         "duration": "5", "aspect_ratio": "1:1", "sound": "on", "mode": "pro",
                         "camera_control": {"type": "simple", "config": {"zoom": 5}},
                         "external_task_id": vid}
    task = task_for(fake, vid)
    polls = fake.state.find_requests("GET", f"/v1/videos/text2video/{task.id}")
    assert polls and all(p.status == 200 and p.claims for p in polls)
    assert len(fake.state.find_requests("GET", f"/kling-cdn/{task.id}/{task.video_id}.mp4")) == 1

    expected = render_media("video", "1080x1080", "5")  # sound is a pro-mode feature: 1080p
    r = api.get(f"/v1/videos/{vid}/content")
    assert r.status_code == 200 and r.content == expected
    [out] = body["outputs"]
    assert (out["width"], out["height"]) == (1080, 1080)
    assert out["duration_seconds"] == pytest.approx(5.0, abs=0.2)
    assert out["sha256"] == hashlib.sha256(expected).hexdigest()
    assert body["attempts"][0]["provider"] == "kling" and body["attempts"][0]["outcome"] == "accepted"


def test_image_to_video_with_first_and_last_frame(api: httpx.Client, reset: RunningFake) -> None:
    fake = reset
    first = image_bytes(400, 400, "PNG")
    last = image_bytes(400, 400, "WEBP", (200, 40, 40))
    created = accepted(api, model="kuaishou/kling-v2.5-turbo", prompt="the sky turns red", seconds=5, input_references=[
        {"type": "image_url", "role": "first_frame", "image_url": {"url": data_url(first, "image/png")}},
        {"type": "image_url", "role": "last_frame", "image_url": {"url": data_url(last, "image/webp")}},
    ])
    vid = created["id"]
    body = wait_done(api, vid)
    assert body["status"] == "completed", body
    sent = sent_for(fake, vid)
    assert sent.path == "/v1/videos/image2video"
    assert "aspect_ratio" not in sent.body  # image2video follows the image
    assert sent.body["model_name"] == "kling-v2-5-turbo" and sent.body["duration"] == "5"
    assert sent.body["mode"] == "pro"  # start+end frame is a pro-mode feature
    assert not sent.body["image"].startswith("data:")
    assert base64.b64decode(sent.body["image"]) == first
    tail = Image.open(io.BytesIO(base64.b64decode(sent.body["image_tail"])))
    assert tail.format == "PNG" and tail.size == (400, 400)  # WebP converted: Kling reads JPEG/PNG only
    task = task_for(fake, vid)
    assert fake.state.find_requests("GET", f"/v1/videos/image2video/{task.id}")
    [out] = body["outputs"]
    assert (out["width"], out["height"]) == (1080, 1080)  # the images' shape, pro mode


def test_job_failure_at_the_provider(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.fail_jobs = True
    body = wait_done(api, accepted(api, model="kuaishou/kling-v2.6", prompt="a quiet lake")["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "generation_failed"
    assert reset.state.fail_message in body["error"]["message"]
    assert body["outputs"] == []


def test_content_policy_at_submit(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.blocked_prompts = ["forbidden"]
    before = video_ids(api)
    r = api.post("/v1/videos", json={"model": "kuaishou/kling-v2.6", "prompt": "a forbidden thing"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "content_policy_violation" and "1301" in err["message"]
    assert reset.state.creates[-1].code == 1301 and reset.state.creates[-1].status == 400
    assert video_ids(api) == before


def test_content_policy_after_submit(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.risk_prompts = ["risky"]
    body = wait_done(api, accepted(api, model="kuaishou/kling-v2.6", prompt="something risky")["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "content_policy_violation"
    assert "risk control" in body["error"]["message"]


def test_rate_limit_is_a_429_with_retry_after(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.rate_limit_next, reset.state.retry_after_seconds = 1, 7
    r = api.post("/v1/videos", json={"model": "kuaishou/kling-v2.6", "prompt": "a busy street"})
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert reset.state.creates[-1].code == 1302


def test_exhausted_resource_pack_is_quota_not_rate_limit(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.account_error_next = 1  # HTTP 429 with code 1102
    r = api.post("/v1/videos", json={"model": "kuaishou/kling-v2.6", "prompt": "a busy street"})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "provider_quota_exceeded" and "1102" in err["message"]


def test_auth_errors_are_clear_and_never_500(api: httpx.Client, reset: RunningFake,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV + "API_KEY", f"{AK}:wrong-secret")
    r = api.post("/v1/videos", json={"model": "kuaishou/kling-v2.6", "prompt": "a cat"})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "provider_auth_failed" and "1000" in err["message"]
    assert reset.state.creates[-1].status == 401 and reset.state.creates[-1].code == 1000

    # An access key without its secret: refused before calling Kling, saying what to set.
    monkeypatch.setenv(ENV + "API_KEY", AK)
    calls = len(reset.state.requests)
    r = api.post("/v1/videos", json={"model": "kuaishou/kling-v2.6", "prompt": "a cat"})
    assert r.status_code == 502, r.text
    assert ENV + "SECRET_KEY" in r.json()["error"]["message"]
    assert len(reset.state.requests) == calls

    # ...which the separate secret-key setting completes.
    monkeypatch.setenv(ENV + "SECRET_KEY", SK)
    created = accepted(api, model="kuaishou/kling-v2.6", prompt="a cat")
    assert created["provider"] == "kling"
    assert wait_done(api, created["id"])["status"] == "completed"


def test_cancel_stops_polling(api: httpx.Client, gateway: Gateway, reset: RunningFake) -> None:
    reset.state.render_seconds = 60.0
    vid = accepted(api, model="kuaishou/kling-v2.6", prompt="a long shot")["id"]
    time.sleep(0.3)
    r = api.post(f"/v1/videos/{vid}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    task = task_for(reset, vid)
    wait_idle(gateway, vid)  # a poll in flight at the cancel has landed; no other can start
    polls = len(reset.state.find_requests("GET", f"/v1/videos/text2video/{task.id}"))
    time.sleep(0.8)  # several poll intervals, had polling not stopped
    assert len(reset.state.find_requests("GET", f"/v1/videos/text2video/{task.id}")) == polls
    # Kling has no cancel endpoint: nothing but the create and the polls reached it for this task.
    create = sent_for(reset, vid)
    mine = [q for q in reset.state.requests if task.id in q.path or q is create]
    assert {(q.method, q.path.rsplit("/", 1)[0]) for q in mine} <= {("POST", "/v1/videos"),
                                                                    ("GET", "/v1/videos/text2video")}
    assert api.get(f"/v1/videos/{vid}").json()["status"] == "cancelled"


def test_fallback_to_local_on_503(api: httpx.Client, reset: RunningFake) -> None:
    created, _ = falls_back_to_local(api, reset, "kling", model=FALLBACK_MODEL, prompt="a lighthouse at dusk",
                                     seconds=5, aspect_ratio="1:1")
    first = created["attempts"][0]
    assert first["code"] == "provider_unavailable" and "5001" in first["message"]


def test_output_gone_fails_the_job(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.expire_outputs = True
    body = wait_done(api, accepted(api, model="kuaishou/kling-v2.6", prompt="a dune")["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "output_unavailable"


def test_task_unknown_to_kling_fails_the_job(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.render_seconds = 60.0
    vid = accepted(api, model="kuaishou/kling-v2.6", prompt="a vanishing act")["id"]
    reset.state.tasks.pop(reset.state.by_external.pop(vid))
    body = wait_done(api, vid)
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "provider_job_not_found" and "1203" in body["error"]["message"]


# ---------------------------------------------------------------- JWT


def _decode(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_token_is_a_standard_hs256_jwt() -> None:
    token = kling.make_token(AK, SK, now=1_700_000_000)
    head, payload, sig = token.split(".")
    assert _decode(head) == {"alg": "HS256", "typ": "JWT"}
    assert _decode(payload) == {"iss": AK, "exp": 1_700_001_800, "nbf": 1_699_999_995}
    expected = hmac.new(SK.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)) == expected
    assert "=" not in token


@pytest.mark.parametrize("header,wall,code", [
    ("", 1_700_000_000, 1001),
    ("Basic abc", 1_700_000_000, 1002),
    ("Bearer not.a.jwt", 1_700_000_000, 1002),
    ("Bearer " + kling.make_token("other-ak", SK, now=1_700_000_000), 1_700_000_000, 1002),
    ("Bearer " + kling.make_token(AK, "wrong", now=1_700_000_000), 1_700_000_000, 1000),
    ("Bearer " + kling.make_token(AK, SK, now=1_700_000_000), 1_699_999_000, 1003),
    ("Bearer " + kling.make_token(AK, SK, now=1_700_000_000), 1_700_001_800, 1004),
])
def test_fake_verifies_the_token(header: str, wall: float, code: int) -> None:
    state = fake_kling.FakeKlingState(wall_clock=lambda: wall)
    with pytest.raises(fake_kling.ApiError) as info:
        fake_kling.verify_token(header, state)
    assert info.value.code == code and info.value.status == 401


def test_fake_accepts_a_fresh_token() -> None:
    state = fake_kling.FakeKlingState(wall_clock=lambda: 1_700_000_100)
    claims = fake_kling.verify_token("Bearer " + kling.make_token(AK, SK, now=1_700_000_000), state)
    assert claims["iss"] == AK


def test_credentials_forms() -> None:
    ctx = CallContext(http=None, api_key=f"{AK}:{SK}", base_url=None)
    assert kling.credentials(ctx, env={}) == (AK, SK)
    ctx = CallContext(http=None, api_key=AK, base_url=None)
    assert kling.credentials(ctx, env={ENV + "SECRET_KEY": SK}) == (AK, SK)
    for key in (AK, f"{AK}:", ":" + SK, None):
        with pytest.raises(ProviderError) as info:
            kling.credentials(CallContext(http=None, api_key=key, base_url=None), env={})
        assert info.value.kind == "auth" and "SECRET_KEY" in info.value.message


# ---------------------------------------------------------------- request mapping


def _png(w: int = 400, h: int = 400) -> bytes:
    return image_bytes(w, h, "PNG")


@pytest.mark.parametrize("changes,expected", [
    ({}, {"model_name": "kling-v2-6", "prompt": "a fox in the snow", "duration": "5", "aspect_ratio": "16:9",
          "external_task_id": "video_job1"}),
    ({"duration": 10}, {"duration": "10"}),
    ({"aspect_ratio": "1:1"}, {"aspect_ratio": "1:1"}),
    ({"negative_prompt": "rain"}, {"negative_prompt": "rain"}),
    ({"generate_audio": True}, {"sound": "on", "mode": "pro"}),
    ({"generate_audio": True, "provider_params": {"mode": "std"}}, {"sound": "on", "mode": "std"}),
    ({"generate_audio": False}, {"sound": "off"}),
    ({"resolution": "720p"}, {"mode": "std"}),
    ({"resolution": "1080p"}, {"mode": "pro"}),
    ({"resolution": "1080p", "provider_params": {"mode": "std"}}, {"mode": "std"}),
    ({"provider_params": {"cfg_scale": 0.3, "watermark_info": {"enabled": False}}},
     {"cfg_scale": 0.3, "watermark_info": {"enabled": False}}),
])
def test_text2video_mapping(changes: dict[str, Any], expected: dict[str, Any]) -> None:
    endpoint, body = kling.build_body(request(**changes))
    assert endpoint == "text2video"
    for key, value in expected.items():
        assert body[key] == value, key


def test_sound_only_for_models_that_have_it() -> None:
    assert kling.supports_sound("kling-v2-6") and kling.supports_sound("kling-v3")
    assert not kling.supports_sound("kling-v2-5-turbo") and not kling.supports_sound("kling-v2-1-master")
    _, body = kling.build_body(request(model_slug="kling-v2-5-turbo", generate_audio=False))
    assert "sound" not in body
    with pytest.raises(ProviderError) as info:
        kling.build_body(request(model_slug="kling-v2-5-turbo", generate_audio=True))
    assert info.value.kind == "client" and info.value.param == "generate_audio"


def test_image2video_mapping() -> None:
    png = _png()
    first = ImageInput("first_frame", png, "image/png")
    endpoint, body = kling.build_body(request(images=(first,), prompt=""))
    assert endpoint == "image2video"
    assert body["image"] == base64.b64encode(png).decode() and "image_tail" not in body
    assert "prompt" not in body and "aspect_ratio" not in body
    # A caller's https URL of a JPEG/PNG is passed as is.
    by_url = ImageInput("last_frame", png, "image/png", url="https://img.example.com/end.png")
    _, body = kling.build_body(request(images=(first, by_url)))
    assert body["image_tail"] == "https://img.example.com/end.png"
    assert body["mode"] == "pro"  # end frames are a pro-mode feature...
    _, body = kling.build_body(request(model_slug="kling-v1", images=(first, by_url)))
    assert "mode" not in body  # ...except on kling-v1
    # Only a last frame (tail-only) still goes to image2video.
    endpoint, body = kling.build_body(request(images=(by_url,)))
    assert endpoint == "image2video" and "image" not in body
    # Other formats are converted to PNG (Kling reads JPEG/PNG only), even when a URL exists.
    webp = ImageInput("first_frame", image_bytes(400, 400, "WEBP"), "image/webp", url="https://x.example/a.webp")
    _, body = kling.build_body(request(images=(webp,)))
    assert Image.open(io.BytesIO(base64.b64decode(body["image"]))).format == "PNG"


@pytest.mark.parametrize("changes,param", [
    ({"seed": 1}, "seed"),
    ({"sample_count": 2}, "sample_count"),
    ({"enhance_prompt": True}, "enhance_prompt"),
    ({"person_generation": "allow_adult"}, "person_generation"),
    ({"compression_quality": 80}, "compression_quality"),
    ({"resize_mode": "pad"}, "resize_mode"),
    ({"resolution": "4K"}, "resolution"),
    ({"aspect_ratio": "4:3"}, "aspect_ratio"),
    ({"prompt": "x" * 2501}, "prompt"),
    ({"provider_params": {"external_task_id": "theirs"}}, "provider_params.external_task_id"),
    ({"provider_params": {"image_tail": "https://x.example/a.png"}}, "provider_params.image_tail"),
    ({"provider_params": {"sound": "on"}}, "provider_params.sound"),
    ({"prompt": ""}, "prompt"),
    ({"images": (ImageInput("reference", b"x", "image/png"),)}, "input_references"),
    ({"images": (ImageInput("first_frame", b"not an image", "image/gif"),)}, "input_references"),
])
def test_what_kling_cannot_do_is_a_client_error(changes: dict[str, Any], param: str) -> None:
    with pytest.raises(ProviderError) as info:
        kling.build_body(request(**changes))
    assert info.value.kind == "client" and info.value.param == param


# ---------------------------------------------------------------- status and error mapping


@pytest.mark.parametrize("data,status,code", [
    ({"task_status": "submitted"}, "queued", None),
    ({"task_status": "processing"}, "in_progress", None),
    ({"task_status": "something-new"}, "in_progress", None),
    ({"task_status": "failed", "task_status_msg": "Failure to pass the risk control system"}, "failed",
     "content_policy_violation"),
    ({"task_status": "failed", "task_status_msg": "Internal error"}, "failed", "generation_failed"),
    ({"task_status": "failed"}, "failed", "generation_failed"),
    ({"task_status": "succeed", "task_result": {"videos": []}}, "failed", "no_output"),
])
def test_status_mapping(data: dict[str, Any], status: str, code: str | None) -> None:
    polled = kling.polled_from(data)
    assert (polled.status, polled.error_code) == (status, code)


def test_succeeded_task_outputs() -> None:
    polled = kling.polled_from({"task_status": "succeed", "final_unit_deduction": "1", "task_result": {"videos": [
        {"id": "v1", "url": "https://cdn.example/v1.mp4", "duration": "5.1"}]}})
    assert polled.status == "completed" and polled.progress == 100
    [ref] = polled.outputs
    assert (ref.index, ref.url, ref.handle, ref.duration_seconds) == (0, "https://cdn.example/v1.mp4", "v1", 5.1)
    assert polled.usage["seconds"] == 5.1 and polled.usage["count"] == 1


@pytest.mark.parametrize("status,code,kind,ours", [
    (401, 1000, "auth", "provider_auth_failed"),
    (401, 1001, "auth", "provider_auth_failed"),
    (401, 1002, "auth", "provider_auth_failed"),
    (401, 1003, "auth", "provider_auth_failed"),
    (401, 1004, "auth", "provider_auth_failed"),
    (429, 1100, "quota", "provider_quota_exceeded"),
    (429, 1101, "quota", "provider_quota_exceeded"),
    (429, 1102, "quota", "provider_quota_exceeded"),
    (403, 1103, "auth", "provider_permission_denied"),
    (400, 1200, "client", "invalid_request_parameter"),
    (400, 1201, "client", "invalid_request_parameter"),
    (404, 1202, "client", "invalid_request_parameter"),
    (404, 1203, "not_found", "not_found"),
    (400, 1300, "client", "provider_policy_rejected"),
    (400, 1301, "content_policy", "content_policy_violation"),
    (429, 1302, "rate_limit", "rate_limit_exceeded"),
    (429, 1303, "rate_limit", "rate_limit_exceeded"),
    (429, 1304, "auth", "provider_ip_not_allowed"),
    (500, 5000, "unavailable", "provider_unavailable"),
    (503, 5001, "unavailable", "provider_unavailable"),
    (504, 5002, "unavailable", "provider_timeout"),
    (500, 9999, "unavailable", "provider_unavailable"),  # an unknown code: by HTTP status
    (429, 9999, "rate_limit", "rate_limit_exceeded"),
    (200, 1301, "content_policy", "content_policy_violation"),  # an error sent with HTTP 200
])
def test_error_mapping(status: int, code: int, kind: str, ours: str) -> None:
    e = kling.error_for(status, {"code": code, "message": "boom", "request_id": "r"}, retry_after=3.0)
    assert (e.kind, e.code) == (kind, ours)
    assert f"{code}" in e.message and "boom" in e.message
    assert e.retry_after == (3.0 if kind == "rate_limit" else None)


def test_error_without_a_kling_body() -> None:
    assert kling.error_for(502, None).kind == "unavailable"
    assert kling.error_for(200, None).kind == "upstream"
    assert kling.error_for(404, "not json").kind == "not_found"


# ---------------------------------------------------------------- the adapter against the fake


@pytest.fixture()
def solo() -> Iterator[RunningFake]:
    with RunningFake("kling", render_seconds=0.3) as running:
        yield running


def _run(fake: RunningFake, coro_fn: Any, api_key: str = f"{AK}:{SK}") -> Any:
    async def main() -> Any:
        async with httpx.AsyncClient(timeout=10) as http:
            return await coro_fn(CallContext(http=http, api_key=api_key, base_url=fake.url))
    return asyncio.run(main())


def test_resubmit_finds_the_first_task(solo: RunningFake) -> None:
    """A create retried with the same job id (external_task_id) gets the first task, not a second one."""
    async def twice(ctx: CallContext) -> tuple[Any, Any]:
        return await kling.adapter.submit(request(), ctx), await kling.adapter.submit(request(), ctx)

    a, b = _run(solo, twice)
    assert a.native_id == b.native_id and a.native_id.startswith("text2video:")
    assert len(solo.state.tasks) == 1
    assert [r.code for r in solo.state.creates] == [0, 1201]
    assert solo.state.find_requests("GET", "/v1/videos/text2video/video_job1")


def test_poll_to_completion_and_download(solo: RunningFake) -> None:
    async def flow(ctx: CallContext) -> tuple[list[str], bytes]:
        sub = await kling.adapter.submit(request(resolution="1080p", aspect_ratio="1:1"), ctx)
        seen = []
        while True:
            polled = await kling.adapter.poll(sub.native_id, ctx)
            seen.append(polled.status)
            if polled.status == "completed":
                break
            await asyncio.sleep(0.05)
        data = b"".join([c async for c in kling.adapter.open_output(sub.native_id, polled.outputs[0], ctx)])
        assert await kling.adapter.cancel(sub.native_id, ctx) is False
        return seen, data

    seen, data = _run(solo, flow)
    assert seen[0] == "queued" and "in_progress" in seen and seen[-1] == "completed"
    assert data == render_media("video", "1080x1080", "5")  # pro mode: 1080p


def test_poll_errors(solo: RunningFake) -> None:
    async def poll(ctx: CallContext, native_id: str) -> Any:
        return await kling.adapter.poll(native_id, ctx)

    for native_id in ("text2video:123", "nonsense"):
        with pytest.raises(ProviderError) as info:
            _run(solo, lambda ctx, n=native_id: poll(ctx, n))
        assert info.value.kind == "not_found"
    solo.state.rate_limit_next = 1
    with pytest.raises(ProviderError) as info:
        _run(solo, lambda ctx: poll(ctx, "text2video:123"))
    assert info.value.kind == "rate_limit"


def test_unreachable_kling_is_unavailable() -> None:
    async def main() -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            ctx = CallContext(http=http, api_key=f"{AK}:{SK}", base_url="http://127.0.0.1:9")
            await kling.adapter.submit(request(), ctx)

    with pytest.raises(ProviderError) as info:
        asyncio.run(main())
    assert info.value.kind == "unavailable"


# ---------------------------------------------------------------- the fake itself


def test_fake_is_registered_and_validates(solo: RunningFake) -> None:
    assert FAKES["kling"] is fake_kling.create_app
    auth = {"Authorization": "Bearer " + kling.make_token(AK, SK)}
    with httpx.Client(base_url=solo.url, headers=auth, timeout=10) as c:
        def err(path: str, body: Any) -> tuple[int, int]:
            r = c.post(path, json=body)
            return r.status_code, r.json()["code"]

        t2v = "/v1/videos/text2video"
        assert err(t2v, {"prompt": "x", "duration": 5}) == (400, 1201)  # an int, not "5"
        assert err(t2v, {"prompt": "x", "aspect_ratio": "4:3"}) == (400, 1201)
        assert err(t2v, {"prompt": "x", "style": "noir"}) == (400, 1201)
        assert err(t2v, {"prompt": "x", "model_name": "kling-v9"}) == (404, 1203)
        assert err(t2v, {"prompt": "x", "model_name": "kling-v2-5-turbo", "sound": "on", "mode": "pro"}) == (400, 1201)
        assert err(t2v, {"prompt": "x", "model_name": "kling-v2-6", "sound": "on"}) == (400, 1201)  # std
        assert err(t2v, {"duration": "5"}) == (400, 1201)
        i2v = "/v1/videos/image2video"
        small = base64.b64encode(image_bytes(200, 200)).decode()
        assert err(i2v, {"prompt": "x"}) == (400, 1201)
        assert err(i2v, {"image": small}) == (400, 1201)  # < 300 px
        assert err(i2v, {"image": "data:image/png;base64," + base64.b64encode(_png()).decode()}) == (400, 1201)
        assert err(i2v, {"image": "https://x.example/a.png", "aspect_ratio": "16:9"}) == (400, 1201)
        tail = {"image": "https://x.example/a.png", "image_tail": "https://x.example/b.png", "mode": "pro"}
        assert err(i2v, {**tail, "camera_control": {"type": "down_back"}}) == (400, 1201)
        assert err(i2v, {**tail, "mode": "std", "model_name": "kling-v2-6"}) == (400, 1201)
        assert err(i2v, {**tail, "model_name": "kling-v2-1-master"}) == (400, 1201)
        r = c.post(t2v, json={"prompt": "a fox", "external_task_id": "mine"})
        assert r.status_code == 200 and r.json()["code"] == 0 and r.json()["message"] == "SUCCEED"
        task_id = r.json()["data"]["task_id"]
        assert r.json()["data"]["task_status"] == "submitted"
        by_ext = c.get(f"{t2v}/mine").json()["data"]
        assert by_ext["task_id"] == task_id and by_ext["task_info"]["external_task_id"] == "mine"
        assert c.get(f"{i2v}/{task_id}").json()["code"] == 1203  # the other endpoint does not know it
        listed = c.get(t2v, params={"pageNum": 1, "pageSize": 10}).json()["data"]
        assert [t["task_id"] for t in listed] == [task_id]
        assert c.get(f"{t2v}/{task_id}", headers={"Authorization": ""}).json()["code"] == 1001
