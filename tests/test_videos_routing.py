"""How a video job runs: provider choice, fallback, polling, download and failure states.

A real gateway (SQLite and PostgreSQL) with an overlay catalogue defining test models served by
``openai`` (a fake OpenAI Videos API on 127.0.0.1) and the built-in ``local`` renderer.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from aistats_gateway.providers.fakes.openai import render_media
from aistats_gateway.providers.fakes.testing import RunningFake
from aistats_gateway.videos.tables import STATUS_RANK
from tests.support.gateway import BACKENDS, Gateway, run_async, running_gateway

MODEL = "openai/test-sora"  # openai, then local
ONLY_OPENAI = "openai/test-sora-only"
ALPHA = "openai/test-sora-alpha"  # openai (alpha), then local
ALPHA_ONLY = "openai/test-sora-alpha-only"
KEY_ENV = "AISTATS_PROVIDER_OPENAI_API_KEY"
PROMPT = "a red kite over a green hill"
BASE = {"model": MODEL, "prompt": PROMPT, "seconds": 4, "size": "1280x720"}
FAKE_RENDER_SECONDS = 1.0


def _offer(provider: str, slug: str, resolutions: list[str], *, alpha: bool = False) -> dict[str, Any]:
    return {
        "provider": provider, "provider_model_slug": slug, "endpoints": ["video.generation"], "alpha": alpha,
        "input_modalities": ["text"], "output_modalities": ["video"],
        "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": "0"}],
        "parameters": {"video.generation": {
            "duration": {"values": [4, 8], "default": 4, "aliases": ["seconds"]},
            "resolution": {"values": resolutions, "default": "720p", "aliases": ["size"]},
            "aspect_ratio": {"values": ["16:9"], "default": "16:9"},
        }},
    }


def _model(model_id: str, offers: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model_id": model_id, "name": model_id, "organisation": "openai", "status": "active",
            "input_types": ["text"], "output_types": ["video"], "providers": offers}


OVERLAY = {"models": [
    _model(MODEL, [_offer("openai", "sora-2", ["720p"]), _offer("local", "procedural-video", ["480p", "720p"])]),
    _model(ONLY_OPENAI, [_offer("openai", "sora-2", ["720p"])]),
    _model(ALPHA, [_offer("openai", "sora-2", ["720p"], alpha=True),
                   _offer("local", "procedural-video", ["480p", "720p"])]),
    _model(ALPHA_ONLY, [_offer("openai", "sora-2", ["720p"], alpha=True)]),
]}


@pytest.fixture(scope="module")
def fake() -> Iterator[RunningFake]:
    # This gateway reads upstream with a 1 s timeout (for the hanging-provider case). Encode the fake's
    # 4 s 1280x720 output before any job downloads it, so a download never waits on the fake's encoder
    # (on a loaded machine a cold encode took over a second and the download was retried).
    render_media("video", "1280x720", "4")
    with RunningFake("openai", render_seconds=FAKE_RENDER_SECONDS) as running:
        yield running


@pytest.fixture(scope="module")
def provider_env(fake: RunningFake) -> Iterator[None]:
    # The adapters read their settings from os.environ at call time (the gateway runs in this process).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, "sk-test")
        mp.setenv("AISTATS_PROVIDER_OPENAI_BASE_URL", fake.base_url)
        mp.setenv("AISTATS_PROVIDER_OPENAI_POLL_INTERVAL", "0.2")
        mp.setenv("AISTATS_PROVIDER_OPENAI_MAX_POLL_INTERVAL", "1")
        yield


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            provider_env: None) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("routing")
    overlay = tmp / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(OVERLAY))
    # A short upstream timeout so the "provider hangs" case falls back quickly.
    with running_gateway(request.param, tmp, catalogue_file=overlay, upstream_timeout_seconds=1.0) as gw:
        yield gw


@pytest.fixture(autouse=True)
def reset_fake(fake: RunningFake) -> Iterator[None]:
    yield
    st = fake.state
    st.fail_next_creates, st.fail_status, st.create_delay_seconds = 0, 503, 0.0
    st.moderation_block_prompts, st.rate_limit_next = [], 0
    st.expire_content, st.fail_jobs, st.render_seconds = False, False, FAKE_RENDER_SECONDS
    st.fail_next_downloads, st.poll_after_ms = 0, None


# ---------------------------------------------------------------- helpers


def create(api: httpx.Client, **overrides: Any) -> httpx.Response:
    return api.post("/v1/videos", json={**BASE, **overrides})


def accepted(api: httpx.Client, **overrides: Any) -> dict[str, Any]:
    r = create(api, **overrides)
    assert r.status_code == 202, r.text
    return r.json()


def wait_done(api: httpx.Client, video_id: str, timeout: float = 30.0) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """Poll until the job is terminal; returns the last body and every (status, progress) seen."""
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/v1/videos/{video_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        seen.append((body["status"], body["progress"]))
        if body["status"] in ("completed", "failed", "cancelled", "expired"):
            return body, seen
        assert time.monotonic() < deadline, f"{video_id} still {body['status']} after {timeout} s"
        time.sleep(0.1)


def assert_forward_only(seen: list[tuple[str, int]]) -> None:
    ranks = [STATUS_RANK[s] for s, _ in seen]
    assert ranks == sorted(ranks), seen
    assert len({s for s, _ in seen if STATUS_RANK[s] == 2}) <= 1, seen
    progress = [p for _, p in seen]
    assert progress == sorted(progress), seen


def outcomes(body: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    return [(a["provider"], a["outcome"], a["status"]) for a in body["attempts"]]


def creates_for(fake: RunningFake, video_id: str) -> list[Any]:
    return [r for r in fake.state.creates if r.headers.get("idempotency-key") == video_id]


def native_id(fake: RunningFake, video_id: str) -> str:
    [job] = [j for j in fake.state.videos.values() if j.idempotency_key == video_id]
    return job.id


def video_ids(api: httpx.Client) -> set[str]:
    return {v["id"] for v in api.get("/v1/videos", params={"limit": 100}).json()["data"]}


def cancel_and_wait(api: httpx.Client, video_id: str) -> None:
    api.post(f"/v1/videos/{video_id}/cancel")
    wait_done(api, video_id)


# ---------------------------------------------------------------- the happy path


def test_openai_happy_path(api: httpx.Client, fake: RunningFake) -> None:
    created = accepted(api)
    vid = created["id"]
    assert created["status"] in ("queued", "in_progress")
    assert created["provider"] == "openai"
    assert outcomes(created) == [("openai", "accepted", None)]

    body, seen = wait_done(api, vid)
    assert body["status"] == "completed", body
    assert_forward_only(seen)
    assert body["progress"] == 100 and body["error"] is None

    # What the gateway sent: one multipart create with its job id as the idempotency key.
    [sent] = creates_for(fake, vid)
    assert sent.status == 200
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["content-type"].startswith("multipart/form-data"), sent.headers["content-type"]
    assert {k: sent.body[k] for k in ("model", "prompt", "seconds", "size")} == {
        "model": "sora-2", "prompt": PROMPT, "seconds": "4", "size": "1280x720"}

    # The output was copied into the gateway's storage: same bytes as the provider's, probed and hashed.
    expected = render_media("video", "1280x720", "4")
    r = api.get(f"/v1/videos/{vid}/content")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("video/mp4")
    assert r.content == expected
    [out] = body["outputs"]
    assert out["sha256"] == hashlib.sha256(expected).hexdigest() == body["asset"]["sha256"]
    assert out["bytes"] == len(expected)
    assert (out["width"], out["height"]) == (1280, 720)
    assert out["duration_seconds"] == pytest.approx(4.0, abs=0.2)
    thumb = api.get(f"/v1/videos/{vid}/content", params={"variant": "thumbnail"})
    assert thumb.status_code == 200 and thumb.headers["content-type"].startswith("image/")
    # Downloaded once, from the provider's content endpoint.
    nid = native_id(fake, vid)
    assert len(fake.state.find_requests("GET", f"/v1/videos/{nid}/content")) == 1


def test_status_never_moves_backwards(gateway: Gateway, api: httpx.Client) -> None:
    """The runner's guarded transitions refuse to move a finished job anywhere else."""
    from aistats_gateway.videos.runner import RunnerContext, transition
    from aistats_gateway.videos.tables import VideoJob

    vid = accepted(api, model="local/procedural-video", size=None, resolution="480p")["id"]
    body, seen = wait_done(api, vid)
    assert body["status"] == "completed"
    assert_forward_only(seen)

    async def attempt(sessions: Any) -> tuple[list[bool], str]:
        ctx = RunnerContext(sessions=sessions, storage=None, http=None, data_dir=gateway.data_dir)
        moved = [await transition(ctx, vid, new) for new in ("queued", "in_progress", "failed", "cancelled")]
        async with sessions() as s:
            job = await s.get(VideoJob, vid)
            return moved, job.status

    moved, status = run_async(attempt, gateway.settings)
    assert moved == [False, False, False, False] and status == "completed"
    assert api.get(f"/v1/videos/{vid}").json()["status"] == "completed"


