"""Blob storage: every behavioural test runs on the local store and on S3 (a moto server on 127.0.0.1).

The moto server enforces SigV4 signatures: an IAM user is created first, then
authentication is switched on, so every S3 call below goes through our signer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio

from aistats_gateway.storage import (
    BlobNotFound,
    BlobStore,
    InvalidRange,
    LocalBlobStore,
    S3BlobStore,
    StorageError,
    create_store,
)
from aistats_gateway.storage.s3 import EMPTY_SHA256, sign_v4

MiB = 1024 * 1024


# -- the S3 server -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _iam(endpoint: str, params: dict[str, str]) -> ET.Element:
    """One IAM query-API call, signed with our own signer (moto routes on the signing service)."""
    body = urlencode({**params, "Version": "2010-05-08"}).encode()
    headers = sign_v4(
        method="POST", path="/", query=[],
        headers={"host": endpoint.split("//")[1], "content-type": "application/x-www-form-urlencoded"},
        payload_hash=hashlib.sha256(body).hexdigest(),
        access_key="AKIABOOTSTRAP0000000", secret_key="bootstrap", region="us-east-1", service="iam",
    )  # fmt: skip
    response = httpx.post(endpoint + "/", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return ET.fromstring(response.content)


def _find(root: ET.Element, name: str) -> str:
    return next(el.text or "" for el in root.iter() if el.tag.rsplit("}", 1)[-1] == name)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    import moto.server  # noqa: F401  (dev dependency; a missing install must fail, not skip)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, env=env
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{endpoint}/moto-api/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto server did not start (see {log.name})")
            time.sleep(0.1)
        _iam(endpoint, {"Action": "CreateUser", "UserName": "gateway"})
        created = _iam(endpoint, {"Action": "CreateAccessKey", "UserName": "gateway"})
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        _iam(endpoint, {"Action": "PutUserPolicy", "UserName": "gateway", "PolicyName": "all",
                        "PolicyDocument": json.dumps(policy)})  # fmt: skip
        # From now on moto authenticates every request: a wrong signature fails.
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        config = {
            "endpoint_url": endpoint,
            "bucket": "aistats-test",
            "access_key": _find(created, "AccessKeyId"),
            "secret_key": _find(created, "SecretAccessKey"),
        }

        bucket_path = "/" + config["bucket"]  # create the bucket with a plain signed PUT
        headers = sign_v4(
            method="PUT", path=bucket_path, query=[], headers={"host": f"127.0.0.1:{port}"},
            payload_hash=EMPTY_SHA256, access_key=config["access_key"], secret_key=config["secret_key"],
            region="us-east-1",
        )  # fmt: skip
        httpx.put(endpoint + bucket_path, headers=headers).raise_for_status()
        yield config
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest_asyncio.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        blob_store: BlobStore = LocalBlobStore(tmp_path / "blobs")
    else:
        config = request.getfixturevalue("s3_server")
        blob_store = S3BlobStore(**config, prefix=f"t-{uuid.uuid4().hex[:8]}/")
    yield blob_store
    await blob_store.close()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read(store: BlobStore, key: str, start: int = 0, end: int | None = None,
                chunk_size: int = 64 * 1024) -> bytes:
    return b"".join([c async for c in store.open_range(key, start, end, chunk_size)])


def _big_stream(total: int, chunk: int, digest: Any) -> AsyncIterator[bytes]:
    """Pseudo-random bytes made on the fly (never all in memory), hashed into ``digest``."""
    seed = os.urandom(chunk)

    async def gen() -> AsyncIterator[bytes]:
        sent, i = 0, 0
        while sent < total:
            block = (i.to_bytes(8, "big") + seed[8:])[: min(chunk, total - sent)]
            digest.update(block)
            sent, i = sent + len(block), i + 1
            yield block

    return gen()


# -- round trips -----------------------------------------------------------------

@pytest.mark.asyncio
async def test_put_stream_round_trip(store: BlobStore) -> None:
    parts = [b"hello ", b"", b"blob ", os.urandom(100_000)]
    data = b"".join(parts)
    info = await store.put_stream("videos/job1/0.mp4", _chunks(*parts), content_type="video/mp4")
    sha = hashlib.sha256(data).hexdigest()
    assert (info.key, info.size, info.sha256, info.content_type) == ("videos/job1/0.mp4", len(data), sha, "video/mp4")
    assert info.etag == f'"{sha[:32]}"'
    assert await store.stat("videos/job1/0.mp4") == info
    assert await _read(store, "videos/job1/0.mp4") == data


@pytest.mark.asyncio
async def test_put_file_round_trip(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "thumb.jpg"
    src.write_bytes(data := os.urandom(300_000))
    info = await store.put_file("videos/job1/thumb.jpg", src, content_type="image/jpeg")
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert await store.stat("videos/job1/thumb.jpg") == info
    assert await _read(store, "videos/job1/thumb.jpg") == data


@pytest.mark.asyncio
async def test_empty_blob_and_overwrite(store: BlobStore) -> None:
    info = await store.put_stream("a/empty.bin", _chunks(), content_type="application/octet-stream")
    assert (info.size, info.sha256) == (0, EMPTY_SHA256)
    assert await _read(store, "a/empty.bin") == b""
    await store.put_stream("a/empty.bin", _chunks(b"v2"), content_type="text/plain")
    stat = await store.stat("a/empty.bin")
    assert stat is not None and (stat.size, stat.content_type) == (2, "text/plain")
    assert stat.sha256 == hashlib.sha256(b"v2").hexdigest()
    assert await _read(store, "a/empty.bin") == b"v2"


@pytest.mark.asyncio
async def test_unusual_key_characters(store: BlobStore) -> None:
    key = "videos/j 1/ä+b=c&d(1)~x.mp4"
    await store.put_stream(key, _chunks(b"odd"), content_type="video/mp4")
    assert await _read(store, key) == b"odd"
    assert (await store.delete_prefix("videos/j 1/")) == 1


# -- ranges ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_open_range_slices(store: BlobStore) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    await store.put_stream("r/blob", _chunks(data), content_type="application/octet-stream")
    n = len(data)
    for start, end in [(0, None), (100, None), (100, 199), (n - 1, n - 1), (n - 1, None), (0, n + 5000), (5, 5)]:
        expected = data[start : (n if end is None else end + 1)]
        assert await _read(store, "r/blob", start, end, chunk_size=1000) == expected, (start, end)
    chunks = [c async for c in store.open_range("r/blob", chunk_size=4096)]
    assert all(len(c) <= 4096 for c in chunks) and len(chunks) >= 3


@pytest.mark.asyncio
async def test_open_range_errors(store: BlobStore) -> None:
    await store.put_stream("r/small", _chunks(b"0123456789"), content_type="text/plain")
    with pytest.raises(InvalidRange):
        await _read(store, "r/small", 10)
    with pytest.raises(ValueError):
        store.open_range("r/small", 5, 4)
    with pytest.raises(ValueError):
        store.open_range("r/small", -1)
    with pytest.raises(BlobNotFound):
        await _read(store, "r/missing")


# -- stat / delete -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_stat_missing(store: BlobStore) -> None:
    assert await store.stat("nope/never.mp4") is None


@pytest.mark.asyncio
async def test_delete_is_idempotent(store: BlobStore) -> None:
    await store.put_stream("d/x.bin", _chunks(b"x"), content_type="application/octet-stream")
    await store.delete("d/x.bin")
    assert await store.stat("d/x.bin") is None
    await store.delete("d/x.bin")
    await store.delete("never/existed.bin")


@pytest.mark.asyncio
async def test_delete_prefix(store: BlobStore) -> None:
    for key in ["videos/a/0.mp4", "videos/a/thumb.jpg", "videos/a/sub/1.mp4", "videos/ab/0.mp4", "videos/b/0.mp4"]:
        await store.put_stream(key, _chunks(key.encode()), content_type="application/octet-stream")
    assert await store.delete_prefix("videos/a/") == 3
    assert await store.stat("videos/a/0.mp4") is None and await store.stat("videos/a/sub/1.mp4") is None
    assert await store.stat("videos/ab/0.mp4") is not None
    assert await store.delete_prefix("videos/a") == 1  # a plain string prefix, like S3
    assert await store.stat("videos/b/0.mp4") is not None
    assert await store.delete_prefix("nothing/here/") == 0
    with pytest.raises(ValueError):
        await store.delete_prefix("")


BAD_KEYS = ["", "/abs/key", "a/../b", "..", "a\\b", "a//b", "a/", "./a", ".hidden", "a/.tmp", "x.mp4.meta.json",
            "a\x00b"]


@pytest.mark.asyncio
@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_rejected(store: BlobStore, key: str, tmp_path: Path) -> None:
    (src := tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ValueError):
        await store.put_stream(key, _chunks(b"x"), content_type="text/plain")
    with pytest.raises(ValueError):
        await store.put_file(key, src, content_type="text/plain")
    with pytest.raises(ValueError):
        await store.stat(key)
    with pytest.raises(ValueError):
        store.open_range(key)
    with pytest.raises(ValueError):
        await store.delete(key)
    with pytest.raises(ValueError):
        store.local_path(key)


# -- large blobs -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_large_stream_is_multipart_and_memory_bounded(store: BlobStore) -> None:
    total = 20 * MiB
    sent = hashlib.sha256()
    parts_before = getattr(store, "parts_uploaded", 0)
    tracemalloc.start()  # the bound: one 8 MiB part in flight plus slack, far below the 20 MiB blob
    try:
        info = await store.put_stream("big/video.mp4", _big_stream(total, 700 * 1024, sent), content_type="video/mp4")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 14 * MiB, f"peak {peak / MiB:.1f} MiB for a {total / MiB:.0f} MiB upload"
    assert (info.size, info.sha256) == (total, sent.hexdigest())
    if isinstance(store, S3BlobStore):
        assert store.parts_uploaded - parts_before == 3  # 8 + 8 + 4 MiB
    stat = await store.stat("big/video.mp4")
    assert stat is not None and stat.sha256 == sent.hexdigest() and stat.content_type == "video/mp4"
    got = hashlib.sha256()
    async for chunk in store.open_range("big/video.mp4", chunk_size=MiB):
        got.update(chunk)
    assert got.hexdigest() == sent.hexdigest()
    tail = await _read(store, "big/video.mp4", total - 10)
    assert len(tail) == 10


@pytest.mark.asyncio
async def test_large_file_upload(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "video.mp4"
    digest = hashlib.sha256()
    with open(src, "wb") as f:
        async for block in _big_stream(17 * MiB + 123, MiB, digest):
            f.write(block)
    parts_before = getattr(store, "parts_uploaded", 0)
    info = await store.put_file("big/file.mp4", src, content_type="video/mp4")
    assert (info.size, info.sha256) == (17 * MiB + 123, digest.hexdigest())
    if isinstance(store, S3BlobStore):
        assert store.parts_uploaded - parts_before == 3
    assert await store.stat("big/file.mp4") == info
    assert await _read(store, "big/file.mp4", 8 * MiB - 2, 8 * MiB + 1) == src.read_bytes()[8 * MiB - 2 : 8 * MiB + 2]


# -- failures ------------------------------------------------------------------------


def _failing_stream(total: int) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        async for block in _big_stream(total, MiB, hashlib.sha256()):
            yield block
        raise RuntimeError("upstream died")

    return gen()


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [3 * MiB, 10 * MiB])
async def test_failed_stream_leaves_nothing(store: BlobStore, size: int) -> None:
    await store.put_stream("f/keep.mp4", _chunks(b"old"), content_type="video/mp4")
    for key in ["f/new.mp4", "f/keep.mp4"]:
        with pytest.raises(RuntimeError, match="upstream died"):
            await store.put_stream(key, _failing_stream(size), content_type="video/mp4")
    assert await store.stat("f/new.mp4") is None
    assert await _read(store, "f/keep.mp4") == b"old"  # the previous version is intact
    if isinstance(store, LocalBlobStore):
        files = sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file())
        assert files == ["f/keep.mp4", "f/keep.mp4.meta.json"]  # no temporary file left behind
    else:
        assert isinstance(store, S3BlobStore)
        root = ET.fromstring((await store._call("GET", query=[("uploads", "")])).content)
        pending = [el.text for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Key" and el.text]
        assert not [k for k in pending if k.startswith(store.prefix)]  # multipart uploads were aborted


@pytest.mark.asyncio
async def test_local_cancelled_write_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"partial"
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(store.put_stream("c/x.bin", slow(), content_type="application/octet-stream"))
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.asyncio
async def test_local_stat_recomputes_stale_sidecar(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put_stream("s/a.txt", _chunks(b"one"), content_type="text/plain")
    path = store.local_path("s/a.txt")
    assert path == tmp_path / "s" / "a.txt" and path.read_bytes() == b"one"
    path.write_bytes(b"changed behind our back")
    stat = await store.stat("s/a.txt")
    assert stat is not None and stat.sha256 == hashlib.sha256(b"changed behind our back").hexdigest()
    assert stat.content_type == "text/plain" and stat.size == 23
    (tmp_path / "s" / "b.mp4").write_bytes(b"no sidecar")
    stat = await store.stat("s/b.mp4")
    assert stat is not None and stat.content_type == "video/mp4"
    assert stat.sha256 == hashlib.sha256(b"no sidecar").hexdigest()


@pytest.mark.asyncio
async def test_local_path_only_for_local(store: BlobStore) -> None:
    path = store.local_path("videos/j/0.mp4")
    assert (path is not None) == isinstance(store, LocalBlobStore)


# -- SigV4 ---------------------------------------------------------------------------

AWS_EXAMPLE: dict[str, Any] = {
    "access_key": "AKIAIOSFODNN7EXAMPLE",
    "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "region": "us-east-1",
    "now": datetime(2013, 5, 24, tzinfo=UTC),
}
HOST = {"host": "examplebucket.s3.amazonaws.com"}


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "payload", "signature"),
    [  # the examples of the AWS S3 "Signature Version 4: Authorization header" documentation
        ("GET", "/test.txt", [], {**HOST, "range": "bytes=0-9"}, b"",
         "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
        ("PUT", "/test%24file.text", [],
         {**HOST, "date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY"},
         b"Welcome to Amazon S3.", "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
        ("GET", "/", [("lifecycle", "")], HOST, b"",
         "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        ("GET", "/", [("max-keys", "2"), ("prefix", "J")], HOST, b"",
         "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
    ],
)  # fmt: skip
def test_sigv4_matches_aws_examples(
    method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], payload: bytes, signature: str
) -> None:
    signed = sign_v4(
        method=method, path=path, query=query, headers=headers, payload_hash=hashlib.sha256(payload).hexdigest(),
        **AWS_EXAMPLE,
    )  # fmt: skip
    assert signed["x-amz-date"] == "20130524T000000Z"
    names = ";".join(sorted({*headers, "x-amz-date", "x-amz-content-sha256"}))
    assert signed["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders={names}, Signature={signature}"
    )


@pytest.mark.asyncio
async def test_s3_rejects_a_wrong_secret(s3_server: dict[str, str]) -> None:
    store = S3BlobStore(**{**s3_server, "secret_key": "not-the-secret"})
    try:
        with pytest.raises(StorageError) as caught:
            await _read(store, "any/key")  # a GET: its error body names the code (HEAD has none)
        assert caught.value.status_code == 403 and caught.value.code == "SignatureDoesNotMatch"
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_s3_error_carries_code(s3_server: dict[str, str]) -> None:
    store = S3BlobStore(**{**s3_server, "bucket": "no-such-bucket"})
    try:
        with pytest.raises(StorageError) as caught:
            await store.put_stream("k", _chunks(b"x"), content_type="text/plain")
        assert caught.value.code == "NoSuchBucket" and "NoSuchBucket" in str(caught.value)
    finally:
        await store.close()


# -- factory ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_create_store(tmp_path: Path) -> None:
    local = create_store("local", tmp_path, None)
    assert isinstance(local, LocalBlobStore) and local.root == (tmp_path / "blobs").absolute()
    s3 = create_store(
        "S3", tmp_path,
        {"endpoint_url": "http://127.0.0.1:9", "bucket": "b", "access_key_id": "k", "secret_access_key": "s",
         "region": None, "prefix": "gw/"},
    )  # fmt: skip
    assert isinstance(s3, S3BlobStore) and s3.prefix == "gw/" and s3.region == "us-east-1"
    assert s3.local_path("a/b") is None
    await s3.close()
    with pytest.raises(ValueError, match="AISTATS_S3_BUCKET"):
        create_store("s3", tmp_path, {"endpoint_url": "http://x", "access_key": "k", "secret_key": "s"})
    with pytest.raises(ValueError, match="AISTATS_STORAGE"):
        create_store("gcs", tmp_path, None)
