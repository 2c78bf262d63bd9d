"""`whosaw ingest` through the real CLI: the summary line, progress, and every exit-2 path (one line on stderr,
no traceback, nothing from the logs)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from pipeline.cli import cli

SECRET = "user-4711@example.com"  # a value from inside a log: it must never reach the console


def line(rid: str, ts: str = "2023-03-20T01:00:00Z") -> str:
    return json.dumps({"ts": ts, "request_id": rid, "session_id": "s1", "user_id": SECRET, "status": 200})


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "requests.jsonl").write_text("\n".join([line("r1"), line("r1"), "{broken " + SECRET, line("r2")]))
    (folder / "README.md").write_text("not a log\n")
    return folder


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, ["ingest", *args])


def test_a_file_without_user_id_or_connection_in_any_line_is_pointed_out(tmp_path):
    """No bad line, yet every request anonymous and the connection tier blind: a field map that missed a column
    (`uid`) must show at once, on the console and in the manifest."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "requests.csv").write_text(f"ts,request_id,session_id,uid\n2023-03-20T01:00:00Z,r1,s1,{SECRET}\n")
    (folder / "requests-2.jsonl").write_text(line("r2") + "\n")
    cache = {"ts": "2023-03-20T01:00:00Z", "request_id": "r1", "op": "GET", "key": "k", "connection": "h1/c1"}
    (folder / "cache.jsonl").write_text(json.dumps(cache) + "\n")
    result = CliRunner().invoke(cli, ["run", str(folder), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:3] == [
        "note: 1 cache file without host, conn_id in any line (a field map that misses a column? see "
        "manifest.json files[].empty_fields)",
        "note: 1 requests file without user_id in any line (a field map that misses a column? see "
        "manifest.json files[].empty_fields)",
    ]
    assert SECRET not in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {Path(f["path"]).name: f.get("empty_fields") for f in manifest["files"]} == {
        "cache.jsonl": ["host", "conn_id"], "requests.csv": ["user_id"], "requests-2.jsonl": None,
    }
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    said = "2 input files have a field empty in every line: cache.jsonl (host, conn\\_id); requests.csv (user\\_id)."
    assert said in report


def test_a_file_with_more_lines_rejected_than_kept_is_a_warning(tmp_path):
    """An over-broad `match` glob reads the requests log as cache: every line is rejected, and with it every viewer
    is lost. Counted by reason in the manifest, and a warning on the console and at the head of the report. A file
    with a few bad lines, a damaged .gz (its own warning) and a file whose rejects its later, grown reading
    outweighs are not."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "requests.jsonl").write_text("".join(line(f"r{i}") + "\n" for i in range(3)))
    calls = [{"ts": "2023-03-20T01:00:00Z", "request_id": f"r{i}", "op": "GET", "key": f"user:{i}:titles"} for i in
             range(3)]
    (folder / "cache.jsonl").write_text("".join(json.dumps(c) + "\n" for c in calls) + "{broken " + SECRET + "\n")
    (folder / "cache-2.jsonl.gz").write_bytes(b"\x1f\x8bgarbage-not-deflate")
    config = tmp_path / "incident.toml"
    config.write_text('[sources.cache]\nmatch = ["*.jsonl*"]\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(folder), "--out", str(out), "--config", str(config),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    warnings = [text for text in result.stdout.splitlines() if text.startswith("warning:")]
    assert warnings[0] == (
        f"warning: {folder / 'requests.jsonl'}: 3 of its 3 lines rejected (missing_field:op 3): is it a cache log, "
        "with the fields [sources.cache] names? Those lines are missing from the analysis (rejects/cache.csv)"
    )
    assert len(warnings) == 2 and "cache-2.jsonl.gz is damaged (gzip_corrupt)" in warnings[1]
    assert SECRET not in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert {Path(f["path"]).name: f.get("reject_reasons") for f in manifest["files"]} == {
        "requests.jsonl": {"missing_field:op": 3}, "cache.jsonl": {"invalid_json": 1},
        "cache-2.jsonl.gz": {"gzip_corrupt": 1},
    }
    report = (out / "report.md").read_text(encoding="utf-8")
    assert ("1 input file had more lines rejected than kept: requests.jsonl (3 of 3 lines, read as a cache log; "
            "commonest reason missing\\_field:op).") in report

    late = tmp_path / "late"  # two bad lines, then the file grows by three good ones: read again, summed
    late.mkdir()
    (late / "cache-9.jsonl").write_text("{}\n{}\n")
    first = CliRunner().invoke(cli, ["ingest", str(late), "--out", str(out), "--no-progress"])
    assert f"warning: {late / 'cache-9.jsonl'}: 2 of its 2 lines rejected (missing_field:ts 2)" in first.stdout
    with (late / "cache-9.jsonl").open("a") as handle:
        handle.write("".join(json.dumps({**c, "ts": "2023-03-20T02:00:00Z"}) + "\n" for c in calls))
    grown = CliRunner().invoke(cli, ["ingest", str(late), "--out", str(out), "--no-progress"])
    assert grown.exit_code == 0, grown.output
    assert "cache-9.jsonl" not in grown.stdout and "lines rejected" not in grown.stdout


def test_late_logs_read_with_an_edited_field_map_or_zone_are_pointed_out(tmp_path):
    """The config file edited between two ingests (a zone, a field map): the new files are read differently from
    the earlier ones. The manifest keeps the config of every run, and the CLI says so."""
    config = tmp_path / "incident.toml"
    config.write_text('[sources.requests]\ntimezone = "UTC"\n')
    out = tmp_path / "out"
    for name, rid in (("a", "r1"), ("b", "r2"), ("c", "r3")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "requests.jsonl").write_text(line(rid, ts="2023-03-20T01:00:00") + "\n")
    first = invoke(str(tmp_path / "a"), "--out", str(out), "--config", str(config))
    config.write_text('[sources.requests]\ntimezone = "Europe/Berlin"\n')
    edited = invoke(str(tmp_path / "b"), "--out", str(out))  # the recorded config file, since edited
    same = invoke(str(tmp_path / "c"), "--out", str(out))
    note = "note: these files were read with another [sources] section"
    assert [note in r.stdout for r in (first, edited, same)] == [False, True, False]
    runs = json.loads((out / "manifest.json").read_text())["ingest_runs"]
    zones = [r["config"]["settings"]["sources"]["requests"]["timezone"] for r in runs]
    assert zones == ["UTC", "Europe/Berlin", "Europe/Berlin"]
    again = invoke(str(tmp_path / "a"), "--out", str(out))  # nothing new read: no run recorded, no note
    assert note not in again.stdout and len(json.loads((out / "manifest.json").read_text())["ingest_runs"]) == 3


def test_ingest_prints_counts_only(logs, tmp_path):
    result = invoke(str(logs), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ingested 1 file: 4 lines = 2 kept + 1 duplicates + 1 rejected")
    assert "; 1 other file passed over" in result.stdout  # README.md
    assert SECRET not in result.output
    again = invoke(str(logs), "--out", str(tmp_path / "out"))
    assert again.exit_code == 0
    assert "1 already ingested" in again.stdout


def test_progress_bar_on_request(logs, tmp_path):
    result = invoke(str(logs), "--out", str(tmp_path / "out"), "--progress")
    assert result.exit_code == 0, result.output
    assert "ingest requests" in result.stderr  # the bar's label
    quiet = invoke(str(logs), "--out", str(tmp_path / "out2"))
    assert quiet.stderr == ""  # not a terminal: no bar


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: [str(d / "missing.jsonl")], "does not exist"),
        (lambda d: [str(_write(d / "requests.jsonl.gz", line("r1").encode()))], "not gzip"),
        (lambda d: [str(_write(d / "cache.parquet", b"PAR1" + SECRET.encode()))], "not a Parquet file"),
        (lambda d: [str(_write(d / "notes.txt", SECRET.encode()))], "no log files found"),
        (lambda d: [str(_not_utf8_parquet(d / "requests.parquet"))], "damaged Parquet file"),
        (lambda d: [str(d), "--kind", "bogus"], "Invalid value for '--kind'"),
        (lambda d: [str(d), "--config", str(d / "nope.toml")], "does not exist"),
        (lambda d: [str(d), "--config", str(_write(d / "bad.toml", b"[[[x"))], "not valid TOML"),
        (lambda d: [], "Missing argument"),
    ],
)
def test_bad_usage_and_unreadable_input_exit_2_with_one_line(tmp_path, setup, message):
    folder = tmp_path / "in"
    folder.mkdir()
    args = setup(folder)
    result = invoke(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("whosaw: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output and SECRET not in result.output


def test_a_log_whose_file_name_is_not_utf8_is_a_one_line_error(tmp_path):
    """A name with a byte that is not UTF-8 (a Latin-1 name copied from another system) reached DuckDB as a path it
    cannot encode: exit 1, "internal error"."""
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsencode(folder) + b"/requests-caf\xe9.jsonl"
    with open(name, "wb") as handle:
        handle.write((line("r1") + "\n").encode())
    result = invoke(str(folder), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "requests-caf\\xe9.jsonl" in result.stderr
    assert "the file name is not UTF-8" in result.stderr and SECRET not in result.output


def test_a_passed_over_file_whose_name_is_not_utf8_leaves_the_run_whole(tmp_path):
    """A file ingest passes over (not a log) may have a name that is not UTF-8 too: the manifest listed it with a
    lone surrogate, and the report, which shows the passed-over files, ended in an internal error (exit 1)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "requests.jsonl").write_text(line("r1") + "\n", encoding="utf-8")
    with open(os.fsencode(folder) + b"/notes-caf\xe9.txt", "wb") as handle:
        handle.write(b"not a log\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(folder), "--out", str(out), "--window", "all"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [s["path"] for s in manifest["skipped"]] == [str(folder / "notes-caf\\xe9.txt")]
    assert "notes-caf\\xe9.txt" in (out / "report.md").read_text(encoding="utf-8")


def test_out_must_be_a_folder(logs, tmp_path):
    target = _write(tmp_path / "out.txt", b"")
    result = invoke(str(logs), "--out", str(target))
    assert result.exit_code == 2 and "is a file" in result.stderr and result.stderr.count("\n") == 1

    from pipeline.errors import WhosawError
    from pipeline.ingest import ingest

    with pytest.raises(WhosawError, match="not a folder"):  # the API says it too
        ingest([logs], target)


def test_exit_2_from_a_real_process(tmp_path):
    """The installed entry point, not only click's test runner."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ingest", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _not_utf8_parquet(path: Path) -> Path:
    """A Parquet file whose footer reads but whose string column holds bytes that are not UTF-8: DuckDB fails the
    scan part-way (it once surfaced as exit 1, "internal error"), with the value in its message."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = pa.array([b"2023-03-20T01:00:00Z", SECRET.encode() + b"\xff"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"ts": text, "request_id": ["r1", "r2"]}), path)
    return path


def test_csv_without_a_usable_header_is_rejects_not_an_internal_error(tmp_path):
    """A header with classic Mac CR line ends once escaped as csv.Error (exit 1, "internal error"); a header-less
    CSV lost its first record. Both now end in rejects/, counted, and the console shows counts only."""
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder / "requests_cr.csv", b"ts,request_id,session_id\rx\n")
    _write(folder / "requests_x.csv", f"2023-03-20T01:00:00Z,h1,s1,{SECRET}\n2023-03-20T01:00:00Z,h2,s1,x\n".encode())
    result = invoke(str(folder), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ingested 2 files: 3 lines = 0 kept + 0 duplicates + 3 rejected")
    assert SECRET not in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    counts = {Path(f["path"]).name: (f["lines"], f["kept"], f["duplicates"], f["rejected"]) for f in manifest["files"]}
    assert counts == {"requests_cr.csv": (1, 0, 0, 1), "requests_x.csv": (2, 0, 0, 2)}
    got = duckdb.sql(
        f"SELECT source_file, source_line, reason FROM '{tmp_path}/out/rejects/requests.parquet' ORDER BY ALL"
    ).fetchall()
    assert [(Path(f).name, line, reason) for f, line, reason in got] == [
        ("requests_cr.csv", 1, "csv_header_unreadable"),
        ("requests_x.csv", 1, "csv_header_missing"),
        ("requests_x.csv", 2, "missing_field:ts"),
    ]


def test_a_config_that_names_a_file_two_kinds_or_no_format_stops_with_one_line(tmp_path):
    """A file the config's globs call a log but that would go unread was only "passed over" (exit 0): the
    sessions log matched by `*.ndjson` for requests too, nginx's access.log named by a glob. Exit 2, one line."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "auth-sessions.ndjson").write_text(line("r1") + "\n")
    both = tmp_path / "both.toml"
    both.write_text('[sources.requests]\nmatch = ["*.ndjson"]\n[sources.sessions]\nmatch = ["auth-sessions*"]\n')
    result = invoke(str(folder), "--out", str(tmp_path / "out"), "--config", str(both))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output and SECRET not in result.output
    assert "matches the globs of several kinds (requests, sessions); make the config's match globs" in result.stderr
    (folder / "auth-sessions.ndjson").unlink()
    (folder / "access.log").write_text(line("r1") + "\n")
    named = tmp_path / "named.toml"
    named.write_text('[sources.requests]\nmatch = ["access.log*"]\n')
    result = invoke(str(folder), "--out", str(tmp_path / "out"), "--config", str(named))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and SECRET not in result.output
    assert 'set sources.requests.format = "jsonl"' in result.stderr
    named.write_text('[sources.requests]\nmatch = ["access.log*"]\nformat = "jsonl"\n')
    result = invoke(str(folder), "--out", str(tmp_path / "out"), "--config", str(named))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ingested 1 file: 1 lines = 1 kept")


def test_a_mapped_field_no_line_has_is_pointed_out(tmp_path):
    """`value_owner = "reply.owner_id"` for logs that say `reply.owner`: the strongest evidence tier gone without a
    single bad line. A field the config maps to a path and no kept line has is named like a missing user_id."""
    folder = tmp_path / "in"
    folder.mkdir()
    rec = {"ts": "2023-03-20T01:00:00Z", "request_id": "r1", "op": "GET", "key": "k", "host": "h", "conn_id": "c",
           "reply": {"owner": SECRET}}
    (folder / "cache.jsonl").write_text(json.dumps(rec) + "\n")
    config = tmp_path / "c.toml"
    config.write_text('[sources.cache]\nfields = { value_owner = "reply.owner_id", host = { const = "h" } }\n')
    result = invoke(str(folder), "--out", str(tmp_path / "out"), "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "note: 1 cache file without value_owner in any line" in result.stdout
    assert SECRET not in result.output
    config.write_text('[sources.cache]\nfields = { value_owner = "reply.owner" }\n')
    result = invoke(str(folder), "--out", str(tmp_path / "out2"), "--config", str(config))
    assert "note:" not in result.stdout


@pytest.mark.parametrize("how", ["rotated", "truncated", "rewritten"])
def test_other_lines_at_a_path_already_ingested_are_refused_not_given_the_same_names(tmp_path, how):
    """A line is known by (source_file, source_line). logrotate moves cache.jsonl to cache.jsonl.1 and starts a new
    cache.jsonl (or truncates it in place: copytruncate): ingested again, the new file's line 1 took the name of
    the old one's, and the analysis joined the two lines' connections: 12 exposures where 2 are right, to people
    who saw nothing. Refused before the lake is touched; under a name of its own it is read; grown, it still is."""
    def call(minute: int, rid: str, status: str = "ok") -> str:
        return json.dumps({"ts": f"2023-03-20T01:{minute:02d}:00Z", "request_id": rid, "op": "GET",
                           "key": f"user:{rid}:titles", "status": status, "host": "h1", "conn_id": "c1"})

    folder = tmp_path / "logs"
    folder.mkdir()
    live = folder / "cache.jsonl"
    live.write_text(call(0, "a", "cancelled") + "\n" + call(1, "b") + "\n")
    out = str(tmp_path / "out")
    assert invoke(str(folder), "--out", out).exit_code == 0
    grown = live.read_text() + call(2, "c") + "\n"
    live.write_text(grown)
    assert invoke(str(folder), "--out", out).stdout.startswith("ingested 1 file: 3 lines = 1 kept + 2 duplicates")
    before = (tmp_path / "out" / "manifest.json").read_text()

    if how == "rotated":
        (folder / "cache.jsonl.1").write_text(grown)  # already ingested: the same bytes
    new_lines = call(3, "d", "cancelled") + "\n" + call(4, "e") + "\n"
    live.write_text(new_lines if how != "rewritten" else grown.replace('"b"', '"x"'))
    if how == "truncated":
        live.write_text(call(3, "d", "cancelled") + "\n")
    result = invoke(str(folder), "--out", out)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"whosaw: error: input {live} holds other lines than when it was ingested (rotated or rewritten in place? "
        "its last line cut then?): its line numbers would name two lines; copy a rotated file under a name of its "
        "own, else ingest into a new --out"
    ]
    assert (tmp_path / "out" / "manifest.json").read_text() == before

    live.rename(folder / "cache-0103.jsonl")
    again = invoke(str(folder), "--out", out)
    assert again.exit_code == 0, again.output
    lake = duckdb.sql(
        f"SELECT source_file, source_line, count(*) FROM read_parquet('{out}/parquet/cache/**/*.parquet') "
        "GROUP BY ALL HAVING count(*) > 1"
    ).fetchall()
    assert lake == []


def test_a_live_csv_copied_with_its_last_line_cut_is_refused_when_read_complete(tmp_path):
    """A live CSV copied mid-write ends in a cut line that still parses (conn_id '1' of '12'): kept. Copied again,
    the line is whole, another record at the same name: both were kept, a call the connection never made beside
    the real one, which shifts every later reply. Refused: a new --out reads each line once, whole."""
    header = "ts,request_id,op,key,status,host,conn_id\n"
    first = "2023-03-20T01:00:00Z,r1,GET,user:a:titles,ok,h1,12\n"
    folder = tmp_path / "logs"
    folder.mkdir()
    live = folder / "cache.csv"
    live.write_text(header + first + "2023-03-20T01:00:01Z,r2,GET,user:b:titles,ok,h1,1")
    out = str(tmp_path / "out")
    assert invoke(str(folder), "--out", out).stdout.startswith("ingested 1 file: 2 lines = 2 kept")
    live.write_text(header + first + "2023-03-20T01:00:01Z,r2,GET,user:b:titles,ok,h1,12\n")
    result = invoke(str(folder), "--out", out)
    assert result.exit_code == 2 and "its last line cut then?" in result.stderr, result.output
    fresh = invoke(str(folder), "--out", str(tmp_path / "fresh"))
    assert fresh.stdout.startswith("ingested 1 file: 2 lines = 2 kept")


def test_the_same_lines_written_anew_at_a_path_already_ingested_are_read(tmp_path):
    """A log exported again with more lines (a gzip compressed anew: other bytes, the earlier lines unchanged) is
    not a grown file byte for byte, yet its earlier lines are the same lines: they count as duplicates."""
    def call(minute: int, rid: str) -> str:
        return json.dumps({"ts": f"2023-03-20T01:{minute:02d}:00Z", "request_id": rid, "op": "GET",
                           "key": f"user:{rid}:titles", "host": "h1", "conn_id": "c1"}) + "\n"

    folder = tmp_path / "logs"
    folder.mkdir()
    export = folder / "cache.jsonl.gz"
    export.write_bytes(gzip.compress((call(0, "a") + call(1, "b")).encode(), compresslevel=1, mtime=0))
    out = str(tmp_path / "out")
    assert invoke(str(folder), "--out", out).exit_code == 0
    export.write_bytes(gzip.compress((call(0, "a") + call(1, "b") + call(2, "c")).encode(), compresslevel=9, mtime=1))
    again = invoke(str(folder), "--out", out)
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("ingested 1 file: 3 lines = 1 kept + 2 duplicates + 0 rejected")


def test_a_request_id_repeated_with_another_session_or_user_is_pointed_out(tmp_path):
    """A request line is a duplicate by its request_id alone (SPEC): the first line is kept. A repeat with another
    session or user is no re-shipped copy but an id used twice (per-host counters): the reads of the dropped
    request are then judged with the kept one's viewer. It was counted as a plain duplicate, without a word."""
    def request(rid: str, session: str, user: str, hour: int = 1) -> str:
        return json.dumps({"ts": f"2023-03-20T0{hour}:00:00Z", "request_id": rid, "session_id": session,
                           "user_id": user})

    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "requests-web1.jsonl").write_text(
        request("req-1", "s1", "alice") + "\n" + request("req-1", "s1", "alice") + "\n"  # re-shipped: no note
    )
    out = str(tmp_path / "out")
    first = invoke(str(folder), "--out", out)
    assert first.stdout.splitlines() == ["ingested 1 file: 2 lines = 1 kept + 1 duplicates + 0 rejected"]
    (folder / "requests-web2.jsonl").write_text(
        request("req-1", "s9", SECRET, 2) + "\n" + request("req-2", "s2", "carol") + "\n"
        + request("req-2", "s2", "dave") + "\n"
    )
    again = invoke(str(folder), "--out", out)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == [
        "ingested 1 file: 3 lines = 1 kept + 2 duplicates + 0 rejected; 1 already ingested",
        "note: 2 request lines repeat a request_id with another session or user (a request id used twice? the "
        "first line was kept: see manifest.json files[].differing_duplicates)",
    ]
    files = {Path(e["path"]).name: e for e in json.loads((tmp_path / "out" / "manifest.json").read_text())["files"]}
    assert files["requests-web2.jsonl"]["differing_duplicates"] == 2
    assert "differing_duplicates" not in files["requests-web1.jsonl"]
    for stage in ("analyze", "report"):
        assert CliRunner().invoke(cli, [stage, "--out", out]).exit_code == 0
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "2 request lines repeat a request id with another session or user" in report
    assert SECRET not in report


