"""Run a fake provider app in a background thread on 127.0.0.1 (ephemeral port).

    with RunningFake("openai", render_seconds=0.5) as fake:        # or RunningFake(app)
        client = OpenAI(api_key="sk-test", base_url=fake.base_url)  # http://127.0.0.1:PORT/v1
        fake.state.fail_next_creates = 1                            # app.state.fake
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette

# The gateway pools upstream connections for 30 s (http/client.py); uvicorn closes idle ones after 5 s by
# default, so a poll sent on a connection idle for about 5 s could race the close. Outlive the pool.
KEEP_ALIVE_SECONDS = 75


class _ThreadedServer(uvicorn.Server):
    """uvicorn.Server that never touches signal handlers (it runs off the main thread)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    async def main_loop(self) -> None:  # tick every 10 ms (not 100 ms) so stop() returns sooner
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.01)


class RunningFake:
    def __init__(self, app: Starlette | str, *, prefix: str = "/v1", startup_timeout: float = 10.0,
                 **factory_kwargs: Any) -> None:
        if isinstance(app, str):
            from . import FAKES

            app = FAKES[app](**factory_kwargs)
        elif factory_kwargs:
            raise TypeError("factory kwargs are only accepted with a fake name")
        self.app = app
        self.prefix = prefix
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._server: _ThreadedServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> Any:
        return self.app.state.fake

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("fake is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    def start(self) -> RunningFake:
        if self._thread is not None:
            raise RuntimeError("already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="auto", timeout_graceful_shutdown=1,
                                timeout_keep_alive=KEEP_ALIVE_SECONDS)
        self._server = _ThreadedServer(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"fake-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake server failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> RunningFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
