"""Authentication, error shapes, request ids, body limits, health, metrics and logging."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import Gateway

CLI = [sys.executable, "-m", "aistats_gateway.cli"]


def assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    assert err["param"] == param
    assert r.headers.get("x-request-id")
    return err


@pytest.mark.parametrize("header", [
    None,
    "",
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "Bearer sk-not-ours",
    "Bearer aistats_v1_sk_nope",
    "Bearer aistats_v1_sk_abcdefabcdef_wrongsecretwrongsecret",
])
def test_missing_or_wrong_key_is_401(gateway: Gateway, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = httpx.get(gateway.base_url + "/v1/models", headers=headers)
    err = assert_error(r, 401)
    assert err["type"] == "authentication_error"
    assert r.headers.get("www-authenticate") == "Bearer"


def test_right_id_wrong_secret_is_401(gateway: Gateway) -> None:
    key = gateway.create_key("victim")
    prefix, _, secret = key.rpartition("_")
    forged = prefix + "_" + ("A" if secret[0] != "A" else "B") + secret[1:]
    assert_error(httpx.get(gateway.base_url + "/v1/models", headers={"Authorization": f"Bearer {forged}"}), 401)
    assert httpx.get(gateway.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_every_v1_route_needs_a_key(gateway: Gateway) -> None:
    for route in gateway.app.routes:
        path = getattr(route, "path", "")
        if not path.startswith("/v1") or "{" in path:
            continue
        for method in getattr(route, "methods", set()) - {"HEAD", "OPTIONS"}:
            r = httpx.request(method, gateway.base_url + path)
            assert r.status_code == 401, f"{method} {path} answered {r.status_code}"


def test_revoked_key_stops_at_once(gateway: Gateway) -> None:
    key = gateway.create_key("to revoke")
    c = gateway.client(key)
    assert c.get("/v1/models?limit=1").status_code == 200
    gateway.revoke(key)
    err = assert_error(c.get("/v1/models?limit=1"), 401)
    assert "revoked" in err["message"]


def test_key_format_and_hash_only(gateway: Gateway) -> None:
    from sqlalchemy import select

    from aistats_gateway.auth.tables import ApiKey
    from tests.support.gateway import run_async

    key = gateway.create_key("format")
    assert key.startswith("aistats_v1_sk_")
    key_id, secret = key[len("aistats_v1_sk_"):].split("_", 1)

    async def rows(sessions):  # type: ignore[no-untyped-def]
        async with sessions() as s:
            return (await s.execute(select(ApiKey).where(ApiKey.id == key_id))).scalars().all()

    (row,) = run_async(rows, gateway.settings)
    assert secret not in row.secret_hash and len(row.secret_hash) == 64
    assert all(secret not in str(v) for v in row.__dict__.values())


def test_unknown_route_404_and_wrong_method_405(api) -> None:  # type: ignore[no-untyped-def]
    err = assert_error(api.get("/v1/does-not-exist"), 404)
    assert err["type"] == "not_found_error"
    assert_error(api.get("/nothing/here"), 404)
    err = assert_error(api.post("/v1/models"), 405)
    assert err["code"] == "method_not_allowed"
    assert_error(api.put("/v1/videos"), 405)
    assert_error(api.delete("/v1/models"), 405)


def test_request_id_generated_and_echoed(api) -> None:  # type: ignore[no-untyped-def]
    a = api.get("/v1/models?limit=1").headers["x-request-id"]
    b = api.get("/v1/models?limit=1").headers["x-request-id"]
    assert a != b and a.startswith("req_")
    r = api.get("/v1/models?limit=1", headers={"x-request-id": "client-chosen.id-1"})
    assert r.headers["x-request-id"] == "client-chosen.id-1"
    r = api.get("/v1/models?limit=1", headers={"x-request-id": "bad id with spaces"})
    assert r.headers["x-request-id"].startswith("req_")


def test_body_too_large_413(gateway: Gateway, api) -> None:  # type: ignore[no-untyped-def]
    limit = gateway.settings.max_body_bytes
    big = b"x" * (limit + 1)
    err = assert_error(api.post("/v1/models", content=big, headers={"content-type": "application/json"}), 413)
    assert err["code"] == "request_too_large"


def test_the_inference_front_door_keeps_the_limits_ids_and_error_shapes(gateway: Gateway, api) -> None:  # type: ignore[no-untyped-def]
    """The inference POSTs skip FastAPI's middleware stack (``http.frontdoor``), not the gateway's own."""
    big = b"x" * (gateway.settings.max_body_bytes + 1)
    json_ct = {"content-type": "application/json"}
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/moderations"):
        assert assert_error(api.post(path, content=big, headers=json_ct), 413)["code"] == "request_too_large"
        assert assert_error(api.post(path, content=b"{not json", headers=json_ct), 400)["code"] == "invalid_json"
        assert_error(httpx.post(gateway.base_url + path, json={"model": "x"}), 401)
        r = api.post(path, content=b"{not json", headers={**json_ct, "x-request-id": "door-1"})
        assert r.headers["x-request-id"] == "door-1"
    r = api.post("/v1/messages", content=big, headers=json_ct)
    assert r.status_code == 413 and r.headers.get("x-request-id")
    r = api.post("/v1/messages", content=b"{not json", headers=json_ct)
    assert r.status_code == 400 and r.json()["type"] == "error" and r.json()["error"]["type"]



def test_health_and_ready_without_auth(gateway: Gateway) -> None:
    r = httpx.get(gateway.base_url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.get(gateway.base_url + "/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_metrics_count_requests_by_route_and_status(gateway: Gateway, api) -> None:  # type: ignore[no-untyped-def]
    api.get("/v1/models?limit=1")
    api.get("/v1/models?limit=0")
    text = httpx.get(gateway.base_url + "/metrics").text
    assert 'aistats_http_requests_total{method="GET",route="/v1/models",status="200"}' in text
    assert 'aistats_http_requests_total{method="GET",route="/v1/models",status="400"}' in text
    assert 'aistats_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/models"}' in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready in time")


def test_second_process_revocation_and_logs_without_secrets(gateway: Gateway, tmp_path: Path) -> None:
    """A real `aistats-gateway serve` process on the same database: a key revoked with the CLI stops
    working at once in both processes; the JSON logs never contain the secret."""
    port = _free_port()
    log_path = tmp_path / "server.log"
    env = gateway.env() | {"AISTATS_LOG_LEVEL": "info"}
    created = subprocess.run(CLI + ["keys", "create", "--name", "cli key", "--json"], env=env,
                             capture_output=True, text=True, check=True)
    info = json.loads(created.stdout)
    assert set(info) >= {"id", "name", "key"} and info["name"] == "cli key"
    key = info["key"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(CLI + ["serve", "--port", str(port)], env=env, stdout=log, stderr=log, text=True)
    other = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(other, proc)
        h = {"Authorization": f"Bearer {key}"}
        assert httpx.get(other + "/v1/models?limit=1", headers=h).status_code == 200
        assert httpx.get(gateway.base_url + "/v1/models?limit=1", headers=h).status_code == 200
        listed = subprocess.run(CLI + ["keys", "list", "--json"], env=env, capture_output=True, text=True, check=True)
        assert info["id"] in listed.stdout and key not in listed.stdout
        subprocess.run(CLI + ["keys", "revoke", info["id"]], env=env, check=True, capture_output=True)
        assert httpx.get(other + "/v1/models?limit=1", headers=h).status_code == 401
        assert httpx.get(gateway.base_url + "/v1/models?limit=1", headers=h).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    lines = [ln for ln in log_path.read_text().splitlines() if ln.startswith("{")]
    access = [json.loads(ln) for ln in lines if '"request"' in ln]
    assert any(a.get("route") == "/v1/models" and a.get("status") == 401 for a in access)
    assert all("request_id" in a and "duration_ms" in a for a in access)
    secret = key.rsplit("_", 1)[1]
    assert secret not in log_path.read_text()


def test_bad_config_is_reported(tmp_path: Path) -> None:
    env = dict(os.environ) | {"AISTATS_DATA_DIR": str(tmp_path), "AISTATS_PORT": "99999"}
    r = subprocess.run(CLI + ["serve"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "AISTATS_PORT" in r.stderr
    env = dict(os.environ) | {"AISTATS_DATA_DIR": str(tmp_path), "AISTATS_DATABASE_URL": "mysql://x"}
    r = subprocess.run(CLI + ["keys", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "AISTATS_DATABASE_URL" in r.stderr
