from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from aistats_gateway.media.render import (
    RenderCancelled,
    RenderSpec,
    render_to_file,
    resolve_dimensions,
)
from aistats_gateway.videos.media import MediaError, make_thumbnail, probe

PROMPT = "A lighthouse on a cliff at dusk, waves crashing, slow dolly in"


def spec(**overrides: object) -> RenderSpec:
    values: dict[str, object] = {
        "prompt": PROMPT,
        "width": 320,
        "height": 180,
        "duration_seconds": 1.0,
        "fps": 12,
        "seed": 1,
    }
    values.update(overrides)
    return RenderSpec(**values)  # type: ignore[arg-type]


def first_frame_rgb(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def test_render_2s_640x360(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    result = render_to_file(spec(width=640, height=360, duration_seconds=2.0, fps=24, seed=42), out)
    assert out.is_file()
    data = out.read_bytes()
    assert result.path == str(out)
    assert result.bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.width, result.height, result.frames, result.fps) == (640, 360, 48, 24)
    assert result.duration_seconds == pytest.approx(2.0)

    info = probe(out)
    assert info.codec == "h264"
    assert info.mime_type == "video/mp4"
    assert (info.width, info.height) == (640, 360)
    assert info.duration_seconds == pytest.approx(2.0, abs=1 / 24)
    assert info.fps == pytest.approx(24.0)
    assert info.frames in (None, 48)
    assert info.bytes == len(data)
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 48
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert "creation_time" not in container.metadata


def test_faststart_moov_before_mdat(tmp_path: Path) -> None:
    out = tmp_path / "fs.mp4"
    render_to_file(spec(), out)
    data = out.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


def test_deterministic_and_seed_sensitive(tmp_path: Path) -> None:
    a = render_to_file(spec(seed=7), tmp_path / "a.mp4")
    b = render_to_file(spec(seed=7), tmp_path / "b.mp4")
    c = render_to_file(spec(seed=8), tmp_path / "c.mp4")
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert c.sha256 != a.sha256
    # Different seeds give visibly different colours, not just different bytes.
    diff = np.abs(first_frame_rgb(tmp_path / "a.mp4").astype(int) - first_frame_rgb(tmp_path / "c.mp4").astype(int))
    assert diff.mean() > 10


def test_frames_change_over_time(tmp_path: Path) -> None:
    out = tmp_path / "motion.mp4"
    render_to_file(spec(duration_seconds=2.0), out)
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    assert np.abs(frames[0] - frames[-1]).mean() > 3


@pytest.mark.parametrize(
    ("resolution", "aspect", "size", "expected"),
    [
        (None, None, "1280x720", (1280, 720)),
        ("1080p", "9:16", "640x480", (640, 480)),  # size wins
        (None, None, None, (1280, 720)),  # defaults: 720p, 16:9
        ("480p", None, None, (854, 480)),
        ("720p", "16:9", None, (1280, 720)),
        ("1080p", "16:9", None, (1920, 1080)),
        ("1080p", "9:16", None, (1080, 1920)),
        ("720p", "1:1", None, (720, 720)),
        ("720p", "4:3", None, (960, 720)),
        ("1440p", "16:9", None, (2560, 1440)),
        ("1K", "16:9", None, (1024, 576)),
        ("1K", "1:1", None, (1024, 1024)),
        ("2K", "16:9", None, (2048, 1152)),
        ("4k", "16:9", None, (3840, 2160)),
        ("4K", "9:16", None, (2160, 3840)),
        ("480p", "21:9", None, (1120, 480)),
        (None, None, "641x361", (642, 362)),  # odd sizes round up to even
        (None, None, " 1024 X 576 ", (1024, 576)),
    ],
)
def test_resolve_dimensions(
    resolution: str | None, aspect: str | None, size: str | None, expected: tuple[int, int]
) -> None:
    assert resolve_dimensions(resolution, aspect, size) == expected


@pytest.mark.parametrize(
    ("resolution", "aspect", "size"),
    [
        (None, None, "1280"),
        (None, None, "axb"),
        (None, None, "1280x720x3"),
        (None, None, "8x8"),  # too small
        (None, None, "10000x720"),  # too large
        ("999p", None, None),
        ("720p", "wide", None),
        ("720p", "16:0", None),
        ("720p", "100:1", None),
    ],
)
def test_resolve_dimensions_errors(resolution: str | None, aspect: str | None, size: str | None) -> None:
    with pytest.raises(ValueError):
        resolve_dimensions(resolution, aspect, size)


def test_odd_size_rendered_even(tmp_path: Path) -> None:
    result = render_to_file(spec(width=161, height=91, duration_seconds=0.5), tmp_path / "odd.mp4")
    assert (result.width, result.height) == (162, 92)
    info = probe(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (162, 92)


def test_frame_count_and_duration(tmp_path: Path) -> None:
    result = render_to_file(spec(duration_seconds=1.3, fps=10), tmp_path / "d.mp4")
    assert result.frames == 13
    assert probe(tmp_path / "d.mp4").duration_seconds == pytest.approx(1.3, abs=0.1)


def test_first_frame_image(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (255, 0, 0)).save(buf, format="PNG")
    out = tmp_path / "red.mp4"
    render_to_file(spec(width=320, height=240, first_frame=buf.getvalue()), out)
    rgb = first_frame_rgb(out).astype(int)
    red = (rgb[..., 0] > 180) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    assert red.mean() > 0.6


def test_first_frame_invalid(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        render_to_file(spec(first_frame=b"not an image"), tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


def test_progress_monotonic(tmp_path: Path) -> None:
    seen: list[int] = []
    render_to_file(spec(duration_seconds=2.0, fps=24), tmp_path / "p.mp4", progress=seen.append)
    assert seen[0] == 0 and seen[-1] == 100
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert all(0 <= p <= 100 for p in seen)
    assert max(b - a for a, b in itertools.pairwise(seen)) <= 5


def test_should_stop_cancels_and_cleans_up(tmp_path: Path) -> None:
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    with pytest.raises(RenderCancelled):
        render_to_file(spec(duration_seconds=2.0), tmp_path / "c.mp4", should_stop=stop)
    assert list(tmp_path.iterdir()) == []


def test_invalid_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        render_to_file(spec(duration_seconds=0), tmp_path / "x.mp4")
    with pytest.raises(ValueError):
        render_to_file(spec(fps=0), tmp_path / "x.mp4")


def test_long_and_empty_prompts(tmp_path: Path) -> None:
    long_prompt = "word " * 500 + "Supercalifragilisticexpialidocious" * 10
    render_to_file(spec(prompt=long_prompt, negative_prompt="blur " * 100), tmp_path / "long.mp4")
    render_to_file(spec(prompt="", width=16, height=16, duration_seconds=0.1), tmp_path / "tiny.mp4")
    assert probe(tmp_path / "tiny.mp4").width == 16


def test_thumbnail(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    render_to_file(spec(width=640, height=360, duration_seconds=2.0), video)
    thumb = make_thumbnail(video, tmp_path / "thumb.webp", max_width=320)
    assert thumb.mime_type in ("image/webp", "image/jpeg")
    assert Path(thumb.path).is_file()
    assert thumb.bytes == Path(thumb.path).stat().st_size
    with Image.open(thumb.path) as img:
        assert img.format in ("WEBP", "JPEG")
        assert img.size == (thumb.width, thumb.height) == (320, 180)

    small = make_thumbnail(video, tmp_path / "big.webp", max_width=2000)  # never upscales
    assert (small.width, small.height) == (640, 360)


def test_thumbnail_short_video(tmp_path: Path) -> None:
    video = tmp_path / "short.mp4"
    render_to_file(spec(width=180, height=320, duration_seconds=0.5), video)
    thumb = make_thumbnail(video, tmp_path / "s.webp", max_width=90)
    assert (thumb.width, thumb.height) == (90, 160)


def test_probe_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 500)
    with pytest.raises(MediaError):
        probe(bad)
    with pytest.raises(MediaError):
        make_thumbnail(bad, tmp_path / "t.webp")
    with pytest.raises(MediaError):
        probe(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError):
        probe(empty)


def test_probe_truncated(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    render_to_file(spec(), video)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[:200])
    with pytest.raises(MediaError):
        probe(cut)


@pytest.mark.parametrize(("width", "height"), [(480, 854), (480, 270), (642, 362)])
def test_heights_whose_half_is_odd_render(tmp_path, width: int, height: int) -> None:  # type: ignore[no-untyped-def]
    result = render_to_file(RenderSpec(prompt="odd chroma rows", width=width, height=height,
                                       duration_seconds=0.5, fps=8, seed=1), tmp_path / "odd.mp4")
    info = probe(result.path)
    assert (info.width, info.height) == (width, height)
