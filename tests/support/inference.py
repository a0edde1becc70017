"""Upstream fakes for the inference, media and batch tests, and the openai SDK client they share.

A test module names the providers it talks to once and takes its fixtures from here::

    fakes, oai = upstream_fixtures({"openai": "sk-test", "eleven-labs": Upstream("el-test", host=True)})

or, for a module that builds its own clients, ``fakes = fakes_fixture({...})``; for a module with one
upstream, ``fake, oai = fake_fixture("cohere", "co-test"), oai_fixture("fake")``.

* ``fakes`` (module): ``{provider id: RunningFake}``, one fake (``providers/fakes``) per provider id on
  127.0.0.1, started once per module, with ``AISTATS_PROVIDER_<ID>_BASE_URL`` and ``_API_KEY`` pointing the
  gateway's provider at it for as long as the module runs (the adapters read them at call time: the gateway
  runs in this process), plus ``extra_env``.
* ``oai`` (module): an openai SDK client for the module's ``gateway`` with the module ``key`` (conftest), no
  retries; it starts ``fakes`` (or the fixture ``oai_fixture`` names) before the first call.

Helpers: :func:`token_nanos` (a pro-rata token price), :func:`upstream_env` (the two variables for one
provider), :func:`inference_state` (a fake's inference knobs and records), :func:`reset_knobs` with
:data:`CHAT_KNOBS` (what an autouse reset puts back), :func:`openai_client`,
:func:`assert_streams_with_usage` and :func:`generation`
(GET /v1/generations/{id}, expecting 200).

Invariants: no test talks to the internet (every fake listens on 127.0.0.1); every fake started is stopped
and every variable set is restored, also when a later fake fails to start.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.gateway import Gateway
from tests.support.providers import env_prefix, environment

NANOS = 1_000_000_000


@dataclass(frozen=True)
class Upstream:
    """How one provider's fake runs and what the gateway is told about it."""

    api_key: str  # AISTATS_PROVIDER_<ID>_API_KEY
    host: bool = False  # BASE_URL is the fake's bare URL (the API host), not its URL + ``prefix``
    prefix: str = "/v1"  # RunningFake's prefix
    knobs: Mapping[str, Any] = field(default_factory=dict)  # the fake factory's keyword arguments


def upstream_env(provider_id: str, api_key: str, base_url: str) -> dict[str, str | None]:
    """``AISTATS_PROVIDER_<ID>_BASE_URL`` and ``_API_KEY`` for one provider."""
    p = env_prefix(provider_id)
    return {p + "BASE_URL": base_url, p + "API_KEY": api_key}


@contextmanager
def upstream_fakes(upstreams: Mapping[str, str | Upstream],
                   extra_env: Mapping[str, str | None] | None = None) -> Iterator[dict[str, RunningFake]]:
    """One running fake per provider id (a bare string is the API key of a default :class:`Upstream`), the
    gateway's provider pointed at each, for the duration of the block."""
    specs = {pid: u if isinstance(u, Upstream) else Upstream(u) for pid, u in upstreams.items()}
    with ExitStack() as stack:
        started = {pid: stack.enter_context(RunningFake(pid, prefix=u.prefix, **u.knobs)) for pid, u in specs.items()}
        env: dict[str, str | None] = {}
        for pid, u in specs.items():
            f = started[pid]
            env |= upstream_env(pid, u.api_key, f.url if u.host else f.base_url)
        with environment(env | dict(extra_env or {})):
            yield started


def fakes_fixture(upstreams: Mapping[str, str | Upstream],
                  extra_env: Mapping[str, str | None] | None = None) -> Any:
    """The module's ``fakes`` fixture (see the module docstring)."""

    @pytest.fixture(scope="module", name="fakes")
    def fixture() -> Iterator[dict[str, RunningFake]]:
        with upstream_fakes(upstreams, extra_env) as started:
            yield started

    return fixture


def fake_fixture(provider_id: str, upstream: str | Upstream,
                 extra_env: Mapping[str, str | None] | None = None) -> Any:
    """A module ``fake`` fixture: the one upstream fake of a module that talks to one provider."""

    @pytest.fixture(scope="module", name="fake")
    def fixture() -> Iterator[RunningFake]:
        with upstream_fakes({provider_id: upstream}, extra_env) as started:
            yield started[provider_id]

    return fixture


def oai_fixture(upstream: str = "fakes") -> Any:
    """The module's ``oai`` fixture; it starts the fixture named ``upstream`` first."""

    @pytest.fixture(scope="module", name="oai")
    def fixture(request: pytest.FixtureRequest, gateway: Gateway, key: str) -> openai.OpenAI:
        request.getfixturevalue(upstream)
        return openai_client(gateway, key)

    return fixture


def upstream_fixtures(upstreams: Mapping[str, str | Upstream],
                      extra_env: Mapping[str, str | None] | None = None) -> tuple[Any, Any]:
    """The module's ``fakes`` and ``oai`` fixtures (see the module docstring)."""
    return fakes_fixture(upstreams, extra_env), oai_fixture()


def openai_client(gateway: Gateway, key: str, **kwargs: Any) -> openai.OpenAI:
    """The openai SDK on ``gateway``'s /v1 with ``key``; no retries (a retried call would hide a failure)."""
    return openai.OpenAI(api_key=key, base_url=gateway.base_url + "/v1", max_retries=0, **kwargs)


def token_nanos(*lines: tuple[int, str]) -> int:
    """Pro-rata token cost of (tokens, USD per million tokens) lines, each rounded up to a whole nano-USD."""
    return sum(-(-q * int(Decimal(usd) * NANOS) // 1_000_000) for q, usd in lines if q > 0)


def inference_state(fake: RunningFake) -> Any:
    """The fake's inference state (the openai fake keeps it next to its video state)."""
    return getattr(fake.app.state, "inference", None) or fake.state


# What a chat test may have changed on a fake, as the fakes are built.
CHAT_KNOBS: Mapping[str, Any] = {"fail_next": 0, "tool_calls": None, "reply_text": None, "first_byte_delay": 0.0,
                                 "event_delay": 0.0, "fail_stream_after": None}


def reset_knobs(fakes: Mapping[str, RunningFake], knobs: Mapping[str, Any]) -> None:
    """Set each of ``knobs`` on every fake's inference state."""
    for f in fakes.values():
        st = inference_state(f)
        for name, value in knobs.items():
            setattr(st, name, value)


def assert_streams_with_usage(oai: openai.OpenAI, model: str, text: str, state: Any) -> None:
    """Chat ``text`` streamed with ``include_usage``: the deltas join to ``text`` (the fakes echo) and the last
    chunk's usage has the output tokens the fake (``state``) recorded for the call."""
    chunks = list(oai.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                              stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == state.usages[-1].output_tokens


def generation(api: httpx.Client, gen_id: str) -> dict[str, Any]:
    """GET /v1/generations/{id}, expecting 200: the generation record."""
    r = api.get(f"/v1/generations/{gen_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body
