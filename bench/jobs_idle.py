"""The job engine's idle cost: the gateway's CPU with many video jobs in flight and no request.

    .venv/bin/python bench/jobs_idle.py                                   # 10,000 jobs, SQLite
    .venv/bin/python bench/jobs_idle.py --jobs 10000 --poll-cap 300       # the provider's cadence at 300 s
    .venv/bin/python bench/jobs_idle.py --backend postgres --quick

The fake OpenAI server runs in its own process; its jobs "render" for an hour, and it counts the
status polls it answers (``GET /v1/videos/{id}``). ``--jobs`` jobs are created at the fake and stored
as in-flight jobs in the gateway's database (as a create would leave them, with the backoff at its
cap and the due times spread over one cadence), then the gateway's engine polls each at the
provider's cadence (``AISTATS_PROVIDER_OPENAI_MAX_POLL_INTERVAL``, 30 s by default; ``--poll-cap``).

Reported, each over ``--seconds`` after a warm-up: the gateway process's CPU (``/proc/<pid>/stat``,
all threads) in % of one core and the polls per second the fake saw, first with no job in flight
(the baseline, same process, same run) and then with the jobs; and the CPU per poll. The target is
at most 10 % of one core for 10,000 jobs when no request arrives.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datetime as dt
import json
import os
import secrets
import threading
import time
import urllib.parse
from typing import Any

from _common import (
    FAKE_KEY,
    PROMPT,
    Bench,
    Conn,
    _proc_cpu,
    cpu_pressure,
    log,
    parser,
    run,
    table,
)

# The fake OpenAI server behind a counter of the status polls it answers (GET /v1/videos/{id}).
COUNTING_FAKE = """
import json, sys, uvicorn
from aistats_gateway.providers import fakes
inner = fakes.FAKES["openai"](api_key=sys.argv[2], render_seconds=float(sys.argv[3]))
counts = {"polls": 0, "creates": 0}
async def app(scope, receive, send):
    if scope["type"] == "http":
        path, method = scope["path"], scope["method"]
        if path == "/_bench/stats":
            body = json.dumps(counts).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if method == "GET" and path.startswith("/v1/videos/") and path.count("/") == 3:
            counts["polls"] += 1
        elif method == "POST" and path == "/v1/videos":
            counts["creates"] += 1
        if len(inner.state.fake.requests) > 1000:
            del inner.state.fake.requests[:500]  # the fake's request log would grow for the whole run
    await inner(scope, receive, send)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""
TARGET_CPU = 10.0  # % of one core, 10,000 jobs in flight, no request


def fake_stats(port: int) -> dict[str, int]:
    conn = Conn(port)
    try:
        status, _, body = conn.request("GET", "/_bench/stats")
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"fake stats answered {status}")
    return dict(json.loads(body))


def create_at_fake(port: int, n: int, threads: int = 8) -> list[str]:
    """``n`` jobs straight at the fake (as the gateway's adapter sends them); their native ids."""
    ids: list[str] = []
    lock = threading.Lock()
    errors: list[str] = []
    body = urllib.parse.urlencode({"model": "sora-2", "prompt": PROMPT, "seconds": "4", "size": "1280x720"}).encode()

    def worker(count: int) -> None:
        conn = Conn(port)
        try:
            for _ in range(count):
                status, _, resp = conn.request("POST", "/v1/videos", {
                    "Authorization": f"Bearer {FAKE_KEY}", "Content-Type": "application/x-www-form-urlencoded",
                    "Idempotency-Key": "video_" + secrets.token_hex(12)}, body)
                if status != 200:
                    errors.append(f"{status} {resp[:200]!r}")
                    return
                with lock:
                    ids.append(json.loads(resp)["id"])
        finally:
            conn.close()

    per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    ts = [threading.Thread(target=worker, args=(c,)) for c in per if c]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError(f"creating jobs at the fake failed: {errors[0]}")
    return ids


def cadence_of(age: float, cap: float, fraction: float) -> float:
    """Seconds between two polls of a job of this age (the runner's backoff at its cap, paced by age)."""
    return max(cap, fraction * age)


