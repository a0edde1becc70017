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
  ``iat``/``exp`` are checked (``aud`` is Google's canonical token URL or this one); answers
  ``{access_token, expires_in, token_type}`` or ``{error, error_description}``.
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

This module holds the routes and handlers; the state is in ``google_state``, the error envelope in
``google_errors``, the token check in ``google_auth``, body validation in ``google_validation`` and the
operations in ``google_operations``.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ._common import RecordedRequest, mentions, recorded
from .google_auth import GOOGLE_TOKEN_AUDIENCE, JWT_BEARER, SCOPE, OAuthError, verify_assertion
from .google_errors import ApiError, injected_failure, invalid, rate_limited
from .google_operations import INTERNAL_FAILURE, RAI_REASON, new_operation, operation_json, video_bytes
from .google_state import FakeGoogleState, Operation, ServiceAccount
from .google_validation import (
    COMMON_PARAMS,
    DIMENSIONS,
    IMAGE_TYPES,
    PERSON_GENERATION,
    STUDIO_INSTANCE_KEYS,
    VERTEX_INSTANCE_KEYS,
    VERTEX_ONLY_PARAMS,
    ModelSpec,
    model_spec,
    read_json,
    validate_create,
)

STUDIO_MODELS = ("veo-3.1-generate-preview", "veo-3.1-fast-generate-preview", "veo-3.1-lite-generate-preview",
                 "veo-3.0-generate-001", "veo-3.0-fast-generate-001", "veo-2.0-generate-001")
VERTEX_MODELS = ("veo-3.1-generate-001", "veo-3.1-fast-generate-001", "veo-3.1-generate-preview",
                 "veo-3.1-fast-generate-preview", "veo-3.0-generate-001", "veo-3.0-fast-generate-001",
                 "veo-2.0-generate-001", "veo-2.0-generate-exp")
FILE_TTL_SECONDS = 2 * 24 * 3600  # Gemini API files live for two days
SIGNED_URL_TTL_SECONDS = 300
PROMPT_BLOCKED = ("The prompt could not be submitted. This prompt contains sensitive words that violate Google's "
                  "Responsible AI practices. Try rephrasing the prompt. If you think this was an error, send "
                  "feedback. Support codes: 17301594")

__all__ = [
    "COMMON_PARAMS", "DIMENSIONS", "FILE_TTL_SECONDS", "GOOGLE_TOKEN_AUDIENCE", "IMAGE_TYPES", "INTERNAL_FAILURE",
    "JWT_BEARER", "PERSON_GENERATION", "PROMPT_BLOCKED", "RAI_REASON", "SCOPE", "SIGNED_URL_TTL_SECONDS",
    "STUDIO_INSTANCE_KEYS", "STUDIO_MODELS", "VERTEX_INSTANCE_KEYS", "VERTEX_MODELS", "VERTEX_ONLY_PARAMS",
    "ApiError", "FakeGoogleState", "ModelSpec", "OAuthError", "Operation", "ServiceAccount", "create_app",
    "model_spec", "verify_assertion",
]


@dataclass
class GoogleRequest(RecordedRequest):
    email: str | None = None  # the service account an access token was issued to (Vertex calls)


def create_app(api_key: str = "AIza-fake-gemini-key", *, project: str = "fake-project",
               clock: Callable[[], float] = time.monotonic, render_seconds: float = 2.0,
               **knobs: Any) -> Starlette:
    """Build the fake; ``knobs`` are other :class:`FakeGoogleState` fields (e.g. ``fail_jobs=True``).
    The state is ``app.state.fake``; tests may change any of its fields while the app runs."""
    state = FakeGoogleState(api_key=api_key, project=project, clock=clock, render_seconds=render_seconds, **knobs)

    def endpoint(auth: str | None) -> Callable[[Callable[..., Any]], Callable[[Request], Any]]:
        """Record the request, check ``auth`` ("key" | "bearer" | None) and the rate-limit knob."""
        def gate(request: Request, rec: GoogleRequest) -> None:
            if auth == "key":
                _check_key(request)
            elif auth == "bearer":
                rec.email = _check_bearer(request)
            if auth and state.take_rate_limit():
                raise rate_limited(state)

        def wrap(handler: Callable[..., Any]) -> Callable[[Request], Any]:
            return recorded(state, handler, errors=(ApiError, OAuthError), answer=lambda exc, rec: exc.response(),
                            gate=gate, record=GoogleRequest.of, args=lambda request, rec: (rec.email,))
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
        if state.take_create_failure() is not None:
            raise injected_failure(state)
        rec.body = await read_json(request)
        values = validate_create("studio", model, rec.body, state)
        if mentions(values["prompt"], state.block_prompts):
            raise invalid(PROMPT_BLOCKED)
        op = new_operation(state, "studio", model, values)
        return JSONResponse({"name": op.name})

    @endpoint("key")
    async def studio_get(request: Request, rec: RecordedRequest, _: Any) -> Response:
        name = f"models/{request.path_params['model']}/operations/{request.path_params['op']}"
        op = state.operations.get(name)
        if op is None or op.api != "studio" or state.forget_operations:
            raise ApiError(404, "NOT_FOUND", f"Operation {name} not found.")
        return JSONResponse(operation_json(op, state, request))

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
        op, _index = _file(fid)
        if request.query_params.get("alt") != "media":
            data = await run_in_threadpool(video_bytes, op)
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
        data = await run_in_threadpool(video_bytes, op)
        return Response(data, media_type="video/mp4")

    # ---- Vertex AI
    @endpoint("bearer")
    async def vertex_create(request: Request, rec: RecordedRequest, email: str | None) -> Response:
        project_id, location, model = _vertex_access(request, email)
        if state.take_create_failure() is not None:
            raise injected_failure(state)
        rec.body = await read_json(request)
        values = validate_create("vertex", model, rec.body, state)
        if mentions(values["prompt"], state.block_prompts):
            raise invalid(PROMPT_BLOCKED)
        op = new_operation(state, "vertex", model, values, project=project_id, location=location)
        return JSONResponse({"name": op.name})

    @endpoint("bearer")
    async def vertex_fetch(request: Request, rec: RecordedRequest, email: str | None) -> Response:
        project_id, location, model = _vertex_access(request, email)
        rec.body = await read_json(request)
        name = rec.body.get("operationName") if isinstance(rec.body, dict) else None
        if not isinstance(name, str) or not name:
            raise invalid("operationName is required.", "operationName")
        resource = f"projects/{project_id}/locations/{location}/publishers/google/models/{model}"
        if not name.startswith(resource + "/operations/"):
            raise invalid(f"The operation {name} does not belong to {resource}.", "operationName")
        op = state.operations.get(name)
        if op is None or op.api != "vertex" or state.forget_operations:
            raise ApiError(404, "NOT_FOUND", f"Operation {name} not found.")
        return JSONResponse(await run_in_threadpool(operation_json, op, state, request))

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
        op, _index = held_obj
        data = await run_in_threadpool(video_bytes, op)
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

    from .google_images import image_routes  # Imagen :predict, Gemini image output: google_images.py
    from .google_inference import gemini_routes  # generateContent & co.: google_inference.py
    from .inference_common import InferenceState

    vertex = "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}"
    app = Starlette(routes=[
        *image_routes(state, _check_key, _check_bearer),  # before generateContent: image models only
        Route("/v1beta/models/{model}:predictLongRunning", studio_create, methods=["POST"]),
        Route("/v1beta/models/{model}/operations/{op}", studio_get, methods=["GET"]),
        Route("/v1beta/files/{file}:download", studio_download, methods=["GET"]),
        Route("/_signed/files/{file}", signed_download, methods=["GET"]),
        Route(vertex + ":predictLongRunning", vertex_create, methods=["POST"]),
        Route(vertex + ":fetchPredictOperation", vertex_fetch, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/storage/v1/b/{bucket}/o/{object:path}", gcs_object, methods=["GET"]),
        Route("/_fake/service-account.json", service_account_json, methods=["GET"]),
        *gemini_routes(state, inference := InferenceState(api_key=api_key, provider="google")),  # generateContent…
    ], exception_handlers={HTTPException: http_error})
    app.state.fake, app.state.inference = state, inference
    return app
