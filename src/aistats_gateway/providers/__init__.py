"""Provider adapters. Importing this package registers every adapter with the registry (and defines
the capability keys of ``protocols``).

A provider with one capability is a module (``kling.py``); once it has more than one it is a package
with one module per capability (``openai/video.py``, later ``openai/chat.py`` …)."""

from aistats_gateway.providers import (  # noqa: F401  (each module registers its adapters)
    alibaba,
    anthropic,
    byteplus,
    fal,
    google,
    kling,
    local,
    luma,
    media,
    minimax,
    openai,
    protocols,
    runway,
    xai,
)
