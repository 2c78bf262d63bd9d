"""The report stage: CSV exports, report.html / report.md, charts, the browser check, and the CLI.

Two kinds of input:
- small analysis outputs built here by hand, per the design.md contract, for exact expectations and edge cases
  (hostile names, an owner missing from the users directory, anonymous sessions, no exposures);
- the real pipeline run on ``sample_logs/``, compared with the simulator's ground truth.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

import pipeline
from pipeline.charts import ChartFacts, ChartWorker, _bins, draw_charts
from pipeline.cli import cli
from pipeline.report import fmt_int, fmt_share
from pipeline.safecsv import read_safe_csv
from pipeline.schema import EXPOSURE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_logs"
RISKY_START = ("=", "+", "-", "@", "\t", "\r")

# ------------------------------------------------------------------------------------------------------------
# Hand-built analysis outputs

HOSTILE_CATEGORY = "@<b>risky</b>|cat"
USERS = [
    # user_id, email, name, country, locale
    ("u1", "u1@example.com", '=HYPERLINK("http://evil.example/x","click")', "DE", "de-DE"),
    ("u2", "+u2@example.com", "+1-555-0100", "FR", "fr-FR"),
    ("u3", "u3@example.com", "@SUM(A1:A9)", "US", "en-US"),
    ("u4", "u4@example.com", "-minus", "=BR", "pt-BR"),
    ("u5", "u5@example.com", "\tTabbed\rName", "US", "en-US"),
    ("u6", "u6@example.com", "Zoë O'Brien, Jr.", "IE", "en-IE"),
]
T0 = "2023-03-20T01:00:00Z"
T1 = "2023-03-20T10:00:00Z"
# ts, request_id, session_id, viewer_id, owner_id, category, severity, evidence
EXPOSURES = [
    ("2023-03-20T01:10:00Z", "r1", "sess-b", "u2", "u1", "payment_info", "high", "value_owner"),
    ("2023-03-20T01:20:00Z", "r2", "sess-b", "u2", "u1", "conversation_titles", "low", "digest"),
    ("2023-03-20T02:00:00.250000Z", "r3", "sess-c", "u3", "u1", "payment_info", "high", "connection"),
    ("2023-03-20T02:30:00Z", "r4", "sess-anon-1", None, "u2", "conversation_titles", "low", "key"),
    ("2023-03-20T03:00:00Z", "r5", "sess-anon-1", None, "u404", "payment_info", "high", "digest-ambiguous"),
    ("2023-03-20T03:10:00Z", "r6", "sess-anon-2", None, "u404", "payment_info", "high", "conflict"),
    ("2023-03-20T04:00:00Z", "r7", None, None, "u3", HOSTILE_CATEGORY, "medium", "value_owner"),
    ("2023-03-20T05:00:00Z", "r8", "sess-e", "u6", "u4", "payment_info", "high", "digest"),
]
ACTIVE_USERS = 40
REJECTED_RAW = "rejected-line-secret@example.com"


def _summary(rows: list[tuple]) -> dict:
    owners = {r[4] for r in rows}
    by = lambda i: {k: sum(1 for r in rows if r[i] == k) for k in sorted({r[i] for r in rows})}  # noqa: E731
    return {
        "window": {
            "start": T0,
            "end": T1,
            "method": "config",
            "description": "as given in the incident config",
        },
        "active_users": ACTIVE_USERS,
        "active_sessions": 55,
        "requests": 5000,
        "served_items": 9000,
        "crossed_replies": len(rows) + 3,
        "exposures": len(rows),
        "affected_owners": len(owners),
        "viewers": len({r[3] for r in rows if r[3]}),  # as the analysis counts: signed-in viewers
        "anonymous_viewer_sessions": len({r[2] or f"request:{r[1]}" for r in rows if r[3] is None}),
        "exposures_by_category": by(5),
        "exposures_by_severity": by(6),
        "exposures_by_evidence": by(7),
        "affected_owners_by_category": {
            c: len({r[4] for r in rows if r[5] == c}) for c in {r[5] for r in rows}
        },
        "ambiguous_rows": sum(r[7] == "digest-ambiguous" for r in rows),
        "conflict_rows": sum(r[7] == "conflict" for r in rows),
        "unknown_viewer_reads": 0,
        "near_misses": {
            "total": 3,
            "by_kind": {"failed": 2, "not-data": 1},
            "by_category": {"payment_info": 3},
        },
        "outside_window": {"exposures": 1, "affected_owners": 1, "by_category": {"conversation_titles": 1}},
        "affected_active_users": max(len(owners) - 1, 0),
        "share_of_active_users_affected": max(len(owners) - 1, 0) / ACTIVE_USERS,
        "flagged_not_exposed": {"conflict": 1},
        "generated_at": "2023-03-21T00:00:00Z",
    }


def _write_exposures(con: duckdb.DuckDBPyConnection, rows: list[tuple], path: Path) -> None:
    types = {c: "VARCHAR" for c in EXPOSURE_COLUMNS}
    types.update(ts="TIMESTAMPTZ", source_line="BIGINT", request_status="INTEGER")
    con.execute("CREATE OR REPLACE TABLE e (" + ", ".join(f"{c} {t}" for c, t in types.items()) + ")")
    for i, (ts, request, session, viewer, owner, category, severity, evidence) in enumerate(rows):
        record = dict.fromkeys(EXPOSURE_COLUMNS)
        record.update(
            ts=ts,
            request_id=request,
            session_id=session,
            viewer_id=viewer,
            owner_id=owner,
            key=f"user:{owner}:data",
            category=category,
            severity=severity,
            evidence=evidence,
            source_file="/logs/cache-1.jsonl",
            source_line=10 + i,
            viewer_kind="user" if viewer else "anonymous",
            value_key=f"user:{owner}:data",
            host="web-1",
            conn_id="7",
            route="GET /api",
            request_status=200,
        )
        con.execute(
            f"INSERT INTO e VALUES ({', '.join('?' for _ in EXPOSURE_COLUMNS)})", list(record.values())
        )
    con.execute(f"COPY (SELECT * FROM e ORDER BY ts, request_id, key) TO '{path}' (FORMAT parquet)")


def build_analysis(out: Path, rows: list[tuple] = EXPOSURES, users: list[tuple] | None = USERS) -> Path:
    """An analysed --out folder per docs/design.md, with a config naming a users directory."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    _write_exposures(con, rows, out / "exposures.parquet")
    (out / "rejects").mkdir(exist_ok=True)
    con.execute(f"""
        COPY (SELECT * FROM (VALUES
            ('/logs/requests-1.jsonl', 7, 'bad_ts', 'ts is not a time',
             '{{"ts":"x","user":"{REJECTED_RAW}"}}'))
            AS t(source_file, source_line, reason, detail, raw))
        TO '{out / "rejects" / "requests.parquet"}' (FORMAT parquet)
    """)
    con.execute("CREATE TABLE empty AS SELECT * FROM e LIMIT 0")
    con.execute(f"COPY empty TO '{out / 'exposures_outside_window.parquet'}' (FORMAT parquet)")
    con.execute(f"""
        COPY (
            SELECT b AS bucket_start, 1800 AS bucket_seconds, 100 AS requests, 200 AS reads,
                   CASE WHEN b >= TIMESTAMPTZ '{T0}' AND b < TIMESTAMPTZ '{T1}' THEN 3 ELSE 0 END
                       AS crossed_replies,
                   (SELECT count(*) FROM e WHERE e.ts >= b AND e.ts < b + INTERVAL 30 MINUTE) AS exposures,
                   0 AS near_misses, b >= TIMESTAMPTZ '{T0}' AND b < TIMESTAMPTZ '{T1}' AS in_window,
                   0.0 AS baseline, 1.0 AS threshold
            FROM range(TIMESTAMPTZ '2023-03-20 00:00:00+00', TIMESTAMPTZ '2023-03-20 12:00:00+00',
                       INTERVAL 30 MINUTE) AS t(b)
        ) TO '{out / "timeline.parquet"}' (FORMAT parquet)
    """)
    con.close()
    (out / "summary.json").write_text(json.dumps(_summary(rows), indent=2), encoding="utf-8")
    config = out / "incident.toml"
    if users is not None:
        with open(out / "users.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["user_id", "email", "name", "country", "locale"])
            writer.writerows(users)
        config.write_text('[tables]\nusers = "users.csv"\n', encoding="utf-8")
    else:
        config.write_text("", encoding="utf-8")
    manifest = {
        "tool": "whosaw",
        "version": pipeline.__version__,
        "config": {"path": str(config.resolve()), "settings": {}},
        "files": [
            {
                "path": "/logs/requests-1.jsonl",
                "kind": "requests",
                "bytes": 1200,
                "sha256": "a" * 64,
                "lines": 100,
                "kept": 97,
                "duplicates": 2,
                "rejected": 1,
            },
            {
                "path": "/logs/cache-1.jsonl",
                "kind": "cache",
                "bytes": 3400,
                "sha256": "b" * 64,
                "lines": 300,
                "kept": 300,
                "duplicates": 0,
                "rejected": 0,
            },
        ],
        "skipped": [],
        "outputs": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    """One report on the hand-built input, shared by the tests that only read it."""
    out = build_analysis(tmp_path_factory.mktemp("built") / "out")
    files = pipeline.report(out, progress=False)
    return out, files


def _raw_cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [cell for row in csv.reader(handle) for cell in row]


# ------------------------------------------------------------------------------------------------------------
# CSV exports on hand-built input


def test_report_returns_the_files_it_wrote(built):
    out, files = built
    expected = {
        "affected_users.csv",
        "viewers.csv",
        "exposures.csv",
        "report.html",
        "report.md",
        "notify/payment_info.csv",
        "notify/conversation_titles.csv",
        "notify/b_risky_b_cat.csv",
        "charts/timeline.png",
        "charts/categories_evidence.png",
        "charts/countries.png",
        "charts/pairs.png",
    }
    assert set(files) == expected
    for name, path in files.items():
        assert Path(path) == out / name and Path(path).is_file() and Path(path).stat().st_size > 0


def test_affected_users_rows(built):
    out, _ = built
    frame = read_safe_csv(out / "affected_users.csv").set_index("owner_id")
    assert list(frame.reset_index().columns[:9]) == [
        "owner_id",
        "email",
        "name",
        "country",
        "categories",
        "exposure_count",
        "viewer_count",
        "first_exposed",
        "last_exposed",
    ]
    assert {"locale", "strongest_evidence", "flagged_rows", "max_severity", "in_directory"} <= set(
        frame.columns
    )
    assert sorted(frame.index) == ["u1", "u2", "u3", "u4", "u404"]
    u1 = frame.loc["u1"]
    assert (u1["email"], u1["name"], u1["country"], u1["locale"]) == USERS[0][1:]
    assert u1["categories"] == "conversation_titles;payment_info"
    assert (u1["exposure_count"], u1["viewer_count"]) == ("3", "2")
    assert (u1["first_exposed"], u1["last_exposed"]) == (
        "2023-03-20T01:10:00.000000Z",
        "2023-03-20T02:00:00.250000Z",
    )
    assert (u1["strongest_evidence"], u1["flagged_rows"], u1["max_severity"]) == ("value_owner", "0", "high")
    assert frame.loc["u2", "strongest_evidence"] == "key"
    assert frame.loc["u3", "categories"] == HOSTILE_CATEGORY
    assert frame.loc["u4", "country"] == "=BR"


def test_owner_missing_from_directory_still_listed(built):
    out, _ = built
    frame = read_safe_csv(out / "affected_users.csv").set_index("owner_id")
    missing = frame.loc["u404"]
    assert pd.isna(missing["email"]) and pd.isna(missing["name"]) and pd.isna(missing["country"])
    assert missing["in_directory"] == "false"
    assert (missing["exposure_count"], missing["viewer_count"], missing["flagged_rows"]) == ("2", "2", "2")
    assert missing["strongest_evidence"] == "digest-ambiguous"  # only flagged rows: shown as such
    assert set(frame.drop(index="u404")["in_directory"]) == {"true"}
    page = (out / "report.md").read_text(encoding="utf-8")
    assert "Affected users not in the users directory: 1." in page
    assert json.loads((out / "manifest.json").read_text())["report"]["missing_from_directory"] == 1


def test_a_directory_user_is_one_whole_row(tmp_path):
    """A user listed twice in the directory: the first row is used whole, never one row's email beside another's
    name. An id padded with spaces, tabs or line ends is still that user."""
    users = [
        (" u1\t", "", "First Row", "", "de-DE"),  # the first row of u1, email and country left empty
        ("u1", "second@example.com", "Second Row", "US", "en-US"),
        ("u2\r", "u2@example.com", "Two", "FR", "fr-FR"),
        *[row for row in USERS if row[0] not in ("u1", "u2")],
    ]
    out = build_analysis(tmp_path / "out", users=users)
    pipeline.report(out, progress=False)
    frame = read_safe_csv(out / "affected_users.csv").set_index("owner_id")
    first = frame.loc["u1"]
    assert (first["name"], first["locale"], first["in_directory"]) == ("First Row", "de-DE", "true")
    assert pd.isna(first["email"]) and pd.isna(first["country"])
    assert (frame.loc["u2", "email"], frame.loc["u2", "in_directory"]) == ("u2@example.com", "true")
    # which of u1's two rows to write to is comms' call: the lists and the report say there are two
    assert (first["directory_rows"], frame.loc["u2", "directory_rows"]) == ("2", "1")
    notified = pd.concat([read_safe_csv(path) for path in (out / "notify").glob("*.csv")])
    assert list(notified.loc[notified.owner_id == "u1", "directory_rows"]) in (["2"], ["2", "2"])
    assert ("1 user id appears more than once in the users directory; the first row of each was used. 1 affected "
            "user is among them (directory_rows above 1 in the CSVs): check which of their rows to write to.") in (
        " ".join((out / "report.md").read_text(encoding="utf-8").replace("\\_", "_").split()))
    # comms cannot write to u1: the report says how many such users there are
    assert "Affected users in the users directory without an email address: 1." in (
        (out / "report.md").read_text(encoding="utf-8"))
    assert json.loads((out / "manifest.json").read_text())["report"]["without_email"] == 1


def test_the_directory_header_is_read_as_the_other_tables_are(tmp_path):
    """Column names in any case, padded: as tables.ownership and tables.grants take them (it stopped the report)."""
    out = build_analysis(tmp_path / "out")
    users = out / "users.csv"
    header, rest = users.read_bytes().split(b"\r\n", 1)
    users.write_bytes(b"User_ID, Email,NAME,Country ,locale\r\n" + rest)
    pipeline.report(out, progress=False)
    frame = read_safe_csv(out / "affected_users.csv").set_index("owner_id")
    assert (frame.loc["u1", "email"], frame.loc["u1", "in_directory"]) == (USERS[0][1], "true")
    assert frame["country"].notna().sum() >= 1


def test_every_csv_opens_as_utf8_in_excel(built):
    """Each CSV starts with a UTF-8 byte order mark (Excel reads UTF-8 only then) and reads back exactly."""
    out, files = built
    for name in [n for n in files if n.endswith(".csv")]:
        assert (out / name).read_bytes().startswith(b"\xef\xbb\xbf"), name
    assert read_safe_csv(out / "affected_users.csv").columns[0] == "owner_id"  # the mark is not in a name
    with open(out / "affected_users.csv", encoding="utf-8-sig", newline="") as handle:
        assert next(csv.reader(handle))[0] == "owner_id"


def test_markdown_tables_keep_their_columns(built):
    """A | in a cell (a category name, even inside backticks) is escaped: every row of a table in report.md has
    as many cells as its header."""
    out, _ = built
    lines = (out / "report.md").read_text(encoding="utf-8").splitlines()
    cells = [len(re.split(r"(?<!\\)\|", line)) for line in lines]
    tables = 0
    for i, line in enumerate(lines):
        if re.fullmatch(r"\|(-+:?\|)+", line):  # the rule under a header
            tables += 1
            width, j = cells[i - 1], i + 1
            while j < len(lines) and lines[j].startswith("| "):
                assert cells[j] == width, lines[j]
                j += 1
    assert tables >= 3 and HOSTILE_CATEGORY.replace("|", "\\|") in "\n".join(lines)


def test_hostile_cells_are_neutralised_and_read_back(built):
    out, files = built
    for name in [n for n in files if n.endswith(".csv")]:
        for cell in _raw_cells(out / name):
            assert not cell.startswith(RISKY_START), (name, cell)
    back = read_safe_csv(out / "affected_users.csv").set_index("owner_id")
    for user_id, email, name, country, locale in USERS:
        if user_id in back.index:
            assert tuple(back.loc[user_id, ["email", "name", "country", "locale"]]) == (
                email,
                name,
                country,
                locale,
            )
    notify = read_safe_csv(out / "notify" / "b_risky_b_cat.csv")
    assert notify["category"].tolist() == [HOSTILE_CATEGORY]
    assert notify["name"].tolist() == ["@SUM(A1:A9)"]
    raw = (out / "affected_users.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK(" in raw and "'+1-555-0100" in raw and "'@SUM(A1:A9)" in raw and "'-minus" in raw


def test_viewers_rows_and_anonymous_sessions(built):
    out, _ = built
    frame = read_safe_csv(out / "viewers.csv")
    assert list(frame.columns[:6]) == [
        "viewer_id",
        "owners_seen",
        "categories",
        "exposure_count",
        "first_seen",
        "last_seen",
    ]
    signed = frame[frame["viewer_id"].notna()].set_index("viewer_id")
    assert sorted(signed.index) == ["u2", "u3", "u6"]
    assert tuple(signed.loc["u2", ["owners_seen", "exposure_count", "viewer_kind"]]) == ("1", "2", "user")
    anonymous = frame[frame["viewer_id"].isna()]
    assert set(anonymous["viewer_kind"]) == {"anonymous"}
    assert len(anonymous) == 3  # two sessions, and the requests without any session
    sessions = anonymous["session"].dropna().tolist()
    assert len(sessions) == 2 and all(re.fullmatch(r"sha256:[0-9a-f]{16}", s) for s in sessions)
    first = anonymous[anonymous["owners_seen"] == "2"]
    assert first["exposure_count"].tolist() == ["2"]
    raw = (out / "viewers.csv").read_text(encoding="utf-8")
    assert "sess-anon" not in raw  # session ids can be credentials: hashed, never copied
    summary = json.loads((out / "summary.json").read_text())
    assert (len(signed), len(anonymous)) == (summary["viewers"], summary["anonymous_viewer_sessions"])


def test_notify_lists_per_category(built):
    out, _ = built
    summary = json.loads((out / "summary.json").read_text())
    pay = read_safe_csv(out / "notify" / "payment_info.csv")
    assert pay["owner_id"].tolist() == ["u1", "u4", "u404"]
    assert {
        "owner_id",
        "email",
        "name",
        "country",
        "locale",
        "first_exposed",
        "last_exposed",
        "exposure_count",
        "severity",
    } <= set(pay.columns)
    assert pay.set_index("owner_id").loc["u1", "exposure_count"] == "2"
    for path in (out / "notify").glob("*.csv"):
        frame = read_safe_csv(path)
        (category,) = set(frame["category"])
        assert len(frame) == summary["affected_owners_by_category"][category]


def test_exposures_csv_traceable(built):
    out, _ = built
    frame = read_safe_csv(out / "exposures.csv")
    assert list(frame.columns) == list(EXPOSURE_COLUMNS)
    assert len(frame) == len(EXPOSURES)
    assert frame["source_file"].notna().all() and frame["source_line"].notna().all()


def test_csv_is_utf8_and_iso_utc(built):
    out, files = built
    for name in [n for n in files if n.endswith(".csv")]:
        (out / name).read_bytes().decode("utf-8")
    frame = read_safe_csv(out / "viewers.csv")
    for column in ("first_seen", "last_seen"):
        assert frame[column].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z").all()


# ------------------------------------------------------------------------------------------------------------
# The report on hand-built input


class _SummaryNumbers(HTMLParser):
    """Collect (summary path, shown text) for every element carrying data-summary."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[list[str], str]] = []
        self._open: list[list[str] | None] = []
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        key = dict(attrs).get("data-summary")
        self._open.append(json.loads(key) if key else None)
        if key:
            self._text = []

    def handle_endtag(self, tag):
        key = self._open.pop() if self._open else None
        if key:
            self.found.append((key, "".join(self._text)))

    def handle_data(self, data):
        self._text.append(data)


def _lookup(summary: dict, path: list[str]):
    value = summary
    for part in path:
        value = value[part]
    return value


def _summary_numbers(out: Path) -> list[tuple[list[str], str]]:
    """(summary path, shown text) of every number of report.html that comes from summary.json."""
    parser = _SummaryNumbers()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    return parser.found


def check_numbers_match_summary(out: Path) -> int:
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    found = _summary_numbers(out)
    assert found, "the report shows no numbers from summary.json"
    for path, shown in found:
        value = _lookup(summary, path)
        expected = fmt_share(value) if path[-1].startswith("share") else fmt_int(value)
        assert shown == expected, (path, shown, value)
    keys = {tuple(path) for path, _ in found}
    for must in [
        ("exposures",),
        ("affected_owners",),
        ("active_users",),
        ("share_of_active_users_affected",),
        ("viewers",),
        ("near_misses", "total"),
        ("outside_window", "exposures"),
        ("ambiguous_rows",),
        ("conflict_rows",),
    ]:
        assert must in keys, must
    for category in summary["affected_owners_by_category"]:
        assert ("affected_owners_by_category", category) in keys
    for evidence in summary["exposures_by_evidence"]:
        assert ("exposures_by_evidence", evidence) in keys
    return len(found)


def test_report_numbers_equal_summary(built):
    out, _ = built
    assert check_numbers_match_summary(out) > 20
    md = (out / "report.md").read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text())
    headline = f"**{summary['affected_owners']} users** had their data served to someone else"
    assert headline in md
    assert fmt_share(summary["share_of_active_users_affected"]) in md
    assert "passed: " in md and "FAILED" not in md


def test_report_contents_and_method(built):
    out, _ = built
    md = (out / "report.md").read_text(encoding="utf-8")
    for text in [
        "## Headline",
        "## Charts",
        "## Method",
        "### Sources read",
        "### The window",
        "What the logs cannot show",
        "near misses",
        "requests-1.jsonl",
        "a" * 64,
        "(config)",
        "digest-ambiguous",
        "conflict",
        "charts/timeline.png",
        "sha256:",
        "| requests | `bad_ts` | ts is not a time | 1 |",
    ]:
        assert text in md, text
    for chart in ("timeline", "categories_evidence", "countries", "pairs"):
        assert f"](charts/{chart}.png)" in md
        assert (out / "charts" / f"{chart}.png").read_bytes().startswith(b"\x89PNG")


def test_report_holds_no_personal_data(built):
    out, _ = built
    for name in ("report.html", "report.md"):
        page = (out / name).read_text(encoding="utf-8")
        text = html.unescape(page)
        for _, email, person, _, _ in USERS:
            assert email not in text and person not in text
        for owner in ("u1", "u2", "u404"):
            assert not re.search(rf"\b{owner}\b", text), (name, owner)
        assert "sess-anon" not in text and "sess-b" not in text
        assert REJECTED_RAW not in text  # rejects are counted by reason, never quoted


def test_report_html_escapes_hostile_text(built):
    out, _ = built
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<b>risky</b>" not in page and "&lt;b&gt;risky&lt;/b&gt;" in page
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "\\<b\\>risky\\</b\\>\\|cat" in md  # escaped: no raw HTML, no broken table cell


def test_report_md_carries_no_control_character_from_the_users_directory(tmp_path):
    """report.md is a text file people read in terminals: an ESC sequence in a country (clear the screen, set the
    window title) went into it as it was. Each control character is a space there; the CSVs keep the value."""
    hostile = "\x1b[2J\x1b]0;pwned\x07DE\x7f\x9b"
    users = [(*row[:3], hostile if row[0] == "u1" else row[3], row[4]) for row in USERS]
    out = build_analysis(tmp_path / "out", users=users)
    pipeline.report(out, progress=False)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", md) and "]0;pwned" in md.replace("\\", "")
    assert hostile in set(read_safe_csv(out / "affected_users.csv").country)


def test_report_html_is_self_contained(built):
    out, _ = built
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    refs = re.findall(r"""(?:src|href|url)\s*[=(]\s*["']?([^"')\s>]+)""", page, flags=re.I)
    assert refs and all(ref.startswith("data:image/png;base64,") for ref in refs), refs
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, flags=re.I)
    assert "<script" not in page.lower() and "@import" not in page


CHARTS = ("timeline", "categories_evidence", "countries", "pairs")


def assert_charts_whole(folder: Path) -> None:
    """Each chart is a PNG of a sensible size with white on all four sides: nothing (a label, a title, a legend)
    is cut off at its edge."""
    import numpy as np
    from PIL import Image

    for chart in CHARTS:
        pixels = np.asarray(Image.open(folder / f"{chart}.png").convert("RGB"))
        height, width, _ = pixels.shape
        assert 600 <= width <= 1300 and 100 <= height <= 1000, (chart, width, height)
        for edge in (pixels[:4], pixels[-4:], pixels[:, :4], pixels[:, -4:]):
            assert (edge == 255).all(), chart


def test_charts_are_whole(built):
    out, _ = built
    assert_charts_whole(out / "charts")


def test_charts_with_long_names_and_large_counts(tmp_path):
    """The layout makes room for what the charts hold: long category and country names, all evidence tiers,
    counts in the millions, many countries, no timeline."""
    long = "a_category_with_a_name_much_longer_than_its_label_may_be"
    summary = {
        "window": {"method": "all"},
        "exposures_by_category": {long: 12_345_678, "payment_info": 3, "x": 1},
        "exposures_by_evidence": {
            "value_owner": 9_000_000, "digest": 3_000_000, "connection": 345_678, "key": 1, "digest-ambiguous": 2,
            "conflict": 1,
        },
    }
    facts = ChartFacts(
        severity_by_category={long: "critical", "payment_info": "high"},
        countries=[(f"A country with a very long name {i}", 2_000_000 - i, 1) for i in range(20)],
        owners_seen_hist=[(1, 12_000_000), (3, 40_000), (2_000, 1)],
        viewer_count_hist=[(1, 2), (2, 1)],
    )
    charts = draw_charts(summary, {}, facts)  # no timeline
    assert list(charts) == list(CHARTS)
    for name, png in charts.items():
        (tmp_path / f"{name}.png").write_bytes(png)
    assert_charts_whole(tmp_path)


def test_report_needs_no_pandas(built, tmp_path):
    """The report runs on DuckDB results as plain lists: pandas (half a second to import) is never loaded, and
    matplotlib only once it draws."""
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    code = (
        "import sys\n"
        "import pipeline.report\n"
        "print('matplotlib' in sys.modules)\n"
        "from pipeline import report\n"
        f"report({str(out)!r}, progress=False)\n"
        "print('pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
    assert_charts_whole(out / "charts")


def built_chart_inputs(out: Path) -> tuple[dict, dict, ChartFacts]:
    """What the report hands the charts for the analysis in ``out``: summary, timeline (by column), facts."""
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    con = duckdb.connect()
    result = con.execute(f"SELECT * FROM read_parquet('{out / 'timeline.parquet'}') ORDER BY bucket_start")
    names = [column[0] for column in result.description]
    timeline = dict(zip(names, (list(column) for column in zip(*result.fetchall(), strict=True)), strict=True))
    facts = ChartFacts(
        severity_by_category={"payment_info": "high"},
        countries=[("DE", 3, 1), ("US", 2, 0)],
        owners_seen_hist=[(1, 4), (2, 1)],
        viewer_count_hist=[(1, 3), (3, 1)],
    )
    return summary, timeline, facts


def test_chart_worker_draws_in_a_thread_what_draw_charts_draws(sample_run):
    summary, timeline, facts = built_chart_inputs(sample_run[0])
    assert timeline["bucket_start"], "the sample run has a timeline"
    with ChartWorker() as worker:
        worker.draw_timeline(summary, timeline)
        worker.draw_facts(facts)
        drawn = worker.charts()
    assert tuple(drawn) == CHARTS and drawn == draw_charts(summary, timeline, facts)
    with ChartWorker() as stopped:  # closed before it had anything to draw (the report failed): it ends
        pass
    assert stopped.charts() == {}


def test_no_exposures_still_reports(tmp_path):
    out = build_analysis(tmp_path / "empty", rows=[])
    files = pipeline.report(out, progress=False)
    assert read_safe_csv(out / "affected_users.csv").empty
    assert read_safe_csv(out / "viewers.csv").empty
    assert not any(name.startswith("notify/") for name in files)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "No user's data was served to anyone else" in md
    check_numbers_match_summary(out)
    assert_charts_whole(out / "charts")  # empty charts keep their size


def test_without_users_directory(tmp_path):
    out = build_analysis(tmp_path / "nodir", users=None)
    pipeline.report(out, progress=False)
    frame = read_safe_csv(out / "affected_users.csv")
    assert len(frame) == 5 and frame["email"].isna().all() and frame["in_directory"].isna().all()
    assert "No users directory was configured" in (out / "report.md").read_text(encoding="utf-8")


def test_rerun_replaces_stale_outputs(tmp_path):
    out = build_analysis(tmp_path / "again")
    pipeline.report(out, progress=False)
    build_analysis(out, rows=[r for r in EXPOSURES if r[5] != "conversation_titles"])
    files = pipeline.report(out, progress=False)
    assert not (out / "notify" / "conversation_titles.csv").exists()
    assert "notify/conversation_titles.csv" not in files
    manifest = json.loads((out / "manifest.json").read_text())
    assert "notify/conversation_titles.csv" not in manifest["outputs"]


def test_manifest_records_outputs(built):
    out, files = built
    manifest = json.loads((out / "manifest.json").read_text())
    for name in files:
        assert name in manifest["outputs"], name
    assert manifest["report"]["affected_users"] == 5
    assert len(manifest["report"]["checks"]) == 5 and all(check["ok"] for check in manifest["report"]["checks"])


@pytest.mark.parametrize(("field", "failing"), [
    ("affected_owners", "affected_users.csv has one row per affected owner"),
    ("exposures", "exposure counts in affected_users.csv add up to the exposures"),
    ("viewers", "viewers.csv has one row per signed-in viewer"),
    ("anonymous_viewer_sessions", "viewers.csv has one row per anonymous viewer session"),
    ("affected_owners_by_category", "each notify/<category>.csv has one row per owner affected in that category"),
])
def test_a_list_that_disagrees_with_the_summary_fails_its_check_and_says_so(tmp_path, field, failing):
    """The report checks its lists against summary.json: a count that differs by one fails that check alone, in
    the manifest and as a warning at the head of the report; a consistent analysis passes all five."""
    out = build_analysis(tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    text = _report_text(out)
    checks = json.loads((out / "manifest.json").read_text())["report"]["checks"]
    assert len(checks) == 5 and all(check["ok"] for check in checks)
    assert "Consistency check failed" not in text
    value = summary[field]
    if isinstance(value, dict):
        first = sorted(value)[0]
        value = {**value, first: value[first] + 1}
    else:
        value += 1
    text = _report_text(out, **{field: value})
    checks = json.loads((out / "manifest.json").read_text())["report"]["checks"]
    assert [check["check"] for check in checks if not check["ok"]] == [
        next(check["check"] for check in checks if check["check"].startswith(failing))
    ]
    warning = next(line for line in text.splitlines() if "Consistency check failed: " in line)
    assert failing in warning and warning.endswith("Do not use these lists before the discrepancy is explained.")


# The Key numbers table's rows and the summary.json figure each must show: written out here, not read from the
# report's code, so a number shown beside the wrong label fails.
KEY_NUMBER_ROWS = {
    "users active in the window (signed-in users who made a request in it)": ("active_users",),
    "sessions active in the window (the signed-in sessions of those requests)": ("active_sessions",),
    "requests in the window": ("requests",),
    "cache values served": ("served_items",),
    "... of them with no host or conn_id logged (the connection tier cannot see them)":
        ("served_items_without_connection",),
    "crossed replies (reads that received another call's reply)": ("crossed_replies",),
    "exposures (a value served to someone other than its owner)": ("exposures",),
    "affected users (owners whose data was exposed)": ("affected_owners",),
    "affected users who were active in the window": ("affected_active_users",),
    "signed-in viewers shown someone else's data": ("viewers",),
    "anonymous sessions shown someone else's data": ("anonymous_viewer_sessions",),
    "exposures to a viewer the logs cannot name": ("unknown_viewer_exposures",),
    "exposure rows with ambiguous evidence (digest-ambiguous)": ("ambiguous_rows",),
    "exposure rows with conflicting evidence": ("conflict_rows",),
    "served reads whose request is not in the requests log": ("unknown_viewer_reads",),
    "crossed replies served whose data no evidence names an owner for": ("crossed_served_unknown_owner",),
    "exposures on the digest alone, against a connection showing the read's own reply":
        ("digest_exposures_on_clean_connections",),
    "near misses (stale replies that reached no one as data, read or not)": ("near_misses", "total"),
    "exposures outside the window (not in the lists)": ("outside_window", "exposures"),
}


def test_each_key_number_stands_beside_its_own_label(tmp_path):
    """Every figure of the Key numbers table, each made distinct in summary.json, is shown beside its label."""
    out = build_analysis(tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    changes: dict[str, Any] = {}
    for number, path in enumerate(KEY_NUMBER_ROWS.values()):
        value = 1_000 + 37 * number
        if len(path) == 1:
            changes[path[0]] = value
        else:
            changes[path[0]] = {**summary.get(path[0], {}), **changes.get(path[0], {}), path[1]: value}
    text = _report_text(out, **changes)
    table = text.split("## Key numbers\n", 1)[1].split("\n## ", 1)[0]
    shown = dict(re.findall(r"^\| (.+?) \| ([0-9,.%]+) \|$", table, re.M))
    for number, label in enumerate(KEY_NUMBER_ROWS):
        assert shown.get(label) == f"{1_000 + 37 * number:,}", label


def test_missing_analysis_is_a_clear_error(tmp_path):
    with pytest.raises(pipeline.errors.WhosawError, match="no analysis results"):
        pipeline.report(tmp_path, progress=False)


def test_real_analysis_of_a_small_lake_then_report(tmp_path):
    """The report on what the real analysis writes (not on hand-built outputs): a lake with a crossed reply
    to a signed-in user, one to an anonymous session, and one to a request missing from the requests log."""
    from lakes import T, requests_for, write_lake

    def call(ts, rid, key, status="ok", conn="c1"):
        return {
            "ts": ts,
            "request_id": rid,
            "op": "GET",
            "key": key,
            "status": status,
            "host": "h1",
            "conn_id": conn,
        }

    cache = [
        call(T(0, 1), "ra", "billing:alice", "cancelled"),
        call(T(0, 2), "rb", "user:bob:titles"),  # bob is shown alice's billing details
        call(T(0, 3), "rc", "user:carol:titles", "cancelled", conn="c2"),
        call(T(0, 4), "rd", "user:dave:titles", conn="c2"),  # an anonymous session gets carol's titles
        call(T(0, 5), "re", "billing:erin", "cancelled", conn="c3"),
        call(T(0, 6), "r-lost", "user:frank:titles", conn="c3"),  # its request is not in the requests log
    ]
    requests = requests_for(cache[:5], {"ra": "alice", "rb": "bob", "rc": "carol", "rd": None, "re": "erin"})
    out = write_lake(tmp_path / "out", requests=requests, cache=cache)
    with open(tmp_path / "users.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [
                ("user_id", "email", "name", "country", "locale"),
                ("alice", "alice@example.com", "=Alice", "DE", "de-DE"),
                ("bob", "bob@example.com", "Bob", "FR", "fr-FR"),
                ("erin", "erin@example.com", "@erin", "US", "en-US"),
            ]
        )
    config = tmp_path / "incident.toml"
    config.write_text(
        '[tables]\nusers = "users.csv"\n'
        "[[keys]]\npattern = '^user:(?P<owner>[^:]+):titles$'\ncategory = 'conversation_titles'\n"
        "severity = 'low'\n"
        "[[keys]]\npattern = '^billing:(?P<owner>[^:]+)$'\ncategory = 'payment_info'\nseverity = 'high'\n",
        encoding="utf-8",
    )
    summary = pipeline.analyze(out, config=config, progress=False)
    pipeline.report(out, progress=False)

    affected = read_safe_csv(out / "affected_users.csv").set_index("owner_id")
    assert sorted(affected.index) == ["alice", "carol", "erin"]
    assert tuple(affected.loc["alice", ["name", "categories", "strongest_evidence"]]) == (
        "=Alice",
        "payment_info",
        "connection",
    )
    assert affected.loc["carol", "in_directory"] == "false" and pd.isna(affected.loc["carol", "email"])
    viewers = read_safe_csv(out / "viewers.csv")
    assert sorted(viewers["viewer_kind"]) == ["anonymous", "unknown", "user"]
    assert viewers.loc[viewers["viewer_kind"] == "anonymous", "session"].str.startswith("sha256:").all()
    assert len(read_safe_csv(out / "exposures.csv")) == summary["exposures"] == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(check["ok"] for check in manifest["report"]["checks"]), manifest["report"]["checks"]
    check_numbers_match_summary(out)


# ------------------------------------------------------------------------------------------------------------
# The browser check: headless Chromium, every image loads, nothing is fetched

PROBE = """<script>
window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {alt: img.alt, ok: img.complete && img.naturalWidth > 0, inline: img.src.indexOf('data:') === 0};
  });
  var fetched = performance.getEntriesByType('resource').map(function (e) { return e.name; });
  var out = document.createElement('pre');
  out.id = 'whosaw-probe';
  out.textContent = JSON.stringify({images: images, fetched: fetched, title: document.title});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium not installed: apt-get install -y chromium (Debian) to run the browser check")


def render_in_chromium(page: Path, tmp_path: Path) -> dict:
    """Open a copy of ``page`` in headless Chromium, with a probe added and the page's CSP removed (so that a
    network reference would really be attempted and show up), and return what the probe saw."""
    browser = _chromium()
    text = page.read_text(encoding="utf-8")
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
    assert "</head>" in text
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</head>", PROBE + "\n</head>", 1), encoding="utf-8")
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="whosaw-probe">(.*?)</pre>', result.stdout, flags=re.S)
    assert found, f"chromium exited {result.returncode} without the probe's result: {result.stderr[-500:]}"
    return json.loads(html.unescape(found.group(1)))


def assert_renders(page: Path, tmp_path: Path, charts: int = 4) -> None:
    seen = render_in_chromium(page, tmp_path)
    assert seen["title"].startswith("whosaw")
    assert len(seen["images"]) == charts
    assert all(image["ok"] and image["inline"] for image in seen["images"]), seen["images"]
    assert seen["fetched"] == [], seen["fetched"]


def test_browser_renders_report(built, tmp_path):
    out, _ = built
    assert_renders(out / "report.html", tmp_path)


def test_browser_renders_empty_report(tmp_path):
    out = build_analysis(tmp_path / "empty", rows=[])
    pipeline.report(out, progress=False)
    assert_renders(out / "report.html", tmp_path)


def test_browser_probe_catches_network_and_broken_images(built, tmp_path):
    """The check itself: a page with a remote image and a broken inline image must fail it."""
    out, _ = built
    bad = tmp_path / "bad.html"
    bad.write_text(
        (out / "report.html")
        .read_text(encoding="utf-8")
        .replace(
            "<h1>",
            '<img src="http://example.invalid/x.png" alt="remote"><img src="data:image/png;base64,AAAA" '
            'alt="broken"><h1>',
            1,
        ),
        encoding="utf-8",
    )
    seen = render_in_chromium(bad, tmp_path)
    status = {image["alt"]: image["ok"] for image in seen["images"]}
    assert status["remote"] is False and status["broken"] is False
    assert "http://example.invalid/x.png" in seen["fetched"]


# ------------------------------------------------------------------------------------------------------------
# The CLI


def test_cli_report(built):
    out, files = built
    result = CliRunner().invoke(cli, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in files:
        if "/" not in name:
            assert f"  {name}\n" in result.output, name
    assert "notify/  3 notification lists: b_risky_b_cat, conversation_titles, payment_info" in result.output
    assert "charts/  4 charts" in result.output
    for _, email, person, _, _ in USERS:
        assert email not in result.output and person not in result.output


def test_cli_report_without_analysis_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["report", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no analysis results" in result.stderr
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------------------
# The real pipeline on sample_logs/, against the simulator's ground truth


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> tuple[Path, dict]:
    config = SAMPLE / "incident.toml"
    if not (config.is_file() and (SAMPLE / "ground_truth").is_dir()):
        pytest.skip("sample_logs/ has no incident.toml and ground_truth/ (simulator output)")
    out = tmp_path_factory.mktemp("sample") / "out"
    result = CliRunner().invoke(
        cli, ["run", str(SAMPLE), "--config", str(config), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return out, {"stdout": result.stdout, "stderr": result.stderr}


def _truth(name: str) -> pd.DataFrame:
    return pd.read_csv(SAMPLE / "ground_truth" / name, dtype=str, keep_default_na=False, na_values=[""])


def _split(value) -> list[str]:
    return sorted(str(value).split(";")) if isinstance(value, str) and value else []


def _same_column(ours: pd.DataFrame, truth: pd.DataFrame, column: str, kind=str) -> None:
    mine, theirs = ours[column], truth[column].reindex(ours.index)
    if column == "categories":
        mine, theirs = mine.map(_split), theirs.map(_split)
    else:
        mine, theirs = mine.map(kind), theirs.map(kind)
    differ = mine != theirs
    assert not differ.any(), (column, pd.DataFrame({"ours": mine[differ], "truth": theirs[differ]}).head())


def test_sample_affected_users_match_ground_truth(sample_run):
    out, _ = sample_run
    ours = read_safe_csv(out / "affected_users.csv").set_index("owner_id")
    truth = _truth("affected_owners.csv").set_index("owner_id")
    assert sorted(ours.index) == sorted(truth.index)
    _same_column(ours, truth, "categories")
    for column in ("exposure_count", "viewer_count"):
        if column in truth.columns:
            _same_column(ours, truth, column, int)
    for column in ("first_exposed", "last_exposed"):
        if column in truth.columns:
            _same_column(ours, truth, column, pd.Timestamp)
    users = pd.read_csv(SAMPLE / "users.csv", dtype=str, keep_default_na=False, na_values=[""])
    users = users.set_index("user_id")
    present = ours.index.intersection(users.index)
    for column in ("email", "name", "country", "locale"):
        if column in users.columns:
            assert (
                ours.loc[present, column].fillna("").tolist()
                == users.loc[present, column].fillna("").tolist()
            )
    missing = ours.index.difference(users.index)
    assert ours.loc[missing, "email"].isna().all()
    assert (ours.loc[present, "in_directory"] == "true").all()


def test_sample_report_names_each_table_it_rests_on_and_what_the_grants_excused(sample_run):
    """The method names the version of every side table (file, rows, SHA-256: the analysis' ownership and grants,
    the report's users directory), says how many views the grants excused, and no longer lists the config and the
    tables as files not read; the manifest keeps the directory's hash."""
    out, _ = sample_run
    md = (out / "report.md").read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text())
    for name in ("ownership", "grants", "users"):
        path = SAMPLE / f"{name}.csv"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rows = len(pd.read_csv(path, dtype=str))
        assert f"| tables.{name} | " in md and f"| `{path}` | {rows:,} | `{digest}` |" in md, name
        assert f"- `{path}`: not a log: tables.{name}, read below" in md
    assert f"- `{SAMPLE / 'incident.toml'}`: not a log: the config, read below" in md
    assert summary["tables"]["grants"]["rows"] == len(pd.read_csv(SAMPLE / "grants.csv", dtype=str))
    granted = summary["granted_views"]
    assert granted["items"] > 0
    assert (f"{granted['items']} items of another user's data served in the window ({granted['owners']} owners; "
            in md.replace("\\_", "_"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["report"]["users_directory_sha256"] == digest  # the users directory's, the last of the loop
    keys = {tuple(path) for path, _ in _summary_numbers(out)}
    assert {("granted_views", "items"), ("tables", "grants", "rows"), ("tables", "ownership", "rows")} <= keys


def test_every_column_of_the_lists_is_explained_in_the_report(sample_run):
    """Legal and comms receive the lists with the report, not the README: each column of each list has a meaning
    in the report's 'What the columns mean', which names the list it is in."""
    from pipeline.report import _COLUMNS

    out, _ = sample_run
    explained = {name: where for names, where, _ in _COLUMNS for name in names.split(", ")}
    lists = [("affected_users", out / "affected_users.csv"), ("viewers", out / "viewers.csv")]
    lists += [("notify", path) for path in (out / "notify").glob("*.csv")]
    for name, path in lists:
        for column in read_safe_csv(path).columns:
            assert name in explained.get(column, ""), (name, column)
    assert "changes" in explained["change"] and "changes" in explained["reason"]
    md = (out / "report.md").read_text(encoding="utf-8").replace("\\_", "_")
    assert "### What the columns mean" in md and "| `strongest_evidence` | affected_users, notify |" in md


def test_sample_viewers_match_ground_truth(sample_run):
    out, _ = sample_run
    ours = read_safe_csv(out / "viewers.csv")
    truth = _truth("viewers.csv").set_index("viewer_id")  # identified viewers only
    signed = ours[ours["viewer_id"].notna()].set_index("viewer_id")
    assert sorted(signed.index) == sorted(truth.index)
    assert (signed["viewer_kind"] == "user").all()
    for column, kind in (
        ("owners_seen", int),
        ("exposure_count", int),
        ("categories", str),
        ("first_seen", pd.Timestamp),
        ("last_seen", pd.Timestamp),
    ):
        if column in truth.columns:
            _same_column(signed, truth, column, kind)
    counts = json.loads((SAMPLE / "ground_truth" / "summary.json").read_text())["counts"]
    anonymous = ours[ours["viewer_kind"] == "anonymous"]
    assert len(anonymous) == counts["anonymous_viewer_sessions"]
    assert anonymous["exposure_count"].astype(int).sum() == counts["anonymous_exposures"]
    assert anonymous["viewer_id"].isna().all()
    sessions = anonymous["session"].dropna()
    assert sessions.str.fullmatch(r"sha256:[0-9a-f]{16}").all()
    raw_sessions = set(read_safe_csv(out / "exposures.csv")["session_id"].dropna())
    assert not raw_sessions & set(_raw_cells(out / "viewers.csv"))


def test_sample_exposures_and_notify_lists(sample_run):
    out, _ = sample_run
    users = pd.read_csv(SAMPLE / "users.csv", dtype=str, keep_default_na=False)
    assert users["name"].str.match(r"^[=+\-@]").any()  # the sample has spreadsheet traps ...
    for path in [
        out / "affected_users.csv",
        out / "viewers.csv",
        out / "exposures.csv",
        *(out / "notify").glob("*.csv"),
    ]:
        for cell in _raw_cells(path):
            assert not cell.startswith(RISKY_START), (path.name, cell)  # ... and none is live in a CSV
    exposures = read_safe_csv(out / "exposures.csv")
    truth = _truth("exposures.csv")
    assert len(exposures) == len(truth)
    assert exposures["source_file"].notna().all() and exposures["source_line"].notna().all()
    affected = _truth("affected_owners.csv")
    for category in sorted({c for value in affected["categories"] for c in _split(value)}):
        owners = {
            o
            for o, value in zip(affected["owner_id"], affected["categories"], strict=True)
            if category in _split(value)
        }
        listed = list((out / "notify").glob("*.csv"))
        frames = [read_safe_csv(p) for p in listed]
        (frame,) = [f for f in frames if set(f["category"]) == {category}]
        assert set(frame["owner_id"]) == owners, category


def test_sample_report_numbers(sample_run):
    out, _ = sample_run
    check_numbers_match_summary(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(check["ok"] for check in manifest["report"]["checks"]), manifest["report"]["checks"]
    md = (out / "report.md").read_text(encoding="utf-8")
    for entry in manifest["files"]:
        assert entry["sha256"] in md
    users = pd.read_csv(SAMPLE / "users.csv", dtype=str, keep_default_na=False)
    text = md + html.unescape((out / "report.html").read_text(encoding="utf-8"))
    for email in users["email"]:
        if email:
            assert email not in text
    for name in users["name"]:
        if len(name) > 3:
            assert name not in text


def test_sample_report_in_browser(sample_run, tmp_path):
    out, _ = sample_run
    assert_renders(out / "report.html", tmp_path)


def test_sample_cli_summary(sample_run):
    out, printed = sample_run
    stdout = printed["stdout"]
    summary = json.loads((out / "summary.json").read_text())
    assert (
        f"{summary['exposures']:,}" in stdout and "report.html" in stdout and "affected_users.csv" in stdout
    )
    users = pd.read_csv(SAMPLE / "users.csv", dtype=str, keep_default_na=False)
    for column in ("email", "name"):
        for value in users[column]:
            if len(value) > 3:
                assert value not in stdout, column


def test_cli_run_unreadable_input_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_pair_histograms_fit_in_eight_bins():
    """The pairs chart's x labels stay apart: however far the counts reach, at most 8 bins, every count in one."""
    labels, values = _bins([(1, 50), (4, 3), (5, 2), (60, 1), (2_000, 1)])
    assert labels == ["1", "2", "3", "4-5", "6-10", "11-20", "21-100", "101+"]
    assert values == [50, 0, 0, 5, 0, 0, 1, 1]
    assert _bins([(2, 7)]) == (["1", "2"], [0, 7])


def test_no_exposure_in_the_window_headline_still_warns_of_those_outside(tmp_path):
    """A window that holds no exposure while the logs hold some outside it: the headline must not say only
    "no user's data was shown" (a statement comms would quote); it warns of the exposures outside, as it
    does when the window holds some."""
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["run", str(SAMPLE), "--config", str(SAMPLE / "incident.toml"), "--out", str(out), "--no-progress",
         "--window", "2023-03-20T00:00Z/2023-03-20T00:30Z"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["exposures"] == 0 and summary["outside_window"]["exposures"] > 0
    md = (out / "report.md").read_text(encoding="utf-8")
    headline = md.split("## Headline", 1)[1].split("## Key numbers", 1)[0]
    assert "No user's data was served to anyone else" in headline
    outside = summary["outside_window"]
    assert (
        f"Not included: {outside['exposures']} exposures of {outside['affected_owners']} owners outside the window"
        in headline
    )
    html_headline = (out / "report.html").read_text(encoding="utf-8").split("Key numbers", 1)[0]
    assert "Not included: " in html_headline
    check_numbers_match_summary(out)


def test_a_label_the_font_cannot_draw_prints_nothing(tmp_path):
    """matplotlib warns once per character its font lacks, naming the character on stderr ("Glyph 23665
    (\\N{CJK UNIFIED IDEOGRAPH-5C71}) missing from font(s)"): a users directory's values, spelled out where
    nothing personal may be printed. A real run in a fresh interpreter, its stderr as a terminal would show it."""
    logs = tmp_path / "logs"
    shutil.copytree(SAMPLE, logs)
    users = logs / "users.csv"
    rows = list(csv.reader(users.open(encoding="utf-8", newline="")))
    country = rows[0].index("country")
    for row in rows[1:]:
        row[country] = "山田太郎"
    with users.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    command = [sys.executable, "-m", "pipeline.cli", "run", str(logs), "--config", str(logs / "incident.toml"),
               "--out", str(tmp_path / "out"), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert (tmp_path / "out" / "charts" / "countries.png").is_file()


def test_a_line_break_in_a_label_warns_nothing_either():
    """A users directory's country with a line break in it ("a\\nb", a CSV cell over two lines): matplotlib's
    warning names that character too ("Glyph 10 (\\n) missing from font(s)"), a message over two lines, which the
    filter's ``.*`` did not reach across: it was printed on stderr of every report."""
    import warnings

    summary = {"window": {"method": "all"}, "exposures_by_category": {"payment_info": 1}}
    facts = ChartFacts(
        severity_by_category={"payment_info": "high"},
        countries=[("Upper\nVolta", 1, 1), ("山田\r\t", 1, 0)],
        owners_seen_hist=[(1, 1)],
        viewer_count_hist=[(1, 1)],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        draw_charts(summary, {}, facts)
    assert [str(w.message) for w in caught] == []


def test_a_report_that_fails_half_way_leaves_none_of_its_files(tmp_path):
    """A report that fails after its first CSVs (here a folder in the way of a notification list; Ctrl-C is the
    same path) left affected_users.csv and viewers.csv beside the analysis, with no report.html and not every
    notify/ list: a list of some of the people, read as the report's. Its files go; the analysis' stay."""
    out = build_analysis(tmp_path / "out")
    pipeline.report(out, progress=False)
    assert (out / "notify" / "payment_info.csv").is_file()
    (out / "notify" / "payment_info.csv").unlink()
    (out / "notify" / "payment_info.csv").mkdir()
    with pytest.raises(OSError):
        pipeline.report(out, progress=False)
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert not [name for name in left if name.startswith(("affected_users", "viewers", "report.", "charts/"))]
    assert not [name for name in left if name.startswith("notify/")]
    assert "exposures.csv" in left and "summary.json" in left
    assert "report" not in json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    (out / "notify" / "payment_info.csv").rmdir()
    pipeline.report(out, progress=False)  # and the next report is whole
    assert (out / "affected_users.csv").is_file() and (out / "notify" / "payment_info.csv").is_file()


def _report_text(out: Path, **summary_changes) -> str:
    """report.md of the hand-built analysis in ``out`` with summary.json changed as given, one line per
    paragraph, Markdown's escapes undone."""
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    (out / "summary.json").write_text(json.dumps({**summary, **summary_changes}), encoding="utf-8")
    pipeline.report(out, progress=False)
    return (out / "report.md").read_text(encoding="utf-8").replace("\\", "")


def test_crossed_replies_of_no_known_owner_are_a_warning_and_a_key_number(tmp_path):
    """Served crossed replies whose data no evidence names an owner for are on no list: the report says how many
    and what to add (a key rule, ownership rows); none, no word."""
    out = build_analysis(tmp_path / "out")
    text = _report_text(out, crossed_served_unknown_owner=3)
    assert ("3 crossed replies were served to a viewer with data whose owner no evidence names (summary.json, "
            "crossed_served_unknown_owner)") in text
    assert "| crossed replies served whose data no evidence names an owner for | 3 |" in text
    text = _report_text(out, crossed_served_unknown_owner=0)
    assert "whose owner no evidence names" not in text


def test_exposures_whose_request_names_another_user_are_a_warning(tmp_path):
    """Exposures served in requests whose user_id is not the session's holder: the report says how many, and how
    many came in the owner's own request; none, no word."""
    out = build_analysis(tmp_path / "out")
    text = _report_text(out, request_user_differs={"exposures": 2, "request_user_is_owner": 1})
    assert ("2 exposures were served in requests whose user_id is not the viewer the sessions log gives (1 of them "
            "in a request of the owner, who by the requests log read their own data)") in text
    text = _report_text(out, request_user_differs={"exposures": 0, "request_user_is_owner": 0})
    assert "whose user_id is not the viewer" not in text


def test_near_misses_outside_the_window_are_counted_beside_those_in_it(tmp_path):
    """The summary's near-miss counts are the window's; near_misses.parquet, which the report points to, holds all
    of them: the report says how many more lie outside, so its count and the file's rows agree."""
    out = build_analysis(tmp_path / "out")
    near = {"total": 3, "by_kind": {"failed": 2, "not-data": 1}, "by_category": {"payment_info": 3}}
    text = _report_text(out, near_misses={**near, "outside_window": 2})
    assert ("3 near misses in the window (2 more outside it): stale replies (left on a connection by an abandoned "
            "call) that, as far as the logs show, reached no one as data: read by a call that failed, by background "
            "work or as something other than data, or thrown away unread (so they can be more than the crossed "
            "replies, which are reads). They are not exposures; near_misses.parquet holds all 5 (column in_window)."
            ) in text
    check_numbers_match_summary(out)
    text = _report_text(out, near_misses={**near, "outside_window": 0})
    assert "3 near misses: stale replies (left on" in text and "more outside it" not in text


def test_every_kind_of_near_miss_the_analysis_writes_is_explained(tmp_path):
    """The report explains each kind of near miss it counts: the kinds are read from the SQL that assigns them
    (the outcome of a crossed read, and 'discarded'), so a kind added there without a text fails here."""
    sql = (ROOT / "pipeline" / "sql" / "analyze" / "50_notable_reads.sql").read_text(encoding="utf-8")
    before_outcome = sql[: sql.index("END AS outcome")]
    outcome_case = before_outcome[before_outcome.rindex("CASE"):]
    kinds = set(re.findall(r"THEN '([a-z-]+)'", outcome_case)) - {"served"} | {"discarded"}
    assert {"failed", "not-data", "background", "discarded"} <= kinds
    out = build_analysis(tmp_path / "out")
    by_kind = {kind: 1 for kind in sorted(kinds)}
    text = _report_text(out, near_misses={"total": len(kinds), "by_kind": by_kind, "by_category": {}})
    for kind in kinds:
        line = next(line for line in text.splitlines() if line.startswith(f"- `{kind}`: 1"))
        assert len(line.split(" — ", 1)[1]) > 20, line


def test_counts_of_one_take_the_singular(tmp_path):
    """A count of one reads "1 row rests", "1 near miss", "1 (x%) was affected": not "1 rows rest"."""
    rows = [("2023-03-20T01:10:00Z", "r1", "sess-b", "u2", "u1", "payment_info", "high", "digest-ambiguous")]
    users = [*USERS, ("u6", "other@example.com", "Other", "IE", "en-IE")]  # u6 twice: one duplicated id
    out = build_analysis(tmp_path / "out", rows, users)
    text = _report_text(
        out,
        active_users=1,
        affected_active_users=1,
        share_of_active_users_affected=1.0,
        ambiguous_rows=1,
        unknown_viewer_reads=1,
        near_misses={"total": 1, "by_kind": {"failed": 1}, "by_category": {"payment_info": 1}},
        outside_window={"exposures": 1, "affected_owners": 1, "by_category": {"payment_info": 1}},
    )
    assert "Of the 1 user active in that window, **1 (100.00%)** was affected." in text
    assert "1 row rests on ambiguous evidence and 0 on conflicting evidence" in text
    assert "1 served read came from requests missing from the requests log" in text
    assert "1 near miss: stale replies" in text
    assert "1 exposure of 1 owner falls outside the window and is not in the lists" in text
    assert "1 user id appears more than once in the users directory" in text
    for wrong in ("1 rows", "1 served reads", "1 near misses", "1 user ids", "1 exposures", "were affected"):
        assert wrong not in text, wrong
    # of two affected owners, one was not active: "the other affected user", not "the other 1 affected user"
    text = _report_text(out, active_users=1, affected_active_users=1, affected_owners=2)
    assert "(100.00%)** was affected. The other affected user did not use the service in that window" in text
    text = _report_text(out, active_users=1, affected_active_users=1, affected_owners=3)
    assert "The other 2 affected users did not use the service in that window themselves." in text


@pytest.mark.parametrize(
    ("window", "says", "never"),
    [
        (
            {"start": T0, "end": T1, "method": "config", "description": "from the config's [window]"},
            "(start included, end excluded), given in the incident config ([window]).\n",
            "from the config's",
        ),
        (
            {"start": T0, "end": T1, "method": "cli", "description": "given with --window"},
            "(start included, end excluded), given on the command line (--window).\n",
            "given with --window",
        ),
        (
            {"start": None, "end": None, "method": "all", "description": "all time in the logs (a to b)"},
            "Exposure window: not limited: all time in the logs. Every exposure in the logs counts; to limit them "
            "to the incident, rerun with --window START/END or --window auto.\n",
            "(a to b)",
        ),
        (
            {"start": T0, "end": T1, "method": "auto", "description": "auto: the stretch of buckets; it runs on"},
            "(start included, end excluded), found from the data. The stretch of buckets; it runs on.\n",
            "auto:",
        ),
        (
            {"start": None, "end": None, "method": "auto", "description": "auto: no crossed replies in the logs"},
            "Exposure window: none was found in the data. No crossed replies in the logs. Every exposure in the "
            "logs counts; to limit them to the incident, rerun with --window START/END.\n",
            "found from the data",
        ),
    ],
)
def test_the_window_paragraph_is_one_sentence_per_fact(tmp_path, window, says, never):
    """How the window was chosen, said once, as sentences: not "..., given in the incident config ([window]).
    from the config's [window]", and an automatic search that found nothing is not "found from the data"."""
    out = build_analysis(tmp_path / "out")
    text = _report_text(out, window=window)
    paragraph = text.split("### The window\n\n", 1)[1].split("\n", 1)[0] + "\n"
    assert paragraph.endswith(says), paragraph
    assert never not in paragraph


def test_the_limits_describe_the_auto_window_by_the_rule_that_chose_it(tmp_path):
    """An auto window is found by a scan statistic (85_window_scan.sql), not by a level the crossed replies rise
    above: the limits say how it was found, and that it is not the incident's start and end."""
    out = build_analysis(tmp_path / "out")
    window = {"start": T0, "end": T1, "method": "auto", "description": "auto: the stretch of buckets"}
    limit = next(line for line in _report_text(out, window=window).splitlines()
                 if line.startswith("- Exposures outside the window"))
    assert "stands out from the rest of the log (a scan statistic)" in limit, limit
    assert "it is not the incident's start and end" in limit and "level" not in limit
    window = {"start": T0, "end": T1, "method": "cli", "description": "given with --window"}
    limit = next(line for line in _report_text(out, window=window).splitlines()
                 if line.startswith("- Exposures outside the window"))
    assert limit == "- Exposures outside the window, and before or after the logs begin or end."


def test_a_missing_exposures_csv_is_written_again_as_the_analysis_wrote_it(sample_run, tmp_path):
    """exposures.csv is the evidence behind the lists: a report of a folder that lost it writes it again from
    exposures.parquet, byte for byte the analysis' file (the same columns, the same order, the same cell rule)."""
    out, _ = sample_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "exposures.csv").unlink()
    result = CliRunner().invoke(cli, ["report", "--out", str(copy), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (copy / "exposures.csv").read_bytes() == (out / "exposures.csv").read_bytes()


def test_a_users_directory_too_large_for_memory_is_one_error_not_a_spill_outside_out(tmp_path, monkeypatch):
    """Reading the users directory before a run (its check) has no --out to spill into: in memory, DuckDB would
    spill names and emails into ./.tmp of the working directory. It must not spill at all: a directory that does
    not fit is one clear error, and the working directory stays empty. (The memory is made tight by lowering
    DuckDB's limit on every connection.)"""
    from pipeline.report import check_users_directory

    users = tmp_path / "users.csv"
    frame = pd.DataFrame({"user_id": [f"u{i:07d}" for i in range(400_000)]})
    frame["email"] = frame["user_id"] + "@example.com"
    frame["name"] = "Name " + frame["user_id"] + " " + "x" * 40
    frame.to_csv(users, index=False)
    real_connect = duckdb.connect

    def tight_connect(*args, **kwargs):
        con = real_connect(*args, **kwargs)
        con.execute("SET memory_limit = '20MB'")
        return con

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(duckdb, "connect", tight_connect)
    with pytest.raises(pipeline.errors.WhosawError, match=r"^tables.users: the users directory .* does not fit in"):
        check_users_directory(users)
    assert list(cwd.iterdir()) == []
