"""Ingestion: request, cache and session logs -> a hive-partitioned Parquet lake, rejects and a manifest.

How it works, and why:

* Inputs are files and folders (searched recursively; hidden entries and ``--out`` itself are passed over).
  A file's kind comes from ``--kind``, else the config's ``match`` globs, else the name prefix (``requests*``,
  ``cache*``, ``sessions*``); its format from the extension (``.jsonl/.ndjson/.json``, ``.csv``, ``.parquet``,
  each optionally ``.gz``). A file that says neither is listed as skipped, never guessed at. So is anything in a
  folder that is not a regular file (a named pipe, socket or device): told by ``stat``, never opened.
* Text inputs are cut into *physical* lines by :class:`_LineStream`: chunks of bytes, line ends found with numpy,
  streamed to DuckDB as Arrow batches of ``(file_id, line_no, line)``. No per-row Python, and line numbers are
  exact by construction (blank lines, CR LF, NUL bytes, stray quotes or delimiters and invalid UTF-8 cannot shift
  them, which DuckDB's CSV reader used as a line reader can). The same pass hashes the file (SHA-256) and inflates
  gzip, so a truncated ``.gz`` keeps every line it could read.
* Everything about rows is SQL in ``pipeline/sql/ingest/`` (one JSON parse per line, explicit reject reasons,
  normalisation), run as ONE streaming ``COPY`` per kind and format that writes records and rejected lines
  together, partitioned by UTC hour, into a scratch folder under ``OUT/.tmp``.
* Duplicates (re-shipped lines): a record's identity is its ``request_id`` for requests, its whole normalised
  record for cache and sessions. They are found after that COPY from the staged ``record_key`` column (a hash
  of the identity, see ``_KEY_EXPR``) among the new records and against the lake's existing rows, confirmed on
  the exact identity columns; only the staged files holding a duplicate are rewritten. The first occurrence
  wins: rows already in the lake, then input order (file, line). The lake keeps ``record_key`` (UBIGINT) as an
  extra column.
* Staged files are moved into ``OUT/parquet/<kind>/date=YYYY-MM-DD/hour=H/<run>-*.parquet`` (new runs append);
  a file whose SHA-256 the manifest already lists is recognised and not read again, so ingesting the same
  inputs twice leaves the lake as it was.

Counting rule (checked before the manifest is written): for every file ``lines = kept + duplicates + rejected``,
where ``lines`` is the number of physical lines of the decompressed file, except a CSV header line; a Parquet
file's rows are its lines, and so are the records of a JSON file laid out over lines (``json_records``). A
``.gz`` that ends early (or is corrupt part-way) keeps the complete lines it could read; whatever followed the
last complete line (possibly nothing) counts as ONE more line, rejected as ``gzip_truncated`` (or
``gzip_corrupt``) at the next line number. "Could read" is every byte zlib inflates before the damage (see
:class:`_Gunzip`); a member whose data is whole but whose CRC or length is wrong keeps all its lines and is still
``gzip_corrupt``.

A CSV's first line is its header only if it names at least one of the kind's required fields (after the config's
field map) and parses as CSV. Otherwise it is most likely a record of a file without a header (or a header
with classic Mac CR line ends): it is not dropped but counted as line 1 and rejected as ``csv_header_missing``
(or ``csv_header_unreadable``); its fields still name the columns, so the file's other lines are rejected
too (``missing_field:...``, ``csv_columns``), each with its line number, and none vanishes.

Time stamps: epoch numbers in s/ms/us/ns by magnitude, ISO-8601 with offset or ``Z``, zone-less ISO in the
source's ``timezone``; stored as UTC ``TIMESTAMPTZ`` in microseconds (nanoseconds are truncated); a time
outside 1990..2100 is rejected (``bad_ts``). A source's ``ts_format`` (DuckDB strptime formats) is tried first
(``ts_format.sql``); a format without ``%z``/``%Z`` reads wall time in the source's ``timezone``.

Enumerated fields (cache ``status``, sessions ``event``) are read in lower case; a source's ``values`` map reads
a logged word (``SUCCESS``, ``auth.login``) as the SPEC word it names (``values.sql``), any other word as before.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import gzip
import hashlib
import io
import itertools
import os
import re
import shutil
import stat
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from . import __version__
from . import progress as _progress
from .config import Config, FieldSpec, SourceConfig, resolve_config, strptime_specifiers
from .errors import NO_SPILL, WhosawError, first_unreadable_parquet, out_of_memory, set_memory_limit
from .manifest import (
    MANIFEST_NAME,
    REANALYSIS_MARK,
    RECORD_TOO_BIG,
    begin_ingest_commit,
    ctrl_c_waits,
    end_ingest_commit,
    load_manifest,
    locked,
    refuse_pattern_characters,
    remove_stage_outputs,
    remove_stage_scratch,
    sha256_file,
    update_manifest,
)
from .safecsv import copy_safe_csv
from .schema import CACHE_STATUSES, FLOAT_EXACT_LIMIT, KINDS, LAKE_COLUMNS, REQUIRED_FIELDS, SESSION_EVENTS, id_text

SQL_DIR = Path(__file__).parent / "sql" / "ingest"
FORMATS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
RAW_CHARS = 500  # a rejected line's raw text is cut to this many characters
# Optional fields whose absence from a whole file changes the answer without a single bad line: no user_id makes
# every request anonymous (unless the sessions log names its user), no host or conn_id hides every crossed reply
# from the connection tier. A file whose kept lines all lack one lists it in the manifest (files[].empty_fields),
# and the CLI says so: a field map that misses a column shows at once. (value_owner and value_sha256 are often
# not logged at all, and background work has no request_id: their absence is no sign of a wrong map, unless the
# config maps them: every field the config maps to a path is checked too.)
EVIDENCE_FIELDS: dict[str, tuple[str, ...]] = {
    "requests": ("user_id",),
    "cache": ("host", "conn_id"),
    "sessions": ("user_id",),
}
READ_CHUNK = 8 << 20  # bytes read at a time from a plain file
GZ_CHUNK = 1 << 20  # compressed bytes read at a time from a .gz
RECORDS_PEEK = 1 << 16  # bytes read to see whether a JSON file opens as one array or pretty-printed objects
RECORDS_BATCH = 1 << 17  # records of such a file per batch
GZ_OUT = 16 << 20  # at most this many bytes inflated per step (a highly compressed log stays bounded)
GZ_STEPS = (4096, 1)  # after gzip damage, the chunk is inflated again in pieces of these sizes (see _Gunzip)
# DuckDB's memory for ingest. With the partitioned-write settings in _connect, 600MB ingests 10M requests + 11M cache
# lines (4.4 GB) without spilling much; peak RSS stays under 1 GB.
MEMORY_LIMIT = os.environ.get("WHOSAW_MEMORY_LIMIT", "600MB")
# How the lake is written. zstd level 1 and Parquet's V2 encodings (delta-packed integers and string lengths) cost
# about a third less CPU than DuckDB's defaults (zstd 3, V1) at about the same size or smaller; DuckDB, pyarrow and
# Spark (>= 3.3; checked with 4.3) read them. A column with more than 1,000 distinct values in a row group is written
# without a dictionary: DuckDB then gives up on the dictionary of a request id, key or digest column early instead of
# hashing tens of thousands of values first (the same files, about 0.25 CPU-s less per million lines).
LAKE_WRITE_OPTIONS = (
    "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, PARQUET_VERSION V2, DICTIONARY_SIZE_LIMIT 1000"
)
_BOM = b"\xef\xbb\xbf"
_ROTATED = re.compile(r"(\.\d+|-\d{8})$")  # a rotated log's suffix: logrotate's .1 and dateext -YYYYMMDD
# record_key: a hash of (part of) a record's identity, to find duplicate candidates with one cheap pass; candidates
# are then compared on the whole identity. Computed for new lines in <kind>.sql, and afresh for rows already in
# the lake (never read from the stored column, so a lake written by another DuckDB version compares right).
_KEY_EXPR = {
    "requests": "hash(request_id)",
    "cache": "hash(ts, request_id, op, key, host, conn_id)",
    "sessions": "hash(ts, session_id, user_id, event)",
}
# A request line is a duplicate by its request_id alone; one that repeats it with other of these fields (who the
# viewer is) is counted apart: a request id used twice, not a re-shipped copy (duplicate_rows.sql).
_VIEWER_FIELDS = {"requests": ("session_id", "user_id")}
# Spellings read as SPEC's words without a values map: Go clients write 'canceled', and rejecting it would drop
# exactly the abandoned calls the connection tier needs (values.sql, with a source's own map).
_BUILT_IN_WORDS = {"cache": {"canceled": "cancelled"}}

# Fields whose text must be a value: an object or array there is rejected as not_a_value:<name> (a field map that
# names the parent object). Not key (a JSON array is a multi-key call), nor ts, status, event (their own checks).
# Checked where the config maps the field (that is how a parent object is named by mistake): the check costs
# about 0.4 CPU-s per million lines, which fields under their own names need not pay.
_VALUE_FIELDS: dict[str, tuple[str, ...]] = {
    "requests": ("request_id", "session_id", "user_id", "route", "host"),
    "cache": ("request_id", "op", "host", "conn_id", "value_sha256", "value_owner"),
    "sessions": ("session_id", "user_id"),
}

# Reject reason codes and what they mean (the `detail` column of rejects/).
REASONS: dict[str, str] = {
    "invalid_utf8": "the line is not valid UTF-8 text",
    "nul_byte": "the line holds NUL bytes",
    "blank_line": "the line is empty",
    "invalid_json": "the line is not valid JSON",
    "not_an_object": "the line is JSON but not an object",
    "missing_payload": "the line has no log record where the source's payload says (no text at its path, or the "
    "line does not match its pattern)",
    "csv_quote": "the line's CSV quoting is broken (a stray or unterminated quote; a quoted field cannot hold a "
                 "line break: every line is a record)",
    "csv_columns": "the CSV line has more or fewer fields than the header",
    "csv_header_missing": "the CSV's first line, taken as its header, names none of the required fields: no header?",
    "csv_header_unreadable": "the CSV's first line, taken as its header, cannot be parsed (a lone CR: Mac line ends?)",
    "bad_ts": "ts is not an ISO-8601 time, epoch number or time in the source's ts_format between 1990 and 2100",
    "nonexistent_local_ts": "ts is a wall time the source's timezone skips when its clocks go forward: no clock there "
    "shows it (is the source's timezone right?)",
    "ambiguous_local_ts": "ts is a wall time that occurs twice when the source's timezone turns its clocks back, and "
    "the file's order of lines does not tell which of the two it is",
    "bad_status": "status is not a valid status for this log kind (requests: a whole number from 0 to 999; cache: ok, "
    "cancelled, timeout, error, or a word its [sources.cache.values] map names)",
    "bad_event": "event is not login, refresh, logout or expire, nor a word the [sources.sessions.values] map names",
    "gzip_truncated": "the gzip stream ends early: this is what followed the last complete line",
    "gzip_corrupt": "the gzip stream is corrupt from here on: this is what followed the last complete line",
}


@dataclass
class IngestResult:
    """What ``ingest`` did: the output folder, the manifest as written, and this run's totals."""

    out: Path
    manifest: dict[str, Any]
    totals: dict[str, int] = field(default_factory=dict)


