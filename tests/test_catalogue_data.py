"""Facts about the shipped catalogue file (src/aistats_gateway/catalogue/data/catalogue.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aistats_gateway.catalogue.schema import ENDPOINTS, CatalogueFile, Model

DATA = Path(__file__).resolve().parents[1] / "src" / "aistats_gateway" / "catalogue" / "data" / "catalogue.yaml"

BATCH_MODELS = [
    ("openai/gpt-5-mini", ["/v1/responses", "/v1/chat/completions"]),
    ("openai/text-embedding-3-small", ["/v1/embeddings"]),
    ("openai/gpt-image-1.5", ["/v1/images/generations", "/v1/images/edits"]),
    ("openai/omni-moderation", ["/v1/moderations"]),
    ("openai/sora-2", ["/v1/videos"]),
]

SORA_MAP = {
    "duration": {"values": [4, 8, 12], "aliases": ["duration_seconds", "seconds"]},
    "resolution": {"values": ["720p", "1080p"], "aliases": ["size"]},
    "aspect_ratio": {"values": ["16:9", "9:16"]},
}

# Each video family the issue asks for: (model ids, provider that must serve the first id).
VIDEO_FAMILIES = {
    "sora": (["openai/sora-2", "openai/sora-2-pro"], "openai"),
    "veo": (["google/veo-3.1", "google/veo-3.1-fast", "google/veo-3"], "google-vertex"),
    "hailuo": (["minimax/hailuo-2.3", "minimax/hailuo-02"], "minimax"),
    "seedance": (["bytedance/seedance-1.5-pro", "bytedance/seedance-1-lite"], "byteplus"),
    "wan": (["qwen/wan-2.6", "qwen/wan-2.2-plus"], "alibaba"),
    "runway": (["runway/gen-4-turbo", "runway/gen-4.5"], "runway"),
    "grok-imagine": (["x-ai/grok-imagine-video"], "x-ai"),
    "kling": (["kuaishou/kling-v2.6", "kuaishou/kling-v2.1-master"], "kling"),
    "luma": (["luma/ray-2", "luma/ray-flash-2"], "luma"),
}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(DATA.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cat(raw: dict[str, Any]) -> CatalogueFile:
    return CatalogueFile.model_validate(raw)


@pytest.fixture(scope="module")
def models(cat: CatalogueFile) -> dict[str, Model]:
    return {m.model_id: m for m in cat.models}


def _params(model: Model, provider: str, endpoint: str) -> dict[str, dict[str, Any]]:
    """The endpoint's parameter map of one provider, as written in the file (defaults left out)."""
    (mp,) = [p for p in model.providers if p.provider == provider]
    return {name: d.model_dump(exclude_defaults=True) for name, d in mp.parameters[endpoint].items()}


def _endpoints(model: Model) -> set[str]:
    return {e for p in model.providers for e in p.endpoints}


# ---- validity and cross references ---------------------------------------------------------


def test_file_validates(cat: CatalogueFile) -> None:
    assert cat.schema_version == 1


def test_at_least_80_models(cat: CatalogueFile) -> None:
    assert len(cat.models) >= 80


def test_every_endpoint_appears(cat: CatalogueFile) -> None:
    seen = {e for m in cat.models for e in _endpoints(m)}
    assert seen == set(ENDPOINTS)


def test_ids_unique(cat: CatalogueFile) -> None:
    for ids in ([o.id for o in cat.organisations], [p.id for p in cat.providers], [m.model_id for m in cat.models]):
        assert len(ids) == len(set(ids))


def test_aliases_unique_across_models(cat: CatalogueFile) -> None:
    owner: dict[str, str] = {}
    for m in cat.models:
        for a in m.aliases:
            assert owner.setdefault(a, m.model_id) == m.model_id, f"alias {a} of {owner[a]} and {m.model_id}"


def test_organisations_referenced_exist(cat: CatalogueFile) -> None:
    orgs = {o.id for o in cat.organisations}
    for m in cat.models:
        assert m.organisation in orgs, m.model_id


