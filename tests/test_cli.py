"""The CLI as a whole: every verb answers --help, usage errors are one line with exit 2, and nothing is
written when the command line is wrong."""

import contextlib
import errno
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pipeline
from pipeline import __version__
from pipeline.cli import cli
from pipeline.errors import WhosawError
from pipeline.manifest import load_manifest
from pipeline.safecsv import CSV_SHAPE_HINT, read_safe_csv
from pipeline.spark import spark_available

SAMPLE = str(Path(__file__).resolve().parents[1] / "sample_logs")
VERBS = ["run", "ingest", "analyze", "report", "simulate"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb):
    result = CliRunner().invoke(cli, [verb, "--help"])
    assert result.exit_code == 0
    assert "--out" in result.output


def test_the_command_list_says_what_each_verb_does_in_whole():
    """`whosaw --help` lists each verb with a line of its own, not the docstring cut off with '...'."""
    listing = CliRunner().invoke(cli, ["--help"]).output.split("Commands:")[1]
    rows = [line.split(None, 1) for line in listing.strip().splitlines()]
    assert sorted(verb for verb, _ in rows) == sorted(VERBS)
    assert all(text.endswith(".") and not text.endswith("...") for _, text in rows), rows


def test_simulate_help_states_the_simulators_defaults():
    """The help names the defaults by hand (the CLI does not import the simulator): keep them in step."""
    from pipeline.simulate import (
        DEFAULT_CANCEL_RATE,
        DEFAULT_HOURS,
        DEFAULT_RPS,
        DEFAULT_SEED,
        DEFAULT_START,
        DEFAULT_USERS,
    )

    text = " ".join(CliRunner().invoke(cli, ["simulate", "--help"], terminal_width=200).output.split())
    defaults = {"--users": DEFAULT_USERS, "--hours": f"{DEFAULT_HOURS:g}", "--requests-per-second": f"{DEFAULT_RPS:g}",
                "--cancel-rate": DEFAULT_CANCEL_RATE, "--seed": DEFAULT_SEED, "--start": DEFAULT_START,
                "--format": "jsonl"}
    for option, default in defaults.items():
        shown = text.split(option + " ", 1)[1].split(" --", 1)[0]
        assert any(f"default {default}{end}" in shown for end in ").:"), (option, shown)


@pytest.mark.parametrize("verb", ["analyze", "report"])
def test_analyze_and_report_do_not_promise_to_create_out(verb, tmp_path):
    """Their --out must hold an earlier stage's output: the help says so, and a missing one is an error (exit 2)."""
    help_text = CliRunner().invoke(cli, [verb, "--help"]).output
    assert "created if missing" not in help_text and "earlier" in help_text
    result = CliRunner().invoke(cli, [verb, "--out", str(tmp_path / "missing")])
    assert result.exit_code == 2 and not (tmp_path / "missing").exists()


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("args", [
    ["run", "sample_logs", "--out", "OUT", "--bogus"],
    ["run", "sample_logs"],
    ["ingest", "--out", "OUT"],
    ["simulate", "--out", "OUT", "--users", "1"],
    ["simulate", "--out", "OUT", "--format", "xml"],
    ["ingest", "sample_logs", "--out", "OUT", "--kind", "proxy"],
    ["frobnicate"],
])
def test_usage_errors_are_one_line_and_exit_2(args, tmp_path):
    out = tmp_path / "out"
    args = [str(out) if arg == "OUT" else SAMPLE if arg == "sample_logs" else arg for arg in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("whosaw: error:")
    assert "Traceback" not in result.output
    assert not out.exists()


def test_an_empty_out_is_refused_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["ingest", SAMPLE, "--out", ""])
    assert result.exit_code == 2 and "--out" in result.stderr and result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "out"
    result = CliRunner().invoke(cli, ["run", SAMPLE, "--out", str(out), "--config", f"{SAMPLE}/incident.toml",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("name", ["case[1]", "case?", "case*", "case{1}", "case\\1"])
def test_an_out_whose_path_is_a_file_pattern_is_refused_not_read_as_another(finished_run, tmp_path, name):
    """DuckDB (and Spark) read the lake by file patterns: the analysis of --out 'case[1]' read the lake of the
    folder 'case1' beside it, another incident's. Every stage that reads the lake so refuses such a path."""
    shutil.copytree(finished_run, tmp_path / "case1")  # the other incident, beside it
    out = tmp_path / name
    for verb, args in (("run", [SAMPLE]), ("ingest", [SAMPLE]), ("analyze", [])):
        result = CliRunner().invoke(cli, [verb, *args, "--out", str(out)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, (verb, result.output)
        assert "a wildcard in the file patterns the lake is read by" in result.stderr
        assert not out.exists()
    shutil.copytree(finished_run, out)  # made by hand (a copy): analysed or explored, still refused
    assert CliRunner().invoke(cli, ["analyze", "--out", str(out)]).exit_code == 2
    with pytest.raises(WhosawError, match="wildcard"):
        pipeline.connect(out)


def _damaged(finished_run: Path, tmp_path: Path, damage) -> Path:
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    damage(out)
    return out


def _edit_manifest(out: Path, **sections) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, **sections}))


def _run_stopped(out: Path, module: str, name: str, replacement: str, call: str) -> subprocess.CompletedProcess:
    """``call`` on ``out`` (``sys.argv[1]``) in a fresh interpreter, with ``module.name`` replaced by the Python
    expression ``replacement`` (``original``, ``os`` and ``signal`` at hand): a real process, stopped by a real
    signal at the moment the test chooses."""
    script = (
        "import importlib, os, signal, sys\n"
        # Python's Ctrl-C handler, as in a terminal: a child of a runner that ignores SIGINT would ignore it too
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"module = importlib.import_module({module!r})\n"
        f"original = module.{name}\n"
        f"module.{name} = {replacement}\n"
        f"{call}\n"
    )
    return subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])


def _junk(path: Path) -> None:
    path.unlink()
    path.write_text("junk\n")


def _text_times(path: Path) -> None:
    """A lake file replaced by readable Parquet whose ts column holds text (another tool's file)."""
    table = pq.read_table(path)
    where = table.schema.get_field_index("ts")
    table = table.set_column(where, "ts", pa.array(["someone@example.com"] * table.num_rows))
    path.unlink()
    pq.write_table(table, path)


