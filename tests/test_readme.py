"""The README's shown output is real: every `$ whosaw ...` in its examples is run as written, and what it prints
must be the lines the README shows under it (all of them, or the first ones when the block ends with `...`)."""

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```$", re.M | re.S)


def shown_sessions(markdown: str) -> list[list[tuple[str, list[str]]]]:
    """Each fenced block that holds `$ whosaw` commands, as [(command, the lines shown under it)]."""
    sessions = []
    for block in FENCE.findall(markdown):
        if not block.startswith("$ whosaw "):
            continue
        steps: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        sessions.append(steps)
    return sessions


SESSIONS = shown_sessions((REPO / "README.md").read_text(encoding="utf-8"))


def test_the_readme_shows_the_quick_start_and_the_messy_incident():
    """The parser finds the examples this file checks (a changed fence would otherwise check nothing)."""
    commands = [command for steps in SESSIONS for command, _ in steps]
    assert commands[0] == "whosaw run sample_logs --config sample_logs/incident.toml --out out"
    assert any(c.startswith("whosaw simulate ") and "--messy" in c for c in commands)
    assert any(c.startswith("whosaw run ") and "--window auto" in c for c in commands)
    assert all(shown for steps in SESSIONS for _, shown in steps[-1:]), "each session shows its last command's output"


@pytest.mark.parametrize("steps", SESSIONS, ids=[steps[-1][0] for steps in SESSIONS])
def test_a_readme_example_prints_what_the_readme_shows(steps, tmp_path, monkeypatch):
    """Run from a fresh folder holding (a link to) `sample_logs/`, as from a checkout; output paths stay relative."""
    (tmp_path / "sample_logs").symlink_to(REPO / "sample_logs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for command, shown in steps:
        result = CliRunner().invoke(cli, shlex.split(command)[1:])
        assert result.exit_code == 0, (command, result.output)
        printed = result.stdout.splitlines()
        if shown and shown[-1] == "...":
            shown = shown[:-1]
            printed = printed[: len(shown)]
        if shown:
            assert printed == shown, command