@dataclass
class _Input:
    """One log file of this run, and its counts once read."""

    path: Path
    kind: str
    fmt: str  # json | csv | parquet
    gz: bool
    size: int
    order: int
    sha256: str | None = None
    header: list[str] | None = None
    header_reason: str | None = None  # csv_header_missing | csv_header_unreadable: line 1 is counted and rejected
    header_raw: str | None = None  # that line's text, once read
    lines: int = 0
    kept: int = 0
    duplicates: int = 0
    rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)  # this run's rejected lines by reason
    empty_fields: list[str] = field(default_factory=list)  # EVIDENCE_FIELDS that no kept line of the file has
    differing_duplicates: int = 0  # request lines whose request_id repeats with another session or user
    coarse_repeats: int = 0  # cache lines repeating a line of their own file whose times are whole milliseconds
    placed_in_repeated_hour: int = 0  # kept lines whose wall time the zone repeats, placed by the file's order
    superseded_rejects: int = 0  # an earlier reading's rejects of lines this one read anew (a cut last line, whole)
    # a JSON file laid out over lines: "array" (one JSON array: its items) or "documents" (pretty-printed objects,
    # one after another: each object); its records are its lines, numbered from 1 (_json_records_scan)
    json_records: str | None = None
    not_json_records: dict[str, str] | None = None  # {layout, reason}: a file that opens so but is not whole JSON
    damage: str | None = None  # gzip_truncated | gzip_corrupt
    damage_line: int = 0
    damage_raw: str = ""

    def entry(self, run_id: str) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "format": self.fmt + (".gz" if self.gz else ""),
            "bytes": self.size,
            "sha256": self.sha256,
            "lines": self.lines,
            "kept": self.kept,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            **({"reject_reasons": self.reject_reasons} if self.reject_reasons else {}),
            **({"empty_fields": self.empty_fields} if self.empty_fields else {}),
            **({"differing_duplicates": self.differing_duplicates} if self.differing_duplicates else {}),
            **({"coarse_repeats": self.coarse_repeats} if self.coarse_repeats else {}),
            **({"placed_in_repeated_hour": self.placed_in_repeated_hour} if self.placed_in_repeated_hour else {}),
            **({"superseded_rejects": self.superseded_rejects} if self.superseded_rejects else {}),
            **({"json_records": self.json_records} if self.json_records else {}),
            **({"not_json_records": self.not_json_records} if self.not_json_records else {}),
            **({"damaged": self.damage} if self.damage else {}),
            "run": run_id,
        }


def ingest(
    inputs: Sequence[str | Path],
    out: str | Path,
    config: str | Path | Config | None = None,
    kind: str | None = None,
    progress: bool | None = None,
) -> IngestResult:
    """Read the log files in ``inputs`` into the lake under ``out``; see the module docstring for the rules."""
    started, started_at = time.monotonic(), datetime.now(UTC)
    if kind is not None and kind not in KINDS:
        raise WhosawError(f"--kind: expected one of {', '.join(KINDS)}")
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    if not inputs:
        raise WhosawError("no inputs given")
    refuse_pattern_characters(out)
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise WhosawError(f"--out {out} is not a folder")
    if (out / REANALYSIS_MARK).exists() or (out / "parquet").is_symlink():
        raise WhosawError(
            f"--out {out} is a reanalysis of another folder's lake (pipeline.reanalyze): its lake is that folder's, "
            "so ingest late logs into that --out, then reanalyze again"
        )
    cfg = resolve_config(out, config)  # late logs into a lake: the config its first ingest recorded

    files, skipped = _discover(inputs, out, cfg, kind)
    if not files:
        first = f" (e.g. {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise WhosawError(f"no log files found in the inputs{first}")

    out.mkdir(parents=True, exist_ok=True, mode=0o700)  # a new --out is its owner's only: it will hold what leaked
    with locked(out, "ingest"):
        manifest = load_manifest(out)
        _refuse_a_damaged_out(out, manifest)
        todo, already = _recognise(files, manifest.get("files", []))
        _refuse_grown_read_otherwise(todo, manifest, cfg)
        run_id = started_at.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        scratch = out / ".tmp" / f"ingest-{run_id}"
        timings: dict[str, float] = {}
        con = None
        try:
            con = _connect(scratch)
            con.execute(
                "CREATE TEMP TABLE new_rejects (kind VARCHAR, source_file VARCHAR, source_line BIGINT, "
                "reason VARCHAR, raw VARCHAR)"
            )
            con.execute("CREATE TEMP TABLE superseded_rejects (kind VARCHAR, source_file VARCHAR, source_line BIGINT)")
            moves: list[tuple[Path, Path]] = []
            for kind_name in KINDS:
                kind_files = [f for f in todo if f.kind == kind_name]
                if kind_files:
                    t0 = time.monotonic()
                    read_before = _read_before(manifest, kind_name)
                    moves += _ingest_kind(
                        con, cfg, kind_name, kind_files, out, scratch, run_id, progress, read_before
                    )
                    timings[kind_name] = round(time.monotonic() - t0, 3)
            with ctrl_c_waits():  # the lake, the rejects and the manifest change together
                t0 = time.monotonic()
                rejects = [out / "rejects" / f"{k}{ext}" for k in KINDS for ext in (".parquet", ".csv")]
                begin_ingest_commit(out, run_id, [target for _, target in moves], rejects)
                for source, target in moves:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(source, target)
                _write_rejects(con, out)
                timings["lake_and_rejects"] = round(time.monotonic() - t0, 3)
                stale = remove_stage_outputs(out, "analysis", "report") if todo else []
                written = _finish(
                    out, manifest, todo, already, skipped, cfg, inputs, kind, run_id, started, started_at, timings,
                    stale,
                )
                end_ingest_commit(out)
        except duckdb.OutOfMemoryException:
            raise out_of_memory("ingest", MEMORY_LIMIT, out / ".tmp") from None
        finally:
            if con is not None:
                con.close()
            remove_stage_scratch(out, scratch)
    return IngestResult(out=out, manifest=written, totals=written["ingest"]["totals"])


def _refuse_a_damaged_out(out: Path, manifest: dict[str, Any]) -> None:
    """Late logs go into an ``--out`` whose earlier rejects this ingest rewrites and whose lake it checks for
    duplicates: a rejects file that is no Parquet any more, or a lake the manifest does not know (the manifest
    replaced or emptied: every line of the same files would count as a duplicate), is a damaged ``--out``, found
    before anything is written."""
    lake = out / "parquet"
    if not manifest.get("files") and lake.is_dir() and next(lake.rglob("*.parquet"), None) is not None:
        raise WhosawError(
            f"{out / MANIFEST_NAME} lists no input files, but the lake in {lake} holds rows: the manifest was "
            "replaced or emptied; ingest into a new --out"
        )
    con = duckdb.connect(config=NO_SPILL)
    try:
        damaged = first_unreadable_parquet(con, sorted((out / "rejects").glob("*.parquet")))
    finally:
        con.close()
    if damaged is not None:
        raise WhosawError(f"the rejects are damaged: {damaged} is not readable Parquet")


def _finish(
    out: Path,
    manifest: dict[str, Any],
    todo: list[_Input],
    already: list[dict[str, str]],
    skipped: list[dict[str, str]],
    cfg: Config,
    inputs: Sequence[str | Path],
    kind: str | None,
    run_id: str,
    started: float,
    started_at: datetime,
    timings: dict[str, float] | None = None,
    stale: list[str] | None = None,
) -> dict[str, Any]:
    """Write the manifest: every file of this run with its counts, the skipped files, the config, the totals;
    without the analysis and report sections once new files changed the lake (``stale``: their files removed)."""
    totals = {
        "files": len(todo),
        "lines": sum(f.lines for f in todo),
        "kept": sum(f.kept for f in todo),
        "duplicates": sum(f.duplicates for f in todo),
        "rejected": sum(f.rejected for f in todo),
        "skipped": len(skipped),
        "already_ingested": len(already),
    }
    entries = list(manifest.get("files", [])) + [f.entry(run_id) for f in todo]
    # Which config each run read its files with (the top-level config is the latest one): a field map or zone
    # edited between two ingests reads the new files differently from the earlier ones, which must show.
    read_with = cfg.to_manifest()
    runs = list(manifest.get("ingest_runs") or [])
    earlier = runs[-1].get("config") if runs else manifest.get("config") if manifest.get("files") else None
    sources_changed = bool(todo and earlier) and _sources(read_with) != _sources(earlier)
    # An already-ingested file is not read again, so a [sources] edit (a ts_format that reads its bad_ts lines,
    # a zone) does not reach it: say how many, else the user believes the edit took effect. Only its kind's
    # section read it: an edit of [sources.requests] leaves the cache files as they would be read now.
    known = {entry["path"]: entry for entry in manifest.get("files", [])}
    read_otherwise = sum(
        _section_read_with(manifest, known[a["same_as"]]) != _source(read_with, known[a["same_as"]]["kind"])
        for a in already
        if a["same_as"] in known
    )
    if todo:
        runs.append({"run": run_id, "files": len(todo), "config": read_with})
    skipped_all = {s["path"]: s for s in manifest.get("skipped", [])}
    skipped_all.update({s["path"]: s for s in skipped})
    for entry in entries:
        skipped_all.pop(entry["path"], None)
    section = {
        "run": run_id,
        "started_at": started_at.isoformat().replace("+00:00", "Z"),
        "seconds": round(time.monotonic() - started, 3),
        "inputs": [os.path.abspath(p) for p in inputs],
        "kind_option": kind,
        "totals": totals,
        "already_ingested": already,
        "skipped": skipped,
        "timings": timings or {},
        "duckdb": duckdb.__version__,
        "tool_version": __version__,
        "removed_stale_outputs": stale or [],
        "sources_changed": sources_changed,
        "already_read_otherwise": read_otherwise,
    }
    return update_manifest(
        out,
        drop=("analysis", "report", "window") if todo else (),
        files=entries,
        ingest_runs=runs,
        skipped=list(skipped_all.values()),
        config=cfg.to_manifest(),
        ingest=section,
    )


def _sources(recorded: dict[str, Any]) -> Any:
    """The [sources] section of a config as the manifest records it (field maps, zones, globs, value maps)."""
    return ((recorded or {}).get("settings") or {}).get("sources")


def _source(recorded: dict[str, Any], kind: str) -> Any:
    """The [sources.<kind>] section of a config as the manifest records it: what read a file of that kind."""
    return (_sources(recorded) or {}).get(kind)


def _section_read_with(manifest: dict[str, Any], entry: dict[str, Any]) -> Any:
    """The [sources.<kind>] section that read a manifest entry: its run's config (``ingest_runs``; a manifest from
    before them: its top-level config)."""
    runs = {run.get("run"): run.get("config") for run in manifest.get("ingest_runs") or []}
    return _source(runs.get(entry.get("run"), manifest.get("config")), entry.get("kind"))


# ---------------------------------------------------------------------------------------------- discovery


