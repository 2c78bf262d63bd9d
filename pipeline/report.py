"""The affected-user report: CSV exports for legal and comms, and report.html / report.md for everyone.

Reads the analysis outputs in ``OUT`` (``exposures.parquet``, ``timeline.parquet``, ``near_misses.parquet``,
``exposures_outside_window.parquet``, ``summary.json``) and the manifest, and writes:

- ``affected_users.csv``: one row per owner whose data was exposed, joined with the users directory;
- ``viewers.csv``: one row per viewer shown someone else's data (anonymous sessions by a hash of the session);
- ``notify/<category>.csv``: one notification list per category of data;
- ``changes.csv``: what changed in those lists since the previous report, kept in ``history/`` (when there is one);
- ``exposures.csv`` only if the analysis did not write it;
- ``charts/*.png``, ``report.html`` (self-contained: images inline, no network) and ``report.md``.

Every aggregation runs in DuckDB (``sql/report/*.sql``) over the exposures; only small aggregates (lists of
rows) reach matplotlib. Every CSV goes through :mod:`pipeline.safecsv`. No exposed content, email or name
appears in the report: counts, categories, countries and times only.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import duckdb

from . import __version__
from .charts import ChartFacts, ChartWorker, utc
from .config import SEVERITIES, config_from_dict, load_config
from .errors import NO_SPILL, WhosawError, first_unreadable_parquet
from .manifest import (
    HISTORY_DIR,
    KEPT_NAME,
    ctrl_c_waits,
    damaged_inputs,
    list_hashes,
    load_manifest,
    locked,
    newest_kept_report,
    not_whole_json,
    read_json_object,
    rejected_inputs,
    remove_stage_outputs,
    sha256_file,
    still_rejected,
    update_manifest,
)
from .progress import execute, progress_wanted
from .safecsv import CSV_SHAPE_HINT, copy_safe_csv, sql_restore
from .schema import EVIDENCE_ORDER, EXPOSURE_COLUMNS, id_text

__all__ = ["report"]

SQL_DIR = "sql/report"
USER_COLUMNS = ("user_id", "email", "name", "country", "locale")
_MAX_LISTED = 25  # files listed one by one in the report before "and N more"

EVIDENCE_TEXT = {
    "value_owner": "the application logged the owner found inside the value it read (direct evidence)",
    "digest": "the SHA-256 of the value read matches the latest write of that value under a key with a known "
    "owner (strong evidence)",
    "connection": "inferred from the order of calls on a pooled connection: a call abandoned after it was "
    "sent left its reply unread, and a later read on that connection received it (inferred)",
    "key": "the owner of the key the request asked for; this alone cannot see a crossed reply",
    "digest-ambiguous": "the value's digest was written under keys of several owners, or read as its own key's "
    "value under another owner's key (a value many users share); the owner shown comes from the next tier "
    "(flagged, needs review)",
    "conflict": "two kinds of evidence name different owners; the strongest is shown (flagged, needs review)",
}
NEAR_MISS_TEXT = {
    "failed": "the read that received another call's reply failed (error status or a 5xx answer), "
    "so the data most likely reached no one",
    "discarded": "the stale reply was discarded before anyone read it as data (connection reset)",
    "not-data": "the stale reply was not data (e.g. the 'OK' of a write), or the reading call returns "
    "no data",
    "background": "the stale reply was read by background work (a call on behalf of no request), so it was "
    "shown to no one",
}


# ------------------------------------------------------------------------------------------------------------
# The entry point


def report(out: str | Path, progress: bool | None = None, since: str | Path | None = None) -> dict[str, Path]:
    """Write the CSV exports, charts and reports for the analysed folder ``out``; return the files written.

    The keys of the returned dict are the files' paths relative to ``out`` (POSIX form). ``exposures.csv`` is
    listed too: the analysis writes it (the report writes it only when it is missing), and it is the evidence
    behind the lists. The charts are drawn in a thread while DuckDB runs the report's SQL and writes the CSVs.
    ``changes.csv`` compares the notification lists with those of the report kept in ``since`` (a folder of
    ``OUT/history/``, by path or name: the lists that were sent), by default the newest one kept there.
    """
    out = Path(out)
    with locked(out, "report"):
        return _report_locked(out, progress_wanted(progress), since)


# What a report may write, recorded in the manifest before it writes anything: a report killed half-way is then
# removed whole by the next analysis or ingest (manifest.remove_stage_outputs), not left beside it.
REPORT_OUTPUTS = {
    "files": ["affected_users.csv", "changes.csv", "report.html", "report.md", "viewers.csv"],
    "patterns": ["charts/*.png", "notify/*.csv"],
    "folders": ["charts", "notify"],
}


def _report_locked(out: Path, show: bool, since: str | Path | None) -> dict[str, Path]:
    """``report`` once it holds ``out``'s lock: no analyze or ingest can replace the exposures it reads."""
    inputs = _Inputs.load(out)
    inputs.previous = _kept_report(out, since)
    update_manifest(out, report={**REPORT_OUTPUTS, "complete": False})
    try:
        return _write_report(out, inputs, show)
    except BaseException:
        # Failed or interrupted half-way: what it wrote goes, not left beside the analysis as if it were a report
        # (affected_users.csv without report.html, some of the notify/ lists, a CSV cut short by Ctrl-C).
        with ctrl_c_waits():
            remove_stage_outputs(out, "report")
            update_manifest(out, drop=("report",))
        raise


def _write_report(out: Path, inputs: _Inputs, show: bool) -> dict[str, Path]:
    with ChartWorker() as worker:
        files, facts = _tables(inputs, show, worker)
        charts_drawn = worker.charts()
    chart_dir = out / "charts"
    chart_dir.mkdir(exist_ok=True)
    for stale in chart_dir.glob("*.png"):
        if stale.stem not in charts_drawn:
            stale.unlink()
    for name, png in charts_drawn.items():
        path = chart_dir / f"{name}.png"
        path.write_bytes(png)
        files[f"charts/{name}.png"] = path

    blocks = _build(inputs, facts, charts_drawn)
    title = "whosaw incident report: who saw whose data"
    on_spark = " (run on Apache Spark)" if inputs.manifest.get("analysis", {}).get("engine") == "spark" else ""
    meta = (
        f"Generated {_fmt_time(datetime.now(UTC))} by whosaw {__version__} from the analysis{on_spark} of "
        f"{_fmt_time(inputs.summary.get('generated_at'))}. All times UTC. "
        "This report holds counts, categories, countries and times only; the lists of people are in the CSV "
        "files."
    )
    html_text = _template("report.html").substitute(
        title=html.escape(title),
        meta=html.escape(meta),
        version=html.escape(__version__),
        body="\n".join(_html_block(block, charts_drawn) for block in blocks),
    )
    md_text = _template("report.md").substitute(
        title=title,
        meta=_md_escape(meta),
        body="\n\n".join(_md_block(block) for block in blocks),
    )
    (out / "report.html").write_text(html_text, encoding="utf-8")
    (out / "report.md").write_text(md_text.rstrip() + "\n", encoding="utf-8")
    files["report.html"] = out / "report.html"
    files["report.md"] = out / "report.md"

    update_manifest(
        out,
        report={
            "generated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            **REPORT_OUTPUTS,
            "files": sorted(set(files) - set(inputs.manifest.get("analysis", {}).get("files", []))),
            "complete": True,
            "affected_users": facts.affected_rows,
            "viewers": facts.viewer_rows,
            "users_directory": str(inputs.users_path) if inputs.users_path else None,
            "users_directory_sha256": facts.directory_sha256,
            "missing_from_directory": facts.missing_from_directory,
            "without_email": facts.without_email,
            "lists_sha256": list_hashes(out, list(files)),  # kept with the lists when a later stage replaces them
            "changes": facts.changes.record() if facts.changes else None,
            "checks": [{"check": text, "ok": ok} for text, ok in facts.checks],
        },
    )
    return dict(sorted(files.items()))


def _tables(inputs: _Inputs, show: bool, charts: ChartWorker) -> tuple[dict[str, Path], _Facts]:
    """Run the report's SQL and write the CSVs; the files and the facts. The timeline and then the facts go to
    the chart worker as soon as they are known."""
    out = inputs.out
    temp_dir = out / ".tmp" / f"report-{os.getpid()}"  # where big aggregations spill; removed at the end
    con = duckdb.connect(config={"temp_directory": str(temp_dir)})
    try:
        damaged = first_unreadable_parquet(con, [p for p in (inputs.exposures, inputs.timeline) if p is not None])
        if damaged is not None:
            raise WhosawError(f"report: {damaged} is not readable Parquet; rerun 'whosaw analyze'")
        con.execute("SET TimeZone = 'UTC'")
        charts.draw_timeline(inputs.summary, _timeline(con, inputs.timeline))
        _register(con, inputs)
        changes = _Changes.since(out, inputs.previous) if inputs.previous is not None else None
        _register_previous_lists(con, out, changes)
        for sql_file in _sql_files():
            execute(con, sql_file.read_text(encoding="utf-8"), f"report: {sql_file.stem[3:]}", show)
        facts = _facts(con, inputs)
        charts.draw_facts(
            ChartFacts(facts.severity_by_category, facts.countries, facts.owners_seen_hist, facts.viewer_count_hist)
        )
        if changes is not None:
            if not changes.unreadable:
                _count_changes(con, changes)
            facts.changes = changes
            facts.checks += changes.checks()
        files, facts.notify_files = _write_csvs(con, inputs, facts.changes)
    finally:
        con.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            temp_dir.parent.rmdir()  # only if no other stage is using it
    return files, facts


def _timeline(con: duckdb.DuckDBPyConnection, path: Path | None) -> dict[str, list[Any]]:
    """timeline.parquet by column, in time order; empty without buckets."""
    if path is None:
        return {}
    result = con.execute(f"SELECT * FROM read_parquet({_sql_str(path)}) ORDER BY bucket_start")
    names = [column[0] for column in result.description]
    rows = result.fetchall()
    return {name: [row[i] for row in rows] for i, name in enumerate(names)} if rows else {}


# ------------------------------------------------------------------------------------------------------------
# Inputs


