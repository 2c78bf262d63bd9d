"""The same analysis SQL on Apache Spark: ``analyze --engine spark``, and a check that it agrees with DuckDB.

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

``write_analysis`` is ``analyze(out, engine="spark")``: the views and the summary on Spark, the output files
written from Spark's result views by DuckDB's own writer. ``compare(out)`` runs DuckDB's analysis (queried, not
written: ``out`` is left as it is) and the Spark run on the same lake and returns the differences (exposures row
by row, the whole summary, the timeline). pyspark is optional (``pip install pyspark``; it needs Java 17);
without it :func:`spark_available` is False.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from .analyze import (
    BUCKET_COUNTS_SQL,
    KEY_ITEMS_SPARK_SQL,
    RULE_KEYS_SQL,
    SIDE_TABLE_COLUMNS,
    SIDE_TABLE_TIME_COLUMNS,
    Rows,
    analysis_views,
    bucket_seconds_for,
    build_summary,
    cache_op_rows,
    connect,
    default_memory_mb,
    duckdb_rows,
    key_rule_sql,
    load_side_table,
    load_steps,
    multi_keys_sql,
    params_row,
    quote_spark,
    quote_spark_pattern,
    resolve_analysis_window,
    resolve_config,
    value_category_rows,
    write_outputs,
)
from .config import Config, Window
from .errors import NO_SPILL, WhosawError
from .manifest import locked, refuse_pattern_characters, remove_stage_scratch
from .progress import progress_wanted
from .schema import EXPOSURE_COLUMNS, KINDS, LAKE_COLUMNS, PROVENANCE_COLUMNS

TIMELINE_COMPARED = (
    "bucket_start", "requests", "reads", "crossed_replies", "exposures", "near_misses", "in_window", "baseline",
    "threshold",
)
# What the analysis needs of a SparkSession: instants shown, hours and days cut, in UTC; timestamps written as
# Parquet's TIMESTAMP (not the legacy INT96) for DuckDB to read them back; ANSI SQL, as DuckDB's (a bad cast or an
# overflow is an error, not a NULL), and the default from Spark 4 on, where the parity tests run.
SESSION_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.ansi.enabled": "true",
}
# The master of the Spark that whosaw starts when none is running: this machine, two cores.
LOCAL_MASTER = "local[2]"
_MASTER_URL = re.compile(r"local(\[(\d+|\*)(, *\d+)?\])?|local-cluster\[\d+, *\d+, *\d+\]|yarn|(spark|k8s)://\S+")
# Spark's own log turned off, for a Spark whosaw starts (quiet_logging).
LOG_CONFIG = Path(__file__).with_name("spark_log4j2.properties")
# The views analyze writes to files (analyze.write_outputs).
RESULT_VIEWS = ("exposures_in_window", "exposures_outside_window", "near_misses", "timeline")
SPARK_TYPES = {"VARCHAR": "string", "INTEGER": "int", "BIGINT": "bigint", "TIMESTAMPTZ": "timestamp",
               "BOOLEAN": "boolean"}


def spark_available() -> bool:
    """pyspark importable and a Java runtime on PATH (local Spark needs both)."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return False
    return shutil.which("java") is not None


