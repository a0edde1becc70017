"""The Files API over real HTTP on both backends: the openai SDK flow, listing, Range, expiry and
the sweep, the size limit, tenant isolation, batch JSONL validation, aborted uploads and bounded
memory for a large streamed upload."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select, update

from aistats_gateway.files.tables import StoredFile
from tests.support.gateway import Gateway, run_async, running_gateway
from tests.test_storage import s3_server  # noqa: F401  (the moto server fixture)

SMALL_LIMIT = 64 * 1024


BODIES: dict[str, dict[str, Any]] = {
    "chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "messages": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10},
    "responses": {"input": "hi"}, "embeddings": {"input": ["a", "b"]}, "moderations": {"input": "hi"},
    "images/generations": {"prompt": "a cat"}, "images/edits": {"prompt": "a hat", "images": ["file-x"]},
    "audio/speech": {"input": "hi", "voice": "alloy"}, "audio/transcriptions": {"file_id": "file-x"},
    "audio/translations": {"file": "data:audio/wav;base64,AAAA"},
}


def row(cid: str, url: str = "/v1/chat/completions", **extra: Any) -> dict[str, Any]:
    default = {"model": "openai/gpt-4o-mini", **BODIES.get(url.removeprefix("/v1/").removeprefix("/"), {})}
    return {"custom_id": cid, "method": "POST", "url": url, "body": extra.pop("body", default), **extra}


def jsonl(*rows: Any) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


@pytest.fixture(scope="module")
def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url + "/v1", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def small(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway on the same backend with a 64 KiB file limit and 3-line batch files."""
    with running_gateway(gateway.backend, tmp_path_factory.mktemp("small"), files_max_bytes=SMALL_LIMIT,
                         files_batch_max_lines=3) as gw:
        yield gw


def fresh(gw: Gateway) -> tuple[str, httpx.Client, openai.OpenAI]:
    """A new key in its own workspace: nothing uploaded yet."""
    k = gw.create_key("files test")
    return k, gw.client(k), openai.OpenAI(api_key=k, base_url=gw.base_url + "/v1", max_retries=0, timeout=60)


def rows_of(gw: Gateway) -> list[StoredFile]:
    async def work(sessions: Any) -> list[StoredFile]:
        async with sessions() as s:
            return list((await s.execute(select(StoredFile))).scalars())

    return run_async(work, gw.settings)  # type: ignore[no-any-return]


def blobs(gw: Gateway) -> list[Path]:
    root = gw.data_dir / "blobs" / "files"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def blob_of(gw: Gateway, file_id: str) -> Path:
    return gw.data_dir / "blobs" / "files" / file_id


def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# -- the openai SDK flow ------------------------------------------------------------------------

