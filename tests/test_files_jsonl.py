"""The batch JSONL validator on its own: every chunking gives the same answer, the line number of
every error, bounded buffering, and the inline-rows entry point the batches service uses."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aistats_gateway.files.jsonl import (
    ENDPOINTS,
    BatchFileError,
    JsonlValidator,
    normalize_endpoint,
    validate_rows,
)

BODIES: dict[str, dict[str, Any]] = {
    "chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "messages": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10},
    "responses": {"input": "hi"}, "embeddings": {"input": ["a", "b"]}, "moderations": {"input": "hi"},
    "images/generations": {"prompt": "a cat"}, "images/edits": {"prompt": "a hat", "images": ["file-x"]},
    "audio/speech": {"input": "hi", "voice": "alloy"}, "audio/transcriptions": {"file_id": "file-x"},
    "audio/translations": {"file": "data:audio/wav;base64,AAAA"},
}


def row(cid: str, url: str = "/v1/chat/completions", **extra: Any) -> dict[str, Any]:
    default = {"model": "openai/gpt-4o-mini", **BODIES.get(url.removeprefix("/v1/").removeprefix("/"), {})}
    return {"custom_id": cid, "method": "POST", "url": url, "body": extra.pop("body", default), **extra}


def jsonl(*rows: Any, end: bytes = b"\n") -> bytes:
    return b"\n".join(r if isinstance(r, bytes) else orjson.dumps(r) for r in rows) + end


def check(data: bytes, chunk: int | None = None, **kw: Any) -> Any:
    v = JsonlValidator(**kw)
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        v.feed(data[i:i + step])
    return v.finish()


def error(data: bytes, chunk: int | None = None, **kw: Any) -> BatchFileError:
    with pytest.raises(BatchFileError) as e:
        check(data, chunk, **kw)
    return e.value


def test_valid_file_any_chunking() -> None:
    data = jsonl(row("a"), row("b", body={"model": "m2", "messages": [{"role": "user", "content": "x"}]}),
                 row("ü" * 10))
    for chunk in (None, 1, 2, 3, 7, 64):
        stats = check(data, chunk)
        assert (stats.lines, stats.endpoint) == (3, "/v1/chat/completions")
        assert stats.models == ["m2", "openai/gpt-4o-mini"]


def test_bom_crlf_no_final_newline_and_trailing_blank_lines() -> None:
    data = b"\xef\xbb\xbf" + orjson.dumps(row("a")) + b"\r\n" + orjson.dumps(row("b")) + b"\r\n\r\n  \n"
    for chunk in (None, 1, 2):
        assert check(data, chunk).lines == 2
    assert check(jsonl(row("a"), end=b"")).lines == 1


@pytest.mark.parametrize("data,line,words", [
    (jsonl(row("a"), b"{not json"), 2, ["not valid JSON"]),
    (jsonl(row("a"), {"method": "POST", "url": "/v1/chat/completions", "body": {}}), 2, ["custom_id", "missing"]),
    (jsonl(row("a"), row("b"), row("a")), 3, ["duplicated", "first on line 1"]),
    (jsonl(row("a"), row("b", url="/v1/embeddings")), 2, ["/v1/embeddings", "one endpoint", "line 1"]),
    (jsonl({**row("a"), "method": "GET"}), 1, ['"POST"', '"GET"']),
    (jsonl({k: v for k, v in row("a").items() if k != "method"}), 1, ["method", "missing"]),
    (jsonl(row("a", url="/v1/videos")), 1, ["/v1/videos", "not supported"]),
    (jsonl(row("a", body=[1, 2])), 1, ["body", "object"]),
    (jsonl({k: v for k, v in row("a").items() if k != "body"}), 1, ["body", "missing"]),
    (jsonl(row("a", body={"model": "m", "messages": [1], "stream": True})), 1, ["stream"]),
    (jsonl(row("a", body={"model": "m"})), 1, ["'body.messages' is missing", "/v1/chat/completions"]),
    (jsonl(row("a", body={"model": "m", "messages": []})), 1, ["'body.messages' must be a non-empty array"]),
    (jsonl(row("a", url="/v1/responses", body={"model": "m"})), 1, ["'body.input' is missing"]),
    (jsonl(row("a", url="/v1/embeddings", body={"model": "m"})), 1, ["'body.input' is missing"]),
    (jsonl(row("a", url="/v1/images/generations", body={"prompt": 3})), 1, ["'body.prompt' must be"]),
    (jsonl(row("a", body={"model": 3, "messages": [1]})), 1, ["'body.model' must be a non-empty string"]),
    (jsonl(row("a"), b"[1, 2]"), 2, ["JSON object"]),
    (jsonl(row("x" * 513)), 1, ["512 bytes"]),
    (jsonl(row("")), 1, ["non-empty"]),
    (jsonl({**row("a"), "custom_id": 5}), 1, ["string"]),
    (jsonl(row("a"), b"", row("b")), 2, ["empty", "only allowed at the end"]),
    (jsonl(row("a"), b"\xff\xfe{}"), 2, ["not valid JSON"]),
])
def test_errors_name_the_line(data: bytes, line: int, words: list[str]) -> None:
    for chunk in (None, 1, 5):
        e = error(data, chunk)
        assert e.line == line and str(e).startswith(f"Line {line}: ")
        for w in words:
            assert w in str(e), (w, str(e))


def test_error_codes() -> None:
    assert error(jsonl(row("a"), row("a"))).code == "duplicate_custom_id"
    assert error(jsonl(row("a"), row("b", url="/v1/responses"))).code == "batch_mixed_endpoints"
    assert error(b"").code == "batch_file_empty"
    assert error(b"\n\n").code == "batch_file_empty"
    assert error(jsonl(row("a"), b"oops")).code == "invalid_batch_file"


def test_custom_id_limit_is_bytes_not_characters() -> None:
    assert check(jsonl(row("é" * 256))).lines == 1  # 512 bytes
    assert "512 bytes" in str(error(jsonl(row("é" * 257))))


def test_max_lines_and_max_line_bytes() -> None:
    e = error(jsonl(row("a"), row("b"), row("c")), max_lines=2)
    assert (e.line, e.code) == (3, "batch_too_many_rows")
    long = row("big", body={"model": "m", "messages": ["x" * 5000]})
    e = error(jsonl(row("a"), long), 100, max_line_bytes=2048)
    assert (e.line, e.code) == (2, "batch_line_too_large")


def test_buffer_holds_at_most_one_line() -> None:
    v = JsonlValidator(max_line_bytes=4096)
    line = orjson.dumps(row("a", body={"model": "m", "messages": ["y" * 1000]})) + b"\n"
    for i in range(200):
        v.feed(line.replace(b'"a"', f'"r{i}"'.encode()))
        assert len(v._buf) < len(line)
    assert v.finish().lines == 200


def test_every_endpoint_with_its_minimal_body() -> None:
    for url in ENDPOINTS:
        assert check(jsonl(row("a", url=url), row("b", url=url))).endpoint == url
    assert check(jsonl(row("a", body={"messages": [{"role": "user", "content": "x"}]}))).models == []


def test_endpoints_with_or_without_v1() -> None:
    assert normalize_endpoint("/chat/completions") == "/v1/chat/completions"
    assert normalize_endpoint("/v1/messages") == "/v1/messages"
    assert normalize_endpoint("/v1/images/generations") == "/v1/images/generations"
    assert normalize_endpoint("chat/completions") is None
    assert normalize_endpoint("/v1/videos") is None
    assert check(jsonl(row("a", url="/embeddings"), row("b", url="/v1/embeddings"))).endpoint == "/v1/embeddings"


def test_validate_rows_for_inline_requests() -> None:
    stats = validate_rows([row("a", url="/v1/responses"), row("b", url="/v1/responses")], endpoint="/v1/responses")
    assert (stats.lines, stats.endpoint) == (2, "/v1/responses")
    with pytest.raises(BatchFileError) as e:
        validate_rows([row("a"), row("a")])
    assert e.value.line == 2
    with pytest.raises(BatchFileError) as e:
        validate_rows([row("a")], endpoint="/v1/embeddings")
    assert e.value.line == 1 and "the batch's endpoint" in str(e.value)
    with pytest.raises(BatchFileError) as e:
        validate_rows([], endpoint="/v1/responses")
    assert e.value.code == "batch_file_empty"
    with pytest.raises(BatchFileError) as e:
        validate_rows([row("a")], endpoint="/v1/nope")
    assert e.value.code == "invalid_endpoint"


def test_transcription_rows_need_file_or_file_id() -> None:
    url = "/v1/audio/transcriptions"
    with pytest.raises(BatchFileError) as e:
        check(jsonl(row("a", url=url, body={"model": "openai/whisper-1"})))
    assert "'body.file' (or 'body.file_id') is missing" in str(e.value)
    assert check(jsonl(row("a", url=url, body={"file": "data:audio/wav;base64,AAAA"}))).lines == 1
