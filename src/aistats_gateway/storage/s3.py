"""A blob store on any S3-compatible service (AWS S3, MinIO, Ceph, R2, moto...).

Talks plain HTTP through httpx with its own AWS Signature V4 signer
(:func:`sign_v4`) and path-style URLs (``<endpoint>/<bucket>/<prefix><key>``).
Payloads are always hashed (never ``UNSIGNED-PAYLOAD``), so plain-HTTP endpoints
are protected too.

* Uploads up to ``part_size`` (8 MiB) are one PUT; larger ones use multipart
  upload (8 MiB parts), aborted if anything fails. At most one part is in memory.
* The sha256 and content type are stored as ``x-amz-meta-sha256`` and
  ``Content-Type``. ``put_file`` hashes the file before uploading; a multipart
  ``put_stream`` only knows the hash at the end, so it then copies the object onto
  itself with the new metadata (objects over 5 GiB skip this; their sha256 is None).
* ``open_range`` is a ranged GET, ``stat`` a HEAD, ``delete_prefix`` is
  ListObjectsV2 + DeleteObjects. Failures raise :class:`StorageError` with the S3
  error code and message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import httpx

from .base import (
    DEFAULT_CHUNK_SIZE,
    BlobInfo,
    BlobNotFound,
    InvalidRange,
    StorageError,
    check_range,
    make_etag,
    validate_key,
    validate_prefix,
)

__all__ = ["S3BlobStore", "sign_v4"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
MAX_COPY_SIZE = 5 * 1024**3  # S3's limit for a single CopyObject
_RETRY_STATUS = {500, 502, 503, 504}


def _enc(value: str, safe: str = "") -> str:
    """RFC 3986 encoding as SigV4 wants it: only A-Z a-z 0-9 - _ . ~ stay as they are."""
    return quote(value, safe=safe)


def sign_v4(
    *,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: dict[str, str],
    payload_hash: str,
    access_key: str,
    secret_key: str,
    region: str,
    service: str = "s3",
    now: datetime | None = None,
) -> dict[str, str]:
    """Sign a request with AWS Signature Version 4; return its headers, Authorization included.

    ``path`` is the already URI-encoded path; ``headers`` must include ``host``
    and are all signed. ``x-amz-date`` and ``x-amz-content-sha256`` are added.
    """
    amz_date = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = {k.lower(): str(v) for k, v in headers.items()}
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_hash
    names = sorted(out)
    canonical = "\n".join(
        [
            method.upper(),
            path or "/",
            "&".join(f"{k}={v}" for k, v in sorted((_enc(k), _enc(v)) for k, v in query)),
            "".join(f"{n}:{' '.join(out[n].split())}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


class S3BlobStore:
    def __init__(
        self,
        endpoint_url: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        prefix: str = "",
        *,
        part_size: int = PART_SIZE,
        timeout: float = 60.0,
        retries: int = 2,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        url = httpx.URL(endpoint_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"invalid S3 endpoint URL: {endpoint_url!r}")
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        self.bucket = bucket
        self.region = region
        self.prefix = validate_key(prefix.strip("/")) + "/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.retries = retries
        self.parts_uploaded = 0  # UploadPart calls that succeeded (observability and tests)
        self._access_key = access_key
        self._secret_key = secret_key
        self._host = url.netloc.decode("ascii")
        self._origin = f"{url.scheme}://{self._host}"
        self._base_path = f"{url.path.rstrip('/')}/{_enc(bucket)}"
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    def __repr__(self) -> str:
        return f"S3BlobStore(endpoint={self._origin!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    # -- HTTP plumbing -----------------------------------------------------

    def _object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    async def _call(
        self,
        method: str,
        object_key: str | None = None,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
        body: bytes | list[bytes] = b"",
        payload_hash: str | None = None,
        ok: Sequence[int] = (200,),
        stream: bool = False,
    ) -> httpx.Response:
        """Sign and send one request (retrying transport errors and 5xx); raise StorageError unless ``ok``."""
        path = self._base_path + ("" if object_key is None else "/" + _enc(object_key, safe="/"))
        qs = "&".join(_enc(k) + (f"={_enc(v)}" if v else "") for k, v in query)
        url = f"{self._origin}{path}{'?' + qs if qs else ''}"
        chunks = [body] if isinstance(body, bytes) else body
        if payload_hash is None:
            payload_hash = await _sha256_hex(chunks)
        extra = {"host": self._host, **(headers or {})}
        if method in ("PUT", "POST"):
            extra["content-length"] = str(sum(map(len, chunks)))
        for attempt in range(self.retries + 1):
            signed = sign_v4(
                method=method, path=path, query=query, headers=extra, payload_hash=payload_hash,
                access_key=self._access_key, secret_key=self._secret_key, region=self.region,
            )  # fmt: skip
            content = _aiter(chunks) if len(chunks) > 1 else chunks[0] if chunks else b""
            request = self._client.build_request(method, url, headers=signed, content=content)
            try:
                response = await self._client.send(request, stream=stream)
            except httpx.TransportError as e:
                if attempt < self.retries:
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                raise StorageError(f"S3 {method} {path}: {e!r}", code=type(e).__name__) from e
            if response.status_code in ok:
                return response
            data = await response.aread()
            await response.aclose()
            if response.status_code in _RETRY_STATUS and attempt < self.retries:
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            raise _error(method, path, response.status_code, data)
        raise AssertionError("unreachable")

    # -- writing -----------------------------------------------------------

    async def put_file(self, key: str, path: Path, *, content_type: str) -> BlobInfo:
        object_key = self._object_key(key)
        size, sha256 = await asyncio.to_thread(_hash_file, Path(path))
        headers = {"content-type": content_type, "x-amz-meta-sha256": sha256}
        if size <= self.part_size:
            data = await asyncio.to_thread(_read_at, Path(path), 0, size)
            await self._call("PUT", object_key, headers=headers, body=data, payload_hash=sha256)
        else:
            await self._multipart(object_key, headers, _file_parts(Path(path), size, self.part_size))
        return BlobInfo(key, size, sha256, content_type, make_etag(sha256, size))

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str) -> BlobInfo:
        object_key = self._object_key(key)
        reader = _PartReader(chunks, self.part_size)
        first = await reader.next_part()
        if reader.exhausted:
            sha256 = reader.digest.hexdigest()
            headers = {"content-type": content_type, "x-amz-meta-sha256": sha256}
            await self._call("PUT", object_key, headers=headers, body=first, payload_hash=sha256)
            return BlobInfo(key, reader.size, sha256, content_type, make_etag(sha256, reader.size))

        pending = [first]
        del first  # hold at most one part in memory: nothing may keep a reference to a sent part

        async def parts() -> AsyncIterator[list[bytes]]:
            part = pending.pop()
            while part:
                yield part
                part = []  # drop it before reading the next one
                part = await reader.next_part()

        await self._multipart(object_key, {"content-type": content_type}, parts())
        sha256 = reader.digest.hexdigest()
        if reader.size > MAX_COPY_SIZE:  # too big to copy onto itself: the hash stays unrecorded
            info = await self.stat(key)
            return BlobInfo(key, reader.size, sha256, content_type, info.etag if info else make_etag(None, 0))
        copy_headers = {  # now that the hash is known, record it as metadata
            "content-type": content_type,
            "x-amz-meta-sha256": sha256,
            "x-amz-copy-source": f"/{_enc(self.bucket)}/{_enc(object_key, safe='/')}",
            "x-amz-metadata-directive": "REPLACE",
        }
        response = await self._call("PUT", object_key, headers=copy_headers)
        _raise_embedded_error("PUT", object_key, response.content)
        return BlobInfo(key, reader.size, sha256, content_type, make_etag(sha256, reader.size))

    async def _multipart(self, object_key: str, headers: dict[str, str], parts: AsyncIterator[list[bytes]]) -> None:
        response = await self._call("POST", object_key, query=[("uploads", "")], headers=headers)
        upload_id = _text(ET.fromstring(response.content), "UploadId")
        if not upload_id:
            raise StorageError(f"S3 CreateMultipartUpload for {object_key} returned no UploadId")
        etags: list[str] = []
        try:
            async for part in parts:
                number = len(etags) + 1
                query = [("partNumber", str(number)), ("uploadId", upload_id)]
                response = await self._call("PUT", object_key, query=query, body=part)
                del part  # free it before the next one is read
                etags.append(response.headers.get("etag", ""))
                self.parts_uploaded += 1
            xml = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(tag)}</ETag></Part>" for n, tag in enumerate(etags, 1)
            )
            body = f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode()
            response = await self._call("POST", object_key, query=[("uploadId", upload_id)], body=body)
            _raise_embedded_error("POST", object_key, response.content)
        except BaseException:
            with contextlib.suppress(Exception):
                abort = self._call("DELETE", object_key, query=[("uploadId", upload_id)], ok=(200, 204, 404))
                await asyncio.shield(abort)
            raise

    async def create_bucket(self) -> None:
        """Create the bucket (a convenience for development and tests); an existing one of ours is fine."""
        body = b""
        if self.region != "us-east-1":
            body = (
                '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{escape(self.region)}</LocationConstraint></CreateBucketConfiguration>"
            ).encode()
        try:
            await self._call("PUT", body=body)
        except StorageError as e:
            if e.code != "BucketAlreadyOwnedByYou":
                raise

    # -- reading -----------------------------------------------------------

    async def stat(self, key: str) -> BlobInfo | None:
        response = await self._call("HEAD", self._object_key(key), ok=(200, 404))
        if response.status_code == 404:
            return None
        h = response.headers
        size = int(h.get("content-length", "0"))
        sha256 = h.get("x-amz-meta-sha256") or None
        etag = h.get("etag", "")
        if sha256 or not etag.startswith('"'):  # prefer our own, backend-independent ETag
            etag = make_etag(sha256, size, _mtime_ns(h.get("last-modified", "")))
        return BlobInfo(key, size, sha256, h.get("content-type", "application/octet-stream"), etag)

    def open_range(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        object_key = self._object_key(key)
        check_range(start, end, chunk_size)
        return self._iter_range(key, object_key, start, end, chunk_size)

    async def _iter_range(
        self, key: str, object_key: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        ranged = start > 0 or end is not None
        headers = {"range": f"bytes={start}-{'' if end is None else end}"} if ranged else {}
        try:
            response = await self._call("GET", object_key, headers=headers, ok=(200, 206), stream=True)
        except StorageError as e:
            if e.status_code == 404 and e.code in ("NoSuchKey", None, "NotFound"):
                raise BlobNotFound(key) from None
            if e.status_code == 416:
                raise InvalidRange(key, start, None) from None
            raise
        # A server that ignores Range answers 200 with everything: cut the slice out ourselves.
        skip = start if ranged and response.status_code == 200 else 0
        left = (end - start + 1) if ranged and response.status_code == 200 and end is not None else None
        try:
            async for block in response.aiter_bytes(chunk_size):
                if skip:
                    cut = min(skip, len(block))
                    block, skip = block[cut:], skip - cut
                if left is not None:
                    block, left = block[:left], left - min(left, len(block))
                if block:
                    yield block
                if left == 0:
                    break
        except httpx.HTTPError as e:
            raise StorageError(f"S3 GET {object_key}: {e!r}", code=type(e).__name__) from e
        finally:
            await response.aclose()

    # -- deleting ----------------------------------------------------------

    async def delete(self, key: str) -> None:
        await self._call("DELETE", self._object_key(key), ok=(200, 204, 404))

    async def delete_prefix(self, prefix: str) -> int:
        full = self.prefix + validate_prefix(prefix)
        count, token = 0, ""
        while True:
            query = [("list-type", "2"), ("max-keys", "1000"), ("prefix", full)]
            if token:
                query.append(("continuation-token", token))
            root = ET.fromstring((await self._call("GET", query=query)).content)
            keys = [_text(c, "Key") for c in _children(root, "Contents")]
            if keys:
                count += await self._delete_objects([k for k in keys if k])
            token = _text(root, "NextContinuationToken")
            if _text(root, "IsTruncated") != "true" or not token:
                return count

    async def _delete_objects(self, object_keys: list[str]) -> int:
        objects = "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in object_keys)
        body = f"<Delete><Quiet>true</Quiet>{objects}</Delete>".encode()
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()  # required by DeleteObjects
        response = await self._call("POST", query=[("delete", "")], headers={"content-md5": md5}, body=body)
        errors = _children(ET.fromstring(response.content), "Error")
        if errors:
            code, message = _text(errors[0], "Code"), _text(errors[0], "Message")
            raise StorageError(f"S3 DeleteObjects failed for {len(errors)} key(s): {message}", code=code)
        return len(object_keys)

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    async def close(self) -> None:
        await self._client.aclose()


class _PartReader:
    """Regroups a stream of chunks into parts of ``part_size`` bytes, hashing everything in order."""

    def __init__(self, chunks: AsyncIterator[bytes], part_size: int) -> None:
        self._chunks = chunks.__aiter__()
        self._part_size = part_size
        self._pending = b""
        self.exhausted = False
        self.digest = hashlib.sha256()
        self.size = 0

    async def _pull(self) -> bytes:
        try:
            return bytes(await self._chunks.__anext__())
        except StopAsyncIteration:
            self.exhausted = True
            return b""

    async def next_part(self) -> list[bytes]:
        part: list[bytes] = []
        filled = 0
        while filled < self._part_size:
            chunk = self._pending or (b"" if self.exhausted else await self._pull())
            self._pending = b""
            if not chunk:
                if self.exhausted:
                    break
                continue
            room = self._part_size - filled
            if len(chunk) > room:
                chunk, self._pending = chunk[:room], chunk[room:]
            part.append(chunk)
            filled += len(chunk)
            self.digest.update(chunk)
        while not self._pending and not self.exhausted:  # peek, to know whether this was the last part
            self._pending = await self._pull()
        self.size += filled
        return part


async def _aiter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _sha256_hex(chunks: list[bytes]) -> str:
    if sum(map(len, chunks)) < 64 * 1024:
        return _sha256_of(chunks)
    return await asyncio.to_thread(_sha256_of, chunks)


def _sha256_of(chunks: list[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _hash_file(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


async def _file_parts(path: Path, size: int, part_size: int) -> AsyncIterator[list[bytes]]:
    for offset in range(0, size, part_size):
        data = await asyncio.to_thread(_read_at, path, offset, min(part_size, size - offset))
        yield [data]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _text(el: ET.Element, name: str) -> str:
    found = _children(el, name)
    return (found[0].text or "") if found else ""


def _mtime_ns(last_modified: str) -> int:
    with contextlib.suppress(TypeError, ValueError):
        return int(parsedate_to_datetime(last_modified).timestamp() * 1e9)
    return 0


def _error(method: str, path: str, status: int, data: bytes) -> StorageError:
    code: str | None = None
    message = ""
    with contextlib.suppress(ET.ParseError):
        root = ET.fromstring(data) if data else None
        if root is not None:
            code, message = _text(root, "Code") or None, _text(root, "Message")
    if code is None and status == 404:
        code = "NotFound"
    detail = message or (data[:200].decode(errors="replace") if data else httpx.codes.get_reason_phrase(status))
    return StorageError(f"S3 {method} {path}: {detail}", code=code, status_code=status)


def _raise_embedded_error(method: str, object_key: str, data: bytes) -> None:
    """CompleteMultipartUpload and CopyObject may answer 200 with an <Error> body."""
    root: Any = None
    with contextlib.suppress(ET.ParseError):
        root = ET.fromstring(data) if data.strip() else None
    if root is not None and _local(root.tag) == "Error":
        raise _error(method, object_key, 200, data)
