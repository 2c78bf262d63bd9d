"""Benchmark: the auto window's scans (pipeline/sql/analyze/84-87: the scan, its best stretch, the second scan of
the buckets outside it) against the length of the log.

    python benchmarks/scan.py                 # 30, 90 and 365 days: 5-minute buckets, then analyze's
    python benchmarks/scan.py --days 730

The scan pairs candidate start and end buckets, so its cost grows with the square of the number of buckets. Each
row times both scans in DuckDB over a timeline of steady noise (Poisson: about 1,000 cache calls and 0.5 crossed
replies per 5 minutes, so many buckets are candidates) with a one-hour burst in the middle (10 times the rate: the
first scan finds it, so the second scans everything else), first with 5-minute buckets, then with the bucket size
``analyze`` picks for that traffic (``bucket_seconds_for``: at most ``MAX_BUCKETS`` buckets holding cache calls).
"""

from __future__ import annotations

import argparse
import time

import duckdb
import numpy as np
import pyarrow as pa

from pipeline.analyze import (
    BUCKET_STEPS,
    DEFAULT_BUCKET_SECONDS,
    DUCKDB_MACROS,
    bucket_seconds_for,
    load_steps,
    run_steps,
)

SCAN_VIEWS = ("scan_buckets", "window_scan", "primary_stretch", "window_rescan")


def scan_seconds(days: float, bucket_seconds: int, seed: int = 1) -> tuple[int, float, float, float]:
    """(buckets, best log-likelihood ratio of the first scan and of the second, seconds) for ``days`` of steady
    noise with a one-hour burst in ``bucket_seconds`` buckets."""
    buckets = int(days * 86400 // bucket_seconds)
    rng = np.random.default_rng(seed)
    scale = bucket_seconds / 300
    rate = np.full(buckets, 0.5 * scale)
    burst = max(1, 3600 // bucket_seconds)
    rate[buckets // 2: buckets // 2 + burst] *= 10
    timeline = pa.table({
        "bucket_index": np.arange(buckets),
        "crossed_replies": rng.poisson(rate),
        "calls": rng.poisson(1000 * scale, buckets),
    })
    con = duckdb.connect()
    for macro in DUCKDB_MACROS:
        con.execute(macro)
    con.register("timeline_input", timeline)
    con.execute("CREATE TEMP VIEW timeline_buckets AS SELECT * FROM timeline_input")
    start = time.perf_counter()
    run_steps(con, [step for step in load_steps() if step.view in SCAN_VIEWS])
    best, second = con.execute(
        "SELECT (SELECT max(llr) FROM primary_stretch), (SELECT max(llr) FROM window_rescan)"
    ).fetchone()
    took = time.perf_counter() - start
    con.close()
    return buckets, best or 0.0, second or 0.0, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, action="append", help="log lengths in days (repeatable)")
    days_list = parser.parse_args().days or [30, 90, 365]
    print(f"{'days':>6} {'bucket s':>9} {'buckets':>8} {'best llr':>9} {'2nd llr':>8} {'scans s':>8}")
    for days in days_list:
        sizes = [DEFAULT_BUCKET_SECONDS]
        chosen = bucket_seconds_for([int(days * 86400 // step) for step in BUCKET_STEPS])  # calls in every bucket
        if chosen != DEFAULT_BUCKET_SECONDS:
            sizes.append(chosen)
        for size in sizes:
            buckets, best, second, took = scan_seconds(days, size)
            label = " (analyze's choice)" if size == chosen else ""
            print(f"{days:>6g} {size:>9} {buckets:>8,} {best:>9.2f} {second:>8.2f} {took:>8.2f}{label}")


if __name__ == "__main__":
    main()
