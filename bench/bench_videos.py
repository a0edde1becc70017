"""Benchmark of the video endpoints against a real ``aistats-gateway serve`` process.

    .venv/bin/python bench/bench_videos.py                       # SQLite, full run (~2.5 min)
    .venv/bin/python bench/bench_videos.py --backend postgres    # a fresh schema in the test database
    .venv/bin/python bench/bench_videos.py --quick               # small counts, under a minute
    .venv/bin/python bench/bench_videos.py --profile             # + py-spy profile of GET /v1/videos/{id}

What it measures, all on 127.0.0.1, bounded in count and time (one server process, its own temporary
``AISTATS_DATA_DIR``; on PostgreSQL a fresh schema via ``search_path``):

1. ``GET /v1/videos/{id}`` of a completed job (local model, 2 s 480p) at concurrency 1 and under a
   closed-loop load (``wrk``, a Lua script adds the Authorization header; without wrk a Python asyncio
   generator in a separate process), against ``GET /healthz`` on the same server as the baseline;
   the issue's target is >= 3,000 req/s in one process.
   1b. the pieces of that request timed in-process (a separate process on the same database, no HTTP):
   the whole app through ASGI, the same with auth and DB reads stubbed, the key lookup, the job
   read, rendering, logging, metrics. In a full run, when the target is not met, py-spy samples the
   server under load and the report names the top costs (``--profile`` forces it, ``--no-profile``
   skips it).
2. ``POST /v1/videos`` with ``openai/sora-2`` through the gateway vs. the same create sent straight to the
   fake OpenAI server (a separate process; urlencoded as the gateway's adapter sends it, and multipart
   as the SDK does), sequentially and interleaved, so all see the same background load; the difference
   of the latencies is the gateway's overhead over the provider call.
   2b. in-process, timers around the steps of the create (body, validation, catalogue, provider call,
   DB sessions) say where that overhead goes.
3. ``GET /v1/videos/{id}/content`` (with the key and with the signed ``download_url``) of a larger video
   (local model, 20 s 1080p) vs. the same stored file from ``python -m http.server`` and from a Starlette
   ``FileResponse`` app on uvicorn, at concurrency 1 and 8 (MB/s and req/s).

Section 2 runs last: its jobs stay in progress at the fake and the server keeps polling them.
Each case also records CPU use (server / load generator / everything else on the machine): on a shared
2-core machine, numbers taken while other processes use the CPUs are low, and the table says so.

Every subprocess (gateway, fake provider, static servers, load generators, py-spy) is stopped at the
end, also on error, Ctrl-C or SIGTERM; the temporary data directory is removed and, on PostgreSQL, the
schema dropped (``--keep`` keeps both, for a look at the logs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PG_URL = os.environ.get("AISTATS_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_RPS = 3000
LOCAL_MODEL = "local/procedural-video"
FAKE_KEY = "sk-test"
PROMPT = "A paper boat drifting down a rain-soaked street at dusk, cinematic"


# ---- small helpers ----------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = []
    for r in rows:
        cells = []
        for j, (c, w) in enumerate(zip(r, widths)):
            cells.append(str(c).ljust(w) if j in (0, len(r) - 1) else str(c).rjust(w))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([line, sep, *body])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Conn:
    """A keep-alive HTTP/1.1 connection to 127.0.0.1 (reconnects when the server closes it)."""

    def __init__(self, port: int, timeout: float = 60) -> None:
        self.port = port
        self.timeout = timeout
        self.c = http.client.HTTPConnection(HOST, port, timeout=timeout)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):
            try:
                self.c.request(method, path, body=body, headers=headers or {})
                r = self.c.getresponse()
                data = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if r.will_close:
                    self.c.close()
                return r.status, hdrs, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.c.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.c.close()


def get_json(port: int, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    conn = Conn(port)
    try:
        status, _, body = conn.request("GET", path, headers)
    finally:
        conn.close()
    return status, json.loads(body) if body else None


# ---- CPU accounting -----------------------------------------------------------------------------
# The machine is small (2 cores) and may be shared: each case records how much CPU the server under
# test, the load generator and everything else on the machine used while it ran.

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process; 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_pressure() -> str:
    """Linux PSI: the share of time some runnable task waited for a CPU (avg10/avg60), or ''."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return ""
    vals = dict(kv.split("=") for kv in line.split()[1:])
    return f"CPU pressure avg10 {vals.get('avg10')}%, avg60 {vals.get('avg60')}%"


