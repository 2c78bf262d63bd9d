"""Exposure analysis: the Parquet lake -> who saw whose data, when, and what kind.

``analyze(out)`` reads the lake that ingest wrote under ``OUT/parquet/`` and decides, for every value a
cache read served, who viewed it and who owned it (docs/design.md: viewer rule, evidence tiers, grants,
window). It writes ``exposures.parquet``/``.csv`` (the exposures inside the window),
``exposures_outside_window.parquet``, ``near_misses.parquet``, ``timeline.parquet`` and ``summary.json``
(returned as a dict), and records the window in ``manifest.json``.

How the SQL is run
------------------
The logic lives in ``pipeline/sql/analyze/NN_<view>.sql``: one ``CREATE OR REPLACE TEMPORARY VIEW <view>``
per file, one concern each, run in file-name order; the view is named after the file. A file whose header
says ``-- materialize`` is computed once into a temporary table that then stands behind the view's name
(DuckDB ``CREATE TEMP TABLE``; Spark ``localCheckpoint``), because later views read it more than once.

The SQL files keep to the subset DuckDB and Spark SQL share: temporary views, CTEs, window functions
(``row_number``, ``lead``, ``lag``, running ``count``/``sum``/``min``/``max``), equi-joins plus range
conditions, ``CASE``, ``coalesce``, ``percentile_cont(...) WITHIN GROUP (ORDER BY ...)``, integer arithmetic
for time buckets, ``CAST(... AS STRING|BIGINT|BOOLEAN)``; no ASOF join, ``QUALIFY``, ``FILTER``, ``::``,
list or JSON functions (``tests/test_analyze.py`` checks). The few functions the two name differently are
Spark's names, defined on DuckDB as macros here (:data:`DUCKDB_MACROS`): ``regexp_like``, ``unix_micros``,
``timestamp_micros``. Everything engine-specific stays in Python and is marked "DuckDB-only": reading the
Parquet lake and the side tables into the input views below, building the key-rule view (:func:`key_rule_sql`:
the patterns must be constant literals, quoted per engine), splitting multi-key keys into their items (JSON), and
writing the outputs with ``COPY``.
``pipeline/spark.py`` runs the same files on a SparkSession: ``analyze(out, engine="spark")``. The summary's
aggregates (:func:`build_summary`) are SQL both engines read, run through a :data:`Rows` function per engine; the
output files are COPYed by DuckDB either way (from Spark's Parquet of the result views).

Input views the SQL expects (registered by :func:`register_inputs`):
``requests_lake``, ``cache_lake``, ``sessions_lake`` (lake columns + source_file/source_line; an empty typed
table when a kind has no files), ``key_rule_matches`` (key, rule_order, category, severity, owner_from_key,
resource_id, names_owner: every distinct cache key that a ``[[keys]]`` rule matches, first rule by config order;
names_owner is false for a rule with neither an owner nor a resource group, a family whose data is nobody's;
the items of multi-key keys included), ``multi_keys`` (key, key_no: every distinct cache key that is a JSON array
of strings, a multi-key call's, :func:`multi_key_pattern`) and ``key_items`` (key_no, item_no, item_key: its items
in array order from 1; built with each engine's JSON functions),
``ownership_table`` (resource_id, owner_id, valid_from, valid_to), ``grants_table`` (owner_id, viewer_id,
category, valid_from, valid_to, resource_id), ``cache_ops`` (op, is_read, is_write, is_reset),
``value_categories`` (category: every category a served value can have, for the summary's grants of an unknown
category) and ``params`` (one row: window_start, window_end, window_method, bucket_seconds).

Resources: DuckDB runs with an explicit ``memory_limit`` (``WHOSAW_MEMORY_LIMIT`` or 60% of RAM, at most
6 GB), ``threads`` (``WHOSAW_THREADS`` or all cores) and ``temp_directory`` under ``OUT/.tmp/`` (removed
afterwards), so a large lake spills to disk instead of failing. Only small aggregates (the summary) come back to Python.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from . import progress as progress_mod
from .config import Config, KeyRule, Window, resolve_config, resolve_window
from .errors import NO_SPILL, WhosawError, first_unreadable_parquet, out_of_memory, set_memory_limit
from .manifest import (
    ctrl_c_waits,
    locked,
    refuse_pattern_characters,
    remove_stage_outputs,
    remove_stage_scratch,
    sha256_file,
    update_manifest,
)
from .safecsv import CSV_SHAPE_HINT, copy_safe_csv
from .schema import (
    ENGINES,
    EXPOSURE_COLUMNS,
    FLOAT_EXACT_LIMIT,
    KINDS,
    LAKE_COLUMNS,
    PROVENANCE_COLUMNS,
    WHOLE_ID_PATTERN,
    id_text,
)

SQL_DIR = Path(__file__).parent / "sql" / "analyze"
DEFAULT_BUCKET_SECONDS = 300
# The timeline's buckets (and the auto window's scan over them): 5 minutes, unless more than MAX_BUCKETS of them hold
# cache calls (about 34 days of traffic); then the first of BUCKET_STEPS with at most that many (a day at most). Two
# reasons to bound them: the scan pairs candidate start and end buckets, so its cost grows with the square of their
# number (benchmarks/scan.py, DuckDB, 2 cores: 0.4 s for 30 days of 5-minute buckets, 2.7 s for 90 days, 34 s for a
# year); and its llr >= 15 was calibrated on up to a month of buckets (on a year of 5-minute noise the best stretch
# reaches ~14). Buckets are counted, not spanned: a stray line dated years away adds one bucket, not a million.
MAX_BUCKETS = 10_000
BUCKET_STEPS = (300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
# One row: per step of BUCKET_STEPS, how many of its buckets hold cache calls (both engines; exact integer arithmetic).
BUCKET_COUNTS_SQL = (
    "WITH call_buckets AS (SELECT DISTINCT CAST((unix_micros(ts) - unix_micros(ts) % 300000000) / 300000000 "
    "AS BIGINT) AS b FROM cache_lake WHERE ts IS NOT NULL) SELECT "
    + ", ".join(f"count(DISTINCT b - b % {step // 300}) AS buckets_{step}" for step in BUCKET_STEPS)
    + " FROM call_buckets"
)
# Default memory_limit: 60% of RAM, at most this much. Measured (2 cores, 24 GB, 10M requests + 11M cache
# lines): 6.5 GB peak RSS in ~52 s, where 60% of RAM (14 GB) peaked at 9.2 GB in ~55 s; at 4 GB the
# request join of 50_notable_reads spills and analyze took 80-100 s. WHOSAW_MEMORY_LIMIT overrides it.
DEFAULT_MEMORY_CAP = 6 * 2**30
MAX_THREADS_FLOOR = 64  # WHOSAW_THREADS may ask for up to this many, or 4 per core where that is more
NEAR_MISS_COLUMNS = (
    "ts", "request_id", "host", "conn_id", "kind", "category", "owner_id", "viewer_id",
    "source_file", "source_line", "in_window",
)
TIMELINE_COLUMNS = (
    "bucket_start", "bucket_seconds", "requests", "reads", "crossed_replies", "exposures", "near_misses",
    "in_window", "baseline", "threshold",
)

# DuckDB-only: Spark's names for the functions the SQL files use, as DuckDB macros.
DUCKDB_MACROS = (
    "CREATE OR REPLACE TEMPORARY MACRO regexp_like(s, p) AS regexp_matches(s, p)",
    "CREATE OR REPLACE TEMPORARY MACRO unix_micros(t) AS epoch_us(t)",
    "CREATE OR REPLACE TEMPORARY MACRO timestamp_micros(u) AS make_timestamptz(u)",
)

_VIEW_RE = re.compile(r"CREATE\s+OR\s+REPLACE\s+TEMPORARY\s+VIEW\s+(\w+)\s+AS", re.IGNORECASE)


@dataclass(frozen=True)
class SqlStep:
    """One SQL file: the view it creates, whether it is materialised, and its text.

    ``joins_as_written`` (header line ``-- duckdb: joins as written``): DuckDB joins in the order the SQL
    writes and hashes the right side of each join, instead of planning both from its row estimates. For the
    views whose estimates go wrong (filters it cannot size): it would hash a million reads instead of the
    table joined to them, or join the whole cache log before the few crossed reads that select from it."""

    path: Path
    view: str
    materialize: bool
    sql: str
    joins_as_written: bool = False


def load_steps(sql_dir: Path = SQL_DIR) -> list[SqlStep]:
    """The analysis SQL files in run order (file name order)."""
    steps = []
    for path in sorted(sql_dir.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        found = _VIEW_RE.findall(text)
        if len(found) != 1:
            raise WhosawError(f"internal: {path.name} must create exactly one view")
        header = [line for line in text.splitlines() if line.startswith("--")]
        marks = {line.strip() for line in header}
        if "-- duckdb: joins as written" in marks and "-- materialize" not in marks:
            raise WhosawError(f"internal: {path.name}: joins as written applies to a materialised view only")
        steps.append(
            SqlStep(
                path, found[0], "-- materialize" in marks, text.strip().rstrip(";"),
                joins_as_written="-- duckdb: joins as written" in marks,
            )
        )
    return steps


# ---------------------------------------------------------------------------------------------- inputs

def quote_duckdb(text: str) -> str:
    """A DuckDB string literal (backslashes are plain characters)."""
    return "'" + text.replace("'", "''") + "'"


def quote_spark(text: str) -> str:
    """A Spark SQL string literal (backslash escapes)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_POSIX_CLASSES = {
    "alnum": "Alnum", "alpha": "Alpha", "ascii": "ASCII", "blank": "Blank", "cntrl": "Cntrl", "digit": "Digit",
    "graph": "Graph", "lower": "Lower", "print": "Print", "punct": "Punct", "space": "Space", "upper": "Upper",
    "xdigit": "XDigit",
}
_RE2_SPACE = r"\t\n\f\r "  # RE2's \s; Java's also takes \x0B
_RE2_REPEAT = re.compile(r"\{\d+(,\d*)?\}")
_WORD_BOUNDARY = r"(?:(?<=\w)(?!\w)|(?<!\w)(?=\w))"  # \w is ASCII in both; Java 17's \b is not
_NOT_WORD_BOUNDARY = r"(?:(?<=\w)(?=\w)|(?<!\w)(?!\w))"


