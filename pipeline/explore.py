"""Exploring a finished run from Python or Jupyter: DuckDB views over the lake and the results, and helpers.

``connect(out)`` gives a DuckDB connection on which these are views, so ``con.sql("SELECT ...").df()`` just
works (DuckDB's progress bar is off, times are UTC):

=============================  ===============================================================================
``requests``, ``cache``,       the lake (``OUT/parquet/<kind>/``): lake columns, ``source_file``,
``sessions``                   ``source_line``, ``date``, ``hour``; an empty typed view for a kind with no rows
``rejects``                    every rejected input line: ``kind, source_file, source_line, reason, detail, raw``
``manifest_files``             the manifest's input files: ``path, kind, format, bytes, sha256, lines, kept,
                               duplicates, rejected, superseded_rejects, run`` (lines = kept + duplicates +
                               rejected; superseded_rejects: earlier rejects a later reading kept)
``exposures``,                 the analysis outputs of the same names (present once ``analyze`` has run)
``exposures_outside_window``,
``near_misses``, ``timeline``
=============================  ===============================================================================

The helpers take the output folder or such a connection (``out_or_con``) and return DataFrames:

* :func:`user_trail`: everything one user's data went through, as owner and as viewer;
* :func:`connection_timeline`: one pooled connection's calls around an instant, with whose reply each read
  received (the FIFO rule is the analysis' own SQL, ``pipeline/sql/analyze/``, run on that connection);
* :func:`source_lines`: the raw input lines behind exposure rows (the cache read, its request, the session
  event that named the viewer), read from the original files (``.gz`` too) and checked against the
  manifest's SHA-256;
* :func:`export_csv`: a frame to spreadsheet-safe CSV (:func:`pipeline.safecsv.write_safe_csv`);
* :func:`reanalyze`: the analysis again into another folder (e.g. another window), leaving ``out`` as it is.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .analyze import (
    DEFAULT_BUCKET_SECONDS,
    DUCKDB_MACROS,
    analyze,
    load_steps,
    register_inputs,
    resolve_analysis_window,
    run_steps,
)
from .config import Window, analysis_config, as_config
from .errors import WhosawError, first_unreadable_parquet
from .ingest import PhysicalLines, format_of
from .manifest import (
    MANIFEST_NAME,
    REANALYSIS_MARK,
    load_manifest,
    locked,
    refuse_pattern_characters,
    sha256_file,
)
from .safecsv import write_safe_csv
from .schema import KINDS, LAKE_COLUMNS, PROVENANCE_COLUMNS, id_text

__all__ = [
    "connect", "connection_timeline", "export_csv", "reanalyze", "results_dir", "source_lines", "user_trail",
]

RESULT_FILES = {
    "exposures": "exposures.parquet",
    "exposures_outside_window": "exposures_outside_window.parquet",
    "near_misses": "near_misses.parquet",
    "timeline": "timeline.parquet",
}
REJECT_COLUMNS = {
    "kind": "VARCHAR", "source_file": "VARCHAR", "source_line": "BIGINT", "reason": "VARCHAR", "detail": "VARCHAR",
    "raw": "VARCHAR",
}
MANIFEST_FILE_COLUMNS = {
    "path": "VARCHAR", "kind": "VARCHAR", "format": "VARCHAR", "bytes": "BIGINT", "sha256": "VARCHAR",
    "lines": "BIGINT", "kept": "BIGINT", "duplicates": "BIGINT", "rejected": "BIGINT", "run": "VARCHAR",
    # earlier rejects this reading superseded (a cut last line, read whole): rejected - these = rows in rejects
    "superseded_rejects": "BIGINT",
}
_OUT_VARIABLE = "whosaw_out"
OutOrCon = str | Path | duckdb.DuckDBPyConnection


def _quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _empty_select(columns: Mapping[str, str]) -> str:
    typed = ", ".join(f"CAST(NULL AS {dtype}) AS {name}" for name, dtype in columns.items())
    return f"SELECT {typed} WHERE false"


def lake_relation_sql(out: Path, kind: str) -> str:
    """SQL reading one kind of the lake; an empty typed relation when ingestion found none of it."""
    folder = out / "parquet" / kind
    if folder.is_dir() and any(folder.rglob("*.parquet")):
        return f"SELECT * FROM read_parquet({_quote(folder / '**' / '*.parquet')}, hive_partitioning = true)"
    return _empty_select({**LAKE_COLUMNS[kind], **PROVENANCE_COLUMNS, "date": "VARCHAR", "hour": "BIGINT"})


def _rejects_sql(out: Path) -> str:
    folder = out / "rejects"
    parts = []
    for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        kind = path.stem
        parts.append(
            f"SELECT {_quote(kind)} AS kind, source_file, source_line, reason, detail, raw "
            f"FROM read_parquet({_quote(path)}, union_by_name = true)"
        )
    return " UNION ALL ".join(parts) if parts else _empty_select(REJECT_COLUMNS)


def _manifest_files_sql(out: Path) -> str:
    files = load_manifest(out).get("files", [])  # a damaged manifest: one clear error
    if not files:
        return _empty_select(MANIFEST_FILE_COLUMNS)
    rows = []
    for entry in files:
        values = []
        for name, dtype in MANIFEST_FILE_COLUMNS.items():
            value = entry.get(name, 0 if name == "superseded_rejects" else None)
            literal = "NULL" if value is None else (_quote(value) if dtype == "VARCHAR" else str(int(value)))
            values.append(f"CAST({literal} AS {dtype})")
        rows.append("(" + ", ".join(values) + ")")
    return f"SELECT * FROM (VALUES {', '.join(rows)}) AS m({', '.join(MANIFEST_FILE_COLUMNS)})"


def _progress_bar_off(con: duckdb.DuckDBPyConnection) -> None:
    """No DuckDB progress bar. Inside Jupyter without ipywidgets DuckDB refuses to change the setting at all,
    and there it is off already."""
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.InvalidInputException:
        pass


def _spill_into(con: duckdb.DuckDBPyConnection, out: Path) -> None:
    """Where DuckDB spills what does not fit in memory: a folder of its own in ``out``, made by DuckDB only when it
    spills and removed by it when the connection closes. DuckDB's default is ``.tmp`` in the current folder (a
    notebook's: the checkout), and what spills is rows of the lake and the results: personal data."""
    con.execute(f"SET temp_directory = {_quote(out / f'.tmp-explore-{os.getpid()}-{uuid.uuid4().hex[:8]}')}")


