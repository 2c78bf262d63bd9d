"""One incident, logged in real systems' dialects, gives the same answer as in SPEC's forms.

A simulated incident's logs are rewritten (by DuckDB) the way real services write them: the requests as a log4j
CSV in Berlin wall time with a comma before the milliseconds, the cache calls as Redis instrumentation JSON with
an India offset, nanoseconds and its own status words, the session events as an auth service's dotted names on a
12-hour New York clock. Read with `ts_format`, `values` and field maps, every exposure, near miss and summary
count must be the one of the original logs: a dialect that shifts a time or drops a status moves a crossed reply.
So must the same logs as exports and collectors hand them over: one JSON array, inside an envelope (Docker,
Splunk, CloudWatch), behind a text prefix (a Kubernetes node).
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import duckdb
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.safecsv import read_safe_csv
from pipeline.schema import KINDS

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


def simulated(tmp_path: Path) -> Path:
    """The simulated incident the tests below write in other forms."""
    sim = tmp_path / "sim"
    made = CliRunner().invoke(
        cli, ["simulate", "--out", str(sim), "--requests", "4000", "--seed", "5", "--cancel-rate", "0.05"]
    )
    assert made.exit_code == 0, made.output
    return sim


def assert_same_answer_at_the_same_lines(
    out: Path, summary: dict, plain_out: Path, plain_summary: dict, header_lines: int = 0,
) -> None:
    """Every exposure and near miss of ``out`` is ``plain_out``'s, at the same line numbers (in other files; but for
    ``header_lines`` before the records in ``out``'s cache log), and so are the summary's counts."""
    con = duckdb.connect()
    for name in ("exposures", "near_misses"):
        query = "SELECT * EXCLUDE (source_file, source_line), source_line - {} FROM '{}/" + name + ".parquet' "
        query += "ORDER BY ALL"
        ours = con.execute(query.format(header_lines, out)).fetchall()
        assert ours and ours == con.execute(query.format(0, plain_out)).fetchall(), name
    for count in ("exposures", "affected_owners", "viewers", "near_misses", "crossed_replies"):
        assert summary[count] == plain_summary[count], count


def test_an_incident_in_real_log_dialects_gives_the_answer_of_its_spec_form(tmp_path):
    sim = simulated(tmp_path)
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


def test_logs_exported_as_json_arrays_or_pretty_objects_give_the_answer_of_their_json_lines(tmp_path):
    """Log exports are often one JSON array, pretty-printed (``gcloud logging read --format=json``) or on one line
    (``jq -s``), or pretty-printed objects one after another (``jq .``), gzipped or not. Their records are read as the
    lines, numbered by their place: every exposure and near miss is the JSON lines' own, at the same line number. An
    item that is no object is rejected at its number and a repeated one is a duplicate (lines = kept + duplicates +
    rejected), and ``source_lines`` shows an exposure's item, checked against the file's SHA-256."""
    from pipeline.explore import source_lines

    sim = simulated(tmp_path)
    records = {
        kind: [json.loads(line) for line in (sim / f"{kind}.jsonl").read_text().splitlines()]
        for kind in ("requests", "cache", "sessions")
    }
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    cache = [*records["cache"], 7, records["cache"][0]]  # no object, then a repeat
    (arrays / "cache.json").write_text(json.dumps(cache, indent=2))
    with gzip.open(arrays / "requests.json.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(record, indent=2) for record in records["requests"]) + "\n")
    (arrays / "sessions.json").write_text(json.dumps(records["sessions"]))
    config = sim / "arrays.toml"  # beside incident.toml: its [tables] paths are relative to it
    config.write_text((sim / "incident.toml").read_text())

    spec_form = run(sim, tmp_path / "lines-out", sim / "incident.toml")
    as_arrays = run(arrays, tmp_path / "arrays-out", config)

    manifest = json.loads((tmp_path / "arrays-out" / "manifest.json").read_text())
    files = {entry["kind"]: entry for entry in manifest["files"]}
    for kind, entry in files.items():
        assert entry["json_records"] == ("documents" if kind == "requests" else "array")
        assert entry["lines"] == entry["kept"] + entry["duplicates"] + entry["rejected"]
        assert entry["kept"] == len(records[kind])
    assert (files["cache"]["lines"], files["cache"]["duplicates"]) == (len(cache), 1)
    assert files["cache"]["reject_reasons"] == {"not_an_object": 1}
    rejects = read_safe_csv(tmp_path / "arrays-out" / "rejects" / "cache.csv")
    assert rejects[["source_line", "reason", "raw"]].values.tolist() == [[str(len(cache) - 1), "not_an_object", "7"]]
    assert_same_answer_at_the_same_lines(tmp_path / "arrays-out", as_arrays, tmp_path / "lines-out", spec_form)

    exposure = duckdb.sql(f"SELECT * FROM '{tmp_path}/arrays-out/exposures.parquet' LIMIT 1").df()
    shown = source_lines(tmp_path / "arrays-out", exposure).set_index("line_kind")
    assert shown["verified"].all()
    line = int(exposure["source_line"].iloc[0])
    assert shown.loc["cache", "source_line"] == line
    assert json.loads(shown.loc["cache", "raw"]) == records["cache"][line - 1]
    assert "\n    \"key\": " in shown.loc["cache", "raw"]  # the item as the file has it, pretty-printed


def test_a_json_array_cut_short_is_read_line_by_line_and_said_to_be_cut(tmp_path):
    """An export cut short (a download broken off, a disk that filled) is no JSON array: its lines are read as JSON
    lines, so all of them are rejected, and the console and the report say that the file opens as an array but
    cannot be read as one, rather than asking whether it is the right kind of log. So for one JSON document too big
    to be one record: its records are in an array inside it."""
    sim = tmp_path / "sim"
    assert CliRunner().invoke(cli, ["simulate", "--out", str(sim), "--requests", "500", "--seed", "5"]).exit_code == 0
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(sim / "requests.jsonl", logs)
    whole = json.dumps([json.loads(line) for line in (sim / "cache.jsonl").read_text().splitlines()], indent=2)
    (logs / "cache.json").write_text(whole[: len(whole) // 2])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(out), "--config", str(sim / "incident.toml")])
    assert result.exit_code == 0, result.output
    entry = next(e for e in json.loads((out / "manifest.json").read_text())["files"] if e["kind"] == "cache")
    assert entry["not_json_records"] == {"layout": "array", "reason": "unexpected end of data"}
    assert entry["rejected"] == entry["lines"] == whole[: len(whole) // 2].count("\n") + 1
    assert (
        f"warning: {logs / 'cache.json'}: {entry['lines']:,} of its {entry['lines']:,} lines rejected "
        f"(invalid_json {entry['lines']:,}): its lines were read one by one: it opens as one JSON array but cannot be "
        "read as such (unexpected end of data): is it cut short? Those lines are missing from the analysis "
        "(rejects/cache.csv)"
    ) in result.output.splitlines()
    for report in ("report.md", "report.html"):
        assert "but cannot be read as such (unexpected end of data): is it cut short?" in (out / report).read_text()

    # one pretty-printed document holding every record in an array, over DuckDB's 16 MB for a record
    records = [json.loads(line) for line in (sim / "cache.jsonl").read_text().splitlines()]
    (logs / "cache.json").write_text(json.dumps({"events": records * (1 + (17 << 20) // len(whole))}, indent=2))
    result = CliRunner().invoke(cli, ["ingest", str(logs), "--out", str(tmp_path / "doc-out")])
    assert result.exit_code == 0, result.output
    assert (
        "its lines were read one by one: it opens as pretty-printed JSON objects but cannot be read as such (a record "
        "over 16 MB): is it one JSON document holding the records in an array (write them one a line: "
        "jq -c '.KEY[]')? Those lines are missing from the analysis (rejects/cache.csv)"
    ) in result.output


ENVELOPES = """
[sources.cache]
payload = "log"

