"""``http.server``: uvicorn's protocol with a response's head and body in one write.

* Unit, on a recording transport: a head followed by its body is one write; a head alone goes out
  within the same event-loop iteration; bytes keep their order; ``close`` flushes, ``abort`` drops.
* End to end, uvicorn serving an app with this protocol on 127.0.0.1 (under asyncio and uvloop):
  a JSON answer arrives whole; a streamed answer's head reaches the client before the app has produced
  its first chunk (the app waits until the client has read the head, so a held head would deadlock).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest
import uvicorn

from aistats_gateway.http.server import CoalescingHttpToolsProtocol, CoalescingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return 0


def _on_loop(fn: Any) -> Any:
    async def main() -> Any:
        return await fn(asyncio.get_running_loop())

    return asyncio.run(main())


def test_a_head_and_its_body_are_one_write() -> None:
    async def go(loop: asyncio.AbstractEventLoop) -> list[bytes]:
        inner = Recording()
        t = CoalescingTransport(inner, loop)
        t.write(HEAD)
        assert inner.writes == [] and t.get_write_buffer_size() == len(HEAD)
        t.write(b"{}")
        await asyncio.sleep(0)
        return inner.writes

    assert _on_loop(go) == [HEAD + b"{}"]


def test_a_head_alone_goes_out_within_the_iteration_and_order_is_kept() -> None:
    async def go(loop: asyncio.AbstractEventLoop) -> tuple[list[bytes], list[bytes]]:
        inner = Recording()
        t = CoalescingTransport(inner, loop)
        t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await asyncio.sleep(0)
        after_one = list(inner.writes)
        t.write(b"5\r\nhello\r\n")
        t.writelines([b"0\r\n", b"\r\n"])
        return after_one, inner.writes

    after_one, writes = _on_loop(go)
    assert after_one == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    assert writes == [*after_one, b"5\r\nhello\r\n", b"0\r\n\r\n"]


def test_close_flushes_and_abort_drops() -> None:
    async def go(loop: asyncio.AbstractEventLoop) -> tuple[Recording, Recording]:
        a, b = Recording(), Recording()
        ta, tb = CoalescingTransport(a, loop), CoalescingTransport(b, loop)
        ta.write(HEAD)
        ta.close()
        tb.write(HEAD)
        tb.abort()
        await asyncio.sleep(0)  # the scheduled flush finds nothing held
        return a, b

    a, b = _on_loop(go)
    assert a.writes == [HEAD] and a.closed
    assert b.writes == [] and b.aborted


def test_other_writes_pass_straight_through() -> None:
    async def go(loop: asyncio.AbstractEventLoop) -> list[bytes]:
        inner = Recording()
        t = CoalescingTransport(inner, loop)
        t.write(b"not a head")
        t.write(b"HTTP/1.1 but no blank line")
        return list(inner.writes)

    assert _on_loop(go) == [b"not a head", b"HTTP/1.1 but no blank line"]


# ---- end to end ----------------------------------------------------------------------------------

head_read = threading.Event()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/json":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")]})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    got = await asyncio.to_thread(head_read.wait, 30)  # the client has the head before any event exists
    await send({"type": "http.response.body", "body": b"data: %s\n\n" % (b"1" if got else b"0"),
                "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(params=["asyncio", "uvloop"])
def server(request: pytest.FixtureRequest) -> Any:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", loop=request.param,
                            http=CoalescingHttpToolsProtocol)
    srv = uvicorn.Server(config)
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield sock.getsockname()[1]
    srv.should_exit = True
    th.join(15)
    sock.close()


def _read_until(c: socket.socket, marker: bytes, buf: bytes = b"") -> bytes:
    while marker not in buf:
        chunk = c.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def test_uvicorn_answers_json_whole_and_streams_the_head_first(server: int) -> None:
    head_read.clear()
    with socket.create_connection(("127.0.0.1", server), timeout=20) as c:
        c.sendall(b"GET /json HTTP/1.1\r\nhost: t\r\n\r\n")
        got = _read_until(c, b'{"ok":true}')
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b'\r\n\r\n{"ok":true}')
        c.sendall(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
        head = _read_until(c, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"data:" not in head
        head_read.set()
        rest = _read_until(c, b"0\r\n\r\n", head)
    assert b"data: 1\n\n" in rest

