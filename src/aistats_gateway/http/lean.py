"""A lean HTTP/1.1 client for the hottest upstream calls: a POST whose whole answer is read
(:meth:`LeanPool.post`), and a POST whose answer is streamed (:meth:`LeanPool.open`).

Why: measured in ``bench/bench_http_clients.py`` (docs/benchmarks.md), one POST costs aiohttp's
client ~310 µs of CPU sequentially and ~150 µs at 64 callers (request/response objects, its
connector, its stream reader); this keep-alive pool of asyncio protocols with httptools' C parser
(installed with uvicorn) does the same call for ~140 and ~50 µs. Every other request keeps the
aiohttp transport (``http.aiohttp_transport``).

Invariants:
* One request at a time per connection, keep-alive per origin (scheme, host, port), at most
  ``max_connections`` open in all (a stream holds its slot until :meth:`LeanStream.close`); a
  connection is reused only when the previous answer was read to its end and both sides allow
  keep-alive, and not after ``keepalive_expiry`` idle seconds.
* A stream's body is handed over as it arrives; past ``STREAM_BUFFER`` unread bytes the socket is
  not read until the reader catches up (backpressure), and a server that closes mid-body (with a
  length or chunked framing) raises ``httpx.ReadError`` from :meth:`LeanStream.chunks`.
* The request goes out as given: ``POST``, the URL's path and query as written (no re-quoting), a
  ``Host`` and ``Content-Length`` header, then the caller's headers (a name or value holding CR, LF
  or NUL is refused: ``httpx.LocalProtocolError``). Nothing is decompressed (no ``Accept-Encoding``
  is sent unless the caller sends one); redirects are answers like any other.
* Timeouts as httpx's: ``connect`` for opening a connection (TLS included), ``read`` for each wait
  for bytes of the answer, ``pool`` for a free connection slot. Failures raise the httpx exception of
  the same meaning (``ConnectTimeout``, ``ConnectError``, ``ReadTimeout``, ``ReadError``,
  ``RemoteProtocolError``, ``PoolTimeout``).
* A request whose reused connection turns out closed by the server before any byte of an answer is
  sent once more on a new connection; nothing else is retried. A request that fails or is cancelled
  closes its connection (it never returns to the pool in an unknown state).
* An answer without ``Content-Length`` or chunked encoding ends when the server closes (RFC 9112 §6.3);
  informational (1xx) answers are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import httpx

Headers = list[tuple[str, str]]
_BAD = ("\r", "\n", "\0")
STREAM_BUFFER = 256 * 1024  # body bytes a stream buffers before it stops reading the socket
_OWN = frozenset(("host", "content-length", "transfer-encoding"))  # this client writes these


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> tuple[tuple[str, str, int], str, bytes]:
    """(origin, host header, request target) of ``url``, memoised (provider URLs repeat)."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol or no host: {url!r}")
    port = u.port or (443 if u.scheme == "https" else 80)
    host = u.hostname
    default = port == (443 if u.scheme == "https" else 80)
    host_header = (f"[{host}]" if ":" in host else host) + ("" if default else f":{port}")
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return (u.scheme, host, port), host_header, path.encode("ascii", "strict")


def _head(target: bytes, host: str, headers: dict[str, str], length: int) -> bytes:
    sent = [(k, v) for k, v in headers.items() if k.lower() not in _OWN]
    block = "".join([f"{k}: {v}\r\n" for k, v in sent])
    # One CRLF per header, no NUL: three scans of the block instead of one per header and character.
    if "\0" in block or block.count("\n") > len(sent) or block.count("\r") > len(sent):
        bad = next(k for k, v in sent if any(c in k or c in v for c in _BAD))
        raise httpx.LocalProtocolError(f"Illegal character in header {bad!r}")
    try:
        raw = block.encode("latin-1")
    except UnicodeEncodeError:
        raise httpx.LocalProtocolError("A header holds a character outside Latin-1") from None
    return (b"POST " + target + b" HTTP/1.1\r\nHost: " + host.encode("idna") + b"\r\nContent-Length: "
            + str(length).encode() + b"\r\n" + raw + b"\r\n")


class _Closed(Exception):
    """The connection closed before any byte of the answer (a stale keep-alive connection)."""


