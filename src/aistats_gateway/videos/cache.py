"""Rendered JSON of finished jobs, for ``GET /v1/videos/{id}``.

A finished job without a webhook changes only by billing finalisation or deletion, both of which
bump its ``updated_at``. Each request still reads the row's (workspace, status, deleted_at,
updated_at) on the lean read path, so the database stays the truth in every process: a deleted job
is gone at once, a re-billed one re-rendered. The cached body is valid for the wall-clock second it
was rendered in, because signed links expire a whole number of seconds after that second; the answer
is byte for byte what rendering would give. Bounded (oldest entries dropped first).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from dataclasses import dataclass

from aistats_gateway.videos.tables import TERMINAL

MAX_ENTRIES = 4096


@dataclass(frozen=True)
class Stamp:
    """What a request reads to validate a cached body: the row's owner and version."""

    workspace_id: str
    status: str
    deleted: bool
    updated_at: dt.datetime | None


@dataclass(frozen=True)
class Entry:
    stamp: Stamp
    second: int
    base_url: str
    body: bytes


class RenderedJobs:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def cacheable(stamp: Stamp, has_webhook: bool) -> bool:
        return stamp.status in TERMINAL and not stamp.deleted and not has_webhook

    def get(self, video_id: str, stamp: Stamp, base_url: str) -> bytes | None:
        entry = self._items.get(video_id)
        if entry is None or entry.stamp != stamp or entry.base_url != base_url or entry.second != int(time.time()):
            self.misses += 1
            return None
        self.hits += 1
        return entry.body

    def put(self, video_id: str, stamp: Stamp, base_url: str, second: int, body: bytes) -> None:
        self._items[video_id] = Entry(stamp, second, base_url, body)
        self._items.move_to_end(video_id)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
