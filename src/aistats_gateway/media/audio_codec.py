"""Real audio bytes with PyAV: a deterministic "speech" signal for text, encoded in any OpenAI speech
format, and the duration of an uploaded audio file.

Invariants:

* ``synthesize(text, fmt)`` is deterministic, lasts ``seconds_for(text, speed)`` and decodes with any
  ordinary decoder (PyAV/ffmpeg): wav (PCM s16le), flac, mp3 (LAME), opus (Ogg Opus), aac (ADTS),
  pcm (raw s16le, 24 kHz mono — what OpenAI sends for ``pcm``).
* ``probe_seconds(path)`` reads the container/stream duration, or decodes the file to count samples;
  a file with no decodable audio stream raises ``ValueError``.
* CPU and file work: call from a worker thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import av
import av.audio.stream
import numpy as np

RATE = 24_000
MIME = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav",
        "pcm": "audio/pcm", "ogg": "audio/ogg", "ulaw_8000": "audio/basic"}
_CONTAINER = {"mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus"), "aac": ("adts", "aac"),
              "flac": ("flac", "flac"), "wav": ("wav", "pcm_s16le")}
CHARS_PER_SECOND = 15.0


def seconds_for(text: str, speed: float = 1.0) -> float:
    """How long the spoken ``text`` lasts (about 15 characters a second at speed 1), at least 0.5 s."""
    return round(max(0.5, len(text) / CHARS_PER_SECOND / max(0.25, speed)), 3)


def _signal(text: str, seconds: float, rate: int) -> np.ndarray:
    """Mono float32 samples: one short vowel-like tone per word, pitch from the word's hash."""
    n = max(1, int(seconds * rate))
    out = np.zeros(n, dtype=np.float32)
    words = text.split() or ["…"]
    span = n / len(words)
    t = np.arange(int(span), dtype=np.float32) / rate
    env = np.sin(np.linspace(0.0, math.pi, t.size, dtype=np.float32)) ** 2
    for i, w in enumerate(words):
        f0 = 110 + int(hashlib.sha256(w.encode()).hexdigest()[:4], 16) % 160
        tone = (np.sin(2 * np.pi * f0 * t) + 0.4 * np.sin(4 * np.pi * f0 * t) + 0.2 * np.sin(6 * np.pi * f0 * t))
        seg = (0.25 * env * tone).astype(np.float32)
        start = int(i * span)
        out[start:start + seg.size] += seg[: n - start]
    return out


def synthesize(text: str, fmt: str = "mp3", speed: float = 1.0) -> bytes:
    """The encoded audio of ``text`` in ``fmt`` (see the module docstring)."""
    samples = _signal(text, seconds_for(text, speed), RATE)
    pcm16 = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    if fmt == "pcm":
        return bytes(pcm16.tobytes())
    if fmt not in _CONTAINER:
        raise ValueError(f"unsupported audio format {fmt!r}")
    container, codec = _CONTAINER[fmt]
    rate = 48_000 if codec == "libopus" else RATE
    if rate != RATE:
        samples = _signal(text, seconds_for(text, speed), rate)
        pcm16 = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = cast("av.audio.stream.AudioStream", out.add_stream(codec, rate=rate, layout="mono"))
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, pcm16.size, frame_size):
            chunk = pcm16[start:start + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def pcm(text: str, rate: int = RATE, speed: float = 1.0) -> bytes:
    """Raw little-endian 16-bit mono samples of ``text`` at ``rate`` Hz."""
    samples = _signal(text, seconds_for(text, speed), rate)
    return bytes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())


def wav_header(rate: int = RATE, data_bytes: int = 0xFFFFFFFF - 36) -> bytes:
    """A RIFF/WAVE header for 16-bit mono PCM; the default sizes mean "until the end of the stream"."""
    import struct

    return (b"RIFF" + struct.pack("<I", min(0xFFFFFFFF, data_bytes + 36)) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes))


def chunks(data: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def probe_seconds(path: Path | str) -> float:
    """The duration of the audio in ``path`` in seconds (see the module docstring)."""
    try:
        with av.open(str(path), "r") as c:
            streams = c.streams.audio
            if not streams:
                raise ValueError("the file has no audio stream")
            s = streams[0]
            if s.duration is not None and s.time_base is not None:
                return round(float(s.duration * s.time_base), 3)
            if c.duration is not None and c.duration > 0:
                return round(c.duration / 1_000_000, 3)
            samples = 0
            rate = s.rate or 1
            for frame in c.decode(s):
                samples += frame.samples if isinstance(frame, av.AudioFrame) else 0
            return round(samples / rate, 3)
    except av.error.FFmpegError as e:
        raise ValueError("the file is not audio this gateway can read") from e


def decode_seconds(data: bytes) -> float:
    """Decode all of ``data`` and return its duration (tests use it to prove the bytes are real audio)."""
    with av.open(io.BytesIO(data), "r") as c:
        s = c.streams.audio[0]
        n = sum(f.samples for f in c.decode(s) if isinstance(f, av.AudioFrame))
        return n / (s.rate or 1)
