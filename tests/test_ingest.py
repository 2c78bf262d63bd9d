"""Ingestion: every format and compression, every time form, field maps, rejects with exact line numbers,
duplicates, per-file reconciliation, re-ingest, truncated gzip and discovery.

Inputs are written here line by line, so every expected line number is visible in the test; the lake, the
rejects and the manifest are read back from disk with DuckDB.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import json
import os
import signal
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import config_from_dict
from pipeline.errors import WhosawError
from pipeline.ingest import IngestResult, ingest
from pipeline.safecsv import read_safe_csv
from pipeline.schema import LAKE_COLUMNS

# ------------------------------------------------------------------------------------------------------------
# helpers


def write(path: Path, lines: list[str | bytes], end: bytes = b"\n", final_newline: bool = True) -> Path:
    """Write ``lines`` joined by ``end`` (bytes kept as they are); gzip when the name ends in .gz."""
    raw = end.join(line if isinstance(line, bytes) else line.encode() for line in lines)
    if final_newline and lines:
        raw += end
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def req(rid: str, ts: object = "2023-03-20T01:00:00Z", **extra: object) -> str:
    return json.dumps(
        {
            "ts": ts,
            "request_id": rid,
            "session_id": "s1",
            "user_id": "u1",
            "route": "GET /a",
            "status": 200,
            "host": "web-1",
            **extra,
        }
    )


def cache(key: str, ts: str = "2023-03-20T01:00:00Z", **extra: object) -> str:
    return json.dumps(
        {
            "ts": ts,
            "request_id": "r1",
            "op": "GET",
            "key": key,
            "status": "ok",
            "host": "h1",
            "conn_id": "c1",
            "value_sha256": "AB" * 32,
            "value_owner": "u1",
            **extra,
        }
    )


def run(inputs: list[Path] | Path, out: Path, **options: object) -> IngestResult:
    result = ingest(inputs if isinstance(inputs, list) else [inputs], out, progress=False, **options)
    reconciled(result)
    return result


def reconciled(result: IngestResult) -> None:
    """Every file's counts add up, and the totals are the sums of the files of this run."""
    run_id = result.manifest["ingest"]["run"]
    files = [f for f in result.manifest["files"] if f["run"] == run_id]
    for entry in result.manifest["files"]:
        assert entry["lines"] == entry["kept"] + entry["duplicates"] + entry["rejected"], entry
    for key in ("lines", "kept", "duplicates", "rejected"):
        assert result.totals[key] == sum(f[key] for f in files)
    assert result.totals["files"] == len(files)


def lake(out: Path, kind: str) -> list[dict]:
    """The lake's rows of one kind (hive columns included), in input order."""
    if not (out / "parquet" / kind).exists():
        return []
    rel = duckdb.sql(
        f"SELECT * FROM read_parquet('{out}/parquet/{kind}/**/*.parquet', hive_partitioning = true) "
        "ORDER BY source_file, source_line"
    )
    return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def rejects(out: Path, kind: str) -> list[tuple[str, int, str]]:
    path = out / "rejects" / f"{kind}.parquet"
    if not path.exists():
        return []
    rows = duckdb.sql(f"SELECT source_file, source_line, reason FROM '{path}' ORDER BY ALL").fetchall()
    return [(Path(f).name, line, reason) for f, line, reason in rows]


def entry(result: IngestResult, path: Path) -> dict:
    matches = [f for f in result.manifest["files"] if f["path"] == str(path.absolute())]
    assert len(matches) == 1, matches
    return matches[0]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------------------
# formats and compression

RECORDS = [
    {
        "ts": "2023-03-20T01:00:00.123456Z",
        "request_id": "r1",
        "session_id": "s1",
        "user_id": "u1",
        "route": "GET /a, b",
        "status": 200,
        "host": "web-1",
    },
    {
        "ts": "2023-03-20T02:30:00Z",
        "request_id": "r2",
        "session_id": "s2",
        "user_id": "",
        "route": 'POST "quoted"',
        "status": 404,
        "host": "web-2",
    },
]


def write_records(path: Path, fmt: str) -> Path:
    """RECORDS as JSON Lines, CSV or Parquet, plain or gzip (by the name)."""
    if fmt == "parquet":
        table = pa.table({k: [r[k] for r in RECORDS] for k in RECORDS[0]})
        plain = path.with_name(path.name.removesuffix(".gz"))
        plain.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, plain)
        if path.name.endswith(".gz"):
            path.write_bytes(gzip.compress(plain.read_bytes()))
            plain.unlink()
        return path
    if fmt == "csv":

        def cell(value: object) -> str:
            text = str(value)
            return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text

        lines = [",".join(RECORDS[0])] + [",".join(cell(r[k]) for k in r) for r in RECORDS]
        return write(path, lines)
    return write(path, [json.dumps(r) for r in RECORDS])


