"""Google Vertex AI — Veo video generation, authenticated with a service account.

``POST {host}/v1/projects/{P}/locations/{L}/publishers/google/models/{model}:predictLongRunning`` starts an
operation ``projects/{P}/locations/{L}/publishers/google/models/{model}/operations/{id}``;
``POST …/models/{model}:fetchPredictOperation`` with ``{"operationName": name}`` polls it. Each finished
video is inline (``bytesBase64Encoded`` → ``OutputRef.data``) or, when ``storageUri`` was given (through
``provider_params``), a ``gcsUri`` downloaded from the Cloud Storage JSON API with the same token.
Vertex documents no cancel for these operations, so cancel only stops polling.

The bearer token comes from google-auth: the service-account JSON signs a JWT assertion that is exchanged
at the JSON's ``token_uri`` (the OAuth2 JWT-bearer grant). Tokens are cached per service account and
refreshed shortly before they expire (and once more if the API answers 401).

Settings (``AISTATS_PROVIDER_GOOGLE_VERTEX_`` + …):

``API_KEY``          the service-account JSON itself, or the path of the JSON file (required)
``PROJECT``          the project id (default: ``project_id`` of the service-account JSON)
``LOCATION``         the region (default ``us-central1``; ``global`` uses ``aiplatform.googleapis.com``)
``BASE_URL``         replaces ``https://{LOCATION}-aiplatform.googleapis.com`` (a trailing ``/v1`` is accepted)
``STORAGE_BASE_URL`` replaces ``https://storage.googleapis.com`` for ``gs://`` downloads
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from aistats_gateway.providers import config, registry
from aistats_gateway.providers.base import (
    VIDEO,
    CallContext,
    OutputRef,
    Polled,
    ProviderError,
    Submitted,
    VideoRequest,
)
from aistats_gateway.providers.google import common as g

PROVIDER_ID = "google-vertex"
DEFAULT_LOCATION = "us-central1"
DEFAULT_STORAGE_URL = "https://storage.googleapis.com"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
WHO = "Vertex AI"
# compression_quality (0..100) at or above this → "lossless", below → "optimized".
LOSSLESS_FROM = 90


# ---------------------------------------------------------------- credentials

class _LoopTransport:
    """google-auth's ``Request`` interface, run from a worker thread, sending through the shared async
    client on the gateway's event loop (so proxies, timeouts and test fakes apply to the token call too)."""

    def __init__(self, http: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.http, self.loop = http, loop

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: float | None = None, **kwargs: Any) -> Any:
        from google.auth import exceptions

        wait = float(timeout or 30.0)
        coro = self.http.request(method, url, content=body, headers=dict(headers or {}), timeout=wait)
        try:
            resp = asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=wait + 5)
        except Exception as e:
            raise exceptions.TransportError(f"token request failed: {e!r}") from e
        return _TransportResponse(resp)


class _TransportResponse:
    def __init__(self, resp: httpx.Response) -> None:
        self.status, self.headers, self.data = resp.status_code, dict(resp.headers), resp.content


@dataclass
class _Account:
    info: dict[str, Any]
    credentials: Any  # google.oauth2.service_account.Credentials
    lock: threading.Lock


_ACCOUNTS: dict[str, _Account] = {}
_ACCOUNTS_LOCK = threading.Lock()


def service_account_info(raw: str | None) -> dict[str, Any]:
    """The service-account JSON from the API_KEY setting: the JSON text, or the path of a JSON file."""
    prefix = config.env_prefix(PROVIDER_ID)
    if not raw or not raw.strip():
        raise ProviderError("auth", f"no service account: set {prefix}API_KEY to the service-account JSON or its path",
                            code="provider_auth_failed")
    text = raw.strip()
    if not text.startswith("{"):
        try:
            text = Path(text).expanduser().read_text(encoding="utf-8")
        except OSError as e:
            raise ProviderError("auth", f"{prefix}API_KEY is neither service-account JSON nor a readable file "
                                        f"({e.__class__.__name__})", code="provider_auth_failed") from None
    try:
        info = json.loads(text)
    except ValueError:
        raise ProviderError("auth", f"{prefix}API_KEY: the service-account file is not valid JSON",
                            code="provider_auth_failed") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ProviderError("auth", f"{prefix}API_KEY must hold a service-account key (\"type\": "
                                    "\"service_account\")", code="provider_auth_failed")
    return info


