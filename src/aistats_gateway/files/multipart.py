"""A multipart/form-data body as a stream of events, parsed as the bytes arrive.

Invariants: the body is never held whole. :class:`FormStream` feeds each received chunk to
python-multipart's streaming parser and hands out :class:`PartStart`, :class:`Data` and
:class:`PartEnd` events, then ``None`` at the end; only the events of one received chunk are
buffered. A body that ends before the closing boundary, a malformed part or too many parts raise
:class:`MalformedForm` (the caller answers 400); more than ``max_body_bytes`` in all (a huge
preamble, say) raises :class:`BodyTooLarge`. :meth:`FormStream.drain` reads and discards what
the client is still sending (bounded), so an early error reaches a client that writes its whole
body before it reads the answer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["BodyTooLarge", "Data", "FormStream", "MalformedForm", "PartEnd", "PartStart", "boundary_of"]


class MalformedForm(ValueError):
    """The body is not well-formed multipart/form-data."""


class BodyTooLarge(ValueError):
    """The body went past ``max_body_bytes`` (whatever its parts hold)."""


@dataclass(frozen=True)
class PartStart:
    name: str
    filename: str | None  # None for an ordinary field
    content_type: str | None


@dataclass(frozen=True)
class Data:
    data: bytes


@dataclass(frozen=True)
class PartEnd:
    pass


Event = PartStart | Data | PartEnd


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type, or None when it is another type."""
    kind, params = parse_options_header(content_type)
    if kind.lower() != b"multipart/form-data":
        return None
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedForm("The multipart/form-data Content-Type has no boundary.")
    return boundary


class FormStream:
    def __init__(self, stream: AsyncIterator[bytes], boundary: bytes, *, max_body_bytes: float = float("inf"),
                 max_parts: int = 16, max_header_bytes: int = 8192) -> None:
        self._stream = stream
        self._max_body = max_body_bytes
        self._events: deque[Event] = deque()
        self._parts = 0
        self._max_parts = max_parts
        self._max_header_bytes = max_header_bytes
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._ended = False
        self._exhausted = False
        self.received = 0  # body bytes read so far
        try:
            self._parser = MultipartParser(boundary, {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_end": self._on_end,
            })
        except FormParserError as e:
            raise MalformedForm(f"Malformed multipart body: {e}.") from None

    # -- parser callbacks (synchronous, within parser.write) ---------------------------------

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise MalformedForm(f"The form has more than {self._max_parts} parts.")
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._check_header()

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header()

    def _check_header(self) -> None:
        if len(self._header_name) + len(self._header_value) > self._max_header_bytes:
            raise MalformedForm("A multipart part header is too long.")

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower().strip()] = bytes(self._header_value).strip()
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise MalformedForm("A multipart part has no Content-Disposition header.")
        kind, options = parse_options_header(disposition)
        name = options.get(b"name")
        if kind.lower() != b"form-data" or name is None:
            raise MalformedForm('Every multipart part needs Content-Disposition: form-data; name="…".')
        filename = options.get(b"filename")
        ctype = self._headers.get(b"content-type")
        self._events.append(PartStart(_decode(name), _decode(filename) if filename is not None else None,
                                      _decode(ctype) if ctype else None))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(Data(data[start:end]))

    def _on_part_end(self) -> None:
        self._events.append(PartEnd())

    def _on_end(self) -> None:
        self._ended = True

    # -- reading --------------------------------------------------------------------------------

    async def next(self) -> Event | None:
        """The next event; None once the closing boundary has been read."""
        while not self._events:
            if self._ended:
                return None
            chunk = await self._read()
            if chunk is None:
                raise MalformedForm("The multipart body ended before its closing boundary.")
            try:
                self._parser.write(chunk)
            except FormParserError as e:
                raise MalformedForm(f"Malformed multipart body: {e}.") from None
        return self._events.popleft()

    async def _read(self) -> bytes | None:
        while not self._exhausted:
            try:
                chunk = await self._stream.__anext__()
            except StopAsyncIteration:
                self._exhausted = True
                return None
            if chunk:
                self.received += len(chunk)
                if self.received > self._max_body:
                    raise BodyTooLarge(f"The request body is larger than {self._max_body} bytes.")
                return chunk
        return None

    async def drain(self, budget: int) -> bool:
        """Discard the rest of the body, reading at most ``budget`` more bytes; True if it ended."""
        self._events.clear()
        self._max_body = float("inf")
        limit = self.received + budget
        while self.received <= limit:
            try:
                if await self._read() is None:
                    return True
            except Exception:
                return False
        return False


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")
