"""The image/audio fakes follow their providers' documented APIs (no gateway involved): the openai SDK
against the OpenAI fake, raw HTTP against ElevenLabs, xAI, Google (Imagen, Gemini image) and fal."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from aistats_gateway.media import audio_codec, procedural
from aistats_gateway.providers.fakes.testing import RunningFake


@pytest.fixture(scope="module")
def oai_fake() -> Iterator[RunningFake]:
    with RunningFake("openai") as f:
        yield f


@pytest.fixture()
def client(oai_fake: RunningFake) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=oai_fake.base_url, max_retries=0)


def _img(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_procedural_is_deterministic_and_sized() -> None:
    spec = procedural.ImageSpec("a lighthouse at dusk", 640, 320, 42, "webp")
    a, b = procedural.generate(spec), procedural.generate(spec)
    assert a == b
    img = Image.open(io.BytesIO(a))
    assert img.format == "WEBP" and img.size == (640, 320)
    assert procedural.generate(procedural.ImageSpec("a lighthouse at dusk", 640, 320, 43, "webp")) != a
    clear = Image.open(io.BytesIO(procedural.generate(procedural.ImageSpec("x", 64, 64, 1, "png", "transparent"))))
    assert clear.mode == "RGBA" and clear.getpixel((0, 0))[3] == 0  # type: ignore[index]


def test_procedural_edit_honours_mask() -> None:
    src = Image.new("RGB", (128, 128), (10, 200, 30))
    buf = io.BytesIO()
    src.save(buf, "PNG")
    mask = Image.new("RGBA", (128, 128), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 64, 128))  # left half transparent: repaint there only
    mbuf = io.BytesIO()
    mask.save(mbuf, "PNG")
    out = Image.open(io.BytesIO(procedural.edit(procedural.ImageSpec("", 128, 128, 3), buf.getvalue(),
                                                mbuf.getvalue()))).convert("RGB")
    assert out.getpixel((120, 5)) == (10, 200, 30)  # kept
    assert out.getpixel((5, 5)) != (10, 200, 30)  # repainted


def test_openai_images_generate_both_formats(client: openai.OpenAI, oai_fake: RunningFake) -> None:
    r = client.images.generate(model="gpt-image-1", prompt="a cat", size="1536x1024", quality="low")
    assert r.size == "1536x1024" and r.quality == "low" and r.usage is not None and r.usage.output_tokens == 272
    assert _img(r.data[0].b64_json or "").size == (1536, 1024)
    d = client.images.generate(model="dall-e-3", prompt="a cat", response_format="url")
    assert d.data[0].revised_prompt and d.data[0].url
    got = httpx.get(d.data[0].url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(model="gpt-image-1", prompt="x", response_format="url")
    assert e.value.code == "unknown_parameter"
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(model="gpt-image-1", prompt="x", size="999x999")
    assert e.value.param == "size"


def test_openai_images_edit_and_stream(client: openai.OpenAI) -> None:
    png = base64.b64decode(client.images.generate(model="gpt-image-1", prompt="x").data[0].b64_json or "")
    r = client.images.edit(model="gpt-image-1", image=[("a.png", png, "image/png"), ("b.png", png, "image/png")],
                           mask=("m.png", png, "image/png"), prompt="add a hat")
    assert r.usage is not None and r.usage.input_tokens_details.image_tokens == 646
    events = list(client.images.generate(model="gpt-image-1", prompt="x", stream=True, partial_images=2))
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]


def test_openai_speech_and_transcription_round_trip(client: openai.OpenAI, tmp_path: Path) -> None:
    for fmt in ("wav", "flac", "mp3", "opus", "aac"):
        out = tmp_path / f"s.{fmt}"
        with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input="hello world",
                                                                response_format=fmt) as resp:  # type: ignore[arg-type]
            assert resp.headers["content-type"] == audio_codec.MIME[fmt]
            resp.stream_to_file(out)
        assert audio_codec.decode_seconds(out.read_bytes()) > 0.5
    t = client.audio.transcriptions.create(model="whisper-1", file=(tmp_path / "s.wav").open("rb"),
                                           response_format="verbose_json", timestamp_granularities=["word"])
    assert t.text == "hello world" and t.words and t.words[0].word == "hello"
    srt = client.audio.translations.create(model="whisper-1", file=(tmp_path / "s.mp3").open("rb"),
                                           response_format="srt")
    assert "hello world" in str(srt) and "-->" in str(srt)
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=(tmp_path / "s.wav").open("rb"),
                                           response_format="srt")
    assert e.value.param == "response_format"


def test_elevenlabs_tts_and_stt() -> None:
    with RunningFake("eleven-labs") as f:
        h = {"xi-api-key": "el-test"}
        r = httpx.post(f.url + "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream",
                       params={"output_format": "mp3_44100_128"},
                       json={"text": "good morning", "model_id": "eleven_flash_v2_5"}, headers=h)
        assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
        assert audio_codec.decode_seconds(r.content) > 0.5
        stt = httpx.post(f.url + "/v1/speech-to-text", data={"model_id": "scribe_v1"},
                         files={"file": ("a.mp3", r.content, "audio/mpeg")}, headers=h).json()
        assert stt["text"] == "good morning" and stt["words"][0]["type"] == "word"
        assert httpx.post(f.url + "/v1/text-to-speech/nope", json={"text": "x"}, headers=h).status_code == 404
        assert httpx.post(f.url + "/v1/speech-to-text", headers={"xi-api-key": "bad"}).status_code == 401


def test_xai_google_fal_images() -> None:
    with RunningFake("x-ai") as f:
        r = httpx.post(f.url + "/v1/images/generations", json={"model": "grok-2-image-1212", "prompt": "cat",
                                                                "response_format": "b64_json"},
                       headers={"Authorization": "Bearer xai-test"})
        assert r.status_code == 200 and _img(r.json()["data"][0]["b64_json"]).format == "JPEG"
        bad = httpx.post(f.url + "/v1/images/generations", json={"model": "grok-2-image-1212", "prompt": "c",
                                                                  "size": "1024x1024"},
                         headers={"Authorization": "Bearer xai-test"})
        assert bad.status_code == 400 and "size" in bad.json()["error"]
    with RunningFake("google-ai-studio") as f:
        h = {"x-goog-api-key": "AIza-fake-gemini-key"}
        r = httpx.post(f.url + "/v1beta/models/imagen-4.0-generate-001:predict", headers=h,
                       json={"instances": [{"prompt": "cat"}], "parameters": {"sampleCount": 2, "aspectRatio": "16:9"}})
        assert [_img(p["bytesBase64Encoded"]).size for p in r.json()["predictions"]] == [(1408, 768)] * 2
        g = httpx.post(f.url + "/v1beta/models/gemini-2.5-flash-image:generateContent", headers=h,
                       json={"contents": [{"parts": [{"text": "cat"}]}]}).json()
        assert any("inlineData" in p for p in g["candidates"][0]["content"]["parts"])
    with RunningFake("fal", render_seconds=0.05) as f:
        h = {"Authorization": "Key fal-key-id:fal-key-secret"}
        rid = httpx.post(f.url + "/fal-ai/flux/schnell", json={"prompt": "cat", "num_images": 2,
                                                               "image_size": "square"}, headers=h).json()["request_id"]
        deadline = time.monotonic() + 10
        while httpx.get(f.url + f"/fal-ai/flux/requests/{rid}/status", headers=h).json()["status"] != "COMPLETED":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        res = httpx.get(f.url + f"/fal-ai/flux/requests/{rid}", headers=h).json()
        assert len(res["images"]) == 2 and res["images"][0]["width"] == 512
        assert httpx.get(res["images"][1]["url"]).headers["content-type"] == "image/jpeg"


def test_media_scratch_sweep_removes_only_old_files(tmp_path: Path) -> None:
    import os

    from aistats_gateway.media_api import forms

    root = tmp_path / "scratch" / "media"
    root.mkdir(parents=True)
    old, new = root / "upload-old", root / "speech-new.wav"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert forms.sweep(tmp_path) == 1
    assert not old.exists() and new.exists()
    assert forms.sweep(tmp_path / "nowhere") == 0
