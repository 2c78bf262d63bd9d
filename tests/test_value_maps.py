"""sources.<kind>.values: the words real logs write for SPEC's enumerated fields (Redis instrumentation's
`SUCCESS`/`CANCELED_AFTER_WRITE`, an auth service's `auth.login`) read as SPEC's words (`ok`, `cancelled`, `login`).

Every test goes through the real CLI on real (gzip) files and reads the lake, the rejects and the manifest back.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.cli import cli

SECRET = "user-4711@example.com"  # a value from inside a log: it must never reach the console
KEYS = "[[keys]]\npattern = '^user:(?P<owner>[^:]+):titles$'\ncategory = \"conversation_titles\"\n"
# Redis instrumentation (OpenTelemetry attribute names) and its status words
REDIS_FIELDS = (
    '[sources.cache]\nfields = { ts = "time", op = \'"db.operation"\', key = \'"db.redis.key"\', '
    'host = \'"net.host.name"\', conn_id = "conn" }\n'
)
REDIS_WORDS = '[sources.cache.values]\nstatus = { SUCCESS = "ok", HIT = "ok", CANCELED_AFTER_WRITE = "cancelled" }\n'
AUTH_WORDS = (
    '[sources.sessions.values]\nevent = { "auth.login" = "login", "session.refresh" = "refresh", '
    '"auth.logout" = "logout", "token.expired" = "expire" }\n'
)


def write(path: Path, lines: list[str]) -> Path:
    """The lines, one a line; gzip when the name ends in .gz."""
    raw = "".join(line + "\n" for line in lines).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def whosaw(verb: str, inputs: Path, out: Path, config: str) -> object:
    """``whosaw <verb>`` with ``config`` as the TOML file's text; exit 0, and every file's counts add up."""
    path = out.parent / f"{out.name}.toml"
    path.write_text(config)
    result = CliRunner().invoke(cli, [verb, str(inputs), "--out", str(out), "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    for entry in json.loads((out / "manifest.json").read_text())["files"]:
        assert entry["lines"] == entry["kept"] + entry["duplicates"] + entry["rejected"], entry
    return result


def lake(out: Path, kind: str, columns: str) -> list[tuple]:
    return duckdb.sql(
        f"SELECT {columns} FROM read_parquet('{out}/parquet/{kind}/**/*.parquet', hive_partitioning = false) "
        "ORDER BY ALL"
    ).fetchall()


def rejects(out: Path, kind: str) -> list[tuple[str, int, str, str]]:
    path = out / "rejects" / f"{kind}.parquet"
    if not path.exists():
        return []
    rows = duckdb.sql(f"SELECT source_file, source_line, reason, raw FROM '{path}' ORDER BY ALL").fetchall()
    return [(Path(name).name, line, reason, raw) for name, line, reason, raw in rows]


def redis(rid: str, second: int, key: str, status: str, conn: str = "7") -> str:
    """A line of a Redis client's OpenTelemetry instrumentation."""
    return json.dumps({
        "time": f"2023-03-20T01:00:{second:02d}Z", "request_id": rid, "db.system": "redis", "db.operation": "GET",
        "db.redis.key": key, "status": status, "net.host.name": "web-1", "conn": conn,
    })


def request(rid: str, second: int, user: str) -> str:
    return json.dumps({
        "ts": f"2023-03-20T01:00:{second:02d}.5Z", "request_id": rid, "session_id": f"s-{user}", "user_id": user,
        "route": "GET /titles", "status": 200, "email": SECRET,
    })


def session(sid: str, second: int, user: str, event: str) -> str:
    return json.dumps({"ts": f"2023-03-20T01:00:{second:02d}Z", "session_id": sid, "user_id": user, "event": event})


