"""Images and audio end to end through real HTTP against the provider fakes, on SQLite and PostgreSQL:
the openai SDK's images.generate (b64_json and signed url), images.edit, audio.speech (streamed to a
file, decoded with PyAV), audio.transcriptions / translations; ElevenLabs, xAI, Google and fal
through the same endpoints; fallback on 503; 402 with nothing sent upstream; validation 400s naming
the parameter; exact charges (generations' cost_nanos equal the ledger's settlements)."""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from aistats_gateway.inference.tables import Generation
from aistats_gateway.media import audio_codec
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support import books
from tests.support.gateway import BACKENDS, Gateway, run_async
from tests.support.inference import Upstream, upstream_fixtures
from tests.support.providers import gateway_with

NANOS = 1_000_000_000
FALLBACK = "openai/test-image-fallback"
OVERLAY = {"models": [{
    "model_id": FALLBACK, "name": "fallback test", "organisation": "openai", "status": "active",
    "input_types": ["text"], "output_types": ["image"], "providers": [
        {"provider": "openai", "provider_model_slug": "gpt-image-1", "endpoints": ["images.generations"],
         "pricing": [{"meter": "output_image", "unit": "image", "price": "0.05"}]},
        {"provider": "x-ai", "provider_model_slug": "grok-2-image-1212", "endpoints": ["images.generations"],
         "pricing": [{"meter": "output_image", "unit": "image", "price": "0.07"}]}]}]}


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway_with(request.param, tmp_path_factory.mktemp("gw"), OVERLAY) as gw:
        yield gw


fakes, oai = upstream_fixtures({
    "openai": "sk-test", "eleven-labs": Upstream("el-test", host=True), "x-ai": "xai-test",
    "google-ai-studio": Upstream("AIza-fake-gemini-key", host=True),
    "fal": Upstream("fal-key-id:fal-key-secret", host=True, knobs={"render_seconds": 0.05})})


def media(f: RunningFake) -> Any:
    return f.app.state.media


@pytest.fixture(autouse=True)
def reset(fakes: dict[str, RunningFake]) -> None:
    media(fakes["openai"]).fail_next = 0
    media(fakes["openai"]).break_speech_after = None
    fakes["openai"].app.state.media.requests.clear()


def db(gateway: Gateway, fn: Any) -> Any:
    return run_async(fn, gateway.settings)


def gen(gateway: Gateway, gen_id: str) -> Generation:
    async def work(sessions: Any) -> Generation:
        async with sessions() as s:
            got = await s.get(Generation, gen_id)
            assert got is not None
            return got

    result: Generation = db(gateway, work)
    return result


def assert_books_balance(gateway: Gateway, key: str) -> None:
    """The books balance and no generation is left in progress."""
    books.assert_books_balance(gateway, key, none_in_progress=True)


def _extra(obj: Any) -> dict[str, Any]:
    return dict(obj.model_extra or {})


def test_images_generate_b64_json_charges_by_size_and_quality(oai: openai.OpenAI, gateway: Gateway, key: str,
                                                              fakes: dict[str, RunningFake]) -> None:
    r = oai.images.generate(model="openai/gpt-image-1", prompt="a red fox", size="1024x1536", quality="low")
    img = Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json or "")))
    assert img.size == (1024, 1536) and r.size == "1024x1536" and r.quality == "low"
    extra = _extra(r)
    assert extra["provider"] == "openai" and extra["cost_nanos"] == 16_000_000  # 0.016 USD, low 1024x1536
    sent = media(fakes["openai"]).requests[-1].body
    assert sent == {"model": "gpt-image-1", "prompt": "a red fox", "n": 1, "size": "1024x1536", "quality": "low"}
    g = gen(gateway, extra["requestId"])
    assert g.status == "completed" and g.cost_nanos == 16_000_000 and g.endpoint == "images.generations"
    assert g.attempts[0]["provider"] == "openai" and g.attempts[0]["outcome"] == "accepted"
    assert_books_balance(gateway, key)


