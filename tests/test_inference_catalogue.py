"""Every active chat / embeddings / moderation offer in the shipped catalogue either resolves to an
adapter that accepts each parameter the offer advertises, or is not routable (so ``/v1/models`` says
``is_active_gateway: false`` for it).

For each (model, provider, endpoint) offer of an ``active`` model:

* no adapter registered → ``catalogue.is_active`` is false whatever the credentials (listed in the report);
* an adapter → for every advertised parameter, the feature it means is kept for that offer by routing
  (``route._offer_supports``: nothing advertised is silently dropped), and a request that sets only that
  parameter to an advertised value is sent by the adapter to the provider's fake (plain, and streamed for
  chat) and answered. The fakes reject what their API rejects (unknown fields, bad ranges, wrong names).

Adapters are called directly with a ``CallContext`` pointing at each fake (no gateway, no database).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import aistats_gateway.providers  # noqa: F401 - registers the video adapters
from aistats_gateway.catalogue import service as catalogue
from aistats_gateway.catalogue.schema import ParameterDetail
from aistats_gateway.inference import route
from aistats_gateway.llm.codecs import chat
from aistats_gateway.llm.ir import StreamSummary
from aistats_gateway.providers import inference_adapters, registry  # noqa: F401
from aistats_gateway.providers.base import CallContext
from aistats_gateway.providers.fakes.testing import RunningFake
from aistats_gateway.providers.google import vertex_video as google_vertex
from aistats_gateway.providers.inference import EmbeddingsRequest
from tests.support.catalogue import Offer, active_offers
from tests.support.google_accounts import PROJECT, SA_EMAIL, SA_KEY_ID
from tests.support.google_accounts import rsa_pair as _rsa_pair
from tests.support.google_accounts import service_account as _service_account

ENDPOINTS = ("chat.completions", "embeddings", "moderations")
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
# Catalogue parameter → the IR feature it means (None: not a feature, e.g. stream is how it is called).
FEATURE = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
           "stop": "stop", "seed": "seed", "random_seed": "seed", "tools": "tools", "tool_choice": "tool_choice",
           "response_format": "response_format", "reasoning_effort": "reasoning_effort", "verbosity": "verbosity",
           "stream": None, "dimensions": None, "encoding_format": None, "input_type": None}
# fake name, key, base-url suffix
FAKES: dict[str, tuple[str, str, str]] = {
    "openai": ("openai", "sk-test", "/v1"), "x-ai": ("x-ai", "xai-test", "/v1"),
    "mistral": ("mistral", "mistral-test", "/v1"), "deepseek": ("deepseek", "sk-deepseek-test", "/v1"),
    "groq": ("groq", "gsk_test", "/v1"), "together": ("together", "together-test", "/v1"),
    "anthropic": ("anthropic", "sk-ant-test", "/v1"), "cohere": ("cohere", "co-test", ""),
    "amazon-bedrock": ("amazon-bedrock", "AKIDFAKEBEDROCK:fake-secret-access-key", ""),  # SigV4-signed
    "google-ai-studio": ("google-vertex", "AIza-truth", ""),
    "alibaba": ("alibaba", "sk-dashscope-test", ""),  # the API host: chat is under /compatible-mode/v1
    "minimax": ("minimax", "mm-test", ""),  # the API host: chat is /v1/text/chatcompletion_v2
}


OFFERS = active_offers(ENDPOINTS)
ROUTABLE = [o for o in OFFERS if registry.adapter_for(o.provider_id, o.endpoint) is not None]
UNROUTABLE = [o for o in OFFERS if registry.adapter_for(o.provider_id, o.endpoint) is None]


def _id(o: Offer) -> str:
    return f"{o.model_id}@{o.provider_id}:{o.endpoint}"


def value_for(name: str, d: ParameterDetail) -> Any:
    if d.values:
        return d.values[0]
    samples: dict[str, Any] = {
        "max_tokens": 64, "top_p": 0.9, "top_k": 5, "stop": ["END"], "seed": 7, "random_seed": 7,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}},
        "verbosity": "low", "dimensions": 256, "encoding_format": "float"}
    if name == "temperature":
        return d.maximum if d.maximum is not None else 1.0
    return samples[name]


@pytest.fixture(scope="module")
def contexts() -> Iterator[dict[str, CallContext]]:
    private, public = _rsa_pair()
    running: list[RunningFake] = []
    out: dict[str, CallContext] = {}
    for pid, (name, secret, suffix) in FAKES.items():
        kwargs: dict[str, Any] = {"api_key": secret} if name != "amazon-bedrock" else {}
        if name == "google-vertex":
            kwargs.update(prefix="", project=PROJECT)
        f = RunningFake(name, **kwargs).start()
        running.append(f)
        out[pid] = CallContext(http=None, api_key=secret, base_url=f.url + suffix)
        if name == "google-vertex":
            f.state.register_service_account(SA_EMAIL, SA_KEY_ID, public, PROJECT)
            sa = json.dumps(_service_account(private, f.url + "/token"))
            out["google-vertex"] = CallContext(http=None, api_key=sa, base_url=f.url)
    out["local"] = CallContext(http=None, api_key=None, base_url=None)  # the built-in local models: no key, no network
    yield out
    for f in running:
        f.stop()
    google_vertex.forget_credentials()


def call(ctx: CallContext, fn: Any) -> Any:
    """``await fn(ctx)`` on a fresh loop with a fresh HTTP client."""

    async def main() -> Any:
        async with httpx.AsyncClient(timeout=20) as http:
            return await fn(CallContext(http=http, api_key=ctx.api_key, base_url=ctx.base_url))

    return asyncio.run(main())


def test_every_active_offer_has_an_adapter() -> None:
    assert [_id(o) for o in UNROUTABLE] == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_offer_without_an_adapter_is_not_active(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials alone do not make an offer active: a provider with no adapter for the endpoint is listed
    ``is_active_gateway: false``."""
    from aistats_gateway.providers.config import env_prefix

    offer = next(o for o in OFFERS if o.endpoint == endpoint)
    monkeypatch.setenv(env_prefix("no-adapter-here") + "API_KEY", "configured")
    spec = offer.spec.model_copy(update={"provider": "no-adapter-here"})
    provider_offer = catalogue.ProviderOffer("no-adapter-here", spec, "no-adapter-here", None, None, False, 100)
    assert registry.adapter_for("no-adapter-here", endpoint) is None
    assert not catalogue.is_active(provider_offer, endpoint)
    configured = catalogue.ProviderOffer(offer.provider_id, offer.spec, offer.provider_id, None, None, False, 100)
    monkeypatch.setenv(env_prefix(offer.provider_id) + "API_KEY", "configured")
    assert catalogue.is_active(configured, endpoint)  # the same offer through its real provider is


