"""``local/hash-embed`` and ``local/keyword-moderation``: the ``local`` provider's embeddings and
moderation models (no key, no network, no weights).

Embeddings invariants:
* A vector is a hashed bag of words: each lowercase word (``\\w+``; a token id counts as the word of its
  digits) adds ``±(1 + log tf)`` at index ``blake2b(word) mod dimensions`` (the sign from another bit of
  the hash), and the vector is scaled to unit length (L2). Texts sharing words have a positive cosine
  similarity; the same text always gives the same vector. A text with no word gives the unit vector
  on index 0.
* ``dimensions`` (1..:data:`MAX_DIMENSIONS`, default :data:`DEFAULT_DIMENSIONS`) is the vector length.
* Usage: the input's tokens (``chat.tokens``; token-id inputs: one per id).

Moderation invariants:
* A result per input string (an array of ``{type: text|image_url}`` parts is one input, as OpenAI
  does), in OpenAI's shape: ``flagged``, ``categories``, ``category_scores`` and
  ``category_applied_input_types`` for the 13 categories of ``omni-moderation``.
* A category scores ``0.5 + 0.15·(hits−1)`` (at most 0.99) when its keywords (:data:`KEYWORDS`, whole
  words or phrases, any case) occur, else 0.0001; a hit category is flagged, and so is its parent
  (``violence/graphic`` → ``violence``). ``sexual/minors`` needs a sexual term and a minor term.
  Images are not looked at (their applied input types stay ``["text"]`` only when text was given).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.inference import EmbeddingsRequest, EmbeddingsResult, ModerationResult
from aistats_gateway.providers.local_text.chat import count_tokens

DEFAULT_DIMENSIONS = 384
MAX_DIMENSIONS = 4096
_WORD = re.compile(r"\w+")


def embed_text(text: str, dimensions: int) -> list[float]:
    counts: dict[str, int] = {}
    for w in _WORD.findall(text.lower()):
        counts[w] = counts.get(w, 0) + 1
    vec = [0.0] * dimensions
    for word, tf in counts.items():
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
        vec[h % dimensions] += (1.0 if (h >> 63) & 1 == 0 else -1.0) * (1.0 + math.log(tf))
    norm = math.sqrt(sum(x * x for x in vec))
    if norm == 0:
        vec[0] = 1.0
        return vec
    return [x / norm for x in vec]


class LocalEmbeddings:
    """The ``local`` provider's embeddings adapter (``EmbeddingsProvider``)."""

    provider_id = "local"

    async def embed(self, req: EmbeddingsRequest, ctx: CallContext) -> EmbeddingsResult:
        dims = req.dimensions if req.dimensions is not None else DEFAULT_DIMENSIONS
        if not 1 <= dims <= MAX_DIMENSIONS:
            raise ProviderError("client", f"'dimensions' must be between 1 and {MAX_DIMENSIONS} for the local "
                                "embeddings model.", code="invalid_value", param="dimensions")
        texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in req.inputs]
        used = sum(count_tokens(x) if isinstance(x, str) else len(x) for x in req.inputs)
        return EmbeddingsResult([embed_text(t, dims) for t in texts], max(1, used), req.model)


CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
              "violence/graphic")
KEYWORDS: dict[str, tuple[str, ...]] = {
    "harassment": ("idiot", "stupid", "loser", "moron", "worthless", "pathetic", "shut up"),
    "harassment/threatening": ("i will hurt you", "i will kill you", "i'll kill you", "you will pay",
                               "i know where you live", "watch your back"),
    "hate": ("subhuman", "inferior race", "vermin", "go back to your country"),
    "hate/threatening": ("exterminate them", "wipe them out", "ethnic cleansing"),
    "illicit": ("buy drugs", "make meth", "launder money", "counterfeit", "hack into", "steal a car", "shoplift"),
    "illicit/violent": ("build a bomb", "make a bomb", "pipe bomb", "buy a gun illegally", "poison someone"),
    "self-harm": ("suicide", "self-harm", "self harm", "cut myself", "hurt myself"),
    "self-harm/intent": ("i want to die", "kill myself", "end my life"),
    "self-harm/instructions": ("how to kill myself", "ways to commit suicide", "how to cut myself"),
    "sexual": ("porn", "nude", "naked", "explicit sex", "sexual"),
    "violence": ("kill", "murder", "stab", "shoot", "attack", "beat up", "punch"),
    "violence/graphic": ("gore", "dismember", "mutilate", "blood everywhere", "disembowel"),
}
_MINORS = ("child", "children", "minor", "minors", "underage", "kid", "kids")
_PATTERNS = {c: [re.compile(r"(?<!\w)" + re.escape(k) + r"(?!\w)") for k in words] for c, words in KEYWORDS.items()}
_MINOR = re.compile(r"(?<!\w)(?:" + "|".join(_MINORS) + r")(?!\w)")


def _hits(text: str) -> dict[str, int]:
    low = text.lower()
    hits = {c: sum(len(p.findall(low)) for p in pats) for c, pats in _PATTERNS.items()}
    hits["sexual/minors"] = hits["sexual"] if hits["sexual"] and _MINOR.search(low) else 0
    for c in CATEGORIES:
        if "/" in c and hits.get(c):
            parent = c.split("/")[0]
            hits[parent] = max(hits.get(parent, 0), hits[c])
    return hits


def classify(text: str, has_text: bool = True, has_image: bool = False) -> dict[str, Any]:
    hits = _hits(text)
    scores = {c: (min(0.99, 0.5 + 0.15 * (hits[c] - 1)) if hits.get(c) else 0.0001) for c in CATEGORIES}
    flags = {c: bool(hits.get(c)) for c in CATEGORIES}
    applied = ["text"] if has_text or not has_image else []
    return {"flagged": any(flags.values()), "categories": flags, "category_scores": scores,
            "category_applied_input_types": {c: list(applied) for c in CATEGORIES}}


def _inputs(value: Any) -> list[tuple[str, bool, bool]]:
    """[(text, has text, has image)] per result."""
    if isinstance(value, str):
        return [(value, True, False)]
    if not isinstance(value, list) or not value:
        raise ProviderError("client", "'input' must be a string or a non-empty array.", code="invalid_value",
                            param="input")
    if all(isinstance(x, str) for x in value):
        return [(x, True, False) for x in value]
    texts: list[str] = []
    image = False
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            image = True
        else:
            raise ProviderError("client", f"'input[{i}]' must be a string or a text/image_url object.",
                                code="invalid_value", param=f"input[{i}]")
    return [("\n".join(texts), bool(texts), image)]


class LocalModerations:
    """The ``local`` provider's moderation adapter (``ModerationProvider``)."""

    provider_id = "local"

    async def moderate(self, model: str, inputs: Any, ctx: CallContext) -> ModerationResult:
        items = _inputs(inputs)
        results = [classify(t, has_text, has_image) for t, has_text, has_image in items]
        used = sum(count_tokens(t) for t, _, _ in items)
        digest = hashlib.sha256(repr(items).encode()).hexdigest()[:24]
        return ModerationResult(results, "modr-local-" + digest, model, max(1, used))