_ESCAPE = re.compile(
    r"\\(?:x\{[0-9A-Fa-f]+\}|x[0-9A-Fa-f]{2}|[pP](?:\{[^}]*\}|[A-Za-z])|0[0-7]{0,2}|[1-7][0-7]{1,2}|.)", re.DOTALL
)
_OCTAL = re.compile(r"\\[0-7]+")  # RE2's \0, \141 (a lone \1 is a backreference, which RE2 refuses)


def _java_escape(token: str, rewrites: dict[str, str]) -> str:
    r"""One RE2 escape (``_ESCAPE``) in Java's syntax: ``rewrites`` by its letter; an octal escape as ``\x{..}``
    (Java reads ``\141`` as a backreference to group 1 and ``\0`` alone as an error)."""
    if _OCTAL.fullmatch(token):
        return f"\\x{{{int(token[1:], 8):X}}}"
    return rewrites.get(token[1], token)


_RE2_META = set("\\.+*?()|[]{}^$")


def java_pattern(pattern: str) -> str:
    r"""A key pattern (RE2, as DuckDB runs it and the config checks) rewritten for Spark's java.util.regex, so both
    engines match the same keys and extract the same groups (group numbers are kept).

    Where the two read the same text differently: ``$`` (Java also matches before a final line break: ``\z``
    unless multi-line); ``.``, ``^``, ``$`` (Java knows \r, \u0085, \u2028, \u2029 as line breaks: flag ``d``);
    POSIX classes ``[[:alpha:]]`` (in Java a union of the letters ':alph'); ``[`` and ``&&`` inside a class
    (Java: nested class, intersection); ``\s`` (Java adds \x0B), ``\v`` (Java: any vertical space), ``\b`` (Java
    17: Unicode letters); a ``{`` that is no repetition (RE2: a literal; Java: an error); an octal escape
    ``\141`` (Java: a backreference to group 1); ``(?i)``: RE2 matches a character's Unicode simple case-folding
    orbit (k, K and the Kelvin sign; ß and ẞ; not the Turkish ı, İ with i, I) and folds classes, ranges, ``\w``
    and POSIX classes by it, where Java compares toUpperCase and toLowerCase, folds a range by other rules than a
    single character, none of \w and [[:alpha:]], and knows Unicode 13 (Java 17) where DuckDB's RE2 knows 14. So
    Java never case-folds here: the ``i`` flag is dropped and, where it is in force, each character, escape or
    class that RE2's folding changes is written as a Java class of what RE2 matches (:func:`_case_folded`:
    ``(?i)k`` is ``[kK\x{212A}]``, ``(?i)[^k]`` is ``[^kK\x{212A}]``)."""
    out = ["(?d)"]
    modes = [(False, False)]  # per open group: are (?m) and (?i) in force
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        multiline, nocase = modes[-1]
        if ch == "\\" and i + 1 < n:
            token = _ESCAPE.match(pattern, i).group(0)
            java = _java_escape(token, {"s": f"[{_RE2_SPACE}]", "S": f"[^{_RE2_SPACE}]", "v": r"\x0B",
                                        "b": _WORD_BOUNDARY, "B": _NOT_WORD_BOUNDARY})
            out.append(_case_folded(token, java) if nocase else java)
            i += len(token)
        elif ch == "[":
            end = _java_class(pattern, i, out)
            if nocase:
                out[-1] = _case_folded(pattern[i:end], out[-1])
            i = end
        elif ch == "(":
            flags = re.match(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])", pattern[i:])
            state = modes[-1]
            if flags:
                on, off, kind = flags.group(1), flags.group(2) or "", flags.group(3)
                state = (("m" in on or state[0]) and "m" not in off, ("i" in on or state[1]) and "i" not in off)
                on, off = on.replace("i", ""), off.replace("i", "")
                java = "(?" + on + ("-" + off if off else "") + kind
                if kind == ")":
                    modes[-1] = state
                    out.append("" if java == "(?)" else java)
                    i += len(flags.group(0))
                    continue
                out.append(java)
                i += len(flags.group(0))
            else:
                out.append(ch)
                i += 1
            modes.append(state)
        elif ch == ")":
            if len(modes) > 1:
                modes.pop()
            out.append(ch)
            i += 1
        elif ch == "$":
            out.append("$" if multiline else r"\z")
            i += 1
        elif ch == "{" and not _RE2_REPEAT.match(pattern, i):
            out.append(r"\{")
            i += 1
        else:
            out.append(_case_folded(ch, ch) if nocase and ch not in _RE2_META else ch)
            i += 1
    return "".join(out)


def _java_class(pattern: str, i: int, out: list[str]) -> int:
    """Append the character class starting at ``pattern[i]`` (``[``) to ``out`` in Java's syntax, as one item;
    return the index after it."""
    java = ["["]
    i += 1
    if pattern.startswith("^", i):
        java.append("^")
        i += 1
    first = True
    while i < len(pattern):
        ch = pattern[i]
        if ch == "]" and not first:
            java.append("]")
            i += 1
            break
        first = False
        posix = re.match(r"\[:(\^?)([a-z]+):\]", pattern[i:])
        if posix and (posix.group(2) in _POSIX_CLASSES or posix.group(2) == "word"):
            negated, name = posix.group(1), posix.group(2)
            if name == "word":
                java.append(r"\W" if negated else r"\w")
            else:
                java.append(("\\P{" if negated else "\\p{") + _POSIX_CLASSES[name] + "}")
            i += len(posix.group(0))
        elif ch == "\\" and i + 1 < len(pattern):
            token = _ESCAPE.match(pattern, i).group(0)
            java.append(_java_escape(token, {"s": _RE2_SPACE, "S": f"[^{_RE2_SPACE}]", "v": r"\x0B"}))
            i += len(token)
        elif ch in "[]&":
            java.append("\\" + ch)
            i += 1
        else:
            java.append(ch)
            i += 1
    out.append("".join(java))
    return i


def _case_folded(re2: str, java: str) -> str:
    r"""``java`` (one character, escape or class, Java's copy of ``re2``) made to match what RE2 matches with
    ``re2`` under ``(?i)``, without Java's own case folding: the characters RE2's folding adds are added to the
    class, those it takes away (a negated class folds what it excludes) are cut from it."""
    gained, lost = _fold_change(re2)
    if not gained and not lost:
        return java
    if java.startswith("[") and (not lost if not java.startswith("[^") else not gained):
        return java[:-1] + (gained or lost) + "]"  # [a-z] -> [a-zA-Z\x{17F}\x{212A}], [^k] -> [^kK\x{212A}]
    return "[" + java + gained + (f"&&[^{lost}]" if lost else "") + "]"


