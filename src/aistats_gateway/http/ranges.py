"""Conditional and ranged GETs of stored bytes (RFC 9110): ETag / If-None-Match, Range / If-Range.

One negotiation for every download route (files, video outputs), so they answer alike:

* ``If-None-Match`` naming the current ETag (or ``*``) → 304 with the validators, no body.
* ``Range: bytes=a-b`` / ``a-`` / ``-n`` → 206 with ``Content-Range``; a range past the end (or any
  range of an empty object) → 416 with ``Content-Range: bytes */size`` in the OpenAI error shape
  naming ``Range``; a malformed or multi-range header is ignored (the whole body, 200), as RFC 9110
  allows; ``If-Range`` with another validator also means the whole body.
* ``Content-Length`` is always the length of what will be sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from aistats_gateway.http.errors import error_response

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(start, end) inclusive; None when the header should be ignored; "unsatisfiable" for 416."""
    m = _RANGE.match(header.strip().replace(" ", ""))
    if not m or (not m[1] and not m[2]):
        return None  # malformed or multi-range: serve the whole body (allowed by RFC 9110)
    if not m[1]:
        length = int(m[2])
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(m[1])
    end = int(m[2]) if m[2] else size - 1
    if start >= size or (m[2] and end < start):
        return "unsatisfiable"
    return start, min(end, size - 1)


@dataclass(frozen=True)
class Span:
    """What to send: bytes ``start..end`` inclusive (nothing when ``size`` is 0) with ``status``."""

    start: int
    end: int
    status: int


def negotiate(request: Request, size: int, etag: str, headers: dict[str, str]) -> Response | Span:
    """A finished answer (304, 416), or the span to send; fills the validator and length headers."""
    headers["ETag"] = etag
    headers.setdefault("Accept-Ranges", "bytes")
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        return Response(status_code=304, headers=headers)
    rng = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if rng and if_range and if_range.strip() != etag:
        rng = None
    span = Span(0, size - 1, 200)
    if rng:
        parsed = parse_range(rng, size) if size > 0 else "unsatisfiable"
        if parsed == "unsatisfiable":
            resp = error_response(416, f"Range {rng!r} is not satisfiable; the content has {size} bytes.",
                                  param="Range", code="range_not_satisfiable", type="invalid_request_error")
            resp.headers["Content-Range"] = f"bytes */{size}"
            return resp
        if isinstance(parsed, tuple):
            span = Span(parsed[0], parsed[1], 206)
            headers["Content-Range"] = f"bytes {span.start}-{span.end}/{size}"
    headers["Content-Length"] = str(span.end - span.start + 1 if size else 0)
    return span