def test_a_job_lease_is_exclusive_within_one_process(gateway: Gateway, api: httpx.Client, fake: RunningFake) -> None:
    """Two tasks for one job in the same worker (procrastinate can start a re-deferred task while the
    previous one runs) must not both hold it: the lease is not re-entrant."""
    from aistats_gateway.videos.runner import RunnerContext, claim, release

    fake.state.render_seconds = 60.0
    vid = accepted(api)["id"]

    async def claim_twice(sessions: Any) -> tuple[bool, bool]:
        ctx = RunnerContext(sessions=sessions, storage=None, http=None, data_dir=gateway.data_dir, lease_seconds=5)
        deadline = time.monotonic() + 10
        while not await claim(ctx, vid):  # the gateway's engine holds it briefly while it polls
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        again = await claim(ctx, vid)
        await release(ctx, vid, 0.0)
        return True, again

    assert run_async(claim_twice, gateway.settings) == (True, False)
    cancel_and_wait(api, vid)


# ---------------------------------------------------------------- fallback


@pytest.mark.parametrize("status", [503, 429])
def test_fallback_on_provider_error(api: httpx.Client, fake: RunningFake, status: int) -> None:
    fake.state.fail_status, fake.state.fail_next_creates = status, 1
    before = len(fake.state.videos)
    created = accepted(api, resolution="720p", aspect_ratio="16:9", size=None)
    assert created["provider"] == "local"
    assert outcomes(created) == [("openai", "error", status), ("local", "accepted", None)]
    assert created["attempts"][0]["code"]
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "completed", body
    assert outcomes(body) == outcomes(created)
    assert len(fake.state.videos) == before  # the refused create left nothing at the provider


