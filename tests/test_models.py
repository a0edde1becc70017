"""GET /v1/models: every filter, paging edges and every 400, checked against an oracle that reads
the shipped catalogue file directly."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from aistats_gateway.catalogue.loader import shipped_path
from aistats_gateway.catalogue.schemas import ModelsPage

RAW: dict[str, Any] = yaml.safe_load(shipped_path().read_text())
MODELS: list[dict[str, Any]] = RAW["models"]
ALL_IDS = [m["model_id"] for m in MODELS]


def endpoints_of(m: dict[str, Any]) -> set[str]:
    return {ep for p in m.get("providers", []) for ep in p["endpoints"]}


def oracle(**f: Any) -> list[str]:
    out = []
    for m in MODELS:
        if m["status"] == "rumoured" and not f.get("include_rumoured", True):
            continue
        if m["status"] == "deprecated" and not f.get("include_deprecated", True):
            continue
        if m["status"] == "retired" and not f.get("include_retired", True):
            continue
        if "provider" in f and not {p["provider"] for p in m.get("providers", [])} & set(f["provider"]):
            continue
        if "organisation" in f and m["organisation"] not in f["organisation"]:
            continue
        if "include_endpoints" in f and not endpoints_of(m) & set(f["include_endpoints"]):
            continue
        if "exclude_endpoints" in f and endpoints_of(m) & set(f["exclude_endpoints"]):
            continue
        if "input_types" in f and not set(m.get("input_types", [])) & set(f["input_types"]):
            continue
        if "output_types" in f and not set(m.get("output_types", [])) & set(f["output_types"]):
            continue
        out.append(m["model_id"])
    return out


def fetch_all(api, params: dict[str, Any] | list[tuple[str, str]]) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    items = list(params.items()) if isinstance(params, dict) else list(params)
    ids: list[str] = []
    offset = 0
    total = -1
    while True:
        r = api.get("/v1/models", params=items + [("limit", "250"), ("offset", str(offset))])
        assert r.status_code == 200, r.text
        body = r.json()
        ModelsPage.model_validate(body)
        total = body["total"]
        ids += [m["model_id"] for m in body["models"]]
        offset += 250
        if offset >= total:
            return ids, total


def test_default_page_shape(api) -> None:  # type: ignore[no-untyped-def]
    r = api.get("/v1/models")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["ok"] is True and body["limit"] == 50 and body["offset"] == 0
    assert body["total"] == len(MODELS)
    assert [m["model_id"] for m in body["models"]] == ALL_IDS[:50]
    first = body["models"][0]
    for field in ("model_id", "name", "release_date", "announcement_date", "status", "organisation", "aliases",
                  "endpoints", "providers", "input_types", "output_types"):
        assert field in first
    row = first["providers"][0]
    for field in ("api_provider_id", "api_provider_name", "link", "country_code", "endpoint", "provider_model_slug",
                  "is_active_gateway", "input_modalities", "output_modalities", "effective_from", "effective_to"):
        assert field in row


def test_all_models_in_stable_catalogue_order(api) -> None:  # type: ignore[no-untyped-def]
    ids, total = fetch_all(api, {})
    assert total == len(MODELS) >= 80
    assert ids == ALL_IDS
    assert fetch_all(api, {})[0] == ids


def test_provider_rows_one_per_provider_and_endpoint(api) -> None:  # type: ignore[no-untyped-def]
    body = api.get("/v1/models", params={"limit": 250}).json()
    by_id = {m["model_id"]: m for m in body["models"]}
    for raw in MODELS[:250]:
        got = by_id[raw["model_id"]]
        expected = [(p["provider"], ep) for p in raw.get("providers", []) for ep in p["endpoints"]]
        assert [(r["api_provider_id"], r["endpoint"]) for r in got["providers"]] == expected
        assert set(got["endpoints"]) == endpoints_of(raw)


FILTERS: list[tuple[str, list[str]]] = [
    ("provider", ["openai"]),
    ("provider", ["anthropic", "google-vertex"]),
    ("organisation", ["google"]),
    ("organisation", ["openai", "qwen"]),
    ("include_endpoints", ["video.generation"]),
    ("include_endpoints", ["embeddings", "moderations"]),
    ("exclude_endpoints", ["chat.completions"]),
    ("exclude_endpoints", ["chat.completions", "video.generation"]),
    ("input_types", ["image"]),
    ("input_types", ["audio", "video"]),
    ("output_types", ["video"]),
    ("output_types", ["audio", "image"]),
]


@pytest.mark.parametrize(("name", "values"), FILTERS)
def test_filter_repeated_and_comma_separated(api, name: str, values: list[str]) -> None:  # type: ignore[no-untyped-def]
    expected = oracle(**{name: values})
    assert expected, f"the catalogue should have data for {name}={values}"
    repeated, total = fetch_all(api, [(name, v) for v in values])
    comma, total2 = fetch_all(api, [(name, ",".join(values))])
    assert repeated == comma == expected
    assert total == total2 == len(expected)


@pytest.mark.parametrize("status", ["rumoured", "deprecated", "retired"])
def test_include_status_flags(api, status: str) -> None:  # type: ignore[no-untyped-def]
    flag = f"include_{status}"
    assert any(m["status"] == status for m in MODELS), f"catalogue needs a {status} model"
    with_, _ = fetch_all(api, {flag: "true"})
    without, _ = fetch_all(api, {flag: "false"})
    assert with_ == ALL_IDS
    assert without == oracle(**{flag: False})
    assert all(m["status"] != status for m in MODELS if m["model_id"] in without)


def test_filters_combine(api) -> None:  # type: ignore[no-untyped-def]
    params = {"organisation": "openai", "include_endpoints": "chat.completions", "include_retired": "false",
              "input_types": "image"}
    got, total = fetch_all(api, params)
    assert got == oracle(organisation=["openai"], include_endpoints=["chat.completions"], include_retired=False,
                         input_types=["image"])
    assert total == len(got) > 0


def test_endpoint_aliases_accepted(api) -> None:  # type: ignore[no-untyped-def]
    a, _ = fetch_all(api, {"include_endpoints": "videos"})
    b, _ = fetch_all(api, {"include_endpoints": "video.generation"})
    assert a == b


def test_include_data_and_gateway_sections(api) -> None:  # type: ignore[no-untyped-def]
    body = api.get("/v1/models", params={"include_data": "false"}).json()
    assert all("input_types" not in m and "output_types" not in m for m in body["models"])
    assert all("providers" in m and "endpoints" in m for m in body["models"])
    body = api.get("/v1/models", params={"include_gateway": "false"}).json()
    assert all("providers" not in m and "endpoints" not in m for m in body["models"])
    assert all("input_types" in m for m in body["models"])
    body = api.get("/v1/models", params={"include_gateway": "false", "include_data": "false"}).json()
    assert set(body["models"][0]) == {"model_id", "name", "release_date", "announcement_date", "status",
                                       "organisation", "aliases"}
    ModelsPage.model_validate(body)


def test_paging_edges(api) -> None:  # type: ignore[no-untyped-def]
    one = api.get("/v1/models", params={"limit": 1}).json()
    assert one["limit"] == 1 and len(one["models"]) == 1 and one["total"] == len(MODELS)
    assert one["models"][0]["model_id"] == ALL_IDS[0]
    second = api.get("/v1/models", params={"limit": 1, "offset": 1}).json()
    assert second["models"][0]["model_id"] == ALL_IDS[1]
    big = api.get("/v1/models", params={"limit": 250}).json()
    assert big["limit"] == 250 and len(big["models"]) == min(250, len(MODELS))
    last = api.get("/v1/models", params={"limit": 5, "offset": len(MODELS) - 2}).json()
    assert [m["model_id"] for m in last["models"]] == ALL_IDS[-2:]
    past = api.get("/v1/models", params={"offset": len(MODELS) + 100}).json()
    assert past["models"] == [] and past["total"] == len(MODELS) and past["offset"] == len(MODELS) + 100


@pytest.mark.parametrize(("params", "param"), [
    ({"limit": 0}, "limit"),
    ({"limit": 251}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": -1}, "offset"),
    ({"offset": "x"}, "offset"),
    ({"organisation": "not-an-org"}, "organisation"),
    ({"organisation": "openai,nope"}, "organisation"),
    ({"include_endpoints": "chat.completion"}, "include_endpoints"),
    ({"exclude_endpoints": "bogus"}, "exclude_endpoints"),
    ({"include_rumoured": "maybe"}, "include_rumoured"),
    ({"include_deprecated": "2"}, "include_deprecated"),
    ({"include_retired": "nah"}, "include_retired"),
    ({"include_data": "x"}, "include_data"),
    ({"include_gateway": "x"}, "include_gateway"),
])
def test_bad_query_is_400_naming_param(api, params: dict[str, Any], param: str) -> None:  # type: ignore[no-untyped-def]
    r = api.get("/v1/models", params=params)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"
    assert err["message"]
    assert set(err) == {"message", "type", "param", "code"}


def test_unknown_provider_filter_matches_nothing(api) -> None:  # type: ignore[no-untyped-def]
    body = api.get("/v1/models", params={"provider": "no-such-provider"}).json()
    assert body["models"] == [] and body["total"] == 0


def test_is_active_gateway_false_without_credentials(api) -> None:  # type: ignore[no-untyped-def]
    body = api.get("/v1/models", params={"provider": "anthropic", "limit": 250}).json()
    rows = [r for m in body["models"] for r in m["providers"] if r["api_provider_id"] == "anthropic"]
    assert rows and not any(r["is_active_gateway"] for r in rows)