@dataclass
class _Inputs:
    out: Path
    summary: dict[str, Any]
    manifest: dict[str, Any]
    exposures: Path
    timeline: Path | None
    exposures_outside: Path | None  # exposures_outside_window.parquet: why a removed list row went
    users_path: Path | None
    users_note: str
    previous: Path | None = None  # the kept report whose lists changes.csv compares with

    @classmethod
    def load(cls, out: Path) -> _Inputs:
        if not out.is_dir():
            raise WhosawError(f"report: {out} is not a folder")
        summary_path, exposures = out / "summary.json", out / "exposures.parquet"
        if not summary_path.is_file() or not exposures.is_file():
            raise WhosawError(f"report: {out} holds no analysis results (run 'whosaw analyze' first)")
        summary = read_json_object(summary_path, "an analysis summary")
        manifest = load_manifest(out)
        recorded = (manifest.get("analysis") or {}).get("generated_at")
        if recorded is not None and recorded != summary.get("generated_at"):  # killed before its manifest said so
            raise WhosawError(
                f"report: the analysis in {out} did not finish (summary.json and manifest.json disagree); "
                "run 'whosaw analyze' again"
            )
        users_path, users_note = _users_directory(manifest)

        def optional(name: str) -> Path | None:
            path = out / name
            return path if path.is_file() else None

        return cls(
            out=out,
            summary=summary,
            manifest=manifest,
            exposures=exposures,
            timeline=optional("timeline.parquet"),
            exposures_outside=optional("exposures_outside_window.parquet"),
            users_path=users_path,
            users_note=users_note,
        )


def _users_directory(manifest: dict[str, Any]) -> tuple[Path | None, str]:
    """The users directory of the config the analysis used (else the one ingest recorded), or None and why."""
    recorded = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    analysis = manifest.get("analysis") if isinstance(manifest.get("analysis"), dict) else {}
    candidates = [analysis.get("config"), recorded.get("path")]
    config_path = next((Path(p) for p in candidates if p and Path(p).is_file()), None)
    if config_path is not None:
        cfg = load_config(config_path)
    else:
        settings = recorded.get("settings")
        if not isinstance(settings, dict) or not settings.get("tables", {}).get("users"):
            if any(candidates):
                missing = next(p for p in candidates if p)
                return None, f"the config {missing} is no longer there, so there is no users directory"
            return None, "no config was given, so there is no users directory"
        base = Path(recorded["path"]) if recorded.get("path") else None
        cfg = config_from_dict(settings, base)  # raises (exit 2) when the users table cannot be found
    users = cfg.tables.get("users")
    if users is None:
        return None, "the config names no users directory (tables.users)"
    return users, f"users directory {users}"


def _sql_files() -> list[Path]:
    folder = Path(str(resources.files("pipeline").joinpath(SQL_DIR)))
    return sorted(folder.glob("*.sql"))


def _template(name: str) -> Template:
    return Template(resources.files("pipeline").joinpath("templates", name).read_text(encoding="utf-8"))


def _sql_str(text: str | Path) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _register(con: duckdb.DuckDBPyConnection, inputs: _Inputs) -> None:
    """Create the views the report SQL reads.

    ``exposures``, ``users_dir`` (one row per user_id) and ``directory_status`` (is a directory configured).
    """
    con.execute(f"CREATE TEMP VIEW exposures AS SELECT * FROM read_parquet({_sql_str(inputs.exposures)})")
    columns = {row[0] for row in con.execute("DESCRIBE exposures").fetchall()}
    missing = [
        c
        for c in ("ts", "request_id", "owner_id", "viewer_id", "category", "severity", "evidence")
        if c not in columns
    ]
    if missing:
        raise WhosawError(f"report: exposures.parquet lacks column {missing[0]!r}; rerun 'whosaw analyze'")
    if "viewer_kind" not in columns or "session_id" not in columns:
        extra = [f"NULL::VARCHAR AS {c}" for c in ("viewer_kind", "session_id") if c not in columns]
        con.execute(
            "CREATE OR REPLACE TEMP VIEW exposures AS SELECT *, "
            + ", ".join(extra)
            + f" FROM read_parquet({_sql_str(inputs.exposures)})"
        )

    outside = f"read_parquet({_sql_str(inputs.exposures_outside)})" if inputs.exposures_outside else "exposures"
    con.execute(
        f"CREATE TEMP VIEW exposures_outside AS SELECT category, owner_id, ts FROM {outside} "
        + ("" if inputs.exposures_outside else "WHERE false")
    )
    load_users_directory(con, inputs.users_path)


def load_users_directory(con: duckdb.DuckDBPyConnection, path: Path | None) -> None:
    """``users_dir`` (one row per user_id: its first row, whole, and ``directory_rows``) and ``directory_status``
    (whether a directory is configured), from the users table at ``path`` (CSV or Parquet; None: no directory)."""
    configured = path is not None
    con.execute(f"CREATE TEMP TABLE directory_status AS SELECT {str(configured).lower()} AS configured")
    if configured:
        name = path.name.lower()
        if name.endswith(".parquet"):
            source = f"read_parquet({_sql_str(path)})"
        else:  # CSV (optionally compressed): every field as text, standard quoting, nothing guessed but names
            source = (
                f"read_csv({_sql_str(path)}, header = true, all_varchar = true, delim = ',', "
                "quote = '\"', escape = '\"')"
            )
        try:
            con.execute(f"CREATE TEMP TABLE users_raw AS SELECT * FROM {source}")
        except duckdb.OutOfMemoryException:
            raise WhosawError(f"tables.users: the users directory {path} does not fit in memory") from None
        except duckdb.Error as exc:
            raise WhosawError(
                f"tables.users: cannot read the users directory {path} ({exc.__class__.__name__}"
                + ("" if name.endswith(".parquet") else f"; {CSV_SHAPE_HINT}") + ")"
            ) from None
        # column names as the ownership and grants tables take them: case and surrounding spaces do not matter
        present = {row[0].strip().lower(): row[0] for row in con.execute("DESCRIBE users_raw").fetchall()}
        if "user_id" not in present:
            hint = "" if name.endswith(".parquet") else f"; if its header has one, {CSV_SHAPE_HINT}"
            raise WhosawError(f"tables.users: the users directory {path} has no user_id column{hint}")
        picks = ", ".join(
            _user_column(present[col], trim=col == "user_id") if col in present else "NULL::VARCHAR"
            for col in USER_COLUMNS
        )
        con.execute(f"""
            CREATE TEMP TABLE users_numbered AS
            SELECT row_number() OVER () AS row_no, *
            FROM (SELECT {picks} FROM users_raw) AS t({", ".join(USER_COLUMNS)})
        """)
        con.execute("""
            CREATE TEMP TABLE users_dir AS
            SELECT user_id, email, name, country, locale, directory_rows
            FROM (
                SELECT *,
                       count(*) OVER (PARTITION BY user_id) AS directory_rows,
                       row_number() OVER (PARTITION BY user_id ORDER BY row_no) AS copy_no
                FROM users_numbered
                WHERE user_id IS NOT NULL
            )
            WHERE copy_no = 1  -- a user's first row, whole: never one person's email beside another's name
        """)
    else:
        con.execute(
            "CREATE TEMP TABLE users_dir (user_id VARCHAR, email VARCHAR, name VARCHAR, country VARCHAR, "
            "locale VARCHAR, directory_rows BIGINT)"
        )


def check_users_directory(path: Path) -> None:
    """Read the users directory as the report will: ``run`` refuses a broken one before its ingest and analysis,
    not after them."""
    con = duckdb.connect(config=NO_SPILL)
    try:
        load_users_directory(con, path)
    finally:
        con.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------------------------------------------------------
# CSV exports