@pytest.mark.parametrize(
    "name",
    [
        "requests.jsonl",
        "requests.ndjson",
        "requests.json",
        "requests.csv",
        "requests.parquet",
        "requests.jsonl.gz",
        "requests.ndjson.gz",
        "requests.json.gz",
        "requests.csv.gz",
        "requests.parquet.gz",
    ],
)
def test_every_format_and_compression_gives_the_same_records(tmp_path, name):
    fmt = "csv" if ".csv" in name else "parquet" if ".parquet" in name else "json"
    path = write_records(tmp_path / "logs" / name, fmt)
    result = run(path, tmp_path / "out")

    rows = lake(tmp_path / "out", "requests")
    assert [
        (r["ts"], r["request_id"], r["session_id"], r["user_id"], r["route"], r["status"], r["host"]) for r in rows
    ] == [
        (utc(2023, 3, 20, 1, 0, 0, 123456), "r1", "s1", "u1", "GET /a, b", 200, "web-1"),
        (utc(2023, 3, 20, 2, 30), "r2", "s2", None, 'POST "quoted"', 404, "web-2"),
    ]
    first_line = 2 if fmt == "csv" else 1  # a CSV's line 1 is its header; a Parquet row is its line
    assert [r["source_line"] for r in rows] == [first_line, first_line + 1]
    assert {r["source_file"] for r in rows} == {str(path.absolute())}
    assert [(str(r["date"]), r["hour"]) for r in rows] == [("2023-03-20", 1), ("2023-03-20", 2)]
    got = entry(result, path)
    assert (got["lines"], got["kept"], got["duplicates"], got["rejected"]) == (2, 2, 0, 0)
    assert got["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert got["bytes"] == path.stat().st_size


def test_lake_layout_types_and_compression(tmp_path):
    write(tmp_path / "cache.jsonl", [cache("k1"), cache("k2", ts="2023-03-21T23:59:59.999999Z")])
    out = tmp_path / "out"
    run(tmp_path / "cache.jsonl", out)
    parts = sorted(
        p.relative_to(out / "parquet" / "cache").parent.as_posix()
        for p in (out / "parquet" / "cache").rglob("*.parquet")
    )
    assert parts == ["date=2023-03-20/hour=1", "date=2023-03-21/hour=23"]
    one = next((out / "parquet" / "cache").rglob("*.parquet"))
    schema = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{one}', hive_partitioning = false)").fetchall()
    types = {name: dtype for name, dtype, *_ in schema}
    expected = {**LAKE_COLUMNS["cache"], "source_file": "VARCHAR", "source_line": "BIGINT"}
    assert {k: types[k] for k in expected} == {
        k: v.replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE") for k, v in expected.items()
    }
    codecs = duckdb.sql(f"SELECT DISTINCT compression FROM parquet_metadata('{one}')").fetchall()
    assert codecs == [("ZSTD",)]
    row = lake(out, "cache")[0]
    assert row["value_sha256"] == "ab" * 32  # lower case
    assert row["status"] == "ok" and row["op"] == "GET"


# ------------------------------------------------------------------------------------------------------------
# time stamps


def test_every_timestamp_form(tmp_path):
    forms = [
        ("2023-03-20T01:02:03Z", utc(2023, 3, 20, 1, 2, 3)),
        ("2023-03-20T01:02:03.123456Z", utc(2023, 3, 20, 1, 2, 3, 123456)),
        ("2023-03-20T01:02:03.123456789Z", utc(2023, 3, 20, 1, 2, 3, 123456)),  # ns truncated to us
        ("2023-03-20T01:02:03-07:00", utc(2023, 3, 20, 8, 2, 3)),
        ("2023-03-20T01:02:03.5+05:30", utc(2023, 3, 19, 19, 32, 3, 500000)),
        ("2023-03-20T01:02:03+0200", utc(2023, 3, 19, 23, 2, 3)),
        ("2023-03-20T01:02:03", utc(2023, 3, 20, 1, 2, 3)),  # no zone: UTC
        ("2023-03-20 01:02:03.25", utc(2023, 3, 20, 1, 2, 3, 250000)),
        (1679274123, utc(2023, 3, 20, 1, 2, 3)),  # epoch s
        (1679274123.5, utc(2023, 3, 20, 1, 2, 3, 500000)),
        (1679274123456, utc(2023, 3, 20, 1, 2, 3, 456000)),  # epoch ms
        ("1679274123456", utc(2023, 3, 20, 1, 2, 3, 456000)),  # epoch ms as text
        (1679274123456789, utc(2023, 3, 20, 1, 2, 3, 456789)),  # epoch us
        (1679274123456789123, utc(2023, 3, 20, 1, 2, 3, 456789)),  # epoch ns, truncated to us
    ]
    write(tmp_path / "requests.jsonl", [req(f"r{i}", ts) for i, (ts, _) in enumerate(forms)])
    run(tmp_path / "requests.jsonl", tmp_path / "out")
    got = {r["request_id"]: r["ts"] for r in lake(tmp_path / "out", "requests")}
    assert got == {f"r{i}": want for i, (_, want) in enumerate(forms)}


def test_a_leap_second_is_read_as_the_next_second(tmp_path):
    """23:59:60 is a valid RFC 3339 time (a clock that shows the leap second) that DuckDB does not read: such lines
    were rejected as bad_ts. It is the first instant of the next second, as PostgreSQL reads it."""
    forms = [
        ("2016-12-31T23:59:60Z", utc(2017, 1, 1)),
        ("2016-12-31t23:59:60.25z", utc(2017, 1, 1, 0, 0, 0, 250000)),
        ("2016-12-31T18:59:60-05:00", utc(2017, 1, 1)),
        ("2016-12-31 23:59:60", utc(2017, 1, 1)),  # no zone: UTC
    ]
    wrong = ["2016-12-31T23:59:61Z", "2016-12-31T23:60:00Z"]  # not a leap second
    lines = [req(f"r{i}", ts) for i, (ts, _) in enumerate(forms)] + [req(f"w{i}", ts) for i, ts in enumerate(wrong)]
    write(tmp_path / "requests.jsonl", lines)
    run(tmp_path / "requests.jsonl", tmp_path / "out")
    got = {r["request_id"]: r["ts"] for r in lake(tmp_path / "out", "requests")}
    assert got == {f"r{i}": want for i, (_, want) in enumerate(forms)}
    assert rejects(tmp_path / "out", "requests") == [("requests.jsonl", 5, "bad_ts"), ("requests.jsonl", 6, "bad_ts")]


def test_zone_less_times_are_read_in_the_source_zone(tmp_path):
    write(
        tmp_path / "requests.jsonl",
        [
            req("winter", "2023-01-15T12:00:00"),  # CET, UTC+1
            req("summer", "2023-07-15T12:00:00"),  # CEST, UTC+2
            req("offset", "2023-07-15T12:00:00-07:00"),  # an offset wins over the source zone
            req("zulu", "2023-07-15T12:00:00Z"),
            req("epoch", 1689422400000),  # epochs are UTC by definition
        ],
    )
    cfg = config_from_dict({"sources": {"requests": {"timezone": "Europe/Berlin"}}})
    run(tmp_path / "requests.jsonl", tmp_path / "out", config=cfg)
    got = {r["request_id"]: r["ts"] for r in lake(tmp_path / "out", "requests")}
    assert got == {
        "winter": utc(2023, 1, 15, 11),
        "summer": utc(2023, 7, 15, 10),
        "offset": utc(2023, 7, 15, 19),
        "zulu": utc(2023, 7, 15, 12),
        "epoch": utc(2023, 7, 15, 12),
    }
    # the other kinds keep UTC
    write(tmp_path / "more" / "cache.jsonl", [cache("k", ts="2023-01-15T12:00:00")])
    run(tmp_path / "more", tmp_path / "out", config=cfg)
    assert lake(tmp_path / "out", "cache")[0]["ts"] == utc(2023, 1, 15, 12)


# ------------------------------------------------------------------------------------------------------------
# field maps


def test_field_map_with_nested_paths_dots_and_constants(tmp_path):
    lines = [
        json.dumps(
            {
                "@timestamp": "2023-03-20T01:00:00Z",
                "req": {"id": "r1"},
                "ctx": {"user": {"id": 42}},
                "sess": "s1",
                "http.status": "201",
                "route": "GET /x",
            }
        ),
        json.dumps(
            {
                "@timestamp": "2023-03-20T01:00:01Z",
                "req": {"id": "r2"},
                "ctx": {"user": None},
                "sess": "s2",
                "http.status": 500,
            }
        ),
        json.dumps({"@timestamp": "2023-03-20T01:00:02Z", "req": {}, "sess": "s3"}),
    ]
    write(tmp_path / "access-1.ndjson", lines)
    cfg = config_from_dict(
        {
            "sources": {
                "requests": {
                    "match": ["access-*.ndjson*"],
                    "fields": {
                        "ts": "@timestamp",
                        "request_id": "req.id",
                        "user_id": "ctx.user.id",
                        "session_id": "sess",
                        "status": '"http.status"',
                        "host": {"const": "edge-7"},
                    },
                }
            }
        }
    )
    result = run(tmp_path, tmp_path / "out", config=cfg)
    rows = lake(tmp_path / "out", "requests")
    assert [(r["request_id"], r["user_id"], r["session_id"], r["status"], r["host"], r["route"]) for r in rows] == [
        ("r1", "42", "s1", 201, "edge-7", "GET /x"),
        ("r2", None, "s2", 500, "edge-7", None),
    ]
    assert rejects(tmp_path / "out", "requests") == [("access-1.ndjson", 3, "missing_field:request_id")]
    assert result.manifest["config"]["settings"]["sources"]["requests"]["match"] == ["access-*.ndjson*"]


def test_field_map_for_csv_and_parquet_columns(tmp_path):
    write(tmp_path / "sessions.csv", ["when,sid,who,what", "2023-03-20T01:00:00Z,s1,u1,LOGIN"])
    table = pa.table(
        {
            "when": pa.array([datetime(2023, 3, 20, 2, 0, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
            "sid": ["s2"],
            "meta": [{"who": "u2", "what": "logout"}],
        }
    )
    pq.write_table(table, tmp_path / "sessions-2.parquet")
    cfg = {"sources": {"sessions": {"fields": {"ts": "when", "session_id": "sid", "user_id": "who", "event": "what"}}}}
    run([tmp_path / "sessions.csv"], tmp_path / "out", config=config_from_dict(cfg))
    cfg["sources"]["sessions"]["fields"].update({"user_id": "meta.who", "event": "meta.what"})
    run([tmp_path / "sessions-2.parquet"], tmp_path / "out", config=config_from_dict(cfg))
    rows = sorted(lake(tmp_path / "out", "sessions"), key=lambda r: r["ts"])
    assert [(r["ts"], r["session_id"], r["user_id"], r["event"], r["source_line"]) for r in rows] == [
        (utc(2023, 3, 20, 1), "s1", "u1", "login", 2),
        (utc(2023, 3, 20, 2), "s2", "u2", "logout", 1),
    ]


# ------------------------------------------------------------------------------------------------------------
# rejects


def test_json_rejects_have_exact_line_numbers_and_reasons(tmp_path):
    lines = [
        req("r1"),  # 1 kept
        "",  # 2 blank
        '{"ts": "2023-03-20T01:00:00Z", "request_id": "r3"',  # 3 broken JSON
        req("r4", route="a\x00b").replace("\\u0000", "\x00").encode(),  # 4 a raw NUL byte
        json.dumps({"request_id": "r5"}),  # 5 no ts
        req("r6", "2023-13-01T00:00:00Z"),  # 6 month 13
        req("r7", "1970-01-01T00:00:00Z"),  # 7 absurd year
        req("r8", "2200-01-01T00:00:00Z"),  # 8 absurd year
        req("r9", "not a time"),  # 9
        json.dumps({"ts": "2023-03-20T01:00:00Z"}),  # 10 no request_id
        req(""),  # 11 empty request_id
        req("r12", status="abc"),  # 12
        req("r13", status=200.5),  # 13 a fraction is not a status
        "[1, 2, 3]",  # 14
        '"just a string"',  # 15
        req("r16").encode() + b"\xff\xfe",  # 16 not UTF-8
        req("r17") + " trailing garbage",  # 17
        req("r18", ts=None),  # 18 null ts
        "   ",  # 19 blank (spaces)
        req("r20"),  # 20 kept
        '{"ts": "2023-03-20T01:00:00Z", "request_id": "r21",, "x": 1}',  # 21 looks like an object, is not JSON
        '{"ts": "2023-03-20T01:00:00Z", "request_id": "r22", "route": "\\ud800"}',  # 22 a lone surrogate
    ]
    path = write(tmp_path / "requests.jsonl", lines)
    result = run(path, tmp_path / "out")
    assert rejects(tmp_path / "out", "requests") == [
        ("requests.jsonl", 2, "blank_line"),
        ("requests.jsonl", 3, "invalid_json"),
        ("requests.jsonl", 4, "nul_byte"),
        ("requests.jsonl", 5, "missing_field:ts"),
        ("requests.jsonl", 6, "bad_ts"),
        ("requests.jsonl", 7, "bad_ts"),
        ("requests.jsonl", 8, "bad_ts"),
        ("requests.jsonl", 9, "bad_ts"),
        ("requests.jsonl", 10, "missing_field:request_id"),
        ("requests.jsonl", 11, "missing_field:request_id"),
        ("requests.jsonl", 12, "bad_status"),
        ("requests.jsonl", 13, "bad_status"),
        ("requests.jsonl", 14, "not_an_object"),
        ("requests.jsonl", 15, "not_an_object"),
        ("requests.jsonl", 16, "invalid_utf8"),
        ("requests.jsonl", 17, "invalid_json"),
        ("requests.jsonl", 18, "missing_field:ts"),
        ("requests.jsonl", 19, "blank_line"),
        ("requests.jsonl", 21, "invalid_json"),
        ("requests.jsonl", 22, "invalid_json"),
    ]
    assert [r["source_line"] for r in lake(tmp_path / "out", "requests")] == [1, 20]
    got = entry(result, path)
    assert (got["lines"], got["kept"], got["duplicates"], got["rejected"]) == (22, 2, 0, 20)


def test_reject_files_hold_file_line_reason_detail_and_cut_raw_text(tmp_path):
    long_line = '{"ts": "2023-03-20T01:00:00Z", "request_id": "' + "x" * 5000
    path = write(
        tmp_path / "requests.jsonl", [req("r1"), "=cmd|' /C calc'!A0", long_line, req("r4", ts="nope")], end=b"\r\n"
    )
    run(path, tmp_path / "out")
    table = duckdb.sql(f"SELECT * FROM '{tmp_path}/out/rejects/requests.parquet' ORDER BY source_line")
    assert table.columns == ["source_file", "source_line", "reason", "detail", "raw"]
    rows = table.fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (str(path.absolute()), 2, "invalid_json"),
        (str(path.absolute()), 3, "invalid_json"),
        (str(path.absolute()), 4, "bad_ts"),
    ]
    assert rows[0][4] == "=cmd|' /C calc'!A0"  # raw as read, without its CR LF
    assert len(rows[1][4]) == 500 and rows[1][4] == long_line[:500]
    assert rows[2][4] == req("r4", ts="nope")
    assert all(r[3] for r in rows)  # every reason is explained
    frame = read_safe_csv(tmp_path / "out" / "rejects" / "requests.csv")
    assert frame["raw"].tolist() == [r[4] for r in rows]  # the CSV reads back to the same text
    text = (tmp_path / "out" / "rejects" / "requests.csv").read_text()
    assert "\n'=cmd" in text or ",'=cmd" in text  # neutralised for spreadsheets


def test_cache_and_session_rejects(tmp_path):
    write(
        tmp_path / "cache.jsonl",
        [
            cache("k1"),  # 1 kept
            cache("k2", op=None),  # 2 missing op
            cache(None, op="GET"),  # 3 a read needs a key
            cache(None, op="reconnect"),  # 4 a reset op may come without a key: kept
            cache("k5", status="weird"),  # 5
            cache("k6", status=None, request_id=None),  # 6 kept: status NULL -> ok, background work
            cache("k7", status="TIMEOUT"),  # 7 kept, lower-cased
        ],
    )
    write(
        tmp_path / "sessions.jsonl",
        [
            json.dumps({"ts": "2023-03-20T01:00:00Z", "session_id": "s1", "user_id": "u1", "event": "Login"}),
            json.dumps({"ts": "2023-03-20T01:00:00Z", "session_id": "s1", "user_id": "u1", "event": "hijack"}),
            json.dumps({"ts": "2023-03-20T01:00:00Z", "user_id": "u1", "event": "login"}),
            json.dumps({"ts": "2023-03-20T01:00:00Z", "session_id": "s2", "user_id": None}),
            json.dumps({"ts": "2023-03-20T01:00:00Z", "session_id": "s2", "user_id": None, "event": "expire"}),
        ],
    )
    run(tmp_path, tmp_path / "out")
    assert rejects(tmp_path / "out", "cache") == [
        ("cache.jsonl", 2, "missing_field:op"),
        ("cache.jsonl", 3, "missing_field:key"),
        ("cache.jsonl", 5, "bad_status"),
    ]
    rows = lake(tmp_path / "out", "cache")
    assert [(r["source_line"], r["op"], r["key"], r["status"], r["request_id"]) for r in rows] == [
        (1, "GET", "k1", "ok", "r1"),
        (4, "RECONNECT", None, "ok", "r1"),
        (6, "GET", "k6", "ok", None),
        (7, "GET", "k7", "timeout", "r1"),
    ]
    assert rejects(tmp_path / "out", "sessions") == [
        ("sessions.jsonl", 2, "bad_event"),
        ("sessions.jsonl", 3, "missing_field:session_id"),
        ("sessions.jsonl", 4, "missing_field:event"),
    ]
    assert [(r["event"], r["user_id"]) for r in lake(tmp_path / "out", "sessions")] == [
        ("login", "u1"),
        ("expire", None),
    ]


def test_csv_rejects(tmp_path):
    path = write(
        tmp_path / "requests.csv",
        [
            "ts,request_id,session_id,user_id,route,status,host",  # 1 header
            "2023-03-20T01:00:00Z,r1,s1,u1,GET /a,200,h",  # 2 kept
            "2023-03-20T01:00:00Z,r2,s1,u1,GET /a,200",  # 3 a missing column
            "2023-03-20T01:00:00Z,r3,s1,u1,GET /a,200,h,extra",  # 4 an extra column
            "",  # 5 blank
            '2023-03-20T01:00:00Z,r6,s1,u1,"GET /a, b",200,h',  # 6 kept, quoted comma
            '2023-03-20T01:00:00Z,r7,s1,u1,"GET /a,200,h',  # 7 unterminated quote
            '2023-03-20T01:00:00Z,r8,s1,u1,GET "a",200,h',  # 8 stray quote
            b"2023-03-20T01:00:00Z,r9,s1,u1,GET /\x00,200,h",  # 9 NUL byte
            ",r10,s1,u1,GET /a,200,h",  # 10 no ts
            "2023-03-20T01:00:00Z,r11,,,,,",  # 11 kept, empty fields are NULL
            '2023-03-20T01:00:00Z,"r12",s1,u1,"say ""hi""",200,h',  # 12 kept, escaped quotes
        ],
        end=b"\r\n",
    )
    result = run(path, tmp_path / "out")
    assert rejects(tmp_path / "out", "requests") == [
        ("requests.csv", 3, "csv_columns"),
        ("requests.csv", 4, "csv_columns"),
        ("requests.csv", 5, "blank_line"),
        ("requests.csv", 7, "csv_quote"),
        ("requests.csv", 8, "csv_quote"),
        ("requests.csv", 9, "nul_byte"),
        ("requests.csv", 10, "missing_field:ts"),
    ]
    rows = lake(tmp_path / "out", "requests")
    assert [(r["source_line"], r["request_id"], r["route"], r["session_id"], r["status"]) for r in rows] == [
        (2, "r1", "GET /a", "s1", 200),
        (6, "r6", "GET /a, b", "s1", 200),
        (11, "r11", None, None, None),
        (12, "r12", 'say "hi"', "s1", 200),
    ]
    got = entry(result, path)  # lines counts every line but the header
    assert (got["lines"], got["kept"], got["rejected"]) == (11, 4, 7)


def test_csv_fields_padded_after_the_commas_are_read_without_the_padding(tmp_path):
    # ", " between fields (hand-made and spreadsheet exports): " ok" must not be a bad status, nor " bob" a user
    # other than "bob" (bob reading his own titles would become an exposure); a field of blanks is empty (NULL)
    cache = write(tmp_path / "cache.csv", [
        "ts, request_id, op, key, status, host, conn_id, value_owner",
        "2023-03-20T01:00:00Z, r1, get, user:bob:titles, ok, h1, c1, bob",
        '2023-03-20T01:00:01Z,\tr2 ,"get ", user:bob:titles , timeout,h1, c1,  ',
    ])
    run(cache, tmp_path / "out")
    assert rejects(tmp_path / "out", "cache") == []
    rows = lake(tmp_path / "out", "cache")
    assert [(r["request_id"], r["op"], r["key"], r["status"], r["host"], r["conn_id"], r["value_owner"])
            for r in rows] == [
        ("r1", "GET", "user:bob:titles", "ok", "h1", "c1", "bob"),
        ("r2", "GET", "user:bob:titles", "timeout", "h1", "c1", None),
    ]


def test_utf16_logs_are_read_as_text_with_their_own_line_numbers(tmp_path):
    """Windows tools write UTF-16 with a byte order mark: read it as the text it is (every line was rejected, as
    'nul_byte'); what UTF-16 cannot decode is rejected as in a UTF-8 file; the SHA-256 is the file's own."""
    line = '{{"ts": "2023-03-20T01:00:0{0}Z", "request_id": "r{0}", "user_id": "zoë", "status": 200}}'
    body = "\r\n".join([line.format(1), line.format(2).replace("zoë", "\ud800"), line.format(3)]) + "\r\n"
    le = tmp_path / "requests-le.jsonl"
    le.write_bytes(codecs.BOM_UTF16_LE + body.encode("utf-16-le", "surrogatepass") + b"\xff")  # an odd last byte
    be = tmp_path / "requests-be.csv.gz"
    csv_text = "ts,request_id,user_id,status\n2023-03-20T01:00:04Z,r4,zoë,200\n"
    be.write_bytes(gzip.compress(codecs.BOM_UTF16_BE + csv_text.encode("utf-16-be")))
    result = run([le, be], tmp_path / "out")
    assert [(r["request_id"], r["user_id"], r["source_line"]) for r in lake(tmp_path / "out", "requests")] == [
        ("r4", "zoë", 2), ("r1", "zoë", 1), ("r3", "zoë", 3),
    ]
    assert rejects(tmp_path / "out", "requests") == [
        ("requests-le.jsonl", 2, "invalid_utf8"),  # a lone surrogate
        ("requests-le.jsonl", 4, "invalid_utf8"),  # the odd byte after the last line end
    ]
    assert entry(result, le)["sha256"] == hashlib.sha256(le.read_bytes()).hexdigest()


def test_a_csv_without_the_required_columns_rejects_every_line(tmp_path):
    path = write(tmp_path / "requests.csv", ["when,id", "2023-03-20T01:00:00Z,r1", "2023-03-20T01:00:00Z,r2"])
    result = run(path, tmp_path / "out")
    assert rejects(tmp_path / "out", "requests") == [
        ("requests.csv", 1, "csv_header_missing"),  # names no required field: counted, and says why
        ("requests.csv", 2, "missing_field:ts"),
        ("requests.csv", 3, "missing_field:ts"),
    ]
    assert (entry(result, path)["lines"], entry(result, path)["rejected"]) == (3, 3)


def test_a_csv_without_a_header_loses_no_line(tmp_path):
    """The first record of a header-less CSV is not swallowed as its header: it is line 1, rejected with a reason
    that says what is wrong; a header that names a required field through the field map is still a header."""
    first = "2023-03-20T01:00:00Z,h1,s1,hal@example.com"
    path = write(tmp_path / "requests_x.csv", [first, "2023-03-20T01:00:00Z,h2,s1,ida@example.com"])
    result = run(path, tmp_path / "out")
    got = entry(result, path)
    assert (got["lines"], got["kept"], got["duplicates"], got["rejected"]) == (2, 0, 0, 2)
    assert rejects(tmp_path / "out", "requests") == [
        ("requests_x.csv", 1, "csv_header_missing"),
        ("requests_x.csv", 2, "missing_field:ts"),
    ]
    row = read_safe_csv(tmp_path / "out" / "rejects" / "requests.csv").to_dict("records")[0]
    assert (row["source_file"], row["source_line"], row["raw"]) == (str(path.absolute()), "1", first)
    assert "no header" in row["detail"]

    mapped = write(tmp_path / "more" / "requests_m.csv", ["when,rid", "2023-03-20T01:00:00Z,r1"])
    config = config_from_dict({"sources": {"requests": {"fields": {"ts": "when", "request_id": "rid"}}}})
    result = run(mapped, tmp_path / "out2", config=config)
    got = entry(result, mapped)
    assert (got["lines"], got["kept"], got["rejected"]) == (1, 1, 0)
    assert rejects(tmp_path / "out2", "requests") == []


def test_a_csv_header_with_mac_line_ends_is_rejected_not_a_crash(tmp_path):
    """A lone CR in the header line (classic Mac line ends) makes it unparseable: before, csv.Error escaped."""
    path = tmp_path / "requests_cr.csv"
    path.write_bytes(b"ts,request_id,session_id\rx\n")
    result = run(path, tmp_path / "out")
    got = entry(result, path)
    assert (got["lines"], got["kept"], got["rejected"]) == (1, 0, 1)
    assert rejects(tmp_path / "out", "requests") == [("requests_cr.csv", 1, "csv_header_unreadable")]
    row = read_safe_csv(tmp_path / "out" / "rejects" / "requests.csv").to_dict("records")[0]
    raw = "ts,request_id,session_id\rx"
    assert (row["source_file"], row["source_line"], row["raw"]) == (str(path.absolute()), "1", raw)
    assert "cannot be parsed" in row["detail"]


# ------------------------------------------------------------------------------------------------------------
# physical line numbers


def test_line_numbers_survive_crlf_bom_delimiters_quotes_long_lines_and_no_final_newline(tmp_path):
    long_route = "r" * 3_000_000
    lines = [
        b"\xef\xbb\xbf" + req("r1").encode(),  # 1 a byte order mark opens the file
        req("r2", route="a\x01b;c\td|e,f").encode(),  # 2 control characters escaped, delimiters
        b"\r",  # 3 a lone CR: a blank line
        req("r4", route="\"quoted\" 'single'").encode(),  # 4
        req("r5", route=long_route).encode(),  # 5 longer than a read chunk
        b"",  # 6
        req("r7", route="x\ry").encode(),  # 7 an escaped CR inside a string
        req("r8").encode(),  # 8 last line, no line end
    ]
    path = write(tmp_path / "requests.jsonl", lines, end=b"\r\n", final_newline=False)
    result = run(path, tmp_path / "out")
    rows = {r["request_id"]: r["source_line"] for r in lake(tmp_path / "out", "requests")}
    assert rows == {"r1": 1, "r2": 2, "r4": 4, "r5": 5, "r7": 7, "r8": 8}
    assert rejects(tmp_path / "out", "requests") == [
        ("requests.jsonl", 3, "blank_line"),
        ("requests.jsonl", 6, "blank_line"),
    ]
    assert entry(result, path)["lines"] == 8
    assert len(next(r for r in lake(tmp_path / "out", "requests") if r["request_id"] == "r5")["route"]) == 3_000_000


def test_lines_split_the_same_at_any_chunk_size(tmp_path):
    """The line reader cuts chunks anywhere (inside a CR LF, inside a UTF-8 character, inside a BOM)."""
    import sys

    ingest_module = sys.modules["pipeline.ingest"]
    raw = b"\xef\xbb\xbf" + b"".join(
        [b'{"a":"\xc3\xa9t\xc3\xa9"}\r\n', b"\n", b"x" * 50 + b"\n", b"\xff bad utf8\n", b"{}\r\n", b"last"]
    )
    path = tmp_path / "requests.jsonl"
    path.write_bytes(raw)
    expected = [(i, line) for i, line in enumerate(raw[3:].split(b"\n"), start=1)]
    for chunk in (1, 2, 3, 5, 7, 64, 1 << 20):
        item = ingest_module._Input(path=path, kind="requests", fmt="json", gz=False, size=len(raw), order=0)
        stream = ingest_module._LineStream([item], "json", chunk=chunk)
        got = []
        for batch in stream._batches():
            rows = batch.to_pydict()
            for no, text, binary in zip(rows["line_no"], rows["line"], rows["line_bin"], strict=True):
                value = text.encode() if text is not None else binary
                got.append((no, value.removesuffix(b"\n")))
        assert got == expected, chunk
        assert item.lines == 6 and item.sha256 == hashlib.sha256(raw).hexdigest()


# ------------------------------------------------------------------------------------------------------------
# duplicates


def test_duplicates_are_removed_and_counted_once_where_the_later_copy_sits(tmp_path):
    a = write(
        tmp_path / "logs" / "requests-a.jsonl",
        [
            req("r1"),
            req("r2"),
            req("r1"),
            req("r3"),
            req("r1", ts="2023-03-20T05:00:00Z"),  # same id, other ts
        ],
    )
    b = write(tmp_path / "logs" / "requests-b.jsonl", [req("r2"), req("r4"), req("r3")])
    c = write(
        tmp_path / "logs" / "cache-a.jsonl",
        [
            cache("k1"),
            cache("k1"),
            cache("k1", status="cancelled"),
            cache("k1", request_id=None),
            cache("k1", request_id=None),
            cache("k1"),
        ],
    )
    result = run(tmp_path / "logs", tmp_path / "out")
    assert [
        (r["request_id"], Path(r["source_file"]).name, r["source_line"]) for r in lake(tmp_path / "out", "requests")
    ] == [
        ("r1", "requests-a.jsonl", 1),
        ("r2", "requests-a.jsonl", 2),
        ("r3", "requests-a.jsonl", 4),
        ("r4", "requests-b.jsonl", 2),
    ]
    assert (entry(result, a)["kept"], entry(result, a)["duplicates"]) == (3, 2)
    assert (entry(result, b)["kept"], entry(result, b)["duplicates"]) == (1, 2)
    assert [r["source_line"] for r in lake(tmp_path / "out", "cache")] == [1, 3, 4]
    assert (entry(result, c)["kept"], entry(result, c)["duplicates"]) == (3, 3)
    assert result.totals["duplicates"] == 7


def test_a_rejected_line_is_never_a_duplicate(tmp_path):
    path = write(tmp_path / "requests.jsonl", ["oops", "oops", req("r1")])
    result = run(path, tmp_path / "out")
    got = entry(result, path)
    assert (got["kept"], got["duplicates"], got["rejected"]) == (1, 0, 2)


# ------------------------------------------------------------------------------------------------------------
# re-ingest


def _lake_files(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "parquet").rglob("*.parquet"))
    }


def test_ingesting_the_same_inputs_again_gives_the_same_lake(tmp_path):
    write(tmp_path / "logs" / "requests.jsonl", [req("r1"), "bad", req("r2")])
    write(tmp_path / "logs" / "cache.jsonl.gz", [cache("k1"), cache("k2")])
    out = tmp_path / "out"
    first = run(tmp_path / "logs", out)
    lake_before = _lake_files(out)
    rejects_before = (out / "rejects" / "requests.parquet").read_bytes()

    second = run(tmp_path / "logs", out)
    assert _lake_files(out) == lake_before
    assert (out / "rejects" / "requests.parquet").read_bytes() == rejects_before
    assert second.totals["files"] == 0 and second.totals["lines"] == 0
    assert second.totals["already_ingested"] == 2
    assert {Path(a["path"]).name for a in second.manifest["ingest"]["already_ingested"]} == {
        "requests.jsonl",
        "cache.jsonl.gz",
    }
    assert second.manifest["files"] == first.manifest["files"]


def test_new_files_append_and_are_deduplicated_against_the_lake(tmp_path):
    out = tmp_path / "out"
    run(write(tmp_path / "day1" / "requests.jsonl", [req("r1"), req("r2")]), out)
    run(write(tmp_path / "day1" / "cache.jsonl", [cache("k1"), cache("k2")]), out)
    # a shipper re-sent r2 and k2 in the next day's files
    r2 = write(tmp_path / "day2" / "requests.jsonl", [req("r2"), req("r3")])
    c2 = write(tmp_path / "day2" / "cache.jsonl", [cache("k2"), cache("k3")])
    result = run(tmp_path / "day2", out)
    assert (entry(result, r2)["kept"], entry(result, r2)["duplicates"]) == (1, 1)
    assert (entry(result, c2)["kept"], entry(result, c2)["duplicates"]) == (1, 1)
    assert sorted(r["request_id"] for r in lake(out, "requests")) == ["r1", "r2", "r3"]
    assert sorted(r["key"] for r in lake(out, "cache")) == ["k1", "k2", "k3"]
    assert len(result.manifest["files"]) == 4


def test_a_log_that_grew_keeps_only_its_new_lines(tmp_path):
    out = tmp_path / "out"
    path = write(tmp_path / "requests.jsonl", [req("r1"), req("r2")])
    run(path, out)
    write(path, [req("r1"), req("r2"), req("r3")])
    result = run(path, out)
    files = [f for f in result.manifest["files"] if f["path"] == str(path.absolute())]
    assert [(f["lines"], f["kept"], f["duplicates"]) for f in files] == [(2, 2, 0), (3, 1, 2)]
    assert [(r["request_id"], r["source_line"]) for r in lake(out, "requests")] == [("r1", 1), ("r2", 2), ("r3", 3)]


def test_a_log_that_grew_lists_its_old_bad_lines_once(tmp_path):
    """Read again whole, a grown file's bad lines are already in rejects/: counted as duplicates, not listed twice."""
    out = tmp_path / "out"
    path = write(tmp_path / "requests.jsonl", [req("r1"), "{not json", req("r2"), req("r9", ts="soon")])
    run(path, out)
    write(path, [req("r1"), "{not json", req("r2"), req("r9", ts="soon"), "[]", req("r3"), "{not json"])
    result = run(path, out)
    files = [f for f in result.manifest["files"] if f["path"] == str(path.absolute())]
    assert [(f["lines"], f["kept"], f["duplicates"], f["rejected"]) for f in files] == [(4, 2, 0, 2), (7, 1, 4, 2)]
    assert rejects(out, "requests") == [
        ("requests.jsonl", 2, "invalid_json"), ("requests.jsonl", 4, "bad_ts"),
        ("requests.jsonl", 5, "not_an_object"), ("requests.jsonl", 7, "invalid_json"),
    ]
    csv_lines = (out / "rejects" / "requests.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 4


@pytest.mark.parametrize("whole", ["kept", "rejected otherwise"])
def test_a_live_logs_cut_last_line_read_whole_later_leaves_the_rejects(tmp_path, whole):
    """A live log copied while it was written ends in half a line (a reject). Copied again, grown, that line is
    whole: kept (or rejected for what it says now). The first reading's reject no longer describes the file: it
    leaves rejects/, and the later reading counts it, so the rejected lines the manifest totals are rejects/'."""
    out = tmp_path / "out"
    last = req("r3") if whole == "kept" else req("r3", ts="soon")
    path = write(tmp_path / "requests.jsonl", [req("r1"), req("r2"), last[:12]], final_newline=False)
    run(path, out)
    assert rejects(out, "requests") == [("requests.jsonl", 3, "invalid_json")]
    write(path, [req("r1"), req("r2"), last, req("r4")])
    result = run(path, out)
    files = [f for f in result.manifest["files"] if f["path"] == str(path.absolute())]
    kept = 2 if whole == "kept" else 1
    assert [(f["lines"], f["kept"], f["duplicates"], f["rejected"]) for f in files] == [
        (3, 2, 0, 1), (4, kept, 2, 2 - kept),
    ]
    assert files[1]["superseded_rejects"] == 1
    assert rejects(out, "requests") == ([] if whole == "kept" else [("requests.jsonl", 3, "bad_ts")])
    in_lake = sorted(r["request_id"] for r in lake(out, "requests"))
    assert in_lake == (["r1", "r2", "r3", "r4"] if whole == "kept" else ["r1", "r2", "r4"])
    total = sum(f["rejected"] - f.get("superseded_rejects", 0) for f in result.manifest["files"])
    assert total == len(rejects(out, "requests"))


def test_a_damaged_lake_file_is_named_when_a_grown_file_is_read_again(tmp_path):
    """Reading a grown file checks its lines against the whole lake of its kind: a damaged file there, in an hour
    the new lines do not touch, was an internal error (exit 1), not the damaged --out it is."""
    out = tmp_path / "out"
    early = write(tmp_path / "cache-a.jsonl", [cache("k1", ts="2023-03-20T00:10:00Z")])
    grown = write(tmp_path / "cache-b.jsonl", [cache("k2", ts="2023-03-20T05:10:00Z")])
    run([early, grown], out)
    (damaged,) = (out / "parquet" / "cache" / "date=2023-03-20" / "hour=0").glob("*.parquet")
    damaged.write_bytes(damaged.read_bytes()[:100])
    write(grown, [cache("k2", ts="2023-03-20T05:10:00Z"), cache("k3", ts="2023-03-20T05:20:00Z")])
    with pytest.raises(WhosawError, match=f"the lake is damaged: {damaged}"):
        run(grown, out)


def test_a_grown_file_lacks_a_field_only_if_its_earlier_lines_did_too(tmp_path):
    """A grown file keeps its new lines only: new lines without host were noted as a file without host in any line,
    though its earlier lines had one."""
    out = tmp_path / "out"
    path = write(tmp_path / "cache.jsonl", [cache("k1"), cache("k2")])
    run(path, out)
    bare = json.dumps({k: v for k, v in json.loads(cache("k3")).items() if k not in ("host", "conn_id")})
    write(path, [cache("k1"), cache("k2"), bare])
    assert "empty_fields" not in run(path, out).manifest["files"][-1]
    other = write(tmp_path / "cache-2.jsonl", [bare])  # no earlier reading: every line lacks them
    run(other, out)
    write(other, [bare, bare.replace("k3", "k4")])
    assert run(other, out).manifest["files"][-1]["empty_fields"][:2] == ["host", "conn_id"]


def test_the_same_file_twice_in_one_run_is_read_once(tmp_path):
    a = write(tmp_path / "a" / "requests.jsonl", [req("r1")])
    b = tmp_path / "b" / "requests.jsonl"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    result = run([tmp_path / "a", tmp_path / "b", a], tmp_path / "out")
    assert result.totals["files"] == 1 and result.totals["already_ingested"] == 1
    assert result.manifest["ingest"]["already_ingested"][0]["same_as"] == str(a.absolute())


# ------------------------------------------------------------------------------------------------------------
# gzip


def test_a_truncated_gzip_keeps_what_it_could_read(tmp_path):
    lines = [req(f"r{i}") for i in range(1, 2001)]
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "requests.jsonl.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    inflater = zlib.decompressobj(31)  # everything that can be decoded before the stream breaks
    readable = inflater.decompress(path.read_bytes()) + inflater.flush()
    assert not inflater.eof
    complete = readable.count(b"\n")
    assert 0 < complete < 2000

    result = run(path, tmp_path / "out")
    got = entry(result, path)
    assert got["kept"] == complete
    assert (got["lines"], got["rejected"], got["damaged"]) == (complete + 1, 1, "gzip_truncated")
    assert rejects(tmp_path / "out", "requests") == [("requests.jsonl.gz", complete + 1, "gzip_truncated")]
    assert [r["source_line"] for r in lake(tmp_path / "out", "requests")] == list(range(1, complete + 1))


def _inflate_bytewise(data: bytes) -> tuple[bytes, bool]:
    """Everything zlib inflates from ``data`` fed one byte at a time (nothing decoded is ever thrown away), and
    whether it met damage. One member only."""
    inflater, out = zlib.decompressobj(31), []
    for i in range(len(data)):
        try:
            out.append(inflater.decompress(data[i : i + 1]))
        except zlib.error:
            return b"".join(out), True
    return b"".join(out), not inflater.eof


@pytest.mark.parametrize("small", [False, True], ids=["default-chunks", "small-chunks"])
def test_a_corrupt_gzip_keeps_the_lines_before_the_damage(tmp_path, monkeypatch, small):
    if small:  # many compressed chunks and bounded inflate steps: the damage is in a later chunk, mid-step
        module = importlib.import_module("pipeline.ingest")
        monkeypatch.setattr(module, "GZ_CHUNK", 5000)
        monkeypatch.setattr(module, "GZ_OUT", 3000)
    lines = [req(f"r{i}", user_id=hashlib.sha256(b"%d" % i).hexdigest()[:24]) for i in range(1, 2001)]
    whole = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    at = len(whole) // 2
    intact_part, _ = _inflate_bytewise(whole[:at])  # what the bytes before the damaged one decode to
    safe = intact_part.count(b"\n")
    for flip in range(1, 256):  # a flip zlib notices part-way (many only garble the data until the CRC)
        damaged = whole[:at] + bytes([whole[at] ^ flip]) + whole[at + 1 :]
        readable, broken = _inflate_bytewise(damaged)
        complete = readable.count(b"\n")
        if broken and complete < 2000:
            break
    assert broken and 0 < safe <= complete < 2000
    path = tmp_path / "requests.jsonl.gz"
    path.write_bytes(damaged)

    result = run(path, tmp_path / "out")
    got = entry(result, path)
    assert (got["lines"], got["damaged"]) == (complete + 1, "gzip_corrupt")
    assert got["kept"] >= safe
    kept = [(r["source_line"], r["request_id"]) for r in lake(tmp_path / "out", "requests")]
    assert kept[:safe] == [(i, f"r{i}") for i in range(1, safe + 1)]
    assert ("requests.jsonl.gz", complete + 1, "gzip_corrupt") in rejects(tmp_path / "out", "requests")

    crc = tmp_path / "crc" / "requests.jsonl.gz"  # intact but for the CRC: every line is there
    crc.parent.mkdir()
    crc.write_bytes(whole[:-8] + b"\0" * 4 + whole[-4:])
    result = run(crc, tmp_path / "out-crc")
    got = entry(result, crc)
    assert (got["lines"], got["kept"], got["rejected"], got["damaged"]) == (2001, 2000, 1, "gzip_corrupt")
    assert rejects(tmp_path / "out-crc", "requests") == [("requests.jsonl.gz", 2001, "gzip_corrupt")]
    assert [r["source_line"] for r in lake(tmp_path / "out-crc", "requests")] == list(range(1, 2001))


def test_concatenated_gzip_members_and_corrupt_gzip(tmp_path):
    path = tmp_path / "requests.jsonl.gz"
    path.write_bytes(gzip.compress((req("r1") + "\n").encode()) + gzip.compress((req("r2") + "\n").encode()))
    result = run(path, tmp_path / "out")
    assert entry(result, path)["kept"] == 2

    bad = tmp_path / "more" / "cache.jsonl.gz"
    bad.parent.mkdir()
    bad.write_bytes(gzip.compress((cache("k1") + "\n").encode()) + b"\x1f\x8bgarbage-not-deflate")
    result = run(bad, tmp_path / "out")
    got = entry(result, bad)
    assert (got["lines"], got["kept"], got["rejected"], got["damaged"]) == (2, 1, 1, "gzip_corrupt")


# ------------------------------------------------------------------------------------------------------------
# discovery and the manifest


def test_discovery_skips_non_logs_hidden_files_and_the_output_folder(tmp_path):
    logs = tmp_path / "logs"
    write(logs / "requests.jsonl", [req("r1")])
    write(logs / "nested" / "deeper" / "Cache-01.ndjson", [cache("k1")])
    write(logs / "README.md", ["# notes"])
    write(logs / "notes.txt", ["not a log"])
    write(logs / "requests-old.log", ["{}"])
    write(logs / ".hidden" / "requests.jsonl", [req("h1")])
    write(logs / ".requests.jsonl", [req("h2")])
    out = logs / "out"  # the output folder inside the input folder
    result = run(logs, out)
    run(logs, out)  # again: the lake's own files are never read as input
    assert result.totals["files"] == 2 and result.totals["skipped"] == 3
    skipped = {Path(s["path"]).name: s["reason"] for s in result.manifest["skipped"]}
    assert set(skipped) == {"README.md", "notes.txt", "requests-old.log"}
    assert "kind" in skipped["README.md"] and "unsupported" in skipped["requests-old.log"]
    assert [r["request_id"] for r in lake(out, "requests")] == ["r1"]
    assert len(lake(out, "cache")) == 1


def test_a_named_pipe_in_a_folder_is_skipped_never_opened(tmp_path):
    logs = tmp_path / "logs"
    write(logs / "requests_a.jsonl", [req("r1")])
    fifo = logs / "requests_fifo.jsonl"
    os.mkfifo(fifo)

    def hung(*_: object) -> None:
        raise TimeoutError("ingest blocked on the named pipe")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)  # opening the pipe would block forever: fail instead of hanging the suite
    try:
        result = run(logs, tmp_path / "out")
        with pytest.raises(WhosawError, match="not a file or folder"):  # given by name: refused, as before
            ingest([fifo], tmp_path / "out2")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert result.totals["files"] == 1 and result.totals["skipped"] == 1
    assert result.manifest["skipped"] == [{"path": str(fifo), "reason": "not a regular file (a named pipe): not read"}]
    assert entry(result, logs / "requests_a.jsonl")["kept"] == 1


def test_kind_option_reads_every_input_as_that_kind(tmp_path):
    path = write(tmp_path / "export-2023.jsonl", [req("r1")])
    with pytest.raises(WhosawError, match="no log files"):
        ingest([path], tmp_path / "out")
    result = run(path, tmp_path / "out", kind="requests")
    assert entry(result, path)["kind"] == "requests"


def test_manifest_records_files_tool_config_and_skips(tmp_path):
    from pipeline import __version__

    path = write(tmp_path / "requests.jsonl", [req("r1"), "x"])
    write(tmp_path / "notes.md", ["hi"])
    config = tmp_path / "incident.toml"
    config.write_text('[sources.requests]\ntimezone = "UTC"\n')
    result = ingest([tmp_path], tmp_path / "out", config=config, progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["tool"] == "whosaw" and manifest["version"] == __version__
    assert manifest["config"]["path"] == str(config.resolve())
    got = entry(result, path)
    assert {k: got[k] for k in ("path", "kind", "bytes", "sha256", "lines", "kept", "duplicates", "rejected")} == {
        "path": str(path.absolute()),
        "kind": "requests",
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "lines": 2,
        "kept": 1,
        "duplicates": 0,
        "rejected": 1,
    }
    assert sorted(s["path"] for s in manifest["skipped"]) == [
        str(config.absolute()),
        str((tmp_path / "notes.md").absolute()),
    ]
    assert manifest["ingest"]["totals"] == result.totals
    assert "rejects/requests.parquet" in manifest["outputs"]
    assert not (tmp_path / "out" / ".tmp").exists()


def test_unreadable_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(WhosawError, match="does not exist"):
        ingest([tmp_path / "missing.jsonl"], tmp_path / "out")
    fake = tmp_path / "requests.jsonl.gz"
    fake.write_text(req("r1") + "\n")
    with pytest.raises(WhosawError, match="not gzip"):
        ingest([fake], tmp_path / "out")
    fake.unlink()
    (tmp_path / "cache.parquet").write_text("not parquet")
    with pytest.raises(WhosawError, match="not a Parquet file"):
        ingest([tmp_path / "cache.parquet"], tmp_path / "out")
    (tmp_path / "cache.parquet").unlink()
    write(tmp_path / "README.md", ["# nothing here"])
    with pytest.raises(WhosawError, match="no log files found"):
        ingest([tmp_path], tmp_path / "out")
    # an input it may not read: test_ingest_cli.py::test_an_unreadable_input_file_is_one_line_and_exit_2 (as root too)


def test_one_ingest_at_a_time_per_output_folder(tmp_path):
    import fcntl

    path = write(tmp_path / "requests.jsonl", [req("r1")])
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".ingest.lock", "a") as held:  # another process is ingesting into out
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(WhosawError, match="another ingest"):
            ingest([path], out)
    (out / ".tmp" / "ingest-old").mkdir(parents=True)  # scratch left by a killed run
    run(path, out)
    assert not (out / ".tmp").exists()
    assert ".ingest.lock" not in json.loads((out / "manifest.json").read_text())["outputs"]


def test_parquet_rows_typed_times_and_rejects(tmp_path):
    table = pa.table(
        {
            "ts": pa.array(
                [datetime(2023, 3, 20, 1, 0), None, datetime(2023, 3, 20, 2, 30, 0, 250000), datetime(1970, 1, 2)],
                pa.timestamp("us"),  # no zone: read in the source's zone
            ),
            "request_id": ["r1", "r2", "r3", "r4"],
            "status": pa.array([200, 500, None, 200], pa.int64()),
        }
    )
    path = tmp_path / "requests.parquet"
    pq.write_table(table, path)
    cfg = config_from_dict({"sources": {"requests": {"timezone": "America/New_York"}}})
    result = run(path, tmp_path / "out", config=cfg)
    rows = lake(tmp_path / "out", "requests")
    assert [(r["source_line"], r["request_id"], r["ts"], r["status"]) for r in rows] == [
        (1, "r1", utc(2023, 3, 20, 5, 0), 200),  # EDT is UTC-4
        (3, "r3", utc(2023, 3, 20, 6, 30, 0, 250000), None),
    ]
    assert rejects(tmp_path / "out", "requests") == [
        ("requests.parquet", 2, "missing_field:ts"),
        ("requests.parquet", 4, "bad_ts"),
    ]
    raw = duckdb.sql(f"SELECT raw FROM '{tmp_path}/out/rejects/requests.parquet' ORDER BY source_line").fetchall()
    assert json.loads(raw[0][0]) == {"ts": None, "request_id": "r2", "status": 500}  # the row, as JSON
    assert (entry(result, path)["lines"], entry(result, path)["kept"]) == (4, 2)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_parquet_times_with_a_zone_keep_their_instant_in_any_unit(tmp_path, unit):
    """A zoned nanosecond column (pandas' default; DuckDB's TIMESTAMPTZ_NS) was read as wall time in the source's
    zone: in the hour repeated when clocks go back, 08:30Z became 09:30Z."""
    moments = [utc(2023, 11, 5, 8, 30), utc(2023, 11, 5, 9, 30)]  # both 01:30 in Los Angeles (PDT, then PST)
    path = tmp_path / "requests.parquet"
    pq.write_table(pa.table({"ts": pa.array(moments, pa.timestamp(unit, tz="UTC")), "request_id": ["r1", "r2"]}), path)
    cfg = config_from_dict({"sources": {"requests": {"timezone": "America/Los_Angeles"}}})
    run(path, tmp_path / "out", config=cfg)
    assert [r["ts"] for r in lake(tmp_path / "out", "requests")] == moments


@pytest.mark.parametrize("zone", [None, "UTC"])
def test_a_parquet_ts_column_of_lists_of_times_is_rejected_not_a_crash(tmp_path, zone):
    """A list of times is no time: a `TIMESTAMP[]` column was cast as one time and the ingest died (exit 1)."""
    moment = datetime(2023, 3, 20, 1, tzinfo=UTC if zone else None)
    path = tmp_path / "requests.parquet"
    times = pa.array([[moment], [moment, moment]], pa.list_(pa.timestamp("us", tz=zone)))
    pq.write_table(pa.table({"ts": times, "request_id": ["r1", "r2"]}), path)
    result = run(path, tmp_path / "out")
    assert rejects(tmp_path / "out", "requests") == [("requests.parquet", n, "bad_ts") for n in (1, 2)]
    assert (entry(result, path)["lines"], entry(result, path)["rejected"]) == (2, 2)


def test_csv_and_parquet_columns_named_in_another_case_are_read(tmp_path):
    """A header `User_ID` silently lacked user_id: every request was anonymous. A column named in another case is
    the field; an exact name wins over one in another case."""
    write(tmp_path / "requests.csv", ["TS,Request_ID,Session_ID,User_ID,user_id", "2023-03-20T01:00:00Z,r1,s1,U,u1"])
    write(tmp_path / "requests-2.csv", ["TS,Request_ID,Session_ID,User_ID", "2023-03-20T01:00:01Z,r2,s2,u2"])
    table = {"Ts": ["2023-03-20T01:00:02Z"], "REQUEST_ID": ["r3"], "Session_Id": ["s3"], "User_Id": ["u3"]}
    pq.write_table(pa.table(table), tmp_path / "requests-3.parquet")
    # DuckDB renames a name repeated in another case (USER_ID -> user_id_1): the exact user_id after USER_ID is
    # still the field; User_Id beside USER_ID, neither exact, names no user_id (as in a CSV header)
    table = {"ts": ["2023-03-20T01:00:03Z"], "request_id": ["r4"], "session_id": ["s4"], "USER_ID": ["U"],
             "user_id": ["u4"]}
    pq.write_table(pa.table(table), tmp_path / "requests-4.parquet")
    table = {"ts": ["2023-03-20T01:00:04Z"], "request_id": ["r5"], "session_id": ["s5"], "User_Id": ["U"],
             "USER_ID": ["V"]}
    pq.write_table(pa.table(table), tmp_path / "requests-5.parquet")
    write(tmp_path / "requests-6.csv", ["ts,request_id,session_id,User_Id,USER_ID", "2023-03-20T01:00:05Z,r6,s6,U,V"])
    result = run(tmp_path, tmp_path / "out")
    rows = lake(tmp_path / "out", "requests")
    assert sorted((r["request_id"], r["session_id"], r["user_id"]) for r in rows) == [
        ("r1", "s1", "u1"), ("r2", "s2", "u2"), ("r3", "s3", "u3"), ("r4", "s4", "u4"), ("r5", "s5", None),
        ("r6", "s6", None),
    ]
    lacking = {Path(f["path"]).name: f.get("empty_fields") for f in result.manifest["files"] if f.get("empty_fields")}
    assert lacking == {"requests-5.parquet": ["user_id"], "requests-6.csv": ["user_id"]}


def test_a_cache_status_canceled_in_american_spelling_is_cancelled(tmp_path):
    """Go clients write `canceled`: rejecting it as bad_status dropped exactly the abandoned calls."""
    path = write(tmp_path / "cache.jsonl", [cache("k1", status="canceled"), cache("k2", status="Canceled")])
    run(path, tmp_path / "out")
    assert rejects(tmp_path / "out", "cache") == []
    assert [r["status"] for r in lake(tmp_path / "out", "cache")] == ["cancelled", "cancelled"]


def test_parquet_whole_numbers_stored_as_floats_read_as_the_same_ids_as_in_json(tmp_path):
    """pandas stores an integer column with a gap as float64: user 42 was read as '42.0', another user than the
    JSON logs' 42 (and than the owner in user:42:titles), so a user reading their own data became an exposure."""
    path = tmp_path / "requests.parquet"
    table = {
        "ts": pa.array([1679274000.0, 1679274000.5, 1679274000123.0], pa.float64()),
        "request_id": pa.array([7.0, 8.0, 9.5], pa.float64()),
        "session_id": ["s1", "s2", "s3"],
        "user_id": pa.array([42.0, None, float("nan")], pa.float64()),
        "status": pa.array([200.0, 404.0, None], pa.float32()),
    }
    pq.write_table(pa.table(table), path)
    run(path, tmp_path / "out")
    assert [(r["ts"], r["request_id"], r["user_id"], r["status"]) for r in lake(tmp_path / "out", "requests")] == [
        (utc(2023, 3, 20, 1, 0), "7", "42", 200),
        (utc(2023, 3, 20, 1, 0, 0, 500000), "8", None, 404),
        (utc(2023, 3, 20, 1, 0, 0, 123000), "9.5", "nan", None),  # not a whole number: as written
    ]


def test_a_parquet_file_with_a_file_row_number_column_is_read(tmp_path):
    """DuckDB's file_row_number option refuses a file with a column of that name (an export that kept its row
    numbers): the run ended in an internal error. Its rows are numbered by position, in several row groups."""
    path = tmp_path / "requests.parquet"
    n = 5000
    table = {
        "ts": ["2023-03-20T01:00:00Z"] * (n - 1) + ["not a time"],
        "request_id": [f"r{i}" for i in range(n)],
        "File_Row_Number": pa.array(range(n - 1, -1, -1), pa.int64()),
    }
    pq.write_table(pa.table(table), path, row_group_size=1000)
    result = run(path, tmp_path / "out")
    rows = lake(tmp_path / "out", "requests")
    assert [(r["source_line"], r["request_id"]) for r in rows] == [(i + 1, f"r{i}") for i in range(n - 1)]
    assert rejects(tmp_path / "out", "requests") == [("requests.parquet", n, "bad_ts")]
    assert (entry(result, path)["lines"], entry(result, path)["kept"]) == (n, n - 1)


def test_a_file_that_only_repeats_the_lake_adds_nothing(tmp_path):
    out = tmp_path / "out"
    run(write(tmp_path / "a" / "requests.jsonl", [req("r1"), req("r2")]), out)
    before = _lake_files(out)
    again = write(tmp_path / "b" / "requests-resent.jsonl", [req("r2"), req("r1"), "junk"])
    result = run(again, out)
    got = entry(result, again)
    assert (got["kept"], got["duplicates"], got["rejected"]) == (0, 2, 1)
    assert _lake_files(out) == before


def test_ctrl_c_while_the_lake_changes_waits_until_the_manifest_says_so():
    """The moves into the lake, the rejects and the manifest are one step: a Ctrl-C in it takes effect after it."""
    from pipeline.manifest import ctrl_c_waits

    finished = []
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own (Spark tests install theirs)
    try:
        with pytest.raises(KeyboardInterrupt):
            with ctrl_c_waits():
                signal.raise_signal(signal.SIGINT)  # to this thread: handled here, inside the block
                finished.append(True)
        assert finished == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was
    finally:
        signal.signal(signal.SIGINT, outer)


_KILL_AT = r"""
import os, signal, sys
from pipeline.ingest import ingest
ingest_module = sys.modules["pipeline.ingest"]
point, out, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
real = getattr(ingest_module, point)


def then_killed(*args, **kwargs):  # the step runs (or not), then the process dies as SIGKILL or a power cut does
    if point == "remove_stage_outputs":
        real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)


setattr(ingest_module, point, then_killed)
ingest(inputs, out, progress=False)
"""


@pytest.mark.parametrize("point", ["_write_rejects", "remove_stage_outputs", "update_manifest"])
@pytest.mark.parametrize("next_stage", ["ingest", "analyze"])
def test_an_ingest_killed_while_the_lake_changes_is_rolled_back(tmp_path, point, next_stage):
    """A real SIGKILL at each step of the commit: after the parts moved into the lake (_write_rejects not run),
    after the rejects were rewritten (remove_stage_outputs), after the analysis was removed (update_manifest
    not run). The lake used to keep rows no manifest entry counted: the re-run then read them as duplicates
    (0 kept), the manifest's kept disagreed with the lake, and every rejected line was listed twice. The next
    stage that takes OUT's lock now rolls the killed ingest back, and the re-run counts as if it never ran."""
    import subprocess
    import sys

    from pipeline.api import run as run_all

    first = write(tmp_path / "a" / "requests.jsonl", [req("r1"), req("r2"), "junk"])
    first_cache = write(tmp_path / "a" / "cache.jsonl", [cache("user:u1:titles", request_id="r1")])
    late = write(tmp_path / "b" / "requests-late.jsonl", [req("r3", "2023-03-20T05:00:00Z"), req("r1"), "{bad"])
    late_cache = write(tmp_path / "b" / "cache-late.jsonl", [cache("user:u2:titles", request_id="r3"), "[1]"])
    out, clean = tmp_path / "out", tmp_path / "clean"
    for folder in (out, clean):
        run_all([tmp_path / "a"], folder)
    before = json.loads((out / "manifest.json").read_text())
    assert (out / "exposures.parquet").is_file()
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_AT, point, str(out), str(tmp_path / "b")],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    if next_stage == "analyze":  # the killed ingest is undone first: the analysis sees the lake before it
        from pipeline.analyze import analyze

        analyze(out)
        lake = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/parquet/requests/**/*.parquet')").fetchall()
        assert lake == [(2,)]
        assert json.loads((out / "manifest.json").read_text())["files"] == before["files"]
    again = run([tmp_path / "b"], out)
    expected = run([tmp_path / "b"], clean)
    assert not (out / ".ingest-pending").exists()
    for got, want in zip(sorted(again.manifest["files"], key=lambda f: f["path"]),
                         sorted(expected.manifest["files"], key=lambda f: f["path"]), strict=True):
        assert [got[k] for k in ("path", "lines", "kept", "duplicates", "rejected")] == [
            want[k] for k in ("path", "lines", "kept", "duplicates", "rejected")
        ]
    for kind in ("requests", "cache"):
        rows = f"read_parquet('{{}}/parquet/{kind}/**/*.parquet')"
        query = f"SELECT source_file, source_line FROM {rows} ORDER BY ALL"
        assert duckdb.sql(query.format(out)).fetchall() == duckdb.sql(query.format(clean)).fetchall()
        rejects = f"SELECT source_file, source_line, reason FROM '{{}}/rejects/{kind}.parquet' ORDER BY ALL"
        assert duckdb.sql(rejects.format(out)).fetchall() == duckdb.sql(rejects.format(clean)).fetchall()
    assert not (out / "exposures.parquet").exists() and "analysis" not in again.manifest  # the lake grew
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
               and not p.relative_to(out).parts[0].startswith(".") and p.name != "manifest.json"}
    assert set(again.manifest["outputs"]) == on_disk
    assert first.exists() and first_cache.exists() and late.exists() and late_cache.exists()