def test_identical_cache_lines_of_one_file_timed_to_the_millisecond_are_pointed_out(tmp_path):
    """Two identical cache lines are one re-shipped line, dropped. At whole milliseconds they may also be one
    request reading a key twice on one connection, and dropping one leaves that connection one reply short for
    the connection tier: such drops (a copy within the same file, in a file timed no finer than a millisecond)
    are counted and said. Microsecond logs, and copies across files (a log shipped twice), raise nothing."""
    def call(ts: str, rid: str = "r1") -> str:
        return json.dumps({"ts": ts, "request_id": rid, "op": "GET", "key": "user:alice:titles", "host": "h1",
                           "conn_id": "c1"}) + "\n"

    folder = tmp_path / "logs"
    folder.mkdir()
    millis = call("2023-03-20T01:00:00.120Z") * 2 + call("2023-03-20T01:00:00.250Z", "r2")
    (folder / "cache-ms.jsonl").write_text(millis)
    (folder / "cache-zz-shipped-again.jsonl").write_text(call("2023-03-20T01:00:00.250Z", "r2"))
    (folder / "cache-us.jsonl").write_text(call("2023-03-20T02:00:00.123456Z") * 2)
    out = str(tmp_path / "out")
    result = invoke(str(folder), "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "ingested 3 files: 6 lines = 3 kept + 3 duplicates + 0 rejected",
        "note: 1 cache line repeats an earlier line of the same file exactly, in a log timed to the millisecond: "
        "dropped as re-shipped copies, but a request reading a key twice would log the same; if one did, the "
        "connection evidence on that connection is off by one (manifest.json files[].coarse_repeats)",
    ]
    files = {Path(e["path"]).name: e for e in json.loads((tmp_path / "out" / "manifest.json").read_text())["files"]}
    assert files["cache-ms.jsonl"]["coarse_repeats"] == 1 and files["cache-ms.jsonl"]["duplicates"] == 1
    assert files["cache-zz-shipped-again.jsonl"]["duplicates"] == 1  # another file's copy: shipped twice
    assert files["cache-us.jsonl"]["duplicates"] == 1
    assert not any("coarse_repeats" in files[name] for name in ("cache-zz-shipped-again.jsonl", "cache-us.jsonl"))
    for stage in ("analyze", "report"):
        assert CliRunner().invoke(cli, [stage, "--out", out]).exit_code == 0
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "1 cache line repeats an earlier line of the same file exactly" in report