def store_in_flight(b: Bench, workspace_id: str, key_id: str, native_ids: list[str], cap: float,
                    max_age: float, fraction: float) -> float:
    """The gateway's rows for those jobs, as a create leaves them once the backoff reached its cap:
    started evenly over the last ``max_age`` seconds (a provider that takes an hour, in steady
    state), each job's next poll somewhere within its cadence. The expected polls per second."""
    from sqlalchemy import create_engine, insert

    from aistats_gateway.videos.tables import VideoJob

    url = b.gw.env.get("AISTATS_DATABASE_URL") or f"sqlite:///{b.gw.data_dir / 'gateway.db'}"
    eng = create_engine(url.replace("sqlite+aiosqlite://", "sqlite://"))
    now = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = []
    expected = 0.0
    n = max(len(native_ids), 1)
    for i, nid in enumerate(native_ids):
        age = max_age * ((i * 7919) % n) / n  # spread evenly, not in id order
        cadence = cadence_of(age, cap, fraction)
        expected += 1 / cadence
        rows.append({
            "id": "video_" + secrets.token_hex(12), "workspace_id": workspace_id, "key_id": key_id,
            "model": "openai/sora-2", "requested_model": "openai/sora-2", "status": "in_progress",
            "candidates": ["openai"], "provider": "openai", "provider_model_slug": "sora-2", "native_id": nid,
            "attempts": [{"provider": "openai", "outcome": "accepted", "at": int(now.timestamp())}],
            "params": {"prompt": PROMPT, "duration": 4, "width": 1280, "height": 720, "size": "1280x720",
                       "values": {}, "provider_params": {}, "images": [], "slugs": {"openai": "sora-2"}},
            "seconds": 4.0, "size": "1280x720", "sample_count": 1, "progress": 0, "progress_source": "estimated",
            "next_run_at": now + dt.timedelta(seconds=cadence * i / n),
            "poll_count": 12, "deadline_at": now + dt.timedelta(hours=2), "started_at": now - dt.timedelta(seconds=age),
            "created_at": now - dt.timedelta(seconds=age),
            "updated_at": now, "billing": None, "webhook": None,
        })
    with eng.begin() as conn:
        for i in range(0, len(rows), 1000):
            conn.execute(insert(VideoJob.__table__), rows[i:i + 1000])
    eng.dispose()
    return expected


def measure(b: Bench, seconds: float) -> tuple[float, float, float]:
    """(gateway CPU % of one core, polls/s at the fake, wall seconds) over ``seconds``."""
    s0, c0, t0 = fake_stats(b.fake_port)["polls"], _proc_cpu(b.gw.pid), time.perf_counter()
    time.sleep(seconds)
    s1, c1, t1 = fake_stats(b.fake_port)["polls"], _proc_cpu(b.gw.pid), time.perf_counter()
    wall = t1 - t0
    return 100 * (c1 - c0) / wall, (s1 - s0) / wall, wall


