"""The Batches API over real HTTP on both backends, gateway mode against the provider fakes:
the openai SDK flow (file → create → retrieve until terminal → output file), inline requests[],
list and its status aliases, fallback across providers and a failing row (error-file line),
cancel mid-batch, expiry with partial output, 402 before anything runs, exact settlement
(the ledger recomputes; the settled amount is the sum of the rows' costs) and signed webhooks."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select, update

from aistats_gateway.batches.tables import Batch, BatchRow
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.books import batch_books as books
from tests.support.gateway import BACKENDS, Gateway, run_async, running_gateway
from tests.support.inference import fakes_fixture, token_nanos
from tests.support.inference import inference_state as inf
from tests.test_billing_webhooks import Receiver

NANOS = 1_000_000_000
MINI = "openai/gpt-4o-mini"
LLAMA = "meta/llama-3.3-70b"  # served by groq and together
TERMINAL = ("completed", "failed", "expired", "cancelled")


fakes = fakes_fixture({"openai": "sk-test", "groq": "gsk_test", "together": "together-test"})


@pytest.fixture(scope="module", params=BACKENDS)
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
       fakes: dict[str, RunningFake]) -> Iterator[Gateway]:
    with running_gateway(request.param, tmp_path_factory.mktemp("batches"), webhook_allow_local=True,
                         webhook_retry_schedule="0.3,0.3,0.3") as g:
        yield g


@pytest.fixture(autouse=True)
def reset(fakes: dict[str, RunningFake], gw: Gateway) -> None:
    for f in fakes.values():
        st = inf(f)
        st.fail_next = 0
        st.fail_status = 503
        st.retry_after_seconds = 1.0
        st.reply_text = None
    ctx = getattr(gw.app.state.gateway, "batches", None)
    if ctx is not None:
        ctx.limits.held_until = {}


def fresh(gw: Gateway, usd: float = 10) -> tuple[str, httpx.Client, openai.OpenAI]:
    k = gw.create_key("batches", credits_usd=usd)
    return k, gw.client(k), openai.OpenAI(api_key=k, base_url=gw.base_url + "/v1", max_retries=0, timeout=60)


def line(cid: str, content: str, model: str = MINI, **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 20, **body}}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def wait(c: httpx.Client, batch_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b: dict[str, Any] = c.get(f"/v1/batches/{batch_id}").json()
        if b["status"] in statuses:
            return b
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} not in {statuses}: {b}")


def content_lines(c: httpx.Client, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id
    r = c.get(f"/v1/files/{file_id}/content")
    assert r.status_code == 200, r.text
    return [json.loads(x) for x in r.text.splitlines() if x.strip()]


def expected_nanos(input_tokens: int, output_tokens: int, per_million: tuple[str, str] = ("0.15", "0.60")) -> int:
    return token_nanos(*zip((input_tokens, output_tokens), per_million, strict=True))


def test_openai_sdk_flow_file_to_output(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    key, c, oai = fresh(gw)
    rows = [line(f"r{i}", f"hello {i}") for i in range(5)]
    f = oai.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
    b = oai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                           metadata={"job": "nightly"})
    assert b.status == "in_progress" and b.request_counts is not None and b.request_counts.total == 5
    assert (b.model_extra or {})["mode"] == "gateway" and (b.model_extra or {})["billing"]["held_nanos"] > 0
    oai.files.delete(f.id)  # the rows were copied at create: deleting the input changes nothing
    deadline = time.monotonic() + 60
    while b.status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.1)
        b = oai.batches.retrieve(b.id)
    assert b.status == "completed", b
    assert b.request_counts is not None and (b.request_counts.completed, b.request_counts.failed) == (5, 0)
    assert b.output_file_id and b.error_file_id is None and b.metadata == {"job": "nightly"}
    assert b.in_progress_at and b.finalizing_at and b.completed_at
    out = [json.loads(x) for x in oai.files.content(b.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in out] == [f"r{i}" for i in range(5)]
    for o in out:
        assert o["error"] is None and o["response"]["status_code"] == 200 and o["id"].startswith("batch_req_")
        assert o["response"]["body"]["choices"][0]["message"]["content"].startswith("hello")
    # billing: exactly the rows' costs, each priced as the fake reported its usage
    settled, costs, held = books(gw, key, b.id)
    assert settled == costs > 0 and held == 0
    extra = b.model_extra or {}
    assert extra["billing"]["state"] == "settled" and extra["billing"]["settled_nanos"] == costs
    usage = c.get(f"/v1/batches/{b.id}").json()["usage"]
    assert usage["cost_nanos"] == costs and usage["requests"] == 5 and usage["total_tokens"] > 0
    rows_out = c.get(f"/v1/batches/{b.id}/requests").json()["data"]
    assert sum(r["cost_nanos"] for r in rows_out) == costs
    for r in rows_out:
        u = r["usage"]
        assert r["status"] == "completed" and r["provider"] == "openai"
        assert r["cost_nanos"] == expected_nanos(u["input_tokens"], u["output_tokens"])
    # the NDJSON results stream the same lines
    res = c.get(f"/v1/batches/{b.id}/results")
    assert res.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(x)["custom_id"] for x in res.text.splitlines()] == [f"r{i}" for i in range(5)]
    # list, with the status aliases
    listed = oai.batches.list(limit=10)
    assert [x.id for x in listed.data] == [b.id]
    assert c.get("/v1/batches", params={"status": "completed"}).json()["data"][0]["id"] == b.id
    assert c.get("/v1/batches", params={"status": "running"}).json()["data"] == []
    assert c.get("/v1/batch/" + b.id).json()["id"] == b.id  # the alias


def test_inline_requests_fallback_and_a_failing_row(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    key, c, _ = fresh(gw)
    groq, together = inf(fakes["groq"]), inf(fakes["together"])
    groq.fail_next, groq.fail_status = 1, 503
    before = together.request_count
    reqs = [{"custom_id": "ok", "body": {"model": LLAMA, "messages": [{"role": "user", "content": "one"}],
                                         "max_tokens": 10}},
            {"custom_id": "bad", "body": {"model": LLAMA, "messages": [{"role": "wizard", "content": "x"}]}}]
    r = c.post("/v1/batches", json={"requests": reqs, "endpoint": "/v1/chat/completions",
                                    "provider": {"order": ["groq", "together"]}})
    assert r.status_code == 200, r.text
    b = wait(c, r.json()["id"])
    assert b["status"] == "completed" and b["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    out = content_lines(c, b["output_file_id"])
    err = content_lines(c, b["error_file_id"])
    assert [o["custom_id"] for o in out] == ["ok"] and [e["custom_id"] for e in err] == ["bad"]
    assert err[0]["response"]["status_code"] == 400 and err[0]["response"]["body"]["error"]["message"]
    assert together.request_count == before + 1  # the 503 on groq fell back to together
    rows = {x["custom_id"]: x for x in c.get(f"/v1/batches/{b['id']}/requests").json()["data"]}
    assert rows["ok"]["provider"] == "together" and rows["bad"]["status"] == "failed"
    failed = c.get(f"/v1/batches/{b['id']}/requests", params={"status": "failed"}).json()["data"]
    assert [x["custom_id"] for x in failed] == ["bad"]
    settled, costs, held = books(gw, key, b["id"])
    assert settled == costs > 0 and held == 0


def test_validation_errors_name_the_parameter(gw: Gateway) -> None:
    _, c, _ = fresh(gw)
    base = {"endpoint": "/v1/chat/completions", "requests": [line("a", "x")]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "endpoint": "/v1/nope"}, "endpoint"),
        ({**base, "completion_window": "1h"}, "completion_window"),
        ({"endpoint": "/v1/chat/completions"}, "input_file_id"),
        ({**base, "input_file_id": "file-abc"}, "requests"),
        ({**base, "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({**base, "metadata": {"k": "v" * 513}}, "metadata"),
        ({**base, "requests": [line("a", "x"), line("a", "y")]}, "requests"),
        ({**base, "requests": [{"custom_id": "a", "body": {"model": MINI}}]}, "requests"),
        ({**base, "input_file_id": None, "requests": None, "bogus": 1}, "bogus"),
    ]
    for body, param in cases:
        r = c.post("/v1/batches", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.json())
    assert c.post("/v1/batches", json={**base, "requests": None, "input_file_id": "file-nope"}).status_code == 404
    assert c.get("/v1/batches/batch_nope").status_code == 404
    assert c.get("/v1/batches", params={"status": "weird"}).status_code == 400


def test_402_before_anything_runs(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    _, c, _ = fresh(gw, usd=0)
    before = inf(fakes["openai"]).request_count
    r = c.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "requests": [line("a", "x")]})
    assert r.status_code == 402, r.text
    assert r.json()["error"]["code"] == "insufficient_credits"
    assert c.get("/v1/batches").json()["data"] == []
    assert inf(fakes["openai"]).request_count == before

    async def count(sessions: Any) -> int:
        async with sessions() as s:
            return int((await s.execute(select(func.count()).select_from(BatchRow))).scalar_one())

    rows_before = run_async(count, gw.settings)
    r = c.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "requests": [line("b", "y")]})
    assert r.status_code == 402 and run_async(count, gw.settings) == rows_before


def test_cancel_mid_batch_pays_for_finished_rows(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    key, c, oai = fresh(gw)
    groq = inf(fakes["groq"])
    groq.fail_next, groq.fail_status, groq.retry_after_seconds = 10_000, 429, 30.0
    reqs = [{"custom_id": "first", "body": {"model": MINI, "messages": [{"role": "user", "content": "a"}],
                                            "max_tokens": 5}}] + [
        {"custom_id": f"slow{i}", "body": {"model": "groq:" + LLAMA, "messages": [{"role": "user", "content": "b"}],
                                          "max_tokens": 5}} for i in range(3)]
    r = c.post("/v1/batches", json={"requests": reqs, "endpoint": "/v1/chat/completions"})
    assert r.status_code == 200, r.text
    bid = r.json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = c.get(f"/v1/batches/{bid}/requests", params={"status": "completed"}).json()["data"]
        if done:
            break
        time.sleep(0.1)
    assert [x["custom_id"] for x in done] == ["first"]
    cancelled = oai.batches.cancel(bid)
    assert cancelled.status in ("cancelling", "cancelled")
    b = wait(c, bid)
    assert b["status"] == "cancelled" and b["cancelled_at"] and b["cancel_url"] is None
    assert b["request_counts"] == {"total": 4, "completed": 1, "failed": 3}
    assert [o["custom_id"] for o in content_lines(c, b["output_file_id"])] == ["first"]
    errs = content_lines(c, b["error_file_id"])
    assert sorted(e["custom_id"] for e in errs) == ["slow0", "slow1", "slow2"]
    assert all(e["error"]["code"] == "batch_cancelled" and e["response"] is None for e in errs)
    settled, costs, held = books(gw, key, bid)
    assert settled == costs > 0 and held == 0
    assert c.post(f"/v1/batches/{bid}/cancel").json()["status"] == "cancelled"  # idempotent


def test_expiry_keeps_the_partial_output(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    key, c, _ = fresh(gw)
    groq = inf(fakes["groq"])
    groq.fail_next, groq.fail_status, groq.retry_after_seconds = 10_000, 429, 30.0
    reqs = [line("done", "a"), line("late", "b", model="groq:" + LLAMA)]
    r = c.post("/v1/batches", json={"requests": reqs, "endpoint": "/v1/chat/completions"})
    bid = r.json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if c.get(f"/v1/batches/{bid}/requests", params={"status": "completed"}).json()["data"]:
            break
        time.sleep(0.1)

    async def expire(sessions: Any) -> None:  # the completion window ends now (an injected clock)
        async with sessions() as s, s.begin():
            await s.execute(update(Batch).where(Batch.id == bid).values(
                expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))

    run_async(expire, gw.settings)
    b = wait(c, bid)
    assert b["status"] == "expired" and b["expired_at"]
    assert [o["custom_id"] for o in content_lines(c, b["output_file_id"])] == ["done"]
    errs = content_lines(c, b["error_file_id"])
    assert [e["custom_id"] for e in errs] == ["late"] and errs[0]["error"]["code"] == "batch_expired"
    settled, costs, held = books(gw, key, bid)
    assert settled == costs > 0 and held == 0


def test_webhooks_created_progress_completed(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    _, c, _ = fresh(gw)
    rcv = Receiver()
    try:
        r = c.post("/v1/batches", json={
            "endpoint": "/v1/chat/completions", "requests": [line(f"w{i}", "hi") for i in range(3)],
            "webhook": {"url": rcv.url, "events": ["batch.created", "batch.progress", "batch.completed"]}})
        assert r.status_code == 200, r.text
        body = r.json()
        rcv.secret = body["webhook"]["secret"]
        b = wait(c, body["id"])
        assert b["status"] == "completed"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            types = [x["body"]["type"] for x in rcv.calls]
            if "batch.completed" in types:
                break
            time.sleep(0.1)
        types = [x["body"]["type"] for x in rcv.calls]
        assert types[0] == "batch.created" and types[-1] == "batch.completed"
        assert set(types) <= {"batch.created", "batch.progress", "batch.completed"}
        assert len(types) == len({x["headers"]["webhook-id"] for x in rcv.calls})
        done = next(x for x in rcv.calls if x["body"]["type"] == "batch.completed")
        assert done["body"]["data"]["id"] == b["id"] and done["body"]["data"]["output_file_id"]
        assert done["body"]["data"]["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
        assert all(x["verified"] is not False for x in rcv.calls)
        assert done["verified"] is True or done["verified"] is None
    finally:
        rcv.server.stop()


def test_capabilities_and_tenant_isolation(gw: Gateway) -> None:
    _, c, _ = fresh(gw)
    caps = c.get("/v1/batches/capabilities").json()["data"]
    openai_caps = next(x for x in caps if x["id"] == "openai")
    assert {"endpoint": "/v1/chat/completions", "mode": "gateway"} in openai_caps["endpoints"]
    r = c.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "requests": [line("a", "x")]})
    bid = r.json()["id"]
    _, other, _ = fresh(gw)
    assert other.get(f"/v1/batches/{bid}").status_code == 404
    assert other.post(f"/v1/batches/{bid}/cancel").status_code == 404
    assert other.get(f"/v1/batches/{bid}/requests").status_code == 404
    assert other.get(f"/v1/batches/{bid}/results").status_code == 404
    assert other.get("/v1/batches").json()["data"] == []
    wait(c, bid)


def test_batch_models_list_every_batchable_model(gw: Gateway) -> None:
    _, c, _ = fresh(gw)
    seed = c.get("/v1/batches/models", params={"params": "request_endpoint,window"}).json()["data"]
    body = c.get("/v1/batches/models").json()["data"]
    models = [m["model"] for m in body]
    assert models[:len(seed)] == [m["model"] for m in seed]  # the catalogue's (native) entries first
    assert MINI in models and LLAMA in models and len(models) > len(seed)
    mini = next(m for m in body if m["model"] == MINI)
    openai_p = next(p for p in mini["providers"] if p["id"] == "openai")
    assert "gateway" in openai_p["modes"] and "/v1/chat/completions" in openai_p["endpoints"]
    assert openai_p["completion_windows"] == ["24h"]
    llama = next(m for m in body if m["model"] == LLAMA)
    assert {p["id"] for p in llama["providers"]} >= {"groq", "together"}
    assert all(p["modes"] == ["gateway"] for p in llama["providers"])


def test_a_row_is_retried_after_a_retryable_error(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    """Every provider of the row fails retryably once (503): the row is retried later and succeeds."""
    key, c, _ = fresh(gw)
    inf(fakes["openai"]).fail_next, inf(fakes["openai"]).fail_status = 1, 503
    r = c.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "requests": [line("again", "retry me")]})
    assert r.status_code == 200, r.text
    b = wait(c, r.json()["id"])
    assert b["status"] == "completed" and b["request_counts"]["completed"] == 1
    [row] = c.get(f"/v1/batches/{b['id']}/requests").json()["data"]
    assert row["attempts"] == 2 and row["status"] == "completed" and row["error"] is None
    settled, costs, held = books(gw, key, b["id"])
    assert settled == costs > 0 and held == 0


def test_batches_in_flight_per_workspace_are_limited(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    _, c, _ = fresh(gw)
    groq = inf(fakes["groq"])
    groq.fail_next, groq.fail_status, groq.retry_after_seconds = 10_000, 429, 30.0
    body = {"endpoint": "/v1/chat/completions", "provider": {"only": ["groq"]},
            "requests": [line("slow", "x", model=LLAMA)]}
    old = gw.settings.batches_max_in_flight
    gw.settings.batches_max_in_flight = 1
    try:
        first = c.post("/v1/batches", json=body)
        assert first.status_code == 200, first.text
        second = c.post("/v1/batches", json=body)
        assert second.status_code == 429 and second.json()["error"]["code"] == "batch_limit_reached"
        _, other, _ = fresh(gw)  # another workspace is not affected
        third = other.post("/v1/batches", json=body)
        assert third.status_code == 200, third.text
        for cl, r in ((c, first), (other, third)):
            assert cl.post(f"/v1/batches/{r.json()['id']}/cancel").status_code == 200
            assert wait(cl, r.json()["id"])["status"] == "cancelled"
        again = c.post("/v1/batches", json={"endpoint": "/v1/chat/completions", "requests": [line("ok", "y")]})
        assert again.status_code == 200, again.text
        wait(c, again.json()["id"])
    finally:
        gw.settings.batches_max_in_flight = old


def test_completion_windows_are_exactly_the_advertised_ones(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    _, c, _ = fresh(gw)
    base = {"endpoint": "/v1/chat/completions", "requests": [line("a", "x")]}
    for window in ("1h", "banana", "0h", "48h"):
        r = c.post("/v1/batches", json={**base, "completion_window": window})
        assert r.status_code == 400 and r.json()["error"]["param"] == "completion_window", (window, r.text)
    old = gw.settings.batches_completion_windows
    gw.settings.batches_completion_windows = "1h,24h"  # the operator lets gateway-mode batches run in an hour
    try:
        models = c.get("/v1/batches/models").json()["data"]
        mini = next(p for m in models if m["model"] == MINI for p in m["providers"] if p["id"] == "openai")
        assert mini["completion_windows"] == ["1h", "24h"]
        caps = next(x for x in c.get("/v1/batches/capabilities").json()["data"] if x["id"] == "openai")
        assert caps["completion_windows"] == ["1h", "24h"]
        r = c.post("/v1/batches", json={**base, "completion_window": "1h"})
        assert r.status_code == 200, r.text
        b = r.json()
        assert b["completion_window"] == "1h" and b["expires_at"] - b["created_at"] == 3600
        assert wait(c, b["id"])["status"] == "completed"
        r = c.post("/v1/batches", json={**base, "completion_window": "48h"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "completion_window"
        # native mode takes what the catalogue lists for the provider's batch API (24h for OpenAI)
        r = c.post("/v1/batches", json={**base, "mode": "native", "completion_window": "1h"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "completion_window", r.text
        assert "24h" in r.json()["error"]["message"]
    finally:
        gw.settings.batches_completion_windows = old