def test_images_url_is_a_signed_first_party_link(oai: openai.OpenAI, gateway: Gateway) -> None:
    r = oai.images.generate(model="openai/gpt-image-1", prompt="a blue whale", n=2, quality="medium",
                            size="1024x1024", response_format="url")
    assert len(r.data) == 2 and _extra(r)["cost_nanos"] == 2 * 42_000_000
    for item in r.data:
        assert item.url and item.url.startswith(gateway.base_url + "/v1/images/content/")
        got = httpx.get(item.url)  # no API key
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(got.content)).size == (1024, 1024)
    assert httpx.get((r.data[0].url or "").replace("sig=", "sig=0")).status_code == 403


def test_images_edit_multipart_with_mask(oai: openai.OpenAI, gateway: Gateway, key: str,
                                         fakes: dict[str, RunningFake]) -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (256, 256), (200, 10, 10, 255)).save(buf, "PNG")
    png = buf.getvalue()
    r = oai.images.edit(model="openai/gpt-image-1", image=[("a.png", png, "image/png"), ("b.png", png, "image/png")],
                        mask=("m.png", png, "image/png"), prompt="add a hat", size="1024x1024")
    assert r.data[0].b64_json
    body = media(fakes["openai"]).requests[-1].body
    assert body["image_count"] == 2 and body["mask"] is True and body["prompt"] == "add a hat"
    # quality left open: held at the dearest 1024x1024 price, settled at what the fake made (medium)
    g = gen(gateway, _extra(r)["requestId"])
    assert g.endpoint == "images.edits" and g.hold_nanos == 167_000_000 and g.cost_nanos == 42_000_000
    assert_books_balance(gateway, key)


def test_speech_streams_decodable_audio_and_charges_per_character(oai: openai.OpenAI, gateway: Gateway, key: str,
                                                                  tmp_path: Path) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    for fmt in ("flac", "wav", "mp3", "pcm"):
        out = tmp_path / f"speech.{fmt}"
        with oai.audio.speech.with_streaming_response.create(model="openai/tts-1", voice="alloy", input=text,
                                                             response_format=fmt) as resp:  # type: ignore[arg-type]
            assert resp.headers["content-type"] == audio_codec.MIME[fmt]
            gen_id = resp.headers["x-generation-id"]
            resp.stream_to_file(out)
        if fmt == "pcm":
            assert out.stat().st_size == 2 * round(audio_codec.seconds_for(text) * audio_codec.RATE)
        else:
            assert math.isclose(audio_codec.decode_seconds(out.read_bytes()), audio_codec.seconds_for(text),
                                abs_tol=0.1)
        g = gen(gateway, gen_id)
        assert g.status == "completed" and g.cost_nanos == len(text) * 15_000  # 15 USD per million characters
    assert_books_balance(gateway, key)


