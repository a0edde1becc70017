"""The offers that may serve one image/audio request, in the order they will be tried.

Invariants:

* Routing is ``routing.plan`` (model resolution, ``provider`` preferences, credentials, breaker-aware
  sort); its ``RoutingError`` answers 400.
* Then the capability's own filters, in order: the adapter must implement what the call needs
  (``need``: e.g. edits, translations), and the offer must accept every given value
  (``params.filter_offers``, a 400 naming the parameter when none does). ``allow_fallbacks=false``
  is applied last (``routing.plan.candidates``).
* An offer without a price for the endpoint's meters is not used (a free offer says ``price: "0"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aistats_gateway.catalogue.service import ProviderOffer
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.media_api import params, pricing
from aistats_gateway.providers import registry
from aistats_gateway.routing.plan import candidates, describe_endpoint
from aistats_gateway.routing.plan import plan as route
from aistats_gateway.routing.schemas import ProviderRouting

METERS = {
    "images.generations": ("output_image", "input_tokens", "output_tokens"),
    "audio.speech": ("input_characters", "input_tokens", "output_audio_seconds"),
    "audio.transcription": ("input_audio_seconds", "input_tokens", "output_tokens"),
}
describe_endpoint("images.generations", "image generation", "/v1/models")
describe_endpoint("audio.speech", "speech", "/v1/models")
describe_endpoint("audio.transcription", "transcription", "/v1/models")


def parse_prefs(body: Mapping[str, Any]) -> ProviderRouting | None:
    raw = body.get("provider")
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"only": [raw]}
    if not isinstance(raw, dict):
        raise bad_request("'provider' must be an object.", "provider")
    try:
        return ProviderRouting.model_validate(raw)
    except ValueError as e:
        raise bad_request(f"Invalid 'provider': {str(e).splitlines()[-1] if str(e) else e}", "provider") from None


async def plan(gw: Any, model: str, endpoint: str, prefs: ProviderRouting | None, values: Mapping[str, Any],
               need: Callable[[Any], bool] | None = None, what: str = "this request"
               ) -> tuple[str, list[ProviderOffer]]:
    """(the resolved model id, the offers to try in order)."""
    snap = await gw.catalogue.get()
    given = [k for k, v in values.items() if v is not None]
    planned = route(snap, model, endpoint, prefs, params=given, health=gw.breaker)
    offers = [o for o in planned.offers if pricing.has_media_price(o.spec.pricing, METERS[endpoint])]
    if not offers:
        raise APIError(400, f"No provider of {planned.model.spec.model_id} has a price for {endpoint} on this gateway.",
                       param="model", code="no_provider")
    if need is not None:
        offers = [o for o in offers if need(registry.adapter_for(o.provider_id, endpoint))]
        if not offers:
            raise bad_request(f"No provider of {planned.model.spec.model_id} supports {what}.", "model",
                              "unsupported_model_or_endpoint")
    offers = params.filter_offers(offers, endpoint, values, planned.model.spec.model_id)
    return planned.model.spec.model_id, candidates(offers, planned.prefs)