@contextlib.contextmanager
def _no_pandas_version_warning() -> Iterator[None]:
    """pyspark 4.x warns of pandas 3 when it starts; whosaw hands Spark no pandas frame of the lake."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support", category=FutureWarning)
        yield


def _spark_session_class():
    with _no_pandas_version_warning():
        from pyspark.sql import SparkSession
    return SparkSession


def session(app: str = "whosaw", local_dir: str | Path | None = None, progress: bool = False,
            master: str = LOCAL_MASTER):
    """A SparkSession in UTC (the analysis compares instants; Spark shows them in this zone) on ``master``: by
    default local, 2 cores, the memory DuckDB's analysis gets by default (60% of RAM, at most 6 GB) for the driver.
    ``local_dir``: Spark's scratch (shuffle and spill files, which hold log rows; its catalog's folder), else the
    system's temp folder (the catalog's: ``spark-warehouse`` in the current folder); a cluster's executors may keep
    theirs where their cluster manager says;
    ``progress``: Spark's stage bars on stderr. All apply when this call starts Spark, not to a session already
    running. A master Spark cannot start on is a :class:`WhosawError` of one line."""
    check_master(master)
    builder = (
        _spark_session_class().builder.master(master).appName(app)
        .config(map=SESSION_SETTINGS)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", f"{default_memory_mb()}m")  # DuckDB's default; 2 GB: 18% slower at 1M
        .config("spark.ui.showConsoleProgress", "true" if progress else "false")
    )
    quiet = quiet_logging()
    if quiet is not None:
        builder = builder.config("spark.driver.extraJavaOptions", quiet)
    else:  # the user's logging: at least no WARN per window without PARTITION BY (the scans': a few rows)
        builder = builder.config("spark.log.level", "ERROR")
    if master == "local" or master.startswith("local["):  # this machine's cores; a cluster keeps its own partitions
        builder = builder.config("spark.sql.shuffle.partitions", "4")
    if local_dir is not None:
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        builder = builder.config("spark.local.dir", str(local_dir))
        # the catalog's folder, which Spark makes in the current folder the first time it looks a name up there
        builder = builder.config("spark.sql.warehouse.dir", str(Path(local_dir).resolve() / "warehouse"))
    try:
        with _no_pandas_version_warning():
            return builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - pyspark's and py4j's errors share no base class but Exception
        raise WhosawError(f"engine spark: Spark did not start on master {master!r}: {_reason(exc)}") from None


def quiet_logging() -> str | None:
    """The driver's Java option that turns Spark's own log off (:data:`LOG_CONFIG`) in a Spark whosaw starts: its
    start-up notes and a failed start's Java stack would bury whosaw's one line. None (Spark's log as configured)
    with ``WHOSAW_DEBUG`` set, or where the user configures Spark's logging or the driver's Java options
    (``PYSPARK_SUBMIT_ARGS``, ``log4j2.properties`` or ``spark-defaults.conf`` in Spark's conf folder): this
    option would replace theirs."""
    if os.environ.get("WHOSAW_DEBUG"):
        return None
    if any(word in os.environ.get("PYSPARK_SUBMIT_ARGS", "") for word in ("extraJavaOptions", "driver-java-options")):
        return None
    for folder in _spark_conf_folders():
        defaults = folder / "spark-defaults.conf"
        if (folder / "log4j2.properties").exists() or (
            defaults.is_file() and "spark.driver.extraJavaOptions" in defaults.read_text(errors="replace")
        ):
            return None
    return f"-Dlog4j2.configurationFile={LOG_CONFIG.resolve().as_uri()}"


def _spark_conf_folders() -> list[Path]:
    """Where spark-submit looks for its configuration: $SPARK_CONF_DIR, else $SPARK_HOME/conf, else pyspark's."""
    if os.environ.get("SPARK_CONF_DIR"):
        return [Path(os.environ["SPARK_CONF_DIR"])]
    if os.environ.get("SPARK_HOME"):
        return [Path(os.environ["SPARK_HOME"]) / "conf"]
    spec = importlib.util.find_spec("pyspark")
    return [Path(spec.origin).parent / "conf"] if spec is not None and spec.origin else []


def _reason(exc: Exception) -> str:
    """The first line of what went wrong: the Java exception's, when Java's side failed (py4j's own message only
    names the call)."""
    java = getattr(exc, "java_exception", None)
    text = str(java.toString() if java is not None else exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def check_master(master: str) -> None:
    """A master URL Spark accepts (Spark's own check comes later, as a Java stack trace on stderr)."""
    if not _MASTER_URL.fullmatch(master):
        raise WhosawError(
            f"spark master: {master!r} is not a Spark master URL: expected local[N], spark://HOST:PORT, yarn or "
            "k8s://https://HOST:PORT"
        )


def _lake_view(spark, out: Path, kind: str) -> None:
    columns = {**LAKE_COLUMNS[kind], **PROVENANCE_COLUMNS}
    folder = out / "parquet" / kind
    files = list(folder.rglob("*.parquet")) if folder.is_dir() else []
    if files:
        # mergeSchema: every file's columns, as DuckDB's union_by_name (else Spark takes one file's footer, and a
        # column missing from that file reads as NULL in them all)
        frame = spark.read.option("basePath", str(folder)).option("mergeSchema", "true").parquet(str(folder))
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


def _materialize(frame, view: str) -> None:
    """``frame`` computed once and put behind the name ``view``, like DuckDB's temporary table: later views see a
    leaf, not the whole plan again (re-analysing deep inlined view trees makes Spark's analyzer crawl). Its columns
    are renamed to themselves, which gives them new identities: a checkpoint keeps those of the plan it was computed
    from, and without adaptive query execution (``spark.sql.adaptive.enabled=false``, a cluster's choice) Spark
    cannot then tell them from the same columns of the view they came from (``c.key`` of ``cache_lake`` joined to
    ``multi_keys``, made from it: "cannot be resolved")."""
    checkpointed = frame.localCheckpoint(eager=True)
    checkpointed.toDF(*checkpointed.columns).createOrReplaceTempView(view)


def register_inputs(spark, out: Path, cfg: Config, window: Window, bucket_seconds: int | None = None) -> int:
    """Spark's input views, the same names and columns as DuckDB's (pipeline/analyze.py); the bucket size."""
    for kind in KINDS:
        _lake_view(spark, out, kind)
    if bucket_seconds is None:
        bucket_seconds = bucket_seconds_for(list(spark.sql(BUCKET_COUNTS_SQL).collect()[0]))
    # Spark-only: multi-key keys (a JSON array of strings) and their items, as DuckDB's analyze.register_inputs
    # makes them (the same pattern, in Java's dialect; posexplode for DuckDB's unnest).
    spark.sql("SELECT DISTINCT key FROM cache_lake WHERE key IS NOT NULL").createOrReplaceTempView("cache_keys")
    _materialize(spark.sql(multi_keys_sql(quote_spark, java=True)), "multi_keys")
    _materialize(spark.sql(KEY_ITEMS_SPARK_SQL), "key_items")
    rules = key_rule_sql(cfg.keys, quote_spark, quote_pattern=quote_spark_pattern, keys_sql=RULE_KEYS_SQL)
    spark.sql(rules).createOrReplaceTempView("key_rule_matches")
    con = duckdb.connect(config=NO_SPILL)
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
    spark.createDataFrame(value_category_rows(cfg), "category string").createOrReplaceTempView("value_categories")
    spark.createDataFrame(
        [params_row(window, bucket_seconds)],
        "window_start timestamp, window_end timestamp, window_method string, bucket_seconds bigint",
    ).createOrReplaceTempView("params")
    return bucket_seconds


def run(spark, out: str | Path, config: str | Path | Config | None = None, window: str | Window | None = None,
        bucket_seconds: int | None = None) -> int:
    """Create every analysis view on ``spark`` over the lake under ``out`` (nothing is written); the bucket size."""
    out = Path(out)
    cfg = resolve_config(out, config)
    bucket_seconds = register_inputs(spark, out, cfg, resolve_analysis_window(window, cfg), bucket_seconds)
    for step in load_steps():
        spark.sql(step.sql)
        if step.materialize:
            _materialize(spark.table(step.view), step.view)
    return bucket_seconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def spark_rows(spark) -> Rows:
    """:data:`~pipeline.analyze.Rows` on Spark, times as UTC datetimes. A timestamp comes over as microseconds since
    the epoch: pyspark's own conversion makes a naive datetime in the Python process's local time, which fails for
    an instant whose local year is outside 1-9999 (a window from 0001-01-01, or to 9999-12-31 east of UTC)."""
    from pyspark.sql.types import TimestampType

    def rows(sql: str) -> list[tuple]:
        frame = spark.sql(sql)
        names = [f"c{i}" for i in range(len(frame.columns))]  # by position: a result may repeat a name
        frame = frame.toDF(*names)
        times = [isinstance(field.dataType, TimestampType) for field in frame.schema.fields]
        frame = frame.selectExpr(*(f"unix_micros({n})" if t else n for n, t in zip(names, times, strict=True)))
        return [
            tuple(_EPOCH + timedelta(microseconds=v) if t and v is not None else v
                  for v, t in zip(row, times, strict=True))
            for row in frame.collect()
        ]

    return rows


@contextlib.contextmanager
def _disk_full_as_os_error() -> Iterator[None]:
    """A full disk under Spark (its scratch or the results, under ``--out``) as the ``OSError`` (ENOSPC) Python
    raises for one, not as a Java stack trace: the CLI gives it the line DuckDB's full disk gets."""
    try:
        yield
    except Exception as exc:
        if getattr(exc, "java_exception", None) is not None and "No space left on device" in str(exc):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
        raise


@contextlib.contextmanager
def spark_session(out: Path, progress: bool | None = None, master: str | None = None) -> Iterator[Any]:
    """The SparkSession already active in this process (a cluster's, made by the caller), left running; else one
    started on ``master`` (:func:`session`; None: :data:`LOCAL_MASTER`) whose scratch is under ``OUT/.tmp``, stopped
    and removed afterwards. ``master`` names another than the active session's: a :class:`WhosawError`. A full
    disk while it is used is an ``OSError`` (ENOSPC)."""
    with _disk_full_as_os_error():
        yield from _spark_session(out, progress, master)


def _spark_session(out: Path, progress: bool | None, master: str | None) -> Iterator[Any]:
    active = _spark_session_class().getActiveSession()
    if active is not None:
        running = active.sparkContext.master
        if master is not None and master != running:
            raise WhosawError(f"spark master: this process already runs Spark on {running!r}, not {master!r}")
        with _whosaw_settings(active):
            yield active
        return
    scratch = out / ".tmp" / f"spark-{os.getpid()}"  # Spark's scratch holds log rows: under OUT, as DuckDB's
    try:
        spark = session(local_dir=scratch, progress=progress_wanted(progress), master=master or LOCAL_MASTER)
    except WhosawError:
        remove_stage_scratch(out, scratch)
        raise
    try:
        with _no_query_error_logs():
            yield spark
    finally:
        spark.stop()
        remove_stage_scratch(out, scratch)


@contextlib.contextmanager
def _whosaw_settings(spark) -> Iterator[Any]:
    """:data:`SESSION_SETTINGS` on a session whosaw did not start, put back as they were afterwards."""
    before = {name: spark.conf.get(name) for name in SESSION_SETTINGS}
    for name, value in SESSION_SETTINGS.items():
        spark.conf.set(name, value)
    try:
        yield spark
    finally:
        for name, value in before.items():
            spark.conf.set(name, value)


@contextlib.contextmanager
def _no_query_error_logs() -> Iterator[None]:
    """pyspark's own loggers off (unless ``WHOSAW_DEBUG``): a SQL error in Spark otherwise writes its whole message
    to stderr as JSON before whosaw's one line, with the query plan and, for a value that fails a cast, the value."""
    if os.environ.get("WHOSAW_DEBUG"):
        yield
        return
    from pyspark.logger import PySparkLogger

    loggers = [PySparkLogger.getLogger(name) for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger")]
    before = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, disabled in zip(loggers, before, strict=True):
            logger.disabled = disabled


def write_analysis(out: Path, cfg: Config, window: Window, staging: Path, bucket_seconds: int | None = None,
                   progress: bool | None = None, master: str | None = None,
                   ) -> tuple[dict[str, Path], dict[str, Any], int, str]:
    """``whosaw analyze --engine spark``: the analysis run on Spark, its outputs written to ``staging`` as the
    DuckDB analysis writes them (the files written, the summary, the bucket size, the master it ran on).
    Spark computes every view and the summary's aggregates; it writes the four result views (a small part of the
    lake) as Parquet, and DuckDB turns them into the output files with the code that writes DuckDB's own, so the
    two engines' files differ only where their analyses do."""
    with spark_session(out, progress, master) as spark:
        ran_on = spark.sparkContext.master
        seconds = run(spark, out, cfg, window, bucket_seconds)
        summary = build_summary(spark_rows(spark))
        results = staging / "spark-results"
        for view in RESULT_VIEWS:
            spark.table(view).write.mode("overwrite").parquet(str(results / view))
    spill = out / ".tmp" / f"analyze-{os.getpid()}"
    con = connect(spill)
    try:
        for view in RESULT_VIEWS:
            files = str(results / view / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{files}')")
        written = write_outputs(con, staging, progress)
    finally:
        con.close()
        shutil.rmtree(results, ignore_errors=True)
        remove_stage_scratch(out, spill)
    return written, summary, seconds, ran_on


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
    ``spark``: the session to use (whosaw's :data:`SESSION_SETTINGS` while it runs, its own back afterwards); None:
    the one active in this process, else a local one (:func:`spark_session`).
    ``summary_differences``: the summary.json keys whose values differ (the whole summary is built on each engine).
    Nothing in ``out`` changes but its lock file (``.ingest.lock``): the DuckDB side is queried on its connection,
    not written. The lock keeps a concurrent ingest from changing the lake between the two engines' reads, and a
    concurrent stage's scratch clean-up from removing the DuckDB side's spill folder."""
    out = Path(out)
    refuse_pattern_characters(out)
    with locked(out, "spark compare"):
        cfg = resolve_config(out, config)
        with analysis_views(out, cfg, resolve_analysis_window(window, cfg)) as (con, _):
            duck = build_summary(duckdb_rows(con))
            exposures = con.execute(f"SELECT {', '.join(EXPOSURE_COLUMNS)} FROM exposures_in_window").df()
            duck_exposures = _normal(exposures, EXPOSURE_COLUMNS)
            duck_timeline = _normal(con.execute("SELECT * FROM timeline").df(), TIMELINE_COMPARED)
        with contextlib.ExitStack() as stack:
            spark = stack.enter_context(_whosaw_settings(spark) if spark is not None else spark_session(out))
            run(spark, out, config, window)
            theirs = build_summary(spark_rows(spark))
            spark_exposures = _normal(spark.sql("SELECT * FROM exposures_in_window").toPandas(), EXPOSURE_COLUMNS)
            buckets = _normal(spark.sql("SELECT * FROM timeline").toPandas(), TIMELINE_COMPARED)

    def rows(frame: pd.DataFrame) -> set[tuple]:
        return set(map(tuple, frame.values.tolist()))

    def window_of(summary: dict[str, Any]) -> list[str]:
        return [_iso_or_empty(summary["window"]["start"]), _iso_or_empty(summary["window"]["end"]),
                summary["window"]["method"]]

    return {
        "exposures": {"duckdb": len(duck_exposures), "spark": len(spark_exposures)},
        "only_duckdb": sorted(rows(duck_exposures) - rows(spark_exposures)),
        "only_spark": sorted(rows(spark_exposures) - rows(duck_exposures)),
        "window": {"duckdb": window_of(duck), "spark": window_of(theirs)},
        "near_misses": {"duckdb": duck["near_misses"]["total"], "spark": theirs["near_misses"]["total"]},
        "near_misses_by_kind": {"duckdb": duck["near_misses"]["by_kind"], "spark": theirs["near_misses"]["by_kind"]},
        "timeline_differences": len(rows(duck_timeline) ^ rows(buckets)),
        "log_gaps": {"duckdb": duck["log_gaps"], "spark": theirs["log_gaps"]},
        "summary_differences": sorted(
            key for key in duck.keys() | theirs.keys() if key != "generated_at" and duck.get(key) != theirs.get(key)
        ),
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