def _discover(
    inputs: Sequence[str | Path], out: Path, cfg: Config, kind: str | None
) -> tuple[list[_Input], list[dict[str, str]]]:
    """The log files among ``inputs`` (in the order given, folders sorted), and the files passed over."""
    found: list[Path] = []
    for given in inputs:
        path = Path(os.path.abspath(given))
        if not path.exists():
            raise WhosawError(f"input {given} does not exist")
        if path.is_dir():
            found.extend(_walk(path, out))
        elif path.is_file():
            found.append(path)
        else:
            raise WhosawError(f"input {given} is not a file or folder")

    files: list[_Input] = []
    skipped: list[dict[str, str]] = []
    seen: set[Path] = set()
    for path in found:
        real = Path(os.path.realpath(path))  # not Path.resolve(): it raises RuntimeError on a symbolic link loop
        if real in seen:
            continue
        seen.add(real)
        if _inside(real, out):
            skipped.append({"path": _shown(path), "reason": "inside the --out folder"})
            continue
        not_regular = _not_regular(path)
        if not_regular:  # a named pipe would block the run forever: never opened
            skipped.append({"path": _shown(path), "reason": f"not a regular file ({not_regular}): not read"})
            continue
        file_kind, why = _kind_of(path.name, cfg, kind)
        fmt, gz = format_of(path.name)
        if file_kind is None:
            if why.startswith("the name matches the globs of several kinds"):  # the config contradicts itself
                raise WhosawError(f"input {path}: {why}; make the config's match globs exclusive, or use --kind")
            skipped.append({"path": _shown(path), "reason": why})
            continue
        fmt = fmt or cfg.sources[file_kind].format
        if fmt is None:
            reason = "unsupported file type (not .jsonl/.ndjson/.json/.csv/.parquet, plain or .gz)"
            if kind is None and any(fnmatch(path.name, glob) for glob in cfg.sources[file_kind].match):
                # the config names it a log of this kind, yet it would go unread: never only "passed over"
                raise WhosawError(
                    f"input {path}: sources.{file_kind}.match names it a {file_kind} log, but its name does not "
                    f'tell its format: set sources.{file_kind}.format = "jsonl" (or "csv") in the config'
                )
            skipped.append({"path": _shown(path), "reason": reason})
            continue
        wrapped = cfg.sources[file_kind]
        if (fmt == "parquet" and wrapped.payload) or (fmt != "json" and wrapped.payload_pattern):
            raise WhosawError(
                f"input {_shown(path)}: sources.{file_kind}.payload is read from JSON "
                f"{'and CSV ' if wrapped.payload else ''}logs only, and this is {fmt}: give its JSON export, or "
                "ingest it with a config without the payload"
            )
        if not _utf8_name(path):  # its name goes into SQL and Parquet (source_file), which hold UTF-8 text only
            raise WhosawError(f"input {_shown(path)}: the file name is not UTF-8; rename the file to read it")
        size = _check_readable(path, fmt, gz)
        item = _Input(path=path, kind=file_kind, fmt=fmt, gz=gz, size=size, order=len(files))
        if fmt == "csv":
            item.header, item.header_reason = _csv_header(item, cfg, file_kind)
        files.append(item)
    return files, skipped


def _shown(path: Path) -> str:
    """A path as text that can be written anywhere (manifest, report, CSV): bytes of a name that are not UTF-8
    as \\xNN escapes. str(path) holds them as lone surrogates, which no UTF-8 writer accepts (a passed-over
    'notes\\xff.txt' in the manifest made the report an internal error)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _utf8_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:  # bytes that are not UTF-8 come from the file system as lone surrogates
        return False


def _walk(top: Path, out: Path) -> Iterator[Path]:
    """Files under ``top``, sorted, without hidden files or folders and without ``out``. A folder linked to is
    walked as a file linked to is read (once: a link back to a folder already walked is a loop); a folder that
    cannot be listed is an error, as an unreadable file is: its logs must not vanish from the run unsaid."""

    def unreadable(exc: OSError) -> None:
        why = "permission denied" if isinstance(exc, PermissionError) else exc.__class__.__name__
        raise WhosawError(f"input folder {_shown(Path(exc.filename or top))} cannot be read ({why})")

    walked = {os.path.realpath(top)}
    for root, dirs, names in os.walk(top, onerror=unreadable, followlinks=True):
        root_path = Path(root)
        keep = []
        for name in sorted(dirs):
            real = os.path.realpath(root_path / name)
            if name.startswith(".") or _inside(Path(real), out) or real in walked:
                continue
            walked.add(real)
            keep.append(name)
        dirs[:] = keep
        for name in sorted(names):
            if not name.startswith("."):
                yield root_path / name


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _kind_of(name: str, cfg: Config, kind: str | None) -> tuple[str | None, str]:
    if kind is not None:
        return kind, ""
    matched = [k for k in KINDS if any(fnmatch(name, glob) for glob in cfg.sources[k].match)]
    if len(matched) == 1:
        return matched[0], ""
    if len(matched) > 1:
        return None, f"the name matches the globs of several kinds ({', '.join(matched)})"
    lower = name.lower()
    for k in KINDS:
        if lower.startswith(k):
            return k, ""
    return None, "not a log: the name does not tell its kind (requests*, cache*, sessions* or a config glob)"


def format_of(name: str) -> tuple[str | None, bool]:
    """(format, gzipped) from a file name: json | csv | parquet, or None for a name ingest does not read. A rotated
    file's suffix (logrotate's ``.1``, ``.2.gz``, ``-20230320``) is not its format: ``requests.jsonl.1.gz`` is JSON."""
    lower = name.lower()
    gz = lower.endswith(".gz")
    base = lower[:-3] if gz else lower
    base = _ROTATED.sub("", base)
    return FORMATS.get(os.path.splitext(base)[1]), gz


def _check_readable(path: Path, fmt: str, gz: bool) -> int:
    """The file's size; a one-line WhosawError if it cannot be read or is not what its name says."""
    not_regular = _not_regular(path)
    if not_regular:  # checked before opening: opening a named pipe blocks
        raise WhosawError(f"input {path} is not a regular file ({not_regular})")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            size = os.fstat(handle.fileno()).st_size
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise WhosawError(f"input {path} is not a regular file")
            tail = b""
            if fmt == "parquet" and not gz and size >= 8:
                handle.seek(size - 4)
                tail = handle.read(4)
    except PermissionError:
        raise WhosawError(f"input {path} is not readable (permission denied)") from None
    except OSError as exc:
        why = "a symbolic link loop" if exc.errno == errno.ELOOP else exc.__class__.__name__
        raise WhosawError(f"input {path} cannot be read ({why})") from None
    if size and gz and head[:2] != b"\x1f\x8b":
        raise WhosawError(f"input {path} is not gzip data despite its .gz name")
    if fmt == "parquet" and not gz and size and (head != b"PAR1" or tail != b"PAR1"):
        raise WhosawError(f"input {path} is not a Parquet file")
    return size


