"""A fake of the Gemini API's batch mode (AI Studio) next to the fake Gemini API:
``POST /v1beta/models/{model}:batchGenerateContent`` (inline requests, ``{batch: {display_name,
input_config: {requests: {requests: [{request, metadata: {key}}]}}}}``) answering an operation
``batches/{id}``; ``GET /v1beta/batches/{id}``, ``GET /v1beta/batches`` (``operations``,
``nextPageToken``) and ``POST /v1beta/batches/{id}:cancel``. Each request is answered by the fake
``generateContent`` handler; results are inlined (``response.inlinedResponses.inlinedResponses``).

Deterministic: ``BATCH_STATE_PENDING`` until ``polls_to_complete`` retrieves, then
``BATCH_STATE_SUCCEEDED`` with every answer; a cancel makes the next retrieve ``BATCH_STATE_CANCELLED``.
Faults: ``fail_next_creates`` (a 500, nothing created), ``lose_next_creates`` (created, then a 500).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .inference_common import InferenceState

_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
_OUT = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"


@dataclass
class GeminiBatchState:
    api_key: str
    polls_to_complete: int = 1
    fail_next_creates: int = 0
    lose_next_creates: int = 0
    ops: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    created: int = 0


def _err(status: int, message: str, kind: str = "INVALID_ARGUMENT") -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message, "status": kind}}, status)


def batch_routes(state: GeminiBatchState, inference: InferenceState) -> list[BaseRoute]:
    from .google_inference import build

    def authed(request: Request) -> bool:
        return (request.headers.get("x-goog-api-key") or request.query_params.get("key")) == state.api_key

    async def create(request: Request) -> Response:
        if not authed(request):
            return _err(400, "API key not valid. Please pass a valid API key.")
        if state.fail_next_creates > 0:
            state.fail_next_creates -= 1
            return _err(500, "Internal error encountered.", "INTERNAL")
        body = await request.json()
        batch = body.get("batch") or {}
        cfg = batch.get("input_config") or batch.get("inputConfig") or {}
        reqs = ((cfg.get("requests") or {}).get("requests")) or []
        if not reqs:
            return _err(400, "* BatchGenerateContentRequest.batch.input_config: requests is not specified")
        model = request.path_params["model"]
        name = "batches/" + secrets.token_hex(10)
        op = {"name": name, "metadata": {"@type": _TYPE, "model": f"models/{model}", "name": name,
                                         "displayName": batch.get("display_name") or batch.get("displayName"),
                                         "state": "BATCH_STATE_PENDING",
                                         "batchStats": {"requestCount": str(len(reqs))}}, "done": False}
        state.ops[name], state.requests[name], state.polls[name] = op, reqs, 0
        state.created += 1
        if state.lose_next_creates > 0:
            state.lose_next_creates -= 1
            return _err(500, "Internal error encountered.", "INTERNAL")
        return JSONResponse(op)

    def finish(op: dict[str, Any], cancelled: bool) -> None:
        model = str(op["metadata"]["model"]).removeprefix("models/")
        out = []
        ok = failed = 0
        if not cancelled:
            for r in state.requests[op["name"]]:
                meta = r.get("metadata") or {}
                try:
                    resp, _, _ = build(inference, model, r.get("request") or {}, False)
                    out.append({"response": resp, "metadata": meta})
                    ok += 1
                except Exception as e:
                    out.append({"error": {"code": 400, "message": str(getattr(e, "message", e)),
                                          "status": "INVALID_ARGUMENT"}, "metadata": meta})
                    failed += 1
        op["metadata"]["state"] = "BATCH_STATE_CANCELLED" if cancelled else "BATCH_STATE_SUCCEEDED"
        op["metadata"]["batchStats"].update(successfulRequestCount=str(ok), failedRequestCount=str(failed))
        op["done"] = True
        op["response"] = {"@type": _OUT, "inlinedResponses": {"inlinedResponses": out}}

    async def retrieve(request: Request) -> Response:
        if not authed(request):
            return _err(400, "API key not valid. Please pass a valid API key.")
        raw = request.path_params["rest"]
        if raw.endswith(":cancel"):
            return _err(405, "Use POST to cancel.", "UNIMPLEMENTED")
        op = state.ops.get("batches/" + raw)
        if op is None:
            return _err(404, "Requested entity was not found.", "NOT_FOUND")
        st = op["metadata"]["state"]
        if st in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
            state.polls[op["name"]] += 1
            if op["metadata"].get("cancelling"):
                finish(op, True)
            elif state.polls[op["name"]] >= state.polls_to_complete:
                finish(op, False)
            else:
                op["metadata"]["state"] = "BATCH_STATE_RUNNING"
        return JSONResponse(op)

    async def cancel(request: Request) -> Response:
        if not authed(request):
            return _err(400, "API key not valid. Please pass a valid API key.")
        raw = request.path_params["rest"]
        op = state.ops.get("batches/" + raw.removesuffix(":cancel"))
        if op is None or not raw.endswith(":cancel"):
            return _err(404, "Requested entity was not found.", "NOT_FOUND")
        if not op["done"]:
            op["metadata"]["cancelling"] = True
        return JSONResponse({})

    async def list_ops(request: Request) -> Response:
        if not authed(request):
            return _err(400, "API key not valid. Please pass a valid API key.")
        ops = list(reversed(list(state.ops.values())))
        start = int(request.query_params.get("pageToken") or 0)
        size = int(request.query_params.get("pageSize") or 50)
        page = ops[start:start + size]
        body: dict[str, Any] = {"operations": page}
        if start + size < len(ops):
            body["nextPageToken"] = str(start + size)
        return JSONResponse(body)

    return [
        Route("/v1beta/models/{model}:batchGenerateContent", create, methods=["POST"]),
        Route("/v1beta/batches", list_ops, methods=["GET"]),
        Route("/v1beta/batches/{rest}", retrieve, methods=["GET"]),
        Route("/v1beta/batches/{rest}", cancel, methods=["POST"]),
    ]


def create_app(api_key: str = "AIza-test", **knobs: Any) -> Starlette:
    """The fake Gemini API (``providers.fakes.google``) with its batch mode; ``app.state.fake`` is the
    batch state, ``app.state.inference`` the generateContent state."""
    from .google import create_app as google_app

    app = google_app(api_key=api_key)
    inference = app.state.inference
    state = GeminiBatchState(api_key=api_key, **knobs)
    app.router.routes[:0] = batch_routes(state, inference)
    app.state.google, app.state.fake = app.state.fake, state
    return app