def test_a_symbolic_link_loop_in_an_input_folder_is_no_internal_error(tmp_path):
    """Path.resolve() raised RuntimeError on a link loop found in a folder: exit 1, "internal error". A loop that
    is not named as a log is passed over as any other non-log; one named as a log cannot be read (exit 2)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "requests.jsonl").write_text(line("r1") + "\n")
    (folder / "a").symlink_to("b")
    (folder / "b").symlink_to("a")
    result = invoke(str(folder), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted(Path(s["path"]).name for s in manifest["skipped"]) == ["a", "b"]
    (folder / "cache.jsonl").symlink_to("cache.jsonl")
    result = invoke(str(folder), "--out", str(tmp_path / "out2"))
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "cache.jsonl cannot be read (a symbolic link loop)" in result.stderr


def test_a_linked_folder_in_an_input_folder_is_read_once_never_passed_over_unsaid(tmp_path):
    """A link to a file was read, a link to a folder was not (os.walk does not follow it): its logs vanished from
    the run without a word, not read and not listed as passed over. Now it is walked; a link back up is no loop."""
    folder, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (folder / "requests.jsonl").write_text(line("r1") + "\n")
    (elsewhere / "cache.jsonl").write_text(json.dumps(
        {"ts": "2023-03-20T01:00:00Z", "request_id": "r1", "op": "GET", "key": "k", "host": "h", "conn_id": "1"}
    ) + "\n")
    (folder / "more").symlink_to(elsewhere)
    (elsewhere / "up").symlink_to(folder)  # a loop through the link
    (folder / "self").symlink_to(".")
    result = invoke(str(folder), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted((Path(f["path"]).name, f["kept"]) for f in manifest["files"]) == [
        ("cache.jsonl", 1), ("requests.jsonl", 1)]
    assert manifest["skipped"] == []


def test_a_folder_that_cannot_be_listed_inside_an_input_folder_is_exit_2_not_passed_over(tmp_path):
    """os.walk passes over a folder it cannot list: its logs vanished from a run that said it read everything.
    An unreadable file is exit 2; so is an unreadable folder. (As root, only without CAP_DAC_*: setpriv.)"""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "requests.jsonl").write_text(line("r1") + "\n")
    (folder / "sub" / "sessions.jsonl").write_text(json.dumps(
        {"ts": "2023-03-20T01:00:00Z", "session_id": "s1", "user_id": SECRET, "event": "login"}) + "\n")
    (folder / "sub").chmod(0)
    try:
        done = _python_without_reading_everything("-m", "pipeline.cli", "ingest", str(folder), "--out",
                                                  str(tmp_path / "out"))
    finally:
        (folder / "sub").chmod(0o755)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == f"whosaw: error: input folder {folder / 'sub'} cannot be read (permission denied)\n"
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_an_unreadable_input_file_is_one_line_and_exit_2(tmp_path):
    """A log file whosaw may not read: one line naming it, exit 2, nothing written; through the Python API, one
    WhosawError saying so. (As root: setpriv.)"""
    locked = tmp_path / "in" / "requests.jsonl"
    locked.parent.mkdir()
    locked.write_text(line("r1") + "\n")
    locked.chmod(0)
    done = _python_without_reading_everything("-m", "pipeline.cli", "ingest", str(locked), "--out",
                                              str(tmp_path / "out"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and f"'{locked}' is not readable" in done.stderr, done.stderr
    api = ("import sys, pipeline\ntry:\n    pipeline.ingest([sys.argv[1]], sys.argv[2], progress=False)\n"
           "except pipeline.errors.WhosawError as exc:\n    print(exc)")
    done = _python_without_reading_everything("-c", api, str(locked), str(tmp_path / "out"))
    assert done.returncode == 0 and done.stdout == f"input {locked} is not readable (permission denied)\n", done
    assert not (tmp_path / "out" / "manifest.json").exists()


def _python_without_reading_everything(*args: str) -> subprocess.CompletedProcess:
    """``python ARGS`` in a fresh process that file modes bind: root reads anything, so as root without the
    capabilities that let it (setpriv; skipped where it is missing)."""
    command = [sys.executable, *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root reads any file, and setpriv is missing to drop that")
        caps = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
