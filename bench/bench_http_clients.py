"""Which upstream HTTP client for the gateway: the cost of one POST (JSON request, JSON answer) against
``bench/mock_upstream.py``, per client, interleaved in one run.

    /work/main/.venv/bin/python bench/bench_http_clients.py            # ~30 s
    /work/main/.venv/bin/python bench/bench_http_clients.py --n 3000 --rounds 3

Clients (each with a keep-alive pool, the same body and headers, the answer read and JSON-parsed):
``httpx.AsyncClient`` (its default transport), ``httpcore.AsyncConnectionPool`` (httpx's transport,
without httpx's request/response models), ``aiohttp.ClientSession`` when installed, and
``httpx.AsyncClient`` over the gateway's aiohttp transport (``aistats_gateway.http.aiohttp_transport``:
httpx's API, aiohttp's wire). Sequential (one request at a time: latency and CPU per call, the
1-connection case) and 64 concurrent callers (the throughput case). CPU = this process's CPU time per
call (the mock runs in its own process). Runs on uvloop when installed, like the gateway.
Prints a table and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "src"))  # this checkout's gateway code

from _common import HOST, cpu_pressure, free_port, table

BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]})
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-mock", "user-agent": "aistats-gateway/0.1"}


async def make_httpx(url: str) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    import httpx

    c = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10), trust_env=False,
                          limits=httpx.Limits(max_connections=200, max_keepalive_connections=64))

    async def call() -> Any:
        r = await c.request("POST", url, content=BODY, headers=HEADERS)
        return orjson.loads(r.content)

    return call, c.aclose


async def make_httpcore(url: str) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    import httpcore

    pool = httpcore.AsyncConnectionPool(max_connections=200, max_keepalive_connections=64)
    hdrs = [(k.encode(), v.encode()) for k, v in HEADERS.items()] + [(b"content-length", str(len(BODY)).encode())]
    ext = {"timeout": {"connect": 10.0, "read": 60.0, "write": 60.0, "pool": 60.0}}

    async def call() -> Any:
        r = await pool.request("POST", url, headers=hdrs, content=BODY, extensions=ext)
        return orjson.loads(r.content)

    return call, pool.aclose


async def make_aiohttp(url: str) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    import aiohttp

    s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(60),
                              skip_auto_headers=("Accept-Encoding",))

    async def call() -> Any:
        async with s.post(url, data=BODY, headers=HEADERS) as r:
            return orjson.loads(await r.read())

    return call, s.close


async def make_httpx_aiohttp(url: str) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    import httpx

    from aistats_gateway.http.aiohttp_transport import AiohttpTransport

    c = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10), trust_env=False, transport=AiohttpTransport())

    async def call() -> Any:
        r = await c.request("POST", url, content=BODY, headers=HEADERS)
        return orjson.loads(r.content)

    return call, c.aclose


async def make_lean(url: str) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    from aistats_gateway.http.lean import LeanPool

    pool = LeanPool()

    async def call() -> Any:
        _, _, body = await pool.post(url, BODY, HEADERS, connect=10, read=60, pool=60)
        return orjson.loads(body)

    async def close() -> None:
        pool.close()

    return call, close


CLIENTS: dict[str, Callable[[str], Awaitable[tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]]]] = {
    "httpx": make_httpx, "httpcore": make_httpcore, "aiohttp": make_aiohttp, "httpx+aiohttp": make_httpx_aiohttp,
    "lean": make_lean}


async def run(make: Any, url: str, n: int, conc: int) -> tuple[float, float, float]:
    """(calls/s, p50 ms, CPU µs per call)."""
    call, close = await make(url)
    try:
        for _ in range(50):
            await call()
        lat: list[float] = []
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                await call()
                lat.append(time.perf_counter() - t0)

        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await close()
    lat.sort()
    return len(lat) / wall, lat[len(lat) // 2] * 1000, cpu / len(lat) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    names = [name for name in CLIENTS if "aiohttp" not in name or _has("aiohttp")]
    port = free_port()
    mock = subprocess.Popen([sys.executable, str(Path(__file__).with_name("mock_upstream.py")), "--port", str(port)])
    try:
        time.sleep(1.0)
        url = f"http://{HOST}:{port}/v1/chat/completions"
        res: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        load0 = os.getloadavg()[0]
        for _ in range(args.rounds):
            for conc in (1, 64):
                for name in names:
                    res.setdefault((name, conc), []).append(asyncio.run(run(CLIENTS[name], url, args.n, conc)))
        load1 = os.getloadavg()[0]
    finally:
        mock.terminate()
        mock.wait(10)
    print(f"# bench_http_clients.py — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load {load0:.1f} before / {load1:.1f} after; {cpu_pressure()}")
    rows = []
    for (name, conc), rs in sorted(res.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        best = min(rs, key=lambda r: r[2])  # the least disturbed round
        rows.append([f"{name} conc={conc}", f"{best[0]:.0f}", f"{best[1]:.3f}", f"{best[2]:.0f}", ""])
    print(table(rows, ["client", "calls/s", "p50 ms", "client CPU µs/call", ""]))
    return 0


def _has(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
