"""The catalogue-coverage tests' shared parts: the offers of the shipped catalogue and a fake per provider.

* :class:`Offer` and :func:`active_offers`: every (model, provider, endpoint) offer of an ``active`` model in
  the shipped catalogue, as the gateway's snapshot holds it, in catalogue order.
* :class:`Target` and :func:`adapter_targets`: one running fake per provider id (Google's serves both
  Google ids, with a throwaway service account registered) and the credentials and base URL an adapter
  needs for it; ``local`` needs neither.
* :func:`case_label` and :func:`refusal`: how a failure line names the case and the provider's error.

Invariants: the fakes listen on 127.0.0.1 and are all stopped afterwards, the Vertex credential cache is
emptied, and the Vertex PROJECT / LOCATION variables are unset for the duration (the adapter reads them at
call time; the service account names the project).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aistats_gateway.catalogue.loader import build
from aistats_gateway.catalogue.schema import ModelProvider, ParameterDetail
from aistats_gateway.catalogue.service import ProviderOffer, build_snapshot
from aistats_gateway.providers.base import ProviderError
from aistats_gateway.providers.fakes.testing import RunningFake
from aistats_gateway.providers.google import vertex_video as google_vertex
from tests.support.google_accounts import PROJECT, SA_EMAIL, SA_KEY_ID, rsa_pair, service_account
from tests.support.providers import environment


@dataclass(frozen=True)
class Offer:
    """One provider's offer of one model for one endpoint."""

    model_id: str
    endpoint: str
    offer: ProviderOffer

    @property
    def provider_id(self) -> str:
        return self.offer.provider_id

    @property
    def spec(self) -> ModelProvider:
        return self.offer.spec

    @property
    def slug(self) -> str:
        return self.spec.provider_model_slug

    @property
    def params(self) -> dict[str, ParameterDetail]:
        """The parameters the offer advertises for its endpoint."""
        return dict(self.spec.parameters.get(self.endpoint) or {})  # type: ignore[call-overload]


def active_offers(endpoints: Sequence[str], *, priced: bool = False) -> list[Offer]:
    """The offers of the shipped catalogue's active models for each of ``endpoints`` (with ``priced``: only
    offers with a price)."""
    snap = build_snapshot(1, build()[0])
    return [Offer(e.spec.model_id, ep, o) for e in snap.models if e.spec.status == "active" for o in e.offers
            for ep in endpoints if ep in o.spec.endpoints and (o.spec.pricing or not priced)]


def case_label(offer: Offer, name: str, value: Any) -> str:
    """How a failure names the case: the offer and the parameter value it sent."""
    return f"{offer.model_id} via {offer.provider_id}: {name}={json.dumps(value)}"


def refusal(e: ProviderError) -> str:
    """A provider error as a failure line says it."""
    return f"ProviderError({e.kind}, code={e.code}, status={e.status}, param={e.param}): {e.message}"


@dataclass
class Target:
    api_key: str | None
    base_url: str | None


@contextmanager
def adapter_targets(fakes: Mapping[str, tuple[str, str, Mapping[str, Any]]], studio_key: str,
                    **google_knobs: Any) -> Iterator[dict[str, Target]]:
    """Start ``fakes`` (provider id → (the key its adapter sends, the path its base URL ends with, the fake
    factory's keyword arguments)) and the Google fake (``studio_key`` for AI Studio, a service account for
    Vertex, ``google_knobs`` for its factory); yield each provider id's :class:`Target`."""
    running: list[RunningFake] = []
    out: dict[str, Target] = {"local": Target(None, None)}
    try:
        for pid, (key, path, kwargs) in fakes.items():
            fake = RunningFake(pid, **kwargs)
            running.append(fake.start())
            out[pid] = Target(key, fake.url + path)
        google = RunningFake("google-vertex", api_key=studio_key, project=PROJECT, **google_knobs)
        running.append(google.start())
        private, public = rsa_pair()
        google.state.register_service_account(SA_EMAIL, SA_KEY_ID, public, PROJECT)
        out["google-ai-studio"] = Target(studio_key, google.url)
        out["google-vertex"] = Target(json.dumps(service_account(private, google.url + "/token")), google.url)
        with environment({"AISTATS_PROVIDER_GOOGLE_VERTEX_PROJECT": None,
                          "AISTATS_PROVIDER_GOOGLE_VERTEX_LOCATION": None}):
            yield out
    finally:
        google_vertex.forget_credentials()
        for fake in running:
            fake.stop()
