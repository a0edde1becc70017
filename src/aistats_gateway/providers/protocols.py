"""The small protocols of the capabilities beyond video and inference — images, audio, batch, files —
with their typed registry keys. (Video is ``providers/base.py:VIDEO``; chat, embeddings and
moderation are ``providers/inference.py``'s.)

Same rules as every adapter: an adapter turns the unified request into its provider's API and back,
raises ``ProviderError`` (whose kind decides fallback, see ``base.RETRYABLE_KINDS``) and never touches
the database, storage or billing. No adapter implements these yet; the images/audio and batches
work (issues 11 and 12) builds on them and may extend the request and result types.
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


# ---- files and batches at a provider -------------------------------------------------------


@dataclass(frozen=True)
class ProviderFile:
    native_id: str
    bytes: int
    purpose: str


class FilesProvider(Protocol):
    """Files stored at the provider (e.g. a batch's input and output JSONL)."""

    async def upload(self, filename: str, content: bytes, purpose: str, ctx: CallContext) -> ProviderFile: ...

    def download(self, native_id: str, ctx: CallContext) -> AsyncIterator[bytes]: ...

    async def delete(self, native_id: str, ctx: CallContext) -> bool: ...


@dataclass(frozen=True)
class BatchSubmit:
    input_file_id: str  # the provider's file id (FilesProvider.upload)
    endpoint: str  # e.g. /v1/chat/completions
    completion_window: str = "24h"
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchState:
    native_id: str
    status: str  # validating | in_progress | finalizing | completed | failed | expired | cancelling | cancelled
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    poll_after: float | None = None


class BatchProvider(Protocol):
    """A provider's own batch API (the gateway runs other batches row by row through the capability)."""

    poll_interval: float

    async def create(self, request: BatchSubmit, ctx: CallContext) -> BatchState: ...

    async def poll(self, native_id: str, ctx: CallContext) -> BatchState: ...

    async def cancel(self, native_id: str, ctx: CallContext) -> BatchState: ...


IMAGES: Capability[ImagesProvider] = Capability("images", frozenset({"images.generations"}))
SPEECH: Capability[SpeechProvider] = Capability("speech", frozenset({"audio.speech"}))
TRANSCRIPTION: Capability[TranscriptionProvider] = Capability("transcription", frozenset({"audio.transcription"}))
BATCH: Capability[BatchProvider] = Capability("batch", frozenset({"batch"}))
FILES: Capability[FilesProvider] = Capability("files", frozenset())  # no catalogue endpoint of its own