def _slug(category: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", category).strip("._-")
    return slug[:80] or "category"


def _write_csvs(
    con: duckdb.DuckDBPyConnection, inputs: _Inputs, changes: _Changes | None
) -> tuple[dict[str, Path], dict[str, str]]:
    """Write the CSVs; return the files and, per category, its notify/ file name."""
    out = inputs.out
    names: dict[str, str] = {}
    files: dict[str, Path] = {}
    copy_safe_csv(con, "SELECT * FROM affected_users ORDER BY owner_id", out / "affected_users.csv")
    files["affected_users.csv"] = out / "affected_users.csv"
    copy_safe_csv(con, "SELECT * FROM viewers", out / "viewers.csv")
    files["viewers.csv"] = out / "viewers.csv"
    if changes is not None and changes.unreadable is None:
        copy_safe_csv(con, "SELECT * FROM notify_changes", out / "changes.csv")
        files["changes.csv"] = out / "changes.csv"
    else:  # one an earlier report of this analysis wrote, when history/ had a report then
        (out / "changes.csv").unlink(missing_ok=True)

    exposures_csv = out / "exposures.csv"
    if not exposures_csv.is_file():  # the analysis writes it; write it here only when it is missing
        present = {row[0] for row in con.execute("DESCRIBE exposures").fetchall()}
        columns = ", ".join(_ident(c) for c in EXPOSURE_COLUMNS if c in present)
        order = "ts, request_id, key, source_file, source_line, value_key"  # the analysis' (its item_no aside)
        copy_safe_csv(con, f"SELECT {columns} FROM exposures ORDER BY {order}", exposures_csv)
    files["exposures.csv"] = exposures_csv  # listed either way: it is the evidence behind the lists

    notify = out / "notify"
    notify.mkdir(exist_ok=True)
    for stale in notify.glob("*.csv"):
        stale.unlink()
    used: set[str] = set()
    categories = [row[0] for row in con.execute("SELECT DISTINCT category FROM notify ORDER BY 1").fetchall()]
    for category in categories:
        slug = _slug(category or "uncategorized")
        base, n = slug, 2
        while slug.lower() in used:
            slug, n = f"{base}_{n}", n + 1
        used.add(slug.lower())
        where = "category IS NULL" if category is None else f"category = {_sql_str(category)}"
        path = notify / f"{slug}.csv"
        copy_safe_csv(con, f"SELECT * FROM notify WHERE {where} ORDER BY owner_id", path)
        files[f"notify/{slug}.csv"] = path
        names[category] = f"{slug}.csv"
    return files, names


# ------------------------------------------------------------------------------------------------------------
# Changes since the previous report


def _kept_report(out: Path, since: str | Path | None) -> Path | None:
    """The kept report to compare with: ``since`` (a path, or a folder name in ``OUT/history/``), else the newest
    one kept (None when there is none)."""
    if since is None:
        return newest_kept_report(out)
    for folder in (Path(since), out / HISTORY_DIR / Path(since).name):
        if (folder / KEPT_NAME).is_file():
            return folder
    raise WhosawError(f"report: --since {since} is not a report kept in {out / HISTORY_DIR} (no {KEPT_NAME} there)")


@dataclass
class _Changes:
    """What changed in the notification lists since a report kept in ``history/`` (table ``notify_changes``)."""

    folder: str  # history/report-<time>, relative to OUT (or the path --since gave, outside OUT)
    generated_at: Any  # when that report was made (its kept.json), None when unknown
    unreadable: str | None = None  # why its lists cannot be compared: then no changes.csv
    # (category, rows before, added, removed, rows now), by category
    by_category: list[tuple[str | None, int, int, int, int]] = field(default_factory=list)
    owners_new: int = 0  # owners on a list now who were on none before
    owners_gone: int = 0  # owners on a list before who are on none now
    removed_outside_window: int = 0  # removed rows still exposed, outside this analysis' window

    @classmethod
    def since(cls, out: Path, folder: Path) -> _Changes:
        """The kept report in ``folder``, checked: its lists must be those it wrote, by the SHA-256 it recorded
        (kept.json). A list saved over by a spreadsheet (a row deleted once its person was told, ids that lost
        their leading zeros) would make changes.csv name people wrongly."""
        try:
            kept = json.loads((folder / KEPT_NAME).read_text(encoding="utf-8"))
            recorded = kept.get("lists_sha256")
        except (OSError, ValueError, AttributeError):
            kept, recorded = {}, None
        where = folder.resolve()
        shown = where.relative_to(out.resolve()).as_posix() if where.is_relative_to(out.resolve()) else str(folder)
        changes = cls(shown, kept.get("generated_at"))
        if not isinstance(recorded, dict):
            changes.unreadable = f"{KEPT_NAME} holds no SHA-256 of its lists (made by an earlier whosaw?)"
            return changes
        found = list_hashes(folder)
        changed = sorted(name for name in set(recorded) | set(found) if recorded.get(name) != found.get(name))
        if changed:
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            changes.unreadable = f"{changed[0]}{more} changed since whosaw wrote it (saved over by a spreadsheet?)"
        return changes

    @property
    def added(self) -> int:
        return sum(row[2] for row in self.by_category)

    @property
    def removed(self) -> int:
        return sum(row[3] for row in self.by_category)

    def record(self) -> dict[str, Any]:
        """For the manifest's ``report.changes``."""
        return {
            "previous_report": self.folder,
            "previous_generated_at": self.generated_at,
            "unreadable": self.unreadable,
            "added": self.added,
            "removed": self.removed,
            "owners_new": self.owners_new,
            "owners_gone": self.owners_gone,
            "removed_outside_window": self.removed_outside_window,
        }

    def checks(self) -> list[tuple[str, bool]]:
        if self.unreadable:
            return []
        return [
            (
                "each notification list is the previous report's, plus the rows changes.csv adds, less those it "
                "removes",
                all(before + added - removed == now for _, before, added, removed, now in self.by_category),
            )
        ]


def _register_previous_lists(con: duckdb.DuckDBPyConnection, out: Path, changes: _Changes | None) -> None:
    """Table ``previous_notify`` (category, owner_id): the rows of the notification lists of the kept report
    ``changes`` compares with (empty without one, when it named no one, or when its lists cannot be compared)."""
    con.execute("CREATE TEMP TABLE previous_notify (category VARCHAR, owner_id VARCHAR)")
    lists = sorted((out / changes.folder / "notify").glob("*.csv")) if changes and not changes.unreadable else []
    if lists:
        source = (
            f"read_csv([{', '.join(_sql_str(path) for path in lists)}], header = true, delim = ',', quote = '\"', "
            "escape = '\"', all_varchar = true, union_by_name = true)"
        )
        con.execute(f"INSERT INTO previous_notify SELECT {sql_restore('category')}, {sql_restore('owner_id')} "
                    f"FROM {source}")


def _count_changes(con: duckdb.DuckDBPyConnection, changes: _Changes) -> None:
    """Each list's rows before, added, removed and now, and the owners new to the lists or gone from them."""
    changes.by_category = con.execute(
        """
        WITH before AS (SELECT category, count(DISTINCT owner_id) AS n FROM previous_notify GROUP BY ALL),
             now AS (SELECT category, count(*) AS n FROM notify GROUP BY ALL),
             changed AS (SELECT category, count(*) FILTER (WHERE change = 'added') AS added,
                                count(*) FILTER (WHERE change = 'removed') AS removed
                         FROM notify_changes GROUP BY ALL),
             categories AS (SELECT category FROM before UNION SELECT category FROM now)
        SELECT c.category, coalesce(b.n, 0), coalesce(ch.added, 0), coalesce(ch.removed, 0), coalesce(n.n, 0)
        FROM categories AS c
        LEFT JOIN before AS b ON b.category IS NOT DISTINCT FROM c.category
        LEFT JOIN now AS n ON n.category IS NOT DISTINCT FROM c.category
        LEFT JOIN changed AS ch ON ch.category IS NOT DISTINCT FROM c.category
        ORDER BY c.category NULLS FIRST
        """
    ).fetchall()
    changes.owners_new, changes.owners_gone, changes.removed_outside_window = con.execute(
        """
        SELECT count(DISTINCT owner_id) FILTER (WHERE owner_id NOT IN (SELECT owner_id FROM previous_notify)),
               (SELECT count(DISTINCT owner_id) FROM previous_notify
                WHERE owner_id NOT IN (SELECT owner_id FROM notify)),
               (SELECT count(*) FROM notify_changes WHERE reason = 'outside_window')
        FROM notify
        """
    ).fetchone()


# ------------------------------------------------------------------------------------------------------------
# Facts: the small aggregates the report and the charts show


@dataclass
class _Facts:
    affected_rows: int = 0
    viewer_rows: int = 0
    exposure_rows: int = 0
    missing_from_directory: int = 0
    without_email: int = 0  # in the directory, but with no email address to write to
    directory_configured: bool = False
    directory_file_rows: int | None = None  # rows of the users directory file, as read
    directory_sha256: str | None = None
    directory_duplicates: int = 0
    affected_duplicates: int = 0  # affected users among them
    owners_by_category: dict[str, int] = field(default_factory=dict)
    severity_by_category: dict[str, str] = field(default_factory=dict)
    notify_files: dict[str, str] = field(default_factory=dict)
    viewers_by_kind: dict[str, int] = field(default_factory=dict)
    # (country, users, high_severity_users), most users first
    countries: list[tuple[str, int, int]] = field(default_factory=list)
    country_by_category: dict[tuple[str, str], int] = field(default_factory=dict)  # (country, category) -> users
    owners_seen_hist: list[tuple[int, int]] = field(default_factory=list)  # (owners seen, viewers)
    viewer_count_hist: list[tuple[int, int]] = field(default_factory=list)  # (viewers, owners)
    first_exposure: Any = None
    last_exposure: Any = None
    has_raw_sessions: bool = False
    rejects: list[tuple[str, str, str | None, int]] = field(default_factory=list)  # kind, reason, detail, lines
    checks: list[tuple[str, bool]] = field(default_factory=list)
    changes: _Changes | None = None  # since the previous report, when history/ keeps one


def _facts(con: duckdb.DuckDBPyConnection, inputs: _Inputs) -> _Facts:
    facts = _Facts()
    one = lambda sql: con.execute(sql).fetchone()  # noqa: E731
    facts.affected_rows, facts.missing_from_directory, facts.without_email = one(
        "SELECT count(*), count(*) FILTER (WHERE in_directory = false), "
        "count(*) FILTER (WHERE in_directory AND coalesce(trim(email), '') = '') FROM affected_users"
    )
    facts.viewer_rows = one("SELECT count(*) FROM viewers")[0]
    facts.exposure_rows, facts.first_exposure, facts.last_exposure, exposure_sum = one(
        "SELECT count(*), min(ts), max(ts), (SELECT coalesce(sum(exposure_count), 0) FROM affected_users) "
        "FROM exposures"
    )
    facts.directory_configured = inputs.users_path is not None
    if facts.directory_configured:
        facts.directory_file_rows = one("SELECT count(*) FROM users_raw")[0]
        facts.directory_sha256 = sha256_file(inputs.users_path)
    facts.directory_duplicates, facts.affected_duplicates = one(
        "SELECT count(*), (SELECT count(*) FROM affected_users WHERE directory_rows > 1) FROM users_dir "
        "WHERE directory_rows > 1"
    )
    facts.has_raw_sessions = one("SELECT count(session_id) > 0 FROM exposures")[0]
    facts.rejects = _rejects(con, inputs.out)
    for category, owners, severity in con.execute(
        "SELECT category, count(*), arg_max(severity, CASE severity WHEN 'low' THEN 1 WHEN 'medium' THEN 2 "
        "WHEN 'high' THEN 3 WHEN 'critical' THEN 4 ELSE 0 END) FROM notify GROUP BY category ORDER BY 1"
    ).fetchall():
        facts.owners_by_category[category] = owners
        facts.severity_by_category[category] = severity
    facts.viewers_by_kind = dict(
        con.execute("SELECT viewer_kind, count(*) FROM viewers GROUP BY 1 ORDER BY 1").fetchall()
    )
    signed, anonymous = facts.viewers_by_kind.get("user", 0), facts.viewers_by_kind.get("anonymous", 0)

    label = (
        "CASE WHEN country IS NOT NULL THEN country WHEN NOT (SELECT configured FROM directory_status) THEN "
        "'(no users directory)' WHEN in_directory THEN '(country not given)' ELSE '(not in directory)' END"
    )
    facts.countries = con.execute(
        f"SELECT {label} AS country, count(*) AS users, "
        "count(*) FILTER (WHERE max_severity IN ('high', 'critical')) AS high_severity_users FROM "
        "affected_users GROUP BY 1 ORDER BY users DESC, country"
    ).fetchall()
    facts.country_by_category = {
        (country, category): users
        for country, category, users in con.execute(
            f"SELECT {label} AS country, category, count(*) AS users FROM notify "
            "WHERE category IS NOT NULL GROUP BY 1, 2"
        ).fetchall()
    }
    facts.owners_seen_hist = con.execute(
        "SELECT owners_seen AS n, count(*) AS viewers FROM viewers WHERE owners_seen IS NOT NULL "
        "GROUP BY 1 ORDER BY 1"
    ).fetchall()
    facts.viewer_count_hist = con.execute(
        "SELECT viewer_count AS n, count(*) AS owners FROM affected_users WHERE viewer_count IS NOT NULL "
        "GROUP BY 1 ORDER BY 1"
    ).fetchall()

    summary = inputs.summary
    checks = [
        (
            f"affected_users.csv has one row per affected owner ({_rows(facts.affected_rows)}; summary: "
            f"{summary.get('affected_owners', 0):,})",
            facts.affected_rows == summary.get("affected_owners", 0),
        ),
        (
            f"exposure counts in affected_users.csv add up to the exposures ({exposure_sum:,}; summary: "
            f"{summary.get('exposures', 0):,})",
            exposure_sum == summary.get("exposures", 0) == facts.exposure_rows,
        ),
        (
            f"viewers.csv has one row per signed-in viewer ({_rows(signed)}; summary: {summary.get('viewers', 0):,})",
            signed == summary.get("viewers", 0),
        ),
        (
            f"viewers.csv has one row per anonymous viewer session ({_rows(anonymous)}; summary: "
            f"{summary.get('anonymous_viewer_sessions', 0):,})",
            anonymous == summary.get("anonymous_viewer_sessions", 0),
        ),
    ]
    by_cat = summary.get("affected_owners_by_category") or {}
    if by_cat or facts.owners_by_category:
        checks.append(
            (
                "each notify/<category>.csv has one row per owner affected in that category (as in the "
                "summary)",
                {k: int(v) for k, v in by_cat.items()} == facts.owners_by_category,
            )
        )
    facts.checks = checks
    return facts


def _rejects(con: duckdb.DuckDBPyConnection, out: Path) -> list[tuple[str, str, str | None, int]]:
    """Rejected lines per log kind and reason (counts only: the raw lines stay in rejects/)."""
    files = sorted((out / "rejects").glob("*.parquet"))
    if not files:
        return []
    listed = "[" + ", ".join(_sql_str(f) for f in files) + "]"
    try:
        columns = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM read_parquet({listed})").fetchall()}
        detail = "any_value(detail)" if "detail" in columns else "NULL"
        return con.execute(
            f"SELECT parse_filename(filename, true) AS kind, reason, {detail} AS detail, count(*) AS lines "
            f"FROM read_parquet({listed}, filename = true) GROUP BY ALL "
            "ORDER BY kind, lines DESC, reason"
        ).fetchall()
    except duckdb.Error:
        return []  # an unreadable rejects file must not stop the report; the counts are above


# ------------------------------------------------------------------------------------------------------------
# The document: blocks rendered to HTML and Markdown from one description


@dataclass
class Num:
    value: Any
    kind: str = "int"  # int | share
    key: tuple[str, ...] | None = None  # where in summary.json the number comes from


@dataclass
class Bold:
    parts: Any


@dataclass
class Code:
    text: str


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    parts: Any
    style: str = ""  # "" | headline | note | warning


@dataclass
class Bullets:
    items: list[Any]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    numeric: tuple[int, ...] = ()


@dataclass
class Figure:
    name: str
    alt: str
    caption: str


def fmt_int(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{int(value):,}"


def fmt_share(value: Any) -> str:
    """A share 0-1 as a percentage: two decimals, or two significant digits below 0.01 %."""
    if value is None:
        return "n/a"
    pct = float(value) * 100
    if pct == 0:
        return "0%"
    if pct < 0.01:
        return f"{pct:.2g}%"
    return f"{pct:.2f}%"


def fmt_number(num: Num) -> str:
    return fmt_share(num.value) if num.kind == "share" else fmt_int(num.value)


def _fmt_time(value: Any) -> str:
    if value is None or value == "" or (isinstance(value, float) and value != value):  # NaN: no time
        return "n/a"
    try:
        stamp = utc(value)
    except (ValueError, TypeError):
        return str(value)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _html_inline(part: Any) -> str:
    if part is None:
        return ""
    if isinstance(part, str):
        return html.escape(part)
    if isinstance(part, Num):
        text = html.escape(fmt_number(part))
        if part.key:
            key = html.escape(json.dumps(list(part.key)), quote=True)
            return f'<span class="num" data-summary="{key}">{text}</span>'
        return text
    if isinstance(part, Bold):
        return f"<strong>{_html_inline(part.parts)}</strong>"
    if isinstance(part, Code):
        return f"<code>{html.escape(part.text)}</code>"
    if isinstance(part, list | tuple):
        return "".join(_html_inline(p) for p in part)
    return html.escape(str(part))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
# Control characters (line breaks, tabs, ESC, DEL, C1), from the users directory's countries: a space in report.md,
# a text file read in terminals, where an ESC sequence in a country would recolour, clear or retitle the screen.
_MD_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _md_escape(text: str) -> str:
    return _MD_CONTROL.sub(" ", _MD_SPECIAL.sub(r"\\\1", text))


def _md_inline(part: Any) -> str:
    if part is None:
        return ""
    if isinstance(part, str):
        return _md_escape(part)
    if isinstance(part, Num):
        return _md_escape(fmt_number(part))
    if isinstance(part, Bold):
        return f"**{_md_inline(part.parts)}**"
    if isinstance(part, Code):
        text = _MD_CONTROL.sub(" ", part.text.replace("`", "'"))
        return f"`{text}`"
    if isinstance(part, list | tuple):
        return "".join(_md_inline(p) for p in part)
    return _md_escape(str(part))


def _html_block(block: Any, charts: dict[str, bytes]) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        if block.style:
            return f'<div class="{block.style}">{_html_inline(block.parts)}</div>'
        return f"<p>{_html_inline(block.parts)}</p>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{_html_inline(item)}</li>" for item in block.items) + "\n</ul>"
    if isinstance(block, Table):
        head = "".join(
            f'<th class="n">{html.escape(h)}</th>' if i in block.numeric else f"<th>{html.escape(h)}</th>"
            for i, h in enumerate(block.headers)
        )
        body = "\n".join(
            "<tr>"
            + "".join(
                f'<td class="n">{_html_inline(cell)}</td>'
                if i in block.numeric
                else f"<td>{_html_inline(cell)}</td>"
                for i, cell in enumerate(row)
            )
            + "</tr>"
            for row in block.rows
        )
        table = f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"
        return f'<div class="scroll">{table}</div>'
    if isinstance(block, Figure):
        data = base64.b64encode(charts[block.name]).decode("ascii")
        return (
            f'<figure id="chart-{block.name}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(block.alt, quote=True)}">'
            f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
        )
    raise TypeError(block)


def _md_block(block: Any) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + _md_escape(block.text)
    if isinstance(block, Para):
        text = _md_inline(block.parts)
        return f"> {text}" if block.style else text
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md_inline(item)}" for item in block.items)
    if isinstance(block, Table):
        head = "| " + " | ".join(_md_escape(h) for h in block.headers) + " |"
        rule = (
            "|" + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.headers))) + "|"
        )
        # a | left in a cell (a code span's) would split it, even inside backticks: GFM wants \| there too
        rows = [
            "| " + " | ".join(re.sub(r"(?<!\\)\|", r"\\|", _md_inline(cell)) for cell in row) + " |"
            for row in block.rows
        ]
        return "\n".join([head, rule, *rows])
    if isinstance(block, Figure):
        return f"![{_md_escape(block.alt)}](charts/{block.name}.png)\n\n_{_md_escape(block.caption)}_"
    raise TypeError(block)


