"""sources.<kind>.ts_format: time stamps in the forms real logs write (nginx's $time_local, log4j's comma before the
milliseconds, syslog-ish month names), read with DuckDB strptime formats before ISO-8601 and epochs.

Every test goes through the real CLI on real (gzip) files and reads the lake, the rejects and the manifest back.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.cli import cli

SECRET = "user-4711@example.com"  # a value from inside a log: it must never reach the console
NGINX = "%d/%b/%Y:%H:%M:%S %z"
LOG4J = "%Y-%m-%d %H:%M:%S,%g"


def write(path: Path, lines: list[str]) -> Path:
    """The lines, one a line; gzip when the name ends in .gz."""
    raw = "".join(line + "\n" for line in lines).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def ingest(inputs: Path, out: Path, config: str) -> object:
    """``whosaw ingest`` with ``config`` as the TOML file's text; exit 0, and every file's counts add up."""
    path = out.parent / "incident.toml"
    path.write_text(config)
    result = CliRunner().invoke(cli, ["ingest", str(inputs), "--out", str(out), "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    for entry in json.loads((out / "manifest.json").read_text())["files"]:
        assert entry["lines"] == entry["kept"] + entry["duplicates"] + entry["rejected"], entry
    return result


def times(out: Path, kind: str, id_column: str) -> dict[str, datetime]:
    """The lake's ts (UTC) by id."""
    rows = duckdb.sql(
        f"SELECT {id_column}, ts FROM read_parquet('{out}/parquet/{kind}/**/*.parquet', hive_partitioning = false)"
    ).fetchall()
    return {key: ts.astimezone(UTC) for key, ts in rows}


def rejects(out: Path, kind: str) -> list[tuple[str, int, str]]:
    path = out / "rejects" / f"{kind}.parquet"
    if not path.exists():
        return []
    rows = duckdb.sql(f"SELECT source_file, source_line, reason FROM '{path}' ORDER BY ALL").fetchall()
    return [(Path(name).name, line, reason) for name, line, reason in rows]


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def nginx(rid: str, time_local: str) -> str:
    """A line of nginx's JSON access log (log_format escape=json with $time_local)."""
    return json.dumps({"time_local": time_local, "request_id": rid, "remote_user": SECRET, "status": "200"})


def test_nginx_time_local_is_read_with_its_offset(tmp_path):
    """$time_local carries its offset: it wins over the source's zone, as an ISO offset does."""
    write(
        tmp_path / "logs" / "access.json.gz",
        [
            nginx("utc", "20/Mar/2023:01:16:00 +0000"),
            nginx("east", "20/Mar/2023:03:16:00 +0200"),
            nginx("west", "19/Mar/2023:18:16:00 -0700"),
        ],
    )
    config = (
        '[sources.requests]\nmatch = ["access*"]\ntimezone = "Asia/Tokyo"\n'
        f'ts_format = "{NGINX}"\nfields = {{ ts = "time_local", user_id = "remote_user" }}\n'
    )
    result = ingest(tmp_path / "logs", tmp_path / "out", config)
    assert result.stdout.startswith("ingested 1 file: 3 lines = 3 kept + 0 duplicates + 0 rejected")
    assert times(tmp_path / "out", "requests", "request_id") == {
        "utc": utc(2023, 3, 20, 1, 16),
        "east": utc(2023, 3, 20, 1, 16),
        "west": utc(2023, 3, 20, 1, 16),
    }


def test_log4j_times_without_a_zone_are_read_in_the_source_zone(tmp_path):
    """log4j's `2023-03-20 01:16:00,123` has no zone: wall time in the source's timezone, summer time included."""
    write(
        tmp_path / "logs" / "cache.csv.gz",
        [  # the comma in the time is the CSV's delimiter too: the writer quotes the field
            "ts,request_id,op,key,host,conn_id",
            '"2023-03-20 01:16:00,123",r1,GET,user:1,h1,c1',  # CET: UTC+1
            '"2023-07-15 12:00:00,000",r2,GET,user:2,h1,c1',  # CEST: UTC+2
        ],
    )
    config = f'[sources.cache]\ntimezone = "Europe/Berlin"\nts_format = "{LOG4J}"\n'
    ingest(tmp_path / "logs", tmp_path / "out", config)
    assert times(tmp_path / "out", "cache", "request_id") == {
        "r1": utc(2023, 3, 20, 0, 16, 0, 123000),
        "r2": utc(2023, 7, 15, 10),
    }
    assert rejects(tmp_path / "out", "cache") == []


