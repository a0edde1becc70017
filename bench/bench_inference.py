"""Benchmark of POST /v1/chat/completions: the gateway against LiteLLM's proxy, in front of the same mock.

    /work/main/.venv/bin/python bench/bench_inference.py             # full run, ~3 min (+ LiteLLM install)
    /work/main/.venv/bin/python bench/bench_inference.py --quick     # shorter segments, a smoke test
    /work/main/.venv/bin/python bench/bench_inference.py --no-litellm --profile 8

What it does, everything on 127.0.0.1, bounded in count and time (each segment a few seconds):

1. starts ``bench/mock_upstream.py`` (a raw asyncio OpenAI-compatible mock) in its own process and loads
   it alone with the load generator at 1 and 64 connections: the mock's rate must be well above the
   systems under test, else the run says so (it also bounds what the load generator can drive);
2. starts one ``aistats-gateway serve`` process (SQLite in a temporary data directory, a key funded with
   ``keys create --credits``, ``AISTATS_PROVIDER_OPENAI_BASE_URL`` at the mock), billing and the
   generation record on as in production;
3. installs LiteLLM's proxy in its own venv (``$TMPDIR/aistats-bench/litellm-venv``, reused when
   already installed; ``--no-litellm`` skips it, an install failure is reported and the gateway's figures
   are printed alone) and starts it single-worker with a config.yaml whose ``openai/`` model has the
   mock as ``api_base``;
4. measures, interleaved round by round (mock direct, gateway, LiteLLM, mock, gateway, …) with the
   same load generator: latency at 1 connection non-streaming and streaming (time to the first body
   byte and to the end), then throughput at 64 connections non-streaming while sampling the RSS of
   each server's process tree from ``/proc``;
5. optionally (``--profile S``) records the gateway for S seconds under 64-connection load with
   py-spy and prints the hottest functions (self and inclusive time);
6. prints the tables against the targets; every process started is stopped at the end, also on error.

The load generator is a raw asyncio HTTP/1.1 client (keep-alive, closed loop, uvloop) in its own
process; it parses Content-Length and chunked answers and counts non-200 answers as errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HOST, Procs, cpu_pressure, free_port, log, py_env, table, wait_http

ROOT = Path(__file__).resolve().parent.parent
MODEL = "openai/gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
LITELLM_KEY = "sk-bench-" + "7f3a9c2e" * 4  # LiteLLM refuses to start without a master key
LITELLM_DIR = Path(tempfile.gettempdir()) / "aistats-bench" / "litellm-venv"


# ---- load generator (runs in its own process: ``--_loadgen SPEC``) -------------------------------------


async def _read_answer(reader: asyncio.StreamReader, t0: float) -> tuple[int, float, bool]:
    """Read one HTTP/1.1 answer: (status, seconds to the first body byte, server closes)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    low = head.lower()
    first = 0.0
    if b"transfer-encoding: chunked" in low:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            await reader.readexactly(size + 2)
            if not first:
                first = time.perf_counter() - t0
    else:
        i = low.find(b"content-length:")
        n = int(low[i + 15:low.find(b"\r\n", i)]) if i >= 0 else 0
        if n:
            await reader.readexactly(n)
        first = time.perf_counter() - t0
    return status, first, b"connection: close" in low


async def _loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(spec["body"]).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in spec["headers"].items())
    req = (f"POST {spec['path']} HTTP/1.1\r\nhost: {HOST}:{spec['port']}\r\ncontent-type: application/json\r\n"
           f"{head}content-length: {len(body)}\r\n\r\n").encode() + body
    total: list[float] = []
    ttfb: list[float] = []
    errors: Counter[str] = Counter()
    stop = time.perf_counter() + spec["seconds"]
    cap = spec.get("max_requests") or 10**9

    async def worker() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.perf_counter() < stop and len(total) < cap:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, spec["port"])
                assert reader is not None
                t0 = time.perf_counter()
                writer.write(req)
                status, first, close = await asyncio.wait_for(_read_answer(reader, t0), 60)
                elapsed = time.perf_counter() - t0
                if status == 200:
                    total.append(elapsed)
                    ttfb.append(first)
                else:
                    errors[str(status)] += 1
                if close:
                    writer.close()
                    writer = None
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                errors[type(e).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()

    t_start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(spec["conns"])))
    wall = time.perf_counter() - t_start
    return {"n": len(total), "wall": wall, "total": total, "ttfb": ttfb, "errors": dict(errors)}


