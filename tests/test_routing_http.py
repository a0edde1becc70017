"""Routing through a real gateway (SQLite and PostgreSQL) and the OpenAI fake: the circuit breaker
skips a failing provider and tries it again after the cooldown (the gateway's breaker runs on an
injected clock), the provider-pinned model form, ``allow_fallbacks=false`` and ``max_price``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.gateway import BACKENDS, Gateway
from tests.support.inference import Upstream, fake_fixture
from tests.support.providers import gateway_with

MODEL = "openai/test-route"  # openai, then local


def _offer(provider: str, slug: str, price: str) -> dict[str, Any]:
    return {
        "provider": provider, "provider_model_slug": slug, "endpoints": ["video.generation"],
        "input_modalities": ["text"], "output_modalities": ["video"],
        "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": price}],
        "parameters": {"video.generation": {
            "duration": {"values": [4], "default": 4, "aliases": ["seconds"]},
            "resolution": {"values": ["720p"], "default": "720p"},
            "aspect_ratio": {"values": ["16:9"], "default": "16:9"},
        }},
    }


OVERLAY = {"models": [{
    "model_id": MODEL, "name": MODEL, "organisation": "openai", "status": "active", "input_types": ["text"],
    "output_types": ["video"], "providers": [_offer("openai", "sora-2", "0.10"), _offer("local", "procedural", "0")],
}]}
BASE = {"model": MODEL, "prompt": "a kite", "seconds": 4, "size": "1280x720"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


fake = fake_fixture("openai", Upstream("sk-test", knobs={"render_seconds": 0.2}))


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            fake: RunningFake) -> Iterator[Gateway]:
    with gateway_with(request.param, tmp_path_factory.mktemp("routing-http"), OVERLAY, breaker_threshold=2,
                      breaker_cooldown_seconds=30.0) as gw:
        yield gw


@pytest.fixture()
def api(gateway: Gateway, fake: RunningFake) -> Iterator[httpx.Client]:
    breaker = gateway.app.state.gateway.breaker
    breaker.clock = Clock()
    breaker._health.clear()
    yield gateway.client(gateway.create_key("routing", credits_usd=10))
    fake.state.fail_next_creates, fake.state.fail_status = 0, 503


def _outcomes(video: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(a["provider"], a["outcome"], a["code"]) for a in video["attempts"]]


def test_breaker_skips_a_failing_provider_then_tries_it_after_the_cooldown(
        gateway: Gateway, api: httpx.Client, fake: RunningFake) -> None:
    breaker = gateway.app.state.gateway.breaker
    fake.state.fail_status, fake.state.fail_next_creates = 503, 2
    for _ in range(2):
        r = api.post("/v1/videos", json=BASE)
        assert r.status_code == 202, r.text
        assert [o[:2] for o in _outcomes(r.json())] == [("openai", "error"), ("local", "accepted")]
    assert breaker.state("openai") == "open"
    creates = len(fake.state.creates)
    r = api.post("/v1/videos", json=BASE)
    assert r.status_code == 202, r.text
    assert _outcomes(r.json()) == [("openai", "skipped", "circuit_open"), ("local", "accepted", None)]
    assert len(fake.state.creates) == creates  # not called while open
    assert 'aistats_provider_circuit_open{provider="openai"} 1.0' in api.get("/metrics").text
    breaker.clock.now += 30.0  # the cooldown: half-open, tried again
    r = api.post("/v1/videos", json=BASE)
    assert r.status_code == 202, r.text
    assert r.json()["provider"] == "openai" and _outcomes(r.json()) == [("openai", "accepted", None)]
    assert breaker.state("openai") == "closed"


def test_pinned_model_and_no_fallbacks(api: httpx.Client, fake: RunningFake) -> None:
    r = api.post("/v1/videos", json={**BASE, "model": f"local:{MODEL}"})
    assert r.status_code == 202, r.text
    assert r.json()["provider"] == "local" and r.json()["model"] == MODEL
    fake.state.fail_status, fake.state.fail_next_creates = 503, 1
    r = api.post("/v1/videos", json={**BASE, "provider": {"allow_fallbacks": False}})
    assert r.status_code == 503, r.text  # local is not tried
    r = api.post("/v1/videos", json={**BASE, "model": f"together:{MODEL}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_provider"
    assert r.json()["error"]["param"] == "model"


def test_max_price_and_sort(api: httpx.Client) -> None:
    r = api.post("/v1/videos", json={**BASE, "provider": {"max_price": {"video": 0.05}}})
    assert r.status_code == 202, r.text
    assert r.json()["provider"] == "local"  # openai's 0.10 USD/s is above the cap
    r = api.post("/v1/videos", json={**BASE, "provider": {"sort": "price"}})
    assert r.status_code == 202 and r.json()["provider"] == "local"
    r = api.post("/v1/videos", json={**BASE, "provider": {"max_price": {"video": -1}}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.max_price.video"
    r = api.post("/v1/videos", json={**BASE, "provider": {"sort": "fastest"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.sort"