def test_providers_referenced_exist(cat: CatalogueFile) -> None:
    provs = {p.id for p in cat.providers}
    for m in cat.models:
        for p in m.providers:
            assert p.provider in provs, (m.model_id, p.provider)


def test_model_id_prefix_is_organisation(cat: CatalogueFile) -> None:
    builtin = {p.id for p in cat.providers if p.builtin}
    for m in cat.models:
        prefix = m.model_id.split("/", 1)[0]
        if any(p.provider in builtin for p in m.providers):
            assert prefix == "local", m.model_id
        else:
            assert prefix == m.organisation, m.model_id


def test_providers_have_name_link_country(cat: CatalogueFile) -> None:
    for p in cat.providers:
        assert p.name
        if not p.builtin:
            assert p.link and p.link.startswith("https://"), p.id
            assert p.country_code and len(p.country_code) == 2, p.id


def test_registry_provider_ids_present(cat: CatalogueFile) -> None:
    expected = {
        "openai", "anthropic", "google-ai-studio", "google-vertex", "mistral", "deepseek", "x-ai", "minimax",
        "byteplus", "alibaba", "runway", "fal", "kling", "luma", "cohere", "eleven-labs", "together", "groq",
        "amazon-bedrock", "local",
    }
    assert expected <= {p.id for p in cat.providers}


def test_every_provider_serves_a_model(cat: CatalogueFile) -> None:
    used = {p.provider for m in cat.models for p in m.providers}
    assert used == {p.id for p in cat.providers}


def test_statuses_cover_lifecycle(cat: CatalogueFile, models: dict[str, Model]) -> None:
    statuses = {m.status for m in cat.models}
    assert {"active", "deprecated", "retired"} <= statuses
    assert statuses & {"rumoured", "announced"}
    assert models["openai/gpt-3.5-turbo"].status == "deprecated"
    assert models["anthropic/claude-2"].status == "retired"


def test_retired_provider_entries_have_effective_to(cat: CatalogueFile) -> None:
    for m in cat.models:
        if m.status == "retired":
            for p in m.providers:
                assert p.effective_to is not None, m.model_id


def test_alpha_providers_are_few(cat: CatalogueFile) -> None:
    alpha = [(m.model_id, p.provider) for m in cat.models for p in m.providers if p.alpha]
    assert 1 <= len(alpha) <= 3


def test_token_prices_are_per_million(cat: CatalogueFile) -> None:
    for m in cat.models:
        for p in m.providers:
            for r in p.pricing:
                if r.unit == "token":
                    assert r.unit_size == 1_000_000, (m.model_id, p.provider)


def test_video_prices_are_per_second(cat: CatalogueFile) -> None:
    for m in cat.models:
        for p in m.providers:
            if "video.generation" in p.endpoints:
                for r in p.pricing:
                    assert (r.meter, r.unit) == ("output_video_seconds", "second"), (m.model_id, p.provider)


def test_parameters_only_for_listed_endpoints(cat: CatalogueFile) -> None:
    for m in cat.models:
        for p in m.providers:
            assert set(p.parameters) <= set(p.endpoints)


# ---- the seed's examples ---------------------------------------------------------------------


def test_sora_seed_entry(models: dict[str, Model]) -> None:
    sora = models["openai/sora"]
    assert sora.name == "Sora"
    assert sora.status == "active"
    assert sora.input_types == ["text", "image"]
    assert sora.output_types == ["video"]
    assert [p.provider for p in sora.providers] == ["openai"]
    params = _params(sora, "openai", "video.generation")
    assert params == SORA_MAP
    assert list(params) == ["duration", "resolution", "aspect_ratio"]


def test_only_sora_has_the_seed_combination(cat: CatalogueFile) -> None:
    owners = [
        (m.model_id, p.provider)
        for m in cat.models
        for p in m.providers
        if "video.generation" in p.parameters
        and {n: d.model_dump(exclude_defaults=True) for n, d in p.parameters["video.generation"].items()} == SORA_MAP
    ]
    assert owners == [("openai/sora", "openai")]