def test_a_redis_log_with_its_own_words_shows_the_crossed_reply(tmp_path):
    """alice's GET is cancelled after it was written (CANCELED_AFTER_WRITE), so bob's next GET on the connection
    (SUCCESS) reads her titles. Without the map every cache line was bad_status: no exposure, the incident unseen."""
    write(
        tmp_path / "logs" / "cache.jsonl.gz",
        [
            redis("ra", 1, "user:alice:titles", "CANCELED_AFTER_WRITE"),
            redis("rb", 2, "user:bob:titles", "SUCCESS"),
            redis("rc", 3, "user:carol:titles", "HIT", conn="8"),
        ],
    )
    write(
        tmp_path / "logs" / "requests.jsonl.gz",
        [request("ra", 1, "alice"), request("rb", 2, "bob"), request("rc", 3, "carol")],
    )
    out = tmp_path / "out"
    whosaw("run", tmp_path / "logs", out, REDIS_FIELDS + REDIS_WORDS + KEYS)
    assert lake(out, "cache", "request_id, status") == [("ra", "cancelled"), ("rb", "ok"), ("rc", "ok")]
    exposures = duckdb.sql(
        f"SELECT request_id, viewer_id, owner_id, key, value_key, evidence FROM '{out}/exposures.parquet'"
    ).fetchall()
    assert exposures == [("rb", "bob", "alice", "user:bob:titles", "user:alice:titles", "connection")]

    plain = tmp_path / "plain"
    result = whosaw("run", tmp_path / "logs", plain, REDIS_FIELDS + KEYS)
    assert "6 lines = 3 kept + 0 duplicates + 3 rejected" in result.stdout
    assert [reason for *_, reason, _ in rejects(plain, "cache")] == ["bad_status"] * 3
    assert duckdb.sql(f"SELECT count(*) FROM '{plain}/exposures.parquet'").fetchall() == [(0,)]


@pytest.mark.parametrize("fmt", ["jsonl.gz", "csv.gz", "parquet"])
def test_dotted_event_names_are_read_as_spec_events_in_every_format(tmp_path, fmt):
    """An auth service's events (auth.login, session.refresh, token.expired) in JSON, CSV and Parquet: the three
    readers feed the same sessions.sql, so the map reads them all; SPEC's own words still read beside them."""
    events = [("s1", 1, "alice", "auth.login"), ("s1", 2, "alice", "session.refresh"), ("s1", 3, "alice", "logout"),
              ("s2", 4, "bob", "auth.login"), ("s2", 5, "bob", "token.expired"), ("s3", 6, "carol", "auth.logout")]
    path = tmp_path / "logs" / f"sessions.{fmt}"
    path.parent.mkdir(parents=True)
    if fmt == "parquet":
        columns = ("session_id", "ts", "user_id", "event")
        pq.write_table(pa.table({c: [str(e[i]) if i != 1 else f"2023-03-20T01:00:0{e[1]}Z" for e in events]
                                 for i, c in enumerate(columns)}), path)
    elif fmt == "csv.gz":
        write(path, ["ts,session_id,user_id,event"]
              + [f"2023-03-20T01:00:0{s}Z, {sid}, {user}, {event}" for sid, s, user, event in events])
    else:
        write(path, [session(sid, s, user, event) for sid, s, user, event in events])
    out = tmp_path / "out"
    result = whosaw("ingest", tmp_path / "logs", out, AUTH_WORDS)
    assert result.stdout.startswith("ingested 1 file: 6 lines = 6 kept + 0 duplicates + 0 rejected")
    assert [row[1:] for row in lake(out, "sessions", "source_line, session_id, user_id, event")] == [
        ("s1", "alice", "login"), ("s1", "alice", "refresh"), ("s1", "alice", "logout"),
        ("s2", "bob", "login"), ("s2", "bob", "expire"), ("s3", "carol", "logout"),
    ]