# ------------------------------------------------------------------------------------------------------------
# The report's content


def _s(summary: dict[str, Any], *path: str) -> Any:
    value: Any = summary
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _window_phrase(summary: dict[str, Any]) -> str:
    window = summary.get("window") or {}
    start, end = window.get("start"), window.get("end")
    if start and end:
        return f"between {_fmt_time(start)} and {_fmt_time(end)}"
    if start:
        return f"from {_fmt_time(start)}"
    if end:
        return f"until {_fmt_time(end)}"
    span = summary.get("data_span") or {}
    if span.get("start") and span.get("end"):
        return f"in the whole period the logs cover ({_fmt_time(span['start'])} to {_fmt_time(span['end'])})"
    return "in the whole period the logs cover"


def _build(inputs: _Inputs, facts: _Facts, charts: dict[str, bytes]) -> list[Any]:
    s = inputs.summary
    blocks: list[Any] = []
    blocks += _headline(s, facts)
    blocks += _damaged_warning(inputs.manifest)
    blocks += _rejected_warning(inputs.manifest)
    blocks += _log_gap_warnings(s)
    failed = [text for text, ok in facts.checks if not ok]
    if failed:
        blocks.append(
            Para(
                [
                    "Consistency check failed: ",
                    "; ".join(failed),
                    ". Do not use these lists before the discrepancy is explained.",
                ],
                "warning",
            )
        )
    blocks += _changes_section(facts.changes)
    blocks += _numbers(s, facts)
    blocks += _by_category(s, facts)
    blocks += _charts_section(s)
    blocks += _countries_section(facts)
    blocks += _method(inputs, facts)
    blocks += _files_section(facts)
    return blocks


def _changes_section(changes: _Changes | None) -> list[Any]:
    """What changed in the notification lists since the previous report: the first thing whoever acted on that
    report needs from this one."""
    if changes is None:
        return []
    kept = f"made {_fmt_time(changes.generated_at)}, kept with its lists in {changes.folder}/"
    blocks: list[Any] = [Heading(2, "Changes since the previous report")]
    if changes.unreadable:
        return blocks + [
            Para(
                f"The previous report ({kept}) could not be compared with this one: {changes.unreadable}. These "
                "lists are complete on their own; compare them with the lists sent before by hand.",
                "warning",
            )
        ]
    if not changes.added and not changes.removed:
        return blocks + [Para(f"The notification lists are the same as in the previous report ({kept}).")]
    blocks.append(
        Para(
            [
                f"Since the previous report ({kept}): ",
                Num(changes.added),
                f" {_verb(changes.added, 'row', 'rows')} added to the notification lists and ",
                Num(changes.removed),
                " removed, each in ",
                Code("changes.csv"),
                " with the list it changed. ",
                *_count(changes.owners_new, "owner"),
                f" {_verb(changes.owners_new, 'is', 'are')} on a list for the first time, and ",
                *_count(changes.owners_gone, "owner"),
                f" {_verb(changes.owners_gone, 'is', 'are')} on none any more. Someone removed may have been told "
                "already.",
                *_removed_reasons(changes),
            ],
            "warning" if changes.removed else "",  # someone may have been told of an exposure that does not stand
        )
    )
    rows = [
        [Code(category or ""), Num(before), Num(added), Num(removed), Num(now)]
        for category, before, added, removed, now in changes.by_category
    ]
    blocks.append(Table(["list (category)", "rows before", "added", "removed", "rows now"], rows, numeric=(1, 2, 3, 4)))
    return blocks


def _removed_reasons(changes: _Changes) -> list[Any]:
    """Why the removed rows went (changes.csv, column reason): a narrower window, or no exposure of the owner's
    data in that category at all."""
    outside, gone = changes.removed_outside_window, changes.removed - changes.removed_outside_window
    parts: list[Any] = []
    if outside:
        parts += [
            " ", Num(outside), f" removed {_verb(outside, 'row is', 'rows are')} still exposed, only outside this "
            "analysis' window (reason outside_window: first_exposed and last_exposed say when; the exposures are in "
            "exposures_outside_window.parquet).",
        ]
    if gone:
        parts += [
            " For ", Num(gone), f" removed {_verb(gone, 'row', 'rows')} this analysis finds no exposure of the owner's "
            "data in that category at all (reason not_found: later logs showed the viewer held the owner's session, "
            "a grant covers it, or another config gives the data another category: the owner may be on another "
            "list now).",
        ]
    return parts


def _damaged_warning(manifest: dict[str, Any]) -> list[Any]:
    """A damaged input (a gzip stream cut short or corrupt) leaves the lists incomplete: said before the numbers."""
    damaged = damaged_inputs(manifest)
    if not damaged:
        return []
    named = "; ".join(
        f"{Path(str(entry.get('path', ''))).name} ({entry['damaged']}, read to line {int(entry.get('lines') or 0):,})"
        for entry in damaged
    )
    return [
        Para(
            [
                *_count(len(damaged), "input file"),
                f" could not be read to the end: {named}. The lines after the damage were never read, so any exposure "
                "among them is missing from these lists. Fetch the whole file again and ingest it (a truncated one "
                "into the same --out, where the lines already read count as duplicates), then analyse again.",
            ],
            "warning",
        )
    ]


