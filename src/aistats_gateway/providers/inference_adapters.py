"""Registers every inference adapter with ``providers.registry`` (the one place that does).

Endpoints: ``chat.completions`` (a ``ChatProvider``), ``embeddings`` (an ``EmbeddingsProvider``),
``moderations`` (a ``ModerationProvider``). Importing this module registers them; it is imported
by ``inference.endpoints``.
"""

from __future__ import annotations

from aistats_gateway.providers import registry
from aistats_gateway.providers.anthropic.messages import AnthropicChat
from aistats_gateway.providers.bedrock import BedrockChat
from aistats_gateway.providers.bedrock_embeddings import BedrockEmbeddings
from aistats_gateway.providers.cohere import CohereChat, CohereEmbeddings
from aistats_gateway.providers.google.chat import GeminiChat, GeminiEmbeddings
from aistats_gateway.providers.local_text.chat import LocalChat
from aistats_gateway.providers.local_text.embeddings import LocalEmbeddings, LocalModerations
from aistats_gateway.providers.minimax_chat import MiniMaxChat
from aistats_gateway.providers.mistral.moderations import MistralModerations
from aistats_gateway.providers.openai_compat.chat import (
    FAMILIES,
    Family,
    OpenAICompatChat,
)
from aistats_gateway.providers.openai_compat.embeddings import (
    OpenAICompatEmbeddings,
    OpenAICompatModerations,
)

EMBEDDINGS = ("openai", "mistral", "together", "alibaba")
MODERATIONS = ("openai",)


def register_family(family: Family, *, embeddings: bool = False, moderations: bool = False) -> None:
    """An OpenAI-compatible provider (built in or operator-defined)."""
    registry.register(family.provider_id, "chat.completions", OpenAICompatChat(family))
    if embeddings:
        registry.register(family.provider_id, "embeddings", OpenAICompatEmbeddings(family))
    if moderations:
        registry.register(family.provider_id, "moderations", OpenAICompatModerations(family))


for _family in FAMILIES.values():
    register_family(_family, embeddings=_family.provider_id in EMBEDDINGS,
                    moderations=_family.provider_id in MODERATIONS)
registry.register("anthropic", "chat.completions", AnthropicChat())
registry.register("google-ai-studio", "chat.completions", GeminiChat("google-ai-studio"))
registry.register("google-ai-studio", "embeddings", GeminiEmbeddings("google-ai-studio"))
registry.register("google-vertex", "chat.completions", GeminiChat("google-vertex"))
registry.register("cohere", "chat.completions", CohereChat())
registry.register("amazon-bedrock", "chat.completions", BedrockChat())
registry.register("amazon-bedrock", "embeddings", BedrockEmbeddings())
registry.register("cohere", "embeddings", CohereEmbeddings())
registry.register("minimax", "chat.completions", MiniMaxChat())
registry.register("mistral", "moderations", MistralModerations(FAMILIES["mistral"]))  # its own shape, mapped
# The built-in local models: no credentials (like the local video and image renderers).
registry.register("local", "chat.completions", LocalChat(), needs_credentials=False)
registry.register("local", "embeddings", LocalEmbeddings(), needs_credentials=False)
registry.register("local", "moderations", LocalModerations(), needs_credentials=False)
