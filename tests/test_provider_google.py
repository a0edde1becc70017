"""Google Veo adapters (``google-ai-studio`` = Gemini API, ``google-vertex`` = Vertex AI) against the fake.

One fake (``providers/fakes/google.py``) serves the Gemini API, Vertex AI, the OAuth2 token endpoint
and the Cloud Storage JSON API. The Vertex adapter authenticates with a throwaway service account
whose RSA key is generated here; the fake verifies the JWT assertion's signature with its public key.
Gateway tests run on SQLite and PostgreSQL; the mapping tests at the end need no gateway.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aistats_gateway.providers.google import ai_studio_video as studio
from aistats_gateway.providers.google import common as gc
from aistats_gateway.providers.google import vertex_video as vertex
from aistats_gateway.providers.base import CallContext, ImageInput, ProviderError, VideoRequest
from aistats_gateway.providers.fakes.google import GOOGLE_TOKEN_AUDIENCE, SCOPE
from aistats_gateway.providers.fakes.openai import render_media
from aistats_gateway.providers.fakes.testing import RunningFake
from aistats_gateway.videos import media
from tests.support.gateway import BACKENDS, Gateway, running_gateway

STUDIO_KEY = "AIza-test-key"
PROJECT = "veo-test-project"
SA_EMAIL = f"gateway@{PROJECT}.iam.gserviceaccount.com"
SA_KEY_ID = "0123456789abcdef"
RENDER_SECONDS = 0.3
PROMPT = "a paper boat drifting down a rainy street"
FALLBACK_STUDIO = "google/test-veo-studio-then-local"
FALLBACK_VERTEX = "google/test-veo-vertex-then-local"
STUDIO_ONLY = {"only": ["google-ai-studio"]}
VERTEX_ONLY = {"only": ["google-vertex"]}


# ---------------------------------------------------------------- service account and fake

def _rsa_pair() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def _service_account(private_pem: str, token_uri: str, key_id: str = SA_KEY_ID) -> dict[str, Any]:
    return {"type": "service_account", "project_id": PROJECT, "private_key_id": key_id, "private_key": private_pem,
            "client_email": SA_EMAIL, "client_id": "1234567890", "token_uri": token_uri}


@pytest.fixture(scope="module")
def keypair() -> tuple[str, bytes]:
    return _rsa_pair()


@pytest.fixture(scope="module")
def fake(keypair: tuple[str, bytes]) -> Iterator[RunningFake]:
    with RunningFake("google-vertex", prefix="", api_key=STUDIO_KEY, project=PROJECT,
                     render_seconds=RENDER_SECONDS) as running:
        running.state.register_service_account(SA_EMAIL, SA_KEY_ID, keypair[1], PROJECT)
        yield running


@pytest.fixture(scope="module")
def sa_info(fake: RunningFake, keypair: tuple[str, bytes]) -> dict[str, Any]:
    return _service_account(keypair[0], fake.url + "/token")


def _offer(provider: str, slug: str) -> dict[str, Any]:
    return {"provider": provider, "provider_model_slug": slug, "endpoints": ["video.generation"],
            "input_modalities": ["text"], "output_modalities": ["video"],
            "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": "0"}],
            "parameters": {"video.generation": {
                "duration": {"values": [1, 4, 8], "default": 4, "aliases": ["seconds"]},
                "resolution": {"values": ["720p"], "default": "720p", "aliases": ["size"]},
                "aspect_ratio": {"values": ["16:9"], "default": "16:9"}}}}


OVERLAY = {"models": [
    {"model_id": mid, "name": mid, "organisation": "google", "status": "active", "input_types": ["text"],
     "output_types": ["video"], "providers": [_offer(pid, slug), _offer("local", "procedural-video")]}
    for mid, pid, slug in ((FALLBACK_STUDIO, "google-ai-studio", "veo-3.1-fast-generate-preview"),
                           (FALLBACK_VERTEX, "google-vertex", "veo-3.1-fast-generate-001"))]}


@pytest.fixture(scope="module")
def provider_env(fake: RunningFake, sa_info: dict[str, Any],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # The adapters read their settings from os.environ at call time (the gateway runs in this process).
    sa_file = tmp_path_factory.mktemp("sa") / "service-account.json"
    sa_file.write_text(json.dumps(sa_info))
    with pytest.MonkeyPatch.context() as mp:
        for pid, key in (("GOOGLE_AI_STUDIO", STUDIO_KEY), ("GOOGLE_VERTEX", str(sa_file))):
            mp.setenv(f"AISTATS_PROVIDER_{pid}_API_KEY", key)  # Vertex: the path of the JSON file
            mp.setenv(f"AISTATS_PROVIDER_{pid}_BASE_URL", fake.url)
            mp.setenv(f"AISTATS_PROVIDER_{pid}_POLL_INTERVAL", "0.1")
            mp.setenv(f"AISTATS_PROVIDER_{pid}_MAX_POLL_INTERVAL", "0.3")
        mp.setenv("AISTATS_PROVIDER_GOOGLE_VERTEX_STORAGE_BASE_URL", fake.url)
        mp.delenv("AISTATS_PROVIDER_GOOGLE_VERTEX_PROJECT", raising=False)  # taken from the JSON
        mp.delenv("AISTATS_PROVIDER_GOOGLE_VERTEX_LOCATION", raising=False)  # us-central1
        yield
    vertex.forget_credentials()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            provider_env: None) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("google")
    overlay = tmp / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(OVERLAY))
    with running_gateway(request.param, tmp, catalogue_file=overlay) as gw:
        yield gw


@pytest.fixture(autouse=True)
def reset_fake(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "fake" not in request.fixturenames:
        return
    st = request.getfixturevalue("fake").state
    st.fail_next_creates, st.fail_status, st.rate_limit_next, st.retry_delay_seconds = 0, 503, 0, 1.0
    st.block_prompts, st.filter_prompts = [], []
    st.fail_jobs = st.expire_outputs = st.forget_operations = False
    st.render_seconds = RENDER_SECONDS


# ---------------------------------------------------------------- helpers

def png_data_url(colour: tuple[int, int, int], size: tuple[int, int] = (64, 36)) -> tuple[str, bytes]:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode(), data


def accepted(api: httpx.Client, **body: Any) -> dict[str, Any]:
    r = api.post("/v1/videos", json={"prompt": PROMPT, **body})
    assert r.status_code == 202, r.text
    return r.json()


def wait_done(api: httpx.Client, video_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/v1/videos/{video_id}").json()
        if body["status"] in ("completed", "failed", "cancelled", "expired"):
            return body
        assert time.monotonic() < deadline, f"{video_id} still {body['status']} after {timeout} s"
        time.sleep(0.1)


def outcomes(body: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    return [(a["provider"], a["outcome"], a["status"]) for a in body["attempts"]]


def last_create(fake: RunningFake, prompt: str) -> Any:
    found = [r for r in fake.state.creates if isinstance(r.body, dict)
             and r.body["instances"][0].get("prompt") == prompt]
    assert found, f"no create with prompt {prompt!r}"
    return found[-1]


def probe_content(api: httpx.Client, video_id: str, tmp: Path, index: int = 0) -> media.MediaInfo:
    r = api.get(f"/v1/videos/{video_id}/content", params={"index": index})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("video/mp4")
    path = tmp / f"{video_id}-{index}.mp4"
    path.write_bytes(r.content)
    return media.probe(path)


# ---------------------------------------------------------------- Gemini API through the gateway

def test_studio_create_poll_download(api: httpx.Client, fake: RunningFake, tmp_path: Path) -> None:
    prompt = f"{PROMPT} (studio {secrets.token_hex(4)})"
    created = accepted(api, model="google/veo-3.1", prompt=prompt, seconds=4, resolution="720p",
                       aspect_ratio="9:16", sample_count=2, negative_prompt="text overlays", enhance_prompt=False,
                       person_generation="allow_all", generate_audio=False, provider=STUDIO_ONLY)
    assert created["provider"] == "google-ai-studio"
    body = wait_done(api, created["id"])
    assert body["status"] == "completed", body
    assert len(body["outputs"]) == 2

    sent = last_create(fake, prompt)
    assert sent.path == "/v1beta/models/veo-3.1-generate-preview:predictLongRunning"
    assert sent.headers["x-goog-api-key"] == STUDIO_KEY
    assert "authorization" not in sent.headers
    assert sent.body == {"instances": [{"prompt": prompt}], "parameters": {
        "aspectRatio": "9:16", "resolution": "720p", "durationSeconds": 4, "sampleCount": 2,
        "negativePrompt": "text overlays", "enhancePrompt": False, "personGeneration": "allow_all"}}

    # The operation was polled with the key, each sample downloaded through the key-protected
    # files/{id}:download, whose redirect to the signed URL was followed without the key.
    [op] = [o for o in fake.state.operations.values() if o.prompt == prompt]
    polls = fake.state.find_requests("GET", f"/v1beta/{op.name}")
    assert polls and all(p.headers["x-goog-api-key"] == STUDIO_KEY for p in polls)
    for fid in op.file_ids:
        # (a copy the runner retried would show up twice; every one must look like this)
        downloads = fake.state.find_requests("GET", f"/v1beta/files/{fid}:download")
        assert downloads and all(d.status == 302 and d.query == {"alt": "media"}
                                 and d.headers["x-goog-api-key"] == STUDIO_KEY for d in downloads)
        signed = fake.state.find_requests("GET", f"/_signed/files/{fid}")
        assert signed and all(g.status == 200 and "x-goog-api-key" not in g.headers for g in signed)

    expected = render_media("video", "720x1280", "4")
    for index in (0, 1):
        info = probe_content(api, created["id"], tmp_path, index)
        assert (info.width, info.height) == (720, 1280)
        assert info.duration_seconds == pytest.approx(4.0, abs=0.2)
    assert api.get(f"/v1/videos/{created['id']}/content").content == expected


def test_studio_job_failure(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_jobs = True
    body = wait_done(api, accepted(api, model="google/veo-3.1", seconds=4, provider=STUDIO_ONLY)["id"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "internal"  # google.rpc.Code 13
    assert "internal error" in body["error"]["message"]


def test_studio_content_policy_at_submit(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.block_prompts = ["forbidden"]
    r = api.post("/v1/videos", json={"model": "google/veo-3.1", "prompt": "a forbidden thing", "seconds": 4,
                                     "provider": STUDIO_ONLY})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "content_policy_violation" and "Support codes" in err["message"]


@pytest.mark.parametrize("only", [STUDIO_ONLY, VERTEX_ONLY], ids=["studio", "vertex"])
def test_content_policy_after_submit(api: httpx.Client, fake: RunningFake, only: dict[str, Any]) -> None:
    fake.state.filter_prompts = ["filtered"]
    created = accepted(api, model="google/veo-3.1", prompt="a filtered scene", seconds=4, provider=only)
    body = wait_done(api, created["id"])
    assert body["status"] == "failed"
    assert body["error"]["code"] == "content_policy_violation"
    assert "Responsible AI" in body["error"]["message"]


def test_studio_rate_limit_returns_429_with_retry_after(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.rate_limit_next, fake.state.retry_delay_seconds = 1, 7
    r = api.post("/v1/videos", json={"model": "google/veo-3.1", "prompt": PROMPT, "seconds": 4,
                                     "provider": STUDIO_ONLY})
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "7"  # from google.rpc.RetryInfo.retryDelay "7s"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_studio_rate_limit_falls_back_to_vertex(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.rate_limit_next = 1  # only the Gemini API create is refused
    created = accepted(api, model="google/veo-3.1", seconds=4)
    assert outcomes(created) == [("google-ai-studio", "error", 429), ("google-vertex", "accepted", None)]
    assert wait_done(api, created["id"])["status"] == "completed"


def test_studio_wrong_key(api: httpx.Client, fake: RunningFake) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AISTATS_PROVIDER_GOOGLE_AI_STUDIO_API_KEY", "AIza-wrong")
        r = api.post("/v1/videos", json={"model": "google/veo-3.1", "prompt": PROMPT, "seconds": 4,
                                         "provider": STUDIO_ONLY})
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "provider_auth_failed"
        assert "API key not valid" in r.json()["error"]["message"]
        # With Vertex also configured the job moves on to it.
        created = accepted(api, model="google/veo-3.1", seconds=4)
        assert outcomes(created) == [("google-ai-studio", "error", 400), ("google-vertex", "accepted", None)]
        assert created["attempts"][0]["code"] == "provider_auth_failed"


def test_studio_output_gone(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.expire_outputs = True
    body = wait_done(api, accepted(api, model="google/veo-3.1", seconds=4, provider=STUDIO_ONLY)["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "output_unavailable", body


def test_studio_operation_gone(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.forget_operations = True
    body = wait_done(api, accepted(api, model="google/veo-3.1", seconds=4, provider=STUDIO_ONLY)["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "provider_job_not_found", body


@pytest.mark.parametrize("only", [STUDIO_ONLY, VERTEX_ONLY], ids=["studio", "vertex"])
def test_cancel_stops_polling(api: httpx.Client, fake: RunningFake, only: dict[str, Any]) -> None:
    fake.state.render_seconds = 60
    prompt = f"{PROMPT} (cancel {only['only'][0]} {secrets.token_hex(4)})"
    created = accepted(api, model="google/veo-3.1", prompt=prompt, seconds=4, provider=only)
    time.sleep(0.3)
    r = api.post(f"/v1/videos/{created['id']}/cancel")
    assert r.status_code == 200, r.text
    assert wait_done(api, created["id"])["status"] == "cancelled"
    # Neither API has a cancel for these operations: nothing was sent, and polling stopped.
    assert not [q for q in fake.state.requests if ":cancel" in q.path or q.method == "DELETE"]
    [op] = [o for o in fake.state.operations.values() if o.prompt == prompt]
    count = len([q for q in fake.state.requests if op.short_id in q.path or
                 (isinstance(q.body, dict) and q.body.get("operationName") == op.name)])
    time.sleep(0.8)  # several poll intervals
    assert len([q for q in fake.state.requests if op.short_id in q.path or
                (isinstance(q.body, dict) and q.body.get("operationName") == op.name)]) == count


@pytest.mark.parametrize("model,provider", [(FALLBACK_STUDIO, "google-ai-studio"), (FALLBACK_VERTEX, "google-vertex")])
def test_fallback_to_local_on_503(api: httpx.Client, fake: RunningFake, tmp_path: Path, model: str,
                                  provider: str) -> None:
    fake.state.fail_next_creates, fake.state.fail_status = 1, 503
    created = accepted(api, model=model, seconds=1)  # 1 s: the local renderer is quick
    assert created["provider"] == "local"
    assert outcomes(created) == [(provider, "error", 503), ("local", "accepted", None)]
    assert created["attempts"][0]["code"] == "provider_unavailable"
    body = wait_done(api, created["id"])
    assert body["status"] == "completed", body
    info = probe_content(api, created["id"], tmp_path)
    assert (info.width, info.height) == (1280, 720)


# ---------------------------------------------------------------- Vertex AI through the gateway

def test_vertex_create_poll_inline_download(api: httpx.Client, fake: RunningFake, tmp_path: Path) -> None:
    prompt = f"{PROMPT} (vertex inline {secrets.token_hex(4)})"
    grants_before = len(fake.state.token_grants)
    created = accepted(api, model="google/veo-3.1", prompt=prompt, seconds=4, resolution="720p",
                       aspect_ratio="16:9", seed=42, compression_quality=50, generate_audio=False,
                       enhance_prompt=True, negative_prompt="rain on the lens", person_generation="allow_adult",
                       provider=VERTEX_ONLY)
    assert created["provider"] == "google-vertex"
    body = wait_done(api, created["id"])
    assert body["status"] == "completed", body

    sent = last_create(fake, prompt)
    assert sent.path == (f"/v1/projects/{PROJECT}/locations/us-central1/publishers/google/models/"
                         "veo-3.1-generate-001:predictLongRunning")
    token = sent.headers["authorization"].removeprefix("Bearer ")
    assert token in fake.state.tokens and fake.state.tokens[token][0] == SA_EMAIL
    assert "x-goog-api-key" not in sent.headers
    assert sent.body == {"instances": [{"prompt": prompt}], "parameters": {
        "aspectRatio": "16:9", "resolution": "720p", "durationSeconds": 4, "negativePrompt": "rain on the lens",
        "enhancePrompt": True, "personGeneration": "allow_adult", "generateAudio": False, "seed": 42,
        "compressionQuality": "optimized"}}
    # The token came from a verified JWT-bearer grant (signed with our throwaway key).
    assert len(fake.state.token_grants) <= grants_before + 1
    claims = fake.state.token_grants[-1]
    assert claims["iss"] == SA_EMAIL and claims["scope"] == SCOPE and claims["aud"] == GOOGLE_TOKEN_AUDIENCE
    [op] = [o for o in fake.state.operations.values() if o.prompt == prompt]
    fetches = [q for q in fake.state.find_requests("POST") if q.path.endswith(":fetchPredictOperation")
               and isinstance(q.body, dict) and q.body.get("operationName") == op.name]
    assert fetches and fetches[0].path == (f"/v1/projects/{PROJECT}/locations/us-central1/publishers/google/"
                                           "models/veo-3.1-generate-001:fetchPredictOperation")
    info = probe_content(api, created["id"], tmp_path)
    assert (info.width, info.height) == (1280, 720)
    assert info.duration_seconds == pytest.approx(4.0, abs=0.2)
    assert api.get(f"/v1/videos/{created['id']}/content").content == render_media("video", "1280x720", "4")


def test_vertex_images_and_gcs_output(api: httpx.Client, fake: RunningFake, tmp_path: Path) -> None:
    prompt = f"{PROMPT} (vertex images {secrets.token_hex(4)})"
    first_url, first = png_data_url((200, 30, 30))
    last_url, last = png_data_url((30, 200, 30))
    ref_url, ref = png_data_url((30, 30, 200))
    created = accepted(api, model="google/veo-3.1", prompt=prompt, seconds=8, resize_mode="pad",
                       compression_quality=95, provider=VERTEX_ONLY,
                       provider_params={"storageUri": "gs://veo-out/renders"},
                       input_references=[
                           {"type": "image_url", "role": "first_frame", "image_url": {"url": first_url}},
                           {"type": "image_url", "role": "last_frame", "image_url": {"url": last_url}},
                           {"type": "image_url", "role": "reference", "reference_type": "asset",
                            "image_url": {"url": ref_url}}])
    body = wait_done(api, created["id"])
    assert body["status"] == "completed", body

    sent = last_create(fake, prompt)
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    assert sent.body["instances"] == [{
        "prompt": prompt, "image": {"bytesBase64Encoded": b64(first), "mimeType": "image/png"},
        "lastFrame": {"bytesBase64Encoded": b64(last), "mimeType": "image/png"},
        "referenceImages": [{"image": {"bytesBase64Encoded": b64(ref), "mimeType": "image/png"},
                             "referenceType": "asset"}]}]
    params = sent.body["parameters"]
    assert (params["resizeMode"], params["compressionQuality"], params["storageUri"], params["durationSeconds"],
            params["generateAudio"]) == ("pad", "lossless", "gs://veo-out/renders", 8, True)
    # The output was a gs:// object, fetched from the Cloud Storage JSON API with the same bearer token.
    [op] = [o for o in fake.state.operations.values() if o.prompt == prompt]
    [got] = fake.state.find_requests("GET", f"/storage/v1/b/veo-out/o/renders/{op.short_id}/sample_0.mp4")
    assert got.status == 200 and got.query == {"alt": "media"}
    assert got.headers["authorization"] == sent.headers["authorization"]
    info = probe_content(api, created["id"], tmp_path)
    assert (info.width, info.height) == (1280, 720)
    assert info.duration_seconds == pytest.approx(8.0, abs=0.2)


def test_vertex_refreshes_a_refused_token(api: httpx.Client, fake: RunningFake) -> None:
    accepted(api, model="google/veo-3.1", seconds=4, provider=VERTEX_ONLY)  # make sure a token is cached
    grants = len(fake.state.token_grants)
    fake.state.revoke_tokens()
    created = accepted(api, model="google/veo-3.1", seconds=4, provider=VERTEX_ONLY)
    assert wait_done(api, created["id"])["status"] == "completed"
    assert len(fake.state.token_grants) == grants + 1  # one 401, one new grant, the call repeated


def test_vertex_unknown_signing_key(api: httpx.Client, fake: RunningFake) -> None:
    other_private, _ = _rsa_pair()  # same account and key id, but not the key the fake trusts
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AISTATS_PROVIDER_GOOGLE_VERTEX_API_KEY",
                  json.dumps(_service_account(other_private, fake.url + "/token")))
        r = api.post("/v1/videos", json={"model": "google/veo-3.1", "prompt": PROMPT, "seconds": 4,
                                         "provider": VERTEX_ONLY})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "provider_auth_failed" and "Invalid JWT Signature" in err["message"]


def test_vertex_job_failure_and_submit_errors(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_jobs = True
    body = wait_done(api, accepted(api, model="google/veo-3.1", seconds=4, provider=VERTEX_ONLY)["id"])
    assert body["status"] == "failed" and body["error"]["code"] == "internal"
    fake.state.fail_jobs = False
    fake.state.block_prompts = ["forbidden"]
    r = api.post("/v1/videos", json={"model": "google/veo-3.1", "prompt": "forbidden", "seconds": 4,
                                     "provider": VERTEX_ONLY})
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_policy_violation", r.text
    fake.state.rate_limit_next, fake.state.retry_delay_seconds = 1, 3
    r = api.post("/v1/videos", json={"model": "google/veo-3.1", "prompt": PROMPT, "seconds": 4,
                                     "provider": VERTEX_ONLY})
    assert r.status_code == 429 and r.headers["retry-after"] == "3", r.text


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
    b64 = lambda role: base64.b64encode(b"\x89PNG-" + role.encode()).decode()  # noqa: E731
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
    path.write_text(json.dumps(_service_account(_rsa_pair()[0], "https://oauth2.googleapis.com/token")))
    first = vertex._account(ctx)
    assert vertex._account(ctx) is first  # cached
    path.write_text(json.dumps(_service_account(_rsa_pair()[0], "https://oauth2.googleapis.com/token", "k2")))
    assert vertex._account(ctx) is not first  # a rotated key file is used at once


def test_unreachable_token_endpoint_is_unavailable() -> None:
    info = _service_account(_rsa_pair()[0], "http://127.0.0.1:9/token", "unreachable")

    async def main() -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            ctx = CallContext(http=http, api_key=json.dumps(info), base_url="http://127.0.0.1:9")
            with pytest.raises(ProviderError) as e:
                await vertex.adapter.submit(_request(), ctx)
            assert e.value.kind == "unavailable" and "token endpoint" in e.value.message

    asyncio.run(main())
