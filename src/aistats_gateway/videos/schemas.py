"""Wire schemas of the video endpoints (request, video object, lists, signed links)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from aistats_gateway.routing.schemas import ProviderRouting

VideoStatus = Literal["queued", "in_progress", "completed", "failed", "cancelled", "expired"]
OutputAccess = Literal["bytes", "signed_url", "both"]
ReferenceRole = Literal["first_frame", "last_frame", "reference", "source", "mask"]
WebhookEvent = Literal["video.created", "video.status_changed", "video.progress", "video.completed", "video.failed",
                       "video.cancelled", "video.expired"]
# Also accepted (the Phaseo names): job.<phase> for the video's event, and the spelling "canceled".
WebhookEventName = Literal[
    "video.created", "video.status_changed", "video.progress", "video.completed", "video.failed", "video.cancelled",
    "video.expired", "video.canceled", "job.created", "job.status_changed", "job.progress", "job.completed",
    "job.failed", "job.cancelled", "job.canceled", "job.expired"]


def canonical_events(names: list[str] | None) -> list[str] | None:
    """``job.X`` → ``video.X``, ``canceled`` → ``cancelled``, duplicates dropped (order kept)."""
    if names is None:
        return None
    return list(dict.fromkeys("video." + n.split(".", 1)[1].replace("canceled", "cancelled") for n in names))


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("Input should be an integer, not a boolean")
    return value


def _not_number(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError("Input should be a boolean (true or false), not a number")
    return value


# Lax enough for multipart's strings ("8", "true"), but a JSON true is not 1 and 0 is not false.
Int = Annotated[int, BeforeValidator(_not_bool)]
Bool = Annotated[bool, BeforeValidator(_not_number)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_In):
    url: str = Field(description="An https URL or a data: URL of an image (see the documented limits)")


class VideoInputReference(_In):
    type: Literal["image_url"] = "image_url"
    role: ReferenceRole = "first_frame"
    reference_type: str | None = Field(default=None, max_length=100)
    image_url: ImageURL


class OpenAIInputReference(_In):
    """OpenAI's ``input_reference`` object form (the first frame)."""

    image_url: str | None = None
    file_id: str | None = Field(default=None, max_length=200)


class VideoOutputConfig(_In):
    access: OutputAccess = Field(default="both", description="bytes=authenticated content_url only, "
                                 "signed_url=signed download links only, both=include both")


class VideoWebhook(_In):
    url: str = Field(max_length=2048)
    secret: str | None = Field(default=None, max_length=500)
    events: Annotated[list[WebhookEventName] | None, AfterValidator(canonical_events)] = Field(
        default=None, max_length=20,
        description="Events to deliver (default: the terminal ones); job.<phase> names the video's "
        "event, canceled is read as cancelled")


class VideoCreateRequest(_In):
    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(max_length=32000, description="May be empty only with an image reference")
    duration: Int | None = Field(default=None, ge=1, le=120, description="Seconds (provider/model dependent)")
    seconds: Int | None = Field(default=None, ge=1, le=120, description="OpenAI's name for duration")
    duration_seconds: Int | None = Field(default=None, ge=1, le=120, description="The Phaseo SDK's name for "
                                         "duration; every spelling given must agree")
    size: str | None = Field(default=None, description="WxH, e.g. 1280x720; not with resolution/aspect_ratio. "
                             "A resolution such as 720p is also accepted (size is an alias of resolution)")
    resolution: str | None = Field(default=None, description="480p, 720p, 1080p, 1K, 2K or 4K")
    aspect_ratio: str | None = Field(default=None, description="W:H such as 16:9, 9:16, 1:1")
    seed: Int | None = Field(default=None, ge=0, le=4294967295)
    sample_count: Int | None = Field(default=None, ge=1, le=4)
    negative_prompt: str | None = Field(default=None, max_length=10000)
    generate_audio: Bool | None = None
    enhance_prompt: Bool | None = None
    compression_quality: Int | None = Field(default=None, ge=0, le=100)
    person_generation: str | None = Field(default=None, max_length=50)
    resize_mode: str | None = Field(default=None, max_length=50)
    input_references: list[VideoInputReference] | None = Field(default=None, max_length=16)
    input_reference: OpenAIInputReference | None = None
    provider_params: dict[str, Any] | None = Field(
        default=None, description="Passed to the provider; at most 8 levels deep and 16 KiB as JSON")
    output: VideoOutputConfig | None = None
    webhook: VideoWebhook | None = None
    provider: ProviderRouting | None = None


