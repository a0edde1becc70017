"""Fake Google Veo APIs for tests: the Gemini API (AI Studio), Vertex AI, Google's OAuth2 token endpoint
and the Cloud Storage JSON API download — one Starlette app (shared/reference/provider-apis.md §3).

Gemini API (``x-goog-api-key`` header or ``?key=``):
  ``POST /v1beta/models/{model}:predictLongRunning`` → ``{"name": "models/{model}/operations/{id}"}``
  ``GET  /v1beta/models/{model}/operations/{id}`` → the Operation; when done,
  ``response.generateVideoResponse.generatedSamples[].video.uri`` = ``{this fake}/v1beta/files/{f}:download?alt=media``
  ``GET  /v1beta/files/{f}:download?alt=media`` (key required) → 302 to a signed ``/_signed/files/{f}`` URL
  that needs no key (as the real API redirects to a signed storage URL on another host).
Vertex AI (``Authorization: Bearer`` from the token endpoint; the path's project must be the account's):
  ``POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:predictLongRunning``
  ``POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:fetchPredictOperation``
  body ``{"operationName"}``; done → ``response.videos[]`` with ``bytesBase64Encoded`` (inline) or, when
  ``parameters.storageUri`` was given, ``gcsUri`` = ``{storageUri}/{op id}/sample_{i}.mp4``.
OAuth2 (``POST /token``): the JWT-bearer grant. The assertion's RS256 signature is verified with the
  registered service account's public key (``kid`` = ``private_key_id``), and ``iss``/``aud``/``scope``/
  ``iat``/``exp`` are checked (``aud`` is Google's canonical token URL or this one); answers ``{access_token, expires_in, token_type}`` or ``{error, error_description}``.
Cloud Storage (``GET /storage/v1/b/{bucket}/o/{object}``, object name URL-encoded; ``alt=media`` → bytes).
``GET /_fake/service-account.json`` gives a ready-made service account (with its private key) whose
``token_uri`` points at this fake, for trying the Vertex adapter by hand.

Errors use Google's envelope ``{"error": {"code", "message", "status", "details"}}``: a wrong API key is
400 INVALID_ARGUMENT with ``ErrorInfo.reason = API_KEY_INVALID``, a missing one 403; a bad token 401
UNAUTHENTICATED; rate limits 429 RESOURCE_EXHAUSTED with a ``RetryInfo.retryDelay``; unknown fields and
bad values 400 INVALID_ARGUMENT (the Gemini API refuses the Vertex-only ``generateAudio``,
``compressionQuality``, ``resizeMode``, ``seed`` and ``storageUri``). Veo 3 on Vertex needs
``generateAudio`` (``require_generate_audio``).

Operations are ``done`` after ``render_seconds`` on an injectable monotonic clock (no progress is
reported, as upstream). Outputs are real H.264 MP4s (8 fps; 720p = 1280x720, 1080p = 1920x1080,
4k = 3840x2160, portrait for 9:16) of ``durationSeconds`` (default 8), rendered by the OpenAI fake's
cached renderer. Fault knobs live on :class:`FakeGoogleState` (``app.state.fake``).
Not faked: video extension (``instances[0].video``), masks, webhooks, ``pubsubTopic``, idempotency
(neither API has it), the Files API list/delete, quota headers.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .openai import RecordedRequest, render_media

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
STUDIO_MODELS = ("veo-3.1-generate-preview", "veo-3.1-fast-generate-preview", "veo-3.1-lite-generate-preview",
                 "veo-3.0-generate-001", "veo-3.0-fast-generate-001", "veo-2.0-generate-001")
VERTEX_MODELS = ("veo-3.1-generate-001", "veo-3.1-fast-generate-001", "veo-3.1-generate-preview",
                 "veo-3.1-fast-generate-preview", "veo-3.0-generate-001", "veo-3.0-fast-generate-001",
                 "veo-2.0-generate-001", "veo-2.0-generate-exp")
COMMON_PARAMS = frozenset({"aspectRatio", "durationSeconds", "resolution", "sampleCount", "negativePrompt",
                           "enhancePrompt", "personGeneration"})
VERTEX_ONLY_PARAMS = frozenset({"generateAudio", "compressionQuality", "resizeMode", "seed", "storageUri", "fps",
                                "pubsubTopic"})
STUDIO_INSTANCE_KEYS = frozenset({"prompt", "image", "lastFrame", "video", "referenceImages"})
VERTEX_INSTANCE_KEYS = STUDIO_INSTANCE_KEYS | {"mask"}
PERSON_GENERATION = ("dont_allow", "allow_adult", "allow_all")
DIMENSIONS = {("720p", "16:9"): (1280, 720), ("720p", "9:16"): (720, 1280), ("1080p", "16:9"): (1920, 1080),
              ("1080p", "9:16"): (1080, 1920), ("4k", "16:9"): (3840, 2160), ("4k", "9:16"): (2160, 3840)}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
FILE_TTL_SECONDS = 2 * 24 * 3600  # Gemini API files live for two days
SIGNED_URL_TTL_SECONDS = 300
RAI_REASON = ("Veo could not generate videos because the output violates Google's Responsible AI practices. "
              "If you think this was an error, send feedback. Support codes: 29310472")
PROMPT_BLOCKED = ("The prompt could not be submitted. This prompt contains sensitive words that violate Google's "
                  "Responsible AI practices. Try rephrasing the prompt. If you think this was an error, send "
                  "feedback. Support codes: 17301594")
INTERNAL_FAILURE = "Video generation failed due to an internal error. Please try again later."


@dataclass(frozen=True)
class ModelSpec:
    durations: tuple[int, ...]
    resolutions: tuple[str, ...] | None  # None: no resolution parameter (720p only)
    max_samples: int
    last_frame: bool
    reference_images: bool
    style_references: bool
    audio: bool


def model_spec(model: str) -> ModelSpec:
    if model.startswith("veo-2"):
        return ModelSpec((5, 6, 7, 8), None, 4 if model.endswith("-exp") else 2, True, model.endswith("-exp"),
                         model.endswith("-exp"), False)
    if model.startswith("veo-3.0"):
        return ModelSpec((4, 6, 8), ("720p", "1080p"), 4, False, False, False, True)
    return ModelSpec((4, 6, 8), ("720p", "1080p", "4k"), 4, True, "lite" not in model, False, True)


@dataclass
class ServiceAccount:
    client_email: str
    private_key_id: str
    public_key: Any  # cryptography RSAPublicKey
    project: str


@dataclass
class Operation:
    name: str
    api: str  # "studio" | "vertex"
    model: str
    created_mono: float
    render_seconds: float
    width: int
    height: int
    seconds: int
    samples: int
    prompt: str
    fail: tuple[str, Any, str] | None = None  # ("error", rpc code, message) | ("filtered", count, reason)
    storage_uri: str | None = None
    project: str | None = None
    location: str | None = None
    file_ids: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@dataclass
class FakeGoogleState:
    api_key: str = "AIza-fake-gemini-key"
    project: str = "fake-project"
    clock: Callable[[], float] = time.monotonic
    render_seconds: float = 2.0  # for operations created afterwards
    require_generate_audio: bool = True  # Veo 3 on Vertex needs parameters.generateAudio
    reject_unknown_params: bool = True
    token_lifetime_seconds: int = 3599
    # fault injection
    fail_next_creates: int = 0
    fail_status: int = 503
    rate_limit_next: int = 0  # the next N authenticated API calls (not the token endpoint) answer 429
    retry_delay_seconds: float = 1.0
    block_prompts: list[str] = field(default_factory=list)  # refused at submit (400, safety message)
    filter_prompts: list[str] = field(default_factory=list)  # done with raiMediaFilteredCount, no videos
    fail_jobs: bool = False  # operations end with error {code: 13}
    expire_outputs: bool = False  # files / GCS objects are gone
    forget_operations: bool = False  # polling answers 404
    # recorded state
    requests: list[RecordedRequest] = field(default_factory=list)
    operations: dict[str, Operation] = field(default_factory=dict)
    files: dict[str, tuple[Operation, int, float]] = field(default_factory=dict)  # id → (op, index, mono created)
    objects: dict[tuple[str, str], tuple[Operation, int]] = field(default_factory=dict)  # (bucket, name)
    service_accounts: dict[str, ServiceAccount] = field(default_factory=dict)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token → (client_email, unix expiry)
    token_grants: list[dict[str, Any]] = field(default_factory=list)  # verified JWT claims, in order
    signing_secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    _default_account: dict[str, Any] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def find_requests(self, method: str | None = None, path: str | None = None,
                      contains: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if method in (None, r.method) and path in (None, r.path)
                and (contains is None or contains in r.path)]

    @property
    def creates(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith(":predictLongRunning")]

    def register_service_account(self, client_email: str, private_key_id: str, public_key_pem: str | bytes,
                                 project: str | None = None) -> None:
        """Trust a service account: its JWT assertions are verified with this public key (PEM)."""
        from cryptography.hazmat.primitives import serialization

        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        self.service_accounts[client_email] = ServiceAccount(
            client_email, private_key_id, serialization.load_pem_public_key(pem), project or self.project)

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (the next API call answers 401)."""
        self.tokens.clear()

    def default_service_account(self, token_uri: str) -> dict[str, Any]:
        """A service-account JSON (with private key) this fake trusts; generated once, on first use."""
        with self._lock:
            if self._default_account is None:
                from cryptography.hazmat.primitives import serialization
                from cryptography.hazmat.primitives.asymmetric import rsa

                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                email = f"veo-fake@{self.project}.iam.gserviceaccount.com"
                key_id = secrets.token_hex(20)
                pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
                pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
                self.register_service_account(email, key_id, pub, self.project)
                self._default_account = {
                    "type": "service_account", "project_id": self.project, "private_key_id": key_id,
                    "private_key": pem, "client_email": email, "client_id": str(secrets.randbits(64)),
                    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                    "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                }
            return {**self._default_account, "token_uri": token_uri}


class ApiError(Exception):
    """A Google API error: ``{"error": {"code", "message", "status", "details"}}``."""

    def __init__(self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.status, self.message, self.details, self.headers = code, status, message, details, headers

    def response(self) -> JSONResponse:
        err: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            err["details"] = self.details
        return JSONResponse({"error": err}, status_code=self.code, headers=self.headers)


def _invalid(message: str, field_name: str | None = None) -> ApiError:
    details = None
    if field_name:
        details = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": field_name, "description": message}]}]
    return ApiError(400, "INVALID_ARGUMENT", message, details)


def _rate_limited(state: FakeGoogleState) -> ApiError:
    return ApiError(429, "RESOURCE_EXHAUSTED",
                    "Resource has been exhausted (e.g. check quota). Please retry in "
                    f"{state.retry_delay_seconds:g}s.",
                    [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                      "retryDelay": f"{state.retry_delay_seconds:g}s"}])


def _injected(state: FakeGoogleState) -> ApiError:
    status = state.fail_status
    if status == 429:
        return _rate_limited(state)
    names = {500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
             401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 400: "INVALID_ARGUMENT"}
    messages = {503: "The service is currently unavailable.", 500: "Internal error encountered.",
                504: "Deadline expired before operation could complete."}
    return ApiError(status, names.get(status, "UNKNOWN"), messages.get(status, f"Injected failure ({status})."))


# ---------------------------------------------------------------- JWT / OAuth2

def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "error_description": self.description}, status_code=self.status)