[sources.requests]
payload = "result._raw"

[sources.sessions]
payload = "message"
"""


def test_logs_inside_a_collectors_envelope_give_the_answer_of_the_lines_inside(tmp_path):
    """Logs taken from a collector come wrapped: Docker's json-file log holds the app's line as the text of "log"
    (line end included), a Splunk export as "result._raw", CloudWatch as "message" (or as an object there). With
    the source's ``payload`` the field map reads inside it: every exposure and near miss is the plain lines' own, at
    the same line numbers. A line without that text is missing_payload, a text that is not JSON invalid_json, a JSON
    that is no object not_an_object, each at its line; a Parquet file of such a source is refused before anything
    is read."""
    sim = simulated(tmp_path)
    lines = {kind: (sim / f"{kind}.jsonl").read_text().splitlines(keepends=True) for kind in KINDS}
    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    docker = [json.dumps({"log": line, "stream": "stdout", "time": "2023-03-20T00:00:00Z"}) for line in lines["cache"]]
    not_logs = [{"stream": "stdout"}, {"log": None}, {"log": "GET /health 200\n"}, {"log": "[1, 2]"}]
    (wrapped / "cache.jsonl").write_text("\n".join(docker + [json.dumps(line) for line in not_logs]) + "\n")
    splunk = [json.dumps({"preview": False, "result": {"_raw": line.rstrip("\n"), "host": "h"}}) for line in
              lines["requests"]]
    (wrapped / "requests.jsonl").write_text("\n".join(splunk) + "\n")
    cloudwatch = [json.dumps({"timestamp": 0, "message": json.loads(line)}) for line in lines["sessions"]]
    (wrapped / "sessions.jsonl").write_text("\n".join(cloudwatch) + "\n")
    config = sim / "wrapped.toml"  # beside incident.toml: its [tables] paths are relative to it
    config.write_text((sim / "incident.toml").read_text() + ENVELOPES)

    plain = run(sim, tmp_path / "plain-out", sim / "incident.toml")
    in_envelopes = run(wrapped, tmp_path / "wrapped-out", config)

    files = {e["kind"]: e for e in json.loads((tmp_path / "wrapped-out" / "manifest.json").read_text())["files"]}
    for kind, entry in files.items():
        assert entry["kept"] == len(lines[kind])
        assert entry["lines"] == entry["kept"] + entry["duplicates"] + entry["rejected"]
    rejects = read_safe_csv(tmp_path / "wrapped-out" / "rejects" / "cache.csv")
    first = len(lines["cache"]) + 1
    assert rejects[["source_line", "reason"]].values.tolist() == [
        [str(first), "missing_payload"], [str(first + 1), "missing_payload"], [str(first + 2), "invalid_json"],
        [str(first + 3), "not_an_object"],
    ]
    assert_same_answer_at_the_same_lines(tmp_path / "wrapped-out", in_envelopes, tmp_path / "plain-out", plain)

    parquet = wrapped / "requests.parquet"
    duckdb.sql("SELECT '2023-03-20T00:00:00Z' AS ts, 'r1' AS request_id").write_parquet(str(parquet))
    refused = CliRunner().invoke(cli, ["ingest", str(wrapped), "--out", str(tmp_path / "parquet-out"), "--config",
                                       str(config)])
    assert refused.exit_code == 2
    assert refused.output.splitlines() == [
        f"whosaw: error: input {parquet}: sources.requests.payload is read from JSON and CSV logs "
        "only, and this is parquet: give its JSON export, or ingest it with a config without the payload"
    ]
    assert not (tmp_path / "parquet-out" / "parquet").exists()


PREFIXED = """
[sources.cache]
match = ["*.log"]
format = "jsonl"
payload = { pattern = '^\\S+ (?:stdout|stderr) [FP] (.*)$' }

