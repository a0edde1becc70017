"""The Runway adapter against the Runway fake, through a real gateway (SQLite and PostgreSQL), plus
unit tests of its request mapping and status/error tables, and of the fake itself."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from aistats_gateway.providers import runway
from aistats_gateway.providers.base import ImageInput, ProviderError, VideoRequest
from aistats_gateway.providers.fakes.openai import render_media
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.providers import (
    ProviderKit,
    accepted,
    data_url,
    falls_back_to_local,
    image_bytes,
    provider_fixtures,
    wait_for_status,
)

KEY = "key_test"
FALLBACK_MODEL = "runway/test-gen45-fallback"  # runway, then local
RENDER_SECONDS = 0.5
PARAMS = {"video.generation": {
    "duration": {"type": "integer", "minimum": 2, "maximum": 10, "default": 5, "aliases": ["seconds"]},
    "aspect_ratio": {"values": ["16:9"], "default": "16:9"},
}}
OVERLAY = {"models": [{
    "model_id": FALLBACK_MODEL, "name": "Gen-4.5 with a local fallback", "organisation": "runway",
    "status": "active", "input_types": ["text"], "output_types": ["video"],
    "providers": [
        {"provider": "runway", "provider_model_slug": "gen4.5", "endpoints": ["video.generation"],
         "input_modalities": ["text"], "output_modalities": ["video"],
         "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": "0"}], "parameters": PARAMS},
        {"provider": "local", "provider_model_slug": "procedural-video", "endpoints": ["video.generation"],
         "input_modalities": ["text"], "output_modalities": ["video"],
         "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": "0"}], "parameters": PARAMS},
    ],
}]}


KIT = ProviderKit("runway", api_key=KEY, fake_kwargs={"render_seconds": RENDER_SECONDS}, overlay=OVERLAY, clear=True)
fake, provider_env, gateway, reset_fake = provider_fixtures(KIT)


# ---------------------------------------------------------------- helpers

wait_done = wait_for_status


def png(width: int = 64, height: int = 36) -> str:
    return data_url(image_bytes(width, height, colour=(200, 40, 40)))


def sent_for(fake: RunningFake, prompt: str) -> Any:
    [rec] = [r for r in fake.state.creates if (r.body or {}).get("promptText") == prompt]
    return rec


def task_for(fake: RunningFake, prompt: str) -> Any:
    [task] = [t for t in fake.state.tasks.values() if t.body.get("promptText") == prompt]
    return task



# ---------------------------------------------------------------- through the gateway


def test_text_to_video_completes_and_downloads(api: httpx.Client, fake: RunningFake) -> None:
    prompt = "a lighthouse in a storm, slow dolly in"
    created = accepted(api, model="runway/gen-4.5", prompt=prompt, duration=5, aspect_ratio="16:9", seed=42)
    assert created["provider"] == "runway"
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "completed", body

    rec = sent_for(fake, prompt)
    assert rec.path == "/v1/text_to_video" and rec.status == 200
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    assert rec.headers["x-runway-version"] == "2024-11-06"
    assert rec.body == {"model": "gen4.5", "promptText": prompt, "ratio": "1280:720", "duration": 5, "seed": 42}
    task = task_for(fake, prompt)
    assert fake.state.find_requests("GET", f"/v1/tasks/{task.id}"), "the gateway polled the task"
    cdn = fake.state.find_requests("GET", f"/cdn/{task.id}/0.mp4")
    assert len(cdn) == 1 and "authorization" not in cdn[0].headers, "outputs are fetched without the API key"

    r = api.get(f"/v1/videos/{created['id']}/content")
    assert r.status_code == 200 and r.headers["content-type"].startswith("video/mp4")
    assert r.content == render_media("video", "1280x720", "5")
    [out] = body["outputs"]
    assert (out["width"], out["height"]) == (1280, 720)
    assert out["duration_seconds"] == pytest.approx(5.0, abs=0.2)


def test_image_to_video_uses_the_first_frame(api: httpx.Client, fake: RunningFake) -> None:
    prompt = "the red square starts to spin"
    image = png()
    created = accepted(api, model="runway/gen-4-turbo", prompt=prompt, duration=2, aspect_ratio="9:16",
                       input_references=[{"type": "image_url", "role": "first_frame", "image_url": {"url": image}}])
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "completed", body
    rec = sent_for(fake, prompt)
    assert rec.path == "/v1/image_to_video"
    assert rec.body["promptImage"] == image, "a data URL input is sent as a data URI"
    assert (rec.body["model"], rec.body["ratio"], rec.body["duration"]) == ("gen4_turbo", "720:1280", 2)
    [out] = body["outputs"]
    assert (out["width"], out["height"]) == (720, 1280)


def test_task_failure_is_reported_with_runways_code(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_jobs = True
    created = accepted(api, model="runway/gen-4.5", prompt="a failing render", duration=2)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "INTERNAL.BAD_OUTPUT.CODE01"
    assert "quality check" in body["error"]["message"]


def test_moderation_after_submit_is_a_content_policy_failure(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.moderation_block_prompts = ["forbidden"]
    created = accepted(api, model="runway/gen-4.5", prompt="something forbidden", duration=2)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "content_policy_violation"
    assert "SAFETY.INPUT.TEXT" in body["error"]["message"]


def test_rate_limit_is_429_with_retry_after(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.rate_limit_next, fake.state.retry_after_seconds = 1, 7
    r = api.post("/v1/videos", json={"model": "runway/gen-4.5", "prompt": "too fast", "duration": 2})
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_wrong_key_is_a_clear_gateway_error(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.api_key = "key_rotated"
    r = api.post("/v1/videos", json={"model": "runway/gen-4.5", "prompt": "wrong key", "duration": 2})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "provider_auth_failed" and "invalid" in err["message"].lower()


def test_wrong_key_falls_back_to_the_next_provider(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.api_key = "key_rotated"
    created = accepted(api, model=FALLBACK_MODEL, prompt="wrong key, fall back", duration=2)
    assert created["provider"] == "local"
    assert [(a["provider"], a["outcome"], a["status"]) for a in created["attempts"]] == [
        ("runway", "error", 401), ("local", "accepted", None)]
    api.post(f"/v1/videos/{created['id']}/cancel")
    wait_done(api, created["id"])


def test_no_credits_is_a_quota_error(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.insufficient_credits = True
    r = api.post("/v1/videos", json={"model": "runway/gen-4.5", "prompt": "no credits", "duration": 2})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "provider_quota_exceeded"


def test_cancel_deletes_the_task(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.render_seconds = 30.0
    prompt = "a very long render to cancel"
    created = accepted(api, model="runway/gen-4.5", prompt=prompt, duration=2)
    r = api.post(f"/v1/videos/{created['id']}/cancel")
    assert r.status_code == 200, r.text
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "cancelled"
    task = task_for(fake, prompt)
    assert task.id in fake.state.cancels
    [delete] = fake.state.find_requests("DELETE", f"/v1/tasks/{task.id}")
    assert delete.status == 204 and delete.headers["x-runway-version"] == "2024-11-06"
    assert runway_status(fake, task.id) == "CANCELLED"


def runway_status(fake: RunningFake, task_id: str) -> str:
    r = httpx.get(f"{fake.url}/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {KEY}",
                                                             "X-Runway-Version": "2024-11-06"})
    return r.json()["status"]


def test_expired_output_fails_the_job(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.expire_outputs = True
    created = accepted(api, model="runway/gen-4.5", prompt="output already gone", duration=2)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "output_unavailable"


def test_503_falls_back_to_local(api: httpx.Client, fake: RunningFake) -> None:
    falls_back_to_local(api, fake, "runway", model=FALLBACK_MODEL, prompt="runway is overloaded", duration=2)


# ---------------------------------------------------------------- the fake on its own


def test_fake_requires_the_version_header(fake: RunningFake) -> None:
    body = {"model": "gen4.5", "promptText": "x", "ratio": "1280:720", "duration": 5}
    r = httpx.post(f"{fake.url}/v1/text_to_video", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and "X-Runway-Version" in r.json()["error"]
    r = httpx.post(f"{fake.url}/v1/text_to_video", json=body, headers={"X-Runway-Version": "2024-11-06"})
    assert r.status_code == 401


def test_fake_validates_like_runway(fake: RunningFake) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
    r = httpx.post(f"{fake.url}/v1/text_to_video", headers=headers, json={
        "model": "gen4.5", "promptText": "x", "ratio": "1920:1080", "duration": 11, "prompt_text": "snake"})
    assert r.status_code == 400
    err = r.json()
    assert err["error"] == "Validation of body failed" and err["docUrl"]
    paths = {tuple(i["path"]) for i in err["issues"]}
    assert {("ratio",), ("duration",), ()} <= paths
    r = httpx.post(f"{fake.url}/v1/text_to_video", headers=headers,
                   json={"model": "gen4_turbo", "promptText": "x", "ratio": "1280:720"})
    assert r.status_code == 400, "gen4_turbo has no text_to_video"
    r = httpx.post(f"{fake.url}/v1/image_to_video", headers=headers, json={
        "model": "gen4_turbo", "promptImage": "http://example.com/a.png", "ratio": "1280:720"})
    assert r.status_code == 400 and r.json()["issues"][0]["path"] == ["promptImage"]
    r = httpx.get(f"{fake.url}/v1/tasks/nope", headers=headers)
    assert r.status_code == 404


def test_fake_status_progression(fake: RunningFake) -> None:
    from aistats_gateway.providers.fakes.runway import create_app

    now = [100.0]
    with RunningFake(create_app(clock=lambda: now[0], render_seconds=10.0, throttled_fraction=0.1), prefix="") as f:
        headers = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
        r = httpx.post(f"{f.url}/v1/text_to_video", headers=headers,
                       json={"model": "veo3.1", "promptText": "x", "ratio": "1080:1920", "duration": 4})
        task_id = r.json()["id"]

        def get() -> dict[str, Any]:
            return httpx.get(f"{f.url}/v1/tasks/{task_id}", headers=headers).json()

        assert get()["status"] == "THROTTLED"
        now[0] += 1.5
        assert get()["status"] == "PENDING"
        now[0] += 5.5
        running = get()
        assert running["status"] == "RUNNING" and 0 < running["progress"] < 1
        now[0] += 3.0
        done = get()
        assert done["status"] == "SUCCEEDED" and done["output"][0].startswith(f.url + "/cdn/")
        assert "progress" not in done
        video = httpx.get(done["output"][0])
        assert video.status_code == 200 and video.content == render_media("video", "1080x1920", "4")
        now[0] += 49 * 3600
        assert httpx.get(done["output"][0]).status_code == 403, "outputs expire"


# ---------------------------------------------------------------- unit: mapping tables


def request(**kw: Any) -> VideoRequest:
    base: dict[str, Any] = {"job_id": "video_1", "model_slug": "gen4.5", "prompt": "p", "duration": 5, "width": 1280,
                            "height": 720, "resolution": "720p", "aspect_ratio": "16:9", "size": None}
    return VideoRequest(**{**base, **kw})


def image(role: str, url: str | None = None) -> ImageInput:
    return ImageInput(role=role, content=b"\x89PNG...", mime_type="image/png", url=url)


def test_request_mapping_every_field() -> None:
    endpoint, body = runway.build_body(request(
        model_slug="veo3.1", duration=8, width=1080, height=1920, aspect_ratio="9:16", seed=7, negative_prompt="blur",
        generate_audio=True, images=(image("first_frame", "https://img.example/a.png"), image("last_frame")),
        provider_params={"contentModeration": {"publicFigureThreshold": "low"}}))
    assert endpoint == "image_to_video"
    assert body == {
        "model": "veo3.1", "promptText": "p",
        "promptImage": [{"uri": "https://img.example/a.png", "position": "first"},
                        {"uri": "data:image/png;base64," + base64.b64encode(b"\x89PNG...").decode(),
                         "position": "last"}],
        "ratio": "1080:1920", "duration": 8, "seed": 7, "negativePrompt": "blur", "audio": True,
        "contentModeration": {"publicFigureThreshold": "low"}}


@pytest.mark.parametrize("model,endpoint,width,height,aspect,expected", [
    ("gen4.5", "text_to_video", 1280, 720, "16:9", "1280:720"),
    ("gen4.5", "text_to_video", 720, 1280, "9:16", "720:1280"),
    ("gen4.5", "text_to_video", 960, 720, "4:3", "1104:832"),
    ("gen4.5", "image_to_video", 720, 720, "1:1", "960:960"),
    ("gen4.5", "image_to_video", 1680, 720, "21:9", "1584:672"),
    ("gen4_turbo", "image_to_video", 832, 1104, None, "832:1104"),
    ("veo3.1", "text_to_video", 1920, 1080, "16:9", "1920:1080"),
    ("veo3.1", "text_to_video", 1280, 720, "16:9", "1280:720"),
    ("some-new-model", "text_to_video", 1280, 720, "16:9", "1280:720"),
    ("some-new-model", "text_to_video", None, None, "1:1", "720:720"),
])
def test_ratio_mapping(model: str, endpoint: str, width: int | None, height: int | None, aspect: str | None,
                       expected: str) -> None:
    assert runway.pick_ratio(model, endpoint, width, height, aspect) == expected


def test_ratio_that_runway_lacks_is_refused_not_distorted() -> None:
    with pytest.raises(ProviderError) as e:
        runway.pick_ratio("gen4.5", "text_to_video", 1680, 720, "21:9")
    assert e.value.kind == "client" and "1280:720" in e.value.message


@pytest.mark.parametrize("kw,message", [
    ({"images": (image("reference"),)}, "reference"),
    ({"images": (image("last_frame"),)}, "first frame"),
    ({"images": (image("first_frame"), image("last_frame"))}, "last frame"),  # gen4.5 has no last frame
    ({"model_slug": "gen4_turbo"}, "first_frame"),
    ({"prompt": "  "}, "prompt"),
])
def test_inputs_runway_cannot_take(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ProviderError) as e:
        runway.build_body(request(**kw))
    assert e.value.kind == "client" and message in e.value.message


def test_text_only_without_optional_fields() -> None:
    endpoint, body = runway.build_body(request(duration=None))
    assert endpoint == "text_to_video"
    assert body == {"model": "gen4.5", "promptText": "p", "ratio": "1280:720"}


@pytest.mark.parametrize("task,status,progress,code", [
    ({"status": "PENDING"}, "queued", 0, None),
    ({"status": "THROTTLED"}, "queued", 0, None),
    ({"status": "RUNNING", "progress": 0.426}, "in_progress", 42, None),
    ({"status": "RUNNING"}, "in_progress", None, None),
    ({"status": "SUCCEEDED", "output": ["https://cdn/x.mp4"]}, "completed", 100, None),
    ({"status": "SUCCEEDED", "output": []}, "failed", None, "no_output"),
    ({"status": "FAILED", "failure": "flagged", "failureCode": "SAFETY.INPUT.IMAGE"}, "failed", None,
     "content_policy_violation"),
    ({"status": "FAILED", "failure": "bad", "failureCode": "INTERNAL.BAD_OUTPUT.CODE01"}, "failed", None,
     "INTERNAL.BAD_OUTPUT.CODE01"),
    ({"status": "FAILED"}, "failed", None, "generation_failed"),
    ({"status": "CANCELLED"}, "cancelled", None, "cancelled"),
])
def test_status_mapping(task: dict[str, Any], status: str, progress: int | None, code: str | None) -> None:
    polled = runway.polled_from_task({"id": "t", **task}, request(duration=5))
    assert (polled.status, polled.progress, polled.error_code) == (status, progress, code)
    if status == "completed":
        [ref] = polled.outputs
        assert ref.url == "https://cdn/x.mp4" and polled.usage == {"seconds": 5.0, "count": 1}


def test_unknown_status_is_an_upstream_error() -> None:
    with pytest.raises(ProviderError) as e:
        runway.polled_from_task({"status": "EXPLODED"})
    assert e.value.kind == "upstream"


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return httpx.Response(status, content=content, headers=headers or {})


@pytest.mark.parametrize("status,body,headers,kind,code", [
    (400, {"error": "Validation of body failed", "issues": [{"path": ["ratio"], "message": "bad"}]}, None, "client",
     "provider_rejected_request"),
    (400, {"error": "You do not have enough credits to run this task."}, None, "quota", "provider_quota_exceeded"),
    (401, {"error": "Invalid API key"}, None, "auth", "provider_auth_failed"),
    (404, {"error": "Task not found"}, None, "not_found", "not_found"),
    (429, {"error": "slow down"}, {"retry-after": "3"}, "rate_limit", "rate_limit_exceeded"),
    (502, {"error": "shedding load"}, None, "unavailable", "provider_unavailable"),
    (503, b"<html>busy</html>", None, "unavailable", "provider_unavailable"),
    (504, {"error": "overloaded"}, None, "unavailable", "provider_unavailable"),
])
def test_error_mapping(status: int, body: Any, headers: dict[str, str] | None, kind: str, code: str) -> None:
    e = runway.error_from_response(response(status, body, headers))
    assert (e.kind, e.code, e.status) == (kind, code, status)
    if status == 429:
        assert e.retry_after == 3
    if status == 400 and kind == "client":
        assert e.param == "ratio" and "ratio: bad" in e.message
