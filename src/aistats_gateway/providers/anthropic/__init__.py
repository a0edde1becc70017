"""Anthropic: Messages upstream (``messages.py``) and Message Batches (``batch.py``). Importing the
package registers the batch adapter (the chat adapter is registered by ``inference_adapters``)."""

from aistats_gateway.providers.anthropic import batch  # noqa: F401
