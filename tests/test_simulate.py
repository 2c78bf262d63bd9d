"""The simulator: deterministic, faithful to the log model, and its ground truth agrees with its own logs.

The reference re-derivation below reads the simulated logs back with nothing but docs/design.md "Cache log
semantics" (the r-th reading call since a reset received the reply of the r-th call), the sessions log, the
key rules and the tables, and must find exactly the exposures the simulator recorded from its internal state.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import shlex
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.errors import WhosawError
from pipeline.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_logs"
READ_OPS = {"GET", "HGETALL"}
RESET_OPS = {"CONNECT", "RECONNECT", "RESET", "DISCONNECT", "CLOSE", "QUIT"}
SMALL = {"users": 80, "requests": 2500, "cancel_rate": 0.05, "seed": 11}


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------


def _open(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")
    )


def _records(folder: Path, kind: str) -> list[dict]:
    """Every record of a kind from a clean (non-messy) simulation, JSON Lines or CSV."""
    rows: list[dict] = []
    for path in sorted(folder.glob(f"{kind}*")):
        with _open(path) as fh:
            if ".csv" in path.name:
                for row in csv.DictReader(fh):
                    rows.append({k: (v if v != "" else None) for k, v in row.items()})
            else:
                rows.extend(json.loads(line) for line in fh)
    return rows


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "README.md"
    }


def _truth_rows(folder: Path, name: str) -> list[dict]:
    with open(folder / "ground_truth" / name, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _truth_exposures(folder: Path) -> set[tuple]:
    """The ground truth's exposures as reference_exposures gives them: (request, key, ts, viewer, owner, category)."""
    return {
        (r["request_id"], r["key"], r["ts"], r["viewer_id"], r["owner_id"], r["category"])
        for r in _truth_rows(folder, "exposures.csv")
    }


def reference_exposures(folder: Path) -> tuple[set, dict]:
    """Re-derive the exposures from the logs with the design's rules only (a slow, obvious implementation)."""
    config = tomllib.loads((folder / "incident.toml").read_text(encoding="utf-8"))
    rules = [(re.compile(r["pattern"]), r["category"]) for r in config["keys"]]
    with open(folder / "ownership.csv", encoding="utf-8") as fh:
        ownership = {row["resource_id"]: row["owner_id"] for row in csv.DictReader(fh)}
    with open(folder / "grants.csv", encoding="utf-8") as fh:
        grants = list(csv.DictReader(fh))
    start, end = config["window"]["start"], config["window"]["end"]

    def key_owner(key: str) -> tuple[str | None, str, str | None]:
        """(owner, category, resource) of a key by the first rule that matches it."""
        for pattern, category in rules:
            m = pattern.match(key)
            if m:
                groups = m.groupdict()
                if "owner" in groups:
                    return groups["owner"], category, None
                if "resource" in groups:
                    return ownership.get(groups["resource"]), category, groups["resource"]
                return None, category, None
        return None, "uncategorized", None

    def granted(owner: str, viewer: str | None, category: str, resource: str | None, ts: str) -> bool:
        for g in grants:
            if (
                g["owner_id"] == owner
                and g["viewer_id"] in (viewer, "*")
                and g["category"] in (category, "*")
                and g.get("resource_id") in (None, "", resource)
            ):
                if g["valid_from"].rstrip("Z") <= ts.rstrip("Z") and (
                    not g["valid_to"] or ts.rstrip("Z") < g["valid_to"].rstrip("Z")
                ):
                    return True
        return False

    requests = {r["request_id"]: r for r in _records(folder, "requests")}
    events = defaultdict(list)
    for e in _records(folder, "sessions"):
        events[e["session_id"]].append(e)

    def viewer_of(request: dict, ts: str) -> str | None:
        holder = request.get("user_id")
        for e in events.get(request.get("session_id"), []):  # in ts order
            if e["ts"] <= ts:
                holder = e["user_id"] if e["event"] in ("login", "refresh") else None
        return holder

    conns: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in _records(folder, "cache"):
        conns[(line["host"], line["conn_id"])].append(line)
    found = set()
    near = defaultdict(int)
    for lines in conns.values():
        lines.sort(key=lambda x: x["ts"])
        calls: list[dict] = []
        reads = 0
        for line in lines:
            if line["op"] in RESET_OPS:
                near["discarded"] += sum(c["op"] in READ_OPS for c in calls[reads:])
                calls, reads = [], 0
                continue
            calls.append(line)
            if line["status"] not in ("ok", "error"):
                continue
            reply = calls[reads]
            reads += 1
            request = requests.get(line["request_id"]) if line["request_id"] else None
            crossed = reply is not line
            if line["status"] == "error":
                near["discarded"] += sum(c["op"] in READ_OPS for c in calls[reads:])
                calls, reads = [], 0
            if crossed and (line["status"] == "error" or (request and int(request["status"]) >= 500)):
                near["failed"] += 1
                continue
            if crossed and (line["op"] not in READ_OPS or reply["op"] not in READ_OPS):
                near["not-data"] += 1
                continue
            if line["op"] not in READ_OPS or line["status"] != "ok" or request is None:
                continue
            if int(request["status"]) >= 500 or not (start <= line["ts"] < end):
                continue
            owner, category, resource = key_owner(reply["key"])
            viewer = viewer_of(request, line["ts"])
            if owner is None or owner == viewer or granted(owner, viewer, category, resource, line["ts"]):
                continue
            found.add((line["request_id"], line["key"], line["ts"], viewer or "", owner, category))
    return found, dict(near)


