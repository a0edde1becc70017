"""A fake of Anthropic's Message Batches API next to the fake Messages API:
``POST/GET /v1/messages/batches``, ``GET /v1/messages/batches/{id}``, ``POST …/{id}/cancel`` and
``GET …/{id}/results`` (JSONL of ``{custom_id, result: {type: succeeded, message} | {type: errored,
error} | {type: canceled}}``), each request answered by the fake Messages handler.

Deterministic, no wall clock: a batch is ``in_progress`` until ``polls_to_complete`` retrieves,
then ``ended`` with every result; a cancel makes the next retrieve ``ended`` with every request
``canceled``. ``custom_id`` must match ``^[a-zA-Z0-9_-]{1,64}$`` as upstream. Faults:
``fail_next_creates`` (a 500, nothing created) and ``lose_next_creates`` (created, then a 500).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .inference_common import InferenceState

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class MessageBatchState:
    api_key: str = "sk-ant-test"
    polls_to_complete: int = 1
    fail_next_creates: int = 0
    lose_next_creates: int = 0
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    results: dict[str, bytes] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    created: int = 0


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def _err(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status)


def batch_routes(state: MessageBatchState, inference: InferenceState, prefix: str = "/v1") -> list[BaseRoute]:
    from .anthropic import PARAMS, AnthropicError, _check, build_message

    def authed(request: Request) -> bool:
        return request.headers.get("x-api-key") == state.api_key and bool(request.headers.get("anthropic-version"))

    async def create(request: Request) -> Response:
        if not authed(request):
            return _err(401, "authentication_error", "invalid x-api-key")
        if state.fail_next_creates > 0:
            state.fail_next_creates -= 1
            return _err(500, "api_error", "Internal server error")
        body = await request.json()
        reqs = body.get("requests")
        if not isinstance(reqs, list) or not reqs:
            return _err(400, "invalid_request_error", "requests: Field required")
        seen: set[str] = set()
        for i, r in enumerate(reqs):
            cid = r.get("custom_id") if isinstance(r, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.match(cid) or cid in seen:
                return _err(400, "invalid_request_error", f"requests.{i}.custom_id: invalid or duplicated")
            seen.add(cid)
        bid = "msgbatch_" + secrets.token_hex(12)
        b = {"id": bid, "type": "message_batch", "processing_status": "in_progress",
             "request_counts": {"processing": len(reqs), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
             "ended_at": None, "created_at": _now(), "expires_at": None, "archived_at": None,
             "cancel_initiated_at": None, "results_url": None}
        state.batches[bid], state.requests[bid], state.polls[bid] = b, reqs, 0
        state.created += 1
        if state.lose_next_creates > 0:
            state.lose_next_creates -= 1
            return _err(500, "api_error", "Internal server error")
        return JSONResponse(b)

    def finish(b: dict[str, Any], cancelled: bool, base: str) -> None:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        out: list[bytes] = []
        for r in state.requests[b["id"]]:
            if cancelled:
                result: dict[str, Any] = {"type": "canceled"}
                counts["canceled"] += 1
            else:
                try:
                    result = {"type": "succeeded",
                              "message": build_message(inference, _check(r.get("params") or {}, inference, PARAMS,
                                                                         counting=False))}
                    counts["succeeded"] += 1
                except AnthropicError as e:
                    result = {"type": "errored", "error": {"type": "error", "error": {
                        "type": "invalid_request_error", "message": e.args[0] if e.args else "invalid"}}}
                    counts["errored"] += 1
            out.append(json.dumps({"custom_id": r["custom_id"], "result": result}).encode())
        state.results[b["id"]] = b"\n".join(out) + b"\n"
        b.update(processing_status="ended", request_counts=counts, ended_at=_now(),
                 results_url=f"{base}/messages/batches/{b['id']}/results")

    def base_of(request: Request) -> str:
        return str(request.base_url).rstrip("/") + prefix

    async def retrieve(request: Request) -> Response:
        if not authed(request):
            return _err(401, "authentication_error", "invalid x-api-key")
        b = state.batches.get(request.path_params["batch_id"])
        if b is None:
            return _err(404, "not_found_error", "Not Found")
        if b["processing_status"] == "in_progress":
            state.polls[b["id"]] += 1
            if state.polls[b["id"]] >= state.polls_to_complete:
                finish(b, False, base_of(request))
        elif b["processing_status"] == "canceling":
            finish(b, True, base_of(request))
        return JSONResponse(b)

    async def list_batches(request: Request) -> Response:
        if not authed(request):
            return _err(401, "authentication_error", "invalid x-api-key")
        data = list(reversed(list(state.batches.values())))
        after = request.query_params.get("after_id")
        if after and after in state.batches:
            ids = [b["id"] for b in data]
            data = data[ids.index(after) + 1:]
        limit = int(request.query_params.get("limit", "20"))
        page = data[:limit]
        return JSONResponse({"data": page, "has_more": len(data) > limit,
                             "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None})

    async def cancel(request: Request) -> Response:
        if not authed(request):
            return _err(401, "authentication_error", "invalid x-api-key")
        b = state.batches.get(request.path_params["batch_id"])
        if b is None:
            return _err(404, "not_found_error", "Not Found")
        if b["processing_status"] == "in_progress":
            b.update(processing_status="canceling", cancel_initiated_at=_now())
        return JSONResponse(b)

    async def results(request: Request) -> Response:
        if not authed(request):
            return _err(401, "authentication_error", "invalid x-api-key")
        data = state.results.get(request.path_params["batch_id"])
        if data is None:
            return _err(404, "not_found_error", "The batch has not ended yet")
        return Response(data, media_type="application/binary")

    return [
        Route(f"{prefix}/messages/batches", create, methods=["POST"]),
        Route(f"{prefix}/messages/batches", list_batches, methods=["GET"]),
        Route(f"{prefix}/messages/batches/{{batch_id}}", retrieve, methods=["GET"]),
        Route(f"{prefix}/messages/batches/{{batch_id}}/cancel", cancel, methods=["POST"]),
        Route(f"{prefix}/messages/batches/{{batch_id}}/results", results, methods=["GET"]),
    ]


def create_app(api_key: str = "sk-ant-test", **knobs: Any) -> Starlette:
    """The fake Messages API with its Message Batches API (``app.state.fake`` is the batch state,
    ``app.state.inference`` the Messages state)."""
    from .anthropic import create_app as messages_app

    app = messages_app(api_key=api_key)
    inference = app.state.fake
    state = MessageBatchState(api_key=api_key, **knobs)
    app.router.routes[:0] = batch_routes(state, inference)
    app.state.fake, app.state.inference = state, inference
    return app
