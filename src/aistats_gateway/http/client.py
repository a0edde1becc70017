"""The shared HTTP clients: pooled connections, explicit timeouts, no env proxies.

``create_client(upstream=True)`` (the provider calls of ``state.http``) sends through aiohttp's
connection layer (:mod:`aistats_gateway.http.aiohttp_transport`; measured several times cheaper per
call than httpcore, see docs/benchmarks.md) behind httpx's API, and its non-streaming JSON POSTs
through the lean client (:mod:`aistats_gateway.http.lean`, cheaper again); the client that fetches
caller-given URLs keeps httpx's own transport (its SSRF guard works on httpx requests either way).
"""

from __future__ import annotations

import httpx


def create_client(timeout_seconds: float = 60.0, *, upstream: bool = False) -> httpx.AsyncClient:
    transport: httpx.AsyncBaseTransport | None = None
    if upstream:
        from aistats_gateway.http.aiohttp_transport import AiohttpTransport

        transport = AiohttpTransport(max_connections=200, keepalive_expiry=30.0)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_seconds, connect=10.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30.0),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "aistats-gateway/0.1"},
        transport=transport,
    )
