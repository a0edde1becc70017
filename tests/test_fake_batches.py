"""The native batch fakes on their own: OpenAI's Batch API (with the openai SDK), Anthropic Message
Batches and Gemini batch mode: deterministic progress by polls, per-line answers from the fake
inference handlers, the create faults (failed: nothing created; lost: created, then a 500)."""

from __future__ import annotations

import io
import json

import httpx
import openai

from aistats_gateway.providers.fakes import FAKES
from aistats_gateway.providers.fakes.testing import RunningFake

ANT = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}


def test_openai_batch_api_with_the_sdk() -> None:
    with RunningFake("openai-batch") as f:
        c = openai.OpenAI(api_key="sk-test", base_url=f.base_url, max_retries=0)
        lines = [{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}},
                 {"custom_id": "r2", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}}]
        fo = c.files.create(file=("x.jsonl", io.BytesIO(b"".join(json.dumps(x).encode() + b"\n" for x in lines))),
                            purpose="batch")
        f.state.polls_to_complete = 2
        b = c.batches.create(input_file_id=fo.id, endpoint="/v1/chat/completions", completion_window="24h",
                             metadata={"gateway_batch_id": "gw1"})
        assert b.status == "validating"
        assert [c.batches.retrieve(b.id).status for _ in range(3)] == ["in_progress", "in_progress", "completed"]
        b = c.batches.retrieve(b.id)
        assert b.request_counts is not None and (b.request_counts.completed, b.request_counts.failed) == (1, 1)
        assert b.output_file_id and b.error_file_id
        ok = json.loads(c.files.content(b.output_file_id).text)
        assert ok["custom_id"] == "r1" and ok["response"]["body"]["choices"][0]["message"]["content"] == "hello"
        bad = json.loads(c.files.content(b.error_file_id).text)
        assert bad["response"]["status_code"] == 400
        assert [x.metadata for x in c.batches.list().data] == [{"gateway_batch_id": "gw1"}]
        f.state.fail_next_creates = 1
        try:
            c.batches.create(input_file_id=fo.id, endpoint="/v1/chat/completions", completion_window="24h")
        except openai.InternalServerError:
            pass
        assert f.state.created == 1
        f.state.lose_next_creates = 1
        try:
            c.batches.create(input_file_id=fo.id, endpoint="/v1/chat/completions", completion_window="24h")
        except openai.InternalServerError:
            pass
        assert f.state.created == 2
        c2 = c.batches.create(input_file_id=fo.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert c.batches.cancel(c2.id).status == "cancelling"
        assert c.batches.retrieve(c2.id).status == "cancelled"


def test_anthropic_message_batches() -> None:
    with RunningFake("anthropic-batch") as a:
        r = httpx.post(a.base_url + "/messages/batches", headers=ANT, json={"requests": [
            {"custom_id": "r1", "params": {"model": "claude-haiku-4-5", "max_tokens": 20,
                                           "messages": [{"role": "user", "content": "bonjour"}]}},
            {"custom_id": "r2", "params": {"model": "claude-haiku-4-5", "messages": []}}]})
        assert r.status_code == 200
        bid = r.json()["id"]
        assert httpx.get(a.base_url + f"/messages/batches/{bid}", headers=ANT).json()["processing_status"] == "ended"
        results = [json.loads(x) for x in httpx.get(a.base_url + f"/messages/batches/{bid}/results",
                                                    headers=ANT).text.splitlines()]
        assert results[0]["result"]["type"] == "succeeded"
        assert results[0]["result"]["message"]["content"][0]["text"] == "bonjour"
        assert results[1]["result"]["type"] == "errored"
        bad = httpx.post(a.base_url + "/messages/batches", headers=ANT,
                         json={"requests": [{"custom_id": "no/slash", "params": {}}]})
        assert bad.status_code == 400
        assert httpx.post(a.base_url + "/messages", headers=ANT, json={
            "model": "claude-haiku-4-5", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}).status_code == 200


def test_gemini_batch_mode() -> None:
    app = FAKES["gemini-batch"](api_key="k")
    with RunningFake(app, prefix="") as g:
        h = {"x-goog-api-key": "k"}
        r = httpx.post(g.url + "/v1beta/models/gemini-3-pro-preview:batchGenerateContent", headers=h, json={
            "batch": {"display_name": "gw-x", "input_config": {"requests": {"requests": [
                {"request": {"contents": [{"role": "user", "parts": [{"text": "ciao"}]}]},
                 "metadata": {"key": "r1"}}]}}}})
        assert r.status_code == 200
        name = r.json()["name"]
        op = httpx.get(g.url + f"/v1beta/{name}", headers=h).json()
        assert op["done"] and op["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
        [item] = op["response"]["inlinedResponses"]["inlinedResponses"]
        assert item["metadata"] == {"key": "r1"}
        assert item["response"]["candidates"][0]["content"]["parts"][0]["text"] == "ciao"
        listed = httpx.get(g.url + "/v1beta/batches", headers=h).json()["operations"]
        assert [o["metadata"]["displayName"] for o in listed] == ["gw-x"]
