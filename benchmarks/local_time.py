"""Benchmark: what wall times in a zone that changes its clocks cost `whosaw ingest`.

    python benchmarks/local_time.py [--data bench-data] [--rounds 3] [--cache 1100000] [--zone Europe/Berlin]

Takes the cache log of benchmarks/ingest.py (12 hours of calls, generated there if missing), moves it to the night
the zone first turns its clocks back in 2023 (2023-10-29 for Europe/Berlin: 8 hours before the change to 4 after)
and writes its times as the zone's wall time without an offset, as a local-time log does. Then ingests that file
alternately, each run in its own process, read in the zone (the checks of sql/ingest/local_time.sql near the
change, and the lines of the repeated hour placed by the file's order) and read as UTC (the same text and parsing,
no checks), and prints seconds, CPU seconds, peak RSS and the ratio. Last, it compares the lake read in the zone
with the generated instants: every line must be at its instant (one placed in the wrong pass is counted).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from ingest import generate, measure

SHIFT_SQL = """
SET TimeZone = 'UTC';
COPY (
  SELECT * REPLACE (strftime(timezone({zone}, ts + INTERVAL '{shift_s} seconds'), '%Y-%m-%dT%H:%M:%S.%f') AS ts)
  FROM read_json('{source}', format = 'newline_delimited')
) TO '{target}' (FORMAT json);
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="folder for the generated logs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=int, default=1_100_000)
    parser.add_argument("--zone", default="Europe/Berlin")
    args = parser.parse_args()

    import duckdb

    data = args.data.absolute()
    generate(data, 1_000_000, args.cache)
    folder = data / "local_time"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "logs").mkdir(parents=True)
    con = duckdb.connect()
    con.execute(f"SET TimeZone = {zone_literal(args.zone)}")
    # the instant of the zone's first change back in 2023: the first hour with the smaller offset
    change = con.execute(
        "SELECT min(t) FROM range(TIMESTAMPTZ '2023-01-01 00:00:00+00', TIMESTAMPTZ '2024-01-01 00:00:00+00', "
        "INTERVAL 1 HOUR) AS r(t) WHERE epoch(CAST(t AS TIMESTAMP)) - epoch(t) < "
        "epoch(CAST(t - INTERVAL 1 HOUR AS TIMESTAMP)) - epoch(t - INTERVAL 1 HOUR)"
    ).fetchone()[0]
    if change is None:
        raise SystemExit(f"{args.zone} does not turn its clocks back in 2023")
    start = con.execute("SELECT epoch(TIMESTAMPTZ '2023-03-20 00:00:00+00')").fetchone()[0]
    shift_s = int(con.execute("SELECT epoch(?)", [change]).fetchone()[0] - 8 * 3600 - start)
    source = folder / "logs" / "cache.ndjson"
    con.execute(SHIFT_SQL.format(zone=zone_literal(args.zone), shift_s=shift_s, source=data / "cache.ndjson",
                                 target=source))
    configs = {}
    for name, zone in (("in zone", args.zone), ("as UTC", "UTC")):
        configs[name] = folder / f"{zone.replace('/', '_')}.toml"
        configs[name].write_text(f'[sources.cache]\ntimezone = "{zone}"\n')

    results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    for round_number in range(1, args.rounds + 1):
        for name, config in configs.items():
            out = folder / f"out-{name.replace(' ', '-')}"
            shutil.rmtree(out, ignore_errors=True)
            result = measure([sys.executable, "-m", "pipeline.cli", "ingest", str(source), "--out", str(out),
                              "--config", str(config)])
            results[name].append(result)
            print(f"round {round_number}  {name:<8} {result['seconds']:6.2f} s  cpu {result['cpu']:6.2f} s"
                  f"  peak RSS {result['rss_mb']:5.0f} MB", flush=True)

    print(f"\n{'median':<9}{'s':>7}{'cpu s':>8}{'peak RSS MB':>13}")
    medians = {}
    for name, runs in results.items():
        medians[name] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"{name:<9}{medians[name]['seconds']:>7.2f}{medians[name]['cpu']:>8.2f}"
              f"{max(run['rss_mb'] for run in runs):>13.0f}")
    zone, utc = medians["in zone"], medians["as UTC"]
    print(f"\nin {args.zone} / as UTC: {zone['seconds'] / utc['seconds']:.2f}x wall, "
          f"{zone['cpu'] / utc['cpu']:.2f}x CPU (+{zone['cpu'] - utc['cpu']:.2f} CPU-s)")

    lake = folder / "out-in-zone" / "parquet" / "cache" / "*" / "*" / "*.parquet"
    con.execute("SET TimeZone = 'UTC'")
    wrong = con.execute(
        f"SELECT count(*) FROM (SELECT source_line, ts FROM read_parquet('{lake}') EXCEPT ALL "
        f"SELECT row_number() OVER () AS source_line, ts + INTERVAL '{shift_s} seconds' AS ts "
        f"FROM read_json('{data / 'cache.ndjson'}', format = 'newline_delimited'))"
    ).fetchone()[0]
    repeated = con.execute(
        f"SELECT count(*) FROM read_parquet('{lake}') WHERE ts >= ? - INTERVAL 1 HOUR AND ts < ? + INTERVAL 1 HOUR",
        [change, change],
    ).fetchone()[0]
    print(f"lines within an hour of the change: {repeated:,}; lines not at their instant: {wrong:,}")


def zone_literal(zone: str) -> str:
    return "'" + zone.replace("'", "''") + "'"


if __name__ == "__main__":
    main()
