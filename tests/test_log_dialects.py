"""One incident, logged in real systems' dialects, gives the same answer as in SPEC's forms.

A simulated incident's logs are rewritten (by DuckDB) the way real services write them: the requests as a log4j
CSV in Berlin wall time with a comma before the milliseconds, the cache calls as Redis instrumentation JSON with
an India offset, nanoseconds and its own status words, the session events as an auth service's dotted names on a
12-hour New York clock. Read with `ts_format`, `values` and field maps, every exposure, near miss and summary
count must be the one of the original logs: a dialect that shifts a time or drops a status moves a crossed reply.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from click.testing import CliRunner

from pipeline.cli import cli

DIALECTS = """
[sources.requests]
match = ["access-*"]
fields = { ts = "time", request_id = "rid", session_id = "sid", user_id = "uid" }
timezone = "Europe/Berlin"
ts_format = "%Y-%m-%d %H:%M:%S,%g"

[sources.cache]
match = ["redis-*"]
ts_format = "%d/%b/%Y:%H:%M:%S.%n %z"

[sources.cache.fields]
ts = "@t"
op = 'attributes."db.operation"'
key = 'attributes."db.redis.key"'
host = 'attributes."net.host.name"'
request_id = "rid"
status = "outcome"
conn_id = "conn"
value_sha256 = "sha"
value_owner = "owner"

[sources.cache.values]
status = { SUCCESS = "ok", CANCELED_AFTER_WRITE = "cancelled", TIMEOUT_AFTER_WRITE = "timeout", ERR = "error" }

[sources.sessions]
match = ["auth-*"]
fields = { ts = "when", session_id = "sid", user_id = "uid", event = "type" }
timezone = "America/New_York"
ts_format = "%m/%d/%Y %I:%M:%S.%g %p"

[sources.sessions.values]
event = { "auth.login" = "login", "session.refresh" = "refresh", "auth.logout" = "logout", "token.expired" = "expire" }
"""

# Each log in its dialect, from the simulated one (DuckDB reads {src}, writes {dest}).
REWRITES = {
    "requests": (
        "access-log4j.csv",
        "SELECT strftime(timezone('Europe/Berlin', ts), '%Y-%m-%d %H:%M:%S,%g') AS time, request_id AS rid, "
        "session_id AS sid, user_id AS uid, route, status, host FROM read_json('{src}')",
        "(FORMAT csv, HEADER)",
    ),
    "cache": (
        "redis-spans.jsonl",
        "SELECT strftime(timezone('Asia/Kolkata', ts), '%d/%b/%Y:%H:%M:%S.%f') || '000 +0530' AS \"@t\", "
        "request_id AS rid, {{'db.operation': op, 'db.redis.key': key, 'net.host.name': host}} AS attributes, "
        "CASE status WHEN 'ok' THEN 'SUCCESS' WHEN 'cancelled' THEN 'CANCELED_AFTER_WRITE' "
        "WHEN 'timeout' THEN 'TIMEOUT_AFTER_WRITE' ELSE 'ERR' END AS outcome, "
        "conn_id AS conn, value_sha256 AS sha, value_owner AS owner FROM read_json('{src}')",
        "(FORMAT json)",
    ),
    "sessions": (
        "auth-events.jsonl",
        "SELECT strftime(timezone('America/New_York', ts), '%m/%d/%Y %I:%M:%S.%g %p') AS \"when\", "
        "session_id AS sid, user_id AS uid, CASE event WHEN 'login' THEN 'auth.login' WHEN 'refresh' "
        "THEN 'session.refresh' WHEN 'logout' THEN 'auth.logout' ELSE 'token.expired' END AS type "
        "FROM read_json('{src}')",
        "(FORMAT json)",
    ),
}


def run(logs: Path, out: Path, config: Path) -> dict:
    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "summary.json").read_text())


def answers(out: Path) -> tuple[list[tuple], list[tuple]]:
    """Every exposure and near miss, without where its line was (the files differ)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    exposures = con.execute(
        f"SELECT * EXCLUDE (source_file, source_line) FROM '{out}/exposures.parquet' ORDER BY ALL"
    ).fetchall()
    near_misses = con.execute(
        f"SELECT * EXCLUDE (source_file, source_line) FROM '{out}/near_misses.parquet' ORDER BY ALL"
    ).fetchall()
    return exposures, near_misses


def test_an_incident_in_real_log_dialects_gives_the_answer_of_its_spec_form(tmp_path):
    sim = tmp_path / "sim"
    made = CliRunner().invoke(
        cli, ["simulate", "--out", str(sim), "--requests", "4000", "--seed", "5", "--cancel-rate", "0.05"]
    )
    assert made.exit_code == 0, made.output
    dialects = tmp_path / "dialects"
    dialects.mkdir()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for kind, (name, select, options) in REWRITES.items():
        query = select.format(src=sim / f"{kind}.jsonl")
        con.execute(f"COPY ({query}) TO '{dialects / name}' {options}")
    config = sim / "dialects.toml"  # beside incident.toml: its [tables] paths are relative to it
    config.write_text((sim / "incident.toml").read_text() + DIALECTS)

    spec_form = run(sim, tmp_path / "spec-out", sim / "incident.toml")
    in_dialects = run(dialects, tmp_path / "dialect-out", config)

    manifest = json.loads((tmp_path / "dialect-out" / "manifest.json").read_text())
    assert {entry["kind"]: entry["rejected"] for entry in manifest["files"]} == {
        "requests": 0, "cache": 0, "sessions": 0,
    }
    exposures, near_misses = answers(tmp_path / "dialect-out")
    assert exposures and near_misses  # the incident crossed replies, so the comparison means something
    assert (exposures, near_misses) == answers(tmp_path / "spec-out")
    for count in ("exposures", "affected_owners", "viewers", "near_misses", "crossed_replies"):
        assert in_dialects[count] == spec_form[count], count