def profile(b: Bench, seconds: float) -> list[str]:
    """py-spy samples the idle gateway; the top functions by inclusive and by self time."""
    import collections
    import shutil
    import subprocess

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        return ["py-spy not installed (.venv/bin/pip install py-spy); no profile"]
    out = b.tmp / "idle.pyspy.txt"
    mode = ["--native"] if os.environ.get("BENCH_NATIVE") else ["--nonblocking", "--gil"]
    r = subprocess.run([pyspy, "record", "--pid", str(b.gw.pid), "--duration", str(round(seconds)), "--rate", "200",
                        "--format", "raw", *mode, "--output", str(out)],
                       capture_output=True, text=True, timeout=seconds + 60)
    if not out.exists():
        return [f"py-spy failed: {r.stderr[-300:]}"]
    incl: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        total += n
        for f in set(frames):
            incl[f] += n
        leaf[frames[-1]] += n
    lines = [f"py-spy, {total} samples (active threads only):", "inclusive:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(25)]
    lines.append("self:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in leaf.most_common(15)]
    return lines


def healthz_cpu(b: Bench, n: int = 2000) -> float:
    """CPU ms of the gateway per sequential ``GET /healthz``: the same-run yardstick of what one small
    request costs on this machine now (a loaded machine inflates every figure alike)."""
    conn = Conn(b.gw.port)
    try:
        for _ in range(50):
            conn.request("GET", "/healthz")
        c0 = _proc_cpu(b.gw.pid)
        for _ in range(n):
            conn.request("GET", "/healthz")
        return (_proc_cpu(b.gw.pid) - c0) / n * 1000
    finally:
        conn.close()


def body(b: Bench) -> None:
    args = b.args
    seconds = 10.0 if args.quick else args.seconds
    jobs = min(args.jobs, 500) if args.quick else args.jobs
    created = json.loads(b.gw.cli("keys", "create", "--name", "idle", "--json"))
    time.sleep(3.0)  # let the start-up settle (catalogue sync, first engine looks)
    log(f"baseline: no job in flight, {seconds:.0f}s")
    base_cpu, base_polls, _ = measure(b, seconds)
    yard = healthz_cpu(b)
    t = time.perf_counter()
    native = create_at_fake(b.fake_port, jobs)
    expected = store_in_flight(b, created["workspace_id"], created["id"], native, args.poll_cap, args.max_age,
                               args.age_fraction)
    log(f"{jobs:,} jobs in flight after {time.perf_counter() - t:.0f}s; warming up {args.warmup:.0f}s")
    time.sleep(args.warmup)
    log(f"measuring {seconds:.0f}s ({cpu_pressure()})")
    cpu, polls, wall = measure(b, seconds)
    if args.profile:
        b.report.profile.extend(profile(b, min(seconds, 20)))
    per_poll = (cpu - base_cpu) / 100 / polls * 1000 if polls else float("nan")
    verdict = "MET" if cpu <= TARGET_CPU else "NOT met"
    label = (f"cadence max({args.poll_cap:g} s, {args.age_fraction:g} x age), ages 0-{args.max_age / 60:g} min"
             if args.age_fraction else f"cadence {args.poll_cap:g} s")
    rows = [
        ["no job in flight (baseline)", "0", f"{base_cpu:.1f}", f"{base_polls:.1f}", "", "baseline"],
        ["yardstick: one GET /healthz, sequential", "", "", "", f"{yard:.2f}", "CPU ms per request, same process"],
        [f"{jobs:,} jobs in flight, {label}", f"{jobs:,}", f"{cpu:.1f}", f"{polls:.1f}",
         f"{per_poll:.2f}", f"expected {expected:.1f} polls/s; target <= {TARGET_CPU:g}% at 10,000 jobs: {verdict}"],
    ]
    b.report.breakdown.append(f"Job engine idle cost ({wall:.0f} s each, no request arrives; CPU of the gateway "
                              "process, all threads, % of one core):")
    b.report.breakdown.append(table(rows, ["case", "jobs", "gateway CPU %", "polls/s at the fake",
                                           "CPU ms/poll", "comparison"]))
    b.report.notes.append(f"{jobs:,} jobs, {label}: gateway {cpu:.1f}% of one core "
                          f"(baseline {base_cpu:.1f}%), the fake saw {polls:.1f} polls/s "
                          f"(expected {expected:.1f}), {per_poll:.2f} ms CPU per poll "
                          f"({per_poll / yard:.1f}x one GET /healthz, {yard:.2f} ms, same run)")
    b.report.notes.append(f"job concurrency {b.gw.env.get('AISTATS_JOB_CONCURRENCY', '4 (default)')}, per-workspace "
                          f"cap {b.gw.env.get('AISTATS_JOB_WORKSPACE_CONCURRENCY', 'default (concurrency - 1)')}; "
                          "all jobs in one workspace")


if __name__ == "__main__":
    ap = parser(__doc__ or "")
    ap.add_argument("--jobs", type=int, default=10_000, help="jobs in flight (default 10,000)")
    ap.add_argument("--poll-cap", type=float, default=30.0, help="seconds between two polls of a job, the provider's "
                    "cadence (AISTATS_PROVIDER_OPENAI_MAX_POLL_INTERVAL; default 30, the adapter's)")
    ap.add_argument("--max-age", type=float, default=3600.0, help="the jobs started evenly over this many seconds "
                    "before (default 3600: a provider that takes an hour, in steady state)")
    ap.add_argument("--age-fraction", type=float, default=0.1, help="AISTATS_JOB_POLL_AGE_FRACTION (default 0.1, "
                    "the shipped default; 0: a fixed cadence)")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds per measurement (default 60)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring (default 20)")
    ap.add_argument("--set", dest="env", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="an extra AISTATS_* setting of the gateway (repeatable)")
    argv = sys.argv[1:]
    pre = ap.parse_known_args(argv)[0]
    env = {"AISTATS_PROVIDER_OPENAI_MAX_POLL_INTERVAL": str(pre.poll_cap),
           "AISTATS_PROVIDER_OPENAI_POLL_INTERVAL": str(pre.poll_cap),
           "AISTATS_JOB_POLL_AGE_FRACTION": str(pre.age_fraction)}
    sys.exit(run(__doc__ or "", "job engine idle-cost benchmark", body, fake=True, fake_code=COUNTING_FAKE,
                 extra_env=env, ap=ap))
