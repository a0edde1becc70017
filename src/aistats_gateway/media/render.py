"""Built-in local video renderer used by the ``local/procedural-video`` model.

It needs no API key and no network: it draws a procedural animation (a plasma
field with moving blobs, palette and motion derived from the seed) with the
prompt text on top, and encodes a real H.264 MP4 (libx264, yuv420p,
``+faststart``) frame by frame, straight to disk.

Guarantees:

* Width and height are rounded **up** to the next even number (yuv420p needs
  even sizes), so a 641x361 request renders 642x362.
* ``frames = max(1, round(duration_seconds * fps))`` and the container duration
  is ``frames / fps``.
* The output is deterministic: the same spec gives a byte-identical file on the
  same machine (single-threaded x264, bitexact muxing, creation time 0). Other
  machines/library versions (FFmpeg, x264, numpy SIMD, FreeType) may differ.
* Colours are BT.709 limited range and tagged as such in the stream.
* Text is drawn with Pillow's built-in font, so non-Latin glyphs may show as
  boxes; no font files are needed.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Colorspace
from PIL import Image, ImageDraw, ImageFont, ImageOps

MIN_SIDE = 16
MAX_SIDE = 4096
MAX_DURATION_SECONDS = 120.0
MAX_FPS = 60
MAX_PROMPT_CHARS = 600
MAX_IMAGE_PIXELS = 40_000_000  # first_frame limit
PRESET = "ultrafast"  # ~3-4x faster than veryfast; files are larger but fine for a stub

# Named resolutions. "NNNp" fixes the short side; "1K"/"2K"/"4K" fix the long
# side (1024/2048/3840), so 16:9 gives 1024x576, 2048x1152 and 3840x2160.
SHORT_SIDE = {"480p": 480, "720p": 720, "1080p": 1080, "1440p": 1440, "2160p": 2160}
LONG_SIDE = {"1k": 1024, "2k": 2048, "4k": 3840}
DEFAULT_ASPECT_RATIO = "16:9"
DEFAULT_RESOLUTION = "720p"


class RenderCancelled(Exception):
    """Raised when ``should_stop()`` asked the render to stop; no file is left."""


@dataclass(frozen=True)
class RenderSpec:
    prompt: str
    width: int
    height: int
    duration_seconds: float
    fps: int = 24
    seed: int = 0
    negative_prompt: str | None = None
    first_frame: bytes | None = None  # encoded PNG/JPEG/WebP image


@dataclass(frozen=True)
class RenderResult:
    path: str
    bytes: int
    sha256: str
    width: int
    height: int
    duration_seconds: float
    frames: int
    fps: int


def even(value: int) -> int:
    """Round up to the next even number."""
    return value + (value & 1)


def resolve_dimensions(
    resolution: str | None, aspect_ratio: str | None, size: str | None
) -> tuple[int, int]:
    """Return (width, height), both even (odd values are rounded up).

    ``size`` ("1280x720") wins. Otherwise ``resolution`` (SHORT_SIDE or
    LONG_SIDE names, case-insensitive, default 720p) with ``aspect_ratio``
    ("W:H", default 16:9). Raises ValueError on malformed input.
    """
    if size:
        match = re.fullmatch(r"\s*(\d{1,5})\s*[xX×*]\s*(\d{1,5})\s*", size)
        if not match:
            raise ValueError(f"size must look like '1280x720', got {size!r}")
        width, height = even(int(match[1])), even(int(match[2]))
    else:
        key = (resolution or DEFAULT_RESOLUTION).strip().lower()
        if key not in SHORT_SIDE and key not in LONG_SIDE:
            raise ValueError(f"unknown resolution {resolution!r}; use 480p, 720p, 1080p, 1440p, 2160p, 1K, 2K or 4K")
        ratio = (aspect_ratio or DEFAULT_ASPECT_RATIO).strip()
        match = re.fullmatch(r"(\d{1,4}(?:\.\d+)?)\s*[:/xX]\s*(\d{1,4}(?:\.\d+)?)", ratio)
        if not match or float(match[1]) <= 0 or float(match[2]) <= 0:
            raise ValueError(f"aspect_ratio must look like '16:9', got {aspect_ratio!r}")
        stretch = max(float(match[1]), float(match[2])) / min(float(match[1]), float(match[2]))
        if stretch > 10:
            raise ValueError(f"aspect_ratio {aspect_ratio!r} is too extreme (max 10:1)")
        if key in SHORT_SIDE:
            short, long = SHORT_SIDE[key], even(round(SHORT_SIDE[key] * stretch))
        else:
            short, long = even(round(LONG_SIDE[key] / stretch)), LONG_SIDE[key]
        width, height = (long, short) if float(match[1]) >= float(match[2]) else (short, long)
    check_size(width, height)
    return width, height


def check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ValueError(f"{name} must be between {MIN_SIDE} and {MAX_SIDE}, got {value}")


def frame_count(duration_seconds: float, fps: int) -> int:
    return max(1, round(duration_seconds * fps))


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Tile = tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x, y, Y*a, 256-a, UV*a, 256-a/4


class Scene:
    """Precomputed state that turns a frame index into a yuv420p (BT.709) ndarray.

    The plasma is computed on a small grid and upscaled + converted by swscale in
    one call; text is drawn once into RGBA tiles, converted to YUV, and blended
    per frame with integer numpy maths.
    """

    def __init__(self, spec: RenderSpec, width: int, height: int, frames: int) -> None:
        self.width, self.height, self.fps, self.frames = width, height, spec.fps, frames
        rng = random.Random(spec.seed)
        step = max(4, -(-max(width, height) // 480))
        low_w, low_h = max(8, -(-width // step)), max(8, -(-height // step))
        self.aspect = width / height
        self.x, self.y = np.meshgrid(
            np.linspace(0.0, self.aspect, low_w, dtype=np.float32), np.linspace(0.0, 1.0, low_h, dtype=np.float32)
        )
        self.freq = [rng.uniform(2.0, 7.0) for _ in range(4)]
        self.speed = [rng.uniform(0.4, 1.6) * rng.choice((-1, 1)) for _ in range(5)]
        self.phase = [rng.uniform(0, 2 * math.pi) for _ in range(6)]
        angle = rng.uniform(0, math.pi)
        self.diag = (math.cos(angle), math.sin(angle))
        self.blobs = [
            (rng.uniform(0.1, 0.25), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.9),
             rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi))
            for _ in range(rng.randint(2, 4))
        ]
        # Cosine palette: colour = a + b * cos(2π(c·v + d)), looked up from a LUT.
        self.pal_a, self.pal_b, self.pal_c, self.pal_d = (
            np.array([rng.uniform(lo, hi) for _ in range(3)], np.float32)
            for lo, hi in ((0.35, 0.6), (0.25, 0.45), (0.5, 1.5), (0.0, 1.0))
        )
        self.drift = rng.uniform(0.02, 0.08)
        self.lut_v = np.linspace(-0.6, 0.6 + 0.4 * len(self.blobs), 1024, dtype=np.float32)
        self.image = load_first_frame(spec.first_frame, width, height)
        self.zoom_to = rng.uniform(1.08, 1.2)
        self.pan = (rng.uniform(-1, 1), rng.uniform(-1, 1))
        self.tiles = build_text_tiles(spec, width, height)
        self.font = load_font(max(10, height // 30))
        self.tc_pad = pad = max(3, height // 120)
        right, bottom = self.font.getbbox(self.timecode(frames - 1))[2:]
        self.tc_size = (min(width, int(right) + 3 * pad), min(height, int(bottom) + 2 * pad))

    def plasma_rgb(self, t: float) -> np.ndarray:
        x, y, f, s, p = self.x, self.y, self.freq, self.speed, self.phase
        v = np.sin(x * f[0] + t * s[0] + p[0])
        v += np.sin(y * f[1] + t * s[1] + p[1])
        v += np.sin((x * self.diag[0] + y * self.diag[1]) * f[2] + t * s[2] + p[2])
        cx = self.aspect * (0.5 + 0.35 * math.sin(t * s[3] * 0.5 + p[3]))
        cy = 0.5 + 0.35 * math.cos(t * s[4] * 0.5 + p[4])
        v += np.sin(np.sqrt((x - cx) ** 2 + (y - cy) ** 2) * f[3] * 2.0 - t * 2.0)
        for radius, ax, ay, px, py in self.blobs:
            bx = self.aspect * (0.5 + 0.4 * math.sin(t * ax + px))
            by = 0.5 + 0.4 * math.sin(t * ay * 1.3 + py)
            v += 3.0 * radius * radius / ((x - bx) ** 2 + (y - by) ** 2 + radius * radius)
        v *= 0.125
        lo, hi = float(self.lut_v[0]), float(self.lut_v[-1])
        index = ((np.clip(v, lo, hi) - lo) * (1023.0 / (hi - lo))).astype(np.intp)
        phase = (self.lut_v + t * self.drift)[:, None] * self.pal_c + self.pal_d
        lut = np.clip(self.pal_a + self.pal_b * np.cos(phase * (2 * math.pi)), 0.0, 1.0)
        colours: np.ndarray = (lut * 255.0).astype(np.uint8)[index]
        return colours

    def background(self, t: float, progress: float) -> np.ndarray:
        plasma = to_yuv420(self.plasma_rgb(t), self.width, self.height)
        if self.image is None:
            return plasma
        # Slow zoom/pan ("Ken Burns") from the cover-cropped first frame; the
        # plasma fades in over it as the clip goes on.
        img_h, img_w = self.image.shape[:2]
        zoom = self.zoom_to ** progress
        box_w = min(img_w, max(2, round(img_w / zoom)))
        box_h = min(img_h, max(2, round(img_h / zoom)))
        left = round((img_w - box_w) * (0.5 + 0.5 * self.pan[0] * progress))
        top = round((img_h - box_h) * (0.5 + 0.5 * self.pan[1] * progress))
        frame = to_yuv420(self.image[top : top + box_h, left : left + box_w], self.width, self.height)
        mix = round(90 * progress)  # out of 256
        if mix == 0:
            return frame
        return ((frame.astype(np.uint16) * (256 - mix) + plasma.astype(np.uint16) * mix) >> 8).astype(np.uint8)

    def timecode(self, index: int) -> str:
        minutes, seconds = divmod(index / self.fps, 60)
        return f"{int(minutes):02d}:{seconds:05.2f}  #{index + 1}/{self.frames}"

    def render(self, index: int) -> np.ndarray:
        progress = index / max(1, self.frames - 1)
        yuv = self.background(index / self.fps, progress)
        planes = split_planes(yuv, self.width, self.height)
        tc = Image.new("RGBA", self.tc_size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(tc)
        draw.rectangle((0, 0, tc.width - 1, tc.height - 1), fill=(0, 0, 0, 140))
        draw.text((self.tc_pad, self.tc_pad), self.timecode(index), font=self.font, fill=(255, 255, 255, 255))
        for tile in [*self.tiles, rgba_tile(tc, 0, 0, self.width, self.height)]:
            blend(planes, tile)
        bar_h = max(2, self.height // 120) & ~1
        bar_w = (self.width * (index + 1) // self.frames) & ~1
        planes[0][-bar_h:, :bar_w] = 235
        planes[1][-bar_h // 2 :, : bar_w // 2] = 128
        planes[2][-bar_h // 2 :, : bar_w // 2] = 128
        return yuv


def to_yuv420(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale an RGB array to width x height and convert to a yuv420p (BT.709) array."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    frame = frame.reformat(width, height, "yuv420p", dst_colorspace=Colorspace.ITU709, interpolation="BILINEAR")
    return frame.to_ndarray()


def split_planes(yuv: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # The chroma planes follow the luma rows back to back; when height/2 is odd they do not end on a
    # row boundary, so slice them by element count (views, so in-place writes reach the frame).
    chroma = yuv[height:].reshape(-1)
    n = (height // 2) * (width // 2)
    u = chroma[:n].reshape(height // 2, width // 2)
    v = chroma[n : 2 * n].reshape(height // 2, width // 2)
    return yuv[:height], u, v


def rgba_tile(img: Image.Image, x: int, y: int, width: int, height: int) -> Tile:
    """Convert an RGBA overlay to premultiplied BT.709 YUV tiles at an even position."""
    x, y = max(0, x) & ~1, max(0, y) & ~1
    w, h = min(img.width, width - x) & ~1, min(img.height, height - y) & ~1
    rgba = np.asarray(img, dtype=np.float32)[:h, :w]
    r, g, b = rgba[..., 0], rgba[..., 1], rgba[..., 2]
    luma = 0.2126 * r + 0.7152 * g + 0.0722 * b
    yy = np.rint(16 + luma * (219 / 255)).astype(np.uint16)
    uu = 128 + (b - luma) * (224 / 255 / 1.8556)
    vv = 128 + (r - luma) * (224 / 255 / 1.5748)
    a8 = rgba[..., 3].astype(np.uint16)
    alpha = a8 + (a8 > 0)  # 0..256 so that 255 is fully opaque
    quad = alpha[0::2, 0::2] + alpha[1::2, 0::2] + alpha[0::2, 1::2] + alpha[1::2, 1::2]
    af = alpha.astype(np.float32)

    def pooled(c: np.ndarray) -> np.ndarray:
        ca = c * af
        return np.rint((ca[0::2, 0::2] + ca[1::2, 0::2] + ca[0::2, 1::2] + ca[1::2, 1::2]) / 4)

    uv_prem = np.stack([pooled(uu), pooled(vv)]).astype(np.uint16)
    return x, y, yy * alpha, 256 - alpha, uv_prem, 256 - (quad >> 2)


def blend(planes: tuple[np.ndarray, np.ndarray, np.ndarray], tile: Tile) -> None:
    x, y, y_prem, y_inv, uv_prem, uv_inv = tile
    h, w = y_inv.shape
    region = planes[0][y : y + h, x : x + w]
    region[:] = (region * y_inv + y_prem) >> 8
    for plane, prem in zip(planes[1:], uv_prem):
        region = plane[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2]
        region[:] = (region * uv_inv + prem) >> 8


def load_font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def load_first_frame(data: bytes | None, width: int, height: int) -> np.ndarray | None:
    """Decode the image and cover-crop it to 1.5x the frame size (headroom for the zoom)."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{opened.width}x{opened.height} is larger than {MAX_IMAGE_PIXELS} pixels")
            img = ImageOps.exif_transpose(opened).convert("RGB")
    except Exception as exc:  # Pillow raises many types for bad input
        raise ValueError(f"first_frame is not a readable PNG/JPEG/WebP image: {exc}") from exc
    fitted = ImageOps.fit(img, (width * 3 // 2, height * 3 // 2), Image.Resampling.LANCZOS)
    return np.asarray(fitted)


def fit_lines(text: str, font: Font, max_width: int, max_lines: int) -> list[str]:
    """Greedy word wrap; words wider than a line are split; overflow ends in '…'."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        while font.getlength(word) > max_width and len(word) > 1:
            lo, hi = 1, len(word) - 1  # longest prefix that fits (binary search)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if font.getlength(word[:mid]) <= max_width else (lo, mid - 1)
            lines += [line, word[:lo]] if line else [word[:lo]]
            line, word = "", word[lo:]
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= max_width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(last + "…") > max_width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last.rstrip() + "…"]
    return lines


def build_text_tiles(spec: RenderSpec, width: int, height: int) -> list[Tile]:
    """Draw the prompt panel and the corner label once, as YUV tiles."""
    prompt = " ".join(spec.prompt.split())[:MAX_PROMPT_CHARS] or "(empty prompt)"
    negative = " ".join((spec.negative_prompt or "").split())[:200]
    max_w = int(width * 0.84)
    size = max(10, height // 18)
    font = load_font(size)
    lines = fit_lines(prompt, font, max_w, 6)
    if len(lines) > 3:  # long prompt: smaller text, more lines
        size = max(10, height // 26)
        font = load_font(size)
        lines = fit_lines(prompt, font, max_w, 7)
    small = load_font(max(9, size * 3 // 5))
    small_lines = fit_lines(f"avoid: {negative}", small, max_w, 2) if negative else []
    line_h = round(size * 1.25)
    small_h = round(small.size * 1.3) if isinstance(small, ImageFont.FreeTypeFont) else 12
    pad = max(6, size // 2)
    text_w = max([font.getlength(line) for line in lines] + [small.getlength(line) for line in small_lines])
    panel_w = min(width, math.ceil(text_w) + 2 * pad)
    panel_h = min(height, len(lines) * line_h + len(small_lines) * small_h + 2 * pad)
    panel = Image.new("RGBA", (panel_w, panel_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(panel)
    draw.rounded_rectangle((0, 0, panel_w - 1, panel_h - 1), radius=pad, fill=(0, 0, 0, 150))
    y = pad
    for line in lines:
        x = (panel_w - font.getlength(line)) / 2
        draw.text((x + 1, y + 1), line, font=font, fill=(0, 0, 0, 255))
        draw.text((x, y), line, font=font, fill=(255, 255, 255, 255))
        y += line_h
    for line in small_lines:
        draw.text(((panel_w - small.getlength(line)) / 2, y), line, font=small, fill=(210, 210, 210, 255))
        y += small_h
    x0 = (width - panel_w) // 2
    y0 = max(0, height - panel_h - max(8, height // 12))
    tiles = [rgba_tile(panel, x0, y0, width, height)]
    label_font = load_font(max(9, height // 36))
    label = f"local/procedural-video  seed {spec.seed}"
    lw = math.ceil(label_font.getlength(label)) + 8
    label_img = Image.new("RGBA", (min(width, lw), min(height, max(12, height // 36) + 10)), (0, 0, 0, 0))
    ImageDraw.Draw(label_img).text((4, 3), label, font=label_font, fill=(255, 255, 255, 200))
    tiles.append(rgba_tile(label_img, width - label_img.width, 0, width, height))
    return tiles


def render_to_file(
    spec: RenderSpec,
    path: str | os.PathLike[str],
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RenderResult:
    """Render ``spec`` to an MP4 at ``path`` (written atomically via a temp file)."""
    width, height = even(int(spec.width)), even(int(spec.height))
    check_size(width, height)
    if not 1 <= spec.fps <= MAX_FPS:
        raise ValueError(f"fps must be between 1 and {MAX_FPS}, got {spec.fps}")
    if not 0 < spec.duration_seconds <= MAX_DURATION_SECONDS:
        raise ValueError(f"duration_seconds must be in (0, {MAX_DURATION_SECONDS}], got {spec.duration_seconds}")
    frames = frame_count(spec.duration_seconds, spec.fps)
    scene = Scene(spec, width, height, frames)

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
    last_pct = -1

    def report(pct: int) -> None:
        nonlocal last_pct
        if progress is not None and pct > last_pct:
            last_pct = pct
            progress(pct)

    report(0)
    try:
        encode(scene, tmp, report, should_stop)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with open(final, "rb") as fh:
        sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
    size = final.stat().st_size
    result = RenderResult(str(final), size, sha256, width, height, frames / spec.fps, frames, spec.fps)
    report(100)
    return result


def encode(scene: Scene, tmp: Path, report: Callable[[int], None], should_stop: Callable[[], bool] | None) -> None:
    """Encode every frame with libx264 (fixed preset, one thread) into a faststart MP4."""
    container_options = {"movflags": "+faststart", "fflags": "+bitexact"}
    with av.open(str(tmp), mode="w", format="mp4", container_options=container_options) as container:
        stream = container.add_stream("libx264", rate=scene.fps)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        ctx = stream.codec_context
        ctx.time_base = Fraction(1, scene.fps)
        ctx.thread_count = 1  # one fixed thread => byte-identical output on every run
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 1, 1, 1, 1  # BT.709, limited
        stream.options = {"preset": PRESET, "crf": "23", "flags": "+bitexact", "threads": "1"}
        for index in range(scene.frames):
            if should_stop is not None and should_stop():
                raise RenderCancelled("render cancelled")
            frame = av.VideoFrame.from_ndarray(scene.render(index), format="yuv420p")
            frame.pts = index
            frame.time_base = Fraction(1, scene.fps)
            for packet in stream.encode(frame):
                container.mux(packet)
            report((index + 1) * 99 // scene.frames)
        for packet in stream.encode(None):
            container.mux(packet)
