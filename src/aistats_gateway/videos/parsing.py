"""Reading a create body: JSON, or multipart/form-data as the openai SDK sends it.

Multipart fields are strings: ``seconds=8``, ``generate_audio=true``, bracketed keys such as
``input_reference[image_url]`` or ``input_references[0][image_url][url]``, and an uploaded image as
``input_reference``. They are folded into the same nested structure JSON gives, and pydantic's lax
mode turns the numeric and boolean strings into numbers and booleans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from aistats_gateway.http import limits
from aistats_gateway.http.errors import APIError, bad_request

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\[\]]*\])*)$")
# Fields whose multipart value may also be a JSON document.
_JSON_FIELDS = {"provider_params", "output", "webhook", "provider", "input_references", "input_reference"}


@dataclass(frozen=True)
class Upload:
    field: str
    filename: str | None
    content_type: str
    data: bytes


async def read_body(request: Request) -> tuple[dict[str, Any], Upload | None]:
    """The body as a dict (and the uploaded image). Large ``data:`` URLs of a JSON body are left as
    placeholders and kept as bytes in ``request.state.data_urls`` (see ``http/limits.py``)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await _read_form(request)
    raw = await _read_raw(request)
    if len(raw) < 4096 and not raw.strip():
        raise bad_request("The request body is empty; send JSON or multipart/form-data.", None, "missing_body")
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise APIError(415, f"Unsupported Content-Type {ctype!r}; use application/json or multipart/form-data.",
                       code="unsupported_media_type")
    parsed = await limits.loads_json_cut(raw)
    if not isinstance(parsed.data, dict):
        raise bad_request("The JSON body must be an object.", None, "invalid_json")
    request.state.data_urls = parsed.data_urls
    return parsed.data, None


async def _read_raw(request: Request) -> bytes | bytearray:
    """The body, copied chunk by chunk into one buffer sized from Content-Length (so no single
    large allocation or join happens on the event loop)."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) <= 1 << 20:
        return await request.body()
    buf = bytearray(int(declared))  # zero pages: memory is touched chunk by chunk below
    pos = 0
    async for chunk in request.stream():
        if pos + len(chunk) > len(buf):
            raise bad_request("The body is longer than its Content-Length.", None, "invalid_body")
        buf[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    if pos != len(buf):
        del buf[pos:]
    return buf


async def _read_form(request: Request) -> tuple[dict[str, Any], Upload | None]:
    try:
        form = await request.form(max_files=2, max_fields=500, max_part_size=MAX_UPLOAD_BYTES)
    except Exception as e:
        raise bad_request(f"Malformed form body: {e}", None, "invalid_body") from None
    data: dict[str, Any] = {}
    upload: Upload | None = None
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "input_reference" or upload is not None:
                    raise bad_request(f"Unexpected file field {key!r}; only one 'input_reference' image is accepted.",
                                      key, "unexpected_file")
                content = await value.read()
                if len(content) > MAX_UPLOAD_BYTES:
                    raise bad_request("input_reference is larger than 25 MiB.", key, "file_too_large")
                upload = Upload(key, value.filename, (value.content_type or "application/octet-stream").lower(),
                                content)
                continue
            _assign(data, key, value)
    finally:
        await form.close()
    for name in _JSON_FIELDS:
        v = data.get(name)
        if isinstance(v, str) and v.strip()[:1] in ("{", "["):
            data[name] = await limits.loads_json(v, name)
    return _listify(data), upload


def _assign(data: dict[str, Any], key: str, value: str) -> None:
    m = _KEY.match(key)
    if not m:
        raise bad_request(f"Malformed field name {key!r}.", key, "invalid_field")
    path = [m[1]] + re.findall(r"\[([^\[\]]*)\]", m[2])
    if len(path) - 1 > limits.MAX_FORM_KEY_SEGMENTS:
        raise bad_request(f"Field name {key[:80]!r}… has {len(path) - 1} bracketed segments; at most "
                          f"{limits.MAX_FORM_KEY_SEGMENTS} are allowed.", m[1], "nesting_too_deep")
    node: Any = data
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if part == "":  # key[] appends
            if not isinstance(node, list):
                raise bad_request(f"Malformed field name {key!r}.", key, "invalid_field")
            if last:
                node.append(value)
                return
            node.append({})
            node = node[-1]
            continue
        nxt_is_append = not last and path[i + 1] == ""
        if isinstance(node, list):
            raise bad_request(f"Malformed field name {key!r}.", key, "invalid_field")
        if last:
            if part in node and not isinstance(node[part], (dict, list)):
                existing = node[part]
                node[part] = existing if isinstance(existing, list) else [existing]
                node[part].append(value)
            else:
                node[part] = value
            return
        node = node.setdefault(part, [] if nxt_is_append else {})
        if not isinstance(node, (dict, list)):
            raise bad_request(f"Field {key!r} conflicts with another field.", key, "invalid_field")


def _listify(node: Any) -> Any:
    """{"0": a, "1": b} → [a, b] (bracketed numeric indexes)."""
    if isinstance(node, dict):
        node = {k: _listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
        return node
    if isinstance(node, list):
        return [_listify(v) for v in node]
    return node