def test_an_analysis_after_a_killed_first_ingest_finds_no_lake(tmp_path):
    """The first ingest into a new OUT, killed after its parts moved into the lake: the analysis used to see
    parquet/ before its lock rolled that ingest back, then analysed the emptied folder (0 exposures, a manifest
    with no input files). The lake is looked for once the lock is held."""
    import subprocess
    import sys

    from pipeline.analyze import analyze

    write(tmp_path / "a" / "requests.jsonl", [req("r1"), req("r2")])
    write(tmp_path / "a" / "cache.jsonl", [cache("user:u1:titles", request_id="r1")])
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_AT, "_write_rejects", str(out), str(tmp_path / "a")],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "parquet").is_dir()
    with pytest.raises(WhosawError, match="no lake"):
        analyze(out)
    assert not (out / "summary.json").exists() and not (out / "exposures.parquet").exists()


# ------------------------------------------------------------------------------------------------------------
# real-world log shapes: ECS flat keys, a field map naming an object, rotated and extension-less names


def test_a_dotted_path_reads_ecs_flat_keys_as_it_reads_nested_ones(tmp_path):
    """Elastic Common Schema loggers write `user.id` nested or flat ({"user.id": ...}), often mixed in one file.
    `user_id = "user.id"` read only the nested one: the flat lines lost their request id (rejected) or their user
    (every request anonymous, a session dropped) without a word. CSV and Parquet already read dotted columns."""
    lines = [
        json.dumps({"@timestamp": "2023-03-20T01:00:00Z", "request": {"id": "r1"}, "user": {"id": "u1"},
                    "session.id": "s1", "http": {"response": {"status_code": 200}}}),
        json.dumps({"@timestamp": "2023-03-20T01:00:01Z", "request.id": "r2", "user.id": "u2", "session.id": "s2",
                    "http.response.status_code": 404}),
        json.dumps({"@timestamp": "2023-03-20T01:00:02Z", "request": {"id": "r3"}, "user": {"id": "u3"},
                    "user.id": "flat", "session": {"id": "s3"}}),  # both: the nested one wins, as in Parquet
    ]
    write(tmp_path / "access-1.ndjson", lines)
    fields = {"ts": "@timestamp", "request_id": "request.id", "user_id": "user.id", "session_id": "session.id",
              "status": "http.response.status_code"}
    cfg = config_from_dict({"sources": {"requests": {"match": ["access-*"], "fields": fields}}})
    result = run(tmp_path, tmp_path / "out", config=cfg)
    rows = lake(tmp_path / "out", "requests")
    assert [(r["request_id"], r["user_id"], r["session_id"], r["status"]) for r in rows] == [
        ("r1", "u1", "s1", 200), ("r2", "u2", "s2", 404), ("r3", "u3", "s3", None),
    ]
    assert rejects(tmp_path / "out", "requests") == []
    assert entry(result, tmp_path / "access-1.ndjson").get("empty_fields") in (None, [])


