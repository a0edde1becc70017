"""Every active video model in the shipped catalogue resolves to an adapter that accepts each value its
``video.generation`` detail advertises.

For each (model, provider) offer of an ``active`` model that serves ``video.generation``:

* ``registry.adapter_for(provider, "video.generation")`` is not None;
* for every advertised value of every parameter in the offer's detail map (each entry of ``values``; the
  minimum, the maximum and, for integers, a middle value of a range; ``true``/``false`` for a boolean
  without ``values``; a sample for a string or an unbounded integer; each ``input_references`` role), a
  ``VideoRequest`` that is otherwise what the gateway would build for that offer (its defaults, width and
  height from ``media.render.resolve_dimensions`` as ``videos/validation.py`` does) is submitted to the
  adapter against that provider's fake API, and the submit must return a native id.

"Otherwise valid" follows each provider's documented preconditions: a ``last_frame`` is sent together with
a ``first_frame`` and ``resize_mode`` with a first frame (image-to-video); the offers in
``NEEDS_FIRST_FRAME`` (image-to-video-only models, and values their catalogue entry says need an image) get a
first frame; OpenAI's reference image has the requested size. Images are 512x512 PNGs with an https URL.

The adapters are called directly (no gateway, no database). Each provider's fake runs once per module.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import aistats_gateway.providers  # noqa: F401 - registers every adapter
from aistats_gateway.catalogue.loader import build
from aistats_gateway.catalogue.schema import ParameterDetail
from aistats_gateway.media import render
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import CallContext, ImageInput, ProviderError, Submitted, VideoRequest
from aistats_gateway.providers.fakes import FAKES
from tests.support.catalogue import Offer, Target, active_offers, adapter_targets, case_label, refusal

ENDPOINT = "video.generation"
PROMPT = "a red kite over a green hill at sunset"
IMAGE_URL = "https://example.com/x.png"
# Every role the gateway's request schema knows (an offer whose input_references has no ``values``
# accepts any of them).
ALL_ROLES = ("first_frame", "last_frame", "reference", "source", "mask")
SAMPLES: dict[str, Any] = {"negative_prompt": "blurry, low quality, watermark", "seed": 42}
# Requests an offer accepts only with a first-frame image (image-to-video), as its catalogue entry says;
# ``None`` = every request. For these the "otherwise valid" request carries a first frame.
NEEDS_FIRST_FRAME: dict[tuple[str, str], frozenset[tuple[str, Any]] | None] = {
    ("minimax", "MiniMax-Hailuo-2.3-Fast"): None,  # image-to-video only
    ("runway", "gen4_turbo"): None,  # image-to-video only
    # Runway's text_to_video takes ratio 1280:720 / 720:1280 only; image_to_video also the other four.
    ("runway", "gen4.5"): frozenset(("aspect_ratio", r) for r in ("4:3", "3:4", "1:1", "21:9")),
}
# Providers whose API requires the first frame to have exactly the requested width and height
# (OpenAI: "Inpaint image must match the requested width and height"); every other one takes any size.
IMAGE_MATCHES_SIZE = frozenset({"openai"})

# The credential each fake expects, and the path its adapter's base URL ends with.
FAKE_KEYS: dict[str, tuple[str, str]] = {
    "openai": ("sk-test", "/v1"),
    "alibaba": ("sk-dashscope-test", ""),
    "byteplus": ("ark-test", ""),
    "fal": ("fal-key-id:fal-key-secret", ""),
    "kling": ("ak-test:sk-test", ""),  # <access key>:<secret key>
    "luma": ("luma-test", ""),
    "minimax": ("mm-test", ""),
    "runway": ("key_test", ""),
    "x-ai": ("xai-test", ""),
}
STUDIO_KEY = "AIza-catalogue-test"
RENDER_SECONDS = 60.0  # jobs are only submitted, never polled


# ---------------------------------------------------------------- the cases, from the shipped catalogue

OFFERS = active_offers([ENDPOINT])
IDS = [f"{o.model_id}@{o.provider_id}" for o in OFFERS]


def advertised(name: str, detail: ParameterDetail) -> list[Any]:
    """The values of one parameter that the detail says the offer accepts."""
    if not detail.supported:
        return []
    if name == "input_references":
        return list(detail.values) if detail.values is not None else list(ALL_ROLES)
    if detail.values is not None:
        return list(detail.values)
    if detail.type == "boolean":
        return [True, False]
    low, high = detail.minimum, detail.maximum
    if low is not None or high is not None:
        out = [v for v in (low, high) if v is not None]
        if detail.type == "integer" and low is not None and high is not None and high - low > 1:
            out.insert(1, int(low + high) // 2)
        return [int(v) if detail.type == "integer" else v for v in dict.fromkeys(out)]
    if name in SAMPLES:
        return [SAMPLES[name]]
    raise AssertionError(f"no way to pick a value for {name!r} ({detail!r}); teach advertised() about it")


def test_there_are_active_video_offers() -> None:
    assert len(OFFERS) >= 30
    video_fakes = {p for p in FAKES if registry.adapter_for(p, ENDPOINT) is not None}  # FAKES has others too
    assert len(video_fakes) >= 10
    assert {o.provider_id for o in OFFERS} >= video_fakes | {"local"}


@pytest.mark.parametrize("offer", OFFERS, ids=IDS)
def test_offer_resolves_to_an_adapter(offer: Offer) -> None:
    adapter = registry.adapter_for(offer.provider_id, ENDPOINT)
    assert adapter is not None, (
        f"{offer.model_id} is active and offered by {offer.provider_id} for {ENDPOINT}, but no adapter is "
        f"registered for {offer.provider_id}")
    assert offer.provider_id == "local" or offer.provider_id in FAKES, f"no fake for {offer.provider_id}"


def test_first_frame_exceptions_are_in_the_catalogue() -> None:
    """Each NEEDS_FIRST_FRAME entry is a shipped offer whose catalogue text says a first frame is needed."""
    by_key = {(o.provider_id, o.spec.provider_model_slug): o for o in OFFERS}
    cat, _ = build(None)
    descriptions = {m.model_id: (m.description or "") for m in cat.models}
    for key, when in NEEDS_FIRST_FRAME.items():
        assert key in by_key, f"{key} is not an active video offer any more; drop it from NEEDS_FIRST_FRAME"
        offer = by_key[key]
        assert _accepts_role(offer, "first_frame"), key
        if when is None:
            assert "image-to-video only" in descriptions[offer.model_id].lower(), key
        else:
            for name, _value in when:
                assert "first_frame" in (offer.params[name].description or ""), (key, name)


# ---------------------------------------------------------------- building one request

def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buf, format="PNG")
    return buf.getvalue()


_PNG_512 = png(512, 512)


def image(role: str, offer: Offer, width: int, height: int) -> ImageInput:
    content = png(width, height) if offer.provider_id in IMAGE_MATCHES_SIZE else _PNG_512
    return ImageInput(role=role, content=content, mime_type="image/png", url=IMAGE_URL)


def _default(detail: ParameterDetail | None) -> Any:
    """The value the gateway fills in when the caller leaves the parameter out (validation.plan)."""
    if detail is None:
        return None
    if detail.default is not None:
        return detail.default
    if detail.values:
        return detail.values[0]
    return detail.minimum


def build_request(offer: Offer, name: str, value: Any) -> VideoRequest:
    """The request the gateway would hand this offer's adapter when the caller sets only ``name=value``."""
    params = offer.params
    duration = _default(params.get("duration"))
    resolution = _default(params.get("resolution"))
    aspect = _default(params.get("aspect_ratio"))
    fields: dict[str, Any] = {}
    roles: list[str] = []
    if name == "duration":
        duration = value
    elif name == "resolution":
        resolution = value
    elif name == "aspect_ratio":
        aspect = value
    elif name == "input_references":
        # A last frame closes a clip that starts at a first frame (Seedance, Veo, Wan, Kling require it).
        roles = ["first_frame", value] if value == "last_frame" and _accepts_role(offer, "first_frame") else [value]
    elif name in ("seed", "sample_count", "negative_prompt", "generate_audio", "enhance_prompt",
                  "person_generation", "compression_quality", "resize_mode"):
        fields[name] = value
        if name == "resize_mode" and _accepts_role(offer, "first_frame"):
            roles = ["first_frame"]  # resize_mode only applies to image-to-video
    else:
        raise AssertionError(f"{offer.model_id}@{offer.provider_id}: unknown parameter {name!r}")
    if needs_first_frame(offer, name, value) and "first_frame" not in roles:
        roles.insert(0, "first_frame")
    width, height = render.resolve_dimensions(str(resolution) if resolution is not None else None,
                                              str(aspect) if aspect is not None else None, None)
    return VideoRequest(
        job_id=f"video_{uuid.uuid4().hex}",  # also the idempotency key: one per submit
        model_slug=offer.spec.provider_model_slug, prompt=PROMPT,
        duration=int(duration) if duration is not None else None, width=width, height=height,
        resolution=str(resolution) if resolution is not None else None,
        aspect_ratio=str(aspect) if aspect is not None else None, size=None,
        images=tuple(image(r, offer, width, height) for r in roles), **fields)


