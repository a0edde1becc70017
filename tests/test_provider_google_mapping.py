"""Google Veo adapters (``google-ai-studio``, ``google-vertex``) without a gateway: the request mapping,
the error and operation status tables, and the service-account settings and credentials cache."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from aistats_gateway.providers.base import CallContext, ImageInput, ProviderError, VideoRequest
from aistats_gateway.providers.google import ai_studio_video as studio
from aistats_gateway.providers.google import common as gc
from aistats_gateway.providers.google import vertex_video as vertex
from tests.support.google_accounts import rsa_pair, service_account

# ---------------------------------------------------------------- request mapping (no gateway)

def _request(model: str = "veo-3.1-generate-001", **kw: Any) -> VideoRequest:
    base: dict[str, Any] = {"job_id": "video_x", "model_slug": model, "prompt": "p", "duration": 8, "width": 1280,
                            "height": 720, "resolution": "720p", "aspect_ratio": "16:9", "size": None}
    return VideoRequest(**{**base, **kw})


def _img(role: str, reference_type: str | None = None) -> ImageInput:
    return ImageInput(role=role, content=b"\x89PNG-" + role.encode(), mime_type="image/png",
                      reference_type=reference_type)


def test_mapping_every_field_vertex() -> None:
    req = _request(seed=7, sample_count=3, negative_prompt="no", generate_audio=False, enhance_prompt=False,
                   person_generation="dont_allow", compression_quality=90, resize_mode="CROP",
                   resolution="4K", aspect_ratio="9:16", width=2160, height=3840,
                   images=(_img("first_frame"), _img("last_frame"), _img("reference"), _img("reference", "style")),
                   provider_params={"storageUri": "gs://b/p", "fps": 24})
    body = vertex.build_body(req)
    b64 = lambda role: base64.b64encode(b"\x89PNG-" + role.encode()).decode()
    assert body == {
        "instances": [{
            "prompt": "p",
            "image": {"bytesBase64Encoded": b64("first_frame"), "mimeType": "image/png"},
            "lastFrame": {"bytesBase64Encoded": b64("last_frame"), "mimeType": "image/png"},
            "referenceImages": [
                {"image": {"bytesBase64Encoded": b64("reference"), "mimeType": "image/png"}, "referenceType": "asset"},
                {"image": {"bytesBase64Encoded": b64("reference"), "mimeType": "image/png"}, "referenceType": "style"},
            ]}],
        "parameters": {"aspectRatio": "9:16", "resolution": "4k", "durationSeconds": 8, "sampleCount": 3,
                       "negativePrompt": "no", "enhancePrompt": False, "personGeneration": "dont_allow",
                       "generateAudio": False, "seed": 7, "compressionQuality": "lossless", "resizeMode": "crop",
                       "storageUri": "gs://b/p", "fps": 24}}


def test_mapping_every_field_studio_drops_vertex_only() -> None:
    req = _request("veo-3.1-generate-preview", seed=7, sample_count=2, negative_prompt="no", generate_audio=True,
                   enhance_prompt=True, person_generation="allow_all", compression_quality=10, resize_mode="pad",
                   resolution="1080p", images=(_img("first_frame"),))
    body = studio.build_body(req)
    assert body["parameters"] == {"aspectRatio": "16:9", "resolution": "1080p", "durationSeconds": 8,
                                  "sampleCount": 2, "negativePrompt": "no", "enhancePrompt": True,
                                  "personGeneration": "allow_all"}
    assert set(body["instances"][0]) == {"prompt", "image"}


@pytest.mark.parametrize("quality,native", [(0, "optimized"), (89, "optimized"), (90, "lossless"),
                                            (100, "lossless")])
def test_compression_quality_threshold(quality: int, native: str) -> None:
    assert vertex.build_body(_request(compression_quality=quality))["parameters"]["compressionQuality"] == native


def test_mapping_details() -> None:
    # size only → resolution and aspect ratio from the dimensions
    p = gc.common_parameters(_request(resolution=None, aspect_ratio=None, width=1080, height=1920))
    assert (p["resolution"], p["aspectRatio"]) == ("1080p", "9:16")
    # Veo 2 has no resolution parameter and no audio switch
    body = vertex.build_body(_request("veo-2.0-generate-001", duration=5, generate_audio=True))
    assert "resolution" not in body["parameters"] and "generateAudio" not in body["parameters"]
    # Veo 3 on Vertex always gets generateAudio (required there); resize_mode only with a first frame
    params = vertex.build_body(_request(resize_mode="pad"))["parameters"]
    assert params["generateAudio"] is True and "resizeMode" not in params
    # an image-only request has no prompt key; sample_count 1 is left to the default
    body = studio.build_body(_request(prompt="", images=(_img("first_frame"),)))
    assert "prompt" not in body["instances"][0] and "sampleCount" not in body["parameters"]
    for bad in (dict(resolution="480p"), dict(aspect_ratio="1:1"), dict(images=(_img("mask"),)),
                dict(images=(_img("reference", "character"),)),
                dict(resolution=None, width=640, height=480, aspect_ratio=None)):
        with pytest.raises(ProviderError) as e:
            vertex.build_body(_request(**bad))
        assert e.value.kind == "client"


def test_gcs_url_encodes_object_names() -> None:
    ctx = CallContext(http=None, api_key=None, base_url=None)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AISTATS_PROVIDER_GOOGLE_VERTEX_STORAGE_BASE_URL", raising=False)
        assert vertex.gcs_url(ctx, "gs://bkt/a b/c.mp4") == \
            "https://storage.googleapis.com/storage/v1/b/bkt/o/a%20b%2Fc.mp4?alt=media"


def test_service_account_setting(tmp_path: Path) -> None:
    info = {"type": "service_account", "client_email": "x@y"}
    assert vertex.service_account_info(json.dumps(info)) == info
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(info))
    assert vertex.service_account_info(str(path)) == info
    for bad in ("", str(tmp_path / "missing.json"), "{not json", json.dumps({"type": "authorized_user"})):
        with pytest.raises(ProviderError) as e:
            vertex.service_account_info(bad)
        assert e.value.kind == "auth"


# ---------------------------------------------------------------- error and status mapping tables

def _resp(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers)


def _gerr(code: int, status: str, message: str = "m", details: list[Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **({"details": details} if details else {})}}


@pytest.mark.parametrize("status,body,headers,kind,code,retry", [
    (400, _gerr(400, "INVALID_ARGUMENT", "API key not valid.",
                [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]),
     None, "auth", "provider_auth_failed", None),
    (400, _gerr(400, "FAILED_PRECONDITION", "User location is not supported"), None, "auth",
     "provider_precondition_failed", None),
    (400, _gerr(400, "INVALID_ARGUMENT", "The prompt could not be submitted. ... Support codes: 17301594"), None,
     "content_policy", "content_policy_violation", None),
    (400, _gerr(400, "INVALID_ARGUMENT", "Unsupported durationSeconds 5"), None, "client", "invalid_argument", None),
    (401, _gerr(401, "UNAUTHENTICATED"), None, "auth", "provider_auth_failed", None),
    (403, _gerr(403, "PERMISSION_DENIED"), None, "auth", "provider_auth_failed", None),
    (404, _gerr(404, "NOT_FOUND"), None, "not_found", "not_found", None),
    (429, _gerr(429, "RESOURCE_EXHAUSTED", "quota", [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                      "retryDelay": "37s"}]),
     None, "rate_limit", "rate_limit_exceeded", 37.0),
    (429, _gerr(429, "RESOURCE_EXHAUSTED"), {"retry-after": "5"}, "rate_limit", "rate_limit_exceeded", 5.0),
    (500, _gerr(500, "INTERNAL"), None, "unavailable", "provider_unavailable", None),
    (503, _gerr(503, "UNAVAILABLE"), None, "unavailable", "provider_unavailable", None),
    (502, b"<html>bad gateway</html>", None, "unavailable", "provider_unavailable", None),
])
def test_error_mapping(status: int, body: Any, headers: dict[str, str] | None, kind: str, code: str,
                       retry: float | None) -> None:
    e = gc.error(_resp(status, body, headers), "Google")
    assert (e.kind, e.code, e.retry_after, e.status) == (kind, code, retry, status)


@pytest.mark.parametrize("op,status,code", [
    ({"name": "n"}, "in_progress", None),
    ({"name": "n", "done": False, "metadata": {"progressPercent": 40}}, "in_progress", None),
    ({"name": "n", "done": True, "error": {"code": 13, "message": "boom"}}, "failed", "internal"),
    ({"name": "n", "done": True, "error": {"code": 3, "message": "Generated video is large, an output storage uri "
                                                                 "is required."}}, "failed", "invalid_argument"),
    ({"name": "n", "done": True, "error": {"code": 3, "message": "the input image violates Vertex AI's usage "
                                                                 "guidelines. Support codes: 15236754"}},
     "failed", "content_policy_violation"),
    ({"name": "n", "done": True, "response": {"generateVideoResponse": {"raiMediaFilteredCount": 1,
                                                                        "raiMediaFilteredReasons": ["r"]}}},
     "failed", "content_policy_violation"),
    ({"name": "n", "done": True, "response": {"raiMediaFilteredCount": 2, "videos": []}},
     "failed", "content_policy_violation"),
    ({"name": "n", "done": True, "response": {"generateVideoResponse": {}}}, "failed", "no_output"),
    ({"name": "n", "done": True, "response": {"generateVideoResponse": {"generatedSamples": [
        {"video": {"uri": "https://x/v1beta/files/a:download?alt=media"}}]}}}, "completed", None),
    ({"name": "n", "done": True, "response": {"raiMediaFilteredCount": 1, "videos": [
        {"gcsUri": "gs://b/o.mp4", "mimeType": "video/mp4"}, {"bytesBase64Encoded": "AAEC", "mimeType": "video/mp4"}]}},
     "completed", None),
])
def test_operation_mapping(op: dict[str, Any], status: str, code: str | None) -> None:
    got = gc.polled(op, "Google", 8.0)
    assert (got.status, got.error_code) == (status, code)
    if op.get("metadata"):
        assert got.progress == 40
    if status == "completed":
        assert [r.index for r in got.outputs] == list(range(len(got.outputs)))
        assert got.usage["seconds"] == 8.0 and got.usage["count"] == len(got.outputs)
    if any(r.data for r in got.outputs):
        assert got.outputs[1].data == b"\x00\x01\x02" and got.outputs[0].url == "gs://b/o.mp4"


def test_operation_done_without_result_is_upstream_error() -> None:
    with pytest.raises(ProviderError) as e:
        gc.polled({"name": "n", "done": True}, "Google", None)
    assert e.value.kind == "upstream"


def test_unreachable_provider_is_unavailable() -> None:
    async def main() -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            ctx = CallContext(http=http, api_key="k", base_url="http://127.0.0.1:9")
            with pytest.raises(ProviderError) as e:
                await studio.adapter.submit(_request("veo-3.1-generate-preview"), ctx)
            assert e.value.kind == "unavailable"

    asyncio.run(main())


def test_credentials_cache_follows_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "sa.json"
    ctx = CallContext(http=None, api_key=str(path), base_url=None)
    path.write_text(json.dumps(service_account(rsa_pair()[0], "https://oauth2.googleapis.com/token")))
    first = vertex._account(ctx)
    assert vertex._account(ctx) is first  # cached
    path.write_text(json.dumps(service_account(rsa_pair()[0], "https://oauth2.googleapis.com/token", "k2")))
    assert vertex._account(ctx) is not first  # a rotated key file is used at once


def test_unreachable_token_endpoint_is_unavailable() -> None:
    info = service_account(rsa_pair()[0], "http://127.0.0.1:9/token", "unreachable")

    async def main() -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            ctx = CallContext(http=http, api_key=json.dumps(info), base_url="http://127.0.0.1:9")
            with pytest.raises(ProviderError) as e:
                await vertex.adapter.submit(_request(), ctx)
            assert e.value.kind == "unavailable" and "token endpoint" in e.value.message

    asyncio.run(main())