def test_a_quoted_part_of_a_path_reads_opentelemetry_attributes_in_json_and_parquet(tmp_path):
    """An OpenTelemetry span export nests the cache call under "attributes" with dotted names ("db.redis.key"):
    no dotted path reached them, so every cache line lacked its key and request (rejected). `attributes."db..."`
    reads them, in JSON and in a Parquet struct column alike."""
    spans = [
        {"timestamp": "2023-03-20T01:00:00Z", "name": "GET", "status": "ok",
         "attributes": {"db.redis.key": f"user:u{i}:titles", "whosaw.request_id": f"r{i}", "net.peer.name": "h1",
                        "db.redis.conn_id": "c1"}}
        for i in range(2)
    ]
    write(tmp_path / "json" / "cache.jsonl", [json.dumps(span) for span in spans])
    (tmp_path / "parquet").mkdir()
    pq.write_table(pa.Table.from_pylist(spans), tmp_path / "parquet" / "cache.parquet")
    fields = {"ts": "timestamp", "op": "name", "key": 'attributes."db.redis.key"',
              "request_id": 'attributes."whosaw.request_id"', "host": 'attributes."net.peer.name"',
              "conn_id": 'attributes."db.redis.conn_id"'}
    cfg = config_from_dict({"sources": {"cache": {"fields": fields}}})
    for fmt in ("json", "parquet"):
        run(tmp_path / fmt, tmp_path / f"out-{fmt}", config=cfg)
        rows = lake(tmp_path / f"out-{fmt}", "cache")
        assert [(r["request_id"], r["key"], r["host"], r["conn_id"]) for r in rows] == [
            ("r0", "user:u0:titles", "h1", "c1"), ("r1", "user:u1:titles", "h1", "c1"),
        ], fmt
        assert rejects(tmp_path / f"out-{fmt}", "cache") == []


