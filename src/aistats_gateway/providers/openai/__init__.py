"""OpenAI: one module per capability (``video.py`` — Sora). Importing the package registers them."""

from aistats_gateway.providers.openai import video  # noqa: F401
