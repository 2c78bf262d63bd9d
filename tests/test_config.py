"""The config and the window: what users write, and the one-line errors they get when it is wrong."""

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import config_from_dict, load_config, parse_window, resolve_window
from pipeline.errors import WhosawError


def test_window_interval_is_utc_and_half_open():
    window = parse_window("2023-03-20T01:00-07:00/2023-03-20T10:00Z")
    assert window.start == datetime(2023, 3, 20, 8, 0, tzinfo=UTC)
    assert window.end == datetime(2023, 3, 20, 10, 0, tzinfo=UTC)
    assert window.iso() == "2023-03-20T08:00:00Z/2023-03-20T10:00:00Z"


@pytest.mark.parametrize(("text", "says"), [
    ("yesterday", "window: expected START/END (ISO-8601), 'auto' or 'all'"),
    ("2023-03-20T10:00Z/2023-03-20T01:00Z", "window: the end must come after the start"),
    ("2023-03-20/x", "window end: 'x' is not an ISO-8601 time"),
    ("a/b/c", "window: expected START/END (ISO-8601), 'auto' or 'all'"),
])
def test_bad_window_is_one_line_error(text, says):
    with pytest.raises(WhosawError) as err:
        parse_window(text)
    assert str(err.value) == says


@pytest.mark.parametrize(("text", "start", "end"), [
    ("2023-03-20T01:00Z/PT9H", (2023, 3, 20, 1), (2023, 3, 20, 10)),
    ("PT9H/2023-03-20T10:00Z", (2023, 3, 20, 1), (2023, 3, 20, 10)),
    ("2023-03-20T01:00-07:00/p1dt2h30m", (2023, 3, 20, 8), (2023, 3, 21, 10, 30)),
    ("2023-03-20T01:00Z/P2W", (2023, 3, 20, 1), (2023, 4, 3, 1)),
    ("2023-03-20T01:00Z/PT1,5S", (2023, 3, 20, 1), (2023, 3, 20, 1, 0, 1, 500000)),
])
def test_a_window_of_a_start_or_end_and_a_duration(text, start, end):
    """ISO-8601's other interval forms: START/DURATION and DURATION/END (a bug window known by its length)."""
    window = parse_window(text)
    assert (window.start, window.end) == (datetime(*start, tzinfo=UTC), datetime(*end, tzinfo=UTC))


@pytest.mark.parametrize(("text", "error"), [
    ("2023-03-20T01:00Z/P1M", "window end: 'P1M' counts years or months, whose length varies: write days (P30D)"),
    ("P1Y/2023-03-20T01:00Z", "window start: 'P1Y' counts years or months, whose length varies: write days (P30D)"),
    # what pandas' Timedelta reads as an hour and as five days and a second
    ("2023-03-20T01:00Z/PT1H30", "window end: 'PT1H30' is not an ISO-8601 duration such as PT9H, P1DT2H or P2W"),
    ("2023-03-20T01:00Z/P1.5D", "window end: 'P1.5D' is not an ISO-8601 duration such as PT9H, P1DT2H or P2W"),
    ("2023-03-20T01:00Z/PT", "window end: 'PT' is not an ISO-8601 duration such as PT9H, P1DT2H or P2W"),
    ("2023-03-20T01:00Z/P0D", "window: the end must come after the start"),
    ("PT1H/PT2H", "window: an interval of two durations has no time: write START/END or START/DURATION"),
    ("2023-03-20T01:00Z/P99999999999999D", "window end: 'P99999999999999D' reaches past the years a time can have"),
    ("P1D/0001-01-01T00:00Z", "window start: the duration reaches past the years a time can have"),
])
def test_a_duration_a_window_cannot_use_is_one_line(text, error):
    with pytest.raises(WhosawError) as err:
        parse_window(text)
    assert str(err.value) == error
    result = CliRunner().invoke(cli, ["analyze", "--out", "nowhere", "--window", text])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [f"whosaw: error: {error}"]