def test_a_list_of_formats_with_and_without_a_zone_reads_each_form(tmp_path):
    """One list mixes formats with an offset and without: DuckDB's try_strptime types the two apart, so each run
    of them is read on its own; the zone-less ones still in the source's zone. Nanoseconds are cut, not rounded."""
    lines = [
        ("syslog", "Mar 20 2023 02:16:00"),
        ("nginx", "20/Mar/2023:01:16:00 +0000"),
        ("log4j", "2023-03-20 02:16:00,500"),
        ("nanos", "2023-03-20 02:16:00.123456789"),
    ]
    write(
        tmp_path / "logs" / "sessions.jsonl.gz",
        [json.dumps({"ts": ts, "session_id": sid, "user_id": SECRET, "event": "login"}) for sid, ts in lines],
    )
    formats = ["%b %d %Y %H:%M:%S", NGINX, LOG4J, "%Y-%m-%d %H:%M:%S.%n"]
    config = f'[sources.sessions]\ntimezone = "Europe/Berlin"\nts_format = {json.dumps(formats)}\n'
    ingest(tmp_path / "logs", tmp_path / "out", config)
    assert times(tmp_path / "out", "sessions", "session_id") == {
        "syslog": utc(2023, 3, 20, 1, 16),
        "nginx": utc(2023, 3, 20, 1, 16),
        "log4j": utc(2023, 3, 20, 1, 16, 0, 500000),
        "nanos": utc(2023, 3, 20, 1, 16, 0, 123456),
    }


def test_a_zone_abbreviation_is_bad_ts_not_a_time_hours_off(tmp_path):
    """Python's %Z and Java's z write abbreviations; DuckDB reads one as the ICU zone of that id, BST (British Summer
    Time) as Bangladesh: a London log's summer lines were 5 hours off, and left the window without a sign. A name
    that names one zone (UTC, GMT, an IANA name) is read; an abbreviation beside an offset (Go's -0700 MST) reads by
    the offset; any other is bad_ts with its line."""
    lines = [
        ("gmt", "2023-03-26 00:30:00 GMT"),
        ("bst", "2023-03-26 02:30:00 BST"),  # 01:30Z; DuckDB alone: the 25th, 20:30Z
        ("iana", "2023-03-26 02:30:00 Europe/London"),
        ("go", "2023-03-26 02:30:00 +0100 BST"),
        ("utc", "2023-03-26 01:30:00 UTC"),
    ]
    write(
        tmp_path / "logs" / "sessions.jsonl",
        [json.dumps({"ts": ts, "session_id": sid, "user_id": SECRET, "event": "login"}) for sid, ts in lines],
    )
    formats = ["%Y-%m-%d %H:%M:%S %Z", "%Y-%m-%d %H:%M:%S %z %Z"]
    ingest(tmp_path / "logs", tmp_path / "out", f"[sources.sessions]\nts_format = {json.dumps(formats)}\n")
    assert times(tmp_path / "out", "sessions", "session_id") == {
        "gmt": utc(2023, 3, 26, 0, 30),
        "iana": utc(2023, 3, 26, 1, 30),
        "go": utc(2023, 3, 26, 1, 30),
        "utc": utc(2023, 3, 26, 1, 30),
    }
    assert rejects(tmp_path / "out", "sessions") == [("sessions.jsonl", 2, "bad_ts")]


def test_an_iso_time_with_a_zone_abbreviation_is_bad_ts_without_a_ts_format_too(tmp_path):
    """DuckDB's ISO cast reads a zone name after the time as %Z does: CST (China Standard Time, +8) was US Central,
    13 hours off. PostgreSQL's and Rails' logs write such times."""
    lines = [
        ("cst", "2023-07-01 12:00:00 CST"),
        ("utc", "2023-07-01 04:00:00 UTC"),
        ("iso", "2023-07-01T12:00:00+08:00"),
    ]
    write(
        tmp_path / "logs" / "sessions.jsonl",
        [json.dumps({"ts": ts, "session_id": sid, "user_id": SECRET, "event": "login"}) for sid, ts in lines],
    )
    ingest(tmp_path / "logs", tmp_path / "out", "")
    assert times(tmp_path / "out", "sessions", "session_id") == {"utc": utc(2023, 7, 1, 4), "iso": utc(2023, 7, 1, 4)}
    assert rejects(tmp_path / "out", "sessions") == [("sessions.jsonl", 1, "bad_ts")]


