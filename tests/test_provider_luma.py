"""The Luma Dream Machine adapter and its fake: request/status/error mapping, and whole jobs through
a real gateway (SQLite and PostgreSQL) against the fake Luma API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aistats_gateway.providers import luma
from aistats_gateway.providers.base import CallContext, ImageInput, ProviderError, VideoRequest
from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes import luma as fake_luma
from aistats_gateway.providers.fakes.openai import render_media
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.providers import (
    ProviderKit,
    accepted,
    falls_back_to_local,
    final_status,
    image_bytes,
    provider_fixtures,
    video_ids,
    video_request,
)

KEY = "luma-test"
ENV = "AISTATS_PROVIDER_LUMA_"
GEN_PATH = "/dream-machine/v1/generations"
FALLBACK_MODEL = "luma/test-ray-fallback"  # luma, then local
RENDER_SECONDS = 0.5
ALPHA = {"include_alpha": True}  # the shipped Luma offers are alpha


def _offer(provider: str, slug: str) -> dict[str, Any]:
    return {"provider": provider, "provider_model_slug": slug, "endpoints": ["video.generation"],
            "input_modalities": ["text"], "output_modalities": ["video"],
            "parameters": {"video.generation": {
                "duration": {"values": [5, 9], "default": 5, "aliases": ["seconds"]},
                "resolution": {"values": ["480p", "720p"], "default": "720p", "aliases": ["size"]},
                "aspect_ratio": {"values": ["16:9", "1:1"], "default": "16:9"}}}}


OVERLAY = {"models": [{
    "model_id": FALLBACK_MODEL, "name": "Luma test (falls back to local)", "organisation": "luma",
    "status": "active", "input_types": ["text"], "output_types": ["video"],
    "providers": [_offer("luma", "ray-flash-2"), _offer("local", "procedural-video")],
}]}


KIT = ProviderKit("luma", api_key=KEY, fake_kwargs={"render_seconds": RENDER_SECONDS}, overlay=OVERLAY)
fake, provider_env, gateway, reset_fake = provider_fixtures(KIT)


@pytest.fixture()
def reset(fake: RunningFake) -> RunningFake:
    """The fake, for a test that changes its knobs (``reset_fake`` restores them afterwards)."""
    return fake


# ---------------------------------------------------------------- helpers

wait_done = final_status


def last_create(fake: RunningFake) -> fake_luma.RecordedRequest:
    return fake.state.creates[-1]


def generation_of(fake: RunningFake, rec: fake_luma.RecordedRequest) -> fake_luma.Generation:
    [gen] = [g for g in fake.state.generations.values() if g.request is rec.body]
    return gen


def request(**kw: Any) -> VideoRequest:
    return video_request(**{"model_slug": "ray-2", **kw})


# ---------------------------------------------------------------- through the gateway


def test_text_to_video_end_to_end(api: httpx.Client, reset: RunningFake) -> None:
    fake = reset
    created = accepted(api, model="luma/ray-2", prompt="a paper boat in the rain", seconds=5, resolution="720p",
                       aspect_ratio="21:9", provider_params={"loop": True}, provider=ALPHA)
    vid = created["id"]
    assert created["provider"] == "luma" and created["status"] == "queued"
    sent = last_create(fake)
    body = wait_done(api, vid)
    assert body["status"] == "completed", body

    assert sent.path == GEN_PATH and sent.status == 201
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"].startswith("application/json")
    assert sent.body == {"model": "ray-2", "prompt": "a paper boat in the rain", "aspect_ratio": "21:9",
                         "resolution": "720p", "duration": "5s", "loop": True}
    gen = generation_of(fake, sent)
    polls = fake.state.find_requests("GET", f"{GEN_PATH}/{gen.id}")
    assert polls and all(p.status == 200 for p in polls)
    assert len(fake.state.find_requests("GET", f"/luma-cdn/{gen.id}/video.mp4")) == 1

    expected = render_media("video", "1680x720", "5")
    r = api.get(f"/v1/videos/{vid}/content")
    assert r.status_code == 200 and r.content == expected
    [out] = body["outputs"]
    assert (out["width"], out["height"]) == (1680, 720)
    assert out["duration_seconds"] == pytest.approx(5.0, abs=0.2)
    assert out["sha256"] == hashlib.sha256(expected).hexdigest()


def test_size_maps_to_resolution_and_aspect(api: httpx.Client, reset: RunningFake) -> None:
    created = accepted(api, model="luma/ray-flash-2", prompt="waves on a beach", seconds=9, size="960x540",
                       provider=ALPHA)
    sent = last_create(reset)
    assert sent.body == {"model": "ray-flash-2", "prompt": "waves on a beach", "aspect_ratio": "16:9",
                         "resolution": "540p", "duration": "9s"}
    body = wait_done(api, created["id"])
    assert body["status"] == "completed", body
    [out] = body["outputs"]
    assert (out["width"], out["height"], out["duration_seconds"]) == (960, 540, pytest.approx(9.0, abs=0.2))


def test_inline_keyframe_image_is_refused(api: httpx.Client, reset: RunningFake) -> None:
    before, creates = video_ids(api), len(reset.state.creates)
    url = "data:image/png;base64," + base64.b64encode(image_bytes(64, 64)).decode()
    r = api.post("/v1/videos", json={"model": "luma/ray-2", "prompt": "a door opens", "provider": ALPHA,
                                     "input_references": [{"type": "image_url", "role": "first_frame",
                                                           "image_url": {"url": url}}]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "image_url_required" and "https" in err["message"]
    assert len(reset.state.creates) == creates and video_ids(api) == before


def test_job_failure_at_the_provider(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.fail_jobs = True
    body = wait_done(api, accepted(api, model="luma/ray-2", prompt="a quiet lake", provider=ALPHA)["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "generation_failed" and "Job failed" in body["error"]["message"]


def test_moderation_after_submit(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.moderation_block_prompts = ["forbidden"]
    body = wait_done(api, accepted(api, model="luma/ray-2", prompt="a forbidden scene", provider=ALPHA)["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "content_policy_violation"
    assert "moderation" in body["error"]["message"]


def test_rate_limit_is_a_429_with_retry_after(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.rate_limit_next, reset.state.retry_after_seconds = 1, 4
    r = api.post("/v1/videos", json={"model": "luma/ray-2", "prompt": "a busy street", "provider": ALPHA})
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "4"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_auth_and_credit_errors_are_clear(api: httpx.Client, reset: RunningFake,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV + "API_KEY", "luma-wrong")
    r = api.post("/v1/videos", json={"model": "luma/ray-2", "prompt": "a cat", "provider": ALPHA})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "provider_auth_failed" and "Invalid API key" in err["message"]
    assert last_create(reset).status == 401
    monkeypatch.setenv(ENV + "API_KEY", KEY)
    reset.state.no_credits = True
    r = api.post("/v1/videos", json={"model": "luma/ray-2", "prompt": "a cat", "provider": ALPHA})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "provider_quota_exceeded"
    assert last_create(reset).status == 402


def test_cancel_deletes_the_generation(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.render_seconds = 60.0
    vid = accepted(api, model="luma/ray-2", prompt="a long shot", provider=ALPHA)["id"]
    gen = generation_of(reset, last_create(reset))
    time.sleep(0.2)
    r = api.post(f"/v1/videos/{vid}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    [deleted] = reset.state.find_requests("DELETE", f"{GEN_PATH}/{gen.id}")
    assert deleted.status == 204 and deleted.headers["authorization"] == f"Bearer {KEY}"
    assert gen.id in reset.state.deleted and gen.id not in reset.state.generations
    time.sleep(0.5)
    assert api.get(f"/v1/videos/{vid}").json()["status"] == "cancelled"


def test_fallback_to_local_on_503(api: httpx.Client, reset: RunningFake) -> None:
    created, _ = falls_back_to_local(api, reset, "luma", model=FALLBACK_MODEL, prompt="a lighthouse at dusk",
                                     seconds=5, resolution="480p", aspect_ratio="1:1")
    assert created["attempts"][0]["code"] == "provider_unavailable"


def test_output_gone_fails_the_job(api: httpx.Client, reset: RunningFake) -> None:
    reset.state.expire_outputs = True
    body = wait_done(api, accepted(api, model="luma/ray-2", prompt="a dune at noon", provider=ALPHA)["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "output_unavailable"


# ---------------------------------------------------------------- request mapping


@pytest.mark.parametrize("changes,expected", [
    ({}, {"model": "ray-2", "prompt": "a koi pond at night", "aspect_ratio": "16:9", "resolution": "720p",
          "duration": "5s"}),
    ({"duration": 9}, {"duration": "9s"}),
    ({"resolution": "480p", "width": 854, "height": 480}, {"resolution": "540p"}),
    ({"resolution": "720p"}, {"resolution": "720p"}),
    ({"resolution": "1080p", "width": 1920, "height": 1080}, {"resolution": "1080p"}),
    ({"resolution": "4K", "width": 3840, "height": 2160}, {"resolution": "4k"}),
    ({"resolution": None, "aspect_ratio": None, "width": 1920, "height": 1080},
     {"resolution": "1080p", "aspect_ratio": "16:9"}),
    ({"resolution": None, "aspect_ratio": None, "width": 720, "height": 960},
     {"resolution": "720p", "aspect_ratio": "3:4"}),
    ({"resolution": "2K", "width": 2048, "height": 1152}, {"resolution": "4k"}),
    ({"aspect_ratio": "9:21"}, {"aspect_ratio": "9:21"}),
    ({"provider_params": {"loop": True}}, {"loop": True}),
])
def test_mapping(changes: dict[str, Any], expected: dict[str, Any]) -> None:
    body = luma.build_body(request(**changes))
    for key, value in expected.items():
        assert body[key] == value, key
    assert "keyframes" not in body


def test_keyframes_from_first_and_last_frame() -> None:
    first = ImageInput("first_frame", b"...", "image/png", url="https://img.example.com/a.png")
    last = ImageInput("last_frame", b"...", "image/jpeg", url="https://img.example.com/b.jpg")
    body = luma.build_body(request(images=(first, last)))
    assert body["keyframes"] == {"frame0": {"type": "image", "url": "https://img.example.com/a.png"},
                                 "frame1": {"type": "image", "url": "https://img.example.com/b.jpg"}}
    body = luma.build_body(request(images=(last,), prompt=""))
    assert body["keyframes"] == {"frame1": {"type": "image", "url": "https://img.example.com/b.jpg"}}
    assert "prompt" not in body


@pytest.mark.parametrize("changes,param,code", [
    ({"images": (ImageInput("first_frame", b"x", "image/png"),)}, "input_references", "image_url_required"),
    ({"images": (ImageInput("first_frame", b"x", "image/png", url="http://plain.example/a.png"),)},
     "input_references", "image_url_required"),
    ({"images": (ImageInput("reference", b"x", "image/png", url="https://x.example/a.png"),)},
     "input_references", "unsupported_parameter"),
    ({"seed": 3}, "seed", "unsupported_parameter"),
    ({"sample_count": 2}, "sample_count", "unsupported_parameter"),
    ({"negative_prompt": "rain"}, "negative_prompt", "unsupported_parameter"),
    ({"generate_audio": True}, "generate_audio", "unsupported_parameter"),
    ({"compression_quality": 50}, "compression_quality", "unsupported_parameter"),
    ({"aspect_ratio": "5:4"}, "aspect_ratio", "unsupported_parameter"),
    ({"prompt": "hi"}, "prompt", "unsupported_parameter"),
    ({"provider_params": {"keyframes": {}}}, "provider_params.keyframes", "unsupported_parameter"),
    ({"provider_params": {"generation_type": "image"}}, "provider_params.generation_type", "unsupported_parameter"),
    ({"prompt": ""}, "prompt", "unsupported_parameter"),
])
def test_what_luma_cannot_do_is_a_client_error(changes: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(ProviderError) as info:
        luma.build_body(request(**changes))
    assert (info.value.kind, info.value.param, info.value.code) == ("client", param, code)


def test_false_and_absent_options_are_fine() -> None:
    body = luma.build_body(request(generate_audio=False, enhance_prompt=False))
    assert "generate_audio" not in body and "enhance_prompt" not in body


# ---------------------------------------------------------------- status and error mapping


@pytest.mark.parametrize("gen,status,code", [
    ({"state": "queued"}, "queued", None),
    ({"state": "dreaming"}, "in_progress", None),
    ({"state": "brand-new"}, "in_progress", None),
    ({"state": "failed", "failure_reason": "Advanced prompt moderation failed"}, "failed", "content_policy_violation"),
    ({"state": "failed", "failure_reason": "Contains blacklisted words"}, "failed", "content_policy_violation"),
    ({"state": "failed", "failure_reason": "Frame moderation failed"}, "failed", "content_policy_violation"),
    ({"state": "failed", "failure_reason": "Failed to read user input frames"}, "failed", "generation_failed"),
    ({"state": "failed"}, "failed", "generation_failed"),
    ({"state": "completed", "assets": {"video": None}}, "failed", "no_output"),
])
def test_status_mapping(gen: dict[str, Any], status: str, code: str | None) -> None:
    polled = luma.polled_from(gen)
    assert (polled.status, polled.error_code) == (status, code)


def test_completed_generation_outputs() -> None:
    polled = luma.polled_from({"id": "g1", "state": "completed", "request": {"duration": "9s"},
                               "assets": {"video": "https://cdn.example/g1.mp4",
                                          "image": "https://cdn.example/g1.jpg"}})
    assert polled.status == "completed" and polled.progress == 100
    [ref] = polled.outputs
    assert (ref.url, ref.handle, ref.duration_seconds) == ("https://cdn.example/g1.mp4", "g1", 9.0)
    assert polled.usage == {"seconds": 9.0, "count": 1}


@pytest.mark.parametrize("status,body,kind,code", [
    (400, {"detail": "Prompt is required"}, "client", "provider_rejected_request"),
    (400, {"detail": "Loop is not supported for end frame"}, "client", "provider_rejected_request"),
    (400, {"detail": "Insufficient credits"}, "quota", "provider_quota_exceeded"),
    (400, {"detail": "Prompt moderation failed"}, "content_policy", "content_policy_violation"),
    (401, {"detail": "Invalid API key"}, "auth", "provider_auth_failed"),
    (403, {"detail": "Forbidden"}, "auth", "provider_auth_failed"),
    (402, {"detail": "Insufficient credits"}, "quota", "provider_quota_exceeded"),
    (404, {"detail": "Generation not found"}, "not_found", "not_found"),
    (422, {"detail": [{"type": "literal_error", "loc": ["body", "resolution"], "msg": "Input should be '540p'"}]},
     "client", "invalid_request_parameter"),
    (429, {"detail": "Too many requests"}, "rate_limit", "rate_limit_exceeded"),
    (500, {"detail": "Internal server error"}, "unavailable", "provider_unavailable"),
    (503, None, "unavailable", "provider_unavailable"),
])
def test_error_mapping(status: int, body: Any, kind: str, code: str) -> None:
    e = luma.error_for(status, body, retry_after=2.0)
    assert (e.kind, e.code, e.status) == (kind, code, status)
    assert e.message.startswith("Luma: ")
    if kind == "rate_limit":
        assert e.retry_after == 2.0


def test_validation_detail_names_the_field() -> None:
    e = luma.error_for(422, {"detail": [{"loc": ["body", "keyframes", "frame0", "url"], "msg": "Field required"}]})
    assert "keyframes.frame0.url: Field required" in e.message


# ---------------------------------------------------------------- the adapter against the fake


@pytest.fixture()
def solo() -> Iterator[RunningFake]:
    with RunningFake("luma", render_seconds=0.3) as running:
        yield running


def _run(fake: RunningFake, coro_fn: Any, api_key: str = KEY) -> Any:
    async def main() -> Any:
        async with httpx.AsyncClient(timeout=10) as http:
            return await coro_fn(CallContext(http=http, api_key=api_key, base_url=fake.url))
    return asyncio.run(main())


def test_keyframes_job_against_the_fake(solo: RunningFake) -> None:
    first = ImageInput("first_frame", b"...", "image/png", url="https://img.example.com/a.png")
    last = ImageInput("last_frame", b"...", "image/png", url="https://img.example.com/b.png")

    async def flow(ctx: CallContext) -> tuple[list[str], bytes, Any]:
        sub = await luma.adapter.submit(request(images=(first, last), resolution="480p", width=854, height=480,
                                                aspect_ratio="16:9"), ctx)
        seen = []
        while True:
            polled = await luma.adapter.poll(sub.native_id, ctx)
            seen.append(polled.status)
            if polled.status == "completed":
                break
            await asyncio.sleep(0.05)
        data = b"".join([c async for c in luma.adapter.open_output(sub.native_id, polled.outputs[0], ctx)])
        return seen, data, sub

    seen, data, sub = _run(solo, flow)
    assert seen[0] == "queued" and "in_progress" in seen and seen[-1] == "completed"
    sent = solo.state.creates[-1]
    assert sent.body["keyframes"] == {"frame0": {"type": "image", "url": "https://img.example.com/a.png"},
                                      "frame1": {"type": "image", "url": "https://img.example.com/b.png"}}
    assert sent.body["resolution"] == "540p"
    assert data == render_media("video", "960x540", "5")
    # Cancelling a generation Luma no longer has is not an error.
    assert _run(solo, lambda ctx: luma.adapter.cancel(sub.native_id, ctx)) is True
    assert _run(solo, lambda ctx: luma.adapter.cancel(sub.native_id, ctx)) is True
    assert len(solo.state.find_requests("DELETE", f"{GEN_PATH}/{sub.native_id}")) == 2


def test_poll_errors(solo: RunningFake) -> None:
    with pytest.raises(ProviderError) as info:
        _run(solo, lambda ctx: luma.adapter.poll("no-such-id", ctx))
    assert info.value.kind == "not_found"
    with pytest.raises(ProviderError) as info:
        _run(solo, lambda ctx: luma.adapter.poll("no-such-id", ctx), api_key="bad")
    assert info.value.kind == "auth"


def test_unreachable_luma_is_unavailable() -> None:
    async def main() -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            await luma.adapter.submit(request(), CallContext(http=http, api_key=KEY, base_url="http://127.0.0.1:9"))

    with pytest.raises(ProviderError) as info:
        asyncio.run(main())
    assert info.value.kind == "unavailable"


# ---------------------------------------------------------------- the fake itself


def test_fake_is_registered_and_validates(solo: RunningFake) -> None:
    assert FAKES["luma"] is fake_luma.create_app
    with httpx.Client(base_url=solo.url + "/dream-machine/v1", headers={"Authorization": f"Bearer {KEY}"},
                      timeout=10) as c:
        def err(body: Any) -> tuple[int, Any]:
            r = c.post("/generations", json=body)
            return r.status_code, r.json()["detail"]

        frame = {"type": "image", "url": "https://x.example/a.jpg"}
        assert err({}) == (400, "Prompt is required")
        assert err({"prompt": "hi"}) == (400, "Prompt is too short, minimum length is 3 characters")
        assert err({"prompt": "a cat", "loop": True, "keyframes": {"frame1": frame}}) == (
            400, "Loop is not supported for end frame")
        assert err({"prompt": "a cat", "loop": True, "keyframes": {"frame0": frame, "frame1": frame}}) == (
            400, "Loop is not supported for keyframes")
        assert err({"prompt": "a cat", "keyframes": {"frame0": None}}) == (400, "No keyframes provided")
        status, detail = err({"prompt": "a cat", "keyframes": {"frame0": {"type": "image",
                                                                         "url": "data:image/png;base64,AA=="}}})
        assert status == 400 and "url" in detail
        status, detail = err({"prompt": "a cat", "resolution": "480p"})
        assert status == 422 and detail[0]["loc"] == ["body", "resolution"]
        status, detail = err({"prompt": "a cat", "seed": 1})
        assert status == 422 and detail[0]["type"] == "extra_forbidden"
        r = c.post("/generations", json={"prompt": "a cat", "keyframes": {"frame0": frame}})
        assert r.status_code == 201
        gen = r.json()
        assert gen["state"] == "queued" and gen["generation_type"] == "video" and gen["failure_reason"] is None
        assert gen["created_at"].endswith("Z") and gen["request"]["keyframes"]["frame0"] == frame
        assert c.get(f"/generations/{gen['id']}").json()["id"] == gen["id"]
        listed = c.get("/generations", params={"limit": 5}).json()
        assert [g["id"] for g in listed["generations"]] == [gen["id"]] and listed["has_more"] is False
        assert c.get("/credits").json()["credit_balance"] > 0
        assert c.get("/ping").json() == {"message": "pong"}
        assert c.get("/ping", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.delete(f"/generations/{gen['id']}").status_code == 204
        assert c.get(f"/generations/{gen['id']}").status_code == 404
