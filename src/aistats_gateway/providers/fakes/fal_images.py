"""The fal fake's image models (fal.ai model pages: FLUX1.1 [pro], FLUX.1 Kontext [pro], FLUX.1
[schnell]): their input schemas for the queue (``fal.py`` adds them to ``MODELS``), their result
``{images: [{url, width, height, content_type}], seed, has_nsfw_concepts, prompt, timings}`` and the
image files under ``/files/…`` (no auth).

``image_size`` is an enum (square_hd 1024², square 512², portrait_4_3 768x1024, portrait_16_9
576x1024, landscape_4_3 1024x768, landscape_16_9 1024x576) or ``{width, height}``; ``num_images``
1-4; ``output_format`` jpeg|png. Kontext takes ``image_url`` (required: it edits) and ``aspect_ratio``.
"""
from __future__ import annotations

import base64
from typing import Any

from aistats_gateway.media import procedural

from .fal import F, QueuedRequest, _enum

SIZES = {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024), "portrait_16_9": (576, 1024),
         "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576)}
_COMMON = {"prompt": F("str", required=True), "seed": F("int"), "num_images": F("int", default=1, minimum=1, maximum=4),
           "output_format": _enum("jpeg", "png"), "enable_safety_checker": F("bool", default=True),
           "sync_mode": F("bool", default=False)}
FLUX_PRO = {**_COMMON, "image_size": F("size", default="landscape_4_3"),
            "safety_tolerance": _enum("2", "1", "3", "4", "5", "6")}
SCHNELL = {**_COMMON, "image_size": F("size", default="landscape_4_3"),
           "num_inference_steps": F("int", default=4, minimum=1, maximum=12)}
KONTEXT = {**_COMMON, "image_url": F("url", required=True), "guidance_scale": F("float", default=3.5),
           "aspect_ratio": _enum("1:1", "21:9", "16:9", "4:3", "3:2", "2:3", "3:4", "9:16", "9:21")}
IMAGE_MODELS: dict[str, dict[str, F]] = {"fal-ai/flux-pro/v1.1": FLUX_PRO, "fal-ai/flux/schnell": SCHNELL,
                                         "fal-ai/flux-pro/kontext": KONTEXT}


def size_error(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str) and value in SIZES:
        return None
    if isinstance(value, dict) and all(isinstance(value.get(k), int) and 16 <= value[k] <= 14142
                                       for k in ("width", "height")):
        return None
    return {"loc": ["body", "image_size"], "msg": "Input should be 'square_hd', 'square', 'portrait_4_3', "
            "'portrait_16_9', 'landscape_4_3' or 'landscape_16_9', or an object with width and height",
            "type": "image_size_error", "input": value}


def dims(values: dict[str, Any]) -> tuple[int, int]:
    size = values.get("image_size") or "landscape_4_3"
    if isinstance(size, dict):
        return int(size["width"]), int(size["height"])
    return SIZES.get(str(size), (1024, 768))


def result(base_url: str, req: QueuedRequest) -> dict[str, Any]:
    w, h = dims(req.values)
    fmt = req.values.get("output_format") or "jpeg"
    n = int(req.values.get("num_images") or 1)
    return {"images": [{"url": f"{base_url}/files/{req.file}_image_{i}.{fmt}", "width": w, "height": h,
                        "content_type": f"image/{fmt}"} for i in range(n)],
            "seed": req.values.get("seed", req.seed), "has_nsfw_concepts": [False] * n,
            "prompt": req.values.get("prompt"), "timings": {"inference": 0.5}}


def render(req: QueuedRequest, index: int) -> tuple[bytes, str]:
    w, h = dims(req.values)
    fmt = str(req.values.get("output_format") or "jpeg")
    seed = int(req.values.get("seed", req.seed)) + index
    spec = procedural.ImageSpec(str(req.values.get("prompt") or ""), w, h, seed % 2**32, fmt)
    src = req.values.get("image_url")
    if isinstance(src, str) and src.startswith("data:"):
        return procedural.edit(spec, base64.b64decode(src.split(",", 1)[1])), f"image/{fmt}"
    return procedural.generate(spec), f"image/{fmt}"
