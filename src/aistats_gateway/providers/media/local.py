"""The built-in ``local`` provider's images: ``local/procedural-image`` (Pillow, no key, no network).

Generations and edits (the first input image, the mask honoured) in a worker thread; a seed makes
the output repeatable, without one the prompt alone decides it (same prompt → same picture). The
``n`` images use seeds ``seed, seed+1, …``. ``stream`` yields ``partial_images`` low-resolution
previews, then the result.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from aistats_gateway.media import procedural
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import CallContext, ProviderError
from aistats_gateway.providers.media.types import PartialImage
from aistats_gateway.providers.protocols import IMAGES, GeneratedImage, ImageRequest, ImageResult

DEFAULT_SIZE = "1024x1024"


def _spec(request: ImageRequest, i: int, scale: int = 1) -> procedural.ImageSpec:
    size = request.size if request.size not in (None, "auto") else DEFAULT_SIZE
    try:
        w, h = (int(x) for x in str(size).lower().split("x"))
    except ValueError:
        raise ProviderError("client", f"size {size!r} is not WIDTHxHEIGHT", code="invalid_size",
                            param="size") from None
    seed = request.provider_params.get("seed")
    base = int(seed) if seed is not None else int(hashlib.sha256(request.prompt.encode()).hexdigest()[:8], 16)
    return procedural.ImageSpec(request.prompt, max(16, w // scale), max(16, h // scale), (base + i) % 2**32,
                                request.output_format or "png", request.background or "auto",
                                request.provider_params.get("output_compression"))


class LocalImages:
    provider_id = "local"
    supports_edits = True

    def _one(self, request: ImageRequest, i: int, scale: int = 1) -> bytes:
        spec = _spec(request, i, scale)
        if request.images:
            mask = request.mask.content if request.mask is not None else None
            return procedural.edit(spec, request.images[0].content, mask)
        return procedural.generate(spec)

    async def _render(self, request: ImageRequest, i: int, scale: int = 1) -> bytes:
        try:
            return await asyncio.to_thread(self._one, request, i, scale)
        except ValueError as e:
            raise ProviderError("client", str(e), code="invalid_request") from None

    async def generate(self, request: ImageRequest, ctx: CallContext) -> ImageResult:
        mime = procedural.FORMATS[request.output_format or "png"]
        out = [GeneratedImage(data=await self._render(request, i), mime_type=mime) for i in range(request.n)]
        spec = _spec(request, 0)
        return ImageResult(tuple(out), {"size": f"{spec.width}x{spec.height}", "quality": request.quality or "auto",
                                        "background": request.background or "auto"})

    async def stream(self, request: ImageRequest, ctx: CallContext) -> AsyncIterator[PartialImage | ImageResult]:
        mime = procedural.FORMATS[request.output_format or "png"]
        for p in range(int(request.provider_params.get("partial_images") or 0)):
            yield PartialImage(p, await self._render(request, 0, scale=8 >> p if p < 3 else 1), mime)
        yield await self.generate(request, ctx)


adapter = LocalImages()
registry.register("local", IMAGES, adapter, needs_credentials=False)
