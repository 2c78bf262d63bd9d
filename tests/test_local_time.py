"""Wall times where a source's zone changes its clocks (docs/design.md "Wall times where the clocks change").

A log that writes local time without an offset shows the hour before the clocks go back twice (Berlin,
2023-10-29: 02:00-02:59 CEST, then 02:00-02:59 CET). DuckDB reads every such wall time as the later instant, so
the first pass landed an hour late, among the second pass's lines: a connection's calls out of order, and crossed
replies given to the wrong readers. Each such line is now placed by its file's order of lines; what that order
cannot place is rejected as ambiguous_local_ts, and a wall time the zone skips as nonexistent_local_ts.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest
from click.testing import CliRunner

from pipeline.cli import cli

BERLIN = ZoneInfo("Europe/Berlin")
BERLIN_CONFIG = '[sources.{kind}]\ntimezone = "Europe/Berlin"\n'
TURN = datetime(2023, 10, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST becomes 02:00 CET


def wall(instant: datetime) -> str:
    """The instant as Berlin wall time without an offset, as a local-time log writes it."""
    return instant.astimezone(BERLIN).replace(tzinfo=None).isoformat(timespec="milliseconds")


def cache_line(instant: datetime, request_id: str) -> dict:
    return {"ts": wall(instant), "request_id": request_id, "op": "GET", "key": "user:u1:titles", "host": "h1",
            "conn_id": "c1"}


def write_lines(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def ingest(logs: Path, out: Path, config: Path) -> str:
    result = CliRunner().invoke(cli, ["ingest", str(logs), "--out", str(out), "--config", str(config)])
    assert result.exit_code == 0, result.output
    return result.output


def lake_times(out: Path, kind: str, id_column: str) -> dict[str, datetime]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(
        f"SELECT {id_column}, ts FROM read_parquet('{out}/parquet/{kind}/*/*/*.parquet')"
    ).fetchall()
    return {key: ts.astimezone(UTC) for key, ts in rows}


def a_night_of_calls(start: datetime, hours: float, every_s: int = 20) -> list[tuple[datetime, dict]]:
    """A call every few seconds from ``start``: (its instant, its line)."""
    steps = int(hours * 3600 // every_s)
    instants = [start + timedelta(seconds=i * every_s) for i in range(steps)]
    return [(instant, cache_line(instant, f"r{i}")) for i, instant in enumerate(instants)]


@pytest.mark.parametrize("name", ["cache.jsonl", "cache.jsonl.gz", "cache.parquet"])
def test_wall_times_of_the_repeated_hour_are_placed_by_the_order_of_the_file(tmp_path, name):
    calls = a_night_of_calls(datetime(2023, 10, 28, 23, 30, tzinfo=UTC), hours=3)
    # threads log out of order across the turn: the last call of the first pass is written after the first of
    # the second
    turn = next(i for i, (instant, _) in enumerate(calls) if instant >= TURN)
    calls[turn - 1], calls[turn] = calls[turn], calls[turn - 1]
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(tmp_path / "cache.jsonl", [line for _, line in calls])
    if name.endswith(".gz"):
        (logs / name).write_bytes(gzip.compress((tmp_path / "cache.jsonl").read_bytes()))
    elif name.endswith(".parquet"):  # a TIMESTAMP column without a zone: wall time as well
        duckdb.connect().execute(
            f"COPY (SELECT * REPLACE (CAST(ts AS TIMESTAMP) AS ts) FROM read_json('{tmp_path / 'cache.jsonl'}')) "
            f"TO '{logs / name}'"
        )
    else:
        (tmp_path / "cache.jsonl").rename(logs / name)
    config = tmp_path / "berlin.toml"
    config.write_text(BERLIN_CONFIG.format(kind="cache"))

    output = ingest(logs, tmp_path / "out", config)

    assert lake_times(tmp_path / "out", "cache", "request_id") == {line["request_id"]: t for t, line in calls}
    [entry] = json.loads((tmp_path / "out" / "manifest.json").read_text())["files"]
    assert entry["placed_in_repeated_hour"] == 2 * 3600 // 20  # both passes of the hour
    assert (entry["kept"], entry["rejected"]) == (len(calls), 0)
    assert "placed by their file's order of lines" in output


def test_a_file_that_ends_or_starts_inside_the_repeated_hour_is_placed_by_what_it_logged_around_it(tmp_path):
    calls = a_night_of_calls(datetime(2023, 10, 28, 23, 30, tzinfo=UTC), hours=3)
    first_pass_middle = TURN - timedelta(minutes=30)  # 02:30 CEST
    second_pass_middle = TURN + timedelta(minutes=30)  # 02:30 CET
    logs = tmp_path / "logs"
    logs.mkdir()
    # rotated at 02:30 CEST and at 02:30 CET: the first file ends in the first pass, the last starts in the second,
    # the middle one holds the turn
    parts = {
        "cache.jsonl.2": [line for t, line in calls if t < first_pass_middle],
        "cache.jsonl.1": [line for t, line in calls if first_pass_middle <= t < second_pass_middle],
        "cache.jsonl": [line for t, line in calls if t >= second_pass_middle],
    }
    for name, lines in parts.items():
        write_lines(logs / name, lines)
    config = tmp_path / "berlin.toml"
    config.write_text(BERLIN_CONFIG.format(kind="cache"))

    ingest(logs, tmp_path / "out", config)

    assert lake_times(tmp_path / "out", "cache", "request_id") == {line["request_id"]: t for t, line in calls}


def test_what_the_order_of_lines_cannot_place_is_rejected_and_counted(tmp_path):
    sessions = [
        (datetime(2023, 10, 28, 23, 50, tzinfo=UTC), "login"),  # 01:50 CEST
        (TURN - timedelta(minutes=50), "refresh"),  # 02:10 CEST
        (TURN + timedelta(minutes=40), "refresh"),  # 02:40 CET: no step back, so no turn to see
        (TURN + timedelta(hours=1, minutes=10), "logout"),  # 03:10 CET
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "sessions.jsonl", [
        {"ts": wall(t), "session_id": "s1", "user_id": "alice", "event": event} for t, event in sessions
    ])
    config = tmp_path / "berlin.toml"
    config.write_text(BERLIN_CONFIG.format(kind="sessions"))

    output = ingest(logs, tmp_path / "out", config)

    assert "4 lines = 2 kept + 0 duplicates + 2 rejected" in output
    rejects = duckdb.connect().execute(
        f"SELECT source_line, reason, detail FROM read_parquet('{tmp_path}/out/rejects/sessions.parquet') ORDER BY 1"
    ).fetchall()
    assert [(line, reason) for line, reason, _ in rejects] == [(2, "ambiguous_local_ts"), (3, "ambiguous_local_ts")]
    assert "occurs twice" in rejects[0][2]
    assert set(lake_times(tmp_path / "out", "sessions", "event").values()) == {sessions[0][0], sessions[3][0]}


def test_a_wall_time_the_zone_skips_is_rejected_and_an_offset_is_taken_as_written(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "cache.jsonl", [
        cache_line(datetime(2023, 3, 26, 0, 59, tzinfo=UTC), "before-the-gap"),  # 01:59 CET
        {**cache_line(TURN, "skipped"), "ts": "2023-03-26T02:30:00"},  # Berlin goes from 02:00 to 03:00
        cache_line(datetime(2023, 3, 26, 1, 0, tzinfo=UTC), "after-the-gap"),  # 03:00 CEST
        {**cache_line(TURN, "with-offset"), "ts": "2023-10-29T02:30:00+02:00"},  # the first 02:30, written so
    ])
    config = tmp_path / "berlin.toml"
    config.write_text(BERLIN_CONFIG.format(kind="cache"))

    output = ingest(logs, tmp_path / "out", config)

    assert "4 lines = 3 kept + 0 duplicates + 1 rejected" in output
    assert "placed by" not in output  # an offset leaves nothing to place
    [(line, reason)] = duckdb.connect().execute(
        f"SELECT source_line, reason FROM read_parquet('{tmp_path}/out/rejects/cache.parquet')"
    ).fetchall()
    assert (line, reason) == (2, "nonexistent_local_ts")
    assert lake_times(tmp_path / "out", "cache", "request_id") == {
        "before-the-gap": datetime(2023, 3, 26, 0, 59, tzinfo=UTC),
        "after-the-gap": datetime(2023, 3, 26, 1, 0, tzinfo=UTC),
        "with-offset": datetime(2023, 10, 29, 0, 30, tzinfo=UTC),
    }


def test_a_ts_format_without_a_zone_is_placed_as_iso_wall_times_are(tmp_path):
    calls = a_night_of_calls(datetime(2023, 10, 29, 0, 0, tzinfo=UTC), hours=2, every_s=60)
    logs = tmp_path / "logs"
    logs.mkdir()
    rows = ["time,request_id,op,key,host,conn_id"] + [
        f"{datetime.fromisoformat(line['ts']).strftime('%d/%m/%Y %H:%M:%S')},{line['request_id']},GET,k,h1,c1"
        for _, line in calls
    ]
    (logs / "cache.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "berlin.toml"
    config.write_text('[sources.cache]\ntimezone = "Europe/Berlin"\nts_format = "%d/%m/%Y %H:%M:%S"\n'
                      'fields = { ts = "time" }\n')

    ingest(logs, tmp_path / "out", config)

    assert lake_times(tmp_path / "out", "cache", "request_id") == {line["request_id"]: t for t, line in calls}


def test_an_incident_logged_in_berlin_wall_time_across_the_repeated_hour_gives_its_utc_answer(tmp_path):
    sim = tmp_path / "sim"
    made = CliRunner().invoke(cli, [
        "simulate", "--out", str(sim), "--requests", "6000", "--seed", "5", "--cancel-rate", "0.05",
        "--start", "2023-10-28T23:00:00Z", "--hours", "4", "--window", "2023-10-29T00:00:00Z/2023-10-29T02:00:00Z",
    ])
    assert made.exit_code == 0, made.output
    local = tmp_path / "local"
    local.mkdir()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for kind in ("requests", "cache", "sessions"):
        con.execute(
            f"COPY (SELECT * REPLACE (strftime(timezone('Europe/Berlin', ts), '%Y-%m-%dT%H:%M:%S.%f') AS ts) "
            f"FROM read_json('{sim / kind}.jsonl')) TO '{local / kind}.jsonl' (FORMAT json)"
        )
    config = sim / "berlin.toml"  # beside incident.toml: its [tables] paths are relative to it
    config.write_text((sim / "incident.toml").read_text() + "".join(
        BERLIN_CONFIG.format(kind=kind) for kind in ("requests", "cache", "sessions")
    ))

    answers = []
    for logs, out, cfg in ((sim, tmp_path / "utc-out", sim / "incident.toml"), (local, tmp_path / "local-out", config)):
        result = CliRunner().invoke(cli, ["run", str(logs), "--out", str(out), "--config", str(cfg)])
        assert result.exit_code == 0, result.output
        exposures = con.execute(
            f"SELECT * EXCLUDE (source_file, source_line) FROM '{out}/exposures.parquet' ORDER BY ALL"
        ).fetchall()
        answers.append((exposures, json.loads((out / "summary.json").read_text())))
    (utc_exposures, utc_summary), (local_exposures, local_summary) = answers
    assert utc_exposures  # the incident crossed replies inside the repeated hour, so the comparison means something
    assert local_exposures == utc_exposures
    for count in ("exposures", "affected_owners", "viewers", "near_misses", "crossed_replies"):
        assert local_summary[count] == utc_summary[count], count
    # the report's method says which lines' instants were inferred from the order of their file
    assert "repeats when the clocks go back" in (tmp_path / "local-out" / "report.md").read_text()
    assert "repeats when the clocks go back" not in (tmp_path / "utc-out" / "report.md").read_text()


def test_a_file_not_in_time_order_across_the_repeated_hour_places_none_of_its_lines(tmp_path):
    night = datetime(2023, 10, 28, 23, 30, tzinfo=UTC)
    first_host = a_night_of_calls(night, hours=3, every_s=60)
    second_host = [(t, {**line, "request_id": "b" + line["request_id"], "host": "h2"})
                   for t, line in a_night_of_calls(night, hours=3, every_s=60)]
    logs = tmp_path / "logs"
    logs.mkdir()
    # two hosts' logs one after the other: the clock steps back at the turn, then again where the second host starts
    write_lines(logs / "cache.jsonl", [line for _, line in first_host + second_host])
    config = tmp_path / "berlin.toml"
    config.write_text(BERLIN_CONFIG.format(kind="cache"))

    output = ingest(logs, tmp_path / "out", config)

    repeated = 2 * 2 * 60  # both passes of the hour, two hosts, a call a minute
    assert f"{len(first_host) * 2} lines = {len(first_host) * 2 - repeated} kept + 0 duplicates + {repeated} rejected" \
        in output
    kept = lake_times(tmp_path / "out", "cache", "request_id")
    assert kept == {line["request_id"]: t for t, line in first_host + second_host if line["request_id"] in kept}


def test_a_line_far_into_the_second_pass_is_not_taken_for_one_written_late(tmp_path):
    # a sparse log: after the turn it logged 02:20 CET, then 02:59:20 CET. Written late, the 02:59:20 line would be
    # a first-pass line written more than 20 minutes after its time; in order, it is where it stands
    sessions = [
        (datetime(2023, 10, 28, 23, 50, tzinfo=UTC), "login"),  # 01:50 CEST
        (TURN - timedelta(seconds=5), "refresh"),  # 02:59:55 CEST
        (TURN + timedelta(seconds=10), "refresh"),  # 02:00:10 CET: the turn
        (TURN + timedelta(minutes=20), "refresh"),  # 02:20 CET
        (TURN + timedelta(minutes=59, seconds=20), "logout"),  # 02:59:20 CET
        (TURN + timedelta(hours=1, minutes=10), "login"),  # 03:10 CET
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "sessions.jsonl", [
        {"ts": wall(t), "session_id": f"s{i}", "user_id": "alice", "event": event}
        for i, (t, event) in enumerate(sessions)
    ])
    config = tmp_path / "berlin.toml"
    config.write_text(BERLIN_CONFIG.format(kind="sessions"))

    ingest(logs, tmp_path / "out", config)

    assert lake_times(tmp_path / "out", "sessions", "session_id") == {f"s{i}": t for i, (t, _) in enumerate(sessions)}


def test_a_line_written_minutes_late_across_the_turn_is_told_by_the_second_pass_going_on_below_it(tmp_path):
    calls = a_night_of_calls(datetime(2023, 10, 29, 0, 30, tzinfo=UTC), hours=1, every_s=30)
    # the call of 02:59:30 CEST is written two minutes late, among the second pass's calls of 02:01 CET
    late = next(i for i, (instant, _) in enumerate(calls) if instant == TURN - timedelta(seconds=30))
    written = next(i for i, (instant, _) in enumerate(calls) if instant >= TURN + timedelta(minutes=1, seconds=30))
    calls.insert(written, calls.pop(late))
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "cache.jsonl", [line for _, line in calls])
    config = tmp_path / "berlin.toml"
    config.write_text(BERLIN_CONFIG.format(kind="cache"))

    ingest(logs, tmp_path / "out", config)

    assert lake_times(tmp_path / "out", "cache", "request_id") == {line["request_id"]: t for t, line in calls}


@pytest.mark.parametrize("ts_format", [None, "%d.%m.%Y %H:%M:%S"])
def test_a_leap_second_in_the_repeated_or_the_skipped_hour_is_a_wall_time_as_well(tmp_path, ts_format):
    def text(instant: datetime, leap: bool = False) -> str:
        shown = instant.astimezone(BERLIN).replace(tzinfo=None) - timedelta(seconds=1 if leap else 0)
        written = shown.strftime(ts_format) if ts_format else shown.isoformat()
        return written.replace(":59", ":60") if leap else written

    night = [
        (datetime(2023, 10, 28, 23, 50, tzinfo=UTC), False),  # 01:50 CEST
        (TURN - timedelta(minutes=40), True),  # 02:19:60 CEST, the first 02:20
        (TURN - timedelta(minutes=10), False),  # 02:50 CEST
        (TURN + timedelta(minutes=5), False),  # 02:05 CET: the turn
        (TURN + timedelta(minutes=20), True),  # 02:19:60 CET, the second 02:20
        (TURN + timedelta(hours=1, minutes=10), False),  # 03:10 CET
    ]
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "cache.jsonl", [
        {**cache_line(instant, f"r{i}"), "ts": text(instant, leap)} for i, (instant, leap) in enumerate(night)
    ] + [{**cache_line(TURN, "skipped"), "ts": "26.03.2023 02:29:60" if ts_format else "2023-03-26T02:29:60"}])
    config = tmp_path / "berlin.toml"
    config.write_text(BERLIN_CONFIG.format(kind="cache") + (f'ts_format = "{ts_format}"\n' if ts_format else ""))

    output = ingest(logs, tmp_path / "out", config)

    assert "7 lines = 6 kept + 0 duplicates + 1 rejected" in output
    assert lake_times(tmp_path / "out", "cache", "request_id") == {f"r{i}": t for i, (t, _) in enumerate(night)}
    [(line, reason)] = duckdb.connect().execute(
        f"SELECT source_line, reason FROM read_parquet('{tmp_path}/out/rejects/cache.parquet')"
    ).fetchall()
    assert (line, reason) == (7, "nonexistent_local_ts")


def test_a_grown_file_read_again_counts_as_placed_only_the_lines_it_adds(tmp_path):
    calls = a_night_of_calls(datetime(2023, 10, 28, 23, 30, tzinfo=UTC), hours=3, every_s=60)
    logs = tmp_path / "logs"
    logs.mkdir()
    config = tmp_path / "berlin.toml"
    config.write_text(BERLIN_CONFIG.format(kind="cache"))
    write_lines(logs / "cache.jsonl", [line for _, line in calls[:150]])  # up to 02:59 CET
    ingest(logs, tmp_path / "out", config)
    write_lines(logs / "cache.jsonl", [line for _, line in calls])  # grown: 03:00 to 03:29 CET

    output = ingest(logs, tmp_path / "out", config)

    assert "30 kept + 150 duplicates" in output
    assert "placed by their file's order" not in output
    first, grown = json.loads((tmp_path / "out" / "manifest.json").read_text())["files"]
    assert first["placed_in_repeated_hour"] == 120
    assert "placed_in_repeated_hour" not in grown
    assert lake_times(tmp_path / "out", "cache", "request_id") == {line["request_id"]: t for t, line in calls}


def test_a_zone_whose_clocks_change_by_two_hours_is_placed_and_checked_as_well(tmp_path):
    troll = ZoneInfo("Antarctica/Troll")  # +02 in summer, +00 in winter: 03:00 back to 01:00 on 2023-10-29
    calls = a_night_of_calls(datetime(2023, 10, 28, 22, 30, tzinfo=UTC), hours=5, every_s=60)
    logs = tmp_path / "logs"
    logs.mkdir()
    write_lines(logs / "cache.jsonl", [
        {**line, "ts": t.astimezone(troll).replace(tzinfo=None).isoformat()} for t, line in calls
    ] + [{**cache_line(TURN, "skipped"), "ts": "2023-03-26T02:30:00"}])  # 01:00 went on to 03:00
    config = tmp_path / "troll.toml"
    config.write_text('[sources.cache]\ntimezone = "Antarctica/Troll"\n')

    output = ingest(logs, tmp_path / "out", config)

    assert f"{len(calls)} kept + 0 duplicates + 1 rejected" in output
    assert lake_times(tmp_path / "out", "cache", "request_id") == {line["request_id"]: t for t, line in calls}


def test_a_live_log_read_again_keeps_the_instants_its_repeated_hour_was_given(tmp_path):
    """Read first while it ended inside the first pass, the log's 02:10 and 02:20 took the first instants. It then
    went on without a line in the second pass: read again whole, they were ambiguous, and the run was refused
    (their line numbers would have named a kept line and a reject). Lines read before keep their reading."""
    first_pass = [
        datetime(2023, 10, 28, 23, 50, tzinfo=UTC), TURN - timedelta(minutes=50), TURN - timedelta(minutes=40),
    ]
    later = TURN + timedelta(hours=1, minutes=10)  # 03:10 CET
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "cache.jsonl"
    write_lines(log, [cache_line(t, f"r{i}") for i, t in enumerate(first_pass)])
    config = tmp_path / "berlin.toml"
    config.write_text(BERLIN_CONFIG.format(kind="cache"))
    assert "3 lines = 3 kept" in ingest(logs, tmp_path / "out", config)

    write_lines(log, [cache_line(t, f"r{i}") for i, t in enumerate([*first_pass, later])])
    output = ingest(logs, tmp_path / "out", config)

    assert "4 lines = 1 kept + 3 duplicates + 0 rejected" in output
    assert lake_times(tmp_path / "out", "cache", "request_id") == {
        **{f"r{i}": t for i, t in enumerate(first_pass)}, "r3": later,
    }
