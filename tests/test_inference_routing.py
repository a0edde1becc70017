"""Inference on the shared routing layer, through a real gateway (SQLite and PostgreSQL) and the groq and
together fakes: the circuit breaker (threshold 2, the gateway's breaker on an injected clock) skips a
failing provider for its cooldown and tries it again after; the provider-pinned model form;
``sort=price`` and ``max_price``; ``allow_fallbacks=false``; a stream that fails after its first byte
is never retried elsewhere; the routing object's accepted spellings."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.gateway import BACKENDS, Gateway, running_gateway

MODEL = "meta/test-route-chat"  # together (expensive) is listed first, groq (cheap) second
CATALOGUE = Path(__file__).resolve().parents[1] / "src/aistats_gateway/catalogue/data/catalogue.yaml"
COOLDOWN = 30.0


def _overlay() -> dict[str, Any]:
    """A copy of meta/llama-3.3-70b under MODEL, its providers reordered and repriced."""
    doc = yaml.safe_load(CATALOGUE.read_text())
    base = next(m for m in doc["models"] if m["model_id"] == "meta/llama-3.3-70b")
    model = copy.deepcopy(base)
    model.update(model_id=MODEL, name=MODEL, aliases=[])
    for k in ("release_date", "announcement_date"):  # yaml dates; the overlay is stored as JSON
        model.pop(k, None)
    by_id = {p["provider"]: p for p in model["providers"]}
    together, groq = by_id["together"], by_id["groq"]
    together["pricing"] = [{"meter": "input_tokens", "unit": "token", "unit_size": 1000000, "price": "1.00"},
                           {"meter": "output_tokens", "unit": "token", "unit_size": 1000000, "price": "1.00"}]
    groq["pricing"] = [{"meter": "input_tokens", "unit": "token", "unit_size": 1000000, "price": "0.10"},
                       {"meter": "output_tokens", "unit": "token", "unit_size": 1000000, "price": "0.20"}]
    model["providers"] = [together, groq]
    return {"models": [model]}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, RunningFake]]:
    started = {"groq": RunningFake("groq"), "together": RunningFake("together")}
    for f in started.values():
        f.start()
    yield started
    for f in started.values():
        f.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            fakes: dict[str, RunningFake]) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("inference-routing")
    overlay = tmp / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(_overlay()))
    with pytest.MonkeyPatch.context() as mp:
        for pid, key in (("groq", "gsk_test"), ("together", "together-test")):
            mp.setenv(f"AISTATS_PROVIDER_{pid.upper()}_BASE_URL", fakes[pid].base_url)
            mp.setenv(f"AISTATS_PROVIDER_{pid.upper()}_API_KEY", key)
        with running_gateway(request.param, tmp, catalogue_file=overlay, breaker_threshold=2,
                             breaker_cooldown_seconds=COOLDOWN) as gw:
            yield gw


def st(fake: RunningFake) -> Any:
    return getattr(fake.app.state, "inference", None) or fake.state


@pytest.fixture()
def api(gateway: Gateway, fakes: dict[str, RunningFake]) -> Iterator[httpx.Client]:
    breaker = gateway.app.state.gateway.breaker
    breaker.clock = Clock()
    breaker._health.clear()
    for f in fakes.values():
        s = st(f)
        s.fail_next, s.fail_status, s.fail_stream_after = 0, 503, None
    yield gateway.client(gateway.create_key("inference routing", credits_usd=10))
    for f in fakes.values():
        s = st(f)
        s.fail_next, s.fail_status, s.fail_stream_after = 0, 503, None


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "route me"}], **extra}


def _gen_id(r: httpx.Response, stream: bool) -> str:
    assert r.status_code == 200, r.text
    if stream:
        return str(json.loads(r.text.split("\n\n")[0][6:])["id"])
    return str(r.json()["id"])


def _attempts(api: httpx.Client, gen_id: str) -> list[tuple[str, bool, str | None]]:
    rec = api.get(f"/v1/generations/{gen_id}").json()
    return [(a["provider"], a["ok"], a["code"]) for a in rec["attempts"]]


def test_default_order_is_the_catalogue_s(api: httpx.Client) -> None:
    r = api.post("/v1/chat/completions", json=_chat())
    assert r.status_code == 200, r.text
    assert r.json()["provider"] == "together"
    assert _attempts(api, r.json()["id"]) == [("together", True, None)]
    rec = api.get(f"/v1/generations/{r.json()['id']}").json()
    a = rec["attempts"][0]
    assert a["outcome"] == "accepted" and isinstance(a["at"], int) and a["ms"] is not None


def test_breaker_skips_a_failing_provider_for_the_cooldown(gateway: Gateway, api: httpx.Client,
                                                           fakes: dict[str, RunningFake]) -> None:
    breaker = gateway.app.state.gateway.breaker
    together, groq = st(fakes["together"]), st(fakes["groq"])
    together.fail_next, together.fail_status = 2, 503
    for stream in (False, True):
        r = api.post("/v1/chat/completions", json=_chat(stream=stream))
        gen = _gen_id(r, stream)
        assert [a[:2] for a in _attempts(api, gen)] == [("together", False), ("groq", True)]
    assert breaker.state("together") == "open"
    calls = together.request_count
    for stream in (False, True):
        r = api.post("/v1/chat/completions", json=_chat(stream=stream))
        gen = _gen_id(r, stream)
        assert _attempts(api, gen) == [("together", False, "circuit_open"), ("groq", True, None)]
    assert together.request_count == calls  # not called while open
    assert 'aistats_provider_circuit_open{provider="together"} 1.0' in api.get("/metrics").text
    # still open just before the cooldown ends; half-open (tried again) once it has
    breaker.clock.now += COOLDOWN - 0.5
    r = api.post("/v1/chat/completions", json=_chat())
    assert r.json()["provider"] == "groq"
    breaker.clock.now += 0.5
    r = api.post("/v1/chat/completions", json=_chat())
    assert r.status_code == 200, r.text
    assert r.json()["provider"] == "together" and _attempts(api, r.json()["id"]) == [("together", True, None)]
    assert breaker.state("together") == "closed" and together.request_count == calls + 1
    assert groq.request_count >= 4


def test_every_provider_skipped_or_failed_costs_nothing(gateway: Gateway, api: httpx.Client,
                                                        fakes: dict[str, RunningFake]) -> None:
    breaker = gateway.app.state.gateway.breaker
    for pid in ("together", "groq"):
        for _ in range(2):
            breaker.record_failure(pid, retryable=True)
    r = api.post("/v1/chat/completions", json=_chat())
    assert r.status_code == 502, r.text
    calls = st(fakes["together"]).request_count + st(fakes["groq"]).request_count
    r = api.post("/v1/chat/completions", json=_chat(stream=True))
    assert r.status_code == 502, r.text
    assert st(fakes["together"]).request_count + st(fakes["groq"]).request_count == calls


def test_pinned_model(api: httpx.Client) -> None:
    r = api.post("/v1/chat/completions", json=_chat(model=f"groq:{MODEL}"))
    assert r.status_code == 200, r.text
    assert r.json()["provider"] == "groq"
    assert api.get(f"/v1/generations/{r.json()['id']}").json()["model"] == MODEL
    r = api.post("/v1/chat/completions", json=_chat(model=f"groq:{MODEL}", provider={"only": ["together"]}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "provider_qualified_model_conflict"
    r = api.post("/v1/chat/completions", json=_chat(model=f"openai:{MODEL}"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_provider"
    assert r.json()["error"]["param"] == "model"


def test_sort_price_and_max_price(api: httpx.Client) -> None:
    r = api.post("/v1/chat/completions", json=_chat(provider={"sort": "price"}))
    assert r.status_code == 200 and r.json()["provider"] == "groq"
    r = api.post("/v1/chat/completions", json=_chat(routing={"sort": {"by": "cost"}}))  # the original's spellings
    assert r.status_code == 200 and r.json()["provider"] == "groq"
    r = api.post("/v1/chat/completions", json=_chat(provider={"order": ["together"], "sort": "price"}))
    assert r.status_code == 200 and r.json()["provider"] == "together"  # order wins over sort
    r = api.post("/v1/chat/completions", json=_chat(provider={"max_price": {"prompt": 0.5}}))
    assert r.status_code == 200 and r.json()["provider"] == "groq"  # together's 1.00 USD/M is above the cap
    r = api.post("/v1/chat/completions", json=_chat(provider={"maxPrice": {"completion": 0.1}}))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "provider.max_price" and r.json()["error"]["code"] == "no_provider"
    r = api.post("/v1/chat/completions", json=_chat(provider={"max_price": {"prompt": -1}}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.max_price.prompt"


def test_allow_fallbacks_false(api: httpx.Client, fakes: dict[str, RunningFake]) -> None:
    together, groq = st(fakes["together"]), st(fakes["groq"])
    for stream in (False, True):
        together.fail_next = 1
        calls = groq.request_count
        r = api.post("/v1/chat/completions", json=_chat(stream=stream, provider={"allowFallbacks": False}))
        assert r.status_code == 502, r.text
        assert groq.request_count == calls  # groq is not tried
    r = api.post("/v1/chat/completions", json=_chat(provider={"allow_fallbacks": "no"}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.allow_fallbacks"


def test_no_fallback_after_the_first_byte(api: httpx.Client, fakes: dict[str, RunningFake]) -> None:
    together, groq = st(fakes["together"]), st(fakes["groq"])
    together.reply_text = "one two three four five six"
    together.fail_stream_after = 2
    calls = groq.request_count
    try:
        r = api.post("/v1/chat/completions", json=_chat(stream=True))
    finally:
        together.reply_text = None
    gen = _gen_id(r, True)
    blocks = [b for b in r.text.split("\n\n") if b.strip()]
    assert json.loads(blocks[-1][6:])["object"] == "error"
    assert groq.request_count == calls  # committed to together at its first event
    assert _attempts(api, gen) == [("together", True, None)]
    rec = api.get(f"/v1/generations/{gen}").json()
    assert rec["status"] == "failed" and rec["cost_nanos"] == 0


def test_routing_object_errors(api: httpx.Client) -> None:
    r = api.post("/v1/chat/completions", json=_chat(provider={"data_collection": "deny"}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_routing_filter"
    r = api.post("/v1/chat/completions", json=_chat(provider={"sort": "cheapest"}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.sort"
    r = api.post("/v1/chat/completions", json=_chat(provider={"order": ["nobody"]}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.order"
    r = api.post("/v1/chat/completions", json=_chat(provider="groq"))  # a bare id is provider.only
    assert r.status_code == 200 and r.json()["provider"] == "groq"


def test_sort_throughput_uses_the_observed_rates(gateway: Gateway, api: httpx.Client) -> None:
    breaker = gateway.app.state.gateway.breaker
    for stream in (False, True):
        breaker._health.clear()
        r = api.post("/v1/chat/completions", json=_chat(stream=stream, provider={"only": ["together"]}))
        assert r.status_code == 200, r.text
        _ = r.text  # read the stream to its end: the rate is observed when it finishes
        rate = breaker.throughput("together")
        assert rate is not None and rate > 0
    # the ranking itself, on injected observations (no wall-clock race)
    breaker._health.clear()
    breaker.observe_throughput("together", 10.0)
    breaker.observe_throughput("groq", 1000.0)
    r = api.post("/v1/chat/completions", json=_chat(provider={"sort": "throughput"}))
    assert r.status_code == 200 and r.json()["provider"] == "groq"