def _account(ctx: CallContext) -> _Account:
    """The cached credentials for the configured key. The cache key is the key's content (a file is read
    on every call), so a rotated key file or setting is picked up at once."""
    info = service_account_info(ctx.api_key)
    key = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()
    with _ACCOUNTS_LOCK:
        acct = _ACCOUNTS.get(key)
    if acct is not None:
        return acct
    try:
        from google.oauth2 import service_account

        creds = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
    except (ValueError, KeyError, TypeError) as e:
        raise ProviderError("auth", f"the service-account key cannot be used: {e}",
                            code="provider_auth_failed") from None
    acct = _Account(info, creds, threading.Lock())
    with _ACCOUNTS_LOCK:
        return _ACCOUNTS.setdefault(key, acct)


def _refresh(acct: _Account, transport: _LoopTransport, stale: str | None) -> str:
    from google.auth import exceptions

    with acct.lock:
        creds = acct.credentials
        if creds.valid and creds.token != stale:
            return str(creds.token)
        try:
            creds.refresh(transport)
        except exceptions.RefreshError as e:
            if getattr(e, "retryable", False):
                raise ProviderError("unavailable", f"the OAuth token endpoint failed: {e}",
                                    code="provider_unavailable") from None
            raise ProviderError("auth", f"the service account was refused a token: {e}",
                                code="provider_auth_failed") from None
        except exceptions.TransportError as e:
            raise ProviderError("unavailable", f"cannot reach the OAuth token endpoint: {e}",
                                code="provider_unreachable") from None
        if not creds.token:
            raise ProviderError("auth", "the OAuth token endpoint returned no access token",
                                code="provider_auth_failed")
        return str(creds.token)


async def access_token(ctx: CallContext, *, stale: str | None = None) -> str:
    """A valid bearer token for the configured service account (cached; refreshed in a worker thread).
    ``stale`` is a token the API just refused: a new one is fetched even if it has not expired."""
    acct = _account(ctx)
    creds = acct.credentials
    if creds.valid and creds.token and creds.token != stale:
        return str(creds.token)
    transport = _LoopTransport(ctx.http, asyncio.get_running_loop())
    return await asyncio.to_thread(_refresh, acct, transport, stale)


# ---------------------------------------------------------------- endpoints

def _project(ctx: CallContext) -> str:
    project = g.env(PROVIDER_ID, "PROJECT") or _account(ctx).info.get("project_id")
    if not project:
        raise ProviderError("auth", f"no project: set {config.env_prefix(PROVIDER_ID)}PROJECT",
                            code="provider_auth_failed")
    return str(project)


def _location(ctx: CallContext) -> str:
    return g.env(PROVIDER_ID, "LOCATION") or DEFAULT_LOCATION


def host(ctx: CallContext, location: str) -> str:
    if ctx.base_url:
        return g.strip_version(ctx.base_url, "v1", "v1beta1")
    return "https://aiplatform.googleapis.com" if location == "global" else \
        f"https://{location}-aiplatform.googleapis.com"


def _model_path(name: str) -> str:
    """``projects/…/models/{model}`` from an operation name (cut at ``/operations/``)."""
    path, sep, _ = name.partition("/operations/")
    if not sep or "/models/" not in path:
        raise ProviderError("not_found", f"not a Vertex prediction operation name: {name!r}", code="not_found")
    return path


def _location_of(name: str, default: str) -> str:
    parts = name.split("/")
    return parts[parts.index("locations") + 1] if "locations" in parts[:-1] else default


def gcs_url(ctx: CallContext, uri: str) -> str:
    """``gs://bucket/a/b.mp4`` → ``{storage}/storage/v1/b/bucket/o/a%2Fb.mp4?alt=media`` (JSON API)."""
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise ProviderError("upstream", f"not a gs:// object URI: {uri!r}", code="invalid_upstream_response")
    bucket, _, obj = uri[5:].partition("/")
    base = (g.env(PROVIDER_ID, "STORAGE_BASE_URL") or DEFAULT_STORAGE_URL).rstrip("/")
    return f"{base}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(obj, safe='')}?alt=media"


