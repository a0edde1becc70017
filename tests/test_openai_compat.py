"""What OpenAI-compatible clients see: the openai SDK lists and retrieves models; create requests
accept every alias the catalogue advertises (JSON and multipart) and refuse spellings that disagree;
``/v1/video/generations`` is the original's alias of ``/v1/videos``. SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from tests.support.gateway import Gateway

MODEL = "local/procedural-video"


@pytest.fixture(scope="module")
def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{gateway.base_url}/v1", max_retries=0)


def test_models_list_and_retrieve(client: openai.OpenAI, api: httpx.Client) -> None:
    seed = api.get("/v1/models").json()
    listed = list(client.models.list())
    assert [m.id for m in listed] == [m["model_id"] for m in seed["models"]] and len(listed) == 50
    assert all(m.object == "model" and m.owned_by for m in listed)
    everything = list(client.models.list(extra_query={"limit": 250}))
    assert len(everything) == seed["total"]
    gpt5 = client.models.retrieve("openai/gpt-5")
    assert gpt5.id == "openai/gpt-5" and gpt5.object == "model" and gpt5.owned_by == "openai"
    assert gpt5.created == next(m.created for m in everything if m.id == "openai/gpt-5") > 0
    extra = gpt5.model_dump()
    assert extra["model_id"] == "openai/gpt-5" and extra["providers"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("openai/no-such-model")


def test_model_by_alias_and_raw_slash(api: httpx.Client) -> None:
    entry = next(m for m in api.get("/v1/models", params={"limit": 250}).json()["models"] if m["aliases"])
    r = api.get(f"/v1/models/{entry['aliases'][0]}")
    assert r.status_code == 200 and r.json()["id"] == entry["model_id"]
    r = api.get(f"/v1/models/{entry['model_id']}")  # the slash unencoded
    assert r.status_code == 200 and r.json()["model_id"] == entry["model_id"]
    err = api.get("/v1/models/nope/nope").json()["error"]
    assert err["code"] == "model_not_found"


def test_seed_page_is_unchanged(api: httpx.Client) -> None:
    page = api.get("/v1/models", params={"limit": 2, "offset": 1, "include_gateway": "false"}).json()
    assert list(page) == ["ok", "limit", "offset", "models", "total", "object", "data"]
    assert page["ok"] is True and page["limit"] == 2 and page["offset"] == 1 and len(page["models"]) == 2
    assert [m["id"] for m in page["data"]] == [m["model_id"] for m in page["models"]]
    assert "providers" not in page["models"][0]


def _advertised_aliases(api: httpx.Client) -> list[tuple[str, str, str]]:
    out = []
    for m in api.get("/v1/videos/models").json()["data"]:
        for name, detail in m["supported_parameters_detail"].items():
            for alias in detail.get("aliases") or []:
                out.append((m["model"], name, alias))
    return out


def _sample(model: dict[str, Any], name: str) -> Any:
    detail = model["supported_parameters_detail"][name]
    if detail.get("values"):
        return detail["values"][0]
    return int(detail.get("default") or detail.get("minimum") or 1)


def test_every_advertised_alias_is_a_known_create_field(api: httpx.Client) -> None:
    """Models without a configured provider answer no_provider_configured, never unknown_parameter."""
    models = {m["model"]: m for m in api.get("/v1/videos/models").json()["data"]}
    triples = _advertised_aliases(api)
    assert {a for _, _, a in triples} >= {"duration_seconds", "seconds", "size"}
    for model_id, name, alias in triples:
        r = api.post("/v1/videos", json={"model": model_id, "prompt": "alias", alias: _sample(models[model_id], name)})
        code = (r.json().get("error") or {}).get("code")
        assert r.status_code in (202, 400, 402, 503), (model_id, alias, r.text)
        assert code not in ("unknown_parameter", "conflicting_parameters"), (model_id, alias, r.text)


@pytest.mark.parametrize("fields", [
    {"duration_seconds": 2},
    {"seconds": 2},
    {"duration": 2, "duration_seconds": 2, "seconds": 2},
    {"duration_seconds": 2, "size": "480p"},
    {"duration_seconds": 2, "size": "480p", "resolution": "480P"},
])
def test_local_model_accepts_aliases(api: httpx.Client, fields: dict[str, Any]) -> None:
    r = api.post("/v1/videos", json={"model": MODEL, "prompt": "aliases", **fields})
    assert r.status_code == 202, r.text
    assert r.json()["seconds"] == 2
    if "size" in fields:
        assert r.json()["size"] == "854x480"


def test_multipart_duration_seconds(api: httpx.Client) -> None:
    r = api.post("/v1/videos", files={"model": (None, MODEL), "prompt": (None, "multipart"),
                                      "duration_seconds": (None, "2"), "size": (None, "480p")})
    assert r.status_code == 202, r.text
    assert r.json()["seconds"] == 2
    r = api.post("/v1/videos", files={"model": (None, MODEL), "prompt": (None, "multipart"),
                                      "duration_seconds": (None, "2"), "seconds": (None, "3")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "conflicting_parameters"


@pytest.mark.parametrize(("fields", "param"), [
    ({"duration": 2, "duration_seconds": 3}, "duration_seconds"),
    ({"seconds": 2, "duration_seconds": 3}, "duration_seconds"),
    ({"duration": 2, "seconds": 4}, "seconds"),
    ({"size": "480p", "resolution": "720p"}, "size"),
    ({"size": "854x480", "resolution": "480p"}, "size"),
])
def test_disagreeing_spellings_are_a_400(api: httpx.Client, fields: dict[str, Any], param: str) -> None:
    r = api.post("/v1/videos", json={"model": MODEL, "prompt": "x", **fields})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == "conflicting_parameters", err


def test_video_generations_alias(api: httpx.Client, gateway: Gateway) -> None:
    r = api.post("/v1/video/generations", json={"model": MODEL, "prompt": "alias route", "duration": 1,
                                                "resolution": "480p"})
    assert r.status_code == 202, r.text
    vid = r.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # finished: completed and its hold settled (nothing changes after)
        one = api.get(f"/v1/video/generations/{vid}").json()
        if one["status"] == "completed" and one["billing"]["state"] == "settled":
            break
        time.sleep(0.1)
    assert one["status"] == "completed" and one == {**api.get(f"/v1/videos/{vid}").json(),
                                                      "download_url": one["download_url"],
                                                      "expires_at": one["expires_at"],
                                                      "outputs": one["outputs"]}
    assert vid in [v["id"] for v in api.get("/v1/video/generations", params={"limit": 100}).json()["data"]]
    assert api.get("/v1/video/generations/models").json()["object"] == "list"
    content = api.get(f"/v1/video/generations/{vid}/content")
    assert content.status_code == 200 and content.content[4:8] == b"ftyp"
    assert api.head(f"/v1/video/generations/{vid}/content").status_code == 200
    link = api.post(f"/v1/video/generations/{vid}/download_url", json={}).json()
    assert httpx.get(link["download_url"]).content == content.content
    assert api.post(f"/v1/video/generations/{vid}/cancel").status_code == 409
    assert api.delete(f"/v1/video/generations/{vid}").json()["deleted"] is True
    assert api.get(f"/v1/video/generations/{vid}").status_code == 404
    assert httpx.get(f"{gateway.base_url}/v1/video/generations").status_code == 401
    paths = api.get("/openapi.json").json()["paths"]
    assert not any(p.startswith("/v1/video/generations") for p in paths)  # documented once, as /v1/videos
