"""CSV that is safe to open in a spreadsheet, and the rule to read it back.

The rule: a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return (also after leading
spaces) or a single quote gets one single quote (``'``) in front, so no spreadsheet evaluates it as a formula. To
read a file back, drop the first character of every text cell that starts with a single quote: that gives the
original value exactly (quoting the quote too is what makes the rule reversible). ``read_safe_csv`` does this.
"""

from __future__ import annotations

import codecs
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from .errors import NO_SPILL

if TYPE_CHECKING:  # pandas costs half a second to import; only the DataFrame helpers below need it
    import pandas as pd

# Why DuckDB may read a CSV table people keep (ownership, grants, users) as something else than its header says: its
# sniffer then takes another line for the header, or one column for the whole row, or gives up.
CSV_SHAPE_HINT = (
    "a row with more or fewer fields than the header (a comma in a value that is not quoted? a row typed in without "
    "its trailing commas?) or a quote left open keeps it from being read as CSV"
)
# A leading character a spreadsheet may treat as the start of a formula, also after spaces: LibreOffice's CSV import
# with "Trim spaces" ticked runs " =1+1" as a formula (checked with LibreOffice 7.4; a no-break space, a full-width
# ＝ or a tab before the "=" it keeps as text). The escape itself (') only as the very first character.
_RISKY_FIRST = ("=", "+", "-", "@", "\t", "\r")
# DuckDB types whose cells are written as they are (a leading "-" is a negative number's, not a formula's);
# every other type goes out as text, neutralised.
_PLAIN_TYPES = frozenset(
    "BOOLEAN TINYINT SMALLINT INTEGER BIGINT HUGEINT UTINYINT USMALLINT UINTEGER UBIGINT UHUGEINT FLOAT DOUBLE "
    "DATE TIME INTERVAL NULL".split()
)


def neutralise(value: object) -> object:
    """The rule for one cell: prefix a quote to a text cell that starts with a risky character."""
    if isinstance(value, str) and (value.lstrip(" ").startswith(_RISKY_FIRST) or value.startswith("'")):
        return "'" + value
    return value


def restore(value: object) -> object:
    """The inverse of :func:`neutralise`."""
    if isinstance(value, str) and value.startswith("'"):
        return value[1:]
    return value


def sql_neutralise(expr: str) -> str:
    """The same rule as a DuckDB SQL expression over a text expression."""
    # Comparisons joined by OR, not IN (...): DuckDB plans an IN list this long as a join against the list,
    # and that join does not keep the order of the rows below it (a sorted export came out shuffled).
    lead = f"substr(ltrim({expr}, ' '), 1, 1)"
    risky = " OR ".join(f"{lead} = {char}" for char in ("'='", "'+'", "'-'", "'@'", "chr(9)", "chr(13)"))
    risky += f" OR substr({expr}, 1, 1) = ''''"
    return f"CASE WHEN {risky} THEN '''' || {expr} ELSE {expr} END"


def sql_restore(expr: str) -> str:
    """The inverse rule (:func:`restore`) as a DuckDB SQL expression over a text expression."""
    return f"CASE WHEN starts_with({expr}, '''') THEN substr({expr}, 2) ELSE {expr} END"


def copy_safe_csv(con: duckdb.DuckDBPyConnection, relation_sql: str, path: Path) -> None:
    """Write the rows of ``relation_sql`` to ``path`` as UTF-8 CSV (with a byte order mark) with every text cell
    neutralised.

    Timestamps are written as ISO-8601 UTC (``2023-03-20T01:02:03.456789Z``).
    """
    described = con.execute(f"DESCRIBE ({relation_sql})").fetchall()
    select = []
    for name, dtype, *_ in described:
        # Names are data too in a frame a notebook exports (a crosstab's columns are user ids, keys, routes): quoted
        # as identifiers, so a '"' in one is a character, not the end of the name (it broke the query, and could
        # have run SQL of its own), and written neutralised, as a header cell a spreadsheet reads like any other.
        quoted = _sql_ident(name)
        header = _sql_ident(str(neutralise(name)))
        if dtype.startswith("TIMESTAMP"):
            # A zoned time is shown in UTC; a time without a zone is UTC already (whosaw's rule for times
            # written without an offset). Cast to TIMESTAMPTZ, it would be read in the session's zone, which is
            # the machine's local zone on a fresh connection: 01:00 became 05:00Z in New York.
            utc = (
                f"timezone('UTC', {quoted})"
                if dtype == "TIMESTAMP WITH TIME ZONE"
                else f"CAST({quoted} AS TIMESTAMP)"
            )
            select.append(f"strftime({utc}, '%Y-%m-%dT%H:%M:%S.%fZ') AS {header}")
        elif dtype in _PLAIN_TYPES or dtype.startswith("DECIMAL"):
            select.append(f"{quoted} AS {header}")  # a number, a truth value, a date: no text a spreadsheet could run
        else:
            # Text, a list (joined with ';') and whatever else is written as text: an ENUM (a pandas categorical
            # column), a BLOB (bytes), a UUID, a STRUCT... each is neutralised like text, since "=1+1" is as risky
            # in a category as in a string.
            text = f"array_to_string({quoted}, ';')" if dtype.endswith("[]") else f"CAST({quoted} AS VARCHAR)"
            select.append(f"{sql_neutralise(text)} AS {header}")
    query = f"SELECT {', '.join(select)} FROM ({relation_sql})"
    written = path.with_name(path.name + ".part")
    # The rows in the order ``relation_sql`` gives them: the projection above it is not an ORDER BY of its own, so
    # on a connection with preserve_insertion_order = false (the analysis') DuckDB could write a large result's
    # chunks in any order (exposures.csv out of time order, unlike exposures.parquet).
    preserve = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0]
    try:
        con.execute("SET preserve_insertion_order = true")
        con.execute(f"COPY ({query}) TO '{_sql_path(written)}' (FORMAT csv, HEADER true)")
        # A byte order mark first: Excel, opening a CSV by double-click, reads UTF-8 only when the file says so
        # (else "Zoë" shows as "ZoÃ«"); LibreOffice, Google Sheets, pandas and DuckDB read past it.
        with open(path, "wb") as target, open(written, "rb") as source:
            target.write(codecs.BOM_UTF8)
            shutil.copyfileobj(source, target, 1 << 20)
    finally:
        con.execute(f"SET preserve_insertion_order = {str(bool(preserve)).lower()}")
        written.unlink(missing_ok=True)  # never left beside the outputs


def write_safe_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a (small) DataFrame with the same rule and writer as :func:`copy_safe_csv`."""
    con = duckdb.connect(config=NO_SPILL)  # the frame is in memory already
    con.register("frame_to_write", frame)
    copy_safe_csv(con, "SELECT * FROM frame_to_write", path)
    con.close()


def read_safe_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV written by whosaw back to its original values (text columns as str, empty as NA)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    for column in frame.columns:
        frame[column] = frame[column].map(restore, na_action="ignore")
    frame.columns = [restore(column) for column in frame.columns]  # a header cell follows the rule too
    return frame


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