def _rejected_warning(manifest: dict[str, Any]) -> list[Any]:
    """An input most of whose lines were rejected (read as the wrong kind, a field map naming none of its fields)
    adds little or nothing to the lake: the lists lack what it held. Said before the numbers."""
    files = rejected_inputs(manifest)
    if not files:
        return []
    named = "; ".join(
        f"{Path(entry['path']).name} ({entry['rejected']:,} of {entry['kept'] + entry['rejected']:,} lines, read as "
        f"a {entry['kind']} log"
        + (f"; commonest reason {next(iter(entry['reject_reasons']))}" if entry["reject_reasons"] else "")
        + (f"; {not_whole_json(entry['not_json_records'])}" if entry.get("not_json_records") else "")
        + ")"
        for entry in files
    )
    return [
        Para(
            [
                *_count(len(files), "input file"),
                f" had more lines rejected than kept: {named}. What those lines hold is missing from these lists. "
                "The reasons are in rejects/; if a file is another kind of log than it was read as, or the config's "
                "[sources] names other fields than it has, correct the config and ingest into a new --out.",
            ],
            "warning",
        )
    ]


def _log_gap_warnings(s: dict[str, Any]) -> list[Any]:
    """Where the window holds no log line, or the cache log seems missing (summary.json window_beyond_logs,
    log_gaps), the lists cannot be complete: said up front."""
    gaps = s.get("log_gaps") or {}
    blocks: list[Any] = []
    for stretch in s.get("window_beyond_logs") or []:
        blocks.append(
            Para(
                f"The window holds no log line from {_fmt_time(stretch['start'])} to {_fmt_time(stretch['end'])}: "
                "the logs were exported short, or the window was meant for another day? No exposure there can be "
                "seen, so these lists may be incomplete.",
                "warning",
            )
        )
    for gap in gaps.get("hours_without_cache_calls") or []:
        blocks.append(
            Para(
                [
                    f"No cache call was logged from {_fmt_time(gap['start'])} to {_fmt_time(gap['end'])}, while ",
                    *_count(gap["requests"], "request"),
                    " were answered: a cache log missing for those hours, or cut short? No exposure there can be "
                    "seen, so these lists may be incomplete. Find the missing log, ingest it and analyse again.",
                ],
                "warning",
            )
        )
    for gap in gaps.get("hosts_without_cache_calls") or []:
        blocks.append(
            Para(
                [
                    f"Host {gap['host']} answered ",
                    *_count(gap["requests"], "request"),
                    " and logged no cache call, while other hosts did: its cache log not given? No exposure on it "
                    "can be seen, so these lists may be incomplete. Find its log, ingest it and analyse again.",
                ],
                "warning",
            )
        )
    return blocks


def _count(value: Any, noun: str, key: tuple[str, ...] | None = None, plural: str | None = None) -> list[Any]:
    """A number and its noun, singular or plural: ``1 user``, ``2 users``."""
    return [Num(value, key=key), " ", noun if value == 1 else (plural or noun + "s")]


def _rows(n: int) -> str:
    """``1 row``, ``2 rows``."""
    return f"{n:,} row{'' if n == 1 else 's'}"


def _files_count_para(
    files: list[dict[str, Any]], field: str, noun: str, verbs: tuple[str, str], text: str, style: str
) -> list[Para]:
    """A paragraph of the method on lines the manifest counts per file (``files[].<field>``): none when there are
    none."""
    count = sum(int(entry.get(field) or 0) for entry in files)
    return [Para([*_count(count, noun), f" {_verb(count, *verbs)} {text}"], style)] if count else []


def _verb(value: Any, one: str, many: str) -> str:
    """The verb that agrees with a count: ``1 row rests``, ``2 rows rest``."""
    return one if value == 1 else many


def _sentence(text: Any) -> str:
    """A summary description as a sentence of the report: capitalised, closed with a full stop, the ``auto:``
    tag (the method, said already) left out; empty for no text."""
    text = str(text or "").strip()
    if text.startswith("auto:"):
        text = text[len("auto:") :].strip()
    if not text:
        return ""
    return " " + text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _headline(s: dict[str, Any], facts: _Facts) -> list[Any]:
    affected = s.get("affected_owners", 0) or 0
    active = s.get("active_users")
    share = s.get("share_of_active_users_affected")
    window = s.get("window") or {}
    period = "that window" if window.get("start") or window.get("end") else "that period"
    when = _window_phrase(s)
    blocks: list[Any] = [Heading(2, "Headline")]
    if not affected:
        blocks.append(
            Para(
                [
                    Bold("No user's data was served to anyone else"),
                    f" {when}: ",
                    *_count(s.get("exposures", 0), "exposure", ("exposures",)),
                    "; ",
                    *_count(active, "user", ("active_users",)),
                    f" active in {period}.",
                ],
                "headline",
            )
        )
        return blocks + _outside_warning(s, "exposure")  # "no one" is only true of the window
    parts: list[Any] = [
        Bold(_count(affected, "user", ("affected_owners",))),
        " had their data served to someone else ",
        when,
        " (a window found from the data, around the crossed replies: not necessarily the incident's start and end)"
        if window.get("method") == "auto" else "",
        ". ",
    ]
    affected_active = s.get("affected_active_users")
    if share is None:
        parts += ["The share of active users is not known (no active users were counted)."]
    elif affected_active is None:
        parts += [
            Bold([Num(share, "share", ("share_of_active_users_affected",))]),
            " of the ",
            *_count(active, "user", ("active_users",)),
            f" active in {period} {_verb(active, 'was', 'were')} affected.",
        ]
    else:
        parts += [
            "Of the ",
            *_count(active, "user", ("active_users",)),
            f" active in {period}, ",
            Bold(
                [
                    Num(affected_active, key=("affected_active_users",)),
                    " (",
                    Num(share, "share", ("share_of_active_users_affected",)),
                    ")",
                ]
            ),
            f" {_verb(affected_active, 'was', 'were')} affected.",
        ]
        if affected_active != affected:
            others = affected - affected_active
            parts += (
                [f" The other affected user did not use the service in {period} themselves."]
                if others == 1
                else [" The other ", Num(others), f" affected users did not use the service in {period} themselves."]
            )
    blocks.append(Para(parts, "headline"))
    blocks += _outside_warning(s)
    by_cat = s.get("affected_owners_by_category") or {}
    active_by_cat = s.get("affected_active_users_by_category")
    items = []
    for category in _category_order(s, facts):
        item: list[Any] = [
            Bold(category),
            f" ({facts.severity_by_category.get(category) or 'severity n/a'}): ",
            *_count(by_cat.get(category, 0), "user", ("affected_owners_by_category", category)),
        ]
        if isinstance(active_by_cat, dict) and active and category in active_by_cat:
            item += [
                ", ",
                Num(active_by_cat[category], key=("affected_active_users_by_category", category)),
                f" of them active in {period} (",
                Num(active_by_cat[category] / active, "share"),
                " of active users)",
            ]
        items.append(item)
    if items:
        blocks.append(Para("Which kind of data, by category (a user can be in several):"))
        blocks.append(Bullets(items))
    seen: list[Any] = [
        "It was shown to ",
        *_count(s.get("viewers", 0), "signed-in user", ("viewers",)),
        " and ",
        *_count(s.get("anonymous_viewer_sessions", 0), "anonymous session", ("anonymous_viewer_sessions",)),
    ]
    if s.get("unknown_viewer_exposures"):
        seen += [
            ", and in ",
            *_count(s["unknown_viewer_exposures"], "exposure", ("unknown_viewer_exposures",)),
            " to a viewer the logs cannot name (request missing from the requests log)",
        ]
    seen += [
        "; ",
        *_count(s.get("exposures", 0), "exposure", ("exposures",)),
        " in all, from ",
        _fmt_time(facts.first_exposure),
        " to ",
        _fmt_time(facts.last_exposure),
        ".",
    ]
    blocks.append(Para(seen))
    return blocks


def _outside_warning(s: dict[str, Any], noun: str = "more exposure") -> list[Any]:
    """The headline's warning when exposures fall outside the window (none when there are none)."""
    outside = s.get("outside_window") or {}
    if not outside.get("exposures"):
        return []
    return [
        Para(
            [
                "Not included: ",
                *_count(outside["exposures"], noun, ("outside_window", "exposures")),
                " of ",
                *_count(outside.get("affected_owners", 0), "owner", ("outside_window", "affected_owners")),
                " outside the window (see the timeline and the method).",
            ],
            "warning",
        )
    ]


def _category_order(s: dict[str, Any], facts: _Facts) -> list[str]:
    by_cat = s.get("affected_owners_by_category") or {}
    names = set(by_cat) | set(s.get("exposures_by_category") or {})
    rank = {name: i for i, name in enumerate(SEVERITIES)}
    return sorted(
        names, key=lambda c: (-rank.get(facts.severity_by_category.get(c, ""), -1), -int(by_cat.get(c, 0)), c)
    )


_KEY_NUMBERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    # label, path in summary.json, kind
    ("users active in the window (signed-in users who made a request in it)", ("active_users",), "int"),
    ("sessions active in the window (the signed-in sessions of those requests)", ("active_sessions",), "int"),
    ("requests in the window", ("requests",), "int"),
    ("cache values served", ("served_items",), "int"),
    ("... of them with no host or conn_id logged (the connection tier cannot see them)",
     ("served_items_without_connection",), "int"),
    ("crossed replies (reads that received another call's reply)", ("crossed_replies",), "int"),
    ("exposures (a value served to someone other than its owner)", ("exposures",), "int"),
    ("affected users (owners whose data was exposed)", ("affected_owners",), "int"),
    ("affected users who were active in the window", ("affected_active_users",), "int"),
    ("share of active users affected (affected and active, of the active users)",
     ("share_of_active_users_affected",), "share"),
    ("signed-in viewers shown someone else's data", ("viewers",), "int"),
    ("anonymous sessions shown someone else's data", ("anonymous_viewer_sessions",), "int"),
    ("exposures to a viewer the logs cannot name", ("unknown_viewer_exposures",), "int"),
    ("exposure rows with ambiguous evidence (digest-ambiguous)", ("ambiguous_rows",), "int"),
    ("exposure rows with conflicting evidence", ("conflict_rows",), "int"),
    ("served reads whose request is not in the requests log", ("unknown_viewer_reads",), "int"),
    ("crossed replies served whose data no evidence names an owner for", ("crossed_served_unknown_owner",), "int"),
    ("exposures on the digest alone, against a connection showing the read's own reply",
     ("digest_exposures_on_clean_connections",), "int"),
    ("near misses (stale replies that reached no one as data, read or not)", ("near_misses", "total"), "int"),
    ("exposures outside the window (not in the lists)", ("outside_window", "exposures"), "int"),
)


