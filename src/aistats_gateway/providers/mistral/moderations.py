"""Mistral's moderation API (``POST {base}/moderations``) answered in OpenAI's moderation shape.

Mistral takes ``{"model", "input": str | [str]}`` (text only) and answers one result per input with
its own nine categories (``sexual``, ``hate_and_discrimination``, ``violence_and_threats``,
``dangerous_and_criminal_content``, ``selfharm``, ``health``, ``financial``, ``law``, ``pii``), each a
boolean in ``categories`` and a score in ``category_scores``.

Invariants:
* Every result has OpenAI's thirteen categories, so the openai SDK's typed ``Moderation`` reads them
  all: each takes the verdict and score of the closest Mistral category (:data:`OPENAI_FROM_MISTRAL`;
  Mistral does not split sub-categories, so ``self-harm/intent`` carries ``selfharm``). Mistral's own
  categories are kept beside them under their own names (``health``, ``pii`` … have no OpenAI
  counterpart). ``flagged`` is true when any Mistral category is.
* Image parts are refused with a 400 naming ``input`` before anything is sent (Mistral reads text only).
* Usage: the ``usage.prompt_tokens`` Mistral reports when it does; otherwise the input is counted as
  one token per four UTF-8 bytes (at least one per input), so a priced call is never charged zero.
"""

from __future__ import annotations

from typing import Any

from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.inference import ModerationResult, post_json
from aistats_gateway.providers.openai_compat.chat import Family, base_url, headers

MISTRAL_CATEGORIES = ("sexual", "hate_and_discrimination", "violence_and_threats", "dangerous_and_criminal_content",
                      "selfharm", "health", "financial", "law", "pii")
#: OpenAI moderation category → the Mistral category whose verdict it carries.
OPENAI_FROM_MISTRAL: dict[str, str] = {
    "harassment": "hate_and_discrimination", "harassment/threatening": "violence_and_threats",
    "hate": "hate_and_discrimination", "hate/threatening": "violence_and_threats",
    "illicit": "dangerous_and_criminal_content", "illicit/violent": "dangerous_and_criminal_content",
    "self-harm": "selfharm", "self-harm/intent": "selfharm", "self-harm/instructions": "selfharm",
    "sexual": "sexual", "sexual/minors": "sexual",
    "violence": "violence_and_threats", "violence/graphic": "violence_and_threats",
}


def texts(inputs: Any) -> list[str]:
    """The texts Mistral is sent, or a client error naming ``input`` (image parts, other types)."""
    if isinstance(inputs, str):
        return [inputs]
    out: list[str] = []
    for i, item in enumerate(inputs if isinstance(inputs, list) else [inputs]):
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            out.append(item["text"])
        else:
            raise ProviderError("client", f"mistral moderates text only: 'input[{i}]' is not text.",
                                param=f"input[{i}]", code="unsupported_input")
    return out


def to_openai(result: dict[str, Any]) -> dict[str, Any]:
    """One Mistral result in OpenAI's shape (Mistral's own categories kept beside OpenAI's)."""
    cats = result.get("categories")
    scores = result.get("category_scores")
    cats = cats if isinstance(cats, dict) else {}
    scores = scores if isinstance(scores, dict) else {}
    own = {str(k): bool(v) for k, v in cats.items()}
    own_scores = {str(k): float(v) for k, v in scores.items() if isinstance(v, (int, float))}
    categories = {o: own.get(m, False) for o, m in OPENAI_FROM_MISTRAL.items()}
    category_scores = {o: own_scores.get(m, 0.0) for o, m in OPENAI_FROM_MISTRAL.items()}
    return {"flagged": any(own.values()), "categories": {**own, **categories},
            "category_scores": {**own_scores, **category_scores},
            "category_applied_input_types": {o: ["text"] for o in OPENAI_FROM_MISTRAL}}


def estimate_tokens(items: list[str]) -> int:
    return sum(max(1, -(-len(t.encode()) // 4)) for t in items)


class MistralModerations:
    """The ``mistral`` provider's ``ModerationProvider``."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.provider_id = family.provider_id

    async def moderate(self, model: str, inputs: Any, ctx: CallContext) -> ModerationResult:
        items = texts(inputs)
        body = {"model": model, "input": inputs if isinstance(inputs, str) else items}
        doc = await post_json(ctx, base_url(self.family, ctx) + "/moderations", body, headers(ctx), self.provider_id)
        results = doc.get("results")
        if not isinstance(results, list) or len(results) != len(items) or not all(
                isinstance(r, dict) for r in results):
            raise ProviderError("upstream", f"{self.provider_id} returned no result per input",
                                code="invalid_upstream_response")
        usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
        reported = usage.get("prompt_tokens") if usage else None
        tokens = reported if isinstance(reported, int) and reported > 0 else estimate_tokens(items)
        return ModerationResult([to_openai(r) for r in results], doc.get("id"), doc.get("model"), tokens)