_CASE_PLANES = 0x20000  # every case-folding orbit of RE2's Unicode (14) lies below U+1E944


@functools.cache
def _fold_change(re2: str) -> tuple[str, str]:
    """The characters ``(?i)`` adds to what the one-character RE2 pattern ``re2`` matches, and those it takes from
    it, as the text of a Java class (``""`` when none). DuckDB's RE2 answers, over planes 0 and 1, so this is
    what RE2 does and no table of ours to keep up to date (RE2 folds by Unicode's simple case folding; Python's
    or Java's Unicode may differ)."""
    with _code_points().cursor() as con:  # a cursor per call: a DuckDB connection is not for two threads at once
        gained, lost = con.execute(
            "SELECT list(cp ORDER BY cp) FILTER (WHERE folded), list(cp ORDER BY cp) FILTER (WHERE NOT folded) FROM ("
            " SELECT cp, regexp_matches(ch, $1) AS folded, regexp_matches(ch, $2) AS plain FROM code_points"
            ") WHERE folded != plain",
            ["(?i)^" + re2 + "$", "^" + re2 + "$"],
        ).fetchone()
    return _java_class_items(gained or []), _java_class_items(lost or [])


@functools.cache
def _code_points() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding every character of planes 0 and 1 (surrogates excepted), for :func:`_fold_change`."""
    con = duckdb.connect(":memory:", config=NO_SPILL)
    con.execute(
        "CREATE TABLE code_points AS SELECT CAST(i AS INTEGER) AS cp, chr(CAST(i AS INTEGER)) AS ch "
        f"FROM range({_CASE_PLANES}) AS t(i) WHERE i NOT BETWEEN 55296 AND 57343"
    )
    return con


def _java_class_items(code_points: list[int]) -> str:
    r"""Sorted code points as the inside of a Java class: runs of three or more as ranges, ASCII letters as they
    are, anything else as ``\x{...}``."""
    def item(cp: int) -> str:
        return chr(cp) if chr(cp).isascii() and chr(cp).isalpha() else f"\\x{{{cp:X}}}"

    runs: list[list[int]] = []
    for cp in code_points:
        if runs and cp == runs[-1][1] + 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    return "".join(
        item(lo) + ("-" if hi - lo > 1 else "") + item(hi) if hi > lo else item(lo) for lo, hi in runs
    )


def quote_spark_pattern(pattern: str) -> str:
    """A key pattern as a Spark SQL literal, in Java's regex syntax (:func:`java_pattern`)."""
    return quote_spark(java_pattern(pattern))


def key_id_sql(expr: str, quote_pattern=quote_duckdb) -> str:
    """A key's owner or resource group read as ingest and the side tables read ids (schema.py:id_text: 42.0 is 42),
    in SQL both engines run: an app that formats a float id writes user:42.0:titles, and its owner must be the
    viewer 42 of its requests and the 42 of an ownership table, not another user."""
    number = f"nullif(regexp_extract({expr}, {quote_pattern(WHOLE_ID_PATTERN)}, 1), '')"
    return f"CASE WHEN abs(CAST({number} AS DOUBLE)) < {FLOAT_EXACT_LIMIT} THEN {number} ELSE {expr} END"


def key_rule_sql(
    rules: tuple[KeyRule, ...], quote=quote_duckdb, keys_from: str = "cache_lake", quote_pattern=None,
    keys_sql: str | None = None,
) -> str:
    """SELECT for ``key_rule_matches``: each distinct key with the first rule (config order) that matches, and
    whether that rule names an owner (an owner or a resource group: ``names_owner``).

    The keys are those of ``keys_from``, or ``keys_sql`` (a SELECT of distinct non-NULL keys, column ``key``:
    the analysis passes the lake's keys and the items of its multi-key calls, :func:`register_inputs`).
    The patterns are literals (DuckDB compiles a constant regex once; a pattern taken from a column is
    compiled per row), so this SQL is generated per engine with that engine's quoting; ``quote_pattern``
    (default ``quote``) quotes the patterns: Spark's rewrites them for Java's regex (:func:`quote_spark_pattern`).
    """
    quote_pattern = quote_pattern or quote
    if keys_sql is None:
        keys_sql = f"SELECT DISTINCT key FROM {keys_from} WHERE key IS NOT NULL"
    keys = f"({keys_sql}) AS distinct_keys"
    if not rules:
        return (
            "SELECT key, CAST(NULL AS INT) AS rule_order, CAST(NULL AS STRING) AS category, "
            "CAST(NULL AS STRING) AS severity, CAST(NULL AS STRING) AS owner_from_key, "
            f"CAST(NULL AS STRING) AS resource_id, CAST(NULL AS BOOLEAN) AS names_owner FROM {keys} WHERE false"
        )
    ordered = sorted(rules, key=lambda rule: rule.order)
    first = " ".join(f"WHEN regexp_like(key, {quote_pattern(r.sql_pattern)}) THEN {r.order}" for r in ordered)

    def by_rule(value) -> str:
        whens = " ".join(f"WHEN {r.order} THEN {value(r)}" for r in ordered)
        return f"CASE rule_order {whens} ELSE NULL END"

    def group(r: KeyRule, index: int) -> str:
        if not index:
            return "CAST(NULL AS STRING)"
        return key_id_sql(f"nullif(regexp_extract(key, {quote_pattern(r.sql_pattern)}, {index}), '')", quote_pattern)

    return (
        "SELECT key, rule_order, "
        f"{by_rule(lambda r: quote(r.category))} AS category, "
        f"{by_rule(lambda r: quote(r.severity))} AS severity, "
        f"{by_rule(lambda r: group(r, r.owner_group))} AS owner_from_key, "
        f"{by_rule(lambda r: group(r, r.resource_group))} AS resource_id, "
        f"{by_rule(lambda r: 'true' if r.owner_group or r.resource_group else 'false')} AS names_owner "
        f"FROM (SELECT key, CASE {first} ELSE NULL END AS rule_order FROM {keys}) AS keyed "
        "WHERE rule_order IS NOT NULL"
    )


# A multi-key call logged as one line (MGET k1 k2 ...) has for key a JSON array of strings, as text (docs/design.md
# "Multi-key calls"). Which keys are: exactly those this pattern matches: optional JSON white space, '[', one or
# more JSON strings (every escape JSON allows; a UTF-16 surrogate only as a valid pair) separated by ',', ']'.
# Written out as a pattern, not left to each engine's JSON reader, so both engines call the same keys multi-key:
# DuckDB's reader also takes a trailing comma, Spark's single quotes, and both read a number as a string when
# asked for an array of strings. Anything else (invalid JSON starting with '[', an empty array, a number in
# the array) is a plain key. The same text is RE2 and java.util.regex; Spark's copy quantifies possessively
# (the grammar never backtracks), so a long array does not recurse through Java's matcher.
_JSON_HEX = "[0-9a-fA-F]"
_JSON_ESCAPE = (  # \" \\ \/ \b \f \n \r \t, \uXXXX but a surrogate, a surrogate pair
    r'\\(?:["\\/bfnrt]|u(?:[0-9a-ce-fA-CE-F]' + _JSON_HEX + "{3}|[dD][0-7]" + _JSON_HEX + "{2}"
    r"|[dD][89abAB]" + _JSON_HEX + r"{2}\\u[dD][c-fC-F]" + _JSON_HEX + "{2}))"
)


def multi_key_pattern(java: bool = False) -> str:
    r"""The regular expression a multi-key call's key matches: a JSON array of one or more strings, as the whole
    text (``java``: Spark's copy, possessive quantifiers and ``\z``)."""
    many, run, end = ("*+", "++", r"\z") if java else ("*", "+", "$")
    space = r"[ \t\n\r]" + many
    string = r'"(?:[^"\\\x00-\x1f]' + run + "|" + _JSON_ESCAPE + ")" + many + '"'
    return rf"^{space}\[{space}{string}(?:{space},{space}{string}){many}{space}\]{space}{end}"


