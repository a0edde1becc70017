"""The one shared upstream HTTP client: pooled connections, explicit timeouts, no env proxies."""

from __future__ import annotations

import httpx


def create_client(timeout_seconds: float = 60.0, max_connections: int = 200,
                  max_keepalive: int = 50) -> httpx.AsyncClient:
    """The shared client; a small ``max_connections`` makes a *lane*: httpcore's pool does work per
    request in proportion to its connections, so many small pools beat one big one under load."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_seconds, connect=10.0),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive,
                            keepalive_expiry=30.0),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "aistats-gateway/0.1"},
    )