def test_a_field_mapped_to_an_object_or_array_is_rejected_not_read_as_an_id(tmp_path):
    """`user_id = "user"` for {"user": {"id": ...}}, `value_owner = "reply"`, `conn_id = "conn"`: the JSON text of
    the object became the user id, the owner id (in affected_users.csv) and the connection. Such a line is rejected
    (not_a_value:<field>); a key that is an array stays a multi-key call."""
    write(tmp_path / "requests.jsonl", [
        req("r1", user={"id": "u1"}),
        req("r2", sess=["s1"]),
        req("r3", user="[bot] crawler", sess="s3"),  # text with a bracket is a value
    ])
    write(tmp_path / "cache.jsonl", [
        cache("user:u1:titles", reply={"owner": "u2"}, conn="7"),
        cache("user:u1:titles", conn={"pool_id": 7}),
        cache('["user:u1:titles","billing:u1"]', op="MGET", conn="7"),
    ])
    fields = {
        "requests": {"fields": {"user_id": "user", "session_id": "sess"}},
        "cache": {"fields": {"value_owner": "reply", "conn_id": "conn"}},
    }
    run(tmp_path, tmp_path / "out", config=config_from_dict({"sources": fields}))
    assert [r["request_id"] for r in lake(tmp_path / "out", "requests")] == ["r3"]
    assert rejects(tmp_path / "out", "requests") == [
        ("requests.jsonl", 1, "not_a_value:user_id"), ("requests.jsonl", 2, "not_a_value:session_id"),
    ]
    assert [r["source_line"] for r in lake(tmp_path / "out", "cache")] == [3]
    assert rejects(tmp_path / "out", "cache") == [
        ("cache.jsonl", 1, "not_a_value:value_owner"), ("cache.jsonl", 2, "not_a_value:conn_id"),
    ]
    detail = duckdb.sql(f"SELECT detail FROM '{tmp_path}/out/rejects/cache.parquet' LIMIT 1").fetchall()[0][0]
    assert "is a JSON object or array, not a value" in detail


