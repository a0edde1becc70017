"""Operator-defined OpenAI-compatible providers from ``AISTATS_PROVIDERS_FILE`` (an Ollama-like server played
by the generic OpenAI-compatible fake): validated on load, routed to, free unless priced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aistats_gateway.inference import providers_file
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.books import assert_books_balance
from tests.support.gateway import BACKENDS, Gateway, running_gateway
from tests.support.inference import generation

MODEL = "meta/llama-3.3-70b"


@pytest.fixture(scope="module")
def ollama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningFake, Path]]:
    with RunningFake("openai-compatible", api_key="ollama") as fake:
        path = tmp_path_factory.mktemp("pf") / "providers.yaml"
        path.write_text(f"""
providers:
  - id: local-ollama
    name: Ollama on this machine
    base_url: {fake.base_url}
    api_key: ollama
    priority: 1
    models:
      - model: {MODEL}
        provider_model_slug: llama3.3
""")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(providers_file.ENV, str(path))
            yield fake, path


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            ollama: tuple[RunningFake, Path]) -> Iterator[Gateway]:
    with running_gateway(request.param, tmp_path_factory.mktemp("gw")) as gw:
        yield gw


def test_operator_provider_is_routed_to_and_free(api: httpx.Client, gateway: Gateway, key: str,
                                                 ollama: tuple[RunningFake, Path]) -> None:
    fake, _ = ollama
    st: Any = fake.state
    r = api.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi llama"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["provider"] == "local-ollama" and body["choices"][0]["message"]["content"] == "hi llama"
    assert body["cost_nanos"] == 0 and st.last_body["model"] == "llama3.3"
    assert st.last_headers["authorization"] == "Bearer ollama"
    assert generation(api, body["id"])["provider"] == "local-ollama"
    s = api.post("/v1/chat/completions", json={"model": f"local-ollama:{MODEL}", "stream": True,
                                               "messages": [{"role": "user", "content": "s"}]})
    assert s.status_code == 200 and '"content":"s"' in s.text.replace(" ", "")
    poor = gateway.client(gateway.create_key("poor"))  # free: no credits needed
    assert poor.post("/v1/chat/completions", json={"model": MODEL, "messages": [
        {"role": "user", "content": "x"}]}).status_code == 200
    assert_books_balance(gateway, key)


@pytest.mark.parametrize("text, where", [
    ("providers: [{id: Bad, base_url: 'http://x', models: []}]", "providers[0].id"),
    ("providers: [{id: ok, base_url: 'ftp://x', models: []}]", "providers[0].base_url"),
    ("providers: [{id: ok, base_url: 'http://x', models: [{model: nobody/none, provider_model_slug: n}]}]",
     "providers[0].models[0].model"),
    ("providers: [{id: openai, base_url: 'http://x', models: []}]", "providers[0].id"),
    ("providers: [{id: ok, base_url: 'http://x', models: [], colour: red}]", "providers[0].colour"),
    (("providers: [{id: ok, base_url: 'http://x', models: [{model: meta/llama-3.3-70b, provider_model_slug: n, "
     "endpoints: [videos]}]}]"), "providers[0].models[0].endpoints"),
])
def test_invalid_files_are_rejected_naming_the_entry(text: str, where: str) -> None:
    from aistats_gateway.providers import inference_adapters  # noqa: F401  (built-in ids registered)

    ids = {"meta/llama-3.3-70b": "meta/llama-3.3-70b"}
    with pytest.raises(providers_file.ProvidersFileError) as e:
        providers_file.parse(text, "providers.yaml", ids)
    assert where in str(e.value)


def _ollama_rows(api: httpx.Client, *, by_filter: bool = False) -> list[dict[str, Any]]:
    if by_filter:
        page = api.get("/v1/models", params={"provider": "local-ollama", "limit": 250}).json()
        (model,) = page["models"]
        assert model["model_id"] == MODEL
    else:
        model = api.get(f"/v1/models/{MODEL}").json()
    return [p for p in model["providers"] if p["api_provider_id"] == "local-ollama"]


def test_models_lists_operator_offers_truthfully(api: httpx.Client, gateway: Gateway,
                                                 ollama: tuple[RunningFake, Path]) -> None:
    _, path = ollama
    for by_filter in (False, True):
        (row,) = _ollama_rows(api, by_filter=by_filter)
        assert row["is_active_gateway"] is True and row["endpoint"] == "chat.completions"
        assert row["provider_model_slug"] == "llama3.3" and row["api_provider_name"] == "Ollama on this machine"
        assert [p["price"] for p in row["pricing"]] == ["0"]
    hidden = path.with_name("providers.hidden")
    path.rename(hidden)
    try:
        for by_filter in (False, True):
            (row,) = _ollama_rows(api, by_filter=by_filter)
            assert row["is_active_gateway"] is False
        r = api.post("/v1/chat/completions", json={"model": f"local-ollama:{MODEL}",
                                                   "messages": [{"role": "user", "content": "gone"}]})
        assert 400 <= r.status_code < 500, r.text
    finally:
        hidden.rename(path)
    (row,) = _ollama_rows(api)
    assert row["is_active_gateway"] is True
    r = api.post("/v1/chat/completions", json={"model": f"local-ollama:{MODEL}",
                                               "messages": [{"role": "user", "content": "back"}]})
    assert r.status_code == 200 and r.json()["provider"] == "local-ollama"


def test_an_invalid_edit_keeps_the_last_valid_file(api: httpx.Client, gateway: Gateway,
                                                   ollama: tuple[RunningFake, Path]) -> None:
    import os

    _, path = ollama
    good = path.read_text()
    stat = path.stat()
    try:
        path.write_text("providers: [{id: Bad}]")
        os.utime(path, (stat.st_atime, stat.st_mtime + 5))
        (row,) = _ollama_rows(api)
        assert row["is_active_gateway"] is True
        r = api.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200 and r.json()["provider"] == "local-ollama"
    finally:
        path.write_text(good)
        os.utime(path, (stat.st_atime, stat.st_mtime + 10))


def test_a_valid_edit_is_read_off_the_event_loop_and_then_served(api: httpx.Client, gateway: Gateway,
                                                                 ollama: tuple[RunningFake, Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed file is parsed in a worker thread (never on the serving loop); calls meanwhile keep the
    served version, and the edit is served once it is read."""
    import asyncio
    import os
    import time

    _, path = ollama
    good = path.read_text()
    stat = path.stat()
    reads: list[bool] = []  # per read of the file: was it on a running event loop?
    real_read = providers_file._read

    def read(p: str) -> Any:
        try:
            asyncio.get_running_loop()
            reads.append(True)
        except RuntimeError:
            reads.append(False)
        return real_read(p)

    monkeypatch.setattr(providers_file, "_read", read)

    def wait_for_name(name: str) -> None:
        deadline = time.monotonic() + 60
        while True:
            (row,) = _ollama_rows(api)
            if row["api_provider_name"] == name:
                return
            assert time.monotonic() < deadline, f"the edit was not served: {row['api_provider_name']!r}"
            r = api.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "m"}]})
            assert r.status_code == 200 and r.json()["provider"] == "local-ollama"  # served all along
            time.sleep(0.02)

    try:
        path.write_text(good.replace("name: Ollama on this machine", "name: Ollama, renamed"))
        os.utime(path, (stat.st_atime, stat.st_mtime + 20))
        wait_for_name("Ollama, renamed")
    finally:
        path.write_text(good)
        os.utime(path, (stat.st_atime, stat.st_mtime + 30))
    wait_for_name("Ollama on this machine")
    assert reads and not any(reads), reads
