"""API key format ``aistats_v1_sk_<id>_<secret>`` and its keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

PREFIX = "aistats_v1_sk_"
_ALPHABET = string.ascii_letters + string.digits
ID_LEN = 12
SECRET_LEN = 40


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    secret: str


def new_key_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(ID_LEN))


def new_secret() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LEN))


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}{key_id}_{secret}"


def parse(token: str) -> ParsedKey | None:
    if not token.startswith(PREFIX):
        return None
    rest = token[len(PREFIX):]
    key_id, sep, secret = rest.partition("_")
    if not sep or not key_id or not secret or len(key_id) > 40 or len(secret) > 200:
        return None
    if not key_id.isalnum() or not secret.isalnum():
        return None
    return ParsedKey(key_id, secret)


def hash_secret(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def verify(pepper: bytes, secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(pepper, secret), stored_hash)
