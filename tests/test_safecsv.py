"""Spreadsheet-safe CSV: hostile cells are neutralised on disk and read back to the original values."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd

from pipeline.safecsv import copy_safe_csv, neutralise, read_safe_csv, restore, write_safe_csv

ROOT = Path(__file__).resolve().parents[1]

HOSTILE = ["=HYPERLINK(\"http://x\")", "+1-555", "-2", "@SUM(A1)", "\tTab", "\rCR", "'quoted", "plain", "Zoë"]


def test_rule_is_reversible_for_every_risky_start():
    for value in HOSTILE:
        written = neutralise(value)
        assert not str(written).startswith(("=", "+", "-", "@", "\t", "\r"))
        assert restore(written) == value


def test_duckdb_copy_neutralises_and_reads_back(tmp_path):
    con = duckdb.connect()
    frame = pd.DataFrame({"name": HOSTILE, "n": range(len(HOSTILE))})
    con.register("people", frame)
    path = tmp_path / "people.csv"
    copy_safe_csv(con, "SELECT name, n, TIMESTAMPTZ '2023-03-20 01:02:03.5+00' AS ts FROM people", path)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert not raw["name"].str.match(r"^[=+\-@\t\r]").any()
    back = read_safe_csv(path)
    assert back["name"].tolist() == HOSTILE
    assert back["ts"].unique().tolist() == ["2023-03-20T01:02:03.500000Z"]
    assert path.read_bytes().decode("utf-8")  # UTF-8 throughout


def test_pandas_writer_uses_the_same_rule(tmp_path):
    path = tmp_path / "small.csv"
    write_safe_csv(pd.DataFrame({"name": HOSTILE}), path)
    assert read_safe_csv(path)["name"].tolist() == HOSTILE


def test_writing_needs_no_pandas():
    """The analysis and the report write CSV through this module: importing it must not import pandas."""
    code = "import sys, pipeline.safecsv; print('pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_times_are_utc_whatever_the_machine_zone(tmp_path):
    """export_csv (the notebook's writer) on a machine whose local zone is not UTC: a time without a zone is
    UTC already (whosaw's rule) and is written as it is; a zoned time is converted to UTC. Before, a naive
    01:00 was read in the local zone and written as 05:00Z in New York."""
    path = tmp_path / "times.csv"
    script = (
        "import pandas as pd, sys; from pipeline.explore import export_csv; "
        "export_csv(pd.DataFrame({"
        "'naive': [pd.Timestamp('2023-03-20 01:00:00.25')], "
        "'utc': [pd.Timestamp('2023-03-20 01:00:00.25', tz='UTC')], "
        "'zoned': [pd.Timestamp('2023-03-19 21:00:00.25', tz='America/New_York')]}), sys.argv[1])"
    )
    env = {**os.environ, "TZ": "America/New_York"}
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env, cwd=ROOT)
    back = read_safe_csv(path)
    assert back.iloc[0].tolist() == ["2023-03-20T01:00:00.250000Z"] * 3


def test_a_large_sorted_export_keeps_its_order(tmp_path):
    """copy_safe_csv writes the rows in the order the relation gives them, on the analysis' own connection
    (preserve_insertion_order off, 2 threads) as on a plain one. The neutralising CASE used to test the first
    character with IN (...), which DuckDB plans as a join that shuffles large results: exposures.csv came out
    of time order (unlike exposures.parquet) once it had a few hundred thousand rows."""
    from pipeline.analyze import connect

    con = connect(tmp_path / "spill", threads=2)
    con.execute(
        "CREATE TABLE rows AS SELECT i, 'r' || CAST(1000000 - i AS VARCHAR) AS request_id FROM range(400000) t(i)"
    )
    path = tmp_path / "sorted.csv"
    copy_safe_csv(con, "SELECT i, request_id FROM rows ORDER BY i", path)
    assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0] is False
    con.close()
    numbers = pd.read_csv(path, encoding="utf-8-sig")["i"].tolist()
    assert numbers == list(range(400000))


def test_categorical_and_bytes_columns_are_neutralised_too(tmp_path):
    """export_csv takes any frame: a pandas categorical column reaches DuckDB as an ENUM and bytes as a BLOB, and
    their cells are as risky as text's; numbers stay numbers."""
    from pipeline import export_csv

    frame = pd.DataFrame(
        {
            "category": pd.Categorical(["=1+1", "@SUM(A1)", "plain"]),
            "raw": [b"=HYPERLINK(1)", b"-2", b"ok"],
            "n": [-1, 2, 3],
            "share": [-0.5, 0.25, 1.0],
        }
    )
    path = export_csv(frame, tmp_path / "cut.csv")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert raw["category"].tolist() == ["'=1+1", "'@SUM(A1)", "plain"]
    assert raw["raw"].tolist() == ["'=HYPERLINK(1)", "'-2", "ok"]
    assert raw["n"].tolist() == ["-1", "2", "3"] and raw["share"].tolist() == ["-0.5", "0.25", "1.0"]
    back = read_safe_csv(path)
    assert back["category"].tolist() == ["=1+1", "@SUM(A1)", "plain"]


def test_column_names_from_data_are_quoted_and_neutralised(tmp_path):
    """A frame a notebook exports may be named by data: a crosstab of viewers by owner has user ids as its column
    names. A '"' in one ended the quoted name in the SQL (the export failed, its error quoting the ids, and a name
    could have run SQL of its own); a name starting with '=' went into the header as it was, where a spreadsheet
    runs it like any cell. Both are written by the rule, and read back to the original names."""
    from pipeline import export_csv

    names = ['q"UID9,\nz', "=1+1UID0", "@UID3", "plain"]
    frame = pd.DataFrame({names[0]: ["=HYPERLINK(1)"], names[1]: [2], names[2]: [pd.Timestamp("2023-03-20")],
                          names[3]: ["ok"]})
    path = export_csv(frame, tmp_path / "crosstab.csv")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ['q"UID9,\nz', "'=1+1UID0", "'@UID3", "plain"]
    back = read_safe_csv(path)
    assert back.columns.tolist() == names
    assert back.iloc[0].tolist() == ["=HYPERLINK(1)", "2", "2023-03-20T00:00:00.000000Z", "ok"]


def test_a_named_index_is_exported_as_columns(tmp_path):
    """A crosstab of viewers by owner, or a count per owner, names its rows by its index; the writer reads the
    frame's columns only, so the rows came out as bare numbers, whose they were lost. A named index is written
    first; an unnamed one (a filtered frame's row numbers) is not."""
    from pipeline import export_csv

    rows = pd.DataFrame({"viewer_id": ["v1", "=v2", "v1"], "owner_id": ["o1", "o1", "o2"]})
    back = read_safe_csv(export_csv(pd.crosstab(rows.viewer_id, rows.owner_id), tmp_path / "pairs.csv"))
    assert back.columns.tolist() == ["viewer_id", "o1", "o2"]
    assert back.values.tolist() == [["=v2", "1", "0"], ["v1", "1", "1"]]
    back = read_safe_csv(export_csv(rows.groupby("owner_id").size().to_frame("n"), tmp_path / "per_owner.csv"))
    assert back.values.tolist() == [["o1", "2"], ["o2", "1"]]
    back = read_safe_csv(export_csv(rows[rows.owner_id == "o1"], tmp_path / "filtered.csv"))
    assert back.columns.tolist() == ["viewer_id", "owner_id"]


def test_a_formula_after_leading_spaces_is_neutralised(tmp_path):
    """LibreOffice's CSV import with "Trim spaces" ticked runs " =1+1" as a formula (checked with LibreOffice 7.4:
    soffice --infilter="CSV:44,34,76,1,,0,false,true,false,false,true,,true"), so a cell whose first character
    after spaces is risky gets the quote too; in SQL as in Python, and read back exactly."""
    values = [" =1+1", "   @SUM(A1)", "  -2", " +x", " \t=x", " 'quoted", "\u00a0=kept"]
    assert [neutralise(v) for v in values] == [
        "' =1+1", "'   @SUM(A1)", "'  -2", "' +x", "' \t=x", " 'quoted", "\u00a0=kept",
    ]
    con = duckdb.connect()
    con.register("people", pd.DataFrame({"name": values}))
    path = tmp_path / "spaced.csv"
    copy_safe_csv(con, "SELECT name FROM people", path)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert raw["name"].tolist() == [neutralise(v) for v in values]
    assert read_safe_csv(path)["name"].tolist() == values
