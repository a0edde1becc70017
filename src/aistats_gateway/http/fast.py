"""A lighter upstream client for bulk work (batch rows): ``request`` on aiohttp, the rest on httpx.

httpx spends about 1 ms of CPU per small request (its client layers and httpcore's pool, which
scans every connection per request); aiohttp about 0.2 ms. ``FastClient.request`` answers exactly
what ``httpx.AsyncClient.request`` would for the calls adapters make (``content`` / ``json``,
``headers``, ``params``; no redirects followed, no environment proxies), as an ``httpx.Response``
(the body is read whole; content-encoding is left to httpx to decode, as it would). Anything else
(``stream``, multipart ``data``/``files`` …) goes to the ``fallback`` httpx client unchanged.

Invariants: failures raise httpx's own exceptions (``httpx.TimeoutException`` for timeouts,
``httpx.TransportError`` subclasses for connection errors), so ``providers._http.send`` maps them
to ``ProviderError("unavailable")`` as before; the session lives in the loop that created it
and is closed by ``aclose``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp
import httpx
import orjson

_SIMPLE = frozenset({"content", "json", "headers", "params", "timeout"})


class FastClient:
    def __init__(self, fallback: Any, timeout: float = 60.0, *, connect_timeout: float = 10.0,
                 tls: ssl.SSLContext | None = None, user_agent: str = "aistats-gateway/0.1") -> None:
        self.fallback = fallback
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.tls = tls
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ssl=self.tls if self.tls is not None else True,
                                             keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    def __getattr__(self, name: str) -> Any:  # stream, get, post …: the httpx client's
        return getattr(self.fallback, name)

    async def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        if not set(kw) <= _SIMPLE:
            resp: httpx.Response = await self.fallback.request(method, url, **kw)
            return resp
        headers = {"user-agent": self.user_agent, **{k.lower(): v for k, v in (kw.get("headers") or {}).items()}}
        content = kw.get("content")
        if kw.get("json") is not None and content is None:
            content = orjson.dumps(kw["json"])
            headers.setdefault("content-type", "application/json")
        total = kw.get("timeout")
        timeout = aiohttp.ClientTimeout(total=float(total) if isinstance(total, int | float) else self.timeout,
                                        connect=self.connect_timeout)
        request = httpx.Request(method, url, params=kw.get("params"), headers=headers)
        try:
            async with self._open().request(method, str(request.url), data=content, headers=headers,
                                            allow_redirects=False, timeout=timeout) as r:
                body = await r.read()
                raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in r.raw_headers]
                status = r.status
        except TimeoutError as e:
            raise httpx.ReadTimeout(f"timed out: {e}", request=request) from e
        except aiohttp.ClientConnectorError as e:
            raise httpx.ConnectError(str(e), request=request) from e
        except (aiohttp.ClientError, asyncio.IncompleteReadError, ConnectionError) as e:
            raise httpx.ReadError(f"{e.__class__.__name__}: {e}", request=request) from e
        raw = [(k, v) for k, v in raw if k.lower() not in ("transfer-encoding", "content-length")]
        return httpx.Response(status, headers=raw, content=body, request=request)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