def test_batch_models_exact(models: dict[str, Model]) -> None:
    for model_id, endpoint_values in BATCH_MODELS:
        m = models[model_id]
        assert m.status == "active", model_id
        assert [p.provider for p in m.providers] == ["openai"], model_id
        assert "batch" in m.providers[0].endpoints, model_id
        params = _params(m, "openai", "batch")
        assert params == {
            "endpoint": {"values": endpoint_values, "aliases": ["request_endpoint"]},
            "completion_window": {"values": ["24h"], "aliases": ["window"]},
        }, model_id
        assert list(params) == ["endpoint", "completion_window"], model_id


def test_batch_models_in_seed_order_and_no_others(cat: CatalogueFile) -> None:
    with_batch = [m.model_id for m in cat.models if "batch" in _endpoints(m)]
    assert with_batch == [model_id for model_id, _ in BATCH_MODELS]


def test_video_models_carry_duration_and_resolution_aliases(cat: CatalogueFile) -> None:
    for m in cat.models:
        for p in m.providers:
            params = p.parameters.get("video.generation") or {}
            if "duration" in params:
                assert params["duration"].aliases == ["duration_seconds", "seconds"], (m.model_id, p.provider)
            if "resolution" in params:
                assert params["resolution"].aliases == ["size"], (m.model_id, p.provider)


# ---- video families ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(VIDEO_FAMILIES))
def test_video_family_present(family: str, models: dict[str, Model]) -> None:
    ids, provider = VIDEO_FAMILIES[family]
    for model_id in ids:
        assert model_id in models, model_id
        m = models[model_id]
        assert "video.generation" in _endpoints(m), model_id
        assert m.output_types == ["video"], model_id
        assert "text" in m.input_types or "image" in m.input_types
    first = models[ids[0]]
    assert provider in [p.provider for p in first.providers]


def test_sora_2_durations_and_resolutions(models: dict[str, Model]) -> None:
    s2 = _params(models["openai/sora-2"], "openai", "video.generation")
    pro = _params(models["openai/sora-2-pro"], "openai", "video.generation")
    for params in (s2, pro):
        assert {4, 8, 12} <= set(params["duration"]["values"])
        assert params["aspect_ratio"]["values"] == ["16:9", "9:16"]
    assert s2["resolution"]["values"] == ["720p"]
    assert pro["resolution"]["values"] == ["720p", "1080p"]


def test_veo_vertex_only_parameters(models: dict[str, Model]) -> None:
    vertex_only = {"generate_audio", "seed", "compression_quality", "resize_mode"}
    for model_id in ("google/veo-3.1", "google/veo-3.1-fast", "google/veo-3"):
        m = models[model_id]
        studio = _params(m, "google-ai-studio", "video.generation")
        vertex = _params(m, "google-vertex", "video.generation")
        assert not vertex_only & set(studio), model_id
        assert vertex_only <= set(vertex), model_id
        for params in (studio, vertex):
            assert params["duration"]["values"] == [4, 6, 8]
            assert params["aspect_ratio"]["values"] == ["16:9", "9:16"]
            assert params["sample_count"]["minimum"] == 1 and params["sample_count"]["maximum"] == 4
            assert params["person_generation"]["values"] == ["dont_allow", "allow_adult", "allow_all"]
            assert {"negative_prompt", "enhance_prompt"} <= set(params)
    assert "4K" in _params(models["google/veo-3.1"], "google-vertex", "video.generation")["resolution"]["values"]


def test_kling_has_no_seed_or_resolution(models: dict[str, Model]) -> None:
    for model_id in ("kuaishou/kling-v2.6", "kuaishou/kling-v2.1-master"):
        for p in models[model_id].providers:
            params = p.parameters["video.generation"]
            assert "seed" not in params and "resolution" not in params
            assert params["duration"].values == [5, 10]
            assert "negative_prompt" in params


def test_some_video_models_have_several_providers(cat: CatalogueFile) -> None:
    multi = [m.model_id for m in cat.models if "video.generation" in _endpoints(m) and len(m.providers) > 1]
    assert any(p.provider == "fal" for m in cat.models if m.model_id in multi for p in m.providers)
    assert len(multi) >= 4


