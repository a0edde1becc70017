"""Mistral moderations through the gateway (openai SDK → gateway → Mistral fake over real HTTP), on SQLite
and PostgreSQL: Mistral's own answer mapped into OpenAI's moderation shape, charged by input tokens
(Mistral's reported usage, else the gateway's count), text only (an image part is a 400 with nothing sent)."""

from __future__ import annotations

import httpx
import openai
import pytest

from aistats_gateway.providers.fakes.testing import RunningFake
from aistats_gateway.providers.mistral.moderations import MISTRAL_CATEGORIES, OPENAI_FROM_MISTRAL, estimate_tokens
from tests.support.books import assert_books_balance
from tests.support.gateway import Gateway
from tests.support.inference import generation, token_nanos, upstream_fixtures
from tests.support.inference import inference_state as inf

MODEL = "mistral/mistral-moderation"  # 0.10 USD per million input tokens
fakes, oai = upstream_fixtures({"mistral": "mistral-test"})


@pytest.fixture(autouse=True)
def reset(fakes: dict[str, RunningFake]) -> None:
    st = inf(fakes["mistral"])
    st.moderation_usage, st.fail_next = False, 0


def test_mistral_answer_in_openai_shape_charged_by_counted_tokens(oai: openai.OpenAI, fakes: dict[str, RunningFake],
                                                                  gateway: Gateway, key: str,
                                                                  api: httpx.Client) -> None:
    texts = ["I will kill the process", "have a nice day"]
    m = oai.moderations.create(model=MODEL, input=texts)
    sent = inf(fakes["mistral"]).last_body
    assert sent == {"model": "mistral-moderation-latest", "input": texts}
    assert [r.flagged for r in m.results] == [True, False]
    hit, clean = m.results
    assert hit.categories.violence and hit.categories.harassment_threatening and not hit.categories.hate
    assert hit.category_scores.violence == pytest.approx(0.9) and clean.category_scores.violence < 0.01
    assert not any(clean.categories.model_dump(by_alias=True).values())
    raw = hit.model_dump(by_alias=True)
    assert set(OPENAI_FROM_MISTRAL) | set(MISTRAL_CATEGORIES) <= set(raw["categories"])  # Mistral's own kept too
    assert raw["categories"]["violence_and_threats"] is True and raw["categories"]["pii"] is False
    assert raw["category_applied_input_types"]["violence"] == ["text"]
    extra = m.model_extra or {}
    assert extra["provider"] == "mistral" and m.id.startswith("gen_")
    assert extra["cost_nanos"] == token_nanos((estimate_tokens(texts), "0.10")) > 0
    g = generation(api, m.id)
    assert g["provider"] == "mistral" and g["cost_nanos"] == extra["cost_nanos"]
    assert_books_balance(gateway, key)


def test_reported_usage_is_what_is_charged(oai: openai.OpenAI, fakes: dict[str, RunningFake], gateway: Gateway,
                                           key: str) -> None:
    st = inf(fakes["mistral"])
    st.moderation_usage = True
    m = oai.moderations.create(model="mistral-moderation-latest", input="a bomb in the plot")
    assert m.results[0].flagged and m.results[0].categories.illicit_violent
    assert (m.model_extra or {})["cost_nanos"] == token_nanos((st.usages[-1].input_tokens, "0.10"))
    assert_books_balance(gateway, key)


def test_an_image_part_is_refused_before_anything_is_sent(oai: openai.OpenAI, fakes: dict[str, RunningFake],
                                                          gateway: Gateway, key: str) -> None:
    st = inf(fakes["mistral"])
    before = st.request_count
    with pytest.raises(openai.BadRequestError) as e:
        oai.moderations.create(model=MODEL, input=[
            {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    assert e.value.status_code == 400 and "input[1]" in str(e.value.body)
    assert st.request_count == before
    assert_books_balance(gateway, key)


def test_a_failing_provider_costs_nothing(oai: openai.OpenAI, fakes: dict[str, RunningFake], gateway: Gateway,
                                          key: str) -> None:
    inf(fakes["mistral"]).fail_next = 1
    with pytest.raises(openai.APIStatusError) as e:
        oai.moderations.create(model=MODEL, input="hello")
    assert e.value.status_code >= 500
    assert_books_balance(gateway, key)
