"""Fake MiniMax text chat, ``POST /v1/text/chatcompletion_v2``, mounted into the MiniMax video fake
(state ``app.state.inference``).

Faithful to the documented API: ``Authorization: Bearer`` (a missing key → 1004, a wrong one → 2049);
**errors are HTTP 200 with a non-zero ``base_resp.status_code``** (2013 invalid params naming the field,
1002 rate limit for an injected 429); roles ``system``, ``user``,
``assistant``, ``tool`` (``developer`` → 2013); ``temperature`` and ``top_p`` in ``(0, 1]``;
``max_completion_tokens`` (``max_tokens`` is deprecated but accepted) at least 1; ``n`` only 1;
``tool_choice`` only ``none`` or ``auto``. The answer
is the Chat Completions shape plus ``input_sensitive``/``output_sensitive`` and ``base_resp``; streams are
``data: {chunk}`` events with the usage on the chunk carrying ``finish_reason``. Messages, tools,
``response_format``, echo replies and injected faults are the generic fake's (:mod:`.openai_inference`).
Not faked: ``stop`` and ``seed`` (not documented parameters: recorded and ignored), audio, bot_setting.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .inference_common import InferenceState, first_byte_wait, read_json_body, record, stream
from .openai_inference import OAIError, _chat_result, _chat_stream_events, _check_chat, chat_usage_json

PATH = "/v1/text/chatcompletion_v2"
ROLES = ("system", "user", "assistant", "tool")


class BaseResp(Exception):
    def __init__(self, code: int, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.code, self.message, self.http_status = code, message, http_status

    def response(self) -> JSONResponse:
        return JSONResponse({"id": "", "choices": None, "base_resp": {"status_code": self.code,
                                                                      "status_msg": self.message}},
                            status_code=self.http_status)


def _range(body: dict[str, Any], name: str) -> None:
    v = body.get(name)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1):
        raise BaseResp(2013, f"invalid params, {name} must be in (0, 1]")


def _validate(body: dict[str, Any]) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BaseResp(2013, "invalid params, model is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BaseResp(2013, "invalid params, messages is required")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BaseResp(2013, f"invalid params, messages[{i}].role must be one of {', '.join(ROLES)}")
    _range(body, "temperature")
    _range(body, "top_p")
    for name in ("max_completion_tokens", "max_tokens"):
        v = body.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise BaseResp(2013, f"invalid params, {name} must be a positive integer")
    if body.get("n") not in (None, 1):
        raise BaseResp(2013, "invalid params, n only supports 1")
    if body.get("tool_choice") not in (None, "none", "auto"):  # documented values: none, auto
        raise BaseResp(2013, "invalid params, tool_choice must be none or auto")


def _handler(state: InferenceState) -> Any:
    async def chat(request: Request) -> Response:
        rec = record(state, request)
        try:
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not key:
                raise BaseResp(1004, "login fail: Please carry the API secret key in the 'Authorization' field "
                                     "of the request header")
            if key != state.api_key:
                raise BaseResp(2049, "invalid api key")
            if (status := state.take_failure()) is not None:
                raise BaseResp(1002, "rate limit exceeded(RPM)") if status == 429 else \
                    BaseResp(1000 if status >= 500 else 2013, f"injected failure ({status})", status)
            try:
                body = await read_json_body(request, rec)
            except ValueError:
                raise BaseResp(2013, "invalid params, the body is not JSON") from None
            if not isinstance(body, dict):
                raise BaseResp(2013, "invalid params, the body must be an object")
            _validate(body)
            generic = {k: v for k, v in body.items() if k not in ("stop", "seed")}
            req = _check_chat(generic, state)
            content, calls, finish, usage = _chat_result(state, req)
            base = {"id": secrets.token_hex(16), "object": "chat.completion", "created": int(time.time()),
                    "model": req["model"]}
            await first_byte_wait(state)
            if req["stream"]:
                base["object"] = "chat.completion.chunk"
                events = _chat_stream_events(state, {**req, "include_usage": True, "obfuscate": False}, base,
                                             content, calls, finish, usage)
                return stream(state, events, lambda _i: b'data: {"base_resp": {"status_code": 1000, '
                                                        b'"status_msg": "unknown error"}}\n\n')
            message: dict[str, Any] = {"role": "assistant", "content": content or "", "name": "MiniMax AI",
                                       "audio_content": ""}
            if calls:
                message["tool_calls"] = calls
            return JSONResponse({**base, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                 "usage": {**chat_usage_json(usage), "total_characters": 0},
                                 "input_sensitive": False, "output_sensitive": False, "input_sensitive_type": 0,
                                 "output_sensitive_type": 0, "output_sensitive_int": 0,
                                 "base_resp": {"status_code": 0, "status_msg": ""}})
        except BaseResp as exc:
            response = exc.response()
        except OAIError as exc:  # the generic checks (types, tools, response_format) in MiniMax's shape
            response = BaseResp(2013, f"invalid params, {exc.message}").response()
        rec.status = response.status_code
        return response
    return chat


def routes(state: InferenceState) -> list[BaseRoute]:
    return [Route(PATH, _handler(state), methods=["POST"])]
