"""The one exception users see: a short, single-line reason that the CLI prints before exiting with status 2."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any


class WhosawError(Exception):
    """Bad usage or unreadable input. The message is one line and never contains log contents."""


def first_unreadable_parquet(con: Any, paths: Iterable[Path]) -> Path | None:
    """The first of ``paths`` whose Parquet footer DuckDB (connection ``con``) cannot read: damaged, or not
    Parquet at all. For naming the culprit once reading a set of files has failed."""
    import duckdb

    for path in paths:
        try:
            con.execute("SELECT 1 FROM parquet_file_metadata(?)", [str(path)]).fetchall()
        except duckdb.Error:
            return path
    return None


# DuckDB's config for a connection that must not spill: in memory, DuckDB's default spill folder is ./.tmp in the
# working directory, outside --out, and what it would spill there (a users directory, a result) is personal data.
# Connections with large work set a temp_directory under --out instead.
NO_SPILL = {"temp_directory": ""}


def set_memory_limit(con: Any, limit: str) -> None:
    """SET DuckDB's ``memory_limit`` on ``con``, a connection being set up. A size DuckDB cannot read
    (``WHOSAW_MEMORY_LIMIT=lots``) is bad usage, one line and exit 2, not an internal error: ``con`` is closed."""
    import duckdb

    try:
        con.execute(f"SET memory_limit = '{limit.replace(chr(39), chr(39) * 2)}'")
    except duckdb.Error:
        con.close()
        raise WhosawError(
            f"memory limit {limit!r} is not a size DuckDB reads (WHOSAW_MEMORY_LIMIT takes e.g. 4GB or 600MB)"
        ) from None


def out_of_memory(stage: str, limit: str, spill: Path) -> WhosawError:
    """The error for DuckDB running out of memory even with spilling: what to change, not an internal error."""
    return WhosawError(
        f"{stage} ran out of memory (memory_limit {limit}); raise WHOSAW_MEMORY_LIMIT or free disk space for {spill}"
    )