def test_a_mixed_log_reads_iso_epoch_and_formatted_lines_and_rejects_the_rest_by_line(tmp_path):
    """The formats come first, then ISO-8601 and epochs as without them; what none reads, or reads outside
    1990..2100, is bad_ts with its line number. A leap second in the format's form is the next second."""
    write(
        tmp_path / "logs" / "requests.jsonl.gz",
        [
            nginx("iso", "2023-03-20T01:16:00Z"),  # 1
            nginx("formatted", "20/Mar/2023:02:16:00 +0100"),  # 2
            nginx("zone-less", "2023-03-20T01:16:00"),  # 3: ISO without a zone, in the source's zone (UTC)
            nginx("epoch", "1679274960"),  # 4
            nginx("garbage", f"yesterday {SECRET}"),  # 5
            nginx("too-early", "20/Mar/1985:01:16:00 +0000"),  # 6
            nginx("leap", "31/Dec/2016:23:59:60 +0000"),  # 7
            nginx("formatted", "20/Mar/2023:02:16:00 +0100"),  # 8: a re-shipped line
            nginx("bad-leap", "31/Dec/2016:23:59:61 +0000"),  # 9
        ],
    )
    config = f'[sources.requests]\nts_format = "{NGINX}"\nfields = {{ ts = "time_local", user_id = "remote_user" }}\n'
    result = ingest(tmp_path / "logs", tmp_path / "out", config)
    assert result.stdout.startswith("ingested 1 file: 9 lines = 5 kept + 1 duplicates + 3 rejected")
    assert times(tmp_path / "out", "requests", "request_id") == {
        "iso": utc(2023, 3, 20, 1, 16),
        "formatted": utc(2023, 3, 20, 1, 16),
        "zone-less": utc(2023, 3, 20, 1, 16),
        "epoch": utc(2023, 3, 20, 1, 16),
        "leap": utc(2017, 1, 1),
    }
    assert rejects(tmp_path / "out", "requests") == [
        ("requests.jsonl.gz", 5, "bad_ts"),
        ("requests.jsonl.gz", 6, "bad_ts"),
        ("requests.jsonl.gz", 9, "bad_ts"),
    ]


def test_a_parquet_text_column_is_read_with_the_formats_and_a_timestamp_column_is_not(tmp_path):
    """A string ts column is log text like any other; a timestamp column is a time already (written as ISO text
    for the rules, which a day-first format would misread: 2023-03-05 as 3 May)."""
    day_first = "%Y-%d-%mT%H:%M:%S.%f"
    (tmp_path / "logs").mkdir()
    pq.write_table(
        pa.table({"ts": ["2023-05-03T01:16:00.000000", "3 May"], "request_id": ["text", "text-bad"]}),
        tmp_path / "logs" / "requests-text.parquet",
    )
    pq.write_table(
        pa.table({"ts": pa.array([datetime(2023, 3, 5, 1, 16)], pa.timestamp("us")), "request_id": ["typed"]}),
        tmp_path / "logs" / "requests-typed.parquet",
    )
    ingest(tmp_path / "logs", tmp_path / "out", f'[sources.requests]\nts_format = "{day_first}"\n')
    assert times(tmp_path / "out", "requests", "request_id") == {
        "text": utc(2023, 3, 5, 1, 16),
        "typed": utc(2023, 3, 5, 1, 16),
    }
    assert rejects(tmp_path / "out", "requests") == [("requests-text.parquet", 2, "bad_ts")]


