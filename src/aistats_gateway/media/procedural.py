"""The built-in ``local/procedural-image`` model: deterministic images drawn with Pillow.

Invariants:

* Same (prompt, seed, size, format, background, compression, inputs) → the same bytes. The seed and
  the prompt choose the palette and the shapes; the prompt is drawn into the picture.
* ``generate`` makes a new picture; ``edit`` starts from the given image (resized to the requested
  size) and repaints only where the mask is transparent (OpenAI's mask convention: alpha 0 = edit
  here), or everywhere when there is no mask.
* Pure CPU work, no I/O: callers run it in a worker thread (``asyncio.to_thread``), never on the loop.
* Bad input (undecodable image, a mask of another size is resized, not refused) raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
MAX_SIDE = 4096


@dataclass(frozen=True)
class ImageSpec:
    prompt: str
    width: int
    height: int
    seed: int
    output_format: str = "png"  # png | jpeg | webp
    background: str = "auto"  # auto | opaque | transparent
    compression: int | None = None  # 0-100 (jpeg/webp: higher = smaller file)


def _rng(spec: ImageSpec, salt: str = "") -> random.Random:
    digest = hashlib.sha256(f"{spec.seed}\x00{spec.prompt}\x00{salt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _check(spec: ImageSpec) -> None:
    if spec.output_format not in FORMATS:
        raise ValueError(f"unsupported output format {spec.output_format!r}")
    if not (16 <= spec.width <= MAX_SIDE and 16 <= spec.height <= MAX_SIDE):
        raise ValueError(f"size {spec.width}x{spec.height} is outside 16..{MAX_SIDE} pixels per side")
    if spec.background == "transparent" and spec.output_format == "jpeg":
        raise ValueError("a transparent background needs png or webp")


def _palette(r: random.Random) -> list[tuple[int, int, int]]:
    base = r.random()
    out = []
    for i in range(5):
        h = (base + i * 0.17 + r.uniform(-0.04, 0.04)) % 1.0
        out.append(_hsv(h, r.uniform(0.45, 0.85), r.uniform(0.55, 0.95)))
    return out


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (int(rgb[0] * 255), int(rgb[1] * 255), int(rgb[2] * 255))


def _scene(spec: ImageSpec) -> Image.Image:
    """The procedural picture for ``spec`` (RGBA; transparent background when asked)."""
    r = _rng(spec)
    pal = _palette(r)
    w, h = spec.width, spec.height
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    if spec.background != "transparent":
        top, bottom = pal[0], pal[1]
        grad = Image.linear_gradient("L").resize((w, h))
        img = Image.composite(Image.new("RGBA", (w, h), bottom + (255,)), Image.new("RGBA", (w, h), top + (255,)),
                              grad)
    draw = ImageDraw.Draw(img, "RGBA")
    for _ in range(6 + r.randrange(6)):
        color = pal[r.randrange(2, 5)] + (r.randrange(120, 230),)
        cx, cy = r.uniform(0, w), r.uniform(0, h)
        rad = r.uniform(0.05, 0.3) * min(w, h)
        box = (cx - rad, cy - rad, cx + rad, cy + rad)
        shape = r.randrange(3)
        if shape == 0:
            draw.ellipse(box, fill=color)
        elif shape == 1:
            draw.rectangle(box, fill=color)
        else:
            draw.polygon([(cx, cy - rad), (cx + rad, cy + rad), (cx - rad, cy + rad)], fill=color)
    _caption(draw, spec.prompt, w, h)
    return img


def _caption(draw: ImageDraw.ImageDraw, prompt: str, w: int, h: int) -> None:
    size = max(10, min(w, h) // 18)
    font = ImageFont.load_default(size=size)
    chars = max(8, int(w / (size * 0.55)))
    lines = textwrap.wrap(prompt.strip() or "(empty prompt)", chars)[: max(1, (h // 3) // (size + 4))]
    text = "\n".join(lines)
    box = draw.multiline_textbbox((0, 0), text, font=font, spacing=4)
    tw, th = box[2] - box[0], box[3] - box[1]
    x, y = max(4, (w - tw) // 2), max(4, h - th - size)
    pad = size // 3
    draw.rectangle((x - pad, y - pad, x + tw + pad, y + th + pad), fill=(0, 0, 0, 150))
    draw.multiline_text((x, y - box[1]), text, font=font, fill=(255, 255, 255, 255), spacing=4)


def _encode(img: Image.Image, spec: ImageSpec) -> bytes:
    buf = io.BytesIO()
    fmt = spec.output_format
    if fmt == "jpeg" or (spec.background == "opaque" and img.mode == "RGBA"):
        flat = Image.new("RGB", img.size, (255, 255, 255))
        flat.paste(img, mask=img.getchannel("A"))
        img = flat
    quality = 100 - spec.compression if spec.compression is not None else 90
    if fmt == "png":
        img.save(buf, "PNG", compress_level=6)
    elif fmt == "jpeg":
        img.save(buf, "JPEG", quality=max(1, quality))
    else:
        img.save(buf, "WEBP", quality=max(1, quality), method=4)
    return buf.getvalue()


def generate(spec: ImageSpec) -> bytes:
    _check(spec)
    return _encode(_scene(spec), spec)


def _open(data: bytes, what: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:
        raise ValueError(f"the {what} is not a readable image") from e
    return img


def edit(spec: ImageSpec, image: bytes, mask: bytes | None = None) -> bytes:
    """Repaint ``image`` (resized to the spec's size) with the spec's scene where ``mask`` is transparent."""
    _check(spec)
    base = _open(image, "image").convert("RGBA").resize((spec.width, spec.height))
    scene = _scene(ImageSpec(spec.prompt, spec.width, spec.height, spec.seed, spec.output_format, "opaque"))
    if mask is None:
        where = Image.new("L", base.size, 160)  # blend the whole picture
    else:
        m = _open(mask, "mask")
        alpha = m.getchannel("A") if "A" in m.getbands() else Image.new("L", m.size, 255)
        where = alpha.resize(base.size).point(lambda a: 255 - a)  # transparent → repaint
    out = Image.composite(scene, base, where)
    _caption(ImageDraw.Draw(out, "RGBA"), spec.prompt, spec.width, spec.height)
    return _encode(out, spec)


def image_size(data: bytes) -> tuple[int, int]:
    return _open(data, "image").size
