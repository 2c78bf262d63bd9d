"""The notebook API (pipeline.explore) on the real pipeline's output for sample_logs/, against the ground truth.

No mocks: every test reads what ``pipeline.run`` wrote for the sample incident (module fixture), or a run on a
gzipped / modified copy of it in tmp_path.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tomllib
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from lakes import held_by_another_thread

import pipeline
from pipeline.config import config_from_dict
from pipeline.errors import WhosawError
from pipeline.explore import connect, connection_timeline, export_csv, reanalyze, results_dir, source_lines, user_trail
from pipeline.safecsv import read_safe_csv
from pipeline.schema import KINDS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_logs"
CONFIG = SAMPLE / "incident.toml"
TRUTH = SAMPLE / "ground_truth"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("explore") / "out"
    pipeline.run([SAMPLE], folder, config=CONFIG, progress=False)
    return folder


@pytest.fixture()
def con(out: Path):
    connection = connect(out)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    return pd.read_csv(TRUTH / "exposures.csv", dtype=str, keep_default_na=False, na_values=[""])


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.execute(sql).fetchall()[0][0])


def _file_lines(path: str | Path) -> list[str]:
    """A whole input file's physical lines (test-side reference reader; the files are small)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        return handle.read().decode("utf-8").split("\n")


# ---------------------------------------------------------------------------------------------- connect

def test_connect_exposes_every_view_with_the_rows_written(out: Path, con: duckdb.DuckDBPyConnection) -> None:
    views = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {*KINDS, "rejects", "manifest_files", "exposures", "exposures_outside_window", "near_misses",
            "timeline"} <= views
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for kind in KINDS:
        lake = _count(con, f"SELECT count(*) FROM read_parquet('{out}/parquet/{kind}/**/*.parquet')")
        kept = sum(entry["kept"] for entry in manifest["files"] if entry["kind"] == kind)
        assert _count(con, f"SELECT count(*) FROM {kind}") == lake == kept > 0
    for view in ("exposures", "exposures_outside_window", "near_misses", "timeline"):
        assert _count(con, f"SELECT count(*) FROM {view}") == len(pd.read_parquet(out / f"{view}.parquet"))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert _count(con, "SELECT count(*) FROM exposures") == summary["exposures"] == 49
    assert _count(con, "SELECT count(*) FROM rejects") == sum(entry["rejected"] for entry in manifest["files"])
    files = con.execute("SELECT path, lines, kept, duplicates, rejected FROM manifest_files").df()
    assert len(files) == len(manifest["files"]) == 3
    assert (files["lines"] == files["kept"] + files["duplicates"] + files["rejected"]).all()


def test_connect_settings_and_results_dir(out: Path, con: duckdb.DuckDBPyConnection) -> None:
    assert con.execute("SELECT current_setting('enable_progress_bar')").fetchall()[0][0] is False
    assert str(con.execute("SELECT current_setting('TimeZone')").fetchall()[0][0]) == "UTC"
    assert results_dir(con) == out.resolve()
    assert results_dir(out) == out.resolve()
    with pytest.raises(WhosawError, match="pipeline.connect"):
        results_dir(duckdb.connect())
    with pytest.raises(WhosawError, match="not a whosaw output folder"):
        connect(out / "missing")


