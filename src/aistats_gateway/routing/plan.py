"""Resolving a model id to the ordered offers that can serve one endpoint, under the request's
``provider`` preferences.

``plan(snapshot, model, endpoint, prefs)`` does, in this order (each step's failure is a
:class:`RoutingError` with ``param`` and ``code``; the HTTP layer answers it as a 400):

1. resolve ``model``: a model id, an alias, a provider's own slug naming exactly one model with this
   endpoint, or the provider-pinned form ``provider:org/model`` (only the colon before the first ``/``
   counts), which means ``provider.only = [provider]`` (it conflicts with an ``only``/``ignore`` that
   disagrees: ``provider_qualified_model_conflict``);
2. keep the model's offers for ``endpoint``; check that ``order``/``only``/``ignore`` name providers of
   the model; apply ``only`` then ``ignore``;
3. drop alpha offers unless ``include_alpha``;
4. keep the offers the gateway can call now (an adapter for the endpoint and its credentials);
5. ``require_parameters``: keep the offers supporting every name in ``params``;
6. ``max_price``: drop offers priced above a cap (see :func:`unit_prices`);
7. order: providers named in ``order`` first, in that order; then the rest by ``sort`` (``price``:
   cheapest first; ``latency``: lowest observed latency first; ``throughput``: highest observed first;
   unknown values last); ties by the provider's catalogue priority, then catalogue order.

``allow_fallbacks=false`` is applied by :func:`candidates` (only the first offer is kept), after any
capability-specific filtering the caller does on the planned offers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aistats_gateway.billing import pricing
from aistats_gateway.catalogue.service import ModelEntry, ProviderOffer, Snapshot, is_active, offer_supports
from aistats_gateway.providers import config as provider_config
from aistats_gateway.providers import registry
from aistats_gateway.routing.breaker import CircuitBreaker
from aistats_gateway.routing.errors import RoutingError
from aistats_gateway.routing.schemas import MaxPrice, ProviderRouting

UNAVAILABLE_STATUSES = ("retired", "rumoured", "announced")


@dataclass(frozen=True)
class EndpointInfo:
    label: str  # "video generation", in "does not support video generation"
    models_path: str  # where the caller can list the models, in "does not exist. See GET …"


_ENDPOINTS: dict[str, EndpointInfo] = {}


def describe_endpoint(endpoint: str, label: str, models_path: str) -> None:
    """How error messages name ``endpoint`` (each capability registers its own once, at import)."""
    _ENDPOINTS[endpoint] = EndpointInfo(label, models_path)


def _info(endpoint: str) -> EndpointInfo:
    return _ENDPOINTS.get(endpoint) or EndpointInfo(endpoint, "/v1/models")


@dataclass(frozen=True)
class Route:
    """A routed request: the model, the ordered offers and the preferences they came from."""

    model: ModelEntry
    offers: list[ProviderOffer]
    prefs: ProviderRouting
    pinned: str | None = None  # the provider of a ``provider:org/model`` id


def _fmt(values: Iterable[str]) -> str:
    return ", ".join(str(v) for v in values)


def split_pinned(model: str) -> tuple[str | None, str]:
    """``"together:meta/llama"`` → ``("together", "meta/llama")``; anything else → ``(None, model)``."""
    head, slash, _ = model.partition("/")
    if not slash or ":" not in head:
        return None, model
    provider, _, rest = model.partition(":")
    return (provider, rest) if provider and rest else (None, model)


def resolve_model(snap: Snapshot, model: str, endpoint: str) -> ModelEntry:
    """The model ``model`` names, checked to serve ``endpoint`` and to be usable."""
    info = _info(endpoint)
    entry = snap.resolve(model)
    if entry is None:
        # Also accept a provider's own slug (e.g. "sora-2") when it names exactly one model.
        matches = [m for m in snap.models if any(o.spec.provider_model_slug == model for o in m.offers)
                   and endpoint in m.endpoint_set]
        entry = matches[0] if len(matches) == 1 else None
    if entry is None:
        raise RoutingError(f"The model {model!r} does not exist. See GET {info.models_path}.", "model",
                           "model_not_found")
    if endpoint not in entry.endpoint_set:
        raise RoutingError(f"The model {entry.spec.model_id!r} does not support {info.label}.", "model",
                           "model_not_supported")
    if entry.spec.status in UNAVAILABLE_STATUSES:
        raise RoutingError(f"The model {entry.spec.model_id!r} is {entry.spec.status} and cannot be used.", "model",
                           "model_not_available")
    return entry


def resolve(snap: Snapshot, model: str, endpoint: str) -> ModelEntry:
    """Like :func:`resolve_model`, also accepting the provider-pinned form (``plan`` checks the pin)."""
    provider, rest = split_pinned(model)
    if provider is None or snap.resolve(model) is not None:
        return resolve_model(snap, model, endpoint)
    return resolve_model(snap, rest, endpoint)


def _resolve(snap: Snapshot, model: str, endpoint: str, prefs: ProviderRouting,
             extra: Callable[[ModelEntry], Sequence[ProviderOffer]] | None = None,
             ) -> tuple[ModelEntry, ProviderRouting, str | None]:
    provider, rest = split_pinned(model)
    if provider is None or snap.resolve(model) is not None:
        return resolve_model(snap, model, endpoint), prefs, None
    entry = resolve_model(snap, rest, endpoint)
    if (prefs.only and provider not in prefs.only) or (prefs.ignore and provider in prefs.ignore):
        raise RoutingError(f"The model {model!r} pins provider {provider!r}, which provider.only/ignore "
                           "exclude.", "model", "provider_qualified_model_conflict")
    pool = [*entry.offers, *(extra(entry) if extra else ())]
    served = sorted({o.provider_id for o in pool if endpoint in o.spec.endpoints})
    if provider not in served:
        raise RoutingError(f"The model {model!r} pins provider {provider!r}, which does not serve "
                           f"{entry.spec.model_id}; its providers are: {_fmt(served)}.", "model", "unknown_provider")
    return entry, prefs.model_copy(update={"only": [provider]}), provider


# ---- prices -------------------------------------------------------------------------------

# max_price field → (meters it caps, units of the cap per billed unit)
_CAPS: dict[str, tuple[tuple[str, ...], int]] = {
    "prompt": (("input_tokens",), 1_000_000),
    "completion": (("output_tokens",), 1_000_000),
    "image": (("output_image",), 1),
    "audio": (("input_audio_seconds", "output_audio_seconds"), 1),
    "request": (("request",), 1),
    "video": (("output_video_seconds",), 1),
}


def unit_prices(offer: ProviderOffer, context: Mapping[str, Any] | None = None) -> dict[str, Decimal]:
    """The offer's price per single unit of each meter, in nano-USD (standard plan).

    With ``context`` (the request's values, e.g. ``{"resolution": "1080p"}``) the rule that applies is
    used (``billing.pricing.pick``); without it, the cheapest rule of each meter."""
    rules = [r for r in offer.spec.pricing if r.plan == "standard"]
    out: dict[str, Decimal] = {}
    for meter in dict.fromkeys(r.meter for r in rules):
        if context is not None:
            rule = pricing.pick(rules, meter, context)
            candidates = [rule] if rule is not None else []
        else:
            candidates = [r for r in rules if r.meter == meter]
        if candidates:
            out[meter] = min(Decimal(r.price_nanos) / r.unit_size for r in candidates)
    return out


def price_key(offer: ProviderOffer, context: Mapping[str, Any] | None = None) -> float:
    """For ``sort=price``: the sum of the offer's per-unit prices (unpriced offers last)."""
    prices = unit_prices(offer, context)
    return float(sum(prices.values())) if prices else math.inf


def over_cap(offer: ProviderOffer, caps: MaxPrice, context: Mapping[str, Any] | None = None) -> str | None:
    """Why the offer is above ``caps`` (e.g. ``"video 0.5 USD > 0.3 USD"``), or None when it is within them."""
    prices = unit_prices(offer, context)
    for name, (meters, per) in _CAPS.items():
        cap = getattr(caps, name)
        if cap is None:
            continue
        for meter in meters:
            if meter in prices:
                usd = prices[meter] * per / 1_000_000_000
                if usd > Decimal(str(cap)):
                    return f"{name} {usd.normalize():f} USD > {cap:g} USD"
    return None


# ---- plan ---------------------------------------------------------------------------------


def plan(
    snap: Snapshot,
    model: str,
    endpoint: str,
    prefs: ProviderRouting | None,
    *,
    params: Iterable[str] = (),
    price_context: Mapping[str, Any] | None = None,
    health: CircuitBreaker | None = None,
    price: Callable[[ProviderOffer], float] | None = None,
    supports: Callable[[ProviderOffer, str], bool] | None = None,
    extra: Callable[[ModelEntry], Sequence[ProviderOffer]] | None = None,
) -> Route:
    """Resolve ``model`` and order the offers that can serve ``endpoint`` (see the module docstring).

    ``params``: the parameter names the request sets (for ``require_parameters``); ``price_context``:
    the request's values that price rules depend on (for ``max_price`` and ``sort=price``); ``health``:
    the gateway's breaker, whose observed latency/throughput ``sort`` uses; ``price``: another price key
    for ``sort=price`` (e.g. the capability's own estimate); ``supports``: whether an offer can honour one
    of ``params`` (default: the catalogue lists it, ``catalogue.offer_supports``), for a capability whose
    adapters decide that; ``extra``: offers of the resolved model from outside the catalogue (operator-defined
    providers), routed like the model's own after them."""
    prefs = prefs or ProviderRouting()
    entry, prefs, pinned = _resolve(snap, model, endpoint, prefs, extra)
    model_id = entry.spec.model_id
    pool = [*entry.offers, *(extra(entry) if extra else ())]
    offers = [o for o in pool if endpoint in o.spec.endpoints]
    known = {o.provider_id for o in offers}
    for pname, ids in (("order", prefs.order), ("only", prefs.only), ("ignore", prefs.ignore)):
        unknown = [i for i in ids or [] if i not in known]
        if unknown:
            raise RoutingError(f"provider.{pname} names {_fmt(unknown)}, which do not serve {model_id}; "
                               f"its providers are: {_fmt(sorted(known))}.", f"provider.{pname}", "unknown_provider")
    if prefs.only:
        offers = [o for o in offers if o.provider_id in prefs.only]
    if prefs.ignore:
        offers = [o for o in offers if o.provider_id not in (prefs.ignore or [])]
    if not offers:
        raise RoutingError(f"provider.only/ignore leave no provider for {model_id}.", "provider", "no_provider")
    if not prefs.include_alpha:
        if all(o.spec.alpha for o in offers):
            raise RoutingError(f"Every provider of {model_id} left is in alpha; set provider.include_alpha=true "
                               "to use them.", "provider.include_alpha", "no_provider")
        offers = [o for o in offers if not o.spec.alpha]
    routable = [o for o in offers if is_active(o, endpoint)]
    if not routable:
        hints = []
        for o in offers:
            if registry.adapter_for(o.provider_id, endpoint) is None:
                hints.append(f"{o.provider_id} (no adapter in this gateway version)")
            else:
                hints.append(f"{o.provider_id} (set {provider_config.env_prefix(o.provider_id)}API_KEY)")
        raise RoutingError(f"No provider of {model_id} is configured on this gateway: {'; '.join(hints)}.",
                           "model", "no_provider_configured")
    names = list(dict.fromkeys(params))
    def ok(o: ProviderOffer, name: str) -> bool:
        return supports(o, name) if supports is not None else offer_supports(o, endpoint, name)

    if prefs.require_parameters and names:
        keep = [o for o in routable if all(ok(o, n) for n in names)]
        if not keep:
            missing = "; ".join(f"{o.provider_id}: {_fmt(n for n in names if not ok(o, n))}" for o in routable)
            raise RoutingError(f"provider.require_parameters: no provider of {model_id} supports every parameter "
                               f"given ({missing}).", "provider.require_parameters", "no_provider")
        routable = keep
    if prefs.max_price is not None:
        caps = prefs.max_price
        reasons = {o.provider_id: over_cap(o, caps, price_context) for o in routable}
        keep = [o for o in routable if reasons[o.provider_id] is None]
        if not keep:
            raise RoutingError(f"provider.max_price leaves no provider for {model_id}: "
                               + "; ".join(f"{p}: {r}" for p, r in reasons.items()) + ".",
                               "provider.max_price", "no_provider")
        routable = keep
    return Route(entry, _order(pool, routable, prefs, price_context, health, price), prefs, pinned)


def _order(pool: list[ProviderOffer], offers: list[ProviderOffer], prefs: ProviderRouting,
           context: Mapping[str, Any] | None, health: CircuitBreaker | None,
           price: Callable[[ProviderOffer], float] | None) -> list[ProviderOffer]:
    order = list(prefs.order or [])

    def metric(o: ProviderOffer) -> float:
        if prefs.sort == "price":
            return price(o) if price is not None else price_key(o, context)
        if prefs.sort == "latency":
            seen = health.latency(o.provider_id) if health else None
            return seen if seen is not None else math.inf
        if prefs.sort == "throughput":
            seen = health.throughput(o.provider_id) if health else None
            return -seen if seen is not None else math.inf
        return 0.0

    return sorted(offers, key=lambda o: (order.index(o.provider_id) if o.provider_id in order else len(order),
                                         metric(o), o.priority, pool.index(o)))


def candidates(offers: Sequence[ProviderOffer], prefs: ProviderRouting | None) -> list[ProviderOffer]:
    """The offers to try in turn: all of them, or only the first with ``allow_fallbacks=false``."""
    if prefs is not None and not prefs.allow_fallbacks:
        return list(offers[:1])
    return list(offers)
