"""Stored media outputs and their first-party signed links: ``/v1/images/content/{gen_id}/{index}``.

Invariants:

* Outputs live in the gateway's blob store under ``media/<gen_id>/<index>.<ext>``; a ``url`` in a
  response is always such a link, never a provider's (expiring) URL.
* ``sig = hex(HMAC-SHA256(secret, "media1\\n{gen_id}\\n{index}\\n{expires}"))``; the link serves the
  bytes without an API key until ``expires``; changing any part invalidates it (403).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator

EXT = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
DEFAULT_TTL = 3600


def key(gen_id: str, index: int, mime: str) -> str:
    return f"media/{gen_id}/{index}.{EXT.get(mime, 'bin')}"


def _message(gen_id: str, index: int, expires: int) -> bytes:
    return f"media1\n{gen_id}\n{index}\n{expires}".encode()


def sign(secret: bytes, base_url: str, gen_id: str, index: int, *, ttl: int = DEFAULT_TTL,
         now: float | None = None) -> str:
    expires = int(now if now is not None else time.time()) + ttl
    sig = hmac.new(secret, _message(gen_id, index, expires), hashlib.sha256).hexdigest()
    return f"{base_url}/v1/images/content/{gen_id}/{index}?expires={expires}&sig={sig}"


def verify(secret: bytes, gen_id: str, index: int, expires: int, sig: str, *, now: float | None = None) -> str | None:
    """None when valid, else ``expired`` or ``bad_signature``."""
    expected = hmac.new(secret, _message(gen_id, index, expires), hashlib.sha256).hexdigest()
    if not sig.isascii() or not hmac.compare_digest(expected, sig):
        return "bad_signature"
    if expires < int(now if now is not None else time.time()):
        return "expired"
    return None


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data
