"""Helpers shared by the hostile-client test modules: a gateway that may fetch from 127.0.0.1, a
local image server, the loop-lag metric, process memory and directory sizes."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from tests.support.gateway import Gateway, running_gateway

MODEL = "local/procedural-video"
SHORT = {"model": MODEL, "prompt": "a hostile test clip", "duration": 1, "resolution": "480p"}
TERMINAL = {"completed", "failed", "cancelled", "expired"}
#: A loop-lag sample above this is a stall (the budget is ~50 ms; the margin absorbs a loaded machine).
STALL_SECONDS = 0.5


@contextmanager
def hostile_gateway(backend: str, tmp: Path, **overrides: Any) -> Iterator[Gateway]:
    settings = {"fetch_allow_private": True, "webhook_allow_local": True, "webhook_retry_schedule": "0.2,0.2",
                **overrides}
    with running_gateway(backend, tmp, **settings) as gw:
        state = gw.app.state.gateway
        state.fetch_policy = dataclasses.replace(state.fetch_policy, schemes=frozenset({"http", "https"}))
        yield gw


def png(width: int = 32, height: int = 32, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def noise_png(width: int, height: int) -> bytes:
    """An incompressible PNG (random pixels): about width x height x 3 bytes."""
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def big_16bit_png(width: int, height: int) -> bytes:
    """A valid width x height 16-bit RGBA PNG of zeros: tiny on the wire, huge once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + width * 8)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


class ImageServer:
    """127.0.0.1 HTTP server: /img/<name> serves a registered body; /slow/<seconds> drips a PNG;
    /redirect?to=<location> answers 302. Counts every request."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.hits.append(self.path)
                path, _, query = self.path.partition("?")
                if path.startswith("/img/") and path[5:] in server.bodies:
                    body = server.bodies[path[5:]]
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif path.startswith("/slow/"):
                    seconds = float(path[6:])
                    body = png()
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.end_headers()
                    step = seconds / len(body)
                    for i in range(len(body)):
                        try:
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(step)
                elif path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", query[3:] if query.startswith("to=") else "")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            do_POST = do_GET  # webhook targets

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def lag_samples_above(client: httpx.Client, threshold: float = STALL_SECONDS) -> tuple[int, float]:
    """(samples of the loop-lag histogram above ``threshold``, largest lag so far) from /metrics."""
    text = client.get("/metrics").text
    count = float(re.search(r"^aistats_event_loop_lag_seconds_count (\S+)$", text, re.M)[1])  # type: ignore[index]
    below = 0.0
    for le, value in re.findall(r'^aistats_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M):
        if le != "+Inf" and float(le) == threshold:
            below = float(value)
    peak = float(re.search(r"^aistats_event_loop_lag_max_seconds (\S+)$", text, re.M)[1])  # type: ignore[index]
    return int(count - below), peak


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def wait(api: httpx.Client, video_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/v1/videos/{video_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in TERMINAL:
            return body
        assert time.monotonic() < deadline, f"{video_id} still {body['status']}"
        time.sleep(0.05)


def no_5xx(r: httpx.Response, what: str = "") -> httpx.Response:
    assert r.status_code < 500, (what, r.status_code, r.text[:500])
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}, err
    return r