def loadgen_main(spec_json: str) -> int:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    spec = json.loads(spec_json)
    Path(spec["out"]).write_text(json.dumps(asyncio.run(_loadgen(spec))))
    return 0


def run_load(port: int, path: str, body: dict[str, Any], conns: int, seconds: float,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        spec = {"port": port, "path": path, "body": body, "conns": conns, "seconds": seconds,
                "headers": headers or {}, "out": f.name}
        r = subprocess.run([sys.executable, __file__, "--_loadgen", json.dumps(spec)], capture_output=True,
                           text=True, timeout=seconds + 120, env=py_env())
        if r.returncode != 0:
            raise RuntimeError(f"load generator failed: {r.stderr[-2000:]}")
        out: dict[str, Any] = json.loads(Path(f.name).read_text())
    return out


# ---- /proc --------------------------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
    return pids


def rss_mb(pid: int) -> float:
    """Resident memory (MiB) of a process and its descendants."""
    kb = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
    return kb / 1024


def cpu_s(pid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    s = 0.0
    for p in _tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            s += (int(f[11]) + int(f[12])) / tick
    return s


class RssPeak:
    """Samples the RSS of a process tree every 0.2 s while in use; ``peak`` in MiB."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()

    def __enter__(self) -> RssPeak:
        if self.pid is not None:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self) -> None:
        assert self.pid is not None
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(0.2)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.pid is not None:
            self._t.join()


# ---- the systems under test ------------------------------------------------------------------------------


class Target:
    def __init__(self, name: str, port: int, path: str, model: str, headers: dict[str, str], pid: int | None) -> None:
        self.name, self.port, self.path, self.model, self.headers, self.pid = name, port, path, model, headers, pid

    def body(self, stream: bool) -> dict[str, Any]:
        b: dict[str, Any] = {"model": self.model, "messages": MESSAGES, "max_tokens": 32}
        if stream:
            b["stream"] = True
            b["stream_options"] = {"include_usage": True}
        return b


def check_answer(t: Target) -> None:
    import http.client

    c = http.client.HTTPConnection(HOST, t.port, timeout=30)
    try:
        c.request("POST", t.path, json.dumps(t.body(False)), {"content-type": "application/json", **t.headers})
        r = c.getresponse()
        data = r.read()
    finally:
        c.close()
    if r.status != 200 or b'"choices"' not in data:
        raise RuntimeError(f"{t.name}: POST {t.path} answered {r.status}: {data[:500]!r}")


def start_gateway(procs: Procs, tmp: Path, mock_port: int) -> Target:
    data = tmp / "gateway"
    data.mkdir()
    env = py_env({"AISTATS_DATA_DIR": str(data), "AISTATS_PROVIDER_OPENAI_BASE_URL": f"http://{HOST}:{mock_port}/v1",
                  "AISTATS_PROVIDER_OPENAI_API_KEY": "sk-mock", "AISTATS_LOG_LEVEL": "warning"})
    exe = Path(sys.executable).with_name("aistats-gateway")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "aistats_gateway.cli"]
    subprocess.run([*cmd, "migrate"], env=env, cwd=data, check=True, capture_output=True, timeout=300)
    r = subprocess.run([*cmd, "keys", "create", "--name", "bench", "--credits", "100000", "--json"], env=env,
                       cwd=data, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"keys create failed: {r.stderr[-2000:]}")
    info = json.loads(r.stdout)
    secret = info.get("key") or info.get("secret") or info.get("api_key")
    port = free_port()
    proc = procs.start("gateway", [*cmd, "serve", "--host", HOST, "--port", str(port)], env=env, cwd=data)
    wait_http(procs, proc, port, "/healthz", timeout=180)
    t = Target("gateway", port, "/v1/chat/completions", MODEL, {"authorization": f"Bearer {secret}"}, proc.pid)
    check_answer(t)
    return t


def install_litellm() -> tuple[Path | None, str]:
    exe = LITELLM_DIR / "bin" / "litellm"
    py = LITELLM_DIR / "bin" / "python"
    if exe.exists() and subprocess.run([str(py), "-c", "import litellm.proxy.proxy_server"],
                                       capture_output=True, timeout=300).returncode == 0:
        return exe, "already installed"
    log(f"installing litellm[proxy] into {LITELLM_DIR} (several minutes) …")
    try:
        LITELLM_DIR.parent.mkdir(parents=True, exist_ok=True)
        if not py.exists():
            subprocess.run(["python3", "-m", "venv", str(LITELLM_DIR)], check=True, capture_output=True, timeout=300)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "litellm[proxy]"], capture_output=True,
                           text=True, timeout=1200)
        if r.returncode != 0:
            return None, f"pip install failed: {r.stderr[-600:]}"
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"install failed: {e}"
    return (exe, "installed by this run") if exe.exists() else (None, "install produced no litellm executable")


def litellm_version() -> str:
    py = LITELLM_DIR / "bin" / "python"
    r = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                       capture_output=True, text=True, timeout=60)
    return r.stdout.strip() or "?"


def start_litellm(procs: Procs, tmp: Path, exe: Path, mock_port: int) -> Target:
    cfg = tmp / "litellm-config.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: mock-model\n"
        "    litellm_params:\n"
        "      model: openai/mock-model\n"
        f"      api_base: http://{HOST}:{mock_port}/v1\n"
        "      api_key: sk-mock\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  set_verbose: false\n"
        "  telemetry: false\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISTATS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true",
                "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"})
    proc = procs.start("litellm", [str(exe), "--config", str(cfg), "--host", HOST, "--port", str(port),
                                   "--num_workers", "1"], env=env, cwd=tmp)
    wait_http(procs, proc, port, "/health/liveliness", timeout=300)
    t = Target("LiteLLM", port, "/v1/chat/completions", "mock-model", {"authorization": f"Bearer {LITELLM_KEY}"},
               proc.pid)
    check_answer(t)
    return t


# ---- measurement ---------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] * 1000


class Acc:
    """Latencies and counts of one (target, case) over the interleaved rounds."""

    def __init__(self) -> None:
        self.total: list[float] = []
        self.ttfb: list[float] = []
        self.n, self.wall, self.cpu, self.rss = 0, 0.0, 0.0, 0.0
        self.errors: Counter[str] = Counter()

    def add(self, r: dict[str, Any]) -> None:
        self.total += r["total"]
        self.ttfb += r["ttfb"]
        self.n += r["n"]
        self.wall += r["wall"]
        self.errors.update(r["errors"])

    @property
    def rps(self) -> float:
        return self.n / self.wall if self.wall else 0.0


def measure(targets: list[Target], case: str, conns: int, rounds: int, seconds: float) -> dict[str, Acc]:
    stream = case == "stream"
    accs = {t.name: Acc() for t in targets}
    for t in targets:  # warm-up (connections, caches, JIT-free but lazy imports)
        run_load(t.port, t.path, t.body(stream), conns, min(1.0, seconds), t.headers)
    for i in range(rounds):
        for t in targets:
            with RssPeak(t.pid) as peak:
                c0 = cpu_s(t.pid) if t.pid else 0.0
                r = run_load(t.port, t.path, t.body(stream), conns, seconds, t.headers)
                c1 = cpu_s(t.pid) if t.pid else 0.0
            a = accs[t.name]
            a.add(r)
            a.cpu += c1 - c0
            a.rss = max(a.rss, peak.peak)
            log(f"  {case:6} conns={conns:<3} round {i + 1}/{rounds} {t.name:8}: {r['n'] / r['wall']:8.0f} req/s  "
                f"p50 {pct(r['total'], 0.5):7.3f} ms  errors {r['errors'] or 0}")
    return accs


def profile(procs: Procs, gw: Target, seconds: float, tmp: Path) -> list[str]:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return ["py-spy not installed next to the interpreter"]
    out = tmp / "profile.txt"
    p = subprocess.Popen([str(spy), "record", "-p", str(gw.pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw",
                          "-o", str(out), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    run_load(gw.port, gw.path, gw.body(False), 64, seconds, gw.headers)
    _, err = p.communicate(timeout=seconds + 60)
    if not out.exists():
        return [f"py-spy failed: {err.decode(errors='replace')[-500:]}"]
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not stack:
            continue
        n = int(n_s)
        frames = stack.split(";")
        total += n
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"py-spy, {seconds:.0f} s at 64 connections non-streaming, {total} samples (GIL-holding and idle)"]
    lines.append("self time:")
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in self_t.most_common(15)]
    lines.append("inclusive time:")
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in incl.most_common(40)]
    return lines


# ---- main -----------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short segments (a smoke test)")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per latency segment (x rounds)")
    ap.add_argument("--load-seconds", type=float, default=5.0, help="seconds per 64-connection segment (x rounds)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", type=float, default=0.0, help="seconds of py-spy on the gateway at the end")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.load_seconds, args.rounds = 1.0, 2.0, 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    procs = Procs(tmp)
    notes: list[str] = []
    started = time.time()
    try:
        mock_port = free_port()
        mock = procs.start("mock", [sys.executable, str(ROOT / "bench" / "mock_upstream.py"), "--port", str(mock_port)],
                           env=py_env())
        wait_http(procs, mock, mock_port, "/health", timeout=30)
        mock_t = Target("mock", mock_port, "/v1/chat/completions", "mock-model", {}, mock.pid)
        # 1. the mock alone, with the load generator used for everything below
        log("mock alone …")
        mock_alone = {(c, s): run_load(mock_port, mock_t.path, mock_t.body(s), c, 2.0 if c > 1 else 1.0)
                      for c in (1, 64) for s in (False, True)}
        gw = start_gateway(procs, tmp, mock_port)
        targets = [mock_t, gw]
        ll_status = "skipped (--no-litellm)"
        if not args.no_litellm:
            exe, ll_status = install_litellm()
            if exe is None:
                notes.append(f"LiteLLM: {ll_status}; the gateway's figures alone.")
            else:
                try:
                    targets.append(start_litellm(procs, tmp, exe, mock_port))
                    ll_status = f"litellm {litellm_version()} ({ll_status}), proxy with --num_workers 1"
                except (RuntimeError, OSError) as e:
                    notes.append(f"LiteLLM did not start: {e}")
                    ll_status = "did not start"
        load0 = os.getloadavg()
        log("latency at 1 connection …")
        plain = measure(targets, "plain", 1, args.rounds, args.seconds)
        stream = measure(targets, "stream", 1, args.rounds, args.seconds)
        log("throughput at 64 connections …")
        load = measure(targets, "plain", 64, args.rounds, args.load_seconds)
        load1 = os.getloadavg()
        prof = profile(procs, gw, args.profile, tmp) if args.profile > 0 else []
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    # ---- report
    print(f"# bench_inference.py — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
          f"{os.cpu_count()} CPUs, load average {load0[0]:.1f} before / {load1[0]:.1f} after the measurements; "
          f"{cpu_pressure()}")
    print(f"# LiteLLM: {ll_status}")
    print("\n## The mock alone (load generator → mock; must be far above the systems under test)\n")
    rows = [[f"{'stream' if s else 'plain'} conns={c}", f"{r['n'] / r['wall']:.0f}", f"{pct(r['total'], 0.5):.3f}",
             f"{pct(r['total'], 0.99):.3f}", ""] for (c, s), r in mock_alone.items()]
    print(table(rows, ["case", "req/s", "p50 ms", "p99 ms", ""]))
    m_p, m_s, m_l = plain["mock"], stream["mock"], load["mock"]
    print(f"\n## 1 connection, interleaved ({args.rounds} rounds x {args.seconds:.0f} s per system), "
          "overhead = p50 minus the mock's p50 in the same run\n")
    rows = []
    for t in targets:
        p, s = plain[t.name], stream[t.name]
        rows.append([t.name, f"{pct(p.total, 0.5):.3f}", f"{pct(p.total, 0.95):.3f}",
                     f"{pct(p.total, 0.5) - pct(m_p.total, 0.5):+.3f}" if t is not mock_t else "—",
                     f"{pct(s.ttfb, 0.5):.3f}", f"{pct(s.ttfb, 0.95):.3f}",
                     f"{pct(s.ttfb, 0.5) - pct(m_s.ttfb, 0.5):+.3f}" if t is not mock_t else "—",
                     f"{pct(s.total, 0.5):.3f}", f"{sum(p.errors.values()) + sum(s.errors.values())}"])
    print(table(rows, ["system", "plain p50 ms", "plain p95 ms", "overhead p50", "stream TTFB p50",
                       "TTFB p95", "TTFB overhead p50", "stream end p50", "errors"]))
    print(f"\n## 64 connections non-streaming, interleaved ({args.rounds} rounds x {args.load_seconds:.0f} s)\n")
    rows = []
    for t in targets:
        a = load[t.name]
        rows.append([t.name, f"{a.rps:.0f}", f"{pct(a.total, 0.5):.2f}", f"{pct(a.total, 0.99):.2f}",
                     f"{100 * a.cpu / a.wall:.0f} %" if a.wall else "", f"{a.rss:.0f}",
                     f"{a.rps / load['LiteLLM'].rps:.1f}x" if "LiteLLM" in load and load["LiteLLM"].rps else "",
                     f"{sum(a.errors.values())}"])
    print(table(rows, ["system", "req/s", "p50 ms", "p99 ms", "server CPU (of 1 core)", "peak RSS MiB",
                       "vs LiteLLM", "errors"]))
    g = load["gateway"]
    ov = pct(plain["gateway"].total, 0.5) - pct(m_p.total, 0.5)
    ovs = pct(stream["gateway"].ttfb, 0.5) - pct(m_s.ttfb, 0.5)
    checks = [("overhead p50 non-streaming ≤ 1 ms", f"{ov:.3f} ms", ov <= 1.0),
              ("overhead p50 TTFB streaming ≤ 1 ms", f"{ovs:.3f} ms", ovs <= 1.0),
              ("≥ 1,500 req/s at 64 connections", f"{g.rps:.0f} req/s", g.rps >= 1500),
              ("RSS under load < 200 MB", f"{g.rss * 1.048576:.0f} MB", g.rss * 1.048576 < 200)]
    if "LiteLLM" in load and load["LiteLLM"].rps:
        x = g.rps / load["LiteLLM"].rps
        checks.append(("≥ 10x LiteLLM single-worker req/s", f"{x:.1f}x", x >= 10))
    if m_l.rps < 3 * g.rps:
        notes.append(f"the mock served only {m_l.rps:.0f} req/s through this load generator, "
                     f"< 3x the gateway: the load side may limit the figures")
    print("\n## Targets (one gateway process)\n")
    print(table([[c, v, "met" if ok else "NOT met"] for c, v, ok in checks], ["target", "measured", ""]))
    for n in notes:
        print(f"\nNote: {n}")
    if prof:
        print("\n## Profile of the gateway\n")
        print("\n".join(prof))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_loadgen":
        sys.exit(loadgen_main(sys.argv[2]))
    sys.exit(main())
