"""The same analysis SQL on Apache Spark (local mode), and a check that it agrees with DuckDB.

The files in ``pipeline/sql/analyze/`` are written in the subset DuckDB and Spark SQL share (see
``pipeline/analyze.py``). This module is the Spark side of the few engine-specific parts:

* the lake is read with ``spark.read.parquet`` (hive partitions discovered), cut to the lake columns, with a
  NULL of the right type for a column the files lack, and an empty typed view for a kind with no files;
* the side tables (ownership, grants) are read and typed by DuckDB exactly as the DuckDB run does, then handed
  to Spark (they are small);
* the key-rule view is generated with Spark's string-literal quoting (backslashes escape), its patterns
  rewritten from RE2 (DuckDB's, the config's dialect) to java.util.regex where the two differ;
* multi-key keys (``multi_keys``: the same pattern, Java's copy) are split into ``key_items`` with
  ``posexplode(from_json(key, 'array<string>'))`` where DuckDB uses ``from_json`` and ``unnest``;
* a ``-- materialize`` view is computed once (``localCheckpoint``) and stands behind its name, as DuckDB's
  temporary table does;
* ``regexp_like``, ``unix_micros``, ``timestamp_micros`` are native (``percentile_cont`` is not used: it
  interpolates in floating point differently per engine; 90_chosen_window spells the baseline out).

``compare(out)`` runs DuckDB's analysis (queried, not written: ``out`` is left as it is) and the Spark run on
the same lake and returns the differences
(exposures row by row, the window, near-miss and timeline counts). pyspark is optional
(``pip install pyspark``; it needs Java 17); without it :func:`spark_available` is False.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from .analyze import (
    BUCKET_COUNTS_SQL,
    KEY_ITEMS_SPARK_SQL,
    LOG_GAPS_SQL,
    RULE_KEYS_SQL,
    SIDE_TABLE_COLUMNS,
    SIDE_TABLE_TIME_COLUMNS,
    analysis_views,
    bucket_seconds_for,
    build_summary,
    cache_op_rows,
    key_rule_sql,
    load_side_table,
    load_steps,
    log_gaps_summary,
    multi_keys_sql,
    params_row,
    quote_spark,
    quote_spark_pattern,
    resolve_analysis_window,
    resolve_config,
)
from .config import Config, Window
from .manifest import locked, remove_stage_scratch
from .schema import EXPOSURE_COLUMNS, KINDS, LAKE_COLUMNS, PROVENANCE_COLUMNS

TIMELINE_COMPARED = (
    "bucket_start", "requests", "reads", "crossed_replies", "exposures", "near_misses", "in_window", "baseline",
    "threshold",
)
SPARK_TYPES = {"VARCHAR": "string", "INTEGER": "int", "BIGINT": "bigint", "TIMESTAMPTZ": "timestamp",
               "BOOLEAN": "boolean"}


def spark_available() -> bool:
    """pyspark importable and a Java runtime on PATH (local Spark needs both)."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return False
    return shutil.which("java") is not None


def session(app: str = "whosaw", local_dir: str | Path | None = None):
    """A small local SparkSession in UTC (the analysis compares instants; Spark shows them in this zone).
    ``local_dir``: Spark's scratch (shuffle and spill files, which hold log rows), else the system's temp folder;
    it applies when this call starts Spark, not to a session already running."""
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master("local[2]").appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "2g")
    )
    if local_dir is not None:
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        builder = builder.config("spark.local.dir", str(local_dir))
    return builder.getOrCreate()


def _lake_view(spark, out: Path, kind: str) -> None:
    columns = {**LAKE_COLUMNS[kind], **PROVENANCE_COLUMNS}
    folder = out / "parquet" / kind
    files = list(folder.rglob("*.parquet")) if folder.is_dir() else []
    if files:
        frame = spark.read.option("basePath", str(folder)).parquet(str(folder))
        present = set(frame.columns)
    else:
        frame = spark.range(0)
        present = set()
    exprs = [
        f"CAST({name} AS {SPARK_TYPES[dtype]}) AS {name}" if name in present
        else f"CAST(NULL AS {SPARK_TYPES[dtype]}) AS {name}"
        for name, dtype in columns.items()
    ]
    frame.selectExpr(*exprs).createOrReplaceTempView(f"{kind}_lake")