def needs_first_frame(offer: Offer, name: str, value: Any) -> bool:
    key = (offer.provider_id, offer.spec.provider_model_slug)
    if key not in NEEDS_FIRST_FRAME:
        return False
    when = NEEDS_FIRST_FRAME[key]
    return when is None or (name, value) in when


def _accepts_role(offer: Offer, role: str) -> bool:
    detail = offer.params.get("input_references")
    return detail is not None and detail.supported and (detail.values is None or role in detail.values)


def cases(offer: Offer) -> list[tuple[str, Any, VideoRequest]]:
    return [(name, value, build_request(offer, name, value))
            for name, detail in offer.params.items() for value in advertised(name, detail)]


# ---------------------------------------------------------------- the fakes

@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, Target]]:
    """One running fake per provider id (Google's serves both Google ids) and the credentials for it."""
    fakes: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for pid, (key, path) in FAKE_KEYS.items():
        if pid == "kling":  # the fake takes the two halves of the key pair
            access, secret = key.split(":")
            fakes[pid] = (key, path, {"access_key": access, "secret_key": secret, "render_seconds": RENDER_SECONDS})
        else:
            fakes[pid] = (key, path, {"api_key": key, "render_seconds": RENDER_SECONDS})
    with adapter_targets(fakes, STUDIO_KEY, render_seconds=RENDER_SECONDS) as out:
        yield out


