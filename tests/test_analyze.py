"""The exposure analysis on real DuckDB over real hive-partitioned Parquet: hand-made cases for every rule of
docs/design.md, then the simulator's incidents (through the real ingest) against their ground truth."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner
from lakes import KEYS, T, held_by_another_thread, requests_for, write_kind, write_lake

from pipeline.analyze import (
    BUCKET_STEPS,
    MAX_BUCKETS,
    analyze,
    bucket_seconds_for,
    connect,
    java_pattern,
    key_rule_sql,
    load_steps,
    quote_spark,
    register_inputs,
    run_steps,
)
from pipeline.cli import cli
from pipeline.config import Window, config_from_dict
from pipeline.errors import WhosawError
from pipeline.ingest import ingest
from pipeline.manifest import LOCK_NAME, load_manifest, save_manifest
from pipeline.safecsv import read_safe_csv
from pipeline.schema import EXPOSURE_COLUMNS
from pipeline.simulate import simulate
from pipeline.spark import compare, spark_available


def call(ts, rid, key, status="ok", op="GET", conn="c1", host="h1", **extra):
    return {"ts": ts, "request_id": rid, "op": op, "key": key, "status": status, "host": host,
            "conn_id": conn, **extra}


def run_case(tmp_path: Path, cache, users=None, *, requests=None, sessions=(), keys=KEYS, tables=None,
             window=None, config_extra=None):
    """Write the lake, analyse it; return (summary, exposures DataFrame)."""
    out = tmp_path / "out"
    if requests is None:
        requests = requests_for(cache, users or {})
    write_lake(out, requests=requests, cache=cache, sessions=sessions)
    raw = {"keys": keys, **(config_extra or {})}
    if tables:
        raw["tables"] = {}
        for name, frame in tables.items():
            path = tmp_path / f"{name}.csv"
            pd.DataFrame(frame).to_csv(path, index=False)
            raw["tables"][name] = path.name
    cfg = config_from_dict(raw, tmp_path / "incident.toml")
    summary = analyze(out, cfg, window=window, progress=False)
    exposures = pd.read_parquet(out / "exposures.parquet")
    return summary, exposures


def compare_lake(
    tmp_path: Path, window: str = "all", keys: list[dict[str, Any]] = KEYS, tables: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The lake run_case wrote, analysed by DuckDB and by Spark (pipeline.spark.compare) with the ``keys`` rules
    and the side ``tables`` run_case wrote (``<name>.csv``); the two summaries are the same."""
    raw = {"keys": keys, "tables": {name: f"{name}.csv" for name in tables}}
    result = compare(tmp_path / "out", config_from_dict(raw, tmp_path / "incident.toml"), window=window)
    assert result["summary_differences"] == []  # and every figure of summary.json, in every such case
    return result


def pairs(exposures: pd.DataFrame) -> set[tuple]:
    """(request_id, viewer_id, owner_id, category, evidence) per exposure; None for an anonymous viewer."""
    return {
        (r.request_id, None if pd.isna(r.viewer_id) else r.viewer_id, r.owner_id, r.category, r.evidence)
        for r in exposures.itertuples()
    }


# ----------------------------------------------------------------------------------------- connection tier

def test_two_deep_chain_each_read_gets_the_oldest_unread_reply(tmp_path):
    cache = [
        call(T(0, 1), "ra", "user:alice:titles", "cancelled"),
        call(T(0, 2), "rb", "billing:bob", "timeout"),
        call(T(0, 3), "rc", "user:carol:titles"),   # gets alice's titles
        call(T(0, 4), "rd", "user:dave:titles"),    # gets bob's billing
        call(T(0, 5), "re", "user:erin:titles"),    # gets carol's titles (reply 3)
    ]
    users = {"ra": "alice", "rb": "bob", "rc": "carol", "rd": "dave", "re": "erin"}
    summary, exp = run_case(tmp_path, cache, users)
    assert pairs(exp) == {
        ("rc", "carol", "alice", "conversation_titles", "connection"),
        ("rd", "dave", "bob", "payment_info", "connection"),
        ("re", "erin", "carol", "conversation_titles", "connection"),
    }
    row = exp.set_index("request_id").loc["rd"]
    assert (row.value_key, row.severity, row.reply_request_id, row.owner_by_key) == (
        "billing:bob", "high", "rb", "dave")
    assert summary["exposures"] == 3 and summary["crossed_replies"] == 3
    assert summary["exposures_by_category"] == {"conversation_titles": 2, "payment_info": 1}
    assert summary["exposures_by_severity"] == {"high": 1, "low": 2}
    assert summary["affected_owners"] == 3 and summary["viewers"] == 3


def test_one_connections_lines_at_one_ts_across_a_rotation_keep_the_files_order(tmp_path):
    """logrotate names the older file cache.jsonl.1 and the current one cache.jsonl, which sort the other way.
    alice's call, the rotated file's last line, was cancelled in the millisecond bob's read, the new file's first
    line, completed: ordered by file name, bob's read came first and got its own reply, and alice's titles went
    to carol instead of bob (two wrong rows: a missed victim, a wrong one)."""
    old, new = "/logs/cache.jsonl.1", "/logs/cache.jsonl"
    cache = [
        call(T(0, 0), "r0", "user:zed:titles", source_file=old, source_line=1),
        call(T(0, 1), "ra", "user:alice:titles", "cancelled", source_file=old, source_line=2),
        call(T(0, 1), "rb", "user:bob:titles", source_file=new, source_line=1),
        call(T(0, 2), "rc", "user:carol:titles", source_file=new, source_line=2),
    ]
    users = {"r0": "zed", "ra": "alice", "rb": "bob", "rc": "carol"}
    _, exp = run_case(tmp_path, cache, users)
    assert pairs(exp) == {
        ("rb", "bob", "alice", "conversation_titles", "connection"),
        ("rc", "carol", "bob", "conversation_titles", "connection"),
    }


def test_an_auto_window_over_crossed_replies_it_cannot_set_apart_does_not_say_there_were_none(tmp_path):
    """Every cache call in the bucket that holds the crossed reply: no stretch stands out, and the summary said
    "no crossed replies in the logs" beside crossed_replies 1."""
    cache = [call(T(0, 1), "ra", "user:alice:titles", "cancelled"), call(T(0, 2), "rb", "user:bob:titles")]
    summary, exp = run_case(tmp_path, cache, {"ra": "alice", "rb": "bob"}, window="auto")
    assert summary["crossed_replies"] == 1 and len(exp) == 1
    assert summary["window"]["start"] is None
    assert summary["window"]["description"].startswith("auto: no window: the 1 crossed reply cannot be told from")
    quiet = [call(T(0, 1), "ra", "user:alice:titles"), call(T(0, 2), "rb", "user:bob:titles")]
    summary, _ = run_case(tmp_path / "quiet", quiet, {"ra": "alice", "rb": "bob"}, window="auto")
    assert summary["window"]["description"] == "auto: no crossed replies in the logs; all time is kept"


def test_connections_are_host_and_conn_id_together(tmp_path):
    cache = [
        call(T(0, 1), "ra", "user:alice:titles", "cancelled", host="h1", conn="7"),
        call(T(0, 2), "rb", "user:bob:titles", host="h2", conn="7"),  # another host's connection 7: clean
        call(T(0, 3), "rc", "user:carol:titles", host="h1", conn="8"),  # another connection on h1: clean
    ]
    summary, exp = run_case(tmp_path, cache, {"ra": "alice", "rb": "bob", "rc": "carol"})
    assert exp.empty and summary["exposures"] == 0 and summary["crossed_replies"] == 0


def test_reconnect_clears_the_queue(tmp_path):
    cache = [
        call(T(0, 1), "ra", "user:alice:titles", "cancelled"),
        call(T(0, 2), None, None, op="RECONNECT"),
        call(T(0, 3), "rb", "user:bob:titles"),  # a clean connection: bob's own reply
        call(T(0, 4), "rc", "user:carol:titles", "cancelled"),
        call(T(0, 5), "rd", "user:dave:titles", "error"),  # reads carol's reply, fails, resets
        call(T(0, 6), "re", "user:erin:titles"),  # clean again
    ]
    users = {"ra": "alice", "rb": "bob", "rc": "carol", "rd": "dave", "re": "erin"}
    summary, exp = run_case(tmp_path, cache, users)
    assert exp.empty
    assert summary["exposures"] == 0
    near = pd.read_parquet(tmp_path / "out" / "near_misses.parquet")
    # alice's reply was discarded by the reconnect; dave's error read received carol's reply and failed,
    # and its reset discarded dave's own reply, still queued behind carol's
    assert sorted(zip(near.kind, near.owner_id, near.viewer_id.fillna("-"), strict=True)) == [
        ("discarded", "alice", "-"), ("discarded", "dave", "-"), ("failed", "carol", "dave")]
    assert summary["near_misses"] == {"total": 3, "by_kind": {"discarded": 2, "failed": 1},
                                      "by_category": {"conversation_titles": 3}, "outside_window": 0}


def test_near_misses_not_data_and_failed_requests(tmp_path):
    cache = [
        call(T(0, 1), "ra", "user:alice:titles", "cancelled"),
        call(T(0, 2), "rb", "user:bob:titles", op="SET"),     # a write reads alice's titles: not data
        call(T(0, 3), "rc", "user:carol:titles"),             # gets bob's SET "OK": not data
        call(T(0, 4), "rd", "billing:dave", "cancelled", conn="c2"),
        call(T(0, 5), "re", "user:erin:titles", conn="c2"),   # gets dave's billing, but the request 500s
    ]
    users = {"ra": "alice", "rb": "bob", "rc": "carol", "rd": "dave", "re": "erin"}
    requests = requests_for(cache, users)
    for row in requests:
        if row["request_id"] == "re":
            row["status"] = 503
    summary, exp = run_case(tmp_path, cache, requests=requests)
    assert exp.empty
    near = pd.read_parquet(tmp_path / "out" / "near_misses.parquet").sort_values("ts")
    assert list(zip(near.request_id, near.kind, near.category, strict=True)) == [
        ("rb", "not-data", "conversation_titles"),
        ("rc", "not-data", "conversation_titles"),
        ("re", "failed", "payment_info"),
    ]
    assert summary["near_misses"]["by_category"] == {"conversation_titles": 2, "payment_info": 1}


def test_a_crossed_reply_in_a_request_that_answered_5xx_failed_before_it_was_not_data(tmp_path):
    """'failed' before 'not-data' (design.md, the simulator's ground truth): a GET that got a SET's "OK", or a SET
    that got a stale GET reply, in a request that answered 5xx, failed; it was labelled 'not-data'."""
    cache = [
        call(T(0, 1), "ra", "user:alice:titles", "cancelled", op="SET"),
        call(T(0, 2), "rb", "user:bob:titles"),  # gets alice's SET "OK"; rb answers 500
        call(T(0, 3), "rc", "billing:carol", "cancelled", conn="c2"),
        call(T(0, 4), "rd", "user:dave:titles", op="SET", conn="c2"),  # gets carol's billing; rd answers 503
    ]
    requests = requests_for(cache, {"ra": "alice", "rb": "bob", "rc": "carol", "rd": "dave"})
    for row in requests:
        row["status"] = {"rb": 500, "rd": 503}.get(row["request_id"], 200)
    summary, exp = run_case(tmp_path, cache, requests=requests)
    assert exp.empty
    near = pd.read_parquet(tmp_path / "out" / "near_misses.parquet").sort_values("ts")
    assert list(zip(near.request_id, near.kind, strict=True)) == [("rb", "failed"), ("rd", "failed")]
    assert summary["near_misses"]["by_kind"] == {"failed": 2}


# ----------------------------------------------------------------------------------------- viewer rule

def test_session_refreshed_after_expiry(tmp_path):
    # bob's titles reach alice's session three times: while held, after it expired, after it was refreshed
    cache = [
        call(T(0, 30), "r1", "user:alice:titles", value_owner="bob"),
        call(T(2), "r2", "user:alice:titles", value_owner="bob"),
        call(T(4), "r3", "user:alice:titles", value_owner="bob"),
    ]
    sessions = [
        {"ts": T(0), "session_id": "S", "user_id": "alice", "event": "login"},
        {"ts": T(1), "session_id": "S", "user_id": "alice", "event": "expire"},
        {"ts": T(3), "session_id": "S", "user_id": "alice", "event": "refresh"},
    ]
    requests = requests_for(cache, {"r1": "alice", "r2": "alice", "r3": "alice"},
                            sessions={"r1": "S", "r2": "S", "r3": "S"})
    summary, exp = run_case(tmp_path, cache, requests=requests, sessions=sessions)
    rows = exp.set_index("request_id")
    assert rows.loc["r1", "viewer_id"] == "alice" and rows.loc["r1", "viewer_kind"] == "session"
    assert pd.isna(rows.loc["r2", "viewer_id"]) and rows.loc["r2", "viewer_kind"] == "anonymous"
    assert rows.loc["r3", "viewer_id"] == "alice" and rows.loc["r3", "viewer_kind"] == "session"
    assert set(exp.evidence) == {"value_owner"}
    assert summary["viewers"] == 1 and summary["anonymous_viewer_sessions"] == 1


def _logout_instant_case():
    """A log in whole seconds: alice's logout request reads her own titles in the second of her logout (r1, the
    logout at that instant), then an anonymous tab of S reads them a second later (r2). S2's only event is a
    logout, at the instant of r3 (nobody held S2 before it: the request's user, carol, reading her own titles)."""
    cache = [
        call(T(2), "r1", "user:alice:titles", value_owner="alice", conn="c1"),
        call(T(2, 1), "r2", "user:alice:titles", value_owner="alice", conn="c2"),
        call(T(3), "r3", "user:carol:titles", value_owner="carol", conn="c3"),
    ]
    sessions = [
        {"ts": T(0), "session_id": "S", "user_id": "alice", "event": "login"},
        {"ts": T(2), "session_id": "S", "user_id": "alice", "event": "logout"},
        {"ts": T(3), "session_id": "S2", "user_id": "carol", "event": "logout"},
    ]
    requests = requests_for(cache, {"r1": "alice", "r2": "alice", "r3": "carol"},
                            sessions={"r1": "S", "r2": "S", "r3": "S2"})
    for r in requests:  # each request logged at its read's second
        r["ts"] = {"r1": T(2), "r2": T(2, 1), "r3": T(3)}[r["request_id"]]
    return cache, requests, sessions


def test_a_read_at_the_instant_of_a_logout_is_still_the_holders(tmp_path):
    """The session ends after the instant of its logout: read as after it, alice's own titles in her logout
    request were an exposure to an anonymous viewer, and she was no active user in a window of that second."""
    cache, requests, sessions = _logout_instant_case()
    summary, exp = run_case(tmp_path, cache, requests=requests, sessions=sessions)
    assert pairs(exp) == {("r2", None, "alice", "conversation_titles", "value_owner")}
    _, exp = run_case(tmp_path, cache, requests=requests, sessions=sessions, window=f"{T(2)}/{T(2, 1)}")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert exp.empty and summary["active_users"] == 1 and summary["active_sessions"] == 1


def _ends_at_one_instant_case():
    """Two ends of one session at one instant, as a log in whole seconds writes them: S's logout request expires
    the token and logs the logout (expire, then logout); T's logout is logged twice, with and without the user.
    alice (S) and bob (T) read their own titles in that second (r1, r2), then a tab of each reads them a second
    later (r3, r4). U: carol signed in and out in one second (login, expire, logout) and read her titles in it (r5).
    V: a logout, then dave's login, then an expire in one second: dave held it then, and read his titles (r6)."""
    cache = [
        call(T(2), "r1", "user:alice:titles", value_owner="alice", conn="c1"),
        call(T(2), "r2", "user:bob:titles", value_owner="bob", conn="c2"),
        call(T(2, 1), "r3", "user:alice:titles", value_owner="alice", conn="c3"),
        call(T(2, 1), "r4", "user:bob:titles", value_owner="bob", conn="c4"),
        call(T(2), "r5", "user:carol:titles", value_owner="carol", conn="c5"),
        call(T(2), "r6", "user:dave:titles", value_owner="dave", conn="c6"),
    ]
    sessions = [
        {"ts": T(0), "session_id": "S", "user_id": "alice", "event": "login"},
        {"ts": T(2), "session_id": "S", "user_id": "alice", "event": "expire"},
        {"ts": T(2), "session_id": "S", "user_id": "alice", "event": "logout"},
        {"ts": T(0), "session_id": "T", "user_id": "bob", "event": "login"},
        {"ts": T(2), "session_id": "T", "user_id": "bob", "event": "logout"},
        {"ts": T(2), "session_id": "T", "user_id": None, "event": "logout"},
        {"ts": T(2), "session_id": "U", "user_id": "carol", "event": "login"},
        {"ts": T(2), "session_id": "U", "user_id": "carol", "event": "expire"},
        {"ts": T(2), "session_id": "U", "user_id": "carol", "event": "logout"},
        {"ts": T(0), "session_id": "V", "user_id": "erin", "event": "login"},
        {"ts": T(2), "session_id": "V", "user_id": "erin", "event": "logout"},
        {"ts": T(2), "session_id": "V", "user_id": "dave", "event": "login"},
        {"ts": T(2), "session_id": "V", "user_id": "dave", "event": "expire"},
    ]
    users = {"r1": "alice", "r2": "bob", "r3": "alice", "r4": "bob", "r5": "carol", "r6": "dave"}
    requests = requests_for(cache, users, sessions={"r1": "S", "r2": "T", "r3": "S", "r4": "T", "r5": "U",
                                                    "r6": "V"})
    return cache, requests, sessions


def test_a_read_at_the_instant_of_two_ends_of_its_session_is_still_the_holders(tmp_path):
    """Every end of a session at one instant takes effect just after it: read as after the first of them, alice's,
    bob's, carol's and dave's own titles in the second of their logout were exposures to an anonymous viewer."""
    cache, requests, sessions = _ends_at_one_instant_case()
    summary, exp = run_case(tmp_path, cache, requests=requests, sessions=sessions)
    assert pairs(exp) == {
        ("r3", None, "alice", "conversation_titles", "value_owner"),
        ("r4", None, "bob", "conversation_titles", "value_owner"),
    }
    assert summary["anonymous_viewer_sessions"] == 2


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
@pytest.mark.parametrize(("case", "exposures"), [(_logout_instant_case, 1), (_ends_at_one_instant_case, 2)])
def test_spark_ends_a_session_after_the_instant_of_its_ends_as_duckdb_does(tmp_path, case, exposures):
    cache, requests, sessions = case()
    run_case(tmp_path, cache, requests=requests, sessions=sessions)
    result = compare_lake(tmp_path, window="all")
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": exposures, "spark": exposures}


def test_session_events_at_one_ts_across_a_rotation_keep_the_files_order(tmp_path):
    """The later line wins a tie, and the later line of a rotated log is in the current file (sessions.jsonl),
    which sorts before the older sessions.jsonl.1: alice's logout beat bob's login at the same instant, and the
    titles bob was shown went to an anonymous viewer."""
    old, new = "/logs/sessions.jsonl.1", "/logs/sessions.jsonl"
    cache = [call(T(6), "r1", "user:alice:titles", value_owner="alice")]
    sessions = [
        {"ts": T(0), "session_id": "S", "user_id": "alice", "event": "login", "source_file": old, "source_line": 1},
        {"ts": T(5), "session_id": "S", "user_id": "alice", "event": "logout", "source_file": old, "source_line": 2},
        {"ts": T(5), "session_id": "S", "user_id": "bob", "event": "login", "source_file": new, "source_line": 1},
    ]
    requests = requests_for(cache, {"r1": "bob"}, sessions={"r1": "S"})
    _, exp = run_case(tmp_path, cache, requests=requests, sessions=sessions)
    assert pairs(exp) == {("r1", "bob", "alice", "conversation_titles", "value_owner")}