# ------------------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sim") / "incident"
    return out, simulate(out, **SMALL)


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("messy") / "incident"
    return out, simulate(out, users=60, requests=6000, cancel_rate=0.03, seed=5, messy=True)


# ------------------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------------------


def test_writes_the_promised_files(small):
    out, summary = small
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {
        "requests.jsonl",
        "cache.jsonl",
        "sessions.jsonl",
        "incident.toml",
        "users.csv",
        "grants.csv",
        "ownership.csv",
        "ground_truth/exposures.csv",
        "ground_truth/affected_owners.csv",
        "ground_truth/viewers.csv",
        "ground_truth/summary.json",
        "ground_truth/near_misses.csv",
    } <= names
    assert json.loads((out / "ground_truth/summary.json").read_text()) == summary
    counts = summary["counts"]
    assert counts["requests"] == SMALL["requests"]
    assert counts["requests"] == sum(1 for _ in open(out / "requests.jsonl"))
    assert counts["cache_lines"] == sum(1 for _ in open(out / "cache.jsonl"))
    assert counts["session_events"] == sum(1 for _ in open(out / "sessions.jsonl"))
    assert summary["window"] == {"start": "2023-03-20T01:00:00.000000Z", "end": "2023-03-20T10:00:00.000000Z"}
    assert set(_truth_rows(out, "exposures.csv")[0]) >= {
        "request_id",
        "ts",
        "viewer_id",
        "owner_id",
        "key",
        "category",
    }


def test_fields_follow_the_spec(small):
    out, _ = small
    req = _records(out, "requests")[0]
    assert list(req) == ["ts", "request_id", "session_id", "user_id", "route", "status", "host"]
    line = _records(out, "cache")[0]
    assert list(line) == [
        "ts",
        "request_id",
        "op",
        "key",
        "status",
        "host",
        "conn_id",
        "value_sha256",
        "value_owner",
    ]
    ev = _records(out, "sessions")[0]
    assert list(ev) == ["ts", "session_id", "user_id", "event"]
    for kind in ("requests", "cache", "sessions"):
        stamps = [r["ts"] for r in _records(out, kind)]
        assert stamps == sorted(stamps), f"{kind} lines are not in time order"
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", t) for t in stamps)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    c = tmp_path / "c"
    options = {"users": 50, "requests": 1500, "cancel_rate": 0.05, "seed": 3}
    simulate(a, **options)
    simulate(b, **options)
    simulate(c, **{**options, "seed": 4})
    assert _hashes(a) == _hashes(b)
    ha, hc = _hashes(a), _hashes(c)
    assert ha.keys() == hc.keys()
    assert all(ha[name] != hc[name] for name in ("requests.jsonl", "cache.jsonl", "sessions.jsonl"))
    # gzip and the messy switch are deterministic too (gzip headers carry no name and no time).
    simulate(tmp_path / "m1", messy=True, fmt="jsonl.gz", **options)
    simulate(tmp_path / "m2", messy=True, fmt="jsonl.gz", **options)
    assert _hashes(tmp_path / "m1") == _hashes(tmp_path / "m2")