def test_sdk_create_retrieve_list_content_delete(gateway: Gateway, client: openai.OpenAI) -> None:
    data = jsonl(row("a"), row("b"), row("c"))
    before = int(time.time())
    f = client.files.create(file=("input.jsonl", data), purpose="batch")
    assert f.id.startswith("file-") and f.object == "file" and f.purpose == "batch"
    assert (f.bytes, f.filename, f.status) == (len(data), "input.jsonl", "processed")
    assert before - 1 <= f.created_at <= time.time() + 1
    assert f.expires_at == f.created_at + 30 * 24 * 3600  # batch files expire after 30 days by default
    assert client.files.retrieve(f.id) == f
    assert f.id in [x.id for x in client.files.list()]
    assert client.files.content(f.id).read() == data
    assert blob_of(gateway, f.id).read_bytes() == data
    stored = next(r for r in rows_of(gateway) if r.id == f.id)
    assert (stored.batch_lines, stored.batch_endpoint) == (3, "/v1/chat/completions")
    assert stored.batch_models == ["openai/gpt-4o-mini"] and stored.sha256 == hashlib.sha256(data).hexdigest()

    deleted = client.files.delete(f.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (f.id, "file", True)
    assert not blob_of(gateway, f.id).exists()
    assert f.id not in [r.id for r in rows_of(gateway)]
    for call in (lambda: client.files.retrieve(f.id), lambda: client.files.content(f.id),
                 lambda: client.files.delete(f.id)):
        with pytest.raises(openai.NotFoundError):
            call()


@pytest.mark.parametrize("purpose", ["user_data", "assistants", "vision", "fine-tune", "evals"])
def test_other_purposes_are_kept_as_is(client: openai.OpenAI, purpose: str) -> None:
    data = b"\x89PNG not really\x00\xff" * 100
    f = client.files.create(file=("thing.bin", data), purpose=purpose)  # type: ignore[arg-type]
    assert (f.purpose, f.bytes, f.expires_at) == (purpose, len(data), None)
    assert client.files.content(f.id).read() == data


def test_aliases_under_batches(api: httpx.Client) -> None:
    for prefix in ("/v1/batches/files", "/v1/batch/files"):
        r = api.post(prefix, files={"file": ("a.jsonl", jsonl(row("a")))}, data={"purpose": "batch"})
        assert r.status_code == 200, r.text
        fid = r.json()["id"]
        assert api.get(f"/v1/files/{fid}").json()["id"] == fid
        assert api.get(f"{prefix}/{fid}/content").content == jsonl(row("a"))
        assert fid in [x["id"] for x in api.get(prefix).json()["data"]]
        assert api.delete(f"{prefix}/{fid}").json() == {"id": fid, "object": "file", "deleted": True}


def test_filename_is_the_base_name(api: httpx.Client) -> None:
    r = api.post("/v1/files", files={"file": ("../../etc/passwd", b"x")}, data={"purpose": "user_data"})
    assert r.status_code == 200 and r.json()["filename"] == "passwd"
    cd = api.get(f"/v1/files/{r.json()['id']}/content").headers["content-disposition"]
    assert cd.startswith('attachment; filename="passwd"')


# -- listing ------------------------------------------------------------------------------------

def test_list_cursor_order_and_purpose(gateway: Gateway) -> None:
    _, api, sdk = fresh(gateway)
    ids = [sdk.files.create(file=(f"f{i}.txt", b"x" * i), purpose="user_data").id for i in range(5)]
    batch_id = sdk.files.create(file=("b.jsonl", jsonl(row("a"))), purpose="batch").id
    page = api.get("/v1/files", params={"limit": 2, "order": "asc"}).json()
    assert page["object"] == "list" and [x["id"] for x in page["data"]] == ids[:2] and page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (ids[0], ids[1])
    page = api.get("/v1/files", params={"limit": 2, "order": "asc", "after": ids[1]}).json()
    assert [x["id"] for x in page["data"]] == ids[2:4]
    everything = [f.id for f in sdk.files.list(limit=2, order="asc")]  # the SDK follows last_id
    assert everything == [*ids, batch_id]
    assert [f.id for f in sdk.files.list(order="desc")] == [batch_id, *reversed(ids)]
    assert [f.id for f in sdk.files.list(purpose="batch")] == [batch_id]
    assert [f.id for f in sdk.files.list(purpose="user_data", order="asc")] == ids
    empty = api.get("/v1/files", params={"purpose": "evals"}).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


@pytest.mark.parametrize("params,param", [({"limit": 0}, "limit"), ({"limit": 10001}, "limit"),
                                          ({"order": "up"}, "order"), ({"purpose": "nope"}, "purpose"),
                                          ({"after": "file-unknown"}, "after")])
def test_list_bad_params(api: httpx.Client, params: dict[str, Any], param: str) -> None:
    r = api.get("/v1/files", params=params)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


# -- content: Range, ETag, HEAD -----------------------------------------------------------------

@pytest.fixture(scope="module")
def blob(client: openai.OpenAI) -> tuple[str, bytes]:
    data = bytes(range(256)) * 40
    return client.files.create(file=("r.bin", data), purpose="user_data").id, data


@pytest.mark.parametrize("spec,start,end", [("bytes=0-9", 0, 9), ("bytes=100-", 100, 10239),
                                            ("bytes=-16", 10224, 10239), ("bytes=10000-99999", 10000, 10239)])
def test_content_ranges(api: httpx.Client, blob: tuple[str, bytes], spec: str, start: int, end: int) -> None:
    fid, data = blob
    r = api.get(f"/v1/files/{fid}/content", headers={"Range": spec})
    assert r.status_code == 206 and r.content == data[start:end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    assert r.headers["content-length"] == str(end - start + 1)


def test_content_headers_416_304_head(api: httpx.Client, blob: tuple[str, bytes]) -> None:
    fid, data = blob
    r = api.get(f"/v1/files/{fid}/content")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["accept-ranges"] == "bytes" and r.headers["x-content-type-options"] == "nosniff"
    etag = r.headers["etag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    r = api.get(f"/v1/files/{fid}/content", headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    assert r.json()["error"]["code"] == "range_not_satisfiable"
    assert api.get(f"/v1/files/{fid}/content", headers={"If-None-Match": etag}).status_code == 304
    r = api.get(f"/v1/files/{fid}/content", headers={"Range": "bytes=0-3", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == data
    r = api.head(f"/v1/files/{fid}/content")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == str(len(data))
    r = api.head(f"/v1/files/{fid}/content", headers={"Range": "bytes=0-3"})
    assert r.status_code == 206 and r.headers["content-length"] == "4"


# -- expiry -------------------------------------------------------------------------------------

def test_expires_after_and_the_sweep(gateway: Gateway, client: openai.OpenAI) -> None:
    f = client.files.create(file=("e.txt", b"soon gone"), purpose="user_data",
                            expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    b = client.files.create(file=("b.jsonl", jsonl(row("a"))), purpose="batch",
                            expires_after={"anchor": "created_at", "seconds": 2592000})
    assert b.expires_at == b.created_at + 2592000
    assert blob_of(gateway, f.id).exists()

    async def expire(sessions: Any) -> None:
        async with sessions() as s, s.begin():
            await s.execute(update(StoredFile).where(StoredFile.id == f.id).values(
                expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))

    run_async(expire, gateway.settings)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)  # hidden at once, before the sweep ran
    assert f.id not in [x.id for x in client.files.list()]
    wait_for(lambda: not blob_of(gateway, f.id).exists() and f.id not in [r.id for r in rows_of(gateway)])
    assert client.files.retrieve(b.id).id == b.id


@pytest.mark.parametrize("fields,param", [
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"}, "expires_after.seconds"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "expires_after.seconds"),
    ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "1h"}, "expires_after.seconds"),
    ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "expires_after.anchor"),
    ({"expires_after[seconds]": "3600"}, "expires_after.anchor"),
    ({"expires_after[anchor]": "created_at"}, "expires_after.seconds"),
])
def test_expires_after_bounds(gateway: Gateway, fields: dict[str, str], param: str) -> None:
    _, api, _ = fresh(gateway)
    r = api.post("/v1/files", files={"file": ("e.txt", b"x")}, data={"purpose": "user_data", **fields})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert api.get("/v1/files").json()["data"] == []


# -- request errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,status,param,code", [
    ({"files": {"file": ("a.txt", b"x")}}, 400, "purpose", "missing_required_parameter"),
    ({"files": {"file": ("a.txt", b"x")}, "data": {"purpose": "batch_output"}}, 400, "purpose", "invalid_value"),
    ({"data": {"purpose": "user_data"}, "files": {"other": ("a.txt", b"x")}}, 400, "other", "unknown_parameter"),
    ({"data": {"purpose": "user_data", "extra": "1"}, "files": {"file": ("a.txt", b"x")}}, 400, "extra",
     "unknown_parameter"),
    ({"data": {"purpose": "user_data"}, "files": {"file": (None, b"not a file")}}, 400, "file", "invalid_value"),
    ({"json": {"purpose": "batch", "file": "x"}}, 415, None, "unsupported_media_type"),
])
def test_bad_uploads(gateway: Gateway, kwargs: dict[str, Any], status: int, param: str | None, code: str) -> None:
    _, api, _ = fresh(gateway)
    r = api.post("/v1/files", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["code"] == code
    assert api.get("/v1/files").json()["data"] == []


def test_missing_file_and_malformed_bodies(gateway: Gateway) -> None:
    _, api, _ = fresh(gateway)
    boundary = "XyZ"
    form = f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--{boundary}--\r\n'
    r = api.post("/v1/files", content=form, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    truncated = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
                 f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc')
    r = api.post("/v1/files", content=truncated,
                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_body"
    r = api.post("/v1/files", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_body"
    assert api.get("/v1/files").json()["data"] == []
    assert not any(r.status == "uploading" for r in rows_of(gateway))


def test_requires_a_key(gateway: Gateway) -> None:
    anon = gateway.client()
    assert anon.get("/v1/files").status_code == 401
    assert anon.post("/v1/files", files={"file": ("a", b"x")}, data={"purpose": "user_data"}).status_code == 401


# -- the size limit -----------------------------------------------------------------------------

def test_size_limit_413_names_file_and_leaves_nothing(small: Gateway) -> None:
    _, api, sdk = fresh(small)
    ok = sdk.files.create(file=("max.bin", b"m" * SMALL_LIMIT), purpose="user_data")
    assert ok.bytes == SMALL_LIMIT
    for size in (SMALL_LIMIT + 1, 4 * SMALL_LIMIT):
        with pytest.raises(openai.APIStatusError) as e:
            sdk.files.create(file=("big.bin", b"b" * size), purpose="user_data")
        assert e.value.status_code == 413
        err = e.value.body
        assert isinstance(err, dict) and err["param"] == "file" and err["code"] == "file_too_large"
    # Streamed without a Content-Length (chunked), and with a Content-Length far past the limit.
    boundary = "b0undary"

    def body(n: int) -> Iterator[bytes]:
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
               f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.bin"\r\n'
               'Content-Type: application/octet-stream\r\n\r\n').encode()
        for _ in range(n):
            yield b"z" * 16384
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = api.post("/v1/files", content=body(10), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["param"] == "file"
    r = api.post("/v1/files", content=b"".join(body(200)), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["param"] == "file"
    assert [f["id"] for f in api.get("/v1/files").json()["data"]] == [ok.id]
    assert [r.id for r in rows_of(small)] == [ok.id]
    assert blobs(small) == [blob_of(small, ok.id), blob_of(small, ok.id).with_name(ok.id + ".meta.json")]
    assert not [p for p in (small.data_dir / "blobs").rglob(".*") if p.is_file()]  # no temporary files


def test_global_body_limit_does_not_apply_to_uploads(gateway: Gateway) -> None:
    # AISTATS_MAX_BODY_BYTES (50 MiB) bounds JSON bodies; uploads have their own limit (200 MiB).
    assert gateway.settings.max_body_bytes < gateway.settings.files_max_bytes


# -- tenants ------------------------------------------------------------------------------------

def test_another_workspace_gets_404_everywhere(gateway: Gateway) -> None:
    _, api_a, sdk_a = fresh(gateway)
    _, api_b, _ = fresh(gateway)
    f = sdk_a.files.create(file=("mine.txt", b"secret"), purpose="user_data")
    for method, path in (("GET", f"/v1/files/{f.id}"), ("GET", f"/v1/files/{f.id}/content"),
                         ("HEAD", f"/v1/files/{f.id}/content"), ("DELETE", f"/v1/files/{f.id}"),
                         ("GET", f"/v1/batches/files/{f.id}"), ("DELETE", f"/v1/batches/files/{f.id}")):
        r = api_b.request(method, path)
        assert r.status_code == 404, (method, path)
        if method != "HEAD":
            assert r.json()["error"]["code"] == "file_not_found"
    assert api_b.get("/v1/files").json()["data"] == []
    r = api_b.get("/v1/files", params={"after": f.id})
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"
    assert api_a.get(f"/v1/files/{f.id}/content").content == b"secret"  # untouched


def test_unknown_ids(api: httpx.Client) -> None:
    for fid in ("file-doesnotexist", "nope", "file-" + "x" * 100):
        r = api.get(f"/v1/files/{fid}")
        assert r.status_code == 404 and r.json()["error"] == {
            "message": f"No such File object: {fid}", "type": "not_found_error", "param": "id",
            "code": "file_not_found"}


# -- batch file validation ----------------------------------------------------------------------

@pytest.mark.parametrize("data,line,code,words", [
    (jsonl(row("a"), b'{"custom_id": "b", "method": "POST",'), 2, "invalid_batch_file", ["not valid JSON"]),
    (jsonl({k: v for k, v in row("a").items() if k != "custom_id"}), 1, "invalid_batch_file", ["custom_id"]),
    (jsonl(row("a"), row("b"), row("a")), 3, "duplicate_custom_id", ["'custom_id' \"a\"", "first on line 1"]),
    (jsonl(row("a"), row("b", url="/v1/responses")), 2, "batch_mixed_endpoints", ["one endpoint"]),
    (jsonl(row("a"), {**row("b"), "method": "PUT"}), 2, "invalid_batch_file", ['"POST"']),
    (jsonl(row("a", url="/v1/files")), 1, "invalid_batch_file", ["not supported"]),
    (jsonl(row("a", body="hi")), 1, "invalid_batch_file", ["'body' must be a JSON object"]),
    (b"", 0, "batch_file_empty", ["no requests"]),
])
def test_batch_file_errors_name_the_line(gateway: Gateway, data: bytes, line: int, code: str,
                                         words: list[str]) -> None:
    _, api, sdk = fresh(gateway)
    with pytest.raises(openai.BadRequestError) as e:
        sdk.files.create(file=("in.jsonl", data), purpose="batch")
    err = e.value.body
    assert isinstance(err, dict) and (err["param"], err["code"]) == ("file", code)
    if line:
        assert f"Line {line}:" in err["message"]
    for w in words:
        assert w in err["message"], err["message"]
    assert api.get("/v1/files").json()["data"] == []


def test_batch_line_limit(small: Gateway) -> None:
    _, _, sdk = fresh(small)
    assert sdk.files.create(file=("3.jsonl", jsonl(row("a"), row("b"), row("c"))), purpose="batch").bytes > 0
    with pytest.raises(openai.BadRequestError) as e:
        sdk.files.create(file=("4.jsonl", jsonl(row("a"), row("b"), row("c"), row("d"))), purpose="batch")
    assert isinstance(e.value.body, dict) and e.value.body["code"] == "batch_too_many_rows"
    assert "Line 4:" in e.value.body["message"]


def test_invalid_jsonl_is_fine_for_other_purposes(client: openai.OpenAI) -> None:
    f = client.files.create(file=("notes.jsonl", b"{not json\n"), purpose="user_data")
    assert f.status == "processed"


@pytest.mark.parametrize("purpose,content,status", [("batch", jsonl(row("a"), b"[1]"), 400),
                                                    ("batch", jsonl(row("a"), row("b")), 200),
                                                    ("user_data", b"\x00\x01 binary", 200)])
def test_purpose_after_the_file(gateway: Gateway, purpose: str, content: bytes, status: int) -> None:
    _, api, _ = fresh(gateway)
    boundary = "ordr"
    form = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="late.jsonl"\r\n\r\n'.encode()
            + content + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
            f'--{boundary}--\r\n'.encode())
    r = api.post("/v1/files", content=form, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"]["param"] == "file" and "Line 2:" in r.json()["error"]["message"]
        assert api.get("/v1/files").json()["data"] == []
    else:
        assert api.get(f"/v1/files/{r.json()['id']}/content").content == content


# -- aborted uploads ----------------------------------------------------------------------------

def test_client_disconnect_mid_upload_leaves_nothing(gateway: Gateway) -> None:
    k, api, _ = fresh(gateway)
    before = {r.id for r in rows_of(gateway)}
    boundary = "gone"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.bin"\r\n\r\n').encode()
    request = (f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {k}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gateway.server.port)) as sock:
        sock.sendall(request.encode() + head + b"q" * (1024 * 1024))
        wait_for(lambda: any(r.status == "uploading" for r in rows_of(gateway) if r.id not in before))
    # The connection is closed: the blob write is aborted and the row removed.
    wait_for(lambda: not [r for r in rows_of(gateway) if r.id not in before])
    assert api.get("/v1/files").json()["data"] == []
    ids = {p.name.split(".")[0] for p in blobs(gateway)}
    assert not ids - before
    assert not [p for p in (gateway.data_dir / "blobs").rglob(".*") if p.is_file()]


def test_abandoned_upload_rows_are_swept(gateway: Gateway) -> None:
    """A process that died mid-upload leaves an 'uploading' row (and maybe bytes): the sweep removes both."""
    from aistats_gateway.files import service

    k, _, _ = fresh(gateway)

    async def orphan(sessions: Any) -> str:
        async with sessions() as s, s.begin():
            from aistats_gateway.auth.tables import ApiKey

            ws = (await s.execute(select(ApiKey.workspace_id).where(ApiKey.id == k.split("_")[3]))).scalar_one()
            old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=service.UPLOAD_STALE_SECONDS + 5)
            fid = service.new_id()
            s.add(StoredFile(id=fid, workspace_id=ws, key_id=None, filename="x", purpose="", status="uploading",
                             bytes=0, storage_key=f"files/{fid}", created_at=old, updated_at=old))
            return str(fid)

    fid = run_async(orphan, gateway.settings)
    blob_of(gateway, fid).parent.mkdir(parents=True, exist_ok=True)
    blob_of(gateway, fid).write_bytes(b"partial")
    wait_for(lambda: fid not in [r.id for r in rows_of(gateway)] and not blob_of(gateway, fid).exists())


# -- memory -------------------------------------------------------------------------------------

def test_large_upload_and_download_stay_in_bounded_memory(gateway: Gateway) -> None:
    """50 MiB in and out through the in-thread server while tracing every Python allocation of the
    process: the peak stays far below the file's size (the body is never held whole)."""
    _, api, _ = fresh(gateway)
    size = 50 * 1024 * 1024
    block = bytes(range(256)) * 4096  # 1 MiB, the same object sent 50 times
    boundary = "big"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n').encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // len(block)):
            yield block
        yield tail

    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        r = api.post("/v1/files", content=body(), headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail))})
        assert r.status_code == 200, r.text
        upload_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        got = hashlib.sha256()
        received = 0
        with api.stream("GET", f"/v1/files/{r.json()['id']}/content") as resp:
            for chunk in resp.iter_bytes():
                got.update(chunk)
                received += len(chunk)
        download_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert r.json()["bytes"] == size and received == size and got.hexdigest() == digest.hexdigest()
    assert upload_peak < 16 * 1024 * 1024, upload_peak
    assert download_peak < 16 * 1024 * 1024, download_peak


