"""The Python API: the CLI's verbs as functions that return objects instead of printing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .analyze import analyze, check_engine
from .config import Config, parse_window, resolve_config
from .errors import WhosawError
from .ingest import IngestResult, ingest
from .manifest import locked
from .report import check_users_directory, report

if TYPE_CHECKING:  # imported on first use (see __getattr__ below): `run` needs neither
    from .explore import connect
    from .simulate import simulate

__all__ = ["RunResult", "analyze", "connect", "ingest", "report", "run", "simulate"]


@dataclass
class RunResult:
    """What ``run`` produced: the ingest result, the analysis summary and the report's files."""

    out: Path
    ingest: IngestResult
    summary: dict[str, Any]
    files: dict[str, Path]


def run(
    inputs: Sequence[str | Path],
    out: str | Path,
    config: str | Path | Config | None = None,
    window: str | None = None,
    kind: str | None = None,
    progress: bool | None = None,
    engine: str = "duckdb",
    spark_master: str | None = None,
    on_stage: Callable[[str, Any], None] | None = None,
) -> RunResult:
    """Ingest the logs, analyse them (``engine``, ``spark_master``: see :func:`analyze`) and write the report: the
    whole job in one call. ``on_stage``: called as each stage ends, with its name and result (``"ingest"``, the
    :class:`IngestResult`; ``"analyze"``, the summary), so a caller can show a stage's figures before the next
    one starts: the CLI prints them, and a later stage's failure (a full disk) leaves them on screen."""
    cfg = resolve_config(Path(out), config)
    parse_window(window)  # a bad --window fails before anything is read or written
    check_engine(engine, spark_master)  # so does an engine this machine cannot run
    if cfg.tables.get("users") is not None:  # so does a users directory the report could not read
        check_users_directory(cfg.tables["users"])
    with contextlib.ExitStack() as stack:  # OUT's lock, held from the ingest to the report: no other stage between
        stack.enter_context(locked(Path(out), "run"))  # nothing to hold when OUT is new: ingest makes it...
        ingested = ingest(inputs, out, config=cfg, kind=kind, progress=progress)
        if on_stage is not None:
            on_stage("ingest", ingested)
        stack.enter_context(locked(Path(out), "run"))  # ...then held (re-entrant when it already was)
        if not (Path(out) / "parquet").is_dir():
            t = ingested.totals
            raise WhosawError(
                f"nothing to analyse: no record was kept of the {t['lines']:,} lines read ({t['rejected']:,} "
                f"rejected, {t['duplicates']:,} duplicates; the reasons are in {Path(out) / 'rejects'})"
            )
        summary = analyze(
            out, config=cfg, window=window, progress=progress, engine=engine, spark_master=spark_master
        )
        if on_stage is not None:
            on_stage("analyze", summary)
        files = report(out, progress=progress)
    return RunResult(out=Path(out), ingest=ingested, summary=summary, files=files)


def __getattr__(name: str) -> Any:
    """``simulate`` and ``connect`` (which imports pandas), imported when first asked for."""
    if name == "simulate":
        from .simulate import simulate as value
    elif name == "connect":
        from .explore import connect as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
