"""The one shared upstream HTTP client: pooled connections, explicit timeouts, no env proxies."""

from __future__ import annotations

import httpx


def create_client(timeout_seconds: float = 60.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_seconds, connect=10.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30.0),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "aistats-gateway/0.1"},
    )