def test_rotated_names_are_read_and_a_source_format_reads_names_without_one(tmp_path):
    """logrotate's `requests.jsonl.1`, `cache.jsonl.2.gz`, dateext `-20230320`, and nginx's `access.log.1.gz`
    (with `format = "jsonl"`) were all passed over as "unsupported file type": the requests log of an nginx
    incident was lost with exit 0 and one "passed over" count."""
    write(tmp_path / "a" / "requests.jsonl.1", [req("r1")])
    write(tmp_path / "a" / "requests.jsonl-20230320.gz", [req("r2")])
    write(tmp_path / "a" / "cache.jsonl.2.gz", [cache("k")])
    write(tmp_path / "nginx" / "2023-03-20" / "access.log.1.gz", [req("r3")])
    write(tmp_path / "nginx" / "2023-03-20" / "access.log", [req("r4")])
    write(tmp_path / "nginx" / "notes.txt", ["not a log"])
    cfg = config_from_dict({"sources": {"requests": {"match": ["access.log*"], "format": "JSONL"}}})
    result = run(tmp_path, tmp_path / "out", config=cfg)
    assert sorted(r["request_id"] for r in lake(tmp_path / "out", "requests")) == ["r1", "r2", "r3", "r4"]
    assert len(lake(tmp_path / "out", "cache")) == 1
    assert [Path(s["path"]).name for s in result.manifest["skipped"]] == ["notes.txt"]
    with pytest.raises(WhosawError, match=r"sources\.requests\.match names it a requests log.*set sources"):
        ingest([tmp_path / "nginx"], tmp_path / "out2", progress=False,
               config=config_from_dict({"sources": {"requests": {"match": ["access.log*"]}}}))


