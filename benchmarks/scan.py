"""Benchmark: the auto window's scan (pipeline/sql/analyze/85_window_scan.sql) against the length of the log.

    python benchmarks/scan.py                 # 30, 90 and 365 days: 5-minute buckets, then analyze's
    python benchmarks/scan.py --days 730

The scan pairs candidate start and end buckets, so its cost grows with the square of the number of buckets. Each
row times the scan in DuckDB over a timeline of steady noise (Poisson: about 1,000 cache calls and 0.5 crossed
replies per 5 minutes, so many buckets are candidates), first with 5-minute buckets, then with the bucket size
``analyze`` picks for that traffic (``bucket_seconds_for``: at most ``MAX_BUCKETS`` buckets holding cache calls).
"""

from __future__ import annotations

import argparse
import time

import duckdb
import numpy as np
import pyarrow as pa

from pipeline.analyze import BUCKET_STEPS, DEFAULT_BUCKET_SECONDS, DUCKDB_MACROS, SQL_DIR, bucket_seconds_for


def scan_seconds(days: float, bucket_seconds: int, seed: int = 1) -> tuple[int, float, float]:
    """(buckets, best log-likelihood ratio, seconds) for ``days`` of steady noise in ``bucket_seconds`` buckets."""
    buckets = int(days * 86400 // bucket_seconds)
    rng = np.random.default_rng(seed)
    scale = bucket_seconds / 300
    timeline = pa.table({
        "bucket_index": np.arange(buckets),
        "crossed_replies": rng.poisson(0.5 * scale, buckets),
        "calls": rng.poisson(1000 * scale, buckets),
    })
    con = duckdb.connect()
    for macro in DUCKDB_MACROS:
        con.execute(macro)
    con.register("timeline_input", timeline)
    con.execute("CREATE TEMP VIEW timeline_buckets AS SELECT * FROM timeline_input")
    con.execute((SQL_DIR / "85_window_scan.sql").read_text(encoding="utf-8"))
    start = time.perf_counter()
    best = con.execute("SELECT max(llr) FROM window_scan").fetchone()[0]
    took = time.perf_counter() - start
    con.close()
    return buckets, best or 0.0, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, action="append", help="log lengths in days (repeatable)")
    days_list = parser.parse_args().days or [30, 90, 365]
    print(f"{'days':>6} {'bucket s':>9} {'buckets':>8} {'best llr':>9} {'scan s':>8}")
    for days in days_list:
        sizes = [DEFAULT_BUCKET_SECONDS]
        chosen = bucket_seconds_for([int(days * 86400 // step) for step in BUCKET_STEPS])  # calls in every bucket
        if chosen != DEFAULT_BUCKET_SECONDS:
            sizes.append(chosen)
        for size in sizes:
            buckets, best, took = scan_seconds(days, size)
            label = " (analyze's choice)" if size == chosen else ""
            print(f"{days:>6g} {size:>9} {buckets:>8,} {best:>9.2f} {took:>8.2f}{label}")


if __name__ == "__main__":
    main()
