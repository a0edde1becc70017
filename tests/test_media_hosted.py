"""The hosted image providers added after the first media work — Together (FLUX), BytePlus (Seedream),
Runway (Gen-4 Image), Alibaba (Qwen-Image), Luma (Photon), Amazon Nova Canvas (Bedrock, SigV4) — through
the gateway's /v1/images/generations with the openai SDK against their fakes on SQLite and PostgreSQL:
what each provider is sent, real images back, exact charges (Runway's by resolution tier, Nova's by
quality), and a batch row on one of them."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from PIL import Image

from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.gateway import BACKENDS, running_gateway

KEYS = {"together": "together-test", "byteplus": "ark-test", "runway": "key_test", "alibaba": "sk-dashscope-test",
        "luma": "luma-test"}
BEDROCK_KEY = "AKIDFAKEBEDROCK:fake-secret-access-key"  # SigV4: access key id and secret


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, RunningFake]]:
    started = {p: RunningFake(p, api_key=k) for p, k in KEYS.items()}
    started["amazon-bedrock"] = RunningFake("amazon-bedrock", prefix="")
    for f in started.values():
        f.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AISTATS_PROVIDER_AMAZON_BEDROCK_BASE_URL", started["amazon-bedrock"].url)
        mp.setenv("AISTATS_PROVIDER_AMAZON_BEDROCK_API_KEY", BEDROCK_KEY)
        mp.setenv("AISTATS_PROVIDER_AMAZON_BEDROCK_REGION", "us-east-1")
        for pid, f in started.items():
            if pid not in KEYS:
                continue
            prefix = "AISTATS_PROVIDER_" + pid.upper() + "_"
            mp.setenv(prefix + "BASE_URL", f.base_url if pid == "together" else f.url)
            mp.setenv(prefix + "API_KEY", KEYS[pid])
        yield started
    for f in started.values():
        f.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def oai(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        fakes: dict[str, RunningFake]) -> Iterator[openai.OpenAI]:
    with running_gateway(request.param, tmp_path_factory.mktemp("hosted")) as gw:
        key = gw.create_key("hosted", credits_usd=5)
        yield openai.OpenAI(api_key=key, base_url=gw.base_url + "/v1", max_retries=0, timeout=60)


def sent(fakes: dict[str, RunningFake], pid: str) -> dict[str, Any]:
    body: dict[str, Any] = fakes[pid].app.state.images.requests[-1]
    return body


def first(r: Any) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json or "")))


def cost(r: Any) -> int:
    return int((r.model_extra or {})["cost_nanos"])


def test_together_flux_schnell(oai: openai.OpenAI, fakes: dict[str, RunningFake]) -> None:
    r = oai.images.generate(model="black-forest-labs/flux-1-schnell", prompt="a fox", size="512x768", n=2,
                            extra_body={"provider": {"only": ["together"]}, "steps": 4, "seed": 9})
    assert len(r.data) == 2 and first(r).size == (512, 768) and first(r).format == "JPEG"
    assert sent(fakes, "together") == {"model": "black-forest-labs/FLUX.1-schnell", "prompt": "a fox", "n": 2,
                                       "response_format": "base64", "output_format": "jpeg", "width": 512,
                                       "height": 768, "seed": 9, "steps": 4}
    assert cost(r) == 2 * 2_700_000


def test_seedream_runway_qwen_luma(oai: openai.OpenAI, fakes: dict[str, RunningFake]) -> None:
    s = oai.images.generate(model="bytedance/seedream-4.0", prompt="a lighthouse", size="1280x720")
    assert first(s).size == (1280, 720) and cost(s) == 30_000_000
    assert sent(fakes, "byteplus")["size"] == "1280x720" and sent(fakes, "byteplus")["watermark"] is False
    rw = oai.images.generate(model="runway/gen-4-image", prompt="a harbour", size="1024x1024",
                             extra_body={"resolution": "720p"})
    assert first(rw).size == (720, 720) and cost(rw) == 50_000_000  # 720p: 5 credits
    assert sent(fakes, "runway") == {"model": "gen4_image", "promptText": "a harbour", "ratio": "720:720"}
    hd = oai.images.generate(model="runway/gen-4-image", prompt="a harbour at night")
    assert first(hd).size == (1920, 1080) and cost(hd) == 80_000_000  # 1080p by default: 8 credits
    q = oai.images.generate(model="qwen/qwen-image", prompt="a poster", size="1664*928")
    assert first(q).size == (1664, 928) and cost(q) == 35_000_000
    assert sent(fakes, "alibaba")["parameters"] == {"n": 1, "watermark": False, "size": "1664*928"}
    lu = oai.images.generate(model="luma/photon-1", prompt="a quiet street", extra_body={"aspect_ratio": "1:1"})
    assert first(lu).size == (1024, 1024) and cost(lu) == 15_000_000
    assert sent(fakes, "luma") == {"prompt": "a quiet street", "model": "photon-1", "aspect_ratio": "1:1"}


def test_nova_canvas_on_bedrock_with_sigv4(oai: openai.OpenAI, fakes: dict[str, RunningFake]) -> None:
    r = oai.images.generate(model="amazon/nova-canvas", prompt="a teapot", n=2, quality="premium", size="512x512",
                            extra_body={"seed": 7, "negative_prompt": "blur"})
    assert len(r.data) == 2 and first(r).size == (512, 512) and cost(r) == 2 * 60_000_000
    req = fakes["amazon-bedrock"].app.state.fake.requests[-1]
    assert req.path.endswith("/invoke") and req.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_a_batch_row_on_a_hosted_provider(oai: openai.OpenAI, fakes: dict[str, RunningFake]) -> None:
    row = {"custom_id": "q", "method": "POST", "url": "/v1/images/generations",
           "body": {"model": "qwen/qwen-image", "prompt": "a sign that says hello", "size": "1328*1328"}}
    f = oai.files.create(file=("in.jsonl", io.BytesIO(json.dumps(row).encode() + b"\n")), purpose="batch")
    b = oai.batches.create(input_file_id=f.id, endpoint="/v1/images/generations",  # type: ignore[arg-type]
                           completion_window="24h")
    deadline = time.monotonic() + 60
    while b.status not in ("completed", "failed", "expired", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.1)
        b = oai.batches.retrieve(b.id)
    assert b.status == "completed" and b.output_file_id
    out = json.loads(oai.files.content(b.output_file_id).text)
    body = out["response"]["body"]
    assert body["provider"] == "alibaba" and body["cost_nanos"] == 35_000_000
    assert Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))).size == (1328, 1328)
    assert (b.model_extra or {})["billing"]["settled_nanos"] == 35_000_000
