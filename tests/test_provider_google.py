"""Google Veo adapters (``google-ai-studio`` = Gemini API, ``google-vertex`` = Vertex AI) against the fake.

One fake (``providers/fakes/google.py``) serves the Gemini API, Vertex AI, the OAuth2 token endpoint
and the Cloud Storage JSON API. The Vertex adapter authenticates with a throwaway service account
whose RSA key is generated here; the fake verifies the JWT assertion's signature with its public key.
Gateway tests run on SQLite and PostgreSQL; the mapping tests without a gateway are in
``test_provider_google_mapping.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aistats_gateway.providers.fakes.google import GOOGLE_TOKEN_AUDIENCE, SCOPE
from aistats_gateway.providers.fakes.openai import render_media
from aistats_gateway.providers.fakes.testing import RunningFake
from aistats_gateway.providers.google import vertex_video as vertex
from aistats_gateway.videos import media
from tests.support.gateway import Gateway
from tests.support.google_accounts import PROJECT, SA_EMAIL, SA_KEY_ID, rsa_pair, service_account
from tests.support.providers import (
    ProviderKit,
    data_url,
    environment,
    falls_back_to_local,
    final_status,
    image_bytes,
    outcomes,
    provider_fixtures,
    wait_idle,
)
from tests.support.providers import accepted as kit_accepted

STUDIO_KEY = "AIza-test-key"
RENDER_SECONDS = 0.3
PROMPT = "a paper boat drifting down a rainy street"
FALLBACK_STUDIO = "google/test-veo-studio-then-local"
FALLBACK_VERTEX = "google/test-veo-vertex-then-local"
STUDIO_ONLY = {"only": ["google-ai-studio"]}
VERTEX_ONLY = {"only": ["google-vertex"]}


# ---------------------------------------------------------------- service account and fake

@pytest.fixture(scope="module")
def keypair() -> tuple[str, bytes]:
    return rsa_pair()


@pytest.fixture(scope="module")
def fake(keypair: tuple[str, bytes]) -> Iterator[RunningFake]:
    with RunningFake(KIT.fake, prefix="", **KIT.fake_kwargs) as running:
        running.state.register_service_account(SA_EMAIL, SA_KEY_ID, keypair[1], PROJECT)
        yield running


@pytest.fixture(scope="module")
def sa_info(fake: RunningFake, keypair: tuple[str, bytes]) -> dict[str, Any]:
    return service_account(keypair[0], fake.url + "/token")


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


KIT = ProviderKit("google-vertex", api_key=STUDIO_KEY, providers=("google-ai-studio",), overlay=OVERLAY,
                  fake_kwargs={"api_key": STUDIO_KEY, "project": PROJECT, "render_seconds": RENDER_SECONDS})


@pytest.fixture(scope="module")
def provider_env(fake: RunningFake, sa_info: dict[str, Any],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    sa_file = tmp_path_factory.mktemp("sa") / "service-account.json"
    sa_file.write_text(json.dumps(sa_info))
    vertex_env = dataclasses.replace(KIT, api_key=str(sa_file), providers=("google-vertex",))  # the JSON's path
    with environment(KIT.env(fake) | vertex_env.env(fake) | {
        "AISTATS_PROVIDER_GOOGLE_VERTEX_STORAGE_BASE_URL": fake.url,
        "AISTATS_PROVIDER_GOOGLE_VERTEX_PROJECT": None,  # taken from the JSON
        "AISTATS_PROVIDER_GOOGLE_VERTEX_LOCATION": None,  # us-central1
    }):
        yield
    vertex.forget_credentials()


gateway, reset_fake = provider_fixtures(KIT)[2:]  # (this module's own fake and provider_env are above)


# ---------------------------------------------------------------- helpers

def png_data_url(colour: tuple[int, int, int], size: tuple[int, int] = (64, 36)) -> tuple[str, bytes]:
    data = image_bytes(*size, colour=colour)
    return data_url(data), data


def accepted(api: httpx.Client, **body: Any) -> dict[str, Any]:
    return kit_accepted(api, **{"prompt": PROMPT, **body})


def wait_done(api: httpx.Client, video_id: str, timeout: float = 30.0) -> dict[str, Any]:
    return final_status(api, video_id, timeout)


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
def test_cancel_stops_polling(api: httpx.Client, gateway: Gateway, fake: RunningFake, only: dict[str, Any]) -> None:
    fake.state.render_seconds = 60
    prompt = f"{PROMPT} (cancel {only['only'][0]} {secrets.token_hex(4)})"
    created = accepted(api, model="google/veo-3.1", prompt=prompt, seconds=4, provider=only)
    time.sleep(0.3)
    r = api.post(f"/v1/videos/{created['id']}/cancel")
    assert r.status_code == 200, r.text
    assert wait_done(api, created["id"])["status"] == "cancelled"
    wait_idle(gateway, created["id"])  # a poll in flight at the cancel has landed; no other can start
    # Neither API has a cancel for these operations: nothing was sent, and polling stopped.
    assert not [q for q in fake.state.requests if ":cancel" in q.path or q.method == "DELETE"]
    [op] = [o for o in fake.state.operations.values() if o.prompt == prompt]
    count = len([q for q in fake.state.requests if op.short_id in q.path or
                 (isinstance(q.body, dict) and q.body.get("operationName") == op.name)])
    time.sleep(0.8)  # several poll intervals, had polling not stopped
    assert len([q for q in fake.state.requests if op.short_id in q.path or
                (isinstance(q.body, dict) and q.body.get("operationName") == op.name)]) == count


@pytest.mark.parametrize("model,provider", [(FALLBACK_STUDIO, "google-ai-studio"), (FALLBACK_VERTEX, "google-vertex")])
def test_fallback_to_local_on_503(api: httpx.Client, fake: RunningFake, tmp_path: Path, model: str,
                                  provider: str) -> None:
    created, _ = falls_back_to_local(api, fake, provider, model=model, prompt=PROMPT, seconds=1)  # 1 s: quick locally
    assert created["attempts"][0]["code"] == "provider_unavailable"
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
    b64 = lambda data: base64.b64encode(data).decode()
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
    other_private, _ = rsa_pair()  # same account and key id, but not the key the fake trusts
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AISTATS_PROVIDER_GOOGLE_VERTEX_API_KEY",
                  json.dumps(service_account(other_private, fake.url + "/token")))
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