def export_logs(logs: Path, fmt: str, **frames: Any) -> Path:
    """Each pandas DataFrame written to ``logs/<kind>.<fmt>`` as pandas exports it (jsonl, csv or parquet)."""
    logs.mkdir()
    for kind, frame in frames.items():
        path = logs / f"{kind}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        elif fmt == "parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_json(path, orient="records", lines=True)
    return logs


def test_an_id_of_blanks_only_is_no_id(tmp_path):
    """A JSON id of spaces or tabs only was an id: value_owner " " an owner named " " on the notification lists,
    user_id " " a signed-in viewer, request_id " " a request. As an empty one (a CSV field is trimmed to ''), it is
    none: the next owner tier decides, the viewer is anonymous, the line lacks its request_id."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "requests.jsonl").write_text(
        '{"ts": "2023-03-20T01:00:00Z", "request_id": "r1", "session_id": " ", "user_id": " "}\n'
        '{"ts": "2023-03-20T01:00:01Z", "request_id": "\\t ", "session_id": "s2", "user_id": "bob"}\n'
    )
    (logs / "cache.jsonl").write_text(
        '{"ts": "2023-03-20T01:00:00Z", "request_id": "r1", "op": "GET", "key": "user:alice:titles", '
        '"host": "h1", "conn_id": "1", "value_owner": " "}\n'
    )
    config = tmp_path / "incident.toml"
    config.write_text("[[keys]]\npattern = '^user:(?P<owner>[^:]+):titles$'\ncategory = \"conversation_titles\"\n"
                      "severity = \"low\"\n")
    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(tmp_path / "out"), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert [(r["session_id"], r["user_id"]) for r in lake(tmp_path / "out", "requests")] == [(None, None)]
    assert [r["value_owner"] for r in lake(tmp_path / "out", "cache")] == [None]
    rejects = pq.read_table(tmp_path / "out" / "rejects" / "requests.parquet").to_pylist()
    assert [(r["source_line"], r["reason"]) for r in rejects] == [(2, "missing_field:request_id")]
    exposures = pq.read_table(tmp_path / "out" / "exposures.parquet").to_pylist()
    assert [(e["owner_id"], e["viewer_id"], e["evidence"]) for e in exposures] == [("alice", None, "key")]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_ids_a_pandas_export_writes_as_floats_are_the_users_of_the_keys(tmp_path, fmt):
    """pandas keeps an integer id column with a gap (an anonymous request) as float64, and writes user 42 as 42.0
    to JSON Lines and CSV: another user than the 42 of key user:42:titles, so every signed-in user reading their
    own titles was an exposure; a grants table or users directory exported alike matched no one. Read as 42, only
    the crossed reply is one, and its owner's email is found."""
    import pandas as pd
    from click.testing import CliRunner

    from pipeline.cli import cli

    requests = pd.DataFrame({
        "ts": ["2023-03-20T01:00:00Z", "2023-03-20T01:00:01Z", "2023-03-20T01:00:02Z", "2023-03-20T01:00:03Z"],
        "request_id": [1, 2, 3, 4],
        "session_id": [10, 11, None, 10],
        "user_id": [42, 43, None, 42],  # the anonymous request makes the column float64
    })
    cache = pd.DataFrame({
        "ts": ["2023-03-20T01:00:00Z", "2023-03-20T01:00:01Z", "2023-03-20T01:00:02Z", "2023-03-20T01:00:03Z"],
        "request_id": [1, 2, 3, 4],
        "op": ["GET"] * 4,
        "key": ["user:42:titles", "user:43:titles", "public:motd", "user:43:titles"],
        "status": ["ok", "cancelled", "ok", "ok"],
        "host": ["h1"] * 4,
        "conn_id": [7.0, 8.0, 8.0, 9.0],
        "value_owner": [42, 43, None, 43],  # 42 reads 43's titles: the grant allows it
    })
    assert requests["user_id"].dtype == "float64" and cache["value_owner"].dtype == "float64"
    logs = export_logs(tmp_path / "logs", fmt, requests=requests, cache=cache)
    assert "42.0" in (logs / f"requests.{fmt}").read_text()
    # the users directory and a grants table, exported alike: a row without an id makes the column float64
    pd.DataFrame({"user_id": [42, 43, None], "email": ["a@example.org", "b@example.org", "nobody@example.org"]}) \
        .to_csv(tmp_path / "users.csv", index=False)
    # (a blank row: a grant naming no owner or viewer is refused)
    pd.DataFrame({"owner_id": [43, None], "viewer_id": [42, None], "category": ["conversation_titles", None]}) \
        .to_csv(tmp_path / "grants.csv", index=False)
    config = tmp_path / "incident.toml"
    config.write_text("[[keys]]\npattern = '^user:(?P<owner>[^:]+):titles$'\ncategory = \"conversation_titles\"\n"
                      "severity = \"low\"\n[tables]\nusers = \"users.csv\"\ngrants = \"grants.csv\"\n")

    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(tmp_path / "out"), "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert {(r["request_id"], r["session_id"], r["user_id"]) for r in lake(tmp_path / "out", "requests")} == {
        ("1", "10", "42"), ("2", "11", "43"), ("3", None, None), ("4", "10", "42"),
    }
    assert {(r["conn_id"], r["value_owner"]) for r in lake(tmp_path / "out", "cache")} == {
        ("7", "42"), ("8", "43"), ("8", None), ("9", "43"),
    }
    exposures = pd.read_parquet(tmp_path / "out" / "exposures.parquet")
    # user 43's cancelled read left its reply on connection 8: the anonymous request got it, a viewer nobody
    # can name; 42 reading their own titles and 43's, which the grant allows, are no exposures
    assert list(exposures["owner_id"]) == ["43"]
    assert list(exposures["viewer_kind"]) == ["anonymous"]
    affected = read_safe_csv(tmp_path / "out" / "affected_users.csv")
    assert list(zip(affected["owner_id"], affected["email"], strict=True)) == [("43", "b@example.org")]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_ids_a_float_cannot_hold_stay_as_the_float_wrote_them(tmp_path, fmt):
    """From 2**53 on float64 does not hold every whole number: pandas writes user 9007199254740993 of a column with a
    gap as 9007199254740992.0. Read as 9007199254740992 it was that other user (their own titles, read by someone
    else, no exposure); 12345678901234567 was 12345678901234568 from Parquet but 1.2345678901234568e+16 in a
    Parquet grants table, so the grant matched no one. Such ids stay as the float's text, the same in every file."""
    import pandas as pd
    from click.testing import CliRunner

    from pipeline.cli import cli

    a, c = 9007199254740993, 12345678901234567
    ts = ["2023-03-20T01:00:00Z", "2023-03-20T01:00:01Z", "2023-03-20T01:00:02Z"]
    requests = pd.DataFrame({"ts": ts, "request_id": ["1", "2", "3"], "session_id": ["s1", "s2", "s3"],
                             "user_id": [a, c, None]})
    cache = pd.DataFrame({"ts": ts, "request_id": ["1", "2", "3"], "op": ["GET"] * 3,
                          "key": ["user:9007199254740992:titles", "user:5:titles", "public:motd"],
                          "status": ["ok"] * 3, "host": ["h1"] * 3, "conn_id": ["c1", "c2", "c3"]})
    logs = export_logs(tmp_path / "logs", fmt, requests=requests, cache=cache)
    pd.DataFrame({"owner_id": [5.0], "viewer_id": [float(c)]}).to_parquet(tmp_path / "grants.parquet", index=False)
    config = tmp_path / "incident.toml"
    config.write_text("[[keys]]\npattern = '^user:(?P<owner>[^:]+):titles$'\ncategory = \"conversation_titles\"\n"
                      "severity = \"low\"\n[tables]\ngrants = \"grants.parquet\"\n")

    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(tmp_path / "out"), "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert {r["user_id"] for r in lake(tmp_path / "out", "requests")} == {
        "9007199254740992.0", "1.2345678901234568e+16", None,
    }
    exposures = pd.read_parquet(tmp_path / "out" / "exposures.parquet")
    assert list(zip(exposures["viewer_id"], exposures["owner_id"], strict=True)) == [
        ("9007199254740992.0", "9007199254740992"),
    ]
