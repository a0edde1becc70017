"""The request's ``provider`` routing object, shared by every capability's request schema.

Additions only: ``order``, ``only``, ``ignore`` and ``include_alpha`` are what the video API always
accepted; ``allow_fallbacks``, ``require_parameters``, ``sort`` and ``max_price`` are new and default
to today's behaviour.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _not_number(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError("Input should be a boolean (true or false), not a number")
    return value


# Lax enough for multipart's strings ("true"), but a JSON 1 is not true.
Bool = Annotated[bool, BeforeValidator(_not_number)]
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Sort = Literal["price", "latency", "throughput"]


class MaxPrice(BaseModel):
    """The most the caller will pay, in USD; a provider priced above any given cap is not used."""

    model_config = ConfigDict(extra="forbid")

    prompt: Price | None = Field(default=None, description="USD per 1M input tokens")
    completion: Price | None = Field(default=None, description="USD per 1M output tokens")
    image: Price | None = Field(default=None, description="USD per output image")
    audio: Price | None = Field(default=None, description="USD per second of input or output audio")
    request: Price | None = Field(default=None, description="USD per request")
    video: Price | None = Field(default=None, description="USD per second of output video")


ProviderId = Annotated[str, Field(max_length=100)]


class ProviderRouting(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order: list[ProviderId] | None = Field(default=None, max_length=50)
    only: list[ProviderId] | None = Field(default=None, max_length=50)
    ignore: list[ProviderId] | None = Field(default=None, max_length=50)
    include_alpha: Bool = Field(default=False, description="Include alpha providers in routing (off by default)")
    allow_fallbacks: Bool = Field(default=True, description="Try the next provider when one fails (default true); "
                                  "false tries only the first")
    require_parameters: Bool = Field(default=False, description="Only use providers that support every parameter "
                                     "the request sets")
    sort: Sort | None = Field(default=None, description="Rank providers not named in order by price (cheapest "
                              "first), latency (fastest observed first) or throughput (highest observed first)")
    max_price: MaxPrice | None = None
