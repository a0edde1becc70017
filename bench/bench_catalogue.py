"""Benchmark of the catalogue endpoints with a 1,000-model catalogue.

    .venv/bin/python bench/bench_catalogue.py            # full run, ~1.5 min
    .venv/bin/python bench/bench_catalogue.py --quick    # smaller counts, a smoke test

What it does, all on 127.0.0.1 and bounded in count and time:

1. writes a synthetic catalogue overlay (1,000 models: chat, video, image, embedding, audio and
   batch models, 2-5 providers each, video parameter-detail maps with aliases, price rules) to a
   temporary data directory;
2. starts a real ``aistats-gateway serve`` subprocess on it (SQLite in the data directory, the
   overlay synced at start via ``AISTATS_CATALOGUE_FILE``) and creates a key with the CLI;
3. per case: one first request (an uncached render), a sequential run (concurrency 1, one
   keep-alive connection) and a loaded closed-loop run (``wrk`` when installed, else a built-in
   asyncio HTTP/1.1 generator);
4. measures the uncached render cost of the same queries in-process (no HTTP, no auth);
5. prints the tables; the server is stopped and the temporary directory removed at the end, also
   on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
N_MODELS = 1000
SEED = 1000

# ---- synthetic catalogue --------------------------------------------------------------------

# Organisations (from the shipped catalogue's list) and the providers that serve their models.
ORGS = ["openai", "google", "anthropic", "meta", "mistral", "qwen", "deepseek", "x-ai", "bytedance", "kuaishou",
        "luma", "runway", "minimax", "cohere", "amazon", "microsoft", "nvidia", "black-forest-labs"]
BENCH_PROVIDERS = [f"bench-cloud-{i:02d}" for i in range(12)]
SHIPPED_PROVIDERS = ["openai", "google-vertex", "together", "groq", "amazon-bedrock", "fal"]
KINDS = [  # kind, share of models, endpoints, input types, output types
    ("chat", 0.50, ["chat.completions"], ["text", "image"], ["text"]),
    ("video", 0.20, ["video.generation"], ["text", "image"], ["video"]),
    ("image", 0.10, ["images.generations"], ["text"], ["image"]),
    ("embed", 0.06, ["embeddings"], ["text"], ["embedding"]),
    ("tts", 0.04, ["audio.speech"], ["text"], ["audio"]),
    ("stt", 0.04, ["audio.transcription"], ["audio"], ["text"]),
    ("batch", 0.06, ["chat.completions", "batch"], ["text"], ["text"]),
]
STATUSES = ["active"] * 14 + ["deprecated", "retired", "announced", "rumoured"]


def _video_params(rng: random.Random) -> dict[str, Any]:
    durations = sorted(rng.sample([2, 4, 5, 6, 8, 10, 12, 15, 20], rng.randint(2, 4)))
    resolutions = rng.sample(["480p", "720p", "1080p", "4K"], rng.randint(1, 3))
    params: dict[str, Any] = {
        "duration": {"type": "integer", "values": durations, "default": durations[0],
                     "aliases": ["duration_seconds", "seconds"]},
        "resolution": {"type": "string", "values": resolutions, "default": resolutions[0], "aliases": ["size"],
                       "description": "Output resolution"},
        "aspect_ratio": {"type": "string", "values": rng.sample(["16:9", "9:16", "1:1", "4:3"], 2)},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "negative_prompt": {"type": "string"},
        "fps": {"type": "integer", "values": [24, 30]},
        "audio": {"type": "boolean", "default": False, "aliases": ["generate_audio"]},
        "input_references": {"type": "array", "values": ["first_frame", "last_frame", "reference"]},
    }
    # Some providers lack some parameters, so the params filter has something to filter.
    for name in ("fps", "audio", "negative_prompt"):
        if rng.random() < 0.4:
            del params[name]
    if rng.random() < 0.25:  # e.g. a provider without a size/resolution choice
        del params["resolution"]
    return params


def _chat_params(rng: random.Random) -> dict[str, Any]:
    params: dict[str, Any] = {
        "max_tokens": {"type": "integer", "minimum": 1, "aliases": ["max_completion_tokens"]},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 1},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "tools": {"type": "array"},
        "tool_choice": {"description": "none, auto, required or a named tool"},
        "response_format": {"type": "object"},
        "stream": {"type": "boolean", "default": False},
        "seed": {"type": "integer"},
    }
    if rng.random() < 0.5:
        params["reasoning_effort"] = {"type": "string", "values": ["low", "medium", "high"], "default": "medium"}
    return params


def _pricing(rng: random.Random, kind: str) -> list[dict[str, Any]]:
    def price(lo: float, hi: float) -> str:
        return f"{rng.uniform(lo, hi):.4f}"

    if kind == "video":
        return [{"meter": "output_video_seconds", "unit": "second", "price": price(0.05, 0.6),
                 "when": {"resolution": r}} for r in ("720p", "1080p")]
    if kind == "image":
        return [{"meter": "output_image", "unit": "image", "price": price(0.01, 0.2)}]
    if kind == "tts":
        return [{"meter": "input_characters", "unit": "character", "unit_size": 1_000_000, "price": price(5, 30)}]
    if kind == "stt":
        return [{"meter": "input_audio_seconds", "unit": "second", "price": price(0.0001, 0.001)}]
    rules = [{"meter": "input_tokens", "unit": "token", "unit_size": 1_000_000, "price": price(0.05, 5)},
             {"meter": "output_tokens", "unit": "token", "unit_size": 1_000_000, "price": price(0.2, 20)}]
    if kind in ("chat", "batch"):
        rules.append({"meter": "cached_input_tokens", "unit": "token", "unit_size": 1_000_000,
                      "price": price(0.01, 0.5)})
    if kind == "batch":
        rules.append({"meter": "input_tokens", "unit": "token", "unit_size": 1_000_000, "price": price(0.02, 2),
                      "plan": "batch"})
    return rules


def synthetic_catalogue(n_models: int = N_MODELS, seed: int = SEED) -> dict[str, Any]:
    """An overlay with ``n_models`` models; deterministic for a given seed."""
    rng = random.Random(seed)
    providers = [{"id": p, "name": f"Bench Cloud {p[-2:]}", "link": f"https://{p}.example",
                  "country_code": rng.choice(["US", "FR", "DE", "SG", None])} for p in BENCH_PROVIDERS]
    kinds = [k for k in KINDS for _ in range(round(k[1] * n_models))]
    kinds = (kinds + [KINDS[0]] * n_models)[:n_models]
    rng.shuffle(kinds)
    models = []
    for i, (kind, _, endpoints, inputs, outputs) in enumerate(kinds):
        org = rng.choice(ORGS)
        slug = f"bench-{kind}-{i:04d}"
        offers = []
        for prov in rng.sample(BENCH_PROVIDERS + SHIPPED_PROVIDERS, rng.randint(2, 5)):
            offer: dict[str, Any] = {
                "provider": prov,
                "provider_model_slug": f"{org}-{slug}",
                "endpoints": list(endpoints),
                "input_modalities": list(inputs),
                "output_modalities": list(outputs),
                "effective_from": "2025-01-01T00:00:00Z",
                "alpha": rng.random() < 0.1,
                "pricing": _pricing(rng, kind),
            }
            if kind == "video":
                offer["parameters"] = {"video.generation": _video_params(rng)}
            elif kind in ("chat", "batch"):
                offer["parameters"] = {"chat.completions": _chat_params(rng)}
                if kind == "batch":
                    offer["parameters"]["batch"] = {
                        "endpoint": {"values": ["/v1/chat/completions", "/v1/responses"],
                                     "aliases": ["request_endpoint"]},
                        "completion_window": {"values": ["24h"], "aliases": ["window"]},
                    }
            offers.append(offer)
        models.append({
            "model_id": f"{org}/{slug}",
            "name": f"Bench {kind.title()} {i}",
            "organisation": org,
            "status": rng.choice(STATUSES),
            "release_date": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "aliases": [f"{slug}-latest"],
            "input_types": list(inputs),
            "output_types": list(outputs),
            "description": f"Synthetic {kind} model for benchmarks.",
            "providers": offers,
        })
    return {"schema_version": 1, "providers": providers, "models": models}


# ---- cases ------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    path: str
    auth: bool = True
    # Paths for a cache-busting case: requests cycle through them.
    paths: list[str] = field(default_factory=list)


def cases(total_models: int) -> list[Case]:
    paging = [f"/v1/models?limit=50&offset={o}" for o in range(0, max(total_models - 50, 1))]
    return [
        Case("healthz (baseline)", "/healthz", auth=False),
        Case("models limit=50", "/v1/models?limit=50"),
        Case("models filters limit=50",
             "/v1/models?organisation=openai,google&include_endpoints=chat.completions&input_types=image&limit=50"),
        Case("videos/models params", "/v1/videos/models?params=size,duration_seconds"),
        # Every request a different page: more distinct queries than the 1,024-entry response cache
        # holds, so (after the first cycle) every request filters and renders 50 models.
        Case("models paging (uncached)", paging[0], paths=paging),
    ]


# ---- HTTP clients -----------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


@dataclass
class Result:
    case: str
    mode: str
    requests: int
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    tool: str = ""
    server_p50_ms: float | None = None  # from the server's access log (duration_ms), when logged


def _get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def first_request(port: int, case: Case, headers: dict[str, str]) -> tuple[float, int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        t = time.perf_counter()
        status, body = _get(conn, case.path, headers)
        return (time.perf_counter() - t) * 1000, status, body
    finally:
        conn.close()


def sequential(server: Server, case: Case, headers: dict[str, str], n: int) -> Result:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
    lat: list[float] = []
    errors = 0
    paths = case.paths or [case.path]
    try:
        # Warm the connection, the response cache (cached cases) or, for a cache-busting case, the
        # per-snapshot parts of every model it will render (one full cycle).
        for i in range(max(20, len(paths)) if case.paths else 20):
            _get(conn, paths[i % len(paths)], headers)
        log_offset = server.log_offset()
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            status, _ = _get(conn, paths[i % len(paths)], headers)
            lat.append((time.perf_counter() - t) * 1000)
            errors += status != 200
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    lat.sort()
    server_side = server.durations_since(log_offset)
    return Result(case.name, "sequential", n, 1, n / elapsed, percentile(lat, 0.5), percentile(lat, 0.99),
                  errors, "http.client", percentile(server_side, 0.5) if len(server_side) >= n // 2 else None)


async def _loaded_async(port: int, case: Case, headers: dict[str, str], n: int, conc: int) -> Result:
    """Closed loop: ``conc`` keep-alive connections, each sending its next request when the last
    response has been read, until ``n`` requests have been answered."""
    paths = case.paths or [case.path]
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    lat: list[float] = []
    errors = 0
    counter = 0

    async def worker() -> None:
        nonlocal counter, errors
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while counter < n:
                i = counter
                counter += 1
                req = f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{head}\r\n".encode()
                t = time.perf_counter()
                writer.write(req)
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                await reader.readexactly(length)
                lat.append((time.perf_counter() - t) * 1000)
                if status_line.split(b" ", 2)[1:2] != [b"200"]:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), timeout=300)
    elapsed = time.perf_counter() - start
    lat.sort()
    return Result(case.name, "loaded", len(lat), conc, len(lat) / elapsed, percentile(lat, 0.5),
                  percentile(lat, 0.99), errors, "python-asyncio")


def loaded_python(port: int, case: Case, headers: dict[str, str], n: int, conc: int) -> Result:
    return asyncio.run(_loaded_async(port, case, headers, n, conc))


_WRK_LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""


def _wrk_ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not m:
        raise ValueError(f"cannot parse wrk latency {value!r}")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def loaded_wrk(port: int, case: Case, headers: dict[str, str], seconds: int, conc: int, tmp: Path) -> Result:
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    if case.paths:
        script = tmp / "paths.lua"
        script.write_text(_WRK_LUA % ", ".join(json.dumps(p) for p in case.paths))
        cmd += ["-s", str(script)]
    cmd.append(f"http://{HOST}:{port}{case.path}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    dist = dict(re.findall(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M))
    total_m = re.search(r"(\d+) requests in", out)
    rps_m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not total_m or not rps_m or "50" not in dist or "99" not in dist:
        raise RuntimeError(f"cannot parse the output of {' '.join(cmd)}:\n{out}")
    total, rps = int(total_m.group(1)), float(rps_m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return Result(case.name, "loaded", total, conc, rps, _wrk_ms(dist["50"]), _wrk_ms(dist["99"]), errors, "wrk")


# ---- catalogue reload -----------------------------------------------------------------------------


def reload_stall(server: Server, overlay_path: Path, auth: dict[str, str]) -> tuple[float, float, float, int]:
    """After ``catalogue sync`` (a new catalogue version), the first catalogue request makes the
    server load the new snapshot. Returns that request's latency, the p50 and the max latency of
    /healthz requests sent back to back meanwhile (on another connection), and how many there were."""
    import threading

    server.cli("catalogue", "sync", str(overlay_path), timeout=300)
    time.sleep(1.2)  # past catalogue_refresh_seconds (1 s): the next catalogue request reloads
    stop = threading.Event()
    lat: list[float] = []

    def probe() -> None:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=60)
        try:
            while not stop.is_set():
                t = time.perf_counter()
                _get(conn, "/healthz", {})
                lat.append((time.perf_counter() - t) * 1000)
        finally:
            conn.close()

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    time.sleep(0.3)
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    try:
        t = time.perf_counter()
        status, _ = _get(conn, "/v1/models?limit=50", auth)
        first = (time.perf_counter() - t) * 1000
    finally:
        conn.close()
    time.sleep(0.3)
    stop.set()
    thread.join(timeout=60)
    if status != 200:
        raise RuntimeError(f"/v1/models answered {status} after the reload")
    lat.sort()
    return first, percentile(lat, 0.5), lat[-1] if lat else float("nan"), len(lat)


# ---- in-process render cost ---------------------------------------------------------------------


def render_costs(overlay: dict[str, Any], repeat: int) -> list[tuple[str, float, float, int]]:
    """Uncached cost of the query functions themselves (cache cleared before every call)."""
    sys.path.insert(0, str(ROOT / "src"))
    from aistats_gateway.catalogue import loader, queries, service

    cat, _ = loader.build(overlay, "bench overlay")
    snap = service.build_snapshot(1, cat)
    q = queries.ModelQuery
    calls = [
        ("models limit=50", lambda: queries.list_models(snap, q(limit=50))),
        ("models filters limit=50", lambda: queries.list_models(snap, q(
            organisations=frozenset({"openai", "google"}), include_endpoints=frozenset({"chat.completions"}),
            input_types=frozenset({"image"}), limit=50))),
        ("videos/models params", lambda: queries.capability_list(
            snap, "video.generation", ["size", "duration_seconds"])),
        ("models paging (offset 500)", lambda: queries.list_models(snap, q(limit=50, offset=500))),
    ]
    out = []
    for name, fn in calls:
        times = []
        size = 0
        for _ in range(repeat):
            snap.cache.clear()
            t = time.perf_counter()
            size = len(fn())
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out.append((name, percentile(times, 0.5), percentile(times, 0.99), size))
    return out


# ---- server -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, overlay_path: Path, log_level: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AISTATS_")}
        self.env.update({
            "AISTATS_DATA_DIR": str(data_dir),
            "AISTATS_CATALOGUE_FILE": str(overlay_path),
            "AISTATS_LOG_LEVEL": log_level,
            "PYTHONPATH": str(ROOT / "src") + os.pathsep + self.env.get("PYTHONPATH", ""),
        })
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aistats_gateway.cli", *args], env=self.env, cwd=self.data_dir,
                              capture_output=True, text=True, timeout=timeout, check=True)

    def start(self, timeout: float = 180) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aistats_gateway.cli", "serve", "--host", HOST, "--port", str(self.port)],
                env=self.env, cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
                if _get(conn, "/healthz", {})[0] == 200:
                    conn.close()
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not answer /healthz within {timeout:.0f}s:\n{self.tail()}")

    def log_offset(self) -> int:
        return self.log_path.stat().st_size

    def durations_since(self, offset: int) -> list[float]:
        """``duration_ms`` of the access-log lines written after ``offset`` (log level info)."""
        out = []
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            for line in f:
                if b'"duration_ms"' in line:
                    try:
                        out.append(float(json.loads(line)["duration_ms"]))
                    except (ValueError, KeyError):
                        pass
        return sorted(out)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and anything it started (its own session / process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass


# ---- report -------------------------------------------------------------------------------------


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).rjust(w) if j else str(c).ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
            + " |" for r in rows]
    return "\n".join([line, sep, *body])


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} CPUs ({model or 'unknown model'}), Python {sys.version.split()[0]}, "
            f"load average {load:.2f} at start")


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop the server, remove the temp dir


def main() -> int:
    signal.signal(signal.SIGTERM, _sigterm)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=N_MODELS, help="synthetic models in the overlay (default 1000)")
    ap.add_argument("--sequential", type=int, default=1000, help="requests per case at concurrency 1")
    ap.add_argument("--concurrency", type=int, default=16, help="connections of the loaded run")
    ap.add_argument("--duration", type=int, default=8, help="seconds per loaded case with wrk")
    ap.add_argument("--requests", type=int, default=4000, help="requests per loaded case without wrk")
    ap.add_argument("--no-wrk", action="store_true", help="use the built-in Python load generator")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                    help="server log level (default info, the shipped default: one access-log line per request)")
    ap.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = ap.parse_args()
    if args.quick:
        args.sequential, args.duration, args.requests = 100, 2, 500
    if not 1 <= args.models <= 20000 or not 1 <= args.sequential <= 100000 or not 1 <= args.concurrency <= 256 \
            or not 1 <= args.duration <= 120 or not 1 <= args.requests <= 1_000_000:
        ap.error("a count is out of its bounds")
    use_wrk = not args.no_wrk and shutil.which("wrk") is not None

    tmp = Path(tempfile.mkdtemp(prefix="aistats-bench-"))
    server: Server | None = None
    start_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"machine: {machine()}")
    try:
        overlay = synthetic_catalogue(args.models)
        overlay_path = tmp / "bench-catalogue.json"
        overlay_path.write_text(json.dumps(overlay))
        n_video = sum(1 for m in overlay["models"] if m["output_types"] == ["video"])
        print(f"synthetic overlay: {len(overlay['models'])} models ({n_video} video), "
              f"{sum(len(m['providers']) for m in overlay['models'])} provider offers, "
              f"{overlay_path.stat().st_size / 1e6:.1f} MB")

        server = Server(tmp, overlay_path, args.log_level)
        t = time.perf_counter()
        server.start()
        print(f"server up on {HOST}:{server.port} in {time.perf_counter() - t:.1f}s "
              f"(migrate + catalogue sync + snapshot)")
        key = json.loads(server.cli("keys", "create", "--name", "bench", "--json").stdout)["key"]
        auth = {"Authorization": f"Bearer {key}"}

        total_conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
        status, body = _get(total_conn, "/v1/models?limit=1", auth)
        total_conn.close()
        if status != 200:
            raise RuntimeError(f"GET /v1/models answered {status}: {body[:300]!r}")
        total = json.loads(body)["total"]
        print(f"catalogue served: {total} models (shipped + synthetic)\n")

        results: list[Result] = []
        firsts: dict[str, tuple[float, int]] = {}
        for case in cases(total):
            headers = auth if case.auth else {}
            ms, status, body = first_request(server.port, case, headers)
            if status != 200:
                raise RuntimeError(f"{case.path} answered {status}: {body[:300]!r}")
            if not case.paths:
                firsts[case.name] = (ms, len(body))
            results.append(sequential(server, case, headers, args.sequential))
            if use_wrk:
                results.append(loaded_wrk(server.port, case, headers, args.duration, args.concurrency, tmp))
            else:
                results.append(loaded_python(server.port, case, headers, args.requests, args.concurrency))

        base = {r.mode: r for r in results if r.case == "healthz (baseline)"}
        rows = []
        for r in results:
            b = base[r.mode]
            rows.append([r.case, r.mode, f"{r.requests}", f"{r.concurrency}", f"{r.rps:,.0f}", f"{r.p50_ms:.2f}",
                         f"{r.p99_ms:.2f}", "" if r.server_p50_ms is None else f"{r.server_p50_ms:.2f}",
                         f"{r.p50_ms / b.p50_ms:.1f}x", f"{r.rps / b.rps:.2f}x", f"{r.errors}"])
        print(f"HTTP (loaded runs: {'wrk -t1' if use_wrk else 'python asyncio generator'}, "
              f"{args.concurrency} connections; sequential: http.client, 1 keep-alive connection)")
        print(table(rows, ["case", "run", "requests", "conc.", "req/s", "p50 ms", "p99 ms", "server p50 ms",
                           "p50 vs base", "req/s vs base", "errors"]))
        print("server p50: the server's own duration_ms from its access log (sequential runs, log level info)")
        print()
        print(table([[name, f"{ms:.1f}", f"{size / 1000:,.1f}"] for name, (ms, size) in firsts.items()],
                    ["case", "first request ms", "body kB"]))
        print()
        first, hz_p50, hz_max, hz_n = reload_stall(server, overlay_path, auth)
        print("Catalogue reload: the first catalogue request after `catalogue sync` (a new version)")
        print(table([[f"{first:.0f}", f"{hz_n}", f"{hz_p50:.2f}", f"{hz_max:.0f}"]],
                    ["first GET /v1/models ms", "healthz meanwhile", "healthz p50 ms", "healthz max ms"]))
        print()
        costs = render_costs(overlay, repeat=30 if args.quick else 100)
        print("In-process render cost of a query missing the response cache (cache cleared before each call; "
              "the per-snapshot parts are built by the first call; no HTTP, no auth)")
        print(table([[n, f"{p50:.2f}", f"{p99:.2f}", f"{size / 1000:,.1f}"] for n, p50, p99, size in costs],
                    ["query", "p50 ms", "p99 ms", "body kB"]))
        if start_load > (os.cpu_count() or 1) * 0.5:
            print(f"\nnote: load average {start_load:.2f} before the run: other work shared the CPUs, "
                  "so the numbers above are pessimistic; rerun on an idle machine")
        errors = sum(r.errors for r in results)
        if errors:
            print(f"\n{errors} requests failed (non-200 or socket errors); see {server.log_path}")
            return 1
        return 0
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
