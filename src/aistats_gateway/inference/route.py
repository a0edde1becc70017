"""Which providers may serve an inference request, in which order (today's catalogue snapshot).

Invariants:
* A candidate is an offer of the resolved model that lists the endpoint, has a registered
  adapter, is callable now (credentials), has a price for the endpoint's meters, and passes the
  request's ``provider`` object (``only``/``ignore``/``order``/``max_price``/``require_parameters``)
  and any ``provider:org/model`` pin.
* With ``require_parameters`` true an offer that cannot honour a used feature is skipped; otherwise
  the feature is dropped for that offer (:func:`request_for`).
* Order: the request's ``order`` first, then ``sort`` (``price``) or the catalogue's priority.
  ``allow_fallbacks: false`` keeps only the first candidate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aistats_gateway.catalogue import service as catalogue
from aistats_gateway.catalogue.schema import PriceRule
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.llm.ir import IRRequest
from aistats_gateway.providers import config, registry
from aistats_gateway.providers.base import CallContext

_METERS = {"chat.completions": ("input_tokens", "output_tokens", "request"), "embeddings": ("input_tokens", "request"),
           "moderations": ("input_tokens", "request")}
# IR feature → catalogue parameter names that mean it (an offer listing none of them for the endpoint
# is taken as not restricting that feature).
_CATALOGUE_NAMES: dict[str, tuple[str, ...]] = {
    "max_tokens": ("max_tokens", "max_completion_tokens"), "reasoning_effort": ("reasoning_effort", "reasoning"),
    "seed": ("seed", "random_seed"),
}


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


@dataclass
class Routing:
    order: list[str]
    only: set[str] | None
    ignore: set[str]
    allow_fallbacks: bool
    require_parameters: bool
    sort: str | None
    max_prompt: Decimal | None  # USD per million input tokens
    max_completion: Decimal | None


def _names(v: Any, param: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise bad_request(f"'{param}' must be an array of provider ids.", param)
    return list(v)


def parse_routing(body: dict[str, Any]) -> Routing:
    raw: dict[str, Any] = {}
    for key in ("provider", "routing"):
        v = body.get(key)
        if v is None:
            continue
        if isinstance(v, str):
            v = {"only": [v]}
        if not isinstance(v, dict):
            raise bad_request(f"'{key}' must be an object.", key)
        raw.update(v)
    def g(*names: str) -> Any:
        return next((raw[n] for n in names if n in raw), None)

    sort = g("sort", "mode")
    if isinstance(sort, dict):
        sort = sort.get("by") or sort.get("mode") or sort.get("metric")
    if sort is not None and sort not in ("price", "pricing", "cost", "latency", "throughput", "balanced", "default"):
        raise bad_request("Invalid value for 'provider.sort'.", "provider.sort")
    mp = g("max_price", "maxPrice") or {}
    if not isinstance(mp, dict):
        raise bad_request("'provider.max_price' must be an object.", "provider.max_price")

    def price(name: str) -> Decimal | None:
        v = mp.get(name)
        if v is None:
            return None
        try:
            return Decimal(str(v))
        except Exception:
            raise bad_request(f"'provider.max_price.{name}' must be a number.", f"provider.max_price.{name}") from None

    only = _names(g("only"), "provider.only")
    for flag in ("allow_fallbacks", "require_parameters"):
        v = g(flag, "allowFallbacks" if flag == "allow_fallbacks" else "requireParameters")
        if v is not None and not isinstance(v, bool):
            raise bad_request(f"'provider.{flag}' must be a boolean.", f"provider.{flag}")
    af = g("allow_fallbacks", "allowFallbacks")
    rp = g("require_parameters", "requireParameters")
    return Routing(_names(g("order"), "provider.order"), set(only) if only else None,
                   set(_names(g("ignore"), "provider.ignore")), af is not False, rp is True,
                   sort if isinstance(sort, str) else None, price("prompt"), price("completion"))


def _per_million(rules: list[PriceRule], meter: str) -> Decimal:
    for r in rules:
        if r.meter == meter and r.plan == "standard" and not r.when:
            return Decimal(r.price) * Decimal(1_000_000) / Decimal(r.unit_size)
    return Decimal(0)


def _offer_supports(offer: catalogue.ProviderOffer, endpoint: str, adapter_supports: frozenset[str],
                    native: frozenset[str] = frozenset()) -> frozenset[str]:
    """The adapter's features the catalogue lists for this offer, plus the adapter's ``native`` ones
    (features it maps to a provider-native control, e.g. effort → Anthropic/Gemini thinking budgets)."""
    listed = offer.spec.parameters.get(endpoint)  # type: ignore[call-overload]
    if not listed:
        return adapter_supports
    out = set(adapter_supports & native)
    for feature in adapter_supports:
        names = _CATALOGUE_NAMES.get(feature, (feature,))
        if any(catalogue.offer_supports(offer, endpoint, n) for n in names):
            out.add(feature)
    return frozenset(out)


def candidates(snap: catalogue.Snapshot, model: str, endpoint: str, routing: Routing,
               used: set[str] | None = None) -> tuple[str, list[Candidate]]:
    """(the resolved model id, its candidates in order); 404/400 when none can serve it."""
    pin = None
    head, sep, _ = model.partition("/")
    if sep and ":" in head:
        pin, model = model.split(":", 1)
        if (routing.only is not None and pin not in routing.only) or pin in routing.ignore:
            raise bad_request(f"The model pins provider {pin!r}, which provider.only/ignore exclude.", "model",
                              code="provider_qualified_model_conflict")
    entry = snap.resolve(model)
    if entry is None or entry.spec.status in ("retired", "rumoured", "announced"):
        raise APIError(404, f"The model '{model}' does not exist or you do not have access to it.", param="model",
                       code="model_not_found")
    if endpoint not in entry.endpoint_set:
        raise bad_request(f"The model '{entry.spec.model_id}' does not support {endpoint}.", "model",
                          code="unsupported_model_or_endpoint")
    meters = _METERS.get(endpoint, ("input_tokens",))
    out: list[tuple[Any, Candidate]] = []
    skipped: list[str] = []
    from aistats_gateway.inference import providers_file

    operator = {id(o.offer): o for o in providers_file.offers_for(entry.spec.model_id)}
    for offer in [*entry.offers, *(o.offer for o in operator.values())]:
        pid = offer.provider_id
        if endpoint not in offer.spec.endpoints:
            continue
        if (pin and pid != pin) or (routing.only is not None and pid not in routing.only) or pid in routing.ignore:
            continue
        adapter = registry.adapter_for(pid, endpoint)
        op = operator.get(id(offer))
        if adapter is None or (op is None and not catalogue.is_active(offer, endpoint)):
            skipped.append(f"{pid} (not configured)")
            continue
        rules = list(offer.spec.pricing)
        if not any(r.meter in meters for r in rules):
            skipped.append(f"{pid} (no price)")
            continue
        if routing.max_prompt is not None and _per_million(rules, "input_tokens") > routing.max_prompt:
            continue
        if routing.max_completion is not None and _per_million(rules, "output_tokens") > routing.max_completion:
            continue
        supports = _offer_supports(offer, endpoint, frozenset(getattr(adapter, "supports", frozenset())),
                                   frozenset(getattr(adapter, "native", frozenset())))
        if routing.require_parameters and used and not used <= supports:
            skipped.append(f"{pid} (does not support {', '.join(sorted(used - supports))})")
            continue
        key = (routing.order.index(pid) if pid in routing.order else len(routing.order),
               _per_million(rules, "input_tokens") + _per_million(rules, "output_tokens")
               if routing.sort in ("price", "pricing", "cost") else 0, offer.priority)
        out.append((key, Candidate(pid, offer.spec.provider_model_slug, adapter, rules, supports,
                                   op.api_key if op else None, op.provider.base_url if op else None)))
    out.sort(key=lambda kv: kv[0])
    cands = [c for _, c in out]
    if not cands:
        why = f" ({'; '.join(skipped)})" if skipped else ""
        raise bad_request(f"No provider can serve '{entry.spec.model_id}' for {endpoint} with this request{why}.",
                          "model", code="no_provider_available")
    if not routing.allow_fallbacks:
        cands = cands[:1]
    return entry.spec.model_id, cands


def request_for(req: IRRequest, cand: Candidate) -> IRRequest:
    """The request as sent to ``cand``: its model slug, features it cannot honour dropped."""
    out = copy.copy(req)
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
        elif hasattr(out, name):
            setattr(out, name, None)
    return out
