"""Small hand-made lakes for tests: real hive-partitioned Parquet in the layout ingest writes.

``write_lake(out, requests=[...], cache=[...], sessions=[...])`` writes ``OUT/parquet/<kind>/date=/hour=/``
files with the columns of ``pipeline.schema.LAKE_COLUMNS`` (types included), ``source_file`` and
``source_line`` (defaults: ``/logs/<kind>.jsonl`` and the row's 1-based position), zstd, exactly as
docs/design.md describes the lake. A kind with no rows gets no folder, as ingest does.

Rows are dicts; missing fields are NULL; ``ts`` may be an ISO-8601 string (no zone = UTC) or a datetime.
``T(minutes, seconds)`` builds readable timestamps on a fixed day. ``held_by_another_thread(out)`` holds OUT's
lock, as a concurrent stage would, for as long as its ``with`` block runs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from pipeline.manifest import locked
from pipeline.schema import LAKE_COLUMNS, PROVENANCE_COLUMNS

DAY = datetime(2023, 3, 20, 1, 0, tzinfo=UTC)


# The key families of the hand-made cases ([[keys]] of their config).
KEYS = [
    {"pattern": r"^user:(?P<owner>[^:]+):titles$", "category": "conversation_titles", "severity": "low"},
    {"pattern": r"^billing:(?P<owner>[^:]+)$", "category": "payment_info", "severity": "high"},
    {"pattern": r"^conv:(?P<resource>[^:]+)$", "category": "conversation_content", "severity": "high"},
    {"pattern": r"^public:", "category": "public", "severity": "low"},
    {"pattern": r"^user:(?P<owner>[^:]+):", "category": "profile", "severity": "medium"},
]


def T(minutes: float = 0, seconds: float = 0, hours: float = 0) -> str:  # noqa: N802 - reads well in tables
    """An ISO-8601 UTC time ``hours:minutes:seconds`` after 2023-03-20T01:00:00Z."""
    ts = DAY + timedelta(hours=hours, minutes=minutes, seconds=seconds)
    return ts.isoformat().replace("+00:00", "Z")


def _frame(kind: str, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    columns = list(LAKE_COLUMNS[kind]) + list(PROVENANCE_COLUMNS)
    records = []
    for i, row in enumerate(rows, start=1):
        unknown = set(row) - set(columns)
        if unknown:
            raise ValueError(f"{kind}: unknown field(s) {sorted(unknown)}")
        record = {name: row.get(name) for name in columns}
        record["source_file"] = row.get("source_file") or f"/logs/{kind}.jsonl"
        record["source_line"] = row.get("source_line") or i
        ts = record["ts"]
        record["ts"] = ts.isoformat() if isinstance(ts, datetime) else ts
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame.astype({name: "object" for name in columns if name != "source_line"})


def write_kind(out: str | Path, kind: str, rows: Iterable[Mapping[str, Any]]) -> Path | None:
    """Write one kind's rows under ``OUT/parquet/<kind>/``; None when there are no rows."""
    frame = _frame(kind, rows)
    if frame.empty:
        return None
    target = Path(out) / "parquet" / kind
    target.parent.mkdir(parents=True, exist_ok=True)
    types = {**LAKE_COLUMNS[kind], **PROVENANCE_COLUMNS}
    casts = ", ".join(
        f"CAST(CAST(\"{name}\" AS VARCHAR) AS {dtype}) AS \"{name}\"" if dtype != "VARCHAR"
        else f"CAST(\"{name}\" AS VARCHAR) AS \"{name}\""
        for name, dtype in types.items()
    )
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("rows_frame", frame)
        con.execute(f"CREATE TABLE typed AS SELECT {casts} FROM rows_frame")
        con.execute(
            f"COPY (SELECT *, strftime(ts, '%Y-%m-%d') AS date, hour(ts) AS hour FROM typed) "
            f"TO '{target}' "
            "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date, hour), OVERWRITE_OR_IGNORE)"
        )
    finally:
        con.close()
    return target


def write_lake(
    out: str | Path,
    requests: Iterable[Mapping[str, Any]] = (),
    cache: Iterable[Mapping[str, Any]] = (),
    sessions: Iterable[Mapping[str, Any]] = (),
) -> Path:
    """Write a whole lake under ``OUT/parquet/``; returns OUT."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for kind, rows in (("requests", requests), ("cache", cache), ("sessions", sessions)):
        write_kind(out, kind, rows)
    return out


def requests_for(cache: Iterable[Mapping[str, Any]], users: Mapping[str, str | None],
                 sessions: Mapping[str, str] | None = None, **extra: Any) -> list[dict[str, Any]]:
    """One request line per request_id in ``cache``: user from ``users[request_id]``, answered at the
    request's last cache line + 1 ms, session ``sessions.get(request_id, 's-' + request_id)``."""
    last: dict[str, str] = {}
    for line in cache:
        rid = line.get("request_id")
        if rid is None:
            continue
        ts = line["ts"]
        if rid not in last or ts > last[rid]:
            last[rid] = ts
    rows = []
    for rid, ts in last.items():
        answered = datetime.fromisoformat(ts.replace("Z", "+00:00")) + timedelta(milliseconds=1)
        rows.append({
            "ts": answered.isoformat().replace("+00:00", "Z"), "request_id": rid,
            "session_id": (sessions or {}).get(rid, f"s-{rid}"), "user_id": users.get(rid),
            "route": "GET /backend-api/conversations", "status": 200, "host": "web-1", **extra,
        })
    return rows


@contextlib.contextmanager
def held_by_another_thread(out: Path, stage: str = "ingest") -> Iterator[None]:
    """OUT's lock held by another thread (as by another process: the lock is per thread) while the block runs."""
    holding, release = threading.Event(), threading.Event()

    def stage_running() -> None:
        with locked(out, stage):
            holding.set()
            release.wait(60)

    thread = threading.Thread(target=stage_running)
    thread.start()
    try:
        assert holding.wait(30)
        yield
    finally:
        release.set()
        thread.join()
