"""xAI (provider id ``x-ai``): one module per capability (``video.py`` — Grok Imagine video).
Importing the package registers them."""

from aistats_gateway.providers.xai import video  # noqa: F401