class CpuMeter:
    """Use around one load run: server %, client %, and the rest of the machine % (of one core)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> CpuMeter:
        self.t0 = time.perf_counter()
        self.srv0 = _proc_cpu(self.server_pid)
        self.cli0 = _children_cpu()
        self.self0 = time.process_time()
        self.busy0, _ = _machine_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        busy1, _ = _machine_cpu()
        self.server = 100 * (_proc_cpu(self.server_pid) - self.srv0) / wall
        self.client = 100 * (_children_cpu() - self.cli0 + time.process_time() - self.self0) / wall
        self.machine = 100 * (busy1 - self.busy0) / wall
        self.others = max(0.0, self.machine - self.server - self.client)


# ---- subprocesses ---------------------------------------------------------------------------------


class Procs:
    """Every subprocess this run starts; ``stop_all`` ends them (their own process groups)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.items: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        logpath = self.tmp / f"{name}.log"
        with open(logpath, "wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=cwd or self.tmp, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.items.append((name, proc, logpath))
        return proc

    def tail(self, proc: subprocess.Popen[bytes], n: int = 30) -> str:
        for _, p, path in self.items:
            if p is proc:
                with contextlib.suppress(OSError):
                    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
        return ""

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: only what we started
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.items):
            with contextlib.suppress(Exception):
                self.stop(proc)


def wait_http(procs: Procs, proc: subprocess.Popen[bytes], port: int, path: str, headers: dict[str, str] | None = None,
              timeout: float = 120, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{procs.tail(proc)}")
        try:
            conn = Conn(port, timeout=3)
            try:
                status, _, body = conn.request("GET", path, headers)
            finally:
                conn.close()
            if status in ok:
                return
            last = f"{status} {body[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise RuntimeError(f"no answer on :{port}{path} within {timeout:.0f}s ({last}):\n{procs.tail(proc)}")


def py_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISTATS_")}
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


# The fake OpenAI server, in its own process. Jobs "render" for an hour so the gateway's background
# polls of the jobs created during the benchmark stay cheap (no content download in the middle).
FAKE_CODE = """
import sys, uvicorn
from aistats_gateway.providers import fakes
app = fakes.FAKES["openai"](api_key=sys.argv[2], render_seconds=3600.0)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""

# The same file from Starlette's FileResponse on uvicorn (same loop/parser as the gateway).
FILE_APP_CODE = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route
path = sys.argv[1]
async def serve(request):
    return FileResponse(path, media_type="video/mp4")
app = Starlette(routes=[Route("/0.mp4", serve)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools",
            log_level="warning", access_log=False)
"""


# ---- PostgreSQL schema ---------------------------------------------------------------------------


class PgSchema:
    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.name = "bench_videos_" + secrets.token_hex(5)
        self.created = False

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.base.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True,
                               connect_timeout=5)

    def create(self) -> str:
        with self._connect() as conn:
            conn.execute(f'CREATE SCHEMA "{self.name}"')
        self.created = True
        sep = "&" if "?" in self.base else "?"
        return f"{self.base}{sep}options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        if self.created:
            with self._connect() as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
            self.created = False


# ---- the gateway ---------------------------------------------------------------------------------


