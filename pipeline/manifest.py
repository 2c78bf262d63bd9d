"""manifest.json: what went in (files, hashes, counts), with which settings, and what came out (hashes).

Each stage updates its own sections; ``outputs`` (the SHA-256 of every file whosaw wrote under OUT) is brought
up to date with the files on disk at the end of a stage. ``output_stats`` records each output's size and
modification time (ns) when it was hashed: a file whose size and mtime have not changed since keeps its hash,
because the lake is written once and only read afterwards, and re-hashing it at the end of every stage cost
about 1 s per GB.

Also what keeps OUT consistent across stages and processes: :func:`locked` (one stage at a time writes to OUT),
:func:`ctrl_c_waits` (the steps that change OUT together are not cut by Ctrl-C), the ingest commit journal
(:func:`begin_ingest_commit`: a killed ingest is rolled back by the next stage), and
:func:`remove_stage_outputs` (no analysis or report outlives the data it was made from).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from .errors import WhosawError

MANIFEST_NAME = "manifest.json"
PENDING_NAME = ".ingest-pending"  # an ingest's commit in progress: see begin_ingest_commit
HISTORY_DIR = "history"  # the reports that later data or a later analysis replaced: see remove_stage_outputs
HISTORY_STAMP = "%Y%m%dT%H%M%S.%fZ"  # history/report-<when it was made, UTC>: names that sort by time
KEPT_NAME = "kept.json"  # in a kept report's folder: when it was made, and the SHA-256 of the lists it wrote
REANALYSIS_MARK = ".whosaw-reanalysis"  # in a folder explore.reanalyze made: its lake is another --out's
LOCK_NAME = ".ingest.lock"  # the name an ingest has always locked: every stage now takes it
_CHUNK = 1 << 20
_held: dict[Path, tuple[int, int]] = {}  # folders this process holds the lock of: (thread, depth) (run = 3 stages)
_held_guard = threading.Lock()


@contextlib.contextmanager
def ctrl_c_waits() -> Iterator[None]:
    """Ctrl-C during the block takes effect when it is done: the steps that change OUT's lake, rejects, outputs and
    manifest together (main thread only: Python's signal handlers run there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed and previous is not signal.SIG_IGN:
        if callable(previous):
            previous(signal.SIGINT, None)  # the handler that was in place (Python's raises KeyboardInterrupt)
        raise KeyboardInterrupt


@contextlib.contextmanager
def locked(out: Path, stage: str) -> Iterator[None]:
    """One whosaw stage at a time writes to ``out`` (``ingest``, ``analyze``, ``report``; ``run`` holds it across
    the three). Without it an analysis of the lake before a concurrent ingest, or a report of an analysis that a
    concurrent analyze or ingest replaced, was written after that stage removed the stale outputs and listed as
    current. A second process is refused at once (exit 2); the lock goes with the process, even one that is
    killed. Re-entrant within the thread that holds it (another thread, e.g. a background job in a notebook, is
    refused as another process is). A folder that does not exist is not locked (the stage says why)."""
    out = Path(os.path.abspath(out))
    if not out.is_dir():
        yield
        return
    me = threading.get_ident()
    with _held_guard:
        owner, depth = _held.get(out, (me, 0))
        if depth and owner == me:  # re-entrant in the thread that holds it; another thread is refused below
            _held[out] = (me, depth + 1)
    if depth and owner == me:
        try:
            yield
        finally:
            with _held_guard:
                _held[out] = (me, _held[out][1] - 1)
        return
    try:  # never through a link: the lock file is truncated, and a planted link could point anywhere
        descriptor = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise WhosawError(f"cannot lock {out / LOCK_NAME} ({exc.strerror or exc.__class__.__name__})") from None
    with os.fdopen(descriptor, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(200).strip() or "ingest"
            raise WhosawError(f"another {holder} is writing to {out}; try again when it is done") from None
        handle.truncate(0)
        handle.write(f"{stage} (pid {os.getpid()})\n")
        handle.flush()
        with _held_guard:
            _held[out] = (me, 1)
        try:
            roll_back_interrupted_ingest(out)
            _remove_scratch(out)
            yield
        finally:
            with _held_guard:
                del _held[out]
            handle.truncate(0)  # no holder named once it is free


def remove_stage_scratch(out: Path, folder: Path) -> None:
    """A stage's own scratch folder under ``OUT/.tmp`` (its spill, its staged files), then ``OUT/.tmp`` itself
    once nothing else is in it."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        (out / ".tmp").rmdir()


def _remove_scratch(out: Path) -> None:
    """``OUT/.tmp``'s folders, which only a stage holding the lock uses: those left by a killed stage (an
    analysis's staged exposures, an ingest's staged lake parts) went nowhere else."""
    scratch = out / ".tmp"
    if scratch.is_dir() and not scratch.is_symlink():
        for stale in scratch.iterdir():
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            scratch.rmdir()


_PATTERN_CHARACTERS = "*?[]{}\\"


def refuse_pattern_characters(out: Path) -> None:
    """DuckDB and Spark read the lake by file patterns (``OUT/parquet/<kind>/**/*.parquet``), in which these
    characters are wildcards or escapes: the analysis of ``--out case[1]`` read the lake of a folder ``case1`` beside
    it. Such an ``--out`` is refused (one line, exit 2) by every stage that reads the lake so."""
    found = [c for c in _PATTERN_CHARACTERS if c in os.path.abspath(out)]
    if found:
        raise WhosawError(
            f"--out {out}: its path holds {' '.join(found)}, a wildcard in the file patterns the lake is read by "
            "(another folder's lake could be read); choose a folder whose path has none of * ? [ ] { } \\"
        )


def sha256_file(path: Path, size: int | None = None) -> str:
    """The file's SHA-256, or that of its first ``size`` bytes (what an earlier run of a live log hashed)."""
    digest = hashlib.sha256()
    left = size
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK if left is None else min(_CHUNK, left)):  # read(0) is b"": the end
            digest.update(chunk)
            left = None if left is None else left - len(chunk)
    return digest.hexdigest()


