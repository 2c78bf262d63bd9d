"""Progress for long DuckDB statements: a bar on a terminal, silence everywhere else."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import click
import duckdb


def progress_wanted(show: bool | None = None) -> bool:
    """Show progress only on an interactive terminal, unless the caller decides."""
    if show is not None:
        return show
    return sys.stderr.isatty()


def configure(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB must never print its own bar (notebooks, CI); we draw ours from query_progress()."""
    try:
        con.execute("SET enable_progress_bar = true")
        con.execute("SET enable_progress_bar_print = false")
    except duckdb.InvalidInputException:
        # Inside Jupyter without ipywidgets, DuckDB refuses any change to its progress bar setting; the bar then
        # stays off (its default there), which is what a notebook wants.
        pass


def execute(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    label: str,
    show: bool | None = None,
    fraction: Callable[[], float] | None = None,
) -> None:
    """Run one statement; while it runs, poll ``query_progress()`` from a thread to drive a click bar.

    ``fraction`` (0..1), when given, is polled instead: DuckDB cannot estimate the progress of a scan of a
    Python stream (it reports 0), but the stream's producer knows how many bytes it has read.
    """
    if not progress_wanted(show):
        con.execute(sql)
        return
    configure(con)
    done = threading.Event()

    def poll(bar) -> None:
        shown = 0
        while not done.wait(0.2):
            try:
                pct = int(100 * fraction()) if fraction else int(con.query_progress())
            except duckdb.Error:
                continue
            if pct > shown:
                bar.update(pct - shown)
                shown = pct

    with click.progressbar(length=100, label=label, file=sys.stderr) as bar:
        watcher = threading.Thread(target=poll, args=(bar,), daemon=True)
        watcher.start()
        try:
            con.execute(sql)
        finally:
            done.set()
            watcher.join()
