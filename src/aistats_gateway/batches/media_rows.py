"""Image and audio batch rows: what a JSON row holds, decoded into the media product's calls.

A batch row is JSON, so binary inputs travel inside it or by reference. Invariants:

* An input (an image to edit, its mask, the audio to transcribe) is one of: a ``data:`` URL
  (``data:image/png;base64,…``), bare base64, an object ``{"image_url": <data URL>}``, or a
  ``file_id`` (``"file-…"`` or ``{"file_id": "file-…"}``) of a file this workspace uploaded with
  purpose ``user_data``, ``vision`` or ``assistants`` (``batch`` files are JSONL requests, not
  media). Remote ``http(s)`` URLs are refused (the gateway does not fetch them for a batch).
  Limits: images ``MAX_IMAGE_BYTES``, audio ``MAX_AUDIO_BYTES`` (the endpoints' own).
* Edits: ``images`` (or ``image``) is one input or a list of 1–16; ``mask`` one input. Every image
  must decode (PNG, JPEG or WebP) before anything is sent.
* Transcriptions / translations: ``file`` (an input as above) or ``file_id``; ``filename``
  optional. The audio is written to a scratch file (``<data_dir>/scratch/media``, swept at start)
  for the duration probe, and removed by :meth:`Row.cleanup` (callers run it in ``finally``).
* Every problem is an ``APIError`` (400 naming the parameter, 404-like references as 400
  ``file_not_found``): at create it makes the row's bound 0 (the row then fails when it runs, with
  this error in the error file), at run it fails the row.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aistats_gateway.files import service as files
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.media import audio_codec, procedural
from aistats_gateway.media_api import audio, images, offers
from aistats_gateway.providers.base import ImageInput
from aistats_gateway.routing.schemas import ProviderRouting

# batch endpoint → the catalogue endpoint its offers list
ENDPOINTS: dict[str, str] = {
    "/v1/images/generations": "images.generations",
    "/v1/images/edits": "images.generations",
    "/v1/audio/speech": "audio.speech",
    "/v1/audio/transcriptions": "audio.transcription",
    "/v1/audio/translations": "audio.transcription",
}
FILE_PURPOSES = ("user_data", "vision", "assistants")
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_AUDIO_BYTES = 25 * 1024 * 1024
MAX_EDIT_IMAGES = 16
_IMAGE_MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}
_AUDIO_EXT = {"audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/wav": "wav", "audio/x-wav": "wav",
              "audio/flac": "flac", "audio/ogg": "ogg", "audio/aac": "aac", "audio/webm": "webm",
              "audio/mp4": "m4a", "audio/m4a": "m4a"}


@dataclass
class Blob:
    data: bytes
    mime: str | None  # from the data URL or the stored file's name; None when unknown
    filename: str | None = None


@dataclass
class Row:
    """One decoded row: exactly one of ``image``, ``speech``, ``stt`` is set."""

    endpoint: str
    kind: str  # the catalogue endpoint (ENDPOINTS)
    model: str
    prefs: ProviderRouting | None
    image: images.ImageCall | None = None
    speech: audio.SpeechCall | None = None
    stt: audio.TranscribeCall | None = None
    seconds: float = 0.0  # transcriptions: the audio's duration
    audio: bytes = b""
    _temp: list[Path] = field(default_factory=list)

    @property
    def values(self) -> dict[str, Any]:
        call = self.image or self.speech or self.stt
        assert call is not None
        return call.values()

    @property
    def what(self) -> str:
        if self.image is not None:
            return "image edits" if self.image.edit else "image generation"
        if self.stt is not None:
            return "translations" if self.stt.task == "translate" else "transcriptions"
        return "speech"

    def need(self, adapter: Any) -> bool:
        """Whether a provider's adapter can do this row (edits, translations)."""
        if adapter is None:
            return False
        if self.image is not None and self.image.edit:
            return bool(getattr(adapter, "supports_edits", False))
        if self.stt is not None and self.stt.task == "translate":
            return bool(getattr(adapter, "translates", False))
        return True

    def cleanup(self) -> None:
        for p in self._temp:
            p.unlink(missing_ok=True)