class _Conn(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None  # the answer (its head, for a stream)
        self.more: asyncio.Future[None] | None = None  # a stream's reader waiting for body bytes
        self.timer: asyncio.TimerHandle | None = None  # the read timeout while the answer (head) is awaited
        self.streaming = False
        self.paused = False
        self.error: Exception | None = None  # what ended a stream's body early
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.got_bytes = False
        self.headers_done = False
        self.complete = False
        self.delimited = False  # Content-Length or chunked: the parser knows where the answer ends
        self.keep_alive = False
        self.last_read = 0.0
        self.buffered = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of asyncio's

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(httpx.RemoteProtocolError(f"malformed answer from the server: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.streaming and self.waiter is not None and self.waiter.done():  # mid-body of a stream
            if not self.complete:
                if self.delimited:
                    self.error = httpx.ReadError(f"the server closed the connection mid-answer: {exc or 'EOF'}")
                else:
                    self.complete = True  # the answer ends with the connection
            self._wake()
            return
        if self.waiter is None or self.waiter.done():
            return
        if self.headers_done and not self.delimited:
            self.complete = True  # the answer ends with the connection
            self.waiter.set_result(None)
        elif not self.got_bytes:
            self.waiter.set_exception(_Closed())
        else:
            self._fail(httpx.ReadError(f"the server closed the connection mid-answer: {exc or 'EOF'}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        low = name.lower()
        if low == b"content-length" or (low == b"transfer-encoding" and b"chunked" in value.lower()):
            self.delimited = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # read here: the parser forgets at the message end
        self.headers_done = True
        if self.streaming and self.status >= 200 and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)  # a stream's head: the body is read as it comes

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        if self.streaming:
            self.buffered += len(body)
            if self.buffered > STREAM_BUFFER and not self.paused and self.transport is not None:
                self.paused = True  # the reader is behind: stop reading from the socket until it catches up
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # informational: the real answer follows
            self._reset()
            self.got_bytes = True
            return
        self.complete = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        self._wake()

    def _wake(self) -> None:
        if self.more is not None and not self.more.done():
            self.more.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        elif self.streaming:
            self.error = exc
            self._wake()
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, data: bytes, read_timeout: float | None,
                       stream: bool = False) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send ``data``; (status, headers, body) once the answer is whole, or once its head is in
        for a ``stream`` (the body then comes from :meth:`next_chunk`)."""
        assert self.transport is not None
        self._reset()
        self.streaming = stream
        self.error = None
        self.waiter = self.loop.create_future()
        self.last_read = self.loop.time()
        self.transport.write(data)
        if read_timeout:
            self.timer = self.loop.call_at(self.last_read + read_timeout, self._check_read, read_timeout)
        try:
            await self.waiter
        finally:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        if stream:
            return self.status, self.headers, b""
        body, self.body = b"".join(self.body), []
        return self.status, self.headers, body

    async def next_chunk(self, read_timeout: float | None) -> bytes | None:
        """A stream's body bytes received so far (waiting at most ``read_timeout`` for some); None at its end."""
        while True:
            if self.body:
                chunk = b"".join(self.body)
                self.body = []
                self.buffered = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                return None
            if self.closed:
                raise httpx.ReadError("the connection closed mid-answer")
            self.more = self.loop.create_future()
            try:
                async with asyncio.timeout(read_timeout):
                    await self.more
            except TimeoutError:
                raise httpx.ReadTimeout(f"no data from the server within {read_timeout:g} s") from None
            finally:
                self.more = None

    def _check_read(self, read_timeout: float) -> None:
        if self.waiter is None or self.waiter.done():
            return
        due = self.last_read + read_timeout
        if self.loop.time() >= due:
            self._fail(httpx.ReadTimeout(f"no answer from the server within {read_timeout:g} s"))
        else:
            self.timer = self.loop.call_at(due, self._check_read, read_timeout)

    def reusable(self) -> bool:
        return self.complete and not self.closed and self.delimited and self.keep_alive


class LeanPool:
    """Keep-alive connections per origin; :meth:`post` is the whole client."""

    def __init__(self, *, max_connections: int = 200, keepalive_expiry: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._limit = max_connections
        self._keepalive = keepalive_expiry
        self._ssl = ssl_context  # None: the system's trust store (``ssl.create_default_context``), as aiohttp
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[tuple[str, str, int], deque[_Conn]] = {}
        self._all: set[_Conn] = set()
        self._slots = asyncio.Semaphore(max_connections)

    def _bind(self) -> None:
        """Connections belong to one event loop: a pool used from another loop starts afresh."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._idle = {}
            self._all = set()
            self._slots = asyncio.Semaphore(self._limit)

    async def post(self, url: str, content: bytes, headers: dict[str, str], *, connect: float | None = None,
                   read: float | None = None, pool: float | None = None) -> tuple[int, Headers, bytes]:
        """POST ``content``; (status, raw headers as latin-1 text, the whole body)."""
        origin, data = await self._begin(url, content, headers, pool)
        try:
            conn, status, raw, body = await self._send(origin, data, connect, read, stream=False)
            self._release_conn(origin, conn)
            return status, _text(raw), body
        finally:
            self._slots.release()

    async def open(self, url: str, content: bytes, headers: dict[str, str], *, connect: float | None = None,
                   read: float | None = None, pool: float | None = None) -> LeanStream:
        """POST ``content`` and return once the answer's head is in; its body is read from the
        returned :class:`LeanStream` as it arrives (close it: that frees the connection slot)."""
        origin, data = await self._begin(url, content, headers, pool)
        try:
            conn, status, raw, _ = await self._send(origin, data, connect, read, stream=True)
        except BaseException:
            self._slots.release()
            raise
        return LeanStream(self, origin, conn, status, _text(raw), read)

    async def _begin(self, url: str, content: bytes, headers: dict[str, str],
                     pool: float | None) -> tuple[tuple[str, str, int], bytes]:
        """The request's origin and bytes, once a connection slot is this caller's (release it)."""
        origin, host, target = _target(url)
        data = _head(target, host, headers, len(content)) + content
        self._bind()
        await self._acquire(pool)
        return origin, data

    async def _send(self, origin: tuple[str, str, int], data: bytes, connect: float | None, read: float | None,
                    *, stream: bool) -> tuple[_Conn, int, list[tuple[bytes, bytes]], bytes]:
        for attempt in (1, 2):
            conn = self._reuse(origin) if attempt == 1 else None
            fresh = conn is None
            if conn is None:
                conn = await self._connect(origin, connect)
            try:
                status, raw, body = await conn.exchange(data, read, stream)
            except _Closed:
                self._drop(conn)
                if fresh:
                    raise httpx.RemoteProtocolError("the server closed the connection without answering") from None
                continue
            except BaseException:
                self._drop(conn)
                raise
            return conn, status, raw, body
        raise AssertionError("unreachable")

    def _finish(self, origin: tuple[str, str, int], conn: _Conn) -> None:
        """A stream is closed: its connection goes back to the pool when the answer was read to its end."""
        self._release_conn(origin, conn)
        self._slots.release()

    async def _acquire(self, pool: float | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(pool):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free upstream connection within the pool timeout") from None

    def _reuse(self, origin: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._keepalive:
                return conn
            self._drop(conn)
        return None

    def _release_conn(self, origin: tuple[str, str, int], conn: _Conn) -> None:
        if conn.reusable() and not conn.body:
            conn.waiter = None
            conn.streaming = False
            conn.idle_since = time.monotonic()
            self._idle.setdefault(origin, deque()).append(conn)
        else:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        conn.close()
        self._all.discard(conn)

    async def _connect(self, origin: tuple[str, str, int], connect: float | None) -> _Conn:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if scheme == "https":
            if self._ssl is None:  # reads the CA store: off the loop
                self._ssl = await asyncio.to_thread(ssl.create_default_context)
            tls = {"ssl": self._ssl, "server_hostname": host}
        try:
            async with asyncio.timeout(connect):
                transport, conn = await loop.create_connection(lambda: _Conn(loop), host, port, **tls)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect timeout: {host}:{port}") from None
        except (OSError, ssl.SSLError) as e:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {e}") from e
        conn.transport = transport  # uvloop calls ``connection_made`` after this returns
        self._all.add(conn)
        return conn

    def close(self) -> None:
        """Close every connection (call it on the pool's loop)."""
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()


def _text(raw: list[tuple[bytes, bytes]]) -> Headers:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


class LeanStream:
    """An answer whose body is read as it arrives (:meth:`chunks`); :meth:`close` exactly once frees it."""

    def __init__(self, pool: LeanPool, origin: tuple[str, str, int], conn: _Conn, status: int, headers: Headers,
                 read: float | None) -> None:
        self.status = status
        self.headers = headers
        self._pool = pool
        self._origin = origin
        self._conn = conn
        self._read = read
        self._closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._conn.next_chunk(self._read)) is not None:
            yield chunk

    def close(self) -> None:
        """Free the connection slot; the connection is kept alive only when the body was read to its end."""
        if self._closed:
            return
        self._closed = True
        try:
            same_loop = self._pool._loop is asyncio.get_running_loop()
        except RuntimeError:
            same_loop = False
        if same_loop:
            self._pool._finish(self._origin, self._conn)
        else:  # the pool moved on to another loop meanwhile: only this connection is left to close
            with contextlib.suppress(RuntimeError):
                self._conn.close()
