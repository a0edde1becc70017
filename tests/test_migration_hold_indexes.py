"""Migration 0009: the per-call billing rows carry fewer indexes, and the sweep's query still uses one.

On SQLite and PostgreSQL: after ``upgrade`` the holds have one partial index over the rows still
``held`` (no ``ix_holds_state`` / ``ix_holds_ref``) and ledger entries no index on ``hold_id``; the
billing sweep's query is answered through the partial index; ``downgrade`` to 0008 restores the old
indexes and ``upgrade`` applies again.
"""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect

from aistats_gateway.db.engine import sync_url
from aistats_gateway.migrate import alembic_config, upgrade
from tests.support.gateway import Database


def _indexes(url: str) -> dict[str, set[str]]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            return {t: {ix["name"] for ix in insp.get_indexes(t) if ix["name"]} for t in ("holds", "ledger_entries")}
    finally:
        engine.dispose()


def _sweep_plan(db: Database) -> str:
    sql = "SELECT ref FROM holds WHERE state = 'held' AND ref_kind = 'video' AND ref IN ('a', 'b')"
    engine = create_engine(sync_url(db.url))
    try:
        with engine.connect() as conn:
            if db.backend == "sqlite":
                return " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            conn.exec_driver_sql("SET enable_seqscan = off")
            return " ".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + sql))
    finally:
        engine.dispose()


def test_upgrade_replaces_the_hold_indexes(database: Database) -> None:
    ix = _indexes(database.url)
    assert "ix_holds_held" in ix["holds"] and "ix_holds_key_created" in ix["holds"]
    assert not {"ix_holds_state", "ix_holds_ref"} & ix["holds"]
    assert "ix_ledger_entries_hold_id" not in ix["ledger_entries"]
    assert "ix_ledger_entries_workspace_id" in ix["ledger_entries"]
    assert "ix_holds_held" in _sweep_plan(database)


def test_downgrade_restores_them_and_upgrade_applies_again(database: Database) -> None:
    command.downgrade(alembic_config(database.url), "0008")
    ix = _indexes(database.url)
    assert {"ix_holds_state", "ix_holds_ref"} <= ix["holds"] and "ix_holds_held" not in ix["holds"]
    assert "ix_ledger_entries_hold_id" in ix["ledger_entries"]
    upgrade(database.url)
    assert "ix_holds_held" in _indexes(database.url)["holds"]
