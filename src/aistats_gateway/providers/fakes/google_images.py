"""Fake Google image generation, mounted on the Google fake (ai.google.dev/gemini-api/docs/imagen,
…/image-generation; Vertex ``publishers/google/models/{m}:predict``).

* Imagen ``POST /v1beta/models/{model}:predict`` (``x-goog-api-key``) and Vertex
  ``…/publishers/google/models/{model}:predict`` (bearer token from the fake's ``/token``):
  ``{"instances": [{"prompt"}], "parameters": {sampleCount 1-4, aspectRatio 1:1|3:4|4:3|9:16|16:9,
  personGeneration dont_allow|allow_adult|allow_all, outputOptions{mimeType image/png|image/jpeg,
  compressionQuality}, imageSize 1K|2K}}`` → ``{"predictions": [{"bytesBase64Encoded", "mimeType"}]}``.
* Gemini image output ``POST /v1beta/models/{gemini-*-image*}:generateContent`` with
  ``generationConfig.responseModalities`` including ``IMAGE`` and ``imageConfig.aspectRatio`` →
  a candidate with a text part and an ``inlineData`` PNG part, ``usageMetadata``.
Errors are Google's ``{"error": {code, message, status}}``. Faults: the Google fake's ``fail_next_creates``.
"""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aistats_gateway.media import procedural

from .google_errors import ApiError

RATIOS = {"1:1": (1024, 1024), "3:4": (896, 1280), "4:3": (1280, 896), "9:16": (768, 1408), "16:9": (1408, 768),
          "2:3": (832, 1248), "3:2": (1248, 832), "4:5": (896, 1152), "5:4": (1152, 896), "21:9": (1536, 672)}
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")


class ImageModel(Convertor[str]):
    regex = r"gemini-[^/:]*image[^/:]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("gemini_image", ImageModel())


def _bad(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def image_routes(state: Any, check_key: Callable[[Request], object], check_token: Callable[[Request], object]
                 ) -> list[Route]:
    def faults() -> None:
        if getattr(state, "fail_next_creates", 0) > 0:
            state.fail_next_creates -= 1
            raise ApiError(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")

    async def predict(request: Request, model: str) -> Response:
        faults()
        if not model.startswith("imagen-"):
            raise ApiError(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not "
                           "supported for predict.")
        try:
            body = await request.json()
        except ValueError:
            raise _bad("Invalid JSON payload received.") from None
        inst = (body.get("instances") or [{}])[0]
        prompt = inst.get("prompt") if isinstance(inst, dict) else None
        if not isinstance(prompt, str) or not prompt:
            raise _bad("The prompt is required.")
        params = body.get("parameters") or {}
        n = params.get("sampleCount", 4)
        if not isinstance(n, int) or not 1 <= n <= 4:
            raise _bad("sampleCount must be between 1 and 4.")
        ratio = params.get("aspectRatio", "1:1")
        if ratio not in IMAGEN_RATIOS:
            raise _bad(f"Unsupported aspect ratio: {ratio}. Supported: {', '.join(IMAGEN_RATIOS)}.")
        pg = params.get("personGeneration", "allow_adult")
        if pg not in ("dont_allow", "allow_adult", "allow_all"):
            raise _bad(f"Invalid personGeneration: {pg}.")
        opts = params.get("outputOptions") or {}
        mime = opts.get("mimeType", "image/png")
        if mime not in ("image/png", "image/jpeg"):
            raise _bad(f"Unsupported output mime type: {mime}.")
        w, h = RATIOS[ratio]
        if params.get("imageSize") == "2K":
            w, h = w * 2, h * 2
        fmt = "jpeg" if mime == "image/jpeg" else "png"
        q = opts.get("compressionQuality")
        preds = []
        for i in range(n):
            seed = int(hashlib.sha256(f"{model}{i}".encode()).hexdigest()[:8], 16)
            spec = procedural.ImageSpec(prompt, w, h, seed, fmt, compression=None if q is None else 100 - int(q))
            data = await run_in_threadpool(procedural.generate, spec)
            preds.append({"bytesBase64Encoded": base64.b64encode(data).decode(), "mimeType": mime})
        return JSONResponse({"predictions": preds})

    async def studio_predict(request: Request) -> Response:
        try:
            check_key(request)
            return await predict(request, request.path_params["model"])
        except ApiError as e:
            return e.response()

    async def vertex_predict(request: Request) -> Response:
        try:
            check_token(request)
            return await predict(request, request.path_params["model"])
        except ApiError as e:
            return e.response()

    async def gemini_image(request: Request) -> Response:
        try:
            check_key(request)
            faults()
            body = await request.json()
            parts = [p for c in body.get("contents") or [] for p in (c.get("parts") or [])]
            prompt = " ".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
            if not prompt:
                raise _bad("contents must contain a text part.")
            cfg = body.get("generationConfig") or {}
            mods = [str(m).upper() for m in cfg.get("responseModalities") or ["TEXT", "IMAGE"]]
            ratio = (cfg.get("imageConfig") or {}).get("aspectRatio", "1:1")
            if ratio not in RATIOS:
                raise _bad(f"Unsupported aspect ratio: {ratio}.")
            out: list[dict[str, Any]] = [{"text": f"Here is an image of {prompt}."}]
            if "IMAGE" in mods:
                w, h = RATIOS[ratio]
                seed = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
                data = await run_in_threadpool(procedural.generate, procedural.ImageSpec(prompt, w, h, seed))
                out.append({"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}})
            return JSONResponse({"candidates": [{"content": {"role": "model", "parts": out}, "finishReason": "STOP",
                                                 "index": 0}],
                                 "usageMetadata": {"promptTokenCount": max(1, len(prompt) // 4),
                                                   "candidatesTokenCount": 1290 if "IMAGE" in mods else 10,
                                                   "totalTokenCount": max(1, len(prompt) // 4) + 1290},
                                 "modelVersion": request.path_params["model"]})
        except ApiError as e:
            return e.response()

    vertex = "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}"
    return [Route("/v1beta/models/{model}:predict", studio_predict, methods=["POST"]),
            Route(vertex + ":predict", vertex_predict, methods=["POST"]),
            Route("/v1beta/models/{model:gemini_image}:generateContent", gemini_image, methods=["POST"])]