def multi_keys_sql(quote=quote_duckdb, java: bool = False, keys_from: str = "cache_keys") -> str:
    """SELECT for ``multi_keys`` (key, key_no): every distinct key of ``keys_from`` that is a JSON array of strings
    (:func:`multi_key_pattern`), numbered. ``key_items`` refers to a key by that number: an array of n items
    held once per item would make the table grow with n squared."""
    pattern = quote(multi_key_pattern(java))
    return (
        "SELECT key, row_number() OVER (ORDER BY key) AS key_no "
        f"FROM {keys_from} WHERE regexp_like(key, {pattern})"
    )


# key_items (key_no, item_no, item_key): the items of every multi-key key, in array order from 1. Engine-specific
# (JSON): DuckDB's from_json and generate_subscripts; Spark's posexplode (pipeline/spark.py).
KEY_ITEMS_DUCKDB_SQL = (
    "SELECT key_no, CAST(generate_subscripts(items, 1) AS BIGINT) AS item_no, unnest(items) AS item_key "
    "FROM (SELECT key_no, from_json(key, '[\"VARCHAR\"]') AS items FROM multi_keys) AS parsed"
)
KEY_ITEMS_SPARK_SQL = (
    "SELECT key_no, CAST(pos + 1 AS BIGINT) AS item_no, item_key "
    "FROM (SELECT key_no, posexplode(from_json(key, 'array<string>')) AS (pos, item_key) FROM multi_keys) AS parsed"
)
# key_rule_matches covers the lake's keys and the items of its multi-key keys.
RULE_KEYS_SQL = "SELECT key FROM cache_keys UNION SELECT item_key AS key FROM key_items"


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _lake_select(con: duckdb.DuckDBPyConnection, out: Path, kind: str) -> str:
    """DuckDB-only: a SELECT over ``OUT/parquet/<kind>/`` with exactly the lake columns, typed.

    A column missing from the files (e.g. value_owner dropped from the logs) reads as NULL; a kind without
    files is an empty table of the same columns.
    """
    columns = {**LAKE_COLUMNS[kind], **PROVENANCE_COLUMNS}
    folder = out / "parquet" / kind
    if not folder.is_dir() or not any(folder.rglob("*.parquet")):
        select = ", ".join(f"CAST(NULL AS {dtype}) AS {name}" for name, dtype in columns.items())
        return f"SELECT {select} WHERE false"
    source = (
        f"read_parquet('{_sql_path(folder)}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
    )
    try:
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    except duckdb.Error:
        damaged = first_unreadable_parquet(con, sorted(folder.rglob("*.parquet")))
        if damaged is None:
            raise
        raise WhosawError(f"the lake is damaged: {damaged} is not readable Parquet") from None
    select = ", ".join(
        f"CAST({name} AS {dtype}) AS {name}" if name in present else f"CAST(NULL AS {dtype}) AS {name}"
        for name, dtype in columns.items()
    )
    return f"SELECT {select} FROM {source}"


def mistyped_lake_column(con: duckdb.DuckDBPyConnection, out: Path) -> tuple[Path, str, str] | None:
    """The first lake file, column and type where a value does not convert to the lake's type (a file replaced
    by another tool's): for naming the culprit once the analysis failed converting one. Values are never shown."""
    for kind in KINDS:
        columns = {**LAKE_COLUMNS[kind], **PROVENANCE_COLUMNS}
        for path in sorted((out / "parquet" / kind).rglob("*.parquet")):
            present = {row[0] for row in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()}
            for name, dtype in columns.items():
                if dtype == "VARCHAR" or name not in present:
                    continue
                bad = con.execute(
                    f"SELECT count(*) FROM read_parquet(?) WHERE {name} IS NOT NULL "
                    f"AND TRY_CAST({name} AS {dtype}) IS NULL",
                    [str(path)],
                ).fetchone()[0]
                if bad:
                    return path, name, dtype
    return None


SIDE_TABLE_COLUMNS = {
    "ownership": {"required": ("resource_id", "owner_id"), "optional": ("valid_from", "valid_to")},
    "grants": {
        "required": ("owner_id", "viewer_id"), "optional": ("category", "valid_from", "valid_to", "resource_id"),
    },
}
SIDE_TABLE_TIME_COLUMNS = ("valid_from", "valid_to")
SIDE_TABLE_MIN_TIME = "TIMESTAMPTZ '0001-01-01 00:00:00+00'"
SIDE_TABLE_MAX_TIME = "TIMESTAMPTZ '9999-12-31 23:59:59.999999+00'"


@contextlib.contextmanager
def _side_table_errors(name: str, path: Path) -> Iterator[None]:
    """A side table DuckDB cannot read past its first rows (a row with a stray quote or an extra field): one line
    naming the file and the line, exit 2. DuckDB's own message quotes the whole offending row ("Original Line:
    ..."), which holds the owner and viewer ids of people: it is never shown, not even to a debug run."""
    try:
        yield
    except (duckdb.OutOfMemoryException, duckdb.InterruptException):
        raise
    except duckdb.Error as exc:
        line = re.search(r"\bLine: (\d+)", str(exc))
        where = f" at line {line.group(1)}" if line else ""
        raise WhosawError(
            f"tables.{name}: cannot read {path.name}{where} ({exc.__class__.__name__})"
        ) from None


def load_side_table(con: duckdb.DuckDBPyConnection, name: str, path: Path | None) -> str:
    """DuckDB-only: ``tables.<name>`` (CSV or Parquet) as a typed temp table ``<name>_table``."""
    spec = SIDE_TABLE_COLUMNS[name]
    columns = spec["required"] + spec["optional"]
    target = f"{name}_table"

    def typed(expr: str, column: str) -> str:
        if column not in SIDE_TABLE_TIME_COLUMNS:
            return id_text(expr) if column.endswith("_id") else expr
        # Clamped to the years 1-9999, the range Spark (and Python's datetime) can hold: DuckDB also reads
        # 'infinity', '-infinity' and years beyond, which crashed the Spark run. Log times lie well inside, so
        # every comparison with them keeps its answer ('infinity' still means open-ended).
        # (CASE, not least/greatest: those skip a NULL, and NULL is an open end.)
        time = f"TRY_CAST({expr} AS TIMESTAMPTZ)"
        return (
            f"CASE WHEN {time} < {SIDE_TABLE_MIN_TIME} THEN {SIDE_TABLE_MIN_TIME} "
            f"WHEN {time} > {SIDE_TABLE_MAX_TIME} THEN {SIDE_TABLE_MAX_TIME} ELSE {time} END"
        )

    if path is None:
        select = ", ".join(
            f"CAST(NULL AS {'TIMESTAMPTZ' if c in SIDE_TABLE_TIME_COLUMNS else 'VARCHAR'}) AS {c}" for c in columns
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS SELECT {select} WHERE false")
        return target
    parquet = path.name.lower().endswith((".parquet", ".pq"))
    if parquet:
        source = f"read_parquet('{_sql_path(path)}')"
    else:
        source = f"read_csv('{_sql_path(path)}', all_varchar = true, header = true)"
    try:
        present = {row[0].strip().lower(): row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}")
                   .fetchall()}
    except duckdb.Error:
        hint = "" if parquet else f" ({CSV_SHAPE_HINT})"
        raise WhosawError(f"tables.{name}: cannot read {path.name}{hint}") from None
    missing = [c for c in spec["required"] if c not in present]
    if missing:
        hint = "" if parquet else f"; if its header has one, {CSV_SHAPE_HINT}"
        raise WhosawError(f"tables.{name}: {path.name} has no column {missing[0]!r}{hint}")
    # Trimmed of spaces and tabs, as ingest trims a CSV log's fields: 'c9<tab>' is resource c9.
    texts = {
        c: f"nullif(trim(CAST(\"{present[c]}\" AS VARCHAR), ' ' || chr(9)), '')" if c in present
        else "CAST(NULL AS VARCHAR)"
        for c in columns
    }
    select = ", ".join(f"{typed(texts[c], c)} AS {c}" for c in columns)
    with _side_table_errors(name, path):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS SELECT {select} FROM {source}")
    for column in SIDE_TABLE_TIME_COLUMNS:
        if column not in present:
            continue
        with _side_table_errors(name, path):
            bad = con.execute(
                f"SELECT count(*) FROM (SELECT {texts[column]} AS t FROM {source}) "
                "WHERE t IS NOT NULL AND TRY_CAST(t AS TIMESTAMPTZ) IS NULL"
            ).fetchone()[0]
        if bad:
            raise WhosawError(
                f"tables.{name}: {bad} value(s) of {column} in {path.name} are not ISO-8601 times"
            )
    # A row naming some things but not whom it is about excused nothing (a grant) or gave no owner (ownership),
    # silently: a blank viewer may have meant "anyone". Refused, as a grant of everything is; a blank row is no row.
    required = spec["required"]
    incomplete = con.execute(
        f"SELECT count(*) FROM {target} WHERE ({' OR '.join(f'{c} IS NULL' for c in required)}) "
        f"AND ({' OR '.join(f'{c} IS NOT NULL' for c in columns)})"
    ).fetchone()[0]
    if incomplete:
        raise WhosawError(
            f"tables.{name}: {incomplete} row(s) of {path.name} leave {' or '.join(required)} empty"
            + (" (write '*' for every owner or for anyone)" if name == "grants" else "")
        )
    if name == "grants":
        everything = con.execute(
            f"SELECT count(*) FROM {target} WHERE owner_id = '*' AND viewer_id = '*' "
            "AND (category IS NULL OR category IN ('', '*')) AND resource_id IS NULL"
        ).fetchone()[0]
        if everything:
            raise WhosawError(
                f"tables.grants: {everything} row(s) of {path.name} grant every owner's data of every category to "
                "anyone (owner_id, viewer_id and category '*', no resource_id): that would excuse every exposure"
            )
    return target


