"""The built-in ``local/procedural-image`` model end to end with no provider key, on SQLite and PostgreSQL:
generations (b64_json and signed url, png/jpeg/webp, seed-determinism), edits with a mask (multipart),
streamed partial images, free (a key with no credits works), recorded as generations."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from aistats_gateway.inference.tables import Generation
from tests.support.gateway import Gateway, run_async

MODEL = "local/procedural-image"


@pytest.fixture(scope="module")
def broke(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=gateway.create_key("no credits"), base_url=gateway.base_url + "/v1", max_retries=0)


def _open(b64: str | None) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64 or "")))


def test_generate_without_credits_or_keys(broke: openai.OpenAI, gateway: Gateway) -> None:
    r = broke.images.generate(model=MODEL, prompt="a paper boat", size="512x512", output_format="webp",
                              extra_body={"seed": 7})
    img = _open(r.data[0].b64_json)
    assert img.format == "WEBP" and img.size == (512, 512)
    extra = dict(r.model_extra or {})
    assert extra["provider"] == "local" and extra["cost_nanos"] == 0 and r.output_format == "webp"
    again = broke.images.generate(model=MODEL, prompt="a paper boat", size="512x512", output_format="webp",
                                  extra_body={"seed": 7})
    assert again.data[0].b64_json == r.data[0].b64_json  # same seed, same bytes

    async def work(sessions: Any) -> Generation | None:
        async with sessions() as s:
            return await s.get(Generation, extra["requestId"])

    g = run_async(work, gateway.settings)
    assert g is not None and g.status == "completed" and g.provider == "local" and g.cost_nanos == 0


def test_url_output_and_transparent_png(broke: openai.OpenAI, gateway: Gateway) -> None:
    r = broke.images.generate(model=MODEL, prompt="a kite", n=2, size="256x256", background="transparent",
                              response_format="url")
    for item in r.data:
        got = httpx.get(item.url or "")
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        img = Image.open(io.BytesIO(got.content))
        assert img.mode == "RGBA" and img.size == (256, 256)


def test_edit_with_mask(broke: openai.OpenAI) -> None:
    src, mask = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (256, 256), (0, 90, 200)).save(src, "PNG")
    m = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), (0, 0, 256, 64))  # only the top band is transparent: edited
    m.save(mask, "PNG")
    r = broke.images.edit(model=MODEL, image=("in.png", src.getvalue(), "image/png"),
                          mask=("mask.png", mask.getvalue(), "image/png"), prompt="a sun", size="256x256")
    out = _open(r.data[0].b64_json).convert("RGB")
    assert out.getpixel((250, 120)) == (0, 90, 200)
    assert out.getpixel((250, 5)) != (0, 90, 200)
    with pytest.raises(openai.BadRequestError) as e:
        broke.images.edit(model=MODEL, image=("in.png", b"not an image", "image/png"), prompt="x")
    assert e.value.param == "image"


def test_streamed_partial_images(broke: openai.OpenAI) -> None:
    events = list(broke.images.generate(model=MODEL, prompt="a comet", size="512x512", stream=True, partial_images=2))
    kinds = [e.type for e in events]
    assert kinds == ["image_generation.partial_image", "image_generation.partial_image",
                     "image_generation.completed"]
    final = events[-1]
    assert _open(getattr(final, "b64_json", None)).size == (512, 512)
    assert _open(getattr(events[0], "b64_json", None)).size[0] < 512


def test_unsupported_values_are_400s(broke: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        broke.images.generate(model=MODEL, prompt="x", size="300x300")
    assert e.value.param == "size" and "1024x1024" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        broke.images.generate(model=MODEL, prompt="x", output_format="jpeg", background="transparent")
    assert e.value.param == "background"
    with pytest.raises(openai.BadRequestError) as e:
        broke.images.generate(model=MODEL, prompt="")
    assert e.value.param == "prompt"