def _small_view(spark, name: str, frame: pd.DataFrame, schema: str) -> None:
    def plain(value: Any) -> Any:
        if value is None or value is pd.NaT or (not isinstance(value, str) and pd.isna(value)):
            return None
        return value.to_pydatetime() if isinstance(value, pd.Timestamp) else value

    rows = [tuple(plain(v) for v in row) for row in frame.itertuples(index=False)]
    spark.createDataFrame(rows, schema=schema).createOrReplaceTempView(name)


def register_inputs(spark, out: Path, cfg: Config, window: Window, bucket_seconds: int | None = None) -> int:
    """Spark's input views, the same names and columns as DuckDB's (pipeline/analyze.py); the bucket size."""
    for kind in KINDS:
        _lake_view(spark, out, kind)
    if bucket_seconds is None:
        bucket_seconds = bucket_seconds_for(list(spark.sql(BUCKET_COUNTS_SQL).collect()[0]))
    # Spark-only: multi-key keys (a JSON array of strings) and their items, as DuckDB's analyze.register_inputs
    # makes them (the same pattern, in Java's dialect; posexplode for DuckDB's unnest).
    spark.sql("SELECT DISTINCT key FROM cache_lake WHERE key IS NOT NULL").createOrReplaceTempView("cache_keys")
    spark.sql(multi_keys_sql(quote_spark, java=True)).localCheckpoint(eager=True).createOrReplaceTempView(
        "multi_keys"
    )
    spark.sql(KEY_ITEMS_SPARK_SQL).localCheckpoint(eager=True).createOrReplaceTempView("key_items")
    rules = key_rule_sql(cfg.keys, quote_spark, quote_pattern=quote_spark_pattern, keys_sql=RULE_KEYS_SQL)
    spark.sql(rules).createOrReplaceTempView("key_rule_matches")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, spec in SIDE_TABLE_COLUMNS.items():
        table = load_side_table(con, name, cfg.tables.get(name))
        frame = con.execute(f"SELECT * FROM {table}").df()
        columns = spec["required"] + spec["optional"]
        schema = ", ".join(f"{c} {'timestamp' if c in SIDE_TABLE_TIME_COLUMNS else 'string'}" for c in columns)
        _small_view(spark, f"{name}_table", frame, schema)
    con.close()
    spark.createDataFrame(
        cache_op_rows(cfg), "op string, is_read boolean, is_write boolean, is_reset boolean",
    ).createOrReplaceTempView("cache_ops")
    spark.createDataFrame(
        [params_row(window, bucket_seconds)],
        "window_start timestamp, window_end timestamp, window_method string, bucket_seconds bigint",
    ).createOrReplaceTempView("params")
    return bucket_seconds


def run(spark, out: str | Path, config: str | Path | Config | None = None, window: str | Window | None = None,
        bucket_seconds: int | None = None) -> None:
    """Create every analysis view on ``spark`` over the lake under ``out`` (nothing is written)."""
    out = Path(out)
    cfg = resolve_config(out, config)
    register_inputs(spark, out, cfg, resolve_analysis_window(window, cfg), bucket_seconds)
    for step in load_steps():
        spark.sql(step.sql)
        if step.materialize:
            # Like DuckDB's temp table: computed once, and later views see a leaf, not the whole plan again
            # (re-analysing deep inlined view trees makes Spark's analyzer crawl).
            spark.table(step.view).localCheckpoint(eager=True).createOrReplaceTempView(step.view)


