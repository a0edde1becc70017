"""Benchmark of ``GET /v1/videos/{id}`` against a real ``aistats-gateway serve`` process.

    .venv/bin/python bench/videos_read.py                       # SQLite
    .venv/bin/python bench/videos_read.py --backend postgres    # a fresh schema in the test database
    .venv/bin/python bench/videos_read.py --quick               # small counts, under a minute

1. ``GET /v1/videos/{id}`` of a completed job (local model, 2 s 480p) at concurrency 1 and under a
   closed-loop load (``wrk``, a Lua script adds the Authorization header; without wrk a Python asyncio
   generator in a separate process), against ``GET /healthz`` on the same server, in the same run, as
   the baseline; the target is >= 0.5x healthz at 64 connections.
   1b. the pieces of that request timed in-process (a separate process on the same database, no HTTP):
   the whole app through ASGI, the same with auth and DB reads stubbed, the key lookup, the job
   read, rendering, logging, metrics. ``--profile`` adds a py-spy profile of the server under load.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import time
from collections import Counter
from typing import Any

from _common import (
    HOST,
    LOCAL_MODEL,
    PROMPT,
    Bench,
    Conn,
    CpuMeter,
    Gateway,
    Load,
    Procs,
    Report,
    create_video,
    load_python,
    load_wrk,
    log,
    mute_log_streams,
    run,
    run_in_subprocess,
    table,
    wait_completed,
)

TARGET_RATIO = 0.5  # GET /v1/videos/{id} of a completed job vs /healthz, 64 connections

# ---- 1. GET /v1/videos/{id} --------------------------------------------------------------------------


def bench_get(args: argparse.Namespace, gw: Gateway, auth: dict[str, str], report: Report, tmp: Path,
              use_wrk: bool) -> str:
    t = time.perf_counter()
    job = create_video(gw, auth, {"model": LOCAL_MODEL, "prompt": PROMPT, "seconds": 2, "resolution": "480p"})
    obj = wait_completed(gw, auth, job["id"], timeout=180)
    log(f"  small video {obj['id']} completed in {time.perf_counter() - t:.1f}s "
        f"({obj['size']}, {obj['outputs'][0]['bytes'] / 1e3:,.0f} kB)")
    video_path = f"/v1/videos/{obj['id']}"
    conn = Conn(gw.port)
    try:
        status, _, body = conn.request("GET", video_path, auth)
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"GET {video_path} answered {status}")
    log(f"  GET {video_path}: {len(body):,} bytes of JSON")

    def run(path: str, headers: dict[str, str], conc: int, seconds: float | None = None) -> Load:
        if use_wrk:
            return load_wrk(gw.port, path, headers, conc=conc, threads=1 if conc == 1 else args.threads,
                            seconds=seconds or args.duration, tmp=tmp)
        return load_python(gw.port, path, headers, conc=conc, seconds=seconds or args.duration,
                           max_requests=args.max_requests)

    # warm up (connections, the DB pool, statement caches, the key row in the page cache)
    run(video_path, auth, args.connections, seconds=1)
    for conc in (1, args.connections):
        with CpuMeter(gw.pid) as base_cpu:
            base = run("/healthz", {}, conc)
        log(f"  healthz c={conc}: {base.rps:,.0f} req/s (server CPU {base_cpu.server:.0f}%)")
        with CpuMeter(gw.pid) as vid_cpu:
            vid = run(video_path, auth, conc)
        log(f"  video   c={conc}: {vid.rps:,.0f} req/s (server CPU {vid_cpu.server:.0f}%)")
        ceiling = " (the generator's own ceiling)" if not use_wrk else ""
        report.add("1.", f"GET /healthz{ceiling}", base, conc, compare="baseline", cpu=base_cpu)
        met = ""
        if conc == args.connections:
            ratio = vid.rps / base.rps if base.rps else 0.0
            verdict = "MET" if ratio >= TARGET_RATIO else "NOT met"
            met = f"; target >= {TARGET_RATIO}x healthz {verdict}"
            report.notes.append(
                f"GET /v1/videos/{{id}} at {conc} connections: {vid.rps:,.0f} req/s "
                f"({ratio:.2f}x healthz {base.rps:,.0f} req/s, same process, same run) - target >= "
                f"{TARGET_RATIO}x healthz: {verdict}")
        report.add("1.", "GET /v1/videos/{id}", vid, conc, cpu=vid_cpu,
                   compare=f"{vid.rps / base.rps:.2f}x healthz req/s, p50 +{vid.p50_ms - base.p50_ms:.2f} ms{met}")
    return video_path


def profile_get(args: argparse.Namespace, gw: Gateway, auth: dict[str, str], video_path: str, report: Report,
                tmp: Path, use_wrk: bool) -> None:
    """py-spy samples the server while a load runs; summarised by function (inclusive and self)."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        report.profile.append("py-spy not installed (.venv/bin/pip install py-spy); no profile")
        return
    out = tmp / "get-video.pyspy.txt"
    secs = max(3, round(args.duration))
    spy = subprocess.Popen([pyspy, "record", "--pid", str(gw.pid), "--duration", str(secs + 1), "--rate", "250",
                            "--format", "raw", "--threads", "--nonblocking", "--output", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(0.5)
        if use_wrk:
            load = load_wrk(gw.port, video_path, auth, conc=args.connections, threads=args.threads, seconds=secs,
                            tmp=tmp)
        else:
            load = load_python(gw.port, video_path, auth, conc=args.connections, seconds=secs,
                               max_requests=args.max_requests)
        _, err = spy.communicate(timeout=secs + 60)
    finally:
        Procs.stop(spy)
    if not out.exists():
        report.profile.append(f"py-spy failed: {err.decode(errors='replace')[-500:] if err else '?'}")
        return
    report.profile.extend(summarise_profile(out, load))
    if args.keep:
        report.profile.append(f"raw py-spy stacks: {out}")


# Named costs. "any": the sample has a matching frame anywhere (inclusive; buckets overlap);
# "leaf": the innermost frame matches (self time).
def _f(name: str, file: str) -> str:
    return rf"^(?:[\w<>]+\.)*(?:{name}) \((?:.*/)?{file}"


PROFILE_BUCKETS: list[tuple[str, str, re.Pattern[str]]] = [
    ("auth: require_key (key row lookup + HMAC)", "any", re.compile(_f("require_key", r"auth/dependencies\.py"))),
    ("service.get_owned (job + outputs queries)", "any", re.compile(_f("get_owned", r"videos/service\.py"))),
    ("present.render (video object + signed link)", "any", re.compile(_f("render", r"videos/present\.py"))),
    ("JSONBytes.render (orjson)", "any", re.compile(_f("render", r"http/responses\.py"))),
    ("middleware _record (metrics + access log)", "any", re.compile(_f("_record", r"http/middleware\.py"))),
    ("  logging (JSON formatter, stream write)", "any", re.compile(
        r"\((?:.*/)?logging/__init__\.py|aistats_gateway/logs\.py")),
    ("  prometheus_client", "any", re.compile(r"prometheus_client/")),
    ("SQLAlchemy (all of it)", "any", re.compile(r"sqlalchemy/")),
    ("  session/connection/pool: begin, close, checkout, reset", "any", re.compile(
        _f("close|_close_impl|__aexit__|__aenter__|_checkout|_checkin|_finalize_fairy|_do_return_conn|_reset|"
           "_connection_for_bind|connection|begin", r"sqlalchemy/"))),
    ("  statement cache keys / compile", "any", re.compile(
        r"sqlalchemy/sql/(?:compiler|cache_key)\.py|_compile_w_cache")),
    ("  ORM loading (rows -> objects, identity map)", "any", re.compile(
        r"sqlalchemy/orm/(?:loading|identity|state)\.py")),
    ("aiosqlite (all of it)", "any", re.compile(r"aiosqlite/")),
    ("  leaf in aiosqlite Connection._execute (queue hand-off, GIL wait)", "leaf", re.compile(
        _f("_execute", r"aiosqlite/core\.py"))),
    ("psycopg (all of it)", "any", re.compile(r"psycopg(?:_pool)?/")),
    ("fastapi dependency solving", "any", re.compile(r"fastapi/dependencies/")),
    ("pydantic", "any", re.compile(r"pydantic(?:_core)?/")),
    ("background job engine (due-row scans, procrastinate)", "any", re.compile(
        r"aistats_gateway/jobs/|procrastinate/")),
    ("self time in uvicorn's protocol (parse, send)", "leaf", re.compile(r"uvicorn/protocols/")),
    ("self time in starlette/fastapi routing and middleware", "leaf", re.compile(
        r"(?:starlette|fastapi)/(?:routing|middleware|_exception_handler|applications)")),
]


# Leaf frames that mean "waiting", not working: the event loop inside uvloop's C run loop (epoll, or
# C callbacks py-spy cannot see without --native) and aiosqlite/executor threads blocked on their queue.
_IDLE_LEAVES = re.compile(r"^(?:Runner\.run \(.*asyncio/runners\.py"
                          r"|_connection_worker_thread \(.*aiosqlite/core\.py:59\)"
                          r"|_worker \(.*concurrent/futures/thread\.py|.*\.wait \(.*threading\.py)")


def summarise_profile(path: Path, load: Load) -> list[str]:
    """py-spy raw format: one line per distinct stack, frames root->leaf separated by ';', then a count."""
    by_thread: Counter[str] = Counter()
    main_stacks: list[tuple[list[str], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        head = frames[0] if frames and frames[0].startswith("thread") else "thread ?"
        is_main = head.endswith("MainThread")
        frames = [f for f in frames if not f.startswith(("thread", "process"))]
        n = int(count)
        if not frames:
            kind = "in C (no Python frame)"
        elif _IDLE_LEAVES.match(frames[-1]):
            kind = "waiting"
        else:
            kind = "running Python"
        by_thread[("event loop: " if is_main else "other threads: ") + kind] += n
        if is_main and kind == "running Python":
            main_stacks.append((frames, n))
    total_main = sum(n for _, n in main_stacks) or 1
    lines = [f"py-spy profile of GET /v1/videos/{{id}}: 250 Hz, {load.requests:,} requests at {load.rps:,.0f} req/s "
             "while sampled (--nonblocking: the server is not paused)",
             "Samples: " + ", ".join(f"{k} {v:,}" for k, v in sorted(by_thread.items())),
             "", "Event-loop thread, share of its samples running Python (inclusive; buckets overlap):"]
    for name, where, pat in PROFILE_BUCKETS:
        if where == "leaf":
            n = sum(c for frames, c in main_stacks if pat.search(frames[-1]))
        else:
            n = sum(c for frames, c in main_stacks if any(pat.search(f) for f in frames))
        lines.append(f"  {100 * n / total_main:5.1f}%  {name}")
    incl: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    for frames, n in main_stacks:
        for f in set(_fn(x) for x in frames):
            incl[f] += n
        self_[_fn(frames[-1])] += n
    lines += ["", "Top self time (leaf function), event-loop thread:"]
    lines += [f"  {100 * n / total_main:5.1f}%  {f}" for f, n in self_.most_common(15)]
    lines += ["", "Top inclusive, aistats_gateway functions:"]
    lines += [f"  {100 * n / total_main:5.1f}%  {f}" for f, n in incl.most_common()
              if "aistats_gateway/" in f and "cli.py" not in f][:12]
    return lines


def _fn(frame: str) -> str:
    """'name (path/to/file.py:123)' -> 'name (pkg/file.py)' without the line number."""
    m = re.match(r"^(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    name, file = m.groups()
    for marker in ("site-packages/", "lib/python3", "src/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{name} ({file})"


# ---- 1b. in-process cost breakdown -------------------------------------------------------------------
# The pieces of GET /v1/videos/{id}, called one at a time in a separate process on the server's database
# (same settings, uvloop): wall and CPU (all threads, so the DB driver's too) per call. No HTTP.


async def _breakdown(spec: dict[str, Any]) -> list[list[Any]]:
    import logging
    from types import SimpleNamespace

    import orjson
    from fastapi.security import HTTPAuthorizationCredentials
    from sqlalchemy import text
    from starlette.requests import Request

    from aistats_gateway import logs
    from aistats_gateway.app import create_app
    from aistats_gateway.auth.dependencies import require_key
    from aistats_gateway.http.middleware import Metrics
    from aistats_gateway.settings import load_settings
    from aistats_gateway.videos import present, service

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    devnull = mute_log_streams()
    metrics = Metrics()
    app = create_app(settings, metrics=metrics)  # no lifespan: only what GET needs is set up below
    gw = app.state.gateway
    gw.runner = SimpleNamespace(sessions=gw.sessions, reader=gw.reader)
    sessions = gw.sessions
    key, video_id, n = spec["key"], spec["video_id"], spec["n"]
    cred = HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)

    async def asgi_get(path: str, auth: bool) -> None:
        headers = [(b"host", b"127.0.0.1:8080")] + ([(b"authorization", f"Bearer {key}".encode())] if auth else [])
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": headers, "client": (HOST, 50000), "server": (HOST, 8080), "state": {}}
        status = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"in-process GET {path} answered {status}")

    async def auth() -> Any:
        return await require_key(Request({"type": "http", "app": app, "state": {}, "headers": []}), cred)

    principal = await auth()
    caller = service.Caller(principal.key_id, principal.workspace_id)
    job, outputs = await service.get_owned(gw.runner, caller, video_id)

    async def owned() -> Any:
        return await service.get_owned(gw.runner, caller, video_id)

    async def render() -> bytes:
        return orjson.dumps(present.render(job, outputs, base_url="http://127.0.0.1:8080", secret=settings.signing_key))

    async def select1() -> None:
        async with sessions() as s:
            await s.execute(text("SELECT 1"))

    async def session_only() -> None:
        async with sessions() as s:
            s.in_transaction()

    access = logging.getLogger("aistats_gateway.access")

    async def access_log() -> None:
        access.info("request", extra={"request_id": "req_0123456789abcdef01234567", "method": "GET",
                                      "path": f"/v1/videos/{video_id}", "route": "/v1/videos/{video_id}",
                                      "status": 200, "duration_ms": 1.234, "key_id": principal.key_id})

    async def prometheus() -> None:
        metrics.requests.labels("GET", "/v1/videos/{video_id}", "200").inc()
        metrics.latency.labels("GET", "/v1/videos/{video_id}").observe(0.001)

    real_get_owned = service.get_owned

    async def cached_get_owned(*a: Any, **k: Any) -> Any:
        return job, outputs

    async def stubbed() -> None:
        """The same request with the key lookup and the DB reads replaced by constants: what is left is
        FastAPI/Starlette, the middleware, rendering and logging."""
        app.dependency_overrides[require_key] = lambda: principal
        service.get_owned = cached_get_owned
        try:
            await asgi_get(f"/v1/videos/{video_id}", True)
        finally:
            app.dependency_overrides.clear()
            service.get_owned = real_get_owned

    cases = [
        ("whole app, GET /healthz (ASGI call, no HTTP)", lambda: asgi_get("/healthz", False)),
        ("whole app, GET /v1/videos/{id} (ASGI call, no HTTP)", lambda: asgi_get(f"/v1/videos/{video_id}", True)),
        ("whole app, GET /v1/videos/{id}, auth + DB reads stubbed", stubbed),
        ("  auth: require_key (1 session, 1 SELECT, HMAC)", auth),
        ("  service.get_owned (1 session, ORM get + SELECT outputs)", owned),
        ("  present.render + orjson.dumps", render),
        ("  access log line (JSON formatter, to /dev/null)", access_log),
        ("  Prometheus counter + histogram", prometheus),
        ("  reference: session + SELECT 1", select1),
        ("  reference: session open/close, no query", session_only),
    ]
    for _, fn in cases:
        for _ in range(min(50, n)):
            await fn()
    # Interleaved in rounds, so that a change of the machine's load during the run hits every case alike.
    rounds = 10
    acc = {name: [0.0, 0.0] for name, _ in cases}
    for _ in range(rounds):
        for name, fn in cases:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n // rounds):
                await fn()
            acc[name][0] += time.perf_counter() - wall
            acc[name][1] += time.process_time() - cpu
    calls = rounds * (n // rounds)
    out = [[name, acc[name][0] / calls * 1000, acc[name][1] / calls * 1000] for name, _ in cases]
    parts = [r for r in out[3:8]]
    out.insert(8, ["  rest: HTTPBearer, FastAPI/Starlette routing + middleware (whole - the above)",
                   out[1][1] - sum(r[1] for r in parts), out[1][2] - sum(r[2] for r in parts)])
    await gw.engine.dispose()
    devnull.close()
    return out



def breakdown_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_breakdown(spec))))
    return 0


def breakdown(gw: Gateway, key: str, video_path: str, n: int, report: Report) -> None:
    rows, err = run_in_subprocess(Path(__file__).resolve(), "--_breakdown",
                                  {"key": key, "video_id": video_path.rsplit("/", 1)[1], "n": n}, gw.env, gw.data_dir)
    if rows is None:
        report.breakdown.append(err)
        return
    report.breakdown.append(f"1b. In-process cost of the pieces of GET /v1/videos/{{id}} ({n} sequential calls each, "
                            "same database and settings, uvloop; CPU = all threads of the process):")
    report.breakdown.append(table([[name, f"{wall:.3f}", f"{cpu:.3f}"] for name, wall, cpu in rows],
                                  ["step", "wall ms/call", "CPU ms/call"]))
    report.breakdown.append("")


def body(b: Bench) -> None:
    log("1. GET /v1/videos/{id}")
    video_path = bench_get(b.args, b.gw, b.auth, b.report, b.tmp, b.use_wrk)
    log("1b. in-process breakdown")
    breakdown(b.gw, b.key, video_path, 200 if b.args.quick else 1000, b.report)
    if b.args.profile and not b.args.no_profile:
        log("profiling GET /v1/videos/{id} with py-spy")
        profile_get(b.args, b.gw, b.auth, video_path, b.report, b.tmp, b.use_wrk)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_breakdown":
        sys.exit(breakdown_main(sys.argv[2]))
    sys.exit(run(__doc__ or "", "GET /v1/videos/{id} benchmark", body))
