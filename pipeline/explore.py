"""Exploring a finished run from Python or Jupyter: DuckDB views over the lake and the results.

``connect(out)`` gives a DuckDB connection on which ``requests``, ``cache``, ``sessions``, ``rejects``,
``exposures``, ``exposures_outside_window``, ``near_misses`` and ``timeline`` are views, so
``con.sql("SELECT ...").df()`` just works. The helpers below answer the questions an investigator asks first.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from .errors import WhosawError
from .schema import KINDS, LAKE_COLUMNS, PROVENANCE_COLUMNS

RESULT_FILES = {
    "exposures": "exposures.parquet",
    "exposures_outside_window": "exposures_outside_window.parquet",
    "near_misses": "near_misses.parquet",
    "timeline": "timeline.parquet",
}


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def lake_relation_sql(out: Path, kind: str) -> str:
    """SQL reading one kind of the lake; an empty typed relation when ingestion found none of it."""
    folder = out / "parquet" / kind
    if folder.is_dir() and any(folder.rglob("*.parquet")):
        return f"SELECT * FROM read_parquet({_quote(folder / '**' / '*.parquet')}, hive_partitioning = true)"
    columns = {**LAKE_COLUMNS[kind], **PROVENANCE_COLUMNS, "date": "VARCHAR", "hour": "BIGINT"}
    typed = ", ".join(f"CAST(NULL AS {dtype}) AS {name}" for name, dtype in columns.items())
    return f"SELECT {typed} WHERE false"


def connect(out: str | Path, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views over everything a run wrote to ``out``."""
    out = Path(out)
    if not out.is_dir():
        raise WhosawError(f"{out} is not a whosaw output folder")
    con = duckdb.connect(database)
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    for kind in KINDS:
        con.execute(f"CREATE OR REPLACE VIEW {kind} AS {lake_relation_sql(out, kind)}")
    rejects = sorted((out / "rejects").glob("*.parquet")) if (out / "rejects").is_dir() else []
    if rejects:
        files = ", ".join(_quote(path) for path in rejects)
        con.execute(f"CREATE OR REPLACE VIEW rejects AS SELECT * FROM read_parquet([{files}], union_by_name = true)")
    for view, name in RESULT_FILES.items():
        if (out / name).exists():
            con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM read_parquet({_quote(out / name)})")
    return con
