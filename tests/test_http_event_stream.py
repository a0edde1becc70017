"""``http.responses.EventStream``: frames go out as they come, and the body iterator is always closed
(at its end, or at once when the server reports the client gone with ``OSError``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aistats_gateway.http.responses import EventStream


def _frames(closed: list[bool]) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        try:
            for i in range(3):
                yield b"data: %d\n\n" % i
        finally:
            closed.append(True)

    return gen()


async def _receive() -> Any:
    raise AssertionError("EventStream does not read the request")


def test_frames_are_sent_in_order_then_the_end_of_the_body() -> None:
    sent: list[dict[str, Any]] = []
    closed: list[bool] = []

    async def send(message: Any) -> None:
        sent.append(message)

    resp = EventStream(_frames(closed), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
    asyncio.run(resp({"type": "http", "asgi": {"spec_version": "2.3"}}, _receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert (b"cache-control", b"no-store") in sent[0]["headers"]
    assert any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in sent[0]["headers"])
    assert [m["body"] for m in sent[1:]] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b""]
    assert [m["more_body"] for m in sent[1:]] == [True, True, True, False]
    assert closed == [True]


def test_a_client_gone_mid_stream_closes_the_body_at_once_without_raising() -> None:
    sent: list[dict[str, Any]] = []
    closed: list[bool] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body" and len(sent) >= 2:
            raise OSError("connection reset by peer")
        sent.append(message)

    asyncio.run(EventStream(_frames(closed))({"type": "http"}, _receive, send))
    assert [m.get("body") for m in sent[1:]] == [b"data: 0\n\n"]
    assert closed == [True]
