"""Image inputs of a create request (uploads, ``input_reference``, ``input_references[]``).

Invariants
----------
* One :class:`Budget` per request bounds the work across **all** references together: total
  bytes (fetched or decoded), total pixels, pixels and decoded size of each image, and the
  wall-clock time of every fetch together (not per URL).
* ``data:`` URLs and image headers are decoded in worker threads, slice by slice, so the event
  loop never runs a decode; the decode's size and escape count are bounded before it starts.
* Only image headers are read (``Image.verify``); no image is fully decoded at create time.
* Every refusal is a 400 naming the parameter (``too_large``, ``image_too_large``,
  ``references_too_large``, ``timeout`` …), never a 500.
"""

from __future__ import annotations

import asyncio
import io
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from aistats_gateway.http import limits, ssrf
from aistats_gateway.http.errors import APIError, bad_request
from aistats_gateway.videos.parsing import Upload
from aistats_gateway.videos.schemas import VideoCreateRequest

#: Defaults; the settings ``AISTATS_REFERENCE_*`` override them.
MAX_IMAGE_PIXELS = 16_777_216  # 4096 x 4096 per image
MAX_DECODED_IMAGE_BYTES = 96 * 1024 * 1024  # width x height x bytes per pixel of one image
MAX_TOTAL_BYTES = 64 * 1024 * 1024  # every reference of one request together
MAX_TOTAL_PIXELS = 50_000_000
MAX_FETCH_SECONDS = 30.0  # every URL of one request together
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2,
                    "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4,
                    "I": 4, "F": 4}


@dataclass
class Budget:
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_total_pixels: int = MAX_TOTAL_PIXELS
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_decoded_bytes: int = MAX_DECODED_IMAGE_BYTES
    max_seconds: float = MAX_FETCH_SECONDS
    used_bytes: int = 0
    used_pixels: int = 0
    started: float = field(default_factory=time.monotonic)

    def remaining_bytes(self) -> int:
        return max(self.max_total_bytes - self.used_bytes, 0)

    def remaining_seconds(self) -> float:
        return self.max_seconds - (time.monotonic() - self.started)

    def spend_bytes(self, n: int, param: str) -> None:
        self.used_bytes += n
        if self.used_bytes > self.max_total_bytes:
            raise bad_request(f"The image references of this request exceed {self.max_total_bytes:,} bytes in total "
                              f"(at {param}).", param, "references_too_large")

    def spend_pixels(self, n: int, param: str) -> None:
        self.used_pixels += n
        if self.used_pixels > self.max_total_pixels:
            raise bad_request(f"The image references of this request exceed {self.max_total_pixels:,} pixels in "
                              f"total (at {param}).", param, "references_too_large")


def budget_from(settings: Any) -> Budget:
    if settings is None:
        return Budget()
    return Budget(max_total_bytes=settings.reference_max_total_bytes,
                  max_total_pixels=settings.reference_max_total_pixels,
                  max_image_pixels=settings.reference_max_image_pixels,
                  max_seconds=settings.reference_fetch_seconds)


def _inspect(content: bytes, param: str, max_pixels: int, max_decoded: int) -> int:
    """Pixels of the image in ``content`` (headers and structure only); 400 when unreadable or too big."""
    too_large = bad_request(f"{param} is too large; at most {max_pixels:,} pixels and {max_decoded:,} bytes "
                            "decoded.", param, "image_too_large")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as img:
                pixels = img.width * img.height
                depth = _BYTES_PER_PIXEL.get(img.mode, 4)
                if "16" in str(img.info.get("bits", "")) or img.mode.startswith("I;16"):
                    depth = max(depth, 2)
                if pixels > max_pixels or pixels * depth > max_decoded:
                    raise too_large
                img.verify()  # structure and checksums, without decoding every pixel
                return pixels
    except APIError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_large from None
    except Exception as e:
        raise bad_request(f"{param} is not a readable image (PNG, JPEG, WebP or GIF): {e}", param,
                          "invalid_image") from None


