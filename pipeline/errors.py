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
