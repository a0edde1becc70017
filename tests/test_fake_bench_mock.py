"""bench/mock_upstream.py: the bench-grade raw-asyncio mock answers the openai SDK (plain and streamed chat,
embeddings), keeps connections alive, streams chunk-encoded with --stream-delay-ms, and 404s other routes."""
from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "mock_upstream.py"


def _start(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    spec = importlib.util.spec_from_file_location("mock_upstream", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    started: tuple[subprocess.Popen[bytes], int] = module.spawn(*args)
    return started


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    child, port = _start("--reply", "fixed reply here", "--prompt-tokens", "7")
    yield port
    child.terminate()
    child.wait(timeout=5)


def test_openai_sdk_plain_stream_and_embeddings(port: int) -> None:
    client = OpenAI(api_key="any", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "fixed reply here"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (7, 3)
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "fixed reply here"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 10
    assert len(client.embeddings.create(model="e", input="x").data[0].embedding) == 8


def test_keep_alive_pipelining_and_404(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        for _ in range(20):
            assert c.post("/v1/chat/completions", json={"model": "m", "messages": []}).status_code == 200
        miss = c.get("/v1/nope")
        assert miss.status_code == 404 and miss.json()["error"]["type"] == "invalid_request_error"
    body = b'{"model":"m","messages":[]}'
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(req * 3)  # pipelined
        data = b""
        s.settimeout(5)
        while data.count(b"HTTP/1.1 200 OK") < 3:
            data += s.recv(65536)
    assert data.count(b"chat.completion") == 3


def test_slow_stream_is_chunked_and_spaced() -> None:
    child, port = _start("--stream-delay-ms", "20", "--reply", "a b c")
    try:
        arrivals: list[float] = []
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions",
                          json={"model": "m", "stream": True, "messages": []}) as r:
            assert r.headers["transfer-encoding"] == "chunked"
            for line in r.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic())
        assert len(arrivals) == 7  # role, 3 words, finish, usage, [DONE]
        assert arrivals[-1] - arrivals[0] >= 0.1  # six 20 ms gaps, with slack for scheduling
    finally:
        child.terminate()
        child.wait(timeout=5)


def test_anthropic_sdk_against_the_mock(port: int) -> None:
    import anthropic

    c = anthropic.Anthropic(api_key="any", base_url=f"http://127.0.0.1:{port}", max_retries=0)
    m = c.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == "fixed reply here" and m.usage.output_tokens == 3  # type: ignore[union-attr]
    with c.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) == "fixed reply here"
