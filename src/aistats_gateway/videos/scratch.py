"""Scratch files of video jobs (local renders, ``.partial`` temporaries, download directories).

Invariants
----------
* A job's scratch files (``scratch/**/<job_id>-<n>.mp4`` and their hidden ``.partial`` temporaries)
  are removed when the job reaches a terminal state and when it is deleted (:func:`cleanup_job`).
* At start, :func:`sweep` removes what a crash left behind: ``.partial`` files and ``.dl-*``
  download directories untouched for ``older_than`` seconds (a live render keeps writing, so it is
  never that old), and scratch outputs of jobs that are finished, deleted or unknown.
* All file-system work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from aistats_gateway.videos.tables import TERMINAL, VideoJob

log = logging.getLogger("aistats_gateway.videos.scratch")
_JOB_FILE = re.compile(r"^\.?(video_[A-Za-z0-9]+)-\d+\.")


def _scratch_root(data_dir: Path) -> Path:
    return Path(data_dir) / "scratch"


def _job_of(path: Path) -> str | None:
    m = _JOB_FILE.match(path.name)
    return m[1] if m else None


def _remove_job_files(data_dir: Path, job_id: str) -> int:
    root = _scratch_root(data_dir)
    if not root.is_dir():
        return 0
    removed = 0
    for p in root.rglob("*"):
        if p.is_file() and _job_of(p) == job_id:
            p.unlink(missing_ok=True)
            removed += 1
    return removed


async def cleanup_job(data_dir: Path, job_id: str) -> int:
    return await asyncio.to_thread(_remove_job_files, data_dir, job_id)


def _candidates(data_dir: Path, older_than: float) -> tuple[list[Path], dict[str, list[Path]]]:
    """(stale temporaries and download dirs, {job_id: scratch files})."""
    now = time.time()
    stale: list[Path] = []
    by_job: dict[str, list[Path]] = {}
    for d in Path(data_dir).glob(".dl-*"):
        if d.is_dir() and now - d.stat().st_mtime >= older_than:
            stale.append(d)
    root = _scratch_root(data_dir)
    if root.is_dir():
        for p in root.rglob("*"):
            if not p.is_file():
                continue
            if p.name.endswith(".partial") and now - p.stat().st_mtime >= older_than:
                stale.append(p)
            elif (job := _job_of(p)) is not None and not p.name.endswith(".partial"):
                by_job.setdefault(job, []).append(p)
    return stale, by_job


def _remove(paths: list[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


async def sweep(sessions: Any, data_dir: Path, older_than: float) -> int:
    """Remove orphaned scratch files; returns how many paths were removed."""
    stale, by_job = await asyncio.to_thread(_candidates, data_dir, older_than)
    done: list[Path] = []
    if by_job:
        async with sessions() as s:
            rows = (await s.execute(select(VideoJob.id, VideoJob.status, VideoJob.deleted_at)
                                    .where(VideoJob.id.in_(list(by_job))))).all()
        live = {r[0] for r in rows if r[1] not in TERMINAL and r[2] is None}
        done = [p for job, paths in by_job.items() if job not in live for p in paths]
    await asyncio.to_thread(_remove, stale + done)
    if stale or done:
        log.info("swept scratch files", extra={"removed": len(stale) + len(done)})
    return len(stale) + len(done)


class ScratchHooks:
    """``RunnerContext.on_status`` hook: a terminal job's scratch files go."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)

    async def on_status(self, job_id: str, old: str, new: str) -> None:
        if new in TERMINAL:
            await cleanup_job(self.data_dir, job_id)
