"""The fal adapter against the fal queue fake, through a real gateway (SQLite and PostgreSQL), plus unit
tests of its per-model input mapping and status/error tables, and of the fake itself."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from aistats_gateway.providers import fal
from aistats_gateway.providers.base import ImageInput, ProviderError, VideoRequest
from aistats_gateway.providers.fakes.openai import render_media
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.providers import ProviderKit, falls_back_to_local, provider_fixtures, wait_for_status
from tests.support.providers import accepted as kit_accepted

KEY = "fal-key-id:fal-key-secret"
KLING = "fal-ai/kling-video/v2.1/master/text-to-video"
FALLBACK_MODEL = "kuaishou/test-kling-fal-fallback"  # fal, then local
RENDER_SECONDS = 0.5
ONLY_FAL = {"only": ["fal"]}
PARAMS = {"video.generation": {
    "duration": {"type": "integer", "values": [5, 10], "default": 5, "aliases": ["seconds"]},
    "aspect_ratio": {"values": ["16:9"], "default": "16:9"},
    "resolution": {"values": ["480p"], "default": "480p"},  # keeps the local fallback render small
}}
OVERLAY = {"models": [{
    "model_id": FALLBACK_MODEL, "name": "Kling 2.1 master on fal with a local fallback", "organisation": "kuaishou",
    "status": "active", "input_types": ["text"], "output_types": ["video"],
    "providers": [
        {"provider": p, "provider_model_slug": slug, "endpoints": ["video.generation"], "input_modalities": ["text"],
         "output_modalities": ["video"], "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": "0"}],
         "parameters": PARAMS}
        for p, slug in (("fal", KLING), ("local", "procedural-video"))
    ],
}]}


KIT = ProviderKit("fal", api_key=KEY, fake_kwargs={"render_seconds": RENDER_SECONDS}, overlay=OVERLAY, clear=True)
fake, provider_env, gateway, reset_fake = provider_fixtures(KIT)


# ---------------------------------------------------------------- helpers

wait_done = wait_for_status


def accepted(api: httpx.Client, **body: Any) -> dict[str, Any]:
    return kit_accepted(api, **{"provider": ONLY_FAL, **body})


def queued_for(fake: RunningFake, prompt: str) -> Any:
    [req] = [q for q in fake.state.queue.values() if q.body.get("prompt") == prompt]
    return req


# ---------------------------------------------------------------- through the gateway


@pytest.mark.parametrize("model,request_body,endpoint,sent,size,seconds", [
    ("kuaishou/kling-v2.1-master", {"duration": 5, "aspect_ratio": "9:16", "negative_prompt": "blur"}, KLING,
     {"duration": "5", "aspect_ratio": "9:16", "negative_prompt": "blur"}, (720, 1280), 5),
    ("minimax/hailuo-02", {"duration": 6, "enhance_prompt": False}, "fal-ai/minimax/hailuo-02/standard/text-to-video",
     {"duration": "6", "prompt_optimizer": False}, (1366, 768), 6),
    ("qwen/wan-2.5-preview", {"duration": 5, "resolution": "480p", "aspect_ratio": "16:9", "seed": 7,
                              "negative_prompt": "low quality", "enhance_prompt": True},
     "fal-ai/wan-25-preview/text-to-video",
     {"duration": "5", "resolution": "480p", "aspect_ratio": "16:9", "seed": 7, "negative_prompt": "low quality",
      "enable_prompt_expansion": True}, (832, 480), 5),
    ("bytedance/seedance-1-pro", {"duration": 3, "resolution": "480p", "aspect_ratio": "1:1", "seed": 11},
     "fal-ai/bytedance/seedance/v1/pro/text-to-video",
     {"duration": "3", "resolution": "480p", "aspect_ratio": "1:1", "seed": 11}, (480, 480), 3),
])
def test_catalogue_models_complete_on_fal(api: httpx.Client, fake: RunningFake, model: str,
                                          request_body: dict[str, Any], endpoint: str, sent: dict[str, Any],
                                          size: tuple[int, int], seconds: int) -> None:
    prompt = f"a test clip for {model}"
    created = accepted(api, model=model, prompt=prompt, **request_body)
    assert created["provider"] == "fal"
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "completed", body

    [submit] = fake.state.submits
    assert submit.path == "/" + endpoint and submit.status == 200
    assert submit.headers["authorization"] == f"Key {KEY}"
    assert submit.body == {"prompt": prompt, **sent}
    req = queued_for(fake, prompt)
    app = "/".join(endpoint.split("/")[:2])
    # Status and result use the model id without its subpath.
    assert fake.state.find_requests("GET", f"/{app}/requests/{req.id}/status")
    [result] = fake.state.find_requests("GET", f"/{app}/requests/{req.id}")
    assert result.status == 200
    [media] = [r for r in fake.state.requests if r.path.startswith("/files/")]
    assert "authorization" not in media.headers, "fal media links are fetched without the key"

    r = api.get(f"/v1/videos/{created['id']}/content")
    assert r.status_code == 200 and r.content == render_media("video", f"{size[0]}x{size[1]}", str(seconds))
    [out] = body["outputs"]
    assert (out["width"], out["height"]) == size
    assert out["duration_seconds"] == pytest.approx(seconds, abs=0.2)


def test_model_validation_error_fails_the_job(api: httpx.Client, fake: RunningFake) -> None:
    created = accepted(api, model="kuaishou/kling-v2.1-master", prompt="cfg too high", duration=5,
                       provider_params={"cfg_scale": 5})
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "less_than_equal"
    assert "cfg_scale" in body["error"]["message"]


def test_content_policy_result_is_a_content_policy_failure(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.content_policy_prompts = ["forbidden"]
    created = accepted(api, model="kuaishou/kling-v2.1-master", prompt="something forbidden", duration=5)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "content_policy_violation"
    assert "content checker" in body["error"]["message"]


def test_platform_failure_reports_the_error_type(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_jobs = True
    created = accepted(api, model="kuaishou/kling-v2.1-master", prompt="runner dies", duration=5)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "runner_disconnected"


def test_rate_limit_is_429_with_retry_after(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.rate_limit_next, fake.state.retry_after_seconds = 1, 9
    r = api.post("/v1/videos", json={"model": "kuaishou/kling-v2.1-master", "prompt": "too many", "duration": 5,
                                     "provider": ONLY_FAL})
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "9"


def test_wrong_key_is_a_clear_gateway_error(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.api_key = "other-id:other-secret"
    r = api.post("/v1/videos", json={"model": "kuaishou/kling-v2.1-master", "prompt": "bad key", "duration": 5,
                                     "provider": ONLY_FAL})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "provider_auth_failed" and "No user found" in err["message"]


def test_exhausted_balance_is_a_quota_error(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.exhausted_balance = True
    r = api.post("/v1/videos", json={"model": "kuaishou/kling-v2.1-master", "prompt": "broke", "duration": 5,
                                     "provider": ONLY_FAL})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "provider_quota_exceeded"


def test_cancel_puts_to_the_cancel_url(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.render_seconds = 30.0
    created = accepted(api, model="kuaishou/kling-v2.1-master", prompt="cancel this", duration=5)
    req = queued_for(fake, "cancel this")
    r = api.post(f"/v1/videos/{created['id']}/cancel")
    assert r.status_code == 200, r.text
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "cancelled"
    assert fake.state.cancels == [req.id]
    [put] = fake.state.find_requests("PUT", f"/fal-ai/kling-video/requests/{req.id}/cancel")
    assert put.status == 202 and put.headers["authorization"] == f"Key {KEY}"


def test_503_falls_back_to_local(api: httpx.Client, fake: RunningFake) -> None:
    falls_back_to_local(api, fake, "fal", model=FALLBACK_MODEL, prompt="fal is down", duration=5)


# ---------------------------------------------------------------- the fake on its own


def test_fake_queue_protocol() -> None:
    from aistats_gateway.providers.fakes.fal import create_app

    now = [0.0]
    with RunningFake(create_app(clock=lambda: now[0], render_seconds=10.0), prefix="") as f:
        auth = {"Authorization": f"Key {KEY}"}
        sub = httpx.post(f"{f.url}/{KLING}", headers=auth, json={"prompt": "x", "duration": "5"}).json()
        rid = sub["request_id"]
        assert sub["status_url"] == f"{f.url}/fal-ai/kling-video/requests/{rid}/status"
        assert sub["cancel_url"] == f"{f.url}/fal-ai/kling-video/requests/{rid}/cancel"
        status = httpx.get(sub["status_url"], headers=auth)
        assert status.status_code == 202 and status.json()["status"] == "IN_QUEUE"
        # The subpath is not part of the status path.
        assert httpx.get(f"{f.url}/{KLING}/requests/{rid}/status", headers=auth).status_code == 404
        now[0] = 5.0
        assert httpx.get(sub["status_url"], headers=auth).json()["status"] == "IN_PROGRESS"
        early = httpx.get(sub["response_url"], headers=auth)
        assert early.status_code == 400 and early.json() == {"detail": "Request is still in progress"}
        now[0] = 10.0
        done = httpx.get(sub["status_url"], headers=auth)
        assert done.status_code == 200 and done.json()["status"] == "COMPLETED"
        # An integer duration is a model validation error, reported in the result.
        sub2 = httpx.post(f"{f.url}/{KLING}", headers=auth, json={"prompt": "x", "duration": 5}).json()
        now[0] = 12.0
        bad = httpx.get(sub2["response_url"], headers=auth)
        assert bad.status_code == 422
        [err] = bad.json()["detail"]
        assert (err["loc"], err["type"]) == (["body", "duration"], "literal_error")
        cancel = httpx.put(sub["cancel_url"], headers=auth)
        assert cancel.status_code == 400 and cancel.json() == {"status": "ALREADY_COMPLETED"}
        assert httpx.post(f"{f.url}/fal-ai/nope/v1", headers=auth, json={}).status_code == 404
        for header, detail in (("Key nocolon", "Invalid Key Authorization header format"),
                               ("Key a:b", "No user found for Key ID and Secret")):
            r = httpx.post(f"{f.url}/{KLING}", headers={"Authorization": header}, json={"prompt": "x"})
            assert r.status_code == 401 and detail in r.json()["detail"]
        # The first job completed: its output is downloadable without credentials.
        result = httpx.get(sub["response_url"], headers=auth).json()
        assert httpx.get(result["video"]["url"]).content == render_media("video", "1280x720", "5")
        # Cancelling a queued request removes it.
        sub3 = httpx.post(f"{f.url}/{KLING}", headers=auth, json={"prompt": "x", "duration": "5"}).json()
        assert httpx.put(sub3["cancel_url"], headers=auth).status_code == 202
        assert httpx.get(sub3["status_url"], headers=auth).status_code == 404


# ---------------------------------------------------------------- unit: mapping tables


def request(**kw: Any) -> VideoRequest:
    base: dict[str, Any] = {"job_id": "video_1", "model_slug": KLING, "prompt": "p", "duration": 5, "width": 1280,
                            "height": 720, "resolution": None, "aspect_ratio": "16:9", "size": None}
    return VideoRequest(**{**base, **kw})


def image(role: str, url: str | None = None) -> ImageInput:
    return ImageInput(role=role, content=b"img", mime_type="image/png", url=url)


DATA = "data:image/png;base64," + base64.b64encode(b"img").decode()
ALL = {"seed": 3, "negative_prompt": "n", "generate_audio": True, "enhance_prompt": False, "resolution": "720p"}


@pytest.mark.parametrize("slug,kw,expected", [
    (KLING, ALL, {"duration": "5", "aspect_ratio": "16:9", "negative_prompt": "n"}),
    ("fal-ai/kling-video/v2.6/pro/text-to-video", ALL,
     {"duration": "5", "aspect_ratio": "16:9", "negative_prompt": "n", "generate_audio": True}),
    ("fal-ai/kling-video/v3/pro/text-to-video", ALL,
     {"duration": "5", "aspect_ratio": "16:9", "resolution": "720p", "negative_prompt": "n", "generate_audio": True}),
    ("fal-ai/minimax/hailuo-02/standard/text-to-video", ALL, {"duration": "5", "prompt_optimizer": False}),
    ("fal-ai/wan-25-preview/text-to-video", ALL,
     {"duration": "5", "aspect_ratio": "16:9", "resolution": "720p", "seed": 3, "negative_prompt": "n",
      "enable_prompt_expansion": False}),
    ("fal-ai/bytedance/seedance/v1/pro/text-to-video", ALL,
     {"duration": "5", "aspect_ratio": "16:9", "resolution": "720p", "seed": 3, "generate_audio": True}),
    ("fal-ai/veo3/fast", ALL,
     {"duration": "5s", "aspect_ratio": "16:9", "resolution": "720p", "seed": 3, "negative_prompt": "n",
      "generate_audio": True, "enhance_prompt": False}),
    ("someone/new-model", {"seed": 3, "aspect_ratio": None, "width": 1920, "height": 1080},
     {"duration": "5", "aspect_ratio": "16:9", "resolution": "1080p", "seed": 3}),
])
def test_input_mapping_per_family(slug: str, kw: dict[str, Any], expected: dict[str, Any]) -> None:
    assert fal.build_input(request(model_slug=slug, **kw)) == {"prompt": "p", **expected}


def test_images_switch_to_image_to_video_and_map_to_url_fields() -> None:
    req = request(model_slug="fal-ai/minimax/hailuo-02/standard/text-to-video", resolution="720p",
                  images=(image("first_frame", "https://img/a.png"), image("last_frame")),
                  provider_params={"enable_safety_checker": False})
    assert fal.endpoint_for(req) == "fal-ai/minimax/hailuo-02/standard/image-to-video"
    assert fal.build_input(req) == {"prompt": "p", "image_url": "https://img/a.png", "end_image_url": DATA,
                                    "duration": "5", "resolution": "768P", "enable_safety_checker": False}
    kling3 = request(model_slug="fal-ai/kling-video/v3/pro/text-to-video", images=(image("first_frame"),))
    assert fal.build_input(kling3)["start_image_url"] == DATA


@pytest.mark.parametrize("kw,message", [
    ({"images": (image("reference"),)}, "reference"),
    ({"images": (image("first_frame"), image("last_frame"))}, "last frame"),  # Kling 2.1 has none
    ({"model_slug": "fal-ai/wan-25-preview/text-to-video", "resolution": "4K"}, "resolutions"),
])
def test_inputs_fal_models_cannot_take(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ProviderError) as e:
        fal.build_input(request(**kw))
    assert e.value.kind == "client" and message in e.value.message


def test_native_id_and_app_path() -> None:
    assert fal.app_path(KLING) == "fal-ai/kling-video"
    assert fal.app_path("fal-ai/veo3") == "fal-ai/veo3"
    nid = fal.encode_native_id(KLING, "fal-ai/kling-video", "r-1")
    assert fal.decode_native_id(nid) == (KLING, "fal-ai/kling-video", "r-1")
    assert fal._app_from_url("https://queue.fal.run/fal-ai/kling-video/requests/r-1/status", "r-1") == \
        "fal-ai/kling-video"
    with pytest.raises(ProviderError) as e:
        fal.decode_native_id("not json")
    assert e.value.kind == "not_found"


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers or {})


@pytest.mark.parametrize("status,body,headers,expected", [
    (200, {"video": {"url": "https://v3.fal.media/files/a.mp4", "content_type": "video/mp4"}}, None,
     ("completed", None)),
    (200, {"videos": [{"url": "https://v3.fal.media/1.mp4"}, {"url": "https://v3.fal.media/2.mp4"}]}, None,
     ("completed", None)),
    (200, {"seed": 1}, None, ("failed", "no_output")),
    (400, {"detail": "Request is still in progress"}, None, ("in_progress", None)),
    (422, {"detail": [{"loc": ["body", "duration"], "msg": "Input should be '5' or '10'", "type": "literal_error"}]},
     None, ("failed", "literal_error")),
    (422, {"detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]}, None,
     ("failed", "content_policy_violation")),
    (504, {"detail": "Request timed out", "error_type": "request_timeout"}, {"x-fal-error-type": "request_timeout"},
     ("failed", "request_timeout")),
    (500, {"detail": "Internal server error"}, None, ("failed", "generation_failed")),
])
def test_result_mapping(status: int, body: Any, headers: dict[str, str] | None,
                        expected: tuple[str, str | None]) -> None:
    polled = fal.polled_from_result(response(status, body, headers), request(duration=5))
    assert (polled.status, polled.error_code) == expected
    if polled.status == "completed":
        assert polled.outputs[0].url.startswith("https://v3.fal.media/")
        assert polled.usage == {"seconds": 5.0, "count": len(polled.outputs)}


@pytest.mark.parametrize("status,body,kind", [
    (502, b"bad gateway", "unavailable"),  # no verdict from fal: poll again later
    (404, {"detail": "Request not found"}, "not_found"),
    (401, {"detail": "No user found for Key ID and Secret"}, "auth"),
])
def test_result_errors_that_are_not_verdicts(status: int, body: Any, kind: str) -> None:
    resp = httpx.Response(status, content=body if isinstance(body, bytes) else json.dumps(body).encode())
    with pytest.raises(ProviderError) as e:
        fal.polled_from_result(resp)
    assert e.value.kind == kind


@pytest.mark.parametrize("status,body,kind,code", [
    (401, {"detail": "No user found for Key ID and Secret"}, "auth", "provider_auth_failed"),
    (403, {"detail": "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."},
     "quota", "provider_quota_exceeded"),
    (403, {"detail": "Forbidden"}, "auth", "provider_auth_failed"),
    (404, {"detail": "Application 'x' not found"}, "not_found", "not_found"),
    (422, {"detail": [{"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}]}, "client", "missing"),
    (422, {"detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]},
     "content_policy", "content_policy_violation"),
    (429, {"detail": "Too many requests"}, "rate_limit", "rate_limit_exceeded"),
    (503, {"detail": "Service temporarily unavailable", "error_type": "runner_scheduling_failure"}, "unavailable",
     "provider_unavailable"),
])
def test_error_mapping(status: int, body: Any, kind: str, code: str) -> None:
    e = fal.error_from_response(response(status, body))
    assert (e.kind, e.code, e.status) == (kind, code, status)


class _Ctx:
    """A CallContext whose http answers the status URL with ``status_body``."""

    def __init__(self, status_body: dict[str, Any], code: int = 200) -> None:
        from aistats_gateway.providers.base import CallContext

        def handler(req: httpx.Request) -> httpx.Response:
            return httpx.Response(code, json=status_body)

        self.ctx = CallContext(http=httpx.AsyncClient(transport=httpx.MockTransport(handler)), api_key=KEY,
                               base_url="https://queue.example")


@pytest.mark.parametrize("status_body,code,expected", [
    ({"status": "IN_QUEUE", "queue_position": 3}, 202, ("queued", None)),
    ({"status": "IN_PROGRESS", "logs": None}, 202, ("in_progress", None)),
    ({"status": "COMPLETED", "error": "Request timed out", "error_type": "request_timeout"}, 200,
     ("failed", "request_timeout")),
    ({"status": "CANCELED"}, 200, ("cancelled", "cancelled")),
])
def test_status_mapping(status_body: dict[str, Any], code: int, expected: tuple[str, str | None]) -> None:
    import asyncio

    async def run() -> Any:
        ctx = _Ctx(status_body, code).ctx
        async with ctx.http:
            return await fal.adapter.poll(fal.encode_native_id(KLING, "fal-ai/kling-video", "r"), ctx)

    polled = asyncio.run(run())
    assert (polled.status, polled.error_code) == expected
