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