def _output_folder(out: str | Path) -> Path:
    """``out`` resolved, once it is known to be a folder whosaw wrote (an ingest at least: its manifest). Any
    other folder (the logs' folder, a typo'd empty one) would give empty views and helpers that find nothing,
    which reads as 'no exposures'."""
    out = Path(out).resolve()
    refuse_pattern_characters(out)
    if not out.is_dir():
        raise WhosawError(f"{out} is not a whosaw output folder")
    if not (out / MANIFEST_NAME).is_file():
        raise WhosawError(
            f"{out} is not a whosaw output folder (no {MANIFEST_NAME}): pass the --out of 'whosaw ingest' or "
            "'whosaw run', not the logs' folder"
        )
    return out


def connect(out: str | Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views over everything a run wrote to ``out`` (see the module docstring)."""
    out = _output_folder(out)
    manifest_files = _manifest_files_sql(out)
    con = duckdb.connect(database)
    try:
        _spill_into(con, out)
        _progress_bar_off(con)
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET VARIABLE {_OUT_VARIABLE} = {_quote(out)}")
        con.execute(f"CREATE OR REPLACE VIEW manifest_files AS {manifest_files}")
        for kind in KINDS:
            con.execute(f"CREATE OR REPLACE VIEW {kind} AS {lake_relation_sql(out, kind)}")
        con.execute(f"CREATE OR REPLACE VIEW rejects AS {_rejects_sql(out)}")
        for view, name in RESULT_FILES.items():
            if (out / name).exists():
                con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet({_quote(out / name)})")
    except duckdb.Error:  # a view's files no longer read: name the damaged one, as the CLI does
        results = [out / name for name in RESULT_FILES.values() if (out / name).exists()]
        lake = sorted((out / "parquet").rglob("*.parquet")) + sorted((out / "rejects").glob("*.parquet"))
        damaged = first_unreadable_parquet(con, results + lake)
        con.close()
        if damaged is None:
            raise
        raise WhosawError(f"{out} is damaged: {damaged} is not readable Parquet") from None
    return con


def results_dir(out_or_con: OutOrCon) -> Path:
    """The output folder behind ``out_or_con`` (a folder, or a connection made by :func:`connect`)."""
    if isinstance(out_or_con, duckdb.DuckDBPyConnection):
        try:
            value = out_or_con.execute(f"SELECT getvariable('{_OUT_VARIABLE}')").fetchall()[0][0]
        except duckdb.ConnectionException:
            raise WhosawError("this connection is closed; open another with pipeline.connect(out)") from None
        except duckdb.Error:
            value = None
        if not value:
            raise WhosawError("this connection was not made by pipeline.connect(out); pass the output folder")
        return Path(value)
    return _output_folder(out_or_con)


@contextmanager
def _opened(out_or_con: OutOrCon) -> Iterator[duckdb.DuckDBPyConnection]:
    """The connection given (one :func:`connect` made, still open), or one opened on the folder given (and closed
    afterwards)."""
    if isinstance(out_or_con, duckdb.DuckDBPyConnection):
        results_dir(out_or_con)  # closed, or not made by connect: one clear error, not an empty answer
        yield out_or_con
        return
    con = connect(out_or_con)
    try:
        yield con
    finally:
        con.close()


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def _require(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    missing = [name for name in names if name not in _views(con)]
    if missing:
        raise WhosawError(f"no {missing[0]} in this output folder; run pipeline.analyze(out) first")


# ---------------------------------------------------------------------------------------------- user trail

def user_trail(out_or_con: OutOrCon, user_id: str, *, near_misses: bool = True) -> pd.DataFrame:
    """Every exposure (and near miss) where ``user_id`` is the owner or the viewer, in time order.

    ``role`` is ``owner`` (the user's data reached someone else) or ``viewer`` (the user was shown someone
    else's data); ``other_id`` is the other party (NULL: an anonymous viewer). ``record`` is ``exposure`` or
    ``near_miss`` (``kind`` says which: failed, discarded, not-data, ...); ``in_window`` is False for the
    exposures the chosen window leaves out (``exposures_outside_window``).

    An empty frame means the user is in the logs and nothing happened to their data or in front of them; an
    id that no request, session or cached value names raises :class:`WhosawError` (a typo would otherwise read
    as 'not affected'). ``user_id`` is read as ingest reads ids: 43.0, from a float column, is user 43.
    """
    with _opened(out_or_con) as con:
        _require(con, "exposures", "exposures_outside_window")
        views = _views(con)
        exposure_columns = (
            "ts, request_id, session_id, viewer_id, owner_id, key, value_key, category, severity, evidence, "
            "viewer_kind, host, conn_id, route, request_status, reply_request_id, source_file, source_line"
        )
        parts = [
            f"SELECT 'exposure' AS record, CAST(NULL AS VARCHAR) AS kind, true AS in_window, {exposure_columns} "
            "FROM exposures",
            f"SELECT 'exposure' AS record, CAST(NULL AS VARCHAR) AS kind, false AS in_window, {exposure_columns} "
            "FROM exposures_outside_window",
        ]
        if near_misses and "near_misses" in views:
            parts.append(
                "SELECT 'near_miss' AS record, kind, in_window, ts, request_id, CAST(NULL AS VARCHAR) AS session_id, "
                "viewer_id, owner_id, CAST(NULL AS VARCHAR) AS key, CAST(NULL AS VARCHAR) AS value_key, category, "
                "CAST(NULL AS VARCHAR) AS severity, CAST(NULL AS VARCHAR) AS evidence, "
                "CAST(NULL AS VARCHAR) AS viewer_kind, host, conn_id, CAST(NULL AS VARCHAR) AS route, "
                "CAST(NULL AS INTEGER) AS request_status, CAST(NULL AS VARCHAR) AS reply_request_id, "
                "source_file, source_line FROM near_misses"
            )
        rows = " UNION ALL BY NAME ".join(f"({part})" for part in parts)
        sql = f"""
            SELECT
                ts,
                CASE WHEN owner_id = $user THEN 'owner' ELSE 'viewer' END AS role,
                CASE WHEN owner_id = $user THEN viewer_id ELSE owner_id END AS other_id,
                record, kind, in_window, category, severity, evidence, key, value_key,
                request_id, session_id, viewer_id, owner_id, viewer_kind, route, request_status,
                host, conn_id, reply_request_id, source_file, source_line
            FROM ({rows}) AS r
            WHERE owner_id = $user OR viewer_id = $user
            ORDER BY ts, request_id, record, role, source_file, source_line, value_key
        """
        # the id as ingest reads ids (schema.id_text): 43.0, from a float column of a DataFrame, is user 43
        user = con.execute(f"SELECT {id_text('$user')}", {"user": str(user_id)}).fetchone()[0]
        trail = con.execute(sql, {"user": user}).df()
        if trail.empty and not _user_in_logs(con, user):
            # an empty trail reads as 'nothing happened to this user'; for an id the logs never name (a typo, an
            # id of another system, stray spaces) that is not what the data says. The id is not repeated here.
            raise WhosawError(
                "user_trail: no request, session or cached value in this output folder names this user id "
                "(check it: ids are compared exactly, case and spaces included)"
            )
        return trail


def _user_in_logs(con: duckdb.DuckDBPyConnection, user_id: str) -> bool:
    """Whether the lake names ``user_id`` anywhere: a request's or session's user, or a cached value's owner."""
    sql = (
        "SELECT EXISTS (SELECT 1 FROM requests WHERE user_id = $user) "
        "OR EXISTS (SELECT 1 FROM sessions WHERE user_id = $user) "
        "OR EXISTS (SELECT 1 FROM cache WHERE value_owner = $user)"
    )
    return bool(con.execute(sql, {"user": user_id}).fetchall()[0][0])


# ---------------------------------------------------------------------------------------------- connection timeline

# The analysis views the timeline needs; they and the views they read are run on the one connection.
_TIMELINE_VIEWS = ("source_files", "cache_lines", "connection_segments", "queued_calls", "crossed_replies")
_FINDING_TEXT = {
    "exposure": "exposure",
    "exposure_outside_window": "exposure outside the window",
}


def _needed_steps(steps: Sequence[Any], targets: Iterable[str]) -> list[Any]:
    """The analysis SQL steps that ``targets`` depend on (by the view names their SQL reads), in run order."""
    by_view = {step.view: step for step in steps}
    bodies = {step.view: re.sub(r"--[^\n]*", "", step.sql) for step in steps}
    wanted: set[str] = set()
    pending = [view for view in targets if view in by_view]
    missing = [view for view in targets if view not in by_view]
    if missing:
        raise WhosawError(f"internal: the analysis SQL has no view {missing[0]}")
    while pending:
        view = pending.pop()
        if view in wanted:
            continue
        wanted.add(view)
        for other in by_view:
            if other not in wanted and re.search(rf"\b{re.escape(other)}\b", bodies[view]):
                pending.append(other)
    return [step for step in steps if step.view in wanted]


def _as_utc(value: Any, name: str = "around") -> pd.Timestamp:
    """A time (ISO-8601 text, a datetime or a Timestamp; without a zone: UTC), else one clear error: a number
    (seconds? nanoseconds?) or NaT would silently find nothing."""
    try:
        ts = pd.Timestamp(value) if isinstance(value, str | datetime | np.datetime64) else None
    except ValueError:
        ts = None
    if ts is None or pd.isna(ts):
        raise WhosawError(f"{name}: expected a time (ISO-8601 text, a datetime or a Timestamp), not {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _duration(value: Any, name: str) -> pd.Timedelta:
    """A duration (text such as '2min', a timedelta or a Timedelta), else one clear error: a bare number would
    be nanoseconds to pandas."""
    try:
        span = pd.Timedelta(value) if isinstance(value, str | timedelta | np.timedelta64) else None
    except ValueError:
        span = None
    if span is None or pd.isna(span) or span < pd.Timedelta(0):
        raise WhosawError(f"{name}: expected a duration such as '2min' or a timedelta, not {value!r}")
    return span


def connection_timeline(
    out_or_con: OutOrCon,
    host: str,
    conn_id: str | int,
    around: str | datetime | pd.Timestamp | None = None,
    before: str | timedelta = "2min",
    after: str | timedelta = "2min",
) -> pd.DataFrame:
    """Every cache line of the pooled connection ``(host, conn_id)`` in ``[around - before, around + after]``
    (the whole connection when ``around`` is None), in call order, with what the FIFO rule says of it.

    Also included, wherever they are (``in_span`` False): for every crossed read in the span, the call whose
    reply it received and the abandoned (cancelled/timeout) calls before it since the last reset, which
    shifted it; so a crossed read always comes with the cancelled call that started the shift. Columns:

    * ``call_no``: the call's number since the connection was last reset (NULL for a reset op itself),
      ``segment``: 1 + the resets before it (reset ops, and error reads, which reset after reading);
    * ``reply_of_call``: for a call that read a reply, the number of the call whose reply it received
      (its own ``call_no`` unless crossed), with ``reply_request_id``, ``reply_key``, ``reply_key_owner``;
      ``crossed``: it received another call's reply;
    * ``reply_fate``: what became of this call's own reply: ``read`` by itself, ``read_by_other``
      (``read_by_call``, ``read_by_request_id``), ``discarded`` (the connection was reset before anyone read
      it), ``unread`` (still waiting when the log ends), or ``none`` (a reset op);
    * ``finding``: what the analysis made of the line (exposure, exposure_outside_window, near_miss:<kind>;
      several joined by ``; ``), with ``viewer_id``, ``owner_id``, ``category``, ``evidence`` of the first
      (an exposure before a near miss);
    * ``note``: the same in words; ``focus``: the line at ``around``; ``in_span``; ``source_file``,
      ``source_line``.

    The FIFO rule is not re-implemented here: the analysis' own SQL views (``connection_segments``,
    ``queued_calls``, ``crossed_replies`` and what they read) run on this connection's lines alone, with the
    config the run used.
    """
    out = results_dir(out_or_con)
    focus = None if around is None else _as_utc(around)
    span_before, span_after = _duration(before, "before"), _duration(after, "after")
    cfg = analysis_config(out)  # the key rules the exposures were found with, not only the ingest's
    con = duckdb.connect(":memory:")
    try:
        _spill_into(con, out)
        _progress_bar_off(con)
        con.execute("SET TimeZone = 'UTC'")
        for macro in DUCKDB_MACROS:
            con.execute(macro)
        register_inputs(con, out, cfg, Window(), DEFAULT_BUCKET_SECONDS)
        con.execute(
            "CREATE TEMP TABLE whosaw_connection_lake AS SELECT * FROM cache_lake WHERE host = ? AND conn_id = ?",
            [str(host), str(conn_id)],
        )
        if not con.execute("SELECT count(*) FROM whosaw_connection_lake").fetchall()[0][0]:
            raise WhosawError(f"no cache lines on connection host={host!r} conn_id={conn_id!r}")
        con.execute("CREATE OR REPLACE TEMPORARY VIEW cache_lake AS SELECT * FROM whosaw_connection_lake")
        run_steps(con, _needed_steps(load_steps(), _TIMELINE_VIEWS), show=False)
        _register_findings(con, out)
        if focus is None:
            span = "true"
            params: list[Any] = []
        else:
            span = "ts BETWEEN ? AND ?"
            params = [focus - span_before, focus + span_after]
        frame = con.execute(_TIMELINE_SQL.format(span=span), params).df()
    finally:
        con.close()
    frame.insert(0, "host", str(host))
    frame.insert(1, "conn_id", str(conn_id))
    frame["focus"] = False if focus is None else frame["ts"] == focus
    frame["note"] = [_note(row) for row in frame.itertuples(index=False)]
    return frame


def _register_findings(con: duckdb.DuckDBPyConnection, out: Path) -> None:
    """``findings``: the analysis outputs per cache line (source_file, source_line), one row per line. A line
    can hold more than one (an exposure whose own reply was then discarded; one exposure per item of a multi-key
    value); ``finding`` lists them all, the other columns are the first's (exposures before near misses)."""
    parts = []
    for rank, (name, label) in enumerate((("exposures", "exposure"),
                                          ("exposures_outside_window", "exposure_outside_window"))):
        path = out / RESULT_FILES[name]
        if path.exists():
            parts.append(
                f"SELECT source_file, source_line, {rank} AS rank, '{label}' AS finding, viewer_id, owner_id, "
                f"category, evidence FROM read_parquet({_quote(path)})"
            )
    path = out / RESULT_FILES["near_misses"]
    if path.exists():
        parts.append(
            "SELECT source_file, source_line, 2 AS rank, 'near_miss:' || kind AS finding, viewer_id, owner_id, "
            f"category, CAST(NULL AS VARCHAR) AS evidence FROM read_parquet({_quote(path)})"
        )
    columns = {"source_file": "VARCHAR", "source_line": "BIGINT", "rank": "INTEGER", "finding": "VARCHAR",
               "viewer_id": "VARCHAR", "owner_id": "VARCHAR", "category": "VARCHAR", "evidence": "VARCHAR"}
    rows = " UNION ALL ".join(parts) if parts else _empty_select(columns)
    firsts = ", ".join(
        f"first(f.{name} ORDER BY f.rank, f.finding, f.owner_id, f.category) AS {name}"
        for name in ("viewer_id", "owner_id", "category", "evidence")
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE findings AS SELECT f.source_file, f.source_line, "
        f"string_agg(f.finding, '; ' ORDER BY f.rank, f.finding) AS finding, {firsts} "
        f"FROM ({rows}) AS f INNER JOIN source_files AS s ON f.source_file = s.source_file "
        "GROUP BY f.source_file, f.source_line"
    )


_TIMELINE_SQL = """
WITH lines AS (
    SELECT
        l.line_id, l.ts, l.op, l.key, l.status, l.request_id, l.key_owner, l.key_category,
        l.is_read_op, l.is_reset_op, l.value_owner, l.value_sha256, f.source_file, l.source_line,
        s.segment_no,
        CASE WHEN l.is_reset_op THEN NULL
             ELSE row_number() OVER (PARTITION BY s.segment_no ORDER BY l.ts, l.line_id) END AS call_no,
        CASE WHEN NOT l.is_reset_op AND l.status NOT IN ('cancelled', 'timeout') THEN true ELSE false END
            AS reads_reply
    FROM cache_lines AS l
    INNER JOIN source_files AS f ON l.file_no = f.file_no
    INNER JOIN connection_segments AS s ON l.line_id = s.line_id
),
numbered AS (
    SELECT lines.*, 1 + count(CASE WHEN is_reset_op OR status = 'error' THEN 1 END) OVER (
        ORDER BY ts, line_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS segment
    FROM lines
),
replies AS (
    SELECT x.line_id, x.reply_line_id, p.call_no AS reply_call_no, p.request_id AS reply_request_id,
           p.key AS reply_key, p.key_owner AS reply_key_owner
    FROM crossed_replies AS x
    INNER JOIN numbered AS p ON x.reply_line_id = p.line_id
),
readers AS (
    SELECT x.reply_line_id AS line_id, r.call_no AS read_by_call, r.request_id AS read_by_request_id
    FROM crossed_replies AS x
    INNER JOIN numbered AS r ON x.line_id = r.line_id
),
in_span AS (
    SELECT line_id FROM numbered WHERE {span}
),
crossed_in_span AS (
    SELECT r.line_id, r.reply_line_id, n.segment_no, n.call_no
    FROM replies AS r
    INNER JOIN in_span AS s ON r.line_id = s.line_id
    INNER JOIN numbered AS n ON r.line_id = n.line_id
),
shown AS (
    SELECT line_id FROM in_span
    UNION
    SELECT reply_line_id FROM crossed_in_span
    UNION
    SELECT a.line_id
    FROM numbered AS a
    INNER JOIN crossed_in_span AS x ON a.segment_no = x.segment_no AND a.call_no < x.call_no
    WHERE a.status IN ('cancelled', 'timeout')
)
SELECT
    n.ts, n.segment, n.call_no, n.op, n.key, n.status, n.request_id, n.key_owner, n.key_category,
    n.value_owner,
    CASE WHEN n.reads_reply THEN coalesce(r.reply_call_no, n.call_no) END AS reply_of_call,
    CASE WHEN n.reads_reply THEN coalesce(r.reply_request_id, n.request_id) END AS reply_request_id,
    CASE WHEN n.reads_reply THEN CASE WHEN r.line_id IS NOT NULL THEN r.reply_key ELSE n.key END END AS reply_key,
    CASE WHEN n.reads_reply THEN CASE WHEN r.line_id IS NOT NULL THEN r.reply_key_owner ELSE n.key_owner END END
        AS reply_key_owner,
    r.line_id IS NOT NULL AS crossed,
    CASE
        WHEN n.is_reset_op THEN 'none'
        WHEN b.line_id IS NOT NULL THEN 'read_by_other'
        WHEN n.reads_reply AND (q.line_id IS NULL OR q.read_no = q.call_no) THEN 'read'
        WHEN n.segment_no < l.last_segment_no OR e.error_segment THEN 'discarded'
        ELSE 'unread'
    END AS reply_fate,
    b.read_by_call,
    b.read_by_request_id,
    g.finding,
    g.viewer_id,
    g.owner_id,
    g.category,
    g.evidence,
    n.source_file,
    n.source_line,
    n.line_id IN (SELECT line_id FROM in_span) AS in_span
FROM numbered AS n
INNER JOIN shown AS w ON n.line_id = w.line_id
LEFT JOIN replies AS r ON n.line_id = r.line_id
LEFT JOIN readers AS b ON n.line_id = b.line_id
LEFT JOIN queued_calls AS q ON n.line_id = q.line_id
CROSS JOIN (SELECT max(segment_no) AS last_segment_no FROM numbered) AS l
LEFT JOIN (
    SELECT segment_no, max(CASE WHEN status = 'error' THEN 1 ELSE 0 END) = 1 AS error_segment
    FROM numbered WHERE NOT is_reset_op GROUP BY segment_no
) AS e ON n.segment_no = e.segment_no
LEFT JOIN findings AS g ON n.source_file = g.source_file AND n.source_line = g.source_line
ORDER BY n.ts, n.line_id
"""


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value)) and value is not pd.NA


def _note(row: Any) -> str:
    """One line of English per timeline row: what the call did, whose reply it got, where its own reply went."""
    if not _present(row.call_no):
        return f"{row.op}: the connection is reset; every reply still unread on it is discarded"
    call = f"call #{int(row.call_no)} {row.op} {row.key}"
    reader = ""
    if row.reply_fate == "read_by_other":
        reader = f"call #{int(row.read_by_call)}"
        if _present(row.read_by_request_id):
            reader += f" ({row.read_by_request_id})"
    if row.status in ("cancelled", "timeout"):
        text = f"{call}: {row.status} after it was sent; its reply stayed on the connection"
        text += {
            "read_by_other": f", and {reader} read it",
            "discarded": " until a reset discarded it",
        }.get(row.reply_fate, ", still unread when the log ends")
    else:
        if row.crossed:
            whose = [str(v) for v in (row.reply_request_id, row.reply_key) if _present(v)]
            if _present(row.reply_key_owner):
                whose.append(f"owner {row.reply_key_owner}")
            text = f"{call}: read the reply of call #{int(row.reply_of_call)} ({', '.join(whose)}), not its own"
        else:
            text = f"{call}: got its own reply"
        if row.status == "error":
            text += "; could not use it (error) and reset the connection"
        text += {
            "read_by_other": f"; its own reply went to {reader}",
            "discarded": "; its own reply was never read (discarded by the reset)",
            "unread": "; its own reply was never read (still waiting when the log ends)",
        }.get(row.reply_fate, "")
    for finding in str(row.finding).split("; ") if _present(row.finding) else []:
        if finding.startswith("exposure"):
            viewer = row.viewer_id if _present(row.viewer_id) else "an anonymous viewer"
            text += f" -> {_FINDING_TEXT.get(finding, finding)}: {viewer} was shown {row.owner_id}'s {row.category}"
        else:
            text += f" -> {finding.replace('_', ' ')}"
    return text


# ---------------------------------------------------------------------------------------------- raw lines

SOURCE_LINE_KINDS = ("cache", "request", "session")


def _is_row(value: Any) -> bool:
    """One row: a Series, a mapping, or a row of ``DataFrame.itertuples()`` (a named tuple)."""
    return isinstance(value, pd.Series | Mapping) or (isinstance(value, tuple) and hasattr(value, "_asdict"))


def _row_dict(row: Any) -> dict[str, Any]:
    if _is_row(row):
        return row._asdict() if isinstance(row, tuple) else dict(row)
    raise WhosawError(
        "source_lines: rows must be a DataFrame, one row (a Series, a dict, a row of itertuples()) or a list of "
        f"them, not {type(row).__name__}"
    )


def _rows_frame(rows: Any) -> pd.DataFrame:
    if isinstance(rows, pd.DataFrame):
        frame = rows
    elif _is_row(rows) or not isinstance(rows, Iterable) or isinstance(rows, str | bytes):
        frame = pd.DataFrame([_row_dict(rows)])  # one row (or not rows at all: one clear error)
    else:
        frame = pd.DataFrame([_row_dict(row) for row in rows])
    if "source_file" not in frame.columns or "source_line" not in frame.columns:
        raise WhosawError("source_lines needs rows with source_file and source_line (e.g. exposures rows)")
    try:
        line_numbers = pd.to_numeric(frame["source_line"]).astype("Int64").reset_index(drop=True)
        ts = frame["ts"] if "ts" in frame.columns else pd.Series([pd.NaT] * len(frame))
        times = pd.to_datetime(ts, utc=True).reset_index(drop=True)
    except (ValueError, TypeError):
        raise WhosawError("source_lines: source_line must be whole line numbers, and ts times") from None
    columns = {
        "input_row": pd.Series(range(len(frame)), dtype="int64"),
        "source_file": frame["source_file"].astype("string").reset_index(drop=True),
        "source_line": line_numbers,
    }
    for name in ("request_id", "session_id"):
        series = frame[name] if name in frame.columns else pd.Series([None] * len(frame))
        columns[name] = series.astype("string").reset_index(drop=True)
    columns["ts"] = times
    return pd.DataFrame(columns)


def source_lines(
    out_or_con: OutOrCon,
    rows: Any,
    *,
    lines: Sequence[str] = SOURCE_LINE_KINDS,
    verify: bool = True,
) -> pd.DataFrame:
    """The raw input lines behind ``rows`` (exposures, near misses, timeline rows: anything with
    ``source_file`` and ``source_line``; a DataFrame, one row (a Series, a dict, a row of ``itertuples()``), or a
    list of rows). ``lines``: the kinds of line wanted (below), or one of them.

    For each row (``input_row`` = its position in ``rows``), one output row per line found, ``line_kind``:

    * ``cache``: the cache line at the row's ``source_file``/``source_line``;
    * ``request``: the requests-log line of the row's ``request_id``;
    * ``session``: the sessions-log event that decided the viewer (the latest event of the row's
      ``session_id`` at or before its ``ts``), when there is one.

    ``raw`` is the physical line as it is in the input file (``.gz`` inflated; line end removed); for a
    Parquet input, its row as JSON. Each input file is streamed once. ``verified`` says whether the file
    still has the SHA-256 the manifest recorded when it was ingested (None: not checked or not listed);
    ``note`` says why a line could not be read.
    """
    wanted_kinds = (lines,) if isinstance(lines, str) else tuple(lines)  # lines="cache": one kind, not c, a, ...
    unknown = [kind for kind in wanted_kinds if kind not in SOURCE_LINE_KINDS]
    if unknown:
        raise WhosawError(f"source_lines: unknown line kind {unknown[0]!r} (cache, request, session)")
    frame = _rows_frame(rows)
    out = results_dir(out_or_con)
    with _opened(out_or_con) as con:
        con.register("whosaw_source_rows", frame)
        try:
            located = con.execute(_locate_sql(wanted_kinds)).df()
        finally:
            con.unregister("whosaw_source_rows")
        manifest = {
            path: sha for path, sha in con.execute("SELECT path, sha256 FROM manifest_files").fetchall()
        }
    located = located[located["source_file"].notna() & located["source_line"].notna()].reset_index(drop=True)
    wanted: dict[str, set[int]] = {}
    for file, line in zip(located["source_file"], located["source_line"], strict=True):
        wanted.setdefault(str(file), set()).add(int(line))
    texts: dict[tuple[str, int], str] = {}
    verified: dict[str, bool | None] = {}
    notes: dict[str, str] = {}
    for file, numbers in wanted.items():
        try:
            found, digest = _read_lines(Path(file), numbers, verify=verify and file in manifest, scratch=out)
        except (OSError, WhosawError, duckdb.Error) as exc:
            notes[file] = f"cannot read {file}: {exc.__class__.__name__}"
            continue
        texts.update({(file, number): text for number, text in found.items()})
        verified[file] = None if digest is None else digest == manifest.get(file)
        if verified[file] is False:
            notes[file] = "the file changed since it was ingested (SHA-256 differs from the manifest)"
    located["raw"] = [texts.get((str(f), int(n))) for f, n in zip(located["source_file"], located["source_line"],
                                                               strict=True)]
    located["verified"] = [verified.get(str(f)) for f in located["source_file"]]
    located["note"] = [
        notes.get(str(f)) or (None if raw is not None else "no such line in the file")
        for f, raw in zip(located["source_file"], located["raw"], strict=True)
    ]
    return located


def _locate_sql(kinds: Sequence[str]) -> str:
    order = {kind: index for index, kind in enumerate(SOURCE_LINE_KINDS)}
    parts = []
    if "cache" in kinds:
        parts.append(
            "SELECT input_row, 'cache' AS line_kind, request_id, session_id, ts, source_file, source_line "
            "FROM whosaw_source_rows"
        )
    if "request" in kinds:
        parts.append(
            "SELECT w.input_row, 'request' AS line_kind, w.request_id, w.session_id, w.ts, "
            "q.source_file, q.source_line "
            "FROM whosaw_source_rows AS w INNER JOIN ("
            "  SELECT request_id, source_file, source_line, row_number() OVER ("
            "    PARTITION BY request_id ORDER BY ts, source_file, source_line) AS copy_no"
            "  FROM requests WHERE request_id IN (SELECT request_id FROM whosaw_source_rows)"
            ") AS q ON w.request_id = q.request_id AND q.copy_no = 1"
        )
    if "session" in kinds:
        parts.append(
            "SELECT w.input_row, 'session' AS line_kind, w.request_id, w.session_id, w.ts, "
            "s.source_file, s.source_line "
            "FROM whosaw_source_rows AS w INNER JOIN ("
            "  SELECT session_id, ts, source_file, source_line FROM sessions"
            "  WHERE session_id IN (SELECT session_id FROM whosaw_source_rows)"
            ") AS s ON w.session_id = s.session_id AND s.ts <= w.ts "
            "QUALIFY row_number() OVER (PARTITION BY w.input_row ORDER BY s.ts DESC, s.source_file DESC, "
            "s.source_line DESC) = 1"
        )
    case = " ".join(f"WHEN '{kind}' THEN {index}" for kind, index in order.items())
    union = " UNION ALL ".join(f"({part})" for part in parts)
    return (
        "SELECT input_row, line_kind, request_id, session_id, ts, source_file, source_line "
        f"FROM ({union}) AS x ORDER BY input_row, CASE line_kind {case} END"
    )


def _read_lines(path: Path, numbers: set[int], verify: bool, scratch: Path) -> tuple[dict[int, str], str | None]:
    """Lines ``numbers`` (1-based physical lines; a Parquet file's rows) of one input file, streamed once with
    ingest's own line reader, and the file's SHA-256 when ``verify`` (the whole file is then read). What has to
    go to disk meanwhile (a gzipped Parquet input inflated) goes to a folder of its own in ``scratch``."""
    fmt, gz = format_of(path.name)
    if fmt == "parquet":
        return _read_parquet_rows(path, numbers, gz, scratch), (sha256_file(path) if verify else None)
    if not path.is_file():
        raise FileNotFoundError(path)
    lines = PhysicalLines(path)
    wanted = pa.array(sorted(numbers), type=pa.int64())
    found: dict[int, str] = {}
    batches = lines.batches()
    try:
        for batch in batches:
            mask = pc.is_in(batch.column("line_no"), value_set=wanted)
            if pc.any(mask).as_py():
                picked = batch.filter(mask)
                text = picked.column("line").to_pylist()
                binary = picked.column("line_bin").to_pylist()
                for number, line, data in zip(picked.column("line_no").to_pylist(), text, binary, strict=True):
                    raw = line if line is not None else (data or b"").decode("utf-8", errors="replace")
                    found[number] = raw.rstrip("\n").rstrip("\r")
            if not verify and len(found) == len(numbers):
                break
    finally:
        batches.close()
    return found, (lines.sha256 if verify else None)  # the stream hashed the whole file (a damaged .gz too)


def _read_parquet_rows(path: Path, numbers: set[int], gz: bool, scratch_root: Path) -> dict[int, str]:
    """Rows ``numbers`` (1-based) of a Parquet input as JSON text. The inflated copy of a ``.parquet.gz`` (the
    whole input: personal data) and anything DuckDB spills go to a folder in ``scratch_root`` (the output
    folder), removed afterwards: never the system's temp folder or the current one."""
    import gzip
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".tmp-lines-", dir=scratch_root) as scratch:
        source = path
        if gz:
            source = Path(scratch) / "input.parquet"
            with gzip.open(path, "rb") as src, open(source, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        con = duckdb.connect(config={"temp_directory": str(Path(scratch) / "spill")})
        try:
            wanted = ", ".join(str(int(n) - 1) for n in sorted(numbers))
            rows = con.execute(
                "SELECT file_row_number + 1, CAST(to_json(p) AS VARCHAR) FROM ("
                f"  SELECT * FROM read_parquet({_quote(source)}, file_row_number = true, hive_partitioning = false)"
                f"  WHERE file_row_number IN ({wanted})) AS p"
            ).fetchall()
        finally:
            con.close()
    found = {}
    for number, text in rows:
        record = json.loads(text)
        record.pop("file_row_number", None)
        found[int(number)] = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    return found


# ---------------------------------------------------------------------------------------------- export, what-if

def export_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` as spreadsheet-safe CSV (times ISO-8601 UTC; folders created); the path.
    A named index is written as columns first: a crosstab's or a groupby's rows are named by it (the viewer, the
    owner), and the writer reads columns only. An unnamed one (a filtered frame's row numbers) is left out, and
    so is one that is a column already. Two levels of column names (several aggregations, a pivot) are joined
    with ``_``: ``ts_min``."""
    path = Path(path)
    if path.is_dir():
        raise WhosawError(f"export_csv: {path} is a folder; name the CSV file to write")
    if isinstance(frame.columns, pd.MultiIndex):  # .agg(["min", "max"]), a pivot: ('ts', 'min') -> ts_min
        frame = frame.set_axis(
            ["_".join(str(part) for part in parts if str(part) != "") for parts in frame.columns], axis=1
        )
    # named index levels first, but once: one that is a column too (set_index(..., drop=False)) is that column;
    # a column of its name with other values (groupby("owner_id").agg({"owner_id": "count"})) would hide it
    named = [name for name in frame.index.names if name is not None]
    for name in named:
        if name in frame.columns and not pd.Series(frame.index.get_level_values(name)).equals(
            frame[name].reset_index(drop=True)
        ):
            raise WhosawError(f"export_csv: the index {name!r} and a column of that name differ; rename one")
    missing = [name for name in named if name not in frame.columns]
    if missing:
        frame = frame.reset_index(level=missing)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safe_csv(frame, path)
    return path


def reanalyze(
    out: str | Path,
    dest: str | Path,
    window: str | None = None,
    config: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Run :func:`pipeline.analyze` on the lake of ``out`` into the folder ``dest`` (e.g. ``window='auto'``)
    and return its summary; ``out`` itself is left exactly as it is.

    ``config``: None is the config ``out``'s own analysis used (:func:`analysis_config`), so only the window
    differs from ``out``'s results.

    ``dest`` gets a link to ``out``'s lake (a copy where links are not allowed) and a copy of its manifest,
    then the analysis outputs; :func:`connect` works on it like on any output folder. ``dest`` must not be
    ``out``; an existing ``dest`` made by this function is replaced. ``out`` is locked meanwhile, as a CLI
    stage locks it: an ingest into ``out`` (late logs) cannot change the lake under the analysis, and one that
    is running makes this refuse at once.
    """
    out, dest = Path(out).resolve(), Path(dest).resolve()
    refuse_pattern_characters(dest)  # before anything in dest changes (analyze would refuse it after)
    if dest == out or out in dest.parents or dest in out.parents:
        raise WhosawError("reanalyze: dest must be a folder outside out (and not holding it)")
    if not (out / "parquet").is_dir():
        raise WhosawError(f"{out}: no lake (parquet/) here; run pipeline.ingest first")
    unknown = sorted(set(options) - set(inspect.signature(analyze).parameters) - {"out", "config", "window"})
    if unknown:
        raise WhosawError(f"reanalyze: unknown option {unknown[0]!r} (pipeline.analyze's options are taken)")
    with locked(out, "reanalyze"):  # which rolls back what a killed ingest left half-committed, as analyze does
        cfg = analysis_config(out) if config is None else as_config(config)
        resolve_analysis_window(window, cfg)  # a bad window or config is refused before dest's results are replaced
        return _reanalyze_locked(out, dest, window, cfg, options)


def _reanalyze_locked(
    out: Path, dest: Path, window: str | None, config: Any, options: dict[str, Any]
) -> dict[str, Any]:
    """The reanalysis is made in a scratch folder beside ``dest`` and takes its place only once it succeeded: a
    value the analysis refuses (a bucket size, an engine, a memory limit) leaves ``dest``'s earlier results."""
    if dest.exists() and not (dest / REANALYSIS_MARK).exists():
        raise WhosawError(f"reanalyze: {dest} exists and was not made by reanalyze; choose a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = dest.parent / f".{dest.name}.reanalysis-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    scratch.mkdir(mode=0o700)  # like a new --out: its owner's only
    try:
        (scratch / REANALYSIS_MARK).write_text(str(out) + "\n", encoding="utf-8")
        for folder in ("parquet", "rejects"):
            if not (out / folder).is_dir():
                continue
            try:
                os.symlink(out / folder, scratch / folder, target_is_directory=True)
            except OSError:
                shutil.copytree(out / folder, scratch / folder)
        if (out / "manifest.json").exists():
            shutil.copy2(out / "manifest.json", scratch / "manifest.json")
        summary = analyze(scratch, config=config, window=window, **options)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(scratch, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary
