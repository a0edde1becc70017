"""A bench-grade mock OpenAI-compatible upstream: a raw asyncio HTTP/1.1 server answering fixed replies as fast
as Python allows, so a gateway benchmark measures the gateway, not the mock.

    python bench/mock_upstream.py --port 9200                 # serve until Ctrl-C (127.0.0.1 only)
    python bench/mock_upstream.py --port 9200 --stream-delay-ms 5   # stream events 5 ms apart (chunked)
    python bench/mock_upstream.py --self-check                # start one in a child process and load it
    from mock_upstream import spawn; proc, port = spawn("--reply", "hi")   # from a benchmark script

Routes (anything else: 404 with the OpenAI error JSON; no auth is checked, any Authorization is fine):
* ``POST /v1/chat/completions`` — a fixed ``chat.completion`` (``--reply``, usage ``--prompt-tokens`` /
  completion tokens = words of the reply); with ``"stream": true`` in the body a fixed SSE stream: a role
  chunk, one chunk per reply word, a finish chunk, a usage chunk (``choices: []``) and ``data: [DONE]``.
* ``POST /v1/messages`` — a fixed Anthropic message, or its SSE event sequence with ``"stream": true``.
* ``POST /v1/embeddings`` — a fixed 8-dimension embedding per request; ``GET /health`` — ``ok``.

Invariants: responses are precomputed bytes (one ``transport.write`` per request unless
``--stream-delay-ms`` > 0, then the stream goes out chunk-encoded, event by event, on ``loop.call_later``);
keep-alive and pipelining are supported (requests with ``Content-Length``; chunked request bodies are not);
``Connection: close`` closes after the answer. The stream detection is a substring test for
``"stream":true`` / ``"stream": true`` in the body. uvloop is used when installed. Listens on loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time

BIND = "127.0.0.1"


def _http(status: str, ctype: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
            "x-request-id: req_mock\r\n\r\n").encode() + body


def build_replies(reply: str, prompt_tokens: int, model: str) -> dict[str, object]:
    words = reply.split(" ")
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
             "total_tokens": prompt_tokens + len(words),
             "prompt_tokens_details": {"cached_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0}}
    base = {"id": "chatcmpl-mock", "created": 1700000000, "model": model, "system_fingerprint": "fp_mock"}
    chat = json.dumps({**base, "object": "chat.completion", "choices": [{
        "index": 0, "message": {"role": "assistant", "content": reply, "refusal": None},
        "logprobs": None, "finish_reason": "stop"}], "usage": usage}, separators=(",", ":")).encode()

    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        data = {**base, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], "usage": None}
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": (" " if i else "") + w}) for i, w in enumerate(words)]
    events.append(chunk({}, "stop"))
    events.append(b"data: " + json.dumps({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage},
                                         separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    embed = json.dumps({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.125] * 8}],
                        "model": model, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}},
                       separators=(",", ":")).encode()
    a_usage = {"input_tokens": prompt_tokens, "output_tokens": len(words), "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 0}
    a_msg = {"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "stop_sequence": None}
    message = json.dumps({**a_msg, "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn",
                          "usage": a_usage}, separators=(",", ":")).encode()

    def a_event(kind: str, data: dict[str, object]) -> bytes:
        return f"event: {kind}\ndata: ".encode() + json.dumps({"type": kind, **data},
                                                                separators=(",", ":")).encode() + b"\n\n"

    a_events = [a_event("message_start", {"message": {**a_msg, "content": [], "stop_reason": None,
                                                      "usage": {**a_usage, "output_tokens": 1}}}),
                a_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
    a_events += [a_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                       "text": (" " if i else "") + w}})
                 for i, w in enumerate(words)]
    a_events += [a_event("content_block_stop", {"index": 0}),
                 a_event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                           "usage": {"output_tokens": len(words)}}),
                 a_event("message_stop", {})]
    not_found = json.dumps({"error": {"message": "Unknown route (mock)", "type": "invalid_request_error",
                                      "param": None, "code": None}}).encode()
    return {
        "chat": _http("200 OK", "application/json", chat),
        "stream": _http("200 OK", "text/event-stream", b"".join(events)),
        "stream_head": b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                       b"x-request-id: req_mock\r\n\r\n",
        "events": events,
        "embed": _http("200 OK", "application/json", embed),
        "message": _http("200 OK", "application/json", message),
        "message_stream": _http("200 OK", "text/event-stream", b"".join(a_events)),
        "health": _http("200 OK", "text/plain", b"ok"),
        "404": _http("404 Not Found", "application/json", not_found),
    }


class MockProtocol(asyncio.Protocol):
    def __init__(self, replies: dict[str, object], delay: float) -> None:
        self.replies, self.delay = replies, delay
        self.buf = b""
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is no asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            total = end + 4 + length
            if len(self.buf) < total:
                return
            body, self.buf = self.buf[end + 4:total], self.buf[total:]
            self.answer(head[:head.find(b"\r\n") if b"\r\n" in head else None], body, b"connection: close" in head)

    def answer(self, line: bytes, body: bytes, close: bool) -> None:
        t, r = self.transport, self.replies
        assert t is not None
        if line.startswith(b"post /v1/chat/completions"):
            if b'"stream":true' in body or b'"stream": true' in body:
                if self.delay > 0:
                    self._stream_slowly(close)
                    return
                t.write(r["stream"])  # type: ignore[arg-type]
            else:
                t.write(r["chat"])  # type: ignore[arg-type]
        elif line.startswith(b"post /v1/messages"):
            streamed = b'"stream":true' in body or b'"stream": true' in body
            t.write(r["message_stream" if streamed else "message"])  # type: ignore[arg-type]
        elif line.startswith(b"post /v1/embeddings"):
            t.write(r["embed"])  # type: ignore[arg-type]
        elif line.startswith(b"get /health"):
            t.write(r["health"])  # type: ignore[arg-type]
        else:
            t.write(r["404"])  # type: ignore[arg-type]
        if close:
            t.close()

    def _stream_slowly(self, close: bool) -> None:
        t = self.transport
        assert t is not None
        loop = asyncio.get_running_loop()
        events: list[bytes] = list(self.replies["events"])  # type: ignore[call-overload]
        t.write(self.replies["stream_head"])  # type: ignore[arg-type]

        def send(k: int) -> None:
            if t.is_closing():
                return
            if k == len(events):
                t.write(b"0\r\n\r\n")
                if close:
                    t.close()
                return
            t.write(f"{len(events[k]):x}\r\n".encode() + events[k] + b"\r\n")
            loop.call_later(self.delay, send, k + 1)
        send(0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, replies: dict[str, object], delay: float) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: MockProtocol(replies, delay), BIND, port, backlog=1024,
                                    reuse_address=True)


async def _load(port: int, seconds: float, connections: int, body: bytes) -> tuple[int, list[float]]:
    """Closed loop: ``connections`` keep-alive sockets each sending one request after another."""
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {BIND}\r\ncontent-type: application/json\r\n"
           f"content-length: {len(body)}\r\n\r\n").encode() + body
    done, lat, stop = 0, [], time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(BIND, port)
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            i = head.lower().find(b"content-length:")
            await reader.readexactly(int(head[i + 15:head.find(b"\r\n", i)]))
            lat.append(time.perf_counter() - t0)
            done += 1
        writer.close()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done, lat


async def self_check(port: int) -> None:
    """Load a mock running in another process (see ``main``) at 1 and 64 connections."""
    for stream_flag in (False, True):
        body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": "hi"}],
                           "stream": stream_flag}).encode()
        for conns, secs in ((1, 1.0), (64, 2.0)):
            n, lat = await _load(port, secs, conns, body)
            lat.sort()
            print(f"{'stream' if stream_flag else 'plain '} conns={conns:>2}: {n / secs:8.0f} req/s  "
                  f"p50 {lat[len(lat) // 2] * 1e3:.3f} ms  p99 {lat[int(len(lat) * 0.99)] * 1e3:.3f} ms "
                  "(Python asyncio client: a lower bound of the mock's capacity)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((BIND, 0))
        return int(s.getsockname()[1])


def spawn(*args: str, port: int = 0, timeout: float = 15.0) -> tuple[subprocess.Popen[bytes], int]:
    """Start the mock in a child process (``args`` are CLI flags); (process, port) once it accepts connections.
    The caller terminates the process. For benchmarks: the mock then has its own process (and core)."""
    port = port or _free_port()
    child = subprocess.Popen([sys.executable, __file__, "--port", str(port), *args], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((BIND, port), timeout=0.2).close()
            return child, port
        except OSError:
            if time.monotonic() > deadline or child.poll() is not None:
                child.kill()
                child.wait()
                raise RuntimeError("mock_upstream did not start") from None
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=9200)
    ap.add_argument("--reply", default="Hello from the mock upstream, this is a fixed reply.")
    ap.add_argument("--prompt-tokens", type=int, default=12)
    ap.add_argument("--model", default="mock-model")
    ap.add_argument("--stream-delay-ms", type=float, default=0.0)
    ap.add_argument("--self-check", action="store_true", help="load the mock itself for a few seconds and exit")
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    if args.self_check:
        child, port = spawn()
        try:
            asyncio.run(self_check(port))
        finally:
            child.terminate()
            child.wait(timeout=5)
        return
    replies = build_replies(args.reply, args.prompt_tokens, args.model)

    async def run() -> None:
        server = await serve(args.port, replies, args.stream_delay_ms / 1000)
        print(f"mock upstream on http://{BIND}:{server.sockets[0].getsockname()[1]}/v1", flush=True)
        async with server:
            await server.serve_forever()
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
