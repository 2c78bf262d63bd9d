"""The ``whosaw`` command line: a thin skin over the Python API of the same verbs.

Every command exits 0 on success and 2 on bad usage or unreadable input, with a one-line reason on stderr
and no traceback. Nothing personal is ever printed: counts, times and paths only.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import signal
import stat
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import WhosawError
from .manifest import damaged_inputs, kept_report, load_manifest, not_whole_json, rejected_inputs
from .schema import ENGINES, EVIDENCE_ORDER, KINDS

EXIT_USAGE = 2


def _api() -> Any:
    """The API module, imported only when a command runs: --help and usage errors need no DuckDB or pandas."""
    from . import api

    return api


class _Group(click.Group):
    """Click's usage errors, as one line on stderr and exit status 2 (click's own form takes three)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: ANN001
        try:
            status = super().main(args, prog_name or "whosaw", complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "whosaw"
            _fail(f"{exc.format_message()} (see '{where} --help')")
        except click.Abort:
            _fail("aborted", 1)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        if standalone_mode:
            sys.exit(status if isinstance(status, int) else 0)
        return status


def _fail(message: str, status: int = EXIT_USAGE) -> None:
    click.echo(f"whosaw: error: {message}", err=True)
    sys.exit(status)


class _Interrupts:
    """Whether Ctrl-C was pressed during the command. DuckDB turns the KeyboardInterrupt that arrives while a query
    runs into an error of its own ("Query interrupted", or a failed input stream): the flag tells it apart."""

    seen = False

    @classmethod
    def note(cls, signum: int, frame: Any) -> None:
        cls.seen = True
        signal.default_int_handler(signum, frame)


def handle_errors(func):
    """Turn expected failures into one line and exit 2; hide unexpected ones' details (they may hold data);
    Ctrl-C is "interrupted" and exit 130, whichever error it surfaced as."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _Interrupts.seen = False
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, _Interrupts.note) if in_main else None
        try:
            return func(*args, **kwargs)
        except WhosawError as exc:
            if _Interrupts.seen:
                _fail("interrupted", 130)
            _fail(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
        except BrokenPipeError:  # output piped into `head` and the like: nothing is wrong
            sys.stderr.close()
            sys.exit(0)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence for an incident tool
            if _Interrupts.seen:
                _fail("interrupted", 130)
            refused = _file_system_refusal(exc, kwargs.get("out"))
            if refused:
                _fail(refused)
            if os.environ.get("WHOSAW_DEBUG"):
                raise
            _fail(
                f"internal error ({exc.__class__.__name__}); rerun with WHOSAW_DEBUG=1 for details",
                status=1,
            )
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    return wrapper


def _file_system_refusal(exc: Exception, out: Path | None = None) -> str | None:
    """One line for an error the file system raised (read-only, full, not a folder), from Python or DuckDB: what
    it said and the path, never data. None for any other error. A full disk names no file (a write, not an open,
    failed): the folder written, ``out``, is named instead, with what to do (the stages finished are kept)."""
    duckdb = sys.modules.get("duckdb")
    if isinstance(exc, OSError):
        if exc.filename:
            return f"{exc.strerror or exc.__class__.__name__}: {exc.filename}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and out is not None:
            return f"{exc.strerror} writing under {out}: make room there, or give another --out, and run again"
        return str(exc)
    if duckdb is not None and isinstance(exc, duckdb.IOException):
        first = str(exc).splitlines()[0]
        detail = first.find('{"exception_type"')  # an asynchronous write's: the file system's message, in JSON
        if detail >= 0:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return f"IO Error: {json.loads(first[detail:])['exception_message']}"
        return first
    return None


def _out_folder(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    if value is not None and not value.strip():  # Path("") would be the current folder
        raise click.BadParameter("an empty path would write into the current folder; name a folder", ctx, param)
    return None if value is None else Path(value)


def _out_option(help_text: str) -> Any:
    return click.option(
        "--out", "out", required=True, type=click.Path(file_okay=False), callback=_out_folder, help=help_text
    )


out_option = _out_option("Folder for every output (created if missing).")
analyzed_out_option = _out_option("The output folder of an earlier ingest (it holds the lake).")
reported_out_option = _out_option("The output folder of an earlier analysis.")
config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False, path_type=Path),
    help="Incident config (TOML): field maps, key rules, tables, window. Default: the one recorded in --out, if any.",
)
window_option = click.option(
    "--window", "window", metavar="START/END|auto|all",
    help="Exposure window: an ISO-8601 interval (START/END, START/PT9H, PT9H/END), 'auto' (found from the data) or "
    "'all'. Wins over the config.",
)
kind_option = click.option(
    "--kind", "kind", type=click.Choice(KINDS),
    help="Read every INPUT as this log kind instead of going by file names.",
)
progress_option = click.option(
    "--progress/--no-progress", "progress", default=None,
    help="Show progress bars (default: only on a terminal).",
)
engine_option = click.option(
    "--engine", type=click.Choice(ENGINES), default="duckdb", show_default=True,
    help="Run the analysis on DuckDB, or the same SQL on Apache Spark (pip install 'whosaw[spark]', Java 17).",
)
spark_master_option = click.option(
    "--spark-master", "spark_master", metavar="URL",
    help="With --engine spark: the master to run on (spark://HOST:PORT, yarn, k8s://..., local[N]); default "
    "local[2]. --out must be at the same path on every executor (a shared file system).",
)
inputs_argument = click.argument(
    "inputs", nargs=-1, required=True, type=click.Path(path_type=Path),
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="whosaw")
def cli() -> None:
    """whosaw: who saw whose data, when, and what kind, from request and cache logs."""


@cli.command(short_help="Ingest logs, find the exposures and write the report: all three.")
@inputs_argument
@out_option
@config_option
@window_option
@kind_option
@engine_option
@spark_master_option
@progress_option
@handle_errors
def run(inputs, out, config, window, kind, engine, spark_master, progress) -> None:
    """Ingest INPUT logs, find the exposures and write the report (ingest + analyze + report)."""
    reader_gone = False

    def print_stage(stage: str, result: Any) -> None:  # as each stage ends: a later failure leaves them shown
        nonlocal reader_gone
        try:
            if reader_gone:
                return
            if stage == "ingest":
                _print_ingest(result)
            else:
                _print_summary(result)
        except BrokenPipeError:  # piped into `head`: the job goes on unprinted, then ends as any broken pipe
            reader_gone = True

    result = _api().run(
        inputs, out, config=config, window=window, kind=kind, progress=progress, engine=engine,
        spark_master=spark_master, on_stage=print_stage,
    )
    if reader_gone:
        raise BrokenPipeError
    _print_changes(result.out)
    _print_files(result.out, result.files)


@cli.command(short_help="Read request, cache and session logs into a Parquet lake.")
@inputs_argument
@out_option
@config_option
@kind_option
@progress_option
@handle_errors
def ingest(inputs, out, config, kind, progress) -> None:
    """Turn request, cache and session logs into a Parquet lake, with rejects and a manifest."""
    result = _api().ingest(inputs, out, config=config, kind=kind, progress=progress)
    _print_ingest(result)
    removed = result.manifest["ingest"]["removed_stale_outputs"]
    if removed:
        kept = kept_report(removed)
        click.echo(
            f"removed the analysis and report of the lake before this ingest ({len(removed)} files"
            + (f"; the report is kept in {kept}/" if kept else "")
            + f"): run 'whosaw analyze --out {out}' and 'whosaw report --out {out}' again"
        )
    _note_if_open(out, "the log lines in its lake and rejects")


@cli.command(short_help="Find who saw whose data in the lake of an ingested --out.")
@analyzed_out_option
@click.option(
    "--config", "config", type=click.Path(dir_okay=False, path_type=Path),
    help="Incident config (TOML): key rules, tables, window. Default: the one recorded in --out.",
)
@window_option
@engine_option
@spark_master_option
@progress_option
@handle_errors
def analyze(out, config, window, engine, spark_master, progress) -> None:
    """Find the exposures in the lake under --out: exposures.parquet/.csv and summary.json."""
    summary = _api().analyze(
        out, config=config, window=window, progress=progress, engine=engine, spark_master=spark_master
    )
    _print_summary(summary)
    removed = load_manifest(out)["analysis"]["removed_stale_report"]
    if removed:
        kept = kept_report(removed)
        click.echo(
            (f"moved the report of the previous analysis to {kept}/" if kept else
             f"removed the report of the previous analysis ({len(removed)} files)")
            + f": run 'whosaw report --out {out}' for one of this analysis"
            + (" (its changes.csv lists what changed)" if kept else "")
        )
    _note_if_open(out, "the exposures")


@cli.command(short_help="Write the report and the CSV lists of an analysed --out.")
@reported_out_option
@click.option(
    "--since", "since", metavar="FOLDER",
    help="List in changes.csv what changed since the report kept in FOLDER (in --out's history/: the lists that "
    "were sent). Default: the newest report kept there.",
)
@progress_option
@handle_errors
def report(out, since, progress) -> None:
    """Write the affected-user report and the CSV exports from an analysed --out folder."""
    files = _api().report(out, progress=progress, since=since)
    _print_changes(out)
    _print_files(out, files)


@cli.command(short_help="Write a synthetic incident with its ground truth.")
@out_option
@click.option("--users", type=click.IntRange(min=2), default=None, help="Number of users (default 1000).")
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Hours of traffic (default 12).")
@click.option("--requests-per-second", "requests_per_second", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Mean request rate per second (default 2).")
@click.option("--requests", "requests", type=click.IntRange(min=1), default=None,
              help="Total requests (instead of a rate).")
@click.option("--window", "window", metavar="START/END", default=None,
              help="The bug window (ISO-8601 interval); default: hours 1 to 10 of the traffic.")
@click.option("--start", "start", metavar="TIME", default=None,
              help="When the traffic starts (ISO-8601; default 2023-03-20T00:00:00Z).")
@click.option("--cancel-rate", "cancel_rate", type=click.FloatRange(0, 1), default=None,
              help="Share of cache calls abandoned (cancelled or timed out) after they were sent (default 0.02).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Random seed (default 0): the same seed gives byte-identical output.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "jsonl.gz", "csv"]), default=None,
              help="Log file format (default jsonl).")
@click.option("--messy", is_flag=True,
              help="Per-host files, some gzip; re-shipped duplicates, malformed lines, mixed time forms.")
@click.option("--cache-warm-before-logs", "cache_warm_before_logs", is_flag=True,
              help="The cache holds every value when the logs begin: no warm-up write is logged.")
@click.option("--empty-titles", "empty_titles", type=click.FloatRange(0, 1), default=None,
              help="Share of users whose titles list starts empty (a few title writes empty one too): every "
                   "empty list is the same bytes, one digest for many owners (default 0).")
@handle_errors
def simulate(out, **options) -> None:
    """Write a synthetic incident (logs, config, users, grants) with its ground truth."""
    # Left out: what was not given (None) and an unset --messy. Not `value not in (None, False)`: 0 == False, so
    # that dropped --cancel-rate 0 (a control incident with no abandoned call) for the default 0.02.
    chosen = {name: value for name, value in options.items() if value is not None and value is not False}
    truth = _api().simulate(out, **chosen)
    counts = truth.get("counts", {})
    click.echo(f"simulated incident written to {out}")
    for name in ("requests", "cache_lines", "session_events", "exposures", "affected_owners", "viewers",
                 "near_misses"):
        if name in counts:
            click.echo(f"  {name:<16} {counts[name]:>10,}")
    if "window" in truth:
        click.echo(f"  bug window       {truth['window']['start']} / {truth['window']['end']}")


def _print_ingest(result) -> None:
    totals = result.totals
    skipped, already = totals.get("skipped"), totals.get("already_ingested")
    click.echo(
        f"ingested {_counted(totals['files'], 'file')}: {totals['lines']:,} lines = {totals['kept']:,} kept"
        f" + {totals['duplicates']:,} duplicates + {totals['rejected']:,} rejected"
        + (f"; {_counted(skipped, 'other file')} passed over (see manifest.json)" if skipped else "")
        + (f"; {already} already ingested" if already else "")
    )
    if result.manifest["ingest"].get("sources_changed"):
        click.echo(
            "note: these files were read with another [sources] section (field maps, zones, globs, ts_format, "
            "values) than the files ingested before them (see manifest.json ingest_runs)"
        )
    if result.manifest["ingest"].get("already_read_otherwise"):
        count = result.manifest["ingest"]["already_read_otherwise"]
        click.echo(
            f"note: {_counted(count, 'already-ingested file')} {'was' if count == 1 else 'were'} read with another "
            "[sources] section and not read again: ingest into a new --out to read them with this one"
        )
    run_id = result.manifest["ingest"]["run"]

    def this_run(count: str) -> int:
        return sum(entry.get(count, 0) for entry in result.manifest.get("files", []) if entry.get("run") == run_id)

    differing = this_run("differing_duplicates")
    if differing:
        click.echo(
            f"note: {_counted(differing, 'request line')} repeat{'s' if differing == 1 else ''} a request_id with "
            "another session or user (a request id used twice? the first line was kept: see manifest.json "
            "files[].differing_duplicates)"
        )
    coarse = this_run("coarse_repeats")
    if coarse:
        click.echo(
            f"note: {_counted(coarse, 'cache line')} repeat{'s' if coarse == 1 else ''} an earlier line of the same "
            "file exactly, in a log timed to the millisecond: dropped as re-shipped copies, but a request reading a "
            "key twice would log the same; if one did, the connection evidence on that connection is off by one "
            "(manifest.json files[].coarse_repeats)"
        )
    repeated = this_run("placed_in_repeated_hour")
    if repeated:
        click.echo(
            f"note: the wall times of {_counted(repeated, 'line')} fell in the hour a source's zone repeats when its "
            "clocks go back: placed by their file's order of lines (see manifest.json "
            "files[].placed_in_repeated_hour; lines it cannot place are rejected as ambiguous_local_ts)"
        )
    superseded = this_run("superseded_rejects")
    if superseded:
        click.echo(
            f"note: {_counted(superseded, 'line')} an earlier reading rejected (a live log's last line, cut short "
            f"then) {'was' if superseded == 1 else 'were'} read whole now: rejects/ no longer lists "
            f"{'it' if superseded == 1 else 'them'} (manifest.json files[].superseded_rejects)"
        )
    lacking: Counter[tuple[str, str]] = Counter(
        (entry["kind"], ", ".join(entry["empty_fields"]))
        for entry in result.manifest.get("files", [])
        if entry.get("run") == run_id and entry.get("empty_fields")
    )
    for (kind, names), count in sorted(lacking.items()):
        click.echo(
            f"note: {_counted(count, f'{kind} file')} without {names} in any line (a field map that misses a "
            "column? see manifest.json files[].empty_fields)"
        )
    read_now = {entry["path"] for entry in result.manifest.get("files", []) if entry.get("run") == run_id}
    for entry in rejected_inputs(result.manifest):
        if entry["path"] in read_now:
            click.echo(f"warning: {_rejected_text(entry)}")
    for entry in damaged_inputs(result.manifest):
        again = (
            "fetch the whole file again and ingest it into this --out (the lines read count as duplicates)"
            if entry["damaged"] == "gzip_truncated" else "ingest a sound copy into a new --out"
        )
        click.echo(
            f"warning: {entry['path']} is damaged ({entry['damaged']}): read to line {entry.get('lines', 0):,}, the "
            f"rest of the file is lost and any exposure in it is missing; {again}"
        )




def _breakdown(counts: dict[str, int], order: tuple[str, ...] = ()) -> str:
    """``a 3, b 1`` in the given order (then by name); empty when there is nothing."""
    if not isinstance(counts, dict) or not counts:
        return ""
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(counts, key=lambda n: (rank.get(n, len(order)), n))
    return ", ".join(f"{name} {counts[name]:,}" for name in names)


def _print_summary(summary: dict[str, Any]) -> None:
    window = summary.get("window", {})
    span = f"{window.get('start') or '-'} / {window.get('end') or '-'}"
    method = window.get("method", "-")
    if not (window.get("start") or window.get("end")):
        if summary.get("data_span"):
            data = summary["data_span"]
            span = f"all time in the logs: {data.get('start') or '-'} / {data.get('end') or '-'}"
        if method == "auto":  # looked for and not found: not a window the data gave
            method = "auto found no window"
    rows = [
        ("window", f"{span} ({method})"),
        ("active users", f"{summary.get('active_users', 0):,}"),
    ]
    by_category = _breakdown(summary.get("exposures_by_category", {}))
    exposures = f"{summary.get('exposures', 0):,}"
    rows.append(("exposures", exposures + (f"  ({by_category})" if by_category else "")))
    by_evidence = _breakdown(summary.get("exposures_by_evidence", {}), EVIDENCE_ORDER)
    if by_evidence:
        rows.append(("  by evidence", by_evidence))
    affected = f"{summary.get('affected_owners', 0):,}"
    share = summary.get("share_of_active_users_affected")
    if share is not None:
        active_affected = summary.get("affected_active_users")
        if active_affected is not None:
            affected += (f"  ({active_affected:,} of them active in the window: {share:.2%} of the "
                         f"{summary.get('active_users', 0):,} active users)")
        else:
            affected += f"  ({share:.2%} of active users)"
    rows.append(("affected owners", affected))
    viewers = _counted(summary.get("viewers", 0), "signed-in user")
    if summary.get("anonymous_viewer_sessions"):
        viewers += " + " + _counted(summary["anonymous_viewer_sessions"], "anonymous session")
    if summary.get("unknown_viewer_exposures"):
        viewers += f" (+ {_counted(summary['unknown_viewer_exposures'], 'exposure')} to unknown viewers)"
    rows.append(("viewers", viewers))
    flagged = summary.get("ambiguous_rows", 0) + summary.get("conflict_rows", 0)
    if flagged:
        rows.append(("flagged rows", f"{flagged:,} (ambiguous or conflicting evidence)"))
    near = summary.get("near_misses", {})
    if isinstance(near, dict) and (near.get("total") or near.get("outside_window")):
        beyond = f"; {near['outside_window']:,} more outside the window" if near.get("outside_window") else ""
        rows.append(("near misses", f"{near.get('total', 0):,} (stale replies that reached no one as data{beyond})"))
    outside = summary.get("outside_window", {})
    if isinstance(outside, dict) and outside.get("exposures"):
        rows.append(("outside window", f"{_counted(outside['exposures'], 'exposure')} not counted above"))
    if summary.get("served_items_without_connection"):
        rows.append(("no connection", f"{summary['served_items_without_connection']:,} served items name no host or "
                     "conn_id: the connection tier cannot see crossed replies among them"))
    if summary.get("crossed_served_unknown_owner"):
        unowned = summary["crossed_served_unknown_owner"]
        rows.append(("unknown owner", f"{unowned:,} crossed {'reply' if unowned == 1 else 'replies'} served with "
                     "data no evidence names an owner for (a key no [[keys]] rule matches? a resource missing "
                     "from tables.ownership?)"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")
    differs = summary.get("request_user_differs") or {}
    if differs.get("exposures"):
        n, own = differs["exposures"], differs.get("request_user_is_owner", 0)
        click.echo(
            f"note: {_counted(n, 'exposure')} came in requests whose user_id is not the viewer the sessions log "
            f"gives ({own:,} of them the owner's own request, by the requests log): the sessions log decided "
            "(SPEC); check those sessions (summary.json request_user_differs)"
        )
    shared = summary.get("digests_read_as_own") or {}
    if shared.get("digests"):
        n = shared["digests"]
        click.echo(
            f"note: {_counted(n, 'digest')} reached {_counted(shared['reads'], 'read')} as the value of the key "
            "asked for (their own reply, on connections whose log shows their reset and cancels, or under 3 "
            "owners' keys on 3 connections) while the writes "
            f"give {'it' if n == 1 else 'them'} to another owner: values many users share (an empty list?); from "
            "then on their reads are labelled digest-ambiguous and the connection or key decides "
            "(summary.json digests_read_as_own)"
        )
    alone = summary.get("digest_exposures_on_clean_connections")
    if alone:
        click.echo(
            f"note: {_counted(alone, 'exposure')} rest{'s' if alone == 1 else ''} on the digest alone while the "
            "logged connection shows the read got its own reply (a cancel the log lacks, or a value many users "
            "share?); review them (summary.json digest_exposures_on_clean_connections)"
        )
    for stretch in summary.get("window_beyond_logs") or []:
        click.echo(
            f"warning: the window holds no log line from {stretch['start']} to {stretch['end']} (logs exported "
            "short? a window meant for another day?): no exposure there can be seen (summary.json "
            "window_beyond_logs)"
        )
    gaps = summary.get("log_gaps") or {}
    for gap in gaps.get("hours_without_cache_calls") or []:
        click.echo(
            f"warning: no cache call was logged from {gap['start']} to {gap['end']} while "
            f"{_counted(gap['requests'], 'request')} were answered (a cache log missing or cut short?): no exposure "
            "there can be seen (summary.json log_gaps)"
        )
    # Hosts and grant categories are read from the logs and tables, which may hold anything: the console gives
    # their count, the report and summary.json (under --out) their names.
    silent_hosts = gaps.get("hosts_without_cache_calls") or []
    if silent_hosts:
        one = len(silent_hosts) == 1
        click.echo(
            f"warning: {_counted(len(silent_hosts), 'host')} answered "
            f"{_counted(sum(gap['requests'] for gap in silent_hosts), 'request')} and logged no cache call while "
            f"other hosts did ({'its cache log' if one else 'their cache logs'} not given?): no exposure on "
            f"{'it' if one else 'them'} can be seen (the report and summary.json log_gaps name "
            f"{'it' if one else 'them'})"
        )
    unknown = summary.get("grants_of_unknown_category") or {}
    if unknown:
        n = sum(unknown.values())
        click.echo(
            f"note: {_counted(n, 'grant')} of the grants table name{'s' if n == 1 else ''} a category no [[keys]] "
            f"rule gives: {'it excuses' if n == 1 else 'they excuse'} nothing (categories match exactly; the report "
            "and summary.json grants_of_unknown_category name them)"
        )


def _rejected_text(entry: dict[str, Any]) -> str:
    """A file that had more lines rejected than kept (manifest.rejected_inputs), with its commonest reasons."""
    kind, reasons = entry["kind"], list(entry["reject_reasons"].items())[:2]
    why = f" ({', '.join(f'{reason} {count:,}' for reason, count in reasons)})" if reasons else ""
    question = f"is it a {kind} log, with the fields [sources.{kind}] names?"
    if entry.get("not_json_records"):
        question = f"its lines were read one by one: {not_whole_json(entry['not_json_records'])}"
    return (
        f"{entry['path']}: {entry['rejected']:,} of its {entry['kept'] + entry['rejected']:,} lines rejected{why}: "
        f"{question} Those lines are missing from the analysis (rejects/{kind}.csv)"
    )


def _counted(n: int, noun: str) -> str:
    """``1 exposure``, ``2 exposures``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _print_changes(out: Path) -> None:
    """What changed in the notification lists since the report kept in history/, when there is one."""
    changes = (load_manifest(out).get("report") or {}).get("changes")
    if not changes:
        return
    since = f"since the report in {changes['previous_report']}/"
    if changes["unreadable"]:
        click.echo(f"warning: the lists of the report in {changes['previous_report']}/ could not be compared: "
                   f"{changes['unreadable']}")
    elif changes["added"] or changes["removed"]:
        outside = changes.get("removed_outside_window") or 0
        still = f" ({outside:,} of them still exposed, outside this window)" if outside else ""
        click.echo(
            f"{'changes':<16} {changes['added']:,} added to the notification lists, {changes['removed']:,} removed"
            f"{still} {since} (changes.csv)"
        )
    else:
        click.echo(f"{'changes':<16} none to the notification lists {since}")


def _print_files(out: Path, files: dict[str, Path]) -> None:
    """The files, the report first; notify/ and charts/ summed up in one line each."""
    click.echo(f"outputs in {out}:")
    shown: list[str] = []
    for name in files:
        path = Path(files[name])
        try:
            shown.append(path.relative_to(out).as_posix())
        except ValueError:
            shown.append(path.as_posix())
    first = ["report.html", "report.md", "affected_users.csv", "viewers.csv", "exposures.csv"]
    top = [n for n in first if n in shown] + sorted(n for n in shown if n not in first and "/" not in n)
    for name in top:
        click.echo(f"  {name}")
    folders: dict[str, list[str]] = {}
    for name in shown:
        if "/" in name and name not in first:
            folder, _, rest = name.partition("/")
            folders.setdefault(folder, []).append(rest)
    for folder, names in sorted(folders.items()):
        if folder == "notify":
            stems = ", ".join(sorted(Path(n).stem for n in names))
            click.echo(f"  notify/  {len(names)} notification list{'s' if len(names) != 1 else ''}: {stems}")
        elif folder == "charts":
            click.echo(f"  charts/  {len(names)} chart{'s' if len(names) != 1 else ''} (in report.html too)")
        else:
            for rest in sorted(names):
                click.echo(f"  {folder}/{rest}")
    _note_if_open(out, "the lists of people")


def _note_if_open(out: Path, what: str) -> None:
    """A --out that existed before whosaw keeps its mode (a new one is 0700): say so when others can read it."""
    mode = stat.S_IMODE(os.stat(out).st_mode)
    if mode & 0o077:
        click.echo(
            f"note: {out} is open to other users of this machine (mode {mode:o}), and so are {what} in it: "
            f"'chmod 700 {out}' keeps them to you"
        )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
