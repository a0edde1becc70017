"""The typed provider registry: provider id → the capabilities it implements → its adapter.

Invariants:

* A :class:`Capability` is a typed key (``Capability[VideoProvider]``) naming the gateway endpoints
  it serves (``VIDEO`` serves ``"video.generation"``). Each endpoint belongs to at most one
  capability; creating a second capability for an endpoint raises.
* ``register(pid, VIDEO, adapter)`` stores one adapter per (provider, capability);
  ``get(pid, VIDEO)`` returns it typed as ``VideoProvider | None``.
* This module is the only place that decides what a provider id can do. Nothing else in the code
  compares provider ids against literals: callers ask the registry (or the adapter's own attributes).
* The provider modules register themselves when ``aistats_gateway.providers`` is imported.

Other capabilities (chat, embeddings, moderation, images, audio, batch, files) define their key next
to their protocol, e.g. in ``providers/inference.py``::

    CHAT: Capability[ChatProvider] = Capability("chat", frozenset({"chat.completions"}))
    registry.register("openai", CHAT, OpenAIChat())
    adapter = registry.get("openai", CHAT)  # ChatProvider | None
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast, overload

from aistats_gateway.providers import config

T = TypeVar("T")

_CAPABILITIES: dict[str, Capability[Any]] = {}
_BY_ENDPOINT: dict[str, Capability[Any]] = {}
_IMPLICIT: set[str] = set()  # capabilities made by register(pid, "<endpoint>", adapter), before a typed key


class Capability(Generic[T]):
    """A typed registry key: what a provider can do, and the gateway endpoints that need it."""

    __slots__ = ("endpoints", "name")
    name: str
    endpoints: frozenset[str]

    def __init__(self, name: str, endpoints: frozenset[str]) -> None:
        if name in _CAPABILITIES and name not in _IMPLICIT:
            raise ValueError(f"capability {name!r} is already defined")
        clash = [e for e in endpoints if e in _BY_ENDPOINT and _BY_ENDPOINT[e].name not in _IMPLICIT]
        if clash:
            raise ValueError(f"endpoint {clash[0]!r} already belongs to capability {_BY_ENDPOINT[clash[0]].name!r}")
        self.name = name
        self.endpoints = endpoints
        for e in endpoints:  # a typed key replaces the implicit one of its endpoints (adapters move over)
            old = _BY_ENDPOINT.get(e)
            if old is not None:
                _adopt(old, self)
            _BY_ENDPOINT[e] = self
        _CAPABILITIES[name] = self

    def __repr__(self) -> str:
        return f"Capability({self.name!r})"


def _adopt(old: Capability[Any], new: Capability[Any]) -> None:
    _IMPLICIT.discard(old.name)
    _CAPABILITIES.pop(old.name, None)
    for entry in _REGISTRY.values():
        if old in entry.adapters:
            entry.adapters[new] = entry.adapters.pop(old)
            entry._endpoints = None


def _key(capability: Capability[Any] | str) -> Capability[Any]:
    """A capability key; an endpoint string (``"chat.completions"``) names the capability serving it,
    made implicitly (untyped) when no typed key exists for that endpoint yet."""
    if isinstance(capability, Capability):
        return capability
    found = _BY_ENDPOINT.get(capability)
    if found is None:
        _IMPLICIT.add(capability)
        found = Capability(capability, frozenset({capability}))
    return found


def capability_for(endpoint: str) -> Capability[Any] | None:
    """The capability that serves a gateway endpoint (``"video.generation"`` → ``VIDEO``)."""
    return _BY_ENDPOINT.get(endpoint)


def capabilities() -> dict[str, Capability[Any]]:
    return dict(_CAPABILITIES)


@dataclass
class AdapterEntry:
    """Everything registered for one provider id."""

    provider_id: str
    adapters: dict[Capability[Any], object] = field(default_factory=dict)
    needs_credentials: bool = True

    _endpoints: frozenset[str] | None = field(default=None, repr=False, compare=False)

    @property
    def endpoints(self) -> frozenset[str]:
        """The endpoints of its capabilities (memoised; ``register`` and a capability's adoption reset it)."""
        if self._endpoints is None:
            self._endpoints = frozenset(e for cap in self.adapters for e in cap.endpoints)
        return self._endpoints


_REGISTRY: dict[str, AdapterEntry] = {}


@overload
def register(provider_id: str, capability: Capability[T], adapter: T, *, needs_credentials: bool = True) -> None: ...


@overload
def register(provider_id: str, capability: str, adapter: object, *, needs_credentials: bool = True) -> None: ...


def register(provider_id: str, capability: Capability[Any] | str, adapter: object, *,
             needs_credentials: bool = True) -> None:
    """Register ``adapter`` as ``provider_id``'s implementation of ``capability`` (replacing any earlier
    one). Prefer the typed key; an endpoint string is accepted for adapters without one yet."""
    entry = _REGISTRY.get(provider_id)
    if entry is None:
        entry = _REGISTRY[provider_id] = AdapterEntry(provider_id)
    entry.adapters[_key(capability)] = adapter
    entry._endpoints = None
    entry.needs_credentials = needs_credentials


def get(provider_id: str, capability: Capability[T]) -> T | None:
    """The provider's adapter for ``capability``, typed; None when it does not implement it."""
    entry = _REGISTRY.get(provider_id)
    if entry is None:
        return None
    return cast("T | None", entry.adapters.get(capability))


def adapter_for(provider_id: str, endpoint: str) -> Any:
    """The adapter serving a gateway endpoint, or None — untyped, for code that only has the endpoint
    string. Prefer ``get(provider_id, KEY)``, which is typed."""
    cap = _BY_ENDPOINT.get(endpoint)
    return get(provider_id, cap) if cap is not None else None


def registered() -> dict[str, AdapterEntry]:
    return dict(_REGISTRY)


def implements(provider_id: str, capability: Capability[Any]) -> bool:
    entry = _REGISTRY.get(provider_id)
    return entry is not None and capability in entry.adapters


def is_routable(provider_id: str, endpoint: str, *, builtin: bool = False) -> bool:
    """True when the gateway can call this provider for this endpoint right now."""
    entry = _REGISTRY.get(provider_id)
    if entry is None or endpoint not in entry.endpoints:
        return False
    if builtin or not entry.needs_credentials:
        return True
    return config.load(provider_id).has_credentials
