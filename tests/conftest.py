"""Shared fixtures. Every backend-dependent test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aistats_gateway.migrate import upgrade
from tests.support.gateway import BACKENDS, Database, Gateway, new_database, running_gateway


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(request.param, tmp_path_factory.mktemp("gw")) as gw:
        yield gw


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh migrated database (SQLite file or PostgreSQL schema), dropped afterwards."""
    db = new_database(request.param, tmp_path)
    upgrade(db.url)
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.create_key("module key", credits_usd=100)


@pytest.fixture(scope="module")
def api(gateway: Gateway, key: str):  # type: ignore[no-untyped-def]
    """An httpx client authenticated with the module's key."""
    return gateway.client(key)


@pytest.fixture()
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path