def _numbers(s: dict[str, Any], facts: _Facts) -> list[Any]:
    window = s.get("window") or {}
    if window.get("start") or window.get("end"):
        when: list[Any] = [_fmt_time(window.get("start")), " to ", _fmt_time(window.get("end"))]
        when.append(f" ({window.get('method', 'n/a')})")
    else:
        when = [window.get("description") or "all time in the logs"]
    rows: list[list[Any]] = [["exposure window", when]]
    for label, path, kind in _KEY_NUMBERS:
        value = _s(s, *path)
        if value is not None or path in (("share_of_active_users_affected",),):
            rows.append([label, Num(value, kind, path if value is not None else None)])
    if facts.directory_configured:
        rows.append(["affected users missing from the users directory", Num(facts.missing_from_directory)])
        rows.append(["affected users in the directory without an email address", Num(facts.without_email)])
    return [Heading(2, "Key numbers"), Table(["", "count"], rows, numeric=(1,))]


def _by_category(s: dict[str, Any], facts: _Facts) -> list[Any]:
    categories = _category_order(s, facts)
    if not categories:
        return []
    active = s.get("active_users")
    ex = s.get("exposures_by_category") or {}
    owners = s.get("affected_owners_by_category") or {}
    near = _s(s, "near_misses", "by_category") or {}
    outside = _s(s, "outside_window", "by_category") or {}
    active_by_cat = s.get("affected_active_users_by_category")
    with_share = isinstance(active_by_cat, dict) and bool(active)
    rows = []
    for c in categories:
        row: list[Any] = [
            Code(c),
            facts.severity_by_category.get(c) or "n/a",
            Num(owners.get(c, 0), key=("affected_owners_by_category", c)),
        ]
        if with_share:
            row.append(Num(active_by_cat.get(c, 0) / active, "share"))
        row += [
            Num(ex.get(c, 0), key=("exposures_by_category", c)),
            Code(f"notify/{facts.notify_files[c]}") if c in facts.notify_files else "",
        ]
        rows.append(row)
    headers = ["category", "severity", "affected users"]
    headers += ["affected share of active users"] if with_share else []
    headers += ["exposures", "notification list"]
    blocks = [
        Heading(2, "By category"),
        Table(headers, rows, numeric=(2, 3, 4) if with_share else (2, 3)),
    ]
    extra = [c for c in sorted(set(near) | set(outside))]
    if extra:
        blocks.append(
            Para(
                "Not counted above, by category: near misses (stale replies that reached no one as data) "
                "and exposures outside the window."
            )
        )
        blocks.append(
            Table(
                ["category", "near misses", "exposures outside the window"],
                [
                    [
                        Code(c),
                        Num(near.get(c, 0), key=("near_misses", "by_category", c)) if c in near else "0",
                        Num(outside.get(c, 0), key=("outside_window", "by_category", c))
                        if c in outside
                        else "0",
                    ]
                    for c in extra
                ],
                numeric=(1, 2),
            )
        )
    return blocks


def _charts_section(s: dict[str, Any]) -> list[Any]:
    window = s.get("window") or {}
    if window.get("start") or window.get("end"):  # the chart shades the window only when it has a bound
        shading = (
            f"Shaded: the exposure window ({window.get('method', 'n/a')}). Exposures outside the shaded window are "
            "not in the lists."
        )
        alt = "Crossed replies and exposures over time, with the exposure window shaded"
    else:
        shading = "Nothing is shaded: there is no window, and every exposure in the logs is in the lists."
        alt = "Crossed replies and exposures over time"
    return [
        Heading(2, "Charts"),
        Figure(
            "timeline",
            alt,
            "Top: crossed replies (a read that received another call's reply) per time bucket, with the "
            "baseline (the quiet level) and the level above which a bucket counts as elevated, for reference: "
            "the auto window is chosen by a scan statistic over all buckets, not by that level. Bottom: "
            f"exposures and near misses. {shading}",
        ),
        Figure(
            "categories_evidence",
            "Exposures by category and by evidence",
            "Left: exposures (rows) by category of the data served, coloured by severity. Right: exposures "
            "by the evidence that names the owner, strongest first; digest-ambiguous and conflict rows need "
            "review.",
        ),
        Figure(
            "countries",
            "Affected users by country",
            "Affected users by the country in the users directory (grey: not in the directory, no country "
            "given, or the smaller countries grouped).",
        ),
        Figure(
            "pairs",
            "Viewer to owner pairs",
            "Left: how many viewers saw how many different owners' data. Right: how many owners had their "
            "data seen by how many different viewers. Anonymous viewers count once per session.",
        ),
    ]


def _countries_section(facts: _Facts) -> list[Any]:
    blocks: list[Any] = [Heading(2, "Affected users by country")]
    if not facts.directory_configured:
        blocks.append(
            Para(
                "No users directory was configured (tables.users), so countries, emails and names are "
                "unknown; affected_users.csv lists owner ids only.",
                "note",
            )
        )
    if not facts.countries:
        blocks.append(Para("No affected users."))
        return blocks
    by_country_category = facts.country_by_category
    categories = sorted({category for _, category in by_country_category})
    rows = []
    for country, users, high_severity_users in facts.countries:
        cells: list[Any] = [country, Num(users), Num(high_severity_users)]
        cells += [Num(by_country_category.get((country, c), 0)) for c in categories]
        rows.append(cells)
    blocks.append(
        Para(
            "The jurisdictions to consider for notification: affected users by the country the users "
            "directory gives (a user exposed in several categories counts once per category column)."
        )
    )
    blocks.append(
        Table(
            ["country", "affected users", "high or critical severity", *categories],
            rows,
            numeric=tuple(range(1, 3 + len(categories))),
        )
    )
    if facts.missing_from_directory:
        blocks.append(
            Para(
                [
                    "Affected users not in the users directory: ",
                    Num(facts.missing_from_directory),
                    ". Their email, name and country are empty in the CSVs (in_directory = false); they need "
                    "another way to be reached.",
                ],
                "warning",
            )
        )
    if facts.without_email:
        blocks.append(
            Para(
                [
                    "Affected users in the users directory without an email address: ",
                    Num(facts.without_email),
                    ". Their email is empty in the CSVs (in_directory = true); they need another way to be reached.",
                ],
                "warning",
            )
        )
    if facts.directory_duplicates:
        affected = facts.affected_duplicates
        blocks.append(
            Para(
                [
                    *_count(facts.directory_duplicates, "user id"),
                    f" {_verb(facts.directory_duplicates, 'appears', 'appear')} more than once in the users "
                    "directory; the first row of each was used.",
                    *(
                        [" ", *_count(affected, "affected user"), f" {_verb(affected, 'is', 'are')} among them "
                         "(directory_rows above 1 in the CSVs): check which of their rows to write to."]
                        if affected else []
                    ),
                ],
                "warning" if affected else "note",
            )
        )
    return blocks


_NOT_RECORDED = "not recorded (an analysis by an earlier whosaw)"
_TABLE_PURPOSE = {
    "ownership": "the owner of each resource (key families that name a resource)",
    "grants": "who may see whose data (shared links, team spaces, support access): not exposures",
    "users": "contact details for the lists",
}


def _config_and_tables(inputs: _Inputs, facts: _Facts) -> tuple[str | None, list[tuple[Any, ...]]]:
    """The analysis' config, and (table, file, what it gives, rows, SHA-256) for the side tables: ownership and
    grants as the analysis applied them (summary.json ``tables``), the users directory as this report read it."""
    config = (inputs.manifest.get("analysis") or {}).get("config")
    recorded = inputs.summary.get("tables")
    tables: list[tuple[Any, ...]] = []
    for name in ("ownership", "grants"):
        if recorded is None:  # an analysis by an earlier whosaw: which tables it applied is not known here
            tables.append((f"tables.{name}", _NOT_RECORDED, _TABLE_PURPOSE[name], None, None))
            continue
        table = recorded.get(name) or {}
        rows = Num(table["rows"], key=("tables", name, "rows")) if table.get("path") else None
        tables.append((f"tables.{name}", table.get("path"), _TABLE_PURPOSE[name], rows, table.get("sha256")))
    users = str(inputs.users_path) if inputs.users_path else None
    tables.append(
        ("tables.users", users, _TABLE_PURPOSE["users"],
         Num(facts.directory_file_rows) if users else None, facts.directory_sha256)
    )
    return config, tables


def _granted_para(s: dict[str, Any]) -> list[Any]:
    """What the grants took off the lists (summary.json ``granted_views``)."""
    granted = s.get("granted_views")
    if granted is None or not ((s.get("tables") or {}).get("grants") or {}).get("path"):
        return []
    n = granted["items"]
    if not n:
        return [Para("No item of another user's data served in the window was covered by a grant.")]
    by_category = ", ".join(f"{category} {count:,}" for category, count in granted["by_category"].items())
    return [
        Para(
            [
                *_count(n, "item", ("granted_views", "items")),
                " of another user's data served in the window (",
                *_count(granted["owners"], "owner", ("granted_views", "owners")),
                f"; {by_category}) {_verb(n, 'was', 'were')} covered by a grant, so {_verb(n, 'it is', 'they are')} "
                f"not exposures; ",
                Num(granted["crossed_replies"], key=("granted_views", "crossed_replies")),
                f" of them {_verb(granted['crossed_replies'], 'was a crossed reply', 'were crossed replies')}. "
                "A grant wider than meant takes people off the lists: check the grants table's rows.",
            ]
        )
    ]