# ---------------------------------------------------------------- the check

async def _submit_all(offer: Offer, target: Target, data_dir: Path) -> tuple[int, list[str]]:
    adapter = registry.adapter_for(offer.provider_id, ENDPOINT)
    assert adapter is not None, f"no adapter registered for {offer.provider_id}"
    failures: list[str] = []
    checked = 0
    async with httpx.AsyncClient(timeout=30) as http:
        ctx = CallContext(http=http, api_key=target.api_key, base_url=target.base_url, data_dir=data_dir)
        for name, value, request in cases(offer):
            checked += 1
            where = case_label(offer, name, value)
            try:
                sub = await adapter.submit(request, replace(ctx, extra={"request": request}))
            except ProviderError as e:
                failures.append(f"{where} → {refusal(e)}")
                continue
            except Exception as e:
                failures.append(f"{where} → {type(e).__name__}: {e}")
                continue
            if not isinstance(sub, Submitted) or not sub.native_id:
                failures.append(f"{where} → no native id ({sub!r})")
    return checked, failures


@pytest.mark.parametrize("offer", OFFERS, ids=IDS)
def test_adapter_accepts_every_advertised_value(offer: Offer, targets: dict[str, Target], tmp_path: Path) -> None:
    if registry.adapter_for(offer.provider_id, ENDPOINT) is None:
        pytest.fail(f"{offer.model_id}: no adapter for {offer.provider_id} (see test_offer_resolves_to_an_adapter)")
    assert offer.provider_id in targets, f"no fake configured for {offer.provider_id}"
    checked, failures = asyncio.run(_submit_all(offer, targets[offer.provider_id], tmp_path))
    assert checked > 0, f"{offer.model_id} via {offer.provider_id} advertises no parameter values"
    assert not failures, f"{len(failures)} of {checked} advertised values refused:\n" + "\n".join(failures)
