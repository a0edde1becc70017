"""Maps provider ids to adapter modules. Nothing else in the code branches on a provider id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aistats_gateway.providers import config


@dataclass
class AdapterEntry:
    provider_id: str
    # Gateway endpoints the adapter implements, e.g. {"video.generation"}.
    endpoints: frozenset[str]
    # The adapter object for each endpoint (e.g. a VideoProvider for "video.generation").
    adapters: dict[str, Any] = field(default_factory=dict)
    needs_credentials: bool = True


_REGISTRY: dict[str, AdapterEntry] = {}


def register(provider_id: str, endpoint: str, adapter: Any, *, needs_credentials: bool = True) -> None:
    entry = _REGISTRY.get(provider_id)
    if entry is None:
        entry = _REGISTRY[provider_id] = AdapterEntry(provider_id, frozenset(), {}, needs_credentials)
    entry.adapters[endpoint] = adapter
    entry.endpoints = frozenset(entry.adapters)
    entry.needs_credentials = needs_credentials


def adapter_for(provider_id: str, endpoint: str) -> Any | None:
    entry = _REGISTRY.get(provider_id)
    return entry.adapters.get(endpoint) if entry else None


def registered() -> dict[str, AdapterEntry]:
    return dict(_REGISTRY)


def is_routable(provider_id: str, endpoint: str, *, builtin: bool = False) -> bool:
    """True when the gateway can call this provider for this endpoint right now."""
    entry = _REGISTRY.get(provider_id)
    if entry is None or endpoint not in entry.endpoints:
        return False
    if builtin or not entry.needs_credentials:
        return True
    return config.load(provider_id).has_credentials
