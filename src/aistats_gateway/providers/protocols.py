"""The small protocols of the media capabilities — images and audio — with their typed registry
keys. (Video is ``providers/base.py:VIDEO``; chat, embeddings and moderation are
``providers/inference.py``'s; a provider's own batch API is ``providers/batch_api.py:BATCH``.)

Same rules as every adapter: an adapter turns the unified request into its provider's API and back,
raises ``ProviderError`` (whose kind decides fallback, see ``base.RETRYABLE_KINDS``) and never touches
the database, storage or billing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from aistats_gateway.providers.base import CallContext, ImageInput
from aistats_gateway.providers.registry import Capability

# ---- images --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRequest:
    """``/v1/images/generations`` (and edits, with ``images``) after validation."""

    model_slug: str
    prompt: str
    n: int = 1
    size: str | None = None  # WxH
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None  # png | jpeg | webp
    images: tuple[ImageInput, ...] = ()  # inputs of an edit
    mask: ImageInput | None = None
    provider_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes | None = None  # inline bytes, or
    url: str | None = None  # where the provider left it
    mime_type: str = "image/png"
    revised_prompt: str | None = None


@dataclass(frozen=True)
class ImageResult:
    images: tuple[GeneratedImage, ...]
    usage: dict[str, Any] = field(default_factory=dict)  # e.g. {"output_image": 2, "input_tokens": 40}


class ImagesProvider(Protocol):
    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult: ...


# ---- audio ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechRequest:
    model_slug: str
    input: str
    voice: str
    response_format: str = "mp3"
    speed: float | None = None
    instructions: str | None = None


class SpeechProvider(Protocol):
    """``/v1/audio/speech``: the audio, streamed as the provider produces it."""

    def speech(self, request: SpeechRequest, ctx: CallContext) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class TranscriptionRequest:
    model_slug: str
    audio: bytes
    filename: str
    mime_type: str
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float | None = None
    task: str = "transcribe"  # transcribe | translate (into English; adapters with ``translates = True``)
    timestamp_granularities: tuple[str, ...] = ()  # word and/or segment


@dataclass(frozen=True)
class TranscriptionResult:
    text: str
    usage: dict[str, Any] = field(default_factory=dict)  # e.g. {"input_audio_seconds": 12.5}
    details: dict[str, Any] = field(default_factory=dict)  # segments, words, language …


class TranscriptionProvider(Protocol):
    async def transcribe(self, request: TranscriptionRequest, ctx: CallContext) -> TranscriptionResult: ...


IMAGES: Capability[ImagesProvider] = Capability("images", frozenset({"images.generations"}))
SPEECH: Capability[SpeechProvider] = Capability("speech", frozenset({"audio.speech"}))
TRANSCRIPTION: Capability[TranscriptionProvider] = Capability("transcription", frozenset({"audio.transcription"}))