def _not_regular(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file (symbolic links followed), from ``stat`` alone: the file is
    never opened. None for a regular file, or when ``stat`` fails (reading it then says why)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _first_line(item: _Input) -> bytes:
    """The first line of a file as ingest reads it (UTF-16 as UTF-8; a damaged .gz: as much as could be inflated
    before the damage)."""
    with open(item.path, "rb") as handle:
        got = b""
        for data in _as_utf8(_inflated(handle, item.gz)):
            got += data
            if b"\n" in data:
                break
        return got[: got.find(b"\n") + 1] if b"\n" in got else got


def _inflated(handle: Any, gz: bool) -> Iterator[bytes]:
    """The bytes of a file in small pieces, inflated if it is a .gz (up to any damage)."""
    gunzip = _Gunzip() if gz else None
    with contextlib.suppress(zlib.error):
        while buf := handle.read(1 << 16):
            yield from gunzip.feed(buf) if gunzip else (buf,)


def _as_utf8(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A text file's bytes as UTF-8: UTF-16 text, which opens with its byte order mark (as Windows tools write
    it), is transcoded; anything else passes unchanged. What UTF-16 cannot decode (a lone surrogate, an odd last
    byte) stays undecodable in UTF-8, so its line is rejected as invalid_utf8, as in a UTF-8 file. Line ends
    stay where they were: line numbers are those of the file."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= 2:
            break
    if not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        if head:
            yield head
        yield from chunks
        return
    decoder = codecs.getincrementaldecoder("utf-16")("surrogatepass")
    for chunk in itertools.chain((head,), chunks):
        yield decoder.decode(chunk).encode("utf-8", "surrogatepass")
    try:
        yield decoder.decode(b"", final=True).encode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # an odd byte at the end: kept as it is (not UTF-8 on its own)
        yield decoder.getstate()[0]


def _csv_header(item: _Input, cfg: Config, kind: str) -> tuple[list[str], str | None]:
    """The column names on the first line of a CSV file (empty for an empty file), and why that line is not taken
    as a header, if it is not: it cannot be parsed (``csv_header_unreadable``), or it names none of the kind's
    required fields after the config's field map (``csv_header_missing``: most likely a first record)."""
    try:
        first = _first_line(item)
    except OSError:
        return [], None  # reading the file later says why
    text = first.decode("utf-8-sig", errors="replace").rstrip("\r\n")
    try:
        row = next(csv.reader(io.StringIO(text)), [])
    except csv.Error:  # a lone CR (classic Mac line ends), a field over csv's size limit
        return [], "csv_header_unreadable"
    header = [name.strip() for name in row]
    source = cfg.sources[kind]
    paths = [source.field_spec(n).path for n in REQUIRED_FIELDS[kind] if not source.field_spec(n).is_const]
    if source.payload:  # the fields are inside the payload column
        paths = [source.payload]
    if paths and not any(_column_for(header, ".".join(path)) for path in paths if path):
        return header, "csv_header_missing"
    return header, None


def _column_for(columns: Sequence[str], name: str) -> str | None:
    """The column of a CSV header or Parquet file that holds field ``name``: the one so named, else the only one
    so named in another case (``User_ID``: a header that silently lacked ``user_id`` made every request
    anonymous). None when there is none, or several in other cases and none exact."""
    if name in columns:
        return name
    folded = [column for column in columns if column.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def _parquet_column_names(path: Path, described: list[str]) -> list[tuple[str, str]]:
    """(the Parquet file's own name, DuckDB's name) per top-level column. DuckDB renames a column whose name
    repeats another's in another case (USER_ID after User_Id reads as USER_ID_1, user_id after USER_ID as
    user_id_1): matched on its names, an ambiguous user_id was read from the first column, and an exact
    user_id after a USER_ID from the other one."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException):
        names = described
    return list(zip(names, described, strict=True)) if len(names) == len(described) else [
        (name, name) for name in described]


def _parquet_column_for(named: list[tuple[str, str]], name: str) -> str | None:
    """DuckDB's name of the column holding field ``name`` (:func:`_column_for` over the file's own names; a name
    the file holds twice is no one column)."""
    own = [file_name for file_name, _ in named]
    chosen = _column_for(own, name)
    if chosen is None or own.count(chosen) > 1:
        return None
    return named[own.index(chosen)][1]


def _read_before(manifest: dict[str, Any], kind: str) -> dict[str, set[str] | None]:
    """The paths of ``kind`` the manifest lists (earlier readings), each with the fields empty in every line those
    readings kept (``files[].empty_fields``; a reading that kept none tells nothing): a grown file read again keeps
    only its new lines."""
    earlier: dict[str, set[str] | None] = {}
    for entry in manifest.get("files", []):
        if entry.get("kind") == kind:
            path = entry["path"]
            earlier.setdefault(path, None)
            if entry.get("kept"):
                empty = set(entry.get("empty_fields") or [])
                earlier[path] = empty if earlier[path] is None else earlier[path] & empty
    return earlier


def _recognise(files: list[_Input], known: list[dict[str, Any]]) -> tuple[list[_Input], list[dict[str, str]]]:
    """Split files into those to read and those already ingested (same SHA-256 as a manifest entry or an
    earlier input of this run). Only a file whose size matches another's is hashed up front; the rest are
    hashed while they are read."""
    by_sha = {entry["sha256"]: entry["path"] for entry in known if entry.get("sha256")}
    known_sizes = {entry.get("bytes") for entry in known}
    sizes = Counter(f.size for f in files)
    todo: list[_Input] = []
    already: list[dict[str, str]] = []
    for f in files:
        if f.size in known_sizes or sizes[f.size] > 1 or f.fmt == "parquet":
            f.sha256 = sha256_file(f.path)
            if f.sha256 in by_sha:
                already.append({"path": str(f.path), "sha256": f.sha256, "same_as": by_sha[f.sha256]})
                continue
            by_sha[f.sha256] = str(f.path)
        todo.append(f)
    for order, f in enumerate(todo):
        f.order = order
    return todo, already


def _refuse_grown_read_otherwise(todo: list[_Input], manifest: dict[str, Any], cfg: Config) -> None:
    """A live log that grew since an earlier run read it is read again whole, its earlier lines then duplicates:
    only if they read the same way. After an edit of its kind's [sources.<kind>] (a zone, a ts_format, a field
    map) they would be kept a second time, at other times or with other users, inflating exposures; also from a
    copy in another folder, whose lines have other names. Refused before anything is read: a new --out reads
    every line one way. Grown: same kind and name, larger, its first ``bytes`` hashing as recorded (hashed only
    after an edit, so the usual re-ingest costs nothing)."""
    now = cfg.to_manifest()
    for f in todo:
        for entry in manifest.get("files", []):
            if (
                entry.get("kind") == f.kind
                and Path(entry["path"]).name == f.path.name
                and _section_read_with(manifest, entry) != _source(now, f.kind)
                and _grown_from(f, entry)
            ):
                raise WhosawError(
                    f"input {f.path} grew since {entry['path']} was ingested with another [sources.{f.kind}] "
                    "section: its earlier lines would be kept twice, read two ways; ingest into a new --out"
                )


def _grown_from(f: _Input, entry: dict[str, Any]) -> bool:
    """Whether ``f`` is the file a manifest entry recorded, grown: larger, and its first bytes hash as recorded."""
    size = entry.get("bytes", 0)
    return size < f.size and sha256_file(f.path, size) == entry.get("sha256")


# ---------------------------------------------------------------------------------------------- line stream


class _LineStream:
    """The physical lines of text files as Arrow batches ``(file_id, line_no, line, line_bin)``; of a JSON file
    laid out over lines (one JSON array, pretty-printed objects), its records (:meth:`_records`).

    Per chunk of bytes, numpy finds the line ends and the batch's strings point into the chunk (no copy, no
    per-row Python). ``line`` keeps its line end (JSON ignores it; SQL strips it where it matters). A chunk that
    is not valid UTF-8 is sent as bytes in ``line_bin`` so SQL can reject exactly its bad lines. A CSV file's
    first line (its header) is not sent. Also hashes each file and counts its lines.
    """

    SCHEMA = pa.schema(
        [
            ("file_id", pa.int32()),
            ("line_no", pa.int64()),
            ("line", pa.large_string()),
            ("line_bin", pa.large_binary()),
            ("suspect", pa.bool_()),
        ]
    )

    def __init__(self, files: list[_Input], fmt: str, chunk: int = READ_CHUNK) -> None:
        self.files = files
        self.chunk = chunk
        self.skip_header = fmt == "csv"
        self.json = fmt == "json"
        self.total = max(1, sum(f.size for f in files))
        self.done = 0
        self.failed: tuple[Path, BaseException] | None = None
        self.first = b""  # the current CSV file's first line

    def fraction(self) -> float:
        return min(1.0, self.done / self.total)

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.SCHEMA, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        for file_id, item in enumerate(self.files):
            try:
                yield from self._file(file_id, item)
            except Exception as exc:
                self.failed = (item.path, exc)
                raise

    def _file(self, file_id: int, item: _Input) -> Iterator[pa.RecordBatch]:
        scan = _json_records_scan(item) if self.json else None
        if scan is not None:
            yield from self._records(file_id, item, scan)
        else:
            yield from self._lines(file_id, item)

    def _records(self, file_id: int, item: _Input, scan: str) -> Iterator[pa.RecordBatch]:
        """A JSON file laid out over lines (one array: ``gcloud logging read --format=json``, ``jq -s``; pretty-printed
        objects: ``jq .``): its records, each as a line, numbered by its place. DuckDB cuts the file into records,
        each its own text as written."""
        import pyarrow.compute as pc  # here: the JSON lines' path does without its import time

        digest = hashlib.sha256()
        for _ in self._chunks(item, digest):  # the file's SHA-256 and size, as for lines
            pass
        con = duckdb.connect(config=NO_SPILL)
        seen = 0
        try:
            for batch in con.sql(f"SELECT json FROM {scan}").to_arrow_reader(RECORDS_BATCH):
                items = batch.column(0).cast(pa.large_string())
                n = len(items)
                if not n:
                    continue
                whole_objects = pc.and_(pc.starts_with(items, "{"), pc.ends_with(items, "}"))
                columns = [
                    pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(np.full(n, file_id, dtype=np.int32))]),
                    pa.Array.from_buffers(
                        pa.int64(), n, [None, pa.py_buffer(np.arange(seen + 1, seen + n + 1, dtype=np.int64))]
                    ),
                    items,
                    pa.nulls(n, pa.large_binary()),
                    pc.invert(whole_objects),
                ]
                seen += n
                yield pa.record_batch(columns, schema=self.SCHEMA)
        finally:
            con.close()
        item.lines = seen
        item.sha256 = digest.hexdigest()

    def _lines(self, file_id: int, item: _Input) -> Iterator[pa.RecordBatch]:
        digest = hashlib.sha256()
        self.first = b""
        line_no = 0  # lines seen so far, a CSV header included
        rest = b""  # the start of a line that continues in the next chunk
        at_start = True  # a UTF-8 byte order mark may open the file: it is not part of line 1
        for data in _as_utf8(self._chunks(item, digest)):
            if at_start:
                data = rest + data
                rest = b""
                if len(data) < len(_BOM) and _BOM.startswith(data):
                    rest = data
                    continue
                at_start = False
                if data.startswith(_BOM):
                    data = data[len(_BOM) :]
            ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
            if not len(ends):
                rest += data
                continue
            start = 0
            if rest:  # the line across the chunk boundary: one small batch, so the chunk is never copied
                head = rest + data[: ends[0] + 1]
                batch = self._batch(file_id, line_no, head, np.array([0, len(head)], dtype=np.int64))
                line_no += 1
                if batch is not None:
                    yield batch
                start, ends = int(ends[0]) + 1, ends[1:]
            rest = data[int(ends[-1]) + 1 if len(ends) else start :]
            if len(ends):
                offsets = np.empty(len(ends) + 1, dtype=np.int64)
                offsets[0] = start
                offsets[1:] = ends + 1
                batch = self._batch(file_id, line_no, data, offsets)
                line_no += len(ends)
                if batch is not None:
                    yield batch
        if item.damage:  # what followed the last complete line is one more (rejected) line
            item.damage_line = line_no + 1
            item.damage_raw = _raw(rest)
            line_no += 1
        elif rest:  # a last line without a line end
            batch = self._batch(file_id, line_no, rest, np.array([0, len(rest)], dtype=np.int64))
            line_no += 1
            if batch is not None:
                yield batch
        header = 1 if self.skip_header and line_no and not (item.damage and line_no == 1) else 0
        if header and item.header_reason:  # a first line that is not a header is a line, rejected
            item.header_raw = _raw(self.first)
            header = 0
        item.lines = line_no - header
        item.sha256 = digest.hexdigest()

    def _batch(self, file_id: int, seen: int, data: bytes, offsets: np.ndarray) -> pa.RecordBatch | None:
        """Lines ``seen + 1 ...`` of a file: the strings are views into ``data`` between ``offsets``."""
        n = len(offsets) - 1
        strings = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        numbers = np.arange(seen + 1, seen + n + 1, dtype=np.int64)
        suspect = self._suspect(data, offsets) if self.json else np.zeros(n, dtype=bool)
        if self.skip_header and seen == 0:  # the header line: not sent (kept aside, in case it is rejected)
            self.first = data[int(offsets[0]) : int(offsets[1])]
            strings, numbers, suspect, n = strings.slice(1), numbers[1:], suspect[1:], n - 1
            if n == 0:
                return None
        try:
            strings.validate(full=True)
            line, line_bin = strings, pa.nulls(n, pa.large_binary())
        except pa.ArrowInvalid:
            line, line_bin = pa.nulls(n, pa.large_string()), strings.view(pa.large_binary())
        # Arrays straight from numpy buffers: pa.array() would import pandas on its first call (0.35 s).
        columns = [
            pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(np.full(n, file_id, dtype=np.int32))]),
            pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(np.ascontiguousarray(numbers))]),
            line,
            line_bin,
            pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(np.packbits(suspect, bitorder="little"))]),
        ]
        return pa.record_batch(columns, schema=self.SCHEMA)

    @staticmethod
    def _suspect(data: bytes, offsets: np.ndarray) -> np.ndarray:
        """Lines that do not start with '{' and end with '}' (before CR LF): the only ones that may not be JSON
        objects, so SQL parses them carefully (see json_fields.sql). Vectorised over the chunk."""
        arr = np.frombuffer(data, dtype=np.uint8)
        starts = offsets[:-1]
        last = offsets[1:] - 1
        last = last - (arr[last] == 10)
        last = last - (arr[np.maximum(last, 0)] == 13)
        return ~((last > starts) & (arr[starts] == 123) & (arr[np.maximum(last, 0)] == 125))

    def _chunks(self, item: _Input, digest: Any) -> Iterator[bytes]:
        """The decompressed bytes of one file, in chunks; gzip damage is recorded on ``item``, and its size as read
        (a live log may have grown since it was found: the manifest's bytes are those the SHA-256 covers)."""
        with open(item.path, "rb") as handle:
            gunzip = _Gunzip() if item.gz else None
            item.size = 0
            while buf := handle.read(GZ_CHUNK if gunzip else self.chunk):
                digest.update(buf)
                self.done += len(buf)
                item.size += len(buf)
                if gunzip is None:
                    yield buf
                elif not item.damage:  # after damage, only hash the rest of the file
                    try:
                        yield from gunzip.feed(buf)
                    except zlib.error:
                        item.damage = "gzip_corrupt"
            if gunzip is not None and not item.damage and not gunzip.complete:
                item.damage = "gzip_truncated"
                yield gunzip.flush()  # what zlib could still decode from the last, unfinished block


class PhysicalLines:
    """The physical lines of one input file, numbered exactly as ingest numbers them (``source_line``), as Arrow
    batches ``(file_id, line_no, line, line_bin, suspect)``; ``sha256`` once the batches have all been read.
    For showing the lines behind an exposure (:func:`pipeline.explore.source_lines`)."""

    def __init__(self, path: Path) -> None:
        fmt, gz = format_of(path.name)
        self.item = _Input(path=path, kind="", fmt=fmt or "json", gz=gz, size=path.stat().st_size, order=0)
        self._stream = _LineStream([self.item], self.item.fmt)

    def batches(self) -> pa.RecordBatchReader:
        return self._stream.reader()

    @property
    def sha256(self) -> str | None:
        return self.item.sha256


def _json_records_scan(item: _Input) -> str | None:
    """DuckDB's scan of the records of ``item`` when the JSON file is laid out over lines, and sets
    ``item.json_records``: one JSON array (its first character, but for white space and a byte order mark, is
    ``[``) or pretty-printed objects one after another (its first line is a lone ``{``), which DuckDB reads to the
    end. Else None, and its lines are read one by one, as JSON lines: a file that opens so but is cut short or has
    more after it is rejected line by line, ``item.not_json_records`` saying why."""
    try:
        with gzip.open(item.path, "rb") if item.gz else open(item.path, "rb") as handle:
            head = handle.read(RECORDS_PEEK)
    except (OSError, EOFError, zlib.error):
        return None
    head = head.removeprefix(_BOM).lstrip(b" \t\r\n")
    if head.startswith(b"["):
        layout, fmt = "array", "array"
    elif head.startswith(b"{") and head[1:].lstrip(b" \t\r").startswith(b"\n"):
        layout, fmt = "documents", "unstructured"
    else:
        return None
    scan = (
        f"read_json_objects({_lit(str(item.path))}, format = '{fmt}', "
        f"compression = '{'gzip' if item.gz else 'none'}')"
    )
    con = duckdb.connect(config=NO_SPILL)
    try:
        con.execute(f"SELECT count(*) FROM {scan}").fetchone()
    except duckdb.Error as exc:
        why = _JSON_ERROR.search(str(exc))
        too_big = "maximum_object_size" in str(exc)
        reason = why[1] if why else RECORD_TOO_BIG if too_big else "DuckDB cannot read it"
        item.not_json_records = {"layout": layout, "reason": reason}
        return None
    finally:
        con.close()
    item.json_records = layout
    return scan


# Why DuckDB's read_json_objects found such a file broken: 'Malformed JSON in file "...", at byte 254 in
# record/value 4: unexpected end of data.' (the byte is counted from the start of a record, not of the file)
_JSON_ERROR = re.compile(r"in record/value \d+: ([^.\n]+)")


def _raw(line: bytes) -> str:
    """One line as rejects/ shows it (the SQL's ``raw``): without its line end, NUL and undecodable bytes as \\xNN,
    cut to RAW_CHARS characters."""
    line = line[: RAW_CHARS * 4]
    line = line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line
    return line.decode("utf-8", errors="backslashreplace").replace("\0", "\\x00")[:RAW_CHARS]


class _Gunzip:
    """Streaming gunzip that follows concatenated members and ignores trailing zero padding, as gzip does.

    Fast path: a whole compressed chunk goes to zlib in one call. zlib throws away what that call inflated when it
    meets damage, so on ``zlib.error`` the chunk is inflated again from the state before it, in small pieces and
    at last byte by byte (``GZ_STEPS``): every byte zlib can produce before the damage is yielded, then the error
    is raised again. A wrong CRC or length in a member's trailer is damage too, found after all its data."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(31)
        self._fed = False

    @property
    def complete(self) -> bool:
        """True when the data fed so far ends at the end of a member (or nothing was fed)."""
        return self._inflater.eof or not self._fed

    def flush(self) -> bytes:
        try:
            return self._inflater.flush()
        except zlib.error:
            return b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The bytes inflated from ``data``; raises ``zlib.error`` after the last byte readable before damage."""
        yield from self._feed(data, GZ_STEPS)

    def _feed(self, data: bytes, steps: tuple[int, ...]) -> Iterator[bytes]:
        careful = bool(steps) and len(data) > 1
        before = (self._inflater.copy(), self._fed) if careful else None  # zlib's state and 32 KB window: cheap
        sent = 0
        try:
            for out in self._inflate(data):
                sent += len(out)
                yield out
        except zlib.error:
            if before is None:
                raise
            self._inflater, self._fed = before  # again from the state before ``data``, in smaller pieces
            step = steps[0]
            for start in range(0, len(data), step):
                for out in self._feed(data[start : start + step], steps[1:]):  # raises at the damaged piece
                    if sent >= len(out):  # already yielded by the attempt above
                        sent -= len(out)
                        continue
                    yield out[sent:]
                    sent = 0
            raise  # the pieces fail where the whole did (else: still damaged, as zlib said)

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self._inflater.eof:
                if not data.strip(b"\0"):
                    return
                self._inflater = zlib.decompressobj(31)
            self._fed = True
            out = self._inflater.decompress(data, GZ_OUT)
            if out:
                yield out
            if self._inflater.eof:
                data = self._inflater.unused_data
                continue
            data = self._inflater.unconsumed_tail
            if not data and len(out) < GZ_OUT:
                return


# ---------------------------------------------------------------------------------------------- SQL


def _connect(scratch: Path) -> duckdb.DuckDBPyConnection:
    (scratch / "duckdb").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"temp_directory": str(scratch / "duckdb")})
    set_memory_limit(con, MEMORY_LIMIT)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    # A partitioned COPY buffers up to 524288 rows per thread and 5 row groups per open file by default: with
    # hour partitions that alone can pass the memory limit (10M requests: out of memory at 600MB, 2.2 GB RSS at
    # 2GB). Flushing sooner keeps it at a few row groups, and is faster, not slower (no spilling).
    con.execute("SET partitioned_write_flush_threshold = 131072")
    con.execute("SET write_buffer_row_group_count = 1")
    _progress.configure(con)  # DuckDB's own bar never; ours only on a terminal
    con.execute(_sql("macros.sql", id_text=id_text("t")))
    return con


