"""The CLI as a whole: every verb answers --help, usage errors are one line with exit 2, and nothing is
written when the command line is wrong."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import __version__
from pipeline.cli import cli

SAMPLE = str(Path(__file__).resolve().parents[1] / "sample_logs")
VERBS = ["run", "ingest", "analyze", "report", "simulate"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb):
    result = CliRunner().invoke(cli, [verb, "--help"])
    assert result.exit_code == 0
    assert "--out" in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("args", [
    ["run", "sample_logs", "--out", "OUT", "--bogus"],
    ["run", "sample_logs"],
    ["ingest", "--out", "OUT"],
    ["simulate", "--out", "OUT", "--users", "1"],
    ["simulate", "--out", "OUT", "--format", "xml"],
    ["ingest", "sample_logs", "--out", "OUT", "--kind", "proxy"],
    ["frobnicate"],
])
def test_usage_errors_are_one_line_and_exit_2(args, tmp_path):
    out = tmp_path / "out"
    args = [str(out) if arg == "OUT" else SAMPLE if arg == "sample_logs" else arg for arg in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("whosaw: error:")
    assert "Traceback" not in result.output
    assert not out.exists()


def test_bad_window_fails_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", SAMPLE, "--out", str(out), "--window", "2023-03-20/soon"])
    assert result.exit_code == 2
    assert "window" in result.stderr
    assert not out.exists()
