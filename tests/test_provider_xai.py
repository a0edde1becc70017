"""The xAI (Grok Imagine) adapter against the xAI fake, through a real gateway (SQLite and PostgreSQL),
plus unit tests of its request mapping and status/error tables, and of the fake itself."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from aistats_gateway.providers.base import ImageInput, ProviderError, VideoRequest
from aistats_gateway.providers.fakes.openai import render_media
from aistats_gateway.providers.fakes.testing import RunningFake
from aistats_gateway.providers.xai import video as xai
from tests.support.providers import (
    ProviderKit,
    accepted,
    data_url,
    falls_back_to_local,
    image_bytes,
    provider_fixtures,
    wait_for_status,
)

KEY = "xai-test"
MODEL = "x-ai/grok-imagine-video"
FALLBACK_MODEL = "x-ai/test-grok-fallback"  # x-ai, then local
RENDER_SECONDS = 0.5
PARAMS = {"video.generation": {
    "duration": {"type": "integer", "minimum": 1, "maximum": 15, "default": 2, "aliases": ["seconds"]},
    "resolution": {"values": ["480p", "720p"], "default": "480p", "aliases": ["size"]},
    "aspect_ratio": {"values": ["16:9"], "default": "16:9"},
}}
OVERLAY = {"models": [{
    "model_id": FALLBACK_MODEL, "name": "Grok Imagine with a local fallback", "organisation": "x-ai",
    "status": "active", "input_types": ["text"], "output_types": ["video"],
    "providers": [
        {"provider": p, "provider_model_slug": slug, "endpoints": ["video.generation"], "input_modalities": ["text"],
         "output_modalities": ["video"], "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": "0"}],
         "parameters": PARAMS}
        for p, slug in (("x-ai", "grok-imagine-video"), ("local", "procedural-video"))
    ],
}]}


KIT = ProviderKit("x-ai", api_key=KEY, fake_kwargs={"render_seconds": RENDER_SECONDS}, overlay=OVERLAY, clear=True,
                  base_url=lambda fake: fake.url + "/v1")  # a trailing /v1 is tolerated
fake, provider_env, gateway, reset_fake = provider_fixtures(KIT)


# ---------------------------------------------------------------- helpers

wait_done = wait_for_status


def png(width: int = 48, height: int = 48) -> str:
    return data_url(image_bytes(width, height, colour=(20, 90, 200)))


def sent_for(fake: RunningFake, video_id: str) -> Any:
    [rec] = [r for r in fake.state.creates if r.headers.get("idempotency-key") == video_id]
    return rec


def job_for(fake: RunningFake, video_id: str) -> Any:
    [job] = [j for j in fake.state.jobs.values() if j.idempotency_key == video_id]
    return job


# ---------------------------------------------------------------- through the gateway


def test_text_to_video_completes_and_downloads(api: httpx.Client, fake: RunningFake) -> None:
    prompt = "a neon hovercar drifting through a rainy alley"
    created = accepted(api, model=MODEL, prompt=prompt, duration=3, resolution="720p", aspect_ratio="9:16")
    assert created["provider"] == "x-ai"
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "completed", body

    rec = sent_for(fake, created["id"])
    assert rec.path == "/v1/videos/generations" and rec.status == 200
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    assert rec.body == {"model": "grok-imagine-video", "prompt": prompt, "duration": 3, "aspect_ratio": "9:16",
                        "resolution": "720p"}
    job = job_for(fake, created["id"])
    assert fake.state.find_requests("GET", f"/v1/videos/{job.id}"), "the gateway polled the request id"
    [link] = fake.state.find_requests("GET", f"/xai-vidgen-bucket/xai-video-{job.file_id}.mp4")
    assert "authorization" not in link.headers, "the temporary link is fetched without the API key"

    r = api.get(f"/v1/videos/{created['id']}/content")
    assert r.status_code == 200 and r.content == render_media("video", "720x1280", "3")
    [out] = body["outputs"]
    assert (out["width"], out["height"]) == (720, 1280)
    assert out["duration_seconds"] == pytest.approx(3.0, abs=0.2)


def test_first_frame_and_reference_images(api: httpx.Client, fake: RunningFake) -> None:
    image = png()
    created = accepted(api, model=MODEL, prompt="animate it", duration=1,
                       input_references=[{"type": "image_url", "role": "first_frame", "image_url": {"url": image}}])
    assert sent_for(fake, created["id"]).body["image"] == {"url": image}
    assert wait_done(api, created["id"])[0]["status"] == "completed"
    refs = [{"type": "image_url", "role": "reference", "image_url": {"url": png(32, 32)}} for _ in range(2)]
    created = accepted(api, model=MODEL, prompt="a scene with these two", duration=1, input_references=refs)
    body = sent_for(fake, created["id"]).body
    assert body["reference_images"] == [{"url": r["image_url"]["url"]} for r in refs] and "image" not in body
    assert wait_done(api, created["id"])[0]["status"] == "completed"


def test_source_images_are_refused_clearly(api: httpx.Client, fake: RunningFake) -> None:
    r = api.post("/v1/videos", json={"model": MODEL, "prompt": "edit", "duration": 1, "input_references": [
        {"type": "image_url", "role": "source", "image_url": {"url": png()}}]})
    assert r.status_code == 400, r.text
    assert "source" in r.json()["error"]["message"]
    assert not fake.state.creates


def test_failed_generation_reports_xais_code(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_jobs = True
    created = accepted(api, model=MODEL, prompt="this one fails", duration=1)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "failed"
    assert body["error"] == {"code": "internal_error", "message": "Video generation failed due to an internal error."}


def test_moderated_output_is_a_content_policy_failure(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.moderation_fail_prompts = ["forbidden"]
    created = accepted(api, model=MODEL, prompt="something forbidden", duration=1)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "content_policy_violation"


def test_expired_request(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.expire_requests = True
    created = accepted(api, model=MODEL, prompt="too slow", duration=1)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "expired" and body["error"]["code"] == "provider_request_expired"


def test_rate_limit_is_429_with_retry_after(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.rate_limit_next, fake.state.retry_after_seconds = 1, 4
    r = api.post("/v1/videos", json={"model": MODEL, "prompt": "too fast", "duration": 1})
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "4"


def test_wrong_key_400_is_an_auth_error(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.api_key = "xai-rotated"
    r = api.post("/v1/videos", json={"model": MODEL, "prompt": "wrong key", "duration": 1})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "provider_auth_failed" and "Incorrect API key" in err["message"]
    [rec] = fake.state.creates
    assert rec.status == 400, "xAI answers a bad key with HTTP 400"


def test_no_credits_is_a_quota_error(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.no_credits = True
    r = api.post("/v1/videos", json={"model": MODEL, "prompt": "no credits", "duration": 1})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "provider_quota_exceeded"


def test_cancel_only_stops_polling(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.render_seconds = 30.0
    created = accepted(api, model=MODEL, prompt="cancel me", duration=1)
    r = api.post(f"/v1/videos/{created['id']}/cancel")
    assert r.status_code == 200, r.text
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "cancelled"
    assert all(r.method in ("POST", "GET") for r in fake.state.requests), "xAI has no cancel endpoint"


def test_503_falls_back_to_local(api: httpx.Client, fake: RunningFake) -> None:
    falls_back_to_local(api, fake, "x-ai", model=FALLBACK_MODEL, prompt="xai is down", duration=1)


# ---------------------------------------------------------------- the fake on its own


def test_fake_idempotency_and_validation(fake: RunningFake) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Idempotency-Key": "k1"}
    body = {"model": "grok-imagine-video", "prompt": "x", "duration": 2}
    first = httpx.post(f"{fake.url}/v1/videos/generations", json=body, headers=headers).json()
    again = httpx.post(f"{fake.url}/v1/videos/generations", json=body, headers=headers).json()
    assert first == again and set(first) == {"request_id"}
    for bad, status in (({**body, "duration": 16}, 400), ({**body, "resolution": "1080p"}, 400),
                        ({**body, "aspect_ratio": "21:9"}, 400), ({**body, "duration": "2"}, 422),
                        ({**body, "seconds": 2}, 422), ({**body, "image": {"url": "http://x/a.png"}}, 400),
                        ({**body, "model": "grok-imagine-video-1.5"}, 400)):
        r = httpx.post(f"{fake.url}/v1/videos/generations", json=bad, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == status, (bad, r.text)
        assert set(r.json()) == {"code", "error"}
    r = httpx.post(f"{fake.url}/v1/videos/generations", json=body)
    assert r.status_code == 401
    r = httpx.get(f"{fake.url}/v1/videos/nope", headers=headers)
    assert r.status_code == 404


def test_fake_status_progression() -> None:
    from aistats_gateway.providers.fakes.xai import create_app

    now = [0.0]
    with RunningFake(create_app(clock=lambda: now[0], render_seconds=10.0), prefix="") as f:
        headers = {"Authorization": f"Bearer {KEY}"}
        rid = httpx.post(f"{f.url}/v1/videos/generations", headers=headers,
                         json={"prompt": "x", "duration": 1, "aspect_ratio": "1:1"}).json()["request_id"]
        pending = httpx.get(f"{f.url}/v1/videos/{rid}", headers=headers).json()
        assert pending == {"status": "pending", "model": "grok-imagine-video", "progress": 0}
        now[0] = 5.0
        assert httpx.get(f"{f.url}/v1/videos/{rid}", headers=headers).json()["progress"] == 50
        now[0] = 10.0
        done = httpx.get(f"{f.url}/v1/videos/{rid}", headers=headers).json()
        assert done["status"] == "done" and done["video"]["respect_moderation"] is True
        assert done["video"]["duration"] == 1 and done["usage"]["cost_in_usd_ticks"] == 500_000_000
        assert httpx.get(done["video"]["url"]).content == render_media("video", "480x480", "1")
        now[0] = 10.0 + 3601
        assert httpx.get(done["video"]["url"]).status_code == 404, "links are temporary"


# ---------------------------------------------------------------- unit: mapping tables


def request(**kw: Any) -> VideoRequest:
    base: dict[str, Any] = {"job_id": "video_1", "model_slug": "grok-imagine-video", "prompt": "p", "duration": 6,
                            "width": 854, "height": 480, "resolution": "480p", "aspect_ratio": "16:9", "size": None}
    return VideoRequest(**{**base, **kw})


def image(role: str, url: str | None = None) -> ImageInput:
    return ImageInput(role=role, content=b"img", mime_type="image/jpeg", url=url)


def test_request_mapping_every_field() -> None:
    body = xai.build_body(request(images=(image("first_frame", "https://img.example/a.jpg"),),
                                  provider_params={"user": "u-1"}))
    assert body == {"model": "grok-imagine-video", "prompt": "p", "duration": 6, "aspect_ratio": "16:9",
                    "resolution": "480p", "image": {"url": "https://img.example/a.jpg"}, "user": "u-1"}
    body = xai.build_body(request(images=(image("reference"), image("reference", "https://r/2.png"))))
    assert body["reference_images"] == [{"url": "data:image/jpeg;base64," + base64.b64encode(b"img").decode()},
                                        {"url": "https://r/2.png"}]


@pytest.mark.parametrize("aspect,width,height,expected", [
    ("16:9", None, None, "16:9"), ("2:3", None, None, "2:3"), ("21:9", None, None, "16:9"),
    (None, 1080, 1920, "9:16"), (None, 1000, 1000, "1:1"), (None, 1500, 1000, "3:2"), (None, None, None, "16:9"),
])
def test_aspect_ratio_mapping(aspect: str | None, width: int | None, height: int | None, expected: str) -> None:
    assert xai.pick_aspect_ratio(aspect, width, height) == expected


@pytest.mark.parametrize("model,resolution,width,height,expected", [
    ("grok-imagine-video", "720p", None, None, "720p"), ("grok-imagine-video", "480P", None, None, "480p"),
    ("grok-imagine-video", None, 854, 480, "480p"), ("grok-imagine-video", None, 1280, 720, "720p"),
    ("grok-imagine-video-1.5", "1080p", None, None, "1080p"), ("grok-imagine-video", None, None, None, None),
])
def test_resolution_mapping(model: str, resolution: str | None, width: int | None, height: int | None,
                            expected: str | None) -> None:
    assert xai.pick_resolution(model, resolution, width, height) == expected


@pytest.mark.parametrize("kw,message", [
    ({"resolution": "1080p"}, "480p, 720p"),
    ({"images": (image("last_frame"),)}, "last_frame"),
    ({"images": (image("first_frame"), image("reference"))}, "not both"),
    ({"images": tuple(image("reference") for _ in range(8))}, "at most 7"),
])
def test_inputs_xai_cannot_take(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ProviderError) as e:
        xai.build_body(request(**kw))
    assert e.value.kind == "client" and message in e.value.message


@pytest.mark.parametrize("body,status,progress,code", [
    ({"request_id": "r"}, "in_progress", None, None),
    ({"status": "queued"}, "queued", 0, None),
    ({"status": "pending", "progress": 37}, "in_progress", 37, None),
    ({"status": "processing"}, "in_progress", None, None),
    ({"status": "done", "video": {"url": "https://vidgen.x.ai/a.mp4", "duration": 6, "respect_moderation": True}},
     "completed", 100, None),
    ({"status": "done", "video": {"url": "", "duration": 0, "respect_moderation": False}}, "failed", None,
     "content_policy_violation"),
    ({"status": "done", "video": {"duration": 6}}, "failed", None, "no_output"),
    ({"status": "failed", "error": {"code": "internal_error", "message": "boom"}}, "failed", None, "internal_error"),
    ({"status": "failed", "error": {"code": "input_moderation", "message": "blocked"}}, "failed", None,
     "content_policy_violation"),
    ({"status": "expired"}, "expired", None, "provider_request_expired"),
])
def test_status_mapping(body: dict[str, Any], status: str, progress: int | None, code: str | None) -> None:
    polled = xai.polled_from_status(body)
    assert (polled.status, polled.progress, polled.error_code) == (status, progress, code)
    if status == "completed":
        assert polled.outputs[0].url == "https://vidgen.x.ai/a.mp4" and polled.usage["seconds"] == 6.0


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers or {})


@pytest.mark.parametrize("status,body,kind,code", [
    (400, {"code": "Client specified an invalid argument", "error": "Incorrect API key provided: xa***yz."}, "auth",
     "provider_auth_failed"),
    (401, {"code": "Unauthenticated", "error": "Missing Authorization header"}, "auth", "provider_auth_failed"),
    (403, {"code": "The caller does not have permission to execute the specified operation",
           "error": "Your team t has either used all available credits or reached its monthly spending limit."},
     "quota", "provider_quota_exceeded"),
    (400, {"code": "Client specified an invalid argument", "error": "duration must be between 1 and 15"}, "client",
     "provider_rejected_request"),
    (400, {"error": {"message": "Prompt rejected by content moderation", "code": "bad_request"}}, "content_policy",
     "content_policy_violation"),
    (404, {"code": "Some requested entity was not found", "error": "no such request"}, "not_found", "not_found"),
    (429, {"code": "Some resource has been exhausted", "error": "slow down"}, "rate_limit", "rate_limit_exceeded"),
    (500, {"code": "Internal error", "error": "oops"}, "unavailable", "provider_unavailable"),
])
def test_error_mapping(status: int, body: Any, kind: str, code: str) -> None:
    e = xai.error_from_response(response(status, body))
    assert (e.kind, e.code, e.status) == (kind, code, status)