def test_connections_are_ordered_and_never_share_a_timestamp(small):
    out, _ = small
    seen = set()
    for line in _records(out, "cache"):
        ident = (line["host"], line["conn_id"], line["ts"])
        assert ident not in seen
        seen.add(ident)


def test_nothing_crosses_outside_the_window(small):
    out, summary = small
    start, end = summary["window"]["start"], summary["window"]["end"]
    assert summary["exposures_outside_window"] == 0
    for row in _truth_rows(out, "exposures.csv") + _truth_rows(out, "near_misses.csv"):
        assert start <= row["ts"] < end
    # Outside the window an abandoned call closes its connection: no later line on that conn_id.
    per_conn = defaultdict(list)
    for line in _records(out, "cache"):
        per_conn[(line["host"], line["conn_id"])].append(line)
    for lines in per_conn.values():
        for i, line in enumerate(lines):
            if line["status"] in ("cancelled", "timeout") and not (start <= line["ts"] < end):
                assert i == len(lines) - 1, (
                    "a connection kept serving after an abandoned call outside the window"
                )
    # ...and no connection survives the fix: none has lines on both sides of the window's end.
    for lines in per_conn.values():
        assert not (lines[0]["ts"] < end <= lines[-1]["ts"])


def test_every_exposure_follows_an_abandoned_call_on_its_connection(small):
    out, _ = small
    per_conn = defaultdict(list)
    for line in _records(out, "cache"):
        per_conn[(line["host"], line["conn_id"])].append(line)
    exposures = _truth_rows(out, "exposures.csv")
    assert exposures
    for row in exposures:
        lines = per_conn[(row["host"], row["conn_id"])]
        i = next(
            i for i, x in enumerate(lines) if x["ts"] == row["ts"] and x["request_id"] == row["request_id"]
        )
        behind = 0
        for prev in reversed(lines[:i]):
            if prev["op"] in RESET_OPS or prev["status"] == "error":
                break
            behind += prev["status"] in ("cancelled", "timeout")
        assert behind >= int(row["lag"]) >= 1, row


def test_ground_truth_equals_a_reading_of_the_logs_by_the_design_rules(small):
    out, summary = small
    expected, near = reference_exposures(out)
    truth = _truth_exposures(out)
    assert truth == expected
    by_kind = summary["near_misses"]["by_kind"]
    assert near.get("failed", 0) == by_kind["failed"]
    assert near.get("not-data", 0) == by_kind["not-data"]
    assert near.get("discarded", 0) == by_kind["discarded"]


def test_many_small_chunks_keep_the_model(tmp_path, monkeypatch):
    """State carried between chunks (unread replies, conn_id generations, pending requests) stays exact."""
    sim = sys.modules["pipeline.simulate"]  # the package re-exports the function under the module's name
    monkeypatch.setattr(sim, "CHUNK_REQUESTS", 150)
    monkeypatch.setattr(sim, "CHUNK_WARMUP_ROWS", 97)
    out = tmp_path / "chunked"
    summary = simulate(out, users=60, requests=4000, cancel_rate=0.08, seed=21)
    assert summary["counts"]["requests"] == 4000
    expected, near = reference_exposures(out)
    truth = _truth_exposures(out)
    assert truth == expected and len(truth) > 20
    assert near.get("failed", 0) == summary["near_misses"]["by_kind"]["failed"]
    assert near.get("discarded", 0) == summary["near_misses"]["by_kind"]["discarded"]
    for kind in ("requests", "cache", "sessions"):
        stamps = [r["ts"] for r in _records(out, kind)]
        assert stamps == sorted(stamps)
    seen = set()
    for line in _records(out, "cache"):
        assert (line["host"], line["conn_id"], line["ts"]) not in seen
        seen.add((line["host"], line["conn_id"], line["ts"]))