def test_a_changed_ts_format_does_not_reach_files_already_ingested_and_says_so(tmp_path):
    """Without a ts_format nginx's times are all bad_ts. The same files ingested again with one are 'already
    ingested' and not read again (a re-read would keep a line an old format read as another time twice), so the
    CLI must say the edit did not reach them, else the user believes the lake now holds those lines."""
    write(
        tmp_path / "logs" / "requests.jsonl.gz",
        [nginx("r1", "20/Mar/2023:01:16:00 +0000"), nginx("r2", "2023-03-20T01:17:00Z"), nginx("r3", "garbage")],
    )
    fields = '[sources.requests]\nfields = { ts = "time_local", user_id = "remote_user" }\n'
    out = tmp_path / "out"
    first = ingest(tmp_path / "logs", out, fields)
    assert first.stdout.startswith("ingested 1 file: 3 lines = 1 kept + 0 duplicates + 2 rejected")
    assert "not read again" not in ingest(tmp_path / "logs", out, fields).stdout

    again = ingest(tmp_path / "logs", out, fields + f'ts_format = ["{NGINX}"]\n')
    assert "1 already ingested" in again.stdout
    assert "note: 1 already-ingested file was read with another [sources] section and not read again" in again.stdout
    assert json.loads((out / "manifest.json").read_text())["ingest"]["already_read_otherwise"] == 1
    assert set(times(out, "requests", "request_id")) == {"r2"}

    fresh = ingest(tmp_path / "logs", tmp_path / "fresh", fields + f'ts_format = "{NGINX}"\n')
    assert fresh.stdout.startswith("ingested 1 file: 3 lines = 2 kept + 0 duplicates + 1 rejected")
    assert times(tmp_path / "fresh", "requests", "request_id") == {
        "r1": utc(2023, 3, 20, 1, 16),
        "r2": utc(2023, 3, 20, 1, 17),
    }


def test_an_edit_of_one_kind_counts_only_that_kinds_files_as_not_read_again(tmp_path):
    """A ts_format added for the requests does not change how the cache file would be read: counting it among the
    files the edit did not reach sent the user to re-ingest everything into a new --out for nothing."""
    write(tmp_path / "logs" / "requests.jsonl", [nginx("r1", "20/Mar/2023:01:16:00 +0000")])
    write(tmp_path / "logs" / "cache.jsonl", [json.dumps({"ts": "2023-03-20T01:16:00Z", "op": "GET", "key": "k"})])
    fields = '[sources.requests]\nfields = { ts = "time_local" }\n'
    out = tmp_path / "out"
    ingest(tmp_path / "logs", out, fields)
    again = ingest(tmp_path / "logs", out, fields + f'ts_format = "{NGINX}"\n')
    assert "2 already ingested" in again.stdout
    assert "note: 1 already-ingested file was read with another [sources] section" in again.stdout
    assert json.loads((out / "manifest.json").read_text())["ingest"]["already_read_otherwise"] == 1


def test_a_live_log_that_grew_after_an_edit_of_its_kind_is_refused_not_read_twice(tmp_path):
    """A grown file is read again whole, its earlier lines duplicates of the lake's. Read with another zone they
    were new records at other times: the lake held each of them twice ('6 kept + 0 duplicates'), as crossed
    replies and exposures. The edit of another kind, or no edit, still reads the grown file as before."""
    def cache(n: int) -> str:
        return f"{1 + n // 60:02d}:{n % 60:02d}:00" + f",GET,user:u{n}:titles,ok,h1,c1"

    header = "ts_wall,op,key,status,host,conn_id"
    log = tmp_path / "logs" / "cache.csv"
    write(log, [header] + [f"2023-03-20 {cache(n)}" for n in range(3)])
    fields = '[sources.cache]\nfields = { ts = "ts_wall" }\n'
    out = tmp_path / "out"
    ingest(tmp_path / "logs", out, fields)
    before = (out / "manifest.json").read_text()
    write(log, [header] + [f"2023-03-20 {cache(n)}" for n in range(6)])

    path = out.parent / "incident.toml"
    path.write_text(fields + 'timezone = "Europe/Berlin"\n')
    refused = CliRunner().invoke(cli, ["ingest", str(tmp_path / "logs"), "--out", str(out), "--config", str(path)])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.splitlines() == [
        f"whosaw: error: input {log} grew since {log} was ingested with another [sources.cache] section: its earlier "
        "lines would be kept twice, read two ways; ingest into a new --out"
    ]
    assert (out / "manifest.json").read_text() == before

    other = ingest(tmp_path / "logs", out, fields + '[sources.requests]\ntimezone = "Europe/Berlin"\n')
    assert other.stdout.startswith("ingested 1 file: 6 lines = 3 kept + 3 duplicates + 0 rejected")
    assert len(times(out, "cache", "key")) == 6


