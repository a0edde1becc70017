"""``POST /v1/embeddings`` and ``POST /v1/moderations`` of the fake OpenAI(-compatible) API
(:mod:`.openai_inference` mounts them).

Embeddings: ``input`` is a string, an array of strings, an array of token ids or an array of such arrays
(≤ 2048 items, no empty string: 400 naming ``input``); ``encoding_format`` ``float`` (default) or
``base64`` (little-endian float32, as the API sends); ``dimensions`` ≥ 1 only for ``text-embedding-3-*``
models (≤ the model's size; other models: 400 "does not support specifying dimensions") for the OpenAI
provider. Vectors are unit length, seeded by the input text (same text → same vector); the default size is
3072 for ``*-large`` models and 1536 otherwise (``state.usage`` overrides tokens). ``usage`` is
``{prompt_tokens, total_tokens}``; a token-id input counts one token per id.
Moderations: ``input`` a string, an array of strings or of ``{type: text|image_url}`` parts; a result per
string with ``flagged``, the 13 categories, scores (0.9 when a word of ``state.flag_words`` is present,
else 0.0001) and ``category_applied_input_types``. Moderations report no usage (they are free).
"""
from __future__ import annotations

import base64
import secrets
import struct
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .inference_common import (
    InferenceState,
    RecordedCall,
    count_tokens,
    first_byte_wait,
    make_usage,
    seeded_vector,
)

EMBED_PARAMS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
MOD_PARAMS = frozenset({"model", "input"})
CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
              "violence/graphic")
TEXT_ONLY = {"harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
             "self-harm/instructions", "sexual/minors"}


def _default_dims(model: str) -> int:
    return 3072 if "large" in model else 1536


def _inputs(value: Any) -> list[tuple[str, int]]:
    """[(seed text, tokens)] for each embedding input."""
    from .openai_inference import invalid

    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise invalid("input", "'$.input' is invalid. Please check the API reference: "
                               "https://platform.openai.com/docs/api-reference.", None)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [(" ".join(map(str, value)), len(value))]
    if len(value) > 2048:
        raise invalid("input", "Invalid 'input': array too long. Expected an array with maximum length 2048.",
                      "array_above_max_length")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str) and item:
            out.append((item, count_tokens(item)))
        elif isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            out.append((" ".join(map(str, item)), len(item)))
        else:
            raise invalid("input", f"'$.input[{i}]' is invalid. Please check the API reference: "
                                   "https://platform.openai.com/docs/api-reference.", None)
    return out


def embeddings_handler(state: InferenceState) -> Any:
    from .openai_inference import check_type, check_unknown, invalid, require

    async def embeddings(request: Request, rec: RecordedCall, body: dict[str, Any]) -> Response:
        check_unknown(body, EMBED_PARAMS, state)
        model = require(body, "model")
        items = _inputs(require(body, "input"))
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise invalid("encoding_format", f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.")
        dims = check_type(body, "dimensions", (int,), "an integer")
        full = _default_dims(str(model))
        if dims is not None:
            if state.provider == "openai" and not str(model).startswith("text-embedding-3"):
                raise invalid("dimensions", "This model does not support specifying dimensions.", None)
            if not 1 <= dims <= full:
                raise invalid("dimensions", f"Invalid 'dimensions': expected a value between 1 and {full}, but got "
                                            f"{dims} instead.", "integer_above_max_value" if dims > full else
                              "integer_below_min_value")
        size = dims or full
        data = []
        for i, (text, _) in enumerate(items):
            vec = seeded_vector(text, size)
            emb: Any = vec if fmt == "float" else base64.b64encode(struct.pack(f"<{size}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        usage = make_usage(state, sum(t for _, t in items), 0)
        await first_byte_wait(state)
        return JSONResponse({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens}})
    return embeddings


def _moderation_texts(value: Any) -> list[tuple[str, bool]]:
    """[(text, is image)] for each moderation input."""
    from .openai_inference import invalid

    if isinstance(value, str):
        return [(value, False)]
    if not isinstance(value, list) or not value:
        raise invalid("input", "Invalid 'input': expected a string, an array of strings or an array of objects.",
                      "invalid_type")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append((item, False))
        elif isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            out.append((item["text"], False))
        elif isinstance(item, dict) and item.get("type") == "image_url" and isinstance(item.get("image_url"), dict):
            out.append((str(item["image_url"].get("url", "")), True))
        else:
            raise invalid(f"input[{i}]", f"Invalid 'input[{i}]': expected a string or a text/image_url object.",
                          "invalid_type")
    return out


def moderations_handler(state: InferenceState) -> Any:
    from .openai_inference import check_unknown, invalid, require

    async def moderations(request: Request, rec: RecordedCall, body: dict[str, Any]) -> Response:
        check_unknown(body, MOD_PARAMS, state)
        model = body.get("model", "omni-moderation-latest")
        if not isinstance(model, str):
            raise invalid("model", "Invalid type for 'model': expected a string.", "invalid_type")
        inputs = _moderation_texts(require(body, "input"))
        multimodal = isinstance(body["input"], list) and any(isinstance(i, dict) for i in body["input"])
        if multimodal and not model.startswith("omni-moderation"):
            raise invalid("input", f"Model '{model}' does not support image inputs.", None)
        texts = [(t, img) for t, img in inputs]
        if multimodal:  # one result for the whole multimodal input, as the API does
            texts = [(" ".join(t for t, img in inputs if not img), any(img for _, img in inputs))]
        results = []
        for text, has_image in texts:
            hit = {cat for word, cat in state.flag_words.items() if word in text.lower()}
            results.append({
                "flagged": bool(hit),
                "categories": {c: c in hit for c in CATEGORIES},
                "category_scores": {c: 0.9 if c in hit else 0.0001 for c in CATEGORIES},
                "category_applied_input_types": {c: ["text"] + (["image"] if has_image and c not in TEXT_ONLY
                                                                else []) for c in CATEGORIES},
            })
        await first_byte_wait(state)
        return JSONResponse({"id": f"modr-{secrets.token_hex(12)}", "model": model, "results": results})
    return moderations
