"""Credits, holds, limits and job webhooks through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aistats_gateway.billing import ledger
from tests.support.gateway import BACKENDS, Gateway, ServerThread, run_async, running_gateway

USD = 1_000_000_000
LOCAL_PARAMS = {
    "duration": {"type": "integer", "minimum": 1, "maximum": 20, "default": 1,
                 "aliases": ["duration_seconds", "seconds"]},
    "resolution": {"values": ["480p", "720p", "1080p"], "default": "480p", "aliases": ["size"]},
    "aspect_ratio": {"values": ["16:9", "9:16", "1:1"], "default": "16:9"},
    "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "sample_count": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1},
}
OVERLAY = {"models": [{
    "model_id": "local/priced-video", "name": "Priced local video", "organisation": "local", "status": "active",
    "input_types": ["text"], "output_types": ["video"],
    "providers": [{
        "provider": "local", "provider_model_slug": "procedural", "endpoints": ["video.generation"],
        "pricing": [
            {"meter": "output_video_seconds", "unit": "second", "price": "0.10"},
            {"meter": "output_video_seconds", "unit": "second", "price": "0.30", "when": {"resolution": "1080p"}},
        ],
        "parameters": {"video.generation": LOCAL_PARAMS},
    }],
}]}


class Receiver:
    """A webhook receiver on 127.0.0.1 that verifies signatures with the standardwebhooks package."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls: list[dict[str, Any]] = []
        self.secret: str | None = None
        self.lock = threading.Lock()

        async def hook(request: Request) -> Response:
            body = (await request.body()).decode()
            headers = dict(request.headers)
            verified = None
            if self.secret:
                try:
                    standardwebhooks.Webhook(self.secret).verify(body, headers)
                    verified = True
                except standardwebhooks.WebhookVerificationError:
                    verified = False
            with self.lock:
                self.calls.append({"body": json.loads(body), "headers": headers, "verified": verified})
                n = len(self.calls)
            return Response(status_code=500 if n <= self.fail_first else 204)

        self.server = ServerThread(Starlette(routes=[Route("/hook", hook, methods=["POST"])])).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/hook"


@pytest.fixture(scope="module", params=BACKENDS)
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("billing")
    overlay = tmp / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(OVERLAY))
    with running_gateway(request.param, tmp, catalogue_file=overlay, webhook_allow_local=True,
                         webhook_retry_schedule="0.3,0.3,0.3,0.3,0.3") as g:
        yield g


def _key(gw: Gateway, usd: float) -> tuple[str, httpx.Client]:
    key = gw.create_key("billing", credits_usd=usd)
    return key, gw.client(key)


