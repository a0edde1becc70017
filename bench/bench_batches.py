"""Benchmark of a gateway-mode chat batch: rows/s, wall time, the server's peak RSS, database bytes per row.

    .venv/bin/python bench/bench_batches.py                       # 10,000 rows, SQLite, one process
    .venv/bin/python bench/bench_batches.py --rows 2000 --concurrency 32
    .venv/bin/python bench/bench_batches.py --backend postgres --workers 2   # serve + two workers (procrastinate)
    .venv/bin/python bench/bench_batches.py --rows 3000 --profile /tmp/serve.txt   # py-spy on the serve process

A real ``aistats-gateway serve`` process (and, on PostgreSQL, a ``worker``) runs the batch against
``bench/mock_upstream.py`` (its own process, fixed replies) standing in for OpenAI. The batch is
uploaded as a JSONL file, created, and polled until it ends; the wall time runs from the create to
``completed``. RSS is the gateway processes' peak (``VmHWM``); on SQLite the database size is the
file's, on PostgreSQL the schema's tables and indexes.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from mock_upstream import spawn  # noqa: E402  (bench/ is put on the path just above)

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--concurrency", type=int, default=64, help="AISTATS_JOB_CONCURRENCY of each process")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--batch-concurrency", type=int, default=None,
                    help="AISTATS_BATCHES_CONCURRENCY (rows of the batch in a call at once, per process)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes on PostgreSQL")
    ap.add_argument("--profile", metavar="FILE", help="py-spy (raw stacks) of serve (PostgreSQL: of the last worker)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="aistats-bench-batches-"))
    mock, mock_port = spawn()
    schema = "bench_batches_" + secrets.token_hex(4)
    db_url = (f"sqlite+aiosqlite:///{tmp}/gateway.db" if args.backend == "sqlite"
              else f"{PG}?options=-csearch_path%3D{schema}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISTATS_")}
    env.update({"AISTATS_DATA_DIR": str(tmp), "AISTATS_DATABASE_URL": db_url, "AISTATS_KEY_PEPPER": "bench",
                "AISTATS_SIGNING_SECRET": "bench", "AISTATS_LOG_LEVEL": "warning",
                "AISTATS_JOB_CONCURRENCY": str(args.concurrency), "AISTATS_JOB_WORKSPACE_CONCURRENCY": "0",
                "AISTATS_PROVIDER_OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
                "AISTATS_PROVIDER_OPENAI_API_KEY": "sk-bench", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"})
    if args.batch_concurrency:
        env["AISTATS_BATCHES_CONCURRENCY"] = str(args.batch_concurrency)
    procs: list[subprocess.Popen[bytes]] = []
    if args.backend == "postgres":
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc",
                        f"CREATE SCHEMA {schema}"], check=True)
        env["AISTATS_RUN_WORKER"] = "false"
    try:
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "aistats_gateway.cli", "serve", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(server)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the gateway did not start")
            time.sleep(0.2)
        if args.backend == "postgres":
            for _ in range(args.workers):
                procs.append(subprocess.Popen([sys.executable, "-m", "aistats_gateway.cli", "worker"], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if args.backend == "postgres":  # the workers' start-up is not the batch's work: wait for it
            q = f"SELECT count(*) FROM {schema}.procrastinate_workers"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                got = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc", q],
                                     capture_output=True, text=True).stdout.strip()
                if got.isdigit() and int(got) >= args.workers:
                    break
                time.sleep(0.3)
            else:
                raise SystemExit("the workers did not start")
        out = subprocess.run([sys.executable, "-m", "aistats_gateway.cli", "keys", "create", "--name", "bench",
                              "--credits", "100000", "--json"], env=env, capture_output=True, text=True, check=True)
        key = json.loads(out.stdout)["key"]
        c = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        lines = b"".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                     "body": {"model": "openai/gpt-4o-mini", "max_tokens": 20, "messages": [
                                         {"role": "user", "content": f"row {i}: say hello"}]}}).encode() + b"\n"
                         for i in range(args.rows))
        f = c.post("/v1/files", files={"file": ("rows.jsonl", lines)}, data={"purpose": "batch"})
        f.raise_for_status()
        spy = None
        if args.profile:
            spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw",
                                    "-r", "100", "-o", args.profile, "--pid", str(procs[-1].pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"# before: {load_line()}", file=sys.stderr)
        cpu0s = [cpu_seconds(p.pid) for p in procs]
        t0 = time.monotonic()
        r = c.post("/v1/batches", json={"input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions",
                                        "completion_window": "24h"})
        r.raise_for_status()
        created_s = time.monotonic() - t0
        bid = r.json()["id"]
        while True:
            b = c.get(f"/v1/batches/{bid}").json()
            if b["status"] in ("completed", "failed", "expired", "cancelled"):
                break
            if time.monotonic() - t0 > args.timeout:
                raise SystemExit(f"not finished after {args.timeout} s: {b['request_counts']}")
            time.sleep(0.2)
        wall = time.monotonic() - t0
        cpus = [cpu_seconds(p.pid) - c0 for p, c0 in zip(procs, cpu0s, strict=True)]
        cpu = sum(cpus)
        print("# CPU seconds per process (serve first): " + ", ".join(f"{c:.1f}" for c in cpus), file=sys.stderr)
        print(f"# after: {load_line()}", file=sys.stderr)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        rss = sum(peak_rss_mb(p.pid) for p in procs)
        if args.backend == "sqlite":
            db_bytes = sum(p.stat().st_size for p in tmp.glob("gateway.db*"))
        else:
            q = (f"SELECT sum(pg_total_relation_size(quote_ident(schemaname)||'.'||quote_ident(tablename))) "
                 f"FROM pg_tables WHERE schemaname='{schema}'")
            db_bytes = int(subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc", q],
                                          capture_output=True, text=True, check=True).stdout.strip() or 0)
        procs_label = args.backend if args.backend == "sqlite" else f"postgres (serve + {args.workers} workers)"
        print(f"| {procs_label} | {args.rows:,} | {args.batch_concurrency or 'default'} | {b['status']} "
              f"({b['request_counts']['completed']:,} ok) | {created_s:.2f} s | {wall:.1f} s | "
              f"{args.rows / wall:,.0f} | {cpu * 1000 / args.rows:.2f} ms | {rss:.0f} MB | "
              f"{db_bytes / args.rows:,.0f} B |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        mock.terminate()
        mock.wait()
        if args.backend == "postgres":
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc",
                            f"SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE"],
                           check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