def test_grok_imagine_and_luma_values(models: dict[str, Model]) -> None:
    grok = _params(models["x-ai/grok-imagine-video"], "x-ai", "video.generation")
    assert grok["resolution"]["values"] == ["480p", "720p"]
    assert set(grok["aspect_ratio"]["values"]) == {"1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"}
    ray = _params(models["luma/ray-2"], "luma", "video.generation")
    assert ray["resolution"]["values"] == ["720p", "1080p", "4K"]
    assert ray["duration"]["values"] == [5, 9]


# ---- the local renderer ------------------------------------------------------------------------


def test_local_provider_is_builtin(cat: CatalogueFile) -> None:
    (local,) = [p for p in cat.providers if p.id == "local"]
    assert local.builtin is True
    assert [p.id for p in cat.providers if p.builtin] == ["local"]


def test_local_procedural_video(models: dict[str, Model]) -> None:
    m = models["local/procedural-video"]
    assert m.name == "Local procedural video"
    assert m.organisation == "local"
    assert m.status == "active"
    assert m.input_types == ["text", "image"]
    assert m.output_types == ["video"]
    assert [p.provider for p in m.providers] == ["local"]
    assert m.providers[0].endpoints == ["video.generation"]
    params = _params(m, "local", "video.generation")
    assert params == {
        "duration": {"type": "integer", "minimum": 1, "maximum": 20, "default": 4,
                     "aliases": ["duration_seconds", "seconds"]},
        "resolution": {"values": ["480p", "720p", "1080p"], "default": "720p", "aliases": ["size"]},
        "aspect_ratio": {"values": ["16:9", "9:16", "1:1", "4:3", "3:4"], "default": "16:9"},
        "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295},
        "sample_count": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1},
        "negative_prompt": {"type": "string"},
        "generate_audio": {"type": "boolean", "values": [False], "default": False},
        "input_references": {"type": "array"},
    }
    assert m.providers[0].parameters["video.generation"]["generate_audio"].default is False
    assert [r.price_nanos for r in m.providers[0].pricing] == [0]


# ---- consistency with the gateway's video request ---------------------------------------------

# Top-level fields of POST /v1/videos that a parameter map may describe.
VIDEO_FIELDS = {
    "duration", "resolution", "aspect_ratio", "seed", "sample_count", "negative_prompt", "generate_audio",
    "enhance_prompt", "compression_quality", "person_generation", "resize_mode", "input_references",
}
RESOLUTIONS = {"480p", "720p", "1080p", "1K", "2K", "4K"}
INPUT_ROLES = {"first_frame", "last_frame", "reference", "source", "mask"}


def test_video_parameters_are_request_fields(cat: CatalogueFile) -> None:
    for m in cat.models:
        for p in m.providers:
            names = set(p.parameters.get("video.generation") or {})
            assert names <= VIDEO_FIELDS, (m.model_id, p.provider, names - VIDEO_FIELDS)


def test_video_values_use_gateway_vocabulary(cat: CatalogueFile) -> None:
    for m in cat.models:
        for p in m.providers:
            params = p.parameters.get("video.generation") or {}
            if "resolution" in params:
                assert set(params["resolution"].values or []) <= RESOLUTIONS, (m.model_id, p.provider)
            if "aspect_ratio" in params:
                for v in params["aspect_ratio"].values or []:
                    w, _, h = v.partition(":")
                    assert w.isdigit() and h.isdigit(), (m.model_id, p.provider, v)
            if "input_references" in params and params["input_references"].values:
                assert set(params["input_references"].values) <= INPUT_ROLES, (m.model_id, p.provider)


def test_defaults_are_allowed_values(cat: CatalogueFile) -> None:
    for m in cat.models:
        for p in m.providers:
            for ep, params in p.parameters.items():
                for name, d in params.items():
                    if d.default is None:
                        continue
                    if d.values is not None:
                        assert d.default in d.values, (m.model_id, p.provider, ep, name)
                    if d.minimum is not None:
                        assert d.default >= d.minimum, (m.model_id, p.provider, ep, name)
                    if d.maximum is not None:
                        assert d.default <= d.maximum, (m.model_id, p.provider, ep, name)
