"""Local fake provider APIs for tests and manual runs (loopback only).

``FAKES`` maps a provider id to an app factory; ``serve("openai", port=8123)`` runs one
with uvicorn. For tests use :class:`aistats_gateway.providers.fakes.testing.RunningFake`.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Callable

from starlette.applications import Starlette

from . import openai as _openai
from . import kling as _kling
from . import luma as _luma
from . import google as _google
from . import alibaba as _alibaba, byteplus as _byteplus, minimax as _minimax
from . import fal as _fal, runway as _runway, xai as _xai
from . import anthropic as _anthropic, bedrock as _bedrock, cohere as _cohere
from .openai_inference import compat_factory

FAKES: dict[str, Callable[..., Starlette]] = {
    "openai": _openai.create_app,
    "kling": _kling.create_app,
    "luma": _luma.create_app,
    "google-ai-studio": _google.create_app,
    "google-vertex": _google.create_app,
    "minimax": _minimax.create_app,
    "byteplus": _byteplus.create_app,
    "alibaba": _alibaba.create_app,
    "fal": _fal.create_app,
    "runway": _runway.create_app,
    "anthropic": _anthropic.create_app,
    "cohere": _cohere.create_app,
    "amazon-bedrock": _bedrock.create_app,
    "x-ai": _xai.create_app,  # video + OpenAI-compatible chat/embeddings (xAI error shape)
    # OpenAI-compatible inference (chat completions + embeddings); also for operator providers (Ollama /v1…)
    "mistral": compat_factory("mistral", "mistral-test", error_style="mistral"),
    "deepseek": compat_factory("deepseek", "sk-deepseek-test"),
    "groq": compat_factory("groq", "gsk_test"),
    "together": compat_factory("together", "together-test"),
    "openai-compatible": compat_factory("openai-compatible", "sk-test"),
}


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(name: str, host: str = "127.0.0.1", port: int = 0, **factory_kwargs: Any) -> None:
    """Run fake ``name`` in the foreground. Only loopback hosts (127.0.0.0/8, ::1, localhost)."""
    if name not in FAKES:
        raise KeyError(f"unknown fake {name!r}; known: {', '.join(sorted(FAKES))}")
    if not is_loopback(host):
        raise ValueError(f"refusing to serve a fake provider on non-loopback host {host!r}")
    import uvicorn

    uvicorn.run(FAKES[name](**factory_kwargs), host=host.strip("[]"), port=port, log_level="info")


__all__ = ["FAKES", "is_loopback", "serve"]
