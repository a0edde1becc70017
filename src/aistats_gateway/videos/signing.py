"""First-party signed download links: ``/v1/videos/{id}/content?index=&variant=&disposition=&expires=&sig=``.

``sig = hex(HMAC-SHA256(secret, "v1\\n{id}\\n{index}\\n{variant}\\n{disposition}\\n{expires}"))``. The link
serves the bytes without an API key until ``expires``; changing any part invalidates it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import urlencode


@dataclass(frozen=True)
class SignedLink:
    url: str
    expires_at: int


def _message(video_id: str, index: int, variant: str, disposition: str, expires: int) -> bytes:
    return f"v1\n{video_id}\n{index}\n{variant}\n{disposition}\n{expires}".encode()


def sign(secret: bytes, base_url: str, video_id: str, *, index: int = 0, variant: str = "video",
         disposition: str = "attachment", ttl_seconds: int = 900, now: float | None = None) -> SignedLink:
    expires = int(now if now is not None else time.time()) + ttl_seconds
    sig = hmac.new(secret, _message(video_id, index, variant, disposition, expires), hashlib.sha256).hexdigest()
    query = {"index": index, "variant": variant, "disposition": disposition, "expires": expires, "sig": sig}
    return SignedLink(f"{base_url}/v1/videos/{video_id}/content?{urlencode(query)}", expires)


def verify(secret: bytes, video_id: str, index: int, variant: str, disposition: str, expires: int, sig: str,
           *, now: float | None = None) -> str | None:
    """None when valid; otherwise the reason (``expired`` or ``bad_signature``)."""
    expected = hmac.new(secret, _message(video_id, index, variant, disposition, expires), hashlib.sha256).hexdigest()
    if not sig.isascii() or not hmac.compare_digest(expected, sig):  # compare_digest rejects non-ASCII str
        return "bad_signature"
    if expires < int(now if now is not None else time.time()):
        return "expired"
    return None
