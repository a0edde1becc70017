"""Additions to ``providers.protocols`` the image/audio adapters share (kept here, next to them).

* :class:`PartialImage`: an event of an image stream before the final :class:`ImageResult`
  (``ImagesProvider`` adapters that stream offer ``stream(request, ctx) -> AsyncIterator[PartialImage |
  ImageResult]``; the last event is the result).
* Adapters say what they can do with attributes: ``supports_edits`` (images), ``translates``
  (transcription: ``task="translate"``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PartialImage:
    index: int
    data: bytes
    mime_type: str = "image/png"
