"""Multipart bodies of the image-edit and audio endpoints, read as they arrive.

Invariants:

* File parts are streamed to temp files under ``<data_dir>/scratch/media`` (never held whole); a part
  over ``max_file_bytes`` answers 413 naming the field, at once. Text fields are bounded (64 KiB each).
* Field names keep their brackets stripped (``image[]`` → ``image``, ``timestamp_granularities[]`` →
  ``timestamp_granularities``); repeated names keep every value in ``multi``.
* :meth:`Form.cleanup` removes the temp files; callers run it in ``finally``. What a crash leaves in
  ``scratch/media`` (uploads, speech being measured) is removed at start by :func:`sweep` once it is
  an hour old (no call keeps a temp file that long).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request

from aistats_gateway.files.multipart import (
    BodyTooLarge,
    Data,
    FormStream,
    MalformedForm,
    PartEnd,
    PartStart,
    boundary_of,
)
from aistats_gateway.http.errors import APIError, bad_request

MAX_FIELD = 64 * 1024
ORPHAN_SECONDS = 3600.0


async def sweep_async(data_dir: Path, older_than: float = ORPHAN_SECONDS) -> int:
    return await asyncio.to_thread(sweep, data_dir, older_than)


def sweep(data_dir: Path, older_than: float = ORPHAN_SECONDS) -> int:
    """Remove ``scratch/media`` files untouched for ``older_than`` seconds; how many. Blocking: run in a thread."""
    import time

    root = Path(data_dir) / "scratch" / "media"
    if not root.is_dir():
        return 0
    cutoff, removed = time.time() - older_than, 0
    for p in root.iterdir():
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


@dataclass
class FilePart:
    name: str
    filename: str
    content_type: str
    path: Path
    size: int


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    multi: list[tuple[str, str]] = field(default_factory=list)
    files: list[FilePart] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.multi if k == name]

    def files_named(self, *names: str) -> list[FilePart]:
        return [f for f in self.files if f.name in names]

    def cleanup(self) -> None:
        for f in self.files:
            f.path.unlink(missing_ok=True)


def _name(raw: str) -> str:
    return raw[:-2] if raw.endswith("[]") else raw


async def read(request: Request, scratch: Path, *, max_file_bytes: int, max_body_bytes: int,
               max_parts: int = 40) -> Form:
    try:
        boundary = boundary_of(request.headers.get("content-type", ""))
    except MalformedForm as e:
        raise bad_request(str(e), None, "invalid_multipart") from None
    if boundary is None:
        raise bad_request("This endpoint takes multipart/form-data.", None, "invalid_content_type")
    await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
    form = Form()
    stream = FormStream(request.stream(), boundary, max_body_bytes=max_body_bytes, max_parts=max_parts)
    try:
        await _parts(stream, form, scratch, max_file_bytes)
    except MalformedForm as e:
        form.cleanup()
        raise bad_request(str(e), None, "invalid_multipart") from None
    except BodyTooLarge:
        form.cleanup()
        await stream.drain(1024 * 1024)
        raise APIError(413, f"The request body is larger than {max_body_bytes} bytes.",
                       code="payload_too_large") from None
    except APIError:
        form.cleanup()
        await stream.drain(1024 * 1024)
        raise
    except BaseException:
        form.cleanup()
        raise
    return form


async def _parts(stream: FormStream, form: Form, scratch: Path, max_file_bytes: int) -> None:
    current: PartStart | None = None
    buf = bytearray()
    fh: Any = None
    part: FilePart | None = None
    while (ev := await stream.next()) is not None:
        if isinstance(ev, PartStart):
            current, buf = ev, bytearray()
            if ev.filename is not None:
                fd, path = tempfile.mkstemp(prefix="upload-", dir=scratch)
                os.close(fd)
                part = FilePart(_name(ev.name), ev.filename or "upload", ev.content_type or
                                "application/octet-stream", Path(path), 0)
                form.files.append(part)
                fh = await asyncio.to_thread(open, path, "wb")
        elif isinstance(ev, Data) and current is not None:
            if part is not None and fh is not None:
                part.size += len(ev.data)
                if part.size > max_file_bytes:
                    await asyncio.to_thread(fh.close)
                    raise APIError(413, f"The file '{part.name}' is larger than {max_file_bytes // (1024 * 1024)} MB.",
                                   param=part.name, code="file_too_large")
                await asyncio.to_thread(fh.write, ev.data)
            else:
                buf += ev.data
                if len(buf) > MAX_FIELD:
                    raise bad_request(f"The field '{current.name}' is too long.", _name(current.name))
        elif isinstance(ev, PartEnd) and current is not None:
            if part is not None and fh is not None:
                await asyncio.to_thread(fh.close)
            else:
                value = bytes(buf).decode("utf-8", "replace")
                form.fields[_name(current.name)] = value
                form.multi.append((_name(current.name), value))
            current, part, fh = None, None, None
