"""Image and audio rows in gateway-mode batches, over real HTTP on both backends with the openai SDK
flow (files.create → batches.create → retrieve until terminal → files.content): the local procedural
image model (no key), gpt-image rows against the OpenAI fake (b64_json and signed url), edits with
data URLs and uploaded file_ids, speech (base64 audio that decodes), transcription and translation
(data URL and file_id), failing rows in the error file, 402, native mode refused, the listings, and
exact charges (each row at the catalogue price of what it made; the settlement is their sum; the
ledger recomputes)."""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from aistats_gateway.media import audio_codec
from aistats_gateway.providers.fakes.testing import RunningFake
from tests.support.books import batch_books as books
from tests.support.gateway import BACKENDS, Gateway, running_gateway
from tests.support.inference import Upstream, fakes_fixture

TERMINAL = ("completed", "failed", "expired", "cancelled")


fakes = fakes_fixture({"openai": "sk-test", "eleven-labs": Upstream("el-test", host=True)})


def media(fake: RunningFake) -> Any:
    return fake.app.state.media


@pytest.fixture(scope="module", params=BACKENDS)
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
       fakes: dict[str, RunningFake]) -> Iterator[Gateway]:
    with running_gateway(request.param, tmp_path_factory.mktemp("batchmedia")) as g:
        yield g


@pytest.fixture(autouse=True)
def reset(fakes: dict[str, RunningFake]) -> None:
    st = media(fakes["openai"])
    st.fail_next, st.fail_status = 0, 503
    st.requests.clear()


