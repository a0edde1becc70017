"""The blob store interface shared by every backend, and the helpers they share.

A blob store keeps opaque byte objects (video outputs, thumbnails, batch files)
under slash-separated keys such as ``videos/<job_id>/0.mp4``. Everything is
async and streaming: no method ever needs a whole blob in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "InvalidRange",
    "StorageError",
    "check_range",
    "make_etag",
    "validate_key",
    "validate_prefix",
]

DEFAULT_CHUNK_SIZE = 256 * 1024
MAX_KEY_BYTES = 1024  # S3's limit; applied to every backend so keys stay portable
SIDECAR_SUFFIX = ".meta.json"


class StorageError(Exception):
    """A blob store operation failed. ``code`` is the backend's error code (e.g. S3's)."""

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code

    def __str__(self) -> str:
        parts = [p for p in (self.code, str(self.status_code) if self.status_code else None) if p]
        return f"{self.message} ({', '.join(parts)})" if parts else self.message


class BlobNotFound(StorageError):
    """The key does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"blob not found: {key}", code="NoSuchKey", status_code=404)
        self.key = key


class InvalidRange(StorageError):
    """The requested byte range starts past the end of the blob (HTTP 416)."""

    def __init__(self, key: str, start: int, size: int | None) -> None:
        super().__init__(
            f"range start {start} is not satisfiable for {key} (size {size})", code="InvalidRange", status_code=416
        )
        self.size = size


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    sha256: str | None
    content_type: str
    etag: str  # a strong, quoted HTTP ETag


@runtime_checkable
class BlobStore(Protocol):
    async def put_file(self, key: str, path: Path, *, content_type: str) -> BlobInfo:
        """Copy (or upload) a local file under ``key``, streaming it."""
        ...

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str) -> BlobInfo:
        """Store the bytes of ``chunks`` under ``key``, computing size and sha256 on the way."""
        ...

    async def stat(self, key: str) -> BlobInfo | None:
        """Describe ``key``, or None when it does not exist."""
        ...

    def open_range(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Stream bytes ``start..end`` (inclusive, like HTTP Range; ``end`` is clamped to the size).

        Raises ValueError at once for a malformed range; the iterator raises
        BlobNotFound for a missing key and InvalidRange when ``start`` is past the end.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every blob whose key starts with ``prefix``; return how many were removed."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The filesystem path of ``key`` when the backend has one, else None."""
        ...

    async def close(self) -> None: ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe, portable blob key, else raise ValueError.

    Rejected: empty keys, absolute paths, backslashes, empty segments (``a//b``,
    trailing ``/``), ``.``/``..`` segments, segments starting with ``.`` (reserved
    for temporary files), control characters, keys ending in ``.meta.json``
    (reserved for sidecars) and keys longer than 1024 UTF-8 bytes.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("blob key must be a non-empty string")
    if key.startswith("/"):
        raise ValueError(f"blob key must be relative: {key!r}")
    if "\\" in key:
        raise ValueError(f"blob key must not contain backslashes: {key!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValueError(f"blob key must not contain control characters: {key!r}")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"blob key longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if not segment:
            raise ValueError(f"blob key has an empty segment: {key!r}")
        if segment in (".", ".."):
            raise ValueError(f"blob key must not contain '.' or '..' segments: {key!r}")
        if segment.startswith("."):
            raise ValueError(f"blob key segments must not start with '.': {key!r}")
    if key.endswith(SIDECAR_SUFFIX):
        raise ValueError(f"blob keys ending in {SIDECAR_SUFFIX!r} are reserved: {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Like validate_key, but a trailing ``/`` is allowed; an empty prefix is refused."""
    if not prefix:
        raise ValueError("prefix must not be empty (refusing to delete everything)")
    validate_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix


def check_range(start: int, end: int | None, chunk_size: int) -> None:
    if start < 0:
        raise ValueError(f"range start must be >= 0, got {start}")
    if end is not None and end < start:
        raise ValueError(f"range end {end} is before start {start}")
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")


def make_etag(sha256: str | None, size: int, mtime_ns: int | None = None) -> str:
    """A strong quoted ETag: from the sha256 when known, else from size and mtime."""
    if sha256:
        return f'"{sha256[:32]}"'
    seed = f"{size}-{mtime_ns or 0}".encode()
    return f'"{hashlib.sha256(seed).hexdigest()[:32]}"'