def test_rejects_view_lists_rejected_lines_by_kind(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = (SAMPLE / "requests.jsonl").read_text(encoding="utf-8").splitlines()[:5]
    lines[2] = "{not json"
    (logs / "requests.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pipeline.ingest([logs], tmp_path / "out", progress=False)
    with connect(tmp_path / "out") as con:
        rejects = con.execute("SELECT kind, source_file, source_line, reason FROM rejects").df()
        assert rejects.to_dict("records") == [
            {"kind": "requests", "source_file": str(logs / "requests.jsonl"), "source_line": 3,
             "reason": "invalid_json"}
        ]
        assert _count(con, "SELECT count(*) FROM requests") == 4
        assert _count(con, "SELECT count(*) FROM cache") == 0  # a kind with no rows: an empty typed view
        assert "exposures" not in {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        with pytest.raises(WhosawError, match="analyze"):
            user_trail(con, "u000001")


# ---------------------------------------------------------------------------------------------- user_trail

def test_user_trail_matches_the_ground_truth_for_every_owner_and_viewer(
    con: duckdb.DuckDBPyConnection, truth: pd.DataFrame
) -> None:
    users = set(truth["owner_id"]) | set(truth["viewer_id"].dropna())
    for user in sorted(users):
        trail = user_trail(con, user)
        exposures = trail[trail["record"] == "exposure"]
        assert exposures["in_window"].all()
        as_owner = exposures[exposures["role"] == "owner"]
        as_viewer = exposures[exposures["role"] == "viewer"]
        assert sorted(as_owner["request_id"]) == sorted(truth.loc[truth["owner_id"] == user, "request_id"]), user
        assert sorted(as_viewer["request_id"]) == sorted(truth.loc[truth["viewer_id"] == user, "request_id"]), user
        assert (as_owner["owner_id"] == user).all() and (as_viewer["viewer_id"] == user).all()
        assert (as_owner["other_id"].fillna("") == as_owner["viewer_id"].fillna("")).all()
        assert (as_viewer["other_id"] == as_viewer["owner_id"]).all()
        assert trail["ts"].is_monotonic_increasing


def test_user_trail_of_a_payment_victim(out: Path, truth: pd.DataFrame) -> None:
    row = truth[truth["category"] == "payment_info"].iloc[0]
    trail = user_trail(out, row["owner_id"])  # a folder works as well as a connection
    hit = trail[(trail["request_id"] == row["request_id"]) & (trail["record"] == "exposure")]
    assert len(hit) == 1
    hit = hit.iloc[0]
    assert (hit["role"], hit["other_id"], hit["category"], hit["key"], hit["value_key"]) == (
        "owner", row["viewer_id"], "payment_info", row["key"], row["value_key"]
    )
    near = trail[trail["record"] == "near_miss"]
    assert set(near["kind"]) <= {"failed", "discarded", "not-data", "background"}
    assert (trail["record"] == "exposure").sum() == len(user_trail(out, row["owner_id"], near_misses=False))


def test_reanalyze_flags_outside_window_and_leaves_out_untouched(out: Path, tmp_path: Path) -> None:
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    dest = tmp_path / "narrow"
    summary = reanalyze(out, dest, window="2023-03-20T01:00Z/2023-03-20T05:00Z", progress=False)
    assert summary["window"]["method"] == "cli"
    assert 0 < summary["exposures"] < 49 and summary["outside_window"]["exposures"] == 49 - summary["exposures"]
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    with connect(dest) as con:
        late = con.execute(
            "SELECT owner_id, request_id FROM exposures_outside_window ORDER BY ts DESC LIMIT 1"
        ).fetchall()[0]
        trail = user_trail(con, late[0])
        flagged = trail[trail["request_id"] == late[1]]
        assert list(flagged["in_window"]) == [False]
    summary = reanalyze(out, dest, window="auto", progress=False)  # a folder it made is replaced
    assert summary["window"]["method"] == "auto"
    with pytest.raises(WhosawError, match="dest must be a folder outside out"):
        reanalyze(out, out / "inside", window="auto")
    with pytest.raises(WhosawError, match="not made by reanalyze"):
        reanalyze(out, tmp_path, window="auto")

    # A bad window, config or option is refused before dest's results are replaced.
    def results(folder: Path) -> dict[Path, bytes]:
        files = [p for p in folder.rglob("*") if p.is_file() and "parquet" not in p.parts]
        return {p.relative_to(folder): p.read_bytes() for p in files}

    made = results(dest)
    for bad, match in (({"window": "2023-03-20T01:00Z-PT2H"}, "window"), ({"config": tmp_path / "nope.toml"}, "nope"),
                       ({"windw": "auto"}, "unknown option 'windw'"), ({"bucket_seconds": 0}, "bucket_seconds"),
                       ({"engine": "nope"}, "engine"), ({"memory_limit": "lots"}, "memory limit"),
                       ({"threads": -3}, "threads")):
        with pytest.raises(WhosawError, match=match):
            reanalyze(out, dest, progress=False, **bad)
    assert results(dest) == made
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch left beside it
    # Its lake is out's (a link): late logs go into out, never into it, which would change out's lake.
    late = tmp_path / "late" / "requests-late.jsonl"
    late.parent.mkdir()
    late.write_text(json.dumps({"ts": "2023-03-20T02:00:00Z", "request_id": "late-1", "session_id": "s"}) + "\n")
    with pytest.raises(WhosawError, match="is a reanalysis of another folder's lake"):
        pipeline.ingest([late], dest, progress=False)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------------------------------- connection_timeline

def _some_truth(truth: pd.DataFrame) -> pd.DataFrame:
    """A spread of ground-truth exposures: every payment one, the chain (lag 2), every sixth of the rest."""
    picked = (truth["category"] == "payment_info") | (truth["lag"] != "1") | (truth.index % 6 == 0)
    return truth[picked]


def test_connection_timeline_shows_the_cancelled_call_then_the_crossed_read(
    con: duckdb.DuckDBPyConnection, truth: pd.DataFrame
) -> None:
    direct = 0
    for row in _some_truth(truth).itertuples():
        timeline = connection_timeline(con, row.host, row.conn_id, around=row.ts)
        assert (timeline["host"] == row.host).all() and (timeline["conn_id"] == row.conn_id).all()
        assert timeline["ts"].is_monotonic_increasing
        read = timeline[timeline["focus"]]
        assert len(read) == 1, row.request_id
        read = read.iloc[0]
        assert read["request_id"] == row.request_id and read["crossed"]
        assert "exposure" in read["finding"].split("; ")
        assert (read["viewer_id"] if pd.notna(read["viewer_id"]) else None) == (
            row.viewer_id if isinstance(row.viewer_id, str) else None
        )
        assert read["owner_id"] == row.owner_id
        assert read["reply_request_id"] == row.reply_request_id
        # the call whose reply it received is shown, earlier on the connection, numbered reply_of_call
        reply = timeline[(timeline["segment"] == read["segment"]) & (timeline["call_no"] == read["reply_of_call"])]
        assert len(reply) == 1
        reply = reply.iloc[0]
        assert reply["request_id"] == row.reply_request_id and reply["ts"] < read["ts"]
        assert reply["key"] == row.value_key
        assert reply["reply_fate"] == "read_by_other" and reply["read_by_call"] == read["call_no"]
        # the abandoned calls that shifted it come before it since the last reset: one per reply of lag
        abandoned = timeline[(timeline["segment"] == read["segment"]) & (timeline["call_no"] < read["call_no"])
                             & timeline["status"].isin(["cancelled", "timeout"])]
        assert len(abandoned) >= 1
        assert read["call_no"] - read["reply_of_call"] == int(row.lag)
        if reply["status"] in ("cancelled", "timeout"):
            direct += 1
            assert reply["read_by_request_id"] == row.request_id
            assert f"{reply['status']} after it was sent" in reply["note"]
        assert f"read the reply of call #{int(read['reply_of_call'])}" in read["note"]
    assert direct >= 3


def test_connection_timeline_whole_connection_and_errors(con: duckdb.DuckDBPyConnection, truth: pd.DataFrame) -> None:
    row = truth.iloc[0]
    whole = connection_timeline(con, row["host"], row["conn_id"])
    lake = _count(con, f"SELECT count(*) FROM cache WHERE host = '{row['host']}' AND conn_id = '{row['conn_id']}'")
    assert len(whole) == lake and whole["in_span"].all() and not whole["focus"].any()
    fates = set(whole["reply_fate"])
    assert fates <= {"read", "read_by_other", "discarded", "unread", "none"}
    resets = whole[whole["call_no"].isna()]
    assert (resets["reply_fate"] == "none").all()
    # every ground-truth exposure on the connection is marked on its read
    on_conn = truth[(truth["host"] == row["host"]) & (truth["conn_id"] == row["conn_id"])]
    shown = set(whole.loc[whole["finding"].fillna("").str.contains("exposure"), "request_id"])
    assert set(on_conn["request_id"]) <= shown
    with pytest.raises(WhosawError, match="no cache lines"):
        connection_timeline(con, "no-such-host", "0")
    # times an analyst may mistype: one clear error, not pandas' (or, for a bare number, nanoseconds: nothing found)
    for bad in ({"around": "yesterday-ish"}, {"around": 5}, {"around": pd.NaT}, {"before": 120},
                {"before": "two minutes"}, {"after": "-1min"}):
        with pytest.raises(WhosawError, match="expected a"):
            connection_timeline(con, row["host"], row["conn_id"], **({"around": row["ts"]} | bad))
    around = connection_timeline(con, row["host"], row["conn_id"], around=pd.Timestamp(row["ts"]),
                                 before=timedelta(minutes=1))
    assert around["focus"].sum() >= 1
    numpy_times = connection_timeline(con, row["host"], row["conn_id"], around=pd.Timestamp(row["ts"]).to_datetime64(),
                                      before=np.timedelta64(1, "m"))  # a frame's .values
    assert numpy_times["source_line"].tolist() == around["source_line"].tolist()


# ---------------------------------------------------------------------------------------------- source_lines

def test_source_lines_returns_the_exact_raw_lines(con: duckdb.DuckDBPyConnection) -> None:
    exposures = con.execute("SELECT * FROM exposures ORDER BY ts").df()
    lines = source_lines(con, exposures)
    files = {path: _file_lines(path) for path in lines["source_file"].unique()}
    cache = lines[lines["line_kind"] == "cache"].set_index("input_row")
    request = lines[lines["line_kind"] == "request"].set_index("input_row")
    session = lines[lines["line_kind"] == "session"].set_index("input_row")
    assert len(cache) == len(request) == len(exposures)
    # the session line: the latest event of the row's session at or before its time (later lines first on a tie),
    # found here from the sessions log itself; rows of a session with no event then (anonymous visitors) have none
    events = [json.loads(line) for line in _file_lines(SAMPLE / "sessions.jsonl") if line]
    latest = {}
    for index, exposure in exposures.iterrows():
        before = [(pd.Timestamp(e["ts"]), number) for number, e in enumerate(events)
                  if e["session_id"] == exposure["session_id"] and pd.Timestamp(e["ts"]) <= exposure["ts"]]
        if before:
            latest[index] = max(before)[1]
    assert 0 < len(latest) < len(exposures)
    assert set(session.index) == set(latest)
    assert {i: json.loads(session.loc[i, "raw"]) for i in latest} == {i: events[n] for i, n in latest.items()}
    assert lines["verified"].all() and lines["note"].isna().all()
    for index, exposure in exposures.iterrows():
        raw = cache.loc[index, "raw"]
        assert raw == files[cache.loc[index, "source_file"]][int(cache.loc[index, "source_line"]) - 1]
        record = json.loads(raw)
        assert record["request_id"] == exposure["request_id"] and record["key"] == exposure["key"]
        assert int(cache.loc[index, "source_line"]) == exposure["source_line"]
        req = json.loads(request.loc[index, "raw"])
        assert req["request_id"] == exposure["request_id"] and req["session_id"] == exposure["session_id"]
        assert request.loc[index, "raw"] == files[request.loc[index, "source_file"]][
            int(request.loc[index, "source_line"]) - 1]
        if index in session.index:
            event = json.loads(session.loc[index, "raw"])
            assert event["session_id"] == exposure["session_id"]
            assert pd.Timestamp(event["ts"]) <= exposure["ts"]
            if exposure["viewer_kind"] == "session":
                assert event["user_id"] == exposure["viewer_id"]


def test_source_lines_accepts_one_row_and_a_choice_of_lines(con: duckdb.DuckDBPyConnection) -> None:
    exposure = con.execute("SELECT * FROM exposures WHERE category = 'payment_info' LIMIT 1").df().iloc[0]
    lines = source_lines(con, exposure, lines=("cache",), verify=False)
    assert list(lines["line_kind"]) == ["cache"] and lines["verified"].isna().all()
    assert json.loads(lines["raw"].iloc[0])["value_owner"] == exposure["owner_id"]
    near = con.execute("SELECT * FROM near_misses LIMIT 3").df()
    assert len(source_lines(con, near.to_dict("records"), lines=("cache", "request"))) == 6
    with pytest.raises(WhosawError, match="unknown line kind"):
        source_lines(con, exposure, lines=("audit",))
    with pytest.raises(WhosawError, match="source_file"):
        source_lines(con, [{"request_id": "x"}])
    # rows as an analyst has them: itertuples() rows, one of them, a kind named alone
    frame = con.execute("SELECT * FROM exposures ORDER BY ts LIMIT 2").df()
    whole = source_lines(con, frame, lines="cache")
    assert list(whole["line_kind"]) == ["cache", "cache"]
    assert source_lines(con, list(frame.itertuples()), lines="cache")["raw"].tolist() == whole["raw"].tolist()
    assert source_lines(con, next(frame.itertuples()), lines="cache")["raw"].tolist() == whole["raw"].tolist()[:1]
    for bad in ([("a", 1)], frame.assign(source_line="abc"), frame.assign(source_line=3.5), 5):
        with pytest.raises(WhosawError, match="source_lines: "):
            source_lines(con, bad)


def test_source_lines_from_gzip_inputs(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("requests.jsonl", "cache.jsonl", "sessions.jsonl"):
        with open(SAMPLE / name, "rb") as src, gzip.open(logs / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    pipeline.ingest([logs], tmp_path / "out", config=CONFIG, progress=False)
    pipeline.analyze(tmp_path / "out", config=CONFIG, progress=False)
    plain = con.execute("SELECT * FROM exposures ORDER BY ts, request_id").df()
    with connect(tmp_path / "out") as gz_con:
        exposures = gz_con.execute("SELECT * FROM exposures ORDER BY ts, request_id").df()
        assert list(exposures["request_id"]) == list(plain["request_id"])
        lines = source_lines(gz_con, exposures)
    assert lines["source_file"].str.endswith(".gz").all()
    assert lines["verified"].all()
    expected = source_lines(con, plain)
    assert list(lines["raw"]) == list(expected["raw"])
    assert list(lines["source_line"]) == list(expected["source_line"])


def test_source_lines_from_parquet_inputs(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for kind in KINDS:
        frame = pd.read_json(SAMPLE / f"{kind}.jsonl", lines=True, dtype=False)
        frame.to_parquet(logs / f"{kind}.parquet", index=False)
    with open(logs / "cache.parquet", "rb") as src, gzip.open(logs / "cache.parquet.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (logs / "cache.parquet").unlink()
    pipeline.ingest([logs], tmp_path / "out", config=CONFIG, progress=False)
    pipeline.analyze(tmp_path / "out", config=CONFIG, progress=False)
    plain = con.execute("SELECT * FROM exposures ORDER BY ts, request_id LIMIT 5").df()
    with connect(tmp_path / "out") as pq_con:
        exposures = pq_con.execute("SELECT * FROM exposures ORDER BY ts, request_id LIMIT 5").df()
        lines = source_lines(pq_con, exposures)
    assert list(exposures["request_id"]) == list(plain["request_id"])
    assert lines["verified"].all() and lines["raw"].notna().all()
    expected = source_lines(con, plain)
    assert list(lines["source_line"]) == list(expected["source_line"])  # a Parquet file's rows are its lines
    for mine, theirs in zip(lines["raw"], expected["raw"], strict=True):  # the row as JSON: the same record
        assert {k: v for k, v in json.loads(mine).items() if v is not None} == {
            k: v for k, v in json.loads(theirs).items() if v is not None}


def test_source_lines_notices_a_changed_or_missing_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("requests.jsonl", "cache.jsonl", "sessions.jsonl"):
        shutil.copy(SAMPLE / name, logs / name)
    pipeline.ingest([logs], tmp_path / "out", config=CONFIG, progress=False)
    pipeline.analyze(tmp_path / "out", config=CONFIG, progress=False)
    with connect(tmp_path / "out") as con:
        exposure = con.execute("SELECT * FROM exposures LIMIT 1").df()
        with open(logs / "cache.jsonl", "a", encoding="utf-8") as handle:
            handle.write('{"tampered": true}\n')
        (logs / "sessions.jsonl").unlink()
        lines = source_lines(con, exposure).set_index("line_kind")
    assert pd.notna(lines.loc["cache", "verified"]) and not lines.loc["cache", "verified"]
    assert "changed since it was ingested" in lines.loc["cache", "note"]
    assert json.loads(lines.loc["cache", "raw"])["request_id"] == exposure["request_id"].iloc[0]
    assert lines.loc["request", "verified"] and pd.isna(lines.loc["request", "note"])
    assert pd.isna(lines.loc["session", "raw"]) and "cannot read" in lines.loc["session", "note"]


# ---------------------------------------------------------------------------------------------- export, package

def test_export_csv_is_spreadsheet_safe(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    frame = con.execute("SELECT owner_id, viewer_id, ts, category FROM exposures ORDER BY ts LIMIT 3").df()
    frame["note"] = ["=HYPERLINK(\"http://x\")", "+1", "plain"]
    path = export_csv(frame, tmp_path / "deep" / "list.csv")
    text = path.read_text(encoding="utf-8")
    assert "'=HYPERLINK" in text and "'+1" in text and "\n=" not in text and ",=" not in text
    back = read_safe_csv(path)
    assert list(back["note"]) == list(frame["note"])
    assert list(back["owner_id"]) == list(frame["owner_id"])
    assert back["ts"].str.endswith("Z").all()


def test_export_csv_takes_the_frames_of_groupby_and_pivot(tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    """Several aggregations or a pivot give two levels of column names, written as "('ts', 'min')"; an index kept as
    a column too (set_index(drop=False)) failed; a folder for the path failed with IsADirectoryError."""
    exposures = con.execute("SELECT * FROM exposures").df()
    by_owner = exposures.groupby(["owner_id", "category"]).agg({"ts": ["min", "max"], "viewer_id": "nunique"})
    back = read_safe_csv(export_csv(by_owner, tmp_path / "by_owner.csv"))
    assert list(back.columns) == ["owner_id", "category", "ts_min", "ts_max", "viewer_id_nunique"]
    assert len(back) == len(by_owner)
    kept = read_safe_csv(export_csv(exposures.set_index("owner_id", drop=False), tmp_path / "kept.csv"))
    assert list(kept.columns) == list(exposures.columns) and list(kept["owner_id"]) == list(exposures["owner_id"])
    with pytest.raises(WhosawError, match="is a folder"):
        export_csv(exposures, tmp_path)
    counted = exposures.groupby("owner_id").agg({"owner_id": "count", "ts": "min"})  # the ids would be lost
    with pytest.raises(WhosawError, match="the index 'owner_id' and a column of that name differ"):
        export_csv(counted, tmp_path / "counted.csv")


def test_the_package_exports_the_helpers() -> None:
    for name in ("connect", "user_trail", "connection_timeline", "source_lines", "export_csv", "reanalyze",
                 "ingest", "analyze", "report", "run", "simulate"):
        assert name in pipeline.__all__ and callable(getattr(pipeline, name))


def test_what_a_connection_spills_stays_in_out(out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A query too big for memory spills rows of the lake (personal data) to disk: into ``out``, in a folder
    DuckDB removes when the connection closes; never DuckDB's default, ``.tmp`` in the current folder (a notebook's:
    the checkout)."""
    cwd = tmp_path / "notebook_folder"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = {p.name for p in out.iterdir()}
    con = connect(out)
    con.execute("SET memory_limit = '60MB'")
    con.execute("SET threads = 1")
    con.execute("SET preserve_insertion_order = false")
    con.execute("CREATE TEMP TABLE big AS SELECT c.*, r.range AS copy_no FROM cache AS c, range(100) AS r")
    spilled = [p for p in out.iterdir() if p.name not in before]
    assert list(cwd.iterdir()) == []
    assert len(spilled) == 1 and spilled[0].name.startswith(".tmp-explore-") and any(spilled[0].iterdir())
    con.close()
    assert {p.name for p in out.iterdir()} == before


# ---------------------------------------------------------------------------------------------- wrong inputs

def test_connect_refuses_a_folder_whosaw_did_not_write(out: Path, tmp_path: Path) -> None:
    """The logs' folder (an easy slip for --out) or an empty folder gave empty views: 'no exposures'."""
    (tmp_path / "empty").mkdir()
    for folder in (SAMPLE, tmp_path / "empty"):
        with pytest.raises(WhosawError, match="not a whosaw output folder"):
            connect(folder)
        with pytest.raises(WhosawError, match="not a whosaw output folder"):
            connection_timeline(folder, "web-1", "1")
        with pytest.raises(WhosawError, match="not a whosaw output folder"):
            user_trail(folder, "u000027")


def test_a_closed_or_foreign_connection_and_a_damaged_folder_are_one_clear_error(out: Path, tmp_path: Path) -> None:
    """The notebook's last cell closes its connection; a cell run again after it gave DuckDB's own error, or said
    the connection was not connect()'s. A cut-short result file or a broken manifest gave a raw error too."""
    closed = connect(out)
    closed.close()
    for helper in (lambda c: user_trail(c, "u000027"), lambda c: connection_timeline(c, "web-1", "1"),
                   lambda c: source_lines(c, [{"source_file": "x", "source_line": 1}])):
        with pytest.raises(WhosawError, match="this connection is closed"):
            helper(closed)
        with pytest.raises(WhosawError, match="not made by pipeline.connect"):
            helper(duckdb.connect())
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (damaged / "exposures.parquet").write_bytes((out / "exposures.parquet").read_bytes()[:100])
    with pytest.raises(WhosawError, match="exposures.parquet is not readable Parquet"):
        connect(damaged)
    (damaged / "manifest.json").write_text("{bad")
    with pytest.raises(WhosawError, match="manifest.json"):
        connect(damaged)


def test_user_trail_of_an_id_the_logs_never_name(con: duckdb.DuckDBPyConnection) -> None:
    """An empty trail says 'nothing happened to this user'; for a typo'd id it must not (and the error does not
    repeat the id)."""
    for typo in ("u00027", "u000027 ", "U000027"):
        with pytest.raises(WhosawError, match="names this user id") as caught:
            user_trail(con, typo)
        assert typo.strip() not in str(caught.value)
    untouched = con.execute(
        "SELECT min(user_id) FROM requests WHERE user_id NOT IN (SELECT owner_id FROM exposures) "
        "AND user_id NOT IN (SELECT viewer_id FROM exposures WHERE viewer_id IS NOT NULL) "
        "AND user_id NOT IN (SELECT owner_id FROM near_misses WHERE owner_id IS NOT NULL) "
        "AND user_id NOT IN (SELECT viewer_id FROM near_misses WHERE viewer_id IS NOT NULL)"
    ).fetchall()[0][0]
    assert untouched is not None and user_trail(con, untouched).empty


@pytest.mark.parametrize("given", ["file", "in code", "file edited since"])
def test_timeline_and_reanalyze_use_the_config_the_analysis_used(tmp_path: Path, given: str) -> None:
    """Ingested with incident.toml, analysed with another config (billing keys renamed billing_details), from a
    file or built in code: the timeline explains the exposures with the analysis' key rules, as they were then,
    and a what-if changes only the window."""
    text = CONFIG.read_text(encoding="utf-8").replace("payment_info", "billing_details")
    for table in ("ownership", "grants", "users"):
        text = text.replace(f'"{table}.csv"', json.dumps(str(SAMPLE / f"{table}.csv")))
    other = tmp_path / "analysis.toml"
    other.write_text(text, encoding="utf-8")
    folder = tmp_path / "out"
    pipeline.ingest([SAMPLE], folder, config=CONFIG, progress=False)
    config = config_from_dict(tomllib.loads(text)) if given == "in code" else other
    summary = pipeline.analyze(folder, config=config, progress=False)
    if given == "file edited since":
        other.write_text(text.replace("billing_details", "billing_renamed_later"), encoding="utf-8")
    assert summary["exposures_by_category"].get("billing_details") == 4

    with connect(folder) as con:
        row = con.execute("SELECT host, conn_id, ts, source_line FROM exposures WHERE category = 'billing_details' "
                          "ORDER BY ts LIMIT 1").fetchall()[0]
        timeline = connection_timeline(con, row[0], row[1], around=row[2])
    focus = timeline[timeline["source_line"] == row[3]].iloc[0]
    assert focus["key_category"] == "billing_details" and focus["category"] == "billing_details"

    again = reanalyze(folder, tmp_path / "same-window", window="2023-03-20T01:00Z/2023-03-20T10:00Z",
                      progress=False)
    assert again["exposures_by_category"] == summary["exposures_by_category"]


def test_reanalyze_refuses_while_another_stage_holds_out(out: Path, tmp_path: Path) -> None:
    """A what-if read the lake of ``out`` unlocked: an ingest of late logs moving its parts in meanwhile (or
    killed half-way) gave it half a lake. It now takes ``out``'s lock, as a stage does."""
    with held_by_another_thread(out), pytest.raises(WhosawError, match="another ingest"):
        reanalyze(out, tmp_path / "what-if", window="auto", progress=False)
    assert reanalyze(out, tmp_path / "what-if", window="auto", progress=False)["window"]["method"] == "auto"


def test_source_lines_of_a_gzipped_parquet_input_inflate_it_inside_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw rows of a ``.parquet.gz`` input are read from an inflated copy of the whole file (personal data):
    it went to the system's temp folder, outside ``--out``, and stayed there when the process was killed."""
    import tempfile

    logs = tmp_path / "logs"
    logs.mkdir()
    for kind in KINDS:
        shutil.copy(SAMPLE / f"{kind}.jsonl", logs / f"{kind}.jsonl")
    frame = pd.read_json(SAMPLE / "cache.jsonl", lines=True, dtype=False)
    frame.to_parquet(tmp_path / "cache.parquet", index=False)
    (logs / "cache.jsonl").unlink()
    with open(tmp_path / "cache.parquet", "rb") as src, gzip.open(logs / "cache.parquet.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    folder = tmp_path / "out"
    pipeline.run([logs], folder, config=CONFIG, progress=False)
    # no usable system temp folder: what source_lines writes can only go to --out, or it fails
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-system-tmp"))
    before = sorted(p.name for p in folder.iterdir())

    with connect(folder) as con:
        exposures = con.execute("SELECT * FROM exposures ORDER BY ts LIMIT 3").df()
        lines = source_lines(con, exposures, lines=("cache",))

    assert lines["note"].isna().all() and lines["raw"].notna().all() and lines["verified"].all()
    assert not (tmp_path / "no-system-tmp").exists()
    assert sorted(p.name for p in folder.iterdir()) == before


def test_user_trail_takes_an_id_from_a_float_column(tmp_path: Path) -> None:
    """An analyst's id from a float64 DataFrame column (43.0) is user 43, as ingest reads ids: the trail raised
    'no request ... names this user id'."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    logs = tmp_path / "logs"
    logs.mkdir()
    ts = ["2023-03-20T01:00:00Z", "2023-03-20T01:00:01Z"]
    pd.DataFrame({"ts": ts, "request_id": ["r1", "r2"], "session_id": ["s1", "s2"], "user_id": [43, 44]}) \
        .to_json(logs / "requests.jsonl", orient="records", lines=True)
    pd.DataFrame({"ts": ts, "request_id": ["r1", "r2"], "op": ["GET"] * 2, "key": ["user:43:titles"] * 2,
                  "status": ["cancelled", "ok"], "host": ["h1"] * 2, "conn_id": ["c1"] * 2}) \
        .to_json(logs / "cache.jsonl", orient="records", lines=True)
    config = tmp_path / "incident.toml"
    config.write_text("[[keys]]\npattern = '^user:(?P<owner>[^:]+):titles$'\ncategory = \"conversation_titles\"\n"
                      "severity = \"low\"\n")
    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(tmp_path / "out"), "--config", str(config)])
    assert result.exit_code == 0, result.output

    by_text = user_trail(tmp_path / "out", "43")
    assert list(by_text["role"]) == ["owner"]  # 44's read got 43's cancelled reply
    pd.testing.assert_frame_equal(user_trail(tmp_path / "out", pd.Series([43.0, None])[0]), by_text)
