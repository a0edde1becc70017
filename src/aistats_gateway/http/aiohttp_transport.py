"""An ``httpx`` transport that sends with ``aiohttp`` (the upstream provider client's connection layer).

Why: measured in ``bench/bench_http_clients.py`` (docs/benchmarks.md), one POST through httpx's own
transport (httpcore over anyio) costs ~0.6 ms of CPU sequentially and ~1.2 ms at 64 concurrent
callers (its pool's bookkeeping grows with the number of waiters); aiohttp's connection pool and C
HTTP parser do the same for ~0.1 ms. Every provider adapter keeps httpx's API (``Request``,
``Response``, its exceptions): only the wire under it changes. The hottest call, a non-streaming
JSON POST read whole (:meth:`AiohttpTransport.post_bytes`), and the opening of a streamed POST
(:meth:`AiohttpTransport.open_post`), go through the lean client of the same transport instead
(``http.lean``: ~50 µs against aiohttp's ~150 at 64 callers); every other request (``client.send``
through :meth:`handle_async_request`) stays on aiohttp.

Invariants:
* Requests go out as httpx built them (method, URL with httpx's encoding, headers, body: bytes, or the request's stream
  sent chunked); aiohttp adds no headers of its own and decompresses nothing (httpx decodes
  ``content-encoding`` as usual), and follows no redirects (the client decides, as before).
* httpx's per-request timeouts apply: ``connect`` to opening a connection, ``read`` to each read
  of the answer (headers and every body chunk); ``pool`` bounds the wait for a free connection.
* aiohttp's failures surface as the httpx exceptions callers already handle: ``ConnectTimeout``,
  ``ReadTimeout``, ``PoolTimeout``, ``ConnectError``, ``ReadError``, ``RemoteProtocolError``, all
  ``httpx.TransportError``.
* A request that fails because its pooled connection was closed by the server (a write error, or a
  disconnect before any byte of the answer) is sent once more on a new connection (httpcore avoids
  the same race by checking idle connections before reuse); nothing else is retried here.
* A response body is streamed (never buffered here); closing it releases the connection to the
  pool (or closes it when the body was not read to its end).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import yarl

from aistats_gateway.http.lean import LeanPool, LeanStream

_SKIP = frozenset(("host", "content-length", "transfer-encoding"))
_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def _timeouts(request: httpx.Request) -> aiohttp.ClientTimeout:
    t: dict[str, Any] = request.extensions.get("timeout") or {}
    connect, read, pool = t.get("connect"), t.get("read"), t.get("pool")
    return aiohttp.ClientTimeout(total=None, connect=(connect or 0) + (pool or 0) if connect or pool else None,
                                 sock_connect=connect, sock_read=read)


def _map(exc: BaseException, request: httpx.Request, phase: str) -> httpx.TransportError:
    """aiohttp's (or asyncio's) failure as the httpx exception of the same meaning."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError)):
        if isinstance(exc, aiohttp.ConnectionTimeoutError) or phase == "connect":
            return httpx.ConnectTimeout(f"connect timeout: {exc}", request=request)
        return httpx.ReadTimeout(f"read timeout: {exc}", request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc), request=request)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                        aiohttp.ClientResponseError)):
        return httpx.RemoteProtocolError(str(exc) or exc.__class__.__name__, request=request)
    return httpx.ReadError(str(exc) or exc.__class__.__name__, request=request)


def _url(url: httpx.URL) -> yarl.URL:
    """The URL exactly as httpx encodes it (aiohttp would re-quote it otherwise: a signed request's
    canonical path, e.g. SigV4's, must be the one sent)."""
    return yarl.URL(str(url), encoded=True)


def _stale(exc: BaseException) -> bool:
    """A pooled connection the server had closed (it fails before any byte of an answer): the request
    is sent once more, on a new connection. A refused or timed-out connection is not retried."""
    return (isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
            and not isinstance(exc, aiohttp.ClientConnectorError))


_DEFAULTS: dict[int, tuple[httpx.Headers, list[tuple[bytes, bytes]], dict[str, str]]] = {}


