"""Benchmark of ``POST /v1/videos`` overhead over the provider call, with jobs in flight.

    .venv/bin/python bench/videos_create.py                      # SQLite, 1,000 jobs in flight
    .venv/bin/python bench/videos_create.py --in-flight 0        # an empty database
    .venv/bin/python bench/videos_create.py --backend postgres

2. ``POST /v1/videos`` with ``openai/sora-2`` through the gateway vs. the same create sent straight to the
   fake OpenAI server (a separate process; urlencoded as the gateway's adapter sends it, and multipart
   as the SDK does), sequentially and interleaved, so all see the same background load; the difference
   of the latencies is the gateway's overhead over the provider call (the baseline, same run). Before
   the case, ``--in-flight`` jobs are created at the fake (each "renders" for an hour), so the engine
   polls them in the background while the creates are measured.
   2b. in-process, timers around the steps of the create (body, validation, catalogue, provider call,
   DB sessions) say where that overhead goes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import argparse
import asyncio
import json
import os
import secrets
import time
import urllib.parse
from collections import Counter
from typing import Any

from _common import (
    FAKE_KEY,
    HOST,
    PROMPT,
    Bench,
    Conn,
    Gateway,
    Load,
    Report,
    _proc_cpu,
    log,
    mute_log_streams,
    percentile,
    run,
    run_in_subprocess,
    table,
)


async def _breakdown_create(spec: dict[str, Any]) -> list[list[Any]]:
    """Whole POST /v1/videos calls (ASGI, no HTTP) with timers wrapped around the named steps of
    ``videos.service.create``; the rest (auth, framework, rendering) is what is left over."""
    from types import SimpleNamespace

    from aistats_gateway import logs
    from aistats_gateway.app import create_app, start_services, stop_services
    from aistats_gateway.http.middleware import Metrics
    from aistats_gateway.providers import registry
    from aistats_gateway.settings import load_settings
    from aistats_gateway.videos import parsing, service

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    devnull = mute_log_streams()
    app = create_app(settings, metrics=Metrics())
    gw = app.state.gateway
    await start_services(gw)
    await gw.jobs.stop()  # the server's own engine runs the jobs; here a wake is a no-op
    gw.jobs = SimpleNamespace(wake=lambda *a, **k: None, stop=_anoop)
    await gw.catalogue.get()
    times: dict[str, list[float]] = {}

    def add(name: str, t: float) -> None:
        times.setdefault(name, []).append(time.perf_counter() - t)

    def timed_async(name: str, fn: Any) -> Any:
        async def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return await fn(*a, **k)
            finally:
                add(name, t)
        return wrapper

    def timed_sync(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                add(name, t)
        return wrapper

    class TimedSession:
        def __init__(self, cm: Any) -> None:
            self.cm = cm

        async def __aenter__(self) -> Any:
            self.t = time.perf_counter()
            return await self.cm.__aenter__()

        async def __aexit__(self, *exc: Any) -> Any:
            try:
                return await self.cm.__aexit__(*exc)
            finally:
                add("db", self.t)

    factory = gw.runner.sessions

    class TimedFactory:
        """The session factory with a timer around each ORM session (Core statements on the
        factory's engine, ``jobs.lease.engine_of``, are not timed here)."""

        kw = factory.kw

        def __call__(self, *a: Any, **k: Any) -> Any:
            return TimedSession(factory(*a, **k))

    gw.runner.sessions = TimedFactory()
    adapter = registry.adapter_for("openai", "video.generation")
    # (object, attribute, timer name, async?) - a step the code no longer has is simply not timed.
    for obj, attr, name, is_async in ((parsing, "read_body", "read_body", True),
                                      (service, "parse_request", "parse", False),
                                      (getattr(service, "validation", None), "plan", "plan", False),
                                      (service, "build_request", "build_request", True),
                                      (adapter, "submit", "provider", True),
                                      (gw.catalogue, "get", "catalogue", True)):
        if obj is not None and callable(getattr(obj, attr, None)):
            fn = getattr(obj, attr)
            setattr(obj, attr, timed_async(name, fn) if is_async else timed_sync(name, fn))

    body = json.dumps({"model": "openai/sora-2", "prompt": PROMPT, "seconds": 4, "size": "1280x720"}).encode()
    headers = [(b"host", b"127.0.0.1:8080"), (b"authorization", f"Bearer {spec['key']}".encode()),
               (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def create() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/videos", "raw_path": b"/v1/videos", "query_string": b"",
                 "root_path": "", "headers": headers, "client": (HOST, 50000), "server": (HOST, 8080), "state": {}}
        status = []
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [202]:
            raise RuntimeError(f"in-process POST /v1/videos answered {status}")

    n = spec["n"]
    for _ in range(min(10, n)):
        await create()
    times.clear()
    whole: list[float] = []
    cpu = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        await create()
        whole.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu) / n
    await stop_services(gw)
    await gw.engine.dispose()
    devnull.close()

    def ms(values: list[float]) -> tuple[float, float]:
        per = sum(values) / n * 1000  # per create (a step may run several times per create)
        values = sorted(values)
        return per, percentile(values, 0.5) * 1000

    whole_mean, whole_p50 = ms(whole)
    rows: list[list[Any]] = [["whole POST /v1/videos (ASGI call, no HTTP)", whole_mean, whole_p50, 1.0, cpu * 1000]]
    named = [("parsing.read_body (JSON body)", ["read_body"]),
             ("service.parse_request (pydantic)", ["parse"]),
             ("catalogue.get (snapshot, version check)", ["catalogue"]),
             ("validation.plan (model, offers, params)", ["plan"]),
             ("build_request", ["build_request"]),
             ("provider call: openai adapter.submit (httpx -> fake)", ["provider"]),
             ("DB ORM sessions (runner.sessions: insert + hold, submit's update)", ["db"])]
    accounted = 0.0
    for label, keys in named:
        values = [v for k in keys for v in times.get(k, [])]
        if not values:
            rows.append([f"  {label} (not called)", 0.0, None, 0.0, None])
            continue
        mean, p50 = ms(values)
        accounted += mean
        rows.append([f"  {label}", mean, p50, len(values) / n, None])
    rows.append(["  rest: auth (key lookup), FastAPI/middleware, rendering the 202", whole_mean - accounted, None,
                 None, None])
    return rows



async def _anoop(*a: Any, **k: Any) -> None:
    return None


def breakdown_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out = os.environ.get("BENCH_CPROFILE")  # a file: cProfile of the in-process creates, by own time
    if out:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        rows = prof.runcall(asyncio.run, _breakdown_create(spec))
        with open(out, "w") as f:
            pstats.Stats(prof, stream=f).sort_stats("tottime").print_stats(40)
    else:
        rows = asyncio.run(_breakdown_create(spec))
    print(json.dumps(rows))
    return 0


def breakdown_create(gw: Gateway, key: str, n: int, report: Report) -> None:
    rows, err = run_in_subprocess(Path(__file__).resolve(), "--_breakdown", {"mode": "create", "key": key, "n": n},
                                  gw.env, gw.data_dir)
    if rows is None:
        report.breakdown.append(err)
        return
    report.breakdown.append(f"2b. Where POST /v1/videos (openai/sora-2) spends its time, in-process ({n} sequential "
                            "creates against the fake; mean ms per create, p50 of one call of the step):")
    out = []
    for name, mean, p50, calls, cpu in rows:
        out.append([name, f"{mean:.3f}", "" if p50 is None else f"{p50:.3f}",
                    "" if calls is None else f"{calls:.1f}", "" if cpu is None else f"{cpu:.3f}"])
    report.breakdown.append(table(out, ["step", "ms/create", "p50 ms/call", "calls/create", "CPU ms/create"]))
    report.breakdown.append("")


# ---- 2. create overhead ------------------------------------------------------------------------------


def _multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def bench_create(args: argparse.Namespace, gw: Gateway, fake_port: int, fake_pid: int, auth: dict[str, str],
                 report: Report) -> None:
    gw_body = json.dumps({"model": "openai/sora-2", "prompt": PROMPT, "seconds": 4, "size": "1280x720"}).encode()
    # What the gateway's OpenAI adapter sends (httpx, data= without files= is a urlencoded form), and the
    # same fields as multipart (what the openai SDK sends).
    fields = {"model": "sora-2", "prompt": PROMPT, "seconds": "4", "size": "1280x720"}
    form_body = urllib.parse.urlencode(fields).encode()
    mp_body, mp_type = _multipart(fields)
    fake_auth = {"Authorization": f"Bearer {FAKE_KEY}"}
    gconn, fconn = Conn(gw.port), Conn(fake_port)
    lat: dict[str, list[float]] = {"gateway": [], "form": [], "multipart": []}
    errors: Counter[str] = Counter()

    def one(kind: str, record: bool) -> None:
        t = time.perf_counter()
        if kind == "gateway":
            status, _, body = gconn.request("POST", "/v1/videos", {**auth, "Content-Type": "application/json"},
                                            gw_body)
            ok = status == 202
        else:
            ctype = "application/x-www-form-urlencoded" if kind == "form" else mp_type
            status, _, body = fconn.request("POST", "/v1/videos", {
                **fake_auth, "Content-Type": ctype, "Idempotency-Key": "video_" + secrets.token_hex(12)},
                form_body if kind == "form" else mp_body)
            ok = status == 200
        ms = (time.perf_counter() - t) * 1000
        if not ok:
            errors[kind] += 1
            if errors[kind] == 1:
                log(f"  {kind} create answered {status}: {body[:300]!r}")
        if record:
            lat[kind].append(ms)

    try:
        for _ in range(args.warmup_creates):
            for kind in lat:
                one(kind, False)
        start = time.perf_counter()
        gw_cpu0, fake_cpu0 = _proc_cpu(gw.pid), _proc_cpu(fake_pid)
        for i in range(args.creates):  # interleaved: the three see the same background (job polls …)
            for kind in lat:
                one(kind, True)
            if time.perf_counter() - start > args.create_budget:
                log(f"  create budget of {args.create_budget:.0f}s reached after {i + 1} rounds")
                break
        gw_cpu, fake_cpu = _proc_cpu(gw.pid) - gw_cpu0, _proc_cpu(fake_pid) - fake_cpu0
    finally:
        gconn.close()
        fconn.close()
    stats = {}
    for kind, values in lat.items():
        values.sort()
        stats[kind] = (len(values), percentile(values, 0.5), percentile(values, 0.99))
        # requests/s here is 1 / mean latency of a sequential client
    g, f, m = stats["gateway"], stats["form"], stats["multipart"]

    def load_of(kind: str) -> Load:
        values = lat[kind]
        mean = sum(values) / len(values) if values else float("nan")
        return Load(len(values), sum(values) / 1000, 1000 / mean if values else 0.0, stats[kind][1], stats[kind][2],
                    errors[kind], "http.client")

    report.add("2.", "POST /v1/videos openai/sora-2 via gateway (JSON)", load_of("gateway"), 1,
               compare=f"overhead vs direct form: p50 +{g[1] - f[1]:.2f} ms, p99 +{g[2] - f[2]:.2f} ms")
    report.add("2.", "POST fake /v1/videos direct (urlencoded, as the gateway)", load_of("form"), 1,
               compare="baseline (the provider call)")
    report.add("2.", "POST fake /v1/videos direct (multipart, as the SDK)", load_of("multipart"), 1,
               compare=f"vs urlencoded: p50 {m[1] - f[1]:+.2f} ms")
    rounds = len(lat["gateway"]) or 1
    report.notes.append(f"CPU per create: gateway process {gw_cpu / rounds * 1000:.1f} ms (incl. its background job "
                        f"polls), fake provider {fake_cpu / (3 * rounds) * 1000:.1f} ms")
    report.notes.append(f"Create overhead of the gateway over the provider call: p50 {g[1] - f[1]:+.2f} ms, "
                        f"p99 {g[2] - f[2]:+.2f} ms (gateway p50 {g[1]:.2f} / p99 {g[2]:.2f} ms vs direct p50 "
                        f"{f[1]:.2f} / p99 {f[2]:.2f} ms, {g[0]} sequential requests each, interleaved)")


def fill_in_flight(b: Bench, n: int) -> None:
    """``n`` jobs in flight at the fake (they render for an hour), created through the gateway."""
    body = json.dumps({"model": "openai/sora-2", "prompt": PROMPT, "seconds": 4, "size": "1280x720"}).encode()
    conn = Conn(b.gw.port)
    t = time.perf_counter()
    try:
        for i in range(n):
            status, _, resp = conn.request("POST", "/v1/videos", {**b.auth, "Content-Type": "application/json"}, body)
            if status != 202:
                raise RuntimeError(f"in-flight create {i} answered {status}: {resp[:300]!r}")
    finally:
        conn.close()
    log(f"  {n} jobs in flight after {time.perf_counter() - t:.0f}s")


def body(b: Bench) -> None:
    if b.args.in_flight:
        log(f"2. filling {b.args.in_flight} jobs in flight")
        fill_in_flight(b, b.args.in_flight)
    b.report.notes.append(f"{b.args.in_flight:,} jobs in flight at the fake (each renders for an hour) while the "
                          "creates were measured")
    log("2. create overhead")
    bench_create(b.args, b.gw, b.fake_port, b.fake_pid, b.auth, b.report)
    log("2b. in-process create breakdown")
    breakdown_create(b.gw, b.key, 20 if b.args.quick else 100, b.report)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_breakdown":
        sys.exit(breakdown_main(sys.argv[2]))
    sys.exit(run(__doc__ or "", "POST /v1/videos overhead benchmark", body, fake=True))