def _method(inputs: _Inputs, facts: _Facts) -> list[Any]:
    s, manifest = inputs.summary, inputs.manifest
    blocks: list[Any] = [Heading(2, "Method")]

    # Sources
    blocks.append(Heading(3, "Sources read"))
    files = manifest.get("files") or []
    if files:
        rows, totals = [], {k: 0 for k in ("bytes", "lines", "kept", "duplicates", "rejected")}
        for entry in files:
            rows.append(
                [
                    Code(str(entry.get("path", ""))),
                    entry.get("kind", ""),
                    Code(str(entry.get("sha256", ""))),
                    *(Num(entry.get(k)) for k in totals),
                ]
            )
            for k in totals:
                totals[k] += int(entry.get(k) or 0)
        rows.append([Bold(f"{len(files)} files"), "", "", *(Bold(Num(v)) for v in totals.values())])
        blocks.append(
            Para(
                "Every input file, its SHA-256 and what became of its lines (lines = kept + duplicates + "
                "rejected). Duplicates are lines already accounted for (re-shipped lines with the same id, "
                "and the earlier lines of a file read again after it grew), counted once; rejected lines "
                "could not be read and are listed, with the reason, in rejects/."
            )
        )
        blocks.append(
            Table(
                ["file", "kind", "SHA-256", "bytes", "lines", "kept", "duplicates", "rejected"],
                rows,
                numeric=(3, 4, 5, 6, 7),
            )
        )
        lacking = [entry for entry in files if entry.get("empty_fields")]
        if lacking:
            named = "; ".join(
                f"{Path(str(entry.get('path', ''))).name} ({', '.join(entry['empty_fields'])})" for entry in lacking
            )
            blocks.append(
                Para(
                    [
                        *_count(len(lacking), "input file"),
                        f" {_verb(len(lacking), 'has', 'have')} a field empty in every line: {named}. A request "
                        "without user_id is anonymous unless the sessions log names its user, and cache calls "
                        "without host and conn_id are invisible to the connection tier. If the logs do hold that "
                        "field under another name, map it in the config and run again.",
                    ],
                    "warning",
                )
            )
        blocks += _files_count_para(
            files, "differing_duplicates", "request line", ("repeats", "repeat"),
            "a request id with another session or user (manifest.json, files[].differing_duplicates). Such a line "
            "is no re-shipped copy but most likely a request id used twice; the first line was kept, so the cache "
            "reads of the other request were judged with the kept line's viewer. Check the request logs before "
            "relying on those rows.",
            "warning",
        )
        blocks += _files_count_para(
            files, "coarse_repeats", "cache line", ("repeats", "repeat"),
            "an earlier line of the same file exactly, in a log timed to the millisecond (manifest.json, "
            "files[].coarse_repeats). They were dropped as re-shipped copies, but at that precision a request that "
            "reads one key twice on one connection logs two identical lines; if that is what they are, the "
            "connection evidence on those connections counts one reply too few, and the reads after them may be "
            "given another call's owner. Check those connections (explore.connection_timeline) before relying on "
            "their connection rows.",
            "warning",
        )
        blocks += _files_count_para(
            files, "superseded_rejects", "line", ("was", "were"),
            "rejected by an earlier reading of a file that grew since, its last line then, cut short, and read whole "
            "by a later reading (manifest.json, files[].superseded_rejects): the later reading's verdict stands, and "
            "rejects/ no longer lists the earlier one. The rejected column counts each reading's own verdicts.",
            "note",
        )
        blocks += _files_count_para(
            files, "placed_in_repeated_hour", "log line", ("gives", "give"),
            "a wall time without an offset in the hour its source's time zone repeats when the clocks go back "
            "(manifest.json, files[].placed_in_repeated_hour). Each was placed at the first or the second of its two "
            "instants by the order of its file's lines, where the clock steps back; lines that order could not "
            "place are rejected as ambiguous_local_ts. Logs that write an offset with every time leave nothing to "
            "infer.",
            "note",
        )
    else:
        blocks.append(Para("The manifest lists no input files.", "warning"))
    if facts.rejects:
        blocks.append(
            Para(
                "Rejected lines by reason (the lines themselves, with file and line number, are in rejects/; "
                "they may hold personal data):"
            )
        )
        blocks.append(
            Table(
                ["log", "reason", "what it means", "lines"],
                [
                    [kind, Code(str(reason)), str(detail or ""), Num(lines)]
                    for kind, reason, detail, lines in facts.rejects
                ],
                numeric=(3,),
            )
        )
    config_path, tables = _config_and_tables(inputs, facts)
    skipped = manifest.get("skipped") or []
    if skipped:
        # not logs, but perhaps the config or one of its tables: those were read, by the analysis or this report
        read_as = {str(Path(path).resolve()): role for role, path, *_ in tables if path and path != _NOT_RECORDED}
        if config_path:
            read_as[str(Path(config_path).resolve())] = "the config"
        items = []
        for entry in skipped[:_MAX_LISTED]:
            if isinstance(entry, dict):
                path = str(entry.get("path", ""))
                role = read_as.get(str(Path(path).resolve())) if path else None
                reason = f"not a log: {role}, read below" if role else entry.get("reason", "skipped")
                items.append([Code(path), f": {reason}"])
            else:
                items.append(Code(str(entry)))
        if len(skipped) > _MAX_LISTED:
            items.append(f"and {len(skipped) - _MAX_LISTED:,} more (manifest.json, skipped)")
        blocks.append(Para("Files found but not read as logs:"))
        blocks.append(Bullets(items))
    blocks.append(
        Para(
            [
                "Config: ",
                Code(config_path) if config_path else "none (defaults)",
                ". " if inputs.users_path else f". No users directory: {inputs.users_note}. ",
                "The tables the figures and lists rest on, as they were read (their SHA-256 shows a later edit):",
            ]
        )
    )
    blocks.append(
        Table(
            ["table", "what it gives", "file", "rows", "SHA-256"],
            [
                [role, purpose, path if path == _NOT_RECORDED else Code(path) if path else "none",
                 "" if rows is None else rows, Code(sha) if sha else ""]
                for role, path, purpose, rows, sha in tables
            ],
            numeric=(3,),
        )
    )
    blocks += _granted_para(inputs.summary)

    # Window
    window = s.get("window") or {}
    blocks.append(Heading(3, "The window"))
    method_text = {
        "cli": "given on the command line (--window)",
        "config": "given in the incident config ([window])",
        "auto": "found from the data",
        "all": "not limited: all time in the logs",
    }.get(window.get("method"), str(window.get("method")))
    # How an automatic window was found (or why none was); for the other methods the description says no more
    # than method_text does ("from the config's [window]"), so it is not repeated.
    description = _sentence(window.get("description")) if window.get("method") == "auto" else ""
    if window.get("start") or window.get("end"):
        bounds = Bold([_fmt_time(window.get("start")), " to ", _fmt_time(window.get("end"))])
        blocks.append(
            Para(["Exposure window: ", bounds, f" (start included, end excluded), {method_text}.", description])
        )
    else:
        if window.get("method") == "auto":  # looked for, and not found: the data gave no window
            method_text, advice = "none was found in the data", "--window START/END"
        else:
            advice = "--window START/END or --window auto"
        blocks.append(
            Para(
                [
                    f"Exposure window: {method_text}.",
                    description,
                    f" Every exposure in the logs counts; to limit them to the incident, rerun with {advice}.",
                ]
            )
        )
    auto = s.get("auto_window")
    if isinstance(auto, dict) and auto:
        labels = {
            "bucket_seconds": "bucket (seconds)",
            "baseline": "baseline crossed replies per bucket",
            "threshold": "a bucket is elevated above",
            "buckets": "buckets in the logs",
            "elevated_buckets": "elevated buckets",
            "run_buckets": "buckets in the chosen stretch",
            "crossed_replies_in_run": "crossed replies in the chosen stretch",
            "log_likelihood_ratio": "log-likelihood ratio of the chosen stretch",
            "log_likelihood_ratio_needed": "log-likelihood ratio needed for a window",
            "crossed_replies_outside_run": "crossed replies outside the chosen stretch",
            "crossed_per_1000_calls_in_run": "crossed replies per 1,000 cache calls, in the stretch",
            "crossed_per_1000_calls_outside_run": "crossed replies per 1,000 cache calls, elsewhere",
        }
        rows = [
            [labels.get(k, k.replace("_", " ")), f"{v:,}" if isinstance(v, int) else str(v)]
            for k, v in auto.items()
            if not isinstance(v, dict | list)
        ]
        blocks.append(
            Para(
                "The automatic window, as the analysis found it (the method is described above): the stretch "
                "of buckets whose crossed replies least fit one steady rate. The timeline chart shows the same "
                "counts; baseline and elevated buckets are there for reference. Check the window against the "
                "chart and, if it is wrong, rerun with --window START/END."
            )
        )
        blocks.append(Table(["", "value"], rows, numeric=(1,)))

    # Evidence tiers
    blocks.append(Heading(3, "Evidence: how the owner of each served value is known"))
    by_ev = s.get("exposures_by_evidence") or {}
    tiers = list(EVIDENCE_ORDER) + sorted(set(by_ev) - set(EVIDENCE_ORDER))
    blocks.append(
        Table(
            ["evidence", "what it means", "exposures"],
            [
                [
                    Code(t),
                    EVIDENCE_TEXT.get(t, "other"),
                    Num(by_ev.get(t, 0), key=("exposures_by_evidence", t)) if t in by_ev else Num(0),
                ]
                for t in tiers
            ],
            numeric=(2,),
        )
    )
    blocks.append(
        Para(
            [
                "A cache read that returned a value is a served item; its viewer is whoever held the "
                "request's session at that moment (sessions log, else the request's user). It is an exposure "
                "when the owner is someone else, no grant covers it, and it falls in the window. The "
                "category is that of the value actually served, not of the key asked for. ",
                *_count(s.get("ambiguous_rows", 0), "row", ("ambiguous_rows",)),
                f" {_verb(s.get('ambiguous_rows', 0), 'rests', 'rest')} on ambiguous evidence and ",
                Num(s.get("conflict_rows", 0), key=("conflict_rows",)),
                " on conflicting evidence; they are kept and labelled for review (evidence column, flagged_rows in "
                "affected_users.csv): the owner on such a row is the next or the strongest tier's, as the table "
                "says, never the digest's guess between several owners.",
            ]
        )
    )
    unknown_grants = s.get("grants_of_unknown_category") or {}
    if unknown_grants:
        n = sum(unknown_grants.values())
        blocks.append(
            Para(
                [
                    *_count(n, "grant"),
                    f" of the grants table {_verb(n, 'names', 'name')} a category no key rule gives (",
                    ", ".join(unknown_grants),
                    f"): {_verb(n, 'it excuses', 'they excuse')} no exposure, since categories match exactly "
                    "(summary.json, grants_of_unknown_category). If a grant was meant for a category of the key "
                    "rules, correct the table and run the analysis again.",
                ],
                "warning",
            )
        )
    unknown = s.get("unknown_viewer_reads", 0)
    if unknown:
        blocks.append(
            Para(
                [
                    *_count(unknown, "served read", ("unknown_viewer_reads",)),
                    " came from requests missing from the requests log, so their viewer is "
                    "unknown; they are counted, not dropped, and appear in viewers.csv as viewer_kind "
                    "'unknown' when they are exposures.",
                ],
                "note",
            )
        )
    differs = s.get("request_user_differs") or {}
    if differs.get("exposures"):
        n = differs["exposures"]
        blocks.append(
            Para(
                [
                    *_count(n, "exposure", ("request_user_differs", "exposures")),
                    f" {_verb(n, 'was', 'were')} served in requests whose user_id is not the viewer the sessions "
                    "log gives (",
                    Num(differs.get("request_user_is_owner", 0), key=("request_user_differs", "request_user_is_owner")),
                    " of them in a request of the owner, who by the requests log read their own data). The viewer "
                    "is the session's holder at the instant of the read (two users on one session id, a tab left "
                    "open after a logout): check those sessions before notifying on these rows.",
                ],
                "warning",
            )
        )
    unowned = s.get("crossed_served_unknown_owner", 0)
    if unowned:
        blocks.append(
            Para(
                [
                    *_count(unowned, "crossed reply", ("crossed_served_unknown_owner",), "crossed replies"),
                    f" {_verb(unowned, 'was', 'were')} served to a viewer with data whose owner no evidence names "
                    "(summary.json, crossed_served_unknown_owner): the key the data was stored under matches no key "
                    "rule, or names a resource the ownership table lacks. These are neither exposures nor near "
                    "misses, and their owners are on no list: add the missing key rule or ownership rows and run "
                    "the analysis again.",
                ],
                "warning",
            )
        )
    alone = s.get("digest_exposures_on_clean_connections", 0)
    if alone:
        blocks.append(
            Para(
                [
                    *_count(alone, "exposure", ("digest_exposures_on_clean_connections",)),
                    f" {_verb(alone, 'rests', 'rest')} on the digest alone (the bytes served equal bytes written "
                    "under the owner's key), while the logged connection shows the read received its own reply: "
                    "either the log lacks the cancel that crossed the reply, or the value is one many users share "
                    "(an empty list) and the owner is named by coincidence. Review these before notifying.",
                ],
                "warning",
            )
        )
    flagged_out = s.get("flagged_not_exposed") or {}
    if any(flagged_out.values()):
        items = [
            [Code(label), ": ", Num(n, key=("flagged_not_exposed", label))]
            for label, n in sorted(flagged_out.items())
            if n
        ]
        blocks.append(
            Para(
                "Served reads with ambiguous or conflicting evidence that were not counted as exposures (the "
                "owner the evidence settled on is the viewer, or a grant covers it). A different reading of "
                "the evidence could make some of them exposures; review them in the lake:",
                "note",
            )
        )
        blocks.append(Bullets(items))

    # Near misses and outside
    near = s.get("near_misses") or {}
    blocks.append(Heading(3, "Near misses and exposures outside the window"))
    near_items = [
        [Code(kind), ": ", Num(n, key=("near_misses", "by_kind", kind)), " — ", NEAR_MISS_TEXT.get(kind, "")]
        for kind, n in sorted((near.get("by_kind") or {}).items())
    ]
    # near_misses.parquet holds them all: a count of the window's alone would not match its rows
    near_total, near_outside = near.get("total", 0) or 0, near.get("outside_window", 0) or 0
    text = _count(near_total, "near miss", ("near_misses", "total"), "near misses")
    if near_outside:
        text += [" in the window (", Num(near_outside, key=("near_misses", "outside_window")), " more outside it)"]
    text.append(
        ": stale replies (left on a connection by an abandoned call) that, as far as the logs show, reached no one "
        "as data: read by a call that failed, by background work or as something other than data, or thrown away "
        "unread (so they can be more than the crossed replies, which are reads). "
    )
    if near_outside:
        text += ["They are not exposures; near_misses.parquet holds all ", Num(near_total + near_outside),
                 " (column in_window)."]
    else:
        text.append("They are not exposures and are in near_misses.parquet.")
    blocks.append(Para(text))
    if near_items:
        blocks.append(Bullets(near_items))
    outside = s.get("outside_window") or {}
    outside_n = outside.get("exposures", 0) or 0
    blocks.append(
        Para(
            [
                *_count(outside_n, "exposure", ("outside_window", "exposures")),
                " of ",
                *_count(outside.get("affected_owners", 0), "owner", ("outside_window", "affected_owners")),
                f" {_verb(outside_n, 'falls', 'fall')} outside the window and {_verb(outside_n, 'is', 'are')} not "
                "in the lists (exposures_outside_window.parquet; by "
                "category in the table above). ",
                "Check on the timeline chart whether the window is too narrow." if outside_n else "",
            ],
            "warning" if outside_n else "",
        )
    )

    # Privacy and limits
    blocks.append(Heading(3, "Privacy of these outputs"))
    session_note = (
        "exposures.csv and exposures.parquet still carry the raw session ids; handle them as secrets."
        if facts.has_raw_sessions
        else ""
    )
    blocks.append(
        Bullets(
            [
                "No exposed content is read or written anywhere: whosaw sees only keys, hashes and owner "
                "ids.",
                "This report holds no emails, names or ids; the lists of people are affected_users.csv, "
                "viewers.csv and notify/*.csv (restricted).",
                "An anonymous viewer is identified in viewers.csv by the first 16 hex digits of the SHA-256 "
                "of its session id (sha256:...), never by the session id itself, which may still be a live "
                "credential. " + session_note,
            ]
        )
    )
    blocks.append(Heading(3, "What the logs cannot show"))
    total_rejected = sum(still_rejected(entry) for entry in manifest.get("files") or [])  # as rejects/ lists them
    blocks.append(
        Bullets(
            [
                "What exactly was on the screen: values are not logged, so the category comes from the key "
                "family (config [[keys]]), and whether the page displayed the value, or anyone looked at it, "
                "is unknown.",
                "Calls that were never logged (uninstrumented clients, lost log shipping), and the input "
                f"lines that were rejected ({total_rejected:,}): exposures in them are missing from these "
                "counts.",
                "Connection evidence is an inference from call order on a pooled connection; a lost or "
                "reordered cache log line on that connection shifts it. Key evidence alone cannot see a "
                "crossed reply at all.",
                "Who sat behind an anonymous session, or behind a signed-in session shared on one device.",
                "Where the data went next: browser caches, screenshots, forwarded pages, downstream systems.",
                "Exposures outside the window, and before or after the logs begin or end."
                + (
                    " The window was found from the data: it runs from the first to the last crossed reply of the "
                    "stretch (or two stretches joined) whose rate of crossed replies stands out from the rest of the "
                    "log (a scan statistic), and the fault may have begun earlier or ended later without a logged "
                    "reply crossing then: it is not the incident's start and end."
                    if (s.get("window") or {}).get("method") == "auto" else ""
                ),
                "Times are the servers' log times (converted to UTC); clock skew between hosts is not "
                "corrected.",
            ]
        )
    )
    return blocks


