"""Idempotency-Key on POST /v1/videos (issue 9, safe retries), on SQLite and PostgreSQL.

Asserted by job ids, hold rows and ledger entries, never by timing."""

from __future__ import annotations

import datetime as dt
import io
import secrets
import threading
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select, update

from aistats_gateway.billing.tables import Hold, LedgerEntry
from aistats_gateway.idempotency.tables import IdempotencyRecord
from aistats_gateway.videos.tables import VideoJob
from tests.support.gateway import Gateway, run_async

BODY = {"model": "local/procedural-video", "prompt": "an idempotent clip", "duration": 1, "resolution": "480p"}


def _key_id(key: str) -> str:
    return key[len("aistats_v1_sk_"):].split("_")[0]


def _counts(gw: Gateway, key_id: str) -> tuple[int, int, int]:
    """(jobs, holds, hold ledger entries) of one API key."""

    async def work(sessions: Any) -> Any:
        async with sessions() as s:
            jobs = (await s.execute(select(func.count()).select_from(VideoJob).where(VideoJob.key_id == key_id)))
            holds = (await s.execute(select(Hold.id).where(Hold.key_id == key_id))).scalars().all()
            entries = (await s.execute(select(func.count()).select_from(LedgerEntry).where(
                LedgerEntry.kind == "hold", LedgerEntry.hold_id.in_(list(holds)) if holds else LedgerEntry.id < 0)))
            return int(jobs.scalar() or 0), len(holds), int(entries.scalar() or 0)

    result: tuple[int, int, int] = run_async(work, gw.settings)
    return result


@pytest.fixture()
def client(gateway: Gateway) -> tuple[httpx.Client, str]:
    key = gateway.create_key("idem", credits_usd=5)
    return gateway.client(key), _key_id(key)


def test_same_key_same_body_returns_the_first_answer(gateway: Gateway, client: tuple[httpx.Client, str]) -> None:
    c, key_id = client
    headers = {"Idempotency-Key": "retry-" + secrets.token_hex(4)}
    first = c.post("/v1/videos", json=BODY, headers=headers)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = c.post("/v1/videos", json=dict(reversed(list(BODY.items()))), headers=headers)  # key order is irrelevant
    assert again.status_code == 202, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and again.json() == first.json()
    assert again.headers["openai-poll-after-ms"] == first.headers["openai-poll-after-ms"]
    assert _counts(gateway, key_id) == (1, 1, 1)
    # Another key (same body) is another request; no key at all is never deduplicated.
    other = c.post("/v1/videos", json=BODY, headers={"Idempotency-Key": "retry-other"})
    plain = c.post("/v1/videos", json=BODY)
    assert len({first.json()["id"], other.json()["id"], plain.json()["id"]}) == 3
    assert _counts(gateway, key_id) == (3, 3, 3)


def test_same_key_different_body_is_409(gateway: Gateway, client: tuple[httpx.Client, str]) -> None:
    c, key_id = client
    headers = {"Idempotency-Key": "k-" + secrets.token_hex(4)}
    assert c.post("/v1/videos", json=BODY, headers=headers).status_code == 202
    r = c.post("/v1/videos", json={**BODY, "prompt": "something else"}, headers=headers)
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "idempotency_key_reused" and err["param"] == "Idempotency-Key"
    assert _counts(gateway, key_id) == (1, 1, 1)


def test_keys_are_per_api_key(gateway: Gateway) -> None:
    a, b = (gateway.client(gateway.create_key("idem-a", credits_usd=1)) for _ in range(2))
    headers = {"Idempotency-Key": "shared-name"}
    ra, rb = (c.post("/v1/videos", json=BODY, headers=headers) for c in (a, b))
    assert ra.status_code == rb.status_code == 202 and ra.json()["id"] != rb.json()["id"]


@pytest.mark.parametrize("value", ["", "x" * 256, "caf\u00e9", "a b", "tab\there"])
def test_malformed_keys_are_400(gateway: Gateway, client: tuple[httpx.Client, str], value: str) -> None:
    c, key_id = client
    r = c.post("/v1/videos", json=BODY, headers=[("Idempotency-Key", value.encode("utf-8"))])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "Idempotency-Key"
    assert _counts(gateway, key_id) == (0, 0, 0)


