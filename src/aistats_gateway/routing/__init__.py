"""Routing: which providers serve a request, in what order, and the one fallback loop over them.

How a capability uses it (chat, images, videos … all the same way)::

    from aistats_gateway import routing

    route = routing.plan(snapshot, req.model, "chat.completions", req.provider,
                         params=names_the_request_sets, health=state.breaker)
    offers = routing.candidates(route.offers, route.prefs)      # allow_fallbacks
    try:
        result, attempts = await routing.run_with_fallback(offers, call_one_offer, state.breaker)
    except routing.FallbackFailed as e:
        ...  # e.error (a ProviderError) decides the answer; e.attempts were tried
    # store [a.as_dict() for a in attempts] on the operation

``plan`` raises :class:`RoutingError` (a 400 with ``param``/``code``, mapped by the HTTP layer).
The retryable kinds are ``providers.base.RETRYABLE_KINDS``; the breaker is one
:class:`CircuitBreaker` per gateway process, visible in ``/metrics`` through :class:`BreakerCollector`.
"""

from aistats_gateway.providers.base import RETRYABLE_KINDS
from aistats_gateway.routing.breaker import BreakerCollector, CircuitBreaker, ProviderHealth
from aistats_gateway.routing.errors import RoutingError
from aistats_gateway.routing.fallback import Attempt, FallbackFailed, Routable, Target, is_retryable, run_with_fallback
from aistats_gateway.routing.plan import (
    Route,
    candidates,
    describe_endpoint,
    plan,
    resolve,
    resolve_model,
    split_pinned,
    unit_prices,
)
from aistats_gateway.routing.schemas import MaxPrice, ProviderRouting

__all__ = [
    "RETRYABLE_KINDS", "Attempt", "BreakerCollector", "CircuitBreaker", "FallbackFailed", "MaxPrice",
    "ProviderHealth", "ProviderRouting", "Routable", "Route", "RoutingError", "Target", "candidates",
    "describe_endpoint", "is_retryable", "plan", "resolve", "resolve_model", "run_with_fallback", "split_pinned",
    "unit_prices",
]
