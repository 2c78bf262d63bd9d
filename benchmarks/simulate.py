"""Throughput of ``whosaw simulate``: log lines written per second of wall time, and peak memory.

Why: the simulator must make incidents of 10M+ requests on a 2-core machine (target: at least 500k log lines
per second) without holding the traffic in memory. Run from the repository root:

    python benchmarks/simulate.py                       # 2M requests
    python benchmarks/simulate.py --requests 10000000   # 10M requests (about 4.5 GB of logs in a temp folder)
    python benchmarks/simulate.py --format jsonl.gz --messy --keep /tmp/sim-big

The figure is (request + cache + session lines) / wall time of the whole ``simulate`` call, tables and ground
truth included. Peak RSS is the process's high-water mark (``resource.getrusage``).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.simulate import simulate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--hours", type=float, default=12.0)
    parser.add_argument("--cancel-rate", type=float, default=0.02)
    parser.add_argument("--format", default="jsonl", choices=["jsonl", "jsonl.gz", "csv"])
    parser.add_argument("--messy", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="write here and keep the files (default: a temp folder)")
    args = parser.parse_args(argv)

    out = args.keep or Path(tempfile.mkdtemp(prefix="whosaw-sim-bench-"))
    target = out / "incident"
    if target.exists():
        shutil.rmtree(target)
    try:
        t0 = time.perf_counter()
        summary = simulate(
            target,
            users=args.users,
            hours=args.hours,
            requests=args.requests,
            cancel_rate=args.cancel_rate,
            seed=args.seed,
            fmt=args.format,
            messy=args.messy,
        )
        wall = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    counts = summary["counts"]
    lines = counts["log_lines"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "requests": counts["requests"],
        "cache_lines": counts["cache_lines"],
        "session_events": counts["session_events"],
        "log_lines": lines,
        "exposures": counts["exposures"],
        "format": args.format,
        "messy": args.messy,
        "wall_seconds": round(wall, 2),
        "lines_per_second": round(lines / wall),
        "bytes_written": size,
        "peak_rss_mb": round(peak_mb),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