def _cases() -> list[tuple[Offer, str | None]]:
    return [(o, n) for o in ROUTABLE for n in ([None] + list(o.params))]


CASES = _cases()


@pytest.mark.parametrize("offer,param", CASES, ids=[f"{_id(o)}[{p or 'plain'}]" for o, p in CASES])
def test_adapter_accepts_each_advertised_parameter(offer: Offer, param: str | None,
                                                   contexts: dict[str, CallContext]) -> None:
    adapter = registry.adapter_for(offer.provider_id, offer.endpoint)
    ctx = contexts[offer.provider_id]
    provider_offer = catalogue.ProviderOffer(offer.provider_id, offer.spec, offer.provider_id, None, None, False, 100)
    if offer.endpoint == "chat.completions":
        body: dict[str, Any] = {"model": offer.spec.provider_model_slug,
                                "messages": [{"role": "user", "content": "Weather in Paris?"}]}
        if param is not None and FEATURE[param] is not None:
            body[param if param != "random_seed" else "seed"] = value_for(param, offer.params[param])
        req = chat.decode_request(body)
        supports = route._offer_supports(provider_offer, offer.endpoint, adapter.supports,
                                         getattr(adapter, "native", frozenset()))
        assert req.params <= supports, f"{_id(offer)} would drop {sorted(req.params - supports)}"
        answer = call(ctx, lambda c: adapter.complete(req, c))
        assert answer.usage.input_tokens > 0 and (answer.content or answer.tool_calls)
        summary = StreamSummary()

        async def consume(c: CallContext) -> None:
            async for d in adapter.stream(req, c):
                summary.add(d)

        req.stream = True
        call(ctx, consume)
        streamed = summary.response()
        assert streamed.usage.output_tokens > 0 and (streamed.content or streamed.tool_calls)
    elif offer.endpoint == "embeddings":
        dims = value_for("dimensions", offer.params["dimensions"]) if param == "dimensions" else None
        fmt = value_for("encoding_format", offer.params["encoding_format"]) if param == "encoding_format" else None
        itype = value_for("input_type", offer.params["input_type"]) if param == "input_type" else None
        ereq = EmbeddingsRequest(offer.spec.provider_model_slug, ["hello world"], dims, fmt, None, itype)
        result = call(ctx, lambda c: adapter.embed(ereq, c))
        assert len(result.vectors) == 1 and result.vectors[0]
        if dims is not None:
            assert len(result.vectors[0]) == dims
    else:
        result = call(ctx, lambda c: adapter.moderate(offer.spec.provider_model_slug, "hello", c))
        assert len(result.results) == 1
