"""A fake of OpenAI's Batch API: ``/v1/files`` (upload, retrieve, content) and ``/v1/batches``
(create, retrieve, list, cancel), answering each row with the fake chat/embeddings handlers.

Deterministic, no wall clock: a batch moves ``validating → in_progress`` on its first retrieve and
is run (every line answered at once, output and error files written) on the retrieve after
``polls_to_complete`` more; a cancel makes the next retrieve answer ``cancelled`` (no output).

Faults for the gateway's "never submitted twice" rule: ``fail_next_creates`` answers the create
with ``fail_status`` and creates nothing; ``lose_next_creates`` creates the batch and THEN answers
``fail_status`` (the outcome is unknown to the caller, the batch exists and can be found by its
metadata with ``GET /v1/batches``). ``state.created`` counts batches really created.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .inference_common import InferenceState


@dataclass
class BatchFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def obj(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "expires_at": None}


@dataclass
class NativeBatchState:
    api_key: str = "sk-test"
    polls_to_complete: int = 1
    fail_next_creates: int = 0
    lose_next_creates: int = 0
    fail_status: int = 500
    files: dict[str, BatchFile] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    created: int = 0
    idempotency: dict[str, str] = field(default_factory=dict)


def _err(status: int, message: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": code}}, status)


async def _answer(inference: InferenceState, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One line's (status, body), produced by the fake's own handlers."""
    from .openai_inference import OAIError, _chat_result, _check_chat

    try:
        if url.endswith("/chat/completions"):
            req = _check_chat(body, inference)
            content, calls, finish, usage = _chat_result(inference, req)
            from .openai_inference import chat_usage_json

            msg: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            if calls:
                msg["tool_calls"] = calls
            return 200, {"id": f"chatcmpl-{secrets.token_urlsafe(12)}", "object": "chat.completion",
                         "created": int(time.time()), "model": req["model"],
                         "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                         "usage": chat_usage_json(usage, inference)}
    except OAIError as e:
        return e.status, {"error": {"message": e.message, "type": "invalid_request_error", "param": e.param,
                                    "code": e.code}}
    return 400, {"error": {"message": f"The fake batch API does not run {url}.", "type": "invalid_request_error",
                           "param": None, "code": None}}


def batch_routes(state: NativeBatchState, inference: InferenceState, prefix: str = "/v1") -> list[BaseRoute]:
    def authed(request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {state.api_key}"

    async def upload(request: Request) -> Response:
        if not authed(request):
            return _err(401, "Incorrect API key provided.", "invalid_api_key")
        form = await request.form()
        f = form.get("file")
        purpose = str(form.get("purpose") or "")
        if f is None or isinstance(f, str) or purpose != "batch":
            return _err(400, "file and purpose=batch are required")
        data = await f.read()
        bf = BatchFile("file-" + secrets.token_hex(12), f.filename or "input.jsonl", purpose, data)
        state.files[bf.id] = bf
        return JSONResponse(bf.obj())

    async def file_content(request: Request) -> Response:
        if not authed(request):
            return _err(401, "Incorrect API key provided.", "invalid_api_key")
        bf = state.files.get(request.path_params["file_id"])
        if bf is None:
            return _err(404, "No such File object", "file_not_found")
        return Response(bf.data, media_type="application/octet-stream")

    def get_batch(request: Request) -> dict[str, Any] | None:
        return state.batches.get(request.path_params["batch_id"])

    async def create(request: Request) -> Response:
        if not authed(request):
            return _err(401, "Incorrect API key provided.", "invalid_api_key")
        if state.fail_next_creates > 0:
            state.fail_next_creates -= 1
            return _err(state.fail_status, "The server had an error while processing your request.")
        body = await request.json()
        idem = request.headers.get("idempotency-key")
        if idem and idem in state.idempotency:
            return JSONResponse(state.batches[state.idempotency[idem]])
        fid = body.get("input_file_id")
        if fid not in state.files:
            return _err(400, f"Invalid input_file_id {fid!r}", "invalid_file")
        lines = [json.loads(x) for x in state.files[fid].data.splitlines() if x.strip()]
        now = int(time.time())
        b = {"id": "batch_" + secrets.token_hex(12), "object": "batch", "endpoint": body.get("endpoint"),
             "errors": None, "input_file_id": fid, "completion_window": body.get("completion_window", "24h"),
             "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
             "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
             "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
             "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
             "metadata": body.get("metadata")}
        state.batches[b["id"]] = b
        state.polls[b["id"]] = 0
        state.created += 1
        if idem:
            state.idempotency[idem] = b["id"]
        if state.lose_next_creates > 0:
            state.lose_next_creates -= 1
            return _err(state.fail_status, "The server had an error while processing your request.")
        return JSONResponse(b)

    async def run(b: dict[str, Any]) -> None:
        out: list[bytes] = []
        errs: list[bytes] = []
        for ln in (json.loads(x) for x in state.files[b["input_file_id"]].data.splitlines() if x.strip()):
            status, body = await _answer(inference, ln.get("url", ""), ln.get("body") or {})
            rec = {"id": "batch_req_" + secrets.token_hex(8), "custom_id": ln.get("custom_id"),
                   "response": {"status_code": status, "request_id": secrets.token_hex(8), "body": body},
                   "error": None}
            (out if status == 200 else errs).append(json.dumps(rec).encode())
        for name, rows in (("output_file_id", out), ("error_file_id", errs)):
            if rows:
                bf = BatchFile("file-" + secrets.token_hex(12), f"{b['id']}_{name}.jsonl", "batch_output",
                               b"\n".join(rows) + b"\n")
                state.files[bf.id] = bf
                b[name] = bf.id
        b["request_counts"] = {"total": len(out) + len(errs), "completed": len(out), "failed": len(errs)}
        now = int(time.time())
        b.update(status="completed", finalizing_at=now, completed_at=now)

    async def retrieve(request: Request) -> Response:
        if not authed(request):
            return _err(401, "Incorrect API key provided.", "invalid_api_key")
        b = get_batch(request)
        if b is None:
            return _err(404, "No batch found", "not_found")
        if b["status"] == "validating":
            b.update(status="in_progress", in_progress_at=int(time.time()))
        elif b["status"] == "in_progress":
            state.polls[b["id"]] += 1
            if state.polls[b["id"]] >= state.polls_to_complete:
                await run(b)
        elif b["status"] == "cancelling":
            b.update(status="cancelled", cancelled_at=int(time.time()))
        return JSONResponse(b)

    async def list_batches(request: Request) -> Response:
        if not authed(request):
            return _err(401, "Incorrect API key provided.", "invalid_api_key")
        data = sorted(state.batches.values(), key=lambda b: b["created_at"], reverse=True)
        after = request.query_params.get("after")
        if after and after in state.batches:
            ids = [b["id"] for b in data]
            data = data[ids.index(after) + 1:]
        limit = int(request.query_params.get("limit", "20"))
        page = data[:limit]
        return JSONResponse({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                             "last_id": page[-1]["id"] if page else None, "has_more": len(data) > limit})

    async def cancel(request: Request) -> Response:
        if not authed(request):
            return _err(401, "Incorrect API key provided.", "invalid_api_key")
        b = get_batch(request)
        if b is None:
            return _err(404, "No batch found", "not_found")
        if b["status"] in ("validating", "in_progress"):
            b.update(status="cancelling", cancelling_at=int(time.time()))
        return JSONResponse(b)

    return [
        Route(f"{prefix}/files", upload, methods=["POST"]),
        Route(f"{prefix}/files/{{file_id}}/content", file_content, methods=["GET"]),
        Route(f"{prefix}/batches", create, methods=["POST"]),
        Route(f"{prefix}/batches", list_batches, methods=["GET"]),
        Route(f"{prefix}/batches/{{batch_id}}", retrieve, methods=["GET"]),
        Route(f"{prefix}/batches/{{batch_id}}/cancel", cancel, methods=["POST"]),
    ]


def create_app(api_key: str = "sk-test", **knobs: Any) -> Starlette:
    """OpenAI's inference routes and its Batch API on one app (``app.state.fake`` is the batch state,
    ``app.state.inference`` the inference state)."""
    from .openai_inference import inference_routes

    inference = InferenceState(api_key=api_key)
    state = NativeBatchState(api_key=api_key, **knobs)
    app = Starlette(routes=[*batch_routes(state, inference), *inference_routes(inference)])
    app.state.fake, app.state.inference = state, inference
    return app
