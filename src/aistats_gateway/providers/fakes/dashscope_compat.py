"""DashScope's OpenAI-compatible mode (Alibaba Cloud Model Studio), mounted into the Alibaba video fake
under ``/compatible-mode/v1``: ``POST /chat/completions`` and ``POST /embeddings``.

Faithful to the documented API where it differs from OpenAI's: ``temperature`` in ``[0, 2)`` and ``top_p``
in ``(0, 1]``; ``text-embedding-v4`` / ``-v3`` take at most 10 inputs, ``dimensions`` from
``2048, 1536, 1024 (default), 768, 512, 256, 128, 64`` (v3: up to 1024) and ``encoding_format``
``float`` only; errors are ``{"error": {message, type, param, code}}`` with DashScope's codes.
Everything else (auth, messages, tools, streaming with ``stream_options.include_usage``, usage,
faults) is the generic OpenAI-compatible fake (:mod:`.openai_inference`), state ``app.state.inference``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .inference_common import InferenceState, RecordedCall, first_byte_wait, make_usage, seeded_vector
from .openai_embeddings import _inputs
from .openai_inference import OAIError, chat_handler, endpoint, invalid, require

PREFIX = "/compatible-mode/v1"
V4_DIMS = (2048, 1536, 1024, 768, 512, 256, 128, 64)
V3_DIMS = (1024, 768, 512, 256, 128, 64)
MAX_INPUTS = 10


def _number(body: dict[str, Any], name: str, ok: Any, rule: str) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
        raise invalid(name, f"<400> InternalError.Algo.InvalidParameter: Range of {name} should be {rule}",
                      "invalid_parameter_error")


def _chat(state: InferenceState) -> Any:
    generic = chat_handler(state)

    async def chat(request: Request, rec: RecordedCall, body: dict[str, Any]) -> Response:
        _number(body, "temperature", lambda v: 0 <= v < 2, "[0.0, 2.0)")
        _number(body, "top_p", lambda v: 0 < v <= 1, "(0.0, 1.0]")
        return await generic(request, rec, body)
    return chat


def _embeddings(state: InferenceState) -> Any:
    async def embeddings(request: Request, rec: RecordedCall, body: dict[str, Any]) -> Response:
        model = str(require(body, "model"))
        if model not in ("text-embedding-v4", "text-embedding-v3", "text-embedding-v2", "text-embedding-v1"):
            raise OAIError(404, f"Model not exist: {model}", "invalid_request_error", "model", "model_not_found")
        items = _inputs(require(body, "input"))
        if len(items) > MAX_INPUTS:
            raise invalid("input", f"<400> InternalError.Algo.InvalidParameter: Value error, batch size is invalid, "
                                   f"it should not be larger than {MAX_INPUTS}.", "invalid_parameter_error")
        allowed = V4_DIMS if model == "text-embedding-v4" else V3_DIMS if model == "text-embedding-v3" else (1536,)
        dims = body.get("dimensions")
        if dims is not None and (isinstance(dims, bool) or dims not in allowed):
            raise invalid("dimensions", "<400> InternalError.Algo.InvalidParameter: Value error, dimension is invalid, "
                                        f"it should be one of {', '.join(map(str, allowed))}.",
                          "invalid_parameter_error")
        if body.get("encoding_format", "float") != "float":
            raise invalid("encoding_format", "<400> InternalError.Algo.InvalidParameter: encoding_format only "
                                             "supports float.", "invalid_parameter_error")
        size = int(dims or (1024 if model != "text-embedding-v2" and model != "text-embedding-v1" else 1536))
        data = [{"object": "embedding", "index": i, "embedding": seeded_vector(text, size)}
                for i, (text, _) in enumerate(items)]
        usage = make_usage(state, sum(t for _, t in items), 0)
        await first_byte_wait(state)
        return JSONResponse({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens}})
    return embeddings


def routes(state: InferenceState) -> list[BaseRoute]:
    return [Route(PREFIX + "/chat/completions", endpoint(state, "openai", _chat(state)), methods=["POST"]),
            Route(PREFIX + "/embeddings", endpoint(state, "openai", _embeddings(state)), methods=["POST"])]


__all__ = ["PREFIX", "routes"]
