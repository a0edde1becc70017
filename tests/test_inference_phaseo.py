"""The official ``phaseo`` SDK (3.0.0) against the gateway: chat (plain and ``stream_chat``), responses and
messages, through real HTTP on both backends, with the OpenAI fake upstream."""

from __future__ import annotations

from typing import Any

import phaseo
import pytest

from tests.support.gateway import Gateway
from tests.test_inference_api import MINI, fakes, reset  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def sdk(gateway: Gateway, key: str, fakes: Any) -> phaseo.Phaseo:  # noqa: F811
    return phaseo.Phaseo(api_key=key, base_url=gateway.base_url + "/v1", enable_deprecation_warnings=False)


def _get(obj: Any, name: str) -> Any:
    """The SDK returns dicts; read a field either way."""
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def test_phaseo_chat_and_stream_chat(sdk: phaseo.Phaseo) -> None:
    r = sdk.chat.completions.create({"model": MINI, "messages": [{"role": "user", "content": "hi phaseo"}]})
    choice = _get(r, "choices")[0]
    assert _get(_get(choice, "message"), "content") == "hi phaseo"
    assert str(_get(r, "id")).startswith("gen_")
    chunks = list(sdk.stream_chat({"model": MINI, "messages": [{"role": "user", "content": "a b"}]}))
    assert "".join(c["text"] for c in chunks) == "a b"
    assert all(c["id"].startswith("gen_") for c in chunks if "id" in c)


def test_phaseo_responses_and_messages(sdk: phaseo.Phaseo) -> None:
    r = sdk.responses.create({"model": MINI, "input": "resp phaseo"})
    out = _get(r, "output")
    texts = [p["text"] for item in out if item["type"] == "message" for p in item["content"]]
    assert texts == ["resp phaseo"]
    m = sdk.messages.create({"model": MINI, "max_tokens": 20, "messages": [{"role": "user", "content": "msg phaseo"}]})
    assert _get(m, "content")[0]["text"] == "msg phaseo" and _get(m, "type") == "message"
    events = list(sdk.messages.create({"model": MINI, "max_tokens": 20, "stream": True,
                                       "messages": [{"role": "user", "content": "s p"}]}))
    assert "".join(e["text"] for e in events) == "s p"
    stops = [e for e in events if e.get("type") == "message_delta"]
    assert stops and stops[0]["delta"]["stop_reason"] == "end_turn" and stops[0]["usage"]["output_tokens"] > 0