def _normal(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows as comparable text: times in UTC ISO, integers without '.0', NULL as ''."""
    frame = frame[list(columns)].copy()
    for c in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[c]):
            values = pd.to_datetime(frame[c], utc=True)
            frame[c] = values.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        elif pd.api.types.is_float_dtype(frame[c]):
            frame[c] = frame[c].map(
                lambda v: "" if pd.isna(v) else repr(int(v)) if float(v).is_integer() else repr(v)
            )
    return frame.astype(object).where(frame.notna(), "").astype(str)


def compare(out: str | Path, config: str | Path | Config | None = None, window: str | Window | None = None,
            spark=None) -> dict[str, Any]:
    """Analyse ``out``'s lake with DuckDB and with Spark; return what differs (empty lists, equal counts: same).
    Nothing in ``out`` changes but its lock file (``.ingest.lock``): the DuckDB side is queried on its connection,
    not written. The lock keeps a concurrent ingest from changing the lake between the two engines' reads, and a
    concurrent stage's scratch clean-up from removing the DuckDB side's spill folder."""
    out = Path(out)
    with locked(out, "spark compare"):
        cfg = resolve_config(out, config)
        with analysis_views(out, cfg, resolve_analysis_window(window, cfg)) as (con, _):
            summary = build_summary(con)
            exposures = con.execute(f"SELECT {', '.join(EXPOSURE_COLUMNS)} FROM exposures_in_window").df()
            duck_rows = _normal(exposures, EXPOSURE_COLUMNS)
            duck_timeline = _normal(con.execute("SELECT * FROM timeline").df(), TIMELINE_COMPARED)
        own = spark is None
        scratch = out / ".tmp" / f"spark-{os.getpid()}"  # Spark's own scratch stays under OUT, as DuckDB's does
        spark = spark or session(local_dir=scratch)
        try:
            run(spark, out, config, window)
            spark_rows = _normal(spark.sql("SELECT * FROM exposures_in_window").toPandas(), EXPOSURE_COLUMNS)
            window_row = spark.sql("SELECT window_start, window_end, window_method FROM chosen_window").toPandas()
            near_kinds = spark.sql(
                "SELECT kind, count(*) AS n FROM near_misses WHERE in_window GROUP BY kind"
            ).toPandas()
            buckets = _normal(spark.sql("SELECT * FROM timeline").toPandas(), TIMELINE_COMPARED)
            gaps = log_gaps_summary(spark.sql(LOG_GAPS_SQL).collect())
        finally:
            if own:
                spark.stop()
                remove_stage_scratch(out, scratch)

    def rows(frame: pd.DataFrame) -> set[tuple]:
        return set(map(tuple, frame.values.tolist()))

    spark_window = _normal(window_row, ("window_start", "window_end", "window_method")).iloc[0].tolist()
    duck_window = [
        _iso_or_empty(summary["window"]["start"]), _iso_or_empty(summary["window"]["end"]),
        summary["window"]["method"],
    ]
    return {
        "exposures": {"duckdb": len(duck_rows), "spark": len(spark_rows)},
        "only_duckdb": sorted(rows(duck_rows) - rows(spark_rows)),
        "only_spark": sorted(rows(spark_rows) - rows(duck_rows)),
        "window": {"duckdb": duck_window, "spark": spark_window},
        "near_misses": {"duckdb": summary["near_misses"]["total"], "spark": int(near_kinds["n"].sum())},
        "near_misses_by_kind": {
            "duckdb": summary["near_misses"]["by_kind"],
            "spark": {str(k): int(n) for k, n in sorted(zip(near_kinds["kind"], near_kinds["n"], strict=True))},
        },
        "timeline_differences": len(rows(duck_timeline) ^ rows(buckets)),
        "log_gaps": {"duckdb": summary["log_gaps"], "spark": gaps},
    }


def _iso_or_empty(text: str | None) -> str:
    if not text:
        return ""
    return pd.Timestamp(text).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


if __name__ == "__main__":  # python -m pipeline.spark OUT [CONFIG] [WINDOW]
    import json
    import sys

    args = sys.argv[1:]
    result = compare(args[0], args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else None)
    print(json.dumps({k: v for k, v in result.items() if k not in ("only_duckdb", "only_spark")}, indent=2))
    print(f"rows only in DuckDB: {len(result['only_duckdb'])}, only in Spark: {len(result['only_spark'])}")
