"""Wire schemas of the catalogue endpoints (they generate /openapi.json)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aistats_gateway.catalogue.schema import ENDPOINTS, ORGANISATIONS

OrganisationId = Literal[ORGANISATIONS]  # type: ignore[valid-type]
EndpointId = Literal[ENDPOINTS]  # type: ignore[valid-type]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParameterDetailOut(_Out):
    supported: bool
    type: str | None = None
    values: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    default: Any = None
    aliases: list[str] | None = Field(default=None, description="Other names accepted for this parameter")
    description: str | None = None
    providers: list[str] | None = Field(default=None, description="Providers that support it (model level)")


class PriceRuleOut(_Out):
    meter: str
    unit: str
    unit_size: int
    price: str = Field(description="USD per unit_size units, as a decimal string")
    price_nanos: int = Field(description="The same price in nano-USD")
    currency: Literal["usd"]
    when: dict[str, Any]
    plan: str


class ModelProviderOut(_Out):
    api_provider_id: str
    api_provider_name: str
    link: str | None
    country_code: str | None
    endpoint: EndpointId
    provider_model_slug: str
    is_active_gateway: bool = Field(description="True when the gateway can call this provider right now")
    input_modalities: list[str]
    output_modalities: list[str]
    effective_from: dt.datetime | None
    effective_to: dt.datetime | None
    alpha: bool
    supported_parameters: list[str]
    supported_parameters_detail: dict[str, ParameterDetailOut]
    pricing: list[PriceRuleOut]


class ModelOut(_Out):
    model_id: str
    name: str
    release_date: dt.date | None
    announcement_date: dt.date | None
    status: Literal["rumoured", "announced", "active", "deprecated", "retired"]
    organisation: OrganisationId
    aliases: list[str]
    endpoints: list[EndpointId] | None = Field(
        default=None, description="Omitted when include_gateway=false")
    providers: list[ModelProviderOut] | None = Field(default=None, description="Omitted when include_gateway=false")
    input_types: list[str] | None = Field(default=None, description="Omitted when include_data=false")
    output_types: list[str] | None = Field(default=None, description="Omitted when include_data=false")


class OpenAIModelOut(_Out):
    id: str
    object: Literal["model"]
    created: int = Field(description="Release date (00:00 UTC) in unix seconds; 0 when unknown")
    owned_by: str = Field(description="The organisation")


class ModelsPage(_Out):
    ok: bool
    limit: int
    offset: int
    models: list[ModelOut]
    total: int = Field(description="Total number of models matching the filter")
    object: Literal["list"] = Field(description="OpenAI list shape of the same page (with data)")
    data: list[OpenAIModelOut] = Field(description="The same page as OpenAI model objects, for OpenAI clients")


class ModelDetail(ModelOut):
    """GET /v1/models/{id}: the OpenAI model object and the model's catalogue entry."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class CapabilityProviderOut(_Out):
    id: str
    provider_model_slug: str
    is_active_gateway: bool
    alpha: bool
    supported_params: list[str]
    supported_parameters: list[str]
    supported_params_detail: dict[str, ParameterDetailOut]
    supported_parameters_detail: dict[str, ParameterDetailOut]
    pricing: list[PriceRuleOut]


class CapabilityPricingOut(_Out):
    currency: Literal["usd"]
    providers: dict[str, list[PriceRuleOut]]


class CapabilityModelOut(_Out):
    model: str
    name: str
    status: str
    input_types: list[str]
    output_types: list[str]
    supported_params: list[str]
    supported_parameters: list[str] = Field(description="OpenRouter-compatible alias of supported_params")
    supported_params_detail: dict[str, ParameterDetailOut]
    supported_parameters_detail: dict[str, ParameterDetailOut]
    providers: list[CapabilityProviderOut]
    pricing: CapabilityPricingOut


class CapabilityList(_Out):
    object: Literal["list"]
    data: list[CapabilityModelOut]