async def check_image(content: bytes, param: str, budget: Budget) -> None:
    pixels = await asyncio.to_thread(_inspect, content, param, budget.max_image_pixels, budget.max_decoded_bytes)
    budget.spend_pixels(pixels, param)


async def _load(fetch_client: Any, policy: ssrf.GuardPolicy, url: str, param: str,
                budget: Budget, data_urls: list[memoryview]) -> tuple[bytes, str]:
    cap = min(policy.max_bytes, budget.remaining_bytes())
    try:
        if (n := limits.cut_index(url)) is not None and n < len(data_urls):
            got = await asyncio.to_thread(ssrf.parse_data_url, data_urls[n], accept_prefix="image/",
                                          max_bytes=max(cap, 1))
        elif url[:5].lower() == "data:":
            got = await asyncio.to_thread(ssrf.parse_data_url, url, accept_prefix="image/",
                                          max_bytes=max(cap, 1))
        else:
            left = budget.remaining_seconds()
            if left <= 0:
                raise ssrf.URLRejected("timeout", f"fetching the image references took longer than "
                                                  f"{budget.max_seconds:g} s in total")
            scoped = ssrf.GuardPolicy(schemes=policy.schemes, allow_private=policy.allow_private,
                                      allowed_hosts=policy.allowed_hosts, max_bytes=max(cap, 1),
                                      timeout_seconds=min(policy.timeout_seconds, left),
                                      max_redirects=policy.max_redirects)
            got = await ssrf.fetch(fetch_client, url, scoped, accept_prefix="image/")
    except ssrf.URLRejected as e:
        code = e.code
        if code == "too_large" and cap < policy.max_bytes:
            code = "references_too_large"
        raise bad_request(f"Cannot use {param}: {e.reason}", param, code) from None
    budget.spend_bytes(len(got.content), param)
    await check_image(got.content, param, budget)
    return got.content, got.content_type.split(";")[0].strip()


async def load_images(fetch_client: Any, policy: ssrf.GuardPolicy, req: VideoCreateRequest,
                      upload: Upload | None, budget: Budget | None = None,
                      data_urls: list[memoryview] | None = None) -> list[dict[str, Any]]:
    """Fetch/decode every image input; returns [{role, content, mime_type, url, reference_type}].
    ``data_urls`` are the large data: URLs the JSON parser cut out of the body (``http/limits.py``)."""
    budget = budget or Budget()
    cut = data_urls or []
    out: list[dict[str, Any]] = []
    if upload is not None:
        if not upload.content_type.startswith("image/"):
            raise bad_request("input_reference must be an image file.", "input_reference", "not_an_image")
        budget.spend_bytes(len(upload.data), "input_reference")
        await check_image(upload.data, "input_reference", budget)
        out.append({"role": "first_frame", "content": upload.data, "mime_type": upload.content_type, "url": None})
    if req.input_reference is not None:
        ref = req.input_reference
        if ref.file_id:
            raise bad_request("input_reference.file_id is not supported; send image_url or upload the image.",
                              "input_reference.file_id", "unsupported_value")
        if not ref.image_url:
            raise bad_request("input_reference needs image_url.", "input_reference", "missing_required_parameter")
        content, mime = await _load(fetch_client, policy, ref.image_url, "input_reference.image_url", budget, cut)
        out.append({"role": "first_frame", "content": content, "mime_type": mime,
                    "url": ref.image_url if not ref.image_url.startswith("data:") else None})
    for i, r in enumerate(req.input_references or []):
        content, mime = await _load(fetch_client, policy, r.image_url.url, f"input_references[{i}].image_url.url",
                                    budget, cut)
        out.append({"role": r.role, "content": content, "mime_type": mime, "reference_type": r.reference_type,
                    "url": r.image_url.url if not r.image_url.url.startswith("data:") else None})
    if sum(1 for x in out if x["role"] == "first_frame") > 1:
        raise bad_request("Only one first_frame image may be given.", "input_references", "conflicting_parameters")
    return out