class Gateway:
    def __init__(self, procs: Procs, data_dir: Path, env: dict[str, str]) -> None:
        self.procs = procs
        self.data_dir = data_dir
        self.env = env
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, timeout: float = 120) -> str:
        r = subprocess.run([sys.executable, "-m", "aistats_gateway.cli", *args], env=self.env, cwd=self.data_dir,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"aistats-gateway {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
        return r.stdout

    def start(self) -> None:
        self.proc = self.procs.start(
            "gateway", [sys.executable, "-m", "aistats_gateway.cli", "serve", "--host", HOST, "--port", str(self.port)],
            env=self.env, cwd=self.data_dir)
        wait_http(self.procs, self.proc, self.port, "/healthz", timeout=180)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def create_video(gw: Gateway, auth: dict[str, str], payload: dict[str, Any]) -> dict[str, Any]:
    conn = Conn(gw.port)
    try:
        status, _, body = conn.request("POST", "/v1/videos", {**auth, "Content-Type": "application/json"},
                                       json.dumps(payload).encode())
    finally:
        conn.close()
    if status != 202:
        raise RuntimeError(f"POST /v1/videos {payload} answered {status}: {body[:500]!r}")
    return json.loads(body)


def wait_completed(gw: Gateway, auth: dict[str, str], video_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: Any = None
    while time.monotonic() < deadline:
        status, obj = get_json(gw.port, f"/v1/videos/{video_id}", auth)
        if status != 200:
            raise RuntimeError(f"GET /v1/videos/{video_id} answered {status}: {obj}")
        if obj["status"] == "completed":
            return obj
        if obj["status"] in ("failed", "cancelled", "expired"):
            raise RuntimeError(f"video {video_id} {obj['status']}: {obj.get('error')}")
        time.sleep(0.25)
    raise RuntimeError(f"video {video_id} not completed within {timeout:.0f}s (last: {obj and obj.get('status')}, "
                       f"progress {obj and obj.get('progress')})")


# ---- load generation -------------------------------------------------------------------------------


@dataclass
class Load:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str
    bytes_read: int = 0


_WRK_LUA = """-- generated by bench_videos.py
%s
"""


def _wrk_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not m:
        raise ValueError(f"cannot parse wrk latency {value!r}")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def _wrk_bytes(value: str) -> int:
    m = re.fullmatch(r"([\d.]+)([KMGT]?B)", value.strip())
    if not m:
        return 0
    return int(float(m.group(1)) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}[m.group(2)])


def load_wrk(port: int, path: str, headers: dict[str, str], *, conc: int, threads: int, seconds: float,
             tmp: Path) -> Load:
    script = tmp / f"wrk-{secrets.token_hex(4)}.lua"
    script.write_text(_WRK_LUA % "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}"
                                           for k, v in headers.items()))
    secs = max(1, round(seconds))
    cmd = ["wrk", f"-t{min(threads, conc)}", f"-c{conc}", f"-d{secs}s", "--timeout", "10s", "--latency",
           "-s", str(script), f"http://{HOST}:{port}{path}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60, stdin=subprocess.DEVNULL)
    out = r.stdout
    if r.returncode != 0 or "requests in" not in out or "99%" not in out:
        raise RuntimeError(f"wrk failed ({r.returncode}): {out}\n{r.stderr}")
    dist = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m), ([\d.]+[KMGT]?B) read", out)
    if m is None or "50" not in dist or "99" not in dist:
        raise RuntimeError(f"cannot parse the output of {' '.join(cmd)}:\n{out}")
    total = int(m.group(1))
    elapsed = float(m.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(3)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0)
    if sock:
        c, rd, w, t = (int(x) for x in sock.groups())
        errors += c + w + t + rd  # read errors: see the note on http.server in the report
    return Load(total, elapsed, total / elapsed if elapsed else 0.0, _wrk_ms(dist["50"]), _wrk_ms(dist["99"]),
                errors, f"wrk -t{min(threads, conc)}", _wrk_bytes(m.group(4)))


def load_python(port: int, path: str, headers: dict[str, str], *, conc: int, seconds: float,
                max_requests: int) -> Load:
    """The built-in closed-loop generator, in its own process (so it does not share a GIL with us)."""
    spec = {"port": port, "path": path, "headers": headers, "conc": conc, "seconds": seconds,
            "max_requests": max_requests}
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_loadgen", json.dumps(spec)],
                       capture_output=True, text=True, timeout=seconds + 90, env=py_env(), stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"load generator failed ({r.returncode}): {r.stderr[-2000:]}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return Load(**d)


