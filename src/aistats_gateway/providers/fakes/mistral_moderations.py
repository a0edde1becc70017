"""Mistral's moderation API, ``POST /v1/moderations``, on the Mistral fake.

Request ``{"model", "input": str | [str]}`` (text only; any other field, or an input that is not text,
is a 422 in Mistral's error shape). Answer ``{"id", "model", "results": [...]}`` with one result per
input: Mistral's nine ``categories`` (booleans) and ``category_scores`` (0.9 for a category hit by a
word of ``state.flag_words``, mapped from OpenAI's category names, else 0.0001). Usage is reported
only when ``state.moderation_usage`` is set (Mistral's documented answer has none).
"""
from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .inference_common import InferenceState, RecordedCall, count_tokens, first_byte_wait, make_usage

CATEGORIES = ("sexual", "hate_and_discrimination", "violence_and_threats", "dangerous_and_criminal_content",
              "selfharm", "health", "financial", "law", "pii")
#: The fake's flag words name OpenAI categories; Mistral reports them under its own.
FROM_OPENAI = {"violence": "violence_and_threats", "hate": "hate_and_discrimination",
               "illicit/violent": "dangerous_and_criminal_content", "illicit": "dangerous_and_criminal_content",
               "self-harm": "selfharm", "sexual": "sexual"}
PARAMS = frozenset({"model", "input"})


def _unprocessable(loc: str, message: str) -> Any:
    from .openai_inference import OAIError

    return OAIError(422, f"{loc}: {message}", code="422")


def moderations_handler(state: InferenceState) -> Any:
    async def moderations(request: Request, rec: RecordedCall, body: dict[str, Any]) -> Response:
        for key in body:
            if key not in PARAMS:
                raise _unprocessable(f"body.{key}", "Extra inputs are not permitted")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _unprocessable("body.model", "Field required")
        value = body.get("input")
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
            raise _unprocessable("body.input", "Input should be a valid string or a list of strings")
        results = []
        for text in items:
            hit = {FROM_OPENAI[c] for w, c in state.flag_words.items() if w in text.lower() and c in FROM_OPENAI}
            results.append({"categories": {c: c in hit for c in CATEGORIES},
                            "category_scores": {c: 0.9 if c in hit else 0.0001 for c in CATEGORIES}})
        doc: dict[str, Any] = {"id": secrets.token_hex(16), "model": model, "results": results}
        if state.moderation_usage:
            u = make_usage(state, sum(count_tokens(t) for t in items), 0)
            doc["usage"] = {"prompt_tokens": u.input_tokens, "total_tokens": u.input_tokens, "completion_tokens": 0}
        await first_byte_wait(state)
        return JSONResponse(doc)
    return moderations