def test_a_word_the_map_does_not_name_is_still_rejected_with_its_line(tmp_path):
    """The map adds words, it takes none away: ok, Go's canceled and an empty status read as before, and a word
    neither SPEC nor the map knows is bad_status (bad_event) at its line, the raw line kept as logged."""
    write(
        tmp_path / "logs" / "cache.jsonl.gz",
        [
            redis("r1", 1, "user:a:titles", "SUCCESS"),
            redis("r2", 2, "user:b:titles", "ok"),
            redis("r3", 3, "user:c:titles", "canceled"),
            redis("r4", 4, "user:d:titles", "MOVED"),
            redis("r5", 5, "user:e:titles", ""),
            redis("r6", 6, "user:f:titles", "CANCELED_AFTER_WRITE"),
        ],
    )
    write(
        tmp_path / "logs" / "sessions.jsonl.gz",
        [session("s1", 1, "alice", "auth.login"), session("s1", 2, "alice", "auth.signin"),
         session("s1", 3, "alice", "expire")],
    )
    out = tmp_path / "out"
    result = whosaw("ingest", tmp_path / "logs", out, REDIS_FIELDS + REDIS_WORDS + AUTH_WORDS)
    assert result.stdout.startswith("ingested 2 files: 9 lines = 7 kept + 0 duplicates + 2 rejected")
    assert lake(out, "cache", "request_id, status") == [
        ("r1", "ok"), ("r2", "ok"), ("r3", "cancelled"), ("r5", "ok"), ("r6", "cancelled"),
    ]
    assert rejects(out, "cache") == [("cache.jsonl.gz", 4, "bad_status", redis("r4", 4, "user:d:titles", "MOVED"))]
    assert lake(out, "sessions", "event") == [("expire",), ("login",)]
    assert rejects(out, "sessions") == [
        ("sessions.jsonl.gz", 2, "bad_event", session("s1", 2, "alice", "auth.signin")),
    ]
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert sorted((Path(f["path"]).name, f["lines"], f["kept"], f["rejected"]) for f in files) == [
        ("cache.jsonl.gz", 6, 5, 1), ("sessions.jsonl.gz", 3, 2, 1),
    ]


def test_keys_match_the_logged_word_in_any_case(tmp_path):
    """A key matches as SPEC's words do: in any case, JSON strings as written, CSV fields without their padding."""
    config = (
        '[sources.cache.values]\nstatus = { Success = "OK", success = "ok", "Canceled_After_Write" = "Cancelled" }\n'
        '[sources.sessions.values]\nevent = { "Auth.Login" = "login" }\n'
    )
    write(
        tmp_path / "logs" / "cache.jsonl.gz",
        [
            json.dumps({"ts": "2023-03-20T01:00:01Z", "op": "get", "key": "k1", "status": "SUCCESS"}),
            json.dumps({"ts": "2023-03-20T01:00:02Z", "op": "get", "key": "k2", "status": "sUcCeSs"}),
            json.dumps({"ts": "2023-03-20T01:00:03Z", "op": "get", "key": "k3", "status": "canceled_after_write"}),
            json.dumps({"ts": "2023-03-20T01:00:04Z", "op": "get", "key": "k4", "status": " SUCCESS"}),
        ],
    )
    write(tmp_path / "logs" / "cache-b.csv", ["ts,op,key,status", "2023-03-20T01:00:05Z,GET,k5,  SUCCESS "])
    write(tmp_path / "logs" / "sessions.jsonl", [session("s1", 1, "alice", "AUTH.LOGIN")])
    out = tmp_path / "out"
    whosaw("ingest", tmp_path / "logs", out, config)
    assert lake(out, "cache", "key, status") == [("k1", "ok"), ("k2", "ok"), ("k3", "cancelled"), ("k5", "ok")]
    assert [(name, line, reason) for name, line, reason, _ in rejects(out, "cache")] == [
        ("cache.jsonl.gz", 4, "bad_status"),
    ]
    assert lake(out, "sessions", "event") == [("login",)]