async def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    port, path, conc = spec["port"], spec["path"], spec["conc"]
    head = "".join(f"{k}: {v}\r\n" for k, v in spec["headers"].items())
    req = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{head}\r\n".encode()
    deadline = time.perf_counter() + spec["seconds"]
    budget = spec["max_requests"]
    lat: list[float] = []
    state = {"sent": 0, "errors": 0, "bytes": 0}

    async def read_body(reader: asyncio.StreamReader, hdrs: dict[bytes, bytes]) -> int:
        if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
            n = 0
            while True:
                size = int((await reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readline()
                    return n
                n += len(await reader.readexactly(size))
                await reader.readline()
        if b"content-length" in hdrs:
            remaining = int(hdrs[b"content-length"])
            n = remaining
            while remaining:
                chunk = await reader.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ConnectionError("short body")
                remaining -= len(chunk)
            return n
        n = 0  # read to close
        while chunk := await reader.read(1 << 20):
            n += len(chunk)
        return n

    async def worker() -> None:
        reader = writer = None
        while time.perf_counter() < deadline and state["sent"] < budget:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                assert reader is not None
                state["sent"] += 1
                t = time.perf_counter()
                writer.write(req)
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionError("closed")
                hdrs: dict[bytes, bytes] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = line.partition(b":")
                    hdrs[k.strip().lower()] = v.strip()
                state["bytes"] += await read_body(reader, hdrs)
                lat.append((time.perf_counter() - t) * 1000)
                if status_line.split(b" ", 2)[1:2] not in ([b"200"], [b"206"]):
                    state["errors"] += 1
                conn_hdr = hdrs.get(b"connection", b"").lower()
                if conn_hdr == b"close" or (status_line.startswith(b"HTTP/1.0") and conn_hdr != b"keep-alive"):
                    writer.close()
                    writer = None
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                state["errors"] += 1
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), timeout=spec["seconds"] + 60)
    elapsed = time.perf_counter() - start
    lat.sort()
    return asdict(Load(len(lat), elapsed, len(lat) / elapsed, percentile(lat, 0.5), percentile(lat, 0.99),
                       state["errors"], "python-asyncio", state["bytes"]))


def loadgen_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_loadgen(spec))))
    return 0


