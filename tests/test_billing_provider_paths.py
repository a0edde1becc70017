"""Holds on the provider's terminal paths (real HTTP to the OpenAI fake): completed settles, failed,
expired and refused-at-submit void; a 402 or 429 sends nothing upstream. Both backends."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aistats_gateway.billing import ledger
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.gateway import BACKENDS, Gateway, run_async
from tests.support.inference import Upstream, fake_fixture
from tests.support.providers import gateway_with

USD = 1_000_000_000
MODEL = "openai/priced-sora"
OVERLAY = {"models": [{
    "model_id": MODEL, "name": "Priced Sora", "organisation": "openai", "status": "active",
    "input_types": ["text"], "output_types": ["video"],
    "providers": [{"provider": "openai", "provider_model_slug": "sora-2", "endpoints": ["video.generation"],
                   "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": "0.10"}],
                   "parameters": {"video.generation": {
                       "duration": {"values": [4, 8], "default": 4, "aliases": ["seconds"]},
                       "resolution": {"values": ["720p"], "default": "720p", "aliases": ["size"]},
                       "aspect_ratio": {"values": ["16:9"], "default": "16:9"}}}}],
}]}
BODY = {"model": MODEL, "prompt": "a slow pan over a harbour", "duration": 4}


fake = fake_fixture("openai", Upstream("sk-test", knobs={"render_seconds": 0.5}), {
    "AISTATS_PROVIDER_OPENAI_POLL_INTERVAL": "0.2", "AISTATS_PROVIDER_OPENAI_MAX_POLL_INTERVAL": "0.5"})


@pytest.fixture(scope="module", params=BACKENDS)
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
       fake: RunningFake) -> Iterator[Gateway]:
    with gateway_with(request.param, tmp_path_factory.mktemp("paths"), OVERLAY) as g:
        yield g


@pytest.fixture(autouse=True)
def reset(fake: RunningFake, gw: Gateway) -> Iterator[None]:
    yield
    st = fake.state
    st.fail_next_creates, st.fail_status, st.fail_jobs, st.render_seconds = 0, 503, False, 0.5
    st.moderation_block_prompts = []
    _recompute_all(gw)


def _recompute_all(gw: Gateway) -> None:
    from sqlalchemy import select

    from aistats_gateway.auth.tables import Workspace

    async def work(sessions: Any) -> Any:
        async with sessions() as s:
            return [(await ledger.balance(s, ws), await ledger.recompute(s, ws))
                    for ws in (await s.execute(select(Workspace.id))).scalars()]

    for stored, again in run_async(work, gw.settings):
        assert stored == again


def _client(gw: Gateway, usd: float) -> tuple[str, httpx.Client]:
    key = gw.create_key("paths", credits_usd=usd)
    return key, gw.client(key)


def _settled(c: httpx.Client, vid: str, state: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = c.get(f"/v1/videos/{vid}").json()
        if v["billing"]["state"] == state and v["status"] in ("completed", "failed", "cancelled", "expired"):
            return v
        time.sleep(0.1)
    raise AssertionError(f"{vid}: {v['status']} / {v['billing']}")


def test_completed_settles(gw: Gateway, fake: RunningFake) -> None:
    _, c = _client(gw, 5)
    r = c.post("/v1/videos", json=BODY)
    assert r.status_code == 202, r.text
    v = _settled(c, r.json()["id"], "settled")
    assert v["status"] == "completed" and v["billing"]["settled_nanos"] == 400_000_000
    assert c.get("/v1/credits").json()["balance_nanos"] == 5 * USD - 400_000_000


def test_failed_at_provider_voids(gw: Gateway, fake: RunningFake) -> None:
    fake.state.fail_jobs = True
    _, c = _client(gw, 5)
    r = c.post("/v1/videos", json=BODY)
    assert r.status_code == 202, r.text
    v = _settled(c, r.json()["id"], "void")
    assert v["status"] == "failed" and v["usage"]["cost"] == 0
    cr = c.get("/v1/credits").json()
    assert cr["balance_nanos"] == 5 * USD and cr["held_nanos"] == 0


def test_expired_voids(gw: Gateway, fake: RunningFake, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.state.render_seconds = 60
    monkeypatch.setenv("AISTATS_PROVIDER_OPENAI_DEADLINE_SECONDS", "1")
    _, c = _client(gw, 5)
    r = c.post("/v1/videos", json=BODY)
    assert r.status_code == 202, r.text
    v = _settled(c, r.json()["id"], "void")
    assert v["status"] == "expired"
    assert c.get("/v1/credits").json()["held_nanos"] == 0


def test_refused_at_submit_voids_in_the_same_request(gw: Gateway, fake: RunningFake) -> None:
    fake.state.fail_next_creates, fake.state.fail_status = 5, 503
    _, c = _client(gw, 5)
    r = c.post("/v1/videos", json=BODY)
    assert r.status_code == 503, r.text
    cr = c.get("/v1/credits").json()
    assert cr["held_nanos"] == 0 and cr["balance_nanos"] == 5 * USD
    assert [e["kind"] for e in cr["entries"]][:2] == ["void", "hold"]


def test_402_and_429_send_nothing_upstream(gw: Gateway, fake: RunningFake) -> None:
    before = len(fake.state.creates)
    _, poor = _client(gw, 0.1)
    r = poor.post("/v1/videos", json=BODY)
    assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_credits"
    key, c = _client(gw, 5)
    key_id = key[len("aistats_v1_sk_"):].split("_")[0]
    subprocess.run([sys.executable, "-m", "aistats_gateway.cli", "keys", "limits", key_id, "--rpm", "1"],
                   env=gw.env(), check=True, capture_output=True)
    assert c.get("/v1/models?limit=1").status_code == 200
    r = c.post("/v1/videos", json=BODY)
    assert r.status_code == 429 and "retry-after" in r.headers
    assert len(fake.state.creates) == before