def test_the_map_is_recorded_per_run_and_a_changed_one_is_noted(tmp_path):
    """The manifest records each run's [sources] with its map: a later run reading new files with another map
    says the lake holds files read two ways, and one given the same files says the edit did not reach them."""
    write(tmp_path / "first" / "cache.jsonl.gz", [redis("r1", 1, "user:a:titles", "SUCCESS")])
    write(tmp_path / "second" / "cache-2.jsonl.gz", [redis("r2", 2, "user:b:titles", "HIT")])
    out = tmp_path / "out"
    whosaw("ingest", tmp_path / "first", out, REDIS_FIELDS + REDIS_WORDS)
    same = whosaw("ingest", tmp_path / "first", out, REDIS_FIELDS + REDIS_WORDS)
    assert "another [sources] section" not in same.stdout

    edited = REDIS_WORDS.replace('HIT = "ok"', 'HIT = "ok", MISS = "ok"')
    again = whosaw("ingest", tmp_path / "first", out, REDIS_FIELDS + edited)
    assert "note: 1 already-ingested file was read with another [sources] section and not read again" in again.stdout
    second = whosaw("ingest", tmp_path / "second", out, REDIS_FIELDS + edited)
    assert "note: these files were read with another [sources] section" in second.stdout
    runs = json.loads((out / "manifest.json").read_text())["ingest_runs"]
    assert [run["config"]["settings"]["sources"]["cache"]["values"]["status"] for run in runs] == [
        {"SUCCESS": "ok", "HIT": "ok", "CANCELED_AFTER_WRITE": "cancelled"},
        {"SUCCESS": "ok", "HIT": "ok", "MISS": "ok", "CANCELED_AFTER_WRITE": "cancelled"},
    ]
    assert lake(out, "cache", "request_id, status") == [("r1", "ok"), ("r2", "ok")]


@pytest.mark.parametrize(
    ("table", "words", "message"),
    [
        ("sources.cache.values", 'op = { FETCH = "GET" }',
         "sources.cache.values: unknown field 'op' (known: status; an op needs no map: [cache] read_ops"),
        ("sources.requests.values", 'status = { OK = "200" }',
         "sources.requests.values: unknown field 'status' (known: none; a request's status is a number)"),
        ("sources.sessions.values", 'user_id = { root = "admin" }', "unknown field 'user_id' (known: event)"),
        ("sources.cache.values", 'status = { SUCCESS = "success" }',
         "sources.cache.values.status.SUCCESS: expected one of ok, cancelled, timeout, error"),
        ("sources.sessions.values", 'event = { "auth.login" = "signin" }',
         'sources.sessions.values.event."auth.login": expected one of login, refresh, logout, expire'),
        ("sources.cache.values", "status = { SUCCESS = 1 }",
         "sources.cache.values.status.SUCCESS: expected a non-empty string, got an integer"),
        ("sources.cache.values", 'status = { SUCCESS = "ok", success = "error" }',
         "sources.cache.values.status: 'SUCCESS' and 'success' are the same word in any case but map to 'ok' and "
         "'error'"),
        ("sources.cache.values", 'status = { " SUCCESS" = "ok" }',
         'sources.cache.values.status." SUCCESS": a logged word must be non-empty without spaces around it'),
        ("sources.cache.values", 'status = "ok"', "sources.cache.values.status: expected a table, got a string"),
        ("sources.cache", "values = 5", "sources.cache.values: expected a table, got an integer"),
    ],
)
def test_a_values_map_that_cannot_work_is_a_one_line_config_error(tmp_path, table, words, message):
    """Else a typo maps nothing (every line still rejected) or a target the analysis does not know is stored."""
    write(tmp_path / "logs" / "cache.jsonl", [redis("r1", 1, SECRET, "SUCCESS")])
    config = tmp_path / "incident.toml"
    config.write_text(f"[{table}]\n{words}\n")
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path / "logs"), "--out", str(tmp_path / "out"),
                                      "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and SECRET not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("whosaw: error: config: "), lines
    assert message in lines[0]
    assert not (tmp_path / "out").exists()