def test_exposures_whose_request_names_another_user_than_the_session_holder_are_counted(tmp_path):
    """The session's holder is the viewer (SPEC) whatever user_id the request carries. Where they disagree on an
    exposure, nothing said so: two users on one session id made alice's own read an exposure of alice to bob, a
    tab left open after a logout made carol's an exposure to an anonymous viewer. Counted, with how many of them
    came in the owner's own request."""
    cache = [
        call(T(1), "r1", "user:alice:titles", value_owner="alice"),  # alice's own read, S hers: nothing
        call(T(3), "r2", "user:alice:titles", value_owner="alice"),  # S is bob's since T(2)
        call(T(3), "r3", "user:carol:titles", value_owner="carol", conn="c2"),  # S2 logged out at T(1)
        call(T(3), "r4", "user:erin:titles", value_owner="frank", conn="c3"),  # dave's request, erin's session
    ]
    sessions = [
        {"ts": T(0), "session_id": "S", "user_id": "alice", "event": "login"},
        {"ts": T(2), "session_id": "S", "user_id": "bob", "event": "login"},
        {"ts": T(0), "session_id": "S2", "user_id": "carol", "event": "login"},
        {"ts": T(1), "session_id": "S2", "user_id": "carol", "event": "logout"},
        {"ts": T(0), "session_id": "S3", "user_id": "erin", "event": "login"},
    ]
    requests = requests_for(cache, {"r1": "alice", "r2": "alice", "r3": "carol", "r4": "dave"},
                            sessions={"r1": "S", "r2": "S", "r3": "S2", "r4": "S3"})
    summary, exp = run_case(tmp_path, cache, requests=requests, sessions=sessions)
    assert pairs(exp) == {
        ("r2", "bob", "alice", "conversation_titles", "value_owner"),
        ("r3", None, "carol", "conversation_titles", "value_owner"),
        ("r4", "erin", "frank", "conversation_titles", "value_owner"),
    }
    assert summary["request_user_differs"] == {"exposures": 3, "request_user_is_owner": 2}
    result = CliRunner().invoke(cli, ["analyze", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert ("note: 3 exposures came in requests whose user_id is not the viewer the sessions log gives (2 of them "
            "the owner's own request, by the requests log)") in result.output


def test_shared_device_new_session_is_the_new_person(tmp_path):
    # One device: alice logs in and out on S1; bob logs in on S2. The device's requests still carry
    # user_id=alice (a stale cookie); the session log says who held each session.
    cache = [
        call(T(1), "r1", "user:alice:titles", value_owner="alice"),  # alice, her own data
        call(T(3), "r2", "user:alice:titles", value_owner="alice"),  # S1 after logout: anonymous
        call(T(5), "r3", "user:alice:titles", value_owner="alice"),  # S2: bob sees alice's titles
    ]
    sessions = [
        {"ts": T(0), "session_id": "S1", "user_id": "alice", "event": "login"},
        {"ts": T(2), "session_id": "S1", "user_id": "alice", "event": "logout"},
        {"ts": T(4), "session_id": "S2", "user_id": "bob", "event": "login"},
    ]
    requests = requests_for(cache, {"r1": "alice", "r2": "alice", "r3": "alice"},
                            sessions={"r1": "S1", "r2": "S1", "r3": "S2"})
    summary, exp = run_case(tmp_path, cache, requests=requests, sessions=sessions)
    assert pairs(exp) == {
        ("r2", None, "alice", "conversation_titles", "value_owner"),
        ("r3", "bob", "alice", "conversation_titles", "value_owner"),
    }
    assert summary["active_users"] == 2  # alice (r1) and bob (r3); r2 is anonymous


def test_session_event_without_a_user_names_the_request_user_as_the_source(tmp_path):
    # S's login carries no user_id: the viewer is the request's user_id (design.md "Viewer"), so viewer_kind
    # must say 'request', not 'session' (the sessions log named nobody); T's login names carol: 'session'
    cache = [
        call(T(1), "r1", "user:alice:titles", value_owner="alice", conn="c1"),
        call(T(2), "r2", "user:alice:titles", value_owner="alice", conn="c2"),
    ]
    sessions = [
        {"ts": T(0), "session_id": "S", "user_id": None, "event": "login"},
        {"ts": T(0), "session_id": "T", "user_id": "carol", "event": "login"},
    ]
    requests = requests_for(cache, {"r1": "bob", "r2": "bob"}, sessions={"r1": "S", "r2": "T"})
    _, exp = run_case(tmp_path, cache, requests=requests, sessions=sessions)
    rows = exp.set_index("request_id")
    assert rows.loc["r1", "viewer_id"] == "bob" and rows.loc["r1", "viewer_kind"] == "request"
    assert rows.loc["r2", "viewer_id"] == "carol" and rows.loc["r2", "viewer_kind"] == "session"


def _refresh_case():
    """bob signs in on the shared device (session S) after alice; the requests still carry alice's stale user_id.
    S's refreshes name nobody: they renew bob's session (also after it expired), so bob saw alice's titles (r1,
    r2). U: a login and a refresh that name nobody: the request's user, carol (r3). V: dave signed out, then a
    refresh that names nobody: no longer dave's session but the request's user's, erin, who saw dave's titles (r4;
    still taken for dave's session, it was no exposure)."""
    cache = [
        call(T(2), "r1", "user:alice:titles", value_owner="alice", conn="c1"),
        call(T(5), "r2", "user:alice:titles", value_owner="alice", conn="c2"),
        call(T(6), "r3", "user:alice:titles", value_owner="alice", conn="c3"),
        call(T(6), "r4", "user:dave:titles", value_owner="dave", conn="c4"),
    ]
    sessions = [
        {"ts": T(0), "session_id": "S", "user_id": "bob", "event": "login"},
        {"ts": T(1), "session_id": "S", "user_id": None, "event": "refresh"},
        {"ts": T(3), "session_id": "S", "user_id": None, "event": "expire"},
        {"ts": T(4), "session_id": "S", "user_id": None, "event": "refresh"},
        {"ts": T(0), "session_id": "U", "user_id": None, "event": "login"},
        {"ts": T(1), "session_id": "U", "user_id": None, "event": "refresh"},
        {"ts": T(0), "session_id": "V", "user_id": "dave", "event": "login"},
        {"ts": T(1), "session_id": "V", "user_id": None, "event": "logout"},
        {"ts": T(4), "session_id": "V", "user_id": None, "event": "refresh"},
    ]
    requests = requests_for(cache, {"r1": "alice", "r2": "alice", "r3": "carol", "r4": "erin"},
                            sessions={"r1": "S", "r2": "S", "r3": "U", "r4": "V"})
    return cache, requests, sessions


def test_a_refresh_without_a_user_keeps_the_holder_the_session_named(tmp_path):
    cache, requests, sessions = _refresh_case()
    _, exp = run_case(tmp_path, cache, requests=requests, sessions=sessions)
    rows = exp.set_index("request_id")
    assert sorted(rows.index) == ["r1", "r2", "r3", "r4"]
    assert rows.loc[["r1", "r2"], "viewer_id"].tolist() == ["bob", "bob"]
    assert set(rows.loc[["r1", "r2"], "viewer_kind"]) == {"session"}
    assert rows.loc["r3", "viewer_id"] == "carol" and rows.loc["r3", "viewer_kind"] == "request"
    assert rows.loc["r4", "viewer_id"] == "erin" and rows.loc["r4", "viewer_kind"] == "request"


def test_without_sessions_log_the_request_user_is_the_viewer(tmp_path):
    cache = [call(T(1), "r1", "user:alice:titles", value_owner="bob")]
    requests = requests_for(cache, {"r1": "alice"}, sessions={"r1": "S-unknown"})
    _, exp = run_case(tmp_path, cache, requests=requests)
    assert exp.viewer_id.tolist() == ["alice"] and exp.viewer_kind.tolist() == ["request"]


def test_anonymous_viewer_is_kept_and_reported(tmp_path):
    cache = [
        call(T(0, 1), "ra", "billing:alice", "cancelled"),
        call(T(0, 2), "rb", "public:motd"),  # an anonymous page gets alice's billing details
    ]
    requests = requests_for(cache, {"ra": "alice", "rb": None})
    requests[1]["session_id"] = None
    summary, exp = run_case(tmp_path, cache, requests=requests)
    assert pairs(exp) == {("rb", None, "alice", "payment_info", "connection")}
    assert exp.viewer_kind.tolist() == ["anonymous"]
    assert summary["viewers"] == 0 and summary["anonymous_viewer_sessions"] == 1
    assert summary["affected_owners"] == 1


def test_read_whose_request_is_missing_is_counted_not_dropped(tmp_path):
    cache = [
        call(T(0, 1), "ra", "user:alice:titles", "cancelled"),
        call(T(0, 2), "r-lost", "user:bob:titles"),  # no such request in the requests log
        call(T(0, 3), "r-lost2", "user:carol:titles", conn="c2"),  # missing too, but not crossed
    ]
    requests = requests_for(cache[:1], {"ra": "alice"})
    summary, exp = run_case(tmp_path, cache, requests=requests)
    assert exp.request_id.tolist() == ["r-lost"]
    assert exp.viewer_kind.tolist() == ["unknown"] and exp.owner_id.tolist() == ["alice"]
    assert summary["unknown_viewer_reads"] == 2 and summary["unknown_viewer_exposures"] == 1


def test_duplicated_request_lines_never_inflate_counts(tmp_path):
    cache = [call(T(0, 1), "ra", "user:alice:titles", "cancelled"), call(T(0, 2), "rb", "user:bob:titles")]
    requests = requests_for(cache, {"ra": "alice", "rb": "bob"})
    requests.append({**requests[1], "source_line": 99})  # a re-shipped duplicate line
    summary, exp = run_case(tmp_path, cache, requests=requests)
    assert len(exp) == 1 and summary["exposures"] == 1 and summary["requests"] == 2


# ----------------------------------------------------------------------------------------- grants

def test_grants_exclude_legitimate_views(tmp_path):
    cache = [
        call(T(1), "r1", "user:alice:titles", conn="c1"),   # bob reads alice's titles: granted (shared link)
        call(T(2), "r2", "billing:alice", conn="c2"),       # ... her billing: the grant is for titles only
        call(T(20), "r3", "user:alice:titles", conn="c3"),  # ... titles after the grant ended
        call(T(3), "r4", "conv:c9", conn="c4"),             # anyone may see conversation c9 (team space)
        call(T(4), "r5", "billing:carol", conn="c5"),       # support agent sam: every category, open ended
    ]
    users = {"r1": "bob", "r2": "bob", "r3": "bob", "r4": "dave", "r5": "sam"}
    tables = {
        "grants": [
            {"owner_id": "alice", "viewer_id": "bob", "category": "conversation_titles",
             "valid_from": T(0), "valid_to": T(10)},
            {"owner_id": "erin", "viewer_id": "*", "category": "conversation_content",
             "valid_from": "", "valid_to": ""},
            {"owner_id": "carol", "viewer_id": "sam", "category": "*", "valid_from": T(0), "valid_to": ""},
        ],
        "ownership": [{"resource_id": "c9", "owner_id": "erin"}],
    }
    summary, exp = run_case(tmp_path, cache, users, tables=tables)
    assert pairs(exp) == {
        ("r2", "bob", "alice", "payment_info", "key"),
        ("r3", "bob", "alice", "conversation_titles", "key"),
    }


def test_a_grant_of_every_owner_covers_support_staff_and_a_grant_of_everything_is_refused(tmp_path):
    """owner_id '*': support staff may see every customer's data (it was ignored: sam's work became exposures
    naming every customer he helped). owner, viewer and category all '*' would excuse everything: refused."""
    cache = [
        call(T(1), "r1", "billing:carol", conn="c1"),      # support agent sam, during his shift: granted
        call(T(2), "r2", "user:alice:titles", conn="c2"),  # ... titles: granted too (every category)
        call(T(12), "r3", "billing:carol", conn="c3"),     # ... after his shift: an exposure
        call(T(3), "r4", "billing:alice", conn="c4"),      # bob is no support agent: an exposure
    ]
    users = {"r1": "sam", "r2": "sam", "r3": "sam", "r4": "bob"}
    shift = {"owner_id": "*", "viewer_id": "sam", "category": "*", "valid_from": T(0), "valid_to": T(10)}
    summary, exp = run_case(tmp_path / "a", cache, users, tables={"grants": [shift]})
    assert pairs(exp) == {("r3", "sam", "carol", "payment_info", "key"), ("r4", "bob", "alice", "payment_info", "key")}
    everything = {"owner_id": "*", "viewer_id": "*", "category": "", "valid_from": "", "valid_to": ""}
    with pytest.raises(WhosawError, match=r"tables.grants: 1 row\(s\) of grants.csv grant every owner's data"):
        run_case(tmp_path / "b", cache, users, tables={"grants": [shift, everything]})


def test_a_side_table_row_that_names_no_owner_or_viewer_is_refused(tmp_path):
    """A grant without viewer_id (meant as "anyone"?) or owner_id excused nothing, and an ownership row without
    owner_id gave its resource no owner, with no word: refused with the count, exit 2 (a blank row is no row)."""
    cache = [call(T(1), "r1", "billing:carol", conn="c1")]
    blank = {"owner_id": "", "viewer_id": "", "category": "", "valid_from": "", "valid_to": ""}
    no_viewer = {**blank, "owner_id": "carol", "category": "payment_info"}
    with pytest.raises(WhosawError, match=r"^tables.grants: 1 row\(s\) of grants.csv leave owner_id or viewer_id empty "
                       r"\(write '\*' for every owner or for anyone\)$"):
        run_case(tmp_path / "a", cache, {"r1": "bob"}, tables={"grants": [blank, no_viewer]})
    rows = [{"resource_id": "c9", "owner_id": ""}, {"resource_id": "c10", "owner_id": "erin"}]
    with pytest.raises(WhosawError, match=r"^tables.ownership: 1 row\(s\) of ownership.csv leave resource_id or "
                       r"owner_id empty$"):
        run_case(tmp_path / "b", cache, {"r1": "bob"}, tables={"ownership": rows})
    _, exp = run_case(tmp_path / "c", cache, {"r1": "bob"}, tables={"grants": [blank]})
    assert pairs(exp) == {("r1", "bob", "carol", "payment_info", "key")}


def _shared_conversation_case():
    """erin shares her conversation 9 with anyone (a share link: resource_id 9, written 9.0 by a pandas export);
    conversation 10 is hers too, not shared."""
    cache = [
        call(T(1), "r1", "conv:9", conn="c1"),                   # an anonymous visitor opens the link: granted
        call(T(2), "r2", "conv:10", status="cancelled", conn="c2"),  # erin's own read of 10, abandoned ...
        call(T(3), "r3", "public:models", conn="c2"),             # ... reaches the next visitor: an exposure
        call(T(4), "r4", "billing:erin", conn="c4"),              # dave: her billing, not the conversation
    ]
    requests = requests_for(cache, {"r1": None, "r2": "erin", "r3": None, "r4": "dave"})
    tables = {
        "ownership": [{"resource_id": "9", "owner_id": "erin"}, {"resource_id": "10", "owner_id": "erin"}],
        "grants": [{"owner_id": "erin", "viewer_id": "*", "category": "*", "resource_id": "9.0",
                    "valid_from": "", "valid_to": ""}],
    }
    return cache, requests, tables


def test_a_grant_of_one_resource_excuses_that_resource_only(tmp_path):
    """A share link shares one conversation, but a grant could only name a category: written as erin's
    conversation_content (or everything) to anyone, it excused the crossed reply of her conversation 10 that reached an
    anonymous visitor, a victim off every list. A grant's optional resource_id narrows it to the values of that
    resource (the resource group of the key the value was written under)."""
    cache, requests, tables = _shared_conversation_case()
    _, exp = run_case(tmp_path, cache, requests=requests, tables=tables)
    assert pairs(exp) == {
        ("r3", None, "erin", "conversation_content", "connection"),
        ("r4", "dave", "erin", "payment_info", "key"),
    }
    # owner, viewer and category '*' is no grant of everything when it names one resource
    anyone = {**tables["grants"][0], "owner_id": "*"}
    _, exp = run_case(tmp_path / "anyone", cache, requests=requests, tables={**tables, "grants": [anyone]})
    assert {r[0] for r in pairs(exp)} == {"r3", "r4"}


def test_a_grant_of_uncategorized_data_is_no_grant_of_an_unknown_category(tmp_path):
    """A value_owner read of a key no rule matches is 'uncategorized', and a grant of that category excuses it: the
    summary named such a grant under grants_of_unknown_category, and the console and report said it excused
    nothing."""
    cache = [call(T(1), "r1", "misc:42", value_owner="alice", conn="c1"),
             call(T(2), "r2", "misc:43", value_owner="alice", conn="c2")]
    grant = {"owner_id": "alice", "viewer_id": "bob", "category": "uncategorized", "valid_from": "", "valid_to": ""}
    summary, exp = run_case(tmp_path, cache, {"r1": "bob", "r2": "carol"}, tables={"grants": [grant]})
    assert pairs(exp) == {("r2", "carol", "alice", "uncategorized", "value_owner")}
    assert summary["grants_of_unknown_category"] == {}


def test_crossed_replies_served_with_data_of_no_known_owner_are_counted(tmp_path):
    """A crossed reply of a key no rule matches, or of a resource the ownership table lacks, that reaches a viewer
    names no owner: neither an exposure nor a near miss, it showed only inside crossed_replies, so a key rule or an
    ownership table that missed a family hid its victims without a trace. Counted apart; a public key's reply is
    known to be nobody's and is not."""
    cache = [
        call(T(0, 1), "ra", "misc:42", "cancelled", conn="c1"),  # no rule matches misc:
        call(T(0, 2), "rb", "user:bob:titles", conn="c1"),
        call(T(0, 3), "rc", "conv:c404", "cancelled", conn="c2"),  # a resource nobody owns in the table
        call(T(0, 4), "rd", "user:bob:titles", conn="c2"),
        call(T(0, 5), "re", "public:motd", "cancelled", conn="c3"),  # nobody's data
        call(T(0, 6), "rf", "user:bob:titles", conn="c3"),
        call(T(0, 7), "rg", "user:alice:titles", "cancelled", conn="c4"),  # alice's: an exposure
        call(T(0, 8), "rh", "user:bob:titles", conn="c4"),
    ]
    users = {"ra": "alice", "rc": "alice", "re": "alice", "rg": "alice"} | {r: "bob" for r in ("rb", "rd", "rf", "rh")}
    ownership = {"ownership": [{"resource_id": "c1", "owner_id": "alice"}]}
    summary, exp = run_case(tmp_path, cache, users, tables=ownership)
    assert pairs(exp) == {("rh", "bob", "alice", "conversation_titles", "connection")}
    assert summary["crossed_replies"] == 4 and summary["near_misses"]["total"] == 0
    assert summary["crossed_served_unknown_owner"] == 2
    # the CLI says so (here with the default config, a config built in code records none: no key rule, so no
    # crossed reply has a known owner)
    result = CliRunner().invoke(cli, ["analyze", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    unowned = json.loads((tmp_path / "out" / "summary.json").read_text())["crossed_served_unknown_owner"]
    line = next(line for line in result.output.splitlines() if line.startswith("unknown owner"))
    assert line.split(None, 2)[2].startswith(f"{unowned} crossed replies served with data no evidence names an owner")


# ----------------------------------------------------------------------------------------- digest tier

def test_digest_owner_and_ambiguous_digest(tmp_path):
    D = "d" * 64  # noqa: N806 - the digest
    cache = [
        call(T(0, 1), "w1", "user:alice:titles", op="SET", value_sha256=D, conn="w"),
        # no connection info: only the digest can tell that carol got alice's value
        call(T(0, 2), "r1", "user:carol:titles", value_sha256=D, host=None, conn=None),
        call(T(0, 3), "w2", "user:bob:titles", op="SET", value_sha256=D, conn="w"),
        # from now on the digest names two owners: ambiguous; the connection decides (alice's cancelled call)
        call(T(0, 4), "ra", "user:alice:titles", "cancelled", conn="c1"),
        call(T(0, 5), "r2", "user:dave:titles", value_sha256=D, conn="c1"),
        # ambiguous, and nothing else names another owner: erin's own key -> no exposure, but flagged
        call(T(0, 6), "r3", "user:erin:titles", value_sha256=D, conn="c2"),
    ]
    users = {"w1": "alice", "w2": "bob", "r1": "carol", "ra": "alice", "r2": "dave", "r3": "erin"}
    summary, exp = run_case(tmp_path, cache, users)
    assert pairs(exp) == {
        ("r1", "carol", "alice", "conversation_titles", "digest"),
        ("r2", "dave", "alice", "conversation_titles", "digest-ambiguous"),
    }
    r2 = exp.set_index("request_id").loc["r2"]
    assert pd.isna(r2.owner_by_digest) and r2.owner_by_connection == "alice"
    assert summary["ambiguous_rows"] == 1
    assert summary["flagged_not_exposed"] == {"digest-ambiguous": 1}


def _common_value_case():
    """alice's empty titles ("[]", digest E) are the only write of E in the logs; carol's and erin's titles are
    "[]" too, cached before the logs begin. Host h1's log records cancels and connects; host h2's neither."""
    E, B = "e" * 64, "b" * 64  # noqa: N806
    cache = [
        call(T(0, 1), "w1", "user:alice:titles", op="SET", value_sha256=E, conn="w"),
        call(T(0, 2), "w2", "billing:alice", op="SET", value_sha256=B, conn="w"),
        call(T(0, 3), "ra", "user:alice:titles", "cancelled", conn="c1"),
        call(T(0, 4), "rd", "user:dave:titles", value_sha256=E, conn="c1"),  # alice's reply: digest and connection
        # c2 and c3 were opened inside the logs: nothing unread on them before their first calls
        call(T(0, 4), None, None, op="CONNECT", conn="c2"),
        call(T(0, 4), None, None, op="CONNECT", conn="c3"),
        call(T(0, 5), "rc", "user:carol:titles", value_sha256=E, conn="c2"),  # carol's own "[]", her own reply
        call(T(0, 6), "re", "user:erin:titles", value_sha256=E, conn="c3"),  # erin's own
        call(T(0, 7), "rb", "user:bob:titles", "cancelled", conn="c4"),
        call(T(0, 8), "rf", "user:fay:titles", value_sha256=E, conn="c4"),  # bob's "[]" reached fay
        # h2 logs no cancels: its FIFO rule shows nothing, so the digest alone decides there
        call(T(0, 9), "rg", "user:gus:titles", value_sha256=B, conn="c5", host="h2"),
    ]
    users = {"w1": "alice", "w2": "alice", "ra": "alice", "rd": "dave", "rc": "carol", "re": "erin", "rb": "bob",
             "rf": "fay", "rg": "gus"}
    return cache, users


def test_a_value_many_users_share_is_no_one_owners_by_digest(tmp_path):
    """A digest names the owner of bytes, and bytes many users share (an empty list) name nobody. With alice's
    write of "[]" the only one logged, carol reading her own "[]" was listed as alice's titles shown to carol, and
    fay receiving bob's "[]" through his cancelled call was alice's too, a conflict shown under alice's name. A
    read that the connection shows got its own reply, on a host whose log records cancels, receiving a digest the
    writes give to another owner, shows the bytes are its key's owner's too: from then on the digest is
    ambiguous and the connection or the key decides. Reads before it keep the writes' owner. The FIFO rule proves
    nothing on a host that logs no cancels, nor before a connection's first logged reset or error (a reply left
    unread before the logs begin shifts every later read of the connection)."""
    cache, users = _common_value_case()
    summary, exp = run_case(tmp_path, cache, users)
    assert pairs(exp) == {
        ("rd", "dave", "alice", "conversation_titles", "digest"),
        ("rf", "fay", "bob", "conversation_titles", "digest-ambiguous"),
        ("rg", "gus", "alice", "payment_info", "digest"),
    }
    assert summary["flagged_not_exposed"] == {"digest-ambiguous": 2}  # carol's and erin's own reads
    assert summary["digests_read_as_own"] == {"digests": 1, "reads": 2}
    # gus's read rests on the digest alone, against a connection that shows its own reply: counted for review
    assert summary["digest_exposures_on_clean_connections"] == 1
    # without h1's cancels, or its connects, logged, nothing proves carol's read got its own reply: the digest decides
    for variant, dropped, alone in (("no-cancels", {"cancelled"}, 5), ("no-connects", {"CONNECT"}, 3)):
        kept = [c for c in cache if not {c["status"], c["op"]} & dropped]
        summary, exp = run_case(tmp_path / variant, kept, users)
        assert {r[0] for r in pairs(exp)} == {"rd", "rc", "re", "rf", "rg"}, variant
        assert summary["digests_read_as_own"] == {"digests": 0, "reads": 0}, variant
        assert summary["digest_exposures_on_clean_connections"] == alone, variant
    # the CLI says so
    toml = tmp_path / "titles.toml"
    toml.write_text("[[keys]]\npattern = '^user:(?P<owner>[^:]+):titles$'\ncategory = 'conversation_titles'\n")
    result = CliRunner().invoke(cli, ["analyze", "--out", str(tmp_path / "out"), "--config", str(toml)])
    assert result.exit_code == 0, result.output
    assert "note: 1 digest reached 2 reads as the value of the key asked for" in result.output
    assert "rest on the digest alone" not in result.output
    result = CliRunner().invoke(cli, ["analyze", "--out", str(tmp_path / "no-connects" / "out"), "--config", str(toml)])
    assert result.exit_code == 0, result.output
    assert "note: 2 exposures rest on the digest alone" in result.output  # carol's and erin's, titles only
    result = CliRunner().invoke(cli, ["report", "--out", str(tmp_path / "no-connects" / "out")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "no-connects" / "out" / "report.md").read_text()
    assert "2 exposures rest on the digest alone" in " ".join(report.split())


def _many_owners_case(connections: tuple[str, str, str], owners: tuple[str, str, str]):
    """alice's write of "[]" (digest E) is the only one logged; three reads of their own titles get E, on the
    given connections, none of them after a logged reset (no CONNECT lines); dave gets alice's reply through her
    cancelled call first; host h1 logs that cancel."""
    E = "e" * 64  # noqa: N806
    cache = [
        call(T(0, 1), "w1", "user:alice:titles", op="SET", value_sha256=E, conn="w"),
        call(T(0, 3), "ra", "user:alice:titles", "cancelled", conn="c1"),
        call(T(0, 4), "rd", "user:dave:titles", value_sha256=E, conn="c1"),
        *(call(T(0, 5 + i), f"r{i}", f"user:{owner}:titles", value_sha256=E, conn=conn)
          for i, (conn, owner) in enumerate(zip(connections, owners, strict=True))),
    ]
    users = {"w1": "alice", "ra": "alice", "rd": "dave", **{f"r{i}": owner for i, owner in enumerate(owners)}}
    return cache, users


def test_bytes_many_owners_read_as_their_own_on_many_connections_are_theirs(tmp_path):
    """Before a connection's first logged reset one read of its own key proves nothing (a reply left unread before
    the logs begin shifts every later read), but a lost cancel or one misaligned connection hands an owner's bytes
    to the next caller, not the same bytes to three owners' own keys on three connections: those are bytes the
    owners share, from the first of those reads on. dave's read, before them, keeps alice's name."""
    three = ("carol", "erin", "hal")
    summary, exp = run_case(tmp_path / "many", *_many_owners_case(("c2", "c3", "c6"), three))
    assert pairs(exp) == {("rd", "dave", "alice", "conversation_titles", "digest")}
    assert summary["digests_read_as_own"] == {"digests": 1, "reads": 3}
    assert summary["flagged_not_exposed"] == {"digest-ambiguous": 3}
    assert summary["digest_exposures_on_clean_connections"] == 0
    # two connections, or two owners, are not enough: the digest decides, and the rows are counted for review
    for name, conns, owners in (("two-connections", ("c2", "c2", "c6"), three),
                                ("two-owners", ("c2", "c3", "c6"), ("carol", "erin", "carol"))):
        summary, exp = run_case(tmp_path / name, *_many_owners_case(conns, owners))
        assert {r[:3] for r in pairs(exp)} == {("rd", "dave", "alice"), *(
            (f"r{i}", owner, "alice") for i, owner in enumerate(owners))}, name
        assert summary["digests_read_as_own"] == {"digests": 0, "reads": 0}, name
        assert summary["digest_exposures_on_clean_connections"] == 3, name


def test_digest_gives_the_category_of_the_value_served(tmp_path):
    D = "e" * 64  # noqa: N806
    cache = [
        call(T(0, 1), "w1", "billing:alice", op="SET", value_sha256=D, conn="w"),
        call(T(0, 2), "r1", "user:bob:titles", value_sha256=D, conn="c1"),
    ]
    _, exp = run_case(tmp_path, cache, {"w1": "alice", "r1": "bob"})
    assert pairs(exp) == {("r1", "bob", "alice", "payment_info", "digest")}
    assert exp.value_key.tolist() == ["billing:alice"] and exp.severity.tolist() == ["high"]


def test_public_key_carrying_someones_data(tmp_path):
    D = "f" * 64  # noqa: N806
    cache = [
        call(T(0, 1), "r1", "public:motd", value_owner="alice", conn="c1"),  # the app logged the owner
        call(T(0, 2), "w1", "billing:carol", op="SET", value_sha256=D, conn="w"),
        call(T(0, 3), "r2", "public:banner", value_sha256=D, conn="c2"),    # the bytes are carol's billing
        call(T(0, 4), "r3", "unknown-family:42", value_owner="dave", conn="c3"),  # no rule matches the key
    ]
    users = {"r1": "bob", "w1": "carol", "r2": "bob", "r3": "bob"}
    summary, exp = run_case(tmp_path, cache, users)
    assert pairs(exp) == {
        ("r1", "bob", "alice", "public", "value_owner"),
        ("r2", "bob", "carol", "payment_info", "digest"),
        ("r3", "bob", "dave", "uncategorized", "value_owner"),
    }
    assert exp.set_index("request_id").loc["r3", "severity"] == "unknown"


def test_a_public_key_carrying_someones_data_is_a_crossed_reply(tmp_path):
    """A key of a family that names no owner ('^public:') holds nobody's data: a value naming an owner is a crossed
    reply (design.md), counted as such, a near miss when it reached no one, and seen by the auto window. A key no
    rule matches has an unknown owner: its value naming the viewer is no crossed reply."""
    D = "f" * 64  # noqa: N806
    cache = [
        call(T(0, 1), "w1", "billing:carol", op="SET", value_sha256=D, conn="w"),
        call(T(0, 2), "r1", "public:motd", value_owner="alice", conn="c1"),  # exposure (value_owner)
        call(T(0, 3), "r2", "public:banner", value_sha256=D, conn="c2"),  # exposure (digest)
        call(T(0, 4), "r3", "public:motd", value_owner="dave", conn="c3"),  # its request answers 500
        call(T(0, 5), "r4", "public:motd", value_owner="erin", status="error", conn="c4"),  # the read failed
        call(T(0, 6), "r5", "unknown-family:1", value_owner="bob", conn="c5"),  # bob's own value
    ]
    requests = requests_for(cache, {r: "bob" for r in ("r1", "r2", "r3", "r4", "r5")} | {"w1": "carol"})
    requests[[r["request_id"] for r in requests].index("r3")]["status"] = 500
    summary, exp = run_case(tmp_path, cache, requests=requests)
    assert pairs(exp) == {
        ("r1", "bob", "alice", "public", "value_owner"),
        ("r2", "bob", "carol", "payment_info", "digest"),
    }
    assert summary["crossed_replies"] == 4
    near = pd.read_parquet(tmp_path / "out" / "near_misses.parquet").sort_values("ts")
    assert list(zip(near.request_id, near.kind, near.owner_id, strict=True)) == [
        ("r3", "failed", "dave"), ("r4", "failed", "erin")]
    timeline = pd.read_parquet(tmp_path / "out" / "timeline.parquet")
    assert timeline.crossed_replies.sum() == 4


def _public_key_digest_case():
    E, F = "e" * 64, "f" * 64  # noqa: N806
    cache = [
        call(T(0, 1), None, "user:alice:titles", op="SET", value_sha256=E, conn="w"),
        call(T(0, 2), None, "public:banner", op="SET", value_sha256=E, conn="w"),
        call(T(0, 3), "r1", "public:banner", value_sha256=E, conn="c1"),
        call(T(0, 4), None, "public:motd", op="SET", value_sha256=F, conn="w"),
        call(T(0, 5), "r2", "user:bob:titles", value_sha256=F, conn="c2"),
        call(T(0, 6), None, "billing:carol", op="SET", value_sha256="c" * 64, conn="w"),
        call(T(0, 7), "r3", "public:banner", value_sha256="c" * 64, conn="c3"),
    ]
    return cache, requests_for(cache, {"r2": "bob"})


def test_bytes_written_under_a_public_key_are_not_someones_by_digest(tmp_path):
    """The same bytes (an empty list, say) stored under alice's titles and, later, under the public banner: an
    anonymous read of the banner returning them was alice's titles by digest, because writes under a key whose
    family names nobody were left out of the digest tier. Those bytes are public: the digest names two owners
    (alice, nobody) and is ambiguous, as for two users' keys, and the key asked for names no one. A digest written
    only under a public key names no owner; one written only under alice's key still does."""
    cache, requests = _public_key_digest_case()
    summary, exp = run_case(tmp_path, cache, requests=requests)
    assert pairs(exp) == {("r3", None, "carol", "payment_info", "digest")}
    assert summary["flagged_not_exposed"] == {"digest-ambiguous": 1}
    assert summary["crossed_replies"] == 1


def test_conflicting_tiers_are_labelled_not_guessed(tmp_path):
    cache = [
        call(T(0, 1), "ra", "user:alice:titles", "cancelled"),
        # the connection says alice's reply; the value says bob: conflict, owner from the strongest (value)
        call(T(0, 2), "rc", "user:carol:titles", value_owner="bob"),
    ]
    summary, exp = run_case(tmp_path, cache, {"ra": "alice", "rc": "carol"})
    assert pairs(exp) == {("rc", "carol", "bob", "conversation_titles", "conflict")}
    row = exp.iloc[0]
    assert (row.owner_by_value, row.owner_by_connection, row.owner_by_key) == ("bob", "alice", "carol")
    assert summary["conflict_rows"] == 1 and summary["exposures_by_evidence"] == {"conflict": 1}


def test_value_owner_confirming_the_connection_is_no_conflict(tmp_path):
    cache = [
        call(T(0, 1), "ra", "user:alice:titles", "cancelled"),
        call(T(0, 2), "rc", "user:carol:titles", value_owner="alice"),
    ]
    summary, exp = run_case(tmp_path, cache, {"ra": "alice", "rc": "carol"})
    assert pairs(exp) == {("rc", "carol", "alice", "conversation_titles", "value_owner")}
    assert summary["conflict_rows"] == 0


# ----------------------------------------------------------------------------------------- key rules

def test_key_rules_first_match_and_ownership_over_time(tmp_path):
    cache = [
        call(T(1), "r1", "conv:c1", conn="c1"),  # c1 is alice's until 01:30
        call(T(40), "r2", "conv:c1", conn="c2"),  # ... then bob's
        call(T(2), "r3", "user:alice:avatar", conn="c3"),  # only the later 'profile' rule matches
        call(T(3), "r4", "conv:unowned", conn="c4"),  # a resource nobody owns: no owner, no exposure
    ]
    tables = {"ownership": [
        {"resource_id": "c1", "owner_id": "alice", "valid_from": "", "valid_to": T(30)},
        {"resource_id": "c1", "owner_id": "bob", "valid_from": T(30), "valid_to": ""},
    ]}
    _, exp = run_case(tmp_path, cache, {"r1": "carol", "r2": "carol", "r3": "carol", "r4": "carol"},
                      tables=tables)
    assert pairs(exp) == {
        ("r1", "carol", "alice", "conversation_content", "key"),
        ("r2", "carol", "bob", "conversation_content", "key"),
        ("r3", "carol", "alice", "profile", "key"),
    }


def _since_forever_case():
    """Alice's ownership of c1 is open at both ends, bob's starts at 01:30; a chain on one connection after it."""
    cache = [
        call(T(1), "r1", "conv:c1"),  # alice's then: carol sees it (key)
        call(T(40), "r2", "conv:c1", status="cancelled"),  # bob's by now; its reply stays unread ...
        call(T(41), "r3", "billing:carol"),  # ... and reaches carol
        call(T(42), "r4", "billing:dave"),  # ... who left hers to dave
    ]
    tables = {"ownership": [
        {"resource_id": "c1", "owner_id": "alice", "valid_from": "", "valid_to": ""},
        {"resource_id": "c1", "owner_id": "bob", "valid_from": T(30), "valid_to": ""},
    ]}
    return cache, {"r1": "carol", "r2": "bob", "r3": "carol", "r4": "dave"}, tables


def test_ownership_since_forever_ends_where_a_later_row_starts(tmp_path):
    """An ownership row open at both ends is ended by a later row: one owner at any instant, so no cache line is
    matched twice, and the connection order is not shifted."""
    cache, users, tables = _since_forever_case()
    summary, exp = run_case(tmp_path, cache, users, tables=tables)
    assert len(exp) == 3 and pairs(exp) == {
        ("r1", "carol", "alice", "conversation_content", "key"),
        ("r3", "carol", "bob", "conversation_content", "connection"),
        ("r4", "dave", "carol", "payment_info", "connection"),
    }
    assert summary["exposures"] == 3 and summary["affected_owners"] == 3


def _ownership_claims_case():
    """c9: alice's since 01:00 with no end; bob's for one minute from 01:05 (a later start wins while it lasts);
    an empty row of carol's at 01:07 (it claims no instant). Reads by dave at 01:01, 01:05:30, 01:07 and 01:20."""
    cache = [call(T(m), f"r{i}", "conv:c9", conn=f"c{i}") for i, m in enumerate((1, 5.5, 7, 20), start=1)]
    tables = {"ownership": [
        {"resource_id": "c9", "owner_id": "alice", "valid_from": T(0), "valid_to": ""},
        {"resource_id": "c9", "owner_id": "bob", "valid_from": T(5), "valid_to": T(6)},
        {"resource_id": "c9", "owner_id": "carol", "valid_from": T(7), "valid_to": T(7)},
    ]}
    return cache, {f"r{i}": "dave" for i in range(1, 5)}, tables


def test_an_ownership_row_names_its_owner_wherever_no_later_row_claims_the_resource(tmp_path):
    """A later valid_from ended the earlier row for good: after bob's minute (or at carol's empty row) c9 was
    nobody's, though alice's row still said it was hers, and dave's reads of her conversation were no exposure."""
    cache, users, tables = _ownership_claims_case()
    _, exp = run_case(tmp_path, cache, users, tables=tables)
    assert pairs(exp) == {
        ("r1", "dave", "alice", "conversation_content", "key"),
        ("r2", "dave", "bob", "conversation_content", "key"),
        ("r3", "dave", "alice", "conversation_content", "key"),
        ("r4", "dave", "alice", "conversation_content", "key"),
    }


@pytest.mark.parametrize("order", [1, -1])
def test_two_ownership_rows_of_one_owner_and_start_do_not_depend_on_the_tables_order(tmp_path, order):
    """erin's c9 since forever, listed twice: once until 01:10, once open-ended. One of the two was picked by the
    order of the table's rows: listed first, the row that ends made dave's read at 01:20 nobody's data."""
    rows = [{"resource_id": "c9", "owner_id": "erin", "valid_from": "", "valid_to": T(10)},
            {"resource_id": "c9", "owner_id": "erin", "valid_from": "", "valid_to": ""}][::order]
    _, exp = run_case(tmp_path, [call(T(20), "r1", "conv:c9")], {"r1": "dave"}, tables={"ownership": rows})
    assert pairs(exp) == {("r1", "dave", "erin", "conversation_content", "key")}


def test_key_evidence_alone_without_connection_or_value(tmp_path):
    """Without host or conn_id the connection tier is blind, and the summary says for how many served items."""
    cache = [
        call(T(1), "r1", "billing:alice", host=None, conn=None),
        call(T(2), "r2", "billing:bob", host=None),  # a conn_id alone names no connection (SPEC)
        call(T(3), "r3", "billing:bob"),
    ]
    summary, exp = run_case(tmp_path, cache, {"r1": "bob", "r2": "bob", "r3": "bob"})
    assert pairs(exp) == {("r1", "bob", "alice", "payment_info", "key")}
    assert summary["served_items"] == 3 and summary["served_items_without_connection"] == 2


def _float_id_case():
    cache = [
        call(T(1), "r1", "user:42.0:titles", conn="c1"),
        call(T(2), "r2", "conv:7.0", conn="c2"),
        # past 2**53 the float's text stays, as ingest keeps it (schema.py:FLOAT_EXACT_LIMIT)
        call(T(3), "r3", "user:9007199254740994.0:titles", conn="c3"),
    ]
    users = {"r1": "42", "r2": "carol", "r3": "9007199254740994.0"}
    return cache, users, {"ownership": [{"resource_id": "7.0", "owner_id": "alice"}]}


def test_ids_in_keys_written_as_floats_are_the_ids_of_the_logs_and_tables(tmp_path):
    """An app that formats a float id writes it in its keys too (user:42.0:titles). Ingest and the side tables read
    42.0 as 42, so the key's owner and resource groups must too: else user 42 reading their own titles was an
    exposure, and a resource 7.0 matched no row of an ownership table read as 7 (carol's read of alice's
    conversation was no exposure)."""
    cache, users, tables = _float_id_case()
    _, exp = run_case(tmp_path, cache, users, tables=tables)
    assert pairs(exp) == {
        ("r2", "carol", "alice", "conversation_content", "key"),
    }


def test_the_side_tables_fields_are_trimmed_of_tabs_as_csv_logs_and_the_users_directory_are(tmp_path):
    """A table written with a tab after its commas: ingest trims a CSV log's fields of spaces and tabs, the users
    directory its ids too, but the ownership and grants tables only of spaces: resource 'c9<tab>' matched no key
    (carol's read of erin's conversation was no exposure) and bob's grant named another viewer than bob."""
    cache = [call(T(1), "r1", "conv:c9", conn="c1"), call(T(2), "r2", "user:alice:titles", conn="c2")]
    tables = {
        "ownership": [{"resource_id": "c9\t", "owner_id": "\terin"}],
        "grants": [{"owner_id": "\talice", "viewer_id": "\tbob", "category": "conversation_titles\t",
                    "valid_from": "\t" + T(0), "valid_to": ""}],
    }
    _, exp = run_case(tmp_path, cache, {"r1": "carol", "r2": "bob"}, tables=tables)
    assert pairs(exp) == {("r1", "carol", "erin", "conversation_content", "key")}


def test_key_rule_sql_quotes_patterns_for_spark():
    cfg = config_from_dict({"keys": [{"pattern": r"^it's:(?P<owner>\d+)$"}]})
    sql = key_rule_sql(cfg.keys, quote_spark)
    assert r"'^it\'s:(\\d+)$'" in sql



def test_java_pattern_rewrites_re2_where_java_reads_it_otherwise():
    assert java_pattern(r"^user:([[:alnum:]]+):titles$") == r"(?d)^user:([\p{Alnum}]+):titles\z"
    assert java_pattern(r"^k:([^[:^digit:]&[]+)$") == r"(?d)^k:([^\P{Digit}\&\[]+)\z"
    assert java_pattern(r"(?m)^a$(?-m:b$)\$") == r"(?d)(?m)^a$(?-m:b\z)\$"
    assert java_pattern(r"^a{,3}x{2,}\s") == r"(?d)^a\{,3}x{2,}[\t\n\f\r ]"
    # octal: Java reads \141 as a backreference to group 1 and \0 alone as an error
    assert java_pattern(r"^\141\0[\060-\071]$") == r"(?d)^\x{61}\x{0}[\x{30}-\x{39}]\z"


def test_java_pattern_spells_out_re2_case_folding():
    r"""RE2's (?i) folds by Unicode's case-folding orbits, Java's by toUpperCase/toLowerCase (ı and İ are i there,
    ẞ is no ß), a range or \w not at all (the Kelvin sign, the long s): Java gets no (?i), and each character,
    escape or class that RE2's folding changes is the class of what RE2 matches."""
    assert java_pattern(r"(?i)^user:(\d+)$") == r"(?d)^[uU][sS\x{17F}][eE][rR]:(\d+)\z"
    assert java_pattern(r"(?i)^[a-z]+:[^k]ı\x69$") == r"(?d)^[a-zA-Z\x{17F}\x{212A}]+:[^kK\x{212A}]ı[\x69I]\z"
    assert java_pattern(r"^a(?i:ß\w)(?-i)b(?im)\W$") == (
        r"(?d)^a(?:[ß\x{1E9E}][\w\x{17F}\x{212A}])b(?m)[\W&&[^\x{17F}\x{212A}]]$"
    )


RE2_KEYS = [
    {"pattern": r"^user:(?P<owner>[[:alnum:]]+):titles$", "category": "conversation_titles", "severity": "low"},
    {"pattern": r"(?i)^état:(?P<owner>[^:]+)$", "category": "profile", "severity": "medium"},
    {"pattern": r"^billing:(?P<owner>\w+)$", "category": "payment_info", "severity": "high"},
    {"pattern": r"^\160rofile:(?P<owner>\w+)$", "category": "profile", "severity": "medium"},  # \160: octal p
]


def _re2_case():
    """Keys whose patterns Java reads otherwise than RE2: a POSIX class, (?i) beyond ASCII, $ before a final
    line break (a key logged with a trailing newline belongs to no rule), an octal escape (a backreference in Java)."""
    cache = [call(T(1), "a1", "user:bob:titles", "cancelled"), call(T(2), "r1", "user:carol:titles"),
             call(T(3), "a2", "ÉTAT:erin", "cancelled", conn="c2"), call(T(4), "r2", "état:frank", conn="c2"),
             call(T(5), "a3", "billing:gus\n", "cancelled", conn="c3"), call(T(6), "r3", "billing:hal", conn="c3"),
             call(T(7), "a4", "profile:ivy", "cancelled", conn="c4"), call(T(8), "r4", "profile:jon", conn="c4")]
    users = {"a1": "bob", "r1": "carol", "a2": "erin", "r2": "frank", "a3": "gus", "r3": "hal", "a4": "ivy",
             "r4": "jon"}
    return cache, users


def test_key_patterns_are_re2(tmp_path):
    cache, users = _re2_case()
    summary, exp = run_case(tmp_path, cache, users, keys=RE2_KEYS, window="all")
    assert pairs(exp) == {("r1", "carol", "bob", "conversation_titles", "connection"),
                          ("r2", "frank", "erin", "profile", "connection"),
                          ("r4", "jon", "ivy", "profile", "connection")}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_matches_key_patterns_as_re2_does(tmp_path):
    cache, users = _re2_case()
    run_case(tmp_path, cache, users, keys=RE2_KEYS, window="all")
    result = compare_lake(tmp_path, keys=RE2_KEYS)
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": 3, "spark": 3}


CASE_FOLD_KEYS = [
    {"pattern": r"(?i)^straße:(?P<owner>\w+)$", "category": "address", "severity": "medium"},
    {"pattern": r"(?i)^id:(?P<owner>[a-z]+)$", "category": "profile", "severity": "low"},
]


def _case_fold_case():
    r"""Keys that (?i) rules match by RE2's case folding and Java's (?iu) does not, and the other way round: ẞ is
    ß's capital, the Kelvin sign (U+212A) is a k to \w and to a range, the dotless ı and the dotted İ are no i."""
    cache = [call(T(1), "a1", "STRAẞE:bob", "cancelled"), call(T(2), "r1", "straße:carol"),
             call(T(3), "a2", "straße:\u212aim", "cancelled", conn="c2"), call(T(4), "r2", "straße:dan", conn="c2"),
             call(T(5), "a3", "id:\u212aat", "cancelled", conn="c3"), call(T(6), "r3", "id:erin", conn="c3"),
             call(T(7), "a4", "İD:frank", "cancelled", conn="c4"), call(T(8), "r4", "id:gus", conn="c4"),
             call(T(9), "a5", "ıd:hal", "cancelled", conn="c5"), call(T(10), "r5", "id:ivy", conn="c5")]
    users = {"a1": "bob", "r1": "carol", "a2": "kim", "r2": "dan", "a3": "kat", "r3": "erin", "a4": "frank",
             "r4": "gus", "a5": "hal", "r5": "ivy"}
    return cache, users


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_folds_case_in_key_patterns_as_re2_does(tmp_path):
    cache, users = _case_fold_case()
    _, exp = run_case(tmp_path, cache, users, keys=CASE_FOLD_KEYS, window="all")
    assert pairs(exp) == {("r1", "carol", "bob", "address", "connection"),
                          ("r2", "dan", "\u212aim", "address", "connection"),
                          ("r3", "erin", "\u212aat", "profile", "connection")}
    result = compare_lake(tmp_path, keys=CASE_FOLD_KEYS)
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": 3, "spark": 3}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_reads_float_ids_in_keys_as_duckdb_does(tmp_path):
    cache, users, tables = _float_id_case()
    run_case(tmp_path, cache, users, tables=tables, window="all")
    result = compare_lake(tmp_path, tables=("ownership",))
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": 1, "spark": 1}


# ----------------------------------------------------------------------------------------- window

def _two_exposures():
    return [
        call(T(10), "ra", "user:alice:titles", "cancelled"),
        call(T(10, 1), "rb", "user:bob:titles"),
        call(T(0, 0, hours=2), "rc", "user:carol:titles", "cancelled", conn="c2"),
        call(T(0, 1, hours=2), "rd", "user:dave:titles", conn="c2"),
    ]


def test_window_filters_last_and_counts_what_it_hides(tmp_path):
    users = {"ra": "alice", "rb": "bob", "rc": "carol", "rd": "dave"}
    summary, exp = run_case(tmp_path, _two_exposures(), users, window="2023-03-20T01:00Z/2023-03-20T02:00Z")
    assert exp.request_id.tolist() == ["rb"]
    assert summary["window"]["method"] == "cli"
    assert summary["window"]["start"] == "2023-03-20T01:00:00Z"
    assert summary["outside_window"] == {"exposures": 1, "affected_owners": 1,
                                         "by_category": {"conversation_titles": 1}}
    outside = pd.read_parquet(tmp_path / "out" / "exposures_outside_window.parquet")
    assert outside.request_id.tolist() == ["rd"]
    assert summary["requests"] == 2 and summary["active_users"] == 2
    timeline = pd.read_parquet(tmp_path / "out" / "timeline.parquet")
    assert timeline.exposures.sum() == 2
    assert timeline[timeline.in_window].exposures.sum() == 1
    counts = ["requests", "reads", "crossed_replies", "exposures", "near_misses"]
    assert all(str(timeline[c].dtype) == "int64" for c in counts), timeline.dtypes  # counts, not floats


def test_config_window_and_all(tmp_path):
    users = {"ra": "alice", "rb": "bob", "rc": "carol", "rd": "dave"}
    extra = {"window": {"start": "2023-03-20T02:30:00Z", "end": "2023-03-20T04:00:00Z"}}
    summary, exp = run_case(tmp_path, _two_exposures(), users, config_extra=extra)
    assert summary["window"]["method"] == "config" and exp.request_id.tolist() == ["rd"]
    summary = analyze(tmp_path / "out", config_from_dict({"keys": KEYS, **extra}), window="all")
    assert summary["window"]["method"] == "all" and summary["exposures"] == 2
    assert summary["window"]["start"] is None and summary["outside_window"]["exposures"] == 0


def test_auto_window_finds_the_burst_not_first_to_last_mismatch(tmp_path):
    cache, users = [], {}
    n = 0

    def add(minute, crossed):
        nonlocal n
        n += 1
        conn = f"c{n}"
        if crossed:
            cache.append(call(T(minute), f"v{n}", f"user:victim{n}:titles", "cancelled", conn=conn))
            users[f"v{n}"] = f"victim{n}"
        cache.append(call(T(minute, 1), f"r{n}", f"user:u{n}:titles", conn=conn))
        users[f"r{n}"] = f"u{n}"

    for minute in range(0, 360, 2):  # six hours of ordinary traffic
        add(minute, False)
    for minute in range(120, 181):  # the bug: 02:59 .. 04:00 (T counts from 01:00)
        add(minute + 0.5, True)
        add(minute + 0.7, True)
    add(20, True)   # a stray crossed reply long before ...
    add(300, True)  # ... and one long after: not part of the burst
    summary, exp = run_case(tmp_path, cache, users, window="auto")
    assert summary["window"]["method"] == "auto"
    # the first crossed reply is read at 03:00:31 (T(120.5, 1)), the last at 04:00:43.2
    assert summary["window"]["start"] == "2023-03-20T03:00:31Z"  # floor-second of the first crossed reply
    assert summary["window"]["end"] == "2023-03-20T04:00:44Z"    # end of the second of the last one
    assert summary["auto_window"]["baseline"] == 0 and summary["auto_window"]["threshold"] == 1
    assert summary["exposures"] == 122 == len(exp)
    assert summary["outside_window"]["exposures"] == 2
    assert "auto" in summary["window"]["description"]
    timeline = pd.read_parquet(tmp_path / "out" / "timeline.parquet")
    assert timeline.crossed_replies.sum() == 124 and set(timeline.threshold) == {1.0}


def test_auto_window_without_any_burst_keeps_all_time(tmp_path):
    cache = [call(T(0, 1), "ra", "user:alice:titles", "cancelled"), call(T(0, 2), "rb", "user:bob:titles")]
    summary, exp = run_case(tmp_path, cache, {"ra": "alice", "rb": "bob"}, window="auto")
    assert summary["window"]["start"] is None and summary["exposures"] == 1
    assert "no" in summary["window"]["description"]


def test_bucket_size_is_the_first_step_with_at_most_max_buckets():
    assert bucket_seconds_for([0] * len(BUCKET_STEPS)) == 300
    fits_at = {step: [MAX_BUCKETS + 1] * i + [MAX_BUCKETS] * (len(BUCKET_STEPS) - i)
               for i, step in enumerate(BUCKET_STEPS)}
    for step, counts in fits_at.items():
        assert bucket_seconds_for(counts) == step
    assert bucket_seconds_for([MAX_BUCKETS + 1] * len(BUCKET_STEPS)) == 86400


def test_a_month_of_dense_traffic_gets_ten_minute_buckets_and_the_same_window(tmp_path):
    """A call every 5 minutes for 36 days (10,368 buckets with calls) and 40 crossed replies on day 30: 10-minute
    buckets, the window still from the first to the last crossed reply, to the second; bucket_seconds=300 forces
    the fine buckets and finds the same window."""
    cache, users = [], {}
    for i in range(36 * 288):
        rid = f"q{i}"
        cache.append(call(T(5 * i), rid, f"user:u{i % 50}:titles", conn=rid))
        users[rid] = f"u{i % 50}"
    for n in range(40):  # the bug, on day 30: 40 crossed replies in 40 minutes
        start = 24 * 30 * 60 + n
        cache.append(call(T(start, 10), f"v{n}", f"user:victim{n}:titles", "cancelled", conn=f"c{n}"))
        cache.append(call(T(start, 30), f"r{n}", f"user:reader{n}:titles", conn=f"c{n}"))
        users.update({f"v{n}": f"victim{n}", f"r{n}": f"reader{n}"})
    summary, exp = run_case(tmp_path, cache, users, window="auto")
    assert summary["auto_window"]["bucket_seconds"] == 600
    assert "600-second buckets" in summary["window"]["description"]
    assert summary["window"]["start"] == "2023-04-19T01:00:30Z"
    assert summary["window"]["end"] == "2023-04-19T01:39:31Z"
    assert summary["exposures"] == 40 == len(exp)
    out = tmp_path / "out"
    assert set(pd.read_parquet(out / "timeline.parquet").bucket_seconds) == {600}
    assert load_manifest(out)["analysis"]["bucket_seconds"] == 600
    fine = analyze(out, config_from_dict({"keys": KEYS}), window="auto", progress=False, bucket_seconds=300)
    assert fine["auto_window"]["bucket_seconds"] == 300
    assert (fine["window"]["start"], fine["window"]["end"]) == (summary["window"]["start"], summary["window"]["end"])


def test_a_stray_line_years_away_does_not_coarsen_the_buckets(tmp_path):
    cache = [
        call(T(0, 1), "ra", "user:alice:titles", "cancelled"),
        call(T(0, 2), "rb", "user:bob:titles"),
        call(T(hours=5 * 365 * 24), "rz", "user:zoe:titles", conn="c9"),  # a clock five years off
    ]
    summary, _ = run_case(tmp_path, cache, {"ra": "alice", "rb": "bob", "rz": "zoe"}, window="auto")
    assert summary["auto_window"]["bucket_seconds"] == 300
    assert summary["data_span"]["end"].startswith("2028-")


# ----------------------------------------------------------------------------------------- outputs

def test_outputs_columns_csv_roundtrip_and_manifest(tmp_path):
    cache = [
        call(T(0, 1), "=ra", "user:=alice:titles", "cancelled"),
        call(T(0, 2), "-rb", "user:@bob:titles"),
    ]
    summary, exp = run_case(tmp_path, cache, {"=ra": "=alice", "-rb": "@bob"})
    out = tmp_path / "out"
    assert tuple(exp.columns) == EXPOSURE_COLUMNS
    back = read_safe_csv(out / "exposures.csv")
    assert tuple(back.columns) == EXPOSURE_COLUMNS
    assert back.loc[0, "viewer_id"] == "@bob" and back.loc[0, "owner_id"] == "=alice"
    assert back.loc[0, "request_id"] == "-rb" and back.loc[0, "ts"] == "2023-03-20T01:00:02.000000Z"
    raw = (out / "exposures.csv").read_text()
    assert "'=alice" in raw and ",'@bob," in raw
    assert json.loads((out / "summary.json").read_text()) == summary
    manifest = load_manifest(out)
    assert manifest["window"]["method"] == "all"
    assert "exposures.parquet" in manifest["outputs"] and "summary.json" in manifest["outputs"]
    assert not (out / ".tmp").exists()
    for key in ("window", "active_users", "active_sessions", "requests", "served_items", "crossed_replies",
                "exposures", "affected_owners", "viewers", "anonymous_viewer_sessions",
                "exposures_by_category", "exposures_by_severity", "exposures_by_evidence",
                "affected_owners_by_category",
                "ambiguous_rows", "conflict_rows", "unknown_viewer_reads", "near_misses", "outside_window",
                "share_of_active_users_affected", "generated_at"):
        assert key in summary, key
    assert summary["share_of_active_users_affected"] == 0.5  # bob saw alice's: 1 of 2 active users


def test_lake_without_value_owner_column_and_without_sessions(tmp_path):
    out = tmp_path / "out"
    cache = [call(T(0, 1), "ra", "user:alice:titles", "cancelled"), call(T(0, 2), "rb", "user:bob:titles")]
    write_kind(out, "requests", requests_for(cache, {"ra": "alice", "rb": "bob"}))
    write_kind(out, "cache", cache)
    con = duckdb.connect()
    files = sorted((out / "parquet" / "cache").rglob("*.parquet"))
    for path in files:
        con.execute(f"COPY (SELECT * EXCLUDE (value_owner) FROM read_parquet('{path}')) TO '{path}.tmp' "
                    "(FORMAT parquet)")
        Path(f"{path}.tmp").replace(path)
    summary = analyze(out, config_from_dict({"keys": KEYS}), progress=False)
    assert summary["exposures"] == 1


def test_config_from_manifest_when_none_given(tmp_path):
    cfg_path = tmp_path / "incident.toml"
    cfg_path.write_text(
        "[[keys]]\npattern = '^user:(?P<owner>[^:]+):titles$'\ncategory = 'conversation_titles'\n"
        "severity = 'low'\n"
    )
    out = tmp_path / "out"
    cache = [call(T(0, 1), "ra", "user:alice:titles", "cancelled"), call(T(0, 2), "rb", "user:bob:titles")]
    write_lake(out, requests=requests_for(cache, {"ra": "alice", "rb": "bob"}), cache=cache)
    manifest = load_manifest(out)
    manifest["config"] = {"path": str(cfg_path), "settings": {}}
    save_manifest(out, manifest)
    summary = analyze(out, progress=False)
    assert summary["exposures_by_category"] == {"conversation_titles": 1}


def test_missing_lake_is_a_usage_error(tmp_path):
    with pytest.raises(WhosawError, match="no lake"):
        analyze(tmp_path / "nothing", progress=False)


def test_empty_lake_kinds_give_empty_outputs(tmp_path):
    out = tmp_path / "out"
    (out / "parquet").mkdir(parents=True)
    summary = analyze(out, progress=False)
    assert summary["exposures"] == 0 and summary["active_users"] == 0
    assert summary["share_of_active_users_affected"] is None
    assert pd.read_parquet(out / "exposures.parquet").empty


def test_sql_files_are_one_view_each_in_the_portable_subset():
    steps = load_steps()
    assert len({s.view for s in steps}) == len(steps)
    for step in steps:
        assert step.path.stem.split("_", 1)[1] == step.view, step.path.name
        body = "\n".join(line.split("--")[0] for line in step.sql.splitlines())
        for duckdb_only in ("::", " ASOF ", "QUALIFY", "->>", "FILTER (", "list_", "arg_min", "arg_max",
                            "epoch_", "strftime", "regexp_matches", "EXCLUDE"):
            assert duckdb_only not in body, (step.path.name, duckdb_only)


def test_joins_as_written_holds_for_its_own_statements_only(tmp_path):
    """The two views marked `-- duckdb: joins as written` run with DuckDB's join planning off; the connection gets
    it back afterwards (explore's connection_timeline goes on querying the same connection), and a view without
    `-- materialize` cannot carry the mark (it would be ignored)."""
    write_lake(tmp_path / "out", requests=requests_for([call(T(0, 1), "ra", "user:alice:titles")], {"ra": "bob"}),
               cache=[call(T(0, 1), "ra", "user:alice:titles")])
    steps = load_steps()
    assert {s.view for s in steps if s.joins_as_written} == {"crossed_replies", "notable_reads"}
    con = connect(tmp_path / "tmp")
    register_inputs(con, tmp_path / "out", config_from_dict({"keys": KEYS}), Window())
    run_steps(con, steps)
    assert con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0] == ""
    assert con.execute("SELECT count(*) FROM notable_reads").fetchone()[0] == 1
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    (sql_dir / "10_v.sql").write_text("-- duckdb: joins as written\nCREATE OR REPLACE TEMPORARY VIEW v AS SELECT 1")
    with pytest.raises(WhosawError, match="materialised view only"):
        load_steps(sql_dir)


def test_auto_window_when_the_incident_covers_most_of_the_logs(tmp_path):
    # A median baseline would be the incident's own rate here; the 10th percentile is the quiet level.
    cache, users = [], {}
    n = 0
    for minute in range(0, 240):  # four hours, one read a minute; crossed replies from 00:30 to 03:50 ...
        n += 1
        crossed = 30 <= minute < 230 and not 100 <= minute < 108  # ... with a short quiet dip inside
        if crossed:
            cache.append(call(T(minute), f"v{n}", f"user:victim{n}:titles", "cancelled", conn=f"c{n}"))
            users[f"v{n}"] = f"victim{n}"
        cache.append(call(T(minute, 1), f"r{n}", f"user:u{n}:titles", conn=f"c{n}"))
        users[f"r{n}"] = f"u{n}"
    cache.append(call(T(minute, 2), "ra", "user:alice:titles", "cancelled", conn="x"))
    cache.append(call(T(minute, 3), "rb", "user:bob:titles", conn="x"))  # a stray one at the very end
    users.update(ra="alice", rb="bob")
    summary, exp = run_case(tmp_path, cache, users, window="auto")
    assert summary["window"]["start"] == "2023-03-20T01:30:01Z"
    assert summary["window"]["end"] == "2023-03-20T04:49:02Z"
    assert summary["auto_window"]["run_buckets"] == 40 and summary["exposures"] == 192
    assert summary["outside_window"]["exposures"] == 1


# ----------------------------------------------------------------------------------------- simulator

KEY_COLUMNS = ["request_id", "key", "viewer_id", "owner_id", "category"]


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    """A messy simulated incident (duplicates, gzip, mixed time forms, malformed lines, chains of two and
    more) ingested by the real ingest; returns (logs folder, lake folder, ground truth)."""
    root = tmp_path_factory.mktemp("incident")
    logs = root / "logs"
    truth = simulate(logs, users=600, hours=12, requests=40_000, cancel_rate=0.05, seed=11, messy=True)
    assert truth["exposures_with_lag_ge_2"] > 0  # chains of two and more are in there
    lake = root / "lake"
    ingest([logs], lake, config=logs / "incident.toml", progress=False)
    exposures = pd.read_csv(logs / "ground_truth" / "exposures.csv", dtype=str, keep_default_na=False)
    return logs, lake, truth, exposures


def _variant(lake: Path, target: Path, drop: tuple[str, ...]) -> Path:
    """A copy of the lake whose cache files lack the ``drop`` columns (as if the logs never had them)."""
    shutil.copytree(lake, target)
    con = duckdb.connect()
    for path in sorted((target / "parquet" / "cache").rglob("*.parquet")):
        if drop:
            con.execute(f"COPY (SELECT * EXCLUDE ({', '.join(drop)}) FROM read_parquet('{path}')) "
                        f"TO '{path}.tmp' (FORMAT parquet)")
            Path(f"{path}.tmp").replace(path)
    return target


def _rows(frame: pd.DataFrame) -> set[tuple]:
    return set(frame[KEY_COLUMNS].fillna("").astype(str).apply(tuple, axis=1))


def _assert_matches_truth(out: Path, logs: Path, truth: dict, expected: pd.DataFrame) -> pd.DataFrame:
    summary = json.loads((out / "summary.json").read_text())
    ours = pd.read_parquet(out / "exposures.parquet")
    assert _rows(ours) == _rows(expected)
    affected = pd.read_csv(logs / "ground_truth" / "affected_owners.csv", dtype=str)
    viewers = pd.read_csv(logs / "ground_truth" / "viewers.csv", dtype=str)
    assert set(ours.owner_id) == set(affected.owner_id)
    assert set(ours.viewer_id.dropna()) == set(viewers.viewer_id)
    assert summary["affected_owners"] == truth["counts"]["affected_owners"]
    assert summary["viewers"] == truth["counts"]["viewers"]
    assert summary["exposures_by_category"] == truth["exposures_by_category"]
    assert summary["exposures_by_severity"] == truth["exposures_by_severity"]
    assert summary["anonymous_viewer_sessions"] == truth["counts"]["anonymous_viewer_sessions"]
    near_kinds = {k: v for k, v in truth["near_misses"]["by_kind"].items() if v}
    assert summary["near_misses"]["by_kind"] == near_kinds
    assert summary["near_misses"]["by_category"] == truth["near_misses"]["by_category"]
    assert summary["crossed_replies"] == truth["counts"]["crossed_replies"]
    assert summary["active_users"] == truth["active_users"]
    assert summary["active_sessions"] == truth["active_sessions"]
    return ours


@pytest.mark.parametrize("drop", [(), ("value_owner",)], ids=["all-fields", "no-value-owner"])
def test_simulated_incident_matches_ground_truth_exactly(incident, tmp_path, drop):
    logs, lake, truth, expected = incident
    out = _variant(lake, tmp_path / "out", drop)
    analyze(out, logs / "incident.toml", progress=False)
    ours = _assert_matches_truth(out, logs, truth, expected)
    if drop:
        assert set(ours.evidence) <= {"digest", "connection", "digest-ambiguous", "conflict"}
        assert (ours.evidence == "digest").mean() > 0.95
    else:
        assert set(ours.evidence) <= {"value_owner", "digest"}


def test_simulated_incident_auto_window_finds_the_bug_window(incident, tmp_path):
    logs, lake, truth, expected = incident
    out = _variant(lake, tmp_path / "out", ())
    summary = analyze(out, logs / "incident.toml", window="auto", progress=False)
    start, end = (pd.Timestamp(summary["window"][k]) for k in ("start", "end"))  # times, not texts: "...00Z" >
    bug_start, bug_end = (pd.Timestamp(truth["window"][k]) for k in ("start", "end"))  # "...00.000000Z"
    assert bug_start.floor("min") <= start < end <= bug_end
    assert _rows(pd.read_parquet(out / "exposures.parquet")) == _rows(expected)
    assert summary["outside_window"]["exposures"] == 0


def test_simulated_incident_connection_evidence_only(incident, tmp_path):
    """Without value_owner and value_sha256 only the order of calls on a connection shows a crossed reply.
    Every row is labelled as inferred (connection, or key); every difference from the truth must be explained
    by something the logs cannot show. On intact logs there is none; then one abandoned call's log line is
    lost, and every difference must sit on that connection, after the lost line, before its next reset."""
    logs, lake, truth, expected = incident
    out = _variant(lake, tmp_path / "out", ("value_owner", "value_sha256"))
    analyze(out, logs / "incident.toml", progress=False)
    ours = _assert_matches_truth(out, logs, truth, expected)
    assert set(ours.evidence) <= {"connection", "key"}

    # Lose the log line of one abandoned call that a later read on its connection depended on.
    con = duckdb.connect()
    cache = f"read_parquet('{out}/parquet/cache/**/*.parquet', hive_partitioning = true)"
    crossed = ours[ours.evidence == "connection"].sort_values("ts").iloc[len(ours) // 2]
    lost = con.execute(
        f"SELECT source_file, source_line, ts FROM {cache} WHERE host = ? AND conn_id = ? AND ts < ? "
        "AND status IN ('cancelled', 'timeout') ORDER BY ts DESC LIMIT 1",
        [crossed.host, crossed.conn_id, crossed.ts],
    ).fetchone()
    for path in sorted((out / "parquet" / "cache").rglob("*.parquet")):
        con.execute(f"COPY (SELECT * FROM read_parquet('{path}') "
                    "WHERE NOT (source_file = ? AND source_line = ?)) "
                    f"TO '{path}.tmp' (FORMAT parquet)", [lost[0], lost[1]])
        Path(f"{path}.tmp").replace(path)
    analyze(out, logs / "incident.toml", progress=False)
    damaged = pd.read_parquet(out / "exposures.parquet")
    assert set(damaged.evidence) <= {"connection", "key"}
    differences = _rows(damaged) ^ _rows(expected)
    assert differences, "losing a line the FIFO chain depends on must show"
    next_reset = con.execute(
        f"SELECT min(ts) FROM {cache} WHERE host = ? AND conn_id = ? AND ts > ? "
        "AND (op = 'RECONNECT' OR status = 'error')",
        [crossed.host, crossed.conn_id, lost[2]],
    ).fetchone()[0]
    for request_id, *_ in differences:
        lines = con.execute(
            f"SELECT host, conn_id, min(ts) FROM {cache} WHERE request_id = ? GROUP BY ALL", [request_id]
        ).fetchall()
        explained = any(
            host == crossed.host and conn == crossed.conn_id and ts >= lost[2]
            and (next_reset is None or ts <= next_reset)
            for host, conn, ts in lines
        )
        assert explained, f"{request_id}: a difference the lost line does not explain"


def test_a_cache_warm_before_the_logs_with_empty_lists_many_users_share(tmp_path):
    """The common-value rule against the ground truth at scale. The cache holds every value before the logs begin
    (no warm-up write is logged) and 30% of the users have an empty titles list, the same bytes for all of them;
    now and then a user empties theirs, so the logs give the empty list's digest to that user alone until a
    second owner writes it. Reads of it under other users' own keys, on connections before their first logged
    reset, prove nothing one by one; under 3 owners' keys on 3 connections they show bytes the users share. With
    every field, without value_owner, and from connections alone, the answer is the truth, inside the window and
    outside it; the rule (segment_no > 0 alone) named the emptier as the owner of 8 reads in the window and 9
    before it."""
    logs = tmp_path / "logs"
    truth = simulate(logs, users=600, hours=12, requests=40_000, cancel_rate=0.05, seed=11,
                     cache_warm_before_logs=True, empty_titles=0.3)
    lake = tmp_path / "lake"
    ingest([logs], lake, config=logs / "incident.toml", progress=False)
    expected = pd.read_csv(logs / "ground_truth" / "exposures.csv", dtype=str, keep_default_na=False)
    for drop in [(), ("value_owner",), ("value_owner", "value_sha256")]:
        out = _variant(lake, tmp_path / f"out-{len(drop)}", drop)
        summary = analyze(out, logs / "incident.toml", progress=False)
        _assert_matches_truth(out, logs, truth, expected)
        assert summary["outside_window"]["exposures"] == truth["exposures_outside_window"] == 0
        assert summary["digest_exposures_on_clean_connections"] == 0, drop
        shared = summary["digests_read_as_own"]
        if "value_sha256" in drop:
            assert shared == {"digests": 0, "reads": 0}
        else:  # the empty list, read as their own by many
            assert shared["digests"] == 1 and shared["reads"] > 100, drop


def test_a_small_memory_limit_is_obeyed_and_gives_the_same_answer(incident, tmp_path):
    logs, lake, truth, expected = incident
    out = _variant(lake, tmp_path / "out", ())
    analyze(out, logs / "incident.toml", progress=False, memory_limit="64MB", threads=1)
    assert _rows(pd.read_parquet(out / "exposures.parquet")) == _rows(expected)
    assert not (out / ".tmp").exists()  # the spill folder is removed afterwards

def test_the_summary_counts_what_the_grants_excused_and_names_the_tables_applied(incident, tmp_path):
    """granted_views: the views of another's data a grant covers, which are not exposures: over the whole log, the
    simulator's share-link views and its crossed replies that a grant covered, exactly. tables: the version of each
    side table the analysis applied (path, SHA-256, rows), so a later edit of grants.csv shows."""
    logs, lake, truth, _ = incident
    out = _variant(lake, tmp_path / "out", ())
    summary = analyze(out, logs / "incident.toml", window="all", progress=False)
    shares = truth["requests"]["share_link_views"] + truth["requests"]["anonymous_share_views"]
    granted = summary["granted_views"]
    assert granted["items"] == shares + truth["crossed"]["served_granted"] > 0
    assert granted["crossed_replies"] == truth["crossed"]["served_granted"]
    assert granted["by_category"] == {"conversation_content": granted["items"]}  # the simulator shares conversations
    grants = pd.read_csv(logs / "grants.csv", dtype=str)
    assert 0 < granted["owners"] <= grants.owner_id.nunique()
    for name in ("grants", "ownership"):
        path = logs / f"{name}.csv"
        assert summary["tables"][name] == {
            "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "rows": len(pd.read_csv(path, dtype=str)),
        }
    assert json.loads((out / "summary.json").read_text())["tables"] == summary["tables"]

    # Without a grants table the same views are exposures: exactly those the grants excused.
    config = (logs / "incident.toml").read_text()
    bare = tmp_path / "no-grants.toml"
    bare.write_text(re.sub(r'^(\w+)\s*= "(\w+\.csv)"$', rf'\1 = "{logs}/\2"', config, flags=re.M)
                    .replace(f'grants = "{logs}/grants.csv"', ""))
    without = analyze(out, bare, window="all", progress=False)
    assert without["tables"]["grants"] == {"path": None, "sha256": None, "rows": 0}
    assert without["granted_views"]["items"] == 0
    assert without["exposures"] == summary["exposures"] + granted["items"]


def test_a_share_link_excuses_its_one_conversation_in_the_truth_and_the_analysis(tmp_path):
    """The simulator's share links are grants of one conversation (resource_id): a crossed reply that brings the
    link's viewer another of its owner's conversations is an exposure in the ground truth and in the analysis
    alike (a category-wide grant excused it in both), and the two agree row for row."""
    logs = tmp_path / "logs"
    simulate(logs, users=30, requests=4000, cancel_rate=0.08, seed=3)
    grants = pd.read_csv(logs / "grants.csv", dtype=str, keep_default_na=False)
    expected = pd.read_csv(logs / "ground_truth" / "exposures.csv", dtype=str, keep_default_na=False)
    out = tmp_path / "out"
    ingest([logs], out, config=logs / "incident.toml", progress=False)
    analyze(out, logs / "incident.toml", progress=False)
    ours = pd.read_parquet(out / "exposures.parquet")
    assert _rows(ours) == _rows(expected)
    # The exposures whose owner, viewer ('*': anyone) and time a grant covers: values of another conversation.
    covered = [
        (row, g)
        for row in expected.itertuples()
        for g in grants.itertuples()
        if g.owner_id == row.owner_id and g.viewer_id in ("*", row.viewer_id)
        and pd.Timestamp(g.valid_from) <= pd.Timestamp(row.ts)
        and (not g.valid_to or pd.Timestamp(row.ts) < pd.Timestamp(g.valid_to))
    ]
    assert covered, "no crossed reply of a grant owner's other conversation reached its viewer here"
    ownership = pd.read_csv(logs / "ownership.csv", dtype=str).set_index("resource_id")["owner_id"]
    assert (grants.resource_id.map(ownership) == grants.owner_id).all()  # each shares one of its owner's
    for row, g in covered:
        assert row.category == "conversation_content" and row.value_key != f"conv:{g.resource_id}"
        assert ((ours.request_id == row.request_id) & (ours.value_key == row.value_key)).any()


# ----------------------------------------------------------------------------------------- Spark


def _mtimes_but_lock(out: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.name != LOCK_NAME}


def test_spark_compare_is_refused_while_a_stage_writes(incident, tmp_path):
    """compare reads the lake twice (DuckDB, then Spark): a concurrent ingest must not change it in between."""
    _, lake, _, _ = incident
    out = _variant(lake, tmp_path / "out", ())
    with held_by_another_thread(out), pytest.raises(WhosawError, match="another ingest"):
        compare(out)

@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_runs_the_same_sql_files_with_identical_results(incident, tmp_path):
    logs, lake, truth, expected = incident
    out = _variant(lake, tmp_path / "out", ())
    before = _mtimes_but_lock(out)
    # Spark's block manager folder (shuffle and spill files: log rows), watched while compare runs
    elsewhere_before, seen, done = set(Path(tempfile.gettempdir()).glob("blockmgr-*")), set(), threading.Event()

    def watch():
        while not done.wait(0.05):
            seen.update(Path(tempfile.gettempdir()).glob("blockmgr-*"), out.glob(".tmp/*/blockmgr-*"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = compare(out, logs / "incident.toml", window="auto")
    finally:
        done.set()
        watcher.join()
    assert _mtimes_but_lock(out) == before  # compare writes nothing there but its lock (its scratch went away)
    new_scratch = seen - elsewhere_before
    assert new_scratch and all(p.is_relative_to(out / ".tmp") for p in new_scratch), new_scratch
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"]["spark"] == result["exposures"]["duckdb"] == len(expected)
    assert result["window"]["spark"] == result["window"]["duckdb"]
    assert result["near_misses"]["spark"] == result["near_misses"]["duckdb"]
    assert result["near_misses_by_kind"]["spark"] == result["near_misses_by_kind"]["duckdb"]
    assert result["timeline_differences"] == 0
    assert result["summary_differences"] == []  # every figure of summary.json


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_reads_every_files_columns_and_the_widest_window_as_duckdb_does(incident, tmp_path):
    """Spark takes the lake's columns from all its files, as DuckDB does: a cache file without value_owner (another
    tool's, or an older lake's) does not hide the column in the others (Spark reads one footer unless told to merge
    them: here the first file's). And the widest window, from year 1 to year 9999, comes back from Spark as it went
    in, in a process east of UTC too (pyspark's own conversion to local time fails there)."""
    logs, lake, _, _ = incident
    out = _variant(lake, tmp_path / "out", ())
    con = duckdb.connect()
    first = sorted((out / "parquet" / "cache").rglob("*.parquet"))[0]
    con.execute(f"COPY (SELECT * EXCLUDE (value_owner) FROM read_parquet('{first}')) TO '{first}.tmp' (FORMAT parquet)")
    Path(f"{first}.tmp").replace(first)
    zone = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        result = compare(out, logs / "incident.toml", window="0001-01-01T00:00:00Z/9999-12-31T23:59:59Z")
    finally:
        if zone is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = zone
        time.tzset()
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["summary_differences"] == []
    assert result["exposures"]["spark"] == result["exposures"]["duckdb"] > 0
    assert result["window"]["spark"] == result["window"]["duckdb"]


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_finds_the_same_whatever_a_clusters_settings(incident, tmp_path):
    """A session set up as a cluster may be (its admin's or a notebook's settings): adaptive query execution off,
    small file splits and an odd number of shuffle partitions (rows meet in other orders), no broadcast joins, its
    own time zone and ANSI mode off. The analysis is the same as DuckDB's, row by row and figure by figure, and the
    session keeps its settings. (Without adaptive execution Spark could not tell a materialised view's columns from
    the view it was made from, and failed; compare shows exposures in the session's zone unless it is UTC.)"""
    from pipeline import spark as spark_mod

    logs, lake, _, expected = incident
    out = _variant(lake, tmp_path / "out", ())
    settings = {
        "spark.sql.adaptive.enabled": "false",
        "spark.sql.files.maxPartitionBytes": "65536",
        "spark.sql.shuffle.partitions": "7",
        "spark.sql.autoBroadcastJoinThreshold": "-1",
        "spark.sql.session.timeZone": "Asia/Kolkata",
        "spark.sql.ansi.enabled": "false",
    }
    session = spark_mod.session(local_dir=tmp_path / "scratch")
    try:
        for name, value in settings.items():
            session.conf.set(name, value)
        result = compare(out, logs / "incident.toml", window="auto", spark=session)
        assert {name: session.conf.get(name) for name in settings} == settings
    finally:
        session.stop()
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"]["spark"] == result["exposures"]["duckdb"] == len(expected)
    assert result["window"]["spark"] == result["window"]["duckdb"]
    assert result["timeline_differences"] == 0
    assert result["summary_differences"] == []


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_a_spark_error_writes_nothing_to_stderr_in_a_session_whosaw_starts(tmp_path, monkeypatch):
    """pyspark logs a SQL error's whole message to stderr as JSON, and for a value that fails a cast the message
    holds the value (here an email address): not in the Spark whosaw starts (the CLI prints its one line), but with
    WHOSAW_DEBUG; pyspark's logging is as it was afterwards. (What pyspark's logger emits is watched by a handler of
    ours: its own handler writes to the stderr of when it was made, which pytest may since have replaced.)"""
    from pipeline import spark as spark_mod

    out = tmp_path / "out"
    out.mkdir()
    failing = "SELECT CAST(email AS INT) FROM VALUES ('alice@example.com') AS t(email)"

    class Kept(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    from pyspark.logger import PySparkLogger

    logger = PySparkLogger.getLogger("SQLQueryContextLogger")  # pyspark's kind: it logs with keywords
    for debug in ("", "1"):
        monkeypatch.setenv("WHOSAW_DEBUG", debug)
        kept = Kept()
        with spark_mod.spark_session(out) as spark:
            logger.addHandler(kept)
            try:
                with pytest.raises(Exception, match="CAST_INVALID_INPUT"):
                    spark.sql(failing).collect()
            finally:
                logger.removeHandler(kept)
        assert any("alice@example.com" in message for message in kept.messages) == bool(debug)
        assert not logger.disabled


def _assert_same_analysis(outs: dict[str, Path], exposures: int) -> None:
    """The analyses in ``outs["duckdb"]`` and ``outs["spark"]`` wrote the same summary.json (but ``generated_at``;
    ``exposures`` of them, some near misses), and the same column types and rows, in order, in the four Parquet
    outputs."""
    summaries = {engine: json.loads((out / "summary.json").read_text()) for engine, out in outs.items()}
    assert summaries["duckdb"]["exposures"] == exposures > 0
    assert summaries["duckdb"]["near_misses"]["total"] > 0
    for summary in summaries.values():
        del summary["generated_at"]
    assert summaries["spark"] == summaries["duckdb"]
    con = duckdb.connect()
    for name in ("exposures.parquet", "exposures_outside_window.parquet", "near_misses.parquet", "timeline.parquet"):
        for query in ("DESCRIBE SELECT * FROM '{}'", "SELECT * FROM '{}'"):
            duck, spark = (con.execute(query.format(out / name)).fetchall() for out in (outs["duckdb"], outs["spark"]))
            assert spark == duck, (name, query)


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_analyze_on_spark_writes_the_files_duckdb_writes(incident, tmp_path):
    """``--engine spark``: the analysis on Spark, the same files as on DuckDB: the console's figures, every figure of
    summary.json, every row and column type of the four Parquet outputs, exposures.csv byte for byte, and the
    report's lists made from them. Nothing of Spark's is left under OUT."""
    logs, lake, _, expected = incident
    outs = {engine: _variant(lake, tmp_path / engine, ()) for engine in ("duckdb", "spark")}
    printed = {}
    for engine, out in outs.items():
        analysis = CliRunner().invoke(cli, [
            "analyze", "--out", str(out), "--config", str(logs / "incident.toml"), "--window", "auto",
            "--engine", engine,
        ])
        assert analysis.exit_code == 0, analysis.output
        printed[engine] = analysis.output
        report = CliRunner().invoke(cli, ["report", "--out", str(out)])
        assert report.exit_code == 0, report.output
    assert printed["spark"] == printed["duckdb"]
    _assert_same_analysis(outs, len(expected))
    csvs = sorted(path.relative_to(outs["duckdb"]) for path in outs["duckdb"].rglob("*.csv")
                  if not path.is_relative_to(outs["duckdb"] / "rejects"))
    assert {"exposures.csv", "affected_users.csv", "viewers.csv"} <= {str(path) for path in csvs}
    for path in csvs:
        assert (outs["spark"] / path).read_bytes() == (outs["duckdb"] / path).read_bytes(), path
    assert load_manifest(outs["spark"])["analysis"]["engine"] == "spark"
    assert "from the analysis (run on Apache Spark) of" in (outs["spark"] / "report.md").read_text()
    assert "Apache Spark" not in (outs["duckdb"] / "report.md").read_text()
    assert not (outs["spark"] / ".tmp").exists()


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_analyze_on_a_spark_cluster_writes_the_files_duckdb_writes(incident, tmp_path):
    """``--spark-master``: the analysis on a Spark cluster, here a local one (``local-cluster``: a master and two
    workers, each executor its own JVM reading the lake and writing the results by path, with Spark's default
    shuffle partitions), writes what DuckDB writes; the manifest names the master."""
    logs, lake, _, expected = incident
    outs = {engine: _variant(lake, tmp_path / engine, ()) for engine in ("duckdb", "spark")}
    master = "local-cluster[2,1,1024]"
    import pyspark

    workers = Path(pyspark.__file__).parent / "work"  # where local-cluster's workers keep their executors' logs
    before = set(workers.glob("app-*"))
    try:
        for engine, out in outs.items():
            extra = ["--spark-master", master] if engine == "spark" else []
            analysis = CliRunner().invoke(cli, [
                "analyze", "--out", str(out), "--config", str(logs / "incident.toml"), "--window", "auto",
                "--engine", engine, *extra,
            ])
            assert analysis.exit_code == 0, analysis.output
    finally:
        for app in set(workers.glob("app-*")) - before:
            shutil.rmtree(app, ignore_errors=True)
    _assert_same_analysis(outs, len(expected))
    assert (outs["spark"] / "exposures.csv").read_bytes() == (outs["duckdb"] / "exposures.csv").read_bytes()
    manifests = {engine: load_manifest(out)["analysis"] for engine, out in outs.items()}
    assert (manifests["spark"]["engine"], manifests["spark"]["spark_master"]) == ("spark", master)
    assert (manifests["duckdb"]["engine"], manifests["duckdb"]["spark_master"]) == ("duckdb", None)
    assert not (outs["spark"] / ".tmp").exists()


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_a_spark_master_spark_cannot_run_on_is_one_line(incident, tmp_path):
    """A master URL Spark would refuse (with a Java stack trace), or a master without ``--engine spark``: exit 2
    and one line before the lake is read, ``run``'s --out never made. A master Spark fails to start on: exit 2, the
    Java exception's first line the only line on stderr but the JVM's own note (Spark's log is off: no start-up
    notes, no Java stack), nothing left in OUT/.tmp; with WHOSAW_DEBUG=1 Spark's log is there too."""
    logs, lake, _, _ = incident
    out = _variant(lake, tmp_path / "out", ())
    before = _mtimes_but_lock(out)
    new = tmp_path / "new"
    for args, error in [
        (["--engine", "spark", "--spark-master", "spark:/typo"],
         "spark master: 'spark:/typo' is not a Spark master URL: expected local[N], spark://HOST:PORT, yarn or "
         "k8s://https://HOST:PORT"),
        (["--spark-master", "local[2]"], "spark master: a master URL needs the Spark engine (--engine spark)"),
    ]:
        for command in (["analyze", "--out", str(out)], ["run", str(logs), "--out", str(new)]):
            result = CliRunner().invoke(cli, [*command, *args])
            assert result.exit_code == 2, result.output
            assert result.output.strip().splitlines() == [f"whosaw: error: {error}"]
    assert _mtimes_but_lock(out) == before
    assert not new.exists()
    too_small = "local-cluster[1,1,1]"  # 1 MB workers: Spark's context refuses to start
    line = (
        f"whosaw: error: engine spark: Spark did not start on master '{too_small}': org.apache.spark.SparkException: "
        "Asked to launch cluster with 1 MiB/worker but requested 1024 MiB/executor"
    )
    for debug in ("", "1"):
        env = {**os.environ, "WHOSAW_DEBUG": debug}
        failed = subprocess.run(
            [sys.executable, "-m", "pipeline", "analyze", "--out", str(out), "--engine", "spark", "--spark-master",
             too_small], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], env=env,
        )
        assert failed.returncode == 2
        said = [text for text in failed.stderr.strip().splitlines() if not text.startswith("WARNING: Using incubator")]
        if debug:
            assert said[-1] == line
            assert "ERROR SparkContext" in failed.stderr and "\tat org.apache.spark" in failed.stderr
        else:
            assert said == [line], failed.stderr
        assert _mtimes_but_lock(out) == before
        assert not (out / ".tmp").exists()


def test_spark_log_is_off_unless_asked_for_or_configured_by_the_user(tmp_path, monkeypatch):
    """The Spark whosaw starts gets the driver option that turns Spark's own log off, but not with WHOSAW_DEBUG,
    nor where the user configures Spark's logging or the driver's Java options: that option would replace theirs."""
    from pipeline import spark as spark_mod

    for name in ("WHOSAW_DEBUG", "PYSPARK_SUBMIT_ARGS", "SPARK_HOME"):
        monkeypatch.delenv(name, raising=False)
    conf = tmp_path / "conf"
    conf.mkdir()
    monkeypatch.setenv("SPARK_CONF_DIR", str(conf))
    option = spark_mod.quiet_logging()
    assert option == f"-Dlog4j2.configurationFile={spark_mod.LOG_CONFIG.resolve().as_uri()}"
    assert "rootLogger.level = off" in spark_mod.LOG_CONFIG.read_text()
    (conf / "spark-defaults.conf").write_text("spark.executor.memory 4g\n")
    assert spark_mod.quiet_logging() == option
    monkeypatch.setenv("WHOSAW_DEBUG", "1")
    assert spark_mod.quiet_logging() is None
    monkeypatch.delenv("WHOSAW_DEBUG")
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", '--conf "spark.driver.extraJavaOptions=-Dx=1" pyspark-shell')
    assert spark_mod.quiet_logging() is None
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    (conf / "spark-defaults.conf").write_text("spark.driver.extraJavaOptions -Dx=1\n")
    assert spark_mod.quiet_logging() is None
    (conf / "spark-defaults.conf").unlink()
    (conf / "log4j2.properties").write_text("rootLogger.level = info\n")
    assert spark_mod.quiet_logging() is None


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_a_local_spark_session_keeps_its_catalog_folder_in_its_scratch(tmp_path):
    """Spark makes ``spark-warehouse`` in the current folder the first time it looks a name up in its catalog
    (a view the SQL misnames, say): with a scratch folder (``--engine spark``'s is under OUT/.tmp), it is there."""
    from pipeline import spark as spark_mod

    session = spark_mod.session(local_dir=tmp_path / "scratch")
    try:
        with pytest.raises(Exception, match="TABLE_OR_VIEW_NOT_FOUND"):
            session.sql("SELECT * FROM no_such_view").collect()
    finally:
        session.stop()
    assert (tmp_path / "scratch" / "warehouse").is_dir()


def test_engine_spark_without_java_is_a_one_line_error(incident, tmp_path):
    """No Java runtime on PATH (or no pyspark): exit 2 and what to install, before the lake is touched."""
    logs, lake, _, _ = incident
    out = _variant(lake, tmp_path / "out", ())
    before = _mtimes_but_lock(out)

    def without_java(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args, "--engine", "spark"], capture_output=True, text=True,
            env={**os.environ, "PATH": str(tmp_path / "nothing-here")}, cwd=Path(__file__).resolve().parents[1],
        )

    # run: before its ingest, so nothing is written
    new = tmp_path / "new"
    for result in (without_java("analyze", "--out", str(out)), without_java("run", str(logs), "--out", str(new))):
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "whosaw: error: engine spark: pyspark and a Java runtime (17) are needed: "
            "python -m pip install 'whosaw[spark]'"
        ]
    assert _mtimes_but_lock(out) == before
    assert not new.exists()
    assert CliRunner().invoke(cli, ["analyze", "--out", str(out), "--engine", "presto"]).exit_code == 2


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_finds_the_log_gaps_duckdb_finds(tmp_path):
    """97_log_gaps on both engines: a host whose cache files were not given, and two hours of the cache lake
    gone, are the same gaps."""
    logs = tmp_path / "logs"
    simulate(logs, users=100, requests=4000, cancel_rate=0.05, seed=5, messy=True)
    for path in logs.glob("cache-web-3*"):
        path.unlink()
    out = tmp_path / "out"
    ingest([logs], out, config=logs / "incident.toml", progress=False)
    for hour in (5, 6):
        shutil.rmtree(out / "parquet" / "cache" / "date=2023-03-20" / f"hour={hour}")
    result = compare(out, logs / "incident.toml")
    gaps = result["log_gaps"]["duckdb"]
    assert result["log_gaps"]["spark"] == gaps
    assert result["summary_differences"] == []
    assert [gap["host"] for gap in gaps["hosts_without_cache_calls"]] == ["web-3"]
    assert [(gap["start"], gap["end"]) for gap in gaps["hours_without_cache_calls"]] == [
        ("2023-03-20T05:00:00Z", "2023-03-20T07:00:00Z")
    ]


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_ends_a_since_forever_ownership_row_as_duckdb_does(tmp_path):
    """NULLs sort first in Spark and last in DuckDB: the SQL says NULLS FIRST, so both end alice's row alike."""
    cache, users, tables = _since_forever_case()
    run_case(tmp_path, cache, users, tables=tables)
    result = compare_lake(tmp_path, tables=("ownership",))
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": 3, "spark": 3}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_applies_a_grant_of_one_resource_as_duckdb_does(tmp_path):
    cache, requests, tables = _shared_conversation_case()
    run_case(tmp_path, cache, requests=requests, tables=tables)
    result = compare_lake(tmp_path, tables=("ownership", "grants"))
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": 2, "spark": 2}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_names_the_owner_of_overlapping_ownership_rows_as_duckdb_does(tmp_path):
    cache, users, tables = _ownership_claims_case()
    run_case(tmp_path, cache, users, tables=tables)
    result = compare_lake(tmp_path, tables=("ownership",))
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": 4, "spark": 4}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_keeps_the_session_holder_through_a_refresh_as_duckdb_does(tmp_path):
    cache, requests, sessions = _refresh_case()
    run_case(tmp_path, cache, requests=requests, sessions=sessions)
    result = compare_lake(tmp_path, window="all")
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": 4, "spark": 4}


def _undated_lines_case():
    """Lines without ts, as a lake written by other tools may hold: a cache line on a connection (r0), and a
    re-shipped copy of request r1 that names another session and user."""
    cache = [call(T(1), "a1", "user:bob:titles", "cancelled"), call(None, "r0", "user:dave:titles"),
             call(T(2), "r1", "user:carol:titles")]
    requests = [
        {"ts": T(3), "request_id": rid, "session_id": f"s-{rid}", "user_id": user, "status": 200}
        for rid, user in (("a1", "bob"), ("r0", "dave"), ("r1", "carol"))
    ] + [{"ts": None, "request_id": "r1", "session_id": "s-copy", "user_id": "bob", "status": 200, "source_line": 9}]
    return cache, requests


def test_undated_lines_sort_last_in_the_connection_and_among_copies_of_a_request(tmp_path):
    cache, requests = _undated_lines_case()
    summary, exp = run_case(tmp_path, cache, requests=requests, window="all")
    # r1 read the reply of the cancelled call (bob's), and the undated r0, queued after it, r1's (carol's); the
    # dated copy of request r1 is the one kept
    assert pairs(exp) == {("r1", "carol", "bob", "conversation_titles", "connection"),
                          ("r0", "dave", "carol", "conversation_titles", "connection")}
    assert set(exp.session_id) == {"s-r1", "s-r0"}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_sorts_undated_lines_last_as_duckdb_does(tmp_path):
    """Spark puts NULLs first, DuckDB last: the SQL says NULLS LAST wherever a ts may be NULL."""
    cache, requests = _undated_lines_case()
    run_case(tmp_path, cache, requests=requests, window="all")
    result = compare_lake(tmp_path, window="all")
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": 2, "spark": 2} and result["timeline_differences"] == 0


def _infinite_side_table_case():
    """Open ends written as 'infinity' (a PostgreSQL export) or a year past 9999: DuckDB reads them, Spark and
    Python's datetime cannot hold them."""
    cache = [call(T(1), "a1", "conv:x", "cancelled"), call(T(2), "r1", "conv:y"),
             call(T(3), "a3", "conv:x", "cancelled", conn="c3"), call(T(4), "r3", "conv:y", conn="c3")]
    users = {"a1": "bob", "r1": "carol", "a3": "bob", "r3": "dave"}
    tables = {
        "ownership": [
            {"resource_id": "x", "owner_id": "bob", "valid_from": "-infinity", "valid_to": "infinity"},
            {"resource_id": "y", "owner_id": "carol", "valid_from": "2020-01-01", "valid_to": "10000-01-01"},
        ],
        "grants": [{"owner_id": "bob", "viewer_id": "dave", "category": "*", "valid_from": "-infinity",
                    "valid_to": "infinity"}],
    }
    return cache, users, tables


def test_side_tables_read_infinite_and_far_ends_as_open(tmp_path):
    cache, users, tables = _infinite_side_table_case()
    summary, exp = run_case(tmp_path, cache, users, tables=tables, window="all")
    # r1 got bob's conv:x (owned from -infinity to infinity); dave's r3 too, under a grant of the same span
    assert pairs(exp) == {("r1", "carol", "bob", "conversation_content", "connection")}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_reads_infinite_side_table_ends_as_duckdb_does(tmp_path):
    cache, users, tables = _infinite_side_table_case()
    run_case(tmp_path, cache, users, tables=tables, window="all")
    result = compare_lake(tmp_path, tables=("ownership", "grants"))
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": 1, "spark": 1}


# ----------------------------------------------------------------------------------------- auto window: scan

def test_auto_window_on_the_sample_spans_the_sparse_incident_from_first_to_last_crossed_reply(tmp_path):
    # ~137 crossed replies over 9 hours (~1.3 per 5-minute bucket, many buckets with 0 or 1): the whole
    # incident, not only its dense middle. The bug starts at 01:00 but shows first at 01:16:40 (the first
    # abandoned call of the window is at 01:15:42): the window starts at the first evidence.
    root = Path(__file__).resolve().parents[1] / "sample_logs"
    out = tmp_path / "out"
    ingest([root], out, root / "incident.toml", progress=False)
    summary = analyze(out, root / "incident.toml", window="auto", progress=False)
    truth = root / "ground_truth"
    near = pd.read_csv(truth / "near_misses.csv")
    crossed = pd.to_datetime(pd.concat([
        pd.read_csv(truth / "exposures.csv").ts, near[near.kind != "discarded"].ts]), utc=True)
    start, end = (pd.Timestamp(summary["window"][k]) for k in ("start", "end"))
    assert start == crossed.min().floor("s") and end == crossed.max().floor("s") + pd.Timedelta(seconds=1)
    assert pd.Timestamp("2023-03-20T01:00Z") <= start <= pd.Timestamp("2023-03-20T01:20Z")
    assert pd.Timestamp("2023-03-20T09:50Z") <= end <= pd.Timestamp("2023-03-20T10:00Z")
    assert summary["outside_window"]["exposures"] == 0
    assert summary["exposures"] == 49 and summary["affected_owners"] == 34
    auto = summary["auto_window"]
    assert auto["crossed_replies_in_run"] == 137 and auto["crossed_replies_outside_run"] == 0
    assert auto["log_likelihood_ratio"] >= auto["log_likelihood_ratio_needed"] == 15


def _noisy_cache(seed: int, incident: tuple[float, float] | None):
    """12 hours from 01:00: ordinary reads, 2 a minute for 6 hours, then 6 a minute (a traffic step); before
    5% of the reads a call on the same connection is cancelled (background crossed replies everywhere,
    proportional to traffic); inside ``incident`` (hours after 01:00) 40% of the reads. Returns (cache, users,
    crossed reply times inside and outside the incident)."""
    rng = random.Random(seed)
    cache, users, inside, outside = [], {}, [], []
    n = 0
    for minute in range(12 * 60):
        for k in range(2 if minute < 6 * 60 else 6):
            n += 1
            at = minute + (k + rng.random()) / 6
            in_incident = incident is not None and incident[0] * 60 <= at < incident[1] * 60
            if rng.random() < (0.4 if in_incident else 0.05):
                cache.append(call(T(at), f"v{n}", f"user:victim{n}:titles", "cancelled", conn=f"c{n}"))
                users[f"v{n}"] = f"victim{n}"
                (inside if in_incident else outside).append(at)
            cache.append(call(T(at, 0.5), f"r{n}", f"user:u{n}:titles", conn=f"c{n}"))
            users[f"r{n}"] = f"u{n}"
    return cache, users, inside, outside


def test_auto_window_with_background_crossed_replies_stays_on_the_incident(tmp_path):
    # Background: ~0.5 crossed replies per bucket, then ~1.5 once traffic triples at 07:00, right where the
    # incident (04:00 to 07:00, ~4 per bucket) ends. The first rule (threshold baseline + max(1, 3 sqrt(baseline))
    # = 1, the 10th percentile being 0) ran on into the busy hours, to ~13:00.
    cache, users, inside, outside = _noisy_cache(3, (3.0, 6.0))
    summary, exp = run_case(tmp_path, cache, users, window="auto")
    start, end = (pd.Timestamp(summary["window"][k]) for k in ("start", "end"))
    first, last = (pd.Timestamp(T(min(inside) if k == 0 else max(inside))) for k in (0, 1))
    assert abs(start - pd.Timestamp("2023-03-20T04:00Z")) <= pd.Timedelta(minutes=10)
    assert abs(end - pd.Timestamp("2023-03-20T07:00Z")) <= pd.Timedelta(minutes=10)
    assert first - pd.Timedelta(minutes=10) <= start and end <= last + pd.Timedelta(minutes=10)
    auto = summary["auto_window"]
    assert auto["crossed_per_1000_calls_outside_run"] > 20 and auto["crossed_replies_outside_run"] > 100
    assert auto["crossed_per_1000_calls_in_run"] > 5 * auto["crossed_per_1000_calls_outside_run"]
    # the background left outside is no second stretch: the buckets outside, scanned again, fit one rate
    assert auto["stretches_joined"] == 1 and auto["second_stretch_log_likelihood_ratio"] < 15
    assert summary["exposures"] + summary["outside_window"]["exposures"] == len(inside) + len(outside)


def _changing_rate_cache(seed: int, phases: list[tuple[float, float, float]]):
    """12 hours from 01:00, 4 ordinary reads a minute; before 3% of them a call on the same connection is
    cancelled (background), and inside each phase (start hour, end hour after 01:00, share) that share. Returns
    (cache, users, crossed reply times inside any phase)."""
    rng = random.Random(seed)
    cache, users, inside = [], {}, []
    n = 0
    for minute in range(12 * 60):
        for k in range(4):
            n += 1
            at = minute + (k + rng.random()) / 4
            share = next((p for a, b, p in phases if a * 60 <= at < b * 60), None)
            if rng.random() < (share or 0.03):
                cache.append(call(T(at), f"v{n}", f"user:victim{n}:titles", "cancelled", conn=f"c{n}"))
                users[f"v{n}"] = f"victim{n}"
                if share:
                    inside.append(at)
            cache.append(call(T(at, 0.5), f"r{n}", f"user:u{n}:titles", conn=f"c{n}"))
            users[f"r{n}"] = f"u{n}"
    return cache, users, inside


@pytest.mark.parametrize("phases", [
    [(1.0, 2.0, 0.4), (2.0, 9.0, 0.1)],  # an intense first hour, then a milder tail until 10:00
    [(1.0, 2.0, 0.1), (2.0, 3.0, 0.5), (3.0, 9.0, 0.1)],  # mild, an intense hour, mild again
    [(1.0, 2.0, 0.4), (8.0, 9.0, 0.4)],  # two bursts over the background
], ids=["tail", "peak-in-the-middle", "two-bursts"])
def test_auto_window_keeps_a_bug_whose_rate_changed_whole(tmp_path, phases):
    """The scan's best stretch of a bug whose rate changes is its intense part alone: the tail counted as the rate
    elsewhere, its exposures fell outside the window and off the notification lists. The buckets outside the best
    stretch are scanned again, and a second stretch that stands out as much joins it."""
    cache, users, inside = _changing_rate_cache(5, phases)
    summary, exp = run_case(tmp_path, cache, users, window="auto")
    start, end = (pd.Timestamp(summary["window"][k]) for k in ("start", "end"))
    # (a stretch ends where the crossed replies are dense: a mild edge may lose a few minutes to the background)
    assert abs(start - pd.Timestamp(T(hours=phases[0][0]))) <= pd.Timedelta(minutes=20)
    assert abs(end - pd.Timestamp(T(hours=phases[-1][1]))) <= pd.Timedelta(minutes=20)
    auto = summary["auto_window"]
    assert auto["stretches_joined"] == 2 and auto["second_stretch_log_likelihood_ratio"] >= 15
    assert "joined with the best stretch of the buckets outside it" in summary["window"]["description"]
    in_window = exp.ts.between(pd.Timestamp(T(min(inside))).floor("s"), pd.Timestamp(T(max(inside))))
    assert in_window.sum() >= 0.95 * len(inside)  # the bug's exposures are in the window, all but a few


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_joins_the_same_second_stretch_to_the_auto_window(tmp_path):
    cache, users, _ = _changing_rate_cache(5, [(1.0, 2.0, 0.1), (2.0, 3.0, 0.5), (3.0, 9.0, 0.1)])
    summary, _ = run_case(tmp_path, cache, users, window="auto")
    assert summary["auto_window"]["stretches_joined"] == 2
    result = compare_lake(tmp_path, window="auto")
    assert result["window"]["spark"] == result["window"]["duckdb"]
    assert result["only_duckdb"] == [] and result["only_spark"] == [] and result["timeline_differences"] == 0


def test_auto_window_with_background_crossed_replies_only_finds_no_window(tmp_path):
    cache, users, inside, outside = _noisy_cache(4, None)
    summary, exp = run_case(tmp_path, cache, users, window="auto")
    assert not inside and len(outside) > 100
    assert summary["window"]["start"] is None and summary["window"]["end"] is None
    assert summary["exposures"] == len(outside) == len(exp)
    assert summary["outside_window"]["exposures"] == 0
    auto = summary["auto_window"]
    assert auto["run_buckets"] == 0 and auto["log_likelihood_ratio"] < auto["log_likelihood_ratio_needed"]
    assert "no window" in summary["window"]["description"]


def test_auto_window_without_crossed_replies_finds_no_window(tmp_path):
    cache = [call(T(m), f"r{m}", f"user:u{m}:titles", conn=f"c{m}") for m in range(0, 600, 3)]
    summary, exp = run_case(tmp_path, cache, {f"r{m}": f"u{m}" for m in range(0, 600, 3)}, window="auto")
    assert summary["window"]["start"] is None and exp.empty
    assert "log_likelihood_ratio" not in summary["auto_window"]
    assert "no crossed replies" in summary["window"]["description"]


def _baseline_case():
    """Two buckets of 1 and 3 crossed replies (bob's requests served alice's titles): percentile_cont(0.1) of them
    is 1.2, which DuckDB's percentile_cont made 1.2000000000000002 and Spark's 1.2000000000000000 (the nearest)."""
    reads = [(0, 0), (10, 0), (10, 1), (10, 2)]
    cache = [call(T(m, s), f"r{m}-{s}", "user:bob:titles", conn=f"c{m}-{s}", value_owner="alice") for m, s in reads]
    return cache, {f"r{m}-{s}": "bob" for m, s in reads}


def test_timeline_baseline_is_the_nearest_double_to_the_10th_percentile(tmp_path):
    cache, users = _baseline_case()
    summary, exp = run_case(tmp_path, cache, users, window="all")
    timeline = pd.read_parquet(tmp_path / "out" / "timeline.parquet")
    assert list(timeline.crossed_replies) == [1, 3] and len(exp) == 4
    assert set(timeline.baseline) == {1.2} and set(timeline.threshold) == {1.2 + 3.0 * 1.2 ** 0.5}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_computes_the_same_timeline_baseline_as_duckdb(tmp_path):
    cache, users = _baseline_case()
    run_case(tmp_path, cache, users, window="all")
    result = compare_lake(tmp_path, window="auto")
    assert result["timeline_differences"] == 0  # baseline and threshold included, to the last bit
    assert result["only_duckdb"] == [] and result["only_spark"] == []


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_finds_the_same_auto_window_among_background_crossed_replies(tmp_path):
    cache, users, inside, outside = _noisy_cache(3, (3.0, 6.0))
    summary, exp = run_case(tmp_path, cache, users, window="auto")
    result = compare_lake(tmp_path, window="auto")
    assert result["window"]["spark"] == result["window"]["duckdb"]
    assert result["only_duckdb"] == [] and result["only_spark"] == [] and result["timeline_differences"] == 0


# ----------------------------------------------------------------------------------------- multi-key calls

ALICE_MGET = '["user:alice:titles","billing:alice"]'


def test_a_crossed_mget_reply_exposes_every_item_of_it(tmp_path):
    """The bug's multi-key form: alice's MGET, logged as one line whose key is a JSON array, was cancelled after
    it was sent; bob's GET on the connection read its reply: bob saw her titles and her billing."""
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [
        {"ts": T(0, 1), "op": "MGET", "key": ["user:alice:titles", "billing:alice"], "status": "cancelled",
         "host": "h1", "conn_id": "1", "request_id": "ra"},
        {"ts": T(0, 2), "op": "GET", "key": "user:bob:titles", "status": "ok", "host": "h1", "conn_id": "1",
         "request_id": "rb"},
    ]
    (logs / "cache.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (logs / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"ts": T(0, 3), "request_id": "ra", "session_id": "sa", "user_id": "alice", "status": 200},
        {"ts": T(0, 3), "request_id": "rb", "session_id": "sb", "user_id": "bob", "status": 200},
    ]))
    out = tmp_path / "out"
    cfg = config_from_dict({"keys": KEYS}, tmp_path / "incident.toml")
    ingest([logs], out, cfg, progress=False)
    summary = analyze(out, cfg, progress=False)
    exp = pd.read_parquet(out / "exposures.parquet")
    assert pairs(exp) == {
        ("rb", "bob", "alice", "conversation_titles", "connection"),
        ("rb", "bob", "alice", "payment_info", "connection"),
    }
    assert list(exp.value_key) == ["user:alice:titles", "billing:alice"]  # in the array's order
    assert list(exp.severity) == ["low", "high"]
    assert set(exp.key) == {"user:bob:titles"} and set(exp.reply_request_id) == {"ra"}
    assert set(exp.owner_by_connection) == {"alice"} and set(exp.owner_by_key) == {"bob"}
    assert summary["exposures"] == 2 and summary["crossed_replies"] == 1  # one crossed reply, two items
    assert summary["exposures_by_category"] == {"conversation_titles": 1, "payment_info": 1}
    assert summary["affected_owners"] == 1 and summary["near_misses"]["total"] == 0
    from pipeline.report import report

    report(out, progress=False)
    for name in ("conversation_titles", "payment_info"):
        notify = read_safe_csv(out / "notify" / f"{name}.csv")
        assert list(notify.owner_id) == ["alice"], name


def test_a_crossed_mget_reply_counts_once_among_the_crossed_replies_granted_or_owned_by_no_one(tmp_path):
    """Crossed replies are counted per call, exposures per item: a crossed MGET reply of two items whose keys no
    rule names an owner for was two 'crossed replies served with data no evidence names an owner for', and one of
    two items a grant covers two granted crossed replies: more than the crossed replies in all."""
    cache = [
        call(T(0, 0), "ra", '["misc:a","misc:b"]', "cancelled", op="MGET", conn="1"),
        call(T(0, 1), "rb", "user:bob:titles", conn="1"),  # reads the misc items: nobody's known
        call(T(0, 0), "ra", ALICE_MGET, "cancelled", op="MGET", conn="2"),
        call(T(0, 2), "rc", "user:carol:titles", conn="2"),  # reads alice's items: her grant to carol covers them
    ]
    grants = {"owner_id": ["alice"], "viewer_id": ["carol"], "category": ["*"]}
    summary, exp = run_case(tmp_path, cache, {"ra": "alice", "rb": "bob", "rc": "carol"}, tables={"grants": grants})
    assert exp.empty and summary["crossed_replies"] == 2
    assert summary["crossed_served_unknown_owner"] == 1
    assert summary["granted_views"] == {
        "items": 2, "owners": 1, "crossed_replies": 1, "by_category": {"conversation_titles": 1, "payment_info": 1},
    }


def test_a_crossed_single_key_reply_read_by_an_mget_is_that_key(tmp_path):
    cache = [
        call(T(0, 1), "ra", "user:alice:titles", "cancelled"),
        call(T(0, 2), "rb", '["user:bob:titles","billing:bob"]', op="MGET"),  # reads alice's titles
    ]
    summary, exp = run_case(tmp_path, cache, {"ra": "alice", "rb": "bob"})
    assert pairs(exp) == {("rb", "bob", "alice", "conversation_titles", "connection")}
    row = exp.iloc[0]
    assert (row.key, row.value_key, row.owner_by_key) == ('["user:bob:titles","billing:bob"]', "user:alice:titles",
                                                          "bob")
    assert summary["crossed_replies"] == 1


def _foreign_item_mget():
    cache = [
        call(T(0, 1), "ra", '["user:alice:titles","user:carol:titles","billing:alice"]', op="MGET"),
        call(T(0, 2), "rc", '["user:carol:titles","billing:carol"]', op="MGET", conn="c2"),  # her own: nothing
    ]
    return cache, {"ra": "alice", "rc": "carol"}


def test_an_mget_of_someone_elses_key_is_a_key_tier_exposure_of_that_item_only(tmp_path):
    cache, users = _foreign_item_mget()
    summary, exp = run_case(tmp_path, cache, users)
    assert pairs(exp) == {("ra", "alice", "carol", "conversation_titles", "key")}
    row = exp.iloc[0]
    assert (row.value_key, row.owner_by_key, row.severity) == ("user:carol:titles", "carol", "low")
    assert summary["exposures"] == 1 and summary["crossed_replies"] == 0


def test_a_grant_covers_the_foreign_item_of_an_mget(tmp_path):
    cache, users = _foreign_item_mget()
    grants = [{"owner_id": "carol", "viewer_id": "alice", "category": "conversation_titles", "valid_from": "",
               "valid_to": ""}]
    summary, exp = run_case(tmp_path, cache, users, tables={"grants": grants})
    assert exp.empty and summary["exposures"] == 0


def _value_naming_one_owner_of_an_mget_case():
    cache = [
        call(T(0, 1), "rc", '["user:carol:titles","user:dave:titles"]', "cancelled", op="MGET"),
        call(T(0, 2), "rb", "user:bob:titles", value_owner="carol"),
        call(T(0, 3), "ra", ALICE_MGET, "cancelled", op="MGET", conn="c2"),
        call(T(0, 4), "rf", "user:frank:titles", conn="c2", value_owner="alice"),
        call(T(0, 5), None, ALICE_MGET, op="MSET", conn="w", value_sha256="ab" * 32),
        call(T(0, 6), "ra", ALICE_MGET, "cancelled", op="MGET", conn="c3"),
        call(T(0, 7), "rg", "user:gina:titles", conn="c3", value_sha256="ab" * 32),
        call(T(0, 8), "ra", '["user:alice:titles","user:erin:titles"]', op="MGET", conn="c4", value_owner="alice"),
    ]
    return cache, requests_for(cache, {"ra": "alice", "rb": "bob", "rc": "carol", "rf": "frank", "rg": "gina"})


def test_a_value_naming_one_owner_of_an_mget_still_exposes_every_item_in_its_category(tmp_path):
    """The logs give one value_owner (or digest) for a whole multi-key reply. When it names one of the items' owners
    it agrees with the items, and each item is still judged: bob's read of the reply of carol's cancelled MGET of
    her titles and dave's is an exposure of both (carol was the only one named, dave was left off every list);
    the reply of alice's MGET of her titles and billing, named hers by value_owner or by the digest of the MSET that
    wrote it, is her titles and her payment_info (one row of category 'multiple' left her off
    notify/payment_info.csv); and alice's own MGET of her titles and erin's with value_owner alice still shows
    erin's titles to alice (logging value_owner hid a key-tier exposure that is found without it)."""
    cache, requests = _value_naming_one_owner_of_an_mget_case()
    summary, exp = run_case(tmp_path, cache, requests=requests)
    assert pairs(exp) == {
        ("rb", "bob", "carol", "conversation_titles", "value_owner"),
        ("rb", "bob", "dave", "conversation_titles", "connection"),
        ("rf", "frank", "alice", "conversation_titles", "value_owner"),
        ("rf", "frank", "alice", "payment_info", "value_owner"),
        ("rg", "gina", "alice", "conversation_titles", "digest"),
        ("rg", "gina", "alice", "payment_info", "digest"),
        ("ra", "alice", "erin", "conversation_titles", "key"),
    }
    assert summary["exposures_by_category"] == {"conversation_titles": 5, "payment_info": 2}
    assert summary["crossed_replies"] == 3 and summary["conflict_rows"] == 0
    from pipeline.report import report

    report(tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "notify").iterdir()) == [
        "conversation_titles.csv", "payment_info.csv"]
    assert list(read_safe_csv(tmp_path / "out" / "notify" / "payment_info.csv").owner_id) == ["alice"]
    assert list(read_safe_csv(tmp_path / "out" / "notify" / "conversation_titles.csv").owner_id) == [
        "alice", "carol", "dave", "erin"]


def test_a_discarded_or_failed_mget_reply_is_one_near_miss_per_call(tmp_path):
    cache = [
        # c1: alice's MGET abandoned, then the connection reset: its reply was thrown away unread
        call(T(0, 1), "ra", ALICE_MGET, "cancelled", op="MGET"),
        call(T(0, 2), None, None, op="RESET"),
        call(T(0, 3), "rb", "user:bob:titles"),
        # c2: carol's MGET (two owners) abandoned; erin's read got its reply, but her request failed (5xx)
        call(T(0, 4), "rc", '["user:carol:titles","billing:dave"]', "cancelled", op="MGET", conn="c2"),
        call(T(0, 5), "re", "user:erin:titles", conn="c2"),
    ]
    requests = requests_for(cache, {"ra": "alice", "rb": "bob", "rc": "carol", "re": "erin"})
    for r in requests:
        if r["request_id"] == "re":
            r["status"] = 503
    summary, exp = run_case(tmp_path, cache, requests=requests)
    assert exp.empty and summary["exposures"] == 0 and summary["crossed_replies"] == 1
    assert summary["near_misses"]["total"] == 2
    assert summary["near_misses"]["by_kind"] == {"discarded": 1, "failed": 1}
    near = pd.read_parquet(tmp_path / "out" / "near_misses.parquet").set_index("kind")
    assert near.loc["discarded", "owner_id"] == "alice" and near.loc["discarded", "category"] == "multiple"
    assert pd.isna(near.loc["failed", "owner_id"])  # two owners: the call as a whole names none



def _digest_of_an_mset_case():
    """alice's MSET of her titles and billing stored digest D; bob's MGET of his own titles and billing and carol's
    GET of her titles returned D with no connection logged (only the digest tells); digest D2 was stored first by
    alice's SET of her titles, read by dave, then by her MSET, read by erin (a digest of several keys: the latest
    write decides); alice's own read of D is hers."""
    mset, d, d2 = ALICE_MGET, "e" * 64, "f" * 64
    nowhere = {"host": None, "conn": None}
    cache = [
        call(T(0, 1), "w1", mset, op="MSET", conn="w", value_sha256=d),
        call(T(0, 2), "r1", '["user:bob:titles","billing:bob"]', op="MGET", value_sha256=d, **nowhere),
        call(T(0, 3), "r2", "user:carol:titles", value_sha256=d, **nowhere),
        call(T(0, 4), "w2", "user:alice:titles", op="SET", conn="w", value_sha256=d2),
        call(T(0, 5), "r3", "user:dave:titles", value_sha256=d2, **nowhere),
        call(T(0, 6), "w3", mset, op="MSET", conn="w", value_sha256=d2),
        call(T(0, 7), "r4", "user:erin:titles", value_sha256=d2, **nowhere),
        call(T(0, 8), "r5", "user:alice:titles", value_sha256=d, **nowhere),
    ]
    users = {"w1": "alice", "r1": "bob", "r2": "carol", "w2": "alice", "r3": "dave", "w3": "alice", "r4": "erin",
             "r5": "alice"}
    return cache, users


def test_a_value_with_the_digest_of_an_mset_exposes_each_item_of_it(tmp_path):
    """A value whose digest a multi-key write stored is that write's items, as the reply of a multi-key call is:
    bob's MGET and carol's GET that returned the digest of alice's MSET of her titles and billing showed her
    titles and her payment_info (one row of category 'multiple' left her off notify/payment_info.csv)."""
    cache, users = _digest_of_an_mset_case()
    summary, exp = run_case(tmp_path, cache, users)
    assert pairs(exp) == {
        ("r1", "bob", "alice", "conversation_titles", "digest"),
        ("r1", "bob", "alice", "payment_info", "digest"),
        ("r2", "carol", "alice", "conversation_titles", "digest"),
        ("r2", "carol", "alice", "payment_info", "digest"),
        ("r3", "dave", "alice", "conversation_titles", "digest"),  # D2 was then her titles only
        ("r4", "erin", "alice", "conversation_titles", "digest"),
        ("r4", "erin", "alice", "payment_info", "digest"),
    }
    rows = {(r.request_id, r.value_key): r for r in exp.itertuples()}
    assert sorted(rows) == sorted([(r, k) for r in ("r1", "r2", "r4") for k in ("user:alice:titles", "billing:alice")]
                                  + [("r3", "user:alice:titles")])
    assert [(r.severity, r.key, r.owner_by_digest, r.owner_by_key) for r in (rows["r1", "billing:alice"],
                                                                               rows["r2", "user:alice:titles"])] == [
        ("high", '["user:bob:titles","billing:bob"]', "alice", "bob"), ("low", "user:carol:titles", "alice", "carol")]
    assert exp.owner_by_connection.isna().all() and exp.reply_request_id.isna().all()
    assert summary["exposures"] == 7 and summary["crossed_replies"] == 4 and summary["conflict_rows"] == 0
    assert summary["exposures_by_category"] == {"conversation_titles": 4, "payment_info": 3}
    from pipeline.report import report

    report(tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "notify").iterdir()) == [
        "conversation_titles.csv", "payment_info.csv"]
    assert list(read_safe_csv(tmp_path / "out" / "notify" / "payment_info.csv").owner_id) == ["alice"]


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
@pytest.mark.parametrize(("case", "exposures"), [
    (_digest_of_an_mset_case, 7),
    (_common_value_case, 3),
    (functools.partial(_many_owners_case, ("c2", "c3", "c6"), ("carol", "erin", "hal")), 1),
    (functools.partial(_many_owners_case, ("c2", "c2", "c6"), ("carol", "erin", "hal")), 4),
], ids=["mset", "common-value", "three-owners-three-connections", "three-owners-two-connections"])
def test_spark_judges_digests_as_duckdb_does(tmp_path, case, exposures):
    """The digest of an MSET split item by item; a value many users share, read as a key's own value after a
    logged reset, or by three owners on three connections (and not on two)."""
    cache, users = case()
    run_case(tmp_path, cache, users)
    result = compare_lake(tmp_path)
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": exposures, "spark": exposures}
    assert result["timeline_differences"] == 0


MULTI_KEY_FORMS = {
    '["user:alice:titles", "billing:alice"]': ["user:alice:titles", "billing:alice"],  # CSV logs: spaces
    ' [ "user:alice:titles" ,"billing:alice" ] ': ["user:alice:titles", "billing:alice"],
    '["billing:alice"]': ["billing:alice"],  # one element: that one key
    # JSON escapes; a public item is nobody's data
    '["user:a\\u006cice:titles","public:\\"x\\\\\\/"]': ["user:alice:titles", 'public:"x\\/'],
    '["billing:alice",]': None,  # not JSON: a plain key
    '["billing:alice"': None,
    '[1,"billing:alice"]': None,  # not an array of strings
    "[]": None,
    "['billing:alice']": None,
    "[billing:alice]": None,
}


def test_multi_key_keys_are_json_arrays_of_strings_and_nothing_else(tmp_path):
    cache = [call(T(0, n), f"r{n}", key, op="MGET", conn=f"c{n}") for n, key in enumerate(MULTI_KEY_FORMS, 1)]
    write_lake(tmp_path / "out", requests=requests_for(cache, {}), cache=cache)
    con = connect(tmp_path / "tmp")
    register_inputs(con, tmp_path / "out", config_from_dict({"keys": KEYS}), Window())
    items = con.execute(
        "SELECT m.key, i.item_no, i.item_key FROM multi_keys AS m INNER JOIN key_items AS i ON m.key_no = i.key_no "
        "ORDER BY m.key, i.item_no"
    ).fetchall()
    found: dict[str, list[str]] = {}
    for key, number, item in items:
        assert number == len(found.setdefault(key, [])) + 1
        found[key].append(item)
    assert found == {key: value for key, value in MULTI_KEY_FORMS.items() if value is not None}
    rules = dict(con.execute("SELECT key, category FROM key_rule_matches").fetchall())
    assert rules["billing:alice"] == "payment_info" and rules['public:"x\\/'] == "public"


def _multi_key_forms_case():
    """Per form: alice's call for that key cancelled on its own connection, then bob's read of his titles."""
    cache, users = [], {}
    for n, key in enumerate(MULTI_KEY_FORMS, 1):
        cache.append(call(T(n, 1), f"a{n}", key, "cancelled", op="MGET", conn=f"c{n}"))
        cache.append(call(T(n, 2), f"b{n}", "user:bob:titles", conn=f"c{n}"))
        users.update({f"a{n}": "alice", f"b{n}": "bob"})
    return cache, users


def test_every_form_of_a_multi_key_key_gives_its_items(tmp_path):
    cache, users = _multi_key_forms_case()
    summary, exp = run_case(tmp_path, cache, users)
    served = sorted(zip(exp.request_id, exp.value_key, strict=True))
    expected = sorted(
        (f"b{n}", item) for n, value in enumerate(MULTI_KEY_FORMS.values(), 1) for item in value or []
        if not item.startswith("public:")
    )
    assert served == expected  # plain keys no rule matches: crossed replies of nobody's known data
    assert set(exp.owner_id) == {"alice"} and set(exp.evidence) == {"connection"}
    assert summary["crossed_replies"] == len(MULTI_KEY_FORMS)


def _mget_parity_case():
    cache, users = _multi_key_forms_case()
    cache += [
        call(T(30, 1), "ra", ALICE_MGET, "cancelled", op="MGET", conn="p1"),
        call(T(30, 2), "rb", "user:bob:titles", conn="p1"),
        call(T(30, 3), "rc", "user:carol:titles", "timeout", conn="p2"),
        call(T(30, 4), "rd", '["user:dave:titles","conv:c9"]', op="MGET", conn="p2"),
        call(T(30, 5), "re", '["user:erin:titles","user:carol:titles","conv:c9"]', op="MGET", conn="p3"),
        call(T(30, 6), "rf", '["user:fay:titles","billing:gus"]', "cancelled", op="MGET", conn="p4"),
        call(T(30, 7), None, None, op="RESET", conn="p4"),
    ]
    users.update(ra="alice", rb="bob", rc="carol", rd="dave", re="erin", rf="fay")
    tables = {"ownership": [{"resource_id": "c9", "owner_id": "erin"}],
              "grants": [{"owner_id": "carol", "viewer_id": "erin", "category": "", "valid_from": "",
                          "valid_to": ""}]}
    return cache, users, tables


def test_mget_parity_case_as_duckdb_sees_it(tmp_path):
    cache, users, tables = _mget_parity_case()
    summary, exp = run_case(tmp_path, cache, users, tables=tables)
    assert {p for p in pairs(exp) if p[0] in ("rb", "rd", "re")} == {
        ("rb", "bob", "alice", "conversation_titles", "connection"),
        ("rb", "bob", "alice", "payment_info", "connection"),
        ("rd", "dave", "carol", "conversation_titles", "connection"),
        # re: erin's own titles, carol's (she granted erin everything), c9 (erin's resource): nothing
    }
    assert summary["near_misses"]["by_kind"] == {"discarded": 1}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_splits_and_judges_multi_key_calls_as_duckdb_does(tmp_path):
    from pipeline import spark as spark_mod

    cache, users, tables = _mget_parity_case()
    run_case(tmp_path, cache, users, tables=tables)
    cfg = config_from_dict({"keys": KEYS, "tables": {"ownership": "ownership.csv", "grants": "grants.csv"}},
                           tmp_path / "incident.toml")
    session = spark_mod.session()
    try:
        result = compare(tmp_path / "out", cfg, window="all", spark=session)
        spark_mod.register_inputs(session, tmp_path / "out", cfg, Window())
        spark_items = {
            tuple(r) for r in session.sql(
                "SELECT m.key, i.item_no, i.item_key FROM multi_keys AS m INNER JOIN key_items AS i "
                "ON m.key_no = i.key_no"
            ).collect()
        }
    finally:
        session.stop()
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["summary_differences"] == []
    assert result["exposures"]["duckdb"] == result["exposures"]["spark"] > 0
    assert result["near_misses"]["duckdb"] == result["near_misses"]["spark"] == 1
    assert result["timeline_differences"] == 0
    expected = {(key, n, item) for key, value in MULTI_KEY_FORMS.items() for n, item in enumerate(value or [], 1)}
    assert spark_items >= expected
    assert {k for k, _, _ in spark_items} - set(MULTI_KEY_FORMS) == {
        ALICE_MGET, '["user:dave:titles","conv:c9"]', '["user:erin:titles","user:carol:titles","conv:c9"]',
        '["user:fay:titles","billing:gus"]'}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_analyze_on_spark_uses_the_session_the_caller_started(tmp_path):
    """``analyze(out, engine="spark")`` in a process that runs Spark (a cluster's session, made by the caller) uses
    that session, sets its time zone to UTC while it runs and back after, and leaves it running; a ``spark_master``
    naming another master is an error, not a second Spark."""
    from pipeline import spark as spark_mod

    cache, users, tables = _mget_parity_case()
    duck, _ = run_case(tmp_path, cache, users, tables=tables)
    out = tmp_path / "out"
    cfg = config_from_dict({"keys": KEYS, "tables": {"ownership": "ownership.csv", "grants": "grants.csv"}},
                           tmp_path / "incident.toml")
    session = spark_mod.session()
    try:
        session.conf.set("spark.sql.session.timeZone", "America/New_York")
        with pytest.raises(WhosawError, match=r"^spark master: this process already runs Spark on 'local\[2\]', not "):
            analyze(out, cfg, window="all", engine="spark", spark_master="spark://elsewhere:7077")
        on_spark = analyze(out, cfg, window="all", engine="spark")
        assert session.range(3).count() == 3  # still running
        assert session.conf.get("spark.sql.session.timeZone") == "America/New_York"
    finally:
        session.stop()
    del on_spark["generated_at"], duck["generated_at"]
    assert on_spark == duck
    assert load_manifest(out)["analysis"]["spark_master"] == "local[2]"


def _star_grants_mget_public_5xx_case():
    """Today's analysis changes together: grants of owner '*' and of viewer '*' (time bounds, open ends), MGET items
    under them, public keys carrying someone's value (a 5xx request, background work), a SET in a 5xx request
    that got a stale reply, ties in ts."""
    cache = [
        call(T(0, 1), "w1", "user:alice:titles", op="SET", value_sha256="h1", conn="w"),
        call(T(0, 2), "p1", "public:a", value_owner="alice", conn="p1"),  # p1 answered 503
        # background; same ts; no connection logged (on one whose log shows cancels and no call unanswered
        # before it, the read would have received public:b's own value: 42_digests_read_as_own)
        call(T(0, 2), None, "public:b", value_sha256="h1", conn=None, host=None),
        # carol's MGET abandoned; support's read (same ts, the next line) got its reply
        call(T(1, 1), "rc", '["user:carol:titles","billing:carol"]', "cancelled", op="MGET", conn="m1"),
        call(T(1, 1), "rs", "user:support:titles", conn="m1"),
        call(T(2), "rd", '["user:erin:titles","billing:dave","public:x"]', op="MGET", conn="m2"),
        # bob's SET, in a request that answered 500, got alice's stale GET reply
        call(T(3, 1), "ra", "user:alice:titles", "cancelled", conn="k1"),
        call(T(3, 2), "rb", "user:bob:titles", op="SET", conn="k1"),
        call(T(5), "rs2", "user:carol:titles", conn="m3"),  # at the end of support's grant: not covered
    ]
    requests = requests_for(cache, {"w1": "alice", "p1": "zed", "rc": "carol", "rs": "support", "rd": "dave",
                                    "ra": "alice", "rb": "bob", "rs2": "support"})
    for r in requests:
        r["status"] = {"p1": 503, "rb": 500}.get(r["request_id"], 200)
    grants = [
        {"owner_id": "*", "viewer_id": "support", "category": "conversation_titles", "valid_from": "",
         "valid_to": T(5)},
        {"owner_id": "erin", "viewer_id": "*", "category": "*", "valid_from": T(1), "valid_to": ""},
    ]
    return cache, requests, {"grants": grants}


def test_star_grants_mget_public_keys_and_5xx_together(tmp_path):
    cache, requests, tables = _star_grants_mget_public_5xx_case()
    summary, exp = run_case(tmp_path, cache, requests=requests, tables=tables, window="all")
    assert pairs(exp) == {
        ("rs", "support", "carol", "payment_info", "connection"),  # her titles: support's grant of every owner's
        ("rs2", "support", "carol", "conversation_titles", "key"),
        # rd: erin's titles granted to anyone, billing:dave his own, public:x nobody's
    }
    assert summary["near_misses"]["by_kind"] == {"failed": 2, "background": 1}


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_judges_star_grants_mget_public_keys_and_5xx_as_duckdb_does(tmp_path):
    from pipeline import spark as spark_mod

    cache, requests, tables = _star_grants_mget_public_5xx_case()
    summary, _ = run_case(tmp_path, cache, requests=requests, tables=tables, window="all")
    cfg = config_from_dict({"keys": KEYS, "tables": {"grants": "grants.csv"}}, tmp_path / "incident.toml")
    session = spark_mod.session()
    try:
        results = {
            w: compare(tmp_path / "out", cfg, window=w, spark=session) for w in ("auto", f"{T(1)}/{T(5)}", "all")
        }
        kinds = dict(session.sql("SELECT kind, count(*) FROM near_misses_all GROUP BY kind").collect())
    finally:
        session.stop()
    for window, result in results.items():
        assert result["only_duckdb"] == [] and result["only_spark"] == [], window
        assert result["window"]["spark"] == result["window"]["duckdb"], window
        assert result["near_misses"]["spark"] == result["near_misses"]["duckdb"], window
        assert result["timeline_differences"] == 0, window
        assert result["summary_differences"] == [], window
    assert results["all"]["exposures"] == {"duckdb": 2, "spark": 2}
    assert kinds == summary["near_misses"]["by_kind"]


def test_a_parquet_list_column_of_keys_is_a_multi_key_call(tmp_path):
    """A Parquet cache log may hold an MGET's keys as a list column (the JSON logs' array): ingest wrote it with
    DuckDB's cast, "[user:alice:titles, billing:alice]", a plain key no rule matches: bob's read of alice's
    cancelled MGET was no exposure."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    logs = tmp_path / "logs"
    logs.mkdir()
    pq.write_table(pa.table({
        "ts": [T(0, 1), T(0, 2), T(0, 3)],
        "request_id": ["ra", "rb", "rc"],
        "op": ["MGET", "GET", "MGET"],
        "key": pa.array([["user:alice:titles", "billing:alice"], ["user:bob:titles"], ['user:"x"', None]],
                        pa.list_(pa.string())),
        "status": ["cancelled", "ok", "ok"],
        "host": ["h1", "h1", "h1"],
        "conn_id": ["1", "1", "2"],
    }), logs / "cache.parquet")
    (logs / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"ts": T(0, 4), "request_id": rid, "session_id": f"s{rid}", "user_id": user, "status": 200}
        for rid, user in (("ra", "alice"), ("rb", "bob"), ("rc", "carol"))
    ]))
    out = tmp_path / "out"
    cfg = config_from_dict({"keys": KEYS}, tmp_path / "incident.toml")
    ingest([logs], out, cfg, progress=False)
    keys = duckdb.sql(
        f"SELECT key FROM read_parquet('{out}/parquet/cache/**/*.parquet') ORDER BY source_line"
    ).fetchall()
    assert keys == [(ALICE_MGET,), ('["user:bob:titles"]',), ('["user:\\"x\\"",null]',)]  # JSON, as in JSON logs
    summary = analyze(out, cfg, progress=False)
    exp = pd.read_parquet(out / "exposures.parquet")
    assert pairs(exp) == {
        ("rb", "bob", "alice", "conversation_titles", "connection"),
        ("rb", "bob", "alice", "payment_info", "connection"),
    }
    assert summary["exposures"] == 2 and summary["crossed_replies"] == 1


AC_MGET = '["user:alice:titles","user:carol:titles"]'


def _value_outside_mget_case():
    """Multi-key calls of two owners (key_owner NULL) whose value (value_owner, digest) names someone else."""
    cache = [
        # c1: alice's own MGET of her and carol's titles; the app found dave's data in it; her request failed
        call(T(0, 1), "ra", AC_MGET, op="MGET", value_owner="dave"),
        # c2: the same with carol named: one of the items' owners, no crossed reply; carol's titles exposed
        call(T(0, 2), "rb", AC_MGET, op="MGET", conn="c2", value_owner="carol"),
        # c3: an item no rule matches: its owner is unknown, so dave may be it: not crossed
        call(T(0, 3), "rc", '["user:alice:titles","zzz:1"]', op="MGET", conn="c3", value_owner="dave"),
        # c4: background work read an MGET whose digest is dave's (written under his key)
        call(T(0, 4), "rd", "user:dave:titles", op="SET", conn="c4", value_sha256="dd"),
        call(T(0, 5), None, '["public:x","user:alice:titles"]', op="MGET", conn="c5", value_sha256="dd"),
        # c6: bob read the reply of alice's cancelled MGET (alice's and carol's titles), but the value is dave's
        call(T(0, 6), "re", AC_MGET, "cancelled", op="MGET", conn="c6"),
        call(T(0, 7), "rf", "user:bob:titles", conn="c6", value_owner="dave"),
        # c7: the same, the value naming carol: it agrees with the connection, which served alice's titles too
        call(T(0, 8), "rg", AC_MGET, "cancelled", op="MGET", conn="c7"),
        call(T(0, 9), "rh", "user:bob:titles", conn="c7", value_owner="carol"),
    ]
    requests = requests_for(cache, {"ra": "alice", "rb": "alice", "rc": "alice", "rd": "dave", "re": "alice",
                                    "rf": "bob", "rg": "alice", "rh": "bob"})
    for r in requests:
        if r["request_id"] == "ra":
            r["status"] = 503
    return cache, requests


def test_a_value_naming_none_of_the_owners_of_an_mget_is_crossed_or_a_conflict(tmp_path):
    """A multi-key call's key names several owners (its key_owner is none), so a value naming none of them was
    compared with nothing: alice's own MGET carrying dave's data was no crossed reply (her failed request no near
    miss, background work's read of it none either), and bob's read of alice's MGET reply carrying dave's data no
    conflict, unlike the same calls for one key."""
    cache, requests = _value_outside_mget_case()
    summary, exp = run_case(tmp_path, cache, requests=requests)
    assert pairs(exp) == {
        ("rb", "alice", "carol", "conversation_titles", "value_owner"),
        ("rc", "alice", "dave", "multiple", "value_owner"),
        ("rf", "bob", "dave", "conversation_titles", "conflict"),
        ("rh", "bob", "carol", "conversation_titles", "value_owner"),
        ("rh", "bob", "alice", "conversation_titles", "connection"),
    }
    assert summary["crossed_replies"] == 2 + 2  # ra, the background read; rf, rh by connection
    near = pd.read_parquet(tmp_path / "out" / "near_misses.parquet")
    assert sorted(zip(near.kind, near.owner_id, strict=True)) == [("background", "dave"), ("failed", "dave")]
    assert summary["conflict_rows"] == 1


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
@pytest.mark.parametrize("case, exposures", [(_value_naming_one_owner_of_an_mget_case, 7),
                                             (_public_key_digest_case, 1)])
def test_spark_judges_mget_items_named_by_value_and_public_digests_as_duckdb_does(tmp_path, case, exposures):
    cache, requests = case()
    run_case(tmp_path, cache, requests=requests)
    result = compare_lake(tmp_path, window="all")
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": exposures, "spark": exposures}
    assert result["timeline_differences"] == 0


@pytest.mark.skipif(not spark_available(), reason="pyspark or java missing: pip install -e '.[spark]', Java 17")
def test_spark_judges_a_value_outside_an_mgets_owners_as_duckdb_does(tmp_path):
    cache, requests = _value_outside_mget_case()
    run_case(tmp_path, cache, requests=requests)
    result = compare_lake(tmp_path, window="all")
    assert result["only_duckdb"] == [] and result["only_spark"] == []
    assert result["exposures"] == {"duckdb": 5, "spark": 5}
    assert result["near_misses"] == {"duckdb": 2, "spark": 2} and result["timeline_differences"] == 0
