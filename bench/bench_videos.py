"""All video benchmarks, one after the other (each its own gateway and same-run baseline).

    .venv/bin/python bench/bench_videos.py [--quick] [--backend postgres]

Runs ``videos_read.py`` (GET /v1/videos/{id} vs /healthz), ``videos_content.py`` (downloads vs static
servers) and ``videos_create.py`` (create overhead vs the provider call, with jobs in flight); every
argument is passed on. The job engine's idle cost is ``jobs_idle.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    worst = 0
    for script in ("videos_read.py", "videos_content.py", "videos_create.py"):
        print(f"==> {script}", flush=True)
        worst = max(worst, subprocess.call([sys.executable, str(HERE / script), *sys.argv[1:]]))
    sys.exit(worst)
