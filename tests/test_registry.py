"""The typed provider registry: capability keys, typed lookups, endpoint-string registrations."""

from __future__ import annotations

from typing import Protocol

import pytest

from aistats_gateway.providers import registry
from aistats_gateway.providers.base import VIDEO


class Echo(Protocol):
    def echo(self, text: str) -> str: ...


class EchoAdapter:
    def echo(self, text: str) -> str:
        return text


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_CAPABILITIES", "_BY_ENDPOINT", "_REGISTRY"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    monkeypatch.setattr(registry, "_IMPLICIT", set(registry._IMPLICIT))


def test_every_video_provider_is_registered_under_the_video_key() -> None:
    import aistats_gateway.providers  # noqa: F401

    assert registry.capability_for("video.generation") is VIDEO
    for pid in ("openai", "google-ai-studio", "google-vertex", "x-ai", "local"):
        adapter = registry.get(pid, VIDEO)
        assert adapter is not None and adapter.provider_id == pid
        assert registry.adapter_for(pid, "video.generation") is adapter
        assert "video.generation" in registry.registered()[pid].endpoints


def test_typed_key_and_lookup() -> None:
    echo: registry.Capability[Echo] = registry.Capability("echo-test", frozenset({"echo.test"}))
    registry.register("p-echo", echo, EchoAdapter(), needs_credentials=False)
    got = registry.get("p-echo", echo)  # Echo | None
    assert got is not None and got.echo("hi") == "hi"
    assert registry.get("p-echo", VIDEO) is None and registry.get("nobody", echo) is None
    assert registry.implements("p-echo", echo) and registry.is_routable("p-echo", "echo.test")
    with pytest.raises(ValueError):
        registry.Capability("echo-test", frozenset({"echo.other"}))
    with pytest.raises(ValueError):
        registry.Capability("echo-two", frozenset({"echo.test"}))


def test_endpoint_string_registration_is_adopted_by_a_later_typed_key() -> None:
    adapter = EchoAdapter()
    registry.register("p-str", "later.endpoint", adapter)
    assert registry.adapter_for("p-str", "later.endpoint") is adapter
    typed: registry.Capability[Echo] = registry.Capability("later", frozenset({"later.endpoint"}))
    assert registry.get("p-str", typed) is adapter and registry.capability_for("later.endpoint") is typed
    assert "later.endpoint" not in registry.capabilities()