def verify_assertion(state: FakeGoogleState, assertion: str, token_url: str) -> dict[str, Any]:
    """Check a JWT-bearer assertion as Google's token endpoint does; returns its claims."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    parts = assertion.split(".")
    if len(parts) != 3:
        raise OAuthError("invalid_request", "Invalid JWT: expected three dot-separated parts.")
    try:
        header, claims = json.loads(_b64url_decode(parts[0])), json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise OAuthError("invalid_request", "Invalid JWT: cannot decode.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
        raise OAuthError("invalid_grant", "Invalid JWT: the algorithm must be RS256.")
    account = state.service_accounts.get(str(claims.get("iss")))
    if account is None:
        raise OAuthError("invalid_grant", "Invalid grant: account not found")
    if header.get("kid") not in (None, account.private_key_id):
        raise OAuthError("invalid_grant", "Invalid JWT Signature.")
    try:
        account.public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise OAuthError("invalid_grant", "Invalid JWT Signature.") from None
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if (not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) or exp <= now or iat > now + 300
            or exp - iat > 3600):
        raise OAuthError("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                          "reasonable timeframe. Check your iat and exp values in the JWT claim.")
    # google-auth always names Google's canonical endpoint as the audience, whatever token_uri it posts to.
    if claims.get("aud") not in (GOOGLE_TOKEN_AUDIENCE, token_url):
        raise OAuthError("invalid_grant", "Invalid JWT: Failed audience check. The right audience is "
                                          + GOOGLE_TOKEN_AUDIENCE)
    if SCOPE not in str(claims.get("scope", "")).split():
        raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
    return claims


# ---------------------------------------------------------------- request validation

def _image(value: Any, where: str, api: str) -> None:
    from PIL import Image

    if not isinstance(value, dict):
        raise _invalid(f"Invalid value at '{where}': expected an object.", where)
    if "gcsUri" in value:
        if api == "studio":
            raise _invalid(f"Invalid JSON payload received. Unknown name \"gcsUri\" at '{where}': Cannot find field.",
                           where)
        if not str(value["gcsUri"]).startswith("gs://") or "bytesBase64Encoded" in value:
            raise _invalid(f"{where}: give exactly one of bytesBase64Encoded and a gs:// gcsUri.", where)
        return
    data = value.get("bytesBase64Encoded")
    if not isinstance(data, str) or not data:
        raise _invalid(f"{where}.bytesBase64Encoded is required.", where)
    mime = value.get("mimeType")
    if mime not in IMAGE_TYPES:
        raise _invalid(f"{where}.mimeType must be one of {', '.join(IMAGE_TYPES)}; got {mime!r}.", where)
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()
    except Exception:
        raise _invalid(f"{where}: the image could not be decoded.", where) from None


def _validate(api: str, model: str, body: Any, state: FakeGoogleState) -> dict[str, Any]:
    """The create body → {prompt, width, height, seconds, samples, storage_uri}; ApiError(400) otherwise."""
    spec = model_spec(model)
    if not isinstance(body, dict):
        raise _invalid("Invalid JSON payload received. Expected an object.")
    for key in body:
        if key not in ("instances", "parameters"):
            raise _invalid(f"Invalid JSON payload received. Unknown name \"{key}\": Cannot find field.", key)
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        raise _invalid("instances must hold exactly one instance.", "instances")
    inst, params = instances[0], body.get("parameters") or {}
    if not isinstance(params, dict):
        raise _invalid("parameters must be an object.", "parameters")
    allowed_inst = STUDIO_INSTANCE_KEYS if api == "studio" else VERTEX_INSTANCE_KEYS
    for key in inst:
        if key not in allowed_inst:
            raise _invalid(f"Invalid JSON payload received. Unknown name \"{key}\" at 'instances[0]': "
                           "Cannot find field.", f"instances[0].{key}")
    for key in params:
        if api == "studio" and key in VERTEX_ONLY_PARAMS:
            raise _invalid(f"`{key}` isn't supported by this model. Please remove it or refer to the Gemini API "
                           "documentation for supported usage.", f"parameters.{key}")
        if state.reject_unknown_params and key not in COMMON_PARAMS | VERTEX_ONLY_PARAMS:
            raise _invalid(f"Invalid JSON payload received. Unknown name \"{key}\" at 'parameters': "
                           "Cannot find field.", f"parameters.{key}")

    prompt = inst.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise _invalid("instances[0].prompt must be a string.", "instances[0].prompt")
    if "video" in inst:
        raise _invalid("Video extension is not supported by this fake.", "instances[0].video")
    if "image" in inst:
        _image(inst["image"], "instances[0].image", api)
    if not (prompt or "").strip() and "image" not in inst:
        raise _invalid("A text prompt is required for text-to-video.", "instances[0].prompt")
    if "lastFrame" in inst:
        if not spec.last_frame:
            raise _invalid(f"lastFrame isn't supported by {model}.", "instances[0].lastFrame")
        if "image" not in inst:
            raise _invalid("lastFrame needs a first frame in instances[0].image.", "instances[0].lastFrame")
        _image(inst["lastFrame"], "instances[0].lastFrame", api)
    if "referenceImages" in inst:
        refs = inst["referenceImages"]
        if not spec.reference_images:
            raise _invalid(f"referenceImages isn't supported by {model}.", "instances[0].referenceImages")
        if not isinstance(refs, list) or not 1 <= len(refs) <= 3:
            raise _invalid("referenceImages takes 1 to 3 images.", "instances[0].referenceImages")
        kinds = []
        for i, ref in enumerate(refs):
            where = f"instances[0].referenceImages[{i}]"
            if not isinstance(ref, dict) or set(ref) - {"image", "referenceType"}:
                raise _invalid(f"{where} takes image and referenceType.", where)
            kind = ref.get("referenceType")
            if kind not in ("asset", "style"):
                raise _invalid(f"{where}.referenceType must be asset or style.", f"{where}.referenceType")
            if kind == "style" and not spec.style_references:
                raise _invalid(f"Style reference images aren't supported by {model}.", f"{where}.referenceType")
            kinds.append(kind)
            _image(ref.get("image"), f"{where}.image", api)
        if "style" in kinds and len(kinds) > 1:
            raise _invalid("Give up to three asset images or one style image.", "instances[0].referenceImages")
    if "mask" in inst:
        raise _invalid("Masks are not supported by this fake.", "instances[0].mask")

    def typed(name: str, kind: type | tuple[type, ...]) -> Any:
        value = params.get(name)
        if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is int)):
            raise _invalid(f"Invalid value at 'parameters.{name}': expected {getattr(kind, '__name__', kind)}.",
                           f"parameters.{name}")
        return value

    seconds = typed("durationSeconds", int)
    seconds = 8 if seconds is None else seconds
    if seconds not in spec.durations:
        raise _invalid(f"Unsupported durationSeconds {seconds} for {model}; supported: "
                       f"{', '.join(map(str, spec.durations))}.", "parameters.durationSeconds")
    ratio = typed("aspectRatio", str) or "16:9"
    if ratio not in ("16:9", "9:16"):
        raise _invalid(f"Unsupported aspectRatio {ratio!r}; supported: 16:9, 9:16.", "parameters.aspectRatio")
    res = typed("resolution", str)
    if res is not None and spec.resolutions is None:
        raise _invalid(f"resolution isn't supported by {model}.", "parameters.resolution")
    res = res or "720p"
    if spec.resolutions is not None and res not in spec.resolutions:
        raise _invalid(f"Unsupported resolution {res!r} for {model}; supported: {', '.join(spec.resolutions)}.",
                       "parameters.resolution")
    if res != "720p" and seconds != 8:
        raise _invalid(f"{res} output needs durationSeconds 8.", "parameters.resolution")
    if "referenceImages" in inst and seconds != 8:
        raise _invalid("Reference images need durationSeconds 8.", "parameters.durationSeconds")
    samples = typed("sampleCount", int)
    samples = 1 if samples is None else samples
    if not 1 <= samples <= spec.max_samples:
        raise _invalid(f"sampleCount must be between 1 and {spec.max_samples}.", "parameters.sampleCount")
    typed("negativePrompt", str)
    typed("enhancePrompt", bool)
    person = typed("personGeneration", str)
    if person is not None and person not in PERSON_GENERATION:
        raise _invalid(f"Unsupported personGeneration {person!r}; supported: {', '.join(PERSON_GENERATION)}.",
                       "parameters.personGeneration")
    audio = typed("generateAudio", bool)
    if audio is not None and not spec.audio:
        raise _invalid(f"generateAudio isn't supported by {model}.", "parameters.generateAudio")
    if api == "vertex" and spec.audio and audio is None and state.require_generate_audio:
        raise _invalid(f"generateAudio is required for {model}.", "parameters.generateAudio")
    quality = typed("compressionQuality", str)
    if quality is not None and quality.lower() not in ("optimized", "lossless"):
        raise _invalid("compressionQuality must be optimized or lossless.", "parameters.compressionQuality")
    resize = typed("resizeMode", str)
    if resize is not None and resize.lower() not in ("pad", "crop"):
        raise _invalid("resizeMode must be pad or crop.", "parameters.resizeMode")
    seed = typed("seed", int)
    if seed is not None and not 0 <= seed <= 2**32 - 1:
        raise _invalid("seed must be between 0 and 4294967295.", "parameters.seed")
    storage = typed("storageUri", str)
    if storage is not None and (not storage.startswith("gs://") or len(storage) <= 5):
        raise _invalid("storageUri must be a gs:// URI.", "parameters.storageUri")
    width, height = DIMENSIONS[(res, ratio)]
    return {"prompt": prompt or "", "width": width, "height": height, "seconds": seconds, "samples": samples,
            "storage_uri": storage}


# ---------------------------------------------------------------- operations

def _new_operation(state: FakeGoogleState, api: str, model: str, values: dict[str, Any], *,
                   project: str | None = None, location: str | None = None) -> Operation:
    prompt = values["prompt"].lower()
    fail: tuple[str, Any, str] | None = None
    if any(w.lower() in prompt for w in state.filter_prompts):
        fail = ("filtered", values["samples"], RAI_REASON)
    elif state.fail_jobs:
        fail = ("error", 13, INTERNAL_FAILURE)
    if api == "studio":
        name = f"models/{model}/operations/{secrets.token_hex(6)}"
    else:
        name = f"projects/{project}/locations/{location}/publishers/google/models/{model}/operations/{uuid.uuid4()}"
    op = Operation(name, api, model, state.clock(), state.render_seconds, values["width"], values["height"],
                   values["seconds"], values["samples"], values["prompt"], fail, values.get("storage_uri"),
                   project, location)
    state.operations[name] = op
    return op


def _video_bytes(op: Operation) -> bytes:
    return render_media("video", f"{op.width}x{op.height}", str(op.seconds))


def _done(op: Operation, state: FakeGoogleState) -> bool:
    return state.clock() >= op.created_mono + op.render_seconds


def _operation_json(op: Operation, state: FakeGoogleState, request: Request) -> dict[str, Any]:
    if not _done(op, state):
        return {"name": op.name}  # proto3 JSON leaves done=false out
    out: dict[str, Any] = {"name": op.name, "done": True}
    if op.fail and op.fail[0] == "error":
        out["error"] = {"code": op.fail[1], "message": op.fail[2]}
        return out
    filtered = op.fail[1] if op.fail else 0
    reasons = [op.fail[2]] if op.fail else []
    if op.api == "studio":
        if not op.file_ids and not op.fail:
            for i in range(op.samples):
                fid = secrets.token_hex(8)
                op.file_ids.append(fid)
                state.files[fid] = (op, i, state.clock())
        base = str(request.base_url).rstrip("/")
        inner: dict[str, Any] = {"generatedSamples": [
            {"video": {"uri": f"{base}/v1beta/files/{fid}:download?alt=media"}} for fid in op.file_ids]}
        if filtered:
            inner = {"raiMediaFilteredCount": filtered, "raiMediaFilteredReasons": reasons}
        out["response"] = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                           "generateVideoResponse": inner}
        return out
    response: dict[str, Any] = {"@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse",
                                "raiMediaFilteredCount": filtered}
    if filtered:
        response["raiMediaFilteredReasons"] = reasons
    else:
        videos = []
        for i in range(op.samples):
            if op.storage_uri:
                bucket, _, prefix = op.storage_uri[5:].partition("/")
                obj = "/".join(p for p in (prefix.strip("/"), op.short_id, f"sample_{i}.mp4") if p)
                state.objects[(bucket, obj)] = (op, i)
                videos.append({"gcsUri": f"gs://{bucket}/{obj}", "mimeType": "video/mp4"})
            else:
                videos.append({"bytesBase64Encoded": base64.b64encode(_video_bytes(op)).decode(),
                               "mimeType": "video/mp4"})
        response["videos"] = videos
    out["response"] = response
    return out


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise _invalid("Invalid JSON payload received. Unexpected token.") from None


# ---------------------------------------------------------------- app

def create_app(api_key: str = "AIza-fake-gemini-key", *, project: str = "fake-project",
               clock: Callable[[], float] = time.monotonic, render_seconds: float = 2.0,
               **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other :class:`FakeGoogleState` fields (e.g. ``fail_jobs=True``).
    The state is ``app.state.fake``; tests may change any of its fields while the app runs."""
    state = FakeGoogleState(api_key=api_key, project=project, clock=clock, render_seconds=render_seconds, **knobs)

    def endpoint(auth: str | None) -> Callable[[Callable[..., Any]], Callable[[Request], Any]]:
        """Record the request, check ``auth`` ("key" | "bearer" | None) and the rate-limit knob."""
        def wrap(handler: Callable[..., Any]) -> Callable[[Request], Any]:
            async def wrapped(request: Request) -> Response:
                rec = RecordedRequest(request.method, request.url.path, dict(request.query_params),
                                      {k.lower(): v for k, v in request.headers.items()})
                state.requests.append(rec)
                try:
                    email = None
                    if auth == "key":
                        _check_key(request)
                    elif auth == "bearer":
                        email = _check_bearer(request)
                    if auth and state.rate_limit_next > 0:
                        state.rate_limit_next -= 1
                        raise _rate_limited(state)
                    response = await handler(request, rec, email)
                except ApiError as exc:
                    response = exc.response()
                except OAuthError as exc:
                    response = exc.response()
                rec.status = response.status_code
                return response
            return wrapped
        return wrap

    def _check_key(request: Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            raise ApiError(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
                           "established identity). Please use API Key or other form of API consumer identity to "
                           "call this API.")
        if key != state.api_key:
            raise ApiError(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                           [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                             "domain": "googleapis.com",
                             "metadata": {"service": "generativelanguage.googleapis.com"}}])

    def _check_bearer(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        held = state.tokens.get(token)
        if held is None or held[1] <= time.time():
            raise ApiError(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 "
                           "access token, login cookie or other valid authentication credential. See "
                           "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                           [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                             "reason": "ACCESS_TOKEN_EXPIRED" if held else "CREDENTIALS_MISSING",
                             "domain": "googleapis.com"}])
        return held[0]

    def _vertex_access(request: Request, email: str | None) -> tuple[str, str, str]:
        p = request.path_params
        account = state.service_accounts.get(email or "")
        model = p["model"]
        resource = f"projects/{p['project']}/locations/{p['location']}/publishers/google/models/{model}"
        if account is None or account.project != p["project"]:
            raise ApiError(403, "PERMISSION_DENIED", f"Permission 'aiplatform.endpoints.predict' denied on resource "
                           f"'//aiplatform.googleapis.com/{resource}' (or it may not exist).",
                           [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
                             "domain": "aiplatform.googleapis.com"}])
        if model not in VERTEX_MODELS:
            raise ApiError(404, "NOT_FOUND", f"Publisher Model `{resource}` not found.")
        return p["project"], p["location"], model

    # ---- Gemini API
    @endpoint("key")
    async def studio_create(request: Request, rec: RecordedRequest, _: Any) -> Response:
        model = request.path_params["model"]
        if model not in STUDIO_MODELS:
            raise ApiError(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not "
                           "supported for predictLongRunning. Call ListModels to see the list of available models "
                           "and their supported methods.")
        if state.fail_next_creates > 0:
            state.fail_next_creates -= 1
            raise _injected(state)
        rec.body = await _json(request)
        values = _validate("studio", model, rec.body, state)
        if any(w.lower() in values["prompt"].lower() for w in state.block_prompts):
            raise _invalid(PROMPT_BLOCKED)
        op = _new_operation(state, "studio", model, values)
        return JSONResponse({"name": op.name})

    @endpoint("key")
    async def studio_get(request: Request, rec: RecordedRequest, _: Any) -> Response:
        name = f"models/{request.path_params['model']}/operations/{request.path_params['op']}"
        op = state.operations.get(name)
        if op is None or op.api != "studio" or state.forget_operations:
            raise ApiError(404, "NOT_FOUND", f"Operation {name} not found.")
        return JSONResponse(_operation_json(op, state, request))

    def _file(fid: str) -> tuple[Operation, int]:
        held = state.files.get(fid)
        if held is None or state.expire_outputs or state.clock() >= held[2] + FILE_TTL_SECONDS:
            raise ApiError(403, "PERMISSION_DENIED",
                           f"You do not have permission to access the File {fid} or it may not exist.")
        return held[0], held[1]

    def _sign(fid: str, expires: int) -> str:
        return hmac.new(state.signing_secret, f"{fid}:{expires}".encode(), hashlib.sha256).hexdigest()

    @endpoint("key")
    async def studio_download(request: Request, rec: RecordedRequest, _: Any) -> Response:
        fid = request.path_params["file"]
        op, index = _file(fid)
        if request.query_params.get("alt") != "media":
            data = await run_in_threadpool(_video_bytes, op)
            return JSONResponse({"file": {"name": f"files/{fid}", "mimeType": "video/mp4", "sizeBytes": str(len(data)),
                                          "state": "ACTIVE", "source": "GENERATED",
                                          "uri": f"{str(request.base_url).rstrip('/')}/v1beta/files/{fid}"}})
        expires = int(time.time()) + SIGNED_URL_TTL_SECONDS
        return RedirectResponse(f"/_signed/files/{fid}?expires={expires}&sig={_sign(fid, expires)}", status_code=302)

    @endpoint(None)
    async def signed_download(request: Request, rec: RecordedRequest, _: Any) -> Response:
        fid = request.path_params["file"]
        try:
            expires = int(request.query_params.get("expires", "0"))
        except ValueError:
            expires = 0
        if expires < time.time() or not hmac.compare_digest(request.query_params.get("sig", ""), _sign(fid, expires)):
            return Response("<Error><Code>AccessDenied</Code></Error>", status_code=403, media_type="application/xml")
        op, _index = _file(fid)
        data = await run_in_threadpool(_video_bytes, op)
        return Response(data, media_type="video/mp4")

    # ---- Vertex AI
    @endpoint("bearer")
    async def vertex_create(request: Request, rec: RecordedRequest, email: str | None) -> Response:
        project_id, location, model = _vertex_access(request, email)
        if state.fail_next_creates > 0:
            state.fail_next_creates -= 1
            raise _injected(state)
        rec.body = await _json(request)
        values = _validate("vertex", model, rec.body, state)
        if any(w.lower() in values["prompt"].lower() for w in state.block_prompts):
            raise _invalid(PROMPT_BLOCKED)
        op = _new_operation(state, "vertex", model, values, project=project_id, location=location)
        return JSONResponse({"name": op.name})

    @endpoint("bearer")
    async def vertex_fetch(request: Request, rec: RecordedRequest, email: str | None) -> Response:
        project_id, location, model = _vertex_access(request, email)
        rec.body = await _json(request)
        name = rec.body.get("operationName") if isinstance(rec.body, dict) else None
        if not isinstance(name, str) or not name:
            raise _invalid("operationName is required.", "operationName")
        resource = f"projects/{project_id}/locations/{location}/publishers/google/models/{model}"
        if not name.startswith(resource + "/operations/"):
            raise _invalid(f"The operation {name} does not belong to {resource}.", "operationName")
        op = state.operations.get(name)
        if op is None or op.api != "vertex" or state.forget_operations:
            raise ApiError(404, "NOT_FOUND", f"Operation {name} not found.")
        return JSONResponse(await run_in_threadpool(_operation_json, op, state, request))

    # ---- OAuth2 token endpoint
    @endpoint(None)
    async def token(request: Request, rec: RecordedRequest, _: Any) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "The request must be application/x-www-form-urlencoded.")
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        rec.body = {k: v for k, v in form.items() if k != "assertion"} | {"assertion": "<jwt>"}
        if form.get("grant_type") != JWT_BEARER:
            raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type', '')}")
        claims = verify_assertion(state, form.get("assertion", ""), str(request.url.replace(query="")))
        state.token_grants.append(claims)
        access = "ya29.fake-" + secrets.token_urlsafe(24)
        state.tokens[access] = (str(claims["iss"]), time.time() + state.token_lifetime_seconds)
        return JSONResponse({"access_token": access, "expires_in": state.token_lifetime_seconds,
                             "token_type": "Bearer"})

    # ---- Cloud Storage JSON API
    @endpoint(None)
    async def gcs_object(request: Request, rec: RecordedRequest, _: Any) -> Response:
        auth = request.headers.get("authorization", "")
        held = state.tokens.get(auth[7:].strip() if auth.lower().startswith("bearer ") else "")
        if held is None or held[1] <= time.time():
            return JSONResponse({"error": {"code": 401, "message": "Invalid Credentials", "errors": [
                {"message": "Invalid Credentials", "domain": "global", "reason": "authError",
                 "locationType": "header", "location": "Authorization"}]}}, status_code=401)
        bucket, obj = request.path_params["bucket"], request.path_params["object"]
        raw = request.scope.get("raw_path", b"").decode("latin-1").split("?")[0]
        encoded_ok = raw.count("/") == request.url.path.count("/") - obj.count("/")  # '/' in names must be %2F
        held_obj = state.objects.get((bucket, obj))
        if held_obj is None or state.expire_outputs or not encoded_ok:
            return JSONResponse({"error": {"code": 404, "message": f"No such object: {bucket}/{obj}", "errors": [
                {"message": f"No such object: {bucket}/{obj}", "domain": "global", "reason": "notFound"}]}},
                status_code=404)
        op, index = held_obj
        data = await run_in_threadpool(_video_bytes, op)
        if request.query_params.get("alt") != "media":
            return JSONResponse({"kind": "storage#object", "bucket": bucket, "name": obj, "size": str(len(data)),
                                 "contentType": "video/mp4"})
        return Response(data, media_type="video/mp4")

    async def service_account_json(request: Request) -> Response:
        token_uri = f"{str(request.base_url).rstrip('/')}/token"
        return JSONResponse(await run_in_threadpool(state.default_service_account, token_uri))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        if status == 404:
            return ApiError(404, "NOT_FOUND", f"The requested URL {request.url.path} was not found on this server."
                            ).response()
        if status == 405:
            return ApiError(405, "UNIMPLEMENTED", f"Method {request.method} is not allowed here.").response()
        return ApiError(status, "UNKNOWN", str(getattr(exc, "detail", "")) or "Bad request").response()

    vertex = "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}"
    app = Starlette(routes=[
        Route("/v1beta/models/{model}:predictLongRunning", studio_create, methods=["POST"]),
        Route("/v1beta/models/{model}/operations/{op}", studio_get, methods=["GET"]),
        Route("/v1beta/files/{file}:download", studio_download, methods=["GET"]),
        Route("/_signed/files/{file}", signed_download, methods=["GET"]),
        Route(vertex + ":predictLongRunning", vertex_create, methods=["POST"]),
        Route(vertex + ":fetchPredictOperation", vertex_fetch, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/storage/v1/b/{bucket}/o/{object:path}", gcs_object, methods=["GET"]),
        Route("/_fake/service-account.json", service_account_json, methods=["GET"]),
    ], exception_handlers={HTTPException: http_error})
    app.state.fake = state
    return app
