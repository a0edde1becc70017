"""Probe video files and make thumbnails with PyAV.

Works on any file FFmpeg can demux (our MP4s, provider outputs from OpenAI,
Veo, ...). Every failure to read a file is raised as MediaError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image, features

THUMBNAIL_AT_SECONDS = 1.0
MAX_DECODED_FRAMES = 2000  # safety cap while looking for the thumbnail frame

# FFmpeg demuxer name -> MIME type. The mov/mp4 demuxer is refined by brand below.
MIME_BY_FORMAT = {
    "matroska": "video/x-matroska",
    "webm": "video/webm",
    "avi": "video/x-msvideo",
    "mpegts": "video/mp2t",
    "gif": "image/gif",
}


class MediaError(Exception):
    """The file is missing, empty, corrupt, or has no decodable video stream."""


@dataclass(frozen=True)
class MediaInfo:
    mime_type: str
    width: int
    height: int
    duration_seconds: float
    fps: float
    codec: str
    frames: int | None
    bytes: int


@dataclass(frozen=True)
class ThumbInfo:
    path: str
    mime_type: str
    width: int
    height: int
    bytes: int


def open_video(path: str | os.PathLike[str]) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    file = Path(path)
    if not file.is_file():
        raise MediaError(f"{file}: no such file")
    if file.stat().st_size == 0:
        raise MediaError(f"{file}: file is empty")
    try:
        container = av.open(str(file), mode="r", metadata_errors="replace")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(f"{file}: not a readable media file ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise MediaError(f"{file}: no video stream")
    return container, container.streams.video[0]


def mime_type_for(container: av.container.InputContainer, path: Path) -> str:
    names = set(container.format.name.split(","))
    if "mp4" in names or "mov" in names:
        brand = str(container.metadata.get("major_brand", "")).strip()
        if brand == "qt" or (not brand and path.suffix.lower() == ".mov"):
            return "video/quicktime"
        return "video/mp4"
    if "webm" in names and path.suffix.lower() != ".mkv":
        return "video/webm"
    for name in names:
        if name in MIME_BY_FORMAT:
            return MIME_BY_FORMAT[name]
    return "application/octet-stream"


def stream_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return 0.0


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Measure a video file: size, duration, fps and codec as read by PyAV.

    width/height are the display size (swapped for ±90° rotation metadata).

    The first frame is decoded too, so a file whose header parses but whose
    video data is broken raises MediaError instead of being reported as fine.
    """
    file = Path(path)
    container, stream = open_video(file)
    try:
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, ValueError) as exc:
            raise MediaError(f"{file}: video data cannot be decoded ({exc})") from exc
        if first is None:
            raise MediaError(f"{file}: video stream has no frames")
        width, height = ctx.width or first.width, ctx.height or first.height
        if first.rotation % 180:  # display is rotated by ±90°: report what a player shows
            width, height = height, width
        return MediaInfo(
            mime_type=mime_type_for(container, file),
            width=width,
            height=height,
            duration_seconds=round(stream_duration(container, stream), 6),
            fps=round(float(rate), 6) if rate else 0.0,
            codec=ctx.name,
            frames=stream.frames or None,
            bytes=file.stat().st_size,
        )
    finally:
        container.close()


def pick_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> av.VideoFrame:
    """The frame nearest THUMBNAIL_AT_SECONDS, or the first frame for short videos."""
    duration = stream_duration(container, stream)
    target = THUMBNAIL_AT_SECONDS if duration > THUMBNAIL_AT_SECONDS else 0.0
    if target > 0 and stream.time_base:
        try:
            start = stream.start_time or 0
            container.seek(start + int(target / stream.time_base), stream=stream, backward=True)
        except av.FFmpegError:
            container.seek(0)
    best: av.VideoFrame | None = None
    best_gap = float("inf")
    for count, frame in enumerate(container.decode(stream)):
        t = frame.time if frame.time is not None else 0.0
        gap = abs(t - target)
        if gap < best_gap:
            best, best_gap = frame, gap
        if t >= target or count >= MAX_DECODED_FRAMES:
            break
    if best is None:
        raise MediaError("video stream has no decodable frames")
    return best


def make_thumbnail(
    video_path: str | os.PathLike[str], out_path: str | os.PathLike[str], max_width: int = 640
) -> ThumbInfo:
    """Write a WebP thumbnail (JPEG if Pillow lacks WebP) no wider than max_width.

    The returned path is authoritative: on the JPEG fallback an ``.webp``
    suffix of out_path is replaced by ``.jpg``. Rotation metadata and
    non-square pixels are applied so the thumbnail has the display aspect.
    """
    if max_width < 1:
        raise ValueError("max_width must be positive")
    source = Path(video_path)
    container, stream = open_video(source)
    try:
        try:
            frame = pick_frame(container, stream)
            image = frame.to_image()
            rotation = frame.rotation
        except (av.FFmpegError, ValueError) as exc:
            raise MediaError(f"{source}: video data cannot be decoded ({exc})") from exc
        sar = stream.sample_aspect_ratio
    finally:
        container.close()
    if sar and sar.numerator > 0 and sar.denominator > 0 and sar != 1:
        image = image.resize((max(1, round(image.width * sar)), image.height), Image.Resampling.BILINEAR)
    if rotation % 360:
        image = image.rotate(rotation, expand=True)
    if image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        image = image.resize((max_width, height), Image.Resampling.LANCZOS)

    out = Path(out_path)
    if features.check("webp"):
        fmt, mime, options = "WEBP", "image/webp", {"quality": 80, "method": 4}
    else:
        fmt, mime, options = "JPEG", "image/jpeg", {"quality": 85, "optimize": True}
        if out.suffix.lower() == ".webp":
            out = out.with_suffix(".jpg")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        image.save(tmp, format=fmt, **options)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ThumbInfo(path=str(out), mime_type=mime, width=image.width, height=image.height, bytes=out.stat().st_size)
