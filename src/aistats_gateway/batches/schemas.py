"""Request and response models of the Batches API (OpenAI's batch object plus the gateway's fields).

Invariants: ``metadata`` follows OpenAI's limits (at most 16 pairs, keys ≤ 64 and string values
≤ 512 characters); exactly one of ``input_file_id`` and ``requests`` is given (checked in the
service, naming the parameter); unknown top-level fields are refused so a typo is a 400.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

BatchStatus = Literal["validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
                      "cancelled"]
RowStatus = Literal["queued", "submitted", "completed", "failed", "expired", "cancelled"]
BatchEvent = Literal["batch.created", "batch.status_changed", "batch.progress", "batch.completed", "batch.failed",
                     "batch.cancelled", "batch.expired"]
METADATA_MAX_PAIRS = 16
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 512


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchWebhook(_In):
    url: str = Field(max_length=2048)
    secret: str | None = Field(default=None, max_length=500)
    events: list[BatchEvent] | None = None


class BatchRequestRow(BaseModel):
    """One inline request: the same shape as a line of a batch input file."""

    model_config = ConfigDict(extra="allow")
    custom_id: Any = None
    method: Any = None
    url: Any = None
    body: Any = None


class BatchCreate(_In):
    input_file_id: str | None = Field(default=None, max_length=64)
    requests: list[dict[str, Any]] | None = None
    endpoint: str = Field(max_length=64)
    completion_window: str = Field(default="24h", max_length=10)
    metadata: dict[str, str] | None = None
    webhook: BatchWebhook | None = None
    provider: dict[str, Any] | str | None = None
    mode: Literal["gateway", "native"] | None = None
    model: str | None = Field(default=None, max_length=200)
    output_expires_after: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        if len(v) > METADATA_MAX_PAIRS:
            raise ValueError(f"at most {METADATA_MAX_PAIRS} key-value pairs")
        for k, val in v.items():
            if len(k) > METADATA_KEY_MAX:
                raise ValueError(f"key {k[:70]!r} is longer than {METADATA_KEY_MAX} characters")
            if len(val) > METADATA_VALUE_MAX:
                raise ValueError(f"the value of {k!r} is longer than {METADATA_VALUE_MAX} characters")
        return v


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class BatchErrors(BaseModel):
    object: Literal["list"]
    data: list[dict[str, Any]]


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"]
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str | None
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    model: str | None
    provider: str | None
    mode: Literal["gateway", "native"]
    polling_url: str
    cancel_url: str | None
    results_url: str
    usage: dict[str, Any] | None
    billing: dict[str, Any] | None
    webhook: dict[str, Any] | None = None


class BatchList(BaseModel):
    object: Literal["list"]
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class BatchRowOut(BaseModel):
    id: str
    object: Literal["batch.request"]
    custom_id: str
    request_index: int
    status: RowStatus
    provider: str | None
    attempts: int
    response_status: int | None
    usage: dict[str, Any] | None
    cost_nanos: int
    error: dict[str, Any] | None
    created_at: int
    updated_at: int
    completed_at: int | None


class BatchRowList(BaseModel):
    object: Literal["list"]
    batch_id: str
    data: list[BatchRowOut]
    has_more: bool
    next_after: int | None


class BatchModelProvider(BaseModel):
    """A provider of a batchable model: the catalogue's fields, plus ``modes`` and, for gateway-mode
    entries, the endpoints it serves (``native_endpoints`` through its own batch API) and windows."""

    model_config = ConfigDict(extra="allow")
    id: str
    provider_model_slug: str
    is_active_gateway: bool
    modes: list[Literal["native", "gateway"]] | None = None
    endpoints: list[str] | None = None
    native_endpoints: list[str] | None = None
    completion_windows: list[str] | None = None


class BatchModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    name: str
    status: str
    input_types: list[str]
    output_types: list[str]
    supported_params: list[str]
    supported_parameters: list[str]
    supported_params_detail: dict[str, Any]
    supported_parameters_detail: dict[str, Any]
    providers: list[BatchModelProvider]
    pricing: dict[str, Any]


class BatchModelList(BaseModel):
    object: Literal["list"]
    data: list[BatchModel]
