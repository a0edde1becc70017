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
    rec = httpx.get(f"{gateway.base_url}/v1/generations/{g.id}", headers={"Authorization": f"Bearer {broke.api_key}"})
    assert rec.status_code == 200 and rec.json()["endpoint"] == "images.generations"


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


def test_abandoned_call_is_closed_by_the_sweep(gateway: Gateway) -> None:
    """A call whose process died mid-call: the billing sweep finds it once old enough, marks it failed and
    voids its hold (nothing charged); a fresh open call is left alone."""
    import datetime as dt
    from types import SimpleNamespace

    from sqlalchemy import update

    from aistats_gateway.billing import jobs as billing_jobs
    from aistats_gateway.billing import ledger
    from aistats_gateway.billing.tables import Hold
    from aistats_gateway.media_api import calls

    key = gateway.create_key("sweep", credits_usd=1)
    parsed = __import__("aistats_gateway.auth.keys", fromlist=["parse"]).parse(key)

    async def work(sessions: Any) -> tuple[list[str], str, str, int, int]:
        from aistats_gateway.auth.tables import ApiKey

        async with sessions() as s:
            ws = (await s.get(ApiKey, parsed.key_id)).workspace_id
        gw = SimpleNamespace(sessions=sessions)
        old, fresh = (calls.Call(calls.new_generation_id(), calls.Caller(parsed.key_id, ws), "images.generations",
                                 "openai/gpt-image-1", 100_000_000) for _ in range(2))
        for c in (old, fresh):
            await calls.open_call(gw, c)
        async with sessions() as s, s.begin():
            await s.execute(update(Generation).where(Generation.id == old.gen_id).values(
                created_at=dt.datetime.now(dt.UTC) - calls.ABANDON_AFTER - dt.timedelta(minutes=1)))
        due = await billing_jobs.due_refs(sessions, [calls.KIND], 100)
        for item in due:
            await calls.finalizer(gw)(item.partition(":")[2])
        async with sessions() as s:
            g_old, g_fresh = await s.get(Generation, old.gen_id), await s.get(Generation, fresh.gen_id)
            held = (await s.get(Hold, f"hold_{fresh.gen_id}")).state
            bal = await ledger.balance(s, ws)
        return due, g_old.status, g_fresh.status + ":" + held, bal.available_nanos, bal.balance_nanos

    due, old_status, fresh_state, available, balance = run_async(work, gateway.settings)
    assert due == [f"media:{d.partition(':')[2]}" for d in due] and len(due) == 1
    assert old_status == "failed" and fresh_state == "in_progress:held"
    assert balance == 1_000_000_000 and available == balance - 100_000_000  # only the fresh call still holds