def _sql(name: str, **params: str) -> str:
    """An SQL file from pipeline/sql/ingest with its ``{{placeholders}}`` filled in (comment lines dropped), in one
    pass: a value is never scanned again (a config's ts_format or logged word may hold ``{{...}}`` as text)."""
    lines = (SQL_DIR / name).read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("--"))
    missing = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)) - set(params))
    if missing:
        raise RuntimeError(f"{name}: no value for {missing}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: params[m.group(1)], text)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_lit(v) for v in values) + "]"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pointer(path: tuple[str, ...]) -> str:
    """A JSON pointer for a dotted field path: any key (dots, slashes, @) reaches its field."""
    return "/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in path)


def _text_columns(kind: str) -> tuple[str, str]:
    """The first two text columns of a kind: where a staged reject carries its reason and raw text."""
    names = [name for name, dtype in LAKE_COLUMNS[kind].items() if dtype == "VARCHAR"]
    return names[0], names[1]


def _records_sql(cfg: Config, kind: str, fields_sql: str, ts_text: bool = True) -> str:
    """The kind's records from ``fields_sql``; ``ts_text`` False for a Parquet ts column that is a timestamp
    (written as ISO text by :func:`_as_text`), which the source's ts_format must not read."""
    formatted = ts_text and bool(cfg.sources[kind].ts_format)
    local = _clock_changes(cfg.sources[kind])
    return _sql(
        f"{kind}.sql",
        fields=fields_sql,
        read_ts="whosaw_ts_formatted" if formatted else "whosaw_ts",
        ts_skipped="WHEN whosaw_ts_skipped(ts_text, ts) THEN 'nonexistent_local_ts'" if local else "",
        ts_repeated="coalesce(whosaw_ts_repeated(ts_text, ts), false)" if local else "false",
        word="whosaw_word" if _words(cfg.sources[kind]) else "lower",
        reset_ops="(" + ", ".join(_lit(op) for op in cfg.cache_ops.reset) + ")",
        statuses="(" + ", ".join(_lit(s) for s in CACHE_STATUSES) + ")",
        events="(" + ", ".join(_lit(e) for e in SESSION_EVENTS) + ")",
        record_key=_KEY_EXPR[kind],
        structured="\n            ".join(
            f"WHEN whosaw_structured({name}) THEN 'not_a_value:{name}'"
            for name in _VALUE_FIELDS[kind]
            if name in cfg.sources[kind].fields and not cfg.sources[kind].fields[name].is_const
        ),
    )


def _words(source: SourceConfig) -> str:
    """The WHENs of values.sql's ``whosaw_word(t)``: the source's values map, then the spellings ingest reads
    without one (_BUILT_IN_WORDS; a map's own word for them wins); '' when there are none. A kind has one field
    a map may name (config.VALUE_WORDS), so one macro per source serves."""
    words = {logged: word for field_words in source.values.values() for logged, word in field_words.items()}
    words = {**_BUILT_IN_WORDS.get(source.kind, {}), **words}
    return "\n        ".join(f"WHEN {_lit(logged)} THEN {_lit(word)}" for logged, word in words.items())


def _ts_read(formats: Sequence[str]) -> str:
    """The body of ts_format.sql's ``whosaw_ts_read(t)``: one try_strptime per run of formats with and without a
    zone (DuckDB types them apart: TIMESTAMPTZ, TIMESTAMP), in the config's order, each made a TIMESTAMPTZ; a run
    of formats with a zone name alone (:func:`_zone_of`) apart from those with an offset."""
    reads = []
    for zone, group in itertools.groupby(formats, key=_zone_of):
        run = list(group)
        read = f"try_strptime(t, {_list(run)})"
        if any("n" in strptime_specifiers(fmt) for fmt in run):  # %n gives the _NS types, whose casts round
            read = f"make_timestamp(epoch_ns({read}) // 1000)"  # truncated, as nanoseconds are elsewhere
            read = f"timezone('UTC', {read})" if zone else read  # a zoned run's epoch is UTC, the others' wall time
        if zone == "name":  # an abbreviation DuckDB may read as another zone than the log means (BST as Bangladesh)
            read = f"CASE WHEN whosaw_zone_named(t) THEN {read} END"
        reads.append(f"CAST({read} AS TIMESTAMPTZ)")
    return reads[0] if len(reads) == 1 else "coalesce(" + ", ".join(reads) + ")"


def _zone_of(fmt: str) -> str:
    """How a format places its time: '' wall time, 'offset' (%z: DuckDB's %z wins over a %Z beside it), 'name' (%Z
    alone, read only where the text names one zone: ts_format.sql's whosaw_zone_named)."""
    specifiers = strptime_specifiers(fmt)
    return "offset" if "z" in specifiers else "name" if "Z" in specifiers else ""


def _clock_changes(source: SourceConfig) -> bool:
    """Whether the source's wall times may fall where its zone's clocks change (local_time.sql): any zone but UTC
    (a fixed offset never changes, and costs only the checks)."""
    return source.timezone != "UTC"


