"""Validating OpenAI batch input: JSONL lines ``{custom_id, method, url, body}``.

Used on upload of a ``purpose=batch`` file (fed the bytes as they stream in) and by the batches
service for inline ``requests[]`` (:func:`validate_rows`). Invariants:

* Memory is bounded: only the current, unfinished line is buffered (at most ``max_line_bytes``),
  plus a 16-byte digest and a line number per ``custom_id`` seen (at most ``max_lines`` of them).
* Every error names the 1-based line (or row index + 1 for inline rows) it was found on, and the
  first error stops validation (:class:`BatchFileError`).
* Rules: each line is a JSON object with a non-empty string ``custom_id`` of at most 512 UTF-8
  bytes, unique in the file; ``method`` ``"POST"``; ``url`` one of :data:`ENDPOINTS` (written with
  or without ``/v1``); a JSON object ``body`` without ``stream: true`` holding what its endpoint
  cannot do without (``messages`` for chat and messages, ``input`` for responses, embeddings,
  moderations and speech, ``prompt`` for image generations and edits, ``file`` or ``file_id`` for
  transcriptions and translations; ``model``, when given, a string); one endpoint per file.
  Blank lines are allowed only at the end; a UTF-8 byte order mark at the start is ignored;
  ``\\r\\n`` line ends are accepted. Unknown keys on a line are ignored, as OpenAI does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "ENDPOINTS",
    "MAX_CUSTOM_ID_BYTES",
    "BatchFileError",
    "BatchFileStats",
    "JsonlValidator",
    "normalize_endpoint",
    "validate_rows",
]

ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/embeddings",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
)
MAX_CUSTOM_ID_BYTES = 512
DEFAULT_MAX_LINES = 50_000
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_MODELS_RECORDED = 64
_BOM = b"\xef\xbb\xbf"


class BatchFileError(ValueError):
    """The batch input is invalid; ``line`` is 1-based (0 when the whole file is at fault)."""

    def __init__(self, line: int, message: str, code: str = "invalid_batch_file") -> None:
        super().__init__(f"Line {line}: {message}" if line else message)
        self.line = line
        self.reason = message
        self.code = code


@dataclass
class BatchFileStats:
    """What a valid batch input holds: stored on the file row, used at batch create."""

    lines: int = 0
    endpoint: str | None = None
    models: list[str] = field(default_factory=list)
    models_truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "endpoint": self.endpoint, "models": list(self.models),
                "models_truncated": self.models_truncated}


def normalize_endpoint(url: str) -> str | None:
    """``/v1/chat/completions`` for ``/v1/chat/completions`` or ``/chat/completions``; else None."""
    path = url.strip()
    if not path.startswith("/"):
        return None
    if not path.startswith("/v1/"):
        path = "/v1" + path
    path = path.rstrip("/") if len(path) > 1 else path
    return path if path in ENDPOINTS else None


class JsonlValidator:
    """Feed bytes in any chunking with :meth:`feed`, then call :meth:`finish` for the stats.

    Raises :class:`BatchFileError` from either at the first invalid line.
    """

    def __init__(self, *, max_lines: int = DEFAULT_MAX_LINES, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                 endpoint: str | None = None) -> None:
        self.max_lines = max_lines
        self.max_line_bytes = max_line_bytes
        self.stats = BatchFileStats(endpoint=endpoint)
        self._expected_endpoint = endpoint
        self._endpoint_line = 0
        self._buf = bytearray()
        self._line_no = 0  # lines completed so far (blank ones included)
        self._first_blank = 0  # line number of a blank line not yet followed by content
        self._seen: dict[bytes, int] = {}
        self._models: set[str] = set()
        self._started = False
        self._finished = False

    # -- streaming input -----------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if not chunk:
            return
        if not self._started:
            if len(self._buf) + len(chunk) < len(_BOM) and _BOM.startswith(bytes(self._buf) + chunk):
                self._buf += chunk
                return
            data = bytes(self._buf) + chunk
            self._buf.clear()
            self._started = True
            chunk = data.removeprefix(_BOM)
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                rest = len(chunk) - start
                if len(self._buf) + rest > self.max_line_bytes:
                    self._too_long()
                self._buf += chunk[start:]
                return
            if self._buf:
                if len(self._buf) + nl - start > self.max_line_bytes:
                    self._too_long()
                self._buf += chunk[start:nl]
                line = bytes(self._buf)
                self._buf.clear()
            else:
                if nl - start > self.max_line_bytes:
                    self._too_long()
                line = chunk[start:nl]
            self._line(line)
            start = nl + 1

    def finish(self) -> BatchFileStats:
        if not self._finished:
            self._finished = True
            if self._buf:
                line = bytes(self._buf)
                self._buf.clear()
                self._line(line)
            if self.stats.lines == 0:
                raise BatchFileError(0, "The batch file has no requests; every line must be a JSON object "
                                        "{custom_id, method, url, body}.", "batch_file_empty")
            self.stats.models = sorted(self._models)
        return self.stats

    # -- one line ------------------------------------------------------------------------------

    def _too_long(self) -> None:
        raise BatchFileError(self._line_no + 1, f"the line is longer than {self.max_line_bytes} bytes.",
                             "batch_line_too_large")

    def _line(self, raw: bytes) -> None:
        self._line_no += 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            if not self._first_blank:
                self._first_blank = self._line_no
            return
        if self._first_blank:
            raise BatchFileError(self._first_blank, "the line is empty; blank lines are only allowed at the end "
                                                    "of the file.")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise BatchFileError(self._line_no, f"the line is not valid JSON ({_short(str(e))}).") from None
        self.check_row(obj, self._line_no)

    def check_row(self, obj: Any, line: int) -> None:
        """Validate one decoded row (a line of the file, or an inline request) and count it."""
        if not isinstance(obj, dict):
            raise BatchFileError(line, "each line must be a JSON object {custom_id, method, url, body}.")
        if self.stats.lines >= self.max_lines:
            raise BatchFileError(line, f"the batch has more than {self.max_lines} requests.", "batch_too_many_rows")
        cid = obj.get("custom_id")
        if cid is None:
            raise BatchFileError(line, "'custom_id' is missing.")
        if not isinstance(cid, str) or not cid:
            raise BatchFileError(line, "'custom_id' must be a non-empty string.")
        encoded = cid.encode("utf-8", "surrogatepass")
        if len(encoded) > MAX_CUSTOM_ID_BYTES:
            raise BatchFileError(line, f"'custom_id' is longer than {MAX_CUSTOM_ID_BYTES} bytes.")
        method = obj.get("method")
        if method is None:
            raise BatchFileError(line, "'method' is missing; it must be \"POST\".")
        if method != "POST":
            raise BatchFileError(line, f"'method' must be \"POST\", not {_show(method)}.")
        url = obj.get("url")
        if url is None:
            raise BatchFileError(line, f"'url' is missing; use one of {', '.join(ENDPOINTS)}.")
        endpoint = normalize_endpoint(url) if isinstance(url, str) else None
        if endpoint is None:
            raise BatchFileError(line, f"'url' {_show(url)} is not supported; use one of {', '.join(ENDPOINTS)}.")
        if self._expected_endpoint is None:
            self._expected_endpoint, self._endpoint_line = endpoint, line
            self.stats.endpoint = endpoint
        elif endpoint != self._expected_endpoint:
            where = f"line {self._endpoint_line}" if self._endpoint_line else "the batch's endpoint"
            raise BatchFileError(line, f"'url' {endpoint} differs from {self._expected_endpoint} ({where}); a batch "
                                       "file must use one endpoint.", "batch_mixed_endpoints")
        body = obj.get("body")
        if body is None:
            raise BatchFileError(line, "'body' is missing; it must be the request's JSON object.")
        if not isinstance(body, dict):
            raise BatchFileError(line, "'body' must be a JSON object.")
        if body.get("stream") is True:
            raise BatchFileError(line, "'body.stream' must not be true in a batch.")
        _check_body(endpoint, body, line)
        digest = hashlib.blake2b(encoded, digest_size=16).digest()
        first = self._seen.get(digest)
        if first is not None:
            raise BatchFileError(line, f"'custom_id' {_show(cid)} is duplicated (first on line {first}).",
                                 "duplicate_custom_id")
        self._seen[digest] = line
        model = body.get("model")
        if isinstance(model, str) and model not in self._models:
            if len(self._models) < MAX_MODELS_RECORDED:
                self._models.add(model[:200])
            else:
                self.stats.models_truncated = True
        self.stats.lines += 1


# What each endpoint's body cannot do without (the rest is checked when the row runs).
_REQUIRED: dict[str, tuple[str, str]] = {
    "/v1/chat/completions": ("messages", "list"),
    "/v1/messages": ("messages", "list"),
    "/v1/responses": ("input", "any"),
    "/v1/embeddings": ("input", "any"),
    "/v1/moderations": ("input", "any"),
    "/v1/images/generations": ("prompt", "str"),
    "/v1/images/edits": ("prompt", "str"),
    "/v1/audio/speech": ("input", "str"),
    "/v1/audio/transcriptions": ("file", "any"),
    "/v1/audio/translations": ("file", "any"),
}
_ALTERNATIVE = {"file": "file_id"}  # the audio as a data URL / base64 (``file``) or an uploaded file's id


def _check_body(endpoint: str, body: dict[str, Any], line: int) -> None:
    name, kind = _REQUIRED[endpoint]
    value = body.get(name)
    if value is None and name in _ALTERNATIVE:
        value = body.get(_ALTERNATIVE[name])
    if value is None:
        alt = f" (or 'body.{_ALTERNATIVE[name]}')" if name in _ALTERNATIVE else ""
        raise BatchFileError(line, f"'body.{name}'{alt} is missing; a {endpoint} request needs it.")
    if kind == "list" and (not isinstance(value, list) or not value):
        raise BatchFileError(line, f"'body.{name}' must be a non-empty array.")
    if kind == "str" and (not isinstance(value, str) or not value):
        raise BatchFileError(line, f"'body.{name}' must be a non-empty string.")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise BatchFileError(line, "'body.model' must be a non-empty string.")


def validate_rows(rows: Iterable[Mapping[str, Any]], *, endpoint: str | None = None,
                  max_lines: int = DEFAULT_MAX_LINES) -> BatchFileStats:
    """Validate inline batch requests with the same rules; row *i* is reported as line *i + 1*.

    ``endpoint`` (the batch's, if it names one) must then be the endpoint of every row.
    """
    expected = None
    if endpoint is not None:
        expected = normalize_endpoint(endpoint)
        if expected is None:
            raise BatchFileError(0, f"endpoint {endpoint!r} is not supported; use one of {', '.join(ENDPOINTS)}.",
                                 "invalid_endpoint")
    v = JsonlValidator(max_lines=max_lines, endpoint=expected)
    for i, row in enumerate(rows):
        v.check_row(row, i + 1)
    v._finished = True
    if v.stats.lines == 0:
        raise BatchFileError(0, "The batch has no requests.", "batch_file_empty")
    v.stats.models = sorted(v._models)
    return v.stats


def _show(value: Any) -> str:
    if isinstance(value, str):
        return _short('"' + value + '"', 80)
    try:
        return _short(orjson.dumps(value).decode(), 80)
    except TypeError:
        return _short(repr(value), 80)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
