"""Small HTTP helpers any provider adapter may use.

* :func:`send` — one request with the shared client; timeouts and connection errors become
  ``ProviderError("unavailable")``. It does not look at the status code: adapters map errors.
* :func:`json_object` — the JSON object of a response, or ``ProviderError("upstream")``.
* :func:`retry_after` — seconds from ``retry-after-ms`` / ``Retry-After`` (number or HTTP date).
* :func:`stream_url` — stream a provider's output URL (a signed CDN/object-store link) in chunks;
  403/404/410 mean the link expired or the file is gone (``not_found``), 5xx ``unavailable``.
* :func:`image_url` / :func:`data_url` — an input image as the https URL the caller gave, or as
  a base64 data URL.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import httpx

from aistats_gateway.providers.base import ImageInput, ProviderError, error_from_status

CHUNK = 1024 * 1024
T = TypeVar("T")


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds the provider asks us to wait, from ``retry-after-ms`` or ``Retry-After``."""
    ms = resp.headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = (resp.headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return max(0.0, parsed.timestamp() - time.time())


async def send(http: Any, method: str, url: str, *, provider: str, **kw: Any) -> httpx.Response:
    """``http.request(method, url, **kw)``; transport failures become ``unavailable``."""
    resp: httpx.Response = await guarded(provider, http.request(method, url, **kw))
    return resp


async def guarded(provider: str, call: Awaitable[T]) -> T:
    """Await one upstream call; httpx's transport failures become ``unavailable``."""
    try:
        return await call
    except httpx.TimeoutException as e:
        raise ProviderError("unavailable", f"{provider} timed out ({e.__class__.__name__})",
                            code="provider_timeout") from e
    except httpx.TransportError as e:
        raise ProviderError("unavailable", f"cannot reach {provider}: {e.__class__.__name__}: {e}",
                            code="provider_unreachable") from e


def json_object(resp: httpx.Response, provider: str) -> dict[str, Any]:
    """The response's JSON object; ``upstream`` when it is not JSON or not an object."""
    try:
        body = resp.json()
    except ValueError as e:
        raise ProviderError("upstream", f"{provider} returned a body that is not JSON (HTTP {resp.status_code})",
                            status=resp.status_code, code="invalid_upstream_response") from e
    if not isinstance(body, dict):
        raise ProviderError("upstream", f"{provider} returned an unexpected JSON body (HTTP {resp.status_code})",
                            status=resp.status_code, code="invalid_upstream_response")
    return body


async def stream_url(http: Any, url: str, *, provider: str, headers: dict[str, str] | None = None,
                     chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
    """Stream the bytes at ``url`` (an output link). Send no credentials unless ``headers`` says so."""
    try:
        async with http.stream("GET", url, headers=headers or {}, follow_redirects=True) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                message = f"downloading the output from {provider} failed with HTTP {resp.status_code}"
                if resp.status_code in (403, 404, 410):
                    raise ProviderError("not_found", message + " (the link expired or the file is gone)",
                                        status=resp.status_code, code="output_unavailable")
                raise error_from_status(resp.status_code, message, retry_after=retry_after(resp))
            async for chunk in resp.aiter_bytes(chunk_size):
                yield chunk
    except httpx.TimeoutException as e:
        raise ProviderError("unavailable", f"{provider} timed out sending the video", code="provider_timeout") from e
    except httpx.TransportError as e:
        raise ProviderError("unavailable", f"downloading the output from {provider} failed: {e}",
                            code="provider_unreachable") from e


def data_url(image: ImageInput) -> str:
    return f"data:{image.mime_type};base64,{base64.b64encode(image.content).decode()}"


def image_url(image: ImageInput) -> str:
    """The caller's https URL when there is one, else the bytes as a base64 data URL."""
    if image.url and image.url.startswith(("https://", "http://")):
        return image.url
    return data_url(image)