_MANIFEST_LISTS = ("files", "ingest_runs")  # of objects, when present
_MANIFEST_OBJECTS = ("outputs", "output_stats", "config", "ingest", "window", "analysis", "report")
_FILE_COUNTS = ("bytes", "lines", "kept", "duplicates", "rejected", "superseded_rejects")  # whole numbers


def load_manifest(out: Path) -> dict[str, Any]:
    """The manifest in ``out``, or an empty one. One whose sections are not of their shape (edited by hand, or
    another tool's file) is a damaged ``--out``: one line, exit 2, rather than a stage failing half-way on it."""
    path = Path(out) / MANIFEST_NAME
    if not path.exists():
        return {"tool": "whosaw", "version": __version__, "files": [], "skipped": [], "outputs": {}}
    manifest = read_json_object(path, "a whosaw manifest")
    for key in _MANIFEST_LISTS:
        value = manifest.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(e, dict) for e in value)):
            raise WhosawError(f"{path} is damaged: its {key!r} is not a list of objects")
    for key in _MANIFEST_OBJECTS:
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise WhosawError(f"{path} is damaged: its {key!r} is not an object")
    for entry in manifest.get("files") or []:
        for key in _FILE_COUNTS:
            value = entry.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise WhosawError(f"{path} is damaged: a file's {key!r} is not a count")
    return manifest


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that holds an object (``what`` names it in the error), else a one-line WhosawError."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WhosawError(f"cannot read {path} ({exc.__class__.__name__})") from None
    if not isinstance(value, dict):
        raise WhosawError(f"{path} is not {what}")
    return value


