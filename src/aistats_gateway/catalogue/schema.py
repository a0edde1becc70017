"""Schema of the catalogue data file (YAML or JSON).

The file describes organisations, providers and models. It is validated on load; every error
names the entry (``models[12] openai/sora``) and the field. See ``docs/catalogue.md``.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENDPOINTS: tuple[str, ...] = (
    "chat.completions",
    "images.generations",
    "audio.speech",
    "audio.transcription",
    "moderations",
    "video.generation",
    "embeddings",
    "batch",
)
Endpoint = Literal[
    "chat.completions",
    "images.generations",
    "audio.speech",
    "audio.transcription",
    "moderations",
    "video.generation",
    "embeddings",
    "batch",
]

# The seed's organisation list, extended with the makers of video models the gateway routes to
# (Kling/Kuaishou, Luma, Runway) and the built-in local renderer.
SEED_ORGANISATIONS: tuple[str, ...] = (
    "ai21", "amazon", "anthropic", "baidu", "black-forest-labs", "bytedance", "cohere",
    "deepseek", "eleven-labs", "google", "ibm", "inclusionai", "lg", "meta", "microsoft",
    "minimax", "mistral", "moonshotai", "nous", "nvidia", "openai", "perplexity", "qwen", "suno",
    "x-ai", "z-ai",
)
EXTRA_ORGANISATIONS: tuple[str, ...] = ("kuaishou", "luma", "runway", "local")
ORGANISATIONS: tuple[str, ...] = SEED_ORGANISATIONS + EXTRA_ORGANISATIONS

STATUSES: tuple[str, ...] = ("rumoured", "announced", "active", "deprecated", "retired")
Status = Literal["rumoured", "announced", "active", "deprecated", "retired"]

CONTENT_TYPES: tuple[str, ...] = ("text", "image", "audio", "video", "file", "embedding")
ContentType = Literal["text", "image", "audio", "video", "file", "embedding"]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9._:-]*$")
_PARAM = re.compile(r"^[a-z][a-z0-9_]*$")

NANOS_PER_USD = 1_000_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Organisation(_Strict):
    id: str
    name: str
    country_code: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if v not in ORGANISATIONS:
            raise ValueError(f"unknown organisation id {v!r}; allowed: {', '.join(ORGANISATIONS)}")
        return v


class Provider(_Strict):
    id: str
    name: str
    link: str | None = None
    country_code: str | None = None
    # Built-in providers (the local renderer) need no credentials and are always routable.
    builtin: bool = False
    # Lower comes first when a request does not choose an order.
    priority: int = 100

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _SLUG.match(v):
            raise ValueError("provider id must be lowercase letters, digits, '.', '_' or '-'")
        return v


class ParameterDetail(_Strict):
    """Structured constraint for one request parameter (``supported_parameters_detail`` entry)."""

    supported: bool = True
    type: Literal["integer", "number", "string", "boolean", "array", "object"] | None = None
    values: list[Any] | None = None
    minimum: float | int | None = None
    maximum: float | int | None = None
    default: Any = None
    aliases: list[str] = Field(default_factory=list)
    description: str | None = None

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        for a in v:
            if not _PARAM.match(a):
                raise ValueError(f"alias {a!r} must be snake_case")
        if len(set(v)) != len(v):
            raise ValueError("aliases must be unique")
        return v

    @model_validator(mode="after")
    def _range(self) -> ParameterDetail:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError("minimum must not exceed maximum")
        if self.values is not None and len(self.values) == 0:
            raise ValueError("values must not be empty (omit it instead)")
        return self


class PriceRule(_Strict):
    """One price: ``price`` USD per ``unit_size`` units of ``meter`` when ``when`` matches."""

    meter: Literal[
        "output_video_seconds",
        "output_video",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "input_audio_seconds",
        "output_audio_seconds",
        "input_characters",
        "output_image",
        "request",
    ]
    unit: Literal["second", "token", "image", "video", "character", "request"]
    unit_size: int = 1
    price: str
    # Conditions on the request (e.g. {resolution: 1080p, audio: true}); all must match.
    when: dict[str, Any] = Field(default_factory=dict)
    # Applied to batch requests (the batch API discount) when set.
    plan: Literal["standard", "batch"] = "standard"

    @field_validator("price")
    @classmethod
    def _price(cls, v: str) -> str:
        try:
            d = Decimal(v)
        except InvalidOperation as e:
            raise ValueError(f"price {v!r} is not a decimal number") from e
        if d < 0:
            raise ValueError("price must not be negative")
        if (d * NANOS_PER_USD) != (d * NANOS_PER_USD).to_integral_value():
            raise ValueError("price has more precision than one nano-USD")
        return v

    @field_validator("unit_size")
    @classmethod
    def _unit_size(cls, v: int) -> int:
        if v < 1:
            raise ValueError("unit_size must be at least 1")
        return v

    @property
    def price_nanos(self) -> int:
        return int(Decimal(self.price) * NANOS_PER_USD)


class ModelProvider(_Strict):
    provider: str
    provider_model_slug: str
    endpoints: list[Endpoint]
    input_modalities: list[ContentType] = Field(default_factory=list)
    output_modalities: list[ContentType] = Field(default_factory=list)
    effective_from: dt.datetime | None = None
    effective_to: dt.datetime | None = None
    alpha: bool = False
    pricing: list[PriceRule] = Field(default_factory=list)
    # Per endpoint: {parameter name: detail}. Order is kept and is the order clients see.
    parameters: dict[Endpoint, dict[str, ParameterDetail]] = Field(default_factory=dict)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one endpoint is required")
        if len(set(v)) != len(v):
            raise ValueError("endpoints must be unique")
        return v

    @model_validator(mode="after")
    def _check(self) -> ModelProvider:
        for ep, params in self.parameters.items():
            if ep not in self.endpoints:
                raise ValueError(f"parameters given for endpoint {ep!r} which is not in endpoints")
            names = set(params)
            for name, detail in params.items():
                if not _PARAM.match(name):
                    raise ValueError(f"parameter name {name!r} must be snake_case")
                clash = names.intersection(detail.aliases)
                if clash:
                    raise ValueError(f"alias {sorted(clash)[0]!r} of {name!r} is also a parameter name")
        if self.effective_from and self.effective_to and self.effective_from > self.effective_to:
            raise ValueError("effective_from must be before effective_to")
        return self


class Model(_Strict):
    model_id: str
    name: str
    organisation: str
    status: Status
    release_date: dt.date | None = None
    announcement_date: dt.date | None = None
    aliases: list[str] = Field(default_factory=list)
    input_types: list[ContentType] = Field(default_factory=list)
    output_types: list[ContentType] = Field(default_factory=list)
    description: str | None = None
    providers: list[ModelProvider] = Field(default_factory=list)

    @field_validator("organisation")
    @classmethod
    def _organisation(cls, v: str) -> str:
        if v not in ORGANISATIONS:
            raise ValueError(f"unknown organisation {v!r}; allowed: {', '.join(ORGANISATIONS)}")
        return v

    @field_validator("model_id")
    @classmethod
    def _model_id(cls, v: str) -> str:
        if not _MODEL_ID.match(v):
            raise ValueError("model_id must look like 'organisation/slug' in lowercase")
        return v

    @model_validator(mode="after")
    def _check(self) -> Model:
        seen: set[str] = set()
        for p in self.providers:
            if p.provider in seen:
                raise ValueError(f"provider {p.provider!r} listed twice")
            seen.add(p.provider)
        return self


class CatalogueFile(_Strict):
    schema_version: Literal[1] = 1
    organisations: list[Organisation] = Field(default_factory=list)
    providers: list[Provider] = Field(default_factory=list)
    models: list[Model] = Field(default_factory=list)