def _count_as_text(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"][0]["lines"] = "someone@example.com"
    (out / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("verb", "damage", "says"), [
    ("analyze", lambda out: (out / "manifest.json").write_text("{bad"), "manifest.json (JSONDecodeError)"),
    ("ingest", lambda out: (out / "manifest.json").write_text("[1, 2]"), "is not a whosaw manifest"),
    ("analyze", lambda out: _junk(sorted((out / "parquet" / "cache").rglob("*.parquet"))[0]),
     "the lake is damaged: "),
    ("report", lambda out: _junk(out / "exposures.parquet"), "exposures.parquet is not readable Parquet"),
    ("report", lambda out: _junk(out / "timeline.parquet"), "timeline.parquet is not readable Parquet"),
    ("report", lambda out: (out / "summary.json").write_text("[1, 2]"), "is not an analysis summary"),
    ("report", lambda out: _edit_manifest(out, analysis={"generated_at": "2026-01-01T00:00:00Z"}),
     "did not finish (summary.json and manifest.json disagree)"),  # an analysis killed before its manifest
    ("analyze", lambda out: ((out / "exposures.parquet").unlink(), (out / "exposures.parquet").mkdir()),
     "exposures.parquet: a folder or link is in the way"),  # the analysis cannot be moved in there
    ("analyze", lambda out: (out / "history").write_text("mine\n"),
     "cannot keep the report being replaced in"),  # nor the report it replaces kept
    ("analyze", lambda out: _edit_manifest(out, report=[]), "is damaged: its 'report' is not an object"),
    ("analyze", lambda out: _text_times(sorted((out / "parquet" / "cache").rglob("*.parquet"))[0]),
     "holds ts values that are not TIMESTAMPTZ"),
    ("report", _count_as_text, "is damaged: a file's 'lines' is not a count"),
    # late logs, checked for duplicates against the lake and added to the rejects
    ("ingest-late", lambda out: _junk(sorted((out / "parquet" / "requests").rglob("*.parquet"))[0]),
     "the lake is damaged: "),
    ("ingest-late", lambda out: (out / "rejects" / "requests.parquet").write_text("junk\n"),
     "the rejects are damaged: "),
    ("ingest-late", lambda out: _edit_manifest(out, files="x"), "is damaged: its 'files' is not a list of objects"),
    ("ingest-late", lambda out: (out / "manifest.json").write_text("{}"), "lists no input files, but the lake"),
])
def test_a_damaged_out_folder_is_one_line_and_exit_2(finished_run, tmp_path, verb, damage, says):
    """Whatever was left in --out (a damaged manifest, lake file or analysis output): one line naming it, exit 2."""
    out = _damaged(finished_run, tmp_path, damage)
    config = ["--config", f"{SAMPLE}/incident.toml"]
    late = tmp_path / "late" / "requests-late.jsonl"  # new requests, one of them malformed
    late.parent.mkdir()
    records = [json.loads(line) for line in Path(SAMPLE, "requests.jsonl").read_text().splitlines()[:3]]
    late.write_text("".join(json.dumps({**r, "request_id": f"late-{r['request_id']}"}) + "\n" for r in records) + "{\n")
    args = {"ingest": [SAMPLE, *config], "ingest-late": [str(late), *config], "analyze": config, "report": []}[verb]
    result = CliRunner().invoke(cli, [verb.removesuffix("-late"), *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert "someone@" not in result.output  # what the damaged file holds is not shown


@contextlib.contextmanager
def _small_disk(folder: Path) -> Iterator[Callable[[int], None]]:
    """A tmpfs at ``folder`` (root only), and a function that resizes it (KiB). Skips where mounting is refused."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a tmpfs cannot be mounted here (root only): {mounted.stderr.decode().strip()}")
    try:
        yield lambda kib: subprocess.run(["mount", "-o", f"remount,size={kib}k", str(folder)], check=True)
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def _what_legal_gets(out: Path) -> dict[str, Any]:
    """The summary but its time, every CSV, and the manifest's per-file counts, of a finished run."""
    summary = json.loads((out / "summary.json").read_text())
    del summary["generated_at"]
    files = [{k: v for k, v in entry.items() if k != "run"} for entry in load_manifest(out)["files"]]
    csvs = {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*.csv"))}
    return {"summary": summary, "files": files, "csvs": csvs}


def test_a_full_disk_at_any_stage_is_one_line_and_the_same_command_then_finishes_the_job(finished_run, tmp_path):
    """--out on a disk that fills up during the ingest, the analysis or the report (a tmpfs grown 100 KiB at a time;
    the sample's outputs take about 850): exit 2 and one line naming the folder or the file written (a write's
    error names no file), DuckDB's asynchronous write's JSON unwrapped; the figures of the stages that finished
    are printed. The same command, once there is room, writes exactly what a run with room from the start wrote."""
    args = ["run", SAMPLE, "--config", f"{SAMPLE}/incident.toml", "--no-progress"]
    expected = _what_legal_gets(finished_run)
    failed_in = set()
    with _small_disk(tmp_path / "disk") as resize:
        out = tmp_path / "disk" / "out"
        for kib in range(100, 2000, 100):
            resize(kib)
            result = CliRunner().invoke(cli, [*args, "--out", str(out)])
            if result.exit_code == 0:
                break
            assert result.exit_code == 2, result.output
            assert result.stderr.count("\n") == 1 and "No space left on device" in result.stderr, result.stderr
            assert str(out) in result.stderr and "{" not in result.stderr, result.stderr
            shown = result.stdout
            failed_in.add("report" if "affected owners" in shown else "analyze" if "ingested 3 files" in shown
                          else "ingest")
            assert shown == "" or shown.startswith("ingested 3 files"), shown
            resize(4096)
            again = CliRunner().invoke(cli, [*args, "--out", str(out)])
            assert again.exit_code == 0, again.output
            assert ("3 already ingested" in again.stdout) == (shown != ""), again.stdout  # an ingest is kept whole
            assert _what_legal_gets(out) == expected
            shutil.rmtree(out)
        else:
            pytest.fail("the run never finished on a 2 MiB disk")
    assert failed_in == {"ingest", "analyze", "report"}


def test_a_run_piped_into_head_still_finishes_the_job(tmp_path):
    """`whosaw run ... | head -1`: once the reader has gone, the lines still to print go nowhere, but the job goes
    on (run prints each stage's figures as it ends): every output is written, the report and its lists too, and
    the exit status is 0, with nothing on stderr."""
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "pipeline", "run", SAMPLE, "--config", f"{SAMPLE}/incident.toml",
                              "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().startswith("ingested 3 files")
    child.stdout.close()  # as head does once it has its line: the analysis' figures are still to come
    stderr = child.stderr.read()
    assert child.wait(timeout=300) == 0 and stderr == "", stderr
    assert "report" in load_manifest(out) and (out / "report.md").is_file() and any((out / "notify").iterdir())


def test_a_simulation_the_disk_cannot_hold_leaves_only_the_users_files_and_the_same_command_then_writes_it(tmp_path):
    """A disk that fills up while simulate writes the logs, or near its end (the tables, the ground truth): one
    line, exit 2, and none of its files left (a half-written incident, analysed, would be wrong; and a rerun would
    refuse a folder holding logs); the user's file beside it kept; the same command, once there is room, writes
    what it writes with room from the start, byte for byte."""
    args = ["simulate", "--users", "30", "--requests", "3000", "--seed", "1"]
    with _small_disk(tmp_path / "disk") as resize:
        out = tmp_path / "disk" / "sim"
        assert CliRunner().invoke(cli, [*args, "--out", str(out)]).exit_code == 0
        expected = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
        used = shutil.disk_usage(out).used // 1024
        shutil.rmtree(out)
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
        for kib in (used // 4, used // 2, used - 8):
            resize(kib)
            result = CliRunner().invoke(cli, [*args, "--out", str(out)])
            assert result.exit_code == 2, result.output
            assert result.stderr == (f"whosaw: error: No space left on device writing under {out}: make room there, "
                                     "or give another --out, and run again\n")
            assert sorted(path.name for path in out.rglob("*")) == ["notes.txt"]
            resize(4096)
            assert CliRunner().invoke(cli, [*args, "--out", str(out)]).exit_code == 0
            written = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
            assert written == {**expected, Path("notes.txt"): b"mine\n"}
            for path in expected:
                (out / path).unlink()


def test_a_simulation_interrupted_leaves_only_the_users_files(tmp_path):
    """A real Ctrl-C once every log line was handed to the writing threads, before the ground truth: the logs of
    an incident whose truth was never written are removed with the rest; the user's file beside them is kept."""
    out = tmp_path / "sim"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    done = _run_stopped(
        out, "pipeline.simulate", "_Simulation._finish", "lambda self: signal.raise_signal(signal.SIGINT)",
        "module.simulate(sys.argv[1], users=30, requests=3000, seed=1)",
    )
    assert "KeyboardInterrupt" in done.stderr, done.stderr
    assert sorted(path.name for path in out.rglob("*")) == ["notes.txt"]


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_a_full_disk_under_a_spark_analysis_is_the_os_error_duckdbs_is(finished_run, tmp_path):
    """Spark's shuffle files (under OUT/.tmp) fill the disk: the OSError the CLI gives its one line (Spark's own
    error is a Java stack trace: an internal error); the previous analysis as it was, no scratch left."""
    with _small_disk(tmp_path / "disk") as resize:
        out = tmp_path / "disk" / "out"
        shutil.copytree(finished_run, out)
        before = _what_legal_gets(out)
        resize(shutil.disk_usage(out).used // 1024 + 100)
        with pytest.raises(OSError) as raised:
            pipeline.analyze(out, engine="spark")
        assert raised.value.errno == errno.ENOSPC and raised.value.filename is None
        assert type(raised.value.__context__).__name__ == "Py4JJavaError"  # Spark's, not DuckDB's writes
        assert _what_legal_gets(out) == before and not (out / ".tmp").exists()


REPORT_FILES = ("affected_users.csv", "viewers.csv", "report.html", "report.md")


def test_a_new_analysis_removes_the_report_of_the_old_one(finished_run, tmp_path):
    """A notification list must never outlive the analysis it was made from."""
    out = _damaged(finished_run, tmp_path, lambda out: (out / "my_notes.csv").write_text("mine\n"))
    assert all((out / name).is_file() for name in REPORT_FILES) and any((out / "notify").iterdir())
    result = CliRunner().invoke(cli, ["analyze", "--out", str(out), "--window", "2023-03-20T00:00Z/2023-03-20T00:01Z"])
    assert result.exit_code == 0, result.output
    assert "moved the report of the previous analysis to history/report-" in result.output
    assert not any((out / name).exists() for name in (*REPORT_FILES, "notify", "charts"))
    assert (out / "exposures.csv").is_file() and (out / "my_notes.csv").is_file()  # the analysis's, the user's
    manifest = json.loads((out / "manifest.json").read_text())
    assert "report" not in manifest and not any(name.startswith("notify/") for name in manifest["outputs"])
    assert manifest["analysis"]["removed_stale_report"]

    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "affected_users.csv").read_text(encoding="utf-8-sig").count("\n") == 1  # a header: no one
    result = CliRunner().invoke(cli, ["analyze", "--out", str(out)])
    assert "moved the report" in result.output and not (out / "affected_users.csv").exists()


def _listed(folder: Path) -> set[tuple[str, str]]:
    """The (category, owner_id) rows of the notification lists in ``folder``/notify."""
    return {
        (row.category, row.owner_id)
        for path in (folder / "notify").glob("*.csv")
        for row in read_safe_csv(path).itertuples()
    }


def test_a_replaced_report_is_kept_and_the_next_one_says_what_changed(finished_run, tmp_path):
    """Legal acts on a report; a later analysis (another window, late logs) changes the lists. The report it
    replaces is kept whole in history/, and the next report lists, in changes.csv and its first section, the rows
    added to and removed from each notification list since: exactly the difference of the two reports' lists."""
    out = _damaged(finished_run, tmp_path, lambda out: None)
    sent = {name: (out / name).read_bytes() for name in ("affected_users.csv", "report.md")}
    sent.update({f"notify/{p.name}": p.read_bytes() for p in (out / "notify").glob("*.csv")})
    before = _listed(out)

    window = ["--window", "2023-03-20T03:00Z/2023-03-20T06:00Z"]
    narrower = CliRunner().invoke(cli, ["analyze", "--out", str(out), *window])
    assert narrower.exit_code == 0, narrower.output
    (kept,) = (out / "history").iterdir()
    assert f"moved the report of the previous analysis to history/{kept.name}/" in narrower.output
    assert {name: (kept / name).read_bytes() for name in sent} == sent  # what was sent, byte for byte
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"][f"history/{kept.name}/affected_users.csv"] == hashlib.sha256(
        sent["affected_users.csv"]
    ).hexdigest()

    for _ in range(2):  # a report made again of the same analysis compares with the same kept report
        result = CliRunner().invoke(cli, ["report", "--out", str(out)])
        assert result.exit_code == 0, result.output
        now = _listed(out)
        gone = before - now
        assert gone and not now - before  # a narrower window: only removals
        assert (
            f"changes          0 added to the notification lists, {len(gone)} removed ({len(gone)} of them still "
            f"exposed, outside this window) since the report in history/{kept.name}/ (changes.csv)" in result.output
        )
        changes = read_safe_csv(out / "changes.csv")
        assert set(changes["change"]) == {"removed"} and set(changes["reason"]) == {"outside_window"}
        assert set(zip(changes["category"], changes["owner_id"], strict=True)) == gone
        assert changes["email"].notna().all() and changes["viewer_count"].isna().all()  # contact, no list columns
        # when: the exposures that the narrower window left outside, owner by owner
        outside = pd.read_parquet(out / "exposures_outside_window.parquet").groupby(["category", "owner_id"]).ts
        when = changes.set_index(["category", "owner_id"])
        assert (when["exposure_count"].astype(int) == outside.count().reindex(when.index)).all()
        for column, agg in (("first_exposed", "min"), ("last_exposed", "max")):
            assert (pd.to_datetime(when[column]) == outside.agg(agg).reindex(when.index)).all()
        assert "@" not in result.output
        assert len(list((out / "history").iterdir())) == 1
    md = (out / "report.md").read_text()
    assert "## Changes since the previous report" in md and f"{len(gone)} removed" in md
    assert f"{len(gone)} removed rows are still exposed, only outside this analysis' window" in md
    assert "reason not\\_found" not in md
    assert "FAILED" not in md and "passed: each notification list is the previous report's" in md
    assert '<div class="warning">Since the previous report' in (out / "report.html").read_text()  # people removed

    wider = CliRunner().invoke(cli, ["analyze", "--out", str(out), "--config", f"{SAMPLE}/incident.toml"])
    assert wider.exit_code == 0, wider.output
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert len(list((out / "history").iterdir())) == 2  # the newest kept report is the one compared with
    assert f"{len(gone)} added to the notification lists, 0 removed" in result.output
    changes = read_safe_csv(out / "changes.csv")
    assert set(zip(changes["category"], changes["owner_id"], strict=True)) == gone and _listed(out) == before
    assert (changes["exposure_count"].astype(int) > 0).all() and changes["reason"].isna().all()
    assert "<p>Since the previous report" in (out / "report.html").read_text()  # only added: no warning
    # --since: against the lists that were sent, not the newest kept (by name here; a path works too)
    result = CliRunner().invoke(cli, ["report", "--out", str(out), "--since", kept.name])
    assert f"changes          none to the notification lists since the report in history/{kept.name}/" in (
        result.output
    )
    result = CliRunner().invoke(cli, ["report", "--out", str(out), "--since", str(out / "notify")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "is not a report kept in" in result.stderr

    # The same analysis again: the report it replaces is kept once, and lists that are the newest kept ones'
    # byte for byte (the same logs run again) are not kept twice.
    assert CliRunner().invoke(cli, ["analyze", "--out", str(out)]).exit_code == 0
    newest = sorted((out / "history").iterdir())[-1]
    assert len(list((out / "history").iterdir())) == 3 and (newest / "changes.csv").is_file()
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert f"changes          none to the notification lists since the report in history/{newest.name}/" in (
        result.output
    )
    assert read_safe_csv(out / "changes.csv").empty
    again = CliRunner().invoke(cli, ["analyze", "--out", str(out)])
    assert "removed the report of the previous analysis (" in again.output
    assert len(list((out / "history").iterdir())) == 3


def test_a_row_removed_because_nothing_exposes_it_any_more_says_so(finished_run, tmp_path):
    """Another config (here: no key rule for billing keys, so no value is payment_info) removes the payment_info
    list: each of its rows goes with reason not_found and no exposure columns (its owners come onto the uncategorized
    list: value_owner still names them)."""
    out = _damaged(finished_run, tmp_path, lambda out: None)
    listed = _listed(out)
    paid = {(category, owner) for category, owner in listed if category == "payment_info"}
    assert paid
    config = (Path(SAMPLE) / "incident.toml").read_text()
    start = config.index("[[keys]]\npattern  = '^billing:")
    edited = tmp_path / "no-billing.toml"
    edited.write_text(config[:start] + config[config.index("[[keys]]", start + 1):])
    for name in ("ownership", "grants", "users"):  # beside the edited config, as its [tables] name them
        shutil.copy(Path(SAMPLE) / f"{name}.csv", tmp_path / f"{name}.csv")
    assert CliRunner().invoke(cli, ["analyze", "--out", str(out), "--config", str(edited)]).exit_code == 0
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    n = len(paid)
    assert f"{n} added to the notification lists, {n} removed since the report in history/" in result.output
    changes = read_safe_csv(out / "changes.csv")
    removed, added = changes[changes["change"] == "removed"], changes[changes["change"] == "added"]
    assert set(zip(removed["category"], removed["owner_id"], strict=True)) == paid == listed - _listed(out)
    assert set(removed["reason"]) == {"not_found"} and added["reason"].isna().all()
    assert removed[["first_exposed", "last_exposed", "exposure_count"]].isna().all().all()
    assert set(added["category"]) == {"uncategorized"} and set(added["owner_id"]) == set(removed["owner_id"])
    md = (out / "report.md").read_text()
    assert f"For {len(paid)} removed rows this analysis finds no exposure of the owner's data in that category" in md
    assert "the owner may be on another list now" in md
    assert "still exposed, only outside" not in md


def test_a_report_move_cut_short_is_finished_by_the_next_stage(finished_run, tmp_path):
    """A process killed while it moved a replaced report into history/ left part of it there, without kept.json
    (written last): that folder is no kept report to compare with, and the next stage that replaces the report
    moves the rest into it."""
    from pipeline.manifest import HISTORY_STAMP

    def cut_short(out: Path) -> Path:
        made = datetime.fromisoformat(json.loads((out / "manifest.json").read_text())["report"]["generated_at"])
        partial = out / "history" / f"report-{made:{HISTORY_STAMP}}"
        partial.mkdir(parents=True)
        os.replace(out / "affected_users.csv", partial / "affected_users.csv")
        return partial

    out = _damaged(finished_run, tmp_path / "a", cut_short)
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert result.exit_code == 0 and not (out / "changes.csv").exists()
    assert "changes " not in result.output and "warning" not in result.output

    out = _damaged(finished_run, tmp_path / "b", lambda out: None)
    sent = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.glob("**/*.csv") if "notify" in p.parts}
    partial = cut_short(out)
    window = ["--window", "2023-03-20T03:00Z/2023-03-20T06:00Z"]
    result = CliRunner().invoke(cli, ["analyze", "--out", str(out), *window])
    assert f"moved the report of the previous analysis to history/{partial.name}/" in result.output
    assert list((out / "history").iterdir()) == [partial] and (partial / "kept.json").is_file()
    assert all((partial / name).read_bytes() == data for name, data in sent.items())
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert "0 added to the notification lists" in result.output and "warning" not in result.output


@pytest.mark.parametrize("when", ["before it was kept", "after it was kept"])
def test_a_kept_list_changed_since_whosaw_wrote_it_is_not_compared(finished_run, tmp_path, when):
    """A list saved over by a spreadsheet (a row deleted once its person was told) would make changes.csv name that
    person as added again. The report records the SHA-256 of every list it writes, a kept report carries them, and
    a comparison with lists that differ is refused: the report is still made, without changes.csv, and says so;
    nothing from the file is printed."""
    out = _damaged(finished_run, tmp_path, lambda out: None)
    if when == "before it was kept":
        edited = out / "notify" / "payment_info.csv"
        edited.write_text("".join(edited.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    assert CliRunner().invoke(cli, ["analyze", "--out", str(out), "--window", "all"]).exit_code == 0
    (kept,) = (out / "history").iterdir()
    assert set(json.loads((kept / "kept.json").read_text())["lists_sha256"]) == {
        "affected_users.csv", "viewers.csv", *(f"notify/{p.name}" for p in (kept / "notify").iterdir())
    }
    if when == "after it was kept":
        edited = kept / "notify" / "payment_info.csv"
        edited.write_text("Owner;Category\nsecret@example.com;x\n")
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (
        f"warning: the lists of the report in history/{kept.name}/ could not be compared: notify/payment_info.csv "
        "changed since whosaw wrote it" in result.output
    )
    assert "secret" not in result.output and "@" not in result.output and not (out / "changes.csv").exists()
    assert "could not be compared with this one" in (out / "report.md").read_text()
def test_a_report_killed_half_way_goes_with_the_next_analysis(finished_run, tmp_path):
    """A report records what it may write before it writes: the notification lists of one killed after its first
    list were never listed as its files, and outlived the next analysis."""
    out = _damaged(finished_run, tmp_path, lambda out: None)
    assert CliRunner().invoke(cli, ["analyze", "--out", str(out), "--window", "all"]).exit_code == 0
    assert not (out / "notify").exists()
    killed = _run_stopped(  # killed once it has written its first notification list
        out, "pipeline.report", "copy_safe_csv",
        "lambda con, sql, path: (original(con, sql, path), path.parent.name == 'notify' "
        "and os.kill(os.getpid(), signal.SIGKILL))",
        "module.report(sys.argv[1], progress=False)",
    )
    assert killed.returncode == -signal.SIGKILL
    assert (out / "affected_users.csv").is_file() and len(list((out / "notify").glob("*.csv"))) == 1
    result = CliRunner().invoke(cli, ["analyze", "--out", str(out), "--window", "2023-03-20T00:00Z/2023-03-20T00:01Z"])
    assert result.exit_code == 0, result.output
    assert "removed the report of the previous analysis" in result.output
    assert not (out / "affected_users.csv").exists() and not (out / "notify").exists()


def test_new_logs_remove_the_analysis_and_report_of_the_old_lake(finished_run, tmp_path):
    out = _damaged(finished_run, tmp_path, lambda out: None)
    first = json.loads((out / "manifest.json").read_text())
    late = tmp_path / "late-requests.jsonl"
    late.write_text('{"ts": "2023-03-20T03:00:00Z", "request_id": "late-1", "user_id": "u1", "status": 200}\n')
    result = CliRunner().invoke(cli, ["ingest", str(late), "--out", str(out), "--kind", "requests"])
    assert result.exit_code == 0, result.output
    assert "removed the analysis and report of the lake before this ingest (" in result.output
    assert "; the report is kept in history/report-" in result.output
    left = sorted(p.name for p in out.iterdir())
    assert left == [".ingest.lock", "history", "manifest.json", "parquet", "rejects"], left
    (kept,) = (out / "history").iterdir()  # the report, whole; not the analysis
    assert {p.relative_to(kept).as_posix() for p in kept.rglob("*.*")} == {*first["report"]["files"], "kept.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert not {"analysis", "report", "window"} & set(manifest)
    assert manifest["config"] == first["config"]  # late logs without --config: the lake's config, not the defaults
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert result.exit_code == 2 and "run 'whosaw analyze' first" in result.stderr

    assert CliRunner().invoke(cli, ["analyze", "--out", str(out)]).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["exposures"], summary["affected_owners"]) == (
        first["analysis"]["exposures"], json.loads((finished_run / "summary.json").read_text())["affected_owners"])
    result = CliRunner().invoke(cli, ["ingest", str(late), "--out", str(out), "--kind", "requests"])
    assert "1 already ingested" in result.output and "removed" not in result.output
    assert (out / "exposures.parquet").is_file()  # nothing new in the lake: the analysis still holds


def test_a_new_out_is_readable_by_its_owner_only(finished_run):
    """--out will hold names, emails and raw log lines: other users of the machine may not list or read it."""
    assert finished_run.stat().st_mode & 0o777 == 0o700


def test_an_out_the_file_system_refuses_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = CliRunner().invoke(cli, ["ingest", SAMPLE, "--out", str(tmp_path / "a_file" / "out")])
    assert result.exit_code == 2
    assert result.stderr == f"whosaw: error: Not a directory: {tmp_path / 'a_file' / 'out'}\n"


def test_run_with_every_line_rejected_says_so(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "requests.jsonl").write_text('not json\n{"ts": "soon"}\n')
    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.stderr.startswith("whosaw: error: nothing to analyse: no record was kept of the 2 lines read "
                                    "(2 rejected, 0 duplicates;") and result.stderr.count("\n") == 1
    assert len(list((tmp_path / "out" / "rejects").rglob("*.parquet"))) >= 1


def test_ctrl_c_is_interrupted_exit_130_and_leaves_the_lake_untouched(tmp_path):
    """DuckDB reports a Ctrl-C inside a query as an error of its own: it must not read as an internal error."""
    logs = tmp_path / "requests.jsonl"
    duckdb.sql(
        "COPY (SELECT TIMESTAMPTZ '2023-03-20 01:00:00+00' + to_microseconds(i) AS ts, 'r' || i AS request_id, "
        "'u' || (i % 1000) AS user_id, 's' || (i % 1000) AS session_id, 200 AS status FROM range(1500000) t(i)) "
        f"TO '{logs}' (FORMAT json)"
    )
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ingest", str(logs), "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((out / ".tmp").glob("ingest-*")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # until the ingest is under way
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert (child.returncode, stderr) == (130, "whosaw: error: interrupted\n")
    assert not (out / "parquet").exists() and not (out / "manifest.json").exists() and not (out / ".tmp").exists()


def test_bad_window_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", SAMPLE, "--out", str(out), "--window", "2023-03-20/soon"])
    assert result.exit_code == 2
    assert result.stderr == "whosaw: error: window end: 'soon' is not an ISO-8601 time\n"
    assert not out.exists()


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet); its output."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


# Each takes from a tenth of a second (duckdb, numpy) to most of a second (pandas, matplotlib) to import.
HEAVY = ("duckdb", "matplotlib", "numpy", "pandas", "pyarrow")


def test_startup_imports_nothing_heavy():
    """`whosaw --help` (and any command, before it runs) starts without pandas, matplotlib, DuckDB..."""
    code = (
        "import sys\n"
        "from pipeline.cli import cli\n"
        "for args in (['--help'], ['report', '--help'], ['--version']):\n"
        "    try:\n"
        "        cli(args)\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, (args, exc.code)\n"
        f"print(sorted(name for name in {HEAVY!r} if name in sys.modules))"
    )
    assert _python(code).splitlines()[-1] == "[]"


def test_package_names_are_the_verbs():
    """pipeline.report is the function even once the module pipeline/report.py is imported; the rest of the API
    is there too, imported on first use."""
    code = (
        "import sys\n"
        "import pipeline.report, pipeline.simulate, pipeline.ingest, pipeline.analyze\n"
        "import pipeline\n"
        "names = ('analyze', 'ingest', 'report', 'run', 'simulate', 'connect', 'user_trail', 'reanalyze')\n"
        "assert all(callable(getattr(pipeline, n)) for n in names)\n"
        "assert all(type(sys.modules[f'pipeline.{n}']).__name__ == 'module' for n in names[:5] if n != 'run')\n"
        "assert pipeline.report.__module__ == 'pipeline.report' and pipeline.connect.__module__ == 'pipeline.explore'\n"
        "from pipeline import *  # noqa: F403\n"
        "from pipeline.api import connect, simulate\n"
        "assert set(pipeline.__all__) <= set(dir(pipeline))\n"
        "print('ok')"
    )
    assert _python(code) == "ok"


@pytest.mark.parametrize("table", ["grants", "ownership"])
def test_an_unreadable_side_table_row_is_one_line_that_quotes_no_one(finished_run, tmp_path, table):
    """A grants or ownership row DuckDB cannot parse, past the rows its sniffer reads: DuckDB's message quotes
    the whole row (owner and viewer ids). The CLI says file and line, exit 2, and never the row, not even with
    WHOSAW_DEBUG=1 (the internal error it was told the user to rerun with)."""
    out = _damaged(finished_run, tmp_path, lambda out: None)
    logs = tmp_path / "logs"
    shutil.copytree(SAMPLE, logs)
    path = logs / f"{table}.csv"
    with path.open("a", encoding="utf-8") as handle:
        for i in range(30_000):  # beyond DuckDB's sniffing sample
            if table == "grants":
                handle.write(f"nobody{i}@example.org,viewer{i}@example.org,conversation_content,2023-03-20T01:00:00Z,,\n")
            else:
                handle.write(f"c9{i:07d},nobody{i}@example.org\n")
        handle.write('alice.secret@example.org,"bob.secret@example.org,4111111111111111\n')
    lines = path.read_text(encoding="utf-8").count("\n")
    for env in ({}, {"WHOSAW_DEBUG": "1"}):
        result = CliRunner().invoke(cli, ["analyze", "--out", str(out), "--config", str(logs / "incident.toml")],
                                    env=env)
        assert result.exit_code == 2, result.output
        assert result.stderr == (
            f"whosaw: error: tables.{table}: cannot read {table}.csv at line {lines} (InvalidInputException)\n"
        )
        assert "secret" not in result.output and "4111" not in result.output


@pytest.mark.parametrize(("verb", "table", "row"), [
    ("analyze", "grants", "u000001,u000002,conversation_content,,,c1,Smith, Jane\n"),  # one field more
    ("analyze", "grants", "u000001,u000002,conversation_content\n"),  # typed in without its trailing commas
    ("analyze", "ownership", "c1,u000001,x\n"),
    # an unquoted comma in a name would put the email in the name, the name's second half in the country
    ("report", "users", "u000999,jane.secret@example.org,Smith, Jane,DE,de-DE\n"),
    ("report", "users", "u000999,jane.secret@example.org\n"),
])
def test_a_table_row_with_another_number_of_fields_than_its_header_is_refused_as_such(
    finished_run, tmp_path, verb, table, row
):
    """A hand-edited CSV table whose row has more or fewer fields than its header: DuckDB's sniffer took the
    long row for the header, or the whole line for one column, and the run said "grants.csv has no column
    'owner_id'" of a file whose header names it, or "cannot read the users directory (InvalidInputException)".
    Still refused, exit 2, now saying what to look for, and naming no value."""
    out = _damaged(finished_run, tmp_path, lambda out: None)
    logs = tmp_path / "logs"
    shutil.copytree(SAMPLE, logs)
    with (logs / f"{table}.csv").open("a", encoding="utf-8") as handle:
        handle.write(row)
    if verb == "report":  # the report reads the users directory the analysis recorded
        result = CliRunner().invoke(cli, ["analyze", "--out", str(out), "--config", str(logs / "incident.toml")])
        assert result.exit_code == 0, result.output
    config = ["--config", str(logs / "incident.toml")] if verb == "analyze" else []
    result = CliRunner().invoke(cli, [verb, "--out", str(out), *config])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("whosaw: error: ") and result.stderr.count("\n") == 1
    assert f"{table}.csv" in result.stderr and CSV_SHAPE_HINT in result.stderr
    assert "Smith" not in result.output and "secret" not in result.output


@pytest.mark.parametrize("verb", ["analyze", "report"])
def test_no_stage_writes_to_out_while_another_holds_it(verb, finished_run, tmp_path):
    """Only ingest used to take OUT's lock. An analyze that read the lake while an ingest added late logs wrote
    its outputs after that ingest had removed the stale ones, and the manifest listed them as current (36
    exposures instead of 62 on a simulated incident, and notification lists made from them); a report beside a
    running analyze or ingest mixed old and new. Every stage is now refused (exit 2) while another holds OUT."""
    import fcntl

    out = _damaged(finished_run, tmp_path, lambda out: None)
    before = {p: p.read_bytes() for p in (out / "manifest.json", out / "exposures.csv", out / "report.md")}
    with open(out / ".ingest.lock", "a") as held:  # another process is ingesting into out
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = CliRunner().invoke(cli, [verb, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"whosaw: error: another ingest is writing to {out}; try again when it is done\n"
    assert {p: p.read_bytes() for p in before} == before
    # free again: a run holds the lock across its three stages (re-entrant in one process), then lets it go
    result = CliRunner().invoke(cli, ["run", SAMPLE, "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, [verb, "--out", str(out)])
    assert result.exit_code == 0, result.output


def test_an_analysis_interrupted_while_writing_leaves_the_previous_one_whole(finished_run, tmp_path):
    """A real Ctrl-C (SIGINT) once exposures.parquet of a narrower window was written: that file used to stay
    beside the previous summary.json and exposures.csv, and `report` then wrote notification lists of the new
    exposures under the counts of the old. Now nothing of the interrupted analysis reaches OUT."""
    out = _damaged(finished_run, tmp_path, lambda out: None)
    before = {p.name: p.read_bytes() for p in (out / "exposures.parquet", out / "exposures.csv", out / "summary.json")}
    done = _run_stopped(
        # raise_signal: to this thread, handled before the next line (os.kill's may reach another thread first)
        out, "pipeline.analyze", "copy_safe_csv", "lambda *a, **k: signal.raise_signal(signal.SIGINT)",
        "module.analyze(sys.argv[1], window='2023-03-20T02:00Z/2023-03-20T03:00Z')",
    )
    assert "KeyboardInterrupt" in done.stderr, done.stderr
    assert {name: (out / name).read_bytes() for name in before} == before
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    exposures = duckdb.sql(f"SELECT count(*) FROM '{out}/exposures.parquet'").fetchall()[0][0]
    assert exposures == summary["exposures"]


def test_scratch_left_by_a_killed_analysis_goes_with_the_next_stage(finished_run, tmp_path):
    """An analysis SIGKILLed while moving its files in left OUT/.tmp/analysis-<pid>/ (a copy of the exposures:
    who saw whose data) for good: only an ingest cleared its own kind of scratch. Any stage that takes OUT's
    lock now clears it: no other stage can be using it."""
    out = _damaged(finished_run, tmp_path, lambda out: None)
    done = _run_stopped(
        out, "pipeline.analyze", "update_manifest", "lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)",
        "module.analyze(sys.argv[1], window='all')",
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [p.name.split("-")[0] for p in (out / ".tmp").iterdir()] == ["analysis"]
    CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert not (out / ".tmp").exists()


def test_one_exposure_outside_the_window_is_singular(finished_run, tmp_path):
    """The summary's counts and their nouns agree: "1 exposure", not "1 exposures"."""
    out = _damaged(finished_run, tmp_path, lambda out: None)
    # the sample's first exposure is at 01:16:40.469098, the next a minute later: one falls outside
    result = CliRunner().invoke(
        cli, ["analyze", "--out", str(out), "--window", "2023-03-20T01:16:41Z/2023-03-20T10:00Z"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["outside_window"]["exposures"] == 1
    line = next(line for line in result.output.splitlines() if line.startswith("outside window"))
    assert line.split(None, 2)[2] == "1 exposure not counted above"


def test_near_misses_outside_the_window_are_named_beside_those_in_it(finished_run, tmp_path):
    """The near-miss line counts the window's; those the window leaves out are said, not silently dropped."""
    out = _damaged(finished_run, tmp_path, lambda out: None)
    result = CliRunner().invoke(cli, ["analyze", "--out", str(out), "--window", "2023-03-20T05:00Z/2023-03-20T10:00Z"])
    assert result.exit_code == 0, result.output
    near = json.loads((out / "summary.json").read_text())["near_misses"]
    assert near["total"] > 0 and near["outside_window"] > 0
    line = next(line for line in result.output.splitlines() if line.startswith("near misses"))
    assert line.split(None, 2)[2] == (f"{near['total']:,} (stale replies that reached no one as data; "
                                      f"{near['outside_window']:,} more outside the window)")


@pytest.mark.parametrize(("verb", "setting", "says"), [
    ("ingest", "WHOSAW_MEMORY_LIMIT=lots", "memory limit 'lots' is not a size DuckDB reads"),
    ("analyze", "WHOSAW_MEMORY_LIMIT=lots", "memory limit 'lots' is not a size DuckDB reads"),
    ("analyze", "WHOSAW_THREADS=two", "WHOSAW_THREADS: expected a whole number of threads, 1 or more, not 'two'"),
    ("analyze", "WHOSAW_THREADS=0", "WHOSAW_THREADS: expected a whole number of threads, 1 or more, not '0'"),
    ("analyze", "WHOSAW_THREADS=100000", "WHOSAW_THREADS: at most "),  # accepted, DuckDB crawled
    # a limit too small even to spill: what to change, not an internal error
    ("ingest", "WHOSAW_MEMORY_LIMIT=1MB", "ingest ran out of memory (memory_limit 1MB); raise WHOSAW_MEMORY_LIMIT"),
    ("analyze", "WHOSAW_MEMORY_LIMIT=1MB", "analysis ran out of memory (memory_limit 1MB); raise WHOSAW_MEMORY_LIMIT"),
])
def test_a_bad_resource_setting_is_one_line_and_exit_2(finished_run, tmp_path, verb, setting, says):
    """WHOSAW_MEMORY_LIMIT and WHOSAW_THREADS are settings like the config's: a value DuckDB cannot take, or work
    with, is bad usage (exit 2, one line naming it), not an internal error. (A fresh process: ingest reads them on
    import.)"""
    out = tmp_path / "new" if verb == "ingest" else _damaged(finished_run, tmp_path, lambda out: None)
    args = [SAMPLE, "--config", f"{SAMPLE}/incident.toml"] if verb == "ingest" else []
    name, value = setting.split("=")
    done = subprocess.run([sys.executable, "-m", "pipeline", verb, *args, "--out", str(out)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, name: value})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"whosaw: error: {says}") and done.stderr.count("\n") == 1, done.stderr


def test_python_dash_m_pipeline_is_the_whosaw_command(tmp_path):
    """`python -m pipeline` runs the CLI (a checkout used without `pip install`), with whosaw's own errors."""
    done = subprocess.run([sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and f"whosaw, version {__version__}" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline", "report", "--out", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("whosaw: error:") and "Traceback" not in bad.stderr


def test_an_auto_window_that_found_none_says_so(tmp_path):
    """Logs without a crossed reply: `--window auto` finds no window, and neither the summary line nor the
    timeline's caption presents all time as a window found from the data."""
    logs = tmp_path / "logs"
    logs.mkdir()
    requests, cache = [], []
    for i, user in enumerate(["u1", "u2", "u3"]):
        ts = f"2023-03-20T01:0{i}:00Z"
        requests.append({"ts": ts, "request_id": f"r{i}", "session_id": f"s{i}", "user_id": user, "status": 200})
        key = f"user:{user}:titles"
        read = {"ts": ts, "request_id": f"r{i}", "op": "GET", "key": key, "status": "ok", "conn_id": str(i)}
        cache.append({**read, "host": "web-1", "value_owner": user})
    (logs / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests), encoding="utf-8")
    (logs / "cache.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cache), encoding="utf-8")
    (logs / "incident.toml").write_text(
        "[[keys]]\npattern = '^user:(?P<owner>[^:]+):titles$'\ncategory = \"conversation_titles\"\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["run", str(logs), "--config", str(logs / "incident.toml"), "--out", str(out), "--window", "auto"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["window"]["start"] is None
    window_line = next(line for line in result.output.splitlines() if line.startswith("window"))
    assert window_line.endswith("(auto found no window)"), window_line
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Shaded: the exposure window" not in report and "Nothing is shaded: there is no window" in report


def test_a_grant_of_a_category_no_key_rule_gives_is_named_on_the_console_and_in_the_report(tmp_path):
    """Categories match exactly: a grant of 'Conversation_Titles' excuses nothing, silently, unless it is named."""
    logs = tmp_path / "logs"
    shutil.copytree(SAMPLE, logs)
    with (logs / "grants.csv").open("a") as f:
        f.write("u000001,u000002,Conversation_Titles,,,\nu000003,*,conversation_titels,,,\n")  # no resource_id
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(out), "--config", str(logs / "incident.toml")])
    assert result.exit_code == 0, result.output
    assert ("note: 2 grants of the grants table name a category no [[keys]] rule gives: they excuse nothing "
            "(categories match exactly; the report and summary.json grants_of_unknown_category name them)"
            ) in result.output
    assert "titels" not in result.output and "Conversation_Titles" not in result.output  # table contents: not here
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grants_of_unknown_category"] == {"Conversation_Titles": 1, "conversation_titels": 1}
    assert "a category no key rule gives (Conversation_Titles, conversation_titels)" in " ".join(
        (out / "report.md").read_text().replace("\\_", "_").split())
    clean = CliRunner().invoke(cli, ["run", SAMPLE, "--out", str(tmp_path / "clean")])
    assert clean.exit_code == 0 and "note: " not in clean.output
    assert json.loads((tmp_path / "clean" / "summary.json").read_text())["grants_of_unknown_category"] == {}


def test_a_truncated_gzip_is_a_warning_on_the_console_and_in_the_report_until_read_whole(tmp_path):
    """A log cut short (a copy taken while it was written) loses every line after the cut: not one rejected line
    in the method, but a warning on the console and at the head of the report. Fetched again whole and ingested
    into the same --out, it is read as grown, and the warning goes."""
    logs = tmp_path / "logs"
    shutil.copytree(SAMPLE, logs)
    whole = gzip.compress((logs / "cache.jsonl").read_bytes())
    (logs / "cache.jsonl").unlink()
    (logs / "cache.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    args = ["run", str(logs), "--out", str(out), "--config", str(logs / "incident.toml")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    lines = next(e["lines"] for e in manifest["files"] if e["path"].endswith("cache.jsonl.gz"))
    assert (f"warning: {logs / 'cache.jsonl.gz'} is damaged (gzip_truncated): read to line {lines:,}, the rest of "
            "the file is lost and any exposure in it is missing; fetch the whole file again and ingest it into this "
            "--out (the lines read count as duplicates)") in result.output
    report = " ".join((out / "report.md").read_text().replace("\\_", "_").split())
    assert f"1 input file could not be read to the end: cache.jsonl.gz (gzip_truncated, read to line {lines:,})" in (
        report[: report.index("## Key numbers")])  # with the headline
    # the hours the lost lines covered show as hours of requests without a cache call
    gaps = json.loads((out / "summary.json").read_text())["log_gaps"]
    assert gaps["hosts_without_cache_calls"] == [] and len(gaps["hours_without_cache_calls"]) == 1
    gap = gaps["hours_without_cache_calls"][0]
    assert gap["end"] == "2023-03-20T12:00:00Z" and gap["requests"] >= 20
    assert (f"warning: no cache call was logged from {gap['start']} to {gap['end']} while {gap['requests']:,} "
            "requests were answered (a cache log missing or cut short?)") in result.output
    assert "No cache call was logged from " in report[: report.index("## Key numbers")]
    (logs / "cache.jsonl.gz").write_bytes(whole)
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "warning:" not in again.output and "could not be read to the end" not in (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["log_gaps"] == {"hours_without_cache_calls": [], "hosts_without_cache_calls": []}
    assert summary["exposures"] == json.loads(
        (Path(SAMPLE) / "ground_truth" / "summary.json").read_text())["counts"]["exposures"]


def test_an_out_open_to_other_users_is_named_after_the_lists_are_written(tmp_path):
    """A --out that existed before keeps its mode (whosaw makes a new one 0700): the lists of people in a folder
    others can read are theirs to read too, so the CLI says so, and says nothing once it is closed."""
    out = tmp_path / "shared-out"
    out.mkdir()
    out.chmod(0o755)
    result = CliRunner().invoke(cli, ["run", SAMPLE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.endswith(f"note: {out} is open to other users of this machine (mode 755), and so are the "
                                  f"lists of people in it: 'chmod 700 {out}' keeps them to you\n")
    for verb, holds in (("ingest", "the log lines in its lake and rejects"), ("analyze", "the exposures")):
        args = [SAMPLE] if verb == "ingest" else []
        alone = CliRunner().invoke(cli, [verb, *args, "--out", str(out)])
        assert alone.exit_code == 0, alone.output
        assert alone.output.endswith(f"note: {out} is open to other users of this machine (mode 755), and so are "
                                     f"{holds} in it: 'chmod 700 {out}' keeps them to you\n")
    out.chmod(0o700)
    for args in (["report"], ["analyze"], ["ingest", SAMPLE]):
        again = CliRunner().invoke(cli, [*args, "--out", str(out)])
        assert again.exit_code == 0 and "note:" not in again.output, again.output


def test_a_host_whose_cache_log_was_not_given_is_a_warning(tmp_path):
    """A per-host cache file left out of the inputs looks, to every rule, like a host where nothing crossed: the
    summary, the console and the report's head name the host that answered requests and logged no cache call."""
    from pipeline.simulate import simulate

    logs = tmp_path / "logs"
    simulate(logs, users=200, requests=6000, cancel_rate=0.05, seed=5, messy=True)
    whole = CliRunner().invoke(cli, ["run", str(logs), "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0 and "warning:" not in whole.output, whole.output
    for path in logs.glob("cache-web-3*"):
        path.unlink()
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    gaps = json.loads((out / "summary.json").read_text())["log_gaps"]
    assert gaps["hours_without_cache_calls"] == []
    [gap] = gaps["hosts_without_cache_calls"]
    assert gap["host"] == "web-3" and gap["requests"] > 1000
    assert (f"warning: 1 host answered {gap['requests']:,} requests and logged no cache call while other hosts "
            "did (its cache log not given?): no exposure on it can be seen (the report and summary.json log_gaps "
            "name it)") in result.output
    assert "web-3" not in result.output  # a value of the logs: named under --out, not on the console
    report = " ".join((out / "report.md").read_text().split())
    assert f"Host web-3 answered {gap['requests']:,} requests and logged no cache call" in (
        report[: report.index("## Key numbers")])


def test_run_refuses_a_users_directory_it_could_not_report_with_before_reading_the_logs(tmp_path):
    """The users directory is read by the report, the last stage: a broken one used to fail the run after its
    ingest and analysis (minutes at scale). run reads it first, and refuses it before writing anything."""
    logs = tmp_path / "logs"
    shutil.copytree(SAMPLE, logs)
    with (logs / "users.csv").open("a", encoding="utf-8") as handle:
        handle.write("u000999,jane.secret@example.org,Smith, Jane,DE,de-DE\n")  # an unquoted comma in the name
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(out), "--config", str(logs / "incident.toml")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("whosaw: error: tables.users: ") and "users.csv" in result.stderr
    assert result.stderr.count("\n") == 1 and "secret" not in result.output and "Smith" not in result.output
    assert not out.exists()


def test_a_window_beyond_the_logs_is_a_warning(finished_run, tmp_path):
    """A window typed for another day, or logs exported short, leave part of the window without a log line: the
    lists there are empty because nothing was logged, not because nothing crossed. The summary, the console and
    the report's head say which stretch; the sample's own window has none."""
    assert json.loads((finished_run / "summary.json").read_text())["window_beyond_logs"] == []
    out = _damaged(finished_run, tmp_path, lambda out: None)
    span = json.loads((out / "summary.json").read_text())["data_span"]
    for window, stretch in (
        ("2023-03-20T01:00:00Z/2023-03-20T16:00:00Z", (span["end"], "2023-03-20T16:00:00Z")),
        ("2023-03-21T01:00:00Z/2023-03-21T10:00:00Z", ("2023-03-21T01:00:00Z", "2023-03-21T10:00:00Z")),
    ):
        result = CliRunner().invoke(cli, ["analyze", "--out", str(out), "--window", window])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert [(s["start"], s["end"]) for s in summary["window_beyond_logs"]] == [stretch], window
        assert f"warning: the window holds no log line from {stretch[0]} to {stretch[1]}" in result.output
        report = CliRunner().invoke(cli, ["report", "--out", str(out)])
        assert report.exit_code == 0, report.output
        text = " ".join((out / "report.md").read_text().split())
        assert "The window holds no log line from " in text[: text.index("## Key numbers")], window


def test_no_cache_log_at_all_is_a_warning_not_a_clean_zero(tmp_path):
    """The requests and sessions logs without the cache log: 0 exposures, because nothing that could show one was
    given. Every hour of answered requests is an hour without a cache call, said on the console and in the report."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("requests.jsonl", "sessions.jsonl"):
        shutil.copy(Path(SAMPLE) / name, logs / name)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(out), "--config", f"{SAMPLE}/incident.toml"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exposures"] == 0
    [gap] = summary["log_gaps"]["hours_without_cache_calls"]
    assert (gap["start"], gap["end"]) == ("2023-03-20T00:00:00Z", "2023-03-20T12:00:00Z")
    assert f"warning: no cache call was logged from {gap['start']} to {gap['end']}" in result.output
    assert "No cache call was logged from " in (out / "report.md").read_text()
