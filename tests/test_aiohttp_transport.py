"""The upstream client's aiohttp transport keeps httpx's contract: headers and body go out as built,
answers come back whole or streamed, and failures are the httpx exceptions (hence ``ProviderError``
kinds) the adapters already handle: a refused connection, a read timeout, a connection closed mid-answer."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest

from aistats_gateway.http.client import create_client
from aistats_gateway.providers import inference
from aistats_gateway.providers.base import CallContext, ProviderError


async def _server(handler: Any) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_request_and_answer_round_trip() -> None:
    seen: dict[str, bytes] = {}

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        length = int(next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:"))[15:])
        seen["head"], seen["body"] = head, await r.readexactly(length)
        body = b'{"ok": true, "n": 1}'
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-up: 1\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)
        await w.drain()
        w.close()

    async def main() -> tuple[Any, Any]:
        server, port = await _server(handler)
        client = create_client(5.0, upstream=True)
        try:
            r = await client.post(f"http://127.0.0.1:{port}/v1/x", content=b'{"a":1}',
                                  headers={"authorization": "Bearer k", "content-type": "application/json"})
            doc = await inference.post_json(CallContext(http=client, api_key="k", base_url=""),
                                            f"http://127.0.0.1:{port}/v1/x", {"a": 1}, {"authorization": "Bearer k"},
                                            "p")
            return r, doc
        finally:
            await client.aclose()
            server.close()

    r, doc = asyncio.run(main())
    assert r.status_code == 200 and r.json() == {"ok": True, "n": 1} and r.headers["x-up"] == "1"
    assert doc == {"ok": True, "n": 1}
    head = seen["head"].lower()
    assert b"authorization: bearer k" in head and b"user-agent: aistats-gateway" in head
    assert seen["body"] == b'{"a":1}'


def test_refused_connection_is_unavailable() -> None:
    port = _free_port()

    async def main() -> None:
        client = create_client(5.0, upstream=True)
        try:
            with pytest.raises(httpx.ConnectError):
                await client.post(f"http://127.0.0.1:{port}/", content=b"x")
            with pytest.raises(ProviderError) as e:
                await inference.post_json(CallContext(http=client, api_key="k", base_url=""),
                                          f"http://127.0.0.1:{port}/", {}, {}, "p")
            assert e.value.kind == "unavailable" and e.value.code == "provider_unreachable"
        finally:
            await client.aclose()

    asyncio.run(main())


def test_silent_upstream_is_a_read_timeout_and_a_cut_answer_a_transport_error() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)
        w.close()

    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial")
        await w.drain()
        w.close()

    async def main() -> None:
        s1, p1 = await _server(silent)
        s2, p2 = await _server(cut)
        client = create_client(0.3, upstream=True)
        try:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(f"http://127.0.0.1:{p1}/", content=b"x")
            with pytest.raises(ProviderError) as e:
                await inference.post_json(CallContext(http=client, api_key="k", base_url=""),
                                          f"http://127.0.0.1:{p1}/", {}, {}, "p")
            assert e.value.code == "provider_timeout"
            with pytest.raises(httpx.TransportError):
                await client.post(f"http://127.0.0.1:{p2}/", content=b"x")
            with pytest.raises(ProviderError) as e:
                await inference.post_json(CallContext(http=client, api_key="k", base_url=""),
                                          f"http://127.0.0.1:{p2}/", {}, {}, "p")
            assert e.value.kind == "unavailable"
        finally:
            await client.aclose()
            s1.close()
            s2.close()

    asyncio.run(main())


def test_open_stream_streams_events_and_raises_http_errors_before_yielding() -> None:
    async def sse(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        length = int(next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:"))[15:])
        body = await r.readexactly(length)
        if b"fail" in body:
            err = b'{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}'
            w.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 7\r\n"
                    b"connection: close\r\ncontent-length: " + str(len(err)).encode() + b"\r\n\r\n" + err)
        else:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                    b"connection: close\r\n\r\n")
            for data in (b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b"data: [DONE]\n\n"):
                w.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await w.drain()
                await asyncio.sleep(0.01)
            w.write(b"0\r\n\r\n")
        await w.drain()
        w.close()

    async def main() -> tuple[list[Any], ProviderError]:
        server, port = await _server(sse)
        client = create_client(5.0, upstream=True)
        ctx = CallContext(http=client, api_key="k", base_url="")
        try:
            got = []
            async with inference.open_stream(ctx, f"http://127.0.0.1:{port}/s", {"x": 1}, {}, "p") as resp:
                async for ev in inference.sse_events(resp):
                    got.append(inference.event_json(ev, "p"))
            with pytest.raises(ProviderError) as e:
                async with inference.open_stream(ctx, f"http://127.0.0.1:{port}/s", {"fail": 1}, {}, "p"):
                    raise AssertionError("an error status must raise before the body is yielded")
            return got, e.value
        finally:
            await client.aclose()
            server.close()

    got, err = asyncio.run(main())
    assert got == [{"n": 1}, {"n": 2}, None]
    assert err.kind == "rate_limit" and err.retry_after == 7
