"""Fake xAI image generation (docs.x.ai: ``POST /v1/images/generations``), mounted on the xAI fake.

JSON ``model`` (``grok-2-image-1212``, ``grok-2-image``, ``grok-imagine-image``), ``prompt`` (required),
``n`` 1-10, ``response_format`` ``url`` (default) | ``b64_json``, ``user``. ``size``, ``quality`` and
``style`` are not supported (400 "Argument not supported: size"). Images are JPEG (1024x768), each
with a ``revised_prompt``; URLs are served here (``/xai-imgen/{id}.jpeg``, no auth).
Errors are xAI's ``{"code", "error"}``; a wrong key is HTTP 400. Faults: ``fail_next``/``fail_status``.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aistats_gateway.media import procedural

MODELS = ("grok-2-image-1212", "grok-2-image", "grok-2-image-latest", "grok-imagine-image")


@dataclass
class XaiImageState:
    api_key: str = "xai-test"
    fail_next: int = 0
    fail_status: int = 503
    requests: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)


def _err(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "error": message}, status_code=status)


def image_routes(state: XaiImageState) -> list[Route]:
    async def generate(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth:
            return _err(401, "Unauthenticated", "No API key provided.")
        if auth != f"Bearer {state.api_key}":
            return _err(400, "Client specified an invalid argument", "Incorrect API key provided: "
                        f"{auth[7:12]}***. You can obtain an API key from https://console.x.ai.")
        if state.fail_next > 0:
            state.fail_next -= 1
            return _err(state.fail_status, "Service unavailable", "The service is temporarily unavailable.")
        try:
            body = await request.json()
        except ValueError:
            return _err(422, "Unprocessable Entity", "Failed to parse the request body as JSON")
        state.requests.append(body)
        model = body.get("model")
        if model not in MODELS:
            return _err(404, "Some requested entity was not found",
                        f"The model {model} does not exist or your team does not have access to it.")
        for p in ("size", "quality", "style"):
            if p in body:
                return _err(400, "Client specified an invalid argument", f"Argument not supported: {p}")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return _err(400, "Client specified an invalid argument", "prompt: a non-empty prompt is required")
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 10:
            return _err(400, "Client specified an invalid argument", "n: must be between 1 and 10")
        fmt = body.get("response_format", "url")
        if fmt not in ("url", "b64_json"):
            return _err(400, "Client specified an invalid argument", f"response_format: unknown value {fmt}")
        data = []
        for i in range(n):
            seed = int(hashlib.sha256(f"xai{i}".encode()).hexdigest()[:8], 16)
            img = await run_in_threadpool(procedural.generate, procedural.ImageSpec(prompt, 1024, 768, seed, "jpeg"))
            item: dict[str, Any] = {"revised_prompt": f"A vivid image of {prompt}"}
            if fmt == "url":
                fid = secrets.token_hex(8)
                state.files[fid] = img
                item["url"] = f"{str(request.base_url).rstrip('/')}/xai-imgen/{fid}.jpeg"
            else:
                item["b64_json"] = base64.b64encode(img).decode()
            data.append(item)
        return JSONResponse({"data": data})

    async def file(request: Request) -> Response:
        got = state.files.get(request.path_params["fid"])
        if got is None:
            return Response(b"Not Found", 404)
        return Response(got, media_type="image/jpeg")

    return [Route("/v1/images/generations", generate, methods=["POST"]),
            Route("/xai-imgen/{fid}.jpeg", file, methods=["GET"])]
