"""Blob storage for large outputs (videos, thumbnails, later batch files).

Configuration (environment, read by the settings module):

=============================== ===========================================================
``AISTATS_STORAGE``             ``local`` (default) or ``s3``
``AISTATS_S3_ENDPOINT_URL``     e.g. ``https://s3.eu-west-1.amazonaws.com`` or ``http://minio:9000``
``AISTATS_S3_BUCKET``           bucket name (path-style URLs: ``<endpoint>/<bucket>/<key>``)
``AISTATS_S3_ACCESS_KEY_ID``    access key
``AISTATS_S3_SECRET_ACCESS_KEY`` secret key
``AISTATS_S3_REGION``           signing region, default ``us-east-1``
``AISTATS_S3_PREFIX``           optional key prefix inside the bucket, e.g. ``gateway/``
=============================== ===========================================================

Local storage keeps blobs under ``<AISTATS_DATA_DIR>/blobs``.

    store = create_store("s3", data_dir, {"endpoint_url": ..., "bucket": ..., "access_key": ...,
                                          "secret_key": ..., "region": ..., "prefix": ...})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import BlobInfo, BlobNotFound, BlobStore, InvalidRange, StorageError, validate_key
from .local import LocalBlobStore
from .s3 import S3BlobStore

__all__ = [
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "InvalidRange",
    "LocalBlobStore",
    "S3BlobStore",
    "StorageError",
    "create_store",
    "validate_key",
]

_S3_REQUIRED = ("endpoint_url", "bucket", "access_key", "secret_key")
_S3_ALIASES = {"access_key_id": "access_key", "secret_access_key": "secret_key"}


def create_store(storage: str, data_dir: Path, s3: dict[str, Any] | None = None) -> BlobStore:
    """Build the configured blob store.

    ``storage`` is ``"local"`` (blobs under ``data_dir / "blobs"``) or ``"s3"``, in which
    case ``s3`` holds ``endpoint_url``, ``bucket``, ``access_key`` (or ``access_key_id``),
    ``secret_key`` (or ``secret_access_key``) and optionally ``region`` and ``prefix``;
    ``None`` and empty values count as unset.
    """
    kind = (storage or "local").strip().lower()
    if kind == "local":
        return LocalBlobStore(Path(data_dir) / "blobs")
    if kind != "s3":
        raise ValueError(f"AISTATS_STORAGE must be 'local' or 's3', not {storage!r}")
    options = {_S3_ALIASES.get(k, k): v for k, v in (s3 or {}).items() if v not in (None, "")}
    missing = [k for k in _S3_REQUIRED if k not in options]
    if missing:
        names = ", ".join(f"AISTATS_S3_{_env_name(k)}" for k in missing)
        raise ValueError(f"AISTATS_STORAGE=s3 needs {names}")
    unknown = set(options) - {*_S3_REQUIRED, "region", "prefix", "part_size", "timeout"}
    if unknown:
        raise ValueError(f"unknown S3 storage options: {', '.join(sorted(unknown))}")
    return S3BlobStore(**options)


def _env_name(option: str) -> str:
    return {"access_key": "ACCESS_KEY_ID", "secret_key": "SECRET_ACCESS_KEY"}.get(option, option.upper())
