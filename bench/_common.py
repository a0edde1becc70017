"""Shared pieces of the video and job-engine benchmarks (``bench/videos_*.py``, ``bench/jobs_idle.py``).

Helpers, CPU accounting (``/proc``), subprocess bookkeeping (every process started is stopped at the
end, also on error, Ctrl-C or SIGTERM), the fake OpenAI server, a PostgreSQL schema per run, the
gateway under test, load generators (``wrk`` or a Python asyncio generator in its own process), the
result table, and ``run``: argument parsing and the setup/teardown every benchmark script shares.
Each script measures its baseline in the same run, so a loaded machine hits both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import Load, load_python, load_wrk, percentile  # noqa: F401 - re-exported for the scripts

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PG_URL = os.environ.get("AISTATS_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
LOCAL_MODEL = "local/procedural-video"
FAKE_KEY = "sk-test"
PROMPT = "A paper boat drifting down a rain-soaked street at dusk, cinematic"


# ---- small helpers ----------------------------------------------------------------------------


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


def mute_log_streams() -> TextIO:
    """Point the root logger's stream handlers at os.devnull; the caller closes the returned file when done.

    Synchronous on purpose: the in-process breakdowns call it once, before their measured section."""
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the handlers write here for the whole run; the caller closes it
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(devnull)
    return devnull


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
app = fakes.FAKES["openai"](api_key=sys.argv[2], render_seconds=float(sys.argv[3]) if len(sys.argv) > 3 else 3600.0)
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


# ---- the shared main ---------------------------------------------------------------------------------


@dataclass
class Bench:
    """What a benchmark section gets: the parsed arguments and the running gateway."""

    args: argparse.Namespace
    gw: Gateway
    key: str
    auth: dict[str, str]
    report: Report
    tmp: Path
    procs: Procs
    use_wrk: bool
    fake_port: int = 0
    fake_pid: int = 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc.split("\n\n", 1)[1])
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--pg-url", default=PG_URL, help="PostgreSQL database for --backend postgres (a fresh schema "
                    "is created in it and dropped at the end) [env AISTATS_BENCH_PG_URL]")
    ap.add_argument("--quick", action="store_true", help="small counts, for a smoke test (< 1 min)")
    ap.add_argument("--duration", type=float, default=10, help="seconds per loaded GET case (default 10)")
    ap.add_argument("--connections", type=int, default=64, help="connections of the loaded GET case (default 64)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--creates", type=int, default=200, help="sequential creates per path (default 200)")
    ap.add_argument("--in-flight", type=int, default=1000, help="jobs in flight at the fake before the create "
                    "case (default 1000)")
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
    ap.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data, profile) and "
                    "the PostgreSQL schema")
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.warmup_creates, args.max_requests, args.max_downloads = 10, 2_000_000, 100_000
    args.create_budget, args.render_timeout = 240.0, 600.0
    if args.quick:
        args.duration, args.creates, args.download_duration, args.warmup_creates = 2, 30, 1, 3
        args.create_budget = 20.0
        args.in_flight = min(args.in_flight, 100)
    if not (1 <= args.duration <= 120 and 1 <= args.connections <= 512 and 1 <= args.threads <= 16
            and 1 <= args.creates <= 5000 and 1 <= args.download_duration <= 120 and 0 <= args.in_flight <= 20000
            and 1 <= args.download_concurrency <= 64 and 1 <= args.big_seconds <= 20):
        ap.error("a count is out of its bounds")


def run(doc: str, title: str, body: Callable[[Bench], None], *, fake: bool = False,
        extra_env: dict[str, str] | None = None, fake_render_seconds: float = 3600.0,
        fake_code: str = FAKE_CODE, ap: argparse.ArgumentParser | None = None) -> int:
    """Parse the arguments, start the fake (when asked) and the gateway, run ``body``, print the report."""
    ap = ap or parser(doc)
    args = ap.parse_args()
    extra_env = dict(extra_env or {})
    for k, v in getattr(args, "env", None) or []:
        extra_env[k] = v
    check_args(ap, args)
    use_wrk = not args.no_wrk and shutil.which("wrk") is not None
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    tmp = Path(tempfile.mkdtemp(prefix="aistats-bench-"))
    procs = Procs(tmp)
    schema: PgSchema | None = None
    report = Report()
    started = time.perf_counter()
    try:
        data_dir = tmp / "data"
        data_dir.mkdir()
        env = py_env({"AISTATS_DATA_DIR": str(data_dir), "AISTATS_LOG_LEVEL": args.log_level, **(extra_env or {})})
        if args.backend == "postgres":
            schema = PgSchema(args.pg_url)
            env["AISTATS_DATABASE_URL"] = schema.create()
            log(f"PostgreSQL schema {schema.name}")
        fake_port, fake_pid = 0, 0
        if fake:
            fake_port = free_port()
            proc = procs.start("fake-openai", [sys.executable, "-c", fake_code, str(fake_port), FAKE_KEY,
                                               str(fake_render_seconds)], env=py_env())
            wait_http(procs, proc, fake_port, "/v1/videos", {"Authorization": f"Bearer {FAKE_KEY}"}, timeout=60)
            fake_pid = proc.pid
            env.update({"AISTATS_PROVIDER_OPENAI_API_KEY": FAKE_KEY,
                        "AISTATS_PROVIDER_OPENAI_BASE_URL": f"http://{HOST}:{fake_port}/v1",
                        "AISTATS_FETCH_ALLOW_PRIVATE": "true"})
        gw = Gateway(procs, data_dir, env)
        t = time.perf_counter()
        gw.start()
        log(f"gateway ({args.backend}) up on {HOST}:{gw.port}, pid {gw.pid}, in {time.perf_counter() - t:.1f}s; "
            f"load generator: {'wrk' if use_wrk else 'python asyncio (separate process)'}")
        # Credits: creates hold their estimated price (openai/sora-2: $0.10/s), and the fake's jobs never finish.
        key = json.loads(gw.cli("keys", "create", "--name", "bench", "--credits", "10000000", "--json"))["key"]
        auth = {"Authorization": f"Bearer {key}"}
        report.machine.append(f"at the start: {cpu_pressure()}, load average {os.getloadavg()[0]:.2f}")
        body(Bench(args, gw, key, auth, report, tmp, procs, use_wrk, fake_port, fake_pid))
        print()
        print(f"aistats-gateway {title} - backend {args.backend}, 1 server process, log level "
              f"{args.log_level}, {os.cpu_count()} CPUs, load: "
              f"{'wrk' if use_wrk else 'python asyncio generator (separate process)'}, "
              f"{time.perf_counter() - started:.0f}s")
        report.machine.append(f"at the end: {cpu_pressure()}, load average {os.getloadavg()[0]:.2f}")
        if report.rows:
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


def run_in_subprocess(script: Path, flag: str, spec: dict[str, Any], env: dict[str, str], cwd: Path,
                      timeout: float = 600) -> tuple[Any, str]:
    """``python script flag <spec json>``; its last stdout line as JSON, or (None, the error)."""
    r = subprocess.run([sys.executable, str(script), flag, json.dumps(spec)], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        return None, f"{script.name} {flag} failed ({r.returncode}): {r.stderr[-1500:]}"
    return json.loads(r.stdout.strip().splitlines()[-1]), ""


if __name__ == "__main__":
    sys.exit("bench/_common.py is a library; run bench/videos_read.py, videos_create.py, videos_content.py "
             "or jobs_idle.py")