def fresh(gw: Gateway, usd: float = 10) -> tuple[str, httpx.Client, openai.OpenAI]:
    k = gw.create_key("batchmedia", credits_usd=usd)
    return k, gw.client(k), openai.OpenAI(api_key=k, base_url=gw.base_url + "/v1", max_retries=0, timeout=60)


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def row(cid: str, url: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": url, "body": body}


def run_batch(oai: openai.OpenAI, rows: list[dict[str, Any]], endpoint: str,
              **extra: Any) -> tuple[Any, dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The SDK flow; (final batch, output lines by custom_id, error lines by custom_id)."""
    f = oai.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose="batch")
    b = oai.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h",  # type: ignore[arg-type]
                           **extra)
    deadline = time.monotonic() + 90
    while b.status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.1)
        b = oai.batches.retrieve(b.id)
    assert b.status == "completed", b
    out = {}
    if b.output_file_id:
        out = {o["custom_id"]: o for o in map(json.loads, oai.files.content(b.output_file_id).text.splitlines())}
    err = {}
    if b.error_file_id:
        err = {o["custom_id"]: o for o in map(json.loads, oai.files.content(b.error_file_id).text.splitlines())}
    return b, out, err


def png(color: tuple[int, int, int, int] = (200, 10, 10, 255), size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def decoded_image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_local_image_rows_with_no_key(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    key, _c, oai = fresh(gw)
    gen = "/v1/images/generations"
    rows = [row("a", gen, model="local/procedural-image", prompt="a paper boat", size="256x256", seed=7),
            row("b", gen, model="local/procedural-image", prompt="two boats", size="512x512", n=2,
                output_format="jpeg"),
            row("u", gen, model="local/procedural-image", prompt="a link", size="256x256", response_format="url"),
            row("bad", gen, model="local/procedural-image", prompt="x", partial_images=2)]  # needs stream
    b, out, err = run_batch(oai, rows, gen)
    assert b.request_counts is not None and (b.request_counts.completed, b.request_counts.failed) == (3, 1)
    a = out["a"]["response"]
    assert a["status_code"] == 200 and a["body"]["provider"] == "local" and a["body"]["cost_nanos"] == 0
    assert decoded_image(a["body"]["data"][0]["b64_json"]).size == (256, 256)
    two = out["b"]["response"]["body"]["data"]
    assert [decoded_image(d["b64_json"]).format for d in two] == ["JPEG", "JPEG"]
    link = out["u"]["response"]["body"]["data"][0]["url"]
    assert "/v1/images/content/" in link
    got = httpx.get(gw.base_url + link[link.index("/v1/images/content/"):])  # no API key: the signature is it
    assert got.status_code == 200 and Image.open(io.BytesIO(got.content)).size == (256, 256)
    e = err["bad"]["response"]
    assert e["status_code"] == 400 and e["body"]["error"]["param"] == "partial_images"
    settled, costs, held = books(gw, key, b.id)
    assert settled == costs == 0 and held == 0 and (b.model_extra or {})["billing"]["state"] == "none"  # nothing held
    assert media(fakes["openai"]).requests == []


def test_openai_image_rows_charged_exactly(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    key, c, oai = fresh(gw)
    gen = "/v1/images/generations"
    rows = [row("low", gen, model="openai/gpt-image-1", prompt="a red fox", size="1024x1536", quality="low"),
            row("two", gen, model="openai/gpt-image-1", prompt="a whale", size="1024x1024", quality="medium", n=2),
            row("open", gen, model="openai/gpt-image-1", prompt="a comet", size="1024x1024")]
    b, out, err = run_batch(oai, rows, gen)
    assert err == {} and len(out) == 3
    extra = b.model_extra or {}
    # held: 0.016 + 2 × 0.042 + the dearest 1024x1024 rule (high, 0.167) for the open quality
    assert extra["billing"]["held_nanos"] == 16_000_000 + 84_000_000 + 167_000_000
    costs_by_row = {cid: o["response"]["body"]["cost_nanos"] for cid, o in out.items()}
    assert costs_by_row == {"low": 16_000_000, "two": 84_000_000, "open": 42_000_000}  # the fake makes medium
    assert decoded_image(out["low"]["response"]["body"]["data"][0]["b64_json"]).size == (1024, 1536)
    sent = sorted((r.body["prompt"], r.body.get("quality")) for r in media(fakes["openai"]).requests)
    assert sent == [("a comet", None), ("a red fox", "low"), ("a whale", "medium")]
    settled, costs, held = books(gw, key, b.id)
    assert settled == costs == 142_000_000 and held == 0
    assert extra["billing"]["settled_nanos"] == costs == c.get(f"/v1/batches/{b.id}").json()["usage"]["cost_nanos"]
    rows_out = c.get(f"/v1/batches/{b.id}/requests").json()["data"]
    assert {r["custom_id"]: r["cost_nanos"] for r in rows_out} == costs_by_row
    assert all(r["usage"]["images"] >= 1 and r["usage"]["lines"] for r in rows_out)


def test_edit_rows_with_data_urls_and_file_ids(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    key, _c, oai = fresh(gw)
    up = oai.files.create(file=("red.png", io.BytesIO(png()), "image/png"), purpose="user_data")
    mask = png((0, 0, 0, 0))
    edits = "/v1/images/edits"
    rows = [row("url", edits, model="openai/gpt-image-1", prompt="add a hat", size="1024x1024", quality="low",
                images=[{"image_url": data_url(png(), "image/png")}, {"file_id": up.id}],
                mask={"image_url": data_url(mask, "image/png")}),
            row("local", edits, model="local/procedural-image", prompt="repaint", image=up.id, size="256x256"),
            row("notimg", edits, model="local/procedural-image", prompt="x", image=data_url(b"hello", "image/png")),
            row("nofile", edits, model="local/procedural-image", prompt="x", images=[{"file_id": "file-nope"}])]
    b, out, err = run_batch(oai, rows, edits)
    assert set(out) == {"url", "local"} and set(err) == {"notimg", "nofile"}
    body = media(fakes["openai"]).requests[-1].body
    assert body["image_count"] == 2 and body["mask"] is True and body["prompt"] == "add a hat"
    assert out["url"]["response"]["body"]["cost_nanos"] == 11_000_000
    assert decoded_image(out["local"]["response"]["body"]["data"][0]["b64_json"]).size == (256, 256)
    assert err["notimg"]["response"]["body"]["error"]["code"] == "invalid_image"
    assert err["nofile"]["response"]["body"]["error"]["code"] == "file_not_found"
    settled, costs, held = books(gw, key, b.id)
    assert settled == costs == 11_000_000 and held == 0


def test_speech_then_transcription_rows(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    key, _c, oai = fresh(gw)
    texts = {"s1": "hello from the batch", "s2": "a second sentence, spoken"}
    speech = [row(cid, "/v1/audio/speech", model="openai/tts-1", voice="alloy", input=t, response_format="wav")
              for cid, t in texts.items()]
    speech.append(row("el", "/v1/audio/speech", model="eleven-labs/eleven-flash-v2.5", voice="21m00Tcm4TlvDq8ikWAM",
                      input="Eleven labs speaking"))
    sb, sout, serr = run_batch(oai, speech, "/v1/audio/speech")
    assert serr == {} and len(sout) == 3
    audio: dict[str, bytes] = {}
    for cid, t in texts.items():
        body = sout[cid]["response"]["body"]
        assert body["object"] == "audio.speech" and body["mime_type"] == "audio/wav"
        audio[cid] = base64.b64decode(body["audio_base64"])
        assert math.isclose(audio_codec.decode_seconds(audio[cid]), audio_codec.seconds_for(t), abs_tol=0.1)
        assert body["cost_nanos"] == len(t) * 15_000  # 15 USD per million characters
    el = sout["el"]["response"]["body"]
    assert el["provider"] == "eleven-labs" and el["cost_nanos"] == -(-len("Eleven labs speaking") * 50_000_000 // 1000)
    assert audio_codec.decode_seconds(base64.b64decode(el["audio_base64"])) > 0.5
    settled, costs, _ = books(gw, key, sb.id)
    assert settled == costs == sum(len(t) * 15_000 for t in texts.values()) + el["cost_nanos"]

    # the audio back in: a data URL, an uploaded file, an undecodable file
    up = oai.files.create(file=("s2.wav", io.BytesIO(audio["s2"]), "audio/wav"), purpose="user_data")
    tr = "/v1/audio/transcriptions"
    rows = [row("d", tr, model="openai/whisper-1", file=data_url(audio["s1"], "audio/wav"),
                response_format="verbose_json", timestamp_granularities=["word"]),
            row("f", tr, model="openai/whisper-1", file_id=up.id, response_format="srt"),
            row("bad", tr, model="openai/whisper-1", file=data_url(b"not audio at all", "audio/wav"))]
    b, out, err = run_batch(oai, rows, tr)
    assert set(out) == {"d", "f"} and set(err) == {"bad"}
    d = out["d"]["response"]["body"]
    assert d["text"] == texts["s1"] and [w["word"] for w in d["words"]] == texts["s1"].split()
    assert "-->" in out["f"]["response"]["body"]["text"] and texts["s2"] in out["f"]["response"]["body"]["text"]
    assert err["bad"]["response"]["status_code"] == 400 and err["bad"]["response"]["body"]["error"]["param"] == "file"

    def minute_price(wav: bytes) -> int:  # 0.006 USD a minute, whole seconds
        return -(-math.ceil(audio_codec.decode_seconds(wav) - 1e-6) * 6_000_000 // 60)

    assert d["cost_nanos"] == minute_price(audio["s1"])
    assert out["f"]["response"]["body"]["cost_nanos"] == minute_price(audio["s2"])
    extra = b.model_extra or {}
    assert extra["billing"]["held_nanos"] == minute_price(audio["s1"]) + minute_price(audio["s2"])  # probed at create
    settled2, costs2, held = books(gw, key, b.id)
    assert settled2 - settled == costs2 == extra["billing"]["settled_nanos"] and held == 0

    tl = [row("t", "/v1/audio/translations", model="openai/whisper-1", file=data_url(audio["s1"], "audio/wav"))]
    _tb, tout, _ = run_batch(oai, tl, "/v1/audio/translations")
    assert tout["t"]["response"]["body"]["text"] == texts["s1"]
    assert tout["t"]["response"]["body"]["object"] == "translation"


def test_provider_refusal_fails_the_row_and_a_503_falls_back_or_retries(gw: Gateway,
                                                                      fakes: dict[str, RunningFake]) -> None:
    key, c, oai = fresh(gw)
    st = media(fakes["openai"])
    st.fail_next, st.fail_status = 1, 400
    gen = "/v1/images/generations"
    rows = [row("r", gen, model="openai/gpt-image-1", prompt="refused", size="1024x1024", quality="low")]
    b, out, err = run_batch(oai, rows, gen)
    assert out == {} and err["r"]["response"]["status_code"] == 400
    settled, costs, held = books(gw, key, b.id)
    assert settled == costs == 0 and held == 0
    st.fail_next, st.fail_status = 1, 503  # one provider only: retried later, then it succeeds
    b, out, err = run_batch(oai, rows, gen)
    assert err == {} and out["r"]["response"]["body"]["cost_nanos"] == 11_000_000
    assert c.get(f"/v1/batches/{b.id}/requests").json()["data"][0]["attempts"] == 2


def test_402_native_mode_and_create_time_validation(gw: Gateway, fakes: dict[str, RunningFake]) -> None:
    poor = gw.create_key("poor", credits_usd=0.1)
    c = gw.client(poor)
    gen = "/v1/images/generations"
    reqs = [{"custom_id": f"r{i}", "body": {"model": "openai/gpt-image-1", "prompt": "x", "quality": "high",
                                            "size": "1024x1024"}} for i in range(3)]
    r = c.post("/v1/batches", json={"endpoint": gen, "requests": reqs})
    assert r.status_code == 402, r.text
    assert media(fakes["openai"]).requests == []
    _, c2, _ = fresh(gw)
    r = c2.post("/v1/batches", json={"endpoint": gen, "requests": reqs[:1], "mode": "native"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "mode"
    bad = [{"custom_id": "a", "body": {"model": "openai/gpt-image-1", "prompt": "x", "size": "999x999"}}]
    r = c2.post("/v1/batches", json={"endpoint": gen, "requests": bad})
    assert r.status_code == 400 and "Line 1" in r.json()["error"]["message"] and "size" in r.json()["error"]["message"]
    r = c2.post("/v1/batches", json={"endpoint": "/v1/audio/transcriptions",
                                     "requests": [{"body": {"model": "openai/whisper-1"}}]})
    assert r.status_code == 400 and "file_id" in r.json()["error"]["message"]


def test_listings_name_the_media_endpoints(gw: Gateway) -> None:
    _, c, _ = fresh(gw)
    data = c.get("/v1/batches/models").json()["data"]
    by_model = {m["model"]: m for m in data}
    local = by_model["local/procedural-image"]["providers"][0]
    assert local["modes"] == ["gateway"] and local["endpoints"] == ["/v1/images/generations", "/v1/images/edits"]
    tts = {p["id"]: p for p in by_model["openai/tts-1"]["providers"]}
    assert tts["openai"]["endpoints"] == ["/v1/audio/speech"]
    whisper = by_model["openai/whisper-1"]["providers"][0]
    assert whisper["endpoints"] == ["/v1/audio/transcriptions", "/v1/audio/translations"]
    scribe = by_model["eleven-labs/scribe-v1"]["providers"][0]
    assert scribe["endpoints"] == ["/v1/audio/transcriptions"]  # no translations at ElevenLabs
    gpt15 = by_model["openai/gpt-image-1.5"]["providers"][0]
    assert gpt15["modes"] == ["gateway"]  # the catalogue's batch entry; no native image batches here
    caps = {p["id"]: p for p in c.get("/v1/batches/capabilities").json()["data"]}
    local_eps = [e["endpoint"] for e in caps["local"]["endpoints"]]  # the local text models' endpoints too
    assert {"/v1/images/generations", "/v1/images/edits", "/v1/chat/completions"} <= set(local_eps)
    assert not {"/v1/audio/speech", "/v1/audio/transcriptions"} & set(local_eps)
    assert "/v1/audio/speech" in [e["endpoint"] for e in caps["openai"]["endpoints"]]
