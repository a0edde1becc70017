"""Fake Bedrock ``InvokeModel`` (``POST /model/{modelId}/invoke``) for the embedding models, mounted into the
Bedrock Converse fake (same SigV4 / Bearer checks, error shape and fault knobs).

* ``amazon.titan-embed-text-v2:0`` — body ``{inputText (required, ≤ 50,000 characters), dimensions
  (1024 | 512 | 256, default 1024), normalize (default true), embeddingTypes (float | binary)}`` →
  ``{embedding, inputTextTokenCount, embeddingsByType}``; ``amazon.titan-embed-text-v1`` takes ``inputText``
  only (1536 values). Any other key: ``ValidationException`` "Malformed input request: extraneous key
  [name] is not permitted" (as the model's JSON schema check answers).
* ``cohere.embed-english-v3`` / ``cohere.embed-multilingual-v3`` — ``{texts (1–96), input_type (required:
  search_document | search_query | classification | clustering), truncate (NONE | START | END),
  embedding_types}`` → ``{id, embeddings, response_type: "embeddings_floats", texts}`` (1024 values).

Every answer carries ``X-Amzn-Bedrock-Input-Token-Count`` (and ``-Output-Token-Count: 0``). Other model ids: 400
``ValidationException`` "The provided model identifier is invalid." Not faked: text-generation InvokeModel
bodies, ``embeddingTypes: binary`` values (zeros), multimodal Titan models.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from starlette.responses import JSONResponse, Response

from .inference_common import InferenceState, count_tokens, make_usage, seeded_vector

TITAN_V2_KEYS = frozenset({"inputText", "dimensions", "normalize", "embeddingTypes"})
COHERE_KEYS = frozenset({"texts", "input_type", "truncate", "embedding_types", "images"})
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")


def _extraneous(body: dict[str, Any], allowed: frozenset[str]) -> Exception | None:
    from .bedrock import invalid

    extra = sorted(set(body) - allowed)
    if extra:
        return invalid(f"Malformed input request: #: extraneous key [{extra[0]}] is not permitted, please reformat "
                       "your input and try again.")
    return None


def _answer(body: dict[str, Any], tokens: int) -> Response:
    return JSONResponse(body, headers={"x-amzn-bedrock-input-token-count": str(tokens),
                                       "x-amzn-bedrock-output-token-count": "0"})


def _titan(state: InferenceState, model: str, body: dict[str, Any]) -> Response:
    from .bedrock import constraint, invalid

    v2 = "-v2" in model
    if (err := _extraneous(body, TITAN_V2_KEYS if v2 else frozenset({"inputText"}))) is not None:
        raise err
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        raise invalid("Malformed input request: #: required key [inputText] not found, please reformat your input "
                      "and try again." if text is None else "Malformed input request: #/inputText: expected minLength:"
                      " 1, actual: 0, please reformat your input and try again.")
    if len(text) > 50_000:
        raise constraint("inputText", "...", "have length less than or equal to 50000")
    dims = body.get("dimensions", 1024 if v2 else 1536)
    if v2 and dims not in (1024, 512, 256):
        raise invalid(f"Malformed input request: #/dimensions: {dims} is not a valid enum value, please reformat "
                      "your input and try again.")
    if "normalize" in body and not isinstance(body["normalize"], bool):
        raise invalid("Malformed input request: #/normalize: expected type: Boolean, please reformat your input "
                      "and try again.")
    vec = seeded_vector(text, int(dims))
    if body.get("normalize", True):
        norm = math.sqrt(sum(x * x for x in vec)) or 1.0
        vec = [x / norm for x in vec]
    tokens = make_usage(state, count_tokens(text), 0).input_tokens
    out: dict[str, Any] = {"embedding": vec, "inputTextTokenCount": tokens}
    if v2:
        out["embeddingsByType"] = {"float": vec}
    return _answer(out, tokens)


def _cohere(state: InferenceState, model: str, body: dict[str, Any]) -> Response:
    from .bedrock import invalid

    if (err := _extraneous(body, COHERE_KEYS)) is not None:
        raise err
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise invalid("Malformed input request: #/texts: expected type: JSONArray of strings (1-96 items), please "
                      "reformat your input and try again.")
    if len(texts) > 96:
        raise invalid("Malformed input request: #/texts: expected maximum item count: 96, found: "
                      f"{len(texts)}, please reformat your input and try again.")
    if body.get("input_type") not in INPUT_TYPES:
        raise invalid("Malformed input request: #/input_type: " + (
            "required key [input_type] not found" if "input_type" not in body else
            f"{body['input_type']} is not a valid enum value") + ", please reformat your input and try again.")
    if body.get("truncate", "END") not in ("NONE", "START", "END"):
        raise invalid(f"Malformed input request: #/truncate: {body['truncate']} is not a valid enum value, please "
                      "reformat your input and try again.")
    vectors = [seeded_vector(t, 1024) for t in texts]
    tokens = make_usage(state, sum(count_tokens(t) for t in texts), 0).input_tokens
    types = body.get("embedding_types")
    embeddings: Any = {"float": vectors} if types else vectors
    return _answer({"id": secrets.token_hex(16), "embeddings": embeddings,
                    "response_type": "embeddings_by_type" if types else "embeddings_floats", "texts": texts}, tokens)


def invoke(state: InferenceState, model: str, body: Any) -> Response:
    from .bedrock import invalid

    if not isinstance(body, dict):
        raise invalid("Malformed input request: expected a JSON object, please reformat your input and try again.")
    if model.startswith("amazon.titan-embed-text-v"):
        return _titan(state, model, body)
    if model in ("cohere.embed-english-v3", "cohere.embed-multilingual-v3"):
        return _cohere(state, model, body)
    raise invalid("The provided model identifier is invalid.")