# -- S3 blob storage ----------------------------------------------------------------------------

def test_files_on_s3_storage(s3_server: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    """The same flow with AISTATS_STORAGE=s3 (a moto server): multipart upload of a 20 MiB file,
    ranged reads, deletion, and a refused upload that leaves no object behind."""
    import asyncio

    from aistats_gateway.storage import S3BlobStore

    prefix = f"files-{int(time.time() * 1000)}/"
    with running_gateway("sqlite", tmp_path, storage="s3", s3_endpoint_url=s3_server["endpoint_url"],
                         s3_bucket=s3_server["bucket"], s3_access_key_id=s3_server["access_key"],
                         s3_secret_access_key=s3_server["secret_key"], s3_prefix=prefix,
                         files_max_bytes=24 * 1024 * 1024) as gw:
        _, api, sdk = fresh(gw)
        data = bytes(range(256)) * (80 * 1024)  # 20 MiB: more than one 8 MiB part
        f = sdk.files.create(file=("big.bin", data), purpose="user_data")
        assert f.bytes == len(data)
        assert sdk.files.content(f.id).read() == data
        r = api.get(f"/v1/files/{f.id}/content", headers={"Range": "bytes=9000000-9000099"})
        assert r.status_code == 206 and r.content == data[9000000:9000100]
        assert r.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()[:32]}"'
        with pytest.raises(openai.APIStatusError) as e:
            sdk.files.create(file=("huge.bin", data + data), purpose="user_data")
        assert e.value.status_code == 413
        refused = [r for r in rows_of(gw) if r.id != f.id]
        assert refused == []
        sdk.files.delete(f.id)
        assert not (gw.data_dir / "blobs" / "files").exists()  # nothing went to the local disk

        async def objects() -> list[str]:
            store = S3BlobStore(**s3_server, prefix=prefix)
            try:
                return [key for key in ("files/" + f.id,) if await store.stat(key) is not None]
            finally:
                await store.close()

        assert asyncio.run(objects()) == []


