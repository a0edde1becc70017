"""Alibaba Model Studio (DashScope) Qwen-Image, asynchronous text-to-image:
``POST /api/v1/services/aigc/text2image/image-synthesis`` with ``X-DashScope-Async: enable`` and
``{model, input: {prompt, negative_prompt}, parameters: {size "W*H", n, seed, watermark: false}}``,
then ``GET /api/v1/tasks/{task_id}`` until ``SUCCEEDED`` (``output.results[].url``, downloaded by the
caller: DashScope's links expire after 24 h). ``size`` may be written ``WxH``. Errors and settings as
the Wan video adapter (``providers.alibaba``)."""

from __future__ import annotations

from typing import Any

from aistats_gateway.providers import alibaba as ds
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.media._hosted import dimensions, poll
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult

PROVIDER = "alibaba"
PATH = "/api/v1/services/aigc/text2image/image-synthesis"
FINAL = ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")


def body_for(request: ImageRequest) -> dict[str, Any]:
    inp: dict[str, Any] = {"prompt": request.prompt}
    if request.provider_params.get("negative_prompt"):
        inp["negative_prompt"] = request.provider_params["negative_prompt"]
    params: dict[str, Any] = {"n": request.n, "watermark": False}
    dims = dimensions(request)
    if dims is not None:
        params["size"] = f"{dims[0]}*{dims[1]}"
    if request.provider_params.get("seed") is not None:
        params["seed"] = int(request.provider_params["seed"])
    return {"model": request.model_slug, "input": inp, "parameters": params}


class QwenImages:
    provider_id = PROVIDER
    supports_edits = False

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        body = body_for(request)
        made = await ds._call(ctx, "POST", PATH, headers={"X-DashScope-Async": "enable"}, json=body)
        task_id = (made.get("output") or {}).get("task_id")
        if not isinstance(task_id, str):
            raise ProviderError("upstream", "DashScope answered without a task id", code="invalid_upstream_response")

        async def fetch() -> dict[str, Any]:
            return await ds._call(ctx, "GET", f"/api/v1/tasks/{task_id}")

        got = await poll(fetch, lambda t: (t.get("output") or {}).get("task_status") in FINAL, PROVIDER)
        out = got.get("output") or {}
        if out.get("task_status") != "SUCCEEDED":
            raise ds.error_for(400, str(out.get("code") or "TaskFailed"), str(out.get("message") or "the task failed"))
        urls = [r["url"] for r in out.get("results") or [] if isinstance(r, dict) and isinstance(r.get("url"), str)]
        if not urls:
            raise ProviderError("upstream", "DashScope's task has no image", code="empty_result")
        size = body["parameters"].get("size")
        return ImageResult(tuple(GeneratedImage(url=u, mime_type="image/png") for u in urls),
                           {"size": size.replace("*", "x")} if size else {})


registry.register(PROVIDER, IMAGES, QwenImages())
