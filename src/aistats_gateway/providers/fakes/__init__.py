"""Local fake provider APIs for tests and manual runs (loopback only).

``FAKES`` maps a provider id to an app factory; ``serve("openai", port=8123)`` runs one
with uvicorn. For tests use :class:`aistats_gateway.providers.fakes.testing.RunningFake`.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette

from . import alibaba as _alibaba
from . import byteplus as _byteplus
from . import fal as _fal
from . import google as _google
from . import kling as _kling
from . import luma as _luma
from . import minimax as _minimax
from . import openai as _openai
from . import runway as _runway
from . import xai as _xai


def _lazy(module: str, pick: Callable[[Any], Callable[..., Starlette]] = lambda m: m.create_app
          ) -> Callable[..., Starlette]:
    """A factory importing the inference fake ``.module`` on first use (the video fakes never need it);
    ``pick`` chooses the module's factory. Keyword arguments only (``api_key=``, state knobs)."""
    def factory(**kwargs: Any) -> Starlette:
        from importlib import import_module

        return pick(import_module(f"{__name__}.{module}"))(**kwargs)
    return factory


def _compat(provider: str, api_key: str, **styles: str) -> Callable[..., Starlette]:
    """An OpenAI-compatible inference fake (``openai_inference.compat_factory``) for ``provider``."""
    return _lazy("openai_inference", lambda m: m.compat_factory(provider, api_key, **styles))


def _media(factory: Callable[..., Starlette], api_key: str, **state: Any) -> Callable[..., Starlette]:
    """``factory``'s app with the OpenAI-shaped audio routes of ``openai_media`` added (``app.state.media``)."""
    def build(**kwargs: Any) -> Starlette:
        from .openai_media import MediaState, media_routes

        app = factory(**kwargs)
        app.state.media = MediaState(api_key=kwargs.get("api_key", api_key), **state)
        app.router.routes[:0] = media_routes(app.state.media)
        return app
    return build


def _images(provider: str, factory: Callable[..., Starlette], api_key: str) -> Callable[..., Starlette]:
    """``factory``'s app with ``provider``'s image API in front (``hosted_images``, ``app.state.images``)."""
    def build(**kwargs: Any) -> Starlette:
        from .hosted_images import mount

        return mount(provider, factory, api_key)(**kwargs)
    return build


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
    "x-ai": _xai.create_app,
    # inference fakes (openai, x-ai, google-* also serve inference: see openai_inference, google_inference)
    "anthropic": _lazy("anthropic"),
    "cohere": _lazy("cohere"),
    "amazon-bedrock": _lazy("bedrock"),
    "mistral": _media(_compat("mistral", "mistral-test", error_style="mistral", usage_style="final_chunk"),
                      "mistral-test", stt_models={"voxtral-mini-latest": ("json", "text")}, translate_models=()),
    "deepseek": _compat("deepseek", "sk-deepseek-test"),
    "groq": _media(_compat("groq", "gsk_test", usage_style="x_groq"), "gsk_test",
                   stt_models={"whisper-large-v3": ("json", "text", "verbose_json"),
                               "whisper-large-v3-turbo": ("json", "text", "verbose_json")},
                   translate_models=("whisper-large-v3",)),
    "together": _images("together", _compat("together", "together-test", usage_style="final_chunk"), "together-test"),
    "openai-compatible": _compat("openai-compatible", "sk-test"),  # api_key="" accepts any key (Ollama)
    "eleven-labs": _lazy("elevenlabs"),  # text-to-speech and speech-to-text
    # native batch APIs next to the inference ones (openai_batch, anthropic_batch, gemini_batch)
    "openai-batch": _lazy("openai_batch"),
    "anthropic-batch": _lazy("anthropic_batch"),
    "gemini-batch": _lazy("gemini_batch"),
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