def _defaults(client: httpx.AsyncClient) -> dict[str, str]:
    """The client's default headers by lower-case name, without ``Accept-Encoding`` (nothing is
    decompressed on the lean paths: the server is asked for identity); memoised while the client's
    headers object and its items are the same (httpx's ``Headers`` is slow to iterate)."""
    h = client.headers
    got = _DEFAULTS.get(id(client))
    if got is not None and got[0] is h and got[1] == h.raw:
        return got[2]
    hdrs = dict(h)  # lower-case names
    hdrs.pop("accept-encoding", None)
    if len(_DEFAULTS) > 64:
        _DEFAULTS.clear()
    _DEFAULTS[id(client)] = (h, list(h.raw), hdrs)
    return hdrs


def _merged(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    """The client's default headers under the call's, by lower-case name, without ``Accept-Encoding``."""
    hdrs = dict(_defaults(client))
    for k, v in headers.items():
        hdrs[k.lower()] = v
    hdrs.pop("accept-encoding", None)
    return hdrs


class _LeanBody(httpx.AsyncByteStream):
    def __init__(self, stream: LeanStream) -> None:
        self.stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream.chunks():
            yield chunk

    async def aclose(self) -> None:
        self.stream.close()


class _Body(httpx.AsyncByteStream):
    def __init__(self, resp: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self.resp = resp
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise _map(e, self.request, "read") from e

    async def aclose(self) -> None:
        self.resp.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (connection pool) per transport, created on first use inside the loop."""

    def __init__(self, *, max_connections: int = 200, keepalive_expiry: float = 30.0) -> None:
        self._limit = max_connections
        self._keepalive = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._lean = LeanPool(max_connections=max_connections, keepalive_expiry=keepalive_expiry)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, keepalive_timeout=self._keepalive,
                                             enable_cleanup_closed=False)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                                  skip_auto_headers=_AUTO, cookie_jar=aiohttp.DummyCookieJar(),
                                                  timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                   if k.lower().decode("latin-1") not in _SKIP]
        stream = request.stream
        data: Any = request.content if isinstance(stream, httpx.ByteStream) else _chunks(stream)
        for attempt in (1, 2):
            try:
                resp = await session.request(request.method, _url(request.url), headers=headers, data=data,
                                             allow_redirects=False, timeout=_timeouts(request), compress=None,
                                             auto_decompress=False)
                break
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                if attempt == 1 and _stale(e) and isinstance(data, bytes):
                    continue
                raise _map(e, request, "connect" if isinstance(e, aiohttp.ClientConnectorError) else "read") from e
        raw = [(k, v) for k, v in resp.raw_headers]
        return httpx.Response(resp.status, headers=raw, stream=_Body(resp, request),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": (resp.reason or "").encode()},
                              request=request)

    async def open_post(self, client: httpx.AsyncClient, url: str, content: bytes,
                        headers: dict[str, str]) -> httpx.Response:
        """POST ``content`` and return the answer as an httpx ``Response`` whose body is still to be
        streamed (``aiter_lines`` …; the caller closes it), through the lean client (``http.lean``),
        without httpx's client machinery (request building, auth, redirects, cookies). Default
        headers, timeouts and errors as for ``client.stream``."""
        t = client.timeout
        stream = await self._lean.open(url, content, _merged(client, headers), connect=t.connect, read=t.read,
                                       pool=t.pool)
        return httpx.Response(stream.status, headers=stream.headers, stream=_LeanBody(stream),
                              request=httpx.Request("POST", url))

    async def post_bytes(self, client: httpx.AsyncClient, url: str, content: bytes,
                         headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        """POST ``content`` and read the whole answer: (status, raw headers, body), through the lean
        client (``http.lean``: no request/response models at all; the hot non-streaming call). The
        client's default headers and timeouts apply as for ``client.post``; failures raise the same
        httpx exceptions."""
        t = client.timeout
        return await self._lean.post(url, content, _merged(client, headers), connect=t.connect, read=t.read,
                                     pool=t.pool)

    async def aclose(self) -> None:
        self._lean.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


def direct(client: Any) -> AiohttpTransport | None:
    """The aiohttp transport under ``client`` (an ``httpx.AsyncClient`` from ``create_client(upstream=True)``),
    for :meth:`AiohttpTransport.post_bytes`; None for any other client (callers use httpx then)."""
    transport = getattr(client, "_transport", None)
    return transport if isinstance(transport, AiohttpTransport) else None


async def _chunks(stream: Any) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk
