"""``http.fast.FastClient`` answers like ``httpx.AsyncClient.request`` for the calls adapters make
(against the OpenAI fake over real HTTP): same status, headers and body, JSON errors, a gzip body
decoded; an unreachable host raises httpx's ``ConnectError``, so ``providers._http.send`` maps it
to ``ProviderError("unavailable")`` as before; ``stream`` goes to the httpx fallback."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Iterator

import httpx
import pytest

from aistats_gateway.http.fast import FastClient
from aistats_gateway.providers import _http
from aistats_gateway.providers.base import ProviderError
from aistats_gateway.providers.fakes.testing import RunningFake


@pytest.fixture(scope="module")
def fake() -> Iterator[RunningFake]:
    with RunningFake("openai") as running:
        yield running


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_same_answers_as_httpx(fake: RunningFake) -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as plain:
            fast = FastClient(plain, 30.0)
            try:
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
                headers = {"authorization": "Bearer sk-test"}
                url = fake.base_url + "/chat/completions"
                a = await plain.request("POST", url, json=body, headers=headers)
                b = await fast.request("POST", url, json=body, headers=headers)
                assert isinstance(b, httpx.Response) and a.status_code == b.status_code == 200
                assert a.json()["choices"][0]["message"]["content"] == b.json()["choices"][0]["message"]["content"]
                assert b.headers["content-type"].startswith("application/json")
                missing = await fast.request("POST", fake.base_url + "/nope", content=b"{}", headers=headers)
                assert missing.status_code == 404
                with pytest.raises(httpx.ConnectError):
                    await fast.request("POST", f"http://127.0.0.1:{_closed_port()}/x", content=b"{}")
                with pytest.raises(ProviderError) as err:
                    await _http.send(fast, "POST", f"http://127.0.0.1:{_closed_port()}/x", provider="p", content=b"")
                assert err.value.kind == "unavailable"
                assert fast.stream == plain.stream  # streams are httpx's
            finally:
                await fast.aclose()

    asyncio.run(main())


def test_a_gzip_body_is_decoded() -> None:
    payload = b'{"ok": true}'
    packed = gzip.compress(payload)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                     b"content-length: " + str(len(packed)).encode() + b"\r\n\r\n" + packed)
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, httpx.AsyncClient() as plain:
            fast = FastClient(plain)
            try:
                got = await fast.request("GET", f"http://127.0.0.1:{port}/")
                assert got.status_code == 200 and got.json() == {"ok": True}
            finally:
                await fast.aclose()

    asyncio.run(main())
