"""The lean upstream client (``http.lean.LeanPool``) against raw HTTP/1.1 servers on 127.0.0.1,
under asyncio's loop and uvloop (the server's loop): keep-alive, answer framings, the stale
connection retry, timeouts, the pool bound, refused input and cancellation."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from aistats_gateway.http.lean import LeanPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


class Server:
    """Counts connections and records every request head and body (``got`` is set at each one)."""

    def __init__(self, answer: Callable[[int, bytes], Awaitable[bytes | None]]) -> None:
        self.answer = answer  # (request number, body) -> bytes to write, None to close without answering
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.AbstractServer | None = None
        self.got = asyncio.Event()
        self.ssl: ssl.SSLContext | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await r.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = next(int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n")
                              if ln.lower().startswith(b"content-length:"))
                body = await r.readexactly(length)
                self.requests.append((head, body))
                self.got.set()
                out = await self.answer(len(self.requests), body)
                if out is None:
                    return
                w.write(out)
                await w.drain()
                if b"connection: close" in out.lower():
                    return
        finally:
            w.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + extra + b"content-length: " + \
        str(len(body)).encode() + b"\r\n\r\n" + body


def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given(run: Any) -> None:
    async def answer(n: int, body: bytes) -> bytes:
        return ok(b'{"n":%d}' % n, b"x-up: 1\r\n")

    async def main() -> tuple[Server, list[Any]]:
        srv = Server(answer)
        pool = LeanPool()
        async with srv as base:
            got = [await pool.post(f"{base}/v1/chat/completions?api-version=2024-10-21&x=%2F", b'{"a":1}',
                                   {"authorization": "Bearer k", "content-type": "application/json"}, read=5)
                   for _ in range(3)]
        pool.close()
        return srv, got

    srv, got = run(main())
    assert srv.connections == 1
    assert [g[0] for g in got] == [200, 200, 200] and [g[2] for g in got] == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert ("x-up", "1") in got[0][1]
    head, body = srv.requests[0]
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?api-version=2024-10-21&x=%2F HTTP/1.1"
    assert b"Host: 127.0.0.1:" in head and b"authorization: Bearer k" in head and b"Content-Length: 7" in head
    assert b"accept-encoding" not in head.lower() and body == b'{"a":1}'


def test_chunked_close_delimited_and_informational_answers(run: Any) -> None:
    async def answer(n: int, body: bytes) -> bytes:
        if n == 1:
            return (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        return b"HTTP/1.1 201 Created\r\nconnection: close\r\n\r\nuntil the end"

    async def main() -> tuple[Server, list[Any]]:
        srv = Server(answer)
        pool = LeanPool()
        async with srv as base:
            got = [await pool.post(base + "/", b"x", {}, read=5) for _ in range(3)]
        pool.close()
        return srv, got

    srv, got = run(main())
    assert [(g[0], g[2]) for g in got] == [(200, b"hello world"), (201, b"until the end"), (201, b"until the end")]
    assert srv.connections == 2  # kept alive after the chunked answer, closed after each close-delimited one


def test_a_connection_the_server_closed_while_idle_is_retried_once_on_a_new_one(run: Any) -> None:
    async def answer(n: int, body: bytes) -> bytes | None:
        return ok() if n != 2 else None  # the second request finds its kept-alive connection closed

    async def main() -> tuple[Server, list[Any]]:
        srv = Server(answer)
        pool = LeanPool()
        async with srv as base:
            got = [await pool.post(base + "/", b"x", {}, read=5) for _ in range(2)]
        pool.close()
        return srv, got

    srv, got = run(main())
    assert [g[0] for g in got] == [200, 200] and srv.connections == 2 and len(srv.requests) == 3


def test_failures_raise_httpx_exceptions(run: Any) -> None:
    async def answer(n: int, body: bytes) -> bytes | None:
        if body == b"silent":
            await asyncio.sleep(10)
        if body == b"garbage":
            return b"NOT HTTP AT ALL\r\n\r\n"
        if body == b"cut":
            return b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"partial"
        return None  # closes without answering: on a fresh connection that is the server's error

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]

    async def main() -> Server:
        srv = Server(answer)
        pool = LeanPool()
        async with srv as base:
            with pytest.raises(httpx.ReadTimeout):
                await pool.post(base + "/", b"silent", {}, read=0.3)
            with pytest.raises(httpx.RemoteProtocolError):
                await pool.post(base + "/", b"garbage", {}, read=5)
            with pytest.raises(httpx.ReadError):
                await pool.post(base + "/", b"cut", {}, read=5)
            with pytest.raises(httpx.RemoteProtocolError):
                await pool.post(base + "/", b"nothing", {}, read=5)
            with pytest.raises(httpx.ConnectError):
                await pool.post(f"http://127.0.0.1:{refused}/", b"x", {}, connect=5)
            with pytest.raises(httpx.LocalProtocolError):
                await pool.post(base + "/", b"x", {"x-evil": "a\r\nx-injected: 1"})
            with pytest.raises(httpx.LocalProtocolError):
                await pool.post(base + "/", b"x", {"authorization": "Bearer \u2603"})
            with pytest.raises(httpx.UnsupportedProtocol):
                await pool.post("ftp://127.0.0.1/", b"x", {})
        pool.close()
        return srv

    srv = run(main())
    assert all(b"x-injected" not in head for head, _ in srv.requests)
    assert srv.connections == 4  # every failed connection was closed, none reused


def test_read_timeout_is_per_read_not_for_the_whole_answer(run: Any) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        await r.readexactly(1)
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(15):  # 15 reads 0.1 s apart: 1.5 s in all, past the 1 s read timeout, each well within it
            await asyncio.sleep(0.1)
            w.write(b"1\r\nx\r\n")
            await w.drain()
        w.write(b"0\r\n\r\n")
        await w.drain()
        w.close()

    async def main() -> Any:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        pool = LeanPool()
        try:
            return await pool.post(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", b"x", {}, read=1.0)
        finally:
            pool.close()
            server.close()

    status, _, body = run(main())
    assert (status, body) == (200, b"x" * 15)


def test_the_pool_bound_waits_then_raises_a_pool_timeout_and_cancellation_drops_the_connection(run: Any) -> None:
    release = None

    async def answer(n: int, body: bytes) -> bytes:
        assert release is not None
        if body == b"slow":
            await release.wait()
        return ok()

    async def main() -> Server:
        nonlocal release
        release = asyncio.Event()
        srv = Server(answer)
        pool = LeanPool(max_connections=1)
        async with srv as base:
            slow = asyncio.ensure_future(pool.post(base + "/", b"slow", {}, read=30))
            await srv.got.wait()
            with pytest.raises(httpx.PoolTimeout):
                await pool.post(base + "/", b"x", {}, pool=0.2)
            slow.cancel()  # the caller went away mid-answer: its connection must not be reused
            with pytest.raises(asyncio.CancelledError):
                await slow
            release.set()
            status, _, _ = await pool.post(base + "/", b"x", {}, pool=5, read=5)
            assert status == 200
        pool.close()
        return srv

    srv = run(main())
    assert srv.connections == 2


def _tls_pair(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a 127.0.0.1 certificate, client context trusting only its test CA)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lean test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(ca_key, hashes.SHA256()))
    (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return server, ssl.create_default_context(cafile=str(tmp / "ca.pem"))


def test_https_verifies_the_certificate_and_keeps_the_tls_connection_alive(run: Any, tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls_pair(tmp_path)

    async def answer(n: int, body: bytes) -> bytes:
        return ok(b'{"tls":%d}' % n)

    async def main() -> tuple[Server, list[Any]]:
        srv = Server(answer)
        srv.ssl = server_ctx
        async with srv as base:
            url = base.replace("http://", "https://") + "/v1/x"
            pool = LeanPool(ssl_context=client_ctx)
            got = [await pool.post(url, b"x", {}, read=5) for _ in range(2)]
            pool.close()
            untrusted = LeanPool()  # the system's trust store: the test CA is not in it
            with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                await untrusted.post(url, b"x", {}, connect=5)
            untrusted.close()
        return srv, got

    srv, got = run(main())
    assert [g[2] for g in got] == [b'{"tls":1}', b'{"tls":2}']
    assert srv.connections == 1  # kept alive; the refused handshake never reached the handler


def test_a_stream_yields_events_as_they_arrive_and_then_keeps_its_connection(run: Any) -> None:
    go = None

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        assert go is not None
        while True:
            try:
                head = await r.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                w.close()
                return
            await r.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                    b"d\r\ndata: first\n\n\r\n")
            await w.drain()
            await go.wait()  # the rest only once the client has seen the first event
            go.clear()
            w.write(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")
            await w.drain()

    async def main() -> tuple[list[bytes], int, int]:
        nonlocal go
        go = asyncio.Event()
        connections = 0

        async def counted(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await handler(r, w)

        server = await asyncio.start_server(counted, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        pool = LeanPool()
        try:
            got: list[bytes] = []
            for _ in range(2):
                stream = await pool.open(url, b'{"stream":true}', {}, read=5)
                assert stream.status == 200 and ("content-type", "text/event-stream") in stream.headers
                async for chunk in stream.chunks():
                    got.append(chunk)
                    if chunk == b"data: first\n\n":
                        go.set()
                stream.close()
            return got, connections, len(pool._all)
        finally:
            pool.close()
            server.close()

    got, connections, open_conns = run(main())
    assert got == [b"data: first\n\n", b"data: second\n\n"] * 2
    assert connections == 1 and open_conns == 1  # read to its end: the connection was reused


def test_a_stream_closed_early_cut_short_or_silent(run: Any) -> None:
    async def answer(n: int, body: bytes) -> bytes | None:
        if body == b"big":  # 2 MiB in one chunk, more than the stream buffers: the reader is slow
            blob = bytes(range(256)) * 8192
            return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(blob) + blob
        if body == b"cut":
            return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n"
        if body == b"silent":  # the head, then nothing
            return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        return b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 9\r\n\r\n{\"e\":429}"

    async def main() -> tuple[Server, int, bytes]:
        srv = Server(answer)
        pool = LeanPool()
        async with srv as base:
            stream = await pool.open(base + "/", b"big", {}, read=5)
            data = b""
            async for chunk in stream.chunks():
                data += chunk
                await asyncio.sleep(0.001)
            stream.close()
            early = await pool.open(base + "/", b"big", {}, read=5)
            async for _ in early.chunks():
                break  # the caller stops reading: this connection must not be reused
            early.close()
            limited = await pool.open(base + "/", b"x", {}, read=5)
            assert limited.status == 429 and b"".join([c async for c in limited.chunks()]) == b'{"e":429}'
            limited.close()
            cut = await pool.open(base + "/", b"cut", {}, read=5)
            with pytest.raises(httpx.ReadError):
                async for _ in cut.chunks():
                    pass
            cut.close()
            silent = await pool.open(base + "/", b"silent", {}, read=0.3)
            with pytest.raises(httpx.ReadTimeout):
                async for _ in silent.chunks():
                    pass
            silent.close()
        pool.close()
        return srv, len(data), data[:4]

    srv, size, start = run(main())
    assert (size, start) == (2 * 1024 * 1024, b"\x00\x01\x02\x03")
    # big; big again on the same connection, closed early: dropped; the 429 on a new one, then the cut
    # stream on that kept-alive one (closed); the silent stream on a third
    assert srv.connections == 3
