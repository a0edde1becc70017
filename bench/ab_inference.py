"""Same-run A/B of POST /v1/chat/completions between checkouts: which change made the gateway cheaper.

    # the checkout this script is in against another one (e.g. a worktree of the previous commit)
    git -C /work/main worktree add /tmp/base HEAD~3
    cd /tmp && /work/main/.venv/bin/python /work/main/bench/ab_inference.py /tmp/base /work/main
    # more rounds, shorter, or at one connection
    ... ab_inference.py /tmp/base /work/main --rounds 16 --seconds 2 --conns 1

One mock upstream (``bench/mock_upstream.py``) and one ``aistats-gateway serve`` per checkout, each
started like ``bench_inference.py`` starts its gateway (SQLite, a funded key, billing and the
generation record on) but with **that checkout's** ``src/`` first on its ``PYTHONPATH``. Then rounds
of closed-loop load (the same load generator), alternating between the gateways round by round, so
a machine whose speed drifts (CPU steal, a neighbour) slows both alike. Per round and gateway: req/s,
the gateway's CPU per request (user + system time of its process tree from ``/proc``, which does not
count time it waited for a CPU), p50 latency and the SQLite writer's transactions per group commit
(from ``/metrics``). The verdict is the median over rounds of the **paired** ratio of CPU per request
(each round against the first checkout's same round), with its quartiles: a change is measured when
the quartiles are on one side of 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import bench_inference as bi
from _common import HOST, Procs, free_port, log, table, wait_http


def _writer_counts(port: int) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=30).read().decode()

    def value(name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    return value("aistats_db_group_commits_total"), value("aistats_db_group_commit_transactions_total")


def _q(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkouts", nargs="+", type=Path, help="repository roots; the first is the reference")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=2.0, help="per round and gateway")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--stream", action="store_true", help="streamed calls; p50 is then the time to the first byte")
    args = ap.parse_args()
    roots = [p.resolve() for p in args.checkouts]
    for r in roots:
        if not (r / "src" / "aistats_gateway").is_dir():
            ap.error(f"{r} is not a checkout of this repository")
    tmp = Path(tempfile.mkdtemp(prefix="ab-inference-"))
    procs = Procs(tmp)
    rows: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(roots))}
    try:
        mock_port = free_port()
        mock = procs.start("mock", [sys.executable, str(bi.ROOT / "bench" / "mock_upstream.py"), "--port",
                                    str(mock_port)], env=_common.py_env())
        wait_http(procs, mock, mock_port, "/health", timeout=30)
        gws = []
        for i, root in enumerate(roots):
            _common.ROOT = root  # py_env puts this checkout's src/ first on the gateway's PYTHONPATH
            (tmp / f"g{i}").mkdir()
            gws.append(bi.start_gateway(procs, tmp / f"g{i}", mock_port))
        _common.ROOT = bi.ROOT
        for g in gws:  # warm-up
            bi.run_load(g.port, g.path, g.body(args.stream), args.conns, 2, g.headers)
        log(f"{args.rounds} rounds x {args.seconds:g} s at {args.conns} connections, alternating …")
        for _ in range(args.rounds):
            for i, g in enumerate(gws):
                m0, c0 = _writer_counts(g.port), bi.cpu_s(g.pid)
                out: dict[str, Any] = bi.run_load(g.port, g.path, g.body(args.stream), args.conns, args.seconds,
                                                  g.headers)
                c1, m1 = bi.cpu_s(g.pid), _writer_counts(g.port)
                n = max(1, out["n"])
                rows[i].append({"rps": out["n"] / out["wall"], "cpu_us": (c1 - c0) / n * 1e6,
                                "p50_ms": bi.pct(out["ttfb" if args.stream else "total"], 0.5),
                                "errors": sum(out["errors"].values()),
                                "tx_per_group": (m1[1] - m0[1]) / max(1.0, m1[0] - m0[0]), "rss": bi.rss_mb(g.pid)})
    finally:
        procs.stop_all()
    kind = " (streamed)" if args.stream else ""
    print(f"\n## A/B{kind} at {args.conns} connections, {args.rounds} alternating rounds of {args.seconds:g} s\n")
    out_rows = []
    for i, root in enumerate(roots):
        rs = rows[i]
        ratio = [r["cpu_us"] / rows[0][k]["cpu_us"] for k, r in enumerate(rs)]
        med = {k: _q([r[k] for r in rs], 0.5) for k in ("rps", "cpu_us", "p50_ms", "tx_per_group")}
        verdict = "1 (reference)" if i == 0 else f"{_q(ratio, 0.5):.3f} ({_q(ratio, 0.25):.3f}–{_q(ratio, 0.75):.3f})"
        out_rows.append([str(root), f"{med['rps']:.0f}", f"{med['cpu_us']:.0f}", verdict, f"{med['p50_ms']:.3f}",
                         f"{med['tx_per_group']:.1f}", f"{max(r['rss'] for r in rs):.0f}",
                         f"{sum(r['errors'] for r in rs):.0f}"])
    print(table(out_rows, ["checkout", "req/s (median)", "CPU µs/req (median)", "paired CPU ratio (quartiles)",
                           "p50 ms", "tx per group commit", "peak RSS MiB", "errors"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
