"""A blob store on the local filesystem.

Blob ``videos/j1/0.mp4`` lives at ``<root>/videos/j1/0.mp4``; next to it a small
sidecar ``0.mp4.meta.json`` records size, mtime, sha256 and content type.

Writes are atomic: bytes go to a hidden temporary file in the same directory,
which is fsynced and then renamed over the final name, so a crash or a failing
stream never leaves a partial file under the key. The sidecar is written after
the rename and is trusted only while its size and mtime match the file; when it
is missing or stale, ``stat`` recomputes the sha256 and rewrites it.

Blocking file I/O runs in worker threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from .base import (
    DEFAULT_CHUNK_SIZE,
    SIDECAR_SUFFIX,
    BlobInfo,
    BlobNotFound,
    InvalidRange,
    check_range,
    make_etag,
    validate_key,
    validate_prefix,
)

__all__ = ["LocalBlobStore"]

_COPY_CHUNK = 1024 * 1024


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalBlobStore(root={str(self.root)!r})"

    # -- paths -------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(path.name + SIDECAR_SUFFIX)

    def local_path(self, key: str) -> Path | None:
        """Where ``key`` is (or would be) stored; it may not exist, use ``stat`` to check."""
        return self._path(key)

    # -- writing -----------------------------------------------------------

    def _open_temp(self, path: Path) -> tuple[IO[bytes], str]:
        for attempt in range(3):  # a concurrent delete may prune the directory in between
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            if hasattr(os, "fchmod"):  # mkstemp makes 0600; blobs are ordinary files
                os.fchmod(fd, 0o644)
            return os.fdopen(fd, "wb"), tmp
        raise AssertionError("unreachable")

    def _commit(self, f: IO[bytes], tmp: str, path: Path, sha256: str, content_type: str) -> BlobInfo:
        """fsync and close the temp file, rename it into place, then write the sidecar."""
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
        st = path.stat()
        self._write_sidecar(path, st, sha256, content_type)
        _fsync_dir(path.parent)
        return BlobInfo(self._key_of(path), st.st_size, sha256, content_type, make_etag(sha256, st.st_size))

    @staticmethod
    def _abort(f: IO[bytes], tmp: str) -> None:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)

    def _write_sidecar(self, path: Path, st: os.stat_result, sha256: str, content_type: str) -> None:
        meta = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256, "content_type": content_type}
        sidecar = self._sidecar(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{sidecar.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(meta, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, sidecar)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _key_of(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _copy_file(self, src: Path, path: Path, content_type: str) -> BlobInfo:
        f, tmp = self._open_temp(path)
        try:
            digest = hashlib.sha256()
            with open(src, "rb") as source:
                while block := source.read(_COPY_CHUNK):
                    digest.update(block)
                    f.write(block)
            return self._commit(f, tmp, path, digest.hexdigest(), content_type)
        except BaseException:
            self._abort(f, tmp)
            raise

    async def put_file(self, key: str, path: Path, *, content_type: str) -> BlobInfo:
        dest = self._path(key)
        return await asyncio.to_thread(self._copy_file, Path(path), dest, content_type)

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str) -> BlobInfo:
        dest = self._path(key)
        f, tmp = await asyncio.to_thread(self._open_temp, dest)
        digest = hashlib.sha256()
        try:
            async for chunk in chunks:
                if chunk:
                    await asyncio.to_thread(_hash_and_write, digest, f, chunk)
            return await asyncio.to_thread(self._commit, f, tmp, dest, digest.hexdigest(), content_type)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self._abort, f, tmp))
            raise

    # -- reading -----------------------------------------------------------

    def _stat(self, path: Path) -> BlobInfo | None:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        meta = _read_json(self._sidecar(path))
        if meta and meta.get("size") == st.st_size and meta.get("mtime_ns") == st.st_mtime_ns and meta.get("sha256"):
            sha256, content_type = str(meta["sha256"]), str(meta.get("content_type") or _guess_type(path))
        else:  # missing or stale sidecar: recompute and remember
            sha256 = _sha256_file(path)
            content_type = str((meta or {}).get("content_type") or _guess_type(path))
            with contextlib.suppress(OSError):
                self._write_sidecar(path, st, sha256, content_type)
        return BlobInfo(self._key_of(path), st.st_size, sha256, content_type, make_etag(sha256, st.st_size))

    async def stat(self, key: str) -> BlobInfo | None:
        return await asyncio.to_thread(self._stat, self._path(key))

    def open_range(
        self, key: str, start: int = 0, end: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        check_range(start, end, chunk_size)
        return self._iter_range(key, path, start, end, chunk_size)

    async def _iter_range(
        self, key: str, path: Path, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None
        try:
            size = os.fstat(f.fileno()).st_size
            if start >= size and not (start == 0 and end is None):
                raise InvalidRange(key, start, size)
            last = size - 1 if end is None else min(end, size - 1)
            remaining = last - start + 1
            if start:
                f.seek(start)
            while remaining > 0:
                block = await asyncio.to_thread(f.read, min(chunk_size, remaining))
                if not block:
                    break
                remaining -= len(block)
                yield block
        finally:
            f.close()

    # -- deleting ----------------------------------------------------------

    def _delete(self, path: Path) -> bool:
        removed = False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed = True
        with contextlib.suppress(FileNotFoundError):
            self._sidecar(path).unlink()
        self._prune(path.parent)
        return removed

    def _prune(self, directory: Path) -> None:
        """Remove now-empty directories between ``directory`` and the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, self._path(key))

    def _delete_prefix(self, prefix: str) -> int:
        parts = prefix.rstrip("/").split("/")
        # "a/b/" is exactly a directory; "a/b" may match "a/b", "a/b/..." and "a/bc": walk "a"
        base = self.root.joinpath(*(parts if prefix.endswith("/") else parts[:-1]))
        count = 0
        for dirpath, _dirs, files in os.walk(base, topdown=False):
            for name in files:
                if name.startswith(".") or name.endswith(SIDECAR_SUFFIX):
                    continue
                path = Path(dirpath, name)
                if self._key_of(path).startswith(prefix) and self._delete(path):
                    count += 1
        return count

    async def delete_prefix(self, prefix: str) -> int:
        return await asyncio.to_thread(self._delete_prefix, validate_prefix(prefix))

    async def close(self) -> None:
        return None


def _hash_and_write(digest: Any, f: IO[bytes], chunk: bytes) -> None:
    digest.update(chunk)
    f.write(chunk)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_COPY_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _guess_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
