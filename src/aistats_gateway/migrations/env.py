"""Alembic environment: synchronous engine; a PostgreSQL advisory lock serialises concurrent starts."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from aistats_gateway import tables  # noqa: F401  (registers every table on Base.metadata)
from aistats_gateway.db.base import Base

MIGRATION_LOCK = 7_340_001


def run() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: sqlalchemy.url is not set")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        is_pg = conn.dialect.name == "postgresql"
        if is_pg:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
            conn.commit()
        try:
            context.configure(
                connection=conn,
                target_metadata=Base.metadata,
                render_as_batch=conn.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
        finally:
            if is_pg:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
                conn.commit()
    engine.dispose()


run()