class VideoAsset(BaseModel):
    id: str
    mime_type: str
    bytes: int
    sha256: str
    width: int | None
    height: int | None
    duration_seconds: float | None


class VideoOutput(BaseModel):
    index: int
    mime_type: str
    bytes_available: bool
    bytes: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    content_url: str | None = Field(default=None, description="Present when output_access includes bytes")
    download_url: str | None = Field(default=None, description="Signed first-party URL for this output")
    expires_at: int | None = Field(default=None, description="Unix seconds when download_url expires")
    thumbnail_url: str | None = None


class VideoError(BaseModel):
    code: str
    message: str


class VideoUsage(BaseModel):
    model_config = ConfigDict(extra="allow")
    cost: float
    is_byok: bool


class VideoAttempt(BaseModel):
    provider: str
    outcome: str
    status: int | None = None
    code: str | None = None
    message: str | None = None
    at: int


class VideoBilling(BaseModel):
    """The job's hold: today's fields (hold_id, held_nanos, settled_nanos, lines …) and the SDK's names."""

    model_config = ConfigDict(extra="allow")
    state: Literal["pending", "estimated", "settled", "void"] = Field(
        description="pending=no hold, estimated=held (the estimate), settled=charged, void=released")
    hold_state: Literal["none", "held", "settled", "void"] = Field(description="The hold's own state")
    currency: Literal["usd"] = "usd"
    held_nanos: int
    settled_nanos: int
    reserved_nanos: int = Field(description="Nano-USD reserved by the hold (the estimate)")
    estimated_nanos: int
    total_nanos: int | None = Field(description="The final charge: settled amount, 0 when void, null before")
    billable: bool
    charged: bool


class VideoObject(BaseModel):
    id: str
    object: Literal["video"] = "video"
    polling_url: str
    model: str
    request_id: str | None = Field(default=None, description="x-request-id of the create request")
    session_id: str | None = None
    status: VideoStatus
    lifecycle_status: Literal["pending", "running", "completed", "failed", "cancelled", "expired"] = Field(
        description="The Phaseo SDK's name of the status (queued=pending, in_progress=running)")
    output_access: OutputAccess
    generation_id: str | None
    created_at: int
    started_at: int | None
    completed_at: int | None
    poll_after_seconds: int
    provider: str | None
    native_video_id: str | None = Field(description="The provider's own id of the job")
    cancel_url: str | None = Field(description="POST here to cancel; null once the job is finished")
    websocket_url: str = Field(description="wss:// URL of GET /v1/async/video/{id}/ws")
    seconds: float | None
    size: str | None
    audio: bool
    content_url: str | None
    download_url: str | None
    expires_at: int | None
    progress: int = Field(ge=0, le=100)
    progress_source: Literal["provider", "estimated"]
    asset: VideoAsset | None
    outputs: list[VideoOutput]
    billing: VideoBilling
    usage: VideoUsage
    error: VideoError | None
    attempts: list[VideoAttempt] = Field(default_factory=list)
    webhook: dict[str, Any] | None = None


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DownloadURLRequest(_In):
    ttl_seconds: Int = Field(default=900, ge=60, le=3600)
    index: Int = Field(default=0, ge=0, le=3)
    disposition: Literal["inline", "attachment"] = "attachment"


class DownloadURL(BaseModel):
    download_url: str
    expires_at: int


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool
