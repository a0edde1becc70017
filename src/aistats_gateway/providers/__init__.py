"""Provider adapters. Importing this package registers every adapter with the registry."""

from aistats_gateway.providers import (  # noqa: F401  # noqa: F401  # noqa: F401  # noqa: F401
    alibaba,
    byteplus,
    fal,
    google_ai_studio,
    google_vertex,
    kling,
    local,
    luma,
    minimax,
    openai,
    runway,
    xai,
)