def test_transcription_and_translation(oai: openai.OpenAI, gateway: Gateway, key: str, tmp_path: Path) -> None:
    text = "hello from the gateway"
    wav = tmp_path / "in.wav"
    with oai.audio.speech.with_streaming_response.create(model="openai/tts-1", voice="nova", input=text,
                                                         response_format="wav") as resp:
        resp.stream_to_file(wav)
    t = oai.audio.transcriptions.create(model="openai/whisper-1", file=wav.open("rb"), response_format="verbose_json",
                                        timestamp_granularities=["word", "segment"], language="en")
    assert t.text == text and t.words and [w.word for w in t.words] == text.split() and t.segments
    seconds = audio_codec.seconds_for(text)
    expected = -(-math.ceil(seconds) * 6_000_000 // 60)  # 0.006 USD a minute, whole seconds
    assert _extra(t)["cost_nanos"] == expected
    plain = oai.audio.transcriptions.create(model="openai/whisper-1", file=wav.open("rb"), response_format="text")
    assert str(plain).strip() == text
    srt = oai.audio.translations.create(model="openai/whisper-1", file=wav.open("rb"), response_format="srt")
    assert "-->" in str(srt) and text in str(srt)
    tr = oai.audio.translations.create(model="openai/whisper-1", file=wav.open("rb"))
    assert tr.text == text and gen(gateway, _extra(tr)["requestId"]).endpoint == "audio.translations"
    assert_books_balance(gateway, key)


def test_validation_names_the_parameter_and_sends_nothing(oai: openai.OpenAI, fakes: dict[str, RunningFake],
                                                          tmp_path: Path) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oai.images.generate(model="openai/gpt-image-1", prompt="x", size="999x999")
    assert e.value.param == "size" and "1024x1536" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        oai.audio.speech.create(model="openai/tts-1", voice="nobody", input="hi")  # type: ignore[arg-type]
    assert e.value.param == "voice" and "alloy" in e.value.message
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(openai.BadRequestError) as e:
        oai.audio.transcriptions.create(model="openai/whisper-1", file=bad.open("rb"))
    assert e.value.param == "file"
    with pytest.raises(openai.BadRequestError) as e:
        oai.audio.transcriptions.create(model="openai/gpt-4o-transcribe", file=bad.open("rb"), response_format="srt")
    assert e.value.param in ("file", "response_format")
    assert media(fakes["openai"]).requests == []


def test_fallback_on_503_lands_on_the_next_provider(oai: openai.OpenAI, gateway: Gateway, key: str,
                                                     fakes: dict[str, RunningFake]) -> None:
    media(fakes["openai"]).fail_next = 1
    r = oai.images.generate(model=FALLBACK, prompt="a lighthouse")
    extra = _extra(r)
    assert extra["provider"] == "x-ai" and extra["cost_nanos"] == 70_000_000
    assert Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json or ""))).format == "JPEG"
    g = gen(gateway, extra["requestId"])
    assert [(a["provider"], a["outcome"], a["status"]) for a in g.attempts] == [("openai", "error", 503),
                                                                                ("x-ai", "accepted", None)]
    assert g.hold_nanos == 70_000_000  # the dearest offer
    assert_books_balance(gateway, key)


