"""The lake's column contract, shared by ingestion, analysis, the simulator and the Spark runner.

Every normalised row also carries ``source_file`` and ``source_line`` (1-based physical line of the
decompressed input, or the 1-based row number of a Parquet input), and the hive partition columns
``date`` (YYYY-MM-DD) and ``hour`` (0-23), both derived from ``ts`` in UTC.
"""

from __future__ import annotations

KINDS: tuple[str, ...] = ("requests", "cache", "sessions")

# Canonical field name -> DuckDB type, in lake column order (SPEC "Inputs").
LAKE_COLUMNS: dict[str, dict[str, str]] = {
    "requests": {
        "ts": "TIMESTAMPTZ",
        "request_id": "VARCHAR",
        "session_id": "VARCHAR",
        "user_id": "VARCHAR",
        "route": "VARCHAR",
        "status": "INTEGER",
        "host": "VARCHAR",
    },
    "cache": {
        "ts": "TIMESTAMPTZ",
        "request_id": "VARCHAR",
        "op": "VARCHAR",
        "key": "VARCHAR",
        "status": "VARCHAR",
        "host": "VARCHAR",
        "conn_id": "VARCHAR",
        "value_sha256": "VARCHAR",
        "value_owner": "VARCHAR",
    },
    "sessions": {
        "ts": "TIMESTAMPTZ",
        "session_id": "VARCHAR",
        "user_id": "VARCHAR",
        "event": "VARCHAR",
    },
}

# Provenance columns present on every lake row.
PROVENANCE_COLUMNS: dict[str, str] = {"source_file": "VARCHAR", "source_line": "BIGINT"}

# Fields a line must carry to be a readable record of its kind (SPEC "req." column).
# request_id of a cache line may be null (background work) but the line is still a record.
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "requests": ("ts", "request_id"),
    "cache": ("ts", "op"),
    "sessions": ("ts", "session_id", "event"),
}

SESSION_EVENTS: tuple[str, ...] = ("login", "refresh", "logout", "expire")

CACHE_STATUSES: tuple[str, ...] = ("ok", "cancelled", "timeout", "error")

# Cache operations by what their reply is. Overridable in the config's [cache] table.
DEFAULT_READ_OPS: tuple[str, ...] = (
    "GET", "MGET", "GETEX", "GETDEL", "GETSET", "HGET", "HMGET", "HGETALL", "HVALS",
    "LRANGE", "LINDEX", "SMEMBERS", "ZRANGE", "ZRANGEBYSCORE", "JSON.GET",
)
DEFAULT_WRITE_OPS: tuple[str, ...] = (
    "SET", "SETEX", "PSETEX", "SETNX", "MSET", "HSET", "HMSET", "LPUSH", "RPUSH", "SADD", "ZADD", "JSON.SET",
)
# Operations that open, reset or close a pooled connection: every unread reply on it is gone.
DEFAULT_RESET_OPS: tuple[str, ...] = ("CONNECT", "RECONNECT", "RESET", "DISCONNECT", "CLOSE", "QUIT")

# Columns of exposures.parquet / exposures.csv, in order (SPEC "Outputs", plus the useful extras).
EXPOSURE_COLUMNS: tuple[str, ...] = (
    "ts", "request_id", "session_id", "viewer_id", "owner_id", "key", "category", "severity",
    "evidence", "source_file", "source_line",
    "viewer_kind", "value_key", "host", "conn_id", "route", "request_status",
    "reply_request_id", "owner_by_value", "owner_by_digest", "owner_by_connection", "owner_by_key",
)

# Evidence tiers, strongest first, then the flags (SPEC "What counts as an exposure").
EVIDENCE_ORDER: tuple[str, ...] = ("value_owner", "digest", "connection", "key", "digest-ambiguous", "conflict")

# What the analysis can run on (analyze --engine): the same SQL files either way.
ENGINES: tuple[str, ...] = ("duckdb", "spark")

UNCATEGORIZED = "uncategorized"


# An id written as a whole number with fractional zeros; group 1 is the number. RE2 and Java read it alike.
WHOLE_ID_PATTERN = "^(-?[0-9]+)[.]0+$"
# 2**53: from here on float64 does not hold every whole number, and pandas writes user 9007199254740993 of a column
# with a gap as 9007199254740992.0. Such a number is left as the float's text, never read as another user's id.
FLOAT_EXACT_LIMIT = 9007199254740992


def id_text(expr: str) -> str:
    """SQL for an id text (``expr``, VARCHAR) written as a whole number with fractional zeros ('42.0', '42.00') as
    that number ('42'); any other text as it is. pandas keeps an integer column with a gap (the anonymous requests'
    user_id) as float64 and exports user 42 as 42.0: another user than the 42 of key user:42:titles, of an ownership
    or grants table, of the users directory. Used by ingest (macros.sql's whosaw_id), the side tables and the users
    directory alike; the key rules' groups by the same rule in SQL Spark reads too (analyze.py:key_id_sql).
    A number from FLOAT_EXACT_LIMIT on stays as written. Only texts holding a '.' reach the pattern.
    A text of spaces and tabs only is no id (NULL), as an empty one: a JSON value_owner " " was an owner named " "
    on the lists, a user_id " " a signed-in viewer (a CSV field is trimmed to '' already). ``< '!'`` compares the
    text's prefix: only a text that starts with a blank or a control character is trimmed."""
    return (
        f"CASE WHEN {expr} < '!' AND trim({expr}, ' ' || chr(9)) = '' THEN NULL "
        f"WHEN contains({expr}, '.') AND regexp_matches({expr}, '{WHOLE_ID_PATTERN}') "
        f"AND abs(TRY_CAST({expr} AS DOUBLE)) < {FLOAT_EXACT_LIMIT} "
        f"THEN split_part({expr}, '.', 1) ELSE {expr} END"
    )
