"""The server's process freezes its startup objects out of the cyclic GC (``create_app(freeze_gc=True)``,
what ``serve`` builds); an app built without it (tests, embedding) leaves the GC as it was. Each case
runs in its own interpreter: a freeze is process-wide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import asyncio, gc, sys
from aistats_gateway.app import create_app
from aistats_gateway.migrate import upgrade
from aistats_gateway.settings import load_settings

settings = load_settings()
upgrade(settings.db_url)
app = create_app(settings, freeze_gc=sys.argv[1] == "1")

async def main() -> None:
    async with app.router.lifespan_context(app):
        print(gc.get_freeze_count(), gc.isenabled())

asyncio.run(main())
"""


@pytest.mark.parametrize("freeze", [True, False])
def test_serve_freezes_the_startup_objects_and_other_apps_do_not(freeze: bool, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISTATS_")}
    env.update({"AISTATS_DATA_DIR": str(tmp_path), "AISTATS_LOG_LEVEL": "warning"})
    r = subprocess.run([sys.executable, "-c", SCRIPT, "1" if freeze else "0"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    frozen, enabled = r.stdout.split()
    assert enabled == "True"  # the cyclic GC still runs, for what is created from then on
    assert (int(frozen) > 10_000) if freeze else (int(frozen) == 0)