def test_digests_and_value_owners_are_exact_evidence(small):
    out, _ = small
    lines = _records(out, "cache")
    writes: dict[str, str] = {}
    for line in lines:
        if line["op"] == "SET":
            assert writes.setdefault(line["value_sha256"], line["key"]) == line["key"], (
                "a digest under two keys"
            )
    for line in lines:
        if line["op"] in READ_OPS and line["status"] == "ok":
            assert line["value_sha256"] in writes, "a value read that was never written"
        if line["status"] != "ok" or line["op"] not in READ_OPS:
            assert line["value_owner"] is None
    # A read's value_owner, when logged, is the owner of the key its digest was written under.
    for line in lines:
        if line["value_owner"]:
            key = writes[line["value_sha256"]]
            assert key in (f"user:{line['value_owner']}:titles", f"billing:{line['value_owner']}")


def test_sessions_log_agrees_with_the_requests(small):
    out, summary = small
    events = defaultdict(list)
    for e in _records(out, "sessions"):
        events[e["session_id"]].append(e)
    cache_requests = {line["request_id"] for line in _records(out, "cache") if line["request_id"]}
    for request in _records(out, "requests"):
        holder, known = None, False
        for e in events.get(request["session_id"], []):
            if e["ts"] <= request["ts"]:
                holder, known = (e["user_id"] if e["event"] in ("login", "refresh") else None), True
        if request["status"] == 401:  # a stale tab after logout or expiry: no user, no cache call
            assert known and holder is None and request["user_id"] is None
            assert request["request_id"] not in cache_requests
        elif request["user_id"]:
            assert holder == request["user_id"]
        else:
            assert request["session_id"].startswith("anon-") and not known
    revived = [
        e
        for ev in events.values()
        for i, e in enumerate(ev)
        if e["event"] == "refresh" and i and ev[i - 1]["event"] == "expire"
    ]
    assert len(revived) == summary["sessions"]["refresh_after_expire"] > 0


def _grants_covering(grants: list[dict], row: dict) -> list[dict]:
    """The grants.csv rows whose owner, viewer ('*' = anyone), category and time cover an exposure row, whatever
    conversation they name."""
    ts = row["ts"].rstrip("Z")[:19]
    return [
        g
        for g in grants
        if g["owner_id"] == row["owner_id"]
        and g["viewer_id"] in (row["viewer_id"], "*")
        and g["category"] in (row["category"], "*")
        and g["valid_from"].rstrip("Z") <= ts
        and (not g["valid_to"] or ts < g["valid_to"].rstrip("Z"))
    ]


def test_grants_are_excluded_and_used(small):
    out, summary = small
    assert summary["requests"]["share_link_views"] + summary["requests"]["anonymous_share_views"] > 0
    grants = list(csv.DictReader(open(out / "grants.csv", encoding="utf-8")))
    assert any(g["viewer_id"] == "*" for g in grants)
    for row in _truth_rows(out, "exposures.csv"):
        for g in _grants_covering(grants, row):  # only a value of another conversation than the shared one
            assert row["value_key"] != f"conv:{g['resource_id']}", row