def compression(quality: int) -> str:
    return "lossless" if quality >= LOSSLESS_FROM else "optimized"


def build_body(request: VideoRequest) -> dict[str, Any]:
    """The ``predictLongRunning`` body for Vertex AI (every unified field has a Vertex parameter)."""
    params = g.common_parameters(request)
    veo2 = g.is_veo2(request.model_slug)
    if request.generate_audio is not None and not veo2:
        params["generateAudio"] = bool(request.generate_audio)
    elif not veo2:
        params["generateAudio"] = True  # required by Veo 3 on Vertex; true is also the documented default
    if request.seed is not None:
        params["seed"] = int(request.seed)
    if request.compression_quality is not None:
        params["compressionQuality"] = compression(int(request.compression_quality))
    if request.resize_mode and any(i.role == "first_frame" for i in request.images):
        mode = request.resize_mode.lower()
        if mode not in ("pad", "crop"):
            raise ProviderError("client", f"resize_mode must be pad or crop, not {request.resize_mode!r}",
                                code="unsupported_value", param="resize_mode")
        params["resizeMode"] = mode
    params.update(request.provider_params)
    return {"instances": [g.instance(request)], "parameters": params}


class GoogleVertexVideo:
    provider_id = PROVIDER_ID
    can_cancel = False  # no documented cancel for publisher-model prediction operations
    poll_interval = 10.0
    max_poll_interval = 30.0
    deadline_seconds = 3600.0

    async def _call(self, ctx: CallContext, method: str, url: str, **kw: Any) -> httpx.Response:
        """An authorised call; on 401 the token is refreshed once and the call repeated."""
        token = await access_token(ctx)
        try:
            return await g.send(ctx, method, url, WHO, headers={"Authorization": f"Bearer {token}"}, **kw)
        except ProviderError as e:
            if e.status != 401:
                raise
        token = await access_token(ctx, stale=token)
        return await g.send(ctx, method, url, WHO, headers={"Authorization": f"Bearer {token}"}, **kw)

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        location = _location(ctx)
        model = quote(request.model_slug, safe=".-_@")
        url = (f"{host(ctx, location)}/v1/projects/{quote(_project(ctx), safe='')}/locations/{location}"
               f"/publishers/google/models/{model}:predictLongRunning")
        op = g.json_body(await self._call(ctx, "POST", url, json=build_body(request)), WHO)
        name = op.get("name")
        if not isinstance(name, str) or "/operations/" not in name:
            raise ProviderError("upstream", f"{WHO} returned no operation name", code="invalid_upstream_response")
        return Submitted(native_id=name)

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        location = _location_of(native_id, _location(ctx))
        url = f"{host(ctx, location)}/v1/{_model_path(native_id)}:fetchPredictOperation"
        op = g.json_body(await self._call(ctx, "POST", url, json={"operationName": native_id}), WHO)
        request = ctx.extra.get("request")
        seconds = float(request.duration) if request is not None and request.duration is not None else None
        return g.polled(op, WHO, seconds)

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        if ref.data is not None:
            yield ref.data
            return
        if not ref.url:
            raise ProviderError("not_found", "the operation named no video to download", code="no_output")
        # The token goes only to the Cloud Storage JSON API (a plain URL, if ever given, is fetched without it).
        url = gcs_url(ctx, ref.url) if ref.url.startswith("gs://") else ref.url
        token = await access_token(ctx)
        secret_origin = url if ref.url.startswith("gs://") else None
        async for chunk in g.stream(ctx, url, "Cloud Storage", headers={"Authorization": f"Bearer {token}"},
                                    secret_origin=secret_origin):
            yield chunk

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        return False


def forget_credentials() -> None:
    """Drop every cached service account and token (tests; a rotated key is picked up anyway)."""
    with _ACCOUNTS_LOCK:
        _ACCOUNTS.clear()


adapter = GoogleVertexVideo()
registry.register(PROVIDER_ID, VIDEO, adapter)