def test_cli_window_wins_over_config(tmp_path):
    cfg = config_from_dict({"window": {"start": "2023-03-20T01:00Z", "end": "2023-03-20T10:00Z"}})
    assert resolve_window(None, cfg).source == "config"
    assert resolve_window("auto", cfg).auto
    assert resolve_window(None, config_from_dict({})).source == "all"


def test_key_rules_keep_group_numbers_for_portable_sql():
    cfg = config_from_dict({"keys": [
        {"pattern": r"^user:(?P<owner>[^:]+):titles$", "category": "conversation_titles", "severity": "low"},
        {"pattern": r"^(conv|chat):(?P<resource>[^:]+)$", "category": "conversation_content", "severity": "high"},
    ]})
    titles, content = cfg.keys
    assert titles.sql_pattern == r"^user:([^:]+):titles$" and titles.owner_group == 1
    assert content.sql_pattern == r"^(conv|chat):([^:]+)$" and content.resource_group == 2
    assert content.owner_group == 0


def test_field_map_paths_constants_and_quoted_names():
    cfg = config_from_dict({"sources": {"requests": {
        "fields": {"ts": "@timestamp", "user_id": "ctx.user.id", "host": {"const": "web-1"},
                   "route": '"http.route"'},
        "timezone": "America/Los_Angeles",
    }}})
    source = cfg.sources["requests"]
    assert source.field_spec("user_id").path == ("ctx", "user", "id")
    assert source.field_spec("host").const == "web-1"
    assert source.field_spec("route").path == ("http.route",)
    assert source.field_spec("status").path == ("status",)
    assert source.timezone == "America/Los_Angeles"


def test_a_path_may_quote_a_part_whose_name_holds_dots():
    """OpenTelemetry nests attributes whose names hold dots: {"attributes": {"db.redis.key": ...}}. Split at every
    dot, `attributes.db.redis.key` cannot reach it; a quoted part is one name."""
    cfg = config_from_dict({"sources": {"cache": {"fields": {
        "key": 'attributes."db.redis.key"', "conn_id": '"a.b"."c.d".e', "host": "net.peer.name",
    }}}})
    source = cfg.sources["cache"]
    assert source.payload is None
    assert config_from_dict({"sources": {"cache": {"payload": 'result."_raw.json"'}}}).sources["cache"].payload == (
        "result", "_raw.json",
    )
    assert source.field_spec("key").path == ("attributes", "db.redis.key")
    assert source.field_spec("conn_id").path == ("a.b", "c.d", "e")
    assert source.field_spec("host").path == ("net", "peer", "name")


@pytest.mark.parametrize("path", ['attributes."db.redis.key', 'a"b', '""', 'a.""', '"a"b'])
def test_a_malformed_quoted_path_is_a_config_error(path):
    with pytest.raises(WhosawError, match="a quoted part of a path is a whole name between dots") as err:
        config_from_dict({"sources": {"cache": {"fields": {"key": path}}}})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("raw, words", [
    ({"sources": {"proxy": {}}}, "unknown source kind"),
    ({"sources": {"requests": {"fields": {"colour": "x"}}}}, "unknown field"),
    ({"sources": {"requests": {"timezone": "Mars/Olympus"}}}, "unknown time zone"),
    ({"keys": [{"pattern": "(unclosed"}]}, "invalid pattern"),
    ({"keys": [{"pattern": "x", "severity": "apocalyptic"}]}, "severity"),
    # a misspelt group would make the rule's data nobody's: its victims would vanish from the lists
    ({"keys": [{"pattern": "^conv:(?P<resourc>[^:]+)$"}]}, "named group 'resourc' is neither 'owner' nor"),
    ({"window": {"start": "2023-03-20T01:00Z"}}, "both start and end"),
    ({"window": {"auto": True, "start": "2023-03-20T01:00Z"}}, "auto = true and a start or end"),
    ({"windows": {}}, "unknown section"),
])
def test_bad_config_is_one_line_error(raw, words):
    with pytest.raises(WhosawError, match=words) as err:
        config_from_dict(raw)
    assert "\n" not in str(err.value)