def _local_wall(formats: Sequence[str]) -> str:
    """The body of local_time.sql's ``whosaw_ts_wall_read(t)``: the wall time of a text the source's ts_format
    formats without a zone read, else of an ISO text without an offset; NULL for a text that names its offset or
    zone."""
    iso = "CASE WHEN TRY_CAST(upper(t) || 'Z' AS TIMESTAMPTZ) IS NOT NULL THEN TRY_CAST(upper(t) AS TIMESTAMP) END"
    walls = [
        f"CAST(try_strptime(t, {_list(list(run))}) AS TIMESTAMP)"
        for zone, run in itertools.groupby(formats, key=_zone_of)
        if not zone
    ]
    return f"coalesce({', '.join([*walls, iso])})" if walls else iso


def _stage_sql(kind: str, records: str, source_files: list[str], raw_text: str) -> str:
    c1, c2 = _text_columns(kind)
    columns = []
    for name in LAKE_COLUMNS[kind]:
        if name == c1:
            columns.append(f"CASE WHEN reason IS NULL THEN {name} ELSE reason END AS {name}")
        elif name == c2:
            columns.append(f"CASE WHEN reason IS NULL THEN {name} ELSE left({raw_text}, {RAW_CHARS}) END AS {name}")
        else:
            columns.append(name)
    return _sql(
        "stage.sql",
        columns=",\n       ".join(columns),
        source_files=_list(source_files),
        records=records,
        raw_chars=str(RAW_CHARS),
        c1=c1,
        c2=c2,
    )


def _copy(dest: Path, select: str) -> str:
    options = f"{LAKE_WRITE_OPTIONS}, PARTITION_BY (pkey), FILENAME_PATTERN 'part-{{i}}'"
    return f"COPY ({select}) TO {_lit(str(dest))} ({options})"


def _field_expr(spec: FieldSpec, lookup: dict[tuple[str, ...], str]) -> str:
    if spec.is_const:
        return _lit(spec.const or "")
    return lookup.get(spec.path, "CAST(NULL AS VARCHAR)")


# ---------------------------------------------------------------------------------------------- one kind


def _ingest_kind(
    con: duckdb.DuckDBPyConnection,
    cfg: Config,
    kind: str,
    files: list[_Input],
    out: Path,
    scratch: Path,
    run_id: str,
    show: bool | None,
    read_before: dict[str, set[str] | None],
) -> list[tuple[Path, Path]]:
    """Stage every file of one kind, drop duplicates and count; returns the moves of the new parts into the lake
    (made only once every kind is staged, so a failure leaves the lake as it was). ``read_before``: the paths of
    the kind the manifest lists (a file among them grew since), each with the fields its earlier lines lack."""
    source = cfg.sources[kind]
    groups: list[tuple[str, list[_Input]]] = []
    json_files = [f for f in files if f.fmt == "json"]
    if json_files:
        groups.append(("json", json_files))
    by_header: dict[tuple[str, ...], list[_Input]] = {}
    for f in files:
        if f.fmt == "csv":
            by_header.setdefault(tuple(f.header or ()), []).append(f)
    groups.extend(("csv", group) for group in by_header.values())
    groups.extend(("parquet", [f]) for f in files if f.fmt == "parquet")

    stage_root = scratch / "stage" / kind
    stage_root.mkdir(parents=True, exist_ok=True)
    if source.ts_format:
        con.execute(_sql("ts_format.sql", read=_ts_read(source.ts_format)))
    if _words(source):
        con.execute(_sql("values.sql", words=_words(source)))
    if _clock_changes(source):
        with _in_zone(con, source.timezone):  # its table of the zone's changes is made there
            con.execute(_sql("local_time.sql", wall=_local_wall(source.ts_format)))
    for number, (fmt, group) in enumerate(groups):
        dest = stage_root / f"g{number}"
        label = f"ingest {kind} ({len(group)} {fmt} file{'s' if len(group) > 1 else ''})"
        with _in_zone(con, source.timezone):
            if fmt == "parquet":
                _stage_parquet(con, cfg, kind, group[0], dest, scratch, label, show)
            else:
                _stage_text(con, cfg, kind, fmt, group, dest, label, show)

    by_path = {str(f.path): f for f in files}
    again = [str(f.path) for f in files if str(f.path) in read_before]  # grown files, read again whole
    repeated = sorted(stage_root.glob("g*/pkey=-2/*.parquet"))
    if repeated:
        _place_repeated_hour(con, kind, source, stage_root, repeated, again, out)
    record_files: dict[int, list[Path]] = {}
    reject_files: list[Path] = []
    for group_dir in sorted(stage_root.glob("g*")):
        for part_dir in group_dir.glob("pkey=*"):
            hour = int(part_dir.name.split("=", 1)[1])
            parts = sorted(part_dir.glob("*.parquet"))
            if hour == -1:
                reject_files.extend(parts)
            elif hour >= 0:
                record_files.setdefault(hour, []).extend(parts)

    c1, c2 = _text_columns(kind)
    if reject_files:
        con.execute(
            f"INSERT INTO new_rejects SELECT {_lit(kind)}, source_file, source_line, {c1}, {c2} "
            f"FROM read_parquet({_list([str(p) for p in reject_files])}, hive_partitioning = false)"
        )
    extra = [(kind, str(f.path), f.damage_line, f.damage, f.damage_raw) for f in files if f.damage]
    extra += [(kind, str(f.path), 1, f.header_reason, f.header_raw) for f in files if f.header_raw is not None]
    if extra:  # gzip damage, a first line that is not a header
        con.executemany("INSERT INTO new_rejects VALUES (?, ?, ?, ?, ?)", extra)
    for path, count in _drop_known_rejects(con, kind, out):
        by_path[path].duplicates += count
    for path, reason, count in con.execute(
        "SELECT source_file, reason, count(*) FROM new_rejects WHERE kind = ? GROUP BY 1, 2 ORDER BY 3 DESC, 2",
        [kind],
    ).fetchall():
        by_path[path].reject_reasons[reason] = count
        by_path[path].rejected += count

    staged = [p for parts in record_files.values() for p in parts]
    if staged:
        _drop_duplicates(con, kind, files, staged, record_files, out)  # may empty (and drop) staged files
    _refuse_names_taken(con, kind, [by_path[path] for path in again], staged, out)
    if staged:
        new = f"read_parquet({_list([str(p) for p in staged])}, hive_partitioning = false)"
        # the evidence fields, and every field the config maps to a path: a path no line has is a mistyped map
        mapped = [name for name in LAKE_COLUMNS[kind] if name in source.fields and not source.fields[name].is_const]
        fields = tuple(dict.fromkeys([*EVIDENCE_FIELDS[kind], *mapped]))
        present = ", ".join(f"count({name})" for name in fields)
        counts = con.execute(f"SELECT source_file, count(*), {present} FROM {new} GROUP BY 1").fetchall()
        for path, count, *filled in counts:
            by_path[path].kept = count
            # a grown file keeps its new lines only: a field is empty in the file if its earlier lines lacked it too
            earlier = read_before.get(path)
            by_path[path].empty_fields = [
                name for name, n in zip(fields, filled, strict=True) if not n and (earlier is None or name in earlier)
            ]
        # counted once the duplicates are dropped: a grown file read again places its earlier lines again
        placed = [p for p in staged if p.parent.parent.name == "g-repeated"]
        if placed:
            for path, count in con.execute(
                f"SELECT source_file, count(*) FROM read_parquet({_list([str(p) for p in placed])}, "
                "hive_partitioning = false) GROUP BY 1"
            ).fetchall():
                by_path[path].placed_in_repeated_hour = count

    for path, count in _supersede_earlier_rejects(con, kind, again, staged, out):
        by_path[path].superseded_rejects = count

    for f in files:  # checked before the lake is touched: a mismatch is a bug, never a user error
        if f.lines != f.kept + f.duplicates + f.rejected:
            raise RuntimeError(f"ingest: counts do not reconcile for {f.path}")
    lake = out / "parquet" / kind
    return [
        (part, lake / _partition(hour) / f"{run_id}-{part.parent.parent.name}-{part.stem}.parquet")
        for hour, parts in record_files.items()
        for part in parts
    ]


@contextlib.contextmanager
def _in_zone(con: duckdb.DuckDBPyConnection, zone: str) -> Iterator[None]:
    """Statements run with the session TimeZone set to a source's zone: a zone-less time is read there."""
    con.execute(f"SET TimeZone = {_lit(zone)}")
    try:
        yield
    finally:
        con.execute("SET TimeZone = 'UTC'")


def _place_repeated_hour(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    source: SourceConfig,
    stage_root: Path,
    repeated: list[Path],
    again: list[str],
    out: Path,
) -> None:
    """Place the staged lines whose wall time the source's zone repeats (stage.sql's pkey -2) by their file's order
    (repeated_hour.sql): stage them as records of their hour in a group of their own (``g-repeated``), reject those
    the order cannot place (ambiguous_local_ts). A line of a file the lake already holds lines of (``again``: a live
    log read again) keeps the instant it was given then, as the lake's other lines keep their reading: a log that
    ended inside the first pass when it was first read, then went on without a second pass, would otherwise turn
    its placed lines into rejects (and its line numbers would name two lines)."""
    records = [p for p in stage_root.glob("g*/pkey=*/*.parquet") if not p.parent.name.startswith("pkey=-")]
    lines = f"read_parquet({_list([str(p) for p in repeated])}, hive_partitioning = false)"
    context = (
        f"read_parquet({_list([str(p) for p in sorted(records)])}, hive_partitioning = false)"
        if records
        else "(SELECT CAST(NULL AS VARCHAR) AS source_file, CAST(NULL AS BIGINT) AS source_line WHERE false)"
    )
    with _in_zone(con, source.timezone):
        con.execute(_sql("repeated_hour.sql", repeated=lines, records=context))
    lake = out / "parquet" / kind
    if again and any(lake.glob("*/*/*.parquet")):
        with _reading_lake(con, lake):
            con.execute(
                "UPDATE repeated_hour_placed AS p SET placed_ts = l.ts, placement = 'read_before' FROM ("
                f"SELECT source_file, source_line, ts FROM read_parquet({_lit(str(lake / '*' / '*' / '*.parquet'))}, "
                f"hive_partitioning = false) WHERE source_file IN ({', '.join(_lit(path) for path in again)})) AS l "
                "WHERE p.source_file = l.source_file AND p.source_line = l.source_line"
            )
    placed = (
        f"SELECT l.* REPLACE (p.placed_ts AS ts) FROM {lines} AS l "
        "INNER JOIN repeated_hour_placed AS p ON l.source_file = p.source_file AND l.source_line = p.source_line "
        "WHERE p.placed_ts IS NOT NULL"
    )
    con.execute(_copy(
        stage_root / "g-repeated",
        f"SELECT * REPLACE ({_KEY_EXPR[kind]} AS record_key), epoch_us(ts) // 3600000000 AS pkey FROM ({placed})",
    ))
    con.execute(
        f"INSERT INTO new_rejects SELECT {_lit(kind)}, source_file, source_line, 'ambiguous_local_ts', NULL "
        "FROM repeated_hour_placed WHERE placed_ts IS NULL"
    )


def _partition(hour: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=hour)
    return f"date={moment.date().isoformat()}/hour={moment.hour}"