def _routing(body: dict[str, Any], routing: Any) -> ProviderRouting | None:
    """The batch's ``provider`` object applies to every row; without one, the row's own."""
    return offers.parse_prefs({"provider": routing} if routing else body)


async def _stored(state: Any, workspace_id: str, file_id: str, param: str, limit: int) -> Blob:
    ctx = files.context(state)
    try:
        row = await files.get_owned(ctx, workspace_id, file_id)
    except APIError:
        raise bad_request(f"'{param}': no file '{file_id}' in this workspace.", param, "file_not_found") from None
    if row.purpose not in FILE_PURPOSES:
        raise bad_request(f"'{param}': file '{file_id}' has purpose {row.purpose!r}; upload media with purpose "
                          f"{', '.join(FILE_PURPOSES)}.", param, "invalid_file_purpose")
    if row.bytes > limit:
        raise bad_request(f"'{param}': file '{file_id}' is larger than {limit // (1024 * 1024)} MB.", param,
                          "file_too_large")
    data = b"".join([chunk async for chunk in files.open_content(ctx, row)])
    return Blob(data, None, row.filename)


async def blob(state: Any, workspace_id: str, value: Any, param: str, limit: int) -> Blob:
    """An input given as a data URL, base64, ``{image_url}``, or a ``file_id`` (module docstring)."""
    if isinstance(value, dict):
        if isinstance(value.get("file_id"), str):
            return await _stored(state, workspace_id, value["file_id"], param, limit)
        value = value.get("image_url") if value.get("image_url") is not None else value.get("data")
        if isinstance(value, dict):
            value = value.get("url")
    if not isinstance(value, str) or not value:
        raise bad_request(f"'{param}' must be a data URL, base64 or a file_id.", param, "invalid_type")
    if value.startswith("file-"):
        return await _stored(state, workspace_id, value, param, limit)
    if value.startswith(("http://", "https://")):
        raise bad_request(f"'{param}': URLs are not fetched for batch rows; send a data URL or a file_id.", param,
                          "unsupported_value")
    mime = None
    b64 = value
    if value.startswith("data:"):
        head, _, b64 = value.partition(",")
        mime = head[5:].split(";")[0] or None
    if len(b64) > limit * 4 // 3 + 4:
        raise bad_request(f"'{param}' is larger than {limit // (1024 * 1024)} MB.", param, "file_too_large")
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"'{param}' is not valid base64.", param, "invalid_value") from None
    if not data:
        raise bad_request(f"'{param}' is empty.", param, "invalid_value")
    return Blob(data, mime)


async def _image(state: Any, workspace_id: str, value: Any, role: str, param: str) -> ImageInput:
    got = await blob(state, workspace_id, value, param, MAX_IMAGE_BYTES)
    try:
        await asyncio.to_thread(procedural.image_size, got.data)
    except ValueError:
        raise bad_request(f"'{param}' is not a readable image (PNG, JPEG or WebP).", param, "invalid_image") from None
    mime = next((m for magic, m in _IMAGE_MIME.items() if got.data.startswith(magic)), "image/png")
    return ImageInput(role=role, content=got.data, mime_type=mime)


def _edit_inputs(body: dict[str, Any]) -> list[Any]:
    raw = body.get("images") if body.get("images") is not None else body.get("image")
    items = raw if isinstance(raw, list) else [raw] if raw is not None else []
    if not items:
        raise bad_request("'images' is required: one or more images to edit (data URL, base64 or file_id).",
                          "images", "missing_required_parameter")
    if len(items) > MAX_EDIT_IMAGES:
        raise bad_request(f"At most {MAX_EDIT_IMAGES} images can be edited at once (got {len(items)}).", "images")
    return items


