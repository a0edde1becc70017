"""Input bounds applied while parsing a request, before any recursive code sees the data.

Invariants
----------
* **Nesting.** No JSON document (a JSON body, a multipart field holding JSON, the structure folded
  from bracketed form keys) deeper than :data:`MAX_NESTING_DEPTH` containers reaches the parser's
  callers: :func:`check_json_depth` scans the raw bytes (strings and escapes are skipped) with
  vectorised byte operations, so the check is linear and cheap, and it runs *before* ``orjson``
  parses the document. Deeper input is a 400 ``nesting_too_deep`` naming the parameter.
* **Free-form objects** (``provider_params`` and any other ``dict[str, Any]`` a client may send)
  are at most :data:`MAX_FREEFORM_DEPTH` levels deep and :data:`MAX_FREEFORM_BYTES` bytes as
  compact JSON (:func:`check_freeform`), checked iteratively (no recursion).
* **Off the loop.** Documents larger than :data:`INLINE_PARSE_BYTES` are scanned and parsed in a
  worker thread (:func:`loads_json`). A parser holds the GIL for a whole document, so large
  ``data:`` URLs are cut out first and kept as bytes, and what is left may be at most
  :data:`MAX_JSON_STRUCTURE_BYTES` (400 ``json_too_large``): no single step holds the GIL for long.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from aistats_gateway.http.errors import bad_request

#: Containers (objects/arrays) a request document may nest. The API's own shapes need 5.
MAX_NESTING_DEPTH = 32
#: ``provider_params`` and other free-form objects: nesting levels and compact JSON size.
MAX_FREEFORM_DEPTH = 8
MAX_FREEFORM_BYTES = 16 * 1024
#: Bracketed segments in a form field name (``a[b][c]`` has 2).
MAX_FORM_KEY_SEGMENTS = 8
#: Parse larger documents in a worker thread.
INLINE_PARSE_BYTES = 64 * 1024
#: A JSON document without its large data: URLs: every field of the API fits in far less.
MAX_JSON_STRUCTURE_BYTES = 1024 * 1024

_KEEP = bytes(range(256)).translate(None, b'[]{}"\\')  # every byte except the six that matter
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_SMALL = 256  # brackets left after stripping: peel pairs (a few C passes) rather than call numpy (~3 µs)


def json_depth(raw: bytes | bytearray) -> int:
    """The maximum container nesting of the JSON text ``raw`` (strings and escapes skipped).

    Not a validator: malformed text gives some number and the parser rejects it afterwards.
    """
    kept = raw.translate(None, _KEEP)  # only [ ] { } " \ remain
    if b"[" not in kept and b"{" not in kept:
        return 0
    if b"\\" in kept:  # inside strings only: \\ is one escaped backslash, \" an escaped quote
        kept = kept.replace(b"\\\\", b"").replace(b'\\"', b"").replace(b"\\", b"")
    if b'"' in kept:
        kept = b"".join(kept.split(b'"')[0::2])  # the even parts are outside strings
    if not kept:
        return 0
    if len(kept) <= _SMALL:  # each pass removes the innermost empty pairs: passes = depth (≤ 128 passes)
        depth = 0
        while True:
            peeled = _EMPTY_PAIR.sub(b"", kept)
            if len(peeled) == len(kept):
                return depth if not peeled else max(depth, _scan(peeled))
            depth += 1
            kept = peeled
    return _scan(kept)


def _scan(kept: bytes | bytearray) -> int:
    steps = _STEP[np.frombuffer(kept, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def check_json_depth(raw: bytes | bytearray, param: str | None = None, limit: int = MAX_NESTING_DEPTH) -> None:
    depth = json_depth(raw)
    if depth > limit:
        where = f"'{param}' is" if param else "The JSON body is"
        raise bad_request(f"{where} nested {depth} levels deep; at most {limit} levels are allowed.", param,
                          "nesting_too_deep")


def _parse(raw: bytes | bytearray, param: str | None) -> Any:
    check_json_depth(raw, param)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        if param:
            raise bad_request(f"'{param}' is not valid JSON.", param, "invalid_json") from None
        raise bad_request("We could not parse the JSON body of your request.", None, "invalid_json") from None


#: A large ``data:`` URL cut out of a JSON body is replaced by ``data:x-aistats-cut/<n>,`` and carried
#: as bytes (:class:`Parsed.data_urls`); ``videos/references.py`` resolves it. Not an image type, so a
#: placeholder that reached anything else is refused as "not an image".
CUT_PREFIX = "data:x-aistats-cut/"
LARGE_STRING_BYTES = 64 * 1024
_SEPARATORS = (b":", b"[", b",", b" ", b"\n", b"\t", b"\r")


def _cut_large_strings(raw: bytes | bytearray) -> tuple[bytes | bytearray, list[memoryview]]:
    """Take plain (escape-free) ``"data:…"`` strings of at least LARGE_STRING_BYTES out of a JSON
    text, leaving numbered placeholders. A JSON parser holds the GIL for the whole document and a
    48 MB string costs a 48 MB allocation per copy; cut out, the URL stays a zero-copy view of the
    body and is only ever touched in slices."""
    view = memoryview(raw)
    pieces: list[memoryview | bytes] = []
    cut: list[memoryview] = []
    pos = start = 0
    while True:
        i = raw.find(b'"data:', pos)
        if i < 0:
            break
        j = raw.find(b'"', i + 1)
        if j < 0:
            break
        pos = j + 1
        if j - i < LARGE_STRING_BYTES or raw[i - 1:i] not in _SEPARATORS or raw.find(b"\\", i, j) >= 0:
            continue
        pieces.append(view[start:i])
        pieces.append(f'"{CUT_PREFIX}{len(cut)},"'.encode())
        cut.append(view[i + 1:j])
        start = j + 1
    if not cut:
        return raw, cut
    pieces.append(view[start:])
    return b"".join(pieces), cut


@dataclass
class Parsed:
    data: Any
    data_urls: list[memoryview] = field(default_factory=list)


def _parse_large(raw: bytes | bytearray, param: str | None, max_structure: int) -> Parsed:
    small, cut = _cut_large_strings(raw)
    if len(small) > max_structure:  # refuse before the parser holds the GIL for all of it
        where = f"'{param}' is" if param else "The JSON body is"
        raise bad_request(f"{where} {len(small):,} bytes without its data: URLs; at most {max_structure:,} bytes "
                          "are allowed (send images as data: URLs, https URLs or a file upload).", param,
                          "json_too_large")
    return Parsed(_parse(small, param), cut)


async def loads_json(raw: bytes | bytearray | str, param: str | None = None,
                     max_structure: int = MAX_JSON_STRUCTURE_BYTES) -> Any:
    """Depth-check then parse ``raw`` (large documents in a worker thread). Large data: URLs are put
    back as strings: use :func:`loads_json_cut` to keep them as bytes."""
    parsed = await loads_json_cut(raw, param, max_structure)
    if parsed.data_urls:
        texts = [bytes(v).decode("utf-8", "replace") for v in parsed.data_urls]
        return resolve_cut(parsed.data, texts)
    return parsed.data


async def loads_json_cut(raw: bytes | bytearray | str, param: str | None = None,
                         max_structure: int = MAX_JSON_STRUCTURE_BYTES) -> Parsed:
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > INLINE_PARSE_BYTES:
        return await asyncio.to_thread(_parse_large, data, param, max_structure)
    return Parsed(_parse(data, param))


def cut_index(value: str) -> int | None:
    """The index of a cut-out data URL placeholder, else None."""
    if value.startswith(CUT_PREFIX) and value.endswith(","):
        n = value[len(CUT_PREFIX):-1]
        return int(n) if n.isdigit() and len(n) < 7 else None
    return None


def resolve_cut(node: Any, texts: list[str]) -> Any:
    """Replace placeholders by ``texts`` (iteratively)."""
    def swap(value: Any) -> Any:
        if isinstance(value, str) and (n := cut_index(value)) is not None and n < len(texts):
            return texts[n]
        return value

    node = swap(node)
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                item[k] = swap(v)
                stack.append(item[k])
        elif isinstance(item, list):
            for n, v in enumerate(item):
                item[n] = swap(v)
                stack.append(item[n])
    return node


def string_bytes(node: Any, stop_after: int) -> int:
    """Characters in every string (keys included) of ``node``, counted without copying; stops early."""
    total = 0
    stack = [node]
    while stack and total <= stop_after:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += sum(len(k) for k in item if isinstance(k, str))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def structure_depth(node: Any) -> int:
    """Container depth of a parsed value, computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(node, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((c, depth) for c in children)
    return deepest


def check_freeform(value: Any, param: str, *, max_depth: int = MAX_FREEFORM_DEPTH,
                   max_bytes: int = MAX_FREEFORM_BYTES) -> None:
    """400 when a client's free-form object is too deep or too large to store."""
    if value is None:
        return
    depth = structure_depth(value)
    if depth > max_depth:
        raise bad_request(f"'{param}' is nested {depth} levels deep; at most {max_depth} levels are allowed.",
                          param, "nesting_too_deep")
    if string_bytes(value, max_bytes) > max_bytes:  # certainly too large: do not serialise it
        raise bad_request(f"'{param}' is larger than {max_bytes:,} bytes as JSON.", param, "parameter_too_large")
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        raise bad_request(f"'{param}' must be a JSON object.", param) from None
    if size > max_bytes:
        raise bad_request(f"'{param}' is {size:,} bytes as JSON; at most {max_bytes:,} bytes are allowed.", param,
                          "parameter_too_large")