def _stage_text(
    con: duckdb.DuckDBPyConnection,
    cfg: Config,
    kind: str,
    fmt: str,
    files: list[_Input],
    dest: Path,
    label: str,
    show: bool | None,
) -> None:
    """Stage JSON Lines or CSV files (with one header) of one kind in one streaming COPY."""
    try:
        _copy_stream(con, files, fmt, dest, _text_select(cfg, kind, fmt, files, careful=False), label, show)
    except duckdb.InvalidInputException as exc:
        if fmt != "json" or "Malformed JSON" not in str(exc):
            raise
        # A malformed line that looked like an object: run again, parsing every line carefully.
        shutil.rmtree(dest, ignore_errors=True)
        _copy_stream(con, files, fmt, dest, _text_select(cfg, kind, fmt, files, careful=True), label, show)


def _text_select(cfg: Config, kind: str, fmt: str, files: list[_Input], careful: bool) -> str:
    source = cfg.sources[kind]
    lines = _sql("lines.sql", source="whosaw_lines")
    names = list(LAKE_COLUMNS[kind])
    if fmt == "json":
        paths, fields = _json_fields(source, names)
        document = "text"
        if source.payload:
            document = f"try(json_extract_string(text, {_lit(_pointer(source.payload))}))"
        elif source.payload_pattern:
            document = f"nullif(regexp_extract(whosaw_chomp(text), {_lit(source.payload_pattern)}, 1), '')"
        payload = document != "text"
        fields_sql = _sql(
            "json_fields.sql",
            fields=fields,
            lines=lines,
            # a payload's text is no line the stream could look at: always parsed carefully
            careful="true" if careful or payload else "suspect",
            document=document,
            payload="true" if payload else "false",
            envelope_broken="NOT json_valid(text)" if source.payload else "false",
            paths=paths,
        )
    else:
        header = files[0].header or []
        cells = _sql("csv_cells.sql", lines=lines, ncols=str(max(1, len(header))))
        if source.payload:  # one column holds the record as JSON
            column = _column_for(header, ".".join(source.payload))
            paths, fields = _json_fields(source, names)
            fields_sql = _sql(
                "csv_payload_fields.sql", fields=fields, cells=cells, paths=paths,
                column="NULL" if column is None else str(header.index(column) + 1),
            )
        else:
            fields_sql = _sql("csv_fields.sql", fields=_csv_fields(source, names, header), cells=cells)
    records = _records_sql(cfg, kind, fields_sql)
    return _stage_sql(kind, records, [str(f.path) for f in files], "replace(whosaw_chomp(raw), chr(0), '\\x00')")


def _csv_fields(source: SourceConfig, names: list[str], header: list[str]) -> str:
    """The select list that takes each field's text from its cell ``v[i]`` by the header."""

    def field(i: int) -> str:  # spaces and tabs around a CSV field are padding (", bob"), not part of it
        return f"trim(v[{i}], ' ' || chr(9))"

    lookup = {}
    for i, column in enumerate(header, start=1):
        lookup.setdefault((column,), field(i))
    for n in names:  # a dotted name ("ctx.user.id") as a column; a name in another case
        spec = source.field_spec(n)
        column = None if spec.is_const or spec.path in lookup else _column_for(header, ".".join(spec.path))
        if column is not None:
            lookup[spec.path] = field(header.index(column) + 1)
    return ",\n       ".join(f"{_field_expr(source.field_spec(n), lookup)} AS f_{n}" for n in names)


def _json_fields(source: SourceConfig, names: list[str]) -> tuple[str, str]:
    """The JSON pointers (an SQL list) of the fields a JSON record is read for, and the select list that takes each
    field's text from their values ``v``."""
    mapped = {source.field_spec(n).path for n in names if not source.field_spec(n).is_const}
    # a dotted path also reaches a key with the dots in its name, as in a CSV header or a Parquet column:
    # Elastic Common Schema logs write user.id nested ({"user": {"id": ...}}) or flat ({"user.id": ...})
    flat = {path: (".".join(path),) for path in mapped if len(path) > 1}
    paths = sorted(mapped | set(flat.values()))
    at = {path: f"v[{i}]" for i, path in enumerate(paths, start=1)}
    lookup = {path: f"coalesce({at[path]}, {at[flat[path]]})" if path in flat else at[path] for path in mapped}
    fields = ",\n       ".join(f"{_field_expr(source.field_spec(n), lookup)} AS f_{n}" for n in names)
    return _list([_pointer(p) for p in paths]), fields


def _copy_stream(
    con: duckdb.DuckDBPyConnection,
    files: list[_Input],
    fmt: str,
    dest: Path,
    select: str,
    label: str,
    show: bool | None,
) -> None:
    """One streaming COPY of ``select`` over the lines of ``files``."""
    stream = _LineStream(files, fmt)
    con.register("whosaw_lines", stream.reader())
    try:
        _progress.execute(con, _copy(dest, select), label, show, fraction=stream.fraction)
    except duckdb.Error:
        if stream.failed:
            path, exc = stream.failed
            raise WhosawError(f"input {path} could not be read to the end ({exc.__class__.__name__})") from None
        raise
    finally:
        con.unregister("whosaw_lines")


def _stage_parquet(
    con: duckdb.DuckDBPyConnection,
    cfg: Config,
    kind: str,
    item: _Input,
    dest: Path,
    scratch: Path,
    label: str,
    show: bool | None,
) -> None:
    path = item.path
    if item.gz:
        path = scratch / f"parquet-{item.order}.parquet"
        try:
            with gzip.open(item.path, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, GZ_CHUNK)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            item.damage = "gzip_truncated" if isinstance(exc, EOFError) else "gzip_corrupt"
            item.damage_line, item.lines = 1, 1
            return
    source = cfg.sources[kind]
    scan = f"read_parquet({_lit(str(path))}, hive_partitioning = false)"
    try:
        columns = con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
        item.lines = con.execute(f"SELECT count(*) FROM {scan}").fetchone()[0]
    except duckdb.Error:
        raise WhosawError(f"input {item.path} is not a readable Parquet file") from None
    top = [name for name, *_ in columns]
    named = _parquet_column_names(path, top)
    lookup: dict[tuple[str, ...], str] = {}
    dtypes: dict[tuple[str, ...], str] = {}
    for n in LAKE_COLUMNS[kind]:
        spec = source.field_spec(n)
        if spec.is_const or spec.path in lookup:
            continue
        candidates = []
        if (first := _parquet_column_for(named, spec.path[0])) is not None:
            candidates.append("p." + ".".join(_ident(part) for part in (first, *spec.path[1:])))
        if (dotted := _parquet_column_for(named, ".".join(spec.path))) is not None:
            candidates.append("p." + _ident(dotted))
        for expr in candidates:
            try:
                dtype = con.execute(f"DESCRIBE SELECT {expr} AS x FROM {scan} AS p").fetchall()[0][1]
            except duckdb.Error:
                continue
            lookup[spec.path], dtypes[spec.path] = _as_text(expr, dtype), dtype
            break
    fields = ",\n       ".join(f"{_field_expr(source.field_spec(n), lookup)} AS f_{n}" for n in LAKE_COLUMNS[kind])
    row = "{" + ", ".join(f"{_lit(name)}: p.{_ident(name)}" for name, *_ in columns) + "}"
    clash = "file_row_number" in {name.lower() for name in top}  # DuckDB's option refuses a column of its name
    fields_sql = _sql(
        "parquet_fields.sql",
        fields=fields,
        row=row,
        path=_lit(str(path)),
        row_number="row_number() OVER () - 1" if clash else "file_row_number",
        file_row_number="false" if clash else "true",
    )
    ts_type = dtypes.get(source.field_spec("ts").path, "")  # a timestamp column is a time already
    records = _records_sql(cfg, kind, fields_sql, ts_text=not _is_timestamp(ts_type))
    select = _stage_sql(kind, records, [str(item.path)], "CAST(to_json(raw) AS VARCHAR)")
    try:
        if clash:  # row_number() OVER () then numbers the rows in the file's order
            con.execute("SET preserve_insertion_order = true")
        try:
            _progress.execute(con, _copy(dest, select), label, show)
        finally:
            if clash:
                con.execute("SET preserve_insertion_order = false")
    except duckdb.InterruptException:
        raise
    except duckdb.Error:
        # A footer that reads but data that does not (a damaged page, a string that is not UTF-8) fails the COPY
        # with whatever DuckDB says: the file's fault when reading every column of it alone fails too.
        try:
            con.execute(f"SELECT bit_xor(hash({row})) FROM {scan} AS p").fetchall()
        except duckdb.Error:
            raise WhosawError(f"input {item.path} is a damaged Parquet file: its rows cannot be read") from None
        raise


def _is_timestamp(dtype: str) -> bool:
    """A Parquet column of times (any unit, with or without a zone), not a list or an array of them."""
    return dtype.startswith("TIMESTAMP") and not dtype.endswith("]")


def _as_text(expr: str, dtype: str) -> str:
    """A typed Parquet value as the text the ingest rules read (timestamps as ISO-8601). A column with a zone, in
    any unit (DuckDB names nanoseconds ``TIMESTAMPTZ_NS``: pandas' default), is written in UTC with its ``Z``: as
    wall time in the source's zone, the hour repeated when clocks go back would be read as the later one."""
    if dtype.endswith("]") or dtype.startswith(("STRUCT", "MAP", "UNION")):
        # a nested value as the JSON logs give it (JSON text): a list column of keys is a multi-key call's key,
        # '["user:alice:titles","billing:alice"]'; DuckDB's own cast wrote "[user:alice:titles, billing:alice]",
        # a plain key no rule matches (docs/design.md "Multi-key calls"). A list of times is no time (bad_ts).
        return f"CAST(to_json({expr}) AS VARCHAR)"
    if _is_timestamp(dtype) and (dtype.startswith("TIMESTAMPTZ") or dtype.endswith("WITH TIME ZONE")):
        return f"strftime(timezone('UTC', {expr}), '%Y-%m-%dT%H:%M:%S.%fZ')"
    if _is_timestamp(dtype):
        return f"strftime(CAST({expr} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%f')"
    if dtype in ("FLOAT", "DOUBLE"):  # a whole number as an integer: pandas stores an id column with gaps as float64,
        # and user 42 read as '42.0' would be another user than the '42' of the JSON logs and of key user:42:...
        # From 2**53 on it may be another number than was meant: its text, as pandas' CSV and the side tables give it.
        whole = f"isfinite({expr}) AND {expr} = trunc({expr}) AND abs({expr}) < {FLOAT_EXACT_LIMIT}"
        return f"CASE WHEN {whole} THEN CAST(TRY_CAST({expr} AS BIGINT) AS VARCHAR) ELSE CAST({expr} AS VARCHAR) END"
    return f"CAST({expr} AS VARCHAR)"


# ---------------------------------------------------------------------------------------------- duplicates