[sources.requests]
payload = { pattern = '^\\d{4}-\\d\\d-\\d\\dT\\S+ (\\{.*)$' }
"""


def test_logs_behind_a_text_prefix_give_the_answer_of_the_lines_after_it(tmp_path):
    """A Kubernetes node keeps a container's output as `<time> stdout F <line>` (/var/log/containers/*.log), and
    CloudWatch's export to S3 writes `<time> <message>`: ``payload = { pattern = '...' }`` reads the record from
    the pattern's one group. Every exposure and near miss is the plain lines' own, at the same line numbers; a line
    the pattern does not match is missing_payload, a matched text that is not JSON (a panic on stderr)
    invalid_json."""
    sim = simulated(tmp_path)
    lines = {kind: (sim / f"{kind}.jsonl").read_text().splitlines(keepends=True) for kind in KINDS}
    prefixed = tmp_path / "prefixed"
    prefixed.mkdir()
    node = [f"2023-03-20T01:00:00.123456789Z stdout F {line}" for line in lines["cache"]]
    node += ["2023-03-20T01:00:00.2Z stderr F panic: runtime error\n", "a line from elsewhere\n"]
    (prefixed / "cache-web-1.log").write_text("".join(node))
    (prefixed / "requests.jsonl").write_text("".join(f"2023-03-20T01:00:00.000Z {line}" for line in lines["requests"]))
    shutil.copy(sim / "sessions.jsonl", prefixed)
    config = sim / "prefixed.toml"  # beside incident.toml: its [tables] paths are relative to it
    config.write_text((sim / "incident.toml").read_text() + PREFIXED)

    plain = run(sim, tmp_path / "plain-out", sim / "incident.toml")
    behind_prefixes = run(prefixed, tmp_path / "prefixed-out", config)

    files = {e["kind"]: e for e in json.loads((tmp_path / "prefixed-out" / "manifest.json").read_text())["files"]}
    assert {kind: entry["kept"] for kind, entry in files.items()} == {kind: len(lines[kind]) for kind in KINDS}
    rejects = read_safe_csv(tmp_path / "prefixed-out" / "rejects" / "cache.csv")
    first = len(lines["cache"]) + 1
    assert rejects[["source_line", "reason"]].values.tolist() == [
        [str(first), "invalid_json"], [str(first + 1), "missing_payload"],
    ]
    assert_same_answer_at_the_same_lines(tmp_path / "prefixed-out", behind_prefixes, tmp_path / "plain-out", plain)


def test_a_splunk_csv_export_gives_the_answer_of_the_lines_in_its_raw_column(tmp_path):
    """Splunk's CSV export holds each event as logged in its ``_raw`` column: with ``payload = "_raw"`` the field map
    reads inside it, so every exposure and near miss is the plain lines' own (a line further on: the header). A row
    with an empty ``_raw`` is missing_payload, a text that is no JSON invalid_json, a row cut short csv_columns."""
    sim = simulated(tmp_path)
    exported = tmp_path / "exported"
    exported.mkdir()
    with open(exported / "cache.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["_time", "host", "_raw", "sourcetype"])
        for line in (sim / "cache.jsonl").read_text().splitlines():
            writer.writerow(["2023-03-20T01:00:00.000+00:00", "web-1", line, "_json"])
        writer.writerows([["x", "web-1", "", "_json"], ["x", "web-1", "GET /health", "_json"], ["x", "web-1"]])
    for kind in ("requests", "sessions"):
        shutil.copy(sim / f"{kind}.jsonl", exported)
    config = sim / "exported.toml"  # beside incident.toml: its [tables] paths are relative to it
    config.write_text((sim / "incident.toml").read_text() + '\n[sources.cache]\npayload = "_raw"\n')

    plain = run(sim, tmp_path / "plain-out", sim / "incident.toml")
    from_csv = run(exported, tmp_path / "csv-out", config)

    records = len((sim / "cache.jsonl").read_text().splitlines())
    rejects = read_safe_csv(tmp_path / "csv-out" / "rejects" / "cache.csv")
    assert rejects[["source_line", "reason"]].values.tolist() == [
        [str(records + 2), "missing_payload"], [str(records + 3), "invalid_json"], [str(records + 4), "csv_columns"],
    ]
    assert_same_answer_at_the_same_lines(tmp_path / "csv-out", from_csv, tmp_path / "plain-out", plain, 1)