def test_missing_blob_is_a_clean_500(gateway: Gateway) -> None:
    _, api, sdk = fresh(gateway)
    f = sdk.files.create(file=("lost.txt", b"will vanish"), purpose="user_data")
    blob_of(gateway, f.id).unlink()
    r = api.get(f"/v1/files/{f.id}/content")
    assert r.status_code == 500 and r.json()["error"]["code"] == "file_content_unavailable"
    assert api.delete(f"/v1/files/{f.id}").json()["deleted"] is True  # still deletable


def test_upload_swept_mid_write_leaves_no_blob(gateway: Gateway) -> None:
    """The sweep took an upload's row while its bytes were still arriving: the late blob is removed
    with the failed upload, and finishing it is refused."""
    from aistats_gateway.files import service
    from aistats_gateway.storage import LocalBlobStore

    k, _, _ = fresh(gateway)

    async def scenario(sessions: Any) -> tuple[bool, int, bool, bool]:
        from aistats_gateway.auth.tables import ApiKey

        store = LocalBlobStore(gateway.data_dir / "blobs")
        ctx = service.FilesContext(sessions, store, 1024, 10, 1024, 0)
        async with sessions() as s:
            ws = (await s.execute(select(ApiKey.workspace_id).where(ApiKey.id == k.split("_")[3]))).scalar_one()
        row = await service.begin(ctx, ws, None, "late.bin", "user_data")
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=service.UPLOAD_STALE_SECONDS + 1)
        swept = await service.sweep_one(ctx, row.id, now=later)

        async def chunks() -> Any:
            yield b"late bytes"

        await store.put_stream(row.storage_key, chunks(), content_type="application/octet-stream")
        status = 0
        try:
            await service.finish(ctx, row, purpose="user_data", size=10, sha256=None, expires_at=None, stats=None)
        except service.APIError as e:
            status = e.status
        await service.discard(ctx, row)
        async with sessions() as s:
            left = await s.get(StoredFile, row.id)
        return swept, status, await store.stat(row.storage_key) is None, left is None

    assert run_async(scenario, gateway.settings) == (True, 409, True, True)
