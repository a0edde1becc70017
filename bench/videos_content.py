"""Benchmark of ``GET /v1/videos/{id}/content`` against static file servers, in the same run.

    .venv/bin/python bench/videos_content.py
    .venv/bin/python bench/videos_content.py --backend postgres --quick

3. ``GET /v1/videos/{id}/content`` (with the key and with the signed ``download_url``) of a larger video
   (local model, 20 s 1080p) vs. the same stored file from ``python -m http.server`` and from a Starlette
   ``FileResponse`` app on uvicorn (the baselines), at concurrency 1 and 8 (MB/s and req/s).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import argparse
import hashlib
import http.client
import time
import urllib.parse

from _common import (
    FILE_APP_CODE,
    HOST,
    LOCAL_MODEL,
    PROMPT,
    Bench,
    CpuMeter,
    Gateway,
    Load,
    Procs,
    Report,
    create_video,
    free_port,
    load_python,
    load_wrk,
    log,
    py_env,
    run,
    wait_completed,
    wait_http,
)

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


def body(b: Bench) -> None:
    log("3. /content downloads")
    bench_content(b.args, b.gw, b.auth, b.procs, b.report, b.tmp, b.use_wrk)


if __name__ == "__main__":
    sys.exit(run(__doc__ or "", "video downloads benchmark", body))
