"""The config and the window: what users write, and the one-line errors they get when it is wrong."""

from datetime import UTC, datetime

import pytest

from pipeline.config import config_from_dict, load_config, parse_window, resolve_window
from pipeline.errors import WhosawError


def test_window_interval_is_utc_and_half_open():
    window = parse_window("2023-03-20T01:00-07:00/2023-03-20T10:00Z")
    assert window.start == datetime(2023, 3, 20, 8, 0, tzinfo=UTC)
    assert window.end == datetime(2023, 3, 20, 10, 0, tzinfo=UTC)
    assert window.iso() == "2023-03-20T08:00:00Z/2023-03-20T10:00:00Z"


@pytest.mark.parametrize("text", ["yesterday", "2023-03-20T10:00Z/2023-03-20T01:00Z", "2023-03-20/x", "a/b/c"])
def test_bad_window_is_one_line_error(text):
    with pytest.raises(WhosawError) as err:
        parse_window(text)
    assert "\n" not in str(err.value)


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


@pytest.mark.parametrize("raw, words", [
    ({"sources": {"proxy": {}}}, "unknown source kind"),
    ({"sources": {"requests": {"fields": {"colour": "x"}}}}, "unknown field"),
    ({"sources": {"requests": {"timezone": "Mars/Olympus"}}}, "unknown time zone"),
    ({"keys": [{"pattern": "(unclosed"}]}, "invalid pattern"),
    ({"keys": [{"pattern": "x", "severity": "apocalyptic"}]}, "severity"),
    ({"window": {"start": "2023-03-20T01:00Z"}}, "both start and end"),
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