# ---- results -----------------------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    case: str
    requests: int
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    mb_s: float | None = None
    compare: str = ""
    errors: int = 0
    tool: str = ""
    server_cpu: float | None = None
    client_cpu: float | None = None
    other_cpu: float | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)
    breakdown: list[str] = field(default_factory=list)
    machine: list[str] = field(default_factory=list)

    def add(self, section: str, case: str, load: Load, conc: int, *, mb_s: float | None = None,
            compare: str = "", cpu: CpuMeter | None = None) -> Row:
        row = Row(section, case, load.requests, conc, load.rps, load.p50_ms, load.p99_ms, mb_s, compare,
                  load.errors, load.tool)
        if cpu is not None:
            row.server_cpu, row.client_cpu, row.other_cpu = cpu.server, cpu.client, cpu.others
        self.rows.append(row)
        return row

    def render(self) -> str:
        rows = []
        for r in sorted(self.rows, key=lambda r: r.section):  # stable: run order within a section
            cpu = "" if r.server_cpu is None else f"{r.server_cpu:.0f}/{r.client_cpu:.0f}/{r.other_cpu:.0f}"
            rows.append([f"{r.section} {r.case}", f"{r.requests:,}", f"{r.concurrency}", f"{r.rps:,.0f}",
                         f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", "" if r.mb_s is None else f"{r.mb_s:,.0f}",
                         f"{r.errors}", cpu, r.tool, r.compare])
        return table(rows, ["case", "requests", "conc.", "req/s", "p50 ms", "p99 ms", "MB/s", "errors",
                            "CPU% srv/client/other", "client", "comparison"])


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
            met = f"; target {TARGET_RPS:,} req/s {'MET' if vid.rps >= TARGET_RPS else 'NOT met'}"
            report.notes.append(
                f"GET /v1/videos/{{id}} at {conc} connections: {vid.rps:,.0f} req/s "
                f"({vid.rps / base.rps:.2f}x healthz {base.rps:,.0f} req/s) - target >= {TARGET_RPS:,} req/s in one "
                f"process: {'MET' if vid.rps >= TARGET_RPS else 'NOT met'}")
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
    ("  logging (JSON formatter, stream write)", "any", re.compile(r"\((?:.*/)?logging/__init__\.py|aistats_gateway/logs\.py")),
    ("  prometheus_client", "any", re.compile(r"prometheus_client/")),
    ("SQLAlchemy (all of it)", "any", re.compile(r"sqlalchemy/")),
    ("  session/connection/pool: begin, close, checkout, reset", "any", re.compile(
        _f("close|_close_impl|__aexit__|__aenter__|_checkout|_checkin|_finalize_fairy|_do_return_conn|_reset|"
           "_connection_for_bind|connection|begin", r"sqlalchemy/"))),
    ("  statement cache keys / compile", "any", re.compile(r"sqlalchemy/sql/(?:compiler|cache_key)\.py|_compile_w_cache")),
    ("  ORM loading (rows -> objects, identity map)", "any", re.compile(r"sqlalchemy/orm/(?:loading|identity|state)\.py")),
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
_IDLE_LEAVES = re.compile(r"^(?:Runner\.run \(.*asyncio/runners\.py|_connection_worker_thread \(.*aiosqlite/core\.py:59\)"
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
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the handler writes here for the whole run
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(devnull)
    metrics = Metrics()
    app = create_app(settings, metrics=metrics)  # no lifespan: only what GET needs is set up below
    gw = app.state.gateway
    gw.runner = SimpleNamespace(sessions=gw.sessions)
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


async def _breakdown_create(spec: dict[str, Any]) -> list[list[Any]]:
    """Whole POST /v1/videos calls (ASGI, no HTTP) with timers wrapped around the named steps of
    ``videos.service.create``; the rest (auth, framework, rendering) is what is left over."""
    import logging
    from types import SimpleNamespace

    from aistats_gateway import logs
    from aistats_gateway.app import create_app, start_services, stop_services
    from aistats_gateway.http.middleware import Metrics
    from aistats_gateway.providers import registry
    from aistats_gateway.settings import load_settings
    from aistats_gateway.videos import parsing, service

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    devnull = open(os.devnull, "w")  # noqa: SIM115
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(devnull)
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
    gw.runner.sessions = lambda *a, **k: TimedSession(factory(*a, **k))
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
             ("DB sessions (runner.sessions: insert + hold, updates, reload)", ["db"])]
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
    fn = _breakdown_create if spec.get("mode") == "create" else _breakdown
    print(json.dumps(asyncio.run(fn(spec))))
    return 0


def _run_breakdown(gw: Gateway, spec: dict[str, Any]) -> tuple[list[list[Any]] | None, str]:
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_breakdown", json.dumps(spec)],
                       capture_output=True, text=True, timeout=600, env=gw.env, cwd=gw.data_dir,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        return None, f"in-process breakdown failed ({r.returncode}): {r.stderr[-1500:]}"
    return json.loads(r.stdout.strip().splitlines()[-1]), ""


def breakdown(gw: Gateway, key: str, video_path: str, n: int, report: Report) -> None:
    rows, err = _run_breakdown(gw, {"key": key, "video_id": video_path.rsplit("/", 1)[1], "n": n})
    if rows is None:
        report.breakdown.append(err)
        return
    report.breakdown.append(f"1b. In-process cost of the pieces of GET /v1/videos/{{id}} ({n} sequential calls each, "
                            "same database and settings, uvloop; CPU = all threads of the process):")
    report.breakdown.append(table([[name, f"{wall:.3f}", f"{cpu:.3f}"] for name, wall, cpu in rows],
                                  ["step", "wall ms/call", "CPU ms/call"]))
    report.breakdown.append("")


def breakdown_create(gw: Gateway, key: str, n: int, report: Report) -> None:
    rows, err = _run_breakdown(gw, {"mode": "create", "key": key, "n": n})
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


# ---- 3. /content downloads -----------------------------------------------------------------------------


