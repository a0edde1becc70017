"""Inference's protocol knowledge on top of the shared routing layer (:mod:`aistats_gateway.routing`).

Invariants:
* Which offers serve a request, in which order, is decided by ``routing.plan`` (model resolution,
  ``provider:org/model`` pinning, ``order``/``only``/``ignore``/``include_alpha``, ``sort``,
  ``max_price``, ``require_parameters``) and ``routing.candidates`` (``allow_fallbacks``); this module
  only parses the request's routing object into ``routing.ProviderRouting`` (keeping the original's
  spellings and aliases), adds the operator-defined offers (providers file), and drops offers without
  a price for the endpoint's meters.
* ``require_parameters``: routing skips an offer that cannot honour a feature the request uses, as
  decided by :func:`offer_features` (the adapter's features the catalogue lists for the offer); with it
  false the feature is dropped for that offer instead (:func:`request_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from aistats_gateway import routing
from aistats_gateway.catalogue import service as catalogue
from aistats_gateway.catalogue.schema import PriceRule
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.llm.ir import FORCED_TOOL_CHOICE, IRRequest, ToolChoice
from aistats_gateway.providers import config, registry
from aistats_gateway.providers.base import CallContext

_METERS = {"chat.completions": ("input_tokens", "output_tokens", "request"),
           "embeddings": ("input_tokens", "request"), "moderations": ("input_tokens", "request")}
# IR feature → catalogue parameter names that mean it (an offer listing none of them for the endpoint
# is taken as not restricting that feature).
_CATALOGUE_NAMES: dict[str, tuple[str, ...]] = {
    "max_tokens": ("max_tokens", "max_completion_tokens"), "reasoning_effort": ("reasoning_effort", "reasoning"),
    "seed": ("seed", "random_seed"),
}
for _ep, _label in (("chat.completions", "chat completions"), ("embeddings", "embeddings"),
                    ("moderations", "moderations")):
    routing.describe_endpoint(_ep, _label, "/v1/models")


@dataclass
class Candidate:
    provider_id: str
    model_slug: str
    adapter: Any
    rules: list[PriceRule]
    supports: frozenset[str]  # IR features this offer can honour
    api_key: str | None = None  # operator providers (providers file): their own key and URL
    base_url: str | None = None

    def context(self, http: Any) -> CallContext:
        cfg = config.load(self.provider_id)
        return CallContext(http=http, api_key=cfg.api_key or self.api_key, base_url=cfg.base_url or self.base_url)


# ---- the routing object -------------------------------------------------------------------

_FIELDS = ("order", "only", "ignore", "include_alpha", "allow_fallbacks", "require_parameters", "sort", "max_price")
_ALIASES = {"includeAlpha": "include_alpha", "allowFallbacks": "allow_fallbacks",
            "requireParameters": "require_parameters", "maxPrice": "max_price", "mode": "sort"}
_SORTS: dict[str, str | None] = {"price": "price", "pricing": "price", "cost": "price", "latency": "latency",
                                 "speed": "latency", "throughput": "throughput", "tps": "throughput",
                                 "balanced": None, "default": None}
_REJECTED = ("data_collection", "dataCollection", "enforce_distillable_text", "enforceDistillableText",
             "quantizations")


def _sort(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("by") or value.get("mode") or value.get("metric")
    if value is None:
        return None
    if not isinstance(value, str) or value not in _SORTS:
        raise bad_request("Invalid value for 'provider.sort'.", "provider.sort")
    return _SORTS[value]


def parse_routing(body: dict[str, Any]) -> routing.ProviderRouting:
    """The request's ``provider`` (and ``routing``, which wins) object as ``routing.ProviderRouting``.

    Accepted as the original does: a bare provider id string (= ``only``), camelCase aliases, ``mode``
    for ``sort`` and ``sort`` as ``{by|mode|metric}``, ``sort`` synonyms (``pricing``, ``cost``,
    ``speed``, ``tps``; ``balanced``/``default`` = none); a single id for a list. Unknown keys are
    ignored, except the filters the original rejects (``unsupported_routing_filter``)."""
    raw: dict[str, Any] = {}
    for key in ("provider", "routing"):
        v = body.get(key)
        if v is None:
            continue
        if isinstance(v, str):
            v = {"only": [v]}
        if not isinstance(v, dict):
            raise bad_request(f"'{key}' must be an object.", key)
        for name, value in v.items():
            if name in _REJECTED:
                raise bad_request(f"'provider.{name}' is not supported by this gateway.", f"provider.{name}",
                                  code="unsupported_routing_filter")
            name = _ALIASES.get(name, name)
            if name in _FIELDS:
                raw[name] = value
    if "sort" in raw:
        raw["sort"] = _sort(raw["sort"])
    for name in ("order", "only", "ignore"):
        v = raw.get(name)
        if isinstance(v, str):
            raw[name] = [v]
        elif v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            raise bad_request(f"'provider.{name}' must be an array of provider ids.", f"provider.{name}")
    for name in ("include_alpha", "allow_fallbacks", "require_parameters"):
        if raw.get(name) is not None and not isinstance(raw[name], bool):
            raise bad_request(f"'provider.{name}' must be a boolean.", f"provider.{name}")
    if raw.get("max_price") is not None and not isinstance(raw["max_price"], dict):
        raise bad_request("'provider.max_price' must be an object.", "provider.max_price")
    try:
        return routing.ProviderRouting.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(["provider", *(str(x) for x in err["loc"])])
        raise bad_request(f"Invalid value for '{param}': {err['msg']}.", param) from None


# ---- candidates ---------------------------------------------------------------------------


def _has_price(rules: list[PriceRule], endpoint: str) -> bool:
    meters = _METERS.get(endpoint, ("input_tokens",))
    return any(r.meter in meters for r in rules)


def _offer_supports(offer: catalogue.ProviderOffer, endpoint: str, adapter_supports: frozenset[str],
                    native: frozenset[str] = frozenset(), forced_tool_choice: bool = True) -> frozenset[str]:
    """The adapter's features the catalogue lists for this offer, plus the adapter's ``native`` ones
    (features it maps to a provider-native control, e.g. effort → Anthropic/Gemini thinking budgets).
    ``tool_choice`` includes forcing a call unless the adapter says otherwise (``forced_tool_choice``)."""
    listed = offer.spec.parameters.get(endpoint)  # type: ignore[call-overload]
    out = set(adapter_supports)
    if listed:
        out = {f for f in adapter_supports if f in native or any(
            catalogue.offer_supports(offer, endpoint, n) for n in _CATALOGUE_NAMES.get(f, (f,)))}
    if forced_tool_choice and "tool_choice" in out:
        out.add(FORCED_TOOL_CHOICE)
    return frozenset(out)


def _adapter_features(adapter: Any) -> tuple[frozenset[str], frozenset[str], bool]:
    return (frozenset(getattr(adapter, "supports", frozenset())), frozenset(getattr(adapter, "native", frozenset())),
            bool(getattr(adapter, "forced_tool_choice", True)))


def offer_features(offer: catalogue.ProviderOffer, endpoint: str) -> frozenset[str]:
    """The IR features ``offer`` honours through its adapter (empty without an adapter)."""
    adapter = registry.adapter_for(offer.provider_id, endpoint)
    if adapter is None:
        return frozenset()
    key = ("features", endpoint)  # memoised on the offer (one per catalogue snapshot), for this adapter
    got: tuple[Any, frozenset[str]] | None = offer.memo.get(key)
    if got is None or got[0] is not adapter:
        got = offer.memo[key] = (adapter, _offer_supports(offer, endpoint, *_adapter_features(adapter)))
    return got[1]


def _routing_error(e: routing.RoutingError) -> APIError:
    """Routing's errors in inference's spellings (an unknown model is a 404 here, as in the original)."""
    if e.code in ("model_not_found", "model_not_available"):  # a retired/announced model: 404, as before
        message = e.message.split(" See GET")[0].replace("does not exist.",
                                                         "does not exist or you do not have access to it.")
        return APIError(404, message, param="model", code="model_not_found")
    if e.code == "model_not_supported":
        return bad_request(e.message, "model", code="unsupported_model_or_endpoint")
    return bad_request(e.message, e.param, code=e.code)


def candidates(snap: catalogue.Snapshot, model: str, endpoint: str, prefs: routing.ProviderRouting,
               used: set[str] | None = None, health: routing.CircuitBreaker | None = None,
               ) -> tuple[str, list[Candidate]]:
    """(the resolved model id, its candidates in order, ``allow_fallbacks`` applied); 404/400 when none."""
    from aistats_gateway.inference import providers_file

    memo: dict[int, frozenset[str]] = {}

    def features(offer: catalogue.ProviderOffer) -> frozenset[str]:
        got = memo.get(id(offer))
        if got is None:
            got = memo[id(offer)] = offer_features(offer, endpoint)
        return got

    def extra(entry: catalogue.ModelEntry) -> list[catalogue.ProviderOffer]:
        return [o.offer for o in providers_file.offers_for(entry.spec.model_id)]

    try:
        route = routing.plan(snap, model, endpoint, prefs, params=sorted(used or ()), health=health,
                             supports=lambda o, name: name in features(o), extra=extra)
    except routing.RoutingError as e:
        raise _routing_error(e) from None
    model_id = route.model.spec.model_id
    operator = {id(o.offer): o for o in providers_file.offers_for(model_id)}
    priced = [o for o in route.offers if _has_price(list(o.spec.pricing), endpoint)]
    if not priced:
        why = "; ".join(f"{o.provider_id} (no price)" for o in route.offers)
        raise bad_request(f"No provider can serve '{model_id}' for {endpoint} with this request ({why}).",
                          "model", code="no_provider_available")
    out: list[Candidate] = []
    for offer in routing.candidates(priced, route.prefs):
        op = operator.get(id(offer))
        out.append(Candidate(offer.provider_id, offer.spec.provider_model_slug,
                             registry.adapter_for(offer.provider_id, endpoint), list(offer.spec.pricing),
                             features(offer), op.api_key if op else None, op.provider.base_url if op else None))
    return model_id, out


def request_for(req: IRRequest, cand: Candidate) -> IRRequest:
    """The request as sent to ``cand``: its model slug, features it cannot honour dropped."""
    out = object.__new__(type(req))  # a shallow copy (``copy.copy`` costs several times more)
    out.__dict__.update(req.__dict__)
    out.model = cand.model_slug
    drop = req.params - cand.supports
    for name in drop:
        if name == "stop":
            out.stop = []
        elif name == "tools":
            out.tools = []
            out.tool_choice = None
        elif name == "reasoning_effort":
            out.reasoning_effort = None
            out.reasoning_budget = None
        elif name == FORCED_TOOL_CHOICE:  # the provider cannot force a call: it may still make one
            if out.tool_choice is not None:
                out.tool_choice = ToolChoice("auto", parallel=out.tool_choice.parallel)
        elif hasattr(out, name):
            setattr(out, name, None)
    return out
