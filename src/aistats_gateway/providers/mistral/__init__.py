"""Mistral's own APIs beyond the OpenAI-compatible chat and embeddings (``providers.openai_compat``)."""