def test_share_links_name_one_conversation_of_their_owner(small):
    """A share link shares one conversation: every grants.csv row names it (resource_id, the id ownership.csv
    gives the grant's owner), in the column order the README gives."""
    out, _ = small
    with open(out / "grants.csv", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        grants = list(reader)
    assert reader.fieldnames == ["owner_id", "viewer_id", "category", "valid_from", "valid_to", "resource_id"]
    with open(out / "ownership.csv", encoding="utf-8") as fh:
        ownership = {row["resource_id"]: row["owner_id"] for row in csv.DictReader(fh)}
    assert grants and {g["viewer_id"] == "*" for g in grants} == {True, False}
    for g in grants:
        assert g["resource_id"] and ownership.get(g["resource_id"]) == g["owner_id"], g


# An incident in which a crossed reply of a grant owner's other conversation reaches the grant's viewer.
GRANT_CROSSED = {"users": 30, "requests": 4000, "cancel_rate": 0.08, "seed": 3}


def test_a_crossed_reply_of_another_conversation_of_a_grant_owner_is_an_exposure(tmp_path):
    """The share link excuses its one conversation only: a crossed reply that brings the link's viewer another
    of the owner's conversations is an exposure (the old category-wide grant excused it), and a reading of the
    logs by the design's rules, grants' resource_id included, finds the same exposures."""
    out = tmp_path / "incident"
    simulate(out, **GRANT_CROSSED)
    grants = list(csv.DictReader(open(out / "grants.csv", encoding="utf-8")))
    rows = _truth_rows(out, "exposures.csv")
    covered = [(row, g) for row in rows for g in _grants_covering(grants, row)]
    assert covered, "no exposure under a grant's owner, viewer and time: pick another incident"
    for row, g in covered:
        assert row["category"] == "conversation_content" and row["value_key"] != f"conv:{g['resource_id']}"
    expected, _ = reference_exposures(out)
    assert {(r["request_id"], r["key"], r["ts"], r["viewer_id"], r["owner_id"], r["category"]) for r in rows} == (
        expected
    )


def test_aggregates_match_exposures(small):
    out, summary = small
    exposures = _truth_rows(out, "exposures.csv")
    owners = {r["owner_id"] for r in exposures}
    viewers = {r["viewer_id"] for r in exposures if r["viewer_id"]}
    assert {r["owner_id"] for r in _truth_rows(out, "affected_owners.csv")} == owners
    assert {r["viewer_id"] for r in _truth_rows(out, "viewers.csv")} == viewers
    assert summary["counts"]["exposures"] == len(exposures)
    assert summary["counts"]["affected_owners"] == len(owners)
    assert summary["counts"]["viewers"] == len(viewers)
    assert sum(summary["exposures_by_category"].values()) == len(exposures)


def test_users_table_has_spreadsheet_traps(small):
    out, _ = small
    users = list(csv.DictReader(open(out / "users.csv", encoding="utf-8")))
    assert len(users) == SMALL["users"]
    assert {u["name"][0] for u in users} >= {"=", "+", "-", "@"}
    assert len({u["country"] for u in users}) > 3


@pytest.mark.parametrize("fmt", ["csv", "jsonl.gz"])
def test_other_formats_hold_the_same_records(tmp_path, fmt):
    options = {"users": 40, "requests": 800, "cancel_rate": 0.05, "seed": 2}
    plain = simulate(tmp_path / "plain", **options)
    other = simulate(tmp_path / fmt, fmt=fmt, **options)
    assert plain["counts"] == other["counts"]
    for kind in ("requests", "cache", "sessions"):
        a = _records(tmp_path / "plain", kind)
        b = _records(tmp_path / fmt, kind)
        if fmt == "csv":
            a = [{k: (None if v is None else str(v)) for k, v in r.items()} for r in a]
        assert a == b


@pytest.fixture(scope="module")
def messy_csv(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("messy_csv") / "incident"
    return out, simulate(out, users=40, requests=3000, cancel_rate=0.03, seed=6, messy=True, fmt="csv")


@pytest.mark.parametrize("which", ["messy", "messy_csv"])
def test_messy_injects_exactly_what_it_reports(which, request):
    out, summary = request.getfixturevalue(which)
    csv_format = which == "messy_csv"
    report = json.loads((out / "ground_truth" / "messy.json").read_text())
    files = report["files"]
    assert any(name.endswith(".gz") for name in files) and any(not name.endswith(".gz") for name in files)
    originals: dict[str, set[str]] = defaultdict(set)
    total_records = {"requests": 0, "cache": 0, "sessions": 0}
    for name in sorted(files):
        stats = files[name]
        raw = gzip.open(out / name).read() if name.endswith(".gz") else (out / name).read_bytes()
        lines = raw.split(b"\n")
        assert lines[-1] == b""
        lines = lines[:-1]
        header = None
        if csv_format:
            header, lines = lines[0].decode().split(","), lines[1:]
        assert len(lines) == stats["lines"] == stats["records"] + stats["duplicates"] + stats["rejected"]
        seen: set[bytes] = set()
        counts = defaultdict(int)
        for line in lines:
            reason = _malformed_csv_reason(line, header) if csv_format else _malformed_reason(line)
            if reason:
                counts[reason] += 1
                continue
            if name.split(".")[1] == "reshipped":
                assert line.decode() in originals[name.split(".")[0]]
                counts["duplicates"] += 1
                continue
            if line in seen:
                counts["duplicates"] += 1
                continue
            seen.add(line)
            counts["records"] += 1
            if csv_format:
                ts = dict(zip(header, line.decode().split(","), strict=True))["ts"]
            else:
                ts = json.loads(line)["ts"]
            epoch = isinstance(ts, int) or ts.isdigit()
            counts["epoch" if epoch else "offset" if ts.endswith("-07:00") else "iso_z"] += 1
        originals[name.split(".")[0]] |= {x.decode() for x in seen}
        assert counts["records"] == stats["records"]
        assert counts["duplicates"] == stats["duplicates"]
        for reason, n in stats["malformed"].items():
            assert counts[reason] == n, (name, reason)
        for form, n in stats["ts_forms"].items():
            assert counts[form] == n, (name, form)
        total_records[stats["kind"]] += stats["records"]
    assert total_records["requests"] == summary["counts"]["requests"]
    assert total_records["cache"] == summary["counts"]["cache_lines"]
    assert total_records["sessions"] == summary["counts"]["session_events"]
    totals = report["totals"]
    assert totals["duplicates"] > 0 and all(v > 0 for v in totals["malformed"].values())
    assert totals["ts_forms"]["offset"] > 0 and totals["ts_forms"]["epoch"] > 0


def _malformed_csv_reason(line: bytes, header: list[str]) -> str | None:
    if b"\x00" in line:
        return "nul_byte"
    cells = line.decode().split(",")
    if len(cells) != len(header):
        return "broken"
    ts = cells[header.index("ts")]
    if not ts:
        return "missing_ts"
    if ts[4:8] == "-13-":
        return "impossible_ts"
    return None


def _malformed_reason(line: bytes) -> str | None:
    if b"\x00" in line:
        return "nul_byte"
    try:
        record = json.loads(line)
    except ValueError:
        return "broken"
    if "ts" not in record:
        return "missing_ts"
    if isinstance(record["ts"], str) and record["ts"][5:7] == "13":
        return "impossible_ts"
    return None


def test_messy_keeps_the_same_records_and_truth(messy, tmp_path):
    out, summary = messy
    clean = simulate(tmp_path / "clean", users=60, requests=6000, cancel_rate=0.03, seed=5)
    assert clean["counts"] == summary["counts"]
    assert (tmp_path / "clean/ground_truth/exposures.csv").read_bytes() == (
        out / "ground_truth/exposures.csv"
    ).read_bytes()


def test_cli_simulate(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "simulate",
            "--out",
            str(tmp_path / "x"),
            "--users",
            "30",
            "--requests",
            "500",
            "--seed",
            "1",
            "--cancel-rate",
            "0.05",
            "--format",
            "csv",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "requests" in result.output and "bug window" in result.output
    assert (tmp_path / "x" / "requests.csv").is_file()
    bad = CliRunner().invoke(cli, ["simulate", "--out", str(tmp_path / "y"), "--window", "nonsense"])
    assert bad.exit_code == 2


def test_a_cache_warm_before_the_logs_with_empty_lists_many_users_share(tmp_path):
    """--cache-warm-before-logs: no warm-up write is logged (the logs begin with the traffic). --empty-titles:
    that share of the users' titles lists are empty, the same bytes for every owner, so one digest stands for
    many owners, and an empty list names no owner (no value_owner); a few title writes empty a list. The truth is
    still what a reading of the logs by the design's rules gives, and the options are recorded in incident.toml."""
    out = tmp_path / "shared"
    args = ["simulate", "--out", str(out), "--users", "300", "--requests", "20000", "--cancel-rate", "0.05",
            "--seed", "11", "--cache-warm-before-logs", "--empty-titles", "0.3"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = _records(out, "cache")
    assert min(line["ts"] for line in lines) >= "2023-03-20T00:00:00"  # the traffic's start: no warm-up
    assert not [line for line in lines if line["op"] == "SET" and line["request_id"] is None and
                line["key"].startswith("user:")]
    empty = hashlib.sha256(b"[]").hexdigest()
    own_empty_reads = [line for line in lines if line["value_sha256"] == empty and line["op"] in READ_OPS]
    assert len({line["key"] for line in own_empty_reads}) > 30  # one digest, many owners' keys
    assert all(line["value_owner"] is None for line in own_empty_reads)
    assert [line for line in lines if line["value_sha256"] == empty and line["op"] == "SET"]  # a list emptied
    named = [line for line in lines if line["value_owner"] and line["op"] in READ_OPS]
    assert len(named) > 1000  # the other titles and billing values still name their owner
    expected, _ = reference_exposures(out)
    truth = _truth_exposures(out)
    assert truth == expected and len(truth) > 100
    assert '"cache_warm_before_logs": true' in (out / "incident.toml").read_text()
    assert '"empty_titles": 0.3' in (out / "incident.toml").read_text()
    bad = CliRunner().invoke(cli, ["simulate", "--out", str(tmp_path / "bad"), "--empty-titles", "1.5"])
    assert bad.exit_code == 2 and "--empty-titles" in bad.output


@pytest.mark.parametrize(("args", "error"), [
    (["--hours", "inf"], "simulate: --hours must be at most 8,784 (a year)"),
    (["--requests", "10", "--hours", "1e6"], "simulate: --hours must be at most 8,784 (a year)"),
    (["--hours", "8784", "--requests-per-second", "1e6"],
     "simulate: 31,622,400,000,000 requests are more than the simulator writes (1,000,000,000 at most): fewer "
     "--hours, a lower --requests-per-second, or --requests"),
    (["--start", "9999-12-31T00:00:00Z"],
     "simulate: the traffic (--start, --hours) must lie between 1990 and 2100, the years ingest reads"),
    (["--start", "1989-12-31T23:00:00Z"],
     "simulate: the traffic (--start, --hours) must lie between 1990 and 2100, the years ingest reads"),
    (["--seed", "-1"], "Invalid value for '--seed': -1 is not in the range x>=0. (see 'whosaw simulate --help')"),
])
def test_options_that_would_fill_the_disk_or_crash_are_one_line(tmp_path, args, error):
    """An infinite or centuries-long span (a time stamp table per second of it: out of memory), trillions of
    requests (the disk), traffic ingest would reject as bad_ts, a negative seed (numpy refuses it): exit 2, one
    line, nothing written. Each was an internal error, or a run that never ends."""
    result = CliRunner().invoke(cli, ["simulate", "--out", str(tmp_path / "x"), *args], prog_name="whosaw")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"whosaw: error: {error}"]
    assert not (tmp_path / "x").exists()
    with pytest.raises(WhosawError, match="--seed must be 0 or more"):
        simulate(tmp_path / "y", seed=-1)


def test_refuses_a_folder_with_other_logs_but_replaces_its_own(tmp_path):
    simulate(tmp_path / "a", users=20, requests=200, seed=1, messy=True)
    simulate(tmp_path / "a", users=20, requests=200, seed=1)  # an earlier simulation is replaced
    assert not list((tmp_path / "a").glob("*web-1*"))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "requests-prod.jsonl").write_text("{}\n")
    with pytest.raises(WhosawError, match="already holds logs"):
        simulate(tmp_path / "b", users=20, requests=200, seed=1)


def test_a_simulation_replaced_in_a_folder_takes_only_its_own_files(tmp_path):
    """The summary listed every file in the folder as the simulator's, and the next simulation there removed them
    all: the user's notes, or a whosaw output folder's lists and manifest."""
    folder = tmp_path / "sim"
    (folder / "analysis").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine\n")
    (folder / "analysis" / "findings.csv").write_text("mine\n")
    first = simulate(folder, users=20, requests=200, seed=1)
    (folder / "later.txt").write_text("mine too\n")  # written between two simulations
    (folder / "ground_truth" / "review.md").write_text("mine: checked\n")  # beside the truth
    (folder / "sessions-notes.txt").write_text("mine\n")  # a name like a log's: refused, and nothing removed
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(WhosawError, match="already holds logs"):
        simulate(folder, users=20, requests=200, seed=2)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    (folder / "sessions-notes.txt").unlink()
    second = simulate(folder, users=20, requests=200, seed=2)
    for name in ("notes.txt", "analysis/findings.csv", "later.txt", "ground_truth/review.md"):
        assert (folder / name).read_text().startswith("mine"), name
        assert name not in first["files"] and name not in second["files"]
    assert set(first["files"]) == set(second["files"]) and all((folder / name).is_file() for name in second["files"])

    mine = tmp_path / "mine"  # the user's own files of the names a simulation writes are not overwritten
    (mine / "ground_truth").mkdir(parents=True)
    (mine / "ground_truth" / "viewers.csv").write_text("mine\n")
    with pytest.raises(WhosawError, match="already holds ground_truth/viewers.csv"):
        simulate(mine, users=20, requests=200, seed=1)
    (mine / "ground_truth" / "viewers.csv").unlink()
    (mine / "users.csv").write_text("mine\n")
    with pytest.raises(WhosawError, match="already holds users.csv"):
        simulate(mine, users=20, requests=200, seed=1)
    assert (mine / "users.csv").read_text() == "mine\n"

    out = tmp_path / "out"
    CliRunner().invoke(cli, ["ingest", str(folder), "--out", str(out)])
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(WhosawError, match="is a whosaw output folder"):
        simulate(out, users=20, requests=200, seed=1)
    assert sorted(p.name for p in out.iterdir()) == before


def test_window_option_moves_the_crossing(tmp_path):
    summary = simulate(
        tmp_path / "w",
        users=40,
        requests=2000,
        cancel_rate=0.05,
        seed=9,
        window="2023-03-20T06:00:00Z/2023-03-20T07:00:00Z",
    )
    for row in _truth_rows(tmp_path / "w", "exposures.csv") + _truth_rows(tmp_path / "w", "near_misses.csv"):
        assert "2023-03-20T06:00:00" <= row["ts"] < "2023-03-20T07:00:00"
    assert summary["window"]["start"].startswith("2023-03-20T06:00:00")


def test_sample_logs_are_reproducible_and_small(tmp_path):
    readme = (SAMPLE / "README.md").read_text(encoding="utf-8")
    command = re.search(r"^whosaw simulate .*$", readme, re.M).group(0)
    args = shlex.split(command)[1:]
    args[args.index("--out") + 1] = str(tmp_path / "sample")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert _hashes(tmp_path / "sample") == _hashes(SAMPLE)
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 2_000_000


def test_sample_has_every_scenario():
    summary = json.loads((SAMPLE / "ground_truth" / "summary.json").read_text())
    exposures = _truth_rows(SAMPLE, "exposures.csv")
    assert 24 <= len(exposures)
    assert any(int(r["lag"]) >= 2 for r in exposures), "a chain of two"
    assert any(r["category"] == "payment_info" for r in exposures)
    assert any(r["viewer_id"] == "" for r in exposures), "an anonymous viewer"
    assert summary["near_misses"]["by_kind"]["discarded"] > 0
    assert summary["near_misses"]["by_kind"]["failed"] > 0
    assert summary["requests"]["share_link_views"] > 0
    assert summary["sessions"]["shared_device_handoffs"] > 0
    assert summary["sessions"]["refresh_after_expire"] > 0
    assert summary["calls"]["background_writes"] > 0 and summary["calls"]["renames"] > 0
    assert summary["requests"]["stale_tab_401"] > 0
    expected, _ = reference_exposures(SAMPLE)
    assert len(expected) == len(exposures)


@pytest.mark.parametrize("which", ["messy", "messy_csv"])
def test_ingest_counts_what_messy_injected(which, request, tmp_path):
    from pipeline.ingest import ingest

    out, _ = request.getfixturevalue(which)
    result = ingest([out], tmp_path / "lake")
    report = json.loads((out / "ground_truth" / "messy.json").read_text())["files"]
    got = {Path(f["path"]).name: f for f in result.manifest["files"] if Path(f["path"]).name in report}
    assert set(got) == set(report)
    for name, stats in report.items():
        assert got[name]["lines"] == stats["lines"], name
        assert got[name]["kept"] == stats["records"], name
        assert got[name]["duplicates"] == stats["duplicates"], name
        assert got[name]["rejected"] == stats["rejected"], name


def test_cli_simulate_keeps_a_zero_cancel_rate(tmp_path):
    """--cancel-rate 0 is a control incident: no call is abandoned, so nothing crosses (0 is not "not given")."""
    out = tmp_path / "control"
    result = CliRunner().invoke(
        cli, ["simulate", "--out", str(out), "--users", "30", "--requests", "800", "--cancel-rate", "0"]
    )
    assert result.exit_code == 0, result.output
    truth = json.loads((out / "ground_truth" / "summary.json").read_text(encoding="utf-8"))
    assert truth["counts"]["exposures"] == 0
    statuses = {json.loads(line)["status"] for line in (out / "cache.jsonl").read_text().splitlines()}
    assert not statuses & {"cancelled", "timeout"}