async def _images_row(state: Any, workspace_id: str, endpoint: str, body: dict[str, Any], routing: Any,
                      load: bool) -> Row:
    clean = {k: v for k, v in body.items() if k not in ("image", "images", "mask", "provider")}
    if endpoint == "/v1/images/edits":
        items = _edit_inputs(body)
        if load:
            srcs = [await _image(state, workspace_id, v, "source", "images") for v in items]
            mask = await _image(state, workspace_id, body["mask"], "mask", "mask") if body.get("mask") else None
        else:  # at create only the shape matters: the bound does not depend on the inputs
            srcs = [ImageInput(role="source", content=b"", mime_type="image/png") for _ in items]
            mask = None
        call = images.parse(clean, images=srcs, mask=mask, default_model="openai/gpt-image-1.5")
    else:
        call = images.parse(clean)
    return Row(endpoint, ENDPOINTS[endpoint], call.model, _routing(body, routing), image=call)


def _scratch(state: Any) -> Path:
    path = Path(state.settings.data_dir) / "scratch" / "media"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_temp(state: Any, data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="batch-audio-", suffix=suffix, dir=_scratch(state))
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return Path(name)


async def _stt_row(state: Any, workspace_id: str, endpoint: str, body: dict[str, Any], routing: Any) -> Row:
    source = body.get("file") if body.get("file") is not None else body.get("file_id")
    if source is None:
        raise bad_request("'file' (a data URL or base64) or 'file_id' is required: the audio to transcribe.",
                          "file", "missing_required_parameter")
    got = await blob(state, workspace_id, source, "file", MAX_AUDIO_BYTES)
    name = body.get("filename") if isinstance(body.get("filename"), str) else None
    filename = name or got.filename or "audio." + _AUDIO_EXT.get(got.mime or "", "bin")
    mime = got.mime or "application/octet-stream"
    path = await asyncio.to_thread(_write_temp, state, got.data, Path(filename).suffix[:16])
    row = Row(endpoint, ENDPOINTS[endpoint], "", _routing(body, routing), audio=got.data, _temp=[path])
    try:
        grans = body.get("timestamp_granularities") or []
        if not isinstance(grans, list) or not all(isinstance(g, str) for g in grans):
            raise bad_request("'timestamp_granularities' must be an array of strings.", "timestamp_granularities")
        fields = {k: v for k, v in body.items() if k not in ("file", "file_id", "provider", "timestamp_granularities")}
        row.stt = audio.parse_transcription(fields, grans, path=path, filename=filename, mime=mime,
                                            task="translate" if endpoint.endswith("translations") else "transcribe")
        row.model = row.stt.model
        try:
            row.seconds = await asyncio.to_thread(audio_codec.probe_seconds, path)
        except ValueError as e:
            raise bad_request(f"The file could not be read as audio: {e}.", "file", "invalid_audio") from None
    except BaseException:
        row.cleanup()
        raise
    return row


async def decode(state: Any, workspace_id: str, endpoint: str, body: dict[str, Any], routing: Any, *,
                 load: bool) -> Row:
    """The row's call. ``load=False`` (at create) skips loading edit images; audio is always loaded
    (its duration bounds the hold). Raises ``APIError``; call :meth:`Row.cleanup` when done."""
    if ENDPOINTS[endpoint] == "images.generations":
        return await _images_row(state, workspace_id, endpoint, body, routing, load)
    if endpoint == "/v1/audio/speech":
        call = audio.parse_speech({k: v for k, v in body.items() if k != "provider"})
        if call.stream_format != "audio":
            raise bad_request("'stream_format' does not apply to a batch row (the audio is in the output file).",
                              "stream_format")
        return Row(endpoint, ENDPOINTS[endpoint], call.model, _routing(body, routing), speech=call)
    return await _stt_row(state, workspace_id, endpoint, body, routing)
