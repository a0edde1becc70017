"""HTTP surface under attack (issue 9 #9-#11): every $ref of /openapi.json resolves; Allow lists every
method of a path; HEAD works wherever GET does; a missing, truncated or concurrently deleted blob is
a clean 404/410 in the OpenAI shape, never a 200 cut short."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.hostile_common import SHORT, wait
from tests.support.gateway import Gateway


@pytest.fixture(scope="module")
def done(api: httpx.Client) -> dict[str, Any]:
    r = api.post("/v1/videos", json=SHORT)
    assert r.status_code == 202, r.text
    return wait(api, r.json()["id"])


# ---- 10: the OpenAPI document -----------------------------------------------------------------------------

def _refs(node: Any) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("$ref"), str):
                found.append(item["$ref"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_every_ref_in_openapi_resolves(gateway: Gateway) -> None:
    doc = httpx.get(gateway.base_url + "/openapi.json").json()
    refs = _refs(doc)
    assert "#/components/schemas/VideoCreateRequest" in refs and "#/components/schemas/DownloadURLRequest" in refs
    for ref in set(refs):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
            node = node[part]
    create = doc["paths"]["/v1/videos"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in create.get("parameters", []))
    assert doc["components"]["schemas"]["VideoCreateRequest"]["properties"]["model"]["type"] == "string"


# ---- 11: methods ------------------------------------------------------------------------------------------

def _allow(r: httpx.Response) -> set[str]:
    return {m.strip() for m in r.headers.get("allow", "").split(",") if m.strip()}


@pytest.mark.parametrize("path, methods", [
    ("/v1/videos", {"GET", "HEAD", "POST", "OPTIONS"}),
    ("/v1/videos/video_0123abc", {"GET", "HEAD", "DELETE", "OPTIONS"}),
    ("/v1/videos/video_0123abc/content", {"GET", "HEAD", "OPTIONS"}),
    ("/v1/videos/video_0123abc/cancel", {"POST", "OPTIONS"}),
    ("/healthz", {"GET", "HEAD", "OPTIONS"}),
])
def test_allow_lists_every_method(gateway: Gateway, path: str, methods: set[str]) -> None:
    options = httpx.options(gateway.base_url + path)
    assert options.status_code == 204 and _allow(options) >= methods, (options.status_code, options.headers)
    r = httpx.request("PUT", gateway.base_url + path)
    assert r.status_code == 405, r.text
    assert _allow(r) >= methods and "PUT" not in _allow(r)
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert httpx.options(gateway.base_url + "/no/such/path").status_code == 404


# Bodies that describe the moment (latencies, loop lag, counters): their length may differ by a digit
# between two requests, so HEAD's Content-Length is only compared for the other routes.
LIVE_BODIES = {"/metrics", "/v1/health", "/health"}


def test_head_works_wherever_get_does(gateway: Gateway, api: httpx.Client, done: dict[str, Any]) -> None:
    doc = httpx.get(gateway.base_url + "/openapi.json").json()
    vid = done["id"]
    for path, item in doc["paths"].items():
        if "get" not in item or "{" in path.replace("{video_id}", "").replace("{model_id}", ""):
            continue
        concrete = path.replace("{video_id}", vid).replace("{model_id}", "local/procedural-video")
        get = api.get(concrete)
        head = api.head(concrete)
        assert head.status_code == get.status_code, (path, head.status_code, get.status_code)
        assert head.content == b"", path
        if get.status_code == 200 and "content-length" in get.headers and path not in LIVE_BODIES:
            assert head.headers["content-length"] == get.headers["content-length"], path
    health = httpx.head(gateway.base_url + "/healthz")
    assert health.status_code == 200 and health.content == b"" and health.headers["content-length"] == "15"


# ---- 9: blobs checked before any header is sent ---------------------------------------------------------

def _blob_path(gateway: Gateway, video: dict[str, Any], variant: str = "video") -> Any:
    store = gateway.app.state.gateway.storage
    key = f"videos/{video['id']}/0.mp4" if variant == "video" else None
    assert key is not None
    path = store.local_path(key)
    assert path is not None and path.exists()
    return path


def _fresh(api: httpx.Client) -> dict[str, Any]:
    r = api.post("/v1/videos", json=SHORT)
    assert r.status_code == 202, r.text
    v = wait(api, r.json()["id"])
    assert v["status"] == "completed", v
    return v


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_damaged_blob_is_410_before_any_header(gateway: Gateway, api: httpx.Client, damage: str) -> None:
    assert gateway.settings.storage == "local"  # the blob is damaged through the local store's files
    video = _fresh(api)
    path = _blob_path(gateway, video)
    if damage == "missing":
        path.unlink()
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    signed = httpx.Client(base_url=gateway.base_url)
    link = api.post(f"/v1/videos/{video['id']}/download_url").json()["download_url"]
    for r in (api.get(f"/v1/videos/{video['id']}/content"), api.head(f"/v1/videos/{video['id']}/content"),
              api.get(f"/v1/videos/{video['id']}/content", headers={"Range": "bytes=0-10"}),
              signed.get(link.replace(gateway.base_url, ""))):
        assert r.status_code == 410, (r.status_code, r.headers)
        if r.request.method != "HEAD":
            err = r.json()["error"]
            assert err["code"] == "video_content_unavailable" and err["param"] == "video_id"
            assert set(err) == {"message", "type", "param", "code"}


def test_a_download_racing_a_delete_is_whole_or_a_clean_error(gateway: Gateway, api: httpx.Client) -> None:
    video = _fresh(api)
    size = video["outputs"][0]["bytes"]
    results: list[Any] = []
    with api.stream("GET", f"/v1/videos/{video['id']}/content") as r:
        assert r.status_code == 200 and int(r.headers["content-length"]) == size
        deleter = threading.Thread(target=lambda: results.append(api.delete(f"/v1/videos/{video['id']}")))
        deleter.start()
        deleter.join(30)
        body = r.read()
    assert results and results[0].status_code == 200, results
    assert len(body) == size  # the open blob is served in full although it was deleted meanwhile
    after = api.get(f"/v1/videos/{video['id']}/content")
    assert after.status_code == 404 and after.json()["error"]["code"] == "video_not_found"


def test_many_downloads_racing_deletes_never_cut_a_body(gateway: Gateway, api: httpx.Client) -> None:
    videos = [_fresh(api) for _ in range(3)]
    problems: list[str] = []

    def download(v: dict[str, Any]) -> None:
        for _ in range(5):
            try:
                r = api.get(f"/v1/videos/{v['id']}/content")
            except httpx.HTTPError as e:  # a connection cut mid-body is exactly the bug
                problems.append(f"{v['id']}: {e!r}")
                return
            if r.status_code == 200:
                if len(r.content) != int(r.headers["content-length"]):
                    problems.append(f"{v['id']}: short body")
            elif r.status_code not in (404, 410):
                problems.append(f"{v['id']}: {r.status_code}")

    threads = [threading.Thread(target=download, args=(v,)) for v in videos for _ in range(2)]
    for t in threads:
        t.start()
    for v in videos:
        assert api.delete(f"/v1/videos/{v['id']}").status_code == 200
    for t in threads:
        t.join(60)
    assert not problems, problems