def save_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    """Written to a scratch file and renamed: a process killed while writing leaves the manifest before."""
    path = Path(out) / MANIFEST_NAME
    manifest["tool"] = "whosaw"
    manifest["version"] = __version__
    _write_atomically(path, json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    return path


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def begin_ingest_commit(out: Path, run_id: str, created: Sequence[Path], replaced: Sequence[Path]) -> Path:
    """Before an ingest moves its parts into the lake and rewrites rejects/: record what it is about to create
    (``created``: new files) and keep the files it will replace (``replaced``, hard links), in
    ``OUT/.ingest-pending/``. An ingest killed before its manifest is written (SIGKILL, SIGTERM, a power cut) is
    rolled back from it by the next stage that takes the lock (:func:`roll_back_interrupted_ingest`): else the
    lake kept rows no manifest entry counts, and the re-run counted them all as duplicates (0 kept) and wrote
    every rejected line twice. :func:`end_ingest_commit` removes it once the manifest is written."""
    out = Path(out)
    pending = out / PENDING_NAME
    shutil.rmtree(pending, ignore_errors=True)
    pending.mkdir()
    restore = {}
    for number, path in enumerate(replaced):
        if path.is_file():
            keep = pending / f"{number}-{path.name}"
            try:
                os.link(path, keep)
            except OSError:
                shutil.copy2(path, keep)
            restore[keep.name] = path.relative_to(out).as_posix()
    journal = {
        "run": run_id,
        "created": [p.relative_to(out).as_posix() for p in created]
        + [p.relative_to(out).as_posix() for p in replaced if not p.is_file()],
        "restore": restore,
    }
    _write_atomically(pending / "journal.json", json.dumps(journal, indent=1) + "\n")
    return pending


def end_ingest_commit(out: Path) -> None:
    shutil.rmtree(Path(out) / PENDING_NAME, ignore_errors=True)


def roll_back_interrupted_ingest(out: Path) -> list[str]:
    """Undo what an ingest killed during its commit left (see :func:`begin_ingest_commit`): the lake parts and
    rejects it wrote are removed and the rejects before it restored, unless its manifest was written (then it
    is kept). When it had already removed part of the analysis or report, the rest of them goes too (a manifest
    listing files that are gone, or a report without its analysis, is stale). Returns the files removed."""
    out = Path(out)
    pending = out / PENDING_NAME
    if not pending.is_dir():
        return []
    removed: list[str] = []
    journal_path = pending / "journal.json"
    if journal_path.is_file():  # no journal: killed before the commit began, nothing in the lake changed
        try:
            journal = read_json_object(journal_path, "an ingest journal")
        except WhosawError:
            raise WhosawError(
                f"an ingest into {out} was killed and its journal {journal_path} is damaged: whosaw cannot tell "
                f"what to undo; move {out / PENDING_NAME} away and ingest the same files into a new --out"
            ) from None
        manifest = load_manifest(out)
        runs = {entry.get("run") for entry in manifest.get("files") or []}
        runs.add((manifest.get("ingest") or {}).get("run"))
        if journal.get("run") not in runs:
            inside = out.resolve()
            for name in journal.get("created") or []:
                path = out / str(name)
                if path.is_file() and path.resolve().is_relative_to(inside):
                    path.unlink()
                    removed.append(str(name))
                    parent = path.parent
                    while parent != out:  # a kind with no rows has no folder
                        try:
                            parent.rmdir()
                        except OSError:
                            break
                        parent = parent.parent
            for keep, name in (journal.get("restore") or {}).items():
                kept = pending / str(keep)  # a name in the journal's folder: never a file outside OUT moved in
                if kept.parent == pending and kept.is_file() and (out / str(name)).resolve().is_relative_to(inside):
                    os.replace(kept, out / str(name))
            gone = [
                name
                for stage in ("analysis", "report")
                if isinstance(manifest.get(stage), dict)
                for name in manifest[stage].get("files") or []
                if not (out / str(name)).is_file()
            ]
            stale = remove_stage_outputs(out, "analysis", "report") if gone else []
            update_manifest(out, drop=("analysis", "report", "window") if gone else ())
            removed += stale
    shutil.rmtree(pending, ignore_errors=True)
    return removed


def damaged_inputs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The input files whose latest reading stopped at a damaged gzip stream (``files[].damaged``): their lines
    after ``files[].lines`` were never read. A truncated file fetched again whole and ingested into the same
    ``--out`` is read as grown, and its new entry is not damaged."""
    latest = {entry.get("path"): entry for entry in manifest.get("files") or [] if isinstance(entry, dict)}
    return [entry for entry in latest.values() if entry.get("damaged")]


def still_rejected(entry: dict[str, Any]) -> int:
    """A manifest file entry's rejected lines that ``rejects/`` still lists: less the earlier rejects this reading
    superseded (a live log's cut last line, read whole)."""
    return int(entry.get("rejected") or 0) - int(entry.get("superseded_rejects") or 0)


# The reason ingest records for a JSON file one of whose records is over DuckDB's maximum_object_size.
RECORD_TOO_BIG = "a record over 16 MB"


def not_whole_json(why: dict[str, str]) -> str:
    """What a file's ``not_json_records`` says, in words, and what to look for: ``it opens as one JSON array but
    cannot be read as such (unexpected end of data): is it cut short?``."""
    layout = "one JSON array" if why.get("layout") == "array" else "pretty-printed JSON objects"
    reason = why.get("reason")
    hint = "is it cut short?"
    if reason == RECORD_TOO_BIG:
        hint = "is it one JSON document holding the records in an array (write them one a line: jq -c '.KEY[]')?"
    return f"it opens as {layout} but cannot be read as such ({reason}): {hint}"


def rejected_inputs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The input files that had more lines rejected than kept, summed over their readings (a file that grew is read
    again; each reading counts its new lines, less the earlier rejects it superseded: a cut last line read whole
    later): a file of another kind, a field map naming none of its fields, or
    not a log at all. Their lines are missing from the analysis. Each: ``path``, ``kind``, ``kept``, ``rejected``,
    ``reject_reasons`` (commonest first; empty for a manifest written before files listed them), and
    ``not_json_records`` where the file opens as one JSON array or pretty-printed objects but is not whole JSON
    (``{layout, reason}``: what DuckDB found broken).
    A damaged file is :func:`damaged_inputs`' to tell of, not this."""
    damaged = {entry.get("path") for entry in damaged_inputs(manifest)}
    totals: dict[str, dict[str, Any]] = {}
    for entry in manifest.get("files") or []:
        if not isinstance(entry, dict) or entry.get("path") in damaged:
            continue
        path = str(entry.get("path"))
        total = totals.setdefault(
            path, {"path": path, "kind": entry.get("kind"), "kept": 0, "rejected": 0, "reject_reasons": Counter()}
        )
        total["kept"] += int(entry.get("kept") or 0)
        total["rejected"] += still_rejected(entry)
        total["reject_reasons"].update(entry.get("reject_reasons") or {})
        if entry.get("not_json_records"):
            total["not_json_records"] = entry["not_json_records"]
    return [
        {**total, "reject_reasons": dict(sorted(total["reject_reasons"].items(), key=lambda item: (-item[1], item[0])))}
        for total in totals.values()
        if total["rejected"] > total["kept"]
    ]


def update_manifest(out: Path, drop: Sequence[str] = (), **sections: Any) -> dict[str, Any]:
    """Set top-level sections of the manifest, remove those named in ``drop``, refresh ``outputs``, and save it."""
    manifest = load_manifest(out)
    for name in drop:
        manifest.pop(name, None)
    manifest.update(sections)
    manifest["outputs"], manifest["output_stats"] = output_hashes(
        Path(out), manifest.get("outputs") or {}, manifest.get("output_stats") or {}
    )
    save_manifest(out, manifest)
    return manifest


def remove_stage_outputs(out: Path, *stages: str) -> list[str]:
    """Delete the files that ``stages`` (manifest sections: ``analysis``, ``report``) list as theirs (``files``, and
    ``patterns`` under OUT: a report records what it may write before it writes), and their ``folders`` once empty;
    return the files. A finished report is not deleted but moved to ``history/report-<generated_at>/``
    (:func:`_keep_in_history`); its files are returned under their new names.

    A stage whose inputs change makes the later stages' files stale: a notification list or an exposures file
    made from an earlier analysis or an earlier lake would name people the current data does not. The stage
    that changes them removes them (``ingest`` the analysis and the report, ``analyze`` the report), and
    drops their sections with :func:`update_manifest`'s ``drop``. Only the files whosaw listed are touched.
    """
    out = Path(out)
    manifest, inside = load_manifest(out), out.resolve()
    removed = []
    for stage in stages:
        section = manifest.get(stage)
        if not isinstance(section, dict):
            continue
        listed = [out / str(name) for name in section.get("files") or []]
        listed += [path for pattern in section.get("patterns") or [] for path in sorted(out.glob(str(pattern)))]
        files = [
            path.relative_to(out).as_posix()
            for path in dict.fromkeys(listed)
            if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(inside)
        ]
        kept = _keep_in_history(out, section, files) if stage == "report" and section.get("complete") else []
        if not kept:
            for name in files:
                (out / name).unlink()
        removed += kept or files
        for name in section.get("folders") or []:
            folder = out / str(name)
            if folder.resolve().is_relative_to(inside):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
    return sorted(removed)


def _keep_in_history(out: Path, section: dict[str, Any], files: list[str]) -> list[str]:
    """Move a finished report's ``files`` (``section``: the manifest's ``report``) into
    ``history/report-<its time>/``, under the same names; return their new names. The lists people were sent stay,
    with the report they came with, for the next report to say what changed (``changes.csv``) and for whoever must
    answer what was known when. Not kept either (nothing is moved, the caller removes them): a report that never
    finished, and one whose lists are those of the newest kept report byte for byte (``whosaw run`` again on the
    same logs), which history already holds."""
    newest = newest_kept_report(out)
    if not files or (newest is not None and list_hashes(out, files) == list_hashes(newest)):
        return []
    history = out / HISTORY_DIR
    if history.is_symlink() or (history.exists() and not history.is_dir()):
        raise WhosawError(f"cannot keep the report being replaced in {history}: a file or link is in the way")
    try:
        made = datetime.fromisoformat(str(section.get("generated_at"))).astimezone(UTC)
    except ValueError:  # a manifest edited by hand: named by now, so that it still sorts as the newest
        made = datetime.now(UTC)
    base = out / HISTORY_DIR / f"report-{made:{HISTORY_STAMP}}"
    folder, n = base, 2
    while (folder / KEPT_NAME).exists() or (folder.exists() and not folder.is_dir()):  # without it: a move cut short
        folder, n = base.with_name(f"{base.name}-{n}"), n + 1
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(out / name, folder / name)
    # What the report wrote, for the comparison to check that the kept lists are still those (not saved over by a
    # spreadsheet, before or after they were kept): the hashes the report recorded when it wrote them. Written last:
    # a folder without it is a move that was cut short (the process killed), finished by the next stage.
    about = {"generated_at": section.get("generated_at"), "lists_sha256": section.get("lists_sha256")}
    (folder / KEPT_NAME).write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
    return [(folder / name).relative_to(out).as_posix() for name in [*files, KEPT_NAME]]


def newest_kept_report(out: Path) -> Path | None:
    """The newest report kept whole in ``OUT/history/`` (:func:`_keep_in_history`; its ``kept.json`` written), or
    None."""
    history = Path(out) / HISTORY_DIR
    if not history.is_dir() or history.is_symlink():
        return None
    kept = sorted(path.parent for path in history.glob(f"report-*/{KEPT_NAME}") if not path.parent.is_symlink())
    return kept[-1] if kept else None


def list_hashes(folder: Path, names: Sequence[str] | None = None) -> dict[str, str]:
    """The SHA-256 of each list of people of the report in ``folder`` (``affected_users.csv``, ``viewers.csv``,
    ``notify/*.csv``; of its files ``names``, default all there)."""
    if names is None:
        names = [path.relative_to(folder).as_posix() for path in folder.rglob("*.csv") if path.is_file()]
    return {
        name: sha256_file(folder / name)
        for name in sorted(names)
        if name in ("affected_users.csv", "viewers.csv") or (name.startswith("notify/") and name.endswith(".csv"))
    }


def kept_report(removed: Sequence[str]) -> str | None:
    """The ``history/`` folder :func:`remove_stage_outputs` moved a finished report to, from the names it returned."""
    kept = [name for name in removed if name.startswith(HISTORY_DIR + "/")]
    return "/".join(kept[0].split("/")[:2]) if kept else None


def output_hashes(
    out: Path, known: dict[str, str] | None = None, known_stats: dict[str, list[int]] | None = None
) -> tuple[dict[str, str], dict[str, list[int]]]:
    """SHA-256 and [size, mtime_ns] of every file whosaw wrote under ``out`` (the manifest itself and scratch
    space excluded); a file whose [size, mtime_ns] is in ``known_stats`` unchanged keeps its hash in ``known``."""
    known, known_stats = known or {}, known_stats or {}
    hashes, stats = {}, {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if not path.is_file() or rel.parts[0].startswith(".") or rel.name == MANIFEST_NAME:
            continue
        name = rel.as_posix()
        info = path.stat()
        stats[name] = [info.st_size, info.st_mtime_ns]
        unchanged = known_stats.get(name) == stats[name] and name in known
        hashes[name] = known[name] if unchanged else sha256_file(path)
    return hashes, stats
