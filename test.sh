#!/usr/bin/env bash
# Run the whole test suite (SQLite and PostgreSQL). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/scripts/bootstrap.sh"
if ! .venv/bin/python -c "import psycopg; psycopg.connect('host=127.0.0.1 port=5432 dbname=test user=postgres', connect_timeout=3).close()" 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
    for _ in $(seq 1 30); do
      .venv/bin/python -c "import psycopg; psycopg.connect('host=127.0.0.1 port=5432 dbname=test user=postgres', connect_timeout=2).close()" 2>/dev/null && break
      sleep 1
    done
  fi
fi
# Lint and types first, failing fast (the configuration is in pyproject.toml).
echo "ruff check src tests bench" >&2
.venv/bin/ruff check src tests bench
echo "mypy --strict (files = src)" >&2
.venv/bin/mypy
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
