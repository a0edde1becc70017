"""OpenAI: one module per capability (``video.py`` — Sora, ``batch.py`` — the Batch API). Importing the
package registers them."""

from aistats_gateway.providers.openai import batch, video  # noqa: F401