def test_concurrent_duplicates_wait_for_the_first(gateway: Gateway, client: tuple[httpx.Client, str]) -> None:
    c, key_id = client
    headers = {"Idempotency-Key": "burst-" + secrets.token_hex(4)}
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def post() -> None:
        with httpx.Client(base_url=gateway.base_url, headers=c.headers, timeout=60) as own:
            start.wait()
            r = own.post("/v1/videos", json=BODY, headers=headers)
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(answers) == 8
    assert all(r.status_code == 202 for r in answers), [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(1 for r in answers if r.headers.get("idempotent-replayed") != "true") == 1
    assert _counts(gateway, key_id) == (1, 1, 1)


def test_multipart_retries_are_deduplicated(gateway: Gateway, client: tuple[httpx.Client, str]) -> None:
    c, key_id = client
    headers = {"Idempotency-Key": "form-" + secrets.token_hex(4)}
    fields = {k: str(v) for k, v in BODY.items()}
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, "PNG")
    answers = [c.post("/v1/videos", data=fields, files={"input_reference": ("f.png", buf.getvalue(), "image/png")},
                      headers=headers) for _ in range(3)]
    assert all(r.status_code == 202 for r in answers), answers[0].text
    assert len({r.json()["id"] for r in answers}) == 1
    assert _counts(gateway, key_id) == (1, 1, 1)
    other = c.post("/v1/videos", data=fields, headers=headers,
                   files={"input_reference": ("f.png", buf.getvalue()[:-1] + b"\x00", "image/png")})
    assert other.status_code == 409  # another file under the same key


def _set(gw: Gateway, key_id: str, key: str, **values: Any) -> None:
    async def work(sessions: Any) -> None:
        async with sessions() as s, s.begin():
            await s.execute(update(IdempotencyRecord).where(IdempotencyRecord.scope == f"{key_id} POST /v1/videos",
                                                            IdempotencyRecord.key == key).values(**values))

    run_async(work, gw.settings)


def test_an_expired_key_runs_again(gateway: Gateway, client: tuple[httpx.Client, str]) -> None:
    c, key_id = client
    headers = {"Idempotency-Key": "old-" + secrets.token_hex(4)}
    first = c.post("/v1/videos", json=BODY, headers=headers).json()["id"]
    _set(gateway, key_id, headers["Idempotency-Key"],
         expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    second = c.post("/v1/videos", json={**BODY, "prompt": "new body is fine after expiry"}, headers=headers)
    assert second.status_code == 202 and second.json()["id"] != first
    assert _counts(gateway, key_id) == (2, 2, 2)


def test_a_dead_first_attempt_is_recovered_without_a_second_job(gateway: Gateway,
                                                                 client: tuple[httpx.Client, str]) -> None:
    """The process answering the first attempt died after storing the job: the retry gets that job."""
    c, key_id = client
    headers = {"Idempotency-Key": "crash-" + secrets.token_hex(4)}
    first = c.post("/v1/videos", json=BODY, headers=headers).json()["id"]
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    _set(gateway, key_id, headers["Idempotency-Key"], state="running", owner="i_dead", locked_until=past,
         response_body=None, status_code=None)
    again = c.post("/v1/videos", json=BODY, headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first and again.headers["idempotent-replayed"] == "true"
    assert _counts(gateway, key_id) == (1, 1, 1)
    # ... and one that died before storing anything simply runs.
    headers2 = {"Idempotency-Key": "crash-early-" + secrets.token_hex(4)}
    c.post("/v1/videos", json=BODY, headers=headers2)
    _set(gateway, key_id, headers2["Idempotency-Key"], state="running", owner="i_dead", locked_until=past,
         resource_id=None)
    fresh = c.post("/v1/videos", json=BODY, headers=headers2)
    assert fresh.status_code == 202 and fresh.json()["id"] != first
    assert _counts(gateway, key_id) == (3, 3, 3)


def test_an_error_answer_is_not_remembered(gateway: Gateway) -> None:
    broke = gateway.client(gateway.create_key("idem-broke", credits_usd=0))
    headers = {"Idempotency-Key": "err-" + secrets.token_hex(4)}
    bad = broke.post("/v1/videos", json={**BODY, "duration": 1, "resolution": "9000p"}, headers=headers)
    assert bad.status_code == 400
    ok = broke.post("/v1/videos", json=BODY, headers=headers)
    assert ok.status_code == 202, ok.text