def test_braces_in_a_format_or_a_logged_word_are_text_not_a_crash(tmp_path):
    """A format and a values map are pasted into the ingest SQL's templates: '{{read}}' in a format (a log written
    through an unrendered template) was filled in again, or left as a placeholder: an internal error, exit 1."""
    write(
        tmp_path / "logs" / "cache.jsonl",
        [json.dumps({"ts": "{{read}} 2023-03-20 01:16:00", "op": "GET", "key": "k", "status": "{{word}}"})],
    )
    config = '[sources.cache]\nts_format = "{{read}} %Y-%m-%d %H:%M:%S"\nvalues = { status = { "{{word}}" = "ok" } }\n'
    ingest(tmp_path / "logs", tmp_path / "out", config)
    assert list(times(tmp_path / "out", "cache", "key").values()) == [utc(2023, 3, 20, 1, 16)]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('"%Q"', "sources.requests.ts_format: '%Q' is not a format DuckDB's strptime reads (Unrecognized format"),
        ('["%Y-%m-%d", "%d/%b/%Y %Q"]', "sources.requests.ts_format: '%d/%b/%Y %Q' is not a format DuckDB"),
        ('"%Y-%m-%d %"', "Trailing format character %"),
        ('"%H:%M:%S"', "sources.requests.ts_format: '%H:%M:%S' has no year (%Y or %y)"),
        ("[]", "sources.requests.ts_format: expected a format or a non-empty list of formats"),
        ('""', "sources.requests.ts_format: expected a non-empty string, got an empty string"),
        ("5", "sources.requests.ts_format: expected a list of strings, got an integer"),
        ('["%Y", ""]', "sources.requests.ts_format[1]: expected a non-empty string"),
    ],
)
def test_a_ts_format_that_cannot_work_is_a_one_line_config_error(tmp_path, value, words):
    """Else DuckDB refuses the whole ingest statement after discovery (a traceback, exit 1), or every line is
    bad_ts (a format without a year reads 1900)."""
    write(tmp_path / "logs" / "requests.jsonl", [nginx("r1", "20/Mar/2023:01:16:00 +0000")])
    config = tmp_path / "incident.toml"
    config.write_text(f"[sources.requests]\nts_format = {value}\n")
    args = [str(tmp_path / "logs"), "--out", str(tmp_path / "out"), "--config", str(config)]
    result = CliRunner().invoke(cli, ["ingest", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and SECRET not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("whosaw: error: config: sources.requests.ts_format"), lines
    assert words in lines[0]
    assert not (tmp_path / "out").exists()


def test_an_offset_no_zone_has_is_bad_ts_not_a_time_days_off(tmp_path):
    """DuckDB's ISO cast and strptime's %z read an offset of +99:00 as 99 hours (and +00:60 as an hour): a line
    moved four days, into or out of the window. RFC 3339 offsets run to 23:59; anything beyond is bad_ts."""
    bad = ["2023-03-20T01:00:00+99:00", "2023-03-20T01:00:00+24:00", "2023-03-20T01:00:00-00:60",
           "2023-03-20T01:00:00.5+0099", "2023-03-20T01:00:00+05:00:99", "20/Mar/2023:01:00:00 +9900"]
    good = {"kathmandu": "2023-03-20T06:45:00+05:45", "edge": "2023-03-21T00:59:00+23:59",
            "hours": "2023-03-19T20:00:00-05", "west": "2023-03-19T17:00-0800", "z": "2023-03-20T01:00:00Z",
            "nginx": "20/Mar/2023:03:00:00 +0200"}
    lines = [json.dumps({"ts": ts, "request_id": f"bad{i}", "session_id": "s1"}) for i, ts in enumerate(bad)]
    lines += [json.dumps({"ts": ts, "request_id": rid, "session_id": "s1"}) for rid, ts in good.items()]
    write(tmp_path / "logs" / "requests.jsonl", lines)
    ingest(tmp_path / "logs", tmp_path / "out", f'[sources.requests]\nts_format = "{NGINX}"\n')
    assert times(tmp_path / "out", "requests", "request_id") == {rid: utc(2023, 3, 20, 1) for rid in good}
    assert rejects(tmp_path / "out", "requests") == [("requests.jsonl", n, "bad_ts") for n in range(1, len(bad) + 1)]