def _sha256_download(port: int, path: str, headers: dict[str, str]) -> tuple[int, int, str]:
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        digest = hashlib.sha256()
        n = 0
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            n += len(chunk)
        return r.status, n, digest.hexdigest()
    finally:
        conn.close()


def bench_content(args: argparse.Namespace, gw: Gateway, auth: dict[str, str], procs: Procs, report: Report,
                  tmp: Path, use_wrk: bool) -> None:
    seconds, resolution = (4, "720p") if args.quick else (args.big_seconds, args.big_resolution)
    t = time.perf_counter()
    job = create_video(gw, auth, {"model": LOCAL_MODEL, "prompt": PROMPT, "seconds": seconds,
                                  "resolution": resolution})
    obj = wait_completed(gw, auth, job["id"], timeout=args.render_timeout)
    out = obj["outputs"][0]
    size = int(out["bytes"])
    log(f"  large video {obj['id']} ({seconds}s {resolution}, {obj['size']}) completed in "
        f"{time.perf_counter() - t:.1f}s: {size / 1e6:.1f} MB")
    stored = gw.data_dir / "blobs" / "videos" / obj["id"] / "0.mp4"
    if not stored.is_file() or stored.stat().st_size != size:
        raise RuntimeError(f"stored file {stored} missing or not {size} bytes")
    signed = urllib.parse.urlsplit(obj["download_url"])
    signed_path = f"{signed.path}?{signed.query}"
    content_path = f"/v1/videos/{obj['id']}/content"

    # static servers on the same file
    hs_port, fr_port = free_port(), free_port()
    hs = procs.start("http-server", [sys.executable, "-m", "http.server", str(hs_port), "--bind", HOST,
                                     "--directory", str(stored.parent)], env=py_env())
    fr = procs.start("file-response", [sys.executable, "-c", FILE_APP_CODE, str(stored), str(fr_port)], env=py_env())
    wait_http(procs, hs, hs_port, "/0.mp4", timeout=30)
    wait_http(procs, fr, fr_port, "/0.mp4", timeout=60)

    sources = [
        ("GET /v1/videos/{id}/content (API key)", gw.port, content_path, auth),
        ("GET signed download_url (no key)", gw.port, signed_path, {}),
        ("python -m http.server (same file)", hs_port, "/0.mp4", {}),
        ("Starlette FileResponse on uvicorn (same file)", fr_port, "/0.mp4", {}),
    ]
    pids = {sources[0][0]: gw.pid, sources[1][0]: gw.pid, sources[2][0]: hs.pid, sources[3][0]: fr.pid}
    want = hashlib.sha256(stored.read_bytes()).hexdigest()
    for name, port, path, headers in sources:
        status, n, digest = _sha256_download(port, path, headers)
        if status != 200 or n != size or digest != want:
            raise RuntimeError(f"{name}: status {status}, {n} bytes, sha256 {digest[:12]} (want {size}, {want[:12]})")
    log(f"  all four sources serve the same {size:,} bytes (sha256 {want[:12]}…)")

    try:
        for conc in (1, args.download_concurrency):
            loads: dict[str, Load] = {}
            meters: dict[str, CpuMeter] = {}
            for name, port, path, headers in sources:
                with CpuMeter(pids[name]) as meters[name]:
                    if use_wrk:
                        load = load_wrk(port, path, headers, conc=conc, threads=1 if conc == 1 else args.threads,
                                        seconds=args.download_duration, tmp=tmp)
                    else:
                        load = load_python(port, path, headers, conc=conc, seconds=args.download_duration,
                                           max_requests=args.max_downloads)
                loads[name] = load
                log(f"  {name} c={conc}: {load.rps:,.1f} req/s, {load.rps * size / 1e6:,.0f} MB/s")
            hs_mb = loads[sources[2][0]].rps * size / 1e6
            fr_mb = loads[sources[3][0]].rps * size / 1e6
            for name, *_ in sources:
                load = loads[name]
                mb = load.rps * size / 1e6
                if name == sources[2][0]:
                    cmp = "baseline"
                elif name == sources[3][0]:
                    cmp = f"baseline; {mb / hs_mb:.2f}x http.server" if hs_mb else "baseline"
                else:
                    cmp = (f"{mb / hs_mb:.2f}x http.server, {mb / fr_mb:.2f}x FileResponse" if hs_mb and fr_mb else "")
                report.add("3.", f"{name} [{size / 1e6:.1f} MB]", load, conc, mb_s=mb, compare=cmp, cpu=meters[name])
    finally:
        Procs.stop(hs)
        Procs.stop(fr)


