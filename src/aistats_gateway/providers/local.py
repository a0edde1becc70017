"""The built-in ``local`` provider: renders a real H.264 MP4 on this machine (no key, no network).

``submit`` only accepts the job. The render happens in ``poll`` (in a worker thread), which reports
progress as it goes and returns the finished files. A render interrupted by a crash is simply done
again on resume; the same seed gives the same bytes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from aistats_gateway.media import render
from aistats_gateway.providers import registry
from aistats_gateway.providers.base import (
    VIDEO,
    CallContext,
    OutputRef,
    Polled,
    ProviderError,
    Submitted,
    VideoRequest,
)

FPS = 24


class LocalVideo:
    provider_id = "local"
    can_cancel = True
    renders_locally = True  # costs this machine's CPU: create bounds it (videos.admission.check_render_cost)
    poll_interval = 0.0
    max_poll_interval = 1.0
    deadline_seconds = 3600.0
    #: A render that hits a full disk is retried this many times, this far apart, then fails.
    disk_full_attempts = 3
    disk_full_retry_seconds = 10.0

    def __init__(self) -> None:
        self._disk_failures: dict[str, int] = {}

    def _scratch(self, ctx: CallContext) -> Path:
        if ctx.data_dir is None:
            raise ProviderError("unavailable", "the local renderer needs a data directory", code="no_data_dir")
        path = ctx.data_dir / "scratch" / "local"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def submit(self, request: VideoRequest, ctx: CallContext) -> Submitted:
        if request.width is None or request.height is None or not request.duration:
            raise ProviderError("client", "local renderer needs a size and a duration", code="invalid_request")
        return Submitted(native_id=request.job_id, status="queued", poll_after=0.0)

    async def poll(self, native_id: str, ctx: CallContext) -> Polled:
        request: VideoRequest = ctx.extra["request"]
        cancel: threading.Event = ctx.extra.get("cancel_event") or threading.Event()
        loop = asyncio.get_running_loop()
        count = max(1, request.sample_count)
        base_seed = request.seed if request.seed is not None else int(
            hashlib.sha256(request.job_id.encode()).hexdigest()[:8], 16)
        first_frame = next((i.content for i in request.images if i.role == "first_frame"), None)
        last = [-1]
        pending: set[concurrent.futures.Future[None]] = set()

        def report(index: int, pct: int) -> None:  # called from the render thread
            overall = (index * 100 + pct) // count
            if ctx.progress is not None and overall >= last[0] + 5:
                last[0] = overall
                coro = ctx.progress(min(overall, 99))
                try:
                    pending.add(asyncio.run_coroutine_threadsafe(coro, loop))
                except RuntimeError:  # the loop is gone (shutting down): drop the update
                    coro.close()

        try:
            return await self._render_all(request, native_id, ctx, count, base_seed, first_frame, cancel, report)
        except asyncio.CancelledError:
            cancel.set()  # stop the render thread too; a resumed job renders again
            for f in pending:
                f.cancel()
            raise
        finally:
            if pending and not cancel.is_set():
                # Let the progress updates land before the caller moves the job on.
                await asyncio.gather(*(asyncio.wrap_future(f) for f in pending), return_exceptions=True)

    async def _render_all(self, request: VideoRequest, native_id: str, ctx: CallContext, count: int, base_seed: int,
                          first_frame: bytes | None, cancel: threading.Event, report: Any) -> Polled:
        outputs = []
        for i in range(count):
            spec = render.RenderSpec(
                prompt=request.prompt, width=request.width or 1280, height=request.height or 720,
                duration_seconds=float(request.duration or 4), fps=FPS, seed=(base_seed + i) % 2**32,
                negative_prompt=request.negative_prompt, first_frame=first_frame,
            )
            path = self._scratch(ctx) / f"{native_id}-{i}.mp4"

            def on_progress(pct: int, index: int = i) -> None:
                report(index, pct)

            try:
                result = await asyncio.to_thread(render.render_to_file, spec, path, on_progress, cancel.is_set)
            except render.RenderCancelled:
                return Polled(status="cancelled", error_code="cancelled", error_message="cancelled while rendering")
            except ValueError as e:
                return Polled(status="failed", error_code="invalid_request", error_message=str(e))
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                failures = self._disk_failures.get(native_id, 0) + 1
                self._disk_failures[native_id] = failures
                if failures >= self.disk_full_attempts:
                    self._disk_failures.pop(native_id, None)
                    return Polled(status="failed", error_code="insufficient_storage",
                                  error_message=f"the disk is full: the render failed {failures} times ({e})")
                raise ProviderError("upstream", f"the disk is full ({e}); retrying", code="insufficient_storage",
                                    retry_after=self.disk_full_retry_seconds) from None
            outputs.append(OutputRef(index=i, handle=str(path), mime_type="video/mp4",
                                     duration_seconds=result.duration_seconds))
        return Polled(status="completed", progress=100, outputs=tuple(outputs),
                      usage={"seconds": float(request.duration or 4), "count": count})

    async def open_output(self, native_id: str, ref: OutputRef, ctx: CallContext) -> AsyncIterator[bytes]:
        path = Path(ref.handle or "")
        opened = await asyncio.to_thread(_open_if_file, path)  # stat + open are disk calls: off the loop
        if opened is None:
            raise ProviderError("not_found", f"rendered file {path.name} is gone", code="output_missing")
        with opened as f:
            while True:
                chunk = await asyncio.to_thread(f.read, 1024 * 1024)
                if not chunk:
                    break
                yield chunk

    async def cleanup(self, native_id: str, ctx: CallContext) -> None:
        await asyncio.to_thread(self._remove_renders, native_id, ctx)  # mkdir, glob, unlink: off the loop

    def _remove_renders(self, native_id: str, ctx: CallContext) -> None:
        for p in self._scratch(ctx).glob(f"{native_id}-*.mp4"):
            p.unlink(missing_ok=True)

    async def cancel(self, native_id: str, ctx: CallContext) -> bool:
        return True  # the runner's cancel event stops a render in progress


def _open_if_file(path: Path) -> BinaryIO | None:
    """The rendered file opened for reading, or None when it is no longer a regular file (blocking)."""
    return path.open("rb") if path.is_file() else None


adapter = LocalVideo()
registry.register("local", VIDEO, adapter, needs_credentials=False)