_LISTS = "affected_users, notify"
_COLUMNS: tuple[tuple[str, str, str], ...] = (  # the columns of the lists, for whoever receives them with this report
    ("owner_id", f"{_LISTS}, changes", "the user whose data was served to someone else (the data's owner)"),
    ("email, name, country, locale", f"{_LISTS}, changes",
     "as the users directory (tables.users) gives them; country is the directory's, not a checked place of residence"),
    ("in_directory", f"{_LISTS}, changes", "whether the users directory has the user (empty: no directory)"),
    ("directory_rows", f"{_LISTS}, changes", "the directory's rows for the user; more than 1: the first was used"),
    ("categories, category", f"{_LISTS}, viewers, changes",
     "the kind of data served (categories: every kind, joined with ';')"),
    ("exposure_count", f"{_LISTS}, viewers",
     "exposures: values served to someone else, one per value (one page view can serve several)"),
    ("viewer_count", _LISTS, "the different viewers who were served the owner's data (an anonymous session: one)"),
    ("first_exposed, last_exposed", f"{_LISTS}, changes", "the first and the last exposure of the owner's data (UTC)"),
    ("max_severity, severity", f"{_LISTS}, viewers",
     "the highest severity among those exposures: the incident config's rating per kind of data (low < medium < "
     "high < critical; unknown: no key rule rates the data), not a legal classification"),
    ("strongest_evidence", _LISTS,
     "how the owner is known, for the best-evidenced of those exposures (Method, Evidence)"),
    ("flagged_rows", "affected_users, viewers",
     "exposures labelled digest-ambiguous or conflict: review them before relying on the row"),
    ("evidence_counts", "affected_users", "exposures per kind of evidence (value_owner=2;digest=1)"),
    ("viewer_id, viewer_kind, session", "viewers",
     "who was served someone else's data: a signed-in user (user), an anonymous session named by the SHA-256 of "
     "its id (anonymous), or a request missing from the requests log (unknown)"),
    ("owners_seen, first_seen, last_seen", "viewers", "the different owners whose data the viewer was served; when"),
    ("change, reason", "changes",
     "added to or removed from a list since the previous report; why a row went: outside_window (still exposed, "
     "outside this window) or not_found (no exposure of the owner's data in that category any more)"),
)


def _files_section(facts: _Facts) -> list[Any]:
    rows = [
        [
            Code("affected_users.csv"),
            "one row per affected owner: contact details from the users directory, categories, exposure and "
            "viewer counts, first and last exposure, strongest evidence, flagged rows",
            Num(facts.affected_rows),
        ],
        [
            Code("viewers.csv"),
            "one row per viewer shown someone else's data; anonymous viewers one row per session (hashed)",
            Num(facts.viewer_rows),
        ],
        [
            Code("exposures.csv"),
            "the evidence: one row per exposure, with its source file and line",
            Num(facts.exposure_rows),
        ],
    ]
    if facts.changes is not None and not facts.changes.unreadable:
        rows.append(
            [
                Code("changes.csv"),
                f"the rows added to or removed from the notification lists since the report in "
                f"{facts.changes.folder}/",
                Num(facts.changes.added + facts.changes.removed),
            ]
        )
    for category, name in sorted(facts.notify_files.items()):
        rows.append(
            [
                Code(f"notify/{name}"),
                f"notification list: everyone whose {category} was exposed",
                Num(facts.owners_by_category.get(category, 0)),
            ]
        )
    return [
        Heading(2, "Files"),
        Table(["file", "content", "rows"], rows, numeric=(2,)),
        Para(
            "The CSV files are UTF-8 with ISO-8601 UTC times, and safe to open in a spreadsheet: a text cell "
            "that starts with =, +, -, @, a tab, a carriage return or a single quote is written with one "
            "extra single quote in front. To get the original value back, drop the first character of every "
            "cell that starts with a single quote (pipeline.safecsv.read_safe_csv does this). Lists "
            "(categories) are joined with ';'.",
            "note",
        ),
        Heading(3, "What the columns mean"),
        Table(["column", "in", "meaning"], [[Code(column), where, meaning] for column, where, meaning in _COLUMNS]),
        Heading(3, "Checks"),
        Bullets([("passed: " if ok else "FAILED: ") + text for text, ok in facts.checks]),
    ]


def _user_column(name: str, trim: bool) -> str:
    """A users-directory column as text, empty as NULL; only the id is trimmed (``trim``), of spaces, tabs and
    line ends (names, emails stay exact)."""
    text = f"CAST({_ident(name)} AS VARCHAR)"
    blank = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"
    return id_text(f"nullif(trim({text}, {blank}), '')") if trim else f"nullif({text}, '')"