# ---- main ------------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--_loadgen":
        return loadgen_main(sys.argv[2])
    if len(sys.argv) == 3 and sys.argv[1] == "--_breakdown":
        return breakdown_main(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--pg-url", default=PG_URL, help="PostgreSQL database for --backend postgres (a fresh schema "
                    "is created in it and dropped at the end) [env AISTATS_BENCH_PG_URL]")
    ap.add_argument("--quick", action="store_true", help="small counts, for a smoke test (< 1 min)")
    ap.add_argument("--duration", type=float, default=10, help="seconds per loaded GET case (default 10)")
    ap.add_argument("--connections", type=int, default=64, help="connections of the loaded GET case (default 64)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--creates", type=int, default=200, help="sequential creates per path (default 200)")
    ap.add_argument("--download-duration", type=float, default=5, help="seconds per download case (default 5)")
    ap.add_argument("--download-concurrency", type=int, default=8)
    ap.add_argument("--big-seconds", type=int, default=20, help="length of the download video (default 20)")
    ap.add_argument("--big-resolution", default="1080p", choices=["480p", "720p", "1080p"])
    ap.add_argument("--no-wrk", action="store_true", help="use the built-in Python load generator")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                    help="the gateway's log level (default info, the shipped default: one access-log line a request)")
    ap.add_argument("--profile", action="store_true", help="sample the server with py-spy under GET load (done "
                    "anyway in a full run when the target is not met)")
    ap.add_argument("--no-profile", action="store_true", help="never run the py-spy profile")
    ap.add_argument("--only", default="1,2,3", help="comma-separated sections to run (default 1,2,3)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data, profile) and "
                    "the PostgreSQL schema")
    args = ap.parse_args()
    args.warmup_creates, args.max_requests, args.max_downloads = 10, 2_000_000, 100_000
    args.create_budget, args.render_timeout = 240.0, 600.0
    if args.quick:
        args.duration, args.creates, args.download_duration, args.warmup_creates = 2, 30, 1, 3
        args.create_budget = 20.0
    if not (1 <= args.duration <= 120 and 1 <= args.connections <= 512 and 1 <= args.threads <= 16
            and 1 <= args.creates <= 5000 and 1 <= args.download_duration <= 120
            and 1 <= args.download_concurrency <= 64 and 1 <= args.big_seconds <= 20):
        ap.error("a count is out of its bounds")
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    use_wrk = not args.no_wrk and shutil.which("wrk") is not None
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored

    tmp = Path(tempfile.mkdtemp(prefix="aistats-bench-videos-"))
    procs = Procs(tmp)
    schema: PgSchema | None = None
    report = Report()
    started = time.perf_counter()
    try:
        data_dir = tmp / "data"
        data_dir.mkdir()
        env = py_env({"AISTATS_DATA_DIR": str(data_dir), "AISTATS_LOG_LEVEL": args.log_level})
        if args.backend == "postgres":
            schema = PgSchema(args.pg_url)
            env["AISTATS_DATABASE_URL"] = schema.create()
            log(f"PostgreSQL schema {schema.name}")
        fake_port, fake = 0, None
        if "2" in sections:
            fake_port = free_port()
            fake = procs.start("fake-openai", [sys.executable, "-c", FAKE_CODE, str(fake_port), FAKE_KEY],
                               env=py_env())
            wait_http(procs, fake, fake_port, "/v1/videos", {"Authorization": f"Bearer {FAKE_KEY}"}, timeout=60)
            env.update({"AISTATS_PROVIDER_OPENAI_API_KEY": FAKE_KEY,
                        "AISTATS_PROVIDER_OPENAI_BASE_URL": f"http://{HOST}:{fake_port}/v1",
                        "AISTATS_FETCH_ALLOW_PRIVATE": "true"})
        gw = Gateway(procs, data_dir, env)
        t = time.perf_counter()
        gw.start()
        log(f"gateway ({args.backend}) up on {HOST}:{gw.port}, pid {gw.pid}, in {time.perf_counter() - t:.1f}s; "
            f"load generator: {'wrk' if use_wrk else 'python asyncio (separate process)'}")
        # Credits: creates hold their estimated price (openai/sora-2: $0.10/s), and the fake's jobs never finish.
        key = json.loads(gw.cli("keys", "create", "--name", "bench", "--credits", "100000", "--json"))["key"]
        auth = {"Authorization": f"Bearer {key}"}

        # Section 2 runs last: the jobs it creates at the fake stay in progress and the server keeps polling
        # them in the background, which would disturb the GET and download measurements.
        if "1" in sections:
            log("1. GET /v1/videos/{id}")
            report.machine.append(f"before section 1: {cpu_pressure()}, load average {os.getloadavg()[0]:.2f}")
            video_path = bench_get(args, gw, auth, report, tmp, use_wrk)
            log("1b. in-process breakdown")
            breakdown(gw, key, video_path, 200 if args.quick else 1000, report)
            below = any(r.case == "GET /v1/videos/{id}" and r.concurrency == args.connections
                        and r.rps < TARGET_RPS for r in report.rows)
            if args.profile or (below and not args.quick and not args.no_profile):
                log("profiling GET /v1/videos/{id} with py-spy")
                profile_get(args, gw, auth, video_path, report, tmp, use_wrk)
        if "3" in sections:
            log("3. /content downloads")
            report.machine.append(f"before section 3: {cpu_pressure()}, load average {os.getloadavg()[0]:.2f}")
            bench_content(args, gw, auth, procs, report, tmp, use_wrk)
        if "2" in sections:
            log("2. create overhead")
            report.machine.append(f"before section 2: {cpu_pressure()}, load average {os.getloadavg()[0]:.2f}")
            bench_create(args, gw, fake_port, fake.pid, auth, report)
            log("2b. in-process create breakdown")
            breakdown_create(gw, key, 20 if args.quick else 100, report)

        print()
        print(f"aistats-gateway video benchmark - backend {args.backend}, 1 server process, log level "
              f"{args.log_level}, {os.cpu_count()} CPUs, load: "
              f"{'wrk' if use_wrk else 'python asyncio generator (separate process)'}, "
              f"{time.perf_counter() - started:.0f}s")
        report.machine.append(f"at the end: {cpu_pressure()}, load average {os.getloadavg()[0]:.2f}")
        print(report.render())
        print("CPU% srv/client/other: the server under test / the load generator / every other process on the "
              "machine, in % of one core, while the case ran (200 = both cores).")
        print("Machine: " + "; ".join(report.machine))
        if report.notes:
            print()
            for n in report.notes:
                print(f"- {n}")
        if report.breakdown:
            print()
            print("\n".join(report.breakdown))
        if report.profile:
            print()
            print("\n".join(report.profile))
        if args.json:
            args.json.write_text(json.dumps({"backend": args.backend, "rows": [asdict(r) for r in report.rows],
                                             "notes": report.notes, "breakdown": report.breakdown,
                                             "profile": report.profile, "machine": report.machine}, indent=2))
        errors = sum(r.errors for r in report.rows if "http.server" not in r.case)
        if errors:
            print(f"\n{errors} requests failed (non-2xx or socket errors); logs in {tmp}"
                  + ("" if args.keep else " (use --keep to keep them)"))
            return 1
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        procs.stop_all()
        if schema is not None and args.keep:
            log(f"kept PostgreSQL schema {schema.name} (drop it with: DROP SCHEMA \"{schema.name}\" CASCADE)")
        elif schema is not None:
            try:
                schema.drop()
            except Exception as e:
                log(f"could not drop schema {schema.name}: {e}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
