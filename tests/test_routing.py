"""routing: model resolution (aliases, provider slugs, ``provider:org/model`` pinning), the provider
object (order, only, ignore, include_alpha, allow_fallbacks, require_parameters, sort, max_price),
the one fallback loop with its attempt records, and the circuit breaker on an injected clock."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aistats_gateway import routing
from aistats_gateway.catalogue.schema import CatalogueFile
from aistats_gateway.catalogue.service import Snapshot, build_snapshot
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import VIDEO, ProviderError
from tests.support.gateway import Gateway

EP = "video.generation"
PROVIDERS = ("rt-a", "rt-b", "rt-c", "rt-alpha", "rt-nokey")


def _offer(pid: str, price: str, **extra: Any) -> dict[str, Any]:
    return {"provider": pid, "provider_model_slug": f"{pid}-slug", "endpoints": [EP],
            "pricing": [{"meter": "output_video_seconds", "unit": "second", "price": price}],
            "parameters": {EP: {"duration": {"values": [4, 8]}, **extra}}, **(
                {"alpha": True} if pid == "rt-alpha" else {})}


@pytest.fixture()
def snap(monkeypatch: pytest.MonkeyPatch) -> Snapshot:
    for pid in PROVIDERS:  # adapters for this test only (monkeypatch restores the registry)
        monkeypatch.setitem(registry._REGISTRY, pid, registry.AdapterEntry(
            pid, {VIDEO: object()}, needs_credentials=pid == "rt-nokey"))
    monkeypatch.delenv("AISTATS_PROVIDER_RT_NOKEY_API_KEY", raising=False)
    cat = CatalogueFile.model_validate({
        "providers": [{"id": p, "name": p.upper(), "priority": prio} for p, prio in
                      (("rt-a", 10), ("rt-b", 20), ("rt-c", 30), ("rt-alpha", 5), ("rt-nokey", 1))],
        "models": [
            {"model_id": "openai/rt-video", "name": "RT", "organisation": "openai", "status": "active",
             "aliases": ["rt-latest"],
             "providers": [_offer("rt-a", "0.50"), _offer("rt-b", "0.20", seed={"type": "integer"}),
                           _offer("rt-c", "0.30", seed={"type": "integer"}), _offer("rt-alpha", "0.01"),
                           _offer("rt-nokey", "0.01")]},
            {"model_id": "openai/rt-alpha-only", "name": "RTA", "organisation": "openai", "status": "active",
             "providers": [_offer("rt-alpha", "0.10")]},
            {"model_id": "openai/rt-retired", "name": "RTR", "organisation": "openai", "status": "retired",
             "providers": [_offer("rt-a", "0.10")]},
        ],
    })
    return build_snapshot(1, cat)


def _ids(route: routing.Route) -> list[str]:
    return [o.provider_id for o in route.offers]


def _prefs(**kw: Any) -> routing.ProviderRouting:
    return routing.ProviderRouting.model_validate(kw)


def _error(fn: Any) -> routing.RoutingError:
    with pytest.raises(routing.RoutingError) as e:
        fn()
    return e.value


def test_default_order_is_priority_then_catalogue(snap: Snapshot) -> None:
    # alpha is left out by default; rt-nokey has no credentials
    assert _ids(routing.plan(snap, "openai/rt-video", EP, None)) == ["rt-a", "rt-b", "rt-c"]
    assert _ids(routing.plan(snap, "rt-latest", EP, None)) == ["rt-a", "rt-b", "rt-c"]  # alias
    assert routing.plan(snap, "rt-b-slug", EP, None).model.spec.model_id == "openai/rt-video"  # provider slug


def test_order_only_ignore_and_alpha(snap: Snapshot) -> None:
    assert _ids(routing.plan(snap, "openai/rt-video", EP, _prefs(order=["rt-c"]))) == ["rt-c", "rt-a", "rt-b"]
    assert _ids(routing.plan(snap, "openai/rt-video", EP, _prefs(only=["rt-b", "rt-c"]))) == ["rt-b", "rt-c"]
    assert _ids(routing.plan(snap, "openai/rt-video", EP, _prefs(ignore=["rt-a"]))) == ["rt-b", "rt-c"]
    assert _ids(routing.plan(snap, "openai/rt-video", EP, _prefs(include_alpha=True)))[0] == "rt-alpha"
    e = _error(lambda: routing.plan(snap, "openai/rt-video", EP, _prefs(only=["nope"])))
    assert (e.param, e.code) == ("provider.only", "unknown_provider") and "rt-a, rt-alpha" in e.message
    e = _error(lambda: routing.plan(snap, "openai/rt-alpha-only", EP, None))
    assert (e.param, e.code) == ("provider.include_alpha", "no_provider")
    e = _error(lambda: routing.plan(snap, "openai/rt-video", EP, _prefs(only=["rt-nokey"])))
    assert e.code == "no_provider_configured" and "AISTATS_PROVIDER_RT_NOKEY_API_KEY" in e.message


def test_model_errors(snap: Snapshot) -> None:
    assert _error(lambda: routing.plan(snap, "openai/none", EP, None)).code == "model_not_found"
    assert _error(lambda: routing.plan(snap, "openai/rt-video", "embeddings", None)).code == "model_not_supported"
    assert _error(lambda: routing.plan(snap, "openai/rt-retired", EP, None)).code == "model_not_available"


def test_provider_pinned_model_means_only_that_provider(snap: Snapshot) -> None:
    assert routing.split_pinned("together:meta/llama-3.3-70b") == ("together", "meta/llama-3.3-70b")
    assert routing.split_pinned("openai/gpt:free") == (None, "openai/gpt:free")  # colon after the slash
    route = routing.plan(snap, "rt-c:openai/rt-video", EP, None)
    assert _ids(route) == ["rt-c"] and route.pinned == "rt-c" and route.prefs.only == ["rt-c"]
    assert _ids(routing.plan(snap, "rt-b:openai/rt-video", EP, _prefs(only=["rt-b", "rt-c"]))) == ["rt-b"]
    e = _error(lambda: routing.plan(snap, "rt-b:openai/rt-video", EP, _prefs(ignore=["rt-b"])))
    assert (e.param, e.code) == ("model", "provider_qualified_model_conflict")
    e = _error(lambda: routing.plan(snap, "together:openai/rt-video", EP, None))
    assert (e.param, e.code) == ("model", "unknown_provider")
    assert routing.resolve(snap, "rt-b:openai/rt-video", EP).spec.model_id == "openai/rt-video"


def test_sort_by_price_latency_and_throughput(snap: Snapshot) -> None:
    assert _ids(routing.plan(snap, "openai/rt-video", EP, _prefs(sort="price"))) == ["rt-b", "rt-c", "rt-a"]
    # order still comes first; sort ranks the rest
    assert _ids(routing.plan(snap, "openai/rt-video", EP, _prefs(sort="price", order=["rt-a"]))) == \
        ["rt-a", "rt-b", "rt-c"]
    health = routing.CircuitBreaker(clock=lambda: 0.0)
    health.record_success("rt-c", 0.2)
    health.record_success("rt-a", 0.9)
    # rt-b has no observation: after those that have one
    assert _ids(routing.plan(snap, "openai/rt-video", EP, _prefs(sort="latency"), health=health)) == \
        ["rt-c", "rt-a", "rt-b"]
    health.observe_throughput("rt-b", 50.0)
    health.observe_throughput("rt-a", 80.0)
    assert _ids(routing.plan(snap, "openai/rt-video", EP, _prefs(sort="throughput"), health=health)) == \
        ["rt-a", "rt-b", "rt-c"]


def test_max_price(snap: Snapshot) -> None:
    assert _ids(routing.plan(snap, "openai/rt-video", EP, _prefs(max_price={"video": 0.3}))) == ["rt-b", "rt-c"]
    e = _error(lambda: routing.plan(snap, "openai/rt-video", EP, _prefs(max_price={"video": 0.1})))
    assert (e.param, e.code) == ("provider.max_price", "no_provider")
    assert "rt-b: video 0.2 USD > 0.1 USD" in e.message
    # caps on meters an offer does not have do not exclude it
    assert len(routing.plan(snap, "openai/rt-video", EP, _prefs(max_price={"prompt": 0.0})).offers) == 3
    with pytest.raises(ValueError):
        _prefs(max_price={"video": -1})


def test_require_parameters_and_allow_fallbacks(snap: Snapshot) -> None:
    assert len(routing.plan(snap, "openai/rt-video", EP, None, params=["seed"]).offers) == 3
    route = routing.plan(snap, "openai/rt-video", EP, _prefs(require_parameters=True), params=["seed", "duration"])
    assert _ids(route) == ["rt-b", "rt-c"]
    e = _error(lambda: routing.plan(snap, "openai/rt-video", EP, _prefs(require_parameters=True, only=["rt-a"]),
                                    params=["seed"]))
    assert (e.param, e.code) == ("provider.require_parameters", "no_provider") and "rt-a: seed" in e.message
    assert len(routing.candidates(route.offers, route.prefs)) == 2
    assert [o.provider_id for o in routing.candidates(route.offers, _prefs(allow_fallbacks=False))] == ["rt-b"]


def test_capability_supports_and_extra_offers(snap: Snapshot) -> None:
    """A capability may decide parameter support itself (inference: its adapters' features) and add offers
    from outside the catalogue (inference: the providers file); extra offers route, pin and order too."""
    only_c = routing.plan(snap, "openai/rt-video", EP, _prefs(require_parameters=True), params=["tools"],
                          supports=lambda o, name: o.provider_id == "rt-c")
    assert _ids(only_c) == ["rt-c"]
    entry = snap.resolve("openai/rt-video")
    assert entry is not None
    extra = dataclasses.replace(entry.offers[0], provider_id="rt-b", priority=0)  # stands in for an operator offer
    # an extra offer is ordered with the others (its priority 0 goes first) and can be pinned
    assert _ids(routing.plan(snap, "openai/rt-video", EP, None, extra=lambda e: [extra]))[:2] == ["rt-b", "rt-a"]
    pinned = routing.plan(snap, "rt-b:openai/rt-video", EP, None, extra=lambda e: [extra])
    assert pinned.pinned == "rt-b" and {o.provider_id for o in pinned.offers} == {"rt-b"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_n_failures_then_half_opens_after_the_cooldown() -> None:
    clock = Clock()
    b = routing.CircuitBreaker(threshold=3, cooldown=10.0, clock=clock)
    for _ in range(2):
        b.record_failure("p", retryable=True)
    assert b.state("p") == "closed"
    b.record_failure("p", retryable=False)  # the provider answered: the count starts again
    for _ in range(2):
        b.record_failure("p", retryable=True)
    assert b.allow("p")
    b.record_failure("p", retryable=True)
    assert b.state("p") == "open" and not b.allow("p")
    clock.now += 9.9
    assert not b.allow("p")
    clock.now += 0.2
    assert b.state("p") == "half_open" and b.allow("p")
    b.record_failure("p", retryable=True)  # the trial failed: open for another cooldown
    assert b.state("p") == "open"
    clock.now += 10.0
    b.record_success("p", 0.5)
    assert b.state("p") == "closed" and b.health()["p"].trips == 2 and b.latency("p") == 0.5


def _err(kind: str, status: int | None = None) -> ProviderError:
    return ProviderError(kind, f"{kind} failure", status=status, code=f"{kind}_code")  # type: ignore[arg-type]


def test_fallback_loop_records_every_attempt_and_stops_on_the_callers_error() -> None:
    clock = Clock()
    b = routing.CircuitBreaker(threshold=1, cooldown=60.0, clock=clock)
    answers: dict[str, ProviderError | str] = {"a": _err("unavailable", 503), "b": _err("auth", 401), "c": "ok-c"}

    async def call(t: routing.Target) -> str:
        got = answers[t.provider_id]
        if isinstance(got, ProviderError):
            raise got
        return got

    targets = [routing.Target(p) for p in "abc"]
    result, attempts = asyncio.run(routing.run_with_fallback(targets, call, b, clock=lambda: 42.0))
    assert result == "ok-c"
    assert [(a.provider, a.outcome, a.status, a.kind) for a in attempts] == [
        ("a", "error", 503, "unavailable"), ("b", "error", 401, "auth"), ("c", "accepted", None, None)]
    assert attempts[0].as_dict() == {"provider": "a", "outcome": "error", "status": 503, "code": "unavailable_code",
                                     "message": "unavailable failure", "at": 42}
    # a and b tripped (threshold 1): skipped now, c answers a client error → no further provider
    answers["c"] = _err("client", 400)
    with pytest.raises(routing.FallbackFailed) as e:
        asyncio.run(routing.run_with_fallback(targets + [routing.Target("d")], call, b))
    assert not e.value.retryable and e.value.error.kind == "client"
    assert [(a.provider, a.outcome, a.code) for a in e.value.attempts] == [
        ("a", "skipped", "circuit_open"), ("b", "skipped", "circuit_open"), ("c", "error", "client_code")]
    # every provider skipped: no_provider, retryable
    b.record_failure("c", retryable=True)
    with pytest.raises(routing.FallbackFailed) as e:
        asyncio.run(routing.run_with_fallback(targets, call, b))
    assert e.value.retryable and e.value.error.code == "no_provider"
    assert all(a.outcome == "skipped" for a in e.value.attempts)


def test_retryable_kinds_are_one_set() -> None:
    assert frozenset({"rate_limit", "unavailable", "upstream", "auth", "quota",
                                                 "not_found"}) == routing.RETRYABLE_KINDS
    assert all(_err(k).retryable for k in routing.RETRYABLE_KINDS)
    assert not _err("client").retryable and not _err("content_policy").retryable


def test_breaker_in_metrics() -> None:
    clock = Clock()
    b = routing.CircuitBreaker(threshold=1, cooldown=5.0, clock=clock)
    reg = CollectorRegistry()
    reg.register(routing.BreakerCollector(b))
    b.record_failure("flaky", retryable=True)
    b.record_success("steady", 0.1)
    text = generate_latest(reg).decode()
    assert 'aistats_provider_circuit_open{provider="flaky"} 1.0' in text
    assert 'aistats_provider_circuit_open{provider="steady"} 0.0' in text
    assert 'aistats_provider_circuit_trips_total{provider="flaky"} 1.0' in text
    assert 'aistats_provider_attempts_total{outcome="error",provider="flaky"} 1.0' in text
    clock.now += 5.0
    assert 'aistats_provider_circuit_open{provider="flaky"} 0.0' in generate_latest(reg).decode()


def test_gateway_metrics_show_the_breaker(gateway: Gateway) -> None:
    """The gateway's own breaker is in its /metrics (the prometheus registry of the middleware)."""
    c = gateway.client()
    assert "# TYPE aistats_provider_circuit_open gauge" in c.get("/metrics").text
    gateway.app.state.gateway.breaker.record_failure("metrics-probe", retryable=False)
    assert 'aistats_provider_circuit_open{provider="metrics-probe"} 0.0' in c.get("/metrics").text
