"""Image and audio adapters (``providers.protocols`` IMAGES / SPEECH / TRANSCRIPTION), one module per
provider; importing the package registers them."""

from aistats_gateway.providers.media import (  # noqa: F401  (each module registers its adapters)
    alibaba,
    bedrock,
    byteplus,
    elevenlabs,
    fal,
    google,
    local,
    luma,
    openai,
    runway,
    together,
    xai,
)