def test_insufficient_credits_is_402_with_nothing_sent(gateway: Gateway, fakes: dict[str, RunningFake]) -> None:
    poor = gateway.create_key("poor", credits_usd=0.01)
    client = openai.OpenAI(api_key=poor, base_url=gateway.base_url + "/v1", max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.images.generate(model="openai/gpt-image-1", prompt="x", quality="high", size="1024x1024")
    assert e.value.status_code == 402
    with pytest.raises(openai.APIStatusError) as e:
        client.audio.speech.create(model="openai/tts-1-hd", voice="alloy", input="x" * 4000)
    assert e.value.status_code == 402
    assert media(fakes["openai"]).requests == []


def test_other_providers_through_the_same_endpoints(oai: openai.OpenAI, gateway: Gateway, key: str,
                                                    tmp_path: Path) -> None:
    r = oai.images.generate(model="x-ai/grok-2-image", prompt="a cat", n=2, response_format="url")
    assert len(r.data) == 2 and _extra(r)["cost_nanos"] == 140_000_000
    assert httpx.get(r.data[0].url or "").headers["content-type"] == "image/jpeg"
    im = oai.images.generate(model="google/imagen-4-fast", prompt="a cat", n=2, size="1792x1024")
    assert [Image.open(io.BytesIO(base64.b64decode(d.b64_json or ""))).size for d in im.data] == [(1408, 768)] * 2
    assert _extra(im)["cost_nanos"] == 40_000_000
    gm = oai.images.generate(model="google/gemini-2.5-flash-image", prompt="a cat")
    assert _extra(gm)["provider"] == "google-ai-studio" and _extra(gm)["cost_nanos"] == 39_000_000
    fal = oai.images.generate(model="black-forest-labs/flux-1.1-pro", prompt="a cat", size="512x512",
                              extra_body={"provider": {"only": ["fal"]}})
    assert Image.open(io.BytesIO(base64.b64decode(fal.data[0].b64_json or ""))).size == (512, 512)
    assert _extra(fal)["cost_nanos"] == 40_000_000
    out = tmp_path / "el.mp3"
    text = "Eleven labs speaking"
    with oai.audio.speech.with_streaming_response.create(model="eleven-labs/eleven-flash-v2.5",
                                                         voice="21m00Tcm4TlvDq8ikWAM", input=text) as resp:
        resp.stream_to_file(out)
        gen_id = resp.headers["x-generation-id"]
    assert audio_codec.decode_seconds(out.read_bytes()) > 0.5
    assert gen(gateway, gen_id).cost_nanos == -(-len(text) * 50_000_000 // 1000)
    wav = tmp_path / "el.wav"
    with oai.audio.speech.with_streaming_response.create(model="eleven-labs/eleven-flash-v2.5", response_format="wav",
                                                         voice="21m00Tcm4TlvDq8ikWAM", input=text) as resp:
        resp.stream_to_file(wav)
    assert audio_codec.decode_seconds(wav.read_bytes()) > 0.5
    t = oai.audio.transcriptions.create(model="eleven-labs/scribe-v1", file=out.open("rb"),
                                        response_format="verbose_json", timestamp_granularities=["word"])
    assert t.text == text and t.words and t.words[0].word == "Eleven"
    assert_books_balance(gateway, key)


def test_speech_sse_and_token_and_second_meters(api: httpx.Client, gateway: Gateway, key: str) -> None:
    text = "Speak softly, please."
    r = api.post("/v1/audio/speech", json={"model": "openai/gpt-4o-mini-tts", "voice": "ballad", "input": text,
                                           "instructions": "calm", "stream_format": "sse"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert math.isclose(audio_codec.decode_seconds(audio), audio_codec.seconds_for(text), abs_tol=0.1)
    g = gen(gateway, r.headers["x-generation-id"])
    seconds = g.usage["output_audio_seconds"]
    tokens = -(-len(text.encode()) // 4)
    assert g.cost_nanos == tokens * 600 + -(-math.ceil(seconds) * 15_000_000 // 60) == events[-1]["usage"]["cost_nanos"]
    assert_books_balance(gateway, key)


def test_gpt_image_stream_of_partial_images(oai: openai.OpenAI, gateway: Gateway) -> None:
    events = list(oai.images.generate(model="openai/gpt-image-1", prompt="a comet", stream=True, partial_images=2,
                                      size="1024x1024"))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    final = events[-1]
    assert Image.open(io.BytesIO(base64.b64decode(getattr(final, "b64_json", "")))).size == (1024, 1024)
    usage = dict(getattr(final, "usage", None) or {})
    assert usage.get("pricing_breakdown", {}).get("total_nanos") == 42_000_000  # settled at medium


def test_translation_needs_a_provider_that_translates(oai: openai.OpenAI, tmp_path: Path) -> None:
    wav = tmp_path / "x.wav"
    wav.write_bytes(audio_codec.synthesize("bonjour", "wav"))
    with pytest.raises(openai.BadRequestError) as e:
        oai.audio.translations.create(model="eleven-labs/scribe-v1", file=wav.open("rb"))
    assert e.value.param == "model" and "translations" in e.value.message


def test_openai_compatible_transcription_hosts(oai: openai.OpenAI, gateway: Gateway, tmp_path: Path) -> None:
    wav = tmp_path / "x.wav"
    wav.write_bytes(audio_codec.synthesize("four seconds or so of audio here", "wav"))
    seconds = audio_codec.probe_seconds(wav)
    with RunningFake("groq") as groq, RunningFake("mistral") as mistral, pytest.MonkeyPatch.context() as mp:
        for pid, f, k in (("GROQ", groq, "gsk_test"), ("MISTRAL", mistral, "mistral-test")):
            mp.setenv(f"AISTATS_PROVIDER_{pid}_BASE_URL", f.base_url)
            mp.setenv(f"AISTATS_PROVIDER_{pid}_API_KEY", k)
        g = oai.audio.transcriptions.create(model="openai/whisper-large-v3", file=wav.open("rb"),
                                            response_format="verbose_json")
        assert _extra(g)["provider"] == "groq" and g.duration == pytest.approx(seconds, abs=0.01)
        assert _extra(g)["cost_nanos"] == -(-math.ceil(seconds) * 111_000_000 // 3600)
        m = oai.audio.transcriptions.create(model="mistral/voxtral-mini-transcribe", file=wav.open("rb"))
        assert _extra(m)["provider"] == "mistral" and m.text
        assert mistral.app.state.media.requests[-1].body["model"] == "voxtral-mini-latest"


def _wait_closed(gateway: Gateway, gen_id: str) -> Generation:
    deadline = time.monotonic() + 15
    while (g := gen(gateway, gen_id)).status == "in_progress":
        assert time.monotonic() < deadline, "the call was never closed"
        time.sleep(0.05)
    return g


def test_speech_broken_mid_stream_is_charged_nothing(api: httpx.Client, gateway: Gateway, key: str,
                                                     fakes: dict[str, RunningFake]) -> None:
    media(fakes["openai"]).break_speech_after = 8
    body = {"model": "openai/tts-1", "voice": "alloy", "response_format": "wav", "input": "a long sentence " * 40}
    with api.stream("POST", "/v1/audio/speech", json=body) as r:
        assert r.status_code == 200
        gen_id = r.headers["x-generation-id"]
        with pytest.raises(httpx.HTTPError):
            for _ in r.iter_bytes():
                pass
    g = _wait_closed(gateway, gen_id)
    assert g.status == "failed" and g.cost_nanos == 0 and g.error_code == "upstream_stream_failed"
    assert_books_balance(gateway, key)


def test_speech_client_gone_still_settles(api: httpx.Client, gateway: Gateway, key: str,
                                          fakes: dict[str, RunningFake]) -> None:
    media(fakes["openai"]).chunk_delay = 0.01
    text = "a sentence that takes a while to speak " * 10
    try:
        with api.stream("POST", "/v1/audio/speech", json={"model": "openai/tts-1", "voice": "alloy",
                                                           "response_format": "wav", "input": text}) as r:
            gen_id = r.headers["x-generation-id"]
            next(r.iter_bytes())  # one chunk, then hang up
    finally:
        media(fakes["openai"]).chunk_delay = 0.0
    g = _wait_closed(gateway, gen_id)
    assert g.status == "completed" and g.cost_nanos == len(text) * 15_000
    assert g.usage["bytes"] == len(audio_codec.synthesize(text, "wav"))
    assert_books_balance(gateway, key)


def test_imagen_on_vertex_with_a_service_account(oai: openai.OpenAI, fakes: dict[str, RunningFake],
                                                 tmp_path: Path) -> None:
    from tests.support.google_accounts import PROJECT, SA_EMAIL, SA_KEY_ID, rsa_pair, service_account

    google = fakes["google-ai-studio"]  # the Google fake serves the Gemini API and Vertex AI
    private, public = rsa_pair()
    google.state.register_service_account(SA_EMAIL, SA_KEY_ID, public, PROJECT)
    sa = tmp_path / "sa.json"
    sa.write_text(json.dumps(service_account(private, google.url + "/token")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AISTATS_PROVIDER_GOOGLE_VERTEX_API_KEY", str(sa))
        mp.setenv("AISTATS_PROVIDER_GOOGLE_VERTEX_BASE_URL", google.url)
        mp.delenv("AISTATS_PROVIDER_GOOGLE_VERTEX_PROJECT", raising=False)
        mp.delenv("AISTATS_PROVIDER_GOOGLE_VERTEX_LOCATION", raising=False)
        r = oai.images.generate(model="google/imagen-4", prompt="a cat", n=1, size="1024x1792", output_format="jpeg",
                                extra_body={"provider": {"only": ["google-vertex"]}})
    extra = _extra(r)
    assert extra["provider"] == "google-vertex" and extra["cost_nanos"] == 40_000_000
    img = Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json or "")))
    assert img.format == "JPEG" and img.size == (768, 1408)  # 9:16, the nearest ratio to 1024x1792