def _wait(c: httpx.Client, vid: str, statuses: tuple[str, ...] = ("completed", "failed", "cancelled", "expired"),
          timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = c.get(f"/v1/videos/{vid}").json()
        if v["status"] in statuses:
            return v
        time.sleep(0.1)
    raise AssertionError(f"{vid} did not reach {statuses}")


def _wait_billing(c: httpx.Client, vid: str, state: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = c.get(f"/v1/videos/{vid}").json()
        if v["billing"].get("state") == state:
            return v
        time.sleep(0.1)
    raise AssertionError(f"{vid} billing never became {state}: {v['billing']}")


def _credits(c: httpx.Client) -> dict[str, Any]:
    r = c.get("/v1/credits")
    assert r.status_code == 200, r.text
    return r.json()


def _recompute_all(gw: Gateway) -> None:
    from sqlalchemy import select

    from aistats_gateway.auth.tables import Workspace

    async def work(sessions: Any) -> Any:
        async with sessions() as s:
            out = []
            for ws in (await s.execute(select(Workspace.id))).scalars():
                out.append((await ledger.balance(s, ws), await ledger.recompute(s, ws)))
            return out

    for stored, again in run_async(work, gw.settings):
        assert stored == again


@pytest.fixture(autouse=True)
def ledger_consistent(gw: Gateway) -> Iterator[None]:
    yield
    _recompute_all(gw)


def test_credits_endpoint(gw: Gateway) -> None:
    _, c = _key(gw, 12.5)
    body = _credits(c)
    assert body["balance_nanos"] == 12_500_000_000 and body["held_nanos"] == 0
    assert body["available_nanos"] == 12_500_000_000 and body["balance_usd"] == "12.50"
    assert body["entries"][0]["kind"] == "credit"


def test_hold_then_settle_at_actual_price(gw: Gateway) -> None:
    _, c = _key(gw, 10)
    r = c.post("/v1/videos", json={"model": "local/priced-video", "prompt": "x", "duration": 2, "resolution": "480p"})
    assert r.status_code == 202, r.text
    v = r.json()
    assert v["billing"]["hold_state"] == "held" and v["billing"]["state"] == "estimated"
    assert v["billing"]["held_nanos"] == v["billing"]["reserved_nanos"] == 2 * 100_000_000
    done = _wait(c, v["id"])
    assert done["status"] == "completed"
    v = _wait_billing(c, v["id"], "settled")
    assert v["billing"]["settled_nanos"] == 200_000_000
    assert v["usage"]["cost"] == pytest.approx(0.2)
    cr = _credits(c)
    assert cr["balance_nanos"] == 10 * USD - 200_000_000 and cr["held_nanos"] == 0
    kinds = [e["kind"] for e in cr["entries"]]
    assert kinds.count("settle") == 1 and kinds.count("hold") == 1


def test_price_depends_on_resolution_and_samples(gw: Gateway) -> None:
    _, c = _key(gw, 10)
    r = c.post("/v1/videos", json={"model": "local/priced-video", "prompt": "x", "duration": 1, "resolution": "1080p",
                                   "sample_count": 2})
    assert r.status_code == 202, r.text
    assert r.json()["billing"]["held_nanos"] == 2 * 300_000_000
    _wait(c, r.json()["id"])
    v = _wait_billing(c, r.json()["id"], "settled")
    assert v["billing"]["settled_nanos"] == 600_000_000


def test_cancel_voids_the_hold(gw: Gateway) -> None:
    _, c = _key(gw, 10)
    r = c.post("/v1/videos", json={"model": "local/priced-video", "prompt": "long", "duration": 20,
                                   "resolution": "1080p"})
    assert r.status_code == 202, r.text
    vid = r.json()["id"]
    assert c.post(f"/v1/videos/{vid}/cancel").status_code == 200
    v = _wait_billing(c, vid, "void")
    assert v["status"] == "cancelled" and v["billing"]["settled_nanos"] == 0 and v["usage"]["cost"] == 0
    cr = _credits(c)
    assert cr["balance_nanos"] == 10 * USD and cr["held_nanos"] == 0


def test_insufficient_credits_is_402_before_anything_runs(gw: Gateway) -> None:
    _, c = _key(gw, 0.05)
    r = c.post("/v1/videos", json={"model": "local/priced-video", "prompt": "x", "duration": 2})
    assert r.status_code == 402, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_credits" and "short by 0.15" in err["message"]
    assert c.get("/v1/videos").json()["data"] == []
    assert _credits(c)["held_nanos"] == 0


def test_free_model_needs_no_credits(gw: Gateway) -> None:
    _, c = _key(gw, 0)
    r = c.post("/v1/videos", json={"model": "local/procedural-video", "prompt": "x", "duration": 1,
                                   "resolution": "480p"})
    assert r.status_code == 202, r.text
    _wait(c, r.json()["id"])


def test_requests_per_minute_limit_is_429(gw: Gateway) -> None:
    import subprocess
    import sys

    key, c = _key(gw, 10)
    key_id = key[len("aistats_v1_sk_"):].split("_")[0]
    subprocess.run([sys.executable, "-m", "aistats_gateway.cli", "keys", "limits", key_id, "--rpm", "3"],
                   env=gw.env(), check=True, capture_output=True)
    codes = [c.get("/v1/models?limit=1").status_code for _ in range(3)]
    r = c.post("/v1/videos", json={"model": "local/priced-video", "prompt": "x", "duration": 1})
    assert codes == [200, 200, 200]
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert _held_for(gw, key_id) == 0


def _held_for(gw: Gateway, key_id: str) -> int:
    from sqlalchemy import func, select

    from aistats_gateway.billing.tables import Hold

    async def work(sessions: Any) -> Any:
        async with sessions() as s:
            return (await s.execute(select(func.count()).select_from(Hold).where(Hold.key_id == key_id))).scalar()

    return int(run_async(work, gw.settings))


def test_daily_spend_limit_is_402(gw: Gateway) -> None:
    import subprocess
    import sys

    key, c = _key(gw, 10)
    key_id = key[len("aistats_v1_sk_"):].split("_")[0]
    subprocess.run([sys.executable, "-m", "aistats_gateway.cli", "keys", "limits", key_id, "--daily-usd", "0.25"],
                   env=gw.env(), check=True, capture_output=True)
    ok = c.post("/v1/videos", json={"model": "local/priced-video", "prompt": "x", "duration": 2, "resolution": "480p"})
    assert ok.status_code == 202, ok.text
    r = c.post("/v1/videos", json={"model": "local/priced-video", "prompt": "x", "duration": 1, "resolution": "480p"})
    assert r.status_code == 402 and r.json()["error"]["code"] == "daily_spend_limit_exceeded"
    assert _held_for(gw, key_id) == 1
    _wait(c, ok.json()["id"])
    _wait_billing(c, ok.json()["id"], "settled")


def test_hundred_concurrent_creates_hold_at_most_the_balance(gw: Gateway) -> None:
    _, c = _key(gw, 1.0)  # covers 10 one-second 480p videos at 0.10 USD

    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=gw.base_url, headers=dict(c.headers), timeout=120) as ac:
            async def one() -> int:
                r = await ac.post("/v1/videos", json={"model": "local/priced-video", "prompt": "race", "duration": 1,
                                                      "resolution": "480p"})
                return r.status_code
            return await asyncio.gather(*[one() for _ in range(100)])

    codes = asyncio.run(main())
    assert codes.count(202) == 10, codes
    assert codes.count(402) == 90
    cr = _credits(c)
    assert cr["held_nanos"] + (USD - cr["balance_nanos"]) == 10 * 100_000_000
    for v in c.get("/v1/videos", params={"limit": 100}).json()["data"]:
        _wait(c, v["id"], timeout=120)
        _wait_billing(c, v["id"], "settled")
    cr = _credits(c)
    assert cr["balance_nanos"] == 0 and cr["held_nanos"] == 0


# ---- webhooks ---------------------------------------------------------------------------------


def test_webhook_signed_and_verifiable(gw: Gateway) -> None:
    rec = Receiver()
    try:
        _, c = _key(gw, 10)
        r = c.post("/v1/videos", json={"model": "local/priced-video", "prompt": "hook", "duration": 1,
                                       "webhook": {"url": rec.url, "events": ["video.created", "video.progress",
                                                                              "video.completed"]}})
        assert r.status_code == 202, r.text
        secret = r.json()["webhook"]["secret"]  # generated, shown once on create
        assert secret.startswith("whsec_")
        rec.secret = secret
        vid = r.json()["id"]
        _wait(c, vid)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(x["body"]["type"] == "video.completed" for x in rec.calls):
            time.sleep(0.1)
        types = [x["body"]["type"] for x in rec.calls]
        # The receiver learnt the secret only from our create response: verify the first call again.
        assert rec.calls[0]["verified"] in (None, True)
        assert types[0] == "video.created" and "video.completed" in types
        progress = [x for x in rec.calls if x["body"]["type"] == "video.progress"]
        assert len({x["headers"]["webhook-id"] for x in progress}) == len(progress)
        completed = next(x for x in rec.calls if x["body"]["type"] == "video.completed")
        assert completed["body"]["data"]["id"] == vid and completed["body"]["data"]["status"] == "completed"
        assert completed["verified"] is True
        assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= set(completed["headers"])
        shown = c.get(f"/v1/videos/{vid}").json()["webhook"]
        assert secret not in json.dumps(shown) and shown["has_secret"] is True
    finally:
        rec.server.stop()


def test_webhook_retried_until_delivered(gw: Gateway) -> None:
    rec = Receiver(fail_first=3)
    rec.secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    try:
        _, c = _key(gw, 10)
        r = c.post("/v1/videos", json={"model": "local/priced-video", "prompt": "retry", "duration": 1,
                                       "webhook": {"url": rec.url, "secret": rec.secret}})
        assert r.status_code == 202, r.text
        vid = r.json()["id"]
        _wait(c, vid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            deliveries = c.get(f"/v1/videos/{vid}").json()["webhook"]["deliveries"]
            if deliveries and deliveries[0]["status"] == "delivered":
                break
            time.sleep(0.2)
        d = deliveries[0]
        assert d["event"] == "video.completed" and d["status"] == "delivered" and d["attempts"] == 4
        assert [h["status_code"] for h in d["history"]] == [500, 500, 500, 204]
        assert len(rec.calls) == 4 and len({x["headers"]["webhook-id"] for x in rec.calls}) == 1
        assert rec.calls[-1]["verified"] is True
    finally:
        rec.server.stop()


@pytest.mark.parametrize("url", [
    "http://example.com/hook",
    "https://10.0.0.5/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://192.168.1.10/hook",
    "ftp://example.com/hook",
])
def test_webhook_ssrf_refusals(gw: Gateway, url: str) -> None:
    _, c = _key(gw, 10)
    r = c.post("/v1/videos", json={"model": "local/priced-video", "prompt": "x", "duration": 1,
                                   "webhook": {"url": url, "secret": "whsec_c2VjcmV0"}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "webhook.url"
    assert _credits(c)["held_nanos"] == 0


def test_webhook_local_target_refused_without_operator_opt_in(tmp_path: Path) -> None:
    with running_gateway("sqlite", tmp_path) as g:
        c = g.client(g.create_key("x"))
        for url in ("http://127.0.0.1:9/hook", "https://127.0.0.1:9/hook", "https://[::1]:8443/hook",
                    "https://localhost/hook"):
            r = c.post("/v1/videos", json={"model": "local/procedural-video", "prompt": "x", "duration": 1,
                                           "webhook": {"url": url}})
            assert r.status_code == 400 and r.json()["error"]["param"] == "webhook.url", (url, r.text)
