"""A webhook receiver on 127.0.0.1 that records each delivery's raw body and headers (tests only)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.gateway import ServerThread


@dataclass(frozen=True)
class Delivery:
    body: bytes  # exactly the bytes received
    headers: dict[str, str]  # lower-case names
    received_at: float  # unix seconds

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    """Answers 500 to the first ``fail_first`` deliveries, then 204."""

    def __init__(self, fail_first: int = 0) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()

        async def hook(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.deliveries.append(Delivery(body, {k.lower(): v for k, v in request.headers.items()}, time.time()))
                n = len(self.deliveries)
            return Response(status_code=500 if n <= fail_first else 204)

        self.server = ServerThread(Starlette(routes=[Route("/hook", hook, methods=["POST"])])).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/hook"

    def for_video(self, video_id: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.event["data"]["id"] == video_id]

    def wait_for(self, video_id: str, event_type: str, timeout: float = 30) -> Delivery:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for d in self.for_video(video_id):
                if d.event["type"] == event_type:
                    return d
            time.sleep(0.05)
        got = [d.event["type"] for d in self.for_video(video_id)]
        raise AssertionError(f"no {event_type} delivery for {video_id} (got {got})")

    def stop(self) -> None:
        self.server.stop()
