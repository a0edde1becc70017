"""What ``serve --remember`` (as ``./start.sh`` runs it) was started with, for the later CLI commands.

``keys`` and ``credits`` must use the server's data directory (its SQLite file and generated key
pepper live there) and database. ``serve --remember`` writes them to
``<environment>/aistats-gateway-serve.json`` (the virtualenv the command runs from, mode 0600);
another command given neither ``--data-dir``/``--database-url`` nor ``AISTATS_DATA_DIR``/
``AISTATS_DATABASE_URL`` uses the recorded values and says so on stderr. A database URL with a
password is recorded masked only: such a command is told to set ``AISTATS_DATABASE_URL`` instead.
``AISTATS_SERVE_RECORD`` names another file. Nothing is recorded without ``--remember``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Record:
    data_dir: Path
    database_url: str | None  # None: SQLite in data_dir
    masked_database_url: str | None  # set when database_url had a password (then database_url is None)
    path: Path  # the record file


def record_path() -> Path:
    return Path(os.environ.get("AISTATS_SERVE_RECORD") or Path(sys.prefix) / "aistats-gateway-serve.json")


def _has_password(url: str) -> bool:
    if "://" not in url or "@" not in url:
        return False
    creds = url.split("://", 1)[1].rsplit("@", 1)[0]
    return ":" in creds


def remember(data_dir: Path, database_url: str | None, masked: str) -> Path | None:
    """Write the record; the file, or None when it cannot be written (the caller says so)."""
    path = record_path()
    secret = database_url is not None and _has_password(database_url)
    doc = {"data_dir": str(data_dir.resolve()), "database_url": None if secret else database_url,
           "masked_database_url": masked if secret else None}
    try:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def recall() -> Record | None:
    """The record, or None when there is none (or it is unreadable)."""
    path = record_path()
    try:
        doc = json.loads(path.read_text())
        return Record(Path(doc["data_dir"]), doc.get("database_url"), doc.get("masked_database_url"), path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
