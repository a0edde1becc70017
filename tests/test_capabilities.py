"""GET /v1/videos/models and GET /v1/batches/models, including the seeds' curl examples."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from aistats_gateway.catalogue.loader import shipped_path
from aistats_gateway.catalogue.schemas import CapabilityList

RAW = yaml.safe_load(shipped_path().read_text())

# The answers printed in ../shared/seeds/000_* and 001_*.
SEED_SORA = {
    "model": "openai/sora",
    "status": "active",
    "input_types": ["text", "image"],
    "output_types": ["video"],
    "supported_params": ["duration", "resolution", "aspect_ratio"],
    "supported_parameters": ["duration", "resolution", "aspect_ratio"],
    "supported_parameters_detail": {
        "duration": {"supported": True, "values": [4, 8, 12], "providers": ["openai"]},
        "resolution": {"supported": True, "values": ["720p", "1080p"], "providers": ["openai"]},
    },
    "providers": [{
        "id": "openai",
        "supported_params": ["duration", "resolution", "aspect_ratio"],
        "supported_parameters": ["duration", "resolution", "aspect_ratio"],
        "supported_parameters_detail": {"duration": {"supported": True, "values": [4, 8, 12]}},
    }],
}


def _batch(model: str, endpoints: list[str]) -> dict[str, Any]:
    return {
        "model": model,
        "status": "active",
        "supported_params": ["endpoint", "completion_window"],
        "supported_parameters": ["endpoint", "completion_window"],
        "supported_parameters_detail": {
            "endpoint": {"supported": True, "values": endpoints, "providers": ["openai"]},
            "completion_window": {"supported": True, "values": ["24h"], "providers": ["openai"]},
        },
    }


SEED_BATCH = [
    _batch("openai/gpt-5-mini", ["/v1/responses", "/v1/chat/completions"]),
    _batch("openai/text-embedding-3-small", ["/v1/embeddings"]),
    _batch("openai/gpt-image-1.5", ["/v1/images/generations", "/v1/images/edits"]),
    _batch("openai/omni-moderation", ["/v1/moderations"]),
    _batch("openai/sora-2", ["/v1/videos"]),
]


def is_subset(expected: Any, actual: Any, path: str = "$") -> None:
    """Every key of ``expected`` is in ``actual`` with an equal value (lists element-wise)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object"
        for k, v in expected.items():
            assert k in actual, f"{path}.{k} missing"
            is_subset(v, actual[k], f"{path}.{k}")
    elif isinstance(expected, list) and expected and isinstance(expected[0], dict):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: length differs"
        for i, (e, a) in enumerate(zip(expected, actual)):
            is_subset(e, a, f"{path}[{i}]")
    else:
        assert expected == actual, f"{path}: {expected!r} != {actual!r}"


def test_seed_video_example(api) -> None:  # type: ignore[no-untyped-def]
    r = api.get("/v1/videos/models?params=size,duration_seconds")
    assert r.status_code == 200
    body = r.json()
    CapabilityList.model_validate(body)
    assert body["object"] == "list"
    sora = [m for m in body["data"] if m["model"] == "openai/sora"]
    assert len(sora) == 1
    is_subset(SEED_SORA, sora[0])
    # Aliases are identical copies.
    for m in body["data"]:
        assert m["supported_params"] == m["supported_parameters"]
        assert m["supported_params_detail"] == m["supported_parameters_detail"]
        for p in m["providers"]:
            assert p["supported_params_detail"] == p["supported_parameters_detail"]
            names = set(p["supported_parameters_detail"])
            aliases = {a for d in p["supported_parameters_detail"].values() for a in d.get("aliases", [])}
            # every listed provider supports both requested parameters (by name or alias)
            known = names | aliases
            assert ({"resolution", "size"} & known) and ({"duration", "duration_seconds"} & known)


def test_seed_batch_example_exact(api) -> None:  # type: ignore[no-untyped-def]
    r = api.get("/v1/batches/models?params=request_endpoint,window")
    assert r.status_code == 200
    body = r.json()
    CapabilityList.model_validate(body)
    assert [m["model"] for m in body["data"]] == [m["model"] for m in SEED_BATCH]
    for expected, actual in zip(SEED_BATCH, body["data"]):
        is_subset(expected, actual)


def test_params_repeated_equals_comma(api) -> None:  # type: ignore[no-untyped-def]
    a = api.get("/v1/videos/models", params=[("params", "size"), ("params", "duration_seconds")]).json()
    b = api.get("/v1/videos/models", params={"params": "size,duration_seconds"}).json()
    c = api.get("/v1/videos/models", params={"params": "resolution,duration"}).json()
    assert a == b == c


def _video_models() -> list[dict[str, Any]]:
    return [m for m in RAW["models"] if m["status"] == "active"
            and any("video.generation" in p["endpoints"] for p in m.get("providers", []))]


def test_without_params_lists_every_active_video_model(api) -> None:  # type: ignore[no-untyped-def]
    body = api.get("/v1/videos/models").json()
    assert [m["model"] for m in body["data"]] == [m["model_id"] for m in _video_models()]
    assert all(m["status"] == "active" for m in body["data"])
    for m in body["data"]:
        assert "pricing" in m and m["pricing"]["currency"] == "usd"
        assert set(m["pricing"]["providers"]) == {p["id"] for p in m["providers"]}


def test_model_level_detail_is_union_of_providers(api) -> None:  # type: ignore[no-untyped-def]
    body = api.get("/v1/videos/models").json()
    multi = [m for m in body["data"] if len(m["providers"]) > 1]
    assert multi, "the catalogue should have video models with several providers"
    for m in multi:
        for name, detail in m["supported_parameters_detail"].items():
            owners = [p for p in m["providers"] if name in p["supported_parameters_detail"]]
            assert detail["providers"] == [p["id"] for p in owners]
            for p in owners:
                for v in p["supported_parameters_detail"][name].get("values", []):
                    assert v in detail["values"]
        assert m["supported_params"] == [
            n for n in dict.fromkeys(n for p in m["providers"] for n in p["supported_params"])]


def test_params_filter_drops_providers_and_models(api) -> None:  # type: ignore[no-untyped-def]
    body = api.get("/v1/videos/models", params={"params": "seed"}).json()
    for m in body["data"]:
        for p in m["providers"]:
            detail = p["supported_parameters_detail"]
            assert "seed" in detail or any("seed" in d.get("aliases", []) for d in detail.values())
    all_models = {m["model"] for m in api.get("/v1/videos/models").json()["data"]}
    seeded = {m["model"] for m in body["data"]}
    assert seeded < all_models  # Kling has no seed, for example


@pytest.mark.parametrize("path", ["/v1/videos/models", "/v1/batches/models"])
def test_unknown_param_matches_nothing(api, path: str) -> None:  # type: ignore[no-untyped-def]
    body = api.get(path, params={"params": "no_such_parameter"}).json()
    assert body == {"object": "list", "data": []}


def test_batch_alias_and_canonical_agree(api) -> None:  # type: ignore[no-untyped-def]
    a = api.get("/v1/batches/models", params={"params": "endpoint,completion_window"}).json()
    b = api.get("/v1/batches/models", params={"params": "request_endpoint"}).json()
    assert [m["model"] for m in a["data"]] == [m["model"] for m in b["data"]] == [m["model"] for m in SEED_BATCH]