def bucket_seconds_for(bucket_counts: Sequence[int]) -> int:
    """The bucket size: the first of BUCKET_STEPS whose count of buckets holding cache calls (``bucket_counts``,
    one per step, from BUCKET_COUNTS_SQL) is at most MAX_BUCKETS; else the last."""
    for step, count in zip(BUCKET_STEPS, bucket_counts, strict=True):
        if count <= MAX_BUCKETS:
            return step
    return BUCKET_STEPS[-1]


def register_inputs(
    con: duckdb.DuckDBPyConnection, out: Path, cfg: Config, window: Window, bucket_seconds: int | None = None
) -> int:
    """DuckDB-only: the input views and tables the SQL files read (see the module docstring). Returns the bucket
    size in seconds: ``bucket_seconds``, or when None the one :func:`bucket_seconds_for` picks for the lake."""
    for kind in KINDS:
        con.execute(f"CREATE OR REPLACE TEMPORARY VIEW {kind}_lake AS {_lake_select(con, out, kind)}")
    if bucket_seconds is None:
        bucket_seconds = bucket_seconds_for(con.execute(BUCKET_COUNTS_SQL).fetchone())
    # DuckDB-only: the lake's distinct keys once (for the multi-key keys and the key rules), then dropped.
    con.execute("CREATE OR REPLACE TEMP TABLE cache_keys AS SELECT DISTINCT key FROM cache_lake WHERE key IS NOT NULL")
    con.execute(f"CREATE OR REPLACE TEMP TABLE multi_keys AS {multi_keys_sql()}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE key_items AS {KEY_ITEMS_DUCKDB_SQL}")
    has_items = con.execute("SELECT count(*) FROM (SELECT 1 FROM key_items LIMIT 1)").fetchone()[0] > 0
    keys_sql = RULE_KEYS_SQL if has_items else "SELECT key FROM cache_keys"
    con.execute(f"CREATE OR REPLACE TEMP TABLE key_rule_matches AS {key_rule_sql(cfg.keys, keys_sql=keys_sql)}")
    con.execute("DROP TABLE cache_keys")
    for name in SIDE_TABLE_COLUMNS:
        load_side_table(con, name, cfg.tables.get(name))
    # The categories a served value can have (15_cache_lines: 'uncategorized' for a key no rule matches, 'multiple'
    # for a multi-key value of several), for the summary's grants_of_unknown_category: a grant of another category
    # excuses nothing.
    con.execute("CREATE OR REPLACE TEMP TABLE value_categories (category VARCHAR)")
    con.executemany("INSERT INTO value_categories VALUES (?)", value_category_rows(cfg))
    con.execute(
        "CREATE OR REPLACE TEMP TABLE cache_ops "
        "(op VARCHAR, is_read BOOLEAN, is_write BOOLEAN, is_reset BOOLEAN)"
    )
    rows = cache_op_rows(cfg)
    if rows:
        con.executemany("INSERT INTO cache_ops VALUES (?, ?, ?, ?)", rows)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE params AS SELECT CAST(? AS TIMESTAMPTZ) AS window_start, "
        "CAST(? AS TIMESTAMPTZ) AS window_end, CAST(? AS VARCHAR) AS window_method, "
        "CAST(? AS BIGINT) AS bucket_seconds",
        list(params_row(window, bucket_seconds)),
    )
    return bucket_seconds


def cache_op_rows(cfg: Config) -> list[tuple[str, bool, bool, bool]]:
    """The ``cache_ops`` input, engine-neutral: (op, is_read, is_write, is_reset) per op the config names."""
    ops: dict[str, list[bool]] = {}
    for index, names in enumerate((cfg.cache_ops.read, cfg.cache_ops.write, cfg.cache_ops.reset)):
        for op in names:
            ops.setdefault(op.upper(), [False, False, False])[index] = True
    return [(op, *flags) for op, flags in ops.items()]


def value_category_rows(cfg: Config) -> list[tuple[str]]:
    """The ``value_categories`` input, engine-neutral: the categories a served value can have."""
    return [(c,) for c in sorted({rule.category for rule in cfg.keys} | {"uncategorized", "multiple"})]


def params_row(window: Window, bucket_seconds: int) -> tuple[Any, Any, str, int]:
    """The ``params`` input, engine-neutral: (window_start, window_end, window_method, bucket_seconds)."""
    if window.auto:
        return None, None, "auto", bucket_seconds
    method = "all" if window.start is None and window.end is None else window.source
    return window.start, window.end, method, bucket_seconds


# ---------------------------------------------------------------------------------------------- engine