def test_fallback_on_timeout(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.create_delay_seconds = 8.0  # the gateway waits 1 s
    created = accepted(api)
    # The gateway gave up and answered while the fake was still sleeping on the create (its status is
    # recorded only once it answers): causal, unlike an elapsed-time bound on a loaded machine.
    [sent] = [r for r in fake.state.creates if r.headers.get("idempotency-key") == created["id"]]
    assert sent.status is None, sent
    assert created["provider"] == "local"
    assert outcomes(created) == [("openai", "error", None), ("local", "accepted", None)]
    assert created["attempts"][0]["code"] == "provider_timeout"
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "completed", body


def test_every_provider_failing_is_a_503(api: httpx.Client, fake: RunningFake) -> None:
    listed = video_ids(api)
    fake.state.fail_next_creates = 1
    r = create(api, model=ONLY_OPENAI)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "server_error"
    assert video_ids(api) == listed  # the refused job is not kept


def test_provider_400_is_the_callers_error(api: httpx.Client, fake: RunningFake) -> None:
    creates = len(fake.state.creates)
    listed = video_ids(api)
    r = create(api, provider_params={"style": "noir"})  # the fake answers 400 unknown_parameter
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "unknown_parameter"
    assert "style" in err["message"]
    # No fallback to local, and no job left behind.
    assert len(fake.state.creates) == creates + 1
    assert video_ids(api) == listed


# ---------------------------------------------------------------- failures after submit


def test_moderation_failure_after_submit(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.moderation_block_prompts = ["forbidden"]
    created = accepted(api, prompt="a forbidden scene")
    assert created["provider"] == "openai"
    body, seen = wait_done(api, created["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "moderation_blocked"
    assert body["outputs"] == [] and body["content_url"] is None
    assert_forward_only(seen)
    r = api.get(f"/v1/videos/{created['id']}/content")
    assert r.status_code == 409 and r.json()["error"]["code"] == "video_failed"


def test_provider_job_failure(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_jobs = True
    created = accepted(api)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "internal_error"


def test_output_gone_at_the_provider(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.expire_content = True
    created = accepted(api)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "output_unavailable"
    assert "no longer" in body["error"]["message"]


def test_deadline_expires_the_job(api: httpx.Client, fake: RunningFake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.state.render_seconds = 60.0
    monkeypatch.setenv("AISTATS_PROVIDER_OPENAI_DEADLINE_SECONDS", "1.5")
    created = accepted(api)
    monkeypatch.delenv("AISTATS_PROVIDER_OPENAI_DEADLINE_SECONDS")  # the deadline is fixed at submit
    body, seen = wait_done(api, created["id"], timeout=20)
    assert body["status"] == "expired", body
    assert body["error"]["code"] == "deadline_exceeded"
    assert_forward_only(seen)
    created_at, completed_at = body["created_at"], body["completed_at"]
    assert 1 <= completed_at - created_at <= 10


def test_polling_backs_off(api: httpx.Client, fake: RunningFake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.state.render_seconds = 6.0
    monkeypatch.setenv("AISTATS_PROVIDER_OPENAI_MAX_POLL_INTERVAL", "3")
    created = accepted(api)
    body, _ = wait_done(api, created["id"], timeout=60)
    assert body["status"] == "completed", body
    nid = native_id(fake, created["id"])
    times = [r.at for r in fake.state.find_requests("GET", f"/v1/videos/{nid}")]  # the fake's arrival stamps
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # The wait before poll k+1 is 0.2 s x 1.5^k, capped at 3 s. A busy machine (or PostgreSQL's 1 s queue
    # check) only makes a poll later, never sooner, so each recorded gap is at least its scheduled wait
    # (less timer jitter) -- this holds however loaded the machine is, where comparing two gaps does not.
    scheduled = [min(0.2 * 1.5 ** k, 3.0) for k in range(1, len(gaps) + 1)]
    assert all(gap >= 0.9 * wait - 0.02 for gap, wait in zip(gaps, scheduled)), (gaps, scheduled)
    # A fixed 0.2 s interval would poll ~30 times in the 6 s render; the backed-off schedule reaches 6 s by
    # about poll 7, and lateness only removes polls.
    assert 2 <= len(times) <= 8, gaps


def test_provider_poll_hint_is_followed(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.render_seconds, fake.state.poll_after_ms = 3.0, 1200  # openai-poll-after-ms on every status
    created = accepted(api)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "completed", body
    nid = native_id(fake, created["id"])
    times = [r.at for r in fake.state.find_requests("GET", f"/v1/videos/{nid}")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= 1.1, gaps  # the configured 0.2 s (x1.5) would poll sooner


def test_failed_download_is_retried(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_next_downloads = 1
    created = accepted(api)
    body, _ = wait_done(api, created["id"])
    assert body["status"] == "completed", body
    nid = native_id(fake, created["id"])
    assert [r.status for r in fake.state.find_requests("GET", f"/v1/videos/{nid}/content")] == [503, 200]
    assert api.get(f"/v1/videos/{created['id']}/content").content == render_media("video", "1280x720", "4")


# ---------------------------------------------------------------- choosing providers


def test_provider_order_only_ignore(api: httpx.Client) -> None:
    for routing, expected in (({"order": ["local"]}, "local"), ({"order": ["local", "openai"]}, "local"),
                              ({"only": ["local"]}, "local"), ({"ignore": ["openai"]}, "local"),
                              ({"order": ["openai", "local"]}, "openai"), ({"only": ["openai"]}, "openai")):
        created = accepted(api, provider=routing)
        assert created["provider"] == expected, (routing, created)
        assert [a["provider"] for a in created["attempts"]] == [expected]
        cancel_and_wait(api, created["id"])
    r = create(api, provider={"ignore": ["openai", "local"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider"
    r = create(api, provider={"only": ["runway"]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "provider.only" and "runway" in r.json()["error"]["message"]


def test_only_restricts_fallback(api: httpx.Client, fake: RunningFake) -> None:
    fake.state.fail_next_creates = 1
    r = create(api, provider={"only": ["openai"]})
    assert r.status_code == 503, r.text


def test_requested_parameters_choose_providers(api: httpx.Client) -> None:
    created = accepted(api, size=None, resolution="480p", aspect_ratio="16:9")  # openai offers 720p only
    assert created["provider"] == "local" and [a["provider"] for a in created["attempts"]] == ["local"]
    cancel_and_wait(api, created["id"])
    r = create(api, seconds=12)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "seconds" and "openai" in err["message"] and "local" in err["message"]


def test_alpha_providers_need_include_alpha(api: httpx.Client) -> None:
    created = accepted(api, model=ALPHA)
    assert created["provider"] == "local"
    cancel_and_wait(api, created["id"])
    created = accepted(api, model=ALPHA, provider={"include_alpha": True})
    assert created["provider"] == "openai"
    cancel_and_wait(api, created["id"])
    r = create(api, model=ALPHA_ONLY)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "provider.include_alpha"
    assert "include_alpha" in r.json()["error"]["message"]
    created = accepted(api, model=ALPHA_ONLY, provider={"include_alpha": True})
    assert created["provider"] == "openai"
    cancel_and_wait(api, created["id"])


def test_provider_without_credentials(api: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    r = create(api, model=ONLY_OPENAI)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "no_provider_configured"
    assert KEY_ENV in err["message"]
    # A model with another provider is routed there instead.
    created = accepted(api)
    assert created["provider"] == "local" and [a["provider"] for a in created["attempts"]] == ["local"]
    cancel_and_wait(api, created["id"])