def test_tables_resolve_relative_to_the_config_file(tmp_path):
    (tmp_path / "users.csv").write_text("user_id,email,name,country,locale\n")
    (tmp_path / "incident.toml").write_text('[tables]\nusers = "users.csv"\n')
    assert load_config(tmp_path / "incident.toml").tables["users"] == (tmp_path / "users.csv").resolve()
    (tmp_path / "broken.toml").write_text('[tables]\nusers = "missing.csv"\n')
    with pytest.raises(WhosawError, match="does not exist"):
        load_config(tmp_path / "broken.toml")
    (tmp_path / "bad.toml").write_text("[window\n")
    with pytest.raises(WhosawError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


# ------------------------------------------------------------------- through the CLI: one line, exit 2, nothing written

SAMPLE = str(Path(__file__).resolve().parents[1] / "sample_logs")


def _run_with_config(tmp_path, toml: str):
    """``whosaw run`` on the sample logs with ``toml`` as the config; the result and the --out folder."""
    config = tmp_path / "incident.toml"
    config.write_text(toml, encoding="utf-8")
    out = tmp_path / "out"
    return CliRunner().invoke(cli, ["run", SAMPLE, "--out", str(out), "--config", str(config)]), out


def _assert_config_error(result, out, words: str) -> None:
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("whosaw: error: config"), lines
    assert words in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("toml, words", [
    ("keys = 5", "keys: expected an array of tables"),
    ("keys = [5]", "keys[0]: expected a table"),
    ('keys = { pattern = "x" }', "keys: expected an array of tables"),
    ("sources = 5", "sources: expected a table"),
    ("window = 5", "window: expected a table"),
    ("tables = 5", "tables: expected a table"),
    ("cache = 5", "cache: expected a table"),
    ("[sources]\nrequests = 5", "sources.requests: expected a table"),
    ("[sources.requests]\nmatch = 5", "sources.requests.match: expected a list of strings"),
    ("[sources.requests]\nmatch = [5]", "sources.requests.match[0]: expected a non-empty string"),
    ('[sources.requests]\nfields = "x"', "sources.requests.fields: expected a table"),
    ("[sources.requests]\ntimezone = 5", "sources.requests.timezone: expected a non-empty string"),
    ("[tables]\nusers = 5", "tables.users: expected a non-empty string"),
    ("[cache]\nread_ops = 5", "cache.read_ops: expected a list of strings"),
    ('[cache]\nread_ops = ["GET", 5]', "cache.read_ops[1]: expected a non-empty string"),
    ("[[keys]]\npattern = 5", "keys[0].pattern: expected a non-empty string"),
    ('[[keys]]\npattern = "x"\ncategory = 5', "keys[0].category: expected a non-empty string"),
    ('[[keys]]\npattern = "x"\nseverity = 5', "keys[0].severity: expected a non-empty string"),
    ("[window]\nstart = 5\nend = 6", "window.start: expected an ISO-8601 time"),
    ('[window]\nauto = "yes"', "window.auto: expected true or false"),
])
def test_config_value_of_the_wrong_type_is_one_line_exit_2(tmp_path, toml, words):
    _assert_config_error(*_run_with_config(tmp_path, toml), words)


@pytest.mark.parametrize("toml, words", [
    ("[window]\nextra = 1", "window: unknown setting 'extra'"),
    ('[[keys]]\npattern = "^x"\nwat = 1', "keys[0]: unknown setting 'wat'"),
    ("[cache]\nread_opps = []", "cache: unknown setting 'read_opps'"),
])
def test_unknown_setting_in_window_keys_or_cache_is_one_line_exit_2(tmp_path, toml, words):
    _assert_config_error(*_run_with_config(tmp_path, toml), words)


@pytest.mark.parametrize("pattern", [
    "^user:(?P<owner>[^:]+)(?=:titles$)",  # lookahead
    "^user:(?P<owner>[^:]+)(?<!x):titles$",  # lookbehind
    "^user:(?P<owner>[^:]+):(?P=owner)$",  # backreference
    r"^user:(?P<owner>[^:]+)\Z",
])
def test_key_pattern_duckdb_cannot_run_fails_at_config_load(tmp_path, pattern):
    """Python's re takes these, RE2 does not: the analysis would crash after the lake was written."""
    result, out = _run_with_config(tmp_path, f"[[keys]]\npattern = '{pattern}'\n")
    _assert_config_error(result, out, "keys[0].pattern: not a pattern DuckDB (RE2) can run")


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "posix/Europe/Berlin", "right/UTC"])
def test_time_zone_python_knows_but_duckdb_does_not_fails_at_config_load(tmp_path, zone):
    """zoneinfo finds these files in the system's tz database; DuckDB (ICU) does not know them: ingest crashed
    with an internal error (exit 1) after the config had been accepted."""
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        pytest.skip(f"this system's tz database has no {zone!r}")
    result, out = _run_with_config(tmp_path, f'[sources.sessions]\ntimezone = "{zone}"\n')
    _assert_config_error(result, out, f"sources.sessions.timezone: unknown time zone {zone!r}")


