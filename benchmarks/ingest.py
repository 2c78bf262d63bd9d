"""Benchmark: `whosaw ingest` against a bare DuckDB JSON -> Parquet copy of the same NDJSON files.

    python benchmarks/ingest.py [--data bench-data] [--rounds 3] [--requests 1000000] [--cache 1100000]

Generates (DuckDB SQL, once, reused while the row counts match) a requests and a cache log of NDJSON, then runs,
alternately and each in its own process, the bare copy (`read_json(..., columns=...)` -> `COPY ... TO parquet`,
zstd at DuckDB's default level, one file per log), `whosaw ingest` into a fresh --out, and `whosaw --version`
(the CLI's start-up: importing the package, which is part of every whosaw command). Reports seconds, rows/s,
CPU seconds and peak RSS per run (each measured on its own process with wait4), the medians, and whosaw's ratio
to the bare copy against the 1.5x target. The machine may be shared: CPU seconds are less noisy than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_RATIO = 1.5
TARGET_RSS_MB = 1024

REQUEST_COLUMNS = (
    "{'ts': 'TIMESTAMPTZ', 'request_id': 'VARCHAR', 'session_id': 'VARCHAR', 'user_id': 'VARCHAR', "
    "'route': 'VARCHAR', 'status': 'INTEGER', 'host': 'VARCHAR'}"
)
CACHE_COLUMNS = (
    "{'ts': 'TIMESTAMPTZ', 'request_id': 'VARCHAR', 'op': 'VARCHAR', 'key': 'VARCHAR', "
    "'status': 'VARCHAR', 'host': 'VARCHAR', 'conn_id': 'VARCHAR', 'value_sha256': 'VARCHAR', "
    "'value_owner': 'VARCHAR'}"
)

# 12 hours of traffic from 50,000 sessions of 25,000 users on 8 hosts; one cache line per request and a tenth
# more, some cancelled or timed out, 2% background work without a request_id.
GENERATE_SQL = """
SET TimeZone = 'UTC';
COPY (
  SELECT strftime(TIMESTAMP '2023-03-20 00:00:00' + to_microseconds((i * 43200000000 // {requests})::BIGINT
                  + (hash(i) % 1000)::BIGINT), '%Y-%m-%dT%H:%M:%S.%fZ') AS ts,
         md5('r' || i)[1:8] || '-' || md5('r' || i)[9:12] || '-' || md5('r' || i)[13:16] || '-'
           || md5('r' || i)[17:20] || '-' || md5('r' || i)[21:32] AS request_id,
         's-' || md5('s' || (i % 50000))[1:20] AS session_id,
         CASE WHEN i % 17 = 0 THEN NULL ELSE 'u' || ((i % 50000) // 2) END AS user_id,
         ['GET /backend-api/conversations', 'GET /backend-api/me', 'POST /backend-api/conversation',
          'GET /backend-api/billing', 'GET /backend-api/conversation/:id'][1 + i % 5] AS route,
         CASE WHEN i % 97 = 0 THEN 500 WHEN i % 13 = 0 THEN 304 ELSE 200 END AS status,
         'web-' || (i % 8) AS host
  FROM range({requests}) AS t(i)
) TO '{folder}/requests.ndjson' (FORMAT json);
COPY (
  SELECT strftime(TIMESTAMP '2023-03-20 00:00:00' + to_microseconds((j * 43200000000 // {cache})::BIGINT + 500),
                  '%Y-%m-%dT%H:%M:%S.%fZ') AS ts,
         CASE WHEN j % 50 = 0 THEN NULL ELSE
           md5('r' || r)[1:8] || '-' || md5('r' || r)[9:12] || '-' || md5('r' || r)[13:16] || '-'
           || md5('r' || r)[17:20] || '-' || md5('r' || r)[21:32] END AS request_id,
         CASE WHEN j % 10 = 9 THEN 'SET' WHEN j % 10 = 8 THEN 'HGETALL' ELSE 'GET' END AS op,
         CASE WHEN j % 3 = 0 THEN 'user:u' || ((r % 50000) // 2) || ':titles'
              ELSE 'billing:u' || ((r % 50000) // 2) END AS key,
         CASE WHEN j % 211 = 0 THEN 'cancelled' WHEN j % 503 = 0 THEN 'timeout' ELSE 'ok' END AS status,
         'web-' || (r % 8) AS host,
         'c' || (j % 64) AS conn_id,
         sha256('v' || (r % 50000)) AS value_sha256,
         CASE WHEN j % 4 = 0 THEN NULL ELSE 'u' || ((r % 50000) // 2) END AS value_owner
  FROM (SELECT j, j * {requests} // {cache} AS r FROM range({cache}) AS t(j))
) TO '{folder}/cache.ndjson' (FORMAT json);
"""

BARE_SCRIPT = """
import sys, duckdb
folder, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
for kind, columns in (('requests', {requests}), ('cache', {cache})):
    con.execute(f"COPY (SELECT * FROM read_json('{{folder}}/{{kind}}.ndjson', format = 'newline_delimited', "
                f"columns = {{columns}})) TO '{{out}}/{{kind}}.parquet' (FORMAT parquet, COMPRESSION zstd)")
"""


def generate(folder: Path, requests: int, cache: int) -> None:
    """Write the two logs unless they are there with the right number of lines."""
    stamp = folder / "bench-data.json"
    wanted = {"requests": requests, "cache": cache}
    if (
        stamp.exists()
        and json.loads(stamp.read_text()) == wanted
        and all((folder / f"{kind}.ndjson").exists() for kind in wanted)
    ):
        return
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(GENERATE_SQL.format(requests=requests, cache=cache, folder=str(folder).replace("'", "''")))
    con.close()
    stamp.write_text(json.dumps(wanted))
    size = sum((folder / f"{kind}.ndjson").stat().st_size for kind in wanted)
    print(
        f"generated {requests:,} request + {cache:,} cache lines ({size / 1e6:,.0f} MB) "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )


def measure(command: list[str]) -> dict[str, float]:
    """Run ``command`` in its own process: wall seconds, CPU seconds and peak RSS (MB) of that process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    output = process.stdout.read().decode() + process.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{output}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="folder for the generated logs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--cache", type=int, default=1_100_000)
    args = parser.parse_args()

    data = args.data.absolute()
    generate(data, args.requests, args.cache)
    rows = args.requests + args.cache
    work = data / "_runs"
    bare_script = BARE_SCRIPT.format(requests=repr(REQUEST_COLUMNS), cache=repr(CACHE_COLUMNS))
    logs = [str(data / "requests.ndjson"), str(data / "cache.ndjson")]
    results: dict[str, list[dict[str, float]]] = {"bare": [], "whosaw": [], "start-up": []}
    for round_number in range(1, args.rounds + 1):
        for tool in ("bare", "whosaw", "start-up"):
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            if tool == "bare":
                command = [sys.executable, "-c", bare_script, str(data), str(work)]
            elif tool == "whosaw":
                command = [sys.executable, "-m", "pipeline.cli", "ingest", *logs, "--out", str(work / "out")]
            else:  # what the CLI costs before any ingesting: importing the package
                command = [sys.executable, "-m", "pipeline.cli", "--version"]
            result = measure(command)
            results[tool].append(result)
            print(
                f"round {round_number}  {tool:<8} {result['seconds']:6.2f} s  {rows / result['seconds']:>10,.0f} rows/s"
                f"  cpu {result['cpu']:6.2f} s  peak RSS {result['rss_mb']:5.0f} MB",
                flush=True,
            )
    shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{'median':<9}{'s':>7}{'rows/s':>12}{'cpu s':>8}{'peak RSS MB':>13}")
    medians = {}
    for tool, runs in results.items():
        medians[tool] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        m = medians[tool]
        print(
            f"{tool:<9}{m['seconds']:>7.2f}{rows / m['seconds']:>12,.0f}{m['cpu']:>8.2f}"
            f"{max(run['rss_mb'] for run in runs):>13.0f}"
        )
    bare, whosaw, startup = (medians[t]["seconds"] for t in ("bare", "whosaw", "start-up"))
    ratio = whosaw / bare
    cpu_ratio = medians["whosaw"]["cpu"] / medians["bare"]["cpu"]
    peak = max(run["rss_mb"] for run in results["whosaw"])
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(
        f"\nwhosaw / bare: {ratio:.2f}x wall (target <= {TARGET_RATIO}x: {verdict})"
        f", {cpu_ratio:.2f}x CPU; without the CLI start-up ({startup:.2f} s): "
        f"{(whosaw - startup) / bare:.2f}x wall"
    )
    print(f"whosaw peak RSS {peak:.0f} MB (target < {TARGET_RSS_MB} MB: {'met' if peak < TARGET_RSS_MB else 'MISSED'})")


if __name__ == "__main__":
    main()