def _memory_limit(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("WHOSAW_MEMORY_LIMIT"):
        return os.environ["WHOSAW_MEMORY_LIMIT"]
    return f"{default_memory_mb()}MB"


def default_memory_mb() -> int:
    """The analysis' memory by default, in MiB: 60% of RAM, at most 6 GiB (4 GiB where RAM cannot be read).
    DuckDB's memory_limit; a local Spark session's driver memory (pipeline/spark.py)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4096
    return max(1, int(min(total * 0.6, DEFAULT_MEMORY_CAP) / 2**20))


def _threads(explicit: int | None) -> int:
    """The analysis' threads: ``threads`` given, else ``WHOSAW_THREADS``, else every core; a value DuckDB cannot
    take, or more than it should (100000 it takes, and spends the run switching between them), is one line."""
    name, value = "threads", explicit
    if explicit is None:
        name, value = "WHOSAW_THREADS", os.environ.get("WHOSAW_THREADS")
    if value is None or value == "":
        return os.cpu_count() or 1
    if isinstance(value, bool) or not re.fullmatch(r"\s*[0-9]+\s*", str(value)) or int(value) < 1:
        raise WhosawError(f"{name}: expected a whole number of threads, 1 or more, not {value!r}")
    most = max(MAX_THREADS_FLOOR, 4 * (os.cpu_count() or 1))
    if int(value) > most:
        raise WhosawError(f"{name}: at most {most} threads on this machine ({os.cpu_count()} cores), not {int(value)}")
    return int(value)


def connect(temp_dir: Path, memory_limit: str | None = None, threads: int | None = None):
    """A DuckDB connection set up for the analysis: limits, spill folder, UTC, the dialect macros."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    threads = _threads(threads)
    con = duckdb.connect(":memory:")
    set_memory_limit(con, _memory_limit(memory_limit))
    con.execute(f"SET threads = {threads}")
    con.execute(f"SET temp_directory = '{_sql_path(temp_dir)}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET TimeZone = 'UTC'")
    progress_mod.configure(con)
    for macro in DUCKDB_MACROS:
        con.execute(macro)
    return con


def run_steps(con: duckdb.DuckDBPyConnection, steps: list[SqlStep], show: bool | None = None) -> None:
    """Create every view in order; materialise the marked ones (DuckDB: a temp table behind the name)."""
    for step in steps:
        con.execute(step.sql)
        if step.materialize:
            table = f"{step.view}__materialized"
            if step.joins_as_written:
                con.execute("SET disabled_optimizers = 'join_order, build_side_probe_side'")
            try:
                progress_mod.execute(
                    con, f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM {step.view}",
                    f"analyze: {step.view}", show,
                )
            finally:
                if step.joins_as_written:
                    con.execute("RESET disabled_optimizers")
            con.execute(f"CREATE OR REPLACE TEMPORARY VIEW {step.view} AS SELECT * FROM {table}")


# ---------------------------------------------------------------------------------------------- config

def resolve_analysis_window(window: str | Window | None, cfg: Config) -> Window:
    """The window asked for (``START/END``, ``auto``, ``all``, a Window), else the config's, else all time."""
    if isinstance(window, Window):
        return window
    return resolve_window(window, cfg)


# ---------------------------------------------------------------------------------------------- outputs

# One query on the analysis views, its rows as tuples (times as datetimes): the summary's only access to an engine.
Rows = Callable[[str], list[tuple[Any, ...]]]

# The chosen_window columns the summary reads (90_chosen_window.sql).
WINDOW_COLUMNS: tuple[str, ...] = (
    "window_method", "window_start", "window_end", "bucket_seconds", "baseline", "threshold", "buckets",
    "run_buckets", "elevated_buckets", "crossed_in_run", "crossed_outside", "per_1000_calls_in_run",
    "per_1000_calls_outside", "best_llr", "llr_needed", "second_llr", "stretches",
)


def duckdb_rows(con: duckdb.DuckDBPyConnection) -> Rows:
    """:data:`Rows` on a DuckDB connection."""
    return lambda sql: con.execute(sql).fetchall()


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def _number(value: Any) -> Any:
    if value is None:
        return None
    as_float = float(value)
    return int(as_float) if as_float.is_integer() else round(as_float, 6)


def _pairs(rows: Rows, sql: str) -> dict[str, int]:
    return {str(key): int(count) for key, count in rows(sql)}


_IN_WINDOW = (
    "(w.window_start IS NULL OR {t}.ts >= w.window_start) AND (w.window_end IS NULL OR {t}.ts < w.window_end)"
)


def _window_description(row: dict[str, Any], span: tuple[Any, Any], crossed: int) -> str:
    method = row["window_method"]
    if method == "cli":
        return "given with --window"
    if method == "config":
        return "from the config's [window]"
    if method == "all":
        return f"all time in the logs ({_iso(span[0]) or '-'} to {_iso(span[1]) or '-'})"
    scan = (
        f"the stretch of consecutive {row['bucket_seconds']}-second buckets whose crossed replies least fit one "
        "steady rate per cache call (Kulldorff's Poisson scan statistic: the highest log-likelihood ratio "
        f"of 'one rate inside, another outside' against 'one rate', at least {_number(row['llr_needed'])})"
    )
    if row["window_start"] is None:
        if row["best_llr"] is None and not crossed:
            return "auto: no crossed replies in the logs; all time is kept"
        if row["best_llr"] is None:  # every stretch that holds them holds every cache call too
            return (
                f"auto: no window: the {crossed} crossed repl{'y' if crossed == 1 else 'ies'} cannot be told from "
                f"a steady rate ({row['bucket_seconds']}-second buckets: the cache calls all fall in the buckets "
                "that hold them, leaving nothing outside to compare with); all time is kept"
            )
        return (
            f"auto: no window: {scan} was looked for, and the best stretch scores only "
            f"{round(float(row['best_llr']), 2)}; all time is kept"
        )
    inside = _number(round(float(row["per_1000_calls_in_run"]), 3))
    elsewhere = (
        "none elsewhere" if row["per_1000_calls_outside"] is None
        else f"against {_number(round(float(row['per_1000_calls_outside']), 3))} elsewhere"
    )
    joined = ""
    if row["stretches"] == 2:
        joined = (
            f", joined with the best stretch of the buckets outside it, which scores "
            f"{round(float(row['second_llr']), 2)} against the rest (the bug's rate changed, or it came back)"
        )
    return (
        f"auto: {scan}, log-likelihood ratio {round(float(row['best_llr']), 2)}{joined}: {row['run_buckets']} "
        f"bucket(s) with {row['crossed_in_run']} crossed replies ({inside} per 1,000 cache calls, {elsewhere}); "
        "the window runs from the floor-second of its first crossed reply to the end of the second of its last"
    )


def build_summary(rows: Rows) -> dict[str, Any]:
    """summary.json (docs/design.md "Analysis outputs"), from small aggregates over the views, which ``rows`` queries
    (:func:`duckdb_rows`, or Spark's: the queries are in the SQL both engines read)."""

    def one(sql: str) -> tuple[Any, ...]:
        return rows(sql)[0]

    window_row = dict(zip(WINDOW_COLUMNS, one(f"SELECT {', '.join(WINDOW_COLUMNS)} FROM chosen_window"), strict=True))
    span = one("SELECT min(ts), max(ts) FROM (SELECT ts FROM request_log UNION ALL SELECT ts FROM cache_lines)")
    summary: dict[str, Any] = {
        "window": {
            "start": _iso(window_row["window_start"]),
            "end": _iso(window_row["window_end"]),
            "method": window_row["window_method"],
            "description": _window_description(
                window_row, span, one("SELECT count(*) FROM notable_reads WHERE crossed")[0]
            ),
        },
    }
    if window_row["window_method"] == "auto":
        summary["auto_window"] = {
            "bucket_seconds": int(window_row["bucket_seconds"]),
            "baseline": _number(window_row["baseline"]),
            "threshold": _number(window_row["threshold"]),
            "buckets": int(window_row["buckets"] or 0),
            "run_buckets": int(window_row["run_buckets"] or 0),
            "elevated_buckets": int(window_row["elevated_buckets"] or 0),
            "crossed_replies_in_run": int(window_row["crossed_in_run"] or 0),
        }
        auto = summary["auto_window"]
        if window_row["best_llr"] is not None:
            auto["log_likelihood_ratio"] = _number(round(float(window_row["best_llr"]), 3))
        auto["log_likelihood_ratio_needed"] = _number(window_row["llr_needed"])
        if window_row["second_llr"] is not None:
            auto["second_stretch_log_likelihood_ratio"] = _number(round(float(window_row["second_llr"]), 3))
        if window_row["window_start"] is not None:
            auto["stretches_joined"] = int(window_row["stretches"])
            auto["crossed_replies_outside_run"] = int(window_row["crossed_outside"])
            auto["crossed_per_1000_calls_in_run"] = _number(round(float(window_row["per_1000_calls_in_run"]), 3))
            outside = window_row["per_1000_calls_outside"]
            auto["crossed_per_1000_calls_outside_run"] = None if outside is None else _number(round(float(outside), 3))
    summary["data_span"] = {"start": _iso(span[0]), "end": _iso(span[1])}

    active_users, active_sessions = one(
        "SELECT count(DISTINCT viewer_id), count(DISTINCT session_id) FROM window_activity"
    )
    in_window = _IN_WINDOW.format(t="c")
    requests = one(f"SELECT count(*) FROM request_log AS c CROSS JOIN chosen_window AS w WHERE {in_window}")[0]
    served, served_unconnected = one(
        "SELECT count(*), count(*) FILTER (WHERE c.conn_no IS NULL) FROM cache_lines AS c "
        f"CROSS JOIN chosen_window AS w WHERE c.is_read_op AND c.status = 'ok' AND {in_window}"
    )
    crossed, unknown = one(
        "SELECT count(*) FILTER (WHERE c.crossed), "
        "count(*) FILTER (WHERE c.is_served_item AND c.viewer_kind = 'unknown') "
        f"FROM notable_reads AS c CROSS JOIN chosen_window AS w WHERE {in_window}"
    )
    exposures, owners, viewers, anonymous, ambiguous, conflict, unknown_exposed = one(
        "SELECT count(*), count(DISTINCT owner_id), count(DISTINCT viewer_id), "
        "count(DISTINCT CASE WHEN viewer_kind = 'anonymous' "
        "THEN coalesce(session_id, 'request:' || request_id) END), "
        "count(*) FILTER (WHERE evidence = 'digest-ambiguous'), "
        "count(*) FILTER (WHERE evidence = 'conflict'), "
        "count(*) FILTER (WHERE viewer_kind = 'unknown') FROM exposures_in_window"
    )
    summary.update({
        "active_users": int(active_users),
        "active_sessions": int(active_sessions),
        "requests": int(requests),
        "served_items": int(served),
        # the connection tier cannot see a crossed reply among these: no host or no conn_id logged
        "served_items_without_connection": int(served_unconnected),
        "crossed_replies": int(crossed),
        "exposures": int(exposures),
        "affected_owners": int(owners),
        "viewers": int(viewers),
        "anonymous_viewer_sessions": int(anonymous),
        "unknown_viewer_exposures": int(unknown_exposed),
    })
    for name, column in (("category", "category"), ("severity", "severity"), ("evidence", "evidence")):
        summary[f"exposures_by_{name}"] = _pairs(
            rows, f"SELECT {column}, count(*) FROM exposures_in_window GROUP BY ALL ORDER BY 1"
        )
    summary["affected_owners_by_category"] = _pairs(
        rows, "SELECT category, count(DISTINCT owner_id) FROM exposures_in_window GROUP BY ALL ORDER BY 1"
    )
    summary["ambiguous_rows"] = int(ambiguous)
    summary["conflict_rows"] = int(conflict)
    summary["flagged_not_exposed"] = _pairs(
        rows,
        "SELECT c.evidence, count(*) FROM notable_items AS c CROSS JOIN chosen_window AS w "
        "LEFT JOIN exposures_all AS e ON c.line_id = e.line_id AND c.item_no = e.item_no "
        f"WHERE {in_window} AND c.is_served_item AND e.line_id IS NULL "
        "AND c.evidence IN ('digest-ambiguous', 'conflict') GROUP BY ALL ORDER BY 1",
    )
    # Digests a read received as its own key's value while the writes give them to another owner (a value many users
    # share, an empty list): from then on labelled digest-ambiguous (42_digests_read_as_own). Whole lake, not window.
    shared, shared_reads = one("SELECT count(*), coalesce(sum(reads), 0) FROM digests_read_as_own")
    summary["digests_read_as_own"] = {"digests": int(shared), "reads": int(shared_reads)}
    # Exposures the digest alone names while their logged connection shows the read got its own reply: a cancel the
    # log lacks, or a value many users share where the rule above could not see the connection's start or cancels.
    summary["digest_exposures_on_clean_connections"] = one(
        "SELECT count(*) FROM exposures_in_window AS e INNER JOIN notable_reads AS n ON e.line_id = n.line_id "
        "WHERE e.evidence = 'digest' AND NOT n.crossed_by_connection AND n.host IS NOT NULL AND n.conn_id IS NOT NULL"
    )[0]
    summary["unknown_viewer_reads"] = int(unknown)
    # The viewer is the session's holder (SPEC), whatever user_id the request carried; where the two disagree on an
    # exposure (two users on one session id, a stale tab after a logout), the sessions log decided alone. When the
    # request's user is the owner, the request log says the user read their own data.
    differs, own = one(
        "SELECT count(*), count(*) FILTER (WHERE n.request_user_id = e.owner_id) FROM exposures_in_window AS e "
        "INNER JOIN notable_reads AS n ON e.line_id = n.line_id "
        "WHERE e.viewer_kind IN ('session', 'anonymous') AND n.request_user_id IS NOT NULL "
        "AND n.request_user_id IS DISTINCT FROM e.viewer_id"
    )
    summary["request_user_differs"] = {"exposures": int(differs), "request_user_is_owner": int(own)}
    # A crossed reply that reached a viewer with data no tier names an owner for: its key matches no [[keys]] rule,
    # or its rule's resource is missing from tables.ownership (a family whose data is nobody's, a public key, is
    # known to be nobody's). Neither an exposure nor a near miss: a victim the lists cannot name.
    # Counted per call, as crossed replies are (a multi-key reply's items are one reply: docs/design.md).
    summary["crossed_served_unknown_owner"] = one(
        "SELECT count(DISTINCT c.line_id) FROM notable_items AS c CROSS JOIN chosen_window AS w "
        "LEFT JOIN key_rule_matches AS k ON c.value_key = k.key "
        f"WHERE {in_window} AND c.crossed AND c.outcome = 'served' AND c.owner_id IS NULL "
        "AND coalesce(k.names_owner, true)"
    )[0]
    # A grant whose category no key rule gives (a typo, 'Conversation_Titles') silently excuses nothing.
    summary["grants_of_unknown_category"] = _pairs(
        rows,
        "SELECT category, count(*) FROM grants_table WHERE category IS NOT NULL AND category <> '*' "
        "AND category NOT IN (SELECT category FROM value_categories) GROUP BY ALL ORDER BY 1",
    )
    # What the grants excused (55_granted_reads): items that would be exposures (60_exposures_all's rule) but that a
    # grant covers; not exposures, counted so a reader sees the grants were applied and what they took off the lists.
    granted_items = (
        "FROM notable_items AS c INNER JOIN granted_reads AS g ON c.line_id = g.line_id AND c.item_no = g.item_no "
        f"CROSS JOIN chosen_window AS w WHERE {in_window} AND c.outcome = 'served' AND c.owner_id IS NOT NULL "
        "AND (c.viewer_kind <> 'unknown' OR c.owner_by_key IS NULL OR c.owner_id <> c.owner_by_key)"
    )
    granted, granted_owners, granted_crossed = one(  # items; crossed replies per call, as everywhere
        "SELECT count(*), count(DISTINCT c.owner_id), count(DISTINCT CASE WHEN c.crossed THEN c.line_id END) "
        f"{granted_items}"
    )
    summary["granted_views"] = {
        "items": int(granted),
        "owners": int(granted_owners),
        "crossed_replies": int(granted_crossed),
        "by_category": _pairs(rows, f"SELECT c.category, count(*) {granted_items} GROUP BY ALL ORDER BY 1"),
    }
    summary["tables"] = {
        name: {"rows": int(one(f"SELECT count(*) FROM {name}_table")[0])} for name in ("ownership", "grants")
    }
    near_total, near_outside = one(
        "SELECT count(*) FILTER (WHERE in_window), count(*) FILTER (WHERE NOT in_window) FROM near_misses"
    )
    by = "SELECT {0}, count(*) FROM near_misses WHERE in_window GROUP BY ALL ORDER BY 1"
    summary["near_misses"] = {
        "total": int(near_total),
        "by_kind": _pairs(rows, by.format("kind")),
        "by_category": _pairs(rows, by.format("category")),
        "outside_window": int(near_outside),
    }
    outside, outside_owners = one("SELECT count(*), count(DISTINCT owner_id) FROM exposures_outside_window")
    summary["outside_window"] = {
        "exposures": int(outside),
        "affected_owners": int(outside_owners),
        "by_category": _pairs(
            rows, "SELECT category, count(*) FROM exposures_outside_window GROUP BY ALL ORDER BY 1"
        ),
    }
    affected_active = one(
        "SELECT count(DISTINCT e.owner_id) FROM exposures_in_window AS e "
        "INNER JOIN (SELECT DISTINCT viewer_id FROM window_activity) AS a ON e.owner_id = a.viewer_id"
    )[0]
    summary["affected_active_users"] = int(affected_active)
    summary["share_of_active_users_affected"] = (
        round(affected_active / active_users, 6) if active_users else None
    )
    summary["log_gaps"] = log_gaps_summary(rows(LOG_GAPS_SQL))
    summary["window_beyond_logs"] = window_beyond_logs(window_row["window_start"], window_row["window_end"], span)
    summary["generated_at"] = _iso(datetime.now(UTC).replace(microsecond=0))
    return summary


LOG_GAPS_SQL = "SELECT gap, host, gap_start, gap_end, requests FROM log_gaps ORDER BY gap, gap_start, host"


def window_beyond_logs(start: datetime | None, end: datetime | None, span: tuple[Any, Any]) -> list[dict[str, Any]]:
    """The stretches of the window more than an hour before the first log line or after the last (summary.json
    ``window_beyond_logs``): no exposure there can be seen. Logs exported short, or a window typed for another day."""
    first, last = span
    if first is None:
        return []
    stretches = []
    if start is not None and first - start > timedelta(hours=1):
        stretches.append({"start": _iso(start), "end": _iso(first if end is None else min(first, end))})
    if end is not None and end - last > timedelta(hours=1):
        stretches.append({"start": _iso(last if start is None else max(last, start)), "end": _iso(end)})
    return stretches


def log_gaps_summary(rows: Sequence[Sequence[Any]]) -> dict[str, list[dict[str, Any]]]:
    """summary.json ``log_gaps`` from the rows of :data:`LOG_GAPS_SQL` (either engine's): where the cache log seems
    missing (97_log_gaps), whole lake; no exposure there can be seen."""
    return {
        "hours_without_cache_calls": [
            {"start": _iso(start), "end": _iso(end), "requests": int(n)} for gap, _, start, end, n in rows
            if gap == "hours"
        ],
        "hosts_without_cache_calls": [
            {"host": host, "requests": int(n)} for gap, host, _, _, n in rows if gap == "host"
        ],
    }


def write_outputs(con: duckdb.DuckDBPyConnection, out: Path, show: bool | None = None) -> dict[str, Path]:
    """COPY the result views to their files (DuckDB-only)."""
    order = "ORDER BY ts, request_id, key, source_file, source_line, item_no"  # item_no: a multi-key value's items
    exposure_select = ", ".join(EXPOSURE_COLUMNS)
    files = {
        "exposures.parquet": f"SELECT {exposure_select} FROM exposures_in_window {order}",
        "exposures_outside_window.parquet": f"SELECT {exposure_select} FROM exposures_outside_window {order}",
        # a line can hold several: a failed read, and the replies its reset threw away
        "near_misses.parquet": f"SELECT {', '.join(NEAR_MISS_COLUMNS)} FROM near_misses "
                               "ORDER BY ts, request_id, source_file, source_line, kind, category, owner_id",
        "timeline.parquet": f"SELECT {', '.join(TIMELINE_COLUMNS)} FROM timeline ORDER BY bucket_start",
    }
    written = {}
    for name, select in files.items():
        path = out / name
        progress_mod.execute(
            con, f"COPY ({select}) TO '{_sql_path(path)}' (FORMAT parquet, COMPRESSION zstd)",
            f"analyze: {name}", show,
        )
        written[name] = path
    csv_path = out / "exposures.csv"
    copy_safe_csv(con, files["exposures.parquet"], csv_path)
    written["exposures.csv"] = csv_path
    return written


# ---------------------------------------------------------------------------------------------- entry

@contextlib.contextmanager
def analysis_views(
    out: Path,
    cfg: Config,
    window: Window,
    progress: bool | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
    bucket_seconds: int | None = None,
) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
    """The analysis of ``out``'s lake run on a DuckDB connection, every view queryable, nothing written yet (the
    connection and the bucket size). The spill folder under ``OUT/.tmp/`` goes with the connection."""
    temp_dir = out / ".tmp" / f"analyze-{os.getpid()}"
    con = None
    try:
        con = connect(temp_dir, memory_limit, threads)
        bucket_seconds = register_inputs(con, out, cfg, window, bucket_seconds)
        run_steps(con, load_steps(), progress)
        yield con, bucket_seconds
    except duckdb.OutOfMemoryException:
        raise out_of_memory("analysis", _memory_limit(memory_limit), out / ".tmp") from None
    except duckdb.ConversionException:
        mistyped = mistyped_lake_column(con, out) if con is not None else None
        if mistyped is None:
            raise
        path, name, dtype = mistyped
        raise WhosawError(f"the lake is damaged: {path} holds {name} values that are not {dtype}") from None
    finally:
        if con is not None:
            con.close()
        remove_stage_scratch(out, temp_dir)


def analyze(
    out: str | Path,
    config: str | Path | Config | None = None,
    window: str | Window | None = None,
    progress: bool | None = None,
    *,
    memory_limit: str | None = None,
    threads: int | None = None,
    bucket_seconds: int | None = None,
    engine: str = "duckdb",
    spark_master: str | None = None,
) -> dict[str, Any]:
    """Find the exposures in the lake under ``out``; write the analysis outputs; return the summary.

    ``config``: a Config, a TOML path, or None (the config ingest recorded in the manifest, if any).
    ``window``: ``START/END``, ``auto``, ``all``, a Window, or None (the config's ``[window]``, else all
    time).
    ``bucket_seconds``: the timeline's bucket; None: 5 minutes, coarser when more than 10,000 of them hold cache
    calls (:func:`bucket_seconds_for`).
    ``engine``: ``duckdb``, or ``spark``: the same SQL on the SparkSession active in this process (a cluster's),
    else on one started on ``spark_master`` (a master URL; None: local, 2 cores). Spark needs ``pip install
    'whosaw[spark]'`` and Java 17; it writes the same output files (pipeline/spark.py), and on a cluster ``out``
    must be at the same path on every executor.
    ``memory_limit`` and ``threads`` are DuckDB's.
    """
    out = Path(out)
    refuse_pattern_characters(out)
    if bucket_seconds is not None and bucket_seconds < 1:
        raise WhosawError("bucket_seconds must be a positive number of seconds")
    check_engine(engine, spark_master)
    cfg = resolve_config(out, config)
    chosen = resolve_analysis_window(window, cfg)
    with locked(out, "analyze"):  # which first rolls back a killed ingest: its parts may have been the whole lake
        if not (out / "parquet").is_dir():
            raise WhosawError(f"{out}: no lake (parquet/) here; run 'whosaw ingest' first")
        return _analyze_locked(
            out, cfg, chosen, progress, memory_limit, threads, bucket_seconds, engine, spark_master
        )


def check_engine(engine: str, spark_master: str | None = None) -> None:
    """An engine analyze can run on, here: Spark needs pyspark and a Java runtime; a master URL, Spark."""
    if engine not in ENGINES:
        raise WhosawError(f"engine: expected one of {', '.join(ENGINES)}, not {engine!r}")
    if spark_master is not None and engine != "spark":
        raise WhosawError("spark master: a master URL needs the Spark engine (--engine spark)")
    if engine == "spark":
        from .spark import check_master, spark_available

        if not spark_available():
            raise WhosawError(
                "engine spark: pyspark and a Java runtime (17) are needed: python -m pip install 'whosaw[spark]'"
            )
        if spark_master is not None:
            check_master(spark_master)


def _analyze_locked(
    out: Path,
    cfg: Config,
    chosen: Window,
    progress: bool | None,
    memory_limit: str | None,
    threads: int | None,
    bucket_seconds: int | None,
    engine: str = "duckdb",
    spark_master: str | None = None,
) -> dict[str, Any]:
    """``analyze`` once it holds ``out``'s lock: no ingest can change the lake while it reads it.

    The outputs are written to a scratch folder and moved in together with the manifest, ``summary.json`` last
    (a Ctrl-C waits for that step): an analysis interrupted while it wrote its files left the new
    ``exposures.parquet`` beside the previous ``summary.json`` and ``exposures.csv``, and a report of that folder
    made notification lists from the one and counts from the other."""
    staging = out / ".tmp" / f"analysis-{os.getpid()}"
    try:
        staging.mkdir(parents=True, exist_ok=True)
        if engine == "spark":
            from .spark import write_analysis

            written, summary, seconds, spark_master = write_analysis(
                out, cfg, chosen, staging, bucket_seconds, progress, spark_master
            )
        else:
            with analysis_views(out, cfg, chosen, progress, memory_limit, threads, bucket_seconds) as (con, seconds):
                written = write_outputs(con, staging, progress)
                summary = build_summary(duckdb_rows(con))
        for name, table in summary["tables"].items():  # which version of each table this analysis applied
            path = cfg.tables.get(name)
            table.update(path=str(path) if path else None, sha256=sha256_file(path) if path else None)
        (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        for name in [*written, "summary.json"]:  # checked before anything in OUT changes
            if (out / name).is_dir() or (out / name).is_symlink():
                raise WhosawError(f"cannot write {out / name}: a folder or link is in the way")
        with ctrl_c_waits():  # the previous analysis and its report go, this one comes: one step
            stale_report = remove_stage_outputs(out, "report")
            (out / "summary.json").unlink(missing_ok=True)  # without it no report is made of a half-moved analysis
            for name in [*written, "summary.json"]:
                os.replace(staging / name, out / name)
            update_manifest(
                out,
                drop=("report",),
                window=summary["window"],
                analysis={
                    "generated_at": summary["generated_at"],
                    "config": str(cfg.path) if cfg.path else None,
                    "config_settings": cfg.raw,  # what the key rules said then, also for a Config built in code
                    "window": summary["window"],
                    "bucket_seconds": seconds,
                    "engine": engine,
                    "spark_master": spark_master,  # None for DuckDB: check_engine refuses a master there
                    "exposures": summary["exposures"],
                    "files": sorted([*written, "summary.json"]),
                    "removed_stale_report": stale_report,
                },
            )
    finally:
        remove_stage_scratch(out, staging)
    return summary
