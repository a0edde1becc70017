"""A real gateway for tests: its own database (SQLite file or a fresh PostgreSQL schema) and a
uvicorn server on 127.0.0.1 in a background thread, talked to over real HTTP."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from aistats_gateway.app import create_app
from aistats_gateway.db.engine import create_engine, session_factory
from aistats_gateway.http.server import CoalescingHttpToolsProtocol
from aistats_gateway.migrate import upgrade
from aistats_gateway.settings import Settings, load_settings

PG_URL = os.environ.get("AISTATS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgres")
KEEP_ALIVE_SECONDS = 75  # server side; above every test client's pool expiry


@dataclass
class Database:
    backend: str
    url: str
    schema: str | None = None

    def drop(self) -> None:
        if self.schema:
            with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def new_database(backend: str, data_dir: Path) -> Database:
    if backend == "sqlite":
        return Database(backend, f"sqlite+aiosqlite:///{data_dir / 'gateway.db'}")
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    return Database(backend, f"{PG_URL}{sep}options=-csearch_path%3D{schema}", schema)


def run_async(fn: Callable[..., Any], settings: Settings) -> Any:
    """Run ``await fn(sessions)`` on a private loop with a private engine."""

    async def main() -> Any:
        engine = create_engine(settings.db_url, pool_size=2)
        try:
            return await fn(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


class ServerThread:
    """uvicorn serving an ASGI app on an ephemeral 127.0.0.1 port in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        # Keep idle connections longer than any client here keeps them pooled (httpx and the openai SDK:
        # 5 s): with uvicorn's default of 5 s as well, a request sent on a connection idle for ~5 s races
        # the server closing it and fails with a connection reset.
        # The protocol ``serve`` uses (a response's head and body in one write), so every test runs it.
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", loop="asyncio",
                                http=CoalescingHttpToolsProtocol, timeout_keep_alive=KEEP_ALIVE_SECONDS)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@dataclass
class Gateway:
    backend: str
    settings: Settings
    db: Database
    server: ServerThread
    data_dir: Path
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def app(self) -> Any:
        return self.server.server.config.app

    def env(self) -> dict[str, str]:
        """Environment for a CLI subprocess pointed at the same database and secrets."""
        env = dict(os.environ)
        env.update({
            "AISTATS_DATA_DIR": str(self.data_dir),
            "AISTATS_DATABASE_URL": self.db.url,
            "AISTATS_KEY_PEPPER": self.settings.key_pepper or "",
            "AISTATS_SIGNING_SECRET": self.settings.signing_secret or "",
        })
        return env

    def create_key(self, name: str = "test", credits_usd: float = 0) -> str:
        from aistats_gateway.billing import accounts as service

        async def work(sessions: Any) -> Any:
            async with sessions() as s, s.begin():
                return await service.create_key(s, self.settings.pepper, name,
                                                credits_nanos=int(credits_usd * 1_000_000_000))

        return run_async(work, self.settings).key

    def revoke(self, key: str) -> None:
        from aistats_gateway.auth import keys, service

        parsed = keys.parse(key)
        assert parsed is not None

        async def work(sessions: Any) -> Any:
            async with sessions() as s, s.begin():
                return await service.revoke(s, parsed.key_id)

        assert run_async(work, self.settings)

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        c = httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)
        self._clients.append(c)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self.server.stop()
        self.db.drop()


@contextmanager
def running_gateway(backend: str, tmp: Path, **overrides: Any) -> Iterator[Gateway]:
    data_dir = tmp / f"data-{backend}-{secrets.token_hex(3)}"
    data_dir.mkdir(parents=True)
    db = new_database(backend, data_dir)
    # Tests make providers fail on purpose, many times in a row: keep routing's circuit breaker out of
    # their way unless a test asks for it (its own tests: tests/test_routing.py).
    overrides.setdefault("breaker_threshold", 1_000_000)
    settings = load_settings(
        data_dir=data_dir, database_url=db.url, key_pepper="test-pepper-" + secrets.token_hex(8),
        signing_secret="test-signing-" + secrets.token_hex(8), log_level="warning", **overrides,
    )
    upgrade(settings.db_url)
    app = create_app(settings)
    server = ServerThread(app).start()
    gw = Gateway(backend, settings, db, server, data_dir)
    try:
        yield gw
    finally:
        gw.close()
