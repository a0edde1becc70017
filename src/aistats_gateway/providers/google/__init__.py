"""Google: the ``google-ai-studio`` (Gemini API) and ``google-vertex`` (Vertex AI) providers, one module
per (provider, capability) — ``ai_studio_video.py``, ``vertex_video.py``, ``batch.py`` (Gemini batch
mode) — and their shared ``common.py``.
Importing the package registers them."""

from aistats_gateway.providers.google import ai_studio_video, batch, vertex_video  # noqa: F401