def _refuse_names_taken(
    con: duckdb.DuckDBPyConnection, kind: str, again: list[_Input], staged: list[Path], out: Path
) -> None:
    """A line is known by (source_file, source_line): the analysis numbers cache lines by it. A file at a path the
    lake holds lines of adds only lines of new numbers when it is that file grown, or the same lines written anew
    (its earlier lines are duplicates). Other content there (logrotate's new cache.jsonl once the old one is
    cache.jsonl.1, a file truncated in place) would give a kept or rejected line the name of another, and join two
    connections' calls: refused before the lake is touched. Only for files at such paths (``again``)."""
    lake = out / "parquet" / kind
    if not again or not any(lake.glob("*/*/*.parquet")):
        return
    paths = "(" + ", ".join(_lit(str(f.path)) for f in again) + ")"
    names = [f"SELECT source_file, source_line FROM new_rejects WHERE kind = {_lit(kind)} AND source_file IN {paths}"]
    if staged:
        files = _list([str(p) for p in staged])
        names.append(f"SELECT source_file, source_line FROM read_parquet({files}, hive_partitioning = false) "
                     f"WHERE source_file IN {paths}")
    with _reading_lake(con, lake):
        taken = con.execute(
            f"SELECT source_file FROM ({' UNION ALL '.join(names)}) AS n SEMI JOIN ("
            f"SELECT source_file, source_line FROM read_parquet({_lit(str(lake / '*' / '*' / '*.parquet'))}, "
            f"hive_partitioning = false) WHERE source_file IN {paths}) AS l USING (source_file, source_line) LIMIT 1"
        ).fetchall()
    if taken:
        raise WhosawError(
            f"input {taken[0][0]} holds other lines than when it was ingested (rotated or rewritten in place? its "
            "last line cut then?): its line numbers would name two lines; copy a rotated file under a name of its "
            "own, else ingest into a new --out"
        )


@contextlib.contextmanager
def _reading_lake(con: duckdb.DuckDBPyConnection, lake: Path) -> Iterator[None]:
    """A statement that reads the lake of a kind (``lake``): a file of it no longer readable (damaged by hand, a
    disk error) is a damaged ``--out``, named in one line, not an internal error."""
    try:
        yield
    except (duckdb.InterruptException, duckdb.OutOfMemoryException):
        raise
    except duckdb.Error:
        damaged = first_unreadable_parquet(con, sorted(lake.rglob("*.parquet")))
        if damaged is None:
            raise
        raise WhosawError(f"the lake is damaged: {damaged} is not readable Parquet") from None


def _drop_duplicates(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    files: list[_Input],
    staged: list[Path],
    record_files: dict[int, list[Path]],
    out: Path,
) -> None:
    """Find re-shipped duplicates among the staged records and against the lake; rewrite the staged files
    that hold one, without it; count them against the file where the later copy sits."""
    lake = out / "parquet" / kind
    if kind == "requests":
        old_files = sorted(lake.glob("*/*/*.parquet"))
    else:  # the identity includes ts, so a duplicate of a lake row sits in the same hour partition
        old_files = [p for hour in record_files for p in sorted((lake / _partition(hour)).glob("*.parquet"))]
    identity = ["request_id"] if kind == "requests" else list(LAKE_COLUMNS[kind])
    key_expr = _KEY_EXPR[kind]
    new = f"read_parquet({_list([str(p) for p in staged])}, hive_partitioning = false)"
    old = (
        f"read_parquet({_list([str(p) for p in old_files])}, hive_partitioning = false, union_by_name = true)"
        if old_files
        else f"(SELECT * FROM {new} LIMIT 0)"
    )
    repeated = f"SELECT count(*) FROM (SELECT record_key FROM {new} GROUP BY record_key HAVING count(*) > 1)"
    if not old_files and not con.execute(repeated).fetchone()[0]:
        return  # the common case, settled with one pass over one column (a GROUP BY, which can spill)
    con.execute("CREATE OR REPLACE TEMP TABLE file_order (source_file VARCHAR, file_order INTEGER)")
    con.executemany("INSERT INTO file_order VALUES (?, ?)", [(str(f.path), f.order) for f in files])
    with _reading_lake(con, lake):
        con.execute(_sql("duplicate_keys.sql", new=new, old=old, key_expr=key_expr))
    if not con.execute("SELECT count(*) FROM dup_keys").fetchone()[0]:
        return
    differs = " OR ".join(f"first_value({c}) OVER w IS DISTINCT FROM {c}" for c in _VIEWER_FIELDS.get(kind, ()))
    con.execute(_sql(
        "duplicate_rows.sql", new=new, old=old, key_expr=key_expr, identity=", ".join(identity),
        viewer="".join(f", {c}" for c in _VIEWER_FIELDS.get(kind, ())), differs=differs or "false",
    ))
    drops = con.execute(
        "SELECT source_file, count(*), count(*) FILTER (WHERE differs) FROM dup_rows GROUP BY 1"
    ).fetchall()
    if not drops:
        return
    by_path = {str(f.path): f for f in files}
    for path, count, differing in drops:
        by_path[path].duplicates += count
        by_path[path].differing_duplicates += differing
    if kind == "cache":
        # Two identical lines of one file are a re-shipped copy when its times are to the microsecond; at whole
        # milliseconds (or seconds) they may be one request reading a key twice on one connection, and dropping
        # one shifts that connection's replies by one for the connection tier. Still dropped, but counted.
        coarse = con.execute(
            f"SELECT d.source_file, count(*) FROM dup_rows AS d JOIN (SELECT source_file FROM {new} "
            "WHERE source_file IN (SELECT source_file FROM dup_rows WHERE same_file) GROUP BY source_file "
            "HAVING bool_and(epoch_us(ts) % 1000 = 0)) AS c USING (source_file) WHERE d.same_file GROUP BY 1"
        ).fetchall()
        for path, count in coarse:
            by_path[path].coarse_repeats += count
    holding = con.execute(
        f"SELECT DISTINCT filename FROM read_parquet({_list([str(p) for p in staged])}, filename = true, "
        "hive_partitioning = false) SEMI JOIN dup_rows USING (source_file, source_line)"
    ).fetchall()
    for (name,) in holding:
        part = Path(name)
        tmp = part.with_suffix(".dedup")
        con.execute(
            f"COPY (SELECT * FROM read_parquet({_lit(name)}, hive_partitioning = false) "
            f"ANTI JOIN dup_rows USING (source_file, source_line)) TO {_lit(str(tmp))} ({LAKE_WRITE_OPTIONS})"
        )
        if con.execute(f"SELECT count(*) FROM read_parquet({_lit(str(tmp))})").fetchone()[0]:
            os.replace(tmp, part)
        else:
            tmp.unlink()
            part.unlink()
            for parts in record_files.values():
                if part in parts:
                    parts.remove(part)
            staged.remove(part)


# ---------------------------------------------------------------------------------------------- rejects


def _drop_known_rejects(con: duckdb.DuckDBPyConnection, kind: str, out: Path) -> list[tuple[str, int]]:
    """Take out of this run's rejects the lines an earlier run already rejected (same file, line, reason and
    text: a file that grew since is read again whole) and return their count per file. They are listed once in
    ``rejects/`` and counted as duplicates, lines already accounted for, as the file's earlier good lines are."""
    earlier = out / "rejects" / f"{kind}.parquet"
    if not earlier.is_file():
        return []
    con.execute(
        "CREATE OR REPLACE TEMP TABLE known_rejects AS SELECT n.rowid AS row_id, n.source_file FROM new_rejects n "
        f"SEMI JOIN read_parquet({_lit(str(earlier))}) e ON n.source_file = e.source_file "
        "AND n.source_line = e.source_line AND n.reason = e.reason AND n.raw IS NOT DISTINCT FROM e.raw "
        f"WHERE n.kind = {_lit(kind)}"
    )
    counts = con.execute("SELECT source_file, count(*) FROM known_rejects GROUP BY 1").fetchall()
    con.execute("DELETE FROM new_rejects WHERE rowid IN (SELECT row_id FROM known_rejects)")
    return counts


def _supersede_earlier_rejects(
    con: duckdb.DuckDBPyConnection, kind: str, again: list[str], staged: list[Path], out: Path
) -> list[tuple[str, int]]:
    """A grown file read again whole: the last line of its earlier reading, cut short then and rejected, is whole
    now, and kept or rejected for another reason. The earlier reject no longer describes the file: it leaves
    ``rejects/`` (table ``superseded_rejects``, which :func:`_write_rejects` reads), and is counted per file, so
    the rejected lines the manifest totals are those ``rejects/`` lists. (An identical reject is a duplicate:
    :func:`_drop_known_rejects`.)"""
    earlier = out / "rejects" / f"{kind}.parquet"
    if not again or not earlier.is_file():
        return []
    read_now = [f"SELECT source_file, source_line FROM new_rejects WHERE kind = {_lit(kind)}"]
    if staged:
        read_now.append(
            f"SELECT source_file, source_line FROM read_parquet({_list([str(p) for p in staged])}, "
            "hive_partitioning = false)"
        )
    con.execute(
        f"INSERT INTO superseded_rejects SELECT DISTINCT {_lit(kind)}, e.source_file, e.source_line "
        f"FROM read_parquet({_lit(str(earlier))}) AS e SEMI JOIN ({' UNION ALL '.join(read_now)}) AS n "
        "ON e.source_file = n.source_file AND e.source_line = n.source_line "
        f"WHERE e.source_file IN ({', '.join(_lit(path) for path in again)})"
    )
    return con.execute(
        f"SELECT source_file, count(*) FROM superseded_rejects WHERE kind = {_lit(kind)} GROUP BY 1"
    ).fetchall()


def _write_rejects(con: duckdb.DuckDBPyConnection, out: Path) -> None:
    """rejects/<kind>.parquet and .csv (spreadsheet-safe): earlier runs' rejects, less those this run superseded,
    plus this run's."""
    folder = out / "rejects"
    folder.mkdir(parents=True, exist_ok=True)
    counts = dict(con.execute("SELECT kind, count(*) FROM new_rejects GROUP BY 1").fetchall())
    superseded = dict(con.execute("SELECT kind, count(*) FROM superseded_rejects GROUP BY 1").fetchall())
    if not counts and not superseded:
        return
    detail = "CASE " + " ".join(f"WHEN reason = {_lit(code)} THEN {_lit(text)}" for code, text in REASONS.items())
    detail += (
        " WHEN starts_with(reason, 'missing_field:') THEN 'required field ' || reason[15:] || "
        "' is missing or empty'"
        " WHEN starts_with(reason, 'not_a_value:') THEN 'field ' || reason[13:] || ' is a JSON object or array, "
        "not a value: map the field inside it (a dotted path, e.g. user.id)' END"
    )
    for kind in KINDS:
        if not counts.get(kind) and not superseded.get(kind):
            continue
        target = folder / f"{kind}.parquet"
        rows = f"SELECT source_file, source_line, reason, raw FROM new_rejects WHERE kind = {_lit(kind)}"
        if target.exists():
            rows += (
                f" UNION ALL SELECT source_file, source_line, reason, raw FROM read_parquet({_lit(str(target))}) "
                f"ANTI JOIN (SELECT source_file, source_line FROM superseded_rejects WHERE kind = {_lit(kind)}) "
                "USING (source_file, source_line)"
            )
        select = _sql("rejects.sql", rows=rows, detail=detail)
        con.execute(f"CREATE OR REPLACE TEMP TABLE rejects_out AS {select}")
        tmp = target.with_suffix(".parquet.tmp")
        con.execute(f"COPY rejects_out TO {_lit(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
        os.replace(tmp, target)
        csv_tmp = folder / f".{kind}.csv.tmp"
        copy_safe_csv(con, "SELECT * FROM rejects_out", csv_tmp)
        os.replace(csv_tmp, folder / f"{kind}.csv")