def test_table_that_is_a_folder_is_not_a_file(tmp_path):
    (tmp_path / "users").mkdir()
    _assert_config_error(*_run_with_config(tmp_path, '[tables]\nusers = "users"\n'), "users is not a file")


def test_config_window_errors_name_the_config(tmp_path):
    result, out = _run_with_config(tmp_path, '[window]\nstart = "soon"\nend = "2023-03-20T10:00Z"\n')
    _assert_config_error(result, out, "window start")


def test_toml_date_times_and_one_glob_still_load():
    cfg = config_from_dict({
        "window": {"start": datetime(2023, 3, 20, 1, tzinfo=UTC), "end": datetime(2023, 3, 20, 10, tzinfo=UTC)},
        "sources": {"requests": {"match": "access-*.ndjson*"}},
        "cache": {"read_ops": ["get"]},
    })
    assert cfg.window.iso() == "2023-03-20T01:00:00Z/2023-03-20T10:00:00Z"
    assert cfg.sources["requests"].match == ("access-*.ndjson*",)
    assert cfg.cache_ops.read == ("GET",)


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"requests": {"match": ["nginx/**/access.log*"]}}, r"sources\.requests\.match\[0\]: a glob is matched "
         "against the file name, not its folder"),
        ({"cache": {"format": "log"}}, r"sources\.cache\.format: expected one of jsonl, ndjson, json, csv"),
        ({"cache": {"format": 1}}, r"sources\.cache\.format: expected a non-empty string, got an integer"),
        ({"cache": {"format": "csv", "payload": {"pattern": "^x (.*)$"}}},
         r"sources\.cache\.payload: a pattern is read from JSON logs only, not csv"),
        ({"cache": {"payload": ""}}, r"sources\.cache\.payload: expected a non-empty string, got an empty string"),
        ({"cache": {"payload": 'result."_raw'}}, r"sources\.cache\.payload: a quoted part of a path is a whole name"),
        ({"cache": {"payload": {"pattern": "^(\\S+) (.*)$"}}},
         r"sources\.cache\.payload\.pattern: it needs exactly one group \(\.\.\.\), around the log record; it has 2"),
        ({"cache": {"payload": {"pattern": "^(\\S+"}}}, r"sources\.cache\.payload\.pattern: invalid pattern"),
        ({"cache": {"payload": {"regex": "(.*)"}}}, r"sources\.cache\.payload: unknown setting 'regex'"),
        ({"cache": {"payload": {"pattern": "^(?=x)(.*)$"}}},
         r"sources\.cache\.payload\.pattern: not a pattern DuckDB \(RE2\) can run"),
    ],
)
def test_source_globs_and_formats_that_cannot_work_are_config_errors(sources, message):
    """A glob with a folder never matched (match sees the file name): the logs were passed over, exit 0."""
    with pytest.raises(WhosawError, match=message):
        config_from_dict({"sources": sources})
